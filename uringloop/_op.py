"""One operation awaited by one coroutine, from submission to its last
completion: the lifecycle that every ``loop.sock_*`` call, the native
sendfile's steps and every file request share (the model is tokio-uring's
``Op<T>``).

An ``Op`` is its own ops-table entry (the contract is _ring.py's): the
ring (or the file API's executor engine) calls ``op.on_completion(res,
flags)`` with each completion, or ``op.ring_closed(res)`` when the ring
closes under it (Ring.close runs no callbacks), so that the release work
is done either way; the ring keeps what the kernel uses in
``op.keepalive``, and ``returns_fd`` says the result is a new fd.  (An
operation whose completion goes to a plain callback has a
:class:`RingCallback` as its entry instead.)  A subclass says what the
operation is:

  ``submit()``        queue the request, return its handle (the user_data
                      on the ring); may raise, and then nothing is in flight;
  ``complete(res, flags)``  resolve ``fut``, or ``resubmit()``: the rest of
                      a partial send or short write, a receive the provided
                      buffers could not take;
  ``release()``       let go of what only the kernel needed (unpin a
                      caller's buffer, give back a borrowed fd), once, when
                      settled (or when ``submit`` failed);
  ``unclaim(result)`` a result the caller was cancelled too late to take:
                      keep it for the next caller;
  ``straggle()``      the caller was cancelled before the completion: list
                      the op where the next operation of its kind waits for
                      it (``unstraggle()`` when it settles);
  ``cancel()``        ask for the cancellation (ASYNC_CANCEL by user_data);
  ``fd_closed()``     (for ``resubmit``) the op's fd was closed by its user:
                      its number is stale (see _ringfd.py);
  ``discard(res)``    the completion of an op abandoned because its fd was
                      closed under it (close an accepted fd).

States: *in flight* from ``run`` until the completion that does not
resubmit, listed meanwhile in ``registry`` (the set where its owner finds
its operations in flight: the loop's ``_sock_ops`` for socket operations,
the file's ``CallGroup`` for file requests), unless it is None.  Then
*settled*: released, unlisted, and whoever waits for it (``wait_settled``)
woken.  An op is *abandoned* when its fd was closed by its user: cancelled,
its future left pending, its completion only discarded.

The awaiting side (``run``) turns a cancellation into ``cancel()`` (a
request: the op stays in flight, buffers pinned, until its completion) and
``straggle()``.  An op that ``lends`` the kernel its caller's own memory
(the data of a send, the buffer a file read fills) also waits for its
settling before the CancelledError reaches the caller: the caller may then
reuse or resize that memory at once, as after asyncio's cancelled calls,
and no later completion writes or reads it (ASYNC_CANCEL settles a
pending send or read within a turn or two).  A cancellation that arrives
after the completion resolved ``fut`` hands the result back through
``unclaim``; nothing the kernel did is thrown away.  Receives and accepts
(``claims``) may find their result already taken off the socket by a
cancelled predecessor: they ``claim()`` it before submitting (see
_sockops.SockOp).

An exception raised by ``complete`` (a resubmission's included) resolves
``fut`` with it, so no caller waits forever on a callback that failed.
"""
from asyncio import exceptions

from . import _accel


