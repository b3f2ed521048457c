"""``loop.sock_*`` on the ring: each call is one completion-based operation
(recv, send, recvmsg, sendmsg, connect, accept) instead of a readiness wait
followed by a syscall.

Data flow: a method checks its arguments as asyncio does, pins the memory
the kernel will use (a fresh buffer, or the caller's buffer via
``ffi.from_buffer``), submits the operation with a completion callback and
awaits a future.  The ring's ops table keeps the pinned memory until the
completion arrives, so cancelling the future (which submits
``ASYNC_CANCEL``) never frees memory the kernel may still write.  A
caller's buffer is unpinned (``ffi.release``) by that same completion, not
left to the garbage collector: a memoryview still exporting to a cdata
crashes CPython if the cycle collector clears the memoryview first.

A receive or accept cancelled too late completes with what it took off
the socket (data, an empty datagram or EOF, a connection); the kernel
cannot take that back, while asyncio would have left it for the next
caller.  So it is kept per socket ("unclaimed") and handed to the next
receive/accept on that socket, oldest first: a live completion that finds
older unclaimed data delivers that and queues its own behind.
"""
import collections
import errno
import os
import socket
import ssl
import weakref

from asyncio import exceptions

from . import _sockaddr
from ._uring import ffi

_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_IP_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def _os_error(res):
    return OSError(-res, os.strerror(-res))


def _pin(data, writable=False):
    try:
        return ffi.from_buffer(data, require_writable=writable)
    except BufferError:
        # What socket.recv_into raises for a read-only buffer.
        raise TypeError(f"a read-write bytes-like object is required, "
                        f"not {type(data).__name__!r}") from None


