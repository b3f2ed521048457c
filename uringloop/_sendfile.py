"""``loop.sock_sendfile`` / ``loop.sendfile`` natively on the ring: the file
is spliced into a pipe and the pipe into the socket (``IORING_OP_SPLICE``
twice per chunk), so the bytes never enter user space.

Data flow: ``BaseEventLoop.sock_sendfile`` calls ``_sock_sendfile_native``
(asyncio's hook), which returns 0 for a source whose fstat size is 0 and
no count is given (as asyncio, which never reads it), rejects what splice
cannot read (not a regular file -> ``SendfileNotAvailableError``, and
asyncio falls back to plain sends), then moves up to one pipe-full per
step.  A first step that fails with nothing sent is
``SendfileNotAvailableError`` too, as asyncio's first ``os.sendfile`` is:
the fallback's sends report the error themselves.  ``loop.sendfile`` on a
ring transport reaches the same code through asyncio's inherited
``_sendfile_native``, which waits for the transport's write buffer to
drain and blocks ``write()`` meanwhile.  As asyncio does, the file
position ends just past the last byte sent.

The pipe belongs to one call and closes by the ring-owned fd rule
(_ringfd.py): each splice borrows it, since io-wq looks both of a
splice's fds up only when it runs it, so if the call is cancelled while a
splice is in the kernel the pipe is closed only after that splice
completes, and the kernel never resolves a pipe fd number that has been
reused.  Each splice and each wait for the socket is a ``SockOp`` (_op.py, _sockops.py):
a socket closed under one gets it cancelled, and a loop closed under one
closes the pipe when the ring is done with it (``ring_closed``), as its
completion would have.
"""
import errno
import fcntl
import io
import os
import select
import stat

from asyncio import exceptions

from ._native import os_error
from ._ringfd import RingFd
from ._sockops import SockOp

_PIPE_SIZE = 1 << 20


class _SplicePipe:
    def __init__(self):
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # capped by /proc/sys/fs/pipe-max-size: the default will do
        self.capacity = fcntl.fcntl(self.write_end, fcntl.F_GETPIPE_SZ)
        self.ring_fd = RingFd(None)   # every splice borrows the pair

    def release(self):
        """Its sendfile is over (or can never go on)."""
        self.ring_fd.close(self._close)

    def _close(self):
        os.close(self.read_end)
        os.close(self.write_end)
        self.read_end = self.write_end = -1


class _Splice(SockOp):
    """One splice of a sendfile: file -> pipe, or pipe -> socket."""
    __slots__ = ("pipe", "fd_in", "off_in", "nbytes", "moved")

    def __init__(self, loop, sock, pipe, fd_in, off_in, fd_out, nbytes):
        SockOp.__init__(self, loop, sock, fd_out)
        self.pipe = pipe
        self.fd_in = fd_in
        self.off_in = off_in
        self.nbytes = nbytes
        self.moved = 0   # by a splice whose caller was cancelled

    def submit(self):
        self.pipe.ring_fd.borrow()   # given back by release, whatever happens
        return self.loop._ring.submit_splice(self.fd_in, self.off_in, self.fd, -1,
                                             self.nbytes, self)

    def complete(self, res, flags):
        fut = self.fut
        if fut.done():
            self.moved = max(res, 0)
        elif res < 0:
            fut.set_exception(os_error(res))
        else:
            fut.set_result(res)

    def unclaim(self, result):
        self.moved = result

    def release(self):
        self.pipe.ring_fd.give_back()

    def ring_closed(self, res):
        self.pipe.release()   # its sendfile can never go on
        super().ring_closed(res)


class _WaitWritable(SockOp):
    """A full non-blocking socket: wait until it takes more."""
    __slots__ = ("pipe",)

    def __init__(self, loop, sock, fd, pipe):
        SockOp.__init__(self, loop, sock, fd)
        self.pipe = pipe

    def submit(self):
        return self.loop._ring.submit_poll(self.fd, select.POLLOUT, self)

    def complete(self, res, flags):
        # An error shows up again in the splice that follows.
        if not self.fut.done():
            self.fut.set_result(None)

    def ring_closed(self, res):
        super().ring_closed(res)
        self.pipe.release()   # its sendfile can never go on


