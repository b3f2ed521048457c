"""The echo benchmark: the same echo server on asyncio's default loop, uvloop,
uringloop and a plain C io_uring server, driven by one C load client.

    python bench/bench.py            # short matrix (about 2 minutes)
    python bench/bench.py --full     # 1/10/100 KiB x 1/10/100 connections x TCP/Unix x 3 styles
    python bench/bench.py --publish  # also copy the chart to bench/echo.png and the table into README.md

Owns: building the two C programs (gcc, into bench/build/), the matrix of
cases, running each server/client pair and measuring it, and saving the
results.  Rendering (markdown table, PNG chart, README splice) is
bench/report.py's job; the servers are bench/echo_server.py and
bench/uring_echo.c; the client is bench/echo_client.c.

One measured run, for one server and one case (style, transport, message
size, connections):

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

The syscall pass repeats the 1 KiB / 100-connection cases with a shorter
window, attaching ``strace -c -f -p PID`` at START and detaching it (SIGINT)
at STOP, and divides the counted calls by the requests of that window.
Those runs are slowed down by ptrace and are kept apart from the timing runs.

Results go to bench/results/echo-<UTC time>.json (and latest.json), with
the machine, kernel, Python, liburing, uvloop and uringloop versions.
"""
import argparse
import datetime
import json
import os
import platform
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import report

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
BUILD = os.path.join(BENCH, "build")
RESULTS = os.path.join(BENCH, "results")
CLIENT = os.path.join(BUILD, "echo_client")
C_SERVER = os.path.join(BUILD, "uring_echo")

LOOPS = ["asyncio", "uvloop", "uringloop"]
STYLES = ["protocol", "streams", "sock"]
SERVER_CORE, CLIENT_CORE = "0", "1"
STRACE_CASE = {"size": 1024, "conns": 100}   # the cases the syscall pass covers


def build_c():
    """Compile the load client and the C ceiling server (always: it is fast
    and a stale binary would silently measure old code)."""
    os.makedirs(BUILD, exist_ok=True)
    flags = ["gcc", "-O2", "-Wall", "-Wextra", "-Werror"]
    subprocess.run(flags + ["-o", CLIENT, os.path.join(BENCH, "echo_client.c")], check=True)
    subprocess.run(flags + ["-o", C_SERVER, os.path.join(BENCH, "uring_echo.c"), "-luring"],
                   check=True)


def command_output(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def environment():
    """What the numbers were measured on, saved with every result."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--", "uringloop", "csrc"])
    commit = command_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    import uringloop
    import uvloop
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "liburing": command_output(["pkg-config", "--modversion", "liburing"]),
        "liburing_package": command_output(["dpkg-query", "-W", "-f", "${Version}", "liburing2"]),
        "uvloop": uvloop.__version__,
        "uringloop": f"{uringloop.__version__} ({commit}{', uncommitted changes' if dirty else ''})",
        "gcc": (command_output(["gcc", "-dumpfullversion"]) or "?"),
        "strace": (command_output(["strace", "-V"]) or "?").splitlines()[0],
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "pinning": f"server on core {SERVER_CORE}, client on core {CLIENT_CORE}",
    }


class Lines:
    """Whole lines from a child's stdout, with a deadline on each read."""

    def __init__(self, proc):
        self.fd = proc.stdout.fileno()
        self.buffer = b""

    def read(self, deadline):
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError("no line from child in time")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("child closed its stdout")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def cpu_seconds(pid):
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times():
    """{core: (busy, interrupts, total)} jiffies of the two pinned cores from
    /proc/stat.  busy is everything but idle and iowait, whoever ran;
    interrupts (irq + softirq) is charged to no process, and on loopback
    most of it is the benchmark's own packets."""
    times = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *values = line.split()
            if name in (f"cpu{SERVER_CORE}", f"cpu{CLIENT_CORE}"):
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, values[:8])
                total = user + nice + system + idle + iowait + irq + softirq + steal
                times[name[3:]] = (total - idle - iowait, irq + softirq, total)
    return times


def core_shares(before, after, core):
    """(busy, interrupts) shares of one core between two core_times()."""
    busy, interrupts, total = (b - a for a, b in zip(before[core], after[core]))
    return (busy / total, interrupts / total) if total else (None, None)


