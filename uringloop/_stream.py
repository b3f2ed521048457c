"""Stream transports (TCP and Unix) whose reads and writes are io_uring
operations: what ``create_connection``, ``create_server``, the Unix
variants, ``connect_accepted_socket`` and (underneath ``SSLProtocol``)
``ssl=`` return.

Data flow, reading: while reading is wanted, exactly one receive is in
flight.  For a ``Protocol`` it fills the transport's own reusable buffer
and the completion hands ``bytes`` to ``data_received``; for a
``BufferedProtocol`` the buffer comes from ``get_buffer()`` and the kernel
writes straight into it, so ``buffer_updated(n)`` involves no copy.  A
completion that arrives after ``pause_reading()`` is held back and
delivered by ``resume_reading()``.

Data flow, writing: one send is in flight at a time.  ``write()`` either
starts it or queues the bytes; when it completes, a partial send resubmits
the rest and everything queued meanwhile goes out as one coalesced send.
The write buffer size counts every byte the kernel has not confirmed, which
drives ``pause_writing``/``resume_writing`` at the water marks.

Closing: ``close()`` stops reading and lets queued writes finish;
``abort()`` drops them.  The socket itself is closed only when no operation
of this transport is left in the kernel, so a reused fd number never meets
an old completion and no buffer is released while the kernel holds it.
Protocol callbacks run from the completion callbacks, i.e. inside the
loop's select step, wrapped so that their errors take asyncio's paths.
"""
import collections
import errno
import socket

from asyncio import constants, protocols, transports
from asyncio.log import logger

from ._sockops import _os_error
from ._transport import RingTransport, set_result_unless_cancelled
from ._uring import ffi

_RECV_BUFFER_SIZE = 256 * 1024
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
_CQE_F_MORE = 1 << 1
# Marks a received chunk already copied out of a provided buffer.
_COPIED = object()


