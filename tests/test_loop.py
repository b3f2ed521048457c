"""The loop as asyncio users meet it: entry points, scheduling, thread-safe
wake-ups, executors, DNS, debug mode, close and fork.  Behaviour that
asyncio defines is checked on both uringloop and asyncio's own loop, so a
difference shows up as a failure on one side only."""
import asyncio
import os
import sys
import threading

import pytest

import uringloop


@pytest.fixture
def restore_policy():
    yield
    asyncio.set_event_loop_policy(None)


async def _running_backend():
    await asyncio.sleep(0)
    return asyncio.get_running_loop().backend


# -- entry points ------------------------------------------------------

def test_new_event_loop_is_a_uring_loop():
    loop = uringloop.new_event_loop()
    try:
        assert isinstance(loop, uringloop.Loop)
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert loop.backend == "io_uring"
    finally:
        loop.close()


def test_run():
    assert uringloop.run(_running_backend()) == "io_uring"


def test_run_debug_flag():
    async def debug():
        return asyncio.get_running_loop().get_debug()
    assert uringloop.run(debug(), debug=True) is True


def test_runner_with_loop_factory():
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
        assert runner.run(_running_backend()) == "io_uring"
        assert runner.get_loop().backend == "io_uring"
        assert runner.run(_running_backend()) == "io_uring"   # reusable
        loop = runner.get_loop()
    assert loop.is_closed()


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="asyncio.run(loop_factory=...) is new in Python 3.12")
def test_asyncio_run_with_loop_factory():
    assert asyncio.run(_running_backend(),
                       loop_factory=uringloop.new_event_loop) == "io_uring"


def test_install(restore_policy):
    uringloop.install()
    assert isinstance(asyncio.get_event_loop_policy(), uringloop.EventLoopPolicy)
    assert asyncio.run(_running_backend()) == "io_uring"
    loop = asyncio.new_event_loop()
    try:
        assert loop.backend == "io_uring"
    finally:
        loop.close()


def test_event_loop_policy(restore_policy):
    asyncio.set_event_loop_policy(uringloop.EventLoopPolicy())
    assert asyncio.run(_running_backend()) == "io_uring"


# -- scheduling --------------------------------------------------------

def test_call_soon_call_later_call_at_order(loop):
    order = []

    async def main():
        t0 = loop.time()
        loop.call_later(0.02, order.append, "later 20ms")
        loop.call_at(t0 + 0.01, order.append, "at 10ms")
        loop.call_soon(order.append, "soon 1")
        loop.call_soon(order.append, "soon 2")
        loop.call_later(0, order.append, "later 0")
        await asyncio.sleep(0.03)
        order.append("done")

    loop.run_until_complete(main())
    assert order == ["soon 1", "soon 2", "later 0", "at 10ms", "later 20ms", "done"]


def test_timer_never_fires_early(loop):
    async def main():
        start = loop.time()
        await asyncio.sleep(0.05)
        return loop.time() - start
    # asyncio allows firing up to one clock resolution early.
    assert loop.run_until_complete(main()) >= 0.05 - loop._clock_resolution


def test_cancelled_timer_does_not_run(loop):
    fired = []

    async def main():
        handle = loop.call_later(0.01, fired.append, 1)
        handle.cancel()
        await asyncio.sleep(0.03)

    loop.run_until_complete(main())
    assert fired == []


def test_call_soon_threadsafe_wakes_a_blocked_loop(loop):
    # No timer is pending, so the loop sleeps in select until the other
    # thread's wake-up arrives; a broken wake-up hangs until wait_for.
    async def main():
        fut = loop.create_future()
        started = threading.Event()

        def other_thread():
            started.wait()
            threading.Event().wait(0.05)      # let the loop block first
            loop.call_soon_threadsafe(fut.set_result, threading.get_ident())

        thread = threading.Thread(target=other_thread)
        thread.start()
        loop.call_soon(started.set)
        try:
            return await asyncio.wait_for(fut, 10), thread.ident
        finally:
            thread.join()

    result, ident = loop.run_until_complete(main())
    assert result == ident


