"""A small echo round trip served by uringloop (the README's main job until
the side-by-side benchmark replaces it).

A server built on ``loop.sock_accept``/``sock_recv``/``sock_sendall`` echoes
what N concurrent clients send for a few seconds; the demo prints the
backend in use and the round trips it completed.
"""
import argparse
import asyncio
import socket
import time

import uringloop


async def serve_client(loop, conn):
    with conn:
        while data := await loop.sock_recv(conn, 65536):
            await loop.sock_sendall(conn, data)


async def accept_forever(loop, listener, tasks):
    while True:
        conn, _ = await loop.sock_accept(listener)
        tasks.add(asyncio.ensure_future(serve_client(loop, conn)))


async def client(loop, address, message, deadline, counts):
    sock = socket.socket()
    sock.setblocking(False)
    with sock:
        await loop.sock_connect(sock, address)
        while time.monotonic() < deadline:
            await loop.sock_sendall(sock, message)
            received = 0
            while received < len(message):
                chunk = await loop.sock_recv(sock, 65536)
                if not chunk:
                    raise ConnectionError("server closed early")
                received += len(chunk)
            counts[0] += 1


async def main(args):
    loop = asyncio.get_running_loop()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    listener.setblocking(False)
    server_tasks = set()
    acceptor = asyncio.ensure_future(accept_forever(loop, listener, server_tasks))
    counts = [0]
    message = b"x" * args.size
    start = time.monotonic()
    deadline = start + args.seconds
    await asyncio.gather(*(client(loop, listener.getsockname(), message, deadline, counts)
                           for _ in range(args.connections)))
    elapsed = time.monotonic() - start
    acceptor.cancel()
    for task in server_tasks:
        task.cancel()
    await asyncio.gather(acceptor, *server_tasks, return_exceptions=True)
    listener.close()
    print(f"backend: {getattr(loop, 'backend', type(loop).__name__)}")
    print(f"{counts[0]} echo round trips of {args.size} bytes over "
          f"{args.connections} connections in {elapsed:.1f}s "
          f"({counts[0] / elapsed:,.0f}/s, client and server in one process)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--size", type=int, default=1024)
    uringloop.run(main(parser.parse_args()))
