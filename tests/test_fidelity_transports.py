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

from .conftest import run, tls_contexts

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


# -- close is as prompt as asyncio's ----------------------------------------

async def _connected_pair(loop, protocol=asyncio.Protocol):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    transport, proto = await loop.create_connection(protocol, *listener.getsockname())
    peer, _ = await loop.sock_accept(listener)
    listener.close()
    await asyncio.sleep(0.01)  # reading has started
    return transport, proto, peer


@pytest.mark.parametrize("how", ["close", "abort"])
def test_stream_close_releases_the_socket_after_one_iteration(loop, how):
    """Issue 11.2: after close()/abort() and one ``await sleep(0)`` the
    socket is closed (fileno() == -1) and the peer sees the end, as on
    asyncio -- although uringloop's receive is still being cancelled."""

    async def main():
        transport, proto, peer = await _connected_pair(loop)
        sock = transport.get_extra_info("socket")
        getattr(transport, how)()
        await asyncio.sleep(0)
        fileno = sock.fileno()
        peer.setblocking(False)
        try:
            end = peer.recv(100)
        except ConnectionResetError:
            end = b""
        except BlockingIOError:
            end = None
        peer.close()
        return fileno, end

    fileno, end = run(loop, main())
    assert fileno == -1
    assert end == b""


@pytest.mark.parametrize("how", ["close", "abort"])
def test_datagram_close_releases_the_socket_after_one_iteration(loop, how):
    async def main():
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        await asyncio.sleep(0.01)
        sock = transport.get_extra_info("socket")
        getattr(transport, how)()
        await asyncio.sleep(0)
        return sock.fileno()

    assert run(loop, main()) == -1


def test_close_after_writes_drain_releases_the_socket_promptly(loop):
    """close() with data still queued: connection_lost and the socket's
    close follow the drain, and the peer gets every byte, then EOF."""

    async def main():
        transport, proto, peer = await _connected_pair(loop)
        sock = transport.get_extra_info("socket")
        payload = os.urandom(4 << 20)
        transport.write(payload)
        transport.close()
        received = bytearray()
        while True:
            chunk = await loop.sock_recv(peer, 1 << 20)
            if not chunk:
                break
            received += chunk
        for _ in range(100):
            if sock.fileno() == -1:
                break
            await asyncio.sleep(0)
        peer.close()
        return bytes(received) == payload, sock.fileno()

    assert run(loop, main()) == (True, -1)


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_cancelled_create_connection_with_sock_closes_it(loop, family, tmp_path):
    async def main():
        if family == "tcp":
            listener = socket.create_server(("127.0.0.1", 0))
            sock = socket.create_connection(listener.getsockname())
            create = loop.create_connection
        else:
            path = str(tmp_path / "s")
            listener = socket.socket(socket.AF_UNIX)
            listener.bind(path)
            listener.listen()
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            create = loop.create_unix_connection
        sock.setblocking(False)
        task = asyncio.create_task(create(asyncio.Protocol, sock=sock))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(3):
            await asyncio.sleep(0)
        listener.close()
        return sock.fileno()

    assert run(loop, main()) == -1


class KeepOpenOnEof(Recording):
    def eof_received(self):
        self._note("eof_received")
        return True  # keep writing after the peer's FIN, as a server may


@pytest.mark.parametrize("protocol", [KeepOpenOnEof, Recording])
def test_writing_to_a_closed_peer_reports_the_error(loop, protocol):
    """Issue 11.5: writes to a peer that has gone (closed with our bytes
    unread: a reset) end the connection with BrokenPipeError or
    ConnectionResetError in connection_lost, not None."""

    async def main():
        transport, proto, peer = await _connected_pair(loop, protocol)
        transport.write(b"unread")
        await asyncio.sleep(0.01)
        peer.close()
        for _ in range(200):
            if proto.lost.done():
                break
            transport.write(b"x" * 65536)
            await asyncio.sleep(0.005)
        return await proto.lost

    exc = run(loop, main())
    assert isinstance(exc, (BrokenPipeError, ConnectionResetError)), repr(exc)


# -- writes leave as promptly as asyncio's ----------------------------------

def test_back_to_back_writes_reach_the_peer_within_one_iteration(loop):
    """Issue 11.3: write(a); write(b) in one callback: after one
    iteration the peer has both, as on asyncio (whose write() sends at
    once), not only a (b waiting for a's completion and another turn)."""

    async def main():
        transport, proto, peer = await _connected_pair(loop)
        peer.setblocking(False)
        arrived = []
        for size in (1, 1000, 100_000):
            a, b = b"a" * size, b"b" * size
            transport.write(a)
            transport.write(b)
            await asyncio.sleep(0)
            got = bytearray()
            try:
                while len(got) < 2 * size:
                    got += peer.recv(1 << 20)
            except BlockingIOError:
                pass
            arrived.append(bytes(got) == a + b)
        transport.close()
        peer.close()
        return arrived

    assert run(loop, main()) == [True, True, True]


