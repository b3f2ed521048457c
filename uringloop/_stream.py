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

Data flow, writing: ``write()`` copies the bytes into the transport's
C-owned send queue (csrc/sendq.c), which keeps one send in flight,
coalesces what is written meanwhile and resubmits partial sends without
coming back to Python.  The queue reports only what the transport waits
for: falling to the low-water mark (``resume_writing``), draining
completely (``close()``, ``write_eof()``, sendfile), or a failed send.
The write buffer size is every byte the kernel has not confirmed.

Registered files: under ``URINGLOOP_FIXED_FILES=1`` the socket also goes
into a slot of the ring's registered-file table (csrc/fixed.c), and every
receive and send names the slot (``_io_fd``) instead of the fd; the slot
is emptied when the fd is closed, by the same rule.

Closing: ``close()`` stops reading and lets queued writes finish;
``abort()`` drops them.  The socket is closed with ``connection_lost``,
once nothing of this transport waits in the submission queue (the rule is
_ringfd.py's; the receive in flight and the send queue are its operations,
a native sendfile borrows the socket until it is over); buffers the
kernel still holds stay in the ops table or the send queue until their
completions.  Protocol callbacks run from the
completion callbacks, in the transport's context, wrapped so that their
errors take asyncio's paths.
"""
import contextvars
import errno
import socket

from asyncio import constants, protocols, transports
from asyncio.log import logger

from ._native import new_uncleared, os_error
from ._op import RingCallback
from ._ring import CQE_F_MORE
from ._transport import RingTransport, set_result_unless_cancelled
from ._uring import ffi, lib

_RECV_BUFFER_SIZE = 256 * 1024
# Marks a received chunk already copied out of a provided buffer.
_COPIED = object()
_sendq_write = lib.ul_sendq_write
_sendq_size = lib.ul_sendq_size
_sendq_notify_at = lib.ul_sendq_notify_at
_SENDQ_EVENT_SHIFT = lib.UL_SENDQ_EVENT_SHIFT
_SENDQ_DRAINED = lib.UL_SENDQ_DRAINED
_SENDQ_FAILED = lib.UL_SENDQ_FAILED
# A send queue threshold no queue size reaches: "after the next send".
_NEXT_COMPLETION = 1 << 62


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
    _sendq = None  # read by __del__ even if __init__ failed early
    _io_fd = 0     # likewise: no registered slot to empty

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._eof = False            # write_eof() called
        self._write_shut = False     # shutdown(SHUT_WR) done
        self._recv_buffer = None     # reused by every receive for a Protocol
        self._empty_waiter = None    # set while loop.sendfile owns the socket
        self._pressure_check = False # a write above the high-water mark: see _on_write_pressure
        self._writer_context = None  # where resume_writing() runs: see _on_write_pressure
        super().__init__(loop, sock, protocol, extra, server)
        # What receives and sends name: a registered slot under
        # URINGLOOP_FIXED_FILES=1 while the table has a free one, else the fd.
        self._io_fd = (self._ring.install_file(self._sock_fd) if loop._fixed_files
                       else self._sock_fd)
        # The write side lives in C (csrc/sendq.c); its events come back
        # through the ring like completions.
        self._sendq, self._sendq_events = self._ring.new_send_queue(
            self._io_fd, self._in_context(self._on_send_event))
        self._ring_fd.ops += 1   # until the queue is released
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
        if self._recv_op is not None or not self.is_reading() or self._held_results:
            return
        if not self._buffered and self._loop._recv_multishot:
            try:
                self._recv_op = self._ring.submit_recv_multishot(
                    self._io_fd, RingCallback(self._in_context(self._on_recv_multishot)))
            except OSError as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
            else:
                self._ring_fd.ops += 1
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
                self._recv_buffer = new_uncleared("char[]", _RECV_BUFFER_SIZE)
            target = self._recv_buffer
            owner = None
        try:
            self._recv_op = self._ring.submit_recv(self._io_fd, target, len(target),
                                                   RingCallback(self._in_context(self._on_recv)))
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._ring_fd.ops += 1
        self._recv_target = (target, owner)

    def _on_recv_multishot(self, res, flags):
        # The data must be copied now: its provided buffer returns to the
        # kernel at the next turn.
        if not flags & CQE_F_MORE:
            self._recv_op = None
            self._ring_fd.op_done()
        if self._conn_lost:
            return
        if self._closing:
            return  # no data after close(): only the sends still drain
        if res > 0:
            data = self._ring.receive_buffer(flags, res)
            if not (self._paused or self._held_results or self._buffered):
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
            result = (res, (data, _COPIED))
        elif res == -errno.ENOBUFS or res == -errno.ECANCELED:
            self._start_reading()  # buffers ran dry, or we cancelled
            return
        else:
            result = (res, None)  # end of stream or an error
        if self._must_hold():
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
            self._fatal_error(os_error(res), "Fatal read error on socket transport")

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
        queue = self._sendq
        if queue is None:
            raise RuntimeError("the io_uring ring is closed")
        # The queue copies the bytes: the caller may reuse its buffer.
        size = _sendq_write(queue, data, len(data))
        if size > self._high_water:
            self._on_write_pressure(size - len(data))
        elif size < 0:
            self._fatal_error(os_error(size), "Fatal write error on socket transport")

    def writelines(self, list_of_data):
        # One copy into the queue instead of one per element.
        self.write(b"".join(list_of_data))

    def get_write_buffer_size(self):
        return _sendq_size(self._sendq) if self._sendq is not None else 0

    def _on_write_pressure(self, already_queued):
        # asyncio runs resume_writing() from a writer handle made by the
        # write() that could not send everything, i.e. in a copy of that
        # caller's context.
        self._writer_context = contextvars.copy_context()
        if already_queued:
            self._maybe_pause_protocol()
        else:
            # Like asyncio's immediate send: what the kernel takes at once
            # never counts against the high-water mark, so look again once
            # this first send has completed.
            self._pressure_check = True
        self._watch_send_queue()

    def _watch_send_queue(self):
        """Ask the send queue for the one event this transport waits for
        next (one threshold at a time: the one reached first)."""
        threshold = -1
        if self._pressure_check:
            threshold = _NEXT_COMPLETION
        elif self._protocol_paused:
            threshold = self._low_water
        if self._closing or self._eof or self._empty_waiter is not None:
            threshold = max(threshold, 0)
        if threshold >= 0:
            _sendq_notify_at(self._sendq, threshold)

    def _on_send_event(self, res, flags):
        event = flags >> _SENDQ_EVENT_SHIFT
        if event == _SENDQ_DRAINED:
            self._on_send_progress(res)
        elif event == _SENDQ_FAILED:
            self._fatal_error(os_error(res), "Fatal write error on socket transport")
        else:
            # Released after its last send, or gone with the ring: either
            # way the queue must not be touched again.
            self._sendq = None
            self._ring_fd.op_done()

    def _on_send_progress(self, size):
        if self._conn_lost:
            return
        self._pressure_check = False
        if self._protocol_paused:
            self._in_writer_context(self._maybe_resume_protocol)
        elif size > self._high_water:
            self._in_writer_context(self._maybe_pause_protocol)
        if size == 0 and (self._closing or self._eof or self._empty_waiter is not None):
            self._on_write_drained()
        else:
            self._watch_send_queue()

    def _in_writer_context(self, callback):
        if self._writer_context is None:
            callback()  # no write has pressed yet: the transport's context
        else:
            self._writer_context.run(callback)

    def _writes_pending(self):
        return self._sendq is not None and _sendq_size(self._sendq) > 0

    def _abort_writes(self):
        if self._sendq is not None:
            # A failure to queue the cancellation only means the send in
            # flight runs to its end; the queue still waits for it.
            lib.ul_sendq_abort(self._sendq)

    def _release_writes(self):
        # Freed now, or by the last send still in the kernel, whose
        # UL_SENDQ_RELEASED event ends the queue's operation on the socket.
        queue = self._sendq
        if queue is not None and self._ring.release_send_queue(queue, self._sendq_events):
            self._sendq = None
            self._ring_fd.op_done()

    def _on_write_drained(self):
        if self._empty_waiter is not None and not self._empty_waiter.done():
            self._empty_waiter.set_result(None)
        if self._closing:
            self._schedule_connection_lost(None)
        elif self._eof:
            self._shutdown_write()

    def _shutdown_write(self):
        # write_eof() shuts down at once when nothing is queued; a DRAINED
        # event asked for earlier (write pressure) may still arrive after.
        if self._write_shut:
            return
        self._write_shut = True
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._fatal_error(exc, "Fatal error on socket shutdown")

    def _make_empty_waiter(self):
        # asyncio's native sendfile waits on this before using the socket.
        if self._empty_waiter is not None:
            raise RuntimeError("Empty waiter is already set")
        # Its splices look the socket's fd number up in io-wq, whenever
        # they run: the socket stays open until the sendfile is over.
        self._ring_fd.borrow()
        self._empty_waiter = self._loop.create_future()
        if self._writes_pending():
            self._watch_send_queue()
        else:
            self._empty_waiter.set_result(None)
        return self._empty_waiter

    def _reset_empty_waiter(self):
        self._empty_waiter = None
        self._ring_fd.give_back()

    def _close_socket(self):
        # The fd close rule holds for the slot too: no SQE naming it waits
        # in the submission queue any more.
        self._ring.remove_file(self._io_fd)
        super()._close_socket()

    def close(self):
        if self._empty_waiter is not None:
            self._loop._stop_sendfile(self._sock_fd)
        super().close()
        if not self._conn_lost and self._sendq is not None:
            self._watch_send_queue()  # connection_lost once the queue drains

    def can_write_eof(self):
        return True

    def write_eof(self):
        if self._closing or self._eof:
            return
        self._eof = True
        if self._writes_pending():
            self._watch_send_queue()
        else:
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

