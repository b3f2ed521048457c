"""Transports behave observably as asyncio's do: the context protocol
callbacks run in, how promptly close() lets go of the socket, how promptly
writes leave, and which error connection_lost reports.

Every test runs on uringloop and on asyncio's own loop (``loop`` fixture).
"""
import asyncio
import contextvars
import os
import socket

import pytest

from .conftest import run

request_id = contextvars.ContextVar("request_id", default=None)


class Recording(asyncio.Protocol):
    """Records, per callback name, the context variable's value there."""

    def __init__(self):
        self.seen = {}
        self.lost = asyncio.get_running_loop().create_future()

    def _note(self, name):
        self.seen.setdefault(name, set()).add(request_id.get())

    def connection_made(self, transport):
        self._note("connection_made")
        self.transport = transport

    def data_received(self, data):
        self._note("data_received")

    def eof_received(self):
        self._note("eof_received")

    def connection_lost(self, exc):
        self._note("connection_lost")
        if not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self._note("pause_writing")

    def resume_writing(self):
        self._note("resume_writing")


class RecordingBuffered(Recording, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        self._note("get_buffer")
        return bytearray(1024)

    def buffer_updated(self, nbytes):
        self._note("buffer_updated")


@pytest.mark.parametrize("protocol_class", [Recording, RecordingBuffered])
def test_server_callbacks_run_in_create_servers_context(loop, protocol_class):
    """Issue 11.1: what create_server's caller set is what an accepted
    connection's callbacks see (uvicorn's Server.serve() relies on it),
    not whatever context the loop happens to run completions in."""

    async def main():
        protocols = []

        async def serve():
            request_id.set("server")
            return await loop.create_server(
                lambda: protocols.append(protocol_class()) or protocols[-1],
                "127.0.0.1", 0)

        server = await asyncio.create_task(serve())
        assert request_id.get() is None
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        writer.write(b"x" * 5000)
        await writer.drain()
        writer.write_eof()
        await reader.read()  # the server closes after EOF
        writer.close()
        await writer.wait_closed()
        await protocols[0].lost
        server.close()
        await server.wait_closed()
        return protocols[0].seen

    seen = run(loop, main())
    expected = {"connection_made", "data_received", "eof_received", "connection_lost"}
    if protocol_class is RecordingBuffered:
        expected = expected - {"data_received"} | {"get_buffer", "buffer_updated"}
    assert set(seen) == expected
    for name, values in seen.items():
        assert values == {"server"}, (name, values)


def test_client_callbacks_run_in_create_connections_context(loop):
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)

        async def connect():
            request_id.set("client")
            return await loop.create_connection(Recording, *listener.getsockname())

        transport, proto = await asyncio.create_task(connect())
        peer, _ = await loop.sock_accept(listener)
        await loop.sock_sendall(peer, b"hello")
        peer.shutdown(socket.SHUT_WR)
        await proto.lost
        peer.close()
        listener.close()
        return proto.seen

    seen = run(loop, main())
    assert set(seen) == {"connection_made", "data_received", "eof_received", "connection_lost"}
    assert all(values == {"client"} for values in seen.values()), seen


def test_write_flow_control_callbacks_run_in_the_writers_context(loop):
    """asyncio calls pause_writing() inside write() and resume_writing()
    from the writer handle that write() registered: both in the context
    of the code that wrote."""
    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)

        async def connect():
            request_id.set("writer")
            return await loop.create_connection(Recording, *listener.getsockname())

        transport, proto = await asyncio.create_task(connect())
        peer, _ = await loop.sock_accept(listener)
        transport.set_write_buffer_limits(high=1, low=0)
        request_id.set("writing task")
        transport.write(b"y" * (8 << 20))
        for _ in range(500):
            if "pause_writing" in proto.seen:
                break
            await asyncio.sleep(0.01)
        total = 0
        while total < 8 << 20:
            chunk = await loop.sock_recv(peer, 1 << 20)
            total += len(chunk)
        for _ in range(500):
            if "resume_writing" in proto.seen:
                break
            await asyncio.sleep(0.01)
        transport.close()
        await proto.lost
        peer.close()
        listener.close()
        return proto.seen

    seen = run(loop, main())
    assert seen["pause_writing"] == {"writing task"}
    assert seen["resume_writing"] == {"writing task"}


class DatagramRecorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.seen = []
        self.got = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.seen.append(("connection_made", request_id.get()))

    def datagram_received(self, data, addr):
        self.seen.append(("datagram_received", request_id.get()))
        if not self.got.done():
            self.got.set_result(data)


def test_datagram_callbacks_run_in_the_endpoints_context(loop):
    async def main():
        async def open_endpoint():
            request_id.set("udp")
            return await loop.create_datagram_endpoint(
                DatagramRecorder, local_addr=("127.0.0.1", 0))

        transport, proto = await asyncio.create_task(open_endpoint())
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.sendto(b"ping", transport.get_extra_info("sockname"))
            await proto.got
        transport.close()
        await asyncio.sleep(0)
        return proto.seen

    seen = run(loop, main())
    assert seen == [("connection_made", "udp"), ("datagram_received", "udp")]


def test_read_pipe_callbacks_run_in_the_pipes_context(loop):
    async def main():
        read_fd, write_fd = os.pipe()

        async def connect():
            request_id.set("pipe")
            return await loop.connect_read_pipe(Recording, os.fdopen(read_fd, "rb", 0))

        transport, proto = await asyncio.create_task(connect())
        os.write(write_fd, b"data")
        os.close(write_fd)
        await proto.lost
        return proto.seen

    seen = run(loop, main())
    assert set(seen) == {"connection_made", "data_received", "eof_received", "connection_lost"}
    assert all(values == {"pipe"} for values in seen.values()), seen
