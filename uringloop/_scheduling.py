"""Scheduling on the loop's hot path: ``call_soon``, ``call_at``,
``call_later`` and ``create_task`` without the layers asyncio's versions go
through, and handles that skip asyncio's debug bookkeeping.

Why: with the I/O in the ring, what is left per request in Python is mostly
asyncio's own scheduling -- every task wakeup is a ``call_soon``, every
keep-alive timeout a ``call_later`` and a ``cancel``.  asyncio's versions
check the loop through helper methods and build each handle through two
``__init__`` levels that ask ``loop.get_debug()``; uvloop does all of it in
Cython.  The lean versions here do the same work in one frame each.

Data flow is asyncio's, unchanged: handles go to ``self._ready`` and timers
to the ``self._scheduled`` heap, which asyncio's ``_run_once`` consumes.
With the accelerator, ``call_soon``'s lean path is in C
(``_speedups.scheduling_class``, the loop's base through
``_accel.subclass_in_c``; this module's stays the reference).  The lean path
is taken only outside debug mode and on an open loop (and,
for tasks, without a task factory); anything else goes to asyncio's own
method, so debug-mode checks, source tracebacks and error messages stay
exactly asyncio's (the extra frame of the method here is taken out of the
source traceback, which asyncio trims to end at the caller's line).  The private attributes used (``_ready``,
``_scheduled``, ``_timer_cancelled_count``, ``_debug``, ``_closed``,
``_task_factory``, the handles' slots) are the same in CPython 3.11-3.13.
"""
import heapq
from asyncio import events, tasks
from contextvars import copy_context

from . import _accel

# heapq's push with TimerHandle's order, in C when the accelerator is on.
_heappush = heapq.heappush if _accel.speedups is None else _accel.speedups.heap_push


class Handle(events.Handle):
    """asyncio's Handle, built in one step; only made outside debug mode."""
    __slots__ = ()

    def __init__(self, callback, args, loop, context):
        self._context = copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None


# The reference (named Handle, which asyncio's repr shows); with the
# accelerator ``Handle`` is its C subclass, whose slots are fields that the
# C call_soon and turn set and read directly.
HandleReference = Handle
Handle = _accel.subclass_in_c(HandleReference, "handle_class")

# Handle(callback, args, loop, context), built in C with the accelerator on
# (the same assignments, without the frame of __init__).
_new_handle = Handle if _accel.speedups is None else _accel.speedups.new_handle


class TimerHandle(events.TimerHandle):
    """asyncio's TimerHandle, built and cancelled in one step."""
    __slots__ = ()

    def __init__(self, when, callback, args, loop, context):
        # Handle.__init__'s assignments written out again: calling it would
        # cost the frame this class exists to save.
        self._context = copy_context() if context is None else context
        self._loop = loop
        self._callback = callback
        self._args = args
        self._cancelled = False
        self._repr = None
        self._source_traceback = None
        self._when = when
        self._scheduled = False

    def cancel(self):
        if self._cancelled:
            return
        loop = self._loop
        if loop._debug:
            super().cancel()  # records the repr for debugging, as asyncio does
            return
        if self._scheduled:
            loop._timer_cancelled_count += 1
        self._cancelled = True
        self._callback = None
        self._args = None


def _hide_own_frame(scheduled):
    """Take this module's frame out of a debug-mode source traceback (of a
    handle, timer or task), so that it ends where asyncio's does: at the
    line that scheduled it.  A task factory may return any object."""
    traceback = getattr(scheduled, "_source_traceback", None)
    if traceback:
        for index in range(len(traceback) - 1, -1, -1):
            if traceback[index].filename == _THIS_FILE:
                del traceback[index]
                return


class LeanSchedulingMixin:
    """For a subclass of ``asyncio.BaseEventLoop``."""

    def call_soon(self, callback, *args, context=None):
        if self._debug or self._closed:
            handle = super().call_soon(callback, *args, context=context)
            _hide_own_frame(handle)
            return handle
        handle = _new_handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_at(self, when, callback, *args, context=None):
        if self._debug or self._closed or when is None:
            timer = super().call_at(when, callback, *args, context=context)
            _hide_own_frame(timer)
            return timer
        timer = TimerHandle(when, callback, args, self, context)
        _heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def call_later(self, delay, callback, *args, context=None):
        if self._debug or self._closed or delay is None:
            timer = super().call_later(delay, callback, *args, context=context)
            _hide_own_frame(timer)
            return timer
        timer = TimerHandle(self.time() + delay, callback, args, self, context)
        _heappush(self._scheduled, timer)
        timer._scheduled = True
        return timer

    def create_task(self, coro, *, name=None, context=None):
        if self._debug or self._closed or self._task_factory is not None:
            task = super().create_task(coro, name=name, context=context)
            _hide_own_frame(task)
            return task
        return tasks.Task(coro, loop=self, name=name, context=context)


# A call with a wrong argument names the method as asyncio's TypeError does
# (it quotes the function's qualified name).
for _name in ("call_soon", "call_at", "call_later", "create_task"):
    getattr(LeanSchedulingMixin, _name).__qualname__ = f"BaseEventLoop.{_name}"

_THIS_FILE = _hide_own_frame.__code__.co_filename

