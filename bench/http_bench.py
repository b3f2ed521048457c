"""The HTTP benchmark: bench/http_server.py's two servers (an httptools
``asyncio.Protocol`` and uvicorn) on asyncio's loop, uvloop and uringloop,
loaded by ``wrk`` over HTTP/1.1 keep-alive.

Owns the HTTP cases, driving wrk and reading its report.  bench/bench.py
calls run() as one part of the main job and saves the runs it returns under
"http"; bench/report.py renders them.

One measured run, for one loop and one case (app, connections):

  1. start the server pinned to core 0; wait for its JSON ready line;
  2. warm up with a 1 s wrk run (its numbers are dropped);
  3. read the server's utime+stime from /proc/PID/stat and both cores'
     busy/interrupt times from /proc/stat, run ``wrk -t1 -cN -dS --latency``
     pinned to core 1, and read them again when wrk has exited.  wrk prints
     no start or stop marks, so the measured window is wrk's whole run,
     including its connects at the start (a few ms against seconds);
  4. SIGTERM the server and check that it exits cleanly.

requests/s is wrk's request count over its duration; p50 and p99 come from
its latency distribution (which wrk 4 corrects for coordinated omission, so
a single stall of the server weighs as much as the requests it held back);
server CPU per request is the CPU difference over that count.  The syscall
pass repeats the cases with the most connections under ``strace -c -f``
(attached after the warm-up, detached after wrk) and divides the counted
calls by wrk's requests; ptrace slows those runs down, so only their
syscalls/request are used.
"""
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile

from measure import (BENCH, CLIENT_CORE, LOOPS, RUN_ERRORS, PinnedServer, core_times,
                     cpu_seconds, loadavg, parse_strace, record_cores, request_progress,
                     start_strace, stop_process)

APPS = ["httptools", "uvicorn"]
WARMUP_SECONDS = 1
UNITS_US = {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}


def matrix(full):
    return [{"app": app, "conns": conns} for app in APPS
            for conns in ((1, 10, 100) if full else (100,))]


def parse_wrk(text):
    """Requests, duration, p50/p99 (µs) and errors from ``wrk --latency``'s report."""
    def latency(percent):
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M).groups()
        return float(value) * UNITS_US[unit]

    requests, seconds, unit = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text).groups()
    seconds = float(seconds) * UNITS_US[unit] / 1e6
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {"requests": int(requests), "seconds": seconds, "rps": int(requests) / seconds,
            "p50_us": latency(50), "p99_us": latency(99),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "non_2xx": int(non_2xx.group(1)) if non_2xx else 0}


def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(url, conns, seconds):
    """One wrk run pinned to the client core; its parsed report plus the
    share of a core wrk itself used (from the rusage of reaped children,
    which wrk is the only one to join during the run)."""
    duration = max(1, round(seconds))   # wrk takes whole seconds only
    before = children_cpu()
    done = subprocess.run(["taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{conns}",
                           f"-d{duration}s", "--latency", url],
                          capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()}")
    try:
        numbers = parse_wrk(done.stdout)
    except AttributeError:
        raise RuntimeError(f"unexpected wrk output: {done.stdout.strip()!r}") from None
    numbers["client_cpu"] = (children_cpu() - before) / numbers["seconds"]
    if numbers["socket_errors"] or numbers["non_2xx"] or not numbers["requests"]:
        raise RuntimeError(f"wrk saw {numbers['socket_errors']} socket errors and "
                           f"{numbers['non_2xx']} bad responses in {numbers['requests']} requests")
    return numbers


def run_one(loop, case, seconds, traced):
    """Measure one loop on one case; returns a result dict (with "error"
    set instead of numbers when something failed)."""
    result = dict(case, server=loop, kind="strace" if traced else "timing", loadavg=loadavg())
    command = [sys.executable, os.path.join(BENCH, "http_server.py"),
               "--loop", loop, "--app", case["app"]]
    with tempfile.TemporaryDirectory(prefix="uringloop-bench-") as workdir:
        try:
            with PinnedServer(command, result, workdir) as server:
                url = f"http://{server.ready()['address']}/"
                wrk(url, case["conns"], WARMUP_SECONDS)
                if traced:
                    strace_out = os.path.join(workdir, "strace.txt")
                    strace = start_strace(server.pid, strace_out)
                    try:
                        numbers = wrk(url, case["conns"], seconds)
                    finally:
                        detached = stop_process(strace, signal.SIGINT, 30) is not None
                    if not detached:
                        raise RuntimeError("strace did not detach")
                    calls = parse_strace(strace_out)
                    result.update(numbers, syscalls=calls,
                                  syscalls_per_req=sum(calls.values()) / numbers["requests"])
                else:
                    cpu_start, cores_start = cpu_seconds(server.pid), core_times()
                    numbers = wrk(url, case["conns"], seconds)
                    cpu_stop, cores_stop = cpu_seconds(server.pid), core_times()
                    used = cpu_stop - cpu_start
                    result.update(numbers, server_cpu_s=used, server_cpu=used / numbers["seconds"],
                                  cpu_us_per_req=used / numbers["requests"] * 1e6)
                    record_cores(result, cores_start, cores_stop)
        except RUN_ERRORS as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def progress(result):
    label = f"{result['kind']:6} {result['server']:9} http {result['app']:9} x{result['conns']:<3}"
    return request_progress(label, result)


def run(full, seconds, strace_seconds, repeat):
    """Every timing run (all loops of a case back to back, that round
    ``repeat`` times, so background load drifts across the loops alike),
    then the syscall pass; prints a line per run and returns the runs."""
    cases = matrix(full)
    results = []
    for case in cases:
        for loop in LOOPS * repeat:
            results.append(run_one(loop, case, seconds, traced=False))
            print(progress(results[-1]), flush=True)
    if strace_seconds > 0:
        most = max(case["conns"] for case in cases)
        for case in (case for case in cases if case["conns"] == most):
            for loop in LOOPS:
                results.append(run_one(loop, case, strace_seconds, traced=True))
                print(progress(results[-1]), flush=True)
    return results
