"""Which threads may run a loop.  A loop from ``new_event_loop()`` may be
run from one thread and later from another, as asyncio's may, keeping its
connections, even after the thread that armed their receives has exited.
``uringloop.run()``'s loop never leaves its thread, so its ring is
SINGLE_ISSUER + DEFER_TASKRUN; ``URINGLOOP_SINGLE_THREAD`` overrides the
choice for every loop (0 or 1, anything else is an error)."""
import asyncio
import functools
import os
import socket
import subprocess
import sys
import threading

import pytest

import uringloop

from .conftest import run


class Echo(asyncio.Protocol):
    def __init__(self, accepted):
        self.accepted = accepted

    def connection_made(self, transport):
        self.transport = transport
        self.accepted.append(transport)

    def data_received(self, data):
        self.transport.write(data)


async def open_echo():
    """A server (with the list of its transports) and a stream to it."""
    loop = asyncio.get_running_loop()
    accepted = []
    server = await loop.create_server(lambda: Echo(accepted), "127.0.0.1", 0)
    server.accepted = accepted
    reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
    return server, reader, writer


def close_echo(loop, server, *writers):
    for writer in writers:
        writer.close()
    for transport in server.accepted:  # Server.close() leaves them on 3.11
        transport.close()
    server.close()
    run(loop, server.wait_closed())


async def round_trip(reader, writer, message):
    writer.write(message)
    return await reader.readexactly(len(message))


# These loops change threads, which URINGLOOP_SINGLE_THREAD=1 forbids.
changes_threads = pytest.mark.skipif(
    os.environ.get("URINGLOOP_SINGLE_THREAD") == "1",
    reason="URINGLOOP_SINGLE_THREAD=1 ties every loop to its first thread")


def in_thread(function):
    """function() in a new thread that then exits; its result or error."""
    outcome = {}

    def body():
        try:
            outcome["result"] = function()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def run_in_thread(loop, coro):
    return in_thread(lambda: run(loop, coro))


@changes_threads
def test_a_loop_runs_in_one_thread_then_another(loop):
    server, reader, writer = run(loop, open_echo())
    assert run(loop, round_trip(reader, writer, b"main")) == b"main"
    assert run_in_thread(loop, round_trip(reader, writer, b"thread" * 5000)) == b"thread" * 5000
    assert run(loop, round_trip(reader, writer, b"main again")) == b"main again"
    close_echo(loop, server, writer)


