"""The load-independent figure: user-space instructions per request, each
server run under ``valgrind --tool=callgrind`` with a fixed-request client.

Owns the callgrind cases and runs (bench/bench.py's part ``instructions``,
``python bench/bench.py --only instructions``; not in the default run).
requests/s and CPU time swing with whatever else runs on this shared
machine; the instructions a server executes for a given number of requests
do not, so this is the figure to optimise against.  bench/report.py renders
the runs beside each server's native CPU µs per request.

One callgrind run, for one server and one case:

  1. start the server pinned to core 0 under callgrind with instrumentation
     off (``--instr-atstart=no``: start-up runs at plain valgrind speed and
     counts nothing), PYTHONHASHSEED=0 so every run hashes alike; wait for
     its ready line;
  2. the client, pinned to core 1 (bench/echo_client.c --requests, or
     bench/http_count_client.py for uvicorn), makes W warm-up requests per
     connection, then with nothing in flight prints START and waits;
  3. once the server is idle (wait_idle: it has finished its last turn),
     ``callgrind_control -i on PID`` (vgdb hands the server the command and
     returns once it has switched), then the go on the client's stdin; the
     client makes exactly N requests per connection and prints STOP as the
     last one completes, its connections left open;
  4. once the server is idle again, ``callgrind_control -i off`` and
     ``--dump``: the counts cover the N x C requests and the server's idle
     moments on either side of them (about 10,000 instructions in all);
  5. the idle probe: instrumentation on for IDLE_PROBE seconds with
     nothing to serve (the connections still open), off, dumped;
  6. the client closes its connections; the server is killed.  Valgrind
     3.19 holds a signal back while the process waits in io_uring_enter
     (it does not count that call among those that may block), so a
     SIGTERM would reach uringloop and the C server only by chance.

The figure is the window's total Ir (every instruction of the process in
user space: the interpreter, the C extensions, libc; the kernel is not
counted), less the idle probe's rate times the window's length, over the
requests.  The idle part is uvicorn's own tick (a wake-up every 0.1 s,
about 0.6 M instructions a second under callgrind, which at callgrind's
150 requests/s would add ~3% to each request and vary with the machine's
load, where natively it is next to nothing); for the echo servers it is
only the probe's own edges, under 10,000 instructions.  Under callgrind
the server is the bottleneck by far, so every loop turn finds all
connections ready: the saturated case of the native benchmark.

Every cell is run twice, with N and N/2 requests per connection, in two
processes; their figures agreeing (within ~1%) shows that neither the
edges of the window nor anything left over from start-up weigh in.  Where
they do not agree, the server's path depends on timing (asyncio's
``sock_recv`` reads at once or waits for readiness depending on whether
the next request has arrived; the C server's reads per 100 KiB message),
and bench/report.py marks the cell.  The longer run's callgrind file is
kept in bench/results/callgrind/ for ``callgrind_annotate``; its call
graph starts where instrumentation came on, so the cost of the frames
entered before (the loop's run_forever and its turn) is charged to the
function running then (cfunction_call); self costs are exact.  Then each
cell runs once natively (bench/bench.py's and bench/http_bench.py's timing
runs) for its CPU µs per request.  The whole pass takes about 12 minutes.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import http_bench
from measure import (BENCH, CLIENT_CORE, LOOPS, RESULTS, RUN_ERRORS, Lines, PinnedServer,
                     cpu_seconds, loadavg, stop_process)

PROFILES = os.path.join(RESULTS, "callgrind")
VALGRIND = ["env", "PYTHONHASHSEED=0", "valgrind", "--tool=callgrind", "--instr-atstart=no"]
READY_TIMEOUT = 180    # s: Python's start-up under valgrind, on a busy machine
WINDOW_TIMEOUT = 900   # s: warm-up plus window, about 50x slower than natively
IDLE_SECONDS = 0.3     # s: a server using under a tenth of a core this long is idle
IDLE_PROBE = 1.0       # s: instrumentation on with nothing to serve, after the window

# (connections, message size) -> (warm-up, measured) requests per connection
# of the longer run: about 2,000-4,000 requests, a few seconds of a Python
# server under callgrind.
SHAPES = {(100, 1024): (10, 40), (1, 1024): (300, 2000), (10, 102400): (5, 40)}
HTTP_COUNTS = (5, 20)
C_SCALE = 10   # the C server takes 10x the requests: it is ~100x faster, and its
               # batches (requests per ring turn) vary more with timing


def matrix(full):
    """The echo cases (protocol at every shape, streams and sock_* at 1 KiB
    x 100 connections; with ``full`` every style at every shape) and uvicorn."""
    cases = []
    for (conns, size) in SHAPES:
        for style in ("protocol", "streams", "sock"):
            if full or style == "protocol" or (conns, size) == (100, 1024):
                cases.append({"part": "echo", "style": style, "transport": "tcp",
                              "size": size, "conns": conns})
    cases.append({"part": "http", "app": "uvicorn", "conns": 100})
    return cases


def servers_for(case, c_done, variants=()):
    """The servers of a case: the uringloop variants (bench.py --uring-env)
    for echo cases, the C server once per echo shape, as style "c"."""
    runs = [(server, case) for server in LOOPS]
    if case["part"] == "echo":
        runs += [(server, case) for server in variants]
    if case["part"] == "echo" and (case["size"], case["conns"]) not in c_done:
        c_done.add((case["size"], case["conns"]))
        runs.append(("c", dict(case, style="c")))
    return runs


def label(case):
    if case["part"] == "http":
        return f"{case['app']} x{case['conns']}"
    return f"{case['style']} {case['size']}B x{case['conns']}"


def profile_name(server, case):
    return f"{server}-{label(case).replace(' ', '-')}.out"


def counts(case):
    return HTTP_COUNTS if case["part"] == "http" else SHAPES[(case["conns"], case["size"])]


def total_instructions(path):
    """The Ir total of a callgrind output file."""
    with open(path) as f:
        for line in f:   # not "summary:", which stays 0 when instrumentation starts off
            found = re.match(r"totals: (\d+)", line)
            if found:
                return int(found.group(1))
    raise ValueError(f"no totals in {path}")


def callgrind_control(pid, *command):
    """``callgrind_control``: returns once the server has done it (vgdb
    interrupts the server's wait to hand it the command)."""
    done = subprocess.run(["callgrind_control", *command, str(pid)],
                          capture_output=True, text=True, timeout=60)
    if done.returncode != 0 or "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(command)} failed: "
                           f"{(done.stdout + done.stderr).strip()}")


