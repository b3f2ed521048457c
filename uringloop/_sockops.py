"""``loop.sock_*`` on the ring: each call is one completion-based operation
(recv, send, recvmsg, sendmsg, connect, accept) instead of a readiness wait
followed by a syscall.  The exception is ``sock_sendall``, which first
offers the data to the socket with a plain ``send`` as asyncio and uvloop
do: a socket with room takes it all and the call returns without
suspending its task (measured: 79k -> 34k instructions per 1 KiB sock_*
echo round trip, for one ``sendto`` syscall where the ring's SEND cost
none); only what the socket refuses goes to the ring.  ``sock_recv`` does
not try first: in a request/response exchange the next request is rarely
there yet, and the failed ``recv`` would be a wasted syscall per call.

A socket whose class overrides the method asyncio would call (an SSL
socket among them) goes to asyncio's own implementation (``_overrides``).

Data flow: a method checks its arguments as asyncio does (the same
exception, in the same order: the socket, its arguments as the socket
method would parse them, then a closed socket or loop), pins the memory the
kernel will use and runs one ``SockOp`` (defined here; _op.py has the
lifecycle every operation shares: submission, resubmission, cancellation,
settling, release).  The ring's ops table keeps the pinned memory until
the completion arrives, so cancelling (which submits ``ASYNC_CANCEL``)
never frees memory the kernel may still write.

Receives never go straight into a caller's buffer: the kernel writes into
a provided buffer or one of the op's own, and the completion copies that
into the caller's.  A cancellation is only a request, and a receive it
comes too late for would otherwise write into memory its caller already
has back (measured in CPython's test_sock_client_racing: a cancelled
``sock_recv_into`` overwrote the response the next call had put in the
same buffer).  Sends read the caller's buffer, pinned via
``ffi.from_buffer``; a cancelled send waits for its request to settle
before the CancelledError reaches its caller (_op's ``lends``), so that
nothing sends the caller's later bytes and a bytearray may be resized at
once, as with asyncio.  A caller's buffer is unpinned (``ffi.release``) when
the op settles, not left to the garbage collector: a memoryview still
exporting to a cdata crashes CPython if the cycle collector clears the
memoryview first.  A provided buffer takes a datagram only if it is as
big as the receive asked for: the kernel would cut a longer one short.

A receive or accept cancelled too late completes with what it took off
the socket (data, an empty datagram or EOF, a connection); the kernel
cannot take that back, while asyncio would have left it for the next
caller.  So it is kept per socket ("unclaimed") and handed to the next
receive/accept on that socket, oldest first: a live completion that finds
older unclaimed data delivers that and queues its own behind.  A next
call already waiting in the kernel (made in the step that cancelled the
task, before the cancellation reached the op) gets it at once, its own
request cancelled in turn (``_keep_late_result``).

A socket closed by the user while an op is in flight would stay open in
the kernel (the op holds the file; the rule is _ringfd.py's): before the
loop may block (and every few milliseconds under load), ops whose socket
reports ``fileno() == -1`` are cancelled (see ``_watch_closed_sockets``),
so the peer sees the close as with asyncio, and none is resubmitted on
the stale number.
"""
import collections
import errno
import operator
import os
import select
import socket
import sys
import weakref

from . import _sockaddr
from ._overrides import SOCKET, overrides
from ._native import MAX_IO_LEN, new_uncleared, os_error
from ._op import Op
from ._ringfd import closed_by_user
from ._uring import ffi, lib

_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_POLLOUT = select.POLLOUT
# How often the ops in flight are checked for a socket closed under them
# (see _watch_closed_sockets), up to how many are checked every turn, and
# how far apart the checks drift while the loop has nothing else to do.
_CLOSED_SOCKET_SCAN = 0.002
_SCAN_ALWAYS = 16
_IDLE_SCAN_LIMIT = 0.02


def _type_name(obj):
    return "None" if obj is None else type(obj).__name__


def _pin(data):
    """``data`` as socket.send takes it (same exceptions), pinned."""
    try:
        return ffi.from_buffer(data)
    except TypeError:
        raise TypeError(f"a bytes-like object is required, not "
                        f"{type(data).__name__!r}") from None


