"""``loop.sock_*`` on the ring, checked against asyncio's own loop.

Every test that describes asyncio behaviour runs on both loops (the
``loop`` fixture), so a difference fails on the uringloop side only.  The
fixture also records every report sent to the loop's exception handler and
fails the test if any arrived: a late completion delivered to a cancelled
future, or a callback that crashed, shows up there.  The last test proves
with strace that the bytes really move through io_uring.
"""
import asyncio
import errno
import itertools
import os
import random
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile

import pytest

import uringloop
from uringloop import _ring

from .conftest import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_names = itertools.count()


def _ipv6_works():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not _ipv6_works(), reason="no IPv6 loopback here")





def is_uring(loop):
    return isinstance(loop, uringloop.Loop)


async def settle(loop):
    """Let cancellations reach the kernel and their completions come back,
    so a test can go on knowing no old operation is still armed."""
    for _ in range(200):
        await asyncio.sleep(0)
        if not is_uring(loop) or loop._ring.pending() <= loop.baseline:
            return
    raise AssertionError(f"{loop._ring.pending()} ring ops still pending")


async def mark_baseline(loop):
    await asyncio.sleep(0)
    if is_uring(loop):
        loop.baseline = loop._ring.pending()


def abstract_name():
    return f"\0uringloop-test-{os.getpid()}-{next(_names)}".encode()


def nonblocking(sock):
    sock.setblocking(False)
    return sock


# -- socket factories --------------------------------------------------

STREAM_KINDS = ["tcp4", pytest.param("tcp6", marks=needs_ipv6), "unix", "unix-abstract"]
DGRAM_KINDS = ["udp4", pytest.param("udp6", marks=needs_ipv6), "unixdgram",
               "unixdgram-abstract"]


def family_of(kind):
    if kind.endswith("4"):
        return socket.AF_INET
    if kind.endswith("6"):
        return socket.AF_INET6
    return socket.AF_UNIX


def bound_socket(kind, type_, tmp_path):
    family = family_of(kind)
    sock = nonblocking(socket.socket(family, type_))
    if family == socket.AF_INET:
        sock.bind(("127.0.0.1", 0))
    elif family == socket.AF_INET6:
        sock.bind(("::1", 0))
    elif kind.endswith("abstract"):
        sock.bind(abstract_name())
    else:
        sock.bind(str(tmp_path / f"s{next(_names)}"))
    return sock


async def stream_pair(loop, kind, tmp_path):
    listener = bound_socket(kind, socket.SOCK_STREAM, tmp_path)
    listener.listen()
    client = nonblocking(socket.socket(family_of(kind), socket.SOCK_STREAM))
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    await loop.sock_connect(client, listener.getsockname())
    conn, peer = await accepting
    return listener, client, conn, peer


# -- round trips -------------------------------------------------------

@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_stream_round_trip(loop, kind, tmp_path):
    async def main():
        listener, client, conn, peer = await stream_pair(loop, kind, tmp_path)
        with listener, client, conn:
            assert conn.gettimeout() == 0
            if family_of(kind) == socket.AF_UNIX:
                assert peer == ""             # an unbound unix client
            else:
                assert peer == client.getsockname()
            await loop.sock_sendall(client, b"ping")
            assert await loop.sock_recv(conn, 100) == b"ping"
            await loop.sock_sendall(conn, memoryview(b"xxpong!")[2:])
            buf = bytearray(10)
            n = await loop.sock_recv_into(client, buf)
            assert buf[:n] == b"pong!"
            await loop.sock_sendall(client, bytearray(b"abc"))
            view = memoryview(bytearray(8))
            assert await loop.sock_recv_into(conn, view[4:]) == 3
            assert bytes(view) == b"\0\0\0\0abc\0"
            await loop.sock_sendall(client, b"")
            client.shutdown(socket.SHUT_WR)
            assert await loop.sock_recv(conn, 100) == b""        # EOF
            assert await loop.sock_recv_into(conn, buf) == 0
    run(loop, main())


