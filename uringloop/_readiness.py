"""Readiness on the ring: a ``selectors.BaseSelector`` whose waits are
io_uring poll requests, so ``add_reader``/``add_writer``, signals (through
asyncio's wakeup fd), subprocess pipes and every selector-based transport
wait on the same ring as the completion-based socket operations.

Data flow: ``register``/``modify`` record the wanted events; ``select``
arms a one-shot ``IORING_OP_POLL_ADD`` for every registered fd that has
none in flight, runs one ring turn (which also completes every other ring
operation) and returns the fds whose polls fired.  One-shot polls re-armed
each turn give level-triggered semantics, which asyncio's transports rely
on (they read once per readiness event).  ``unregister`` cancels the poll;
its late completion is recognised by its stale user_data and ignored.
"""
import select
import selectors

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_WANT_READ = selectors.EVENT_READ
_WANT_WRITE = selectors.EVENT_WRITE


def _poll_mask(events):
    mask = 0
    if events & _WANT_READ:
        mask |= _POLLIN
    if events & _WANT_WRITE:
        mask |= _POLLOUT
    return mask


def _selector_events(revents):
    # Errors and hangups wake both directions, as the epoll selector does.
    events = 0
    if revents & ~_POLLOUT:
        events |= _WANT_READ
    if revents & ~_POLLIN:
        events |= _WANT_WRITE
    return events


class RingSelector(selectors._BaseSelectorImpl):
    """A selector backed by the loop's ring; it does not own the ring."""

    def __init__(self, ring):
        super().__init__()
        self._ring = ring
        self._armed = {}     # fd -> user_data of its in-flight poll
        self._to_arm = set()  # fds whose poll must be (re)submitted
        self._fired = {}     # fd -> selector events seen this turn

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        self._to_arm.add(key.fd)
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._disarm(key.fd)
        self._to_arm.discard(key.fd)
        self._fired.pop(key.fd, None)
        return key

    def modify(self, fileobj, events, data=None):
        old = self.get_key(fileobj)
        key = super().modify(fileobj, events, data)
        if events != old.events:
            self._disarm(key.fd)
            self._to_arm.add(key.fd)
        return key

    def _disarm(self, fd):
        user_data = self._armed.pop(fd, None)
        if user_data is not None:
            self._ring.cancel(user_data)

    def _arm(self, fd, events):
        def on_poll(res, flags, fd=fd):
            if self._armed.get(fd) != user_data:
                return  # a cancelled poll from an earlier registration
            del self._armed[fd]
            self._to_arm.add(fd)
            if res > 0:
                self._fired[fd] = self._fired.get(fd, 0) | _selector_events(res)
            elif res < 0:
                # EBADF and friends: report the fd so its callback runs and
                # meets the error itself, as epoll would by reporting it.
                self._fired[fd] = self._fired.get(fd, 0) | _WANT_READ | _WANT_WRITE

        user_data = self._ring.submit_poll(fd, _poll_mask(events), on_poll)
        self._armed[fd] = user_data

    def select(self, timeout=None):
        fd_to_key = self._fd_to_key
        if self._to_arm:
            for fd in self._to_arm:
                key = fd_to_key.get(fd)
                if key is not None and fd not in self._armed:
                    self._arm(fd, key.events)
            self._to_arm.clear()
        self._ring.run_turn(timeout)
        if not self._fired:
            return []
        ready = []
        for fd, events in self._fired.items():
            key = fd_to_key.get(fd)
            if key is not None and events & key.events:
                ready.append((key, events & key.events))
        self._fired.clear()
        return ready

    def close(self):
        for user_data in self._armed.values():
            if not self._ring.closed:
                self._ring.cancel(user_data)
        self._armed.clear()
        self._to_arm.clear()
        super().close()
