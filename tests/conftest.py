"""Fixtures the test modules share.

``loop`` runs a test twice, on uringloop and on asyncio's own selector
loop, so that its assertions pin down asyncio's semantics; ``uloop`` is a
uringloop loop alone.  Both are strict: the loop's exception handler
records every call in ``loop.handler_calls`` and a test that leaves one
behind fails, as does a uringloop loop that fell back to the selector.
"""
import asyncio

import pytest

import uringloop


def new_uring_loop():
    loop = uringloop.new_event_loop()
    assert loop.backend == "io_uring"
    return loop


LOOP_KINDS = {"uringloop": new_uring_loop, "asyncio": asyncio.SelectorEventLoop}


def new_strict_loop(kind):
    loop = LOOP_KINDS[kind]()
    calls = []
    loop.set_exception_handler(lambda _loop, context: calls.append(context))
    loop.handler_calls = calls
    loop.is_uring = kind == "uringloop"
    return loop


def finish_strict_loop(loop):
    try:
        if not loop.is_closed():
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert loop.handler_calls == [], loop.handler_calls


@pytest.fixture(params=list(LOOP_KINDS))
def loop(request):
    loop = new_strict_loop(request.param)
    yield loop
    finish_strict_loop(loop)


@pytest.fixture
def uloop():
    loop = new_strict_loop("uringloop")
    yield loop
    finish_strict_loop(loop)


def run(loop, coro, timeout=20):
    return loop.run_until_complete(asyncio.wait_for(coro, timeout))
