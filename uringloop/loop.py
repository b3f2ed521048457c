"""The event loop: asyncio's Unix selector loop with its waits and I/O
moved onto one io_uring ring.

What ``Loop`` owns: the ring (``self._ring``) and a ``RingSelector`` over
it.  asyncio's ``BaseEventLoop`` machinery is reused as is (ready queue,
timers, executors, DNS, TLS, signals, debug mode); the I/O hooks asyncio
calls are overridden by the mixins: ``sock_*`` (``_sockops``), transports
(``_stream``, ``_datagram``), accepting (``_server``), sendfile
(``_sendfile``) and child processes (``_subprocess``); ``call_soon``,
``call_at``/``call_later`` and ``create_task`` take the lean path of
``_scheduling`` outside debug mode (``call_soon`` and ``_run_once`` in C
with the accelerator).  A socket whose class overrides the
methods asyncio's transports call gets asyncio's own transport instead
(``_overrides``).

Each iteration of ``_run_once`` (in C outside debug mode, see ``_turn``)
calls ``selector.select(timeout)``, which is one ring turn: it submits
every queued operation and waits until a completion or the next timer.
Poll completions become select()'s events; every other completion goes,
as one batch, into a single ready-queue callback, so it runs after the
callbacks already scheduled -- where asyncio runs I/O callbacks.
``call_soon_threadsafe`` wakes the ring through asyncio's self-pipe, whose
read end always has a poll armed on the ring.

The ring is made from the knobs in the environment and the optional paths
(multishot accept and receive, the provided-buffer ring, FTRUNCATE, setup
flags; registered files when asked for) are chosen by probing it
(``_features``); ``ring_stats()`` reports the ring's counters and both
(``_stats``).

``close()`` first lets asyncio close the selector state, then cancels every
operation still in the kernel and frees the ring only once all of them
have completed.
"""
import asyncio
import contextvars
from asyncio import constants, events, selector_events, sslproto

from . import _accel, _features, _stats
from ._overrides import DATAGRAM, STREAM, overrides
from ._datagram import RingDatagramTransport
from ._pipes import RingReadPipeTransport
from ._readiness import RingSelector
from ._ring import Ring
from ._scheduling import Handle, LeanSchedulingMixin
from ._sendfile import RingSendfileMixin
from ._server import RingServerMixin
from ._sockops import RingSocketOpsMixin
from ._subprocess import RingSubprocessMixin
from ._stream import RingStreamTransport
from ._turn import TurnMixin


