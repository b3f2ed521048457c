"""``loop.sock_*`` and sendfile under cancellation, close and bad input:
no result thrown away, no receive left hanging behind a cancelled one, a
closed socket really closed, nothing leaked when the loop closes, every bad
argument refused with asyncio's exception.

Tests that state asyncio's behaviour run on both loops (the ``loop``
fixture, strict: an unexpected call of the exception handler fails).  A few
set up a race that asyncio's loop cannot have (a completion that already
took data when the cancellation comes); those run on uringloop alone
(``uloop``) and say so.
"""
import asyncio
import contextlib
import errno
import gc
import io
import mmap
import os
import random
import socket
import struct

import pytest

from uringloop import _sockaddr
from uringloop._op import RingCallback

from .conftest import LOOP_KINDS, run

GiB = 1 << 30


def nonblocking(sock):
    sock.setblocking(False)
    return sock


def fd_count():
    return len(os.listdir("/proc/self/fd"))


async def turns(n=3):
    """A few loop iterations: an op started before is now in the kernel."""
    for _ in range(n):
        await asyncio.sleep(0)


async def until(predicate, seconds=5.0):
    """Run the loop until ``predicate()`` holds (liveness, bounded)."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


def tcp_listener(backlog=16):
    listener = nonblocking(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(backlog)
    return listener


def dgram_pair():
    a = nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    b = nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    a.bind(("127.0.0.1", 0))
    b.bind(("127.0.0.1", 0))
    return a, b


# -- the receiving methods, as one table ---------------------------------

class Receiver:
    """One receiving method on a fresh pair: ``start()`` begins a receive,
    ``send(data)`` makes something arrive, ``got(result)`` says what a
    receive delivered (bytes, or the peer address of an accepted socket)."""

    def __init__(self, loop, method):
        self.loop = loop
        self.method = method
        self.buf = bytearray(100)
        self.closing = []
        if method == "sock_accept":
            self.sock = tcp_listener()
            self.clients = []
        elif method.startswith("sock_recvfrom"):
            self.sock, self.peer = dgram_pair()
        else:
            self.sock, self.peer = map(nonblocking, socket.socketpair())

    def call(self):
        """The receive's coroutine."""
        loop, sock, buf = self.loop, self.sock, self.buf
        return {
            "sock_recv": lambda: loop.sock_recv(sock, 100),
            "sock_recv_into": lambda: loop.sock_recv_into(sock, buf),
            "sock_recvfrom": lambda: loop.sock_recvfrom(sock, 100),
            "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(sock, buf),
            "sock_accept": lambda: loop.sock_accept(sock),
        }[self.method]()

    def start(self):
        return asyncio.ensure_future(self.call())

    def send(self, data):
        if self.method == "sock_accept":
            client = socket.create_connection(self.sock.getsockname())
            self.clients.append(client)
            return client.getsockname()
        if self.method.startswith("sock_recvfrom"):
            self.peer.sendto(data, self.sock.getsockname())
        else:
            self.peer.send(data)
        return data

    def got(self, result):
        if self.method == "sock_recv":
            return result
        if self.method == "sock_recv_into":
            return bytes(self.buf[:result])
        if self.method == "sock_recvfrom":
            assert result[1] == self.peer.getsockname()
            return result[0]
        if self.method == "sock_recvfrom_into":
            assert result[1] == self.peer.getsockname()
            return bytes(self.buf[:result[0]])
        conn, address = result
        self.closing.append(conn)
        assert conn.gettimeout() == 0
        return address

    def close(self):
        for sock in [self.sock, getattr(self, "peer", None)] + self.closing + getattr(
                self, "clients", []):
            if sock is not None:
                sock.close()


RECEIVERS = ["sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
             "sock_accept"]