@pytest.mark.parametrize("kind", DGRAM_KINDS)
def test_datagram_round_trip(loop, kind, tmp_path):
    async def main():
        a = bound_socket(kind, socket.SOCK_DGRAM, tmp_path)
        b = bound_socket(kind, socket.SOCK_DGRAM, tmp_path)
        with a, b:
            b_addr, a_addr = b.getsockname(), a.getsockname()
            assert await loop.sock_sendto(a, b"one", b_addr) == 3
            assert await loop.sock_recvfrom(b, 100) == (b"one", a_addr)

            await loop.sock_sendto(a, memoryview(b"two"), b_addr)
            buf = bytearray(100)
            assert await loop.sock_recvfrom_into(b, buf) == (3, a_addr)
            assert buf[:3] == b"two"

            # Datagrams truncate to the buffer, they do not split.
            await loop.sock_sendto(a, b"0123456789", b_addr)
            assert await loop.sock_recvfrom_into(b, buf, 4) == (4, a_addr)
            await loop.sock_sendto(a, b"second", b_addr)
            assert await loop.sock_recvfrom(b, 3) == (b"sec", a_addr)

            await loop.sock_connect(a, b_addr)
            await loop.sock_sendall(a, b"connected")
            assert await loop.sock_recv(b, 100) == b"connected"
            await loop.sock_sendto(b, b"back", a_addr)
            assert await loop.sock_recv(a, 100) == b"back"
    run(loop, main())


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_unix_datagram_from_unbound_sender(loop, abstract, tmp_path):
    async def main():
        kind = "unixdgram-abstract" if abstract else "unixdgram"
        receiver = bound_socket(kind, socket.SOCK_DGRAM, tmp_path)
        sender = nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
        with receiver, sender:
            await loop.sock_sendto(sender, b"anon", receiver.getsockname())
            assert await loop.sock_recvfrom(receiver, 10) == (b"anon", None)
    run(loop, main())


def test_sendto_and_connect_resolve_host_names(loop):
    async def main():
        with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as a, \
                nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as b:
            b.bind(("127.0.0.1", 0))
            port = b.getsockname()[1]
            assert await loop.sock_sendto(a, b"named", ("localhost", port)) == 5
            data, _ = await loop.sock_recvfrom(b, 10)
            assert data == b"named"
        with nonblocking(socket.socket()) as listener, nonblocking(socket.socket()) as c:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            await loop.sock_connect(c, ("localhost", listener.getsockname()[1]))
            assert c.getpeername() == listener.getsockname()
    run(loop, main())


def test_recv_zero_bytes(loop):
    async def main():
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            b.send(b"kept")
            assert await loop.sock_recv(a, 0) == b""
            assert await loop.sock_recv(a, 10) == b"kept"
    run(loop, main())


@pytest.mark.parametrize("kind", ["tcp4", "unix"])
def test_large_sendall_with_slow_reader(loop, kind, tmp_path):
    data = random.Random(7).randbytes(6 * 1024 * 1024 + 123)

    async def main():
        listener, client, conn, _ = await stream_pair(loop, kind, tmp_path)
        with listener, client, conn:
            # Small kernel buffers force many partial sends.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)

            async def slow_reader():
                got = bytearray()
                reads = 0
                while len(got) < len(data):
                    chunk = await loop.sock_recv(conn, 16 * 1024)
                    assert chunk
                    got += chunk
                    reads += 1
                    if reads % 32 == 0:
                        await asyncio.sleep(0.001)
                return bytes(got)

            reader = asyncio.ensure_future(slow_reader())
            await loop.sock_sendall(client, memoryview(data))
            assert await reader == data
    run(loop, main())


def test_sock_sendfile(loop, tmp_path):
    payload = random.Random(3).randbytes(300_000)
    path = tmp_path / "payload"
    path.write_bytes(payload)

    async def main():
        listener, client, conn, _ = await stream_pair(loop, "tcp4", tmp_path)
        with listener, client, conn, open(path, "rb") as f:
            async def read_all():
                got = bytearray()
                while len(got) < len(payload):
                    got += await loop.sock_recv(conn, 65536)
                return bytes(got)
            reader = asyncio.ensure_future(read_all())
            assert await loop.sock_sendfile(client, f) == len(payload)
            assert await reader == payload
    run(loop, main())


