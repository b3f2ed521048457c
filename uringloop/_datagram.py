"""UDP (and Unix datagram) transports on the ring, for
``create_datagram_endpoint``.

Data flow: one ``IORING_OP_RECVMSG`` is in flight while reading; its
completion carries the datagram and the sender's address, which go to
``datagram_received`` (an error goes to ``error_received`` and reading
continues, as in asyncio).

Sending keeps asyncio's contract, where a datagram is either taken by the
kernel during ``sendto()`` or counted in ``get_write_buffer_size()`` until
it is: ``sendto()`` tries one non-blocking send, and only a datagram the
full socket refuses is queued.  The oldest queued one goes to the kernel
as one ``IORING_OP_SENDMSG``, which completes once there is room; its
completion sends the rest as asyncio's ``_sendto_ready`` does (until the
kernel refuses again) and drives ``resume_writing()``.  So datagrams leave
in write order, ``close()`` flushes the queue and ``abort()`` drops exactly
what was counted.  A send error goes to ``error_received``.  A protocol
callback that raises is reported to the loop's exception handler and the
transport goes on, as asyncio's does.  Closing and pausing come from
``RingTransport``; the socket's fd closes by the rule of _ringfd.py, the
receive and the sendmsg in flight being its operations.
"""
import collections
import socket
import sys

from asyncio import transports

from . import _sockaddr
from ._native import new_uncleared, os_error
from ._op import RingCallback
from ._transport import RingTransport, set_result_unless_cancelled
from ._uring import ffi

_MAX_DATAGRAM = 256 * 1024
# Python 3.13 sends empty datagrams and counts an 8-byte header per queued one.
_SENDS_EMPTY = sys.version_info >= (3, 13)
_QUEUED_HEADER_BYTES = 8 if _SENDS_EMPTY else 0
_REFUSED = object()  # _try_send's answer when the socket buffer is full


