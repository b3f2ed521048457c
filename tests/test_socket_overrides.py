"""A socket whose class overrides the methods asyncio calls sees those calls.

asyncio's selector loop moves data through the socket object's own
``recv``/``recv_into``/``send``/``sendmsg``/``recvfrom``/``sendto``/
``connect``/``accept``, so a subclass that wraps them (websockets' suite
counts them in test_explicit_socket) sees every call, through transports,
servers and ``sock_*`` alike.  The ring moves data by fd; uringloop hands
such sockets to asyncio's own implementation.  Every test runs on both
loops (``loop`` fixture) except the one that checks a subclass keeping
socket's methods stays on the ring.
"""
import asyncio
import socket

import pytest

from uringloop._datagram import RingDatagramTransport
from uringloop._stream import RingStreamTransport

from .conftest import run, tls_contexts

_TRACKED = ("recv", "recv_into", "recvfrom", "recvfrom_into", "send", "sendmsg",
            "sendto", "connect", "accept")


class TrackedSocket(socket.socket):
    """Records the name of every tracked method called on it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = set()


def _tracking(name):
    def method(self, *args, **kwargs):
        self.calls.add(name)
        return getattr(socket.socket, name)(self, *args, **kwargs)
    method.__name__ = name
    return method


for _name in _TRACKED:
    setattr(TrackedSocket, _name, _tracking(_name))


class Collect(asyncio.Protocol):
    def __init__(self):
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.data += data

    def connection_lost(self, exc):
        self.lost.set_result(exc)


class CollectBuffered(Collect, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        self.buf = bytearray(4096)
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]


async def _echo(reader, writer):
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("protocol_class", [Collect, CollectBuffered])
def test_stream_transport_calls_the_sockets_methods(loop, protocol_class):
    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        sock = TrackedSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(server.sockets[0].getsockname())
        transport, protocol = await loop.create_connection(protocol_class, sock=sock)
        transport.write(b"hello ")
        transport.writelines([b"over ", b"a tracked socket"])
        while len(protocol.data) < 27:
            await asyncio.sleep(0.01)
        transport.close()
        await protocol.lost
        server.close()
        await server.wait_closed()
        return bytes(protocol.data), sock.calls

    data, calls = run(loop, main())
    assert data == b"hello over a tracked socket"
    read = "recv_into" if protocol_class is CollectBuffered else "recv"
    assert read in calls, calls
    assert calls & {"send", "sendmsg"}, calls


def test_tls_transport_calls_the_sockets_methods(loop, tmp_path):
    server_ctx, client_ctx = tls_contexts(tmp_path)

    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0, ssl=server_ctx)
        sock = TrackedSocket(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(server.sockets[0].getsockname())
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=client_ctx, server_hostname="localhost")
        writer.write(b"secret")
        reply = await reader.readexactly(6)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply, sock.calls

    reply, calls = run(loop, main())
    assert reply == b"secret"
    assert calls & {"recv", "recv_into"} and calls & {"send", "sendmsg"}, calls


def test_server_calls_the_listeners_accept(loop):
    async def main():
        listener = TrackedSocket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        server = await asyncio.start_server(_echo, sock=listener)
        reader, writer = await asyncio.open_connection(*listener.getsockname())
        writer.write(b"ping")
        reply = await reader.readexactly(4)
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return reply, listener.calls

    reply, calls = run(loop, main())
    assert reply == b"ping"
    assert "accept" in calls, calls


def test_datagram_transport_calls_the_sockets_methods(loop):
    async def main():
        peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        peer.bind(("127.0.0.1", 0))
        peer.setblocking(False)
        sock = TrackedSocket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        received = loop.create_future()

        class Proto(asyncio.DatagramProtocol):
            def datagram_received(self, data, addr):
                received.set_result(data)

        transport, _ = await loop.create_datagram_endpoint(Proto, sock=sock)
        transport.sendto(b"out", peer.getsockname())
        data, addr = await loop.sock_recvfrom(peer, 100)
        await loop.sock_sendto(peer, b"back", addr)
        back = await received
        transport.close()
        peer.close()
        return data, back, sock.calls

    data, back, calls = run(loop, main())
    assert (data, back) == (b"out", b"back")
    assert {"sendto", "recvfrom"} <= calls, calls


def test_sock_methods_call_the_sockets_methods(loop):
    async def main():
        listener = TrackedSocket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        client = TrackedSocket(socket.AF_INET, socket.SOCK_STREAM)
        client.setblocking(False)
        accepting = loop.create_task(loop.sock_accept(listener))
        await loop.sock_connect(client, listener.getsockname())
        conn, _ = await accepting
        with conn:
            await loop.sock_sendall(client, b"abc")
            assert await loop.sock_recv(conn, 3) == b"abc"
            await loop.sock_sendall(conn, b"xyz")
            buf = bytearray(3)
            assert await loop.sock_recv_into(client, buf) == 3
        client.close()
        listener.close()

        udp = TrackedSocket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.setblocking(False)
        with udp:
            await loop.sock_sendto(udp, b"one", udp.getsockname())
            assert (await loop.sock_recvfrom(udp, 10))[0] == b"one"
            await loop.sock_sendto(udp, b"two", udp.getsockname())
            buf = bytearray(10)
            assert (await loop.sock_recvfrom_into(udp, buf))[0] == 3
        return bytes(buf[:3]), listener.calls, client.calls, udp.calls

    data, listener_calls, client_calls, udp_calls = run(loop, main())
    assert data == b"two"
    assert listener_calls == {"accept"}
    assert {"connect", "send", "recv_into"} <= client_calls, client_calls
    assert udp_calls == {"sendto", "recvfrom", "recvfrom_into"}


def test_method_set_on_the_socket_object_is_called(loop):
    class Labelled(socket.socket):
        pass

    async def main():
        a, plain = socket.socketpair()
        b = Labelled(fileno=plain.detach())
        received = []

        def recv(n, *flags):
            data = socket.socket.recv(b, n, *flags)
            received.append(data)
            return data

        b.recv = recv
        with a, b:
            a.setblocking(False)
            b.setblocking(False)
            await loop.sock_sendall(a, b"own recv")
            return await loop.sock_recv(b, 100), received

    assert run(loop, main()) == (b"own recv", [b"own recv"])


def test_subclass_keeping_the_methods_stays_on_the_ring(uloop):
    class Labelled(socket.socket):
        pass

    async def main():
        server = await asyncio.start_server(_echo, "127.0.0.1", 0)
        sock = Labelled(socket.AF_INET, socket.SOCK_STREAM)
        sock.connect(server.sockets[0].getsockname())
        transport, protocol = await uloop.create_connection(Collect, sock=sock)
        udp = Labelled(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        datagram, _ = await uloop.create_datagram_endpoint(asyncio.DatagramProtocol, sock=udp)
        kinds = type(transport), type(datagram)
        transport.close()
        datagram.close()
        await protocol.lost
        server.close()
        await server.wait_closed()
        return kinds

    assert run(uloop, main()) == (RingStreamTransport, RingDatagramTransport)


def test_socket_class_patched_with_a_factory(loop, monkeypatch):
    # asyncssh's tests patch ``socket.socket`` with a function that makes
    # real sockets: asyncio's loop never looks that name up where it
    # checks a socket's type, so everything keeps working; sockets made
    # meanwhile (by the factory) are plain sockets, on the ring here.
    original = socket.socket

    def factory(family=socket.AF_INET, type=socket.SOCK_STREAM, proto=0, fileno=None):
        return original(family, type, proto, fileno)

    async def main():
        async def serve(reader, writer):
            writer.write(await reader.readexactly(5))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        address = server.sockets[0].getsockname()
        monkeypatch.setattr(socket, "socket", factory)
        try:
            reader, writer = await asyncio.open_connection(*address)
            writer.write(b"hello")
            assert await reader.read() == b"hello"
            writer.close()
            sock = factory()
            sock.setblocking(False)
            with sock:
                await loop.sock_connect(sock, address)
                await loop.sock_sendall(sock, b"again")
                assert await loop.sock_recv(sock, 10) == b"again"
            listener = factory()
            listener.bind(("127.0.0.1", 0))
            listener.listen()
            listener.setblocking(False)
            with listener, original() as client:
                client.connect(listener.getsockname())
                conn, _ = await loop.sock_accept(listener)
                conn.close()
        finally:
            monkeypatch.setattr(socket, "socket", original)
            server.close()
            await server.wait_closed()

    run(loop, main())
