"""Accepting connections for ``create_server``/``create_unix_server`` with
one multishot ``IORING_OP_ACCEPT`` per listening socket (one-shot accepts,
each arming the next, where the loop's probe found no multishot accept).

Data flow: ``_start_serving`` (asyncio's hook, same signature on 3.11 to
3.13) arms the accept; every completion is a new connected fd, wrapped in
a socket of the listener's family and handed to asyncio's own
``_accept_connection2``, which makes the protocol and the transport (and
the TLS layer).  When the kernel ends the multishot (an error, or no
``IORING_CQE_F_MORE``) it is re-armed.  A failed accept is reported
through the loop's exception handler and retried after asyncio's
ACCEPT_RETRY_DELAY instead of spinning: running out of fds (EMFILE and
friends) exactly as asyncio's selector loop does, and any other error
(a listener shut down under the server) too, which asyncio reports on
every iteration; only what asyncio's accept loop ignores (EAGAIN, EINTR,
ECONNABORTED) re-arms at once.

``_stop_serving`` cancels the accept and pushes the cancellation to the
kernel before closing the listener, so the kernel has resolved (or
dropped) the listener's fd before its number can be reused; connections
that complete after the stop are closed on arrival.
"""
import contextvars
import errno
import socket

from asyncio import constants, trsock
from asyncio.log import logger

from . import _sockaddr
from ._overrides import overrides

from ._native import os_error
from ._op import RingCallback
from ._ring import CQE_F_MORE

_ACCEPT_FLAGS = socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# What asyncio's accept loop takes for "nothing to accept now"; any other
# error is reported and the accept waits ACCEPT_RETRY_DELAY, where asyncio
# would report it on every loop iteration.
_RETRY_AT_ONCE = (errno.EAGAIN, errno.EINTR, errno.ECONNABORTED)


class RingServerMixin:
    """Needs ``self._ring``, ``self._accepting`` (fd -> user_data) and
    ``self._accept_multishot``."""

    def _start_serving(self, protocol_factory, sock,
                       sslcontext=None, server=None, backlog=100,
                       ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                       ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # Each connection's callbacks run in a copy of the context that
        # started serving (create_server's caller), as with asyncio.
        if overrides(sock, ("accept",)):
            # asyncio's accept loop calls the listener's own accept().
            return super()._start_serving(protocol_factory, sock, sslcontext, server,
                                          backlog, ssl_handshake_timeout,
                                          ssl_shutdown_timeout)
        context = contextvars.copy_context()
        self._check_closed()  # asyncio's add_reader check, before the ring's
        serving = (protocol_factory, sock, sslcontext, server, backlog,
                   ssl_handshake_timeout, ssl_shutdown_timeout, context)
        self._arm_accept(serving)

    def _arm_accept(self, serving):
        sock = serving[1]
        fd = sock.fileno()

        def on_accept(res, flags):
            if self._accepting.get(fd) != user_data:
                if res >= 0:
                    socket.socket(fileno=res).close()  # arrived after stop
                return
            if not flags & CQE_F_MORE:
                del self._accepting[fd]
            if res >= 0:
                self._hand_over(res, serving)
            elif -res not in _RETRY_AT_ONCE:
                # Completions run in no context of their own: the report
                # runs in the server's, as under asyncio's reader handle.
                serving[-1].run(self.call_exception_handler, {
                    "message": ("socket.accept() out of system resource"
                                if -res in _OUT_OF_RESOURCES else "socket.accept() failed"),
                    "exception": os_error(res),
                    "socket": trsock.TransportSocket(sock),
                })
                if fd not in self._accepting:
                    self._accepting[fd] = None  # a retry is scheduled
                    self.call_later(constants.ACCEPT_RETRY_DELAY,
                                    self._retry_serving, fd, serving)
                return
            if fd not in self._accepting:
                self._arm_accept(serving)

        # A one-shot accept completes without IORING_CQE_F_MORE, which the
        # callback above answers by arming the next: the same code serves both.
        submit = (self._ring.submit_accept_multishot if self._accept_multishot
                  else self._ring.submit_accept)
        user_data = submit(fd, _ACCEPT_FLAGS, RingCallback(on_accept, returns_fd=True))
        self._accepting[fd] = user_data

    def _retry_serving(self, fd, serving):
        if fd in self._accepting and self._accepting[fd] is None:
            del self._accepting[fd]
            self._arm_accept(serving)

    def _hand_over(self, conn_fd, serving):
        protocol_factory, sock, sslcontext, server, _, hs_timeout, sd_timeout, context = serving
        conn = socket.socket(sock.family, sock.type, sock.proto, fileno=conn_fd)
        conn.setblocking(False)
        try:
            # Even for a peer that reset the connection before it was
            # accepted: asyncio serves those too (the protocol then sees
            # the reset), as accept(2) returned the address.
            peername = _sockaddr.peername(conn)
        except OSError:
            peername = None
        if self._debug:
            logger.debug("%r got a new connection from %r: %r", server, peername, conn)
        self.create_task(self._accept_connection2(
            protocol_factory, conn, {"peername": peername}, sslcontext, server,
            hs_timeout, sd_timeout), context=context.copy())

    def _stop_serving(self, sock):
        user_data = self._accepting.pop(sock.fileno(), None)
        if user_data is not None:
            self._ring.cancel(user_data)
            self._ring.submit_now()
        # asyncio's closes the socket and, from 3.13, unlinks a Unix
        # server's path.
        super()._stop_serving(sock)
