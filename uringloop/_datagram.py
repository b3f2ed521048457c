"""UDP (and Unix datagram) transports on the ring, for
``create_datagram_endpoint``.

Data flow: one ``IORING_OP_RECVMSG`` is in flight while reading; its
completion carries the datagram and the sender's address, which go to
``datagram_received`` (an error goes to ``error_received`` and reading
continues, as in asyncio).  ``sendto()`` submits one ``IORING_OP_SENDMSG``
when none is in flight and queues otherwise, so datagrams leave in the
order they were written; a send error goes to ``error_received``.
Closing, pausing and the close-after-completion rule come from
``RingTransport``.
"""
import collections
import socket
import sys

from asyncio import transports

from . import _sockaddr
from ._sockops import _os_error
from ._transport import RingTransport, set_result_unless_cancelled
from ._uring import ffi

_MAX_DATAGRAM = 256 * 1024
_new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)
# Python 3.13 sends empty datagrams and counts an 8-byte header per queued one.
_SENDS_EMPTY = sys.version_info >= (3, 13)
_QUEUED_HEADER_BYTES = 8 if _SENDS_EMPTY else 0


class RingDatagramTransport(RingTransport, transports.DatagramTransport):

    def __init__(self, loop, sock, protocol, address=None, waiter=None, extra=None):
        self._address = address
        self._write_queue = collections.deque()
        self._write_size = 0     # bytes queued behind the send in flight
        self._send_op = None     # user_data of the sendmsg in flight
        self._recv_buffer = _new_uncleared("char[]", _MAX_DATAGRAM)
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
                self._in_context(self._on_recv))
        except OSError as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
        self._recv_target = None

    def _deliver(self, res, target):
        if self._conn_lost:
            return
        try:
            if res < 0:
                self._protocol.error_received(_os_error(res))
            else:
                msg = self._recv_msg
                addr = _sockaddr.unpack(ffi.buffer(ffi.addressof(msg.addr)),
                                        msg.hdr.msg_namelen)
                self._protocol.datagram_received(ffi.unpack(self._recv_buffer, res), addr)
        except (SystemExit, KeyboardInterrupt):
            raise
        except BaseException as exc:
            self._fatal_error(exc, "Fatal read error on datagram transport")
            return
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
        if self._connected:
            sockaddr = b""
        else:
            try:
                sockaddr = self._pack_address(addr)
            except (OSError, TypeError, ValueError) as exc:
                self._protocol.error_received(exc if isinstance(exc, OSError) else OSError(str(exc)))
                return
        # The caller may reuse a mutable buffer as soon as sendto() returns.
        datagram = data if type(data) is bytes else bytes(data)
        if self._send_op is None:
            self._send(datagram, sockaddr)
        else:
            self._write_queue.append((datagram, sockaddr))
            self._write_size += len(datagram) + _QUEUED_HEADER_BYTES
            self._maybe_pause_protocol()

    def _pack_address(self, addr):
        family = self._sock.family
        if family in (socket.AF_INET, socket.AF_INET6):
            host, port = addr[:2]
            try:
                return _sockaddr.pack(family, addr)
            except OSError:
                # A host name: resolve it as socket.sendto() would (blocking).
                infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
                return _sockaddr.pack(family, infos[0][4])
        return _sockaddr.pack(family, addr)

    def _send(self, datagram, sockaddr):
        try:
            self._send_op = self._ring.submit_sendmsg(
                self._sock_fd, self._send_msg, datagram, len(datagram), sockaddr,
                self._in_context(self._on_sent), datagram)
        except OSError as exc:
            self._fatal_error(exc, "Fatal write error on datagram transport")

    def get_write_buffer_size(self):
        return self._write_size

    def _writes_pending(self):
        return self._send_op is not None

    def _abort_writes(self):
        self._write_queue.clear()
        self._write_size = 0
        if self._send_op is not None:
            self._ring.cancel(self._send_op)

    def _release_writes(self):
        return self._send_op is None

    def _on_sent(self, res, flags):
        self._send_op = None
        if self._conn_lost:
            self._close_socket_if_idle()
            return
        if res < 0:
            try:
                self._protocol.error_received(_os_error(res))
            except (SystemExit, KeyboardInterrupt):
                raise
            except BaseException as exc:
                self._fatal_error(exc, "Fatal write error on datagram transport")
                return
        if self._write_queue:
            datagram, sockaddr = self._write_queue.popleft()
            self._write_size -= len(datagram) + _QUEUED_HEADER_BYTES
            self._send(datagram, sockaddr)
        self._maybe_resume_protocol()
        if self._send_op is None and self._closing:
            self._schedule_connection_lost(None)