def wait_idle(pid, timeout=60):
    """Return once the server has used under a tenth of a core for
    IDLE_SECONDS: it has finished the turn that answered the last request
    (the client sees the answer before the server is done with its
    completions).  Not zero: uvicorn wakes up every 0.1 s on its own."""
    deadline = time.monotonic() + timeout
    while True:
        before = cpu_seconds(pid)
        time.sleep(IDLE_SECONDS)
        if cpu_seconds(pid) - before <= IDLE_SECONDS / 10:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("the server did not go idle")


def counted_window(command, pid):
    """Run a fixed-request client pinned to CLIENT_CORE with the server's
    instrumentation on exactly around its measured requests, and dump the
    counts; returns the client's numbers."""
    client = subprocess.Popen(["taskset", "-c", CLIENT_CORE, *command], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=BENCH)
    try:
        lines = Lines(client)
        deadline = time.monotonic() + WINDOW_TIMEOUT
        if lines.read(deadline) != "START":
            raise RuntimeError("client did not finish its warm-up")
        wait_idle(pid)
        callgrind_control(pid, "-i", "on")
        client.stdin.write(b"go\n")
        client.stdin.flush()
        if lines.read(deadline) != "STOP":
            raise RuntimeError("client did not finish its window")
        wait_idle(pid)
        callgrind_control(pid, "-i", "off")
        callgrind_control(pid, "--dump")
        numbers = json.loads(lines.read(deadline))
        callgrind_control(pid, "-i", "on")   # the idle probe, connections still open
        probe_started = time.monotonic()
        time.sleep(IDLE_PROBE)
        numbers["idle_probe_s"] = time.monotonic() - probe_started
        callgrind_control(pid, "-i", "off")
        callgrind_control(pid, "--dump")
        client.stdin.close()   # now the client closes its connections
        status = client.wait(60)
        if status != 0:
            raise RuntimeError(f"client exited with {status}: "
                               f"{client.stderr.read().decode().strip()}")
        return numbers
    except EOFError as exc:   # the client gave up: say why
        stop_process(client, signal.SIGKILL, 10)
        raise EOFError(f"{exc}; client: {client.stderr.read().decode().strip()}") from None
    finally:
        stop_process(client, signal.SIGKILL, 10)
        for pipe in (client.stdin, client.stdout, client.stderr):
            if not pipe.closed:
                pipe.close()