class Loop(_accel.subclass_in_c(LeanSchedulingMixin, "scheduling_class"), RingSocketOpsMixin,
           RingSendfileMixin, RingServerMixin, RingSubprocessMixin,
           _accel.subclass_in_c(TurnMixin, "turn_class", events.Handle, _accel),
           asyncio.SelectorEventLoop):
    """An asyncio event loop whose I/O runs on io_uring."""

    backend = "io_uring"

    def __init__(self, ring=None, *, _single_thread=False):
        # Until asyncio's __init__ has run, a failure (a bad knob, no ring)
        # leaves an object that BaseEventLoop.__del__ must see as closed.
        self._closed = True
        knobs = _features.read_knobs()
        if knobs.single_thread is None:
            # uringloop.run() asks for a ring tied to its thread: the loop
            # it makes lives and dies inside one call, in one thread.
            knobs.single_thread = _single_thread
        self._ring = Ring(**knobs.ring_arguments()) if ring is None else ring
        self._ring.on_callback_error = self._report_ring_callback_error
        self._accepting = {}  # listening fd -> its accept (multishot or not)
        self._sendfiles = {}  # socket fd -> the native sendfile running on it
        # The optional paths this kernel offers, less those switched off.
        self._features = _features.configure(self._ring, knobs)
        self._accept_multishot = "multishot_accept" in self._features.on
        # sock_recv takes provided buffers; Protocol streams arm multishot
        # receives (which draw on the same buffers).
        self._recv_provided = "buffer_ring" in self._features.on
        self._recv_multishot = "multishot_recv" in self._features.on
        # Stream transports put their sockets in the registered-file table.
        self._fixed_files = "fixed_files" in self._features.on
        # Stream writes go to the socket at once, as asyncio's, unless the
        # user asked them to wait for the ring's next submission.
        self._defer_writes = "defer_writes" in self._features.on
        self._final_stats = None  # ring_stats() as the loop closed
        _stats.track(self)
        super().__init__(selector=RingSelector(self._ring))
        # Completion callbacks run after the callbacks already scheduled, as
        # asyncio runs I/O callbacks after select(), not inside it.
        self._selector.defer_completions = self._schedule_completions
        # The C turn makes the ring turn itself when the selector has no fd
        # to arm (see _speedups.run_once), and then skips _process_events
        # if this class has asyncio's (which does nothing without events);
        # dropped at close (it refers back to the loop).
        self._c_ring_turn = None
        if _accel.speedups is not None:
            selector = self._selector
            stock_events = (type(self)._process_events
                            is selector_events.BaseSelectorEventLoop._process_events)
            # The ready queue and the ops table: the C turn defers a batch
            # as _schedule_completions does, without its frame.
            self._c_ring_turn = (self._ring.c_turn_state, selector._to_arm, selector._fired,
                                 self._schedule_completions, selector, self._ring,
                                 stock_events, self._ready, self._ring._ops)

    def run_forever(self):
        # A thread that got the ident of one that ran the loop and exited
        # is another thread to the kernel (see Ring.note_run).
        if not self.is_closed() and not self.is_running():
            self._ring.note_run()
        return super().run_forever()

    def _schedule_completions(self, batch):
        if self._debug:
            self.call_soon(self._ring.run_callbacks, batch)
        elif _accel.speedups is None:
            # call_soon's work without its frame: the loop is running.
            self._ready.append(Handle(self._ring.run_callbacks, (batch,), self, None))
        else:
            # Ring.run_callbacks in C, without the method's frame.
            ring = self._ring
            self._ready.append(Handle(_accel.speedups.run_callbacks,
                                      (ring, ring._ops, ring._unfinished, batch), self, None))

    def _report_ring_callback_error(self, exc):
        if isinstance(exc, (SystemExit, KeyboardInterrupt)):
            raise exc
        # Completions run in no context of their own (see
        # _speedups.run_batch): the handler gets a copy, as a handle would.
        contextvars.copy_context().run(self.call_exception_handler, {
            "message": "Exception in an io_uring completion callback",
            "exception": exc,
        })

    def _make_socket_transport(self, sock, protocol, waiter=None, *,
                               extra=None, server=None):
        # asyncio's transport fails so as it schedules connection_made;
        # ours would first meet the closed ring.
        self._check_closed()
        if overrides(sock, STREAM):
            return super()._make_socket_transport(sock, protocol, waiter,
                                                  extra=extra, server=server)
        self._ensure_fd_no_transport(sock)
        return RingStreamTransport(self, sock, protocol, waiter, extra, server)

    def _make_ssl_transport(self, rawsock, protocol, sslcontext, waiter=None, *,
                            server_side=False, server_hostname=None, extra=None,
                            server=None,
                            ssl_handshake_timeout=constants.SSL_HANDSHAKE_TIMEOUT,
                            ssl_shutdown_timeout=constants.SSL_SHUTDOWN_TIMEOUT):
        # asyncio's own version (same on 3.11 to 3.13) builds its selector
        # transport directly rather than through _make_socket_transport:
        # TLS would bypass the ring.
        self._check_closed()
        if overrides(rawsock, STREAM):
            return super()._make_ssl_transport(
                rawsock, protocol, sslcontext, waiter, server_side=server_side,
                server_hostname=server_hostname, extra=extra, server=server,
                ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
        self._ensure_fd_no_transport(rawsock)
        ssl_protocol = sslproto.SSLProtocol(
            self, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout)
        RingStreamTransport(self, rawsock, ssl_protocol, extra=extra, server=server)
        return ssl_protocol._app_transport

    def _make_datagram_transport(self, sock, protocol, address=None,
                                 waiter=None, extra=None):
        if overrides(sock, DATAGRAM):
            return super()._make_datagram_transport(sock, protocol, address, waiter, extra)
        return RingDatagramTransport(self, sock, protocol, address, waiter, extra)

    def _make_read_pipe_transport(self, pipe, protocol, waiter=None, extra=None):
        return RingReadPipeTransport(self, pipe, protocol, waiter, extra)

    def ring_stats(self):
        """Counters since the loop was made and the ring's configuration, as
        a dict (see ``_stats``); after close(), those of the loop's life."""
        if self._final_stats is not None:
            return self._final_stats
        return _stats.ring_stats(self)

    def close(self):
        if self.is_running():
            raise RuntimeError("Cannot close a running event loop")
        if self.is_closed():
            return
        super().close()
        self._c_ring_turn = None
        self._final_stats = _stats.ring_stats(self)
        _stats.closed(self)
        self._ring.close()
        # The ring's one reference back to the loop: without it a closed
        # loop is freed with its last reference, not by the cycle collector
        # (asyncio's close drops the selector, whose hook is the other one).
        self._ring.on_callback_error = None

