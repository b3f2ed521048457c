"""Stream data integrity: every byte reaches the protocol once, in wire
order, with EOF after the last one -- whatever the interleaving of
pause_reading, resume_reading, completions still in flight and
cancellations, and even when an exception stops the loop mid-turn.

Each test runs on uringloop (in both ring modes) and on asyncio's own
loop (the ``loop`` fixture or both kinds explicitly), so asyncio shows the
expected result.
Payloads are deterministic (seeded) and checked byte for byte.
"""
import asyncio
import random
import socket
import time

import pytest

from uringloop import _ring

from .conftest import LOOP_KINDS, finish_strict_loop, new_strict_loop, run


@pytest.fixture(autouse=True, params=["any-thread", "single-thread"])
def ring_mode(request, monkeypatch):
    """Every test runs in both ring modes: the default one and
    SINGLE_ISSUER + DEFER_TASKRUN, where arriving data waits in the
    kernel until the loop's next turn."""
    monkeypatch.setenv("URINGLOOP_SINGLE_THREAD", "1" if request.param == "single-thread" else "0")
    return request.param


def _payload(seed, size):
    return random.Random(seed).randbytes(size)


class PausingProtocol(asyncio.Protocol):
    """Records what arrives and pauses/resumes reading at random: resumes
    come from call_soon, call_later and from inside data_received itself,
    so they interleave with receives the kernel still has in flight."""

    def __init__(self, seed, done):
        self.rng = random.Random(seed)
        self.received = bytearray()
        self.events = []          # "data" / "eof" in the order they came
        self.done = done
        self.paused = False

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        assert not self.paused, "data_received while reading is paused"
        if self.events and self.events[-1] == "eof":
            raise AssertionError("data after eof")
        self.events.append("data")
        self.received += data
        choice = self.rng.random()
        if choice < 0.45:
            self.transport.pause_reading()
            self.paused = True
            loop = asyncio.get_running_loop()
            if self.rng.random() < 0.5:
                loop.call_soon(self._resume)
            else:
                loop.call_later(self.rng.random() * 0.003, self._resume)
        elif choice < 0.55:
            # pause and resume within one callback: the receive in flight
            # must neither be lost nor overtake anything
            self.transport.pause_reading()
            self.transport.resume_reading()

    def _resume(self):
        if self.transport.is_closing():
            return
        self.paused = False
        self.transport.resume_reading()

    def eof_received(self):
        self.events.append("eof")
        return False

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


def _blocking_send_all(addr, data, seed):
    rng = random.Random(seed)
    with socket.create_connection(addr) as sock:
        view = memoryview(data)
        while view:
            size = min(len(view), int(2 ** rng.uniform(0, 17)))
            sock.sendall(view[:size])
            view = view[size:]
            if rng.random() < 0.1:
                time.sleep(0.0005)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(65536):
            pass


async def _send_all(loop, addr, data, seed):
    """A client in another thread (so that its bytes arrive while the loop
    is busy) that writes ``data`` in random pieces with short pauses, then
    closes its write side and waits for the server to close."""
    await loop.run_in_executor(None, _blocking_send_all, addr, data, seed)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pause_resume_keeps_wire_order(loop, seed):
    """Issue 10.1: random pause/resume on a Protocol; several connections
    at once; the server sees exactly what each client sent, EOF last."""

    async def main():
        protocols = []

        def factory():
            proto = PausingProtocol(seed * 1000 + len(protocols), loop.create_future())
            protocols.append(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        payloads = [_payload(seed * 100 + i, 300_000 + 7919 * i) for i in range(4)]
        await asyncio.gather(*(_send_all(loop, addr, p, seed + i)
                               for i, p in enumerate(payloads)))
        await asyncio.gather(*(p.done for p in protocols))
        server.close()
        await server.wait_closed()
        received = sorted(bytes(p.received) for p in protocols)
        assert sorted(map(len, received)) == sorted(map(len, payloads))
        assert received == sorted(payloads)
        for proto in protocols:
            assert proto.events[-1] == "eof"
            assert proto.events.count("eof") == 1

    run(loop, main(), timeout=60)


@pytest.mark.parametrize("limit", [64, 1024])
def test_stream_reader_over_its_limit_loses_nothing(loop, limit):
    """Issue 10.1: a StreamReader with a small limit pauses the transport
    on nearly every chunk; a slow reader must still get every byte in
    order ("feed_data after feed_eof" was the symptom)."""
    payload = _payload(limit, 1 << 20)

    async def main():
        got = loop.create_future()

        async def handler(reader, writer):
            rng = random.Random(limit)
            data = bytearray()
            while True:
                chunk = await reader.read(rng.randrange(1, 3 * limit))
                if not chunk:
                    break
                data += chunk
                if rng.random() < 0.05:
                    await asyncio.sleep(0.001)
            got.set_result(bytes(data))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=limit)
        addr = server.sockets[0].getsockname()
        await _send_all(loop, addr, payload, limit)
        data = await got
        server.close()
        await server.wait_closed()
        assert len(data) == len(payload)
        assert data == payload

    run(loop, main(), timeout=60)