def _pin_writable(buf, method):
    """``buf`` as socket.<method> takes a buffer to fill, pinned."""
    try:
        return ffi.from_buffer(buf, require_writable=True)
    except (TypeError, BufferError, ValueError):
        # (ValueError: a released memoryview, which the socket method
        # refuses with the same TypeError as any other unusable buffer.)
        raise TypeError(f"{method}() argument 1 must be read-write bytes-like "
                        f"object, not {_type_name(buf)}") from None


def _buffer_size(n, method):
    """``n`` as socket.<method> parses a buffer size (same exceptions)."""
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"negative buffersize in {method}")
    if n > sys.maxsize:
        raise OverflowError("Python int too large to convert to C ssize_t")
    return n


def _at_once(refusal, call, *args):
    """asyncio makes the socket call before it looks at the loop or at a
    transport using the socket: a call that can finish at once does so on
    a closed loop or on a transport's socket too, and only one that would
    have to wait gets ``refusal`` (the RuntimeError of ``_sock_fd``)."""
    try:
        return call(*args)
    except (BlockingIOError, InterruptedError):
        raise refusal from None


def _accept_now(sock):
    conn, address = sock.accept()
    conn.setblocking(False)
    return conn, address


def _provided_fits(ring, sock, nbytes):
    """Whether a receive of ``nbytes`` may go into a provided buffer: the
    kernel has them, and one is big enough or a short read loses nothing
    (a stream's rest stays on the socket; a datagram's would be cut off)."""
    return nbytes <= ring.buffer_size or sock.type == socket.SOCK_STREAM


def _repin(buf, nbytes):
    """The first ``nbytes`` of a caller's buffer, copied."""
    view = ffi.from_buffer(buf)
    try:
        return ffi.unpack(view, nbytes)
    finally:
        ffi.release(view)


_USER_DATA = operator.attrgetter("user_data")


# -- the operations (lifecycle in _op.Op) --------------------------------

class SockOp(Op):
    """An operation on a socket its user owns.  While in flight it is
    listed in ``loop._sock_ops``, where the loop finds the ops whose socket
    the user closed (_ringfd.closed_by_user) and abandons them: cancelled
    by user_data, so that the kernel drops its file reference and the peer
    sees the close, their future left pending as asyncio's is when the
    selector forgets a closed fd.

    A receive or accept (``claims``) cancelled before its completion is
    listed in ``loop._cancelling`` until it settles, so that the next one
    on that socket waits for it (``claim``) rather than going into the
    kernel behind an op that may still bring data, which would then sit
    unclaimed while the new one waits forever; then it takes the oldest
    unclaimed result (``take_unclaimed``), if any."""
    __slots__ = ("sock", "fd")

    def __init__(self, loop, sock, fd):
        Op.__init__(self, loop, loop._sock_ops)
        self.sock = sock
        self.fd = fd

    async def claim(self):
        loop = self.loop
        sock = self.sock
        if loop._cancelling and sock in loop._cancelling:
            await loop._after_cancelled_receives(sock)
            self.fd = loop._sock_fd(sock)  # it may have closed meanwhile
        return self.take_unclaimed() if loop._unclaimed else None

    def straggle(self):
        if self.claims:
            self.loop._cancelling.setdefault(self.sock, []).append(self)

    def unstraggle(self):
        cancelling = self.loop._cancelling
        waiting = cancelling.get(self.sock)
        if waiting and self in waiting:
            waiting.remove(self)
            if not waiting:
                del cancelling[self.sock]

    def fd_closed(self):
        return closed_by_user(self.sock)

    def abandon(self):
        """Its socket was closed under it: cancel it, leave ``fut`` pending."""
        self.abandoned = True
        self.registry.discard(self)
        self.cancel()


