"""Signals and loop shutdown.

uringloop inherits ``add_signal_handler``/``remove_signal_handler`` from
asyncio's Unix loop: the C-level handler writes the signal number to the
loop's self-pipe (``signal.set_wakeup_fd``), whose read end has a poll
armed on the ring, so a signal wakes a loop blocked in ``io_uring_enter``
and its handler runs from the ready queue.  Each behaviour is checked on
both uringloop and asyncio's own loop, so a difference fails on one side.

Also here: what ``asyncio.Runner``/``uringloop.run`` do on shutdown --
Ctrl-C, ``shutdown_asyncgens``, ``shutdown_default_executor`` -- and that
closing a loop restores the signal dispositions it changed.
"""
import asyncio
import os
import signal
import socket
import threading
import time

import pytest

import uringloop
from uringloop import _accel

RUNNERS = {"uringloop": uringloop.new_event_loop, "asyncio": asyncio.SelectorEventLoop}


@pytest.fixture(params=list(RUNNERS))
def loop_factory(request):
    return RUNNERS[request.param]


@pytest.fixture(autouse=True)
def restore_dispositions():
    saved = {sig: signal.getsignal(sig)
             for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT,
                         signal.SIGHUP, signal.SIGCHLD)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    signal.set_wakeup_fd(-1)


def test_handler_runs_with_args_from_the_ready_queue(loop):
    got = []
    loop.add_signal_handler(signal.SIGUSR1, got.append, "usr1")

    async def main():
        os.kill(os.getpid(), signal.SIGUSR1)
        assert got == []             # never called from the C signal handler
        while not got:
            await asyncio.sleep(0)

    loop.run_until_complete(asyncio.wait_for(main(), 5))
    assert got == ["usr1"]


def test_signal_wakes_a_blocked_loop(loop):
    # Nothing else is pending: the loop sleeps in the kernel with no timeout
    # until the self-pipe becomes readable.
    loop.add_signal_handler(signal.SIGUSR1, loop.stop)
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    started = time.monotonic()
    loop.run_forever()
    timer.join()
    assert time.monotonic() - started < 5


def test_storm_every_signal_handled(loop):
    # 5000 SIGUSR1 raised in bursts of 50 per loop iteration.  Each kill()
    # aimed at ourselves is delivered before it returns, so no two coalesce
    # in the kernel, and a burst fits the self-pipe's socket buffer (a full
    # one drops the wakeup bytes silently, in asyncio as here).
    total, burst = 5000, 50
    handled = 0
    done = loop.create_future()

    def on_signal():
        nonlocal handled
        handled += 1
        if handled == total:
            done.set_result(None)

    def fire(sent):
        for _ in range(burst):
            os.kill(os.getpid(), signal.SIGUSR1)
        if sent + burst < total:
            loop.call_soon(fire, sent + burst)

    loop.add_signal_handler(signal.SIGUSR1, on_signal)
    loop.call_soon(fire, 0)
    loop.run_until_complete(asyncio.wait_for(done, 30))
    assert handled == total


class Interrupt(BaseException):
    """What pytest-timeout's SIGALRM handler or Ctrl-C's raises."""


@pytest.mark.parametrize("pure_python", [False, True], ids=["accelerated", "pure"])
def test_a_raising_signal_handler_loses_no_completion(loop, pure_python, monkeypatch):
    # A Python signal handler that raises, for a signal that arrives while
    # the loop waits, with data right behind it.  asyncio raises it out of
    # select(), before any callback: the program catches it, runs the loop
    # again, and every sock_recv and stream read still gets its data.
    # uringloop raised it inside the callback of what it had reaped with
    # the signal (reported, or propagated with that completion dropped):
    # the read then waited forever.
    if pure_python:
        monkeypatch.setattr(_accel, "speedups", None)
    rounds = 10

    def interrupt(signum, frame):
        raise Interrupt()

    signal.signal(signal.SIGUSR1, interrupt)
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    a.setblocking(False)

    def signal_then_send(sock, data):
        time.sleep(0.02)   # the loop is waiting by then
        os.kill(os.getpid(), signal.SIGUSR1)
        sock.send(data)

    async def main():
        reader, writer = await asyncio.open_connection(sock=c)
        for i in range(rounds):
            message = b"%d." % i
            for sender, receive in ((b, loop.sock_recv(a, 100)),
                                    (d, reader.readexactly(len(message)))):
                thread = threading.Thread(target=signal_then_send, args=(sender, message))
                thread.start()
                # A lost completion fails here instead of hanging the test.
                assert await asyncio.wait_for(receive, 10) == message
                thread.join()
        writer.close()
        await writer.wait_closed()

    task = loop.create_task(main())
    interrupts = 0
    try:
        while True:
            try:
                loop.run_until_complete(task)
                break
            except Interrupt:
                interrupts += 1
                assert not task.done(), task   # no task died of it
    finally:
        for sock in (a, b, d):
            sock.close()
    # Each signal's exception came out of the loop, none went to a callback.
    assert interrupts == 2 * rounds