# -- TLS runs on the ring transports ----------------------------------------

def test_tls_echo_runs_on_the_ring(loop, tmp_path):
    """ssl= streams: every byte echoed through TLS, and on uringloop the
    TLS layer sits on the ring's stream transport, not on asyncio's
    selector transport (asyncio's _make_ssl_transport builds that one
    directly)."""
    from uringloop._stream import RingStreamTransport

    server_ctx, client_ctx = tls_contexts(tmp_path)
    payload = os.urandom(1 << 20)

    async def main():
        raw_transports = []

        async def echo(reader, writer):
            raw_transports.append(writer.transport._ssl_protocol._transport)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        reader, writer = await asyncio.open_connection(
            *server.sockets[0].getsockname(), ssl=client_ctx)
        raw_transports.append(writer.transport._ssl_protocol._transport)

        async def send():
            writer.write(payload)
            await writer.drain()

        sender = asyncio.create_task(send())
        echoed = await reader.readexactly(len(payload))
        await sender
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return echoed == payload, {type(t) for t in raw_transports}

    same, kinds = run(loop, main(), timeout=60)
    assert same
    if loop.is_uring:
        assert kinds == {RingStreamTransport}


@pytest.mark.parametrize("how", ["close", "abort", "peer"])
def test_closed_transports_leave_nothing_in_the_ops_table(uloop, how):
    """Closing a transport while its receive is in flight (the prompt
    close) must still release its send queue: after many connections the
    ring holds no more entries than before."""

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        await asyncio.sleep(0)
        before = uloop._ring.pending()
        for _ in range(50):
            transport, proto = await uloop.create_connection(
                Recording, *listener.getsockname())
            peer, _ = await uloop.sock_accept(listener)
            transport.write(b"x" * 10000)
            await asyncio.sleep(0)
            if how == "peer":
                peer.close()
            else:
                getattr(transport, how)()
            await proto.lost
            peer.close()
        for _ in range(10):
            await asyncio.sleep(0.01)
        listener.close()
        return before, uloop._ring.pending()

    before, after = run(uloop, main())
    assert after == before


def test_server_serves_a_connection_reset_before_accept(loop):
    """asyncio's server makes a protocol for a connection whose client
    reset it before the accept ran (it then sees the reset); uringloop
    used to drop it silently."""
    import struct

    async def main():
        protocols = []
        listener = socket.create_server(("127.0.0.1", 0))
        client = socket.create_connection(listener.getsockname())
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # RST while the connection waits in the accept queue
        server = await loop.create_server(
            lambda: protocols.append(Recording()) or protocols[-1], sock=listener)
        for _ in range(200):
            if protocols and protocols[0].lost.done():
                break
            await asyncio.sleep(0.005)
        server.close()
        await server.wait_closed()
        return [sorted(p.seen) for p in protocols]

    seen = run(loop, main())
    assert len(seen) == 1
    assert "connection_made" in seen[0] and "connection_lost" in seen[0]


class Compacting(asyncio.BufferedProtocol):
    """One bytearray handed out by every get_buffer() and trimmed in
    buffer_updated(), as a framing parser may do: asyncio's recv_into lets
    go of the buffer before buffer_updated(), so resizing it there works."""

    def __init__(self):
        self.buf = bytearray(16)
        self.data = bytearray()
        self.lost = asyncio.get_running_loop().create_future()

    def get_buffer(self, sizehint):
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        del self.buf[:nbytes]           # a resize: BufferError while exported
        self.buf.extend(bytes(nbytes))

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_buffered_protocol_may_resize_its_buffer_in_buffer_updated(loop):
    payload = os.urandom(5000)

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        listener.setblocking(False)
        transport, proto = await loop.create_connection(Compacting, *listener.getsockname())
        peer, _ = await loop.sock_accept(listener)
        await loop.sock_sendall(peer, payload)
        peer.shutdown(socket.SHUT_WR)
        exc = await proto.lost
        peer.close()
        listener.close()
        return exc, bytes(proto.data)

    exc, data = run(loop, main())
    assert exc is None
    assert data == payload


class Holding(asyncio.BufferedProtocol):
    """Its buffer is a view on a bytearray it owns (SSLProtocol's shape)."""

    def __init__(self):
        self.store = bytearray(1024)
        self.view = memoryview(self.store)

    def get_buffer(self, sizehint):
        return self.view

    def buffer_updated(self, nbytes):
        pass


