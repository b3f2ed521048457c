"""Optional io_uring paths chosen by probing (``_features``), each forced
off with ``URINGLOOP_DISABLE`` and the loop still serving a real echo --
stream ``Protocol`` and ``BufferedProtocol`` transports, ``sock_*`` calls,
accepts -- and writing, reading and truncating a file; and the knobs that
shape the ring (``URINGLOOP_SQ_ENTRIES``, ``_CQ_ENTRIES``, ``_BUFFERS``,
``_SQPOLL``, ``_SINGLE_THREAD``, ``_NAPI``, ``_FIXED_FILES``) each through
the same echo, and ``_SEND_ZC`` through a checksummed echo of big messages.  ``ring_stats()`` shows which path the loop really took (a
multishot accept is one ACCEPT SQE for every connection; without it, one
per connection)."""
import asyncio
import errno
import os
import socket

import pytest

from uringloop import _features

from .conftest import finish_strict_loop, new_strict_loop, run

import uringloop

PATHS = list(_features.PATHS)
# Sizes that cross a provided buffer (4 KiB in the small-pool knob test)
# and a stream transport's 256 KiB receive buffer.
MESSAGES = [b"x", os.urandom(1000), os.urandom(300_000)]


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


class BufferedEcho(asyncio.BufferedProtocol):
    def __init__(self):
        self.buffer = bytearray(4096)

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        return self.buffer

    def buffer_updated(self, nbytes):
        self.transport.write(bytes(self.buffer[:nbytes]))


async def round_trips(host, port, connections=3):
    """Each message over each of ``connections`` connections, in turn."""
    for _ in range(connections):
        reader, writer = await asyncio.open_connection(host, port)
        for message in MESSAGES:
            writer.write(message)
            assert await reader.readexactly(len(message)) == message
        writer.close()
        await writer.wait_closed()


async def sock_echo_server(loop, listener):
    async def serve(conn):
        with conn:
            while data := await loop.sock_recv(conn, 65536):
                await loop.sock_sendall(conn, data)

    tasks = []
    while True:
        conn, _ = await loop.sock_accept(listener)
        conn.setblocking(False)
        tasks.append(asyncio.ensure_future(serve(conn)))


async def echo_everything(loop, tmp_path):
    for factory in (Echo, BufferedEcho):
        server = await loop.create_server(factory, "127.0.0.1", 0)
        await round_trips(*server.sockets[0].getsockname()[:2])
        server.close()
        await server.wait_closed()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    accepting = asyncio.ensure_future(sock_echo_server(loop, listener))
    try:
        await round_trips(*listener.getsockname())
    finally:
        accepting.cancel()
        await asyncio.gather(accepting, return_exceptions=True)
        listener.close()
    path = tmp_path / "file"
    data = os.urandom(300_000)
    async with uringloop.open(path, "w+b") as f:
        await f.write(data)
        await f.seek(0)
        assert await f.read() == data
        assert await f.pread(10, 1000) == data[1000:1010]
        assert await f.truncate(4) == 4
    assert path.read_bytes() == data[:4]


