"""One ring operation awaited by one coroutine, from submission to its last
completion: the lifecycle that every ``loop.sock_*`` call and the native
sendfile share (the model is tokio-uring's ``Op<T>``).

An ``Op`` is its own ops-table callback: the ring calls ``op(res, flags)``
with each completion, or ``op.ring_closed(res)`` when the ring closes
under it (Ring.close runs no callbacks), so that the release work is done
either way.  A subclass says what the operation is:

  ``submit()``        queue the SQE on ``self.fd``, return its user_data
                      (may raise: then nothing is in flight);
  ``claim()``         (receives, accepts) the result made of what an earlier
                      cancelled op left unclaimed, or None;
  ``complete(res, flags)``  resolve ``fut``, or resubmit through
                      ``resubmit`` (a partial send, an empty buffer ring);
  ``release()``       let go of what only the kernel needed (unpin a
                      caller's buffer, close a pipe), once, when settled;
  ``unclaim(result)`` a result the caller was cancelled too late to take:
                      keep it for the next caller (receives, accepts);
  ``discard(res)``    the completion of an op abandoned because its socket
                      was closed under it (close an accepted fd).

States: *in flight* from ``run`` until the completion that does not
resubmit; meanwhile it is listed in ``loop._sock_ops``, where the loop
finds ops whose socket the user closed (``sock.fileno() == -1``) and
abandons them: cancelled by user_data so the kernel drops its file
reference and the peer sees the close, their future left pending as
asyncio's is when the selector forgets a closed fd.  Then *settled*:
released, unlisted, and whoever waits for it (``wait_settled``) woken.

The awaiting side (``run``) turns a cancellation into an ASYNC_CANCEL (a
request: the op stays in flight, buffers pinned, until its completion).
A receive or accept cancelled that way is listed in ``loop._cancelling``
until it settles, so that the next receive on that socket waits for it
rather than going into the kernel behind an op that may still bring data
(which would then sit unclaimed while the new receive waits forever).  A
cancellation that arrives after the completion resolved ``fut`` hands the
result back through ``unclaim``; nothing the kernel did is thrown away.

An exception raised by ``complete`` resolves ``fut`` with it, so no
caller waits forever on a callback that failed.
"""
from asyncio import exceptions


class Op:
    __slots__ = ("loop", "sock", "fd", "fut", "user_data", "settled", "abandoned",
                 "_waiters")

    # True for receives and accepts: what they take off the socket is
    # handed to the next caller, who must wait for a cancelled one.
    claims = False

    def __init__(self, loop, sock, fd):
        self.loop = loop
        self.sock = sock
        self.fd = fd
        self.fut = loop.create_future()
        self.user_data = None
        self.settled = False
        self.abandoned = False
        self._waiters = None

    # -- the awaiting side ----------------------------------------------
    async def run(self):
        """Take what a cancelled op left (``claim``), or submit and await
        the result."""
        loop = self.loop
        try:
            if self.claims:
                sock = self.sock
                if loop._cancelling and sock in loop._cancelling:
                    await loop._after_cancelled_receives(sock)
                    self.fd = loop._sock_fd(sock)  # it may have closed meanwhile
                if loop._unclaimed:
                    result = self.claim()
                    if result is not None:
                        self.release()
                        return result
            self.user_data = self.submit()
        except BaseException:
            self.release()
            raise
        loop._sock_ops.add(self)
        fut = self.fut
        try:
            return await fut
        except exceptions.CancelledError:
            self._caller_cancelled(fut)
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
        if self.settled:
            return
        loop = self.loop
        loop._ring.cancel(self.user_data)
        if self.claims:
            if self._waiters is None:
                self._waiters = []
            loop._cancelling.setdefault(self.sock, []).append(self)

    async def wait_settled(self):
        if not self.settled:
            if self._waiters is None:
                self._waiters = []
            waiter = self.loop.create_future()
            self._waiters.append(waiter)
            await waiter

    # -- the ring's side -------------------------------------------------
    def closed_under(self):
        """For ``complete`` before it resubmits: True, and the op abandoned,
        if the user closed the socket meanwhile (its fd number is stale, maybe
        reused already)."""
        if self.sock.fileno() >= 0:
            return False
        self.abandoned = True
        return True

    def fail(self, exc):
        """For ``complete``: the op failed; its caller hears, if still there."""
        if not self.fut.done():
            self.fut.set_exception(exc)

    def resubmit(self, user_data):
        """``complete`` queued the op again under ``user_data``."""
        self.user_data = user_data

    def __call__(self, res, flags):
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

    def abandon(self):
        """Its socket was closed under it: cancel it, leave ``fut`` pending."""
        self.abandoned = True
        self.loop._sock_ops.discard(self)
        self.loop._ring.cancel(self.user_data)

    def _settle(self, wake):
        if self.settled:
            return
        self.settled = True
        loop = self.loop
        loop._sock_ops.discard(self)
        self.release()
        waiters = self._waiters
        if waiters is None:
            return
        self._waiters = None
        cancelling = loop._cancelling.get(self.sock)
        if cancelling and self in cancelling:
            cancelling.remove(self)
            if not cancelling:
                del loop._cancelling[self.sock]
        if wake:
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # -- what a subclass may override ----------------------------------
    def claim(self):
        return None

    def release(self):
        pass

    def unclaim(self, result):
        pass

    def discard(self, res):
        pass
