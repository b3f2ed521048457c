"""Renders saved benchmark results: markdown tables, PNG bar charts, and (on
request) the benchmark section of README.md.

    python bench/report.py [bench/results/latest.json] [--publish]

Owns presentation only.  Input is the JSON that bench/bench.py saves:

  environment  machine, kernel, Python, liburing and library versions
  results      echo runs: kind ("timing" or "strace"), server ("asyncio",
               "uvloop", "uringloop", "c", or a uringloop variant with knobs
               set such as "uringloop[SQPOLL=10]"), the case (style,
               transport, size, conns) and either its numbers or "error";
               uringloop timing runs carry "ring", ring_stats() per request
  http         HTTP runs (bench/http_bench.py): the same, with the case
               (app, conns)
  sendfile     loop.sendfile runs (bench/sendfile_bench.py): timing runs
               with the case (conns) and MB/s instead of requests/s
  files        bench/files_bench.py's cells (contender -> rate per workload),
               or {"error": ...}
  instructions bench/instructions.py's runs: kind "callgrind" (user-space
               instructions per request, "ir_per_req"), "callgrind-half"
               (the same at half the requests) and "timing" (the native
               run of the same cell, for its CPU µs per request)

Timing runs give the speed, latency and CPU; strace runs give syscalls per
request; both are joined here by (server, case).  The C echo server's runs
carry style "c" and are shown beside every style of the same transport, size
and connection count.  Parts missing from a file (older runs, ``--only``)
are left out.  Ratios are always uringloop's over the other loop's.
"""
import argparse
import json
import os
import shutil
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(BENCH), "README.md")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

LOOPS = ["asyncio", "uvloop", "uringloop"]
ECHO_SERVERS = LOOPS + ["c"]
NAMES = {"asyncio": "asyncio", "uvloop": "uvloop", "uringloop": "uringloop", "c": "C io_uring"}
COLORS = {"asyncio": "#8c8c8c", "uvloop": "#4c72b0", "uringloop": "#dd8452", "c": "#55a868"}
FULL_CORE = 0.95   # busy share of the client's core above which the client side, not the server, limited the run
CONTENDED = 0.10   # share of a pinned core taken by other work above which a run's speed is suspect
CHARTS = {"echo": "echo.png", "http": "http.png", "sendfile": "sendfile.png"}   # part -> chart file, in results/ and bench/
VARIANT_COLORS = ["#c44e52", "#8172b2", "#937860", "#da8bc3", "#ccb974"]


def name(server):
    return NAMES.get(server, server)


def variants(runs):
    """The uringloop variants (bench.py --uring-env) in ``runs``, in order."""
    found = []
    for run in runs:
        if run["server"] not in ECHO_SERVERS and run["server"] not in found:
            found.append(run["server"])
    return found


def color(server):
    if server in COLORS:
        return COLORS[server]
    return VARIANT_COLORS[sum(map(ord, server)) % len(VARIANT_COLORS)]


def size_label(size):
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def echo_key(run):
    return (run["style"], run["transport"], run["size"], run["conns"])


def echo_label(key):
    style, transport, size, conns = key
    return f"{style} {'TCP' if transport == 'tcp' else 'Unix'} {size_label(size)} ×{conns}"


def http_key(run):
    return (run["app"], run["conns"])


def http_label(key):
    return f"{key[0]} ×{key[1]}"


def instructions_key(run):
    """(style or app, message size, connections); an echo case's style
    comes first, so that Table finds the C server under style "c"."""
    return (run.get("style") or run["app"], run.get("size"), run["conns"])


def instructions_label(key):
    what, size, conns = key
    return f"{what} ×{conns}" if size is None else f"{what} echo {size_label(size)} ×{conns}"


def sendfile_key(run):
    return (run["file_mib"], run["conns"])


def sendfile_label(key):
    return f"{key[0]} MiB file ×{key[1]}"


