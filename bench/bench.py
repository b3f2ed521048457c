"""The main job's benchmarks, side by side on asyncio's default loop, uvloop
and uringloop, in one run, one part after the other:

  echo      here: the echo benchmark, with a plain C io_uring server as the ceiling
  http      bench/http_bench.py: an httptools protocol and uvicorn under wrk
  sendfile  bench/sendfile_bench.py: loop.sendfile of a 64 MiB file
  files     bench/files_bench.py (--quick unless --full), in a child process:
            uringloop's async files vs aiofiles vs run_in_executor
  instructions  bench/instructions.py, only when asked for (--only): user-space
            instructions per request under callgrind (about 12 minutes)

    python bench/bench.py            # short matrix (a couple of minutes)
    python bench/bench.py --full     # echo: 1/10/100 KiB x 1/10/100 connections x TCP/Unix
                                     # x 3 styles; HTTP: 1/10/100 connections; sendfile:
                                     # 1 and 4 connections; files: the full file sizes
    python bench/bench.py --publish  # also copy the charts to bench/ and the tables into README.md
    python bench/bench.py --only http,sendfile --seconds 2    # some parts, shorter windows
    python bench/bench.py --only instructions    # the callgrind figure (not in the default run)
    python bench/bench.py --only echo --uring-env URINGLOOP_SQPOLL=10
                                     # echo also on uringloop with a knob set (a server
                                     # "uringloop[SQPOLL=10]"; repeat for more variants,
                                     # several NAME=VALUE in one quoted argument for one)

Owns: building the two C programs (gcc, into bench/build/), the echo cases,
running each echo server/client pair and measuring it, calling the other
parts, and saving the results of all of them in one JSON.  Rendering
(markdown tables, PNG charts, README splice) is bench/report.py's job; the
echo servers are bench/echo_server.py and bench/uring_echo.c; the echo
client is bench/echo_client.c; the measuring tools are bench/measure.py.

One measured echo run, for one server and one case (style, transport,
message size, connections):

  1. start the server pinned to core 0 (``taskset -c 0``); wait for its JSON
     ready line (backend, pid, address);
  2. start the client pinned to core 1; it connects, warms up, prints START,
     runs the window, prints STOP, drains and prints its JSON result;
  3. on START and on STOP read utime+stime of the server from
     /proc/PID/stat (server CPU per request = the difference / requests)
     and, from /proc/stat, how busy each of the two cores was and how much
     of that was interrupt work (what is left over beyond the process and
     the interrupts is other work on the machine competing for the core);
  4. SIGTERM the server and check that it exits cleanly (status 0).

uringloop servers (the variants too) also save ``loop.ring_stats()`` on
SIGUSR1, sent at START and at STOP: the difference over the window's
requests is the run's "ring" entry (turns, enters, SQEs, CQEs per request).

The syscall pass repeats the 1 KiB / 100-connection cases with a shorter
window, attaching ``strace -c -f -p PID`` at START and detaching it (SIGINT)
at STOP, and divides the counted calls by the requests of that window.
Those runs are slowed down by ptrace and are kept apart from the timing runs.

Results go to bench/results/bench-<UTC time>.json (and latest.json):
{"environment": machine, kernel, Python, liburing and library versions,
"results": the echo runs, "http": the HTTP runs, "sendfile": the sendfile
runs, "files": files_bench.py's cells}, next to bench.md and the charts
(echo.png, http.png, sendfile.png).  The exit status is 1 if any run failed.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

import http_bench
import instructions
import report
import sendfile_bench
from measure import (BENCH, BUILD, LOOPS, REPO, RESULTS, RUN_ERRORS, PinnedServer, environment,
                     loadavg, record_cores, request_progress, windowed_client)

CLIENT = os.path.join(BUILD, "echo_client")
C_SERVER = os.path.join(BUILD, "uring_echo")

DEFAULT_PARTS = ["echo", "http", "sendfile", "files"]
PARTS = DEFAULT_PARTS + ["instructions"]   # the callgrind pass takes too long for the main job
STYLES = ["protocol", "streams", "sock"]
STRACE_CASE = {"size": 1024, "conns": 100}   # the cases the syscall pass covers


def build_c():
    """Compile the load client and the C ceiling server (always: it is fast
    and a stale binary would silently measure old code)."""
    os.makedirs(BUILD, exist_ok=True)
    flags = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(flags + ["-o", CLIENT, os.path.join(BENCH, "echo_client.c")], check=True)
    subprocess.run(flags + ["-o", C_SERVER, os.path.join(BENCH, "uring_echo.c"), "-luring"],
                   check=True)


# Per-request ring counters derived from two ring_stats() snapshots.
RING_PER_REQUEST = ("turns", "enters", "sqes", "cqes", "cqes_to_python", "cqes_in_c")


def variant_name(settings):
    """The server name of uringloop run with ``settings`` (NAME=VALUE list)."""
    return "uringloop[" + " ".join(s.removeprefix("URINGLOOP_") for s in settings) + "]"


def parse_uring_env(values):
    """--uring-env arguments -> {server name: {NAME: VALUE}}."""
    variants = {}
    for value in values:
        settings = value.split()
        if not settings or not all("=" in s and s.startswith("URINGLOOP_") for s in settings):
            raise ValueError(f"--uring-env {value!r}: expected URINGLOOP_NAME=VALUE ...")
        variants[variant_name(settings)] = dict(s.split("=", 1) for s in settings)
    return variants


def server_command(server, case, unix_path):
    where = ["--unix", unix_path] if case["transport"] == "unix" else ["--tcp"]
    if server == "c":
        return [C_SERVER] + where
    loop = "uringloop" if server.startswith("uringloop") else server
    return [sys.executable, os.path.join(BENCH, "echo_server.py"),
            "--loop", loop, "--style", case["style"]] + where


def ring_per_request(path, requests):
    """The two ring_stats() snapshots an echo server saved, as per-request
    differences (None if there are not two)."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        snapshots = [json.loads(line) for line in f if line.strip()]
    if len(snapshots) < 2 or not requests:
        return None
    first, last = snapshots[0], snapshots[-1]
    per = {name: (last[name] - first[name]) / requests for name in RING_PER_REQUEST}
    per["sqes_by_opcode"] = {
        name: (count - first["sqes_by_opcode"].get(name, 0)) / requests
        for name, count in last["sqes_by_opcode"].items()
        if count != first["sqes_by_opcode"].get(name, 0)}
    per["buffers_high_water"] = last["buffers"]["high_water"]
    per["enobufs"] = last["enobufs"] - first["enobufs"]
    per["setup_flags"] = last["config"]["setup_flags"]
    return per


