"""Many connections at once on one loop: every byte echoed intact.

Hundreds of connections (server and clients on the same uringloop loop)
keep more completions pending than one batch holds (256) and cycle
through the shared provided receive buffers, running the pool dry
(ENOBUFS, re-armed receives) while it grows from its first 32 buffers.  Each connection sends
payloads unique to it, so a byte from the wrong buffer or connection
shows up as a mismatch, not just as a wrong count.
"""
import asyncio
import os

from .conftest import run

CONNECTIONS = 400
ROUNDS = 10
SIZE = 1024


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)


def test_many_connections_echo_intact(uloop):
    async def client(address, index):
        reader, writer = await asyncio.open_connection(*address)
        try:
            for round_ in range(ROUNDS):
                payload = (b"%05d:%03d:" % (index, round_)) + os.urandom(SIZE - 10)
                writer.write(payload)
                echoed = await reader.readexactly(SIZE)
                assert echoed == payload
        finally:
            writer.close()
            await writer.wait_closed()

    async def main():
        server = await uloop.create_server(Echo, "127.0.0.1", 0, backlog=CONNECTIONS)
        address = server.sockets[0].getsockname()[:2]
        await asyncio.gather(*(client(address, i) for i in range(CONNECTIONS)))
        server.close()
        await server.wait_closed()

    run(uloop, main(), timeout=60)
