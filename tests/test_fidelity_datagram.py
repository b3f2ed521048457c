"""Datagram transports behave as asyncio's: flow control, closing and the
error paths of the protocol callbacks.

asyncio offers each datagram to the kernel inside ``sendto()``; only one
the full socket refuses is buffered, counted by ``get_write_buffer_size()``
and dropped by ``abort()``.  A Unix datagram socket with a small send
buffer and a receiver that does not read makes the kernel refuse
deterministically.  Every test runs on both loops (``loop`` fixture).
"""
import asyncio
import inspect
import socket
import sys
from asyncio import selector_events

import pytest

from .conftest import run

PAYLOAD = 100
# Python 3.13 counts an 8-byte header per buffered datagram.
PER_DATAGRAM = PAYLOAD + (8 if sys.version_info >= (3, 13) else 0)
# 3.13.0 to 3.13.5 never take that header off again (CPython gh-135444), so
# their buffer size does not return to 0 once the socket drains.
ASYNCIO_DRAINS_TO_ZERO = sys.version_info[:2] != (3, 13) or "_header_size" in inspect.getsource(
    selector_events._SelectorDatagramTransport)


class Recorder(asyncio.DatagramProtocol):
    def __init__(self):
        self.events = []
        self.lost = None
        self.received = []
        self.raise_in = ()
        self.paused = False

    def connection_made(self, transport):
        self.lost = asyncio.get_running_loop().create_future()

    def datagram_received(self, data, addr):
        self.received.append(data)
        if "datagram_received" in self.raise_in:
            raise ValueError(data)

    def error_received(self, exc):
        self.events.append(("error", exc))
        if "error_received" in self.raise_in:
            raise ValueError("from error_received")

    def pause_writing(self):
        self.events.append("pause")
        self.paused = True

    def resume_writing(self):
        self.events.append("resume")
        self.paused = False

    def connection_lost(self, exc):
        self.events.append(("lost", exc))
        self.lost.set_result(exc)


def datagram(index):
    return b"%04d" % index + b"x" * (PAYLOAD - 4)


async def full_socket_endpoint(loop, tmp_path):
    """A sender whose datagrams the kernel soon refuses: its peer never
    reads until the test drains it."""
    path = str(tmp_path / "receiver")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)
    receiver.setblocking(False)
    transport, protocol = await loop.create_datagram_endpoint(
        Recorder, remote_addr=path, family=socket.AF_UNIX)
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return receiver, transport, protocol


async def drain(receiver, count):
    """Read ``count`` datagrams as they arrive."""
    got = []
    while len(got) < count:
        try:
            got.append(receiver.recv(PAYLOAD * 2))
        except BlockingIOError:
            await asyncio.sleep(0.001)
    return got


def burst(transport, protocol, count):
    """Write ``count`` datagrams in one go; for each, the buffer size after
    sendto() and whether pause_writing() had been called by then."""
    after = []
    for index in range(count):
        transport.sendto(datagram(index))
        after.append((transport.get_write_buffer_size(), protocol.paused))
    return after


def queued_in_kernel(receiver):
    """How many datagrams the receiving socket holds (without reading them)."""
    count = 0
    while True:
        try:
            receiver.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except BlockingIOError:
            return count
        count += 1
        receiver.recv(PAYLOAD * 2)


@pytest.mark.parametrize("ending", ["close", "abort"])
def test_buffer_counts_every_datagram_the_kernel_refused(loop, tmp_path, ending):
    async def main():
        receiver, transport, protocol = await full_socket_endpoint(loop, tmp_path)
        with receiver:
            transport.set_write_buffer_limits(high=0)
            count = 40
            after = burst(transport, protocol, count)
            # Until the first refusal the kernel takes each datagram inside
            # sendto() (the socket has room for several); from then on each
            # one is counted and writing is paused at once.
            taken = next(i for i, (size, _) in enumerate(after) if size)
            assert 1 < taken < count
            assert after == ([(0, False)] * taken
                             + [((i + 1) * PER_DATAGRAM, True)
                                for i in range(count - taken)])
            assert protocol.events == ["pause"]
            if ending == "abort":
                # Drops exactly what was counted, even though the peer
                # makes room right away.
                transport.abort()
                assert await drain(receiver, taken) == [datagram(i) for i in range(taken)]
                assert await protocol.lost is None
                await asyncio.sleep(0.01)  # anything still sending lands now
                assert queued_in_kernel(receiver) == 0
                assert protocol.events == ["pause", ("lost", None)]
                return
            # What was not counted is in the kernel when sendto() returns.
            assert queued_in_kernel(receiver) == taken
            # close() flushes what was counted, then reports the loss.
            transport.close()
            assert await drain(receiver, count - taken) == [
                datagram(i) for i in range(taken, count)]
            assert await protocol.lost is None
            if ASYNCIO_DRAINS_TO_ZERO or loop.is_uring:
                assert transport.get_write_buffer_size() == 0
                assert protocol.events == ["pause", "resume", ("lost", None)]
    run(loop, main())


