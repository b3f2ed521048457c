"""What every ring socket transport shares: extra info, protocol plumbing,
read pausing, and the closing rules.

A subclass keeps at most one receive (``_recv_op``) in the kernel and
supplies ``_start_reading`` (submit the next receive), ``_deliver(res,
target)`` (hand a completed receive to the protocol) and its write path:
``get_write_buffer_size()``, ``_writes_pending()`` (something written is
not sent yet), ``_abort_writes()`` (drop what is queued and cancel the send
in flight) and ``_release_writes()`` (let go of the write side once
connection_lost has run).  Every operation it submits on the socket is
counted in ``_ring_fd`` (see _ringfd.py).  This base owns the invariants
around them:

* a receive that completes while reading is paused is held and delivered
  by ``resume_reading()``, so pausing never loses data;
* ``close()`` stops reading and lets the send in flight (and everything
  queued behind it) finish before ``connection_lost(None)``; ``abort()``
  and fatal errors drop the queue and cancel both operations;
* the socket is closed by the ring-owned fd rule (_ringfd.py) once
  ``connection_lost`` has run: as soon as nothing of this transport waits
  in the submission queue, since an operation the kernel already holds (a
  cancelled receive, an aborted send) pins the file, not the fd number,
  and its completion finds the transport by user_data; so a reused fd
  number never meets an old operation while the peer sees the close as
  promptly as with asyncio.

Context: protocol callbacks run in a copy of the ``contextvars`` context
current where the transport was created (``create_connection``'s caller,
or ``create_server``'s for an accepted connection), as with asyncio, whose
reader and writer handles copy it then; completion callbacks are entered
through ``_in_context`` (in the _ring.RingCallback a submission takes).
The ring's batch of completions runs in no context of its own (see
_speedups.run_batch), so the few completion callbacks that are no
transport's and reach user code (a report to the exception handler) give
it a context first.
"""
import contextvars
import functools
import sys
import warnings

from asyncio import transports, trsock
from asyncio.log import logger

from ._ringfd import RingFd

# Python 3.13 made Server track its transports (for close_clients()).
_SERVER_TRACKS_TRANSPORTS = sys.version_info >= (3, 13)


def set_result_unless_cancelled(fut, result):
    if not fut.cancelled():
        fut.set_result(result)


def report_fatal_error(transport, exc, message, expected):
    """Report the error that ends ``transport`` as asyncio's transports do:
    an ``expected`` one (the peer or the OS ended the connection) only in
    debug mode, anything else through the loop's exception handler."""
    if expected:
        if transport._loop.get_debug():
            logger.debug("%r: %s", transport, message, exc_info=True)
    else:
        transport._loop.call_exception_handler({
            "message": message,
            "exception": exc,
            "transport": transport,
            "protocol": transport._protocol,
        })


class ReadPausing:
    """``pause_reading``/``resume_reading`` for a transport that keeps one
    receive in the kernel: a receive that completes while reading is paused
    is held, in order, and delivered by ``resume_reading()``, so pausing
    never loses data.  Needs ``_loop``, ``_closing``, ``_paused``,
    ``_held_results`` (a list of argument tuples for ``_deliver``) and
    ``_start_reading()``.

    Wire order: a receive armed before a pause can still complete after
    the resume (its cancellation may not have landed, and held results
    wait for a ready-queue callback), so completions go to the protocol
    directly only while nothing is held (see ``_must_hold``), and a
    subclass starts no new receive while something is."""

    def is_reading(self):
        return not self._closing and not self._paused

    def _in_context(self, callback):
        """``callback`` wrapped to run in the transport's context (a ring
        completion otherwise runs in whatever context the loop has)."""
        return functools.partial(self._context.run, callback)

    def _must_hold(self):
        return self._paused or bool(self._held_results)

    def pause_reading(self):
        if not self.is_reading():
            return
        self._paused = True
        if self._loop.get_debug():
            logger.debug("%r pauses reading", self)

    def resume_reading(self):
        if self._closing or not self._paused:
            return
        self._paused = False
        if self._held_results:
            self._loop.call_soon(self._deliver_held, context=self._context)
        else:
            self._start_reading()
        if self._loop.get_debug():
            logger.debug("%r resumes reading", self)

    def _read_on_after_interrupt(self, rest=None):
        """A protocol callback let KeyboardInterrupt or SystemExit out of
        the loop.  asyncio's reader stays registered through that, so once
        the loop runs again what follows is read and delivered; here the
        receive the callback's completion would have re-armed is armed by
        a callback then, and ``rest`` (the part of a completion's result
        not yet delivered, as ``_deliver`` takes it) goes first."""
        if rest is not None:
            self._held_results.insert(0, rest)
        self._loop.call_soon(self._deliver_held, context=self._context)

    def _deliver_held(self):
        # The list is read afresh each time: a protocol callback may pause
        # again (the rest stays held, in order), close (which clears it) or
        # see more completions appended behind.
        while self._held_results and not self._paused and not self._closing:
            self._deliver(*self._held_results.pop(0))
        self._start_reading()