@changes_threads
def test_connections_outlive_the_thread_that_first_ran_the_loop(loop):
    """The receives and the accept are armed by a thread that exits before
    the loop runs again: the connection and the server keep working."""
    server, reader, writer = run_in_thread(loop, open_echo())
    for size in (1, 1000, 300_000):
        message = bytes(range(256)) * (size // 256) + b"!" * (size % 256)
        assert run(loop, round_trip(reader, writer, message)) == message
    other_reader, other_writer = run(
        loop, asyncio.open_connection(*server.sockets[0].getsockname()))
    assert run(loop, round_trip(other_reader, other_writer, b"second")) == b"second"
    close_echo(loop, server, writer, other_writer)


def ring_paths(loop):
    return loop.ring_stats()["config"]["paths"]


async def running_loop_paths():
    return ring_paths(asyncio.get_running_loop())


def test_run_ties_its_ring_to_its_thread(monkeypatch):
    monkeypatch.delenv("URINGLOOP_SINGLE_THREAD", raising=False)
    monkeypatch.delenv("URINGLOOP_DISABLE", raising=False)
    monkeypatch.delenv("URINGLOOP_SQPOLL", raising=False)
    assert uringloop.run(running_loop_paths())["single_issuer"] in (
        "on", "off: the kernel refused the setup flags")
    loop = uringloop.new_event_loop()
    try:
        assert ring_paths(loop)["single_issuer"] == (
            "off: not asked for (uringloop.run(), or URINGLOOP_SINGLE_THREAD=1)")
    finally:
        loop.close()


def test_single_thread_0_keeps_runs_loop_thread_agnostic(monkeypatch):
    monkeypatch.setenv("URINGLOOP_SINGLE_THREAD", "0")
    assert uringloop.run(running_loop_paths())["single_issuer"].startswith("off: not asked for")


@pytest.mark.parametrize("value", ["", "yes", "2", " 1"])
def test_single_thread_rejects_other_values(monkeypatch, value):
    monkeypatch.setenv("URINGLOOP_SINGLE_THREAD", value)
    with pytest.raises(ValueError, match="URINGLOOP_SINGLE_THREAD=.*expected 0 or 1"):
        uringloop.new_event_loop()


def in_thread_with_ident(ident, function, tries=50):
    """function() in a new thread whose threading.get_ident() is ``ident``
    (that of a thread that exited: the next thread usually gets it)."""
    for _ in range(tries):
        def attempt():
            if threading.get_ident() != ident:
                return attempt  # not this one: it exits, the next may
            return function()
        result = in_thread(attempt)
        if result is not attempt:
            return result
    pytest.skip("no new thread got the exited thread's ident")


def run_in_thread_and_keep_its_ident(loop, coro):
    idents = []

    def body():
        idents.append(threading.get_ident())
        return run(loop, coro)
    return in_thread(body), idents[0]


@changes_threads
def test_a_new_thread_with_an_exited_threads_ident_is_another_thread(loop):
    """Thread idents are reused as soon as a thread has exited, but the
    kernel still drops what the old thread armed: a receive and a read
    pipe armed by one thread complete when the loop runs in the next,
    which has its ident."""
    receiving, sending = socket.socketpair()
    receiving.setblocking(False)
    pipe_read, pipe_write = os.pipe()

    async def arm():
        running = asyncio.get_running_loop()
        recv = running.create_task(running.sock_recv(receiving, 100))
        pipe, protocol = await running.connect_read_pipe(
            lambda: Collect(running, 5), os.fdopen(pipe_read, "rb", buffering=0))
        await asyncio.sleep(0.05)  # both have reached the kernel
        return recv, pipe, protocol.done

    (recv, pipe, piped), ident = run_in_thread_and_keep_its_ident(loop, arm())
    sending.send(b"hello")
    os.write(pipe_write, b"piped")

    async def finish():
        return await recv, await piped

    try:
        assert in_thread_with_ident(ident, lambda: run(loop, finish())) == (b"hello", b"piped")
    finally:
        pipe.close()
        os.close(pipe_write)
        receiving.close()
        sending.close()
        run(loop, asyncio.sleep(0))


@pytest.mark.parametrize("second", ["another thread", "a new thread with the first's ident"])
def test_a_single_thread_loop_refuses_a_second_thread(monkeypatch, second):
    monkeypatch.setenv("URINGLOOP_SINGLE_THREAD", "1")
    loop = uringloop.new_event_loop()
    try:
        if ring_paths(loop)["single_issuer"] != "on":
            pytest.skip("this kernel refused SINGLE_ISSUER + DEFER_TASKRUN")
        if second == "another thread":
            assert run(loop, asyncio.sleep(0, "here")) == "here"
            in_second = in_thread
        else:
            here, ident = run_in_thread_and_keep_its_ident(loop, asyncio.sleep(0, "here"))
            assert here == "here"
            in_second = functools.partial(in_thread_with_ident, ident)
        with pytest.raises(RuntimeError, match="first run in another thread"):
            in_second(lambda: loop.run_until_complete(loop.create_future()))
    finally:
        loop.close()


@changes_threads
def test_waits_armed_by_an_exited_thread_still_complete(loop):
    """Every kind of wait a loop arms, armed in a thread that then exits,
    completes when its event comes: a sock_recv, a reader callback, a read
    pipe, a datagram endpoint, a child's exit, a threadsafe wake-up and a
    write waiting for its reader."""
    receiving, sending = socket.socketpair()
    watched, poke = socket.socketpair()
    written, reader_end = socket.socketpair()
    pipe_read, pipe_write = os.pipe()
    big = bytes(range(256)) * 16384  # 4 MiB: more than the socket buffers hold
    for sock in (receiving, watched, written, reader_end):
        sock.setblocking(False)

    async def arm():
        running = asyncio.get_running_loop()
        armed = {"recv": running.create_task(running.sock_recv(receiving, 100))}
        readable = running.create_future()
        running.add_reader(watched, lambda: readable.done() or readable.set_result(
            watched.recv(100)))
        armed["reader"] = readable
        pipe, pipe_protocol = await running.connect_read_pipe(
            lambda: Collect(running, 5), os.fdopen(pipe_read, "rb", buffering=0))
        armed["pipe"] = (pipe, pipe_protocol.done)
        udp, udp_protocol = await running.create_datagram_endpoint(
            lambda: FirstDatagram(running), local_addr=("127.0.0.1", 0))
        armed["udp"] = (udp, udp_protocol.first)
        armed["child"] = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "import sys; sys.stdin.read()", stdin=subprocess.PIPE)
        writer, _ = await running.connect_accepted_socket(asyncio.Protocol, written)
        writer.write(big)
        armed["writer"] = writer
        await asyncio.sleep(0.05)  # every wait has reached the kernel
        return armed

    armed = run_in_thread(loop, arm())
    assert armed["writer"].get_write_buffer_size() > 0
    woken = loop.create_future()
    sending.send(b"hello")
    poke.send(b"poked")
    os.write(pipe_write, b"piped")
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.sendto(b"datagram", armed["udp"][0].get_extra_info("sockname"))
    armed["child"].stdin.close()
    timer = threading.Timer(0.1, loop.call_soon_threadsafe, (woken.set_result, "woken"))
    timer.start()

    async def read_all():
        received = bytearray()
        while len(received) < len(big):
            received += await loop.sock_recv(reader_end, 1 << 20)
        return bytes(received)

    try:
        assert run(loop, armed["recv"]) == b"hello"
        assert run(loop, armed["reader"]) == b"poked"
        assert run(loop, armed["pipe"][1]) == b"piped"
        assert run(loop, armed["udp"][1]) == b"datagram"
        assert run(loop, armed["child"].wait()) == 0
        assert run(loop, woken) == "woken"
        assert run(loop, read_all()) == big
        if hasattr(loop, "ring_stats"):  # what the kernel dropped went in again
            # (how many depends on which requests the kernel had ended by the
            # time their events came: 3 and more in the runs here)
            assert loop.ring_stats()["sqes_resubmitted"] > 0
    finally:
        timer.join()
        loop.remove_reader(watched)
        for transport in (armed["writer"], armed["pipe"][0], armed["udp"][0]):
            transport.close()
        for sock in (receiving, sending, watched, poke, reader_end, sender):
            sock.close()
        os.close(pipe_write)
        run(loop, asyncio.sleep(0))


