"""Cancellation storms with exact data: reads cancelled at random while
bytes keep arriving from another thread lose nothing and reorder nothing.

Streams run on both loops (a cancelled ``StreamReader.read`` leaves its
data in the reader on asyncio too).  ``sock_recv``/``sock_recv_into`` run
on uringloop alone: asyncio's own loop drops bytes when a task is
cancelled after its receive completed, which uringloop promises not to do
(a late result goes to the socket's next caller).  Seeds are fixed.
"""
import asyncio
import random
import socket
import threading
import time

import pytest

from .conftest import run


def _feed(sock, data, seed):
    rng = random.Random(seed)
    view = memoryview(data)
    while view:
        size = min(len(view), rng.randrange(1, 20000))
        sock.sendall(view[:size])
        view = view[size:]
        if rng.random() < 0.2:
            time.sleep(0.0005)
    sock.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("seed", [11, 12])
def test_stream_reads_cancelled_at_random_lose_nothing(loop, seed):
    payload = random.Random(seed).randbytes(1 << 20)

    async def main():
        got = loop.create_future()

        async def handler(reader, writer):
            rng = random.Random(seed)
            data = bytearray()
            cancelled = 0
            while True:
                try:
                    # A zero timeout cancels a read that has to wait.
                    timeout = 0 if rng.random() < 0.3 else rng.random() * 0.002
                    chunk = await asyncio.wait_for(reader.read(rng.randrange(1, 70000)),
                                                   timeout)
                except asyncio.TimeoutError:
                    cancelled += 1
                    continue
                if not chunk:
                    break
                data += chunk
            got.set_result((bytes(data), cancelled))
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0, limit=4096)
        client = socket.create_connection(server.sockets[0].getsockname())
        feeder = threading.Thread(target=_feed, args=(client, payload, seed))
        feeder.start()
        data, cancelled = await got
        feeder.join()
        client.close()
        server.close()
        await server.wait_closed()
        return data, cancelled

    data, cancelled = run(loop, main(), timeout=60)
    assert cancelled > 0
    assert data == payload


@pytest.mark.parametrize("method", ["sock_recv", "sock_recv_into"])
@pytest.mark.parametrize("seed", [21, 22])
def test_sock_receives_cancelled_at_random_lose_nothing(uloop, method, seed):
    payload = random.Random(seed).randbytes(1 << 20)

    async def main():
        rng = random.Random(seed)
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        feeder = threading.Thread(target=_feed, args=(writer, payload, seed))
        feeder.start()
        data = bytearray()
        cancelled = 0
        buf = bytearray(70000)
        while True:
            size = rng.randrange(1, 70000)
            if method == "sock_recv":
                task = asyncio.ensure_future(uloop.sock_recv(reader, size))
            else:
                task = asyncio.ensure_future(
                    uloop.sock_recv_into(reader, memoryview(buf)[:size]))
            for _ in range(rng.randrange(0, 4)):
                await asyncio.sleep(0)
            if rng.random() < 0.5:
                task.cancel()
            try:
                result = await task
            except asyncio.CancelledError:
                cancelled += 1
                continue
            chunk = result if method == "sock_recv" else bytes(buf[:result])
            if not chunk:
                break
            data += chunk
        feeder.join()
        reader.close()
        writer.close()
        return bytes(data), cancelled

    data, cancelled = run(uloop, main(), timeout=60)
    assert cancelled > 0
    assert len(data) == len(payload)
    assert data == payload