# -- cancellation ------------------------------------------------------

async def cancel_and_check(loop, coro):
    task = asyncio.ensure_future(coro)
    for _ in range(3):
        await asyncio.sleep(0)         # the op is now in the kernel
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle(loop)


def test_cancel_recv(loop):
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            await cancel_and_check(loop, loop.sock_recv(a, 100))
            await cancel_and_check(loop, loop.sock_recv_into(a, bytearray(10)))
            b.send(b"after")
            assert await loop.sock_recv(a, 100) == b"after"
    run(loop, main())


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
def test_data_racing_a_cancelled_recv_is_not_lost(loop, method):
    # The data arrives after cancel() but before the loop ran again: asyncio
    # leaves it in the socket; a completion loop must hand it on.
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            arg = 100 if method == "sock_recv" else bytearray(100)
            task = asyncio.ensure_future(getattr(loop, method)(a, arg))
            for _ in range(3):
                await asyncio.sleep(0)
            task.cancel()
            b.send(b"racy")
            with pytest.raises(asyncio.CancelledError):
                await task
            await settle(loop)
            b.send(b"+more")
            got = b""
            while len(got) < 9:
                got += await loop.sock_recv(a, 100)
            assert got == b"racy+more"
    run(loop, main())


async def cancelled_receive_races(loop, receive, send):
    """Cancel a pending ``receive()`` and ``send()`` before the loop runs
    again: the cancelled op may already have taken what was sent."""
    task = asyncio.ensure_future(receive())
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel()
    send()
    with pytest.raises(asyncio.CancelledError):
        await task
    await settle(loop)


async def read_exactly(loop, sock, size):
    got = b""
    while len(got) < size:
        chunk = await loop.sock_recv(sock, size - len(got))
        assert chunk, got
        got += chunk
    return got


def test_raced_data_is_split_across_smaller_receives(loop):
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            await cancelled_receive_races(loop, lambda: loop.sock_recv(a, 100),
                                          lambda: b.send(b"0123456789"))
            buf = bytearray(4)
            assert await loop.sock_recv_into(a, buf) == 4 and buf == b"0123"
            assert await loop.sock_recv(a, 3) == b"456"
            b.send(b"tail")
            b.close()
            assert await read_exactly(loop, a, 7) == b"789tail"
            assert await loop.sock_recv(a, 10) == b""
    run(loop, main())


def test_raced_data_keeps_stream_order_with_a_new_receive(loop):
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            task = asyncio.ensure_future(loop.sock_recv(a, 100))
            for _ in range(3):
                await asyncio.sleep(0)
            task.cancel()
            b.send(b"first.")
            # The next receive starts before the cancelled one has settled.
            second = asyncio.ensure_future(loop.sock_recv(a, 100))
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(3):
                await asyncio.sleep(0)
            b.send(b"second.")
            got = await second
            got += await read_exactly(loop, a, 13 - len(got))
            assert got == b"first.second."
    run(loop, main())


@pytest.mark.parametrize("op", ["sock_recv", "sock_recv_into", "sock_recvfrom",
                                "sock_recvfrom_into"])