def run_one(server, case, warmup, seconds, traced, env=None):
    """Measure one server on one case; returns a result dict (with "error"
    set instead of numbers when something failed).  ``env``: extra
    environment variables of the server (a uringloop variant's knobs)."""
    result = dict(case, server=server, kind="strace" if traced else "timing", loadavg=loadavg())
    with tempfile.TemporaryDirectory(prefix="uringloop-bench-") as workdir:
        unix_path = os.path.join(workdir, "echo.sock")
        stats_path = os.path.join(workdir, "ring_stats.jsonl")
        uring = server.startswith("uringloop") and not traced
        env = dict(env or {}, **({"ECHO_RING_STATS": stats_path} if uring else {}))
        try:
            with PinnedServer(server_command(server, case, unix_path), result, workdir,
                              env=env or None) as proc:
                address = proc.ready()["address"]
                client = [CLIENT, "--unix" if case["transport"] == "unix" else "--tcp", address,
                          "--conns", str(case["conns"]), "--size", str(case["size"]),
                          "--warmup", str(warmup), "--seconds", str(seconds)]
                numbers, measured = windowed_client(
                    client, proc.pid, traced, workdir, warmup + seconds + 60,
                    on_edge=(lambda: os.kill(proc.pid, signal.SIGUSR1)) if uring else None)
                result.update(numbers)
                if uring:
                    time.sleep(0.1)  # the STOP snapshot is written from the loop
                    result["ring"] = ring_per_request(stats_path, numbers["requests"])
                if numbers["undrained"]:
                    raise RuntimeError(f"{numbers['undrained']} requests still unanswered "
                                       "5 s after the window closed")
                requests = numbers["requests"]
                if traced:
                    calls = measured["syscalls"]
                    result["syscalls"] = calls
                    result["syscalls_per_req"] = sum(calls.values()) / requests if requests else None
                else:
                    used = measured["server_cpu_s"]
                    result["server_cpu_s"] = used
                    result["server_cpu"] = used / numbers["seconds"]
                    result["cpu_us_per_req"] = used / requests * 1e6 if requests else None
                    record_cores(result, *measured["cores"])
        except RUN_ERRORS as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def matrix(full):
    """The timing cases; the C server has no styles and runs once per
    (transport, size, conns), recorded under style "c"."""
    if full:
        cases = [{"style": style, "transport": transport, "size": size, "conns": conns}
                 for transport in ("tcp", "unix") for size in (1024, 10240, 102400)
                 for conns in (1, 10, 100) for style in STYLES]
    else:
        cases = [{"style": style, "transport": "tcp", "size": 1024, "conns": 100}
                 for style in STYLES]
        cases.append({"style": "protocol", "transport": "unix", "size": 1024, "conns": 100})
    return cases