class _Recv(SockOp):
    """sock_recv: into a provided buffer (nothing to allocate per call), or
    a buffer of its own when the kernel has none."""
    __slots__ = ("nbytes", "buf")
    claims = True

    def __init__(self, loop, sock, fd, nbytes):
        SockOp.__init__(self, loop, sock, fd)
        self.nbytes = nbytes
        self.buf = None

    def take_unclaimed(self):
        claimed = self.loop._claim(self.sock)
        return None if claimed is None else self.loop._fit(self.sock, claimed, self.nbytes)[0]

    def submit(self):
        loop = self.loop
        buf = self.buf
        if buf is None:
            if loop._recv_provided and _provided_fits(loop._ring, self.sock, self.nbytes):
                return loop._ring.submit_recv_provided(self.fd, self.nbytes, self)
            self.buf = buf = new_uncleared("char[]", self.nbytes)
        return loop._ring.submit_recv(self.fd, buf, self.nbytes, self)

    def complete(self, res, flags):
        fut = self.fut
        loop = self.loop
        if res == -errno.ENOBUFS and self.buf is None and not fut.done():
            # Every provided buffer is in use: this one call allocates.
            self.buf = new_uncleared("char[]", self.nbytes)
            self.resubmit()
            return
        if res < 0:
            return self.fail(os_error(res))
        data = b""
        if res:
            # Copied now: a provided buffer goes back to the kernel next turn.
            buf = self.buf
            data = loop._ring.receive_buffer(flags, res) if buf is None else ffi.unpack(buf, res)
        if fut.done():
            loop._keep_late_result(self, (data, None))
        elif loop._unclaimed:
            fut.set_result(loop._fit(self.sock, loop._claim(self.sock, (data, None)),
                                     self.nbytes)[0])
        else:
            fut.set_result(data)

    def unclaim(self, result):
        self.loop._keep_unclaimed(self.sock, (result, None), oldest=True)


class _RecvInto(SockOp):
    """sock_recv_into: the kernel writes into a provided buffer (or one of
    the op's own), and the completion copies that into the caller's buffer
    (``target``, pinned till settled).  Not straight into the caller's: a
    receive cancelled too late would write there after the caller had it
    back, while asyncio never touches it after the cancellation."""
    __slots__ = ("buf", "target", "own")
    claims = True

    def __init__(self, loop, sock, fd, buf, target):
        SockOp.__init__(self, loop, sock, fd)
        self.buf = buf
        self.target = target
        self.own = None

    def take_unclaimed(self):
        claimed = self.loop._claim_into(self.sock, self.target, len(self.target))
        return None if claimed is None else claimed[0]

    def submit(self):
        loop = self.loop
        nbytes = min(len(self.target), MAX_IO_LEN)
        own = self.own
        if own is None:
            if loop._recv_provided and _provided_fits(loop._ring, self.sock, nbytes):
                return loop._ring.submit_recv_provided(self.fd, nbytes, self)
            self.own = own = new_uncleared("char[]", nbytes)
        return loop._ring.submit_recv(self.fd, own, nbytes, self)

    def complete(self, res, flags):
        fut = self.fut
        own = self.own
        if res == -errno.ENOBUFS and own is None and not fut.done():
            # Every provided buffer is in use: this one call allocates.
            self.own = new_uncleared("char[]", min(len(self.target), MAX_IO_LEN))
            self.resubmit()
            return
        if res < 0:
            return self.fail(os_error(res))
        loop = self.loop
        if fut.done() or loop._unclaimed:
            data = loop._ring.receive_buffer(flags, res) if own is None else ffi.unpack(own, res)
            if fut.done():
                loop._keep_late_result(self, (data, None))
            else:
                target = self.target
                fut.set_result(loop._claim_into(self.sock, target, len(target), (data, None))[0])
            return
        if own is None:
            loop._ring.copy_received(flags, res, self.target)
        else:
            ffi.memmove(self.target, own, res)
        fut.set_result(res)

    def release(self):
        ffi.release(self.target)

    def unclaim(self, result):
        self.loop._keep_unclaimed(self.sock, (_repin(self.buf, result), None), oldest=True)


