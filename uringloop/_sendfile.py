"""``loop.sock_sendfile`` / ``loop.sendfile`` natively on the ring: the file
is spliced into a pipe and the pipe into the socket (``IORING_OP_SPLICE``
twice per chunk), so the bytes never enter user space.

Data flow: ``BaseEventLoop.sock_sendfile`` calls ``_sock_sendfile_native``
(asyncio's hook), which rejects what splice cannot read (not a regular
file -> ``SendfileNotAvailableError``, and asyncio falls back to plain
sends), then moves up to one pipe-full per step.  ``loop.sendfile`` on a
ring transport reaches the same code through asyncio's inherited
``_sendfile_native``, which waits for the transport's write buffer to drain
and blocks ``write()`` meanwhile.  As asyncio does, the file position ends
just past the last byte sent.

The pipe belongs to one call.  If the call is cancelled while a splice is
in the kernel, the pipe is closed only after that splice completes, so the
kernel never resolves a pipe fd number that has been reused.
"""
import errno
import fcntl
import io
import os
import select
import stat

from asyncio import exceptions, tasks

from ._sockops import _os_error

_PIPE_SIZE = 1 << 20
# Errors that mean "splice cannot do this pair of fds", not "the peer failed".
_UNSUPPORTED = frozenset({errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF})


class _SplicePipe:
    def __init__(self):
        self.read_end, self.write_end = os.pipe2(os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, _PIPE_SIZE)
        except OSError:
            pass  # capped by /proc/sys/fs/pipe-max-size: the default will do
        self.capacity = fcntl.fcntl(self.write_end, fcntl.F_GETPIPE_SZ)
        self.ops_in_flight = 0
        self.released = False

    def release(self):
        self.released = True
        self._close_if_idle()

    def op_done(self):
        self.ops_in_flight -= 1
        self._close_if_idle()

    def _close_if_idle(self):
        if self.released and self.ops_in_flight == 0 and self.read_end >= 0:
            os.close(self.read_end)
            os.close(self.write_end)
            self.read_end = self.write_end = -1


class _ReadOnly:
    """An unseekable file (a pipe) as asyncio's fallback reads it: no
    ``seek``, so the fallback does not restore a position it cannot have
    (it would raise after every byte was sent)."""

    def __init__(self, file):
        self.readinto = file.readinto


def _unseekable(file, offset):
    try:
        return not offset and not file.seekable()
    except (AttributeError, ValueError, OSError):
        return False


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

    async def _sendfile_fallback(self, transp, file, offset, count):
        if _unseekable(file, offset):
            file = _ReadOnly(file)
        return await super()._sendfile_fallback(transp, file, offset, count)

    async def _sock_sendfile_fallback(self, sock, file, offset, count):
        if _unseekable(file, offset):
            file = _ReadOnly(file)
        return await super()._sock_sendfile_fallback(sock, file, offset, count)

    async def _sock_sendfile_native(self, sock, file, offset, count):
        try:
            fileno = file.fileno()
            mode = os.fstat(fileno).st_mode
        except (AttributeError, io.UnsupportedOperation, OSError):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        if not stat.S_ISREG(mode):
            raise exceptions.SendfileNotAvailableError("not a regular file")
        self._check_closed()
        pipe = _SplicePipe()
        total = 0   # bytes that reached the socket: what the position reflects
        state = self._sendfiles[sock.fileno()] = _SendfileState()
        try:
            while not count or total < count:
                want = pipe.capacity if not count else min(pipe.capacity, count - total)
                if state.stopped:
                    raise ConnectionError("the transport was closed during sendfile")
                pending = await self._splice(pipe, fileno, offset + total, pipe.write_end,
                                             want, state)
                if pending == 0:
                    break  # end of file
                while pending:
                    if state.stopped:
                        raise ConnectionError("the transport was closed during sendfile")
                    try:
                        sent = await self._splice(pipe, pipe.read_end, -1, sock.fileno(),
                                                  pending, state)
                    except BlockingIOError:
                        # The socket is non-blocking and full: wait until it
                        # takes more, as asyncio's os.sendfile path does.
                        await self._wait_writable(sock.fileno(), state)
                        continue
                    except exceptions.CancelledError as exc:
                        total += getattr(exc, "moved", 0)  # sent despite the cancel
                        raise
                    if sent == 0:
                        raise ConnectionError("socket is not connected", errno.ENOTCONN)
                    pending -= sent
                    total += sent
        except OSError as exc:
            if total == 0 and exc.errno in _UNSUPPORTED:
                raise exceptions.SendfileNotAvailableError("splice() failed") from exc
            if exc.errno == errno.ENOTCONN and type(exc) is not ConnectionError:
                raise ConnectionError("socket is not connected", errno.ENOTCONN) from exc
            raise
        finally:
            del self._sendfiles[sock.fileno()]
            pipe.release()
            if total > 0:
                os.lseek(fileno, offset + total, os.SEEK_SET)
        return total

    def _stop_sendfile(self, fd):
        """A transport closing under loop.sendfile: end the sendfile with
        ConnectionError (the socket stays open until it has ended)."""
        state = self._sendfiles.get(fd)
        if state is not None:
            state.stopped = True
            if state.current is not None:
                self._ring.cancel(state.current)

    async def _wait_writable(self, fd, state):
        fut = self.create_future()

        def on_poll(res, flags):
            # An error shows up again in the splice that follows.
            if not fut.done():
                fut.set_result(None)

        user_data = state.current = self._ring.submit_poll(fd, select.POLLOUT, on_poll)
        try:
            await fut
        except BaseException:
            if fut.cancelled():
                self._ring.cancel(user_data)
            raise

    async def _splice(self, pipe, fd_in, off_in, fd_out, nbytes, state):
        fut = self.create_future()

        def on_splice(res, flags):
            pipe.op_done()
            if fut.done():
                return
            if res < 0:
                fut.set_exception(_os_error(res))
            else:
                fut.set_result(res)

        user_data = state.current = self._ring.submit_splice(fd_in, off_in, fd_out, -1,
                                                             nbytes, on_splice)
        pipe.ops_in_flight += 1
        try:
            return await tasks.shield(fut)
        except exceptions.CancelledError as exc:
            # The kernel may move bytes before the cancellation lands: wait
            # for its answer, so the caller can count what reached the
            # socket (the file position must say exactly that).
            self._ring.cancel(user_data)
            try:
                exc.moved = await fut
            except (OSError, exceptions.CancelledError):
                exc.moved = 0
            raise