def echo_loop(monkeypatch, tmp_path, **environment):
    """A strict uringloop loop made under ``environment``, after the echo."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    loop = new_strict_loop("uringloop")
    try:
        run(loop, echo_everything(loop, tmp_path), timeout=60)
        stats = loop.ring_stats()
    finally:
        finish_strict_loop(loop)
    return loop, stats


@pytest.mark.parametrize("name", PATHS + ["all"])
def test_each_path_forced_off_still_echoes(monkeypatch, tmp_path, name):
    loop, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_DISABLE=name)
    paths = stats["config"]["paths"]
    for path in (PATHS if name == "all" else [name]):
        assert paths[path] == "off: URINGLOOP_DISABLE", path
        assert path not in loop._features.on
    assert stats["config"]["knobs"]["URINGLOOP_DISABLE"] == name
    by_opcode = stats["sqes_by_opcode"]
    if name in ("multishot_accept", "all"):
        # One one-shot accept per connection and one armed for the next,
        # per server: the two create_server servers served three each.
        assert not loop._accept_multishot
        assert by_opcode["ACCEPT"] >= 2 * 4 + 3
    if name in ("multishot_recv", "buffer_ring", "all"):
        assert not loop._recv_multishot
    if name in ("buffer_ring", "all"):
        assert not loop._recv_provided
        assert stats["buffers"]["count"] == 0
    if name in ("ftruncate", "all"):
        assert "FTRUNCATE" not in by_opcode
    if name in ("submit_all", "all"):
        assert "SUBMIT_ALL" not in stats["config"]["setup_flags"]
    if name in ("coop_taskrun", "all"):
        assert "COOP_TASKRUN" not in stats["config"]["setup_flags"]
        assert "TASKRUN_FLAG" not in stats["config"]["setup_flags"]
    if name in ("registered_ring_fd", "all"):
        assert not stats["config"]["registered_ring_fd"]


def test_default_takes_every_probed_path_this_kernel_has(monkeypatch, tmp_path):
    """Linux 6.18 has all of them: the probe, not a version check, says so,
    and the stats show the loop used them."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    loop, stats = echo_loop(monkeypatch, tmp_path)
    on = {"multishot_accept", "multishot_recv", "buffer_ring", "ftruncate", "submit_all"}
    assert on <= loop._features.on
    single_issuer = "SINGLE_ISSUER" in stats["config"]["setup_flags"]
    assert ("coop_taskrun" in loop._features.on) != single_issuer
    by_opcode = stats["sqes_by_opcode"]
    # Two servers, three connections each: each multishot accept stayed armed.
    assert by_opcode["ACCEPT"] <= 2 + 4
    assert by_opcode["FTRUNCATE"] == 1
    assert stats["buffers"]["count"] == 512 and stats["buffers"]["high_water"] >= 1


def test_multishot_feature_test_is_a_real_round_trip():
    assert _features.multishot_support() == {"multishot_accept": None, "multishot_recv": None}


def test_a_failed_feature_test_turns_the_path_off(monkeypatch, tmp_path):
    """What an older kernel (one that ignores the multishot flag) gets."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    monkeypatch.setattr(_features, "_multishot", {
        "multishot_accept": "the kernel accepted once and disarmed",
        "multishot_recv": "the kernel ignored the multishot flag"})
    loop, stats = echo_loop(monkeypatch, tmp_path)
    paths = stats["config"]["paths"]
    assert paths["multishot_accept"] == "off: the kernel accepted once and disarmed"
    assert paths["multishot_recv"] == "off: the kernel ignored the multishot flag"
    # sock_recv still takes provided buffers.
    assert paths["buffer_ring"] == "on" and loop._recv_provided
    assert not loop._recv_multishot and not loop._accept_multishot


def test_ftruncate_runs_on_the_ring(monkeypatch, tmp_path):
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    loop = new_strict_loop("uringloop")
    try:
        path = tmp_path / "f"
        path.write_bytes(b"abcdef")

        async def main():
            async with uringloop.open(path, "r+b") as f:
                assert await f.truncate(2) == 2
                await f.seek(0, os.SEEK_END)
                assert await f.tell() == 2
                assert await f.truncate(10) == 10
                # The kernel's refusal comes back as the built-in's error.
                with pytest.raises(OSError) as error:
                    await f.truncate(-1)
                assert error.value.errno == errno.EINVAL
            return loop.ring_stats()["sqes_by_opcode"]

        by_opcode = run(loop, main())
    finally:
        finish_strict_loop(loop)
    assert by_opcode["FTRUNCATE"] == 3
    assert path.read_bytes() == b"ab" + bytes(8)


@pytest.mark.parametrize("value, message", [
    ("multishot", "unknown multishot"),
    ("buffer_ring,nope", "unknown nope"),
])
def test_a_misspelt_path_is_an_error(monkeypatch, value, message):
    monkeypatch.setenv("URINGLOOP_DISABLE", value)
    with pytest.raises(ValueError, match=message) as info:
        uringloop.Loop()
    assert "multishot_accept" in str(info.value)  # the valid names are listed


@pytest.mark.parametrize("name, value", [
    ("URINGLOOP_SQ_ENTRIES", "0"), ("URINGLOOP_SQ_ENTRIES", "65536"),
    ("URINGLOOP_SQ_ENTRIES", "lots"), ("URINGLOOP_CQ_ENTRIES", "8"),
    ("URINGLOOP_BUFFERS", "512"), ("URINGLOOP_BUFFERS", "500x4k"),
    ("URINGLOOP_BUFFERS", "8x0"), ("URINGLOOP_BUFFERS", "8x2G"),
    ("URINGLOOP_SQPOLL", "-1"), ("URINGLOOP_NAPI", "0"), ("URINGLOOP_FIXED_FILES", "yes"),
    ("URINGLOOP_DEFER_WRITES", "on"),
    ("URINGLOOP_SEND_ZC", "0"), ("URINGLOOP_SEND_ZC", "big"), ("URINGLOOP_SEND_ZC", "2048M"),
])
def test_a_bad_knob_is_an_error_not_a_silent_fallback(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        uringloop.Loop()


def test_ring_sizes(monkeypatch, tmp_path):
    _, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_SQ_ENTRIES="16",
                         URINGLOOP_CQ_ENTRIES="100")
    # The kernel rounds both up to powers of two.
    assert stats["config"]["sq_entries"] == 16
    assert stats["config"]["cq_entries"] == 128


def test_small_buffer_pool(monkeypatch, tmp_path):
    """Four 4 KiB buffers: a 300 KB message runs the pool dry again and
    again (ENOBUFS, re-armed), and every byte still arrives in order."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    _, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_BUFFERS="4x4k")
    assert stats["buffers"]["count"] == 4 and stats["buffers"]["size"] == 4096
    assert stats["buffers"]["high_water"] <= 4
    assert stats["enobufs"] > 0