class _SendfileState:
    """One sendfile in progress: the ring operation it waits on, and whether
    its transport asked it to stop."""
    __slots__ = ("current", "stopped")

    def __init__(self):
        self.current = None
        self.stopped = False


class RingSendfileMixin:
    """Needs ``self._ring`` and ``self._sendfiles`` (socket fd -> state);
    overrides asyncio's native sendfile hook."""

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
            status = os.fstat(fileno)
        except (AttributeError, io.UnsupportedOperation, OSError):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        if not count and not status.st_size:
            # asyncio's answer for what fstat calls empty (a pipe, a socket,
            # a device too), which it never reads.
            return 0
        if not stat.S_ISREG(status.st_mode):
            # asyncio's words: its os.sendfile fails on what splice refuses
            # here (a pipe, a socket, a device).
            raise exceptions.SendfileNotAvailableError("os.sendfile call failed")
        self._check_closed()
        fd = sock.fileno()
        self._ensure_fd_no_transport(fd)
        if fd < 0:
            # What os.sendfile tells asyncio: it falls back to plain sends,
            # which report the closed socket.
            raise exceptions.SendfileNotAvailableError("the socket is closed")
        pipe = _SplicePipe()
        total = 0   # bytes that reached the socket: what the position reflects
        state = self._sendfiles[fd] = _SendfileState()
        try:
            while not count or total < count:
                want = pipe.capacity if not count else min(pipe.capacity, count - total)
                if state.stopped:
                    raise ConnectionError("the transport was closed during sendfile")
                pending = await self._splice(sock, pipe, fileno, offset + total,
                                             pipe.write_end, want, state)
                if pending == 0:
                    break  # end of file
                while pending:
                    if state.stopped:
                        raise ConnectionError("the transport was closed during sendfile")
                    try:
                        sent = await self._splice(sock, pipe, pipe.read_end, -1,
                                                  sock.fileno(), pending, state)
                    except BlockingIOError:
                        # The socket is non-blocking and full: wait until it
                        # takes more, as asyncio's os.sendfile path does.
                        await self._wait_writable(sock, pipe, state)
                        continue
                    except exceptions.CancelledError as exc:
                        total += getattr(exc, "moved", 0)  # sent despite the cancel
                        raise
                    if sent == 0:
                        raise ConnectionError("socket is not connected", errno.ENOTCONN)
                    pending -= sent
                    total += sent
        except OSError as exc:
            if total == 0 and not state.stopped:
                # asyncio's rule for a first os.sendfile that fails, whatever
                # the reason: a fallback to plain sends may still work (or
                # report the error as they see it).
                raise exceptions.SendfileNotAvailableError("os.sendfile call failed") from exc
            if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
            raise
        finally:
            # By the fd it started on: the socket may be closed by now.
            del self._sendfiles[fd]
            pipe.release()
            # (Not if the file was closed meanwhile: its fd may be another's.)
            if total > 0 and not getattr(file, "closed", False):
                os.lseek(fileno, offset + total, os.SEEK_SET)
        return total

    def _stop_sendfile(self, fd):
        """A transport closing under loop.sendfile: end the sendfile with
        ConnectionError (the socket stays open until it has ended)."""
        state = self._sendfiles.get(fd)
        if state is not None:
            state.stopped = True
            op = state.current
            if op is not None and not op.settled:
                self._ring.cancel(op.user_data)

    async def _wait_writable(self, sock, pipe, state):
        op = state.current = _WaitWritable(self, sock, sock.fileno(), pipe)
        await op.run()

    async def _splice(self, sock, pipe, fd_in, off_in, fd_out, nbytes, state):
        op = state.current = _Splice(self, sock, pipe, fd_in, off_in, fd_out, nbytes)
        try:
            return await op.run()
        except exceptions.CancelledError as exc:
            # The kernel may move bytes before the cancellation lands: wait
            # for its answer, so the caller can count what reached the
            # socket (the file position must say exactly that).
            await op.wait_settled()
            exc.moved = op.moved
            raise