def test_live_completion_hands_out_older_unclaimed_data_first(op):
    # Which of a cancelled and a live receive the kernel serves first is
    # its choice, so the state "a live receive is in flight while older
    # raced data waits" is set up directly: the live one completes with D2
    # and must still return D1, D2 following.
    loop = uringloop.Loop()
    dgram = op.startswith("sock_recvfrom")
    a, b = map(nonblocking, socket.socketpair(
        type=socket.SOCK_DGRAM if dgram else socket.SOCK_STREAM))
    buf = bytearray(100)
    start = {"sock_recv": lambda: loop.sock_recv(a, 100),
             "sock_recv_into": lambda: loop.sock_recv_into(a, buf),
             "sock_recvfrom": lambda: loop.sock_recvfrom(a, 100),
             "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(a, buf)}[op]

    async def main():
        live = asyncio.ensure_future(start())
        for _ in range(3):
            await asyncio.sleep(0)
        loop._keep_unclaimed(a, (b"D1", None))
        b.send(b"D2")
        got = await live
        if op == "sock_recv_into":
            got = bytes(buf[:got])
        elif op == "sock_recvfrom_into":
            got = (bytes(buf[:got[0]]), got[1])
        assert got == (b"D1" if op in ("sock_recv", "sock_recv_into") else (b"D1", None))
        assert await loop.sock_recv(a, 100) == b"D2"
        assert not loop._unclaimed

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()
        loop.close()


def test_live_accept_hands_out_older_unclaimed_connection_first():
    loop = uringloop.Loop()
    listener = nonblocking(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    async def main():
        older, older_client = socket.socketpair()
        live = asyncio.ensure_future(loop.sock_accept(listener))
        for _ in range(3):
            await asyncio.sleep(0)
        loop._keep_unclaimed(listener, (older, "older"))
        with socket.create_connection(listener.getsockname()) as client:
            assert await live == (older, "older")
            conn, peer = await loop.sock_accept(listener)
            with conn:
                assert peer == client.getsockname()
        older.close()
        older_client.close()

    try:
        run(loop, main())
    finally:
        listener.close()
        loop.close()


def test_raced_datagrams_keep_their_order(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as a, \
                nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            target = a.getsockname()
            await cancelled_receive_races(loop, lambda: loop.sock_recvfrom(a, 100),
                                          lambda: b.sendto(b"d1-long", target))
            receiving = asyncio.ensure_future(loop.sock_recv(a, 2))
            await asyncio.sleep(0)
            b.sendto(b"d2", target)
            assert await receiving == b"d1"          # truncated, not split
            assert await loop.sock_recvfrom(a, 100) == (b"d2", b.getsockname())
    run(loop, main())


def test_cancel_recvfrom(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as a, \
                nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as b:
            a.bind(("127.0.0.1", 0))
            await cancel_and_check(loop, loop.sock_recvfrom(a, 100))
            await cancel_and_check(loop, loop.sock_recvfrom_into(a, bytearray(100)))
            b.sendto(b"dgram", a.getsockname())
            assert (await loop.sock_recvfrom(a, 100))[0] == b"dgram"
    run(loop, main())


def test_datagram_racing_a_cancelled_recvfrom_is_not_lost(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as a, \
                nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            task = asyncio.ensure_future(loop.sock_recvfrom(a, 100))
            for _ in range(3):
                await asyncio.sleep(0)
            task.cancel()
            b.sendto(b"first", a.getsockname())
            with pytest.raises(asyncio.CancelledError):
                await task
            await settle(loop)
            b.sendto(b"second", a.getsockname())
            assert await loop.sock_recvfrom(a, 100) == (b"first", b.getsockname())
            buf = bytearray(10)
            assert await loop.sock_recvfrom_into(a, buf) == (6, b.getsockname())
            assert buf[:6] == b"second"
    run(loop, main())


def test_cancel_accept(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket()) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            await cancel_and_check(loop, loop.sock_accept(listener))
            with nonblocking(socket.socket()) as client:
                accepting = asyncio.ensure_future(loop.sock_accept(listener))
                await loop.sock_connect(client, listener.getsockname())
                conn, peer = await accepting
                with conn:
                    assert peer == client.getsockname()
    run(loop, main())


def test_connection_racing_a_cancelled_accept_is_not_lost(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket()) as listener, socket.socket() as client:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            task = asyncio.ensure_future(loop.sock_accept(listener))
            for _ in range(3):
                await asyncio.sleep(0)
            task.cancel()
            client.connect(listener.getsockname())     # completes in the backlog
            with pytest.raises(asyncio.CancelledError):
                await task
            await settle(loop)
            conn, peer = await loop.sock_accept(listener)
            with conn:
                assert peer == client.getsockname()
                client.send(b"alive")
                assert await loop.sock_recv(conn, 10) == b"alive"
    run(loop, main())


def test_cancel_connect(loop):
    async def main():
        await mark_baseline(loop)
        with nonblocking(socket.socket()) as listener, \
                nonblocking(socket.socket()) as first, \
                nonblocking(socket.socket()) as second:
            listener.bind(("127.0.0.1", 0))
            listener.listen(0)
            # With a backlog of 0 the first connection fills the accept
            # queue and the kernel drops the second one's SYN: it hangs.
            await loop.sock_connect(first, listener.getsockname())
            await cancel_and_check(loop, loop.sock_connect(second, listener.getsockname()))
    run(loop, main())


def test_cancel_sendall_to_a_peer_that_does_not_read(loop):
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
            await cancel_and_check(loop, loop.sock_sendall(a, bytes(8 * 1024 * 1024)))
            # The socket still works for the next operation.
            b.send(b"still")
            assert await loop.sock_recv(a, 10) == b"still"
    run(loop, main())


def test_cancel_before_the_op_starts(loop):
    async def main():
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            task = asyncio.ensure_future(loop.sock_recv(a, 10))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            b.send(b"x")
            assert await loop.sock_recv(a, 10) == b"x"
    run(loop, main())


def test_wait_for_timeout_on_recv(loop):
    async def main():
        await mark_baseline(loop)
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(loop.sock_recv(a, 10), 0.01)
            await settle(loop)
            b.send(b"late")
            assert await loop.sock_recv(a, 10) == b"late"
    run(loop, main())


# -- closing under operations -----------------------------------------

async def _pending_recv(loop, sock):
    """A sock_recv task that has reached the kernel (a few turns in)."""
    task = asyncio.ensure_future(loop.sock_recv(sock, 10))
    for _ in range(3):
        await asyncio.sleep(0)
    return task


@pytest.mark.timeout(30)
def test_close_socket_with_recv_in_flight_then_cancel_and_close_loop(loop):
    a, b = map(nonblocking, socket.socketpair())

    task = run(loop, _pending_recv(loop, a))
    a.close()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    leaked = len(_ring._leaked_rings)
    loop.close()
    b.close()
    assert len(_ring._leaked_rings) == leaked


@pytest.mark.timeout(30)
def test_close_loop_with_recv_in_flight_on_a_closed_socket(loop):
    a, b = map(nonblocking, socket.socketpair())

    task = run(loop, _pending_recv(loop, a))
    a.close()
    leaked = len(_ring._leaked_rings)
    loop.close()                    # the task is still pending
    assert len(_ring._leaked_rings) == leaked
    if is_uring(loop):
        assert loop._ring.closed
    b.close()
    del task
    loop.handler_calls.clear()            # "Task was destroyed but it is pending"


# -- bad input, exactly as asyncio reports it --------------------------

ALL_METHODS = {
    "sock_recv": lambda lp, s: lp.sock_recv(s, 10),
    "sock_recv_into": lambda lp, s: lp.sock_recv_into(s, bytearray(10)),
    "sock_recvfrom": lambda lp, s: lp.sock_recvfrom(s, 10),
    "sock_recvfrom_into": lambda lp, s: lp.sock_recvfrom_into(s, bytearray(10)),
    "sock_sendall": lambda lp, s: lp.sock_sendall(s, b"data"),
    "sock_sendto": lambda lp, s: lp.sock_sendto(s, b"data", ("127.0.0.1", 9)),
    "sock_connect": lambda lp, s: lp.sock_connect(s, ("127.0.0.1", 9)),
    "sock_accept": lambda lp, s: lp.sock_accept(s),
}


@pytest.mark.parametrize("method", list(ALL_METHODS))
def test_blocking_socket_in_debug_mode(loop, method):
    loop.set_debug(True)
    with socket.socket() as sock:
        with pytest.raises(ValueError, match="non-blocking"):
            run(loop, ALL_METHODS[method](loop, sock))


@pytest.mark.parametrize("method", list(ALL_METHODS))
def test_ssl_socket_is_a_type_error(loop, method):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    with ctx.wrap_socket(socket.socket(), do_handshake_on_connect=False) as sock:
        with pytest.raises(TypeError, match="SSLSocket"):
            run(loop, ALL_METHODS[method](loop, sock))


@pytest.mark.parametrize("data", ["text", 42, None, [1, 2]])
def test_sendall_non_buffer_is_a_type_error(loop, data):
    a, b = map(nonblocking, socket.socketpair())
    with a, b:
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendall(a, data))


def test_sendto_non_buffer_is_a_type_error(loop):
    with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        with pytest.raises(TypeError):
            run(loop, loop.sock_sendto(s, "text", ("127.0.0.1", 9)))


@pytest.mark.parametrize("method", ["sock_recv_into", "sock_recvfrom_into"])
def test_read_only_buffer_is_a_type_error(loop, method):
    a, b = map(nonblocking, socket.socketpair(type=socket.SOCK_DGRAM))
    with a, b:
        with pytest.raises(TypeError):
            run(loop, getattr(loop, method)(a, b"read-only"))


def test_released_view_is_what_the_socket_methods_say(loop):
    # socket.recv_into refuses it as any unusable buffer (TypeError; cffi's
    # own word would be a ValueError); recvfrom_into first takes its length
    # (asyncio's default nbytes), which a released view refuses.
    view = memoryview(bytearray(4))
    view.release()
    a, b = map(nonblocking, socket.socketpair(type=socket.SOCK_DGRAM))
    with a, b:
        with pytest.raises(TypeError, match="read-write bytes-like object, not memoryview"):
            run(loop, loop.sock_recv_into(a, view))
        with pytest.raises(ValueError, match="released memoryview"):
            run(loop, loop.sock_recvfrom_into(a, view))


def test_recvfrom_into_nbytes_larger_than_buffer(loop):
    with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        with pytest.raises(ValueError, match="nbytes"):
            run(loop, loop.sock_recvfrom_into(s, bytearray(4), 5))


def test_connection_refused(loop):
    with nonblocking(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]       # bound, never listening: refused
        with nonblocking(socket.socket()) as sock:
            with pytest.raises(ConnectionRefusedError) as info:
                run(loop, loop.sock_connect(sock, ("127.0.0.1", port)))
    assert info.value.errno == errno.ECONNREFUSED


def test_unix_connect_to_missing_path(loop, tmp_path):
    with nonblocking(socket.socket(socket.AF_UNIX)) as sock:
        with pytest.raises(FileNotFoundError):
            run(loop, loop.sock_connect(sock, str(tmp_path / "nobody")))


def test_closed_socket_is_ebadf(loop):
    sock = nonblocking(socket.socket())
    sock.close()
    with pytest.raises(OSError) as info:
        run(loop, loop.sock_recv(sock, 10))
    assert info.value.errno == errno.EBADF


def test_recv_on_unconnected_tcp_socket(loop):
    with nonblocking(socket.socket()) as sock:
        with pytest.raises(OSError) as info:
            run(loop, loop.sock_recv(sock, 10))
    assert info.value.errno == errno.ENOTCONN


def test_socket_owned_by_a_transport(loop):
    async def main():
        with nonblocking(socket.socket()) as listener:
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            sock = socket.socket()
            sock.connect(listener.getsockname())
            transport, _ = await loop.create_connection(asyncio.Protocol, sock=sock)
            try:
                with pytest.raises(RuntimeError, match="transport"):
                    await loop.sock_recv(sock, 10)
            finally:
                transport.close()
                await asyncio.sleep(0)
    run(loop, main())


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_recvfrom",
                                    "sock_recvfrom_into", "sock_accept"])
def test_closed_loop_is_a_runtime_error(loop, method):
    loop.close()
    with nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)) as s:
        if method == "sock_accept":
            s.close()
            s = nonblocking(socket.socket())
            s.bind(("127.0.0.1", 0))
            s.listen()
        coro = ALL_METHODS[method](loop, s)
        with pytest.raises(RuntimeError, match="closed"):
            coro.send(None)
        s.close()