@pytest.mark.parametrize("second", ["a task", "awaited at once"])
@pytest.mark.parametrize("method", RECEIVERS)
def test_receive_again_after_a_cancel_that_raced_the_data(loop, method, second):
    # recv pending, peer sends, recv cancelled, recv again: the second
    # receive gets what was sent, although the peer sends nothing more.
    # (A new receive submitted behind the cancelled one waited forever
    # while the first one's data went to the unclaimed queue.)  Awaited at
    # once, as in uvloop's test_sock_send_before_cancel, the new receive
    # goes into the kernel before the cancellation reaches the old one's
    # request (its task has not run again), so the old one takes the data.
    receiver = Receiver(loop, method)

    async def main():
        first = receiver.start()
        await turns()
        sent = receiver.send(b"only-message")
        first.cancel()
        if second == "a task":
            task = receiver.start()
            with pytest.raises(asyncio.CancelledError):
                await first
            got = await asyncio.wait_for(task, 10)
        else:
            async with asyncio.timeout(10):   # no task in between
                got = await receiver.call()
            with pytest.raises(asyncio.CancelledError):
                await first
        assert receiver.got(got) == sent

    try:
        run(loop, main())
    finally:
        receiver.close()


@pytest.mark.parametrize("method", RECEIVERS)
def test_receive_again_while_the_cancelled_one_settles_keeps_order(loop, method):
    receiver = Receiver(loop, method)

    async def main():
        first = receiver.start()
        await turns()
        sent = [receiver.send(b"one")]
        first.cancel()
        await asyncio.sleep(0)
        sent.append(receiver.send(b"two"))
        with pytest.raises(asyncio.CancelledError):
            await first
        got = []
        while len(got) < 2 and got != [b"onetwo"]:   # a stream may join them
            got.append(receiver.got(await asyncio.wait_for(receiver.start(), 10)))
        assert got in (sent, [b"onetwo"]) if method in ("sock_recv", "sock_recv_into") \
            else got == sent

    try:
        run(loop, main())
    finally:
        receiver.close()


@pytest.mark.parametrize("method", ["sock_recv_into", "sock_recvfrom_into"])
def test_a_cancelled_receive_never_writes_into_the_callers_buffer(loop, method):
    # CPython's test_sock_client_racing caught this (1 run in 40): data
    # that arrived after the cancellation but before the loop's next turn
    # went into the caller's buffer, over what the caller had put there.
    receiver = Receiver(loop, method)
    mark = b"\xaa" * len(receiver.buf)

    async def main():
        first = receiver.start()
        await turns()
        receiver.buf[:] = mark
        first.cancel()
        sent = receiver.send(b"after-the-cancel")
        with pytest.raises(asyncio.CancelledError):
            await first
        await turns()
        assert receiver.buf == mark
        assert receiver.got(await asyncio.wait_for(receiver.start(), 10)) == sent

    try:
        run(loop, main())
    finally:
        receiver.close()


def _stuffed_unix_dgram(tmp_path):
    """A sender and a bound receiver whose queue is full: the next sendto waits."""
    path = str(tmp_path / "dgram")
    receiver = nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    receiver.bind(path)
    sender = nonblocking(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    with contextlib.suppress(BlockingIOError):
        while True:
            sender.sendto(b"f" * 1000, path)
    return sender, receiver, path


@pytest.mark.parametrize("method", ["sock_sendall", "sock_sendto"])
def test_a_cancelled_send_lets_go_of_the_callers_bytes(loop, method, tmp_path):
    """After a cancelled sock_sendall or sock_sendto has raised, its data is
    the caller's again, as with asyncio: a bytearray may be resized (the
    ring's send pinned it: BufferError) and bytes the caller then puts
    there are never sent (only a prefix of the original data arrives)."""
    if method == "sock_sendall":
        sender, receiver = (nonblocking(s) for s in socket.socketpair())
        data = bytearray(random.Random(5).randbytes(8 << 20))
    else:
        sender, receiver, path = _stuffed_unix_dgram(tmp_path)
        data = bytearray(b"original")

    async def main():
        if method == "sock_sendall":
            task = asyncio.ensure_future(loop.sock_sendall(sender, data))
        else:
            task = asyncio.ensure_future(loop.sock_sendto(sender, data, path))
        await turns()
        assert not task.done()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        original = bytes(data)
        data[:] = b"Z" * len(data)
        data.extend(b"resized")
        got = bytearray()
        with contextlib.suppress(BlockingIOError):
            while True:
                await turns()
                got += receiver.recv(1 << 20)
        if method == "sock_sendall":
            assert got == original[:len(got)]
        else:
            assert b"Z" not in got and b"resized" not in got

    try:
        run(loop, main())
    finally:
        sender.close()
        receiver.close()


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_recvfrom",
                                    "sock_recvfrom_into"])
