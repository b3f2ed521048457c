"""The hot paths leave no reference cycles behind: the cyclic garbage
collector has nothing to find after thousands of round trips (asyncio's
own loop leaves none either, and each cycle costs collector time under
load).  Both loops, the collector disabled while the traffic runs."""
import asyncio
import gc
import socket

from .conftest import run


def _garbage_after(loop, traffic, count=2000):
    async def main():
        await traffic(20)  # warm caches, free lists and lazily built state
        gc.collect()
        gc.disable()
        try:
            await traffic(count)
            return gc.collect()
        finally:
            gc.enable()

    return run(loop, main(), timeout=60)


def test_sock_round_trips_leave_no_cycles(loop):
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    buf = bytearray(100)

    async def traffic(count):
        for _ in range(count):
            await loop.sock_sendall(a, b"x" * 100)
            await loop.sock_recv(b, 100)
            await loop.sock_sendall(b, b"y" * 100)
            await loop.sock_recv_into(a, buf)

    try:
        assert _garbage_after(loop, traffic) == 0
    finally:
        a.close()
        b.close()


def test_sock_echo_server_leaves_no_cycles(loop):
    """The shape of a sock_* server (bench/echo_server.py --style sock): a
    task per TCP connection echoing with sock_recv/sock_sendall, each call
    suspending its task until the data is there; 10,000 round trips."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    message = b"m" * 1024

    async def serve(conn):
        with conn:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)

    async def traffic(count):
        client = socket.socket()
        client.setblocking(False)
        with client:
            await loop.sock_connect(client, listener.getsockname())
            conn, _ = await loop.sock_accept(listener)
            conn.setblocking(False)
            server = loop.create_task(serve(conn))
            for _ in range(count):
                await loop.sock_sendall(client, message)
                received = 0
                while received < len(message):
                    received += len(await loop.sock_recv(client, 65536))
            client.shutdown(socket.SHUT_WR)
            await server

    try:
        assert _garbage_after(loop, traffic, 10_000) == 0
    finally:
        listener.close()


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def test_stream_round_trips_leave_no_cycles(loop):
    async def setup():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        return server, reader, writer

    server, reader, writer = run(loop, setup())

    async def traffic(count):
        for _ in range(count):
            writer.write(b"z" * 1024)
            await reader.readexactly(1024)

    try:
        assert _garbage_after(loop, traffic) == 0
    finally:
        writer.close()
        server.close()
        run(loop, server.wait_closed())
