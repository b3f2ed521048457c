"""Renders saved echo-benchmark results: markdown tables, a PNG bar chart,
and (on request) the benchmark section of README.md.

    python bench/report.py [bench/results/latest.json] [--publish]

Owns presentation only.  Input is the JSON that bench/bench.py saves:
{"environment": {...}, "results": [run, ...]}, where each run has a kind
("timing" or "strace"), a server ("asyncio", "uvloop", "uringloop" or "c"),
the case (style, transport, size, conns) and either its numbers or "error".
Timing runs give requests/s, latency and CPU; strace runs give syscalls per
request; both are joined here by (server, case).  The C server's runs carry
style "c" and are shown beside every style of the same transport, size and
connection count.
"""
import argparse
import json
import os
import shutil
import sys

BENCH = os.path.dirname(os.path.abspath(__file__))
README = os.path.join(os.path.dirname(BENCH), "README.md")
PUBLISHED_CHART = os.path.join(BENCH, "echo.png")
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

SERVERS = ["asyncio", "uvloop", "uringloop", "c"]
NAMES = {"asyncio": "asyncio", "uvloop": "uvloop", "uringloop": "uringloop", "c": "C io_uring"}
COLORS = {"asyncio": "#8c8c8c", "uvloop": "#4c72b0", "uringloop": "#dd8452", "c": "#55a868"}
FULL_CORE = 0.95   # busy share of the client's core above which the client side, not the server, limited the run
CONTENDED = 0.10   # share of a pinned core taken by other work above which a run's req/s is suspect


def size_label(size):
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def case_key(run):
    return (run["style"], run["transport"], run["size"], run["conns"])


def case_label(key):
    style, transport, size, conns = key
    return f"{style} {'TCP' if transport == 'tcp' else 'Unix'} {size_label(size)} ×{conns}"


class Table:
    """Runs indexed by (kind, server, case); with several rounds, a lookup
    gives the run of median requests/s.  The C server is looked up under
    style "c" whatever style is asked for."""

    def __init__(self, data):
        self.runs = {}
        for run in data["results"]:
            self.runs.setdefault((run["kind"], run["server"], case_key(run)), []).append(run)
        self.cases = []
        for run in data["results"]:
            key = case_key(run)
            if run["server"] != "c" and run["kind"] == "timing" and key not in self.cases:
                self.cases.append(key)

    def get(self, kind, server, case):
        if server == "c":
            case = ("c",) + case[1:]
        good = sorted((run for run in self.runs.get((kind, server, case), [])
                       if "error" not in run), key=lambda run: run["rps"])
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
    return own if other is None else f"{own} + {run[f'{side}_core_interrupts']:.0%} + {other:.0%}"


def contended(run):
    return run is not None and max(other_share(run, "server") or 0,
                                   other_share(run, "client") or 0) > CONTENDED


def ratio(a, b):
    return "—" if a is None or b is None or b == 0 else f"{a / b:.2f}×"


def header(env):
    return (f"Measured {env['date']} on this project's {env['nproc']}-core machine "
            f"({env['cpu']}), Linux {env['kernel']}, {env['python']}, "
            f"liburing {env['liburing']} ({env['liburing_package']}), uvloop {env['uvloop']}, "
            f"uringloop {env['uringloop']}; {env['pinning']}; {env['window_seconds']:g} s per run"
            f"{'' if env['repeat'] == 1 else ', median of %d rounds' % env['repeat']}; "
            f"load average {' '.join(env['loadavg_start'])} at start, "
            f"{' '.join(env['loadavg_end'])} at end.")