def test_a_datagram_bigger_than_a_provided_buffer_arrives_whole(loop, method):
    # A receive into one of the ring's provided buffers (128 KiB) cut a
    # longer datagram short; asyncio's recv gets all of it.
    size = 150_000
    ring = getattr(loop, "_ring", None)
    assert ring is None or ring.buffer_size < size, "the test would prove nothing"
    a, b = map(nonblocking, socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    message = random.Random(size).randbytes(size)
    buf = bytearray(size + 10)

    async def main():
        receive = asyncio.ensure_future({
            "sock_recv": lambda: loop.sock_recv(b, len(buf)),
            "sock_recv_into": lambda: loop.sock_recv_into(b, buf),
            "sock_recvfrom": lambda: loop.sock_recvfrom(b, len(buf)),
            "sock_recvfrom_into": lambda: loop.sock_recvfrom_into(b, buf),
        }[method]())
        await turns()
        a.send(message)
        result = await asyncio.wait_for(receive, 10)
        if method.endswith("_into"):
            count = result if method == "sock_recv_into" else result[0]
            return bytes(buf[:count])
        return result if method == "sock_recv" else result[0]

    try:
        assert run(loop, main()) == message
    finally:
        a.close()
        b.close()


def _cancel_right_after_completion(monkeypatch, loop, tasks):
    """Make the first completion of a receive/accept cancel the task in
    ``tasks`` at once, after its future got the result but before the task
    ran again: the race asyncio's loop never has, since its readiness
    callback and the syscall are one step."""
    ring = loop._ring
    for name in ("submit_recv", "submit_recv_provided", "submit_recvmsg", "submit_accept"):
        real = getattr(ring, name)

        def submit(*args, _real=real):
            *args, op = args

            def on_completion(res, flags):
                op.on_completion(res, flags)
                if tasks:
                    tasks.pop().cancel()
            return _real(*args, RingCallback(on_completion, returns_fd=op.returns_fd))
        monkeypatch.setattr(ring, name, submit)


@pytest.mark.parametrize("method", RECEIVERS)
def test_cancel_after_the_result_arrived_keeps_it_for_the_next_caller(
        uloop, monkeypatch, method):
    # uringloop only: see _cancel_right_after_completion.  The result (data,
    # a datagram, a connection) goes to the next receive on that socket.
    receiver = Receiver(uloop, method)
    tasks = []
    _cancel_right_after_completion(monkeypatch, uloop, tasks)

    async def main():
        first = receiver.start()
        tasks.append(first)
        await turns()
        sent = receiver.send(b"precious")
        with pytest.raises(asyncio.CancelledError):
            await first
        assert not tasks, "the race was not set up"
        monkeypatch.undo()
        assert receiver.got(await asyncio.wait_for(receiver.start(), 10)) == sent
        if method == "sock_accept":
            conn = receiver.closing[-1]
            receiver.clients[-1].send(b"alive")
            assert await uloop.sock_recv(conn, 10) == b"alive"

    try:
        run(uloop, main())
    finally:
        receiver.close()


def test_failing_enobufs_resubmission_resolves_the_future(uloop, monkeypatch):
    # A callback that raises must not leave its caller waiting forever (nor
    # reach the loop's exception handler: the caller hears it).
    if not uloop._recv_provided:
        pytest.fail("this kernel has no provided receive buffers")
    ring = uloop._ring

    def provided(fd, nbytes, callback):
        # The kernel's answer when every provided buffer is in use.
        return ring.submit_nop(
            RingCallback(lambda res, flags: callback.on_completion(-errno.ENOBUFS, 0)))

    def refuse(*args):
        raise RuntimeError("the ring refuses the resubmission")

    monkeypatch.setattr(ring, "submit_recv_provided", provided)
    monkeypatch.setattr(ring, "submit_recv", refuse)
    a, b = map(nonblocking, socket.socketpair())
    with a, b:
        with pytest.raises(RuntimeError, match="refuses"):
            run(uloop, uloop.sock_recv(a, 10), timeout=10)


def test_failing_accept_completion_resolves_the_future(uloop, monkeypatch):
    def peername(conn):
        raise OSError(errno.EPROTO, "made to fail")

    monkeypatch.setattr(_sockaddr, "peername", peername)
    with tcp_listener() as listener:
        async def main():
            accepting = asyncio.ensure_future(uloop.sock_accept(listener))
            await turns()
            with socket.create_connection(listener.getsockname()):
                with pytest.raises(OSError, match="made to fail"):
                    await asyncio.wait_for(accepting, 10)
        before = fd_count()
        run(uloop, main())
        assert fd_count() == before     # the accepted fd was closed


# -- a socket closed under a pending operation -----------------------------

@pytest.mark.parametrize("others", [0, 40])
def test_close_under_a_pending_recv_lets_the_peer_see_eof(loop, others):
    # ``others``: receives pending on other sockets meanwhile (uringloop
    # looks for closed sockets differently when many ops are in flight).
    a, b = map(nonblocking, socket.socketpair())
    idle = [socket.socketpair() for _ in range(others)]

    async def main():
        waiting = [asyncio.ensure_future(loop.sock_recv(nonblocking(x), 10)) for x, _ in idle]
        pending = asyncio.ensure_future(loop.sock_recv(a, 10))
        await turns()
        a.close()
        # The peer sees the close (no op in flight holds the socket open).
        assert await asyncio.wait_for(loop.sock_recv(b, 10), 10) == b""
        await turns(10)
        assert not pending.done()       # as on asyncio: it never completes
        for task in waiting + [pending]:
            task.cancel()
        await asyncio.gather(*waiting, pending, return_exceptions=True)

    try:
        run(loop, main())
    finally:
        b.close()
        for x, y in idle:
            x.close()
            y.close()


def test_close_under_a_pending_accept_refuses_new_connections(loop):
    listener = tcp_listener()
    address = listener.getsockname()

    async def main():
        pending = asyncio.ensure_future(loop.sock_accept(listener))
        await turns()
        listener.close()
        await asyncio.sleep(0.1)    # ample for the loop to notice the close
        # (A plain blocking connect: a socket on the loop could get the
        # listener's fd number, which asyncio's selector still has registered.)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=10).close()
        assert not pending.done()       # as on asyncio: it never completes
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending

    run(loop, main())


def test_close_under_a_pending_sendall_closes_the_connection(loop):
    a, b = map(nonblocking, socket.socketpair())
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)

    async def main():
        pending = asyncio.ensure_future(loop.sock_sendall(a, bytes(4 * 1024 * 1024)))
        await turns()
        a.close()
        # What was in flight may arrive; then EOF, not a stall.
        while await asyncio.wait_for(loop.sock_recv(b, 1 << 20), 10):
            pass
        assert not pending.done()
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending

    try:
        run(loop, main())
    finally:
        b.close()


