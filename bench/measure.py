"""Measuring tools every benchmark of bench/ shares: where things live, which
core runs what, the machine description saved with each result, and reading
a server's CPU time, the cores' load and ``strace -c`` counts.

Owns no benchmark.  bench/bench.py (echo, and the driver of the main job),
bench/http_bench.py and bench/sendfile_bench.py import from here: a server
process is started pinned to SERVER_CORE and announces itself with one JSON
line (read with Lines); its CPU time comes from cpu_seconds() before and after
the measured window, the cores' shares from core_times(); a separate run
under start_strace() counts its system calls, read back with parse_strace().
PinnedServer wraps a server's life (start, ready line, clean SIGTERM exit).
"""
import datetime
import importlib.metadata
import json
import os
import platform
import select
import signal
import subprocess
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
BUILD = os.path.join(BENCH, "build")
RESULTS = os.path.join(BENCH, "results")
SERVER_CORE, CLIENT_CORE = "0", "1"
LOOPS = ["asyncio", "uvloop", "uringloop"]


def command_output(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment():
    """What the numbers were measured on, saved with every result."""
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), platform.processor())
    dirty = command_output(["git", "-C", REPO, "status", "--porcelain", "--", "uringloop", "csrc"])
    commit = command_output(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    import uringloop
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": model,
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "liburing": command_output(["pkg-config", "--modversion", "liburing"]),
        "liburing_package": command_output(["dpkg-query", "-W", "-f", "${Version}", "liburing2"]),
        "uvloop": package_version("uvloop"),
        "uringloop": f"{uringloop.__version__} ({commit}{', uncommitted changes' if dirty else ''})",
        "httptools": package_version("httptools"),
        "uvicorn": package_version("uvicorn"),
        "aiofiles": package_version("aiofiles"),
        "wrk": command_output(["dpkg-query", "-W", "-f", "${Version}", "wrk"]),
        "gcc": (command_output(["gcc", "-dumpfullversion"]) or "?"),
        "strace": (command_output(["strace", "-V"]) or "?").splitlines()[0],
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
        "pinning": f"server on core {SERVER_CORE}, client on core {CLIENT_CORE}",
    }


def loadavg():
    return open("/proc/loadavg").read().split()[0]


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


def record_cores(result, before, after):
    """Store both cores' busy and interrupt shares in a run's result, under
    the names bench/report.py reads."""
    for side, core in (("server", SERVER_CORE), ("client", CLIENT_CORE)):
        busy, interrupts = core_shares(before, after, core)
        result[f"{side}_core_busy"] = busy
        result[f"{side}_core_interrupts"] = interrupts


