"""The file server of the loop.sendfile benchmark, one process per measured run.

    python bench/sendfile_server.py --loop asyncio|uvloop|uringloop --file PATH

Owns one thing: on every accepted connection (``asyncio.start_server`` on
127.0.0.1, ephemeral port), open the file and send all of it with
``await loop.sendfile(writer.transport, file, fallback=False)``, then close
the connection.  ``fallback=False`` makes a loop without a native sendfile
fail rather than quietly copy through user space: asyncio's loop uses
sendfile(2), uringloop splices on its ring.  uvloop has no loop.sendfile of
its own (it inherits AbstractEventLoop's, which raises NotImplementedError),
so on such a loop the server does what code written for it has to: read the
file in 256 KiB chunks and write them to the stream, draining in between.
The ready line names the method used.

Data flow with bench/sendfile_bench.py: once listening, the server prints one
JSON line on stdout (backend, method, pid, address) and serves until SIGTERM
or SIGINT, then closes and exits with status 0.
"""
import argparse
import asyncio
import json
import os
import signal
import sys

from echo_server import describe_backend, loop_factory

CHUNK = 256 * 1024
BACKLOG = 128

# Handlers of open connections, closed and awaited at shutdown.
handlers = set()


async def sendfile_native(loop, writer, file):
    await loop.sendfile(writer.transport, file, fallback=False)


async def read_and_write(loop, writer, file):
    while chunk := file.read(CHUNK):   # the file is in the page cache: reading does not block
        writer.write(chunk)
        await writer.drain()


async def main(args):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A loop that only inherits AbstractEventLoop.sendfile (uvloop) has none.
    native = type(loop).sendfile is not asyncio.AbstractEventLoop.sendfile
    send = sendfile_native if native else read_and_write

    async def serve(reader, writer):
        handlers.add(asyncio.current_task())
        try:
            with open(args.file, "rb") as file:
                await send(loop, writer, file)
        except ConnectionError:
            pass
        finally:
            handlers.discard(asyncio.current_task())
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=BACKLOG)
    host, port = server.sockets[0].getsockname()
    print(json.dumps({"backend": describe_backend(args.loop, loop),
                      "method": "loop.sendfile" if native else "read + write (no loop.sendfile)",
                      "pid": os.getpid(), "address": f"{host}:{port}"}), flush=True)
    await stop.wait()
    server.close()
    for task in list(handlers):
        task.cancel()
    await asyncio.gather(*handlers, return_exceptions=True)
    await server.wait_closed()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="File server for bench/sendfile_bench.py")
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "uringloop"], required=True)
    parser.add_argument("--file", required=True, help="the file every connection receives")
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    with asyncio.Runner(loop_factory=loop_factory(arguments.loop)) as runner:
        runner.run(main(arguments))