def runs_for(cases, repeat, variants=()):
    """(server, case) pairs: all servers of one case back to back, that
    round repeated ``repeat`` times, so that background load drifts across
    all servers alike."""
    runs, c_done = [], set()
    for case in cases:
        servers = [(server, case) for server in LOOPS + list(variants)]
        key = (case["transport"], case["size"], case["conns"])
        if key not in c_done:
            c_done.add(key)
            servers.append(("c", dict(case, style="c")))
        runs += servers * repeat
    return runs


def progress(result):
    label = (f"{result['kind']:6} {result['server']:9} {result['style']:8} {result['transport']:4} "
             f"{result['size']:>6}B x{result['conns']:<3}")
    return request_progress(label, result)


def run_echo(args):
    """Every echo timing run, then the syscall pass; prints a line per run."""
    cases = matrix(args.full)
    variants = args.variants
    results = []
    for server, case in runs_for(cases, args.repeat, variants):
        results.append(run_one(server, case, args.warmup, args.seconds, traced=False,
                               env=variants.get(server)))
        print(progress(results[-1]), flush=True)
    if args.strace_seconds > 0:
        traced = [case for case in cases
                  if case["size"] == STRACE_CASE["size"] and case["conns"] == STRACE_CASE["conns"]]
        for server, case in runs_for(traced, 1, variants):
            results.append(run_one(server, case, args.warmup, args.strace_seconds, traced=True,
                                   env=variants.get(server)))
            print(progress(results[-1]), flush=True)
    return results


def run_files(full):
    """bench/files_bench.py in a child process (its --quick mode unless
    --full; its progress goes to stderr); returns the cells it saves, or
    {"error": ...}."""
    with tempfile.TemporaryDirectory(prefix="uringloop-bench-") as workdir:
        saved = os.path.join(workdir, "files.json")
        command = [sys.executable, os.path.join(BENCH, "files_bench.py"), "--json", saved]
        done = subprocess.run(command + ([] if full else ["--quick"]),
                              stdout=subprocess.DEVNULL, cwd=REPO)
        if done.returncode != 0:
            return {"error": f"files_bench.py exited with status {done.returncode}"}
        with open(saved) as f:
            return json.load(f)