def _ready_calls():
    """A call of each receiving/sending method that can finish at once (the
    data, datagram or connection is already there), and its result."""
    stream_a, stream_b = socket.socketpair()
    dgram_a, dgram_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    client = socket.create_connection(listener.getsockname())
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    sockets = [stream_a, stream_b, dgram_a, dgram_b, listener, client, udp]
    for sock in sockets:
        sock.setblocking(False)
    stream_b.send(b"stream-bytes")
    dgram_b.send(b"one")
    dgram_b.send(b"two")
    calls = {
        "sock_recv": (lambda lp: lp.sock_recv(stream_a, 6), b"stream"),
        "sock_recv_into": (lambda lp: lp.sock_recv_into(stream_a, bytearray(6)), 6),
        "sock_recvfrom": (lambda lp: lp.sock_recvfrom(dgram_a, 10), (b"one", None)),
        "sock_recvfrom_into": (lambda lp: lp.sock_recvfrom_into(dgram_a, bytearray(10)),
                               (3, None)),
        "sock_sendto": (lambda lp: lp.sock_sendto(udp, b"data", udp.getsockname()), 4),
    }
    return calls, listener, sockets


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_recvfrom",
                                    "sock_recvfrom_into", "sock_sendto", "sock_accept"])
def test_closed_loop_still_makes_a_call_that_finishes_at_once(loop, method):
    # asyncio makes the socket call before it looks at the loop: what can
    # finish at once does, closed loop or not; only a wait is refused (the
    # test above).
    calls, listener, sockets = _ready_calls()
    try:
        loop.close()
        if method == "sock_accept":
            with pytest.raises(StopIteration) as done:
                loop.sock_accept(listener).send(None)
            conn, address = done.value.value
            sockets.append(conn)
            assert conn.getblocking() is False
            assert address == sockets[5].getsockname()
            return
        call, expected = calls[method]
        with pytest.raises(StopIteration) as done:
            call(loop).send(None)
        assert done.value.value == expected
    finally:
        for sock in sockets:
            sock.close()