# -- accept of a connection reset before it was accepted ----------------------

def test_accept_a_connection_the_client_already_reset(loop):
    listener = tcp_listener()

    async def main():
        client = socket.create_connection(listener.getsockname())
        client_address = client.getsockname()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()                  # RST while it waits in the backlog
        await asyncio.sleep(0.05)
        conn, address = await asyncio.wait_for(loop.sock_accept(listener), 10)
        with conn:
            assert address == client_address
            with pytest.raises(ConnectionResetError):
                await asyncio.wait_for(loop.sock_recv(conn, 10), 10)

    try:
        run(loop, main())
    finally:
        listener.close()


# -- lengths beyond 32 bits ------------------------------------------------------

@contextlib.contextmanager
def sparse_buffer(size):
    """``size`` bytes of anonymous memory that costs nothing until touched."""
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    buf = mmap.mmap(-1, size, flags=flags)
    try:
        yield buf
    finally:
        buf.close()


def test_recv_into_a_buffer_beyond_4_gib_returns_the_count(loop):
    # A 32-bit truncated length of 4 GiB is 0: a receive of nothing, which
    # looked like EOF.
    a, b = map(nonblocking, socket.socketpair())

    async def main():
        with sparse_buffer(4 * GiB) as buf:
            b.send(b"hello")
            view = memoryview(buf)
            try:
                assert await loop.sock_recv_into(a, view) == 5
                assert bytes(view[:5]) == b"hello"
            finally:
                view.release()

    try:
        run(loop, main())
    finally:
        a.close()
        b.close()