def start_strace(pid, path):
    """Attach ``strace -c -f`` to ``pid`` (its summary goes to ``path``) and
    return once the tracer holds the process: attaching takes a moment, and
    calls made before it would be missing from the count while the requests
    of that moment would not."""
    strace = subprocess.Popen(["taskset", "-c", SERVER_CORE, "strace", "-c", "-f", "-q",
                               "-o", path, "-p", str(pid)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and strace.poll() is None:
        with open(f"/proc/{pid}/status") as f:
            if any(line.startswith("TracerPid:") and line.split()[1] != "0" for line in f):
                return strace
        time.sleep(0.01)
    stop_process(strace, signal.SIGKILL, 10)
    raise RuntimeError("strace did not attach")


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


def request_progress(label, result):
    """The progress line of one request/response run (echo or HTTP)."""
    if "error" in result:
        return f"{label} ERROR {result['error']}"
    extra = (f"{result['syscalls_per_req']:.2f} syscalls/req" if result["kind"] == "strace"
             else f"p50 {result['p50_us']:.0f}us p99 {result['p99_us']:.0f}us "
                  f"cpu {result['cpu_us_per_req']:.1f}us/req")
    return (f"{label} {result['rps']:>9,.0f} req/s  {extra}  [{result['backend']}]"
            f"{stderr_note(result)}")


def stderr_note(result):
    return "  (server wrote to stderr, see the JSON)" if "server_stderr" in result else ""


# What a failed run raises; run functions catch these and note them in the
# run's result instead of stopping the whole benchmark.
RUN_ERRORS = (OSError, ValueError, KeyError, RuntimeError, TimeoutError, EOFError,
              subprocess.TimeoutExpired)


class PinnedServer:
    """One server process pinned to SERVER_CORE, from its start through its
    JSON ready line to a clean exit on SIGTERM.  Leaving the ``with`` block
    stops it and notes its exit status, a failed shutdown and anything it
    wrote to stderr (a warning, say a loop falling back) in ``result``.
    ``stop`` SIGKILL instead ends a server whose shutdown is not under test
    (bench/instructions.py: valgrind holds SIGTERM back while the server
    waits in io_uring_enter)."""

    def __init__(self, command, result, workdir, env=None, stop=signal.SIGTERM):
        self.result = result
        self.stop = stop
        self.log = open(os.path.join(workdir, "server.stderr"), "w+")
        self.proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *command],
                                     stdout=subprocess.PIPE, stderr=self.log, cwd=REPO,
                                     env=None if env is None else {**os.environ, **env})
        self.pid = None

    def __enter__(self):
        return self

    def ready(self, timeout=30):
        """The server's ready line (backend, pid, address); notes the backend."""
        line = json.loads(Lines(self.proc).read(time.monotonic() + timeout))
        self.pid = line["pid"]
        self.result["backend"] = line["backend"]
        return line

    def __exit__(self, *exc_info):
        status = stop_process(self.proc, self.stop, 15)
        self.proc.stdout.close()
        self.result["server_exit"] = status
        clean = 0 if self.stop == signal.SIGTERM else -self.stop
        if status != clean and "error" not in self.result:
            self.result["error"] = f"server did not shut down cleanly (status {status})"
        self.log.seek(0)
        stderr = self.log.read().strip()
        if stderr:
            self.result["server_stderr"] = stderr[-2000:]
        self.log.close()


def windowed_client(command, server_pid, traced, workdir, timeout, on_edge=None):
    """Run a load client pinned to CLIENT_CORE that prints START and STOP
    around its measured window and then one JSON line of its numbers, and
    measure the server over that window: its CPU seconds and both cores'
    times, or (``traced``) its system calls under strace; ``on_edge()`` is
    called at START and at STOP too.  Returns (client numbers,
    {"server_cpu_s", "cores"} or {"syscalls"})."""
    client = subprocess.Popen(["taskset", "-c", CLIENT_CORE, *command],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    strace = None
    try:
        lines = Lines(client)
        deadline = time.monotonic() + timeout
        if lines.read(deadline) != "START":
            raise RuntimeError("client did not start its window")
        if traced:
            strace_out = os.path.join(workdir, "strace.txt")
            strace = start_strace(server_pid, strace_out)
        else:
            cpu_start, cores_start = cpu_seconds(server_pid), core_times()
        if on_edge is not None:
            on_edge()
        if lines.read(deadline) != "STOP":
            raise RuntimeError("client did not close its window")
        if on_edge is not None:
            on_edge()
        if traced:
            if stop_process(strace, signal.SIGINT, 30) is None:
                raise RuntimeError("strace did not detach")
            measured = {"syscalls": parse_strace(strace_out)}
        else:
            measured = {"server_cpu_s": cpu_seconds(server_pid) - cpu_start,
                        "cores": (cores_start, core_times())}
        numbers = json.loads(lines.read(deadline))
        status = client.wait(30)
        if status != 0:
            raise RuntimeError(f"client exited with {status}: "
                               f"{client.stderr.read().decode().strip()}")
        return numbers, measured
    except EOFError as exc:   # the client gave up: say why
        stop_process(client, signal.SIGKILL, 10)
        raise EOFError(f"{exc}; client: {client.stderr.read().decode().strip()}") from None
    finally:
        for child in (strace, client):
            if child is not None:
                stop_process(child, signal.SIGKILL, 10)
        client.stdout.close()
        client.stderr.close()