class _RecvMsg(SockOp):
    """sock_recvfrom (``buf`` None: the result carries bytes) and
    sock_recvfrom_into (the result carries a count, the data copied into
    the caller's ``buf``, pinned as ``target``, at the completion; not
    received there, for the reason _RecvInto gives).  The kernel writes
    into ``space``, the op's own."""
    __slots__ = ("buf", "target", "space", "nbytes", "msg")
    claims = True

    def __init__(self, loop, sock, fd, buf, target, nbytes):
        SockOp.__init__(self, loop, sock, fd)
        self.buf = buf
        self.target = target
        self.nbytes = nbytes
        self.space = new_uncleared("char[]", max(nbytes, 1))
        self.msg = None

    def take_unclaimed(self):
        loop = self.loop
        claimed = loop._claim(self.sock)
        return None if claimed is None else self._deliver(claimed)

    def _deliver(self, item):
        """The result for an item taken from the unclaimed queue."""
        data, addr = self.loop._fit(self.sock, item, self.nbytes)
        if self.buf is None:
            return data, addr
        ffi.memmove(self.target, data, len(data))
        return len(data), addr

    def submit(self):
        self.msg = msg = ffi.new("struct ul_msg *")
        return self.loop._ring.submit_recvmsg(self.fd, msg, self.space, self.nbytes, self)

    def complete(self, res, flags):
        fut = self.fut
        if res < 0:
            return self.fail(os_error(res))
        msg = self.msg
        addr = _sockaddr.unpack(ffi.buffer(ffi.addressof(msg.addr)), msg.hdr.msg_namelen)
        loop = self.loop
        if fut.done():
            loop._keep_late_result(self, (ffi.unpack(self.space, res), addr))
        elif loop._unclaimed:
            item = (ffi.unpack(self.space, res), addr)
            fut.set_result(self._deliver(loop._claim(self.sock, item)))
        elif self.buf is None:
            fut.set_result((ffi.unpack(self.space, res), addr))
        else:
            ffi.memmove(self.target, self.space, res)
            fut.set_result((res, addr))

    def release(self):
        if self.buf is not None:
            ffi.release(self.target)

    def unclaim(self, result):
        nbytes, addr = result
        if self.buf is not None:
            result = (_repin(self.buf, nbytes), addr)
        self.loop._keep_unclaimed(self.sock, result, oldest=True)


class _Accept(SockOp):
    __slots__ = ()
    claims = True
    returns_fd = True

    def take_unclaimed(self):
        return self.loop._claim(self.sock)

    def submit(self):
        return self.loop._ring.submit_accept(self.fd, _ACCEPT_FLAGS, self)

    def complete(self, res, flags):
        fut = self.fut
        if res < 0:
            return self.fail(os_error(res))
        sock = self.sock
        try:
            # As socket.accept builds it (no syscalls to detect the kind).
            conn = socket.socket(sock.family, sock.type, sock.proto, fileno=res)
        except BaseException:
            os.close(res)
            raise
        try:
            conn.setblocking(False)
            item = (conn, _sockaddr.peername(conn))
        except BaseException:
            conn.close()
            raise
        loop = self.loop
        if fut.done():
            loop._keep_late_result(self, item)
        else:
            fut.set_result(loop._claim(sock, item))

    def discard(self, res):
        if res >= 0:
            os.close(res)  # for a listener closed under it: refused, as asyncio's

    def unclaim(self, result):
        self.loop._keep_unclaimed(self.sock, result, oldest=True)


class _SendAll(SockOp):
    __slots__ = ("source", "sent")
    lends = True   # a cancelled send lets go of the caller's bytes before it raises

    def __init__(self, loop, sock, fd, source, sent):
        SockOp.__init__(self, loop, sock, fd)
        self.source = source
        self.sent = sent

    def submit(self):
        source = self.source
        sent = self.sent
        return self.loop._ring.submit_send(self.fd, source + sent if sent else source,
                                           len(source) - sent, self, source)

    def complete(self, res, flags):
        fut = self.fut
        if fut.done():
            return
        if res < 0:
            fut.set_exception(os_error(res))
            return
        self.sent += res
        if self.sent < len(self.source):
            # A short send (the kernel sends at most 1 GiB at a time): the rest.
            self.resubmit()
            return
        fut.set_result(None)

    def release(self):
        ffi.release(self.source)


class _SendTo(SockOp):
    __slots__ = ("source", "sockaddr")
    lends = True

    def __init__(self, loop, sock, fd, source, sockaddr):
        SockOp.__init__(self, loop, sock, fd)
        self.source = source
        self.sockaddr = sockaddr

    def submit(self):
        source = self.source
        return self.loop._ring.submit_sendmsg(self.fd, ffi.new("struct ul_msg *"), source,
                                              len(source), self.sockaddr, self, source)

    def complete(self, res, flags):
        fut = self.fut
        if fut.done():
            return
        if res < 0:
            fut.set_exception(os_error(res))
        else:
            fut.set_result(res)

    def release(self):
        ffi.release(self.source)