def test_socket_of_a_transport_refuses_only_a_wait(loop):
    # The same order on a socket a transport uses: a datagram the socket
    # takes at once is sent; a receive that would wait, or a sendfile
    # (which asyncio refuses once it has to wait for the socket), is a
    # RuntimeError naming the transport.
    def same_fd(transport):
        # A socket object on the transport's own fd (detached after use).
        sock = transport.get_extra_info("socket")
        return socket.socket(sock.family, sock.type, fileno=sock.fileno())

    async def main(tmp):
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        raw = same_fd(transport)
        try:
            with pytest.raises(RuntimeError, match="is used by transport"):
                await loop.sock_recv(raw, 10)
            assert await loop.sock_sendto(raw, b"abc", raw.getsockname()) == 3
        finally:
            raw.detach()
            transport.close()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(
            asyncio.Protocol, *server.sockets[0].getsockname())
        raw = same_fd(transport)
        with open(tmp, "wb") as f:
            f.write(b"x" * 10)
        try:
            with open(tmp, "rb") as f:
                with pytest.raises(RuntimeError, match="is used by transport"):
                    await loop.sock_sendfile(raw, f)
        finally:
            raw.detach()
            transport.close()
            server.close()
            await server.wait_closed()

    with tempfile.TemporaryDirectory() as tmp:
        run(loop, main(os.path.join(tmp, "data")))