def server_command(server, case, unix_path):
    where = ["--unix", unix_path] if case["transport"] == "unix" else ["--tcp"]
    if server == "c":
        program = [C_SERVER]
    else:
        program = [sys.executable, os.path.join(BENCH, "echo_server.py"),
                   "--loop", server, "--style", case["style"]]
    return ["taskset", "-c", SERVER_CORE] + program + where


def parse_strace(path):
    """{syscall: calls} from the summary table of ``strace -c``."""
    calls = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) in (5, 6) and parts[0][0].isdigit() and parts[-1] != "total":
                calls[parts[-1]] = int(parts[3])
    return calls


def stop_process(proc, sig, timeout):
    """Send ``sig`` and wait; kill after ``timeout``.  Returns the exit status,
    or None if it had to be killed."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return None


def run_one(server, case, warmup, seconds, traced):
    """Measure one server on one case; returns a result dict (with "error"
    set instead of numbers when something failed)."""
    result = dict(case, server=server, kind="strace" if traced else "timing",
                  loadavg=open("/proc/loadavg").read().split()[0])
    workdir = tempfile.mkdtemp(prefix="uringloop-bench-")
    unix_path = os.path.join(workdir, "echo.sock")
    server_log = open(os.path.join(workdir, "server.stderr"), "w+")
    proc = subprocess.Popen(server_command(server, case, unix_path), stdout=subprocess.PIPE,
                            stderr=server_log, cwd=REPO)
    client = strace = None
    try:
        ready = json.loads(Lines(proc).read(time.monotonic() + 30))
        pid = ready["pid"]
        result["backend"] = ready["backend"]
        target = ["--unix", ready["address"]] if case["transport"] == "unix" \
            else ["--tcp", ready["address"]]
        client = subprocess.Popen(
            ["taskset", "-c", CLIENT_CORE, CLIENT, *target, "--conns", str(case["conns"]),
             "--size", str(case["size"]), "--warmup", str(warmup), "--seconds", str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = Lines(client)
        deadline = time.monotonic() + warmup + seconds + 60
        if lines.read(deadline) != "START":
            raise RuntimeError("client did not start its window")
        if traced:
            strace_out = os.path.join(workdir, "strace.txt")
            strace = subprocess.Popen(["taskset", "-c", SERVER_CORE, "strace", "-c", "-f", "-q",
                                       "-o", strace_out, "-p", str(pid)],
                                      stderr=subprocess.DEVNULL)
        else:
            cpu_start, cores_start = cpu_seconds(pid), core_times()
        if lines.read(deadline) != "STOP":
            raise RuntimeError("client did not close its window")
        if traced:
            if stop_process(strace, signal.SIGINT, 30) is None:
                raise RuntimeError("strace did not detach")
        else:
            cpu_stop, cores_stop = cpu_seconds(pid), core_times()
        numbers = json.loads(lines.read(deadline))
        client_status = client.wait(30)
        if client_status != 0:
            raise RuntimeError(f"client exited with {client_status}: "
                               f"{client.stderr.read().decode().strip()}")
        requests = numbers["requests"]
        result.update(numbers)
        if numbers["undrained"]:
            raise RuntimeError(f"{numbers['undrained']} requests still unanswered "
                               "5 s after the window closed")
        if traced:
            calls = parse_strace(strace_out)
            result["syscalls"] = calls
            result["syscalls_per_req"] = sum(calls.values()) / requests if requests else None
        else:
            result["server_cpu_s"] = cpu_stop - cpu_start
            result["server_cpu"] = (cpu_stop - cpu_start) / numbers["seconds"]
            result["cpu_us_per_req"] = (cpu_stop - cpu_start) / requests * 1e6 if requests else None
            for side, core in (("server", SERVER_CORE), ("client", CLIENT_CORE)):
                busy, interrupts = core_shares(cores_start, cores_stop, core)
                result[f"{side}_core_busy"] = busy
                result[f"{side}_core_interrupts"] = interrupts
    except (OSError, ValueError, KeyError, RuntimeError, TimeoutError, EOFError,
            subprocess.TimeoutExpired) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        if isinstance(exc, EOFError) and client is not None:   # the client gave up: why
            stop_process(client, signal.SIGKILL, 10)
            result["error"] += f"; client: {client.stderr.read().decode().strip()}"
    finally:
        for child in (strace, client):
            if child is not None:
                stop_process(child, signal.SIGKILL, 10)
        if client is not None:
            client.stdout.close()
            client.stderr.close()
        status = stop_process(proc, signal.SIGTERM, 15)
        proc.stdout.close()
        result["server_exit"] = status
        if status != 0 and "error" not in result:
            result["error"] = f"server did not shut down cleanly (status {status})"
        server_log.seek(0)
        stderr = server_log.read().strip()
        if stderr:   # a warning (say, a loop falling back) is worth keeping too
            result["server_stderr"] = stderr[-2000:]
        server_log.close()
        shutil.rmtree(workdir, ignore_errors=True)
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


def runs_for(cases, repeat):
    """(server, case) pairs: all servers of one case back to back, that
    round repeated ``repeat`` times, so that background load drifts across
    all servers alike."""
    runs, c_done = [], set()
    for case in cases:
        servers = [(server, case) for server in LOOPS]
        key = (case["transport"], case["size"], case["conns"])
        if key not in c_done:
            c_done.add(key)
            servers.append(("c", dict(case, style="c")))
        runs += servers * repeat
    return runs


def progress(result):
    label = (f"{result['kind']:6} {result['server']:9} {result['style']:8} {result['transport']:4} "
             f"{result['size']:>6}B x{result['conns']:<3}")
    if "error" in result:
        return f"{label} ERROR {result['error']}"
    extra = (f"{result['syscalls_per_req']:.2f} syscalls/req" if result["kind"] == "strace"
             else f"p50 {result['p50_us']:.0f}us p99 {result['p99_us']:.0f}us "
                  f"cpu {result['cpu_us_per_req']:.1f}us/req")
    noted = "  (server wrote to stderr, see the JSON)" if "server_stderr" in result else ""
    return f"{label} {result['rps']:>9,.0f} req/s  {extra}  [{result['backend']}]{noted}"


def main(argv):
    parser = argparse.ArgumentParser(description="Side-by-side echo benchmark")
    parser.add_argument("--full", action="store_true", help="the full matrix (about 20 minutes)")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per run")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured warm-up per run")
    parser.add_argument("--strace-seconds", type=float, default=2.0,
                        help="window of each syscall-pass run (0 skips the pass)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds per case; the report keeps each server's median run")
    parser.add_argument("--publish", action="store_true",
                        help="copy the chart to bench/echo.png and the table into README.md")
    args = parser.parse_args(argv)

    started = time.monotonic()
    build_c()
    env = environment()
    print(f"echo benchmark on {env['nproc']} x {env['cpu']}, Linux {env['kernel']}, "
          f"{env['python']}, liburing {env['liburing']}, load average {' '.join(env['loadavg_start'])}")
    cases = matrix(args.full)
    results = []
    for server, case in runs_for(cases, args.repeat):
        results.append(run_one(server, case, args.warmup, args.seconds, traced=False))
        print(progress(results[-1]), flush=True)
    if args.strace_seconds > 0:
        print("-- syscall pass under strace -c -f (slowed by ptrace; "
              "only its syscalls/req are used) --", flush=True)
        traced = [case for case in cases
                  if case["size"] == STRACE_CASE["size"] and case["conns"] == STRACE_CASE["conns"]]
        for server, case in runs_for(traced, 1):
            results.append(run_one(server, case, args.warmup, args.strace_seconds, traced=True))
            print(progress(results[-1]), flush=True)
    env["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    env["wall_seconds"] = round(time.monotonic() - started, 1)
    env["matrix"] = "full" if args.full else "short"
    env["window_seconds"] = args.seconds
    env["repeat"] = args.repeat
    env["arguments"] = " ".join(argv)

    os.makedirs(RESULTS, exist_ok=True)
    stamp = env["date"].replace(":", "").replace("-", "").replace("+0000", "Z")
    data = {"environment": env, "results": results}
    for name in (f"echo-{stamp}.json", "latest.json"):
        with open(os.path.join(RESULTS, name), "w") as f:
            json.dump(data, f, indent=1)
    markdown = report.markdown(data)
    with open(os.path.join(RESULTS, "echo.md"), "w") as f:
        f.write(markdown)
    report.chart(data, os.path.join(RESULTS, "echo.png"))
    print()
    print(markdown)
    print(f"saved bench/results/echo-{stamp}.json, latest.json, echo.md, echo.png "
          f"({env['wall_seconds']:.0f} s)")
    if args.publish:
        report.publish(data, markdown, os.path.join(RESULTS, "echo.png"))
        print("published: bench/echo.png and the benchmark section of README.md")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