def test_replace_and_remove(loop):
    calls = []
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "old")
    loop.add_signal_handler(signal.SIGUSR1, calls.append, "new")
    os.kill(os.getpid(), signal.SIGUSR1)
    loop.run_until_complete(asyncio.sleep(0.05))
    assert calls == ["new"]
    assert loop.remove_signal_handler(signal.SIGUSR1) is True
    assert loop.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_remove_sigint_restores_keyboard_interrupt(loop):
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    assert loop.remove_signal_handler(signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.parametrize("sig, exc", [
    ("1", TypeError), (1.0, TypeError), (None, TypeError),
    (0, ValueError), (-1, ValueError), (signal.NSIG + 1, ValueError),
    (signal.SIGKILL, RuntimeError), (signal.SIGSTOP, RuntimeError),
])
def test_bad_signals(loop, sig, exc):
    with pytest.raises(exc):
        loop.add_signal_handler(sig, lambda: None)
    if exc is not RuntimeError:
        with pytest.raises(exc):
            loop.remove_signal_handler(sig)
    assert not loop._signal_handlers


def test_uncatchable_signals_leave_no_wakeup_fd(loop):
    with pytest.raises(RuntimeError, match="cannot be caught"):
        loop.add_signal_handler(signal.SIGKILL, lambda: None)
    assert signal.set_wakeup_fd(-1) == -1


def test_coroutines_refused(loop):
    async def coro_func():
        pass

    coro = coro_func()
    try:
        for handler in (coro_func, coro):
            with pytest.raises(TypeError, match="coroutines cannot be used"):
                loop.add_signal_handler(signal.SIGUSR1, handler)
    finally:
        coro.close()


def test_off_the_main_thread_raises_runtime_error(loop_factory):
    outcome = []

    def in_thread():
        loop = loop_factory()
        try:
            loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        except BaseException as exc:
            outcome.append(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert len(outcome) == 1 and isinstance(outcome[0], RuntimeError)
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL


def test_closed_loop_refuses_handlers(loop):
    loop.close()
    with pytest.raises(RuntimeError):
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)


def test_close_restores_dispositions_and_wakeup_fd(loop):
    loop.add_signal_handler(signal.SIGUSR1, lambda: None)
    loop.add_signal_handler(signal.SIGINT, lambda: None)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)
    assert signal.set_wakeup_fd(-1) != -1   # ours, put back just below
    signal.set_wakeup_fd(loop._csock.fileno())
    loop.close()
    assert loop._signal_handlers == {}
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGHUP) == signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.set_wakeup_fd(-1) == -1


# -- Runner / uringloop.run shutdown -------------------------------------

def _run(loop_factory, coro):
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(coro)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="Runner handles SIGINT only on the main thread")
@pytest.mark.parametrize("entry", ["uringloop.run", "uringloop Runner", "asyncio Runner"])
def test_ctrl_c_cancels_main_and_raises_keyboard_interrupt(entry):
    seen = []

    async def main():
        threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGINT)).start()
        try:
            await asyncio.Event().wait()    # blocks in the kernel, no timer
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    with pytest.raises(KeyboardInterrupt):
        if entry == "uringloop.run":
            uringloop.run(main())
        else:
            _run(RUNNERS[entry.split()[0]], main())
    assert seen == ["cancelled"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_shutdown_asyncgens(loop_factory):
    finalized = []

    async def agen():
        try:
            yield 1
            yield 2
        finally:
            await asyncio.sleep(0)          # the loop still runs finalizers
            finalized.append(True)

    async def main():
        gen = agen()
        assert await gen.__anext__() == 1
        main.gen = gen                     # kept alive until shutdown

    _run(loop_factory, main())
    assert finalized == [True]


def test_shutdown_asyncgens_reports_errors(loop):
    errors = []
    loop.set_exception_handler(lambda loop, ctx: errors.append(ctx))

    async def agen():
        try:
            yield 1
        finally:
            raise ZeroDivisionError

    async def main():
        gen = agen()
        await gen.__anext__()
        return gen

    gen = loop.run_until_complete(main())
    loop.run_until_complete(loop.shutdown_asyncgens())
    assert len(errors) == 1
    assert isinstance(errors[0]["exception"], ZeroDivisionError)
    del gen


def test_shutdown_default_executor_joins_its_threads(loop):
    started = threading.Event()
    release = threading.Event()

    def work():
        started.set()
        release.wait(5)
        return threading.current_thread()

    async def main():
        fut = loop.run_in_executor(None, work)
        await loop.run_in_executor(None, started.wait, 5)
        threading.Timer(0.1, release.set).start()
        thread = await fut
        await loop.shutdown_default_executor()
        return thread

    thread = loop.run_until_complete(main())
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        loop.run_until_complete(loop.run_in_executor(None, int))


def test_runner_shuts_everything_down_then_restores_signals(loop_factory):
    order = []

    async def agen():
        try:
            yield
        finally:
            order.append("asyncgen")

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, lambda: None)
        gen = agen()
        await gen.__anext__()
        main.gen = gen
        await loop.run_in_executor(None, order.append, "executor used")

    _run(loop_factory, main())
    assert order == ["executor used", "asyncgen"]
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL
    assert signal.set_wakeup_fd(-1) == -1