class PausingBufferedProtocol(asyncio.BufferedProtocol):
    def __init__(self, seed, done):
        self.rng = random.Random(seed)
        self.buffer = bytearray(4096)
        self.received = bytearray()
        self.eof = False
        self.done = done

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return memoryview(self.buffer)[:self.rng.randrange(1, 4097)]

    def buffer_updated(self, nbytes):
        assert not self.eof
        self.received += self.buffer[:nbytes]
        if self.rng.random() < 0.4:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(
                self.rng.random() * 0.002, self.transport.resume_reading)

    def eof_received(self):
        self.eof = True

    def connection_lost(self, exc):
        self.done.set_result(exc)


def test_buffered_protocol_pause_resume_keeps_wire_order(loop):
    payload = _payload(7, 400_000)

    async def main():
        done = loop.create_future()
        proto = PausingBufferedProtocol(7, done)
        server = await loop.create_server(lambda: proto, "127.0.0.1", 0)
        await _send_all(loop, server.sockets[0].getsockname(), payload, 7)
        await done
        server.close()
        await server.wait_closed()
        assert proto.eof
        assert bytes(proto.received) == payload

    run(loop, main(), timeout=60)


def test_pause_resume_churn_many_connections(loop):
    """A churn of short connections, each paused and resumed at random
    while its data and EOF are in flight (deterministic seeds)."""

    async def main():
        protocols = []

        def factory():
            proto = PausingProtocol(len(protocols), loop.create_future())
            protocols.append(proto)
            return proto

        server = await loop.create_server(factory, "127.0.0.1", 0)
        addr = server.sockets[0].getsockname()
        payloads = [_payload(i, random.Random(i).randrange(1, 40_000)) for i in range(60)]
        for start in range(0, len(payloads), 12):
            await asyncio.gather(*(_send_all(loop, addr, payloads[i], i)
                                   for i in range(start, start + 12)))
        await asyncio.gather(*(p.done for p in protocols))
        server.close()
        await server.wait_closed()
        assert sorted(bytes(p.received) for p in protocols) == sorted(payloads)
        assert all(p.events[-1] == "eof" for p in protocols)

    run(loop, main(), timeout=90)


def test_data_behind_held_data_waits_its_turn(loop):
    """Issue 10.1, step by step: two receives complete in one turn, the
    first pauses reading (the second is held) and schedules a resume; a
    third chunk completes before the held one is delivered.  It must come
    after the held one, not before."""
    first, second, third = b"A" * 100, b"B" * 100, b"C" * 100

    class Pauser(asyncio.Protocol):
        def __init__(self):
            self.received = bytearray()
            self.client = None

        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.received += data
            if self.client is not None:
                client, self.client = self.client, None
                client.sendall(third)
                time.sleep(0.02)
                self.transport.pause_reading()
                loop.call_soon(self.transport.resume_reading)

    async def main():
        proto = Pauser()
        server = await loop.create_server(lambda: proto, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname())
        await asyncio.sleep(0.05)  # accepted, receive armed
        proto.client = client
        # Two separate completions, both waiting when the loop next turns.
        client.sendall(first)
        time.sleep(0.02)
        client.sendall(second)
        time.sleep(0.02)
        for _ in range(50):
            await asyncio.sleep(0.005)
            if len(proto.received) == 300:
                break
        client.close()
        server.close()
        await server.wait_closed()
        assert bytes(proto.received) == first + second + third

    run(loop, main())


# -- an exception escaping a callback mid-turn ------------------------------

class Recorder(asyncio.Protocol):
    def __init__(self):
        self.received = bytearray()

    def data_received(self, data):
        self.received += data


@pytest.mark.parametrize("kind", list(LOOP_KINDS))
def test_keyboard_interrupt_mid_turn_delivers_reaped_bytes(monkeypatch, kind):
    """Issue 10.3: completions reaped in a turn whose callbacks were cut
    short by a KeyboardInterrupt are delivered with their own bytes when
    the loop runs again, although the next turn recycles buffers.  With a
    pool of two provided buffers (and DEFER_TASKRUN, which holds arriving
    data until the turn) the next connection's bytes land in the buffer of
    the undelivered ones at once."""
    monkeypatch.setattr(_ring, "_RECV_BUFFER_COUNT", 2)
    loop = new_strict_loop(kind)
    try:
        protocols = []

        def factory():
            protocols.append(Recorder())
            return protocols[-1]

        server = loop.run_until_complete(
            loop.create_server(factory, "127.0.0.1", 0))
        addr = server.sockets[0].getsockname()
        one = socket.create_connection(addr)
        loop.run_until_complete(asyncio.sleep(0.05))  # accepted, reading
        two = socket.create_connection(addr)
        loop.run_until_complete(asyncio.sleep(0.05))

        first, second, third = b"a" * 1000, b"b" * 1000, b"c" * 1000
        one.sendall(first)
        time.sleep(0.02)

        def interrupt():
            raise KeyboardInterrupt

        # Scheduled before the turn that reaps `first`, so it runs before
        # that turn's completions and stops the loop with them unrun.
        loop.call_soon(interrupt)
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()

        one.sendall(second)
        two.sendall(third)
        time.sleep(0.02)
        loop.run_until_complete(asyncio.sleep(0.1))
        assert [bytes(p.received) for p in protocols] == [first + second, third]
        one.close()
        two.close()
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        finish_strict_loop(loop)