class RingDatagramTransport(RingTransport, transports.DatagramTransport):

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        self._address = address
        self._write_queue = collections.deque()  # (data, addr) the kernel refused, oldest first
        self._write_size = 0     # their bytes, as asyncio counts them
        self._send_op = None     # user_data of the sendmsg of the oldest one
        self._recv_buffer = new_uncleared("char[]", _MAX_DATAGRAM)
        self._recv_msg = ffi.new("struct ul_msg *")
        self._send_msg = ffi.new("struct ul_msg *")
        super().__init__(loop, sock, protocol, extra)
        self._connected = self._extra["peername"] is not None
        loop.call_soon(self._protocol.connection_made, self)
        loop.call_soon(self._start_reading)
        if waiter is not None:
            loop.call_soon(set_result_unless_cancelled, waiter, None)

    # -- reading -------------------------------------------------------
    def _start_reading(self):
        if self._recv_op is not None or not self.is_reading() or self._held_results:
            return
        try:
            self._recv_op = self._ring.submit_recvmsg(
                self._sock_fd, self._recv_msg, self._recv_buffer, _MAX_DATAGRAM,
                RingCallback(self._in_context(self._on_recv)))
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._ring_fd.ops += 1
        self._recv_target = None

    def _deliver(self, res, target):
        if self._conn_lost:
            return
        try:
            if res < 0:
                self._protocol_call(self._protocol.error_received, os_error(res))
            else:
                msg = self._recv_msg
                addr = _sockaddr.unpack(ffi.buffer(ffi.addressof(msg.addr)),
                                        msg.hdr.msg_namelen)
                self._protocol_call(self._protocol.datagram_received,
                                    ffi.unpack(self._recv_buffer, res), addr)
        except (SystemExit, KeyboardInterrupt):
            self._read_on_after_interrupt()
            raise
        self._start_reading()

    # -- writing -------------------------------------------------------
    def sendto(self, data, addr=None):
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data argument must be a bytes-like object, "
                            f"not {type(data).__name__!r}")
        if not data and not _SENDS_EMPTY:
            return
        if self._address:
            if addr not in (None, self._address):
                raise ValueError(f"Invalid address: must be None or {self._address}")
            addr = self._address
        if self._conn_lost:
            if self._address:
                self._count_write_after_close()
                return
            # asyncio sends an unconnected endpoint's datagrams until its
            # connection_lost, after which its transport, having let go of
            # its loop, fails reporting the closed socket.
            if self._protocol is None:
                raise AttributeError("'NoneType' object has no attribute "
                                     "'call_exception_handler'")
        refused = False
        if not self._write_queue:
            # Offered to the kernel now, as asyncio does: an error (the
            # address's too) is this call's, and error_received's own
            # exception reaches the caller.
            exc = self._try_send(data, addr)
            if exc is not _REFUSED:
                if exc is not None:
                    self._protocol.error_received(exc)
                return
            refused = True
        # Refused, or behind refused ones: the caller may reuse a mutable
        # buffer as soon as sendto() returns.
        self._write_queue.append((bytes(data), addr))
        self._write_size += len(data) + _QUEUED_HEADER_BYTES
        if refused:
            self._send_head()
        self._maybe_pause_protocol()

    def _try_send(self, data, addr):
        """One non-blocking send: None once the kernel took it, _REFUSED if
        the socket is full, the OSError to report otherwise.  Any other
        exception (a malformed address) ends the transport, as in asyncio."""
        try:
            if self._connected:
                self._sock.send(data)
            else:
                self._sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            return _REFUSED
        except OSError as exc:
            return exc
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on datagram transport")
        return None

    def _send_head(self):
        # The socket is full: the kernel sends the oldest datagram once
        # there is room and its completion drains the rest (_on_sent).
        data, addr = self._write_queue[0]
        try:
            sockaddr = b"" if self._connected else self._pack_address(addr)
            self._send_op = self._ring.submit_sendmsg(
                self._sock_fd, self._send_msg, data, len(data), sockaddr,
                RingCallback(self._in_context(self._on_sent)), data)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal write error on datagram transport")
        else:
            self._ring_fd.ops += 1

    def _pack_address(self, addr):
        family = self._sock.family
        if family in (socket.AF_INET, socket.AF_INET6):
            host, port = addr[:2]
            try:
                return _sockaddr.pack(family, addr)
            except OSError:
                # A host name, which socket.sendto() accepted: resolve it as
                # that did (blocking).
                infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
                return _sockaddr.pack(family, infos[0][4])
        return _sockaddr.pack(family, addr)

    def _on_sent(self, res, flags):
        self._send_op = None
        self._ring_fd.op_done()
        if self._conn_lost:
            return
        data, _ = self._write_queue.popleft()
        self._write_size -= len(data) + _QUEUED_HEADER_BYTES
        try:
            if res < 0:
                self._protocol_call(self._protocol.error_received, os_error(res))
        except (SystemExit, KeyboardInterrupt):
            self._send_on_after_interrupt()
            raise
        self._send_queued()

    def _send_on_after_interrupt(self):
        # A protocol callback let KeyboardInterrupt or SystemExit out of
        # the loop: what is queued still goes (and a close still comes)
        # once the loop runs again.
        self._loop.call_soon(self._send_queued, context=self._context)

    def _send_queued(self):
        try:
            self._send_queued_now()
        except (SystemExit, KeyboardInterrupt):
            self._send_on_after_interrupt()
            raise

    def _send_queued_now(self):
        # asyncio's _sendto_ready: the rest goes out now, until the kernel
        # refuses one, which then waits on the ring.
        queue = self._write_queue
        # error_received may write (or close) meanwhile: a datagram it gets
        # refused is the one the ring sends next.
        while queue and self._send_op is None and not self._conn_lost:
            data, addr = queue[0]
            exc = self._try_send(data, addr)
            if exc is _REFUSED:
                self._send_head()
                break
            if self._conn_lost:
                return  # a fatal error dropped the queue
            queue.popleft()
            self._write_size -= len(data) + _QUEUED_HEADER_BYTES
            if exc is not None:
                self._protocol_call(self._protocol.error_received, exc)
        if self._conn_lost:
            return
        self._maybe_resume_protocol()  # may queue more
        if not queue and self._closing:
            self._schedule_connection_lost(None)

    def _protocol_call(self, method, *args):
        # A protocol callback that raises is reported and the transport goes
        # on, as asyncio's datagram transport lets its handle report it.
        try:
            method(*args)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._loop.call_exception_handler({
                "message": f"Exception in callback "
                           f"{getattr(method, '__qualname__', method)!s}()",
                "exception": exc,
                "transport": self,
                "protocol": self._protocol,
            })

    def get_write_buffer_size(self):
        return self._write_size

    def _writes_pending(self):
        return bool(self._write_queue)

    def _abort_writes(self):
        self._write_queue.clear()
        self._write_size = 0
        if self._send_op is not None:
            # Now, not next turn: room the peer makes meanwhile must not
            # send a datagram abort() dropped.
            self._ring.cancel(self._send_op)
            self._ring.submit_now()