class Table:
    """The runs of one part indexed by (kind, server, case), where ``key``
    gives a run's case.  ``speed`` names the field that is better higher
    (requests/s, MB/s), ``cost`` the server CPU per unit of work; with
    several rounds, a lookup gives the run of median speed.  The C echo
    server is looked up under style "c" whatever style is asked for."""

    def __init__(self, runs, key, speed="rps", cost="cpu_us_per_req"):
        self.speed, self.cost = speed, cost
        self.runs = {}
        for run in runs:
            self.runs.setdefault((run["kind"], run["server"], key(run)), []).append(run)
        self.cases = []
        for run in runs:
            case = key(run)
            if run["server"] != "c" and run["kind"] == "timing" and case not in self.cases:
                self.cases.append(case)

    def get(self, kind, server, case):
        if server == "c":
            case = ("c",) + case[1:]
        good = sorted((run for run in self.runs.get((kind, server, case), [])
                       if "error" not in run), key=lambda run: run[self.speed])
        return good[(len(good) - 1) // 2] if good else None

    def value(self, kind, server, case, field):
        run = self.get(kind, server, case)
        return None if run is None else run.get(field)


def fmt(value, spec):
    return "—" if value is None else format(value, spec)


def other_share(run, side):
    """The part of a pinned core's busy time that was neither the pinned
    process nor interrupts: other work competing for the core."""
    busy, interrupts = run.get(f"{side}_core_busy"), run.get(f"{side}_core_interrupts")
    if busy is None or interrupts is None:
        return None
    return max(0.0, busy - run[f"{side}_cpu"] - interrupts)


def core_use(run, side):
    other = other_share(run, side)
    own = f"{run[f'{side}_cpu']:.0%}"
    text = own if other is None else f"{own} + {run[f'{side}_core_interrupts']:.0%} + {other:.0%}"
    if side == "client" and (run.get("client_core_busy") or 0) >= FULL_CORE:
        text += " (full)"
    return text


def contended(run):
    return run is not None and max(other_share(run, "server") or 0,
                                   other_share(run, "client") or 0) > CONTENDED


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def header(env):
    libraries = ", ".join(f"{name} {env[name]}" for name in ("httptools", "uvicorn", "aiofiles")
                          if env.get(name))
    return (f"Measured {env['date']} on this project's {env['nproc']}-core machine "
            f"({env['cpu']}), Linux {env['kernel']}, {env['python']}, "
            f"liburing {env['liburing']} ({env['liburing_package']}), uvloop {env['uvloop']}, "
            f"uringloop {env['uringloop']}{', ' + libraries if libraries else ''}"
            f"{', wrk ' + env['wrk'] if env.get('wrk') else ''}; {env['pinning']}; "
            f"{env['window_seconds']:g} s per run"
            f"{'' if env['repeat'] == 1 else ', median of %d rounds' % env['repeat']}; "
            f"load average {' '.join(env['loadavg_start'])} at start, "
            f"{' '.join(env['loadavg_end'])} at end.")


def summary_table(table, servers, label, speed_name, cost_name, speed_spec=",.0f"):
    """Each case's speed on every server, and uringloop's speed and CPU cost
    as ratios to asyncio's and uvloop's; † marks contended runs."""
    lines = ["| case | " + " | ".join(f"{name(s)} {speed_name}" for s in servers)
             + f" | uringloop / asyncio {speed_name} | uringloop / uvloop {speed_name} "
             f"| uringloop / asyncio {cost_name} | uringloop / uvloop {cost_name} |",
             "|---|" + "--:|" * (len(servers) + 4)]
    for case in table.cases:
        speed = {s: table.value("timing", s, case, table.speed) for s in servers}
        cost = {s: table.value("timing", s, case, table.cost) for s in servers}
        cells = [fmt(speed[s], speed_spec)
                 + (" †" if contended(table.get("timing", s, case)) else "") for s in servers]
        cells += [ratio(speed["uringloop"], speed["asyncio"]),
                  ratio(speed["uringloop"], speed["uvloop"]),
                  ratio(cost["uringloop"], cost["asyncio"]), ratio(cost["uringloop"], cost["uvloop"])]
        lines.append(f"| {label(case)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def variant_table(table, variant_names, label):
    """Each uringloop variant against plain uringloop: speed and CPU ratios."""
    if not variant_names:
        return ""
    lines = ["| case | variant | req/s | ÷ uringloop req/s | CPU µs/req | ÷ uringloop CPU/req |",
             "|---|---|--:|--:|--:|--:|"]
    for case in table.cases:
        base_speed = table.value("timing", "uringloop", case, table.speed)
        base_cost = table.value("timing", "uringloop", case, table.cost)
        for variant in variant_names:
            speed = table.value("timing", variant, case, table.speed)
            cost = table.value("timing", variant, case, table.cost)
            lines.append(f"| {label(case)} | {variant} | {fmt(speed, ',.0f')} "
                         f"| {ratio(speed, base_speed)} | {fmt(cost, '.1f')} "
                         f"| {ratio(cost, base_cost)} |")
    return "\n".join(lines)


def ring_table(table, servers, label):
    """loop.ring_stats() over each uringloop timing window, per request."""
    lines = ["| case | server | turns | io_uring_enter | SQEs | CQEs | CQEs to Python "
             "| CQEs in C | SQEs by opcode |", "|---|---|--:|--:|--:|--:|--:|--:|---|"]
    for case in table.cases:
        for server in servers:
            run = table.get("timing", server, case)
            ring = run.get("ring") if run is not None else None
            if not ring:
                continue
            ops = ", ".join(f"{op} {n:.2f}" for op, n in
                            sorted(ring["sqes_by_opcode"].items(), key=lambda item: -item[1])
                            if n >= 0.005)
            lines.append(f"| {label(case)} | {name(server)} | {ring['turns']:.2f} "
                         f"| {ring['enters']:.2f} | {ring['sqes']:.2f} | {ring['cqes']:.2f} "
                         f"| {ring['cqes_to_python']:.2f} | {ring['cqes_in_c']:.2f} | {ops} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def detail_table(table, servers, label, client):
    """One line per timing run: requests/s, latency, CPU, core use, syscalls."""
    lines = ["| case | server | req/s | p50 µs | p99 µs | server CPU µs/req "
             f"| core 0: server + irq + other | core 1: {client} + irq + other "
             "| syscalls/req (strace pass) | backend |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for case in table.cases:
        for server in servers:
            run = table.get("timing", server, case)
            if run is None:
                lines.append(f"| {label(case)} | {name(server)} | error | | | | | | | |")
                continue
            lines.append(
                f"| {label(case)} | {name(server)} | {run['rps']:,.0f} "
                f"| {run['p50_us']:.0f} | {run['p99_us']:.0f} | {fmt(run['cpu_us_per_req'], '.1f')} "
                f"| {core_use(run, 'server')} | {core_use(run, 'client')} "
                f"| {fmt(table.value('strace', server, case, 'syscalls_per_req'), '.2f')} "
                f"| {run['backend'].replace('|', '/')} |")
    return "\n".join(lines)


def syscall_table(table, servers, label):
    """The three most frequent syscalls per request of each traced run."""
    lines = ["| case | server | top syscalls per request |", "|---|---|---|"]
    for case in table.cases:
        for server in servers:
            run = table.get("strace", server, case)
            if run is None or not run["requests"]:
                continue
            top = sorted(run["syscalls"].items(), key=lambda item: -item[1])[:3]
            listed = ", ".join(f"{name} {calls / run['requests']:.2f}" for name, calls in top)
            lines.append(f"| {label(case)} | {name(server)} | {listed} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def sendfile_detail_table(table):
    lines = ["| case | server | how | MB/s | server CPU µs/MB "
             "| core 0: server + irq + other | core 1: client + irq + other | backend |",
             "|---|---|---|--:|--:|--:|--:|---|"]
    for case in table.cases:
        for server in LOOPS:
            run = table.get("timing", server, case)
            if run is None:
                lines.append(f"| {sendfile_label(case)} | {name(server)} | error | | | | | |")
                continue
            lines.append(f"| {sendfile_label(case)} | {name(server)} | {run['method']} "
                         f"| {run['mbps']:,.0f} | {run['cpu_us_per_mb']:.0f} "
                         f"| {core_use(run, 'server')} | {core_use(run, 'client')} "
                         f"| {run['backend'].replace('|', '/')} |")
    return "\n".join(lines)


STEADY = 0.01   # the two callgrind runs of a cell agree within this share


def unsteady(full, half):
    return full is not None and half is not None and abs(half / full - 1) > STEADY


def instructions_tables(table, extra=()):
    """Instructions per request of every server (and the uringloop variants
    ``extra``) side by side with uringloop's ratio to uvloop's, then per
    server the check run at half the requests and the native CPU µs per
    request next to it."""
    def value(kind, server, case):
        return table.value(kind, server, case, "ir_per_req")

    servers = ECHO_SERVERS + list(extra)
    summary = ["| case | " + " | ".join(name(s) for s in servers) + " | uringloop / uvloop |",
               "|---|" + "--:|" * (len(servers) + 1)]
    detail = ["| case | server | instructions/req | at half the requests | difference "
              "| idle instructions/s | native CPU µs/req | native req/s |",
              "|---|---|--:|--:|--:|--:|--:|--:|"]
    c_shown = set()   # the C server has no styles: one line per shape
    for case in table.cases:
        cells = [fmt(value("callgrind", server, case), ",.0f")
                 + (" ‡" if unsteady(value("callgrind", server, case),
                                     value("callgrind-half", server, case)) else "")
                 for server in servers]
        summary.append(f"| {instructions_label(case)} | " + " | ".join(cells) + " | "
                       + ratio(value("callgrind", "uringloop", case),
                               value("callgrind", "uvloop", case)) + " |")
        for server in servers:
            full, half = value("callgrind", server, case), value("callgrind-half", server, case)
            if full is None and half is None or server == "c" and case[1:] in c_shown:
                continue
            if server == "c":
                c_shown.add(case[1:])
            change = "—" if full is None or half is None else f"{half / full - 1:+.2%}"
            change += " ‡" if unsteady(full, half) else ""
            idle = table.value("callgrind", server, case, "idle_ir_per_s")
            detail.append(f"| {instructions_label(case)} | {name(server)} | {fmt(full, ',.0f')} "
                          f"| {fmt(half, ',.0f')} | {change} | {fmt(idle, ',.0f')} "
                          f"| {fmt(table.value('timing', server, case, 'cpu_us_per_req'), '.1f')} "
                          f"| {fmt(table.value('timing', server, case, 'rps'), ',.0f')} |")
    return "\n".join(summary), "\n".join(detail)


def files_table(files):
    """bench/files_bench.py's cells: one row per workload, one column per
    contender, and uringloop's ratio to aiofiles and to the executor."""
    names = files["contenders"]
    others = [name for name in ("aiofiles", "executor") if name in names]
    lines = ["| workload | unit | " + " | ".join(names) + " | "
             + " | ".join(f"uringloop ÷ {name}" for name in others) + " |",
             "|---|---|" + "--:|" * (len(names) + len(others))]
    for row in files["rows"]:
        cells = row["cells"]
        lines.append(f"| {row['title']} | {row['unit']} | "
                     + " | ".join(f"{cells[name]:,.0f}" for name in names) + " | "
                     + " | ".join(ratio(cells["uringloop"], cells[name]) for name in others) + " |")
    return "\n".join(lines)


def errors(data):
    parts = (("echo", data["results"], echo_key, echo_label),
             ("HTTP", data.get("http", []), http_key, http_label),
             ("sendfile", data.get("sendfile", []), sendfile_key, sendfile_label),
             ("instructions", data.get("instructions", []), instructions_key, instructions_label))
    items = [f"- {part} {run['kind']} {name(run['server'])} {label(key(run))}: {run['error']}"
             for part, runs, key, label in parts for run in runs if "error" in run]
    if "error" in data.get("files", {}):
        items.append(f"- files: {data['files']['error']}")
    return "Failed runs:\n\n" + "\n".join(items) if items else ""


def echo_section(data):
    table = Table(data["results"], echo_key)
    extra = variants(data["results"])
    servers = ECHO_SERVERS + extra
    return [
        "### Echo",
        "Requests per second and ratios (ratio > 1× means uringloop serves more "
        "requests; for CPU per request, < 1× means uringloop spends less):",
        summary_table(table, servers, echo_label, "req/s", "CPU per req"),
        variant_table(table, extra, echo_label),
        f"† other work held more than {CONTENDED:.0%} of the server's or the client's "
        "core during that run, so its requests/s is low by an unknown amount; CPU per "
        "request is much less affected.",
        "Per run (latency is the client's, send of the first byte to receipt of the "
        "last; server CPU is its utime+stime over the window; each core's time is "
        "split into the pinned process, irq+softirq (charged to no process; mostly "
        "the loopback traffic itself) and other work competing for the core; "
        "syscalls come from a separate, shorter run under `strace -c -f`, slowed by "
        "ptrace):",
        detail_table(table, servers, echo_label, "client"),
        syscall_table(table, servers, echo_label),
        "`loop.ring_stats()` over each uringloop window, per request (a request is one "
        "message echoed; CQEs in C are send completions that never reach Python):",
        ring_table(table, ["uringloop"] + extra, echo_label)]


def http_section(data):
    table = Table(data["http"], http_key)
    return [
        "### HTTP",
        "HTTP/1.1 keep-alive, `wrk -t1` on core 1, a 13-byte `Hello, World!` body: "
        "`httptools` is an `asyncio.Protocol` around `httptools.HttpRequestParser`, "
        "`uvicorn` a minimal ASGI app under `uvicorn.Server(...).serve()` (httptools "
        "parser, no access log); ×N is wrk's connection count.  Ratios as above:",
        summary_table(table, LOOPS, http_label, "req/s", "CPU per req"),
        "Per run (latency is wrk's latency distribution, which wrk corrects for "
        "coordinated omission: one stall of the server, say while other work holds its "
        "core, also counts for the requests it held back, so p99 jumps under contention; "
        "the server's CPU is measured over wrk's whole run, after a 1 s warm-up run):",
        detail_table(table, LOOPS, http_label, "wrk"),
        syscall_table(table, LOOPS, http_label)]


def sendfile_section(data):
    table = Table(data["sendfile"], sendfile_key, speed="mbps", cost="cpu_us_per_mb")
    return [
        "### loop.sendfile",
        "Each connection receives a whole file sent with `loop.sendfile(transport, file)` "
        "(the file is in the page cache); a client on core 1 reads and discards it with "
        "blocking `recv_into` and reconnects; ×N is the number of connections at a time. "
        "uvloop has no `loop.sendfile` (it raises `NotImplementedError`), so its server "
        "reads the file and writes it to the transport instead.  MB is 10⁶ bytes; "
        "ratios > 1× for MB/s and < 1× for CPU per MB favour uringloop:",
        summary_table(table, LOOPS, sendfile_label, "MB/s", "CPU per MB"),
        sendfile_detail_table(table)]


def files_section(data):
    files = data["files"]
    return [
        "### Files",
        f"`bench/files_bench.py`: uringloop's file API on its ring against aiofiles and "
        f"`run_in_executor` on asyncio's loop ({files['size_mib']} MiB file, best of "
        f"{files['repeat']}; `uringloop/exec` is the same API on asyncio's loop, where it "
        f"falls back to the executor; load average {files['load_before']} before, "
        f"{files['load_after']} after):",
        files_table(files)] + files["notes"]


def instructions_section(data):
    summary, detail = instructions_tables(Table(data["instructions"], instructions_key),
                                          variants(data["instructions"]))
    return [
        "### Instructions per request",
        "User-space instructions per request (`bench/instructions.py`, "
        "`bench/bench.py --only instructions`): each server under `valgrind "
        "--tool=callgrind`, TCP, instrumentation switched on after a warm-up and off "
        "once the server has finished the last of an exact number of requests "
        "(`bench/echo_client.c --requests`; for uvicorn `bench/http_count_client.py`). "
        "Every instruction the server process ran in user space counts (interpreter, "
        "extensions, libc), the kernel's do not; under callgrind the server is the "
        "bottleneck, so every loop turn finds all connections ready.  It does not "
        "depend on other work on the machine, so it is the figure to compare changes "
        "with; ratio < 1× means uringloop runs fewer:",
        summary,
        "Each cell ran twice, in two processes, the second time with half the requests: "
        "the difference shows how far the figure is from exact.  What a server runs "
        "while idle (uvicorn's 0.1 s tick), measured for a second after the window, is "
        "taken out pro rata of the window's length.  Native CPU µs per request and "
        "requests/s come from one ordinary timing run of the same cell:",
        detail,
        f"‡ the two runs differ by more than {STEADY:.0%}: that server's path depends on "
        "timing (say, whether the next request is already there when it reads), so its "
        "figure is not load-independent."]


def markdown(data):
    """The whole report: provenance, then each part's ratio summary, per-run
    details and syscalls, then any failed runs."""
    parts = [header(data["environment"])]
    if data["results"]:
        parts += echo_section(data)
    if data.get("http"):
        parts += http_section(data)
    if data.get("sendfile"):
        parts += sendfile_section(data)
    if "rows" in data.get("files", {}):
        parts += files_section(data)
    if data.get("instructions"):
        parts += instructions_section(data)
    parts.append(errors(data))
    return "\n\n".join(part for part in parts if part) + "\n"


def bars(ax, table, servers, cases, field, title, labels, slots):
    """One group of bars per case, one bar per server, in ``slots`` places."""
    from matplotlib.ticker import FuncFormatter
    width = 0.8 / len(servers)
    for i, server in enumerate(servers):
        values = [table.value("timing", server, case, field) or 0 for case in cases]
        positions = [c + (i - (len(servers) - 1) / 2) * width for c in range(len(cases))]
        ax.bar(positions, values, width, label=name(server), color=color(server))
    ax.set_title(title, fontsize=9)
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_xlim(-0.6, slots - 0.4)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="y", alpha=0.3)


def figure(rows, slots):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt.subplots(rows, 2, squeeze=False,
                        figsize=(max(10.0, 2.4 * slots + 4), 1.0 + 2.9 * rows))


def finish(fig, axes, data, what, path, servers):
    """Title, one legend for all panels, and save."""
    import matplotlib.pyplot as plt
    env = data["environment"]
    top = 1 - 0.65 / fig.get_figheight()   # room above the panels for title and legend
    fig.suptitle(f"{what}: server on core 0, load client on core 1 — "
                 f"{env['date'][:10]}, {env['nproc']} cores ({env['cpu']}), Linux {env['kernel']}, "
                 f"{env['python']}", fontsize=10, y=1 - 0.15 / fig.get_figheight())
    fig.legend(*axes[0][0].get_legend_handles_labels(), ncol=len(servers), fontsize=9,
               loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / fig.get_figheight()),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def echo_chart(data, path):
    """One row of panels per (transport, message size): requests/s on the
    left, server CPU µs per request on the right; in each panel a group of
    bars per (style, connections), one bar per server."""
    table = Table(data["results"], echo_key)
    servers = ECHO_SERVERS + variants(data["results"])
    rows = []
    for case in table.cases:
        if case[1:3] not in rows:
            rows.append(case[1:3])
    slots = max(sum(1 for c in table.cases if c[1:3] == row) for row in rows)
    fig, axes = figure(len(rows), slots)
    for (transport, size), panel_row in zip(rows, axes):
        cases = [c for c in table.cases if c[1:3] == (transport, size)]
        where = f"{'TCP' if transport == 'tcp' else 'Unix'}, {size_label(size)} messages"
        labels = [f"{c[0]}\n×{c[3]} conn" for c in cases]
        bars(panel_row[0], table, servers, cases, "rps",
             f"{where}: requests/s (higher is better)", labels, slots)
        bars(panel_row[1], table, servers, cases, "cpu_us_per_req",
             f"{where}: server CPU µs per request (lower is better)", labels, slots)
    finish(fig, axes, data, "Echo ping-pong", path, servers)


def loops_chart(path, data, what, table, labels, speed_name, unit):
    """One row for a part run on the three loops: speed on the left, server
    CPU per unit of work on the right, a group of bars per case."""
    fig, axes = figure(1, len(table.cases))
    bars(axes[0][0], table, LOOPS, table.cases, table.speed,
         f"{what}: {speed_name} (higher is better)", labels, len(table.cases))
    bars(axes[0][1], table, LOOPS, table.cases, table.cost,
         f"{what}: server CPU µs per {unit} (lower is better)", labels, len(table.cases))
    finish(fig, axes, data, what, path, LOOPS)


def http_chart(data, path):
    table = Table(data["http"], http_key)
    loops_chart(path, data, "HTTP (wrk)", table,
                [f"{app}\n×{conns} conn" for app, conns in table.cases], "requests/s", "request")


def sendfile_chart(data, path):
    table = Table(data["sendfile"], sendfile_key, speed="mbps", cost="cpu_us_per_mb")
    loops_chart(path, data, "loop.sendfile", table,
                [f"{mib} MiB file\n×{conns} conn" for mib, conns in table.cases], "MB/s", "MB")


def charts(data, directory):
    """Draw every chart the run has data for into ``directory``; returns their paths."""
    drawn = []
    for part, draw, present in (("echo", echo_chart, data["results"]),
                                ("http", http_chart, data.get("http")),
                                ("sendfile", sendfile_chart, data.get("sendfile"))):
        if present:
            drawn.append(os.path.join(directory, CHARTS[part]))
            draw(data, drawn[-1])
    return drawn


def publish(data, markdown_text, chart_paths):
    """Copy the charts into bench/ and replace README.md's text between the
    bench markers with them and ``markdown_text``."""
    images = []
    for path in chart_paths:
        name = os.path.basename(path)
        shutil.copyfile(path, os.path.join(BENCH, name))
        images.append(f"![{name[:-4]} benchmark](bench/{name})")
    with open(README) as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers to publish between")
    before, rest = readme.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    section = f"{BEGIN}\n" + "\n".join(images) + f"\n\n{markdown_text}{END}"
    with open(README, "w") as f:
        f.write(before + section + after)


def main(argv):
    parser = argparse.ArgumentParser(description="Render saved benchmark results")
    parser.add_argument("results", nargs="?", default=os.path.join(BENCH, "results", "latest.json"))
    parser.add_argument("--publish", action="store_true",
                        help="copy the charts to bench/ and the tables into README.md")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    text = markdown(data)
    chart_paths = charts(data, os.path.dirname(os.path.abspath(args.results)))
    print(text)
    if args.publish:
        publish(data, text, chart_paths)


if __name__ == "__main__":
    main(sys.argv[1:])
