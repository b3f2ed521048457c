"""The stream transport's per-message methods, write() and the delivery of
received data, at the edges where the C accelerator (csrc/stream_speedups.c)
hands over to the Python reference (_stream.StreamPerMessage): a protocol
whose data_received raises, SystemExit from it, a float high-water mark,
writes of every bytes-like type mixed in one stream.  ``loop`` tests state
asyncio's behaviour and run on both loops; tests/run.sh runs the suite
with the accelerator and without it."""
import asyncio
import gc
import socket
import sys
import weakref

import pytest

from uringloop import _accel, _stream

from .conftest import run
from .test_stream_writes import _connected, _receive, _shrink_send_buffer

# 3.13 deprecated sys._clear_type_cache for this, which also empties it.
_clear_type_cache = (sys._clear_internal_caches if sys.version_info >= (3, 13)
                     else sys._clear_type_cache)


class Recorder(asyncio.Protocol):
    def __init__(self, on_data=None):
        self.on_data = on_data
        self.received = bytearray()
        self.pauses = 0
        self.lost = asyncio.get_running_loop().create_future()

    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.received += data
        if self.on_data is not None:
            self.on_data(data)

    def pause_writing(self):
        self.pauses += 1

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


def test_an_exception_in_data_received_is_a_fatal_error_handled_as_asyncio_does(loop):
    seen = []

    def handler(_loop, context):
        # asyncio reports it from inside its except block.
        seen.append((context, sys.exc_info()[1]))

    loop.set_exception_handler(handler)
    error = ValueError("protocol bug")

    def fail(_data):
        raise error

    async def main():
        transport, proto, peer = await _connected(loop, lambda: Recorder(fail))
        await loop.sock_sendall(peer, b"x" * 100)
        lost = await proto.lost
        peer.close()
        return transport, lost

    transport, lost = run(loop, main())
    assert lost is error
    assert transport.is_closing()
    [(context, handled)] = seen
    assert context["message"] == "Fatal error: protocol.data_received() call failed."
    assert context["exception"] is error
    assert context["transport"] is transport
    assert handled is error


def test_system_exit_from_data_received_leaves_the_loop(loop):
    def leave(_data):
        # An empty type attribute cache made the C completion dispatch
        # look up the ring's error handler while SystemExit was pending;
        # the lookup's miss cleared it (a callback failing with no
        # exception set, a NULL dereference).
        _clear_type_cache()
        raise SystemExit(3)

    async def main():
        transport, proto, peer = await _connected(loop, lambda: Recorder(leave))
        await loop.sock_sendall(peer, b"bye")
        await asyncio.sleep(10)

    task = loop.create_task(main())
    with pytest.raises(SystemExit) as raised:
        loop.run_until_complete(task)
    assert raised.value.code == 3
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        loop.run_until_complete(task)
    for transport in list(getattr(loop, "_transports", {}).values()):
        if transport is not None:
            transport.abort()


def test_a_float_high_water_mark_compares_as_asyncio_compares_it(loop):
    async def main():
        transport, proto, peer = await _connected(loop, Recorder)
        transport.set_write_buffer_limits(high=100.5, low=10.5)
        payload = bytes(range(256)) * 4
        transport.write(payload)   # the socket takes it at once: no pause
        got = await _receive(loop, peer, len(payload))
        transport.close()
        await proto.lost
        peer.close()
        return got, proto.pauses

    got, pauses = run(loop, main())
    assert got == bytes(range(256)) * 4
    assert pauses == 0


def test_every_bytes_like_type_keeps_its_place_in_the_stream(loop):
    pieces = [b"a" * 10, bytearray(b"b" * 20), memoryview(b"c" * 30), b"", b"d" * 70000,
              memoryview(bytearray(b"e" * 5)), b"f"]

    async def main():
        transport, proto, peer = await _connected(loop, Recorder)
        for piece in pieces:
            transport.write(piece)
        expected = b"".join(bytes(piece) for piece in pieces)
        got = await _receive(loop, peer, len(expected))
        transport.close()
        await proto.lost
        peer.close()
        return got, expected

    got, expected = run(loop, main())
    assert got == expected