def run_callgrind(server, case, per_conn, echo_client, echo_server, keep, env=None):
    """One callgrind run with ``per_conn`` measured requests per connection
    (kind "callgrind"; "callgrind-half" for the shorter run, ``keep`` False);
    keeps the callgrind file in PROFILES when ``keep``; ``env``: the
    server's extra environment (a uringloop variant's knobs).  Returns a
    result dict (with "error" instead of numbers when something failed)."""
    warmup = counts(case)[0]
    result = dict(case, server=server, kind="callgrind" if keep else "callgrind-half",
                  per_conn=per_conn, loadavg=loadavg())
    with tempfile.TemporaryDirectory(prefix="uringloop-bench-") as workdir:
        out = os.path.join(workdir, "callgrind.out")
        unix_path = os.path.join(workdir, "echo.sock")
        if case["part"] == "http":
            command = [sys.executable, os.path.join(BENCH, "http_server.py"),
                       "--loop", server, "--app", case["app"]]
        else:
            command = echo_server(server, case, unix_path)
        valgrind = VALGRIND + [f"--callgrind-out-file={out}",
                               f"--log-file={os.path.join(workdir, 'valgrind.log')}"]
        started = time.monotonic()
        try:
            with PinnedServer(valgrind + command, result, workdir, env=env,
                              stop=signal.SIGKILL) as proc:
                address = proc.ready(READY_TIMEOUT)["address"]
                if case["part"] == "http":
                    client = [sys.executable, os.path.join(BENCH, "http_count_client.py"),
                              "--tcp", address, "--conns", str(case["conns"])]
                else:
                    client = [echo_client, "--tcp", address, "--conns", str(case["conns"]),
                              "--size", str(case["size"])]
                numbers = counted_window(client + ["--requests", str(per_conn),
                                                   "--warmup-requests", str(warmup)], proc.pid)
                result.update(numbers)
            if "error" not in result:
                result["instructions"] = total_instructions(out + ".1")
                result["idle_ir_per_s"] = total_instructions(out + ".2") / result["idle_probe_s"]
                idle = result["idle_ir_per_s"] * result["seconds"]
                result["ir_per_req"] = (result["instructions"] - idle) / result["requests"]
                if keep:
                    os.makedirs(PROFILES, exist_ok=True)
                    kept = shutil.copyfile(out + ".1",
                                           os.path.join(PROFILES, profile_name(server, case)))
                    result["profile"] = os.path.relpath(kept, os.path.dirname(BENCH))
        except RUN_ERRORS as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        result["wall_s"] = round(time.monotonic() - started, 1)
    return result


def progress(result):
    text = f"{result['kind']:9} {result['server']:9} {label(result):22}"
    if "error" in result:
        return f"{text} ERROR {result['error']}"
    if result["kind"].startswith("callgrind"):
        return (f"{text} {result['requests']:>6} requests {result['ir_per_req']:>10,.0f} Ir/req "
                f"(idle {result['idle_ir_per_s']:,.0f} Ir/s; {result['wall_s']:.0f} s)")
    return f"{text} {result['cpu_us_per_req']:>6.1f} CPU us/req ({result['rps']:,.0f} req/s)"


def run(full, echo_client, echo_server, echo_timing, seconds, variants=None):
    """Every callgrind run (each cell at N and at N/2 requests per
    connection), then each cell's native timing run; prints a line per run
    and returns the runs.  ``echo_client`` is the C client's path,
    ``echo_server(server, case, unix_path)`` an echo server's command line,
    ``echo_timing(server, case)`` one native echo run (bench/bench.py's) and
    ``variants`` {server name: knobs} the uringloop variants to add."""
    variants = variants or {}
    cells, c_done = [], set()
    for case in matrix(full):
        cells += servers_for(case, c_done, variants)
    results = []
    for server, case in cells:
        measured = counts(case)[1] * (C_SCALE if server == "c" else 1)
        for per_conn in (measured, measured // 2):
            results.append(run_callgrind(server, case, per_conn, echo_client, echo_server,
                                         keep=per_conn == measured, env=variants.get(server)))
            print(progress(results[-1]), flush=True)
    for server, case in cells:
        if case["part"] == "http":
            timing = http_bench.run_one(server, {"app": case["app"], "conns": case["conns"]},
                                        seconds, traced=False)
        else:
            timing = echo_timing(server, {key: case[key] for key in
                                          ("style", "transport", "size", "conns")})
        results.append(dict(timing, part=case["part"]))
        print(progress(results[-1]), flush=True)
    return results
