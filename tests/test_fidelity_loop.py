"""The loop itself behaves as asyncio's: a failing accept, the life of a
closed loop, debug-mode source tracebacks and ``uringloop.run()`` from a
running loop.  Tests that state asyncio's behaviour run on both loops.
"""
import asyncio
import errno
import gc
import socket
import sys
import warnings
import weakref

import pytest

import uringloop

from .conftest import LOOP_KINDS, finish_strict_loop, new_strict_loop, run


# -- a failing accept ----------------------------------------------------
async def shut_down_listener(loop):
    """A server whose listening socket is shut down under it: every accept
    on it fails with EINVAL from then on."""
    server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    listener = server.sockets[0]
    socket.socket.shutdown(getattr(listener, "_sock", listener), socket.SHUT_RDWR)
    return server


def test_failing_accept_reaches_the_exception_handler(loop):
    async def main():
        server = await shut_down_listener(loop)
        while not loop.handler_calls:
            await asyncio.sleep(0.001)
        server.close()
        await server.wait_closed()
        context = loop.handler_calls[0]
        assert isinstance(context["exception"], OSError)
        assert context["exception"].errno == errno.EINVAL
        loop.handler_calls.clear()
    run(loop, main())


def test_failing_accept_backs_off_instead_of_spinning(uloop):
    turns = 0
    run_turn = uloop._ring.run_turn

    def counting_turn(*args, **kwargs):
        nonlocal turns
        turns += 1
        return run_turn(*args, **kwargs)

    async def main():
        nonlocal turns
        server = await shut_down_listener(uloop)
        uloop._ring.run_turn = counting_turn
        turns = 0
        # Well under ACCEPT_RETRY_DELAY: a loop that re-arms at once would
        # go round hundreds of times, each one reporting nothing.
        await asyncio.sleep(0.1)
        assert turns < 10
        assert [c["message"] for c in uloop.handler_calls] == ["socket.accept() failed"]
        uloop.handler_calls.clear()
        server.close()
        await server.wait_closed()
    try:
        run(uloop, main())
    finally:
        del uloop._ring.run_turn


# -- a closed loop is freed with its last reference ----------------------
async def some_of_everything(loop):
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    writer.write(b"x")
    await reader.read()
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    transport.sendto(b"x", transport.get_extra_info("sockname"))
    transport.close()
    loop.call_later(3600, print)
    await asyncio.sleep(0.01)


@pytest.mark.parametrize("kind", list(LOOP_KINDS))
def test_closed_loop_is_freed_without_the_cycle_collector(kind):
    loop = new_strict_loop(kind)
    run(loop, some_of_everything(loop))
    finish_strict_loop(loop)
    ref = weakref.ref(loop)
    gc.collect()
    gc.disable()
    try:
        del loop
        assert ref() is None
    finally:
        gc.enable()


# -- debug mode: source tracebacks end at the caller ---------------------
async def nothing():
    pass


def scheduled_in_debug(loop):
    """Schedule one of each kind; returns (what, object, the line that made it)."""
    line = sys._getframe().f_lineno
    return [
        ("call_soon", loop.call_soon(print), line + 2),
        ("call_later", loop.call_later(3600, print), line + 3),
        ("call_at", loop.call_at(loop.time() + 3600, print), line + 4),
        ("create_task", loop.create_task(nothing()), line + 5),
    ]


def check_source_tracebacks(loop):
    made = scheduled_in_debug(loop)
    for what, scheduled, line in made:
        last = scheduled._source_traceback[-1]
        assert (last.filename, last.lineno, last.name) == (
            __file__, line, "scheduled_in_debug"), what
    for _, scheduled, _ in made:
        scheduled.cancel()
    loop.run_until_complete(asyncio.sleep(0))


def test_debug_source_traceback_ends_at_the_callers_line(loop):
    loop.set_debug(True)
    check_source_tracebacks(loop)


@pytest.mark.parametrize("kind", list(LOOP_KINDS))
def test_pythonasynciodebug_source_traceback_ends_at_the_callers_line(kind, monkeypatch):
    monkeypatch.setenv("PYTHONASYNCIODEBUG", "1")
    loop = new_strict_loop(kind)
    try:
        assert loop.get_debug()
        check_source_tracebacks(loop)
    finally:
        finish_strict_loop(loop)


def test_task_factory_source_traceback_has_no_frame_of_the_loop(loop):
    loop.set_debug(True)
    loop.set_task_factory(lambda lp, coro, **kw: asyncio.Task(coro, loop=lp, **kw))
    task = loop.create_task(nothing())
    files = [frame.filename for frame in task._source_traceback]
    assert __file__ in files
    assert not [f for f in files if f.startswith(uringloop.__path__[0])]
    loop.run_until_complete(task)


# -- uringloop.run() from a running loop ---------------------------------
def test_run_from_a_running_loop_fails_as_asyncio_run(loop):
    async def main():
        coro = nothing()
        with pytest.raises(RuntimeError) as asyncio_error:
            asyncio.run(coro)
        coro.close()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(RuntimeError) as uring_error:
                uringloop.run(nothing())
            gc.collect()
        assert str(uring_error.value) == str(asyncio_error.value)
        assert not [w for w in caught if "never awaited" in str(w.message)]
    run(loop, main())
