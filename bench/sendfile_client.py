"""The load client of the loop.sendfile benchmark: receives whole files from
bench/sendfile_server.py as fast as it can and throws them away.

    python bench/sendfile_client.py --tcp HOST:PORT --expect BYTES --conns N --seconds S

Owns the transfers and their timing.  Each of N threads connects, reads
with blocking ``recv_into`` into its own reused 1 MiB buffer until the
server closes, checks that exactly BYTES arrived, and connects again.
Protocol with bench/measure.py's windowed_client, as bench/echo_client.c:
one unmeasured transfer per thread as warm-up, then START on stdout; the
threads keep transferring until S seconds have passed and finish the
transfer they are in; STOP; then one JSON line: bytes, transfers, seconds
(START to STOP), and the client's CPU over that window as a share of one
core (``client_cpu``).  The window holds whole transfers only.
"""
import argparse
import json
import resource
import socket
import sys
import threading
import time

BUFFER = 1 << 20


def transfer(address, expect, buffer):
    with socket.create_connection(address) as sock:
        received = 0
        while n := sock.recv_into(buffer):
            received += n
    if received != expect:
        raise RuntimeError(f"received {received} bytes, expected {expect}")
    return received


def own_cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv):
    parser = argparse.ArgumentParser(description="Client for bench/sendfile_bench.py")
    parser.add_argument("--tcp", required=True, metavar="HOST:PORT")
    parser.add_argument("--expect", type=int, required=True, help="bytes in every transfer")
    parser.add_argument("--conns", type=int, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    args = parser.parse_args(argv)
    host, port = args.tcp.rsplit(":", 1)
    address = (host, int(port))

    totals = []      # (bytes, transfers) of each thread, appended when it ends
    failures = []
    window = {}

    def open_window():   # run by the barrier once every thread has warmed up
        window.update(cpu=own_cpu(), began=time.monotonic())
        window["deadline"] = window["began"] + args.seconds
        print("START", flush=True)

    start = threading.Barrier(args.conns + 1, action=open_window)

    def worker():
        buffer = bytearray(BUFFER)
        try:
            transfer(address, args.expect, buffer)
            start.wait()
            received = transfers = 0
            while time.monotonic() < window["deadline"]:
                received += transfer(address, args.expect, buffer)
                transfers += 1
            totals.append((received, transfers))
        except (OSError, RuntimeError, threading.BrokenBarrierError) as exc:
            failures.append(exc)
            start.abort()

    threads = [threading.Thread(target=worker) for _ in range(args.conns)]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    for thread in threads:
        thread.join()
    if "began" in window:
        seconds, cpu = time.monotonic() - window["began"], own_cpu() - window["cpu"]
        print("STOP", flush=True)
    if failures:
        print(f"sendfile_client: {failures[0]}", file=sys.stderr)
        return 1
    print(json.dumps({"bytes": sum(t[0] for t in totals), "transfers": sum(t[1] for t in totals),
                      "seconds": seconds, "client_cpu": cpu / seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