class _ConnectWait(SockOp):
    """sock_connect once connect(2) has said the connection is in progress:
    a poll for writability, then the outcome read from SO_ERROR, as
    asyncio's writer callback reads it (and words its failure)."""
    __slots__ = ("address",)

    def __init__(self, loop, sock, fd, address):
        SockOp.__init__(self, loop, sock, fd)
        self.address = address

    def submit(self):
        return self.loop._ring.submit(lib.ul_prep_poll, (self.fd, _POLLOUT), self, None)

    def complete(self, res, flags):
        fut = self.fut
        if fut.done():
            return
        if res < 0:
            return fut.set_exception(os_error(res))
        try:
            error = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        except OSError as exc:
            return fut.set_exception(exc)
        if error:
            fut.set_exception(OSError(error, f"Connect call failed {self.address}"))
        else:
            fut.set_result(None)


class RingSocketOpsMixin:
    """Needs ``self._ring`` and asyncio's selector-loop helpers."""

    _unclaimed = None   # socket -> deque of (data or conn, address)

    def __init__(self, *args, **kwargs):
        self._sock_ops = set()      # ops in flight (see _op.Op)
        self._cancelling = {}       # socket -> cancelled receives not settled yet
        self._next_closed_scan = 0.0
        self._closed_scan_timer = None
        self._idle_scan_delay = _CLOSED_SOCKET_SCAN
        super().__init__(*args, **kwargs)

    # -- unclaimed results --------------------------------------------
    def _keep_unclaimed(self, sock, item, oldest=False):
        if self._unclaimed is None:
            self._unclaimed = weakref.WeakKeyDictionary()
        queue = self._unclaimed.setdefault(sock, collections.deque())
        if oldest:
            queue.appendleft(item)
        else:
            queue.append(item)

    def _keep_late_result(self, op, item):
        """What the cancelled receive or accept ``op`` took off its socket:
        kept for the next caller; and if that caller's own request is
        already waiting in the kernel (it came before the cancellation
        reached ``op``, which happens when the task awaiting ``op`` is
        cancelled and another call is made in the same step), handed to
        the oldest such caller at once, as asyncio's next call would read
        it, its own request cancelled in turn (whatever that brings is
        kept behind)."""
        sock = op.sock
        self._keep_unclaimed(sock, item)
        waiting = [other for other in self._sock_ops
                   if other.sock is sock and other.claims and other.user_data is not None
                   and not other.fut.done() and not other.settled]
        if not waiting:
            return
        other = min(waiting, key=_USER_DATA)
        result = other.take_unclaimed()
        if result is None:
            return
        other.fut.set_result(result)
        other.withdraw()

    def _claim(self, sock, item=None):
        """The oldest unclaimed item of ``sock``, ``item`` queued behind it;
        ``item`` itself (possibly None) when nothing is waiting."""
        queue = self._unclaimed.get(sock) if self._unclaimed else None
        if not queue:
            return item
        if item is not None:
            queue.append(item)
        first = queue.popleft()
        if not queue:
            del self._unclaimed[sock]
        return first

    def _fit(self, sock, item, n):
        # A stream keeps what does not fit; a datagram is truncated.
        data, addr = item
        if len(data) > n and sock.type == socket.SOCK_STREAM:
            self._keep_unclaimed(sock, (data[n:], addr), oldest=True)
        return data[:n], addr

    def _claim_into(self, sock, target, nbytes, item=None):
        """Copy the oldest unclaimed data of ``sock`` into ``target``, ``item``
        (what a live completion brought) queued behind it."""
        claimed = self._claim(sock, item)
        if claimed is None:
            return None
        data, addr = self._fit(sock, claimed, nbytes)
        ffi.memmove(target, data, len(data))
        return len(data), addr

    async def _after_cancelled_receives(self, sock):
        """Wait until no cancelled receive of ``sock`` may still bring data:
        a new one must not go into the kernel behind it (see _op)."""
        while True:
            ops = self._cancelling.get(sock)
            if not ops:
                return
            await ops[0].wait_settled()

    # -- checks, in asyncio's order -------------------------------------
    def _check_sock(self, sock):
        """What asyncio checks before it uses a socket that comes to the
        ring: non-blocking, in debug mode.  (An SSL socket overrides every
        method asyncio calls, so it went to asyncio's, which refuses it.)"""
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _sock_fd(self, sock, pinned=None):
        """The fd to run an op on; ``pinned`` is unpinned if there is none."""
        try:
            fd = sock.fileno()
            if self._transports:
                # asyncio's check costs a KeyError per call; with no transport
                # at all (a pure sock_* server) there is nothing to check.
                self._ensure_fd_no_transport(fd)
            self._check_closed()
            if fd < 0:
                raise OSError(errno.EBADF, "Bad file descriptor")
        except BaseException:
            if pinned is not None:
                ffi.release(pinned)
            raise
        return fd

    # -- sockets closed under their ops ----------------------------------
    def _check_sock_ops(self):
        """Run by the turn (_turn.TurnMixin._run_once) before each
        iteration while ``_sock_ops`` is not empty: with no op in flight a
        turn pays for nothing here, not even a call."""
        ops = self._sock_ops
        # Abandon the ops whose socket the user closed (SockOp.abandon;
        # the test is _ringfd.closed_by_user, written out here and in
        # the scan since they run every turn) before the loop may
        # block: a closed socket must not wait for some unrelated
        # wake-up.  With few ops, a check each time costs less than the
        # timer below would.
        if not self._ready and len(ops) <= _SCAN_ALWAYS:
            for op in ops:
                if op.sock.fileno() < 0:
                    self._abandon_ops_of_closed_sockets()
                    break
        else:
            self._watch_closed_sockets()

    def _watch_closed_sockets(self):
        """With many ops, a scan (a fileno() call per op) runs at most every
        _CLOSED_SOCKET_SCAN seconds, and a timer makes a loop that would
        block meanwhile wake for the next one.  (A pending timer makes each
        wait of the ring a timed one, which costs about as much as checking
        _SCAN_ALWAYS ops.)"""
        now = self.time()
        if now >= self._next_closed_scan:
            self._abandon_ops_of_closed_sockets()
        if self._ready:
            self._idle_scan_delay = _CLOSED_SOCKET_SCAN
        elif self._closed_scan_timer is None:
            # Idle: each wake-up that finds nothing doubles the next wait
            # (up to _IDLE_SCAN_LIMIT), so a quiet server with many ops
            # pending does not wake 500 times a second.
            self._closed_scan_timer = self.call_at(
                max(self._next_closed_scan, now + self._idle_scan_delay),
                self._closed_scan_due)
            self._idle_scan_delay = min(2 * self._idle_scan_delay, _IDLE_SCAN_LIMIT)

    def _abandon_ops_of_closed_sockets(self):
        self._next_closed_scan = self.time() + _CLOSED_SOCKET_SCAN
        for op in [op for op in self._sock_ops if op.sock.fileno() < 0]:
            op.abandon()

    def _closed_scan_due(self):
        self._closed_scan_timer = None  # the next turn scans

    def close(self):
        super().close()
        # asyncio's close drops its timers; this one would keep the loop in a
        # reference cycle (the ring settles the ops themselves, see _op).
        self._closed_scan_timer = None
        # Connections accepted for a caller that never came back: nobody
        # else can close them now.
        unclaimed, self._unclaimed = self._unclaimed, None
        for queue in (unclaimed or {}).values():
            for item, _ in queue:
                if isinstance(item, SOCKET):
                    item.close()

    # -- the methods ------------------------------------------------------
    async def sock_recv(self, sock, n):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("recv",)):
                return await super().sock_recv(sock, n)
            self._check_sock(sock)
        # A receive asks the kernel for at most MAX_IO_LEN: recv may return
        # less than asked anyway, so a larger request gets what one receive
        # brings, without allocating the difference.
        if type(n) is not int or not 0 < n <= MAX_IO_LEN:
            n = _buffer_size(n, "recv")
            if n == 0:
                return b""   # socket.recv(0) returns at once
            n = min(n, MAX_IO_LEN)
        try:
            fd = self._sock_fd(sock)
        except RuntimeError as refusal:
            return _at_once(refusal, sock.recv, n)
        return await _Recv(self, sock, fd, n).run()

    async def sock_recv_into(self, sock, buf):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("recv_into",)):
                return await super().sock_recv_into(sock, buf)
            self._check_sock(sock)
        target = _pin_writable(buf, "recv_into")
        if not len(target):
            ffi.release(target)
            return 0         # socket.recv_into of an empty buffer returns at once
        try:
            fd = self._sock_fd(sock, target)
        except RuntimeError as refusal:
            return _at_once(refusal, sock.recv_into, buf)
        return await _RecvInto(self, sock, fd, buf, target).run()

    async def sock_recvfrom(self, sock, bufsize):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("recvfrom",)):
                return await super().sock_recvfrom(sock, bufsize)
            self._check_sock(sock)
        if type(bufsize) is not int or not 0 <= bufsize <= MAX_IO_LEN:
            bufsize = min(_buffer_size(bufsize, "recvfrom"), MAX_IO_LEN)
        try:
            fd = self._sock_fd(sock)
        except RuntimeError as refusal:
            return _at_once(refusal, sock.recvfrom, bufsize)
        return await _RecvMsg(self, sock, fd, None, None, bufsize).run()

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("recvfrom_into",)):
                return await super().sock_recvfrom_into(sock, buf, nbytes)
            self._check_sock(sock)
        if not nbytes:
            nbytes = len(buf)          # asyncio's default, before the call
        target = _pin_writable(buf, "recvfrom_into")
        try:
            nbytes = _buffer_size(nbytes, "recvfrom_into")
            if nbytes > len(target):
                raise ValueError("nbytes is greater than the length of the buffer")
        except BaseException:
            ffi.release(target)
            raise
        try:
            fd = self._sock_fd(sock, target)
        except RuntimeError as refusal:
            return _at_once(refusal, sock.recvfrom_into, buf, nbytes)
        return await _RecvMsg(self, sock, fd, buf, target, min(nbytes, MAX_IO_LEN)).run()

    async def sock_sendall(self, sock, data):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("send",)):
                return await super().sock_sendall(sock, data)
            self._check_sock(sock)
        # Sent first, as asyncio does (same exceptions, and the same
        # result on a socket that takes it all: no suspension); the ring
        # sends the rest.
        try:
            sent = sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        if sent and type(data) is bytes and sent == len(data):
            return
        source = _pin(data)
        if sent == len(source):   # any other buffer: its length in bytes
            ffi.release(source)
            return
        fd = self._sock_fd(sock, source)
        return await _SendAll(self, sock, fd, source, sent).run()

    async def sock_sendto(self, sock, data, address):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("sendto",)):
                return await super().sock_sendto(sock, data, address)
            self._check_sock(sock)
        source = _pin(data)
        try:
            family = sock.family
            address = _sockaddr.check(sock, address)
            if family in _IP_FAMILIES and _sockaddr.needs_resolving(family, address):
                address = await self._resolve_host(sock, address)
            sockaddr = _sockaddr.pack(family, address)
        except BaseException:
            ffi.release(source)
            raise
        try:
            fd = self._sock_fd(sock, source)
        except RuntimeError as refusal:
            return _at_once(refusal, sock.sendto, data, address)
        return await _SendTo(self, sock, fd, source, sockaddr).run()

    async def sock_connect(self, sock, address):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("connect",)):
                return await super().sock_connect(sock, address)
            self._check_sock(sock)
        family = sock.family
        if family in _IP_FAMILIES:
            # asyncio's own resolution step, so that what it accepts (a port
            # given as "80") and refuses (an address that is no tuple) is
            # exactly the same; numeric hosts skip the resolver.
            resolved = await self._ensure_resolved(address, family=family, type=sock.type,
                                                   proto=sock.proto, loop=self)
            address = resolved[0][4]
        # connect(2) first, as asyncio does: what fails (or succeeds) at once
        # does so with the socket module's own error and words, before the
        # loop or a transport using the fd is looked at; only a connection
        # in progress waits, on the ring.
        try:
            sock.connect(address)
        except (BlockingIOError, InterruptedError):
            pass
        else:
            return None
        return await _ConnectWait(self, sock, self._sock_fd(sock), address).run()

    async def sock_accept(self, sock):
        if type(sock) is not SOCKET or self._debug:
            if overrides(sock, ("accept",)):
                return await super().sock_accept(sock)
            self._check_sock(sock)
        try:
            fd = self._sock_fd(sock)
        except RuntimeError as refusal:
            return _at_once(refusal, _accept_now, sock)
        return await _Accept(self, sock, fd).run()

    async def _resolve_host(self, sock, address):
        """A checked IP address whose host is a name, resolved as
        socket.sendto would resolve it, without blocking the loop."""
        host, port = address[:2]
        infos = await self.getaddrinfo(host, port, family=sock.family,
                                       type=sock.type, proto=sock.proto)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return (infos[0][4][0], port) + tuple(address[2:])
