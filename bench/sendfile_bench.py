"""The loop.sendfile benchmark: bench/sendfile_server.py on asyncio's loop,
uvloop and uringloop, each connection receiving a whole 64 MiB file, read by
bench/sendfile_client.py.

Owns the sendfile cases and the file.  bench/bench.py calls run() as one
part of the main job and saves the runs it returns under "sendfile";
bench/report.py renders them.

run() writes the file once into a temporary directory and reads it back,
so that every server sends from the page cache.  One measured run, for one
loop and one case (connections at a time): start the server pinned to
core 0, start the client pinned to core 1 (bench/measure.py's
windowed_client: it warms up, prints START, transfers for the window,
prints STOP and its numbers), read the server's utime+stime and both cores'
times at START and STOP, and SIGTERM the server.  MB/s is the bytes the
client received in the window over its length (MB = 10^6 bytes), server
CPU per MB the CPU difference over those MB.
"""
import os
import sys
import tempfile

from measure import (BENCH, LOOPS, RUN_ERRORS, PinnedServer, loadavg, record_cores,
                     stderr_note, windowed_client)

FILE_MIB = 64


def matrix(full):
    return [{"file_mib": FILE_MIB, "conns": conns} for conns in ((1, 4) if full else (1,))]


def make_file(directory):
    path = os.path.join(directory, f"{FILE_MIB}MiB")
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for _ in range(FILE_MIB):
            f.write(block)
    with open(path, "rb") as f:   # into the page cache
        while f.read(1 << 24):
            pass
    return path


def run_one(loop, case, path, seconds):
    """Measure one loop on one case; returns a result dict (with "error"
    set instead of numbers when something failed)."""
    result = dict(case, server=loop, kind="timing", loadavg=loadavg())
    command = [sys.executable, os.path.join(BENCH, "sendfile_server.py"),
               "--loop", loop, "--file", path]
    with tempfile.TemporaryDirectory(prefix="uringloop-bench-") as workdir:
        try:
            with PinnedServer(command, result, workdir) as server:
                ready = server.ready()
                result["method"] = ready["method"]
                client = [sys.executable, os.path.join(BENCH, "sendfile_client.py"),
                          "--tcp", ready["address"], "--expect", str(os.path.getsize(path)),
                          "--conns", str(case["conns"]), "--seconds", str(seconds)]
                numbers, measured = windowed_client(client, server.pid, False, workdir,
                                                    seconds + 60)
                megabytes = numbers["bytes"] / 1e6
                used = measured["server_cpu_s"]
                result.update(numbers, mbps=megabytes / numbers["seconds"], server_cpu_s=used,
                              server_cpu=used / numbers["seconds"],
                              cpu_us_per_mb=used / megabytes * 1e6)
                record_cores(result, *measured["cores"])
        except RUN_ERRORS as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def progress(result):
    label = f"timing {result['server']:9} sendfile {result['file_mib']} MiB x{result['conns']:<3}"
    if "error" in result:
        return f"{label} ERROR {result['error']}"
    return (f"{label} {result['mbps']:>9,.0f} MB/s  cpu {result['cpu_us_per_mb']:.0f}us/MB  "
            f"{result['method']}  [{result['backend']}]{stderr_note(result)}")


def run(full, seconds, repeat):
    """Every run (all loops of a case back to back, that round ``repeat``
    times); prints a line per run and returns the runs."""
    results = []
    with tempfile.TemporaryDirectory(prefix="uringloop-sendfile-") as directory:
        path = make_file(directory)
        for case in matrix(full):
            for loop in LOOPS * repeat:
                results.append(run_one(loop, case, path, seconds))
                print(progress(results[-1]), flush=True)
    return results
