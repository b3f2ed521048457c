"""When an fd that ring operations use may be closed: the one rule, for
every owner of such an fd (stream and datagram transports, read pipes,
sendfile's pipe pair, async files), and the same rule seen from the other
side for the sockets ``loop.sock_*`` runs on, which their user closes.

Why a rule: the kernel finds the file by the fd *number*.  An operation
that looks the number up after it was closed, maybe reused by an
unrelated open meanwhile, acts on the wrong file.  Once an operation has
the file, the number no longer matters to it: it pins the file (a peer
sees no close until it completes), and its completion finds its owner by
user_data.  Most operations take the file when the kernel accepts the SQE
(receives, sends, polls, reads); a splice looks both its fds up only when
an io-wq worker runs it, an executor job when its thread gets to it.

The rule: the owner calls :meth:`RingFd.close` once it submits nothing
more on the fd and has cancelled what must not run on (a receive, an
aborted send); nothing on it is resubmitted after that.  The fd closes

* at once if no operation on it is in flight;
* else, if every operation in flight took the file at submission
  (``ops``), as soon as none of them waits in the submission queue
  (``Ring.submit_now()``): as promptly as asyncio closes, while the
  cancelled operations still completing keep the peer's view right;
* else when the last operation that looks the number up later
  (``borrowed``: splices, executor jobs, a native sendfile on a
  transport's socket) is over.

If ``submit_now()`` cannot hand everything to the kernel (another thread
runs the ring, or this is a forked child), the next completion tries
again.

Counting is the owner's: ``ops += 1`` when it submits (attribute
arithmetic, no call on a per-message path), :meth:`op_done` at an
operation's last completion; :meth:`borrow` / :meth:`give_back` around
the others.

Sockets closed by their user (``loop.sock_*``): the user closes the fd
whatever is in flight.  The operations the kernel holds pin the file, so
the loop cancels them (the peer must see the close: see _sockops), and
one about to be resubmitted asks :func:`closed_by_user` first, since its
number is stale.
"""


class RingFd:
    """The operations in flight on one fd (or a pair closed together) and
    its closing, per the rule above."""

    __slots__ = ("ops", "borrowed", "closed", "_ring", "_closer")

    def __init__(self, ring):
        self.ops = 0           # in flight; the kernel took the file at submission
        self.borrowed = 0      # in flight; the number is looked up later
        self.closed = False
        self._ring = ring      # None when every operation borrows
        self._closer = None    # set by close(): the owner is done

    def op_done(self):
        """An operation counted in ``ops`` had its last completion."""
        self.ops -= 1
        if self._closer is not None:
            self._close_if_due()

    def borrow(self):
        self.borrowed += 1

    def give_back(self):
        self.borrowed -= 1
        if self._closer is not None:
            self._close_if_due()

    def close(self, closer):
        """The owner submits nothing more on the fd: ``closer()`` closes it
        as soon as the rule allows, maybe now.  True once it is closed."""
        if not self.closed:
            self._closer = closer
            self._close_if_due()
        return self.closed

    def _close_if_due(self):
        if self.borrowed:
            return
        if self.ops:
            try:
                if not self._ring.submit_now():
                    return
            except OSError:
                return
        closer, self._closer = self._closer, None
        self.closed = True
        closer()


def closed_by_user(sock):
    """True once the user closed ``sock`` under operations in flight: its
    number is stale (maybe reused already), so nothing is resubmitted on
    it and the operations the kernel holds are cancelled."""
    return sock.fileno() < 0
