"""The loop turn: asyncio's ``_run_once`` in C (``_speedups``) or in Python.

What it owns: the choice between the two, and the Python pieces the C turn
calls back into.  ``TurnMixin._run_once`` runs ``_speedups.run_once`` (the
timer-heap cleanup, the timeout, ``select`` + ``_process_events``, due
timers to the ready queue, the ready handles run; see csrc/speedups.c)
outside debug mode, and asyncio's own ``_run_once`` in debug mode (slow-
callback warnings, ``_current_handle``), with ``URINGLOOP_PURE_PYTHON=1``,
when the extension cannot be loaded, and when ``asyncio.Handle._run`` has
been replaced (instrumentation that patches it keeps seeing every callback).
``_accel`` says which is available.  With the accelerator the loop class
derives from ``_speedups.turn_class(TurnMixin, ...)`` (through
``_accel.subclass_in_c``), a C subclass whose ``_run_once`` makes the plain turn's choice (and ``_speedups.run_once``)
without a Python frame and hands every other turn to ``TurnMixin``'s.

The Python implementation stays the reference: the test suite runs against
both (tests/run.sh), and ``python -m uringloop info`` says which is active.
"""
import sys
from asyncio import base_events, events, format_helpers, selector_events

from . import _accel, _extension, _scheduling


def report_callback_error(handle, exc):
    """Handle._run's except branch for ``exc``, which the callback of
    ``handle`` raised (neither SystemExit nor KeyboardInterrupt); the C turn
    calls it while ``exc`` is the exception being handled."""
    if _FORMAT_TAKES_DEBUG:
        cb = format_helpers._format_callback_source(
            handle._callback, handle._args, debug=handle._loop.get_debug())
    else:
        cb = format_helpers._format_callback_source(handle._callback, handle._args)
    context = {
        "message": f"Exception in callback {cb}",
        "exception": exc,
        "handle": handle,
    }
    if handle._source_traceback:
        context["source_traceback"] = handle._source_traceback
    handle._loop.call_exception_handler(context)


def run_debug(loop, handle):
    """asyncio's debug branch of _run_once for one handle: the C turn hands
    over the rest of its handles when a callback switched debug mode on."""
    try:
        loop._current_handle = handle
        t0 = loop.time()
        handle._run()
        dt = loop.time() - t0
        if dt >= loop.slow_callback_duration:
            base_events.logger.warning("Executing %s took %.3f seconds",
                                       base_events._format_handle(handle), dt)
    finally:
        loop._current_handle = None


# 3.13 added the debug argument (events.Handle._run passes it).
_FORMAT_TAKES_DEBUG = sys.version_info >= (3, 13)
_HANDLE_RUN = events.Handle._run


def configure(speedups):
    """Hand the extension the Python pieces its turn calls back into."""
    speedups.configure(
        report_error=report_callback_error, debug_run=run_debug,
        handle_types=(events.Handle, events.TimerHandle,
                      _scheduling.Handle, _scheduling.TimerHandle),
        max_timeout=float(base_events.MAXIMUM_SELECT_TIMEOUT),
        process_events=selector_events.BaseSelectorEventLoop._process_events,
        ring_turn=_address_of("ul_ring_turn"), sendq_write=_address_of("ul_sendq_write"),
        lean_handle=_scheduling.Handle)


def _address_of(name):
    # The C turn calls ul_ring_turn directly (no cffi argument conversion;
    # the ring's own state comes from Ring.c_turn_state), and stream
    # transports' write() ul_sendq_write (_speedups.sendq_write).
    if _extension.error is not None:
        return None
    from ._uring import ffi, lib
    return int(ffi.cast("uintptr_t", ffi.addressof(lib, name)))


if _accel.speedups is not None:
    configure(_accel.speedups)


class TurnMixin:
    """For a subclass of ``asyncio.BaseEventLoop`` and of
    ``_sockops.RingSocketOpsMixin``: the reference ``_run_once``, which
    the C subclass (``_speedups.turn_class``) runs for every turn but its
    plain one."""

    def _run_once(self):
        # The sock_* mixin's check for sockets closed under their ops, on
        # both paths; called only while ops are in flight (a _run_once of
        # its own, chained through super(), cost every turn ~800
        # instructions).
        if self._sock_ops:
            self._check_sock_ops()
        speedups = _accel.speedups
        if self._debug or speedups is None or events.Handle._run is not _HANDLE_RUN:
            return super()._run_once()
        speedups.run_once(self)