def summary_table(table):
    lines = ["| case | asyncio req/s | uvloop req/s | uringloop req/s | C io_uring req/s "
             "| uringloop / asyncio req/s | uringloop / uvloop req/s "
             "| uringloop / asyncio CPU per req | uringloop / uvloop CPU per req |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for case in table.cases:
        rps = {s: table.value("timing", s, case, "rps") for s in SERVERS}
        cpu = {s: table.value("timing", s, case, "cpu_us_per_req") for s in SERVERS}
        cells = [fmt(rps[s], ",.0f") + (" †" if contended(table.get("timing", s, case)) else "")
                 for s in SERVERS]
        cells += [ratio(rps["uringloop"], rps["asyncio"]), ratio(rps["uringloop"], rps["uvloop"]),
                  ratio(cpu["uringloop"], cpu["asyncio"]), ratio(cpu["uringloop"], cpu["uvloop"])]
        lines.append(f"| {case_label(case)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(table):
    lines = ["| case | server | req/s | p50 µs | p99 µs | server CPU µs/req "
             "| core 0: server + irq + other | core 1: client + irq + other "
             "| syscalls/req (strace pass) | backend |",
             "|---|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for case in table.cases:
        for server in SERVERS:
            run = table.get("timing", server, case)
            if run is None:
                lines.append(f"| {case_label(case)} | {NAMES[server]} | error | | | | | | | |")
                continue
            client = core_use(run, "client")
            if (run.get("client_core_busy") or 0) >= FULL_CORE:
                client += " (full)"
            lines.append(
                f"| {case_label(case)} | {NAMES[server]} | {run['rps']:,.0f} "
                f"| {run['p50_us']:.0f} | {run['p99_us']:.0f} | {fmt(run['cpu_us_per_req'], '.1f')} "
                f"| {core_use(run, 'server')} | {client} "
                f"| {fmt(table.value('strace', server, case, 'syscalls_per_req'), '.2f')} "
                f"| {run['backend'].replace('|', '/')} |")
    return "\n".join(lines)


def syscall_table(table):
    """The three most frequent syscalls per request of each traced run."""
    lines = ["| case | server | top syscalls per request |", "|---|---|---|"]
    for case in table.cases:
        for server in SERVERS:
            run = table.get("strace", server, case)
            if run is None or not run["requests"]:
                continue
            top = sorted(run["syscalls"].items(), key=lambda item: -item[1])[:3]
            listed = ", ".join(f"{name} {calls / run['requests']:.2f}" for name, calls in top)
            lines.append(f"| {case_label(case)} | {NAMES[server]} | {listed} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def errors(data):
    failed = [run for run in data["results"] if "error" in run]
    if not failed:
        return ""
    items = [f"- {run['kind']} {NAMES[run['server']]} {case_label(case_key(run))}: {run['error']}"
             for run in failed]
    return "Failed runs:\n\n" + "\n".join(items)


def markdown(data):
    """The whole report: provenance, ratio summary, per-run details, syscalls."""
    table = Table(data)
    parts = [header(data["environment"]),
             "Requests per second and ratios (ratio > 1× means uringloop serves more "
             "requests; for CPU per request, < 1× means uringloop spends less):",
             summary_table(table),
             f"† other work held more than {CONTENDED:.0%} of the server's or the client's "
             "core during that run, so its requests/s is low by an unknown amount; CPU per "
             "request is much less affected.",
             "Per run (latency is the client's, send of the first byte to receipt of the "
             "last; server CPU is its utime+stime over the window; each core's time is "
             "split into the pinned process, irq+softirq (charged to no process; mostly "
             "the loopback traffic itself) and other work competing for the core; "
             "syscalls come from a separate, shorter run under `strace -c -f`, slowed by "
             "ptrace):",
             detail_table(table),
             syscall_table(table),
             errors(data)]
    return "\n\n".join(part for part in parts if part) + "\n"


def chart(data, path):
    """One row of panels per (transport, message size): requests/s on the
    left, server CPU µs per request on the right; in each panel a group of
    bars per (style, connections), one bar per server."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    table = Table(data)
    rows = []
    for case in table.cases:
        if case[1:3] not in rows:
            rows.append(case[1:3])
    width = 0.8 / len(SERVERS)
    most = max(sum(1 for c in table.cases if c[1:3] == row) for row in rows)
    fig, axes = plt.subplots(len(rows), 2, squeeze=False,
                             figsize=(max(10.0, 2.4 * most + 4), 1.0 + 2.9 * len(rows)))
    for (transport, size), panel_row in zip(rows, axes):
        cases = [c for c in table.cases if c[1:3] == (transport, size)]
        where = f"{'TCP' if transport == 'tcp' else 'Unix'}, {size_label(size)} messages"
        for ax, field, what in ((panel_row[0], "rps", "requests/s (higher is better)"),
                                (panel_row[1], "cpu_us_per_req",
                                 "server CPU µs per request (lower is better)")):
            for i, server in enumerate(SERVERS):
                values = [table.value("timing", server, case, field) or 0 for case in cases]
                positions = [c + (i - (len(SERVERS) - 1) / 2) * width for c in range(len(cases))]
                ax.bar(positions, values, width, label=NAMES[server], color=COLORS[server])
            ax.set_title(f"{where}: {what}", fontsize=9)
            ax.set_xticks(range(len(cases)))
            ax.set_xticklabels([f"{c[0]}\n×{c[3]} conn" for c in cases], fontsize=8)
            ax.set_xlim(-0.6, most - 0.4)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
    env = data["environment"]
    top = 1 - 0.65 / fig.get_figheight()   # room above the panels for title and legend
    fig.suptitle(f"Echo ping-pong: server on core 0, C load client on core 1 — "
                 f"{env['date'][:10]}, {env['nproc']} cores ({env['cpu']}), Linux {env['kernel']}, "
                 f"{env['python']}", fontsize=10, y=1 - 0.15 / fig.get_figheight())
    fig.legend(*axes[0][0].get_legend_handles_labels(), ncol=len(SERVERS), fontsize=9,
               loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / fig.get_figheight()),
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, top))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def publish(data, markdown_text, chart_path):
    """Copy the chart to bench/echo.png and replace README.md's text between
    the bench markers with ``markdown_text`` and the chart."""
    shutil.copyfile(chart_path, PUBLISHED_CHART)
    with open(README) as f:
        readme = f.read()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} markers to publish between")
    before, rest = readme.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    section = f"{BEGIN}\n![echo benchmark](bench/echo.png)\n\n{markdown_text}{END}"
    with open(README, "w") as f:
        f.write(before + section + after)


def main(argv):
    parser = argparse.ArgumentParser(description="Render saved echo benchmark results")
    parser.add_argument("results", nargs="?", default=os.path.join(BENCH, "results", "latest.json"))
    parser.add_argument("--publish", action="store_true",
                        help="copy the chart to bench/echo.png and the tables into README.md")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    text = markdown(data)
    chart_path = os.path.join(os.path.dirname(os.path.abspath(args.results)), "echo.png")
    chart(data, chart_path)
    print(text)
    if args.publish:
        publish(data, text, chart_path)


if __name__ == "__main__":
    main(sys.argv[1:])