class Op:
    __slots__ = ("loop", "fut", "user_data", "settled", "abandoned", "registry",
                 "keepalive", "_waiters")

    # True for receives and accepts (see run and _sockops.SockOp).
    claims = False
    # True for operations whose result is a new fd (see _ring.py).
    returns_fd = False
    # True for operations the kernel runs on their caller's memory (see run).
    lends = False

    def __init__(self, loop, registry):
        self.loop = loop
        self.fut = loop.create_future()
        self.user_data = None
        self.settled = False
        self.abandoned = False
        self.registry = registry
        self.keepalive = None
        self._waiters = None

    # -- the awaiting side ----------------------------------------------
    async def run(self):
        """Take what a cancelled op left (``claim``), or submit and await
        the result."""
        loop = self.loop
        try:
            if self.claims and (loop._cancelling or loop._unclaimed):
                result = await self.claim()
                if result is not None:
                    self.release()
                    return result
            self.user_data = self.submit()
        except BaseException:
            self.release()
            raise
        registry = self.registry
        if registry is not None:
            registry.add(self)
        fut = self.fut
        try:
            return await fut
        except exceptions.CancelledError:
            self._caller_cancelled(fut)
            if self.lends:
                await self._until_settled()
            raise
        finally:
            # A failure's traceback holds this frame: without this the
            # frame, the op, the future and its exception form a cycle.
            del fut, self

    def _caller_cancelled(self, fut):
        if not fut.cancelled():
            # The completion won the race: the caller's task was cancelled
            # after fut got its result but before it resumed.
            if fut.exception() is None:
                self.unclaim(fut.result())
            return
        if not self.settled:
            self.withdraw()

    def withdraw(self):
        """Cancel the request, which its caller no longer waits for; a
        receive stays listed as a straggler until it settles (see
        _sockops.SockOp), whatever it still brings being kept."""
        self.cancel()
        if self._waiters is None:
            self._waiters = []   # so that settling unstraggles it
        self.straggle()

    async def _until_settled(self):
        """Wait for the op to settle, whatever cancels the wait meanwhile."""
        while not self.settled:
            try:
                await self.wait_settled()
            except exceptions.CancelledError:
                pass

    async def wait_settled(self):
        """Return once the op has settled (each caller waits on a future of
        its own, so cancelling one waiter disturbs no other)."""
        if not self.settled:
            if self._waiters is None:
                self._waiters = []
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter

    # -- the completion side ---------------------------------------------
    def resubmit(self):
        """For ``complete``: queue the op again (it settles with a later
        completion).  If its fd was closed by its user meanwhile, nothing
        is queued and the op is abandoned."""
        if self.fd_closed():
            self.abandoned = True
            return
        self.user_data = self.submit()

    def fail(self, exc):
        """For ``complete``: the op failed; its caller hears, if still there."""
        if not self.fut.done():
            self.fut.set_exception(exc)

    def on_completion(self, res, flags):
        user_data = self.user_data
        try:
            if self.abandoned:
                self.discard(res)
            else:
                self.complete(res, flags)
        except Exception as exc:
            fut = self.fut
            if fut.done() or self.abandoned:
                raise  # nobody awaits it: the loop's exception handler hears
            fut.set_exception(exc)
        finally:
            if self.user_data == user_data:  # not resubmitted: this was the last
                self._settle(wake=True)

    def ring_closed(self, res):
        """The ring closed and this op's last completion (``res``) will
        never be run: release what it holds.  Nobody is woken, since the
        loop is closed."""
        self._settle(wake=False)

    def _settle(self, wake):
        if self.settled:
            return
        self.settled = True
        registry = self.registry
        if registry is not None:
            registry.discard(self)
        self.release()
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        self.unstraggle()
        if wake:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- what a subclass may override ----------------------------------
    def cancel(self):
        self.loop._ring.cancel(self.user_data)

    async def claim(self):
        return None

    def release(self):
        pass

    def unclaim(self, result):
        pass

    def straggle(self):
        pass

    def unstraggle(self):
        pass

    def fd_closed(self):
        return False

    def discard(self, res):
        pass


class RingCallbackReference:
    """The ops-table entry of an operation whose completion goes to a plain
    callback ``on_completion(res, flags)`` (the contract is _ring.py's).
    With the accelerator, ``RingCallback`` is its C subclass, whose
    ``on_completion`` the C dispatch reads without an attribute lookup."""

    __slots__ = ("on_completion", "keepalive", "returns_fd")

    def __init__(self, on_completion, returns_fd=False):
        self.on_completion = on_completion
        self.keepalive = None
        self.returns_fd = returns_fd

    def ring_closed(self, res):
        pass


RingCallback = _accel.subclass_in_c(RingCallbackReference, "callback_class")