def test_many_threadsafe_calls(loop):
    count = 200

    async def main():
        done = loop.create_future()
        seen = []

        def add(i):
            seen.append(i)
            if len(seen) == count:
                done.set_result(None)

        threads = [threading.Thread(
            target=lambda k=k: [loop.call_soon_threadsafe(add, k * 50 + i) for i in range(50)])
            for k in range(count // 50)]
        for t in threads:
            t.start()
        await asyncio.wait_for(done, 10)
        for t in threads:
            t.join()
        return sorted(seen)

    assert loop.run_until_complete(main()) == list(range(count))


def test_run_in_executor(loop):
    async def main():
        return await loop.run_in_executor(None, threading.get_ident)
    assert loop.run_until_complete(main()) != threading.get_ident()


def test_getaddrinfo(loop):
    import socket

    async def main():
        return await loop.getaddrinfo("localhost", 80, family=socket.AF_INET,
                                      type=socket.SOCK_STREAM)
    infos = loop.run_until_complete(main())
    assert ("127.0.0.1", 80) in [info[4] for info in infos]


def test_getnameinfo(loop):
    async def main():
        return await loop.getnameinfo(("127.0.0.1", 80))
    host, port = loop.run_until_complete(main())
    assert host and port


def test_run_forever_and_stop(loop):
    loop.call_later(0.01, loop.stop)
    loop.run_forever()
    assert not loop.is_running()


def test_exception_in_callback_goes_to_handler(loop):
    caught = []
    loop.set_exception_handler(lambda lp, ctx: caught.append(ctx["exception"]))

    def boom():
        raise ZeroDivisionError

    async def main():
        loop.call_soon(boom)
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    loop.run_until_complete(main())
    assert [type(e) for e in caught] == [ZeroDivisionError]


# -- debug mode --------------------------------------------------------

def test_debug_mode_checks_the_thread(loop):
    loop.set_debug(True)
    assert loop.get_debug()
    errors = []

    async def main():
        def from_other_thread():
            try:
                loop.call_soon(lambda: None)
            except RuntimeError as exc:
                errors.append(str(exc))
        thread = threading.Thread(target=from_other_thread)
        thread.start()
        thread.join()

    loop.run_until_complete(main())
    assert len(errors) == 1 and "thread" in errors[0]


def test_debug_mode_reports_slow_callbacks(loop, caplog):
    import time
    loop.set_debug(True)
    loop.slow_callback_duration = 0.001

    async def main():
        loop.call_soon(time.sleep, 0.01)
        await asyncio.sleep(0.02)

    with caplog.at_level("WARNING", logger="asyncio"):
        loop.run_until_complete(main())
    assert any("took" in rec.getMessage() for rec in caplog.records)


# -- close -------------------------------------------------------------

def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_close_releases_every_fd():
    for _ in range(3):        # warm up lazily opened fds (logging, etc.)
        uringloop.new_event_loop().close()
    before = _open_fds()
    for _ in range(50):
        loop = uringloop.new_event_loop()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    assert _open_fds() == before


def test_closed_loop_raises(loop):
    loop.close()
    coro = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_until_complete(coro)
    coro.close()
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_soon(lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        loop.call_later(1, lambda: None)
    with pytest.raises(RuntimeError, match="closed"):
        loop.run_forever()
    loop.close()              # a second close is a no-op
    assert loop.is_closed()


def test_close_running_loop_raises(loop):
    async def main():
        with pytest.raises(RuntimeError, match="running"):
            loop.close()
    loop.run_until_complete(main())
    assert not loop.is_closed()


def test_close_with_pending_timers_and_readers(uloop):
    r, w = os.pipe()
    try:
        uloop.add_reader(r, lambda: None)
        uloop.call_later(60, lambda: None)
        uloop.run_until_complete(asyncio.sleep(0))
        uloop.close()
        assert uloop.is_closed()
    finally:
        os.close(r)
        os.close(w)


# -- fork --------------------------------------------------------------

def test_forked_child_cannot_run_the_parents_loop(uloop):
    uloop.run_until_complete(asyncio.sleep(0))
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            coro = asyncio.sleep(0)
            try:
                uloop.run_until_complete(coro)
            except RuntimeError as exc:
                coro.close()
                if "fork" in str(exc):
                    # A fresh loop in the child works.
                    code = 0 if uringloop.run(_running_backend()) == "io_uring" else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert uloop.run_until_complete(_running_backend()) == "io_uring"
