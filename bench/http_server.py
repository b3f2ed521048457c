"""The HTTP servers of the benchmark, one process per measured run.

    python bench/http_server.py --loop asyncio|uvloop|uringloop --app httptools|uvicorn

Owns the two servers, both answering every request with the same 13-byte
plain-text body over HTTP/1.1 keep-alive, on 127.0.0.1 with an ephemeral port:

  httptools  an ``asyncio.Protocol`` feeding ``httptools.HttpRequestParser``
             and writing a prebuilt response for each complete request
  uvicorn    ``uvicorn.Server(config).serve()`` with a three-line ASGI app,
             ``http="httptools"``, no access log, no lifespan

Each runs on the loop chosen with ``--loop``, created by that library's own
``new_event_loop`` (bench/echo_server.py's loop_factory) through
``asyncio.Runner``; uvicorn is handed the running loop (``serve()``, never
``run()``, which would set up a loop of its own choosing), and the server
refuses to start when the loop it runs on is not the requested library's.

Data flow with bench/http_bench.py: once listening, the server prints one
JSON line on stdout (backend, pid, address) and serves until SIGTERM or
SIGINT, then closes and exits with status 0.
"""
import argparse
import asyncio
import json
import os
import signal
import socket
import sys

import httptools

from echo_server import describe_backend, loop_factory

BODY = b"Hello, World!"
RESPONSE = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
CLOSING_RESPONSE = RESPONSE.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
BACKLOG = 1024

# Transports of open connections, closed at shutdown: on 3.11 Server.close()
# leaves them open.
open_connections = set()


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 on one connection; httptools calls on_message_complete once
    per request, so pipelined requests are answered in order."""

    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        open_connections.add(transport)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.write(BAD_REQUEST)
            self.transport.close()

    def on_message_complete(self):
        if self.parser.should_keep_alive():
            self.transport.write(RESPONSE)
        else:
            self.transport.write(CLOSING_RESPONSE)
            self.transport.close()

    def connection_lost(self, exc):
        open_connections.discard(self.transport)


async def start_httptools(loop, listener):
    server = await loop.create_server(HttpProtocol, sock=listener, backlog=BACKLOG)

    async def close():
        server.close()
        for transport in list(open_connections):
            transport.close()
        await server.wait_closed()
    return close


async def asgi_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"),
                            (b"content-length", b"%d" % len(BODY))]})
    await send({"type": "http.response.body", "body": BODY})


async def start_uvicorn(loop, listener):
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    config = uvicorn.Config(asgi_app, http="httptools", loop="none", lifespan="off",
                            access_log=False, log_level="warning", backlog=BACKLOG)
    config.load()
    if config.http_protocol_class is not HttpToolsProtocol:
        raise RuntimeError(f"uvicorn chose {config.http_protocol_class.__name__}, not httptools")
    server = uvicorn.Server(config)
    # serve() swaps in its own SIGINT/SIGTERM handlers for its lifetime, sets
    # should_exit on the signal, and raises the signal again once shut down,
    # when the loop's handler (main's) is back and only sets ``stop`` again.
    serving = loop.create_task(server.serve(sockets=[listener]))
    while not server.started:
        if serving.done():
            await serving
            raise RuntimeError("uvicorn stopped before it started")
        await asyncio.sleep(0.01)
    if any(listening.get_loop() is not loop for listening in server.servers):
        raise RuntimeError("uvicorn serves on another loop than the one it was started on")

    async def close():
        server.should_exit = True
        await serving
    return close


SERVERS = {"httptools": start_httptools, "uvicorn": start_uvicorn}


def check_loop(name, loop):
    """The running loop really is the requested library's, so that no result
    is ever filed under the wrong loop (uringloop's selector fallback is
    uringloop's own, and shows in the backend)."""
    if type(loop).__module__.split(".")[0] != name:
        raise RuntimeError(f"asked for {name} but running on {type(loop).__module__}."
                           f"{type(loop).__name__}")


async def main(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # proto given explicitly: asyncio's transports set TCP_NODELAY only on
    # sockets whose proto is IPPROTO_TCP, and accepted sockets inherit the
    # listener's 0 otherwise (uvicorn's responses would then wait out
    # delayed ACKs, 40 ms each).
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(BACKLOG)
    listener.setblocking(False)
    host, port = listener.getsockname()
    check_loop(args.loop, loop)
    close = await SERVERS[args.app](loop, listener)
    print(json.dumps({"backend": describe_backend(args.loop, loop), "pid": os.getpid(),
                      "address": f"{host}:{port}"}), flush=True)
    await stop.wait()
    await close()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="HTTP server for bench/http_bench.py")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "uringloop"], required=True)
    parser.add_argument("--app", choices=sorted(SERVERS), required=True)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    with asyncio.Runner(loop_factory=loop_factory(arguments.loop)) as runner:
        runner.run(main(arguments))