def test_write_takes_its_argument_as_asyncio_does(loop):
    # By keyword too, with asyncio's signature and TypeErrors.
    import inspect

    async def main():
        transport, proto, peer = await _connected(loop, Recorder)
        signature = str(inspect.signature(transport.write))
        transport.write(data=b"by keyword ")
        transport.write(b"by position")
        errors = []
        for call in (lambda: transport.write(), lambda: transport.write(b"x", b"y"),
                     lambda: transport.write(b"x", data=b"y"), lambda: transport.write(datum=b"x")):
            with pytest.raises(TypeError) as caught:
                call()
            errors.append(str(caught.value).split("()", 1)[-1])
        got = await _receive(loop, peer, len(b"by keyword by position"))
        transport.close()
        await proto.lost
        peer.close()
        return signature, errors, got

    signature, errors, got = run(loop, main())
    assert signature == "(data)"
    expected = [" missing 1 required positional argument: 'data'",
                " takes 2 positional arguments but 3 were given",
                " got multiple values for argument 'data'",
                " got an unexpected keyword argument 'datum'"]   # 3.13 adds a suggestion
    assert len(errors) == len(expected)
    assert all(error.startswith(start) for error, start in zip(errors, expected)), errors
    assert got == b"by keyword by position"


def test_received_data_arrives_whole_and_in_order_across_pauses(loop):
    chunks = [bytes([n % 251]) * (1 + n * 37 % 3000) for n in range(200)]
    expected = b"".join(chunks)

    def pause_now_and_then(data):
        transport = proto.transport
        if len(proto.received) % 3 == 0:
            transport.pause_reading()
            asyncio.get_running_loop().call_soon(transport.resume_reading)

    async def main():
        nonlocal proto
        transport, proto, peer = await _connected(loop, lambda: Recorder(pause_now_and_then))
        for chunk in chunks:
            await loop.sock_sendall(peer, chunk)
        peer.shutdown(socket.SHUT_WR)
        while len(proto.received) < len(expected):
            await asyncio.sleep(0.01)
        transport.close()
        await proto.lost
        peer.close()
        return bytes(proto.received)

    proto = None
    assert run(loop, main()) == expected


def test_the_transport_class_takes_the_accelerated_methods_when_they_are_on():
    cls = _stream.RingStreamTransport
    if _accel.speedups is None:
        assert cls.write is _stream.StreamPerMessage.write
        assert cls._on_recv_multishot is _stream.StreamPerMessage._on_recv_multishot
    else:
        accelerated = cls.__mro__[1]
        assert accelerated.__module__ == "uringloop._speedups"
        assert accelerated.__bases__ == (_stream.StreamPerMessage,)
        assert cls.write is not _stream.StreamPerMessage.write
        assert "write" in vars(accelerated) and "_on_recv_multishot" in vars(accelerated)
        # The state those methods read is the C class's own (a member
        # descriptor Python code finds first).
        for name in ("_protocol", "_paused", "_sendq", "_high_water"):
            assert type(vars(accelerated)[name]).__name__ == "member_descriptor", name


def test_the_transport_state_is_freed_with_it_and_seen_by_the_collector():
    # The C class keeps the state its methods read in fields of its own;
    # CPython must release them with the transport and follow them when it
    # looks for cycles, as it does for the reference's __slots__.
    cls = _stream.RingStreamTransport.__mro__[1]   # the C class, or the reference
    names = ["_protocol", "_conn_lost", "_closing", "_paused", "_held_results", "_buffered",
             "_recv_op", "_eof", "_empty_waiter", "_sendq", "_sendq_target",
             "_receive_pool", "_high_water"]

    class Held:
        pass

    for name in names:
        for cycle in (False, True):
            transport = cls.__new__(cls)
            held = Held()
            if cycle:
                held.transport = transport
            setattr(transport, name, held)
            assert getattr(transport, name) is held
            alive = weakref.ref(held)
            del transport, held
            if cycle:
                gc.collect()
            assert alive() is None, (name, cycle)


def test_a_big_write_sent_in_place_is_kept_however_high_the_mark(uloop):
    # The queue sends a big write from the bytes object itself; the
    # transport must hold it until the kernel is done, also when the
    # high-water mark is so high that no write ever presses.
    async def main():
        transport, proto, peer = await _connected(uloop, Recorder)
        _shrink_send_buffer(transport)   # the socket refuses most of it at once
        transport.set_write_buffer_limits(high=2**62)
        payload = bytes(range(256)) * 1200   # 300 KiB: the rest sent in place
        transport.write(payload)
        held = transport._write_ref is payload
        got = await _receive(uloop, peer, len(payload))
        transport.close()
        await proto.lost
        peer.close()
        return held, got == payload

    assert run(uloop, main()) == (True, True)