def test_sendall_beyond_4_gib_sends_every_byte(loop):
    # 4 GiB + 100 bytes, mostly untouched zero pages; marks at the 4 GiB
    # boundaries show that the bytes arrive in place.  The reader is a
    # thread, reading in big blocks, so this stays a few seconds.
    size = 4 * GiB + 100
    marks = {0: b"A", 2 * GiB: b"B", 4 * GiB - 1: b"C", 4 * GiB: b"D", size - 1: b"E"}
    a, b = socket.socketpair()
    a.setblocking(False)

    def read_all():
        block = bytearray(8 << 20)
        view = memoryview(block)
        total = 0
        seen = {}
        while True:
            n = b.recv_into(view)
            if not n:
                return total, seen
            for offset in marks:
                if total <= offset < total + n:
                    seen[offset] = bytes(view[offset - total:offset - total + 1])
            total += n

    async def main():
        with sparse_buffer(size) as buf:
            for offset, mark in marks.items():
                buf[offset:offset + 1] = mark
            reader = loop.run_in_executor(None, read_all)
            view = memoryview(buf)
            try:
                await asyncio.wait_for(loop.sock_sendall(a, view), 120)
            finally:
                view.release()
            a.shutdown(socket.SHUT_WR)
            total, seen = await asyncio.wait_for(reader, 120)
        assert total == size
        assert seen == marks

    try:
        run(loop, main(), timeout=240)
    finally:
        a.close()
        b.close()


# -- loop.close() and socket close with operations in flight: no fd leaked ----

def _ops_in_flight_then_close(kind, big_file):
    loop = LOOP_KINDS[kind]()
    loop.set_exception_handler(lambda _loop, _context: None)  # destroyed tasks
    listener = tcp_listener()
    a, b = map(nonblocking, socket.socketpair())
    c, d = map(nonblocking, socket.socketpair())
    c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    client = None
    try:
        async def main():
            nonlocal client
            asyncio.ensure_future(loop.sock_accept(listener))
            asyncio.ensure_future(loop.sock_recv(a, 10))
            asyncio.ensure_future(loop.sock_recv_into(a, bytearray(10)))
            asyncio.ensure_future(loop.sock_sendfile(c, big_file, 0))  # d never reads
            await turns(10)
            client = socket.create_connection(listener.getsockname())  # raced accept
            await turns(2)
        loop.run_until_complete(main())
    finally:
        loop.close()
        for sock in (listener, a, b, c, d, client):
            if sock is not None:
                sock.close()


@pytest.mark.timeout(120)
def test_closing_loops_with_operations_in_flight_leaks_no_fd(loop, tmp_path):
    kind = "uringloop" if loop.is_uring else "asyncio"
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(3).randbytes(4 << 20))
    with open(path, "rb") as big_file:
        _ops_in_flight_then_close(kind, big_file)   # warm up (lazy imports, probes)
        gc.collect()
        before = fd_count()
        for _ in range(200):
            _ops_in_flight_then_close(kind, big_file)
        gc.collect()
        assert fd_count() == before