@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_loop_closed_with_a_buffered_receive_in_flight_unpins_the_buffer(loop):
    """The kernel is done with the buffer once the loop has closed: a
    buffer still exported then makes the cycle collector's clearing of the
    protocol's memoryview fail and CPython crash (aiohttp's test teardown
    collects right after closing its loop, with TLS connections open)."""

    async def main():
        listener = socket.create_server(("127.0.0.1", 0))
        sock = socket.create_connection(listener.getsockname())
        transport, proto = await loop.create_connection(Holding, sock=sock)
        await asyncio.sleep(0.01)  # reading has started
        return listener, sock, transport, proto

    listener, sock, transport, proto = run(loop, main())
    loop.close()
    try:
        proto.view.release()  # BufferError while the transport pins it
        proto.store.extend(b"x")
    finally:
        sock.close()
        listener.close()


class WriteThenAbort(asyncio.Protocol):
    def connection_made(self, transport):
        transport.write(b"last words")
        transport.abort()


def test_abort_right_after_write_keeps_what_the_kernel_took(loop):
    """asyncio's write() hands the bytes to the kernel at once when nothing
    is buffered, so an abort() that follows drops nothing of them (an
    aiohttp server writes its response, then aborts)."""

    async def main():
        server = await loop.create_server(WriteThenAbort, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return data

    assert run(loop, main()) == b"last words"


class Idling(asyncio.BufferedProtocol):
    """Records its get_buffer() calls; its bytearray may be resized at any
    time between reads (a parser that grows or trims its buffer when a
    timer or a write of its own says so)."""

    def __init__(self, buffer_size=64, pause_every_update=False):
        self.buf = bytearray(buffer_size)
        self.hints = []
        self.data = bytearray()
        self.pause_every_update = pause_every_update
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes):
        self.data += self.buf[:nbytes]
        if self.pause_every_update:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_soon(self.transport.resume_reading)

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


async def _buffered_pair(loop, factory):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    transport, proto = await loop.create_connection(factory, *listener.getsockname())
    peer, _ = await loop.sock_accept(listener)
    listener.close()
    return transport, proto, peer


def test_buffered_protocol_is_asked_for_a_buffer_only_when_data_came(loop):
    # asyncio calls get_buffer(-1) when the socket is readable and fills
    # the buffer at once; until then the protocol owns it and may resize
    # it (a receive in flight into it made that a BufferError).
    async def main():
        transport, proto, peer = await _buffered_pair(loop, Idling)
        for _ in range(5):
            await asyncio.sleep(0)
        asked_while_idle = list(proto.hints)
        proto.buf.extend(bytes(64))          # a resize while idle
        await loop.sock_sendall(peer, b"x" * 100)
        while len(proto.data) < 100:
            await asyncio.sleep(0.001)
        proto.buf[:] = bytes(32)             # and another one, shrinking
        await loop.sock_sendall(peer, b"y" * 10)
        while len(proto.data) < 110:
            await asyncio.sleep(0.001)
        transport.close()
        await proto.lost
        peer.close()
        return asked_while_idle, set(proto.hints), bytes(proto.data)

    asked_while_idle, hints, data = run(loop, main())
    assert asked_while_idle == []
    assert hints == {-1}
    assert data == b"x" * 100 + b"y" * 10


def test_buffered_protocol_pausing_after_every_small_buffer_gets_every_byte(loop):
    # A 7-byte buffer, reading paused after each buffer_updated() and
    # resumed from the ready queue: nothing lost, nothing reordered.
    payload = os.urandom(20_000)

    async def main():
        transport, proto, peer = await _buffered_pair(
            loop, lambda: Idling(buffer_size=7, pause_every_update=True))
        await loop.sock_sendall(peer, payload)
        peer.shutdown(socket.SHUT_WR)
        exc = await proto.lost
        peer.close()
        return exc, bytes(proto.data)

    exc, data = run(loop, main(), timeout=60)
    assert exc is None
    assert data == payload


class FailingUpdate(Idling):
    def buffer_updated(self, nbytes):
        raise ZeroDivisionError("in buffer_updated")


def test_buffer_updated_failing_is_reported_with_asyncios_message(loop):
    async def main():
        contexts = []
        loop.set_exception_handler(lambda _loop, context: contexts.append(context))
        transport, proto, peer = await _buffered_pair(loop, FailingUpdate)
        await loop.sock_sendall(peer, b"boom")
        exc = await proto.lost
        peer.close()
        return exc, contexts

    exc, contexts = run(loop, main())
    assert isinstance(exc, ZeroDivisionError)
    assert [c["message"] for c in contexts] == [
        "Fatal error: protocol.buffer_updated() call failed."]