class Collect(asyncio.Protocol):
    """Data until ``size`` bytes came (then ``done`` has them)."""

    def __init__(self, loop, size):
        self.data, self.size, self.done = bytearray(), size, loop.create_future()

    def data_received(self, data):
        self.data += data
        if len(self.data) >= self.size and not self.done.done():
            self.done.set_result(bytes(self.data))


class FirstDatagram(asyncio.DatagramProtocol):
    def __init__(self, loop):
        self.first = loop.create_future()

    def datagram_received(self, data, addr):
        if not self.first.done():
            self.first.set_result(data)


@changes_threads
def test_a_connect_started_by_an_exited_thread_completes(loop):
    """A connect still waiting when its thread exits (the listener's queue
    is full, so the SYN waits for a retransmission) completes once the
    listener makes room, as the same connect would on asyncio's loop."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=0)
    address = listener.getsockname()
    queued = socket.create_connection(address)  # fills the accept queue
    client = socket.socket()
    client.setblocking(False)

    async def start_connecting():
        running = asyncio.get_running_loop()
        connecting = running.create_task(running.sock_connect(client, address))
        await asyncio.sleep(0.1)
        return connecting

    try:
        connecting = run_in_thread(loop, start_connecting())
        assert not connecting.done()
        listener.accept()[0].close()  # room for the retransmitted SYN
        assert run(loop, connecting) is None
        accepted, peer = listener.accept()
        accepted.close()
        assert peer == client.getsockname()
    finally:
        for sock in (listener, queued, client):
            sock.close()