def test_sendall_the_socket_takes_returns_without_suspending(loop):
    # asyncio sends first: when the socket takes everything, the coroutine
    # finishes at its first step, without a trip through the loop (and even
    # on a closed loop, as asyncio's does).
    a, b = socket.socketpair()
    with nonblocking(a), nonblocking(b):
        for data in (b"x" * 1000, bytearray(b"ab"), memoryview(b"--cd")[2:]):
            coro = loop.sock_sendall(a, data)
            with pytest.raises(StopIteration):
                coro.send(None)
        loop.close()
        coro = loop.sock_sendall(a, b"ef")
        with pytest.raises(StopIteration):
            coro.send(None)
        assert b.recv(2000) == b"x" * 1000 + b"abcdef"


def test_sendall_sends_the_rest_once_the_socket_takes_it(loop):
    # What the first send did not take goes out later, after it, in order.
    a, b = socket.socketpair()
    data = bytes(range(256)) * 40_000

    async def main():
        sending = asyncio.ensure_future(loop.sock_sendall(a, memoryview(data)))
        received = bytearray()
        while len(received) < len(data):
            received += await loop.sock_recv(b, 65536)
        await sending
        return received

    with nonblocking(a), nonblocking(b):
        assert run(loop, main()) == data


# -- proof that the bytes go through io_uring --------------------------