def test_sqpoll(monkeypatch, tmp_path):
    _, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_SQPOLL="10")
    flags = stats["config"]["setup_flags"]
    assert "SQPOLL" in flags and "COOP_TASKRUN" not in flags
    assert stats["config"]["paths"]["sqpoll"] == "on"
    assert stats["config"]["paths"]["coop_taskrun"] == "off: not with SQPOLL"


def test_single_thread(monkeypatch, tmp_path):
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    _, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_SINGLE_THREAD="1")
    assert {"SINGLE_ISSUER", "DEFER_TASKRUN"} <= set(stats["config"]["setup_flags"])
    assert stats["config"]["registered_ring_fd"]
    paths = stats["config"]["paths"]
    assert paths["single_issuer"] == "on" and paths["registered_ring_fd"] == "on"
    assert paths["coop_taskrun"] == "off: DEFER_TASKRUN instead (a single-thread ring)"


def test_napi(monkeypatch, tmp_path):
    """Registered and harmless; on loopback there is no NIC queue to poll,
    so it changes nothing there."""
    _, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_NAPI="50")
    assert stats["config"]["paths"]["napi"] == "on"
    assert stats["config"]["knobs"]["URINGLOOP_NAPI"] == "50"


async def receive_paths(loop):
    """(RECV SQEs for 20 Protocol echoes over one connection, the most
    provided buffers held while 5 sock_recv calls ran)."""
    server = await loop.create_server(Echo, "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
    before = loop.ring_stats()["sqes_by_opcode"].get("RECV", 0)
    for i in range(20):
        writer.write(b"%d" % i)
        assert await reader.readexactly(len(b"%d" % i)) == b"%d" % i
    stream_recvs = loop.ring_stats()["sqes_by_opcode"]["RECV"] - before
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        b.setblocking(False)
        for _ in range(5):
            await loop.sock_sendall(a, b"ping")
            assert await loop.sock_recv(b, 100) == b"ping"
    return stream_recvs, loop.ring_stats()["buffers"]["high_water"]


@pytest.mark.parametrize("disabled", ["", "multishot_recv", "buffer_ring"])
def test_buffer_ring_and_multishot_recv_switch_apart(monkeypatch, disabled):
    """Each switch turns off its own path only: without multishot_recv a
    Protocol transport posts one RECV per read while sock_recv still takes
    provided buffers; without buffer_ring neither has provided buffers (a
    multishot receive needs them)."""
    monkeypatch.setenv("URINGLOOP_DISABLE", disabled)
    loop = new_strict_loop("uringloop")
    try:
        stream_recvs, high_water = run(loop, receive_paths(loop), timeout=30)
        paths = loop.ring_stats()["config"]["paths"]
    finally:
        finish_strict_loop(loop)
    multishot = disabled == ""
    provided = disabled != "buffer_ring"
    assert (paths["multishot_recv"] == "on") == multishot
    assert (paths["buffer_ring"] == "on") == provided
    if disabled == "buffer_ring":
        assert paths["multishot_recv"] == "off: needs buffer_ring"
    # One armed receive for all 20 messages, or one receive per message.
    assert (stream_recvs <= 1) if multishot else (stream_recvs >= 20)
    # Only sock_recv takes provided buffers once the multishot is off.
    assert (high_water >= 1) == provided


def test_fixed_files(monkeypatch, tmp_path):
    """Stream transports (Protocol, BufferedProtocol, streams) echo through
    registered slots; every slot is free again once they closed."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    loop, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_FIXED_FILES="1")
    assert stats["config"]["paths"]["fixed_files"] == "on"
    files = stats["config"]["fixed_files"]
    assert files["slots"] == _features.fixed_file_slots() > 0
    # Three connections to each of three servers, a transport at each end
    # but the sock_* server's.
    assert files["installed"] == 3 * 2 + 3 * 2 + 3
    assert files["table_full"] == files["refused"] == 0
    assert loop._ring.closed


class ClosingEcho(Echo):
    def __init__(self, made, lost):
        self.made = made
        self.lost = lost

    def connection_made(self, transport):
        super().connection_made(transport)
        self.made.append(transport)

    def connection_lost(self, exc):
        self.lost.append(exc)


def test_fixed_file_feature_test_is_a_real_round_trip():
    assert _features.fixed_file_support() is None


def test_a_failed_fixed_file_test_leaves_the_sockets_on_their_fds(monkeypatch, tmp_path):
    """What a kernel that keeps an emptied slot's socket open gets."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    why = "the kernel lets an emptied slot's socket go only once older operations on slots end"
    monkeypatch.setattr(_features, "_fixed_files", why)
    loop, stats = echo_loop(monkeypatch, tmp_path, URINGLOOP_FIXED_FILES="1")
    assert stats["config"]["paths"]["fixed_files"] == "off: " + why
    assert stats["config"]["fixed_files"]["slots"] == 0
    assert not loop._fixed_files


def test_fixed_file_slots_are_reused_and_never_leak(monkeypatch):
    """Four slots: six transports at once leave two on their fds; then 50
    connections one after another each take two slots and give them back,
    the moment their sockets close."""
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    monkeypatch.setenv("URINGLOOP_FIXED_FILES", "1")
    monkeypatch.setattr(_features, "_MAX_FIXED_FILES", 4)
    loop = new_strict_loop("uringloop")
    made, lost = [], []

    async def connect(port):
        count = len(made)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while len(made) == count:  # until the server side exists too
            await asyncio.sleep(0)
        return reader, writer

    async def echo(reader, writer, message):
        writer.write(message)
        assert await reader.readexactly(len(message)) == message

    async def main():
        server = await loop.create_server(lambda: ClosingEcho(made, lost), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        ring = loop._ring
        connections = [await connect(port) for _ in range(3)]
        assert ring.files_usage()["in_use"] == 4
        assert ring.files_usage()["table_full"] == 2
        for reader, writer in connections:
            await echo(reader, writer, os.urandom(100_000))
        for i, (reader, writer) in enumerate(connections):
            writer.close()
            await writer.wait_closed()
            while len(lost) <= i:
                await asyncio.sleep(0)
        assert ring.files_usage()["in_use"] == 0
        for i in range(50):
            reader, writer = await connect(port)
            assert ring.files_usage()["in_use"] == 2
            await echo(reader, writer, b"%d" % i)
            writer.close()
            await writer.wait_closed()
            while len(lost) < 4 + i:
                await asyncio.sleep(0)
            assert ring.files_usage()["in_use"] == 0, i
        server.close()
        await server.wait_closed()
        return ring.files_usage()

    try:
        usage = run(loop, main(), timeout=60)
    finally:
        finish_strict_loop(loop)
    assert usage == {"slots": 4, "in_use": 0, "high_water": 4, "installed": 4 + 2 * 50,
                     "table_full": 2, "refused": 0}


class Received(asyncio.Protocol):
    def __init__(self):
        self.data = asyncio.get_running_loop().create_future()

    def data_received(self, data):
        if not self.data.done():
            self.data.set_result(data)


@pytest.mark.parametrize("deferred", [False, True])
def test_deferred_writes_wait_for_the_next_submission(monkeypatch, tmp_path, deferred):
    """By default a write reaches the socket before write() returns, as
    asyncio's does; URINGLOOP_DEFER_WRITES=1 leaves it for the ring's next
    submission, at the loop's next turn.  The echo still carries
    everything either way."""
    if deferred:
        monkeypatch.setenv("URINGLOOP_DEFER_WRITES", "1")
    loop = new_strict_loop("uringloop")
    ours, peer = socket.socketpair()

    async def main():
        transport, _ = await loop.create_unix_connection(Received, sock=ours)
        transport.write(b"now?")
        peer.setblocking(False)
        try:
            at_once = peer.recv(100)
        except BlockingIOError:
            at_once = None
        await asyncio.sleep(0.01)
        later = at_once or peer.recv(100)
        transport.close()
        await asyncio.sleep(0.01)
        return at_once, later, loop._features.report()["defer_writes"]

    try:
        at_once, later, path = run(loop, main())
    finally:
        finish_strict_loop(loop)
        peer.close()
    assert later == b"now?"
    assert at_once == (None if deferred else b"now?")
    assert path == "on" if deferred else path.startswith("off: not asked for")
    loop, stats = echo_loop(monkeypatch, tmp_path)
    assert stats["config"]["knobs"].get("URINGLOOP_DEFER_WRITES") == ("1" if deferred else None)


def test_fixed_file_operations_name_the_slot_not_the_fd(monkeypatch):
    """With the transport's fd number pointed at another socket (dup2), its
    ring sends and receives still reach its own peer: the kernel looks up
    the slot, not the fd.  (A write to an idle queue goes to the socket
    first, by fd, as asyncio's does: here the socket refuses most of a big
    write before the dup2, and the ring sends the rest.)"""
    monkeypatch.setenv("URINGLOOP_FIXED_FILES", "1")
    loop = new_strict_loop("uringloop")
    ours, peer = socket.socketpair()
    decoy, decoy_peer = socket.socketpair()
    payload = bytes(range(256)) * 4096   # 1 MiB: far more than the socket takes at once

    async def main():
        transport, protocol = await loop.create_unix_connection(Received, sock=ours)
        await asyncio.sleep(0)  # the receive is armed
        assert transport._io_fd < 0
        transport.write(payload)
        assert transport.get_write_buffer_size() > 0   # the rest waits for the ring
        os.dup2(decoy.fileno(), ours.fileno())
        peer.send(b"from the peer")
        assert await asyncio.wait_for(protocol.data, 10) == b"from the peer"
        peer.setblocking(False)
        received = bytearray()
        while len(received) < len(payload):
            received += await asyncio.wait_for(loop.sock_recv(peer, 1 << 20), 10)
        transport.close()
        await asyncio.sleep(0.01)
        return bytes(received)

    try:
        assert run(loop, main()) == payload
    finally:
        finish_strict_loop(loop)
    with peer, decoy, decoy_peer:
        decoy_peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            decoy_peer.recv(100)


def test_send_zc_echo(monkeypatch):
    """Writes from the threshold up leave with SEND_ZC: many writes of big
    messages (bytes, bytearray, some several per turn) through an echo,
    every byte checksummed, on a loop with URINGLOOP_SEND_ZC=32k."""
    import hashlib
    import random

    monkeypatch.setenv("URINGLOOP_SEND_ZC", "32k")
    loop = new_strict_loop("uringloop")
    rng = random.Random(3)
    messages = [rng.randbytes(rng.choice((40_000, 100_000, 1 << 20, 3 << 20)))
                for _ in range(40)]

    async def main():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        sent, received = hashlib.sha256(), hashlib.sha256()
        total = 0

        async def read_all():
            nonlocal total
            while total < sum(map(len, messages)):
                chunk = await reader.read(1 << 20)
                assert chunk
                received.update(chunk)
                total += len(chunk)

        reading = asyncio.ensure_future(read_all())
        for index, message in enumerate(messages):
            writer.write(message if index % 3 else bytearray(message))
            sent.update(message)
            if index % 4 == 0:
                await writer.drain()
        await reading
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return sent.digest() == received.digest()

    try:
        assert run(loop, main(), timeout=120)
        stats = loop.ring_stats()
    finally:
        finish_strict_loop(loop)
    assert stats["config"]["paths"]["send_zc"] == "on"
    assert stats["config"]["knobs"]["URINGLOOP_SEND_ZC"] == "32k"
    assert stats["sqes_by_opcode"].get("SEND_ZC", 0) >= 10
