"""Read-pipe transports on the ring, for ``connect_read_pipe`` and the
stdout/stderr pipes of child processes.

Data flow: one ``IORING_OP_READ`` (at the pipe's own position) is in
flight while reading is wanted; its completion goes to ``data_received``,
an end of file to ``eof_received`` then ``connection_lost(None)``.  A
completion that arrives after ``pause_reading()`` is held until
``resume_reading()``.  A pty reports its end as EIO, which asyncio treats
as a quiet end, and so do we.  The pipe is closed after
``connection_lost`` by the ring-owned fd rule (_ringfd.py; the read in
flight is its operation, and holds the file once submitted).

Write pipes stay asyncio's own transport (its waits are polls on the
ring): asyncio writes to a pipe inside ``write()``, and code that reads
the other end synchronously right after (a pty in CPython's tests, a
child process protocol) depends on that; a ring write would only happen
at the next turn, and a second write could not start before the first
one's completion is reaped.
"""
import contextvars
import errno
import os
import stat
import warnings

from asyncio import transports
from asyncio.log import logger

from ._native import new_uncleared, os_error
from ._op import RingCallback
from ._ringfd import RingFd
from ._transport import ReadPausing, report_fatal_error, set_result_unless_cancelled
from ._uring import ffi, lib

_READ_SIZE = 256 * 1024


class RingReadPipeTransport(ReadPausing, transports.ReadTransport):

    _pipe = None  # read by __del__ even if __init__ failed early

    def __init__(self, loop, pipe, protocol, waiter=None, extra=None):
        super().__init__(extra)
        self._extra["pipe"] = pipe
        self._context = contextvars.copy_context()
        self._loop = loop
        self._ring = loop._ring
        self._ring_fd = RingFd(self._ring)
        self._fileno = pipe.fileno()
        mode = os.fstat(self._fileno).st_mode
        if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)):
            raise ValueError("Pipe transport is for pipes/sockets only.")
        os.set_blocking(self._fileno, False)
        self._pipe = pipe
        self._protocol = protocol
        self._closing = False
        self._lost_scheduled = False
        self._paused = False
        self._read_op = None         # user_data of the read in the kernel
        self._held_results = []      # reads that completed while paused
        self._buffer = new_uncleared("char[]", _READ_SIZE)
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def __repr__(self):
        state = "closed" if self._pipe is None else "closing" if self._closing else "open"
        return f"<{type(self).__name__} fd={self._fileno} {state}>"

    def __del__(self, _warn=warnings.warn):
        if self._pipe is not None:
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._ring_fd.close(self._pipe.close)

    def set_protocol(self, protocol):
        self._protocol = protocol

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def _start_reading(self):
        if self._read_op is not None or not self.is_reading() or self._held_results:
            return
        try:
            self._read_op = self._ring.submit(lib.ul_prep_read,
                                              (self._fileno, self._buffer, _READ_SIZE, -1),
                                              RingCallback(self._in_context(self._on_read)),
                                              self._buffer)
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on pipe transport")
        else:
            self._ring_fd.ops += 1

    def _on_read(self, res, flags):
        self._read_op = None
        self._ring_fd.op_done()
        if self._closing:
            return
        # Copy now: the buffer is reused by the next read.
        result = ffi.unpack(self._buffer, res) if res > 0 else res
        if self._must_hold():
            self._held_results.append((result,))
        else:
            self._deliver(result)

    def _deliver(self, result):
        if self._closing:
            return
        if isinstance(result, bytes):
            try:
                self._protocol.data_received(result)
            except (SystemExit, KeyboardInterrupt):
                self._read_on_after_interrupt()
                raise
            except BaseException as exc:
                # As a failing reader callback in asyncio: reported, and the
                # pipe keeps being read.
                self._loop.call_exception_handler({
                    "message": "Exception in data_received() of a pipe protocol",
                    "exception": exc,
                    "transport": self,
                    "protocol": self._protocol,
                })
            self._start_reading()
        elif result == 0:
            if self._loop.get_debug():
                logger.info("%r was closed by peer", self)
            self._closing = True
            self._loop.call_soon(self._protocol.eof_received)
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, None)
        elif result == -errno.EAGAIN:
            self._start_reading()
        else:
            self._fatal_error(os_error(result), "Fatal read error on pipe transport")

    def close(self):
        if not self._closing:
            self._close(None)

    def _fatal_error(self, exc, message):
        # A pty whose other side closed reports EIO: its normal end.
        report_fatal_error(self, exc, message,
                           expected=isinstance(exc, OSError) and exc.errno == errno.EIO)
        self._close(exc)

    def _close(self, exc):
        self._closing = True
        self._held_results = []
        if self._read_op is not None:
            self._ring.cancel(self._read_op)
        if not self._lost_scheduled:
            self._lost_scheduled = True
            self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            self._protocol.connection_lost(exc)
        finally:
            self._protocol = None
            self._ring_fd.close(self._close_pipe)

    def _close_pipe(self):
        self._pipe.close()
        self._pipe = None
