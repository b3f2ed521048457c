"""Stream transports (TCP and Unix) whose reads and writes are io_uring
operations: what ``create_connection``, ``create_server``, the Unix
variants, ``connect_accepted_socket`` and (underneath ``SSLProtocol``)
``ssl=`` return.

Data flow, reading: while reading is wanted, exactly one receive is in
flight.  For a ``Protocol`` it is a multishot receive into the ring's
provided buffers where the kernel has them, else one-shot receives into
the transport's own reusable buffer; the completion copies the bytes out
for ``data_received``.  A ``BufferedProtocol`` always gets one-shot
receives: with a multishot one, the end of stream that follows data came
in the same turn, so SSLProtocol closed a connection before
``create_connection`` had returned it (CPython's
test_create_ssl_connection, 27 runs in 100), which asyncio's one read per
readiness event never does.  Its bytes are handed over the way asyncio's
reads do (``get_buffer(-1)``, fill, ``buffer_updated(n)``, until all is
in; and, as asyncio asks for a buffer before every receive, once more
before the end of the stream or an error is reported, with the same
checks).
The kernel never writes into a protocol's buffer: asyncio asks for that
buffer only once data is there and fills it at once, so a protocol may
resize or reuse it at any other time; a receive in flight holding it
could not allow that.  A completion that arrives after
``pause_reading()`` is held back and delivered by ``resume_reading()``,
and so is the rest of a chunk when a ``BufferedProtocol`` pauses in the
middle of it.

Data flow, writing: ``write()`` hands the bytes to the transport's
C-owned send queue (csrc/sendq.c).  An idle queue first offers them to
the socket (a non-blocking ``send``, as asyncio's write() does: they are
in the kernel when write() returns), unless ``URINGLOOP_DEFER_WRITES=1``
asked for the ring's next submission instead; what the socket refuses is
copied into the queue, which keeps one send in flight, coalesces what is
written meanwhile and resubmits partial sends without coming back to
Python.  A big rest (``_REF_WRITE`` and up, and with
``URINGLOOP_SEND_ZC`` at its threshold and up, zero-copy, never offered
first) is not copied: the queue sends from the ``bytes`` object itself, which the
transport keeps (``_write_ref``) until the queue lets it go (checked at
the next big write or queue event; the queue sends an event for an
object big enough that keeping it would matter).  A bytearray or
memoryview becomes ``bytes`` first, since its owner may change it once
write() returns.  Write
pressure is asyncio's: only what the kernel did not take at once counts
against the high-water mark (known at once after the first offer; for a
write that was not offered, decided by the queue at the next send
completion, with no event when the send took everything).  A paused
writer counts as writes pending: asyncio resumes it before close() or
write_eof() can find the buffer empty.  The queue reports only what the transport waits
for: falling to the low-water mark (``resume_writing``), draining
completely (``close()``, ``write_eof()``, sendfile), or a failed send.
The write buffer size is every byte the kernel has not confirmed.

The accelerator: ``write()`` and the multishot receive's completion are
the per-message path, so with ``_speedups`` loaded the transport derives
from its C subclass of ``StreamPerMessage`` (csrc/stream_speedups.c),
which does the plain case of each (a ``bytes`` write to an open queue; data
for a plain ``Protocol`` that is not paused) without a Python frame and
hands any other case to the Python methods here, the reference.  Without
it, write() reaches the queue through cffi; the Python write() the C one
falls back to goes through ``_speedups.sendq_write``.

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
import sys

from asyncio import constants, protocols, transports
from asyncio.log import logger

from . import _accel
from ._native import new_uncleared, os_error
from ._op import RingCallback
from ._ring import CQE_F_MORE
from ._sockops import _pin_writable
from ._transport import RingTransport, set_result_unless_cancelled
from ._uring import ffi, lib

_RECV_BUFFER_SIZE = 256 * 1024
_sendq_write = lib.ul_sendq_write
_sendq_size = lib.ul_sendq_size
_sendq_notify_at = lib.ul_sendq_notify_at
_SENDQ_EVENT_SHIFT = lib.UL_SENDQ_EVENT_SHIFT
_SENDQ_DRAINED = lib.UL_SENDQ_DRAINED
_SENDQ_FAILED = lib.UL_SENDQ_FAILED
# Python 3.12 gave the socket transport a writelines() of its own.
_OWN_WRITELINES = sys.version_info >= (3, 12)
_SENDQ_RELEASED = lib.UL_SENDQ_RELEASED
_sendq_check_pressure = lib.ul_sendq_check_pressure
_BY_REF = lib.UL_SENDQ_BY_REF
_SENT_FIRST = lib.UL_SENDQ_SENT_FIRST
# Writes from this size up are sent from the caller's bytes object, not
# copied (measured on 100 KiB echo: ~100k fewer instructions per message,
# the size of the copy); smaller ones coalesce better in the queue.
_REF_WRITE = 64 * 1024


def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class StreamPerMessage(transports._FlowControlMixin):
    """The stream transport's per-message methods: write() and the
    completion of its multishot receive.  This is the reference
    implementation; with the accelerator on, the transport derives from
    ``_speedups.stream_class(StreamPerMessage)`` instead, which takes the
    plain case of each in C and hands every other to these methods
    (csrc/stream_speedups.c).  The state they read lives in these slots
    (and _FlowControlMixin's ``_high_water``), which C reads through the
    slot descriptors, as Python does, without a lookup by name; the rest
    (``_after_queued_write``, ``_fatal_error``, ...) is the transport's."""

    __slots__ = ("_protocol", "_conn_lost", "_closing", "_paused", "_held_results",
                 "_buffered", "_recv_op", "_eof", "_empty_waiter", "_sendq", "_sendq_target",
                 "_receive_pool")

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
                    self._read_on_after_interrupt()
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                    return
                if self._recv_op is None:
                    self._start_reading()
                return
            result = (res, data)
        elif res == -errno.ENOBUFS or res == -errno.ECANCELED:
            self._start_reading()  # buffers ran dry, or we cancelled
            return
        else:
            result = (res, None)  # end of stream or an error
        if self._must_hold():
            self._held_results.append(result)
        else:
            self._deliver(*result)

    def write(self, data):
        if type(data) is not bytes and not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if self._eof:
            raise RuntimeError("Cannot call write() after write_eof()")
        if self._empty_waiter is not None:
            raise RuntimeError("unable to write; sendfile is in progress")
        if not data:
            return
        if self._conn_lost:
            self._count_write_after_close()
            return
        if type(data) is not bytes:
            if type(data) is memoryview and not data.c_contiguous:
                # What asyncio's send() of it raises, a fatal write error.
                self._fatal_error(BufferError("memoryview: underlying buffer is not C-contiguous"),
                                  "Fatal write error on socket transport")
                return
            # Through the buffer, as send() reads it: bytes() would call a
            # bytes subclass's __bytes__.
            data = bytes(memoryview(data))
        if self._sendq is None:
            raise RuntimeError("the io_uring ring is closed")
        # The queue copies the bytes (the caller may reuse its buffer), or
        # sends a big write from ``data`` itself.
        # Loaded, then called: a method call of an instance attribute is
        # not specialised, a plain load is.
        write_into = self._sendq_write
        size = write_into(self._sendq_target, data, len(data))
        if size < 0 or size > self._high_water or size >= _BY_REF:
            self._after_queued_write(data, size)


class RingStreamTransport(_accel.subclass_in_c(StreamPerMessage, "stream_class"),
                          RingTransport, transports.Transport):
    """A stream socket transport driven by ring completions."""

    _start_tls_compatible = True
    # loop.sendfile splices file -> pipe -> socket (see _sendfile.py).
    _sendfile_compatible = constants._SendfileMode.TRY_NATIVE
    _io_fd = 0  # read by __del__ even if __init__ failed early: no slot to empty

    def __init__(self, loop, sock, protocol, waiter=None, extra=None, server=None):
        self._sendq = None           # first: read by __del__ even if __init__ fails
        self._eof = False            # write_eof() called
        self._write_shut = False     # shutdown(SHUT_WR) done
        self._recv_buffer = None     # reused by every receive for a Protocol
        self._empty_waiter = None    # set while loop.sendfile owns the socket
        self._writer_context = None  # where resume_writing() runs: see _on_write_pressure
        self._close_called = False   # close() called: see writelines
        self._write_ref = None       # the bytes the send queue sends from, if any
        super().__init__(loop, sock, protocol, extra, server)
        # What receives and sends name: a registered slot under
        # URINGLOOP_FIXED_FILES=1 while the table has a free one, else the fd.
        self._io_fd = (self._ring.install_file(self._sock_fd) if loop._fixed_files
                       else self._sock_fd)
        # The write side lives in C (csrc/sendq.c); its events come back
        # through the ring like completions.
        self._sendq, self._sendq_events = self._ring.new_send_queue(
            self._io_fd, self._in_context(self._on_send_event))
        # A write to an idle queue goes to the socket at once, as asyncio's
        # does: written data is in the kernel when write() returns, not at
        # the loop's next turn (a caller that blocks its thread next, or
        # exits, must not stall or lose it).  URINGLOOP_DEFER_WRITES=1
        # trades that for one enter per turn carrying every write.
        if not loop._defer_writes:
            lib.ul_sendq_send_first(self._sendq, self._sock_fd)
        # write() hands its bytes to the queue through the accelerator
        # when it is on (no cffi argument conversion), else through cffi.
        if _accel.speedups is None:
            self._sendq_write, self._sendq_target = _sendq_write, self._sendq
        else:
            self._sendq_write = _accel.speedups.sendq_write
            self._sendq_target = int(ffi.cast("uintptr_t", self._sendq))
        self._ring_fd.ops += 1   # until the queue is released
        self._receive_pool = self._ring.receive_pool   # for the C _on_recv_multishot
        send_zc = loop._features.send_zc
        lib.ul_sendq_by_reference(self._sendq, min(_REF_WRITE, send_zc or _REF_WRITE),
                                  send_zc or 0)
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
        if self._loop._recv_multishot and not self._buffered:
            try:
                self._recv_op = self._ring.submit_recv_multishot(
                    self._io_fd, RingCallback(self._in_context(self._on_recv_multishot)))
            except OSError as exc:
                self._fatal_error(exc, "Fatal read error on socket transport")
            else:
                self._ring_fd.ops += 1
            return
        if self._recv_buffer is None:
            self._recv_buffer = new_uncleared("char[]", _RECV_BUFFER_SIZE)
        buf = self._recv_buffer
        try:
            self._recv_op = self._ring.submit_recv(
                self._io_fd, buf, _RECV_BUFFER_SIZE,
                RingCallback(self._in_context(self._on_recv)))
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return
        self._ring_fd.ops += 1
        self._recv_target = buf

    def pause_reading(self):
        super().pause_reading()
        # A multishot receive would keep filling buffers: stop it; whatever
        # it delivers before the cancellation lands is held.
        if self._paused and self._recv_op is not None and not self._buffered \
                and self._loop._recv_multishot:
            self._ring.cancel(self._recv_op)

    def _deliver(self, res, data):
        """``data``: the bytes a receive brought, or the transport's buffer
        a one-shot receive filled with ``res`` of them."""
        if self._conn_lost:
            return
        if res > 0:
            if self._buffered:
                view = memoryview(data if type(data) is bytes else ffi.buffer(data, res))
                if not self._feed_buffered(view):
                    return
            else:
                try:
                    self._protocol.data_received(
                        data if type(data) is bytes else ffi.unpack(data, res))
                except (SystemExit, KeyboardInterrupt):
                    self._read_on_after_interrupt()
                    raise
                except BaseException as exc:
                    self._fatal_error(exc, "Fatal error: protocol.data_received() call failed.")
                    return
            self._start_reading()
            return
        if self._buffered:
            # asyncio asks for the buffer of every receive, also the one
            # that finds the end of the stream or an error.
            pinned = self._buffer_to_fill(self._protocol)
            if pinned is None:
                return
            ffi.release(pinned)
        if res == 0:
            self._on_eof()
        else:
            self._fatal_error(os_error(res), "Fatal read error on socket transport")

    def _feed_buffered(self, view):
        """Hand the bytes of ``view`` to a BufferedProtocol as asyncio's
        reads would, a buffer at a time, with asyncio's message for
        whichever step fails.  True if it took them all; what is left when
        it pauses reading is held (copied: ``view`` may be the transport's
        buffer, which the next receive refills), and what is left when it
        switches protocols goes to the new one."""
        protocol = self._protocol
        while view:
            try:
                pinned = self._buffer_to_fill(protocol)
            except (SystemExit, KeyboardInterrupt):
                self._read_on_after_interrupt((len(view), view.tobytes()))
                raise
            if pinned is None:
                return False
            count = min(len(pinned), len(view))
            ffi.memmove(pinned, view[:count], count)
            ffi.release(pinned)
            view = view[count:]
            try:
                protocol.buffer_updated(count)
            except (SystemExit, KeyboardInterrupt):
                self._read_on_after_interrupt((len(view), view.tobytes()) if view else None)
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal error: protocol.buffer_updated() call failed.")
                return False
            if self._conn_lost or self._closing:
                return False
            if self._paused and view:
                self._held_results.insert(0, (len(view), view.tobytes()))
                return False
            if self._protocol is not protocol and view:
                # It handed the stream to another protocol (an upgrade
                # after a header): asyncio's next read is for that one.
                self._deliver(len(view), view.tobytes())
                return False
        return True

    def _buffer_to_fill(self, protocol):
        """What ``protocol.get_buffer(-1)`` hands out, pinned as recv_into
        takes it; None after a fatal error with asyncio's message for the
        step that failed (and recv_into's TypeError for a buffer it
        refuses: read-only, not contiguous)."""
        try:
            dest = protocol.get_buffer(-1)
            if not len(dest):
                raise RuntimeError("get_buffer() returned an empty buffer")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.get_buffer() call failed.")
            return None
        try:
            return _pin_writable(dest, "recv_into")
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on socket transport")
            return None

    def _on_eof(self):
        if self._loop.get_debug():
            logger.debug("%r received EOF", self)
        try:
            # Its truth taken here too: asyncio's, taken outside, fails its
            # readiness callback on every event of the ended stream (a busy
            # loop of reports); this is the one fatal error instead.
            keep_open = bool(self._protocol.eof_received())
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal error: protocol.eof_received() call failed.")
            return
        if not keep_open:
            self.close()

    # -- writing -------------------------------------------------------
    def _after_queued_write(self, data, size):
        """What write() does when the send queue's answer ``size`` (for
        ``data``) is an error, more than the high-water mark queued, or
        carries the flag of a big write the queue sends from ``data``
        itself (kept here, however high the mark)."""
        if size < 0:
            self._fatal_error(os_error(size), "Fatal write error on socket transport")
            return
        sent_first = size & _SENT_FIRST
        size &= ~_SENT_FIRST
        if size >= _BY_REF:
            # Kept while the queue sends from it; an earlier one is let go
            # (the queue took this one: it was idle).
            size -= _BY_REF
            self._write_ref = data
            if size <= self._high_water:
                return
        if sent_first:
            # asyncio's immediate send: the socket refused ``size`` bytes,
            # which are buffered; over the mark, the protocol pauses now.
            if size > self._high_water:
                self._writer_context = contextvars.copy_context()
                self._maybe_pause_protocol()
                self._watch_send_queue()
            return
        self._on_write_pressure(size - len(data))

    def writelines(self, list_of_data):
        if _OWN_WRITELINES:
            # asyncio's checks, in its order: it takes a memoryview of each
            # element, and after close() its write callback is gone.
            if self._eof:
                raise RuntimeError("Cannot call writelines() after write_eof()")
            if self._empty_waiter is not None:
                raise RuntimeError("unable to writelines; sendfile is in progress")
            if not list_of_data:
                return
            list_of_data = [memoryview(data) for data in list_of_data]
            if self._close_called:
                raise TypeError("'NoneType' object is not callable")
        # One copy into the queue instead of one per element.
        self.write(b"".join(list_of_data))

    def set_write_buffer_limits(self, high=None, low=None):
        super().set_write_buffer_limits(high, low)
        # A pause from new limits must hear when the queue drains, as one
        # from write() does (and close() waits for that resume).
        if self._protocol_paused and self._sendq is not None and not self._conn_lost:
            self._watch_send_queue()

    def get_write_buffer_size(self):
        return _sendq_size(self._sendq) if self._sendq is not None else 0

    def _on_write_pressure(self, already_queued):
        # asyncio runs resume_writing() from a writer handle made by the
        # write() that could not send everything, i.e. in a copy of that
        # caller's context.
        self._writer_context = contextvars.copy_context()
        if already_queued:
            self._maybe_pause_protocol()
            self._watch_send_queue()
        else:
            # Like asyncio's immediate send: what the kernel takes at once
            # never counts against the high-water mark, so the queue looks
            # again once this first send has completed, and reports only if
            # more than the mark is left.  (Marks may be floats, as with
            # asyncio; sizes are whole bytes, so the floor compares alike.)
            _sendq_check_pressure(self._sendq, int(self._high_water))

    def _watch_send_queue(self):
        """Ask the send queue for the one event this transport waits for
        next (one threshold at a time: the one reached first)."""
        threshold = -1
        if self._protocol_paused:
            threshold = self._low_water
        if self._closing or self._eof or self._empty_waiter is not None:
            threshold = max(threshold, 0)
        if threshold >= 0:
            _sendq_notify_at(self._sendq, int(threshold))

    def _on_send_event(self, res, flags):
        event = flags >> _SENDQ_EVENT_SHIFT
        if self._write_ref is not None and event != 0 and (
                event == _SENDQ_RELEASED or not lib.ul_sendq_holds_ref(self._sendq)):
            self._write_ref = None
        if event == _SENDQ_DRAINED:
            self._on_send_progress(res)
        elif event == _SENDQ_FAILED:
            self._fatal_error(os_error(res), "Fatal write error on socket transport")
        else:
            # Released after its last send, or gone with the ring (event 0,
            # see Ring._drop_send_queues: the kernel may still read
            # ``_write_ref`` until the ring is gone, so it stays): either
            # way the queue must not be touched again.
            self._sendq = None
            self._ring_fd.op_done()

    def _on_send_progress(self, size):
        if self._conn_lost:
            return
        try:
            if self._protocol_paused:
                self._in_writer_context(self._maybe_resume_protocol)
            elif size > self._high_water:
                self._in_writer_context(self._maybe_pause_protocol)
        finally:
            # Also when the protocol let KeyboardInterrupt or SystemExit
            # out: the close or the watch for the next event must not be
            # lost with this event.  Asked again, not taken from the event:
            # resume_writing() may just have written more.
            if (self._closing or self._eof or self._empty_waiter is not None) and \
                    not self._writes_pending():
                self._on_write_drained()
            else:
                self._watch_send_queue()

    def _in_writer_context(self, callback):
        if self._writer_context is None:
            callback()  # no write has pressed yet: the transport's context
        else:
            self._writer_context.run(callback)

    def _writes_pending(self):
        # A paused writer counts even when the queue has drained in C: the
        # event that resumes it is on its way (pausing asked for it), and
        # asyncio resumes a writer as its buffer drains, so before close()
        # or write_eof() can find the buffer empty.  A protocol may write
        # from resume_writing() (asyncio's TLS protocol sends its
        # close_notify then): that must go out before the connection ends.
        return self._sendq is not None and (self._protocol_paused or
                                            _sendq_size(self._sendq) > 0)

    def _abort_writes(self):
        queue = self._sendq
        if queue is not None:
            if _sendq_size(queue):
                # asyncio's write() handed the bytes to the kernel already
                # (what the socket buffer took): start the send waiting for
                # the next turn now, so that the cancellation below drops
                # only what asyncio would have buffered.
                self._ring.submit_now()
            # A failure to queue the cancellation only means the send in
            # flight runs to its end; the queue still waits for it.
            lib.ul_sendq_abort(queue)

    def _release_writes(self):
        # Freed now, or by the last send still in the kernel, whose
        # UL_SENDQ_RELEASED event ends the queue's operation on the socket.
        queue = self._sendq
        if queue is not None and self._ring.release_send_queue(queue, self._sendq_events):
            self._sendq = None
            self._write_ref = None
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
        self._close_called = True
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