def main(argv):
    parser = argparse.ArgumentParser(description="The side-by-side benchmarks of the main job")
    parser.add_argument("--full", action="store_true", help="the full matrix (about 25 minutes)")
    parser.add_argument("--seconds", type=float, default=2.0,
                        help="measured window per echo, HTTP and sendfile run")
    parser.add_argument("--warmup", type=float, default=0.5,
                        help="unmeasured warm-up per echo run")
    parser.add_argument("--strace-seconds", type=float, default=1.0,
                        help="window of each syscall-pass run (0 skips the passes)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per case; the report keeps each server's median run")
    parser.add_argument("--only", metavar="PART,...", default=",".join(DEFAULT_PARTS),
                        help=f"run only these of {','.join(PARTS)} "
                             f"(by default {','.join(DEFAULT_PARTS)})")
    parser.add_argument("--publish", action="store_true",
                        help="copy the charts to bench/ and the tables into README.md")
    parser.add_argument("--uring-env", metavar="NAME=VALUE ...", action="append", default=[],
                        help="echo also on uringloop with these URINGLOOP_* knobs set, as a "
                             "server of its own (repeatable: one variant each)")
    args = parser.parse_args(argv)
    parts = args.only.split(",")
    if not set(parts) <= set(PARTS):
        parser.error(f"--only takes some of {','.join(PARTS)}")
    try:
        args.variants = parse_uring_env(args.uring_env)
    except ValueError as exc:
        parser.error(str(exc))

    started = time.monotonic()
    build_c()
    env = environment()
    print(f"benchmarks on {env['nproc']} x {env['cpu']}, Linux {env['kernel']}, "
          f"{env['python']}, liburing {env['liburing']}, load average {' '.join(env['loadavg_start'])}")
    data = {"environment": env, "results": []}
    if "echo" in parts:
        print("-- echo: C load client; the syscall runs are under strace -c -f (slowed by "
              "ptrace; only their syscalls/req are used) --", flush=True)
        data["results"] = run_echo(args)
    if "http" in parts:
        print("-- HTTP: wrk against an httptools protocol and uvicorn --", flush=True)
        data["http"] = http_bench.run(args.full, args.seconds, args.strace_seconds, args.repeat)
    if "sendfile" in parts:
        print(f"-- loop.sendfile: a {sendfile_bench.FILE_MIB} MiB file per connection --", flush=True)
        data["sendfile"] = sendfile_bench.run(args.full, args.seconds, args.repeat)
    if "files" in parts:
        print("-- files: bench/files_bench.py" + ("" if args.full else " --quick") + " --",
              flush=True)
        data["files"] = run_files(args.full)
    if "instructions" in parts:
        print("-- instructions: user-space instructions per request under callgrind "
              "(fixed request counts), then each cell's native CPU per request --", flush=True)
        data["instructions"] = instructions.run(
            args.full, CLIENT, server_command,
            lambda server, case: run_one(server, case, args.warmup, args.seconds, traced=False,
                                         env=args.variants.get(server)),
            args.seconds, args.variants)
    env["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    env["wall_seconds"] = round(time.monotonic() - started, 1)
    env["matrix"] = "full" if args.full else "short"
    env["window_seconds"] = args.seconds
    env["repeat"] = args.repeat
    env["arguments"] = " ".join(argv)

    os.makedirs(RESULTS, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    for name in (f"bench-{stamp}.json", "latest.json"):
        with open(os.path.join(RESULTS, name), "w") as f:
            json.dump(data, f, indent=1)
    markdown = report.markdown(data)
    with open(os.path.join(RESULTS, "bench.md"), "w") as f:
        f.write(markdown)
    charts = report.charts(data, RESULTS)
    print()
    print(markdown)
    print(f"saved bench/results/bench-{stamp}.json, latest.json, bench.md, "
          f"{', '.join(os.path.basename(path) for path in charts)} ({env['wall_seconds']:.0f} s)")
    if args.publish:
        report.publish(data, markdown, charts)
        print("published: the charts in bench/ and the benchmark section of README.md")
    runs = (data["results"] + data.get("http", []) + data.get("sendfile", [])
            + data.get("instructions", []))
    failed = any("error" in run for run in runs) or "error" in data.get("files", {})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