class RingTransport(ReadPausing, transports._FlowControlMixin):
    _sock = None  # read by __del__ even if __init__ failed early

    def __init__(self, loop, sock, protocol, extra=None, server=None):
        super().__init__(extra, loop)
        self._extra["socket"] = trsock.TransportSocket(sock)
        try:
            self._extra["sockname"] = sock.getsockname()
        except OSError:
            self._extra["sockname"] = None
        if "peername" not in self._extra:
            try:
                self._extra["peername"] = sock.getpeername()
            except OSError:
                self._extra["peername"] = None
        self._context = contextvars.copy_context()
        self._ring = loop._ring
        self._ring_fd = RingFd(self._ring)  # what is in flight on the socket
        self._sock = sock
        self._sock_fd = sock.fileno()
        self._server = server
        self._closing = False        # close() or abort() called
        self._conn_lost = False      # connection_lost scheduled
        self._paused = False         # pause_reading() in effect
        self._recv_op = None         # user_data of the receive in flight
        self._held_results = []      # receives that completed while paused
        self._conn_lost_writes = 0   # writes attempted after connection_lost
        self._protocol = None
        self._protocol_connected = False
        self.set_protocol(protocol)
        if server is not None:
            server._attach(self) if _SERVER_TRACKS_TRANSPORTS else server._attach()
        loop._transports[self._sock_fd] = self

    def __repr__(self):
        info = [type(self).__name__]
        if self._sock is None:
            info.append("closed")
        elif self._closing:
            info.append("closing")
        info.append(f"fd={self._sock_fd}")
        info.append(f"read={'busy' if self._recv_op else 'idle'}")
        size = self.get_write_buffer_size()
        info.append(f"write=<{'busy' if size else 'idle'}, bufsize={size}>")
        return f"<{' '.join(info)}>"

    def __del__(self, _warn=warnings.warn):
        if self._sock is not None:
            # Collected with an op recorded in flight means its loop closed
            # first (the ops table holds our callbacks until completion).
            _warn(f"unclosed transport {self!r}", ResourceWarning, source=self)
            self._release_writes()
            self._ring_fd.close(self._close_socket)

    # -- protocol ------------------------------------------------------
    def set_protocol(self, protocol):
        self._protocol = protocol
        self._protocol_connected = True

    def get_protocol(self):
        return self._protocol

    def is_closing(self):
        return self._closing

    def _on_recv(self, res, flags):
        self._recv_op = None
        target, self._recv_target = self._recv_target, None
        if self._conn_lost:
            self._ring_fd.op_done()
            return
        # op_done() without its closing check, which needs _conn_lost: a
        # call less on the per-message path.
        self._ring_fd.ops -= 1
        if self._closing:
            # close() cancelled this receive (-ECANCELED) while a send
            # drains: not a read error, and no data after close().
            return
        if self._must_hold():
            self._held_results.append((res, target))
            return
        self._deliver(res, target)

    def _count_write_after_close(self):
        # asyncio drops such writes silently, warning once it gets silly;
        # its count starts at 1 (the loss itself), so the 5th write warns.
        if self._conn_lost_writes >= 4:  # asyncio's LOG_THRESHOLD_FOR_CONNLOST_WRITES - 1
            logger.warning("socket.send() raised exception.")
        self._conn_lost_writes += 1

    # -- closing -------------------------------------------------------
    def close(self):
        if self._closing:
            return
        self._closing = True
        self._cancel_recv()
        if not self._writes_pending():
            self._schedule_connection_lost(None)

    def abort(self):
        self._force_close(None)

    def _fatal_error(self, exc, message="Fatal error on transport"):
        report_fatal_error(self, exc, message, expected=isinstance(exc, OSError))
        self._force_close(exc)

    def _force_close(self, exc):
        if self._conn_lost:
            return
        self._closing = True
        self._abort_writes()
        self._cancel_recv()
        self._schedule_connection_lost(exc)

    def _cancel_recv(self):
        self._held_results = []
        if self._recv_op is not None:
            self._ring.cancel(self._recv_op)

    def _schedule_connection_lost(self, exc):
        if self._conn_lost:
            return
        self._conn_lost = True
        self._loop.call_soon(self._call_connection_lost, exc)

    def _call_connection_lost(self, exc):
        try:
            if self._protocol_connected:
                self._protocol.connection_lost(exc)
        finally:
            self._protocol = None
            server, self._server = self._server, None
            if server is not None:
                server._detach(self) if _SERVER_TRACKS_TRANSPORTS else server._detach()
            # The transport submits nothing more on the socket (its receive
            # is cancelled, its sends drained or aborted).
            self._release_writes()
            self._ring_fd.close(self._close_socket)

    def _release_writes(self):
        pass

    def _close_socket(self):
        self._sock.close()
        self._sock = None
