"""A fixed-count HTTP/1.1 keep-alive client: bench/instructions.py's load for
bench/http_server.py under callgrind, where the server must see an exact
number of requests (wrk runs for a time, never for a count).

    python bench/http_count_client.py --tcp HOST:PORT --conns C \
        --requests N [--warmup-requests W]

Owns C keep-alive connections, each doing strict ping-pong: a ``GET /``,
then the response read through its Content-Length and checked (status 200,
http_server's body).  It runs on asyncio's own loop in its own process,
pinned by the driver to the client core; under callgrind the server is so
much slower that this client's speed does not matter.

Protocol with the driver, the same as bench/echo_client.c's --requests
mode (one line each on stdout): W warm-up requests per connection ->
"START" with nothing in flight -> wait for one line on stdin (the go) ->
exactly N requests per connection -> "STOP" when the last one completed ->
one JSON line (requests, seconds, rps, p50_us, p99_us, client_cpu, conns)
-> the connections stay open until stdin reaches EOF.
Exit status 1 with a message on stderr if a response is wrong or a
connection closes.
"""
import argparse
import asyncio
import json
import sys
import time

from http_server import BODY

REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"


def content_length(head):
    """Status code and Content-Length of a response head (bytes up to the blank line)."""
    status_line, *fields = head.decode("latin-1").split("\r\n")
    length = None
    for field in fields:
        name, _, value = field.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    return int(status_line.split()[1]), length


async def ping_pong(reader, writer, count, latencies):
    for _ in range(count):
        started = time.perf_counter_ns()
        writer.write(REQUEST)
        status, length = content_length(await reader.readuntil(b"\r\n\r\n"))
        body = await reader.readexactly(length or 0)
        if status != 200 or body != BODY:
            raise RuntimeError(f"unexpected response: status {status}, body {body!r}")
        latencies.append(time.perf_counter_ns() - started)


def percentile_us(ordered, share):
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered)) - 1))] / 1e3


async def main(args):
    host, port = args.tcp.rsplit(":", 1)
    connections = [await asyncio.open_connection(host, int(port)) for _ in range(args.conns)]
    await asyncio.gather(*(ping_pong(r, w, args.warmup_requests, []) for r, w in connections))
    print("START", flush=True)
    sys.stdin.readline()   # blocks the loop on purpose: nothing is in flight
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(ping_pong(r, w, args.requests, latencies) for r, w in connections))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    print("STOP", flush=True)
    latencies.sort()
    print(json.dumps({"requests": len(latencies), "seconds": seconds,
                      "rps": len(latencies) / seconds, "p50_us": percentile_us(latencies, 0.5),
                      "p99_us": percentile_us(latencies, 0.99), "client_cpu": cpu / seconds,
                      "conns": args.conns}), flush=True)
    sys.stdin.read()   # the closes stay out of the server's window
    for _, writer in connections:
        writer.close()
        await writer.wait_closed()


def parse_args(argv):
    parser = argparse.ArgumentParser(description="Fixed-count HTTP load for bench/instructions.py")
    parser.add_argument("--tcp", metavar="HOST:PORT", required=True)
    parser.add_argument("--conns", type=int, default=100)
    parser.add_argument("--requests", type=int, required=True, help="per connection")
    parser.add_argument("--warmup-requests", type=int, default=0, help="per connection")
    return parser.parse_args(argv)


if __name__ == "__main__":
    try:
        asyncio.run(main(parse_args(sys.argv[1:])))
    except (OSError, EOFError, RuntimeError, ValueError) as exc:   # EOFError: IncompleteReadError
        print(f"http_count_client: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