def test_socket_closed_under_sendfile_then_cancelled(loop, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(4).randbytes(8 << 20))
    a, b = map(nonblocking, socket.socketpair())
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)

    async def main():
        with open(path, "rb") as f:
            gc.collect()
            before = fd_count()
            task = asyncio.ensure_future(loop.sock_sendfile(a, f))
            assert len(await asyncio.wait_for(loop.sock_recv(b, 4096), 10)) > 0
            await asyncio.sleep(0.05)     # stalled: b reads no more
            a.close()
            await asyncio.sleep(0.05)
            assert not task.done()        # as on asyncio: it never completes
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The pipe (uringloop) goes once the kernel is done with it.
            assert await until(lambda: fd_count() == before - 1), (fd_count(), before)

    try:
        run(loop, main())
    finally:
        b.close()


@pytest.mark.timeout(60)
def test_loop_closed_under_sendfile_closes_its_pipe(loop, tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(random.Random(5).randbytes(8 << 20))
    kind = "uringloop" if loop.is_uring else "asyncio"
    with open(path, "rb") as f:
        gc.collect()
        before = fd_count()
        other = LOOP_KINDS[kind]()
        other.set_exception_handler(lambda _loop, _context: None)
        a, b = map(nonblocking, socket.socketpair())
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
        task = other.create_task(other.sock_sendfile(a, f))
        other.run_until_complete(asyncio.sleep(0.1))    # stalled: b never reads
        assert not task.done()
        other.close()
        del task
        a.close()
        b.close()
        gc.collect()
        assert fd_count() == before


# -- no reference cycle through a failure's traceback --------------------------

def _futures_left_in_cycles(loop, make_failure):
    async def main():
        try:
            await make_failure()
        except OSError:
            pass
        else:
            raise AssertionError("expected a failure")

    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run(loop, main())
        gc.collect()
        return [obj for obj in gc.garbage if isinstance(obj, asyncio.Future)
                and obj.done() and not obj.cancelled()
                and isinstance(obj.exception(), OSError)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_failed_connect_leaves_no_cycle(loop):
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]       # bound, not listening: refused

    async def refused():
        with nonblocking(socket.socket()) as sock:
            await loop.sock_connect(sock, ("127.0.0.1", port))

    with probe:
        assert _futures_left_in_cycles(loop, refused) == []


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into", "sock_recvfrom",
                                    "sock_sendall", "sock_accept"])
def test_failed_operation_leaves_no_cycle(uloop, method):
    # uringloop only: asyncio's loop keeps the cycle for everything but
    # sock_connect (its other methods keep the future in a local).
    async def fail():
        if method == "sock_accept":
            with nonblocking(socket.socket()) as sock:     # never listened
                await uloop.sock_accept(sock)
            return
        a, b = map(nonblocking, socket.socketpair())
        with a, b:
            if method == "sock_sendall":
                b.close()
                await uloop.sock_sendall(a, b"x" * 100_000)
                return
            def reset():
                a.send(b"unread")
                b.close()       # with unread data: a's receive fails (ECONNRESET)

            uloop.call_later(0.01, reset)   # once the receive is in the kernel
            await {"sock_recv": lambda: uloop.sock_recv(a, 10),
                   "sock_recv_into": lambda: uloop.sock_recv_into(a, bytearray(10)),
                   "sock_recvfrom": lambda: uloop.sock_recvfrom(a, 10)}[method]()

    assert _futures_left_in_cycles(uloop, fail) == []


# -- bad input: asyncio's exception, never a wrong action ---------------------

def _file(tmp_path, mode="rb"):
    path = tmp_path / "data.bin"
    if not path.exists():
        path.write_bytes(b"x" * 1000)
    return open(path, mode)


