"""The lean scheduling path (uringloop/_scheduling.py) behaves as asyncio's:
each test runs on uringloop and on asyncio's own loop (the ``loop``
fixture), so both must give the same answers."""
import asyncio
import contextvars

import pytest

from .conftest import run

request_id = contextvars.ContextVar("request_id", default=None)


def test_handles_are_asyncio_handles(loop):
    soon = loop.call_soon(lambda: None)
    later = loop.call_later(10, lambda: None)
    at = loop.call_at(loop.time() + 10, lambda: None)
    assert type(soon).__name__ == "Handle" and isinstance(soon, asyncio.Handle)
    assert isinstance(later, asyncio.TimerHandle) and isinstance(at, asyncio.TimerHandle)
    assert repr(later).startswith("<TimerHandle when=")
    assert later.when() > loop.time() + 9
    for handle in (soon, later, at):
        handle.cancel()
        assert handle.cancelled()
    assert "cancelled" in repr(later)


def test_a_handle_shows_and_frees_what_it_holds_as_asyncio_does(loop):
    # uringloop's call_soon handle keeps its slots in fields of a C class
    # (with the accelerator): asyncio's Handle methods must see them, and
    # the collector must follow them.
    import gc
    import weakref

    class Callback:
        def __call__(self, *args):
            pass

        def __repr__(self):
            return "<the callback>"

    callback = Callback()
    handle = loop.call_soon(callback, 1, 2)
    assert handle._callback is callback and handle._args == (1, 2)
    assert isinstance(handle._context, contextvars.Context) and not handle.cancelled()
    assert "<the callback>" in repr(handle)
    callback.handle = handle   # a cycle through the handle's _callback
    handle.cancel()            # drops _callback and _args, as asyncio's does
    assert handle._callback is None and handle._args is None and handle.cancelled()
    handle._callback = callback   # put the cycle back
    alive = weakref.ref(callback)
    loop._ready.clear()
    del callback, handle
    gc.collect()
    assert alive() is None


def test_callbacks_run_in_order_with_their_context(loop):
    seen = []
    context = contextvars.copy_context()
    context.run(request_id.set, "ctx")
    request_id.set("outer")
    loop.call_soon(lambda: seen.append(("soon", request_id.get())))
    loop.call_soon(lambda: seen.append(("given", request_id.get())), context=context)
    loop.call_later(0.01, lambda: seen.append(("later", request_id.get())))
    loop.call_at(loop.time() + 0.02, lambda *args: seen.append(args), "at", 1)
    run(loop, asyncio.sleep(0.05))
    assert seen == [("soon", "outer"), ("given", "ctx"), ("later", "outer"), ("at", 1)]


def test_cancelled_timers_never_run_and_are_counted(loop):
    ran = []
    timers = [loop.call_later(0.01, ran.append, i) for i in range(200)]
    for timer in timers[:150]:
        timer.cancel()
        timer.cancel()                  # twice counts once
    assert loop._timer_cancelled_count == 150
    run(loop, asyncio.sleep(0.05))
    assert ran == list(range(150, 200))
    assert not loop._scheduled


def test_bad_arguments_raise_as_in_asyncio(loop):
    with pytest.raises(TypeError):
        loop.call_later(None, lambda: None)
    with pytest.raises(TypeError):
        loop.call_at(None, lambda: None)
    with pytest.raises(TypeError):
        loop.call_later("soon", lambda: None)


def test_call_soon_takes_arguments_as_asyncio_does(loop):
    # Positional arguments, the context keyword (None: the current
    # context), the callback by keyword, and asyncio's TypeErrors.
    seen = []
    context = contextvars.copy_context()
    context.run(request_id.set, "given")
    request_id.set("current")
    loop.call_soon(lambda *args: seen.append(args), 1, "two", None)
    loop.call_soon(lambda: seen.append(request_id.get()), context=None)
    loop.call_soon(lambda value: seen.append((value, request_id.get())), 3, context=context)
    loop.call_soon(callback=lambda: seen.append("by keyword"))
    run(loop, asyncio.sleep(0))
    assert seen == [(1, "two", None), "current", (3, "given"), "by keyword"]
    with pytest.raises(TypeError, match="missing 1 required positional argument: 'callback'"):
        loop.call_soon()
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'delay'"):
        loop.call_soon(print, delay=1)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'delay'"):
        loop.call_soon(print, context=None, delay=1)
    with pytest.raises(TypeError, match="multiple values for argument 'callback'"):
        loop.call_soon(print, callback=print)
    import inspect
    assert str(inspect.signature(loop.call_soon)) == "(callback, *args, context=None)"


def test_closed_loop_refuses_everything(loop):
    loop.close()
    coro = asyncio.sleep(0)
    for schedule in (lambda: loop.call_soon(print), lambda: loop.call_later(1, print),
                     lambda: loop.call_at(1, print), lambda: loop.create_task(coro)):
        with pytest.raises(RuntimeError, match="closed"):
            schedule()
    coro.close()


def test_debug_mode_keeps_asyncio_checks_and_tracebacks(loop):
    loop.set_debug(True)
    handle = loop.call_soon(lambda: None)
    timer = loop.call_later(10, lambda: None)
    assert handle._source_traceback and timer._source_traceback
    with pytest.raises(TypeError, match="coroutines cannot be used"):
        loop.call_soon(asyncio.sleep)
    timer.cancel()
    assert timer.cancelled()
    handle.cancel()
    loop.set_debug(False)
    run(loop, asyncio.sleep(0))


def test_timer_made_before_debug_mode_cancels_in_it(loop):
    timer = loop.call_later(10, lambda: None)
    loop.set_debug(True)
    timer.cancel()
    assert timer.cancelled() and timer._repr is not None   # asyncio records it
    loop.set_debug(False)


def test_create_task_names_contexts_and_factories(loop):
    async def value():
        return request_id.get()

    context = contextvars.copy_context()
    context.run(request_id.set, "task ctx")
    task = loop.create_task(value(), name="worker", context=context)
    assert task.get_name() == "worker"
    assert run(loop, task) == "task ctx"

    made = []

    def factory(loop, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, **kwargs)

    loop.set_task_factory(factory)
    task = loop.create_task(value(), name="made")
    assert made and task.get_name() == "made"
    run(loop, task)