_TRACED_ECHO = r"""
import asyncio, socket, sys
import uringloop

async def main():
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    client = socket.socket()
    client.setblocking(False)
    u1 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u1.bind(("127.0.0.1", 0))
    u1.setblocking(False)
    u2 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u2.setblocking(False)
    fds = [listener.fileno(), client.fileno(), u1.fileno(), u2.fileno()]
    os_write = __import__("os").write
    os_write(1, ("BEGIN " + " ".join(map(str, fds)) + "\n").encode())
    accepting = asyncio.ensure_future(loop.sock_accept(listener))
    await loop.sock_connect(client, listener.getsockname())
    conn, _ = await accepting
    os_write(1, f"CONN {conn.fileno()}\n".encode())
    for i in range(10):
        await loop.sock_sendall(client, b"x" * 1000)
        data = await loop.sock_recv(conn, 1000)
        await loop.sock_sendall(conn, data)
        buf = bytearray(1000)
        await loop.sock_recv_into(client, buf)
        await loop.sock_sendto(u2, b"dgram", u1.getsockname())
        msg, addr = await loop.sock_recvfrom(u1, 100)
        await loop.sock_sendto(u1, msg, addr)
        await loop.sock_recvfrom_into(u2, buf)
    os_write(1, b"END\n")
    for s in (listener, client, conn, u1, u2):
        s.close()

uringloop.run(main())
"""

_DATA_SYSCALLS = ("recvfrom", "sendto", "recvmsg", "sendmsg", "read", "write",
                  "recv", "send", "accept", "accept4", "connect")


@pytest.mark.skipif(shutil.which("strace") is None,
                    reason="strace is not installed (apt-get install strace)")
def test_echo_goes_through_io_uring():
    with tempfile.TemporaryDirectory() as tmp:
        trace_file = os.path.join(tmp, "trace")
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        env.pop("URINGLOOP_BACKEND", None)
        proc = subprocess.run(
            ["strace", "-f", "-qq", "-o", trace_file,
             "-e", "trace=io_uring_enter,epoll_wait,epoll_pwait,epoll_pwait2,"
                   + ",".join(_DATA_SYSCALLS),
             sys.executable, "-c", _TRACED_ECHO],
            env=env, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0 and "ptrace" in proc.stderr:
            pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
        assert proc.returncode == 0, proc.stderr
        with open(trace_file) as f:
            trace = f.read().splitlines()

    marks = [i for i, line in enumerate(trace) if re.search(r'write\(1, "(BEGIN|CONN|END)', line)]
    assert len(marks) == 3, trace[-20:]
    begin, conn_mark, end = marks
    fds = set(re.search(r'"BEGIN ([\d ]+)', trace[begin]).group(1).split())
    fds.add(re.search(r'"CONN (\d+)', trace[conn_mark]).group(1))
    window = trace[begin + 1:end]
    calls = [re.match(r"^(?:\d+\s+)?(\w+)\((\d+)?", line) for line in window]
    calls = [m.groups() for m in calls if m]
    names = [name for name, _ in calls]
    assert "io_uring_enter" in names
    assert not [n for n in names if n.startswith("epoll")], "the loop used epoll"
    # sock_sendall's first try is a plain send, as asyncio's (it returns at
    # once when the socket takes everything), and sock_connect's a plain
    # connect (what fails or succeeds at once does so as asyncio's; a
    # connection in progress is waited for on the ring); every other call
    # is a ring op.
    tcp = {fd for i, fd in enumerate(re.search(r'"BEGIN ([\d ]+)', trace[begin]).group(1).split())
           if i < 2}
    tcp.add(re.search(r'"CONN (\d+)', trace[conn_mark]).group(1))
    touching = [(name, fd) for name, fd in calls if name in _DATA_SYSCALLS and fd in fds
                and not (name in ("sendto", "connect") and fd in tcp)]
    assert touching == [], f"socket data moved by plain syscalls: {touching}"
