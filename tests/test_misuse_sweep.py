"""The loop API beyond ``sock_*`` and files under bad input and misuse,
measured differentially: each case runs on asyncio's selector loop and on
uringloop, and what it observed must be the same.

A case is ``async def case(loop, ob)``; it calls the loop or a transport
through ``ob`` (``ob.call``, ``await ob.acall``), which records the return
value or the exception's type and message, and notes state with
``ob.note``.  After the case the harness adds the exception handler's calls
(message, exception type and text) and what the ``asyncio`` logger said at
WARNING and above, then compares the two records.  asyncio's behaviour
differs between 3.11, 3.12 and 3.13 in places (writelines, empty
datagrams): the reference is the asyncio of the running Python, so the
sweep follows it.  Ports, fd numbers and object addresses differ between
runs and are normalised away.
"""
import array
import asyncio
import gc
import contextlib
import logging
import os
import re
import signal
import socket
import ssl
import sys
import tempfile

import pytest

from .conftest import finish_strict_loop, new_strict_loop

pytestmark = pytest.mark.filterwarnings("ignore:coroutine .*_coro. was never awaited")

CASES = {}


def case(*variants):
    """Register ``fn`` as a case, once per variant (passed as ``kind``)."""
    def register(fn):
        name = fn.__name__
        if variants:
            for kind in variants:
                CASES[f"{name}[{kind}]"] = (fn, kind)
        else:
            CASES[name] = (fn, None)
        return fn
    return register


# -- recording ---------------------------------------------------------

_HEX = re.compile(r"0x[0-9a-f]+")
_FD = re.compile(r"fd=\d+")
# The transport classes differ by name and by how they say they read.
_TRANSPORT_REPR = re.compile(r"<(_Selector|Ring)\w*Transport [^>]*>>?")


