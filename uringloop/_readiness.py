"""Readiness on the ring: a ``selectors.BaseSelector`` whose waits are
io_uring poll requests, so ``add_reader``/``add_writer``, signals (through
asyncio's wakeup fd), subprocess pipes and every selector-based transport
wait on the same ring as the completion-based operations.

Data flow: ``register``/``modify`` record the wanted events; ``select``
arms a one-shot ``IORING_OP_POLL_ADD`` for every registered fd that has
none in flight, runs one ring turn (which also completes every other ring
operation) and returns the fds whose polls fired.  asyncio then queues the
callbacks on its ready queue; they run before the next ``select``, which
re-arms the fds that fired.

Why one-shot polls re-armed per turn rather than ``IORING_POLL_ADD_MULTI``:
asyncio's readers consume one bounded chunk per readiness event (256 KiB
for sockets and pipes) and count on being called again while data is left,
i.e. level-triggered readiness as epoll gives it.  A multishot poll posts a
completion per wake-up of the file's wait queue, which is edge-like: bytes
left unread after a callback produce no new completion until more data
arrives, so a reader would stall.  Re-arming costs one SQE in the batch the
turn submits anyway (no extra system call); measured here (Linux 6.18,
socketpair ping-pong of one byte, Python driving the ring) it is
~3.9 µs per event against ~3.7 µs with multishot and ~3.3 µs with epoll.

What the kernel does differently from epoll, and how asyncio's behaviour is
kept:

* Bad file descriptors.  epoll refuses a closed fd (``EBADF``) or a file
  that cannot be polled, such as a regular file (``EPERM``), inside
  ``register``, so ``add_reader`` raises; a ring poll would instead accept
  the request and complete it later (with ``-EBADF``, or immediately ready).
  ``register`` therefore asks a private epoll instance (add, then delete)
  so that the same ``OSError`` is raised at the same moment.
* Closed while registered.  epoll silently forgets a file once its last
  descriptor is closed.  A poll that fails with ``-EBADF`` (the fd was
  closed between turns), or that fires for a file whose fd has been closed
  since it was armed (the poll holds the file, see below; an ``F_GETFD``
  per event tells), is likewise not reported and not re-armed, until the
  fd is registered or modified again.  (An fd number already reused by
  another file when the old one fires is not told apart.)
* File references.  An in-flight poll holds a reference to the *file*, not
  the fd number: closing the fd does not end the poll, and a socket stays
  open for its peer while it lasts.  ``unregister`` (which asyncio's
  ``remove_reader``/``remove_writer`` call before a transport closes its
  fd) therefore cancels the poll and submits the cancellation at once,
  rather than with the next turn.  Completions are matched by user_data,
  so the late completion of a cancelled poll is recognised as stale and is
  never reported for a new registration that reuses the fd number.
"""
import errno
import fcntl
import select
import selectors

from ._op import RingCallback

_POLLIN = select.POLLIN
_POLLOUT = select.POLLOUT
_WANT_READ = selectors.EVENT_READ
_WANT_WRITE = selectors.EVENT_WRITE
_EBADF = -errno.EBADF


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


def _is_open(fd):
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)
    except OSError:
        return False
    return True


class RingSelector(selectors._BaseSelectorImpl):
    """A selector backed by the loop's ring; it does not own the ring."""

    def __init__(self, ring):
        super().__init__()
        self._ring = ring
        self._validator = select.epoll()
        self._armed = {}      # fd -> user_data of its in-flight poll
        self._to_arm = set()  # fds whose poll must be (re)submitted
        self._fired = {}      # fd -> selector events seen this turn
        # Set by the loop: takes each turn's non-poll completions so they run
        # from the ready queue (see Ring.run_turn); None runs them in select.
        self.defer_completions = None

    def register(self, fileobj, events, data=None):
        key = super().register(fileobj, events, data)
        try:
            self._validator.register(key.fd, 0)
            self._validator.unregister(key.fd)
        except BaseException:
            super().unregister(fileobj)
            raise
        self._to_arm.add(key.fd)
        return key

    def unregister(self, fileobj):
        key = super().unregister(fileobj)
        self._to_arm.discard(key.fd)
        self._fired.pop(key.fd, None)
        if self._disarm(key.fd):
            self._submit_cancellations()
        return key

    def modify(self, fileobj, events, data=None):
        old = self.get_key(fileobj)
        key = super().modify(fileobj, events, data)
        if events != old.events:
            self._disarm(key.fd)
            self._to_arm.add(key.fd)
        elif key.fd not in self._armed:
            # Parked after -EBADF: the caller may be pointing a reused fd
            # number at a new file.
            self._to_arm.add(key.fd)
        return key

    def _disarm(self, fd):
        user_data = self._armed.pop(fd, None)
        if user_data is None:
            return False
        self._ring.cancel(user_data)
        return True

    def _submit_cancellations(self):
        try:
            self._ring.submit_now()
        except OSError as exc:
            # The kernel wants its completions reaped first (or a signal
            # interrupted us); the cancellation then goes with the next turn.
            if exc.errno not in (errno.EAGAIN, errno.EBUSY, errno.EINTR):
                raise

    def _arm(self, fd, events):
        def on_poll(res, flags):
            if self._armed.get(fd) != user_data:
                return  # a cancelled poll from an earlier registration
            del self._armed[fd]
            if res == _EBADF or (res > 0 and not _is_open(fd)):
                return  # closed while registered: parked, see the header
            self._to_arm.add(fd)
            if res > 0:
                self._fired[fd] = self._fired.get(fd, 0) | _selector_events(res)
            elif res < 0:
                # Any other failure: report the fd so that its callback
                # runs and meets the error itself.
                self._fired[fd] = self._fired.get(fd, 0) | _WANT_READ | _WANT_WRITE

        user_data = self._ring.submit_poll(fd, _poll_mask(events), RingCallback(on_poll))
        self._armed[fd] = user_data

    def select(self, timeout=None):
        fd_to_key = self._fd_to_key
        if self._to_arm:
            for fd in self._to_arm:
                key = fd_to_key.get(fd)
                if key is not None and fd not in self._armed:
                    self._arm(fd, key.events)
            self._to_arm.clear()
        self._ring.run_turn(timeout, self.defer_completions)
        return self.fired_events()

    def fired_events(self):
        """select()'s result: what the polls of this turn reported (the
        loop's C turn, which makes the ring turn itself when no fd is to be
        armed, comes here when polls completed)."""
        fd_to_key = self._fd_to_key
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
        if not self._ring.closed:
            for user_data in self._armed.values():
                self._ring.cancel(user_data)
        self._armed.clear()
        self._to_arm.clear()
        self._validator.close()
        super().close()