def _socket_of(kind, stack, tmp_path):
    """A socket of ``kind`` (ready so that a valid call completes at once),
    registered with ``stack`` for closing, and its peer address if any."""
    def keep(*socks):
        for sock in socks:
            stack.callback(sock.close)
        return socks[0]

    if kind == "tcp":
        listener = keep(tcp_listener())
        client = keep(socket.create_connection(listener.getsockname()))
        conn = keep(listener.accept()[0])
        conn.send(b"waiting")
        return keep(nonblocking(client)), None
    if kind == "udp":
        a, b = dgram_pair()
        keep(a, b)
        b.sendto(b"waiting", a.getsockname())
        return a, b.getsockname()
    if kind == "listener":
        listener = keep(tcp_listener())
        keep(socket.create_connection(listener.getsockname()))
        return listener, listener.getsockname()
    if kind == "unconnected":
        return keep(nonblocking(socket.socket())), None
    if kind == "unconnected-udp":
        return keep(nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))), None
    if kind == "unix":
        return keep(nonblocking(socket.socket(socket.AF_UNIX))), None
    if kind == "closed":
        sock = nonblocking(socket.socket())
        sock.close()
        return sock, None
    if kind == "closed-udp":
        sock = nonblocking(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        sock.close()
        return sock, None
    if kind == "file":
        return stack.enter_context(_file(tmp_path)), None
    return {"int": 42, "none": None}[kind], None


_LISTENING = object()   # stands for the address of a listening socket
_PEER = object()        # the UDP peer's address
_FILE = object()        # a regular file opened "rb"
_TEXT_FILE = object()   # the same, opened "r"
_BYTES_IO = object()    # a file object without a file descriptor
_RO = memoryview(b"read-only")
_STRIDED = memoryview(bytearray(8))[::2]

BAD_INPUT = [
    ("sock_recv", ["tcp", "closed", "unconnected", "listener", "int", "none", "file"],
     [(-1,), (0,), (5,), ("5",), (None,), (1.5,), (True,), (2 ** 63,)]),
    ("sock_recv", ["udp"], [(-1,), (0,), (100,)]),
    ("sock_recv_into", ["tcp", "closed", "int", "file"],
     [(bytearray(5),), (bytearray(0),), (b"ro",), (_RO,), ("str",), (None,), (_STRIDED,),
      (42,)]),
    ("sock_recvfrom", ["udp", "closed-udp", "tcp", "int"],
     [(-1,), (0,), (100,), ("5",), (None,), (2 ** 63,), (1.5,)]),
    ("sock_recvfrom_into", ["udp", "closed-udp", "int"],
     [(bytearray(100),), (bytearray(4), -1), (bytearray(4), 5), (bytearray(4), "2"),
      (b"ro",), (None,), (bytearray(100), None), (_STRIDED,), (bytearray(100), 3)]),
    ("sock_sendall", ["tcp", "closed", "unconnected", "int", "file"],
     [(b"x",), (b"",), (bytearray(b"ab"),), (memoryview(b"abc"),), ("str",), (None,), (42,),
      (_STRIDED,), ([1],)]),
    ("sock_sendto", ["udp", "unconnected-udp", "closed-udp", "int"],
     [(b"x", _PEER), ("s", _PEER), (None, _PEER), (b"x", "127.0.0.1:9"),
      (b"x", ("127.0.0.1", "9")), (b"x", ("127.0.0.1", -1)), (b"x", ("127.0.0.1", 70000)),
      (b"x", None), (b"x", ("127.0.0.1",)), (b"x", (None, 9)), (b"x", (b"127.0.0.1", 9)),
      (b"x", ("127.0.0.1", 9, 1)), (b"x", ("127.0.0.1", 9.0)), (b"x", ("127.0.0.1", True)),
      (b"x", ("", 9)), (b"x", ("<broadcast>", 9)), (b"x", ("::1", 9))]),
    ("sock_sendto", ["unix"], [(b"x", "/nonexistent/uringloop-test"), (b"x", 42),
                               (b"x", ("127.0.0.1", 9))]),
    ("sock_connect", ["unconnected", "closed", "unconnected-udp", "int"],
     [(_LISTENING,), ("127.0.0.1:80",), (("127.0.0.1", "_PORT"),), (("127.0.0.1", -1),),
      (("127.0.0.1", 70000),), (None,), (("127.0.0.1",),), (("127.0.0.1", "_PORT", 0, 0),),
      ((b"127.0.0.1", "_PORT"),), (("127.0.0.1", "_FLOATPORT"),), (42,), (("::1", 9),)]),
    ("sock_connect", ["unix"], [("/nonexistent/uringloop-test",),
                                (b"/nonexistent/uringloop-test",), (42,), (("127.0.0.1", 9),),
                                ("x" * 108,), ("\0" + "x" * 108,)]),
    ("sock_accept", ["listener", "closed", "unconnected", "udp", "tcp", "int", "none",
                     "file"], [()]),
    ("sock_sendfile", ["tcp", "closed", "udp", "int"],
     [(_FILE,), (_FILE, -1), (_FILE, 0, -1), (_FILE, "0"), (_FILE, 0, "5"), (None,),
      (_FILE, 5000), (_FILE, 0, 10), (_TEXT_FILE,), (_BYTES_IO,)]),
]


def _cases():
    for method, kinds, argsets in BAD_INPUT:
        for kind in kinds:
            for index in range(len(argsets)):
                yield pytest.param(method, kind, index, id=f"{method}-{kind}-{index}")


def _resolve(args, listening, peer, stack, tmp_path):
    port = listening[1]
    resolved = []
    for arg in args:
        if arg is _LISTENING:
            arg = listening
        elif arg is _PEER:
            arg = peer or ("127.0.0.1", 9)
        elif arg is _FILE:
            arg = stack.enter_context(_file(tmp_path))
        elif arg is _TEXT_FILE:
            arg = stack.enter_context(_file(tmp_path, "r"))
        elif arg is _BYTES_IO:
            arg = io.BytesIO(b"x" * 10)
        elif isinstance(arg, tuple):
            arg = tuple(str(port) if x == "_PORT" else float(port) if x == "_FLOATPORT"
                        else x for x in arg)
        resolved.append(arg)
    return resolved


def _outcome(loop, method, kind, index, tmp_path):
    """What ``loop.<method>`` does with this input: the exception (type and
    message) or a summary of the result."""
    argsets = next(argsets for m, kinds, argsets in BAD_INPUT
                   if m == method and kind in kinds)
    with contextlib.ExitStack() as stack:
        sock, peer = _socket_of(kind, stack, tmp_path)
        listener = tcp_listener()
        stack.callback(listener.close)
        args = _resolve(argsets[index], listener.getsockname(), peer, stack, tmp_path)

        async def call():
            return await asyncio.wait_for(getattr(loop, method)(sock, *args), 10)

        try:
            result = loop.run_until_complete(call())
        except Exception as exc:   # noqa: BLE001 -- the outcome is the point
            return type(exc), str(exc)
        if isinstance(result, tuple):
            if isinstance(result[0], socket.socket):
                stack.callback(result[0].close)
            # Ephemeral addresses differ from run to run: compare their kind.
            result = tuple(type(x) if isinstance(x, (tuple, socket.socket)) else x
                           for x in result)
        return "result", result


@pytest.mark.parametrize("method, kind, index", list(_cases()))
def test_bad_input_gets_asyncios_answer(loop, method, kind, index, tmp_path):
    reference = asyncio.SelectorEventLoop()
    try:
        expected = _outcome(reference, method, kind, index, tmp_path)
    finally:
        reference.close()
    assert _outcome(loop, method, kind, index, tmp_path) == expected


def test_connect_to_a_host_port_string_is_a_type_error(loop):
    with tcp_listener() as listener, nonblocking(socket.socket()) as sock:
        host, port = listener.getsockname()
        with pytest.raises(TypeError):
            run(loop, loop.sock_connect(sock, f"{host}:{port}"))
        # Nothing was connected meanwhile (the old code went to 0.0.0.1:2).
        with pytest.raises(OSError) as info:
            sock.getpeername()
        assert info.value.errno == errno.ENOTCONN


def test_connect_with_the_port_as_a_string_connects(loop):
    with tcp_listener() as listener, nonblocking(socket.socket()) as sock:
        host, port = listener.getsockname()
        run(loop, loop.sock_connect(sock, (host, str(port))))
        assert sock.getpeername() == (host, port)


@pytest.mark.parametrize("method", ["sock_recv", "sock_recvfrom"])
def test_negative_receive_size_is_a_value_error(loop, method):
    a, b = map(nonblocking, socket.socketpair())
    with a, b:
        with pytest.raises(ValueError, match="negative buffersize"):
            run(loop, getattr(loop, method)(a, -1))
