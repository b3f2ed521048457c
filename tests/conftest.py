"""Fixtures the test modules share.

``loop`` runs a test twice, on uringloop and on asyncio's own selector
loop, so that its assertions pin down asyncio's semantics; ``uloop`` is a
uringloop loop alone.  They are the only loop fixtures, and both are
strict: the loop's exception handler records every call in
``loop.handler_calls`` and a test that leaves one behind fails (a test
that expects a call asserts it and clears the list), as does a uringloop
loop that fell back to the selector, or whose ring, once closed, had to
be parked in ``_ring._leaked_rings`` because the kernel kept buffers.
"""
import asyncio

import pytest

import uringloop
from uringloop import _ring


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
    loop.leaked_rings_before = len(_ring._leaked_rings)
    return loop


def finish_strict_loop(loop):
    try:
        if not loop.is_closed():
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
    assert loop.handler_calls == [], loop.handler_calls
    if loop.is_uring:
        # Every operation in flight was drained by close, none left behind
        # with buffers the kernel may still write.
        assert loop._ring.closed and not loop._ring._ops, loop._ring._ops
        leaked = _ring._leaked_rings[loop.leaked_rings_before:]
        assert not leaked, f"rings parked as leaked: {leaked}"


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


def tls_contexts(directory):
    """A server context with a self-signed certificate made in ``directory``
    and a client context that accepts it."""
    import ssl

    from bench.soak import make_cert

    certfile, _ = make_cert(str(directory))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return server, client