def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class RingStreamTransport(RingTransport, transports.Transport):
    """A stream socket transport driven by ring completions."""

    _start_tls_compatible = True
    # loop.sendfile splices file -> pipe -> socket (see _sendfile.py).
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._eof = False            # write_eof() called
        self._recv_buffer = None     # reused by every receive for a Protocol
        self._write_queue = collections.deque()
        self._empty_waiter = None    # set while loop.sendfile owns the socket
        super().__init__(loop, sock, protocol, extra, server)
        _set_nodelay(sock)
        loop.call_soon(self._protocol.connection_made, self)
        # Reading starts only once connection_made() has run.
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    def set_protocol(self, protocol):
        self._buffered = isinstance(protocol, protocols.BufferedProtocol)
        super().set_protocol(protocol)

    def _start_reading(self):
        if self._recv_op is not None or not self.is_reading():
            return
        if not self._buffered and self._loop._recv_multishot:
            try:
                self._recv_op = self._ring.submit_recv_multishot(
                    self._sock_fd, self._on_recv_multishot)
            except OSError as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
            return
        if self._buffered:
            try:
                target = self._protocol.get_buffer(-1)
                if not len(target):
                    raise RuntimeError("get_buffer() returned an empty buffer")
                target = ffi.from_buffer(target, require_writable=True)
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
                return
            owner = self._protocol
        else:
            if self._recv_buffer is None:
                self._recv_buffer = _new_uncleared("char[]", _RECV_BUFFER_SIZE)
            target = self._recv_buffer
            owner = None
        try:
            self._recv_op = self._ring.submit_recv(self._sock_fd, target, len(target),
                                                   self._on_recv)
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._recv_target = (target, owner)

    def _on_recv_multishot(self, res, flags):
        # The data must be copied now: its provided buffer returns to the
        # kernel at the next turn.
        if not flags & _CQE_F_MORE:
            self._recv_op = None
        if self._conn_lost:
            self._close_socket_if_idle()
            return
        if res > 0:
            data = self._ring.receive_buffer(flags, res)
            if self._paused or self._buffered:
                result = (res, (data, _COPIED))
            else:
                # The per-message path, kept flat: deliver and stay armed.
                try:
                    self._protocol.data_received(data)
                except (SystemExit, KeyboardInterrupt):
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                    return
                if self._recv_op is None:
                    self._start_reading()
                return
        elif res == -errno.ENOBUFS or res == -errno.ECANCELED:
            self._start_reading()  # buffers ran dry, or we cancelled
            return
        else:
            result = (res, None)  # end of stream or an error
        if self._paused:
            self._held_results.append(result)
        else:
            self._deliver(*result)

    def pause_reading(self):
        super().pause_reading()
        # A multishot receive would keep filling buffers: stop it; whatever
        # it delivers before the cancellation lands is held.
        if self._paused and self._recv_op is not None and not self._buffered \
                and self._loop._recv_multishot:
            self._ring.cancel(self._recv_op)

    def _deliver(self, res, target):
        if self._conn_lost:
            return
        if res > 0:
            buf, owner = target
            protocol = self._protocol
            try:
                if not self._buffered:
                    protocol.data_received(buf if owner is _COPIED else ffi.unpack(buf, res))
                elif owner is protocol:
                    protocol.buffer_updated(res)
                else:
                    # The protocol changed while the kernel filled a buffer
                    # that is not this protocol's (start_tls does that).
                    _feed_buffered(protocol, buf if owner is _COPIED else ffi.buffer(buf, res))
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                return
            self._start_reading()
        elif res == 0:
            self._on_eof()
        else:
            self._fatal_error(_os_error(res), "Fatal read error on socket transport")

    def _on_eof(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            keep_open = self._protocol.eof_received()
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- writing -------------------------------------------------------
    def write(self, data):
        if type(data) is not bytes:
            if not isinstance(data, (bytearray, memoryview)):
                raise TypeError(f"data argument must be a bytes-like object, "
                                f"not {type(data).__name__!r}")
            # The caller may reuse a mutable buffer as soon as write() returns.
            data = bytes(data)
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._conn_lost:
            self._count_write_after_close()
            return
        self._write_size += len(data)
        if self._send_op is None:
            # Like asyncio's immediate send: what the kernel takes at once
            # never counts against the high-water mark; _on_sent checks
            # whatever it leaves behind.
            self._send(data)
        else:
            self._write_queue.append(data)
            self._maybe_pause_protocol()

    def writelines(self, list_of_data):
        # One coalesced send instead of one per element.
        self.write(b"".join(list_of_data))

    def _send(self, chunk):
        try:
            self._send_op = self._ring.submit_send(self._sock_fd, chunk, len(chunk),
                                                   self._on_sent, chunk)
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on socket transport")
            return
        self._send_chunk = chunk

    def _on_sent(self, res, flags):
        self._send_op = None
        chunk, self._send_chunk = self._send_chunk, None
        if self._conn_lost:
            self._close_socket_if_idle()
            return
        if res < 0:
            self._fatal_error(_os_error(res), "Fatal write error on socket transport")
            return
        self._write_size -= res
        queue = self._write_queue
        if res < len(chunk):
            queue.appendleft(bytes(memoryview(chunk)[res:]))
            self._maybe_pause_protocol()
        if queue:
            chunk = queue.popleft() if len(queue) == 1 else b"".join(queue)
            queue.clear()
            self._send(chunk)
        if self._protocol_paused:
            self._maybe_resume_protocol()
        if self._send_op is None and (self._closing or self._eof
                                      or self._empty_waiter is not None):
            self._on_write_drained()

    def _on_write_drained(self):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_result(None)
        if self._closing:
            self._schedule_connection_lost(None)
        elif self._eof:
            self._shutdown_write()

    def _shutdown_write(self):
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on socket shutdown")

    def _make_empty_waiter(self):
        # asyncio's native sendfile waits on this before using the socket.
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        self._empty_waiter = self._loop.create_future()
        if self._send_op is None:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None
        if self._conn_lost:
            self._close_socket_if_idle()  # deferred while sendfile used it

    def close(self):
        if self._empty_waiter is not None:
            self._loop._stop_sendfile(self._sock_fd)
        super().close()

    def _close_socket_if_idle(self):
        # loop.sendfile may still have operations in the kernel on the socket.
        if self._empty_waiter is None:
            super()._close_socket_if_idle()

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if self._send_op is None:
            self._shutdown_write()

    def _force_close(self, exc):
        if self._empty_waiter is not None:
            self._loop._stop_sendfile(self._sock_fd)
        if self._empty_waiter is not None and not self._empty_waiter.done():
            if exc is None:
                self._empty_waiter.set_result(None)
            else:
                self._empty_waiter.set_exception(exc)
        super()._force_close(exc)


def _feed_buffered(protocol, data):
    view = memoryview(data)
    while view:
        dest = memoryview(protocol.get_buffer(len(view))).cast("B")
        count = min(len(dest), len(view))
        if not count:
            raise RuntimeError("get_buffer() returned an empty buffer")
        dest[:count] = view[:count]
        protocol.buffer_updated(count)
        view = view[count:]