class RingSocketOpsMixin:
    """Needs ``self._ring`` and asyncio's selector-loop helpers."""

    _unclaimed = None   # socket -> deque of (data or conn, address)

    def _keep_unclaimed(self, sock, item, oldest=False):
        if self._unclaimed is None:
            self._unclaimed = weakref.WeakKeyDictionary()
        queue = self._unclaimed.setdefault(sock, collections.deque())
        if oldest:
            queue.appendleft(item)
        else:
            queue.append(item)

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
        """Copy the oldest unclaimed data of ``sock`` into ``target``; a live
        completion passes what it just wrote there as ``item``."""
        claimed = self._claim(sock, item)
        if claimed is None:
            return None
        if claimed is item and len(item[0]) <= nbytes:
            return len(item[0]), item[1]      # already in place
        data, addr = self._fit(sock, claimed, nbytes)
        ffi.memmove(target, data, len(data))
        return len(data), addr

    def _check_sock(self, sock):
        if isinstance(sock, ssl.SSLSocket):
            raise TypeError("Socket cannot be of type SSLSocket")
        if self._debug and sock.gettimeout() != 0:
            raise ValueError("the socket must be non-blocking")

    def _ring_future(self, sock):
        """A future for one ring operation on ``sock``, and its fd."""
        self._check_closed()
        fd = sock.fileno()
        if self._transports:
            # asyncio's check costs a KeyError per call; with no transport
            # at all (a pure sock_* server) there is nothing to check.
            self._ensure_fd_no_transport(fd)
        if fd < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        return self.create_future(), fd

    async def _await_op(self, fut, op):
        """Await ``fut``; cancelled, cancel the ring operation ``op[0]``
        names (a callback that resubmits updates it).  A done-callback on
        the future would do the same at the cost of one more scheduled
        callback per call."""
        try:
            return await fut
        except exceptions.CancelledError:
            self._ring.cancel(op[0])
            raise

    async def sock_recv(self, sock, n):
        self._check_sock(sock)
        fut, fd = self._ring_future(sock)
        claimed = self._claim(sock)
        if claimed is not None:
            return self._fit(sock, claimed, n)[0]
        ring = self._ring
        if self._recv_multishot and n > 0:
            # Into a provided buffer: nothing to allocate per call.  The
            # bytes are copied out in the callback, before the buffer returns
            # to the kernel at the next turn.
            buf = None
            submit = ring.submit_recv_provided
            args = (fd, n)
        else:
            buf = _new_uncleared("char[]", max(n, 1))
            submit = ring.submit_recv
            args = (fd, buf, n)

        def on_recv(res, flags):
            if res == -errno.ENOBUFS and not fut.done():
                # Every provided buffer is in use: this one call allocates.
                nonlocal buf
                buf = _new_uncleared("char[]", n)
                op[0] = ring.submit_recv(fd, buf, n, on_recv)
                return
            data = b""
            if res > 0:
                data = ring.receive_buffer(flags, res) if buf is None else ffi.unpack(buf, res)
            if fut.done():
                if fut.cancelled() and res >= 0:
                    self._keep_unclaimed(sock, (data, None))
            elif res < 0:
                fut.set_exception(_os_error(res))
            elif self._unclaimed:
                item = self._claim(sock, (data, None))
                fut.set_result(self._fit(sock, item, n)[0])
            else:
                fut.set_result(data)

        op = [submit(*args, on_recv)]
        return await self._await_op(fut, op)

    async def sock_recv_into(self, sock, buf):
        self._check_sock(sock)
        fut, fd = self._ring_future(sock)
        target = _pin(buf, writable=True)
        claimed = self._claim_into(sock, target, len(target))
        if claimed is not None:
            ffi.release(target)
            return claimed[0]

        def on_recv(res, flags):
            if fut.done():
                if fut.cancelled() and res >= 0:
                    self._keep_unclaimed(sock, (ffi.unpack(target, res), None))
            elif res < 0:
                fut.set_exception(_os_error(res))
            elif self._unclaimed:
                item = (ffi.unpack(target, res), None)
                fut.set_result(self._claim_into(sock, target, len(target), item)[0])
            else:
                fut.set_result(res)
            ffi.release(target)

        op = [self._ring.submit_recv(fd, target, len(target), on_recv)]
        return await self._await_op(fut, op)

    async def _recvmsg(self, sock, target, nbytes, pinned=False):
        fut, fd = self._ring_future(sock)
        claimed = self._claim_into(sock, target, nbytes)
        if claimed is not None:
            if pinned:
                ffi.release(target)
            return claimed
        msg = ffi.new("struct ul_msg *")

        def on_recvmsg(res, flags):
            if res >= 0:
                addr = _sockaddr.unpack(ffi.buffer(ffi.addressof(msg.addr)),
                                        msg.hdr.msg_namelen)
            if fut.done():
                if fut.cancelled() and res >= 0:
                    self._keep_unclaimed(sock, (ffi.unpack(target, res), addr))
            elif res < 0:
                fut.set_exception(_os_error(res))
            elif self._unclaimed:
                item = (ffi.unpack(target, res), addr)
                fut.set_result(self._claim_into(sock, target, nbytes, item))
            else:
                fut.set_result((res, addr))
            if pinned:
                ffi.release(target)

        op = [self._ring.submit_recvmsg(fd, msg, target, nbytes, on_recvmsg)]
        return await self._await_op(fut, op)

    async def sock_recvfrom(self, sock, bufsize):
        self._check_sock(sock)
        buf = _new_uncleared("char[]", max(bufsize, 1))
        nbytes, addr = await self._recvmsg(sock, buf, bufsize)
        return ffi.unpack(buf, nbytes), addr

    async def sock_recvfrom_into(self, sock, buf, nbytes=0):
        self._check_sock(sock)
        target = _pin(buf, writable=True)
        if not nbytes:
            nbytes = len(target)
        elif nbytes > len(target):
            ffi.release(target)
            raise ValueError("nbytes is greater than the length of the buffer")
        return await self._recvmsg(sock, target, nbytes, pinned=True)

    async def sock_sendall(self, sock, data):
        self._check_sock(sock)
        fut, fd = self._ring_future(sock)
        source = _pin(data)
        total = len(source)
        sent = 0
        ring = self._ring

        def on_send(res, flags):
            nonlocal sent
            if fut.done():
                pass
            elif res < 0:
                fut.set_exception(_os_error(res))
            elif sent + res < total:
                sent += res
                try:
                    op[0] = ring.submit_send(fd, source + sent, total - sent,
                                             on_send, source)
                    return
                except OSError as exc:
                    fut.set_exception(exc)
            else:
                fut.set_result(None)
            ffi.release(source)

        try:
            op = [ring.submit_send(fd, source, total, on_send, source)]
        except BaseException:
            ffi.release(source)   # on_send refers to itself: a cycle holds it
            raise
        return await self._await_op(fut, op)

    async def sock_sendto(self, sock, data, address):
        self._check_sock(sock)
        if sock.family in _IP_FAMILIES:
            address = await self._resolve_for(sock, address)
        sockaddr = _sockaddr.pack(sock.family, address)
        fut, fd = self._ring_future(sock)
        source = _pin(data)
        msg = ffi.new("struct ul_msg *")

        def on_sendmsg(res, flags):
            ffi.release(source)
            if fut.done():
                return
            if res < 0:
                fut.set_exception(_os_error(res))
            else:
                fut.set_result(res)

        op = [self._ring.submit_sendmsg(fd, msg, source, len(source), sockaddr,
                                        on_sendmsg, source)]
        return await self._await_op(fut, op)

    async def sock_connect(self, sock, address):
        self._check_sock(sock)
        if sock.family in _IP_FAMILIES:
            address = await self._resolve_for(sock, address)
        sockaddr = _sockaddr.pack(sock.family, address)
        fut, fd = self._ring_future(sock)

        def on_connect(res, flags):
            # None: sock_connect already returned (cancelled) and cleared it.
            if fut is None or fut.done():
                return
            if res < 0:
                fut.set_exception(OSError(-res, f"Connect call failed {address}"))
            else:
                fut.set_result(None)

        op = [self._ring.submit_connect(fd, sockaddr, on_connect)]
        self._ring.submit_now()
        try:
            return await self._await_op(fut, op)
        finally:
            # Break the cycle future -> callback -> future, as asyncio does.
            fut = None

    async def sock_accept(self, sock):
        self._check_sock(sock)
        fut, fd = self._ring_future(sock)
        claimed = self._claim(sock)
        if claimed is not None:
            return claimed

        def on_accept(res, flags):
            if res < 0:
                if not fut.done():
                    fut.set_exception(_os_error(res))
                return
            conn = socket.socket(fileno=res)
            conn.setblocking(False)
            try:
                address = conn.getpeername()
            except OSError as exc:
                conn.close()
                if not fut.done():
                    fut.set_exception(exc)
                return
            if fut.cancelled():
                self._keep_unclaimed(sock, (conn, address))
            elif not fut.done():
                fut.set_result(self._claim(sock, (conn, address)))

        op = [self._ring.submit_accept(fd, _ACCEPT_FLAGS, on_accept)]
        return await self._await_op(fut, op)

    async def _resolve_for(self, sock, address):
        """Resolve a host name the way asyncio's sock_connect does, skipping
        the resolver for numeric addresses."""
        host, port = address[:2]
        try:
            socket.inet_pton(sock.family, host.partition("%")[0])
            return address
        except (OSError, TypeError, AttributeError):
            pass
        infos = await self.getaddrinfo(host, port, family=sock.family,
                                       type=sock.type, proto=sock.proto)
        if not infos:
            raise OSError(f"getaddrinfo({host!r}) returned empty list")
        return infos[0][4]