def udp_pair():
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer.bind(("127.0.0.1", 0))
    peer.setblocking(False)
    return peer


def test_abort_right_after_sendto_loses_nothing_the_kernel_took(loop):
    async def main():
        with udp_pair() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname())
            transport.set_write_buffer_limits(high=0)
            for index in range(5):
                transport.sendto(datagram(index))
            assert transport.get_write_buffer_size() == 0
            transport.abort()
            assert await protocol.lost is None
            got = await drain(peer, 5)
            assert got == [datagram(i) for i in range(5)]
            assert protocol.events == [("lost", None)]  # never paused
    run(loop, main())


def test_send_error_reaches_error_received_inside_sendto(loop):
    async def main():
        with udp_pair() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, remote_addr=peer.getsockname())
            transport.sendto(b"x" * 70000)  # larger than any UDP datagram
            assert [type(e) for _, e in protocol.events] == [OSError]
            assert transport.get_write_buffer_size() == 0
            # error_received's own exception is the caller's, as in asyncio.
            protocol.raise_in = ("error_received",)
            with pytest.raises(ValueError, match="from error_received"):
                transport.sendto(b"x" * 70000)
            transport.sendto(b"fine")
            assert await drain(peer, 1) == [b"fine"]
            assert not transport.is_closing()
            transport.close()
            await protocol.lost
    run(loop, main())


def test_raising_datagram_received_is_reported_and_reading_goes_on(loop):
    async def main():
        with udp_pair() as peer:
            transport, protocol = await loop.create_datagram_endpoint(
                Recorder, local_addr=("127.0.0.1", 0))
            protocol.raise_in = ("datagram_received",)
            address = transport.get_extra_info("sockname")
            peer.sendto(b"one", address)
            peer.sendto(b"two", address)
            while len(protocol.received) < 2:
                await asyncio.sleep(0.001)
            assert protocol.received == [b"one", b"two"]
            assert [c["exception"].args for c in loop.handler_calls] == [(b"one",), (b"two",)]
            assert all(c["message"].startswith("Exception in callback")
                       for c in loop.handler_calls)
            loop.handler_calls.clear()
            assert not transport.is_closing()
            transport.close()
            await protocol.lost
    run(loop, main())


def test_raising_error_received_is_reported_and_reading_goes_on(loop):
    async def main():
        closed_port = udp_pair()
        address = closed_port.getsockname()
        closed_port.close()  # the port now answers with ICMP unreachable
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, remote_addr=address)
        protocol.raise_in = ("error_received",)
        for round in (1, 2):
            transport.sendto(b"ping")
            while len(protocol.events) < round:
                await asyncio.sleep(0.001)
        assert [type(e) for _, e in protocol.events] == [ConnectionRefusedError] * 2
        assert [str(c["exception"]) for c in loop.handler_calls] == ["from error_received"] * 2
        loop.handler_calls.clear()
        assert not transport.is_closing()
        transport.close()
        await protocol.lost
    run(loop, main())


def test_malformed_address_is_a_fatal_write_error(loop):
    async def main():
        transport, protocol = await loop.create_datagram_endpoint(
            Recorder, local_addr=("127.0.0.1", 0))
        transport.sendto(b"x", ("127.0.0.1", "not a port"))
        exc = await protocol.lost
        assert type(exc) is TypeError
        assert [(c["message"], c["exception"]) for c in loop.handler_calls] == [
            ("Fatal write error on datagram transport", exc)]
        loop.handler_calls.clear()
        assert not [e for e in protocol.events if e[0] == "error"]
    run(loop, main())


def test_a_queued_bytearray_is_sent_as_it_was_at_sendto(loop, tmp_path):
    """A datagram the full socket refused waits in the transport, but the
    caller's bytearray is its own again when sendto() returns: changing or
    resizing it changes nothing that is sent."""
    async def main():
        receiver, transport, protocol = await full_socket_endpoint(loop, tmp_path)
        with receiver:
            index = 0
            while not transport.get_write_buffer_size():
                transport.sendto(datagram(index))
                index += 1
            data = bytearray(datagram(index))
            transport.sendto(data)
            data[:] = b"Z" * PAYLOAD
            data.extend(b"resized")
            transport.close()
            assert await drain(receiver, index + 1) == [datagram(i) for i in range(index + 1)]
            assert await protocol.lost is None
    run(loop, main())