class Observer:
    def __init__(self, loop):
        self.loop = loop
        self.record = []
        self.ports = set()
        self.paths = set()
        self.cleanup = []

    def norm(self, text):
        text = _TRANSPORT_REPR.sub("<transport>", str(text))
        # Paths first: a temporary directory's random name may hold "0x".
        for path in sorted(self.paths, key=len, reverse=True):
            text = text.replace(path, "PATH")
        text = _HEX.sub("0x?", _FD.sub("fd=?", text))
        for port in sorted(self.ports, key=lambda p: -len(str(p))):
            text = re.sub(rf"\b{port}\b", "PORT", text)
        return text

    def value(self, value):
        if value is None or isinstance(value, (bool, int, float, bytes, str)):
            return self.norm(repr(value))
        if isinstance(value, (tuple, list)):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, asyncio.BaseTransport):
            self.cleanup.append(value)
            return "<transport>"
        if isinstance(value, asyncio.BaseProtocol):
            return "<protocol>"
        return f"<{type(value).__name__}>"

    def error(self, exc):
        return ("raise", type(exc).__name__, self.norm(exc))

    def call(self, label, fn, *args, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            outcome = self.error(exc)
        else:
            outcome = ("ok", self.value(result))
        self.record.append((label, outcome))
        return outcome

    async def acall(self, label, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` awaited; a synchronous raise counts too."""
        try:
            result = await fn(*args, **kwargs)
        except Exception as exc:
            outcome = self.error(exc)
        else:
            outcome = ("ok", self.value(result))
        self.record.append((label, outcome))
        return outcome

    def note(self, label, value):
        self.record.append((label, self.value(value)))


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append((record.levelname, record.getMessage()))


def run_case(kind_of_loop, fn, variant):
    loop = new_strict_loop(kind_of_loop)
    ob = Observer(loop)
    capture = LogCapture()
    asyncio_logger = logging.getLogger("asyncio")
    asyncio_logger.addHandler(capture)
    try:
        async def main():
            try:
                await (fn(loop, ob, variant) if variant is not None else fn(loop, ob))
            finally:
                for transport in ob.cleanup:
                    transport.abort() if hasattr(transport, "abort") else transport.close()
                await turns(3)
        loop.run_until_complete(asyncio.wait_for(main(), 20))
        for context in loop.handler_calls:
            exc = context.get("exception")
            ob.record.append(("handler", ob.norm(context["message"]),
                              None if exc is None else ob.error(exc)))
        loop.handler_calls.clear()
    finally:
        asyncio_logger.removeHandler(capture)
        finish_strict_loop(loop)
    ob.record.extend(("log", level, ob.norm(msg)) for level, msg in capture.messages)
    return ob.record


def pytest_generate_tests(metafunc):
    # The cases are registered below this test, by the module as it loads.
    if "case_name" in metafunc.fixturenames:
        metafunc.parametrize("case_name", list(CASES))


def test_misuse_matches_asyncio(case_name):
    fn, variant = CASES[case_name]
    expected = run_case("asyncio", fn, variant)
    got = run_case("uringloop", fn, variant)
    assert got == expected


# -- helpers -------------------------------------------------------------

async def turns(n=3):
    for _ in range(n):
        await asyncio.sleep(0)


class Recording(asyncio.Protocol):
    def __init__(self):
        self.events = []
        self.data = b""
        self.lost = None

    def connection_made(self, transport):
        self.events.append("made")

    def data_received(self, data):
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append(f"lost {type(exc).__name__ if exc else None}")
        if self.lost is not None and not self.lost.done():
            self.lost.set_result(exc)

    def pause_writing(self):
        self.events.append("pause_writing")

    def resume_writing(self):
        self.events.append("resume_writing")


async def read_to_eof(loop, sock):
    """Everything the peer socket gets until EOF (or a reset)."""
    data = b""
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), 5)
        except ConnectionResetError:
            return data + b"<reset>"
        if not chunk:
            return data
        data += chunk


STREAM_KINDS = ("tcp", "unix", "accepted", "connect_accepted")


async def stream_pair(loop, ob, kind):
    """(transport, protocol, peer socket) of a connected stream transport."""
    protocol = Recording()
    protocol.lost = loop.create_future()
    if kind == "unix":
        directory = tempfile.mkdtemp()
        path = os.path.join(directory, "s")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        ob.paths.add(path)
    else:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        ob.ports.add(listener.getsockname()[1])
    listener.listen(4)
    listener.setblocking(False)
    if kind == "tcp":
        transport, _ = await loop.create_connection(lambda: protocol, *listener.getsockname())
        peer, _ = await loop.sock_accept(listener)
    elif kind == "unix":
        transport, _ = await loop.create_unix_connection(lambda: protocol, path)
        peer, _ = await loop.sock_accept(listener)
    elif kind == "connect_accepted":
        peer = socket.socket()
        peer.setblocking(False)
        await loop.sock_connect(peer, listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
        transport, _ = await loop.connect_accepted_socket(lambda: protocol, conn)
    else:  # accepted by create_server
        listener.close()
        made = loop.create_future()

        def factory():
            made.set_result(None)
            return protocol
        server = await loop.create_server(factory, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ob.ports.add(port)
        peer = socket.socket()
        peer.setblocking(False)
        await loop.sock_connect(peer, ("127.0.0.1", port))
        await made
        await turns()
        server.close()
        transport = protocol_transport(protocol, loop)
        listener = None
    if listener is not None:
        listener.close()
    peer.setblocking(False)
    if peer.family != socket.AF_UNIX:
        ob.ports.add(peer.getsockname()[1])
        ob.ports.add(transport.get_extra_info("sockname")[1])
    ob.cleanup.append(peer)
    await turns()
    return transport, protocol, peer


def protocol_transport(protocol, loop):
    return protocol.transport


_made = Recording.connection_made


def _remember_transport(self, transport):
    self.transport = transport
    _made(self, transport)


Recording.connection_made = _remember_transport


async def finish_stream(loop, ob, transport, protocol, peer):
    """Close the transport, then note what the peer got and the events."""
    transport.close()
    ob.note("peer got", await read_to_eof(loop, peer))
    await asyncio.wait_for(protocol.lost, 5)
    await turns()
    ob.note("events", protocol.events)
    ob.note("is_closing", transport.is_closing())


# -- stream transports ---------------------------------------------------

BAD_WRITES = {
    "str": lambda: "text",
    "int": lambda: 42,
    "none": lambda: None,
    "list": lambda: [b"a"],
    "non_contiguous_view": lambda: memoryview(b"abcdefgh")[::2],
    "int_view": lambda: memoryview(bytearray(range(8))).cast("i"),
    "empty": lambda: b"",
    "empty_view": lambda: memoryview(b""),
    "bytearray": lambda: bytearray(b"xy"),
    "bytes_subclass": lambda: _BytesSubclass(b"sub"),
}


class _BytesSubclass(bytes):
    def __bytes__(self):  # send() reads the buffer, never this
        return b"what __bytes__ says"


@case(*[f"{k}-{w}" for k in STREAM_KINDS for w in BAD_WRITES])
async def stream_write_bad_data(loop, ob, variant):
    kind, what = variant.split("-")
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.call("write", transport.write, BAD_WRITES[what]())
    ob.note("is_closing", transport.is_closing())
    await turns()
    # (Right after write() asyncio counts only what send() refused; the
    # ring counts what the kernel has not confirmed: compared once sent.)
    ob.note("buffer size", transport.get_write_buffer_size())
    ob.call("write ok", transport.write, b"tail")
    await finish_stream(loop, ob, transport, protocol, peer)


WRITELINES = {
    "str_item": lambda: [b"a", "b"],
    "int_item": lambda: [b"a", 1],
    "not_iterable": lambda: 5,
    "generator": lambda: (bytes([c]) for c in b"gen"),
    "empty": lambda: [],
    "views": lambda: [memoryview(b"ab"), bytearray(b"cd"), b"ef"],
    "none": lambda: None,
}


@case(*[f"{k}-{w}" for k in ("tcp", "unix") for w in WRITELINES])
async def stream_writelines(loop, ob, variant):
    kind, what = variant.split("-")
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.call("writelines", transport.writelines, WRITELINES[what]())
    await turns()
    ob.note("buffer size", transport.get_write_buffer_size())
    await finish_stream(loop, ob, transport, protocol, peer)


@case(*STREAM_KINDS)
async def stream_bytearray_mutated_after_write(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    data = bytearray(b"original")
    transport.write(data)
    data[:] = b"MUTATED!"
    await finish_stream(loop, ob, transport, protocol, peer)


@case(*STREAM_KINDS)
async def stream_write_after_close(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    transport.close()
    for i in range(7):
        ob.call(f"write {i}", transport.write, b"late")
    ob.call("writelines", transport.writelines, [b"late"])
    ob.call("write_eof", transport.write_eof)
    ob.call("close again", transport.close)
    ob.call("abort after close", transport.abort)
    await finish_stream(loop, ob, transport, protocol, peer)


@case(*STREAM_KINDS)
async def stream_write_after_abort(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.call("abort", transport.abort)
    ob.call("write", transport.write, b"late")
    ob.call("abort twice", transport.abort)
    await turns()
    for i in range(6):
        ob.call(f"write {i}", transport.write, b"later")
    ob.note("buffer size", transport.get_write_buffer_size())
    await finish_stream(loop, ob, transport, protocol, peer)


@case(*STREAM_KINDS)
async def stream_write_after_write_eof(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.call("can_write_eof", transport.can_write_eof)
    ob.call("write", transport.write, b"before")
    ob.call("write_eof", transport.write_eof)
    ob.call("write_eof twice", transport.write_eof)
    ob.call("write after eof", transport.write, b"after")
    ob.call("writelines after eof", transport.writelines, [b"after"])
    ob.call("write empty after eof", transport.write, b"")
    ob.note("is_closing", transport.is_closing())
    await turns()
    await finish_stream(loop, ob, transport, protocol, peer)


LIMITS = {
    "high_lt_low": dict(high=1, low=2),
    "negative_high": dict(high=-1),
    "negative_low": dict(high=10, low=-1),
    "zero": dict(high=0),
    "low_only": dict(low=100),
    "high_only": dict(high=100),
    "none": dict(),
    "float": dict(high=10.5, low=2.5),
}


@case(*[f"{k}-{w}" for k in ("tcp", "accepted") for w in LIMITS])
async def stream_write_buffer_limits(loop, ob, variant):
    kind, what = variant.split("-")
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.note("limits before", transport.get_write_buffer_limits())
    ob.call("set", transport.set_write_buffer_limits, **LIMITS[what])
    ob.note("limits after", transport.get_write_buffer_limits())
    ob.call("write", transport.write, b"x" * 64)
    await turns()
    await finish_stream(loop, ob, transport, protocol, peer)


@case(*STREAM_KINDS)
async def stream_pause_resume_reading(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.note("is_reading", transport.is_reading())
    ob.call("resume not paused", transport.resume_reading)
    ob.call("pause", transport.pause_reading)
    ob.call("pause twice", transport.pause_reading)
    ob.note("is_reading paused", transport.is_reading())
    await loop.sock_sendall(peer, b"held")
    await turns(5)
    ob.note("data while paused", protocol.data)
    ob.call("resume", transport.resume_reading)
    ob.call("resume twice", transport.resume_reading)
    for _ in range(50):
        if protocol.data:
            break
        await asyncio.sleep(0.01)
    ob.note("data after resume", protocol.data)
    transport.close()
    ob.note("is_reading closing", transport.is_reading())
    ob.call("pause closing", transport.pause_reading)
    ob.call("resume closing", transport.resume_reading)
    ob.note("is_reading closing after", transport.is_reading())
    await finish_stream(loop, ob, transport, protocol, peer)
    ob.call("pause closed", transport.pause_reading)
    ob.call("resume closed", transport.resume_reading)
    ob.note("is_reading closed", transport.is_reading())


@case(*STREAM_KINDS)
async def stream_extra_info(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    ob.note("unknown", transport.get_extra_info("no such key"))
    ob.note("unknown default", transport.get_extra_info("no such key", 42))
    sock = transport.get_extra_info("socket")
    ob.note("socket type", type(sock).__name__)
    ob.note("socket family", sock.family)
    ob.note("sockname", transport.get_extra_info("sockname"))
    ob.note("peername", transport.get_extra_info("peername"))
    ob.note("sslcontext", transport.get_extra_info("sslcontext"))
    ob.note("peercert", transport.get_extra_info("peercert"))
    ob.note("pipe", transport.get_extra_info("pipe"))
    ob.note("protocol is", transport.get_protocol() is protocol)
    await finish_stream(loop, ob, transport, protocol, peer)
    ob.note("sockname after close", transport.get_extra_info("sockname"))
    ob.note("socket after close", type(transport.get_extra_info("socket")).__name__)


@case(*STREAM_KINDS)
async def stream_close_twice_abort_after(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    transport.write(b"flushed")
    ob.call("close", transport.close)
    ob.call("close twice", transport.close)
    ob.call("abort after close", transport.abort)
    ob.note("is_closing", transport.is_closing())
    ob.note("peer got", await read_to_eof(loop, peer))
    await asyncio.wait_for(protocol.lost, 5)
    ob.call("close after lost", transport.close)
    ob.call("abort after lost", transport.abort)
    ob.call("write_eof after lost", transport.write_eof)
    ob.note("buffer size after lost", transport.get_write_buffer_size())
    await turns()
    ob.note("events", protocol.events)


@case(*STREAM_KINDS)
async def stream_set_protocol_and_repr(loop, ob, kind):
    transport, protocol, peer = await stream_pair(loop, ob, kind)
    other = Recording()
    ob.call("set_protocol", transport.set_protocol, other)
    ob.note("get_protocol is other", transport.get_protocol() is other)
    transport.set_protocol(protocol)
    await finish_stream(loop, ob, transport, protocol, peer)


# -- datagram endpoints ----------------------------------------------------

class DatagramRecording(asyncio.DatagramProtocol):
    def __init__(self):
        self.events = []

    def connection_made(self, transport):
        self.events.append("made")

    def datagram_received(self, data, addr):
        self.events.append(("datagram", data))

    def error_received(self, exc):
        self.events.append(("error", type(exc).__name__, getattr(exc, "errno", None)))

    def connection_lost(self, exc):
        self.events.append(("lost", type(exc).__name__ if exc else None))


async def datagram_pair(loop, ob, connected):
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    ob.cleanup.append(peer)
    ob.ports.add(peer.getsockname()[1])
    protocol = DatagramRecording()
    kwargs = dict(remote_addr=peer.getsockname()) if connected else dict(local_addr=("127.0.0.1", 0))
    transport, _ = await loop.create_datagram_endpoint(lambda: protocol, **kwargs)
    ob.ports.add(transport.get_extra_info("sockname")[1])
    await turns()
    return transport, protocol, peer


async def peer_datagrams(loop, peer):
    got = []
    await turns(3)
    while True:
        try:
            got.append(peer.recv(70000))
        except BlockingIOError:
            return got


SENDTO = {
    "str": lambda peer: ("text", None),
    "int": lambda peer: (5, None),
    "none": lambda peer: (None, None),
    "empty": lambda peer: (b"", None),
    "too_large": lambda peer: (b"x" * 65508, None),
    "max_size": lambda peer: (b"x" * 65507, None),
    "huge": lambda peer: (b"x" * 300000, None),
    "view": lambda peer: (memoryview(b"view"), None),
    "non_contiguous_view": lambda peer: (memoryview(b"abcdefgh")[::2], None),
    "ipv6_address": lambda peer: (b"x", ("::1", peer.getsockname()[1])),
    "short_tuple": lambda peer: (b"x", ("127.0.0.1",)),
    "str_address": lambda peer: (b"x", "127.0.0.1"),
    "bad_port": lambda peer: (b"x", ("127.0.0.1", 70000)),
    "port_str": lambda peer: (b"x", ("127.0.0.1", "x")),
    "unresolvable": lambda peer: (b"x", ("no.such.host.invalid", 9)),
    "other_address": lambda peer: (b"x", ("127.0.0.1", 9)),
    "own_peer": lambda peer: (b"x", peer.getsockname()),
    "long_tuple": lambda peer: (b"x", ("127.0.0.1", peer.getsockname()[1], 0, 0)),
}


@case(*[f"{c}-{w}" for c in ("unconnected", "connected") for w in SENDTO])
async def datagram_sendto(loop, ob, variant):
    connected, what = variant.split("-")
    transport, protocol, peer = await datagram_pair(loop, ob, connected == "connected")
    data, addr = SENDTO[what](peer)
    if addr is None and connected == "unconnected":
        addr = peer.getsockname()
    ob.call("sendto", transport.sendto, data, addr)
    ob.note("buffer size", transport.get_write_buffer_size())
    ob.note("is_closing", transport.is_closing())
    ob.note("peer got", [len(d) for d in await peer_datagrams(loop, peer)])
    transport.close()
    await turns()
    ob.note("events", protocol.events)


@case("unconnected", "connected")
async def datagram_sendto_after_close(loop, ob, connected):
    transport, protocol, peer = await datagram_pair(loop, ob, connected == "connected")
    addr = None if connected == "connected" else peer.getsockname()
    transport.close()
    ob.call("sendto closing", transport.sendto, b"x", addr)
    await turns()
    for i in range(6):
        ob.call(f"sendto closed {i}", transport.sendto, b"x", addr)
    ob.call("close twice", transport.close)
    ob.call("abort after close", transport.abort)
    ob.note("peer got", await peer_datagrams(loop, peer))
    ob.note("events", protocol.events)


@case("unconnected", "connected")
async def datagram_sendto_after_abort(loop, ob, connected):
    transport, protocol, peer = await datagram_pair(loop, ob, connected == "connected")
    addr = None if connected == "connected" else peer.getsockname()
    transport.abort()
    ob.call("sendto aborted", transport.sendto, b"x", addr)
    ob.note("buffer size", transport.get_write_buffer_size())
    await turns()
    ob.note("peer got", await peer_datagrams(loop, peer))
    ob.note("events", protocol.events)


@case("unconnected", "connected")
async def datagram_transport_misc(loop, ob, connected):
    transport, protocol, peer = await datagram_pair(loop, ob, connected == "connected")
    ob.note("peername", transport.get_extra_info("peername"))
    ob.note("sockname", transport.get_extra_info("sockname"))
    ob.note("socket", type(transport.get_extra_info("socket")).__name__)
    ob.note("unknown", transport.get_extra_info("nope", "d"))
    ob.note("limits", transport.get_write_buffer_limits())
    ob.call("set limits bad", transport.set_write_buffer_limits, high=1, low=2)
    ob.call("set limits negative", transport.set_write_buffer_limits, high=-1)
    ob.note("limits after", transport.get_write_buffer_limits())
    ob.note("is_reading", transport.is_reading() if hasattr(transport, "is_reading") else "n/a")
    ob.call("pause_reading", transport.pause_reading) if hasattr(transport, "pause_reading") else None
    ob.call("write", getattr(transport, "write", lambda d: "no write"), b"x")
    ob.call("write_eof", getattr(transport, "write_eof", lambda: "no write_eof"))
    ob.call("can_write_eof", getattr(transport, "can_write_eof", lambda: "no can_write_eof"))
    transport.close()
    await turns()
    ob.note("events", protocol.events)


ENDPOINT_ARGS = {
    "nothing": dict(),
    "reuse_address": dict(local_addr=("127.0.0.1", 0), reuse_address=True),
    "reuse_address_false": dict(local_addr=("127.0.0.1", 0), reuse_address=False),
    "reuse_port": dict(local_addr=("127.0.0.1", 0), reuse_port=True),
    "allow_broadcast": dict(local_addr=("127.0.0.1", 0), allow_broadcast=True),
    "family_only": dict(family=socket.AF_INET),
    "bad_family": dict(family=12345, local_addr=("127.0.0.1", 0)),
    "local_bad_shape": dict(local_addr="127.0.0.1"),
    "remote_bad_shape": dict(remote_addr=("127.0.0.1",)),
    "local_port_range": dict(local_addr=("127.0.0.1", 70000)),
    "remote_port_range": dict(remote_addr=("127.0.0.1", 70000)),
    "unix_family_tuple": dict(family=socket.AF_UNIX, local_addr=("127.0.0.1", 0)),
    "sock_and_addr": "sock_and_addr",
    "sock_stream": "sock_stream",
    "sock_and_reuse_port": "sock_and_reuse_port",
    "mismatched_families": dict(local_addr=("127.0.0.1", 0), remote_addr=("::1", 9)),
    "proto": dict(local_addr=("127.0.0.1", 0), proto=socket.IPPROTO_UDP),
    "flags": dict(local_addr=("127.0.0.1", 0), flags=socket.AI_PASSIVE),
}


@case(*ENDPOINT_ARGS)
async def datagram_endpoint_args(loop, ob, what):
    kwargs = ENDPOINT_ARGS[what]
    if isinstance(kwargs, str):
        sock_type = socket.SOCK_STREAM if what == "sock_stream" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, sock_type)
        sock.setblocking(False)
        ob.cleanup.append(sock)
        kwargs = {"sock": sock}
        if what == "sock_and_addr":
            kwargs["local_addr"] = ("127.0.0.1", 0)
        elif what == "sock_and_reuse_port":
            kwargs["reuse_port"] = True
    outcome = await ob.acall("endpoint", loop.create_datagram_endpoint,
                             DatagramRecording, **kwargs)
    if outcome[0] == "ok":
        await turns()
        for transport in ob.cleanup:
            if isinstance(transport, asyncio.BaseTransport):
                sock = transport.get_extra_info("socket")
                ob.note("broadcast", sock.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST))
                ob.note("reuseport", sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))
                ob.note("peername", transport.get_extra_info("peername") is not None)


# -- creating connections and servers ---------------------------------------

def _listener(ob):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ob.ports.add(listener.getsockname()[1])
    ob.cleanup.append(listener)
    return listener


def _closed_port(ob):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    ob.ports.add(port)
    return port


CONNECTION_ARGS = {
    "sock_and_host": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1], sock=socket.socket()),
    "no_host_no_sock": lambda ob, l: dict(),
    "handshake_timeout_without_ssl": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                                        ssl_handshake_timeout=1),
    "shutdown_timeout_without_ssl": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                                       ssl_shutdown_timeout=1),
    "server_hostname_without_ssl": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                                      server_hostname="x"),
    "bad_family": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1], family=12345),
    "port_out_of_range": lambda ob, l: dict(host="127.0.0.1", port=70000),
    "negative_port": lambda ob, l: dict(host="127.0.0.1", port=-1),
    "port_str": lambda ob, l: dict(host="127.0.0.1", port="notaport"),
    "refused": lambda ob, l: dict(host="127.0.0.1", port=_closed_port(ob)),
    "happy_eyeballs": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                         happy_eyeballs_delay=0.1),
    "interleave": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1], interleave=2),
    "refused_happy_eyeballs": lambda ob, l: dict(host="127.0.0.1", port=_closed_port(ob),
                                                 happy_eyeballs_delay=0.05),
    "negative_happy_eyeballs": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                                  happy_eyeballs_delay=-1),
    "sock_dgram": lambda ob, l: dict(sock=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "sock_unconnected": lambda ob, l: dict(sock=socket.socket()),
    "local_addr_bad": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                         local_addr=("::1", 0)),
    "local_addr_in_use": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1],
                                            local_addr=l.getsockname()),
    "ssl_not_context": lambda ob, l: dict(host="127.0.0.1", port=l.getsockname()[1], ssl=5),
    "all_errors": lambda ob, l: dict(host="127.0.0.1", port=_closed_port(ob), all_errors=True),
    "unresolvable": lambda ob, l: dict(host="no.such.host.invalid", port=80),
}
if sys.version_info < (3, 12):
    del CONNECTION_ARGS["all_errors"]


@case(*CONNECTION_ARGS)
async def create_connection_args(loop, ob, what):
    listener = _listener(ob)
    kwargs = CONNECTION_ARGS[what](ob, listener)
    if "sock" in kwargs:
        ob.cleanup.append(kwargs["sock"])
    outcome = await ob.acall("create_connection", loop.create_connection, Recording, **kwargs)
    if outcome[0] == "ok":
        await turns()


@case("open_connection", "open_unix_connection", "start_server", "start_unix_server")
async def streams_helpers_args(loop, ob, what):
    fn = getattr(asyncio, what)
    if what == "open_connection":
        port = _closed_port(ob)
        await ob.acall("refused", fn, "127.0.0.1", port)
        await ob.acall("sock and host", fn, "127.0.0.1", port, sock=socket.socket())
        await ob.acall("limit 0", fn, "127.0.0.1", _listener(ob).getsockname()[1], limit=0)
    elif what == "open_unix_connection":
        await ob.acall("missing", fn, "/nonexistent/socket")
        await ob.acall("path and sock", fn, "/x", sock=socket.socket(socket.AF_UNIX))
    elif what == "start_server":
        await ob.acall("bad family", fn, lambda r, w: None, "127.0.0.1", 0, family=12345)
    else:
        await ob.acall("no path", fn, lambda r, w: None)
        await ob.acall("missing dir", fn, lambda r, w: None, "/nonexistent/dir/s")


UNIX_CONNECTION_ARGS = {
    "path_and_sock": lambda path: dict(path=path, sock=socket.socket(socket.AF_UNIX)),
    "nothing": lambda path: dict(),
    "missing_path": lambda path: dict(path=path + "-missing"),
    "tcp_sock": lambda path: dict(sock=socket.socket()),
    "dgram_sock": lambda path: dict(sock=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)),
    "server_hostname_without_ssl": lambda path: dict(path=path, server_hostname="x"),
    "handshake_timeout_without_ssl": lambda path: dict(path=path, ssl_handshake_timeout=1),
    "path_bytes": lambda path: dict(path=path.encode()),
    "path_int": lambda path: dict(path=5),
    "path_pathlike": lambda path: dict(path=__import__("pathlib").Path(path)),
    "not_a_socket_file": lambda path: dict(path=os.path.dirname(path)),
}


@case(*UNIX_CONNECTION_ARGS)
async def create_unix_connection_args(loop, ob, what):
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "s")
    ob.paths.add(directory)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(4)
    ob.cleanup.append(listener)
    kwargs = UNIX_CONNECTION_ARGS[what](path)
    if "sock" in kwargs:
        ob.cleanup.append(kwargs["sock"])
    outcome = await ob.acall("create_unix_connection", loop.create_unix_connection,
                             Recording, **kwargs)
    if outcome[0] == "ok":
        await turns()


SERVER_ARGS = {
    "sock_and_host": lambda ob: dict(host="127.0.0.1", port=0, sock=socket.socket()),
    "handshake_timeout_without_ssl": lambda ob: dict(host="127.0.0.1", port=0,
                                                     ssl_handshake_timeout=1),
    "shutdown_timeout_without_ssl": lambda ob: dict(host="127.0.0.1", port=0,
                                                    ssl_shutdown_timeout=1),
    "port_out_of_range": lambda ob: dict(host="127.0.0.1", port=70000),
    "bad_family": lambda ob: dict(host="127.0.0.1", port=0, family=12345),
    "port_in_use": lambda ob: dict(host="127.0.0.1", port=_listener(ob).getsockname()[1]),
    "sock_dgram": lambda ob: dict(sock=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)),
    "ssl_not_context": lambda ob: dict(host="127.0.0.1", port=0, ssl=5),
    "backlog_negative": lambda ob: dict(host="127.0.0.1", port=0, backlog=-5),
    "reuse_port": lambda ob: dict(host="127.0.0.1", port=0, reuse_port=True),
    "no_start": lambda ob: dict(host="127.0.0.1", port=0, start_serving=False),
    "host_list": lambda ob: dict(host=["127.0.0.1", "127.0.0.1"], port=0),
    "unresolvable": lambda ob: dict(host="no.such.host.invalid", port=0),
}


@case(*SERVER_ARGS)
async def create_server_args(loop, ob, what):
    kwargs = SERVER_ARGS[what](ob)
    if "sock" in kwargs:
        ob.cleanup.append(kwargs["sock"])
    try:
        server = await loop.create_server(Recording, **kwargs)
    except Exception as exc:
        ob.record.append(("create_server", ob.error(exc)))
        return
    ob.note("sockets", len(server.sockets))
    ob.note("serving", server.is_serving())
    ob.call("get_loop is loop", lambda: server.get_loop() is loop)
    server.close()
    ob.call("close twice", server.close)
    await ob.acall("wait_closed", server.wait_closed)
    ob.note("serving after close", server.is_serving())
    await ob.acall("start_serving closed", server.start_serving)


@case("path_and_sock", "nothing", "missing_dir", "tcp_sock", "handshake_timeout_without_ssl",
      "existing_regular_file", "existing_socket_file", "cleanup_socket")
async def create_unix_server_args(loop, ob, what):
    directory = tempfile.mkdtemp()
    ob.paths.add(directory)
    path = os.path.join(directory, "s")
    kwargs = {
        "path_and_sock": dict(path=path, sock=socket.socket(socket.AF_UNIX)),
        "nothing": dict(),
        "missing_dir": dict(path=os.path.join(directory, "missing", "s")),
        "tcp_sock": dict(sock=socket.socket()),
        "handshake_timeout_without_ssl": dict(path=path, ssl_handshake_timeout=1),
        "existing_regular_file": dict(path=path),
        "existing_socket_file": dict(path=path),
        "cleanup_socket": dict(path=path),
    }[what]
    if "sock" in kwargs:
        ob.cleanup.append(kwargs["sock"])
    if what == "existing_regular_file":
        open(path, "w").close()
    elif what == "existing_socket_file":
        stale = socket.socket(socket.AF_UNIX)
        stale.bind(path)
        stale.close()
    try:
        server = await loop.create_unix_server(Recording, **kwargs)
    except Exception as exc:
        ob.record.append(("create_unix_server", ob.error(exc)))
        return
    ob.note("sockets", len(server.sockets))
    server.close()
    await server.wait_closed()
    ob.note("path exists after close", os.path.exists(path))


async def _connected_stream(loop, ob):
    listener = _listener(ob)
    listener.setblocking(False)
    transport, protocol = await loop.create_connection(Recording, *listener.getsockname())
    peer, _ = await loop.sock_accept(listener)
    ob.cleanup.extend([transport, peer])
    ob.ports.add(peer.getsockname()[1])
    await turns()
    return transport, protocol, peer


@case("not_context", "none_context", "closed_transport", "datagram_transport",
      "server_side_no_cert", "handshake_timeout_zero", "handshake_timeout_negative")
async def start_tls_args(loop, ob, what):
    transport, protocol, peer = await _connected_stream(loop, ob)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    kwargs = {}
    if what == "not_context":
        context = "ctx"
    elif what == "none_context":
        context = None
    elif what == "closed_transport":
        transport.close()
    elif what == "datagram_transport":
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        ob.cleanup.append(transport)
    elif what == "server_side_no_cert":
        kwargs = dict(server_side=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    elif what == "handshake_timeout_zero":
        kwargs = dict(ssl_handshake_timeout=0)
    elif what == "handshake_timeout_negative":
        kwargs = dict(ssl_handshake_timeout=-1)
    await ob.acall("start_tls", asyncio.wait_for,
                   loop.start_tls(transport, protocol, context, **kwargs), 0.3)
    await turns()


def _file(ob, mode="rb", content=b"0123456789"):
    fd, path = tempfile.mkstemp()
    os.write(fd, content)
    os.close(fd)
    ob.paths.add(path)
    f = open(path, mode)
    ob.cleanup.append(f)
    return f


SENDFILE = {
    "text_file": lambda ob: (_file(ob, "r"), {}),
    "negative_offset": lambda ob: (_file(ob), dict(offset=-1)),
    "zero_count": lambda ob: (_file(ob), dict(count=0)),
    "negative_count": lambda ob: (_file(ob), dict(count=-3)),
    "float_offset": lambda ob: (_file(ob), dict(offset=1.5)),
    "str_count": lambda ob: (_file(ob), dict(count="3")),
    "offset_past_end": lambda ob: (_file(ob), dict(offset=100)),
    "count_past_end": lambda ob: (_file(ob), dict(offset=2, count=100)),
    "no_fallback": lambda ob: (_file(ob), dict(fallback=False)),
    "not_a_file": lambda ob: (b"bytes", {}),
    "closed_file": lambda ob: (_closed_file(ob), {}),
    "bytesio": lambda ob: (__import__("io").BytesIO(b"memory"), {}),
    "bytesio_no_fallback": lambda ob: (__import__("io").BytesIO(b"memory"), dict(fallback=False)),
    "write_only_file": lambda ob: (_file(ob, "wb"), {}),
}


def _closed_file(ob):
    f = _file(ob)
    f.close()
    return f


@case(*[f"{t}-{w}" for t in ("stream", "closing_stream", "datagram") for w in SENDFILE])
async def loop_sendfile_args(loop, ob, variant):
    target, what = variant.split("-")
    transport, protocol, peer = await _connected_stream(loop, ob)
    if target == "closing_stream":
        transport.close()
    elif target == "datagram":
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        ob.cleanup.append(transport)
    file, kwargs = SENDFILE[what](ob)
    await ob.acall("sendfile", loop.sendfile, transport, file, **kwargs)
    await turns()
    if target == "stream":
        transport.close()
        ob.note("peer got", await read_to_eof(loop, peer))


def _pipe_reader(ob, data=b"abc"):
    r, w = os.pipe()
    os.write(w, data)
    os.close(w)
    f = os.fdopen(r, "rb")
    ob.cleanup.append(f)
    return f


def _socket_file(ob):
    a, b = socket.socketpair()
    b.sendall(b"abc")
    ob.cleanup.extend([a, b])
    f = a.makefile("rb")
    ob.cleanup.append(f)
    return f


def _devnull(ob):
    f = open(os.devnull, "rb")
    ob.cleanup.append(f)
    return f


# Sources whose fstat says size 0: asyncio returns 0 without reading them,
# unless a count is given (then its os.sendfile fails on them).
SENDFILE_SOURCES = {
    f"{name}{'' if fallback else '_no_fallback'}":
        (lambda ob, make=make, extra=extra, fallback=fallback:
            (make(ob), dict(extra, fallback=fallback)))
    for name, make, extra in (("pipe", _pipe_reader, {}), ("pipe_count", _pipe_reader, {"count": 2}),
                              ("socket_file", _socket_file, {}), ("devnull", _devnull, {}))
    for fallback in (True, False)
}


@case(*SENDFILE, *SENDFILE_SOURCES)
async def sock_sendfile_args(loop, ob, what):
    listener = _listener(ob)
    listener.setblocking(False)
    sock = socket.socket()
    sock.setblocking(False)
    ob.cleanup.append(sock)
    await loop.sock_connect(sock, listener.getsockname())
    peer, _ = await loop.sock_accept(listener)
    ob.cleanup.append(peer)
    file, kwargs = {**SENDFILE, **SENDFILE_SOURCES}[what](ob)
    await ob.acall("sock_sendfile", loop.sock_sendfile, sock, file, **kwargs)
    sock.close()
    ob.note("peer got", await read_to_eof(loop, peer))


@case(*[f"{s}-{f}" for s in ("unconnected", "peer_gone") for f in ("fallback", "no_fallback")])
async def sock_sendfile_broken_sockets(loop, ob, variant):
    state, fallback = variant.split("-")
    sock = socket.socket()
    sock.setblocking(False)
    ob.cleanup.append(sock)
    if state == "peer_gone":
        a, sock = socket.socketpair()
        sock.setblocking(False)
        ob.cleanup.append(sock)
        a.close()
    await ob.acall("sock_sendfile", loop.sock_sendfile, sock, _file(ob),
                   fallback=fallback == "fallback")


# -- readiness, scheduling, executors, signals, subprocesses ----------------

class FilenoObject:
    def __init__(self, fd):
        self.fd = fd

    def fileno(self):
        return self.fd


def _closed_fd():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    return r


FDS = {
    "minus_one": lambda ob: -1,
    "closed": lambda ob: _closed_fd(),
    "str": lambda ob: "x",
    "none": lambda ob: None,
    "float": lambda ob: 3.0,
    "fileno_object": lambda ob: FilenoObject(_pipe(ob)[0]),
    "fileno_object_bad": lambda ob: FilenoObject(-1),
    "fileno_raises": lambda ob: type("F", (), {"fileno": lambda self: 1 / 0})(),
    "regular_file": lambda ob: _file(ob).fileno(),
    "huge": lambda ob: 1 << 40,
}


def _pipe(ob):
    r, w = os.pipe()
    ob.cleanup.append(FdCloser(r))
    ob.cleanup.append(FdCloser(w))
    return r, w


class FdCloser:
    def __init__(self, fd):
        self.fd = fd

    def close(self):
        with contextlib.suppress(OSError):
            os.close(self.fd)


@case(*[f"{m}-{w}" for m in ("reader", "writer") for w in FDS])
async def add_remove_bad_fd(loop, ob, variant):
    method, what = variant.split("-")
    fd = FDS[what](ob)
    fired = []
    add = getattr(loop, f"add_{method}")
    remove = getattr(loop, f"remove_{method}")
    ob.call("add", add, fd, fired.append, 1)
    await turns(3)
    await asyncio.sleep(0.01)
    await turns(3)
    ob.note("fired", len(fired) > 0)
    ob.call("remove", remove, fd)
    ob.call("remove twice", remove, fd)
    ob.call("add non-callable", add, _pipe(ob)[0 if method == "reader" else 1], 5)


@case("reader", "writer")
async def fd_closed_without_remove(loop, ob, method):
    """The fd closed (and its peer) while its callback is registered:
    epoll forgets the file, so the callback never runs again."""
    r, w = os.pipe()
    fd, other = (r, w) if method == "reader" else (w, r)
    fired = []
    getattr(loop, f"add_{method}")(fd, fired.append, 1)
    await turns(3)
    fired.clear()
    os.close(fd)
    os.close(other)
    await turns(3)
    await asyncio.sleep(0.01)
    await turns(3)
    ob.note("fired after close", len(fired))


async def _coro():
    pass


@case("plain", "debug")
async def task_factory_returning_no_task(loop, ob, mode):
    loop.set_debug(mode == "debug")
    loop.set_task_factory(lambda loop, coro: (coro.close(), "not a task")[1])
    ob.call("create_task", loop.create_task, _coro())
    loop.set_task_factory(None)
    loop.set_debug(False)


@case("call_soon", "call_later", "call_at", "call_soon_threadsafe")
async def schedule_bad_callbacks(loop, ob, method):
    fn = getattr(loop, method)
    prefix = () if method in ("call_soon", "call_soon_threadsafe") else (0.0,)
    if method == "call_at":
        prefix = (loop.time(),)
    ob.call("int", fn, *prefix, 5)
    ob.call("none", fn, *prefix, None)
    coro = _coro()
    ob.call("coroutine object", fn, *prefix, coro)
    coro.close()
    ob.call("coroutine function", fn, *prefix, _coro)
    ob.call("context not Context", fn, *prefix, print, context=5)
    if method == "call_later":
        # (call_at takes any "when" and fails later, in the heap.)
        ob.call("delay str", fn, "1", print)
        ob.call("delay none", fn, None, print)
    if method != "call_soon" and method != "call_soon_threadsafe":
        ob.call("delay nan", fn, float("nan"), lambda: None)
        handle = fn(float("inf") if method == "call_later" else loop.time() + 1e9, print)
        ob.call("inf cancel", handle.cancel)
    got = []
    h = fn(*prefix, got.append, 1)
    ob.call("cancel twice", lambda: (h.cancel(), h.cancel()))
    ob.note("cancelled", h.cancelled())
    await asyncio.sleep(0.01)
    ob.note("ran", got)


@case("call_soon", "call_later", "call_at", "call_soon_threadsafe", "create_task")
async def schedule_bad_arguments(loop, ob, method):
    # asyncio's TypeError names the method by its qualified name.
    fn = getattr(loop, method)
    ob.call("unknown keyword", fn, print, foo=1)
    ob.call("nothing", fn)


@case("noncallable", "coroutine_function", "coroutine_object", "bad_executor", "args",
      "raises", "after_shutdown")
async def run_in_executor_args(loop, ob, what):
    if what == "noncallable":
        await ob.acall("run", loop.run_in_executor, None, 5)
    elif what == "coroutine_function":
        await ob.acall("run", loop.run_in_executor, None, _coro)
    elif what == "coroutine_object":
        coro = _coro()
        await ob.acall("run", loop.run_in_executor, None, coro)
        coro.close()
    elif what == "bad_executor":
        await ob.acall("run", loop.run_in_executor, "executor", print)
    elif what == "args":
        await ob.acall("run", loop.run_in_executor, None, divmod, 7, 2)
    elif what == "raises":
        await ob.acall("run", loop.run_in_executor, None, divmod, 7, 0)
    else:
        await ob.acall("shutdown", loop.shutdown_default_executor)
        await ob.acall("shutdown twice", loop.shutdown_default_executor)
        await ob.acall("run", loop.run_in_executor, None, divmod, 7, 2)
    ob.call("set_default_executor bad", loop.set_default_executor, "x")


@case("sigkill", "zero", "out_of_range", "not_int", "noncallable", "coroutine_function",
      "remove_unset", "remove_bad", "sigstop", "string")
async def signal_handler_args(loop, ob, what):
    args = {
        "sigkill": (signal.SIGKILL, print),
        "zero": (0, print),
        "out_of_range": (9999, print),
        "not_int": (1.5, print),
        "noncallable": (signal.SIGUSR1, 5),
        "coroutine_function": (signal.SIGUSR1, _coro),
        "sigstop": (signal.SIGSTOP, print),
        "string": ("SIGUSR1", print),
    }
    if what == "remove_unset":
        ob.call("remove", loop.remove_signal_handler, signal.SIGUSR2)
    elif what == "remove_bad":
        ob.call("remove", loop.remove_signal_handler, 9999)
        ob.call("remove 0", loop.remove_signal_handler, 0)
        ob.call("remove kill", loop.remove_signal_handler, signal.SIGKILL)
    else:
        outcome = ob.call("add", loop.add_signal_handler, *args[what])
        if outcome[0] == "ok":
            loop.remove_signal_handler(args[what][0])


SUBPROCESS = {
    "shell_list": ("shell", [["echo", "x"]], {}),
    "shell_bytes": ("shell", [b"true"], {}),
    "shell_int": ("shell", [5], {}),
    "exec_no_args": ("exec", [], {}),
    "exec_int": ("exec", [5], {}),
    "exec_list": ("exec", [["true"]], {}),
    "universal_newlines": ("exec", ["true"], dict(universal_newlines=True)),
    "text": ("exec", ["true"], dict(text=True)),
    "encoding": ("exec", ["true"], dict(encoding="utf-8")),
    "errors": ("exec", ["true"], dict(errors="strict")),
    "bufsize": ("exec", ["true"], dict(bufsize=1)),
    "shell_kw": ("exec", ["true"], dict(shell=True)),
    "shell_false_for_shell": ("shell", ["true"], dict(shell=False)),
    "missing_program": ("exec", ["/nonexistent/program"], {}),
    "not_executable": ("exec", ["/etc/hostname"], {}),
    "bad_cwd": ("exec", ["true"], dict(cwd="/nonexistent")),
    "bad_stdin": ("exec", ["true"], dict(stdin="x")),
}


@case(*SUBPROCESS)
async def subprocess_args(loop, ob, what):
    kind, args, kwargs = SUBPROCESS[what]
    fn = loop.subprocess_shell if kind == "shell" else loop.subprocess_exec
    outcome = await ob.acall("subprocess", fn, asyncio.SubprocessProtocol, *args, **kwargs)
    if outcome[0] == "ok":
        transport = ob.cleanup.pop()
        for _ in range(100):
            if transport.get_returncode() is not None:
                break
            await asyncio.sleep(0.01)
        ob.note("returncode", transport.get_returncode())
        transport.close()
        await turns()


# -- a closed loop -------------------------------------------------------------

def closed_coro(resources):
    coro = _coro()
    resources.append(coro)  # closed unawaited, without a warning
    return coro


def closed_loop_calls(loop, resources):
    """What each method does on a closed loop.  The ``sock_*`` methods get
    sockets on which they would have to wait (asyncio tries the socket
    call first), everything else a socket or address that works."""
    r, w = os.pipe()
    resources.extend([FdCloser(r), FdCloser(w)])

    def new(sock):
        resources.append(sock)
        sock.setblocking(False)
        return sock

    listener = new(socket.socket())
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    idle_listener = new(socket.socket())
    idle_listener.bind(("127.0.0.1", 0))
    idle_listener.listen(8)
    directory = tempfile.mkdtemp()
    path = os.path.join(directory, "s")
    unix_listener = new(socket.socket(socket.AF_UNIX))
    unix_listener.bind(path)
    unix_listener.listen(8)

    def pair():
        a, b = socket.socketpair()
        new(b)
        return new(a)

    def connected():
        sock = socket.create_connection(listener.getsockname())
        return new(sock)

    calls = {
        "call_soon": lambda: loop.call_soon(print),
        "call_later": lambda: loop.call_later(1, print),
        "call_at": lambda: loop.call_at(1, print),
        "call_soon_threadsafe": lambda: loop.call_soon_threadsafe(print),
        "add_reader": lambda: loop.add_reader(r, print),
        "add_writer": lambda: loop.add_writer(w, print),
        "remove_reader": lambda: loop.remove_reader(r),
        "remove_writer": lambda: loop.remove_writer(w),
        "add_signal_handler": lambda: loop.add_signal_handler(signal.SIGUSR1, print),
        "remove_signal_handler": lambda: loop.remove_signal_handler(signal.SIGUSR1),
        "run_in_executor": lambda: loop.run_in_executor(None, print),
        "create_future": lambda: loop.create_future(),
        "time": lambda: type(loop.time()).__name__,
        "is_running": lambda: loop.is_running(),
        "is_closed": lambda: loop.is_closed(),
        "close": lambda: loop.close(),
        "stop": lambda: loop.stop(),
        "get_debug": lambda: loop.get_debug(),
        "set_debug": lambda: loop.set_debug(False),
        "set_default_executor": lambda: loop.set_default_executor(None),
        "get_exception_handler": lambda: loop.get_exception_handler() is not None,
    }
    coro_calls = {
        "create_task": lambda: loop.create_task(closed_coro(resources)),
        "run_until_complete": lambda: loop.run_until_complete(closed_coro(resources)),
        "run_forever": lambda: loop.run_forever(),
        "create_connection": lambda: loop.create_connection(Recording, *listener.getsockname()),
        "create_connection sock": lambda: loop.create_connection(Recording, sock=connected()),
        "create_server": lambda: loop.create_server(Recording, "127.0.0.1", 0),
        "create_server sock": lambda: loop.create_server(Recording, sock=new(socket.socket())),
        "create_unix_connection": lambda: loop.create_unix_connection(Recording, path),
        "create_unix_server": lambda: loop.create_unix_server(Recording, path + "2"),
        "create_datagram_endpoint": lambda: loop.create_datagram_endpoint(
            DatagramRecording, local_addr=("127.0.0.1", 0)),
        "connect_accepted_socket": lambda: loop.connect_accepted_socket(Recording, connected()),
        "sock_recv": lambda: loop.sock_recv(pair(), 1),
        "sock_recv_into": lambda: loop.sock_recv_into(pair(), bytearray(1)),
        "sock_recvfrom": lambda: loop.sock_recvfrom(new(socket.socket(socket.AF_INET, socket.SOCK_DGRAM)), 1),
        "sock_accept": lambda: loop.sock_accept(idle_listener),
        "getaddrinfo": lambda: loop.getaddrinfo("127.0.0.1", 80),
        "getnameinfo": lambda: loop.getnameinfo(("127.0.0.1", 80)),
        "subprocess_exec": lambda: loop.subprocess_exec(asyncio.SubprocessProtocol, "true"),
        "subprocess_shell": lambda: loop.subprocess_shell(asyncio.SubprocessProtocol, "true"),
        "connect_read_pipe": lambda: loop.connect_read_pipe(asyncio.Protocol, os.fdopen(r, "rb", closefd=False)),
        "connect_write_pipe": lambda: loop.connect_write_pipe(asyncio.Protocol, os.fdopen(w, "wb", closefd=False)),
        "shutdown_asyncgens": lambda: loop.shutdown_asyncgens(),
        "shutdown_default_executor": lambda: loop.shutdown_default_executor(),
    }
    return calls, coro_calls


# asyncio's subprocess_exec makes this coroutine before it checks the loop.
@pytest.mark.filterwarnings("ignore:coroutine 'BaseSubprocessTransport._connect_pipes'")
def test_closed_loop_methods_match_asyncio():
    def observe(kind):
        loop = new_strict_loop(kind)
        finish_strict_loop(loop)
        ob = Observer(loop)
        resources = []
        calls, coro_calls = closed_loop_calls(loop, resources)
        try:
            for name, fn in calls.items():
                ob.call(name, fn)
            runner = asyncio.new_event_loop()
            try:
                for name, fn in coro_calls.items():
                    def call_and_drive(fn=fn):
                        result = fn()
                        if asyncio.iscoroutine(result):
                            return runner.run_until_complete(result)
                        return result
                    ob.call(name, call_and_drive)
            finally:
                runner.close()
        finally:
            for resource in resources:
                resource.close()
            # The never-awaited coroutines are collected here, inside this
            # test's warning filter, not in whichever test runs gc next.
            gc.collect()
        assert loop.handler_calls == []
        return ob.record

    expected = observe("asyncio")
    got = observe("uringloop")
    assert got == expected


# -- BufferedProtocol handing the transport bad buffers -----------------

class _BadBuffers(asyncio.BufferedProtocol):
    """get_buffer() returns (or does) ``kind``; records what it was asked
    and what arrived."""

    def __init__(self, kind):
        self.kind = kind
        self.events = []
        self.buf = None
        self.data = b""
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.events.append("made")

    def get_buffer(self, sizehint):
        self.events.append(("get_buffer", sizehint))
        kind = self.kind
        if kind == "raises":
            raise ZeroDivisionError("no buffer today")
        self.buf = {
            "bytes": lambda: b"read-only",
            "readonly_view": lambda: memoryview(bytearray(8)).toreadonly(),
            "empty": bytearray,
            "none": lambda: None,
            "not_a_buffer": lambda: 42,
            "non_contiguous": lambda: memoryview(bytearray(16))[::2],
            "two_dimensional": lambda: memoryview(bytearray(16)).cast("B", (4, 4)),
            "typed": lambda: array.array("i", [0] * 4),
            "updated_raises": lambda: bytearray(64),
        }[kind]()
        return self.buf

    def buffer_updated(self, nbytes):
        self.events.append(("buffer_updated", nbytes))
        self.data += memoryview(self.buf).cast("B")[:nbytes].tobytes()
        if self.kind == "updated_raises":
            raise ZeroDivisionError("cannot take it")

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost.set_result(exc)


@case("bytes", "readonly_view", "empty", "none", "not_a_buffer", "non_contiguous",
      "two_dimensional", "typed", "raises", "updated_raises")
async def buffered_protocol_bad_buffer(loop, ob, kind):
    protocols = []

    def factory():
        protocols.append(_BadBuffers(kind))
        return protocols[-1]

    server = await loop.create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ob.ports.add(port)
    client = socket.socket()
    client.setblocking(False)
    try:
        await loop.sock_connect(client, ("127.0.0.1", port))
        await loop.sock_sendall(client, b"twelve bytes")
        client.shutdown(socket.SHUT_WR)
        for _ in range(200):
            if protocols and protocols[0].lost.done():
                break
            await asyncio.sleep(0.005)
        protocol = protocols[0]
        ob.note("events", protocol.events)
        ob.note("data", protocol.data)
        lost = protocol.lost.result() if protocol.lost.done() else "still open"
        ob.note("lost", lost if isinstance(lost, str) or lost is None else ob.error(lost))
    finally:
        client.close()
        server.close()
        await server.wait_closed()
