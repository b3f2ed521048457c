"""The Python echo servers of the benchmark, one process per measured run.

    python bench/echo_server.py --loop asyncio|uvloop|uringloop \
        --style protocol|streams|sock (--tcp | --unix PATH)

Owns: the three server styles, each echoing every byte back on the same
connection --

  protocol  an ``asyncio.Protocol`` whose ``data_received`` calls
            ``transport.write`` (``loop.create_server``/``create_unix_server``)
  streams   ``asyncio.start_server``/``start_unix_server``; per connection
            ``reader.read(64 KiB)`` -> ``writer.write`` -> ``await drain()``
  sock      ``loop.sock_accept`` on a listening socket; per connection a task
            doing ``loop.sock_recv(64 KiB)`` -> ``loop.sock_sendall``

-- on the event loop chosen with ``--loop``, run by that library's own
``run()`` (``asyncio.run``, ``uvloop.run``, ``uringloop.run``: a script's
way in; uringloop's is the loop tied to its thread, see README).  TCP
listens on 127.0.0.1 with an ephemeral port and sets TCP_NODELAY on every
connection (as asyncio's and uvloop's transports do by themselves).

Data flow with bench/bench.py: once listening, the server prints one JSON
line on stdout (backend, pid, address) and serves until SIGTERM or SIGINT,
then closes the listener and every open connection and exits with status 0.
With ``ECHO_RING_STATS=PATH`` in the environment, a uringloop server
appends ``loop.ring_stats()`` to PATH as a JSON line on every SIGUSR1
(bench.py sends one at the start and one at the end of the window).
"""
import argparse
import asyncio
import importlib
import json
import os
import signal
import socket
import sys

READ_SIZE = 64 * 1024
BACKLOG = 1024


def library(name):
    """The module of the library called ``name`` (asyncio, uvloop, uringloop)."""
    if name not in ("asyncio", "uvloop", "uringloop"):
        raise ValueError(f"unknown loop {name!r}")
    return importlib.import_module(name)


def loop_factory(name):
    """The ``new_event_loop`` of the library called ``name``."""
    return library(name).new_event_loop


def runner(name):
    """The ``run(main)`` of the library called ``name``."""
    return library(name).run


def describe_backend(name, loop):
    """What actually runs the I/O, so a silent fallback shows in the results."""
    if name == "uvloop":
        import uvloop
        return f"uvloop {uvloop.__version__} (libuv)"
    if name == "uringloop":
        import uringloop
        return f"uringloop {uringloop.__version__} ({getattr(loop, 'backend', '?')})"
    selector = getattr(loop, "_selector", None)
    return f"asyncio {type(loop).__name__} ({type(selector).__name__})"


def set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# Transports (protocol style) and stream writers (streams style) of open
# connections, closed at shutdown: on 3.11 Server.close() leaves them open;
# and the streams handlers, awaited after that so none is left running.
open_connections = set()
stream_handlers = set()


class EchoProtocol(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        open_connections.add(transport)
        set_nodelay(transport.get_extra_info("socket"))

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, exc):
        open_connections.discard(self.transport)


async def serve_protocol(loop, args):
    if args.unix:
        return await loop.create_unix_server(EchoProtocol, args.unix, backlog=BACKLOG)
    return await loop.create_server(EchoProtocol, "127.0.0.1", 0, backlog=BACKLOG)


async def echo_stream(reader, writer):
    stream_handlers.add(asyncio.current_task())
    open_connections.add(writer)
    set_nodelay(writer.get_extra_info("socket"))
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        open_connections.discard(writer)
        stream_handlers.discard(asyncio.current_task())
        writer.close()


async def serve_streams(loop, args):
    if args.unix:
        return await asyncio.start_unix_server(echo_stream, args.unix, backlog=BACKLOG)
    return await asyncio.start_server(echo_stream, "127.0.0.1", 0, backlog=BACKLOG)


class SockServer:
    """A listener served with ``loop.sock_*`` calls; closes like a Server."""

    def __init__(self, loop, listener):
        self.loop = loop
        self.sockets = [listener]
        self.tasks = set()
        self.acceptor = loop.create_task(self.accept_forever(listener))

    async def accept_forever(self, listener):
        while True:
            conn, _ = await self.loop.sock_accept(listener)
            set_nodelay(conn)
            task = self.loop.create_task(self.echo(conn))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def echo(self, conn):
        with conn:
            try:
                while data := await self.loop.sock_recv(conn, READ_SIZE):
                    await self.loop.sock_sendall(conn, data)
            except ConnectionError:
                pass

    def close(self):
        self.acceptor.cancel()
        for task in self.tasks:
            task.cancel()

    async def wait_closed(self):
        await asyncio.gather(self.acceptor, *self.tasks, return_exceptions=True)
        self.sockets[0].close()


async def serve_sock(loop, args):
    if args.unix:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(args.unix)
    else:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    return SockServer(loop, listener)


STYLES = {"protocol": serve_protocol, "streams": serve_streams, "sock": serve_sock}


async def main(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    stats_path = os.environ.get("ECHO_RING_STATS")
    if stats_path and hasattr(loop, "ring_stats"):
        def save_ring_stats():
            with open(stats_path, "a") as f:
                f.write(json.dumps(loop.ring_stats()) + "\n")
        loop.add_signal_handler(signal.SIGUSR1, save_ring_stats)
    if args.unix and os.path.exists(args.unix):
        os.unlink(args.unix)
    server = await STYLES[args.style](loop, args)
    sockname = server.sockets[0].getsockname()
    address = sockname if args.unix else f"{sockname[0]}:{sockname[1]}"
    print(json.dumps({"backend": describe_backend(args.loop, loop),
                      "pid": os.getpid(), "address": address}), flush=True)
    await stop.wait()
    server.close()
    for connection in list(open_connections):
        connection.close()
    await asyncio.gather(*stream_handlers, return_exceptions=True)
    await server.wait_closed()
    if args.unix and os.path.exists(args.unix):
        os.unlink(args.unix)


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Echo server for bench/bench.py")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "uringloop"], required=True)
    parser.add_argument("--style", choices=sorted(STYLES), required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", action="store_true", help="127.0.0.1, ephemeral port")
    where.add_argument("--unix", metavar="PATH", help="a Unix stream socket at PATH")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    runner(arguments.loop)(main(arguments))
