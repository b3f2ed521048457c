"""The command line.

``python -m uringloop info [--json] [--opcodes]``: what io_uring offers here
and what the loop takes from it -- kernel, build and runtime liburing,
RLIMIT_MEMLOCK, the URINGLOOP_* knobs set, the ring a fresh loop gets (setup
flags, feature bits, sizes, registered ring fd), which optional paths that
loop turned on (and why the others are off), and the opcodes: a short
"available but unused" summary, or with ``--opcodes`` the kernel's whole
list with the used ones starred.

``python -m uringloop stats [--json] -- COMMAND...``: runs COMMAND with
``URINGLOOP_STATS`` pointing at a file of its own, waits for it (Ctrl-C
goes to COMMAND, which closes its loops as it exits) and prints
``ring_stats()`` of every loop COMMAND made; its exit status is COMMAND's.

``--version`` names the distribution (``uringloop-asyncio``: the import
name is ``uringloop``); no command prints the help.

Data flow: the backend is chosen exactly as ``new_event_loop()`` chooses it
(``_backend``), so the report can never disagree with the loop.  Only when
that choice is io_uring does ``info`` make a loop of its own, run it for
one turn (which is when a ring fd is registered, if ever) and read it
back; with ``URINGLOOP_BACKEND=selector`` it makes no io_uring syscall,
because the sandboxes that need that setting kill on the first.  When the
C extension cannot be loaded (no liburing here), the report says so
instead of failing: that is the reason the backend is the selector.
"""
import argparse
import ctypes
import json
import os
import platform
import resource
import signal
import subprocess
import sys
import tempfile
import textwrap

from . import __version__, _accel, _backend, _extension
from ._features import knobs_in_environment
from ._names import FEATURE_NAMES, SETUP_FLAG_NAMES, bit_names, opcode_name

# The name on the package index (``pip install uringloop-asyncio``).
DISTRIBUTION = "uringloop-asyncio"

def _ring_report():
    import asyncio

    from ._ring import OPCODES_USED
    from .loop import Loop

    # The loop new_event_loop() would make here, run for one turn as a
    # running loop binds its ring.
    loop = Loop()
    try:
        loop.run_until_complete(asyncio.sleep(0))
        ring = loop._ring
        supported = sorted(ring.supported_opcodes())
        stats = loop.ring_stats()
        report = {
            "setup_flags": ring.setup_flags,
            "setup_flag_names": bit_names(ring.setup_flags, SETUP_FLAG_NAMES),
            "features": ring.features,
            "feature_names": bit_names(ring.features, FEATURE_NAMES),
            "registered_ring_fd": ring.registered_fd,
            "sq_entries": ring.sq_entries,
            "cq_entries": ring.cq_entries,
            "buffers": {"count": stats["buffers"]["count"], "size": stats["buffers"]["size"]},
            "fixed_file_slots": stats["config"]["fixed_files"]["slots"],
            "paths": stats["config"]["paths"],
        }
    finally:
        loop.close()
    names = [opcode_name(op) for op in supported]
    report["opcodes_supported"] = names
    report["opcodes_used"] = list(OPCODES_USED)
    report["opcodes_used_but_unsupported"] = [n for n in OPCODES_USED if n not in names]
    report["opcodes_available_unused"] = [n for n in names if n not in OPCODES_USED]
    return report


def _liburing_version():
    # Loading the extension makes no io_uring syscall, so this is safe
    # even where the selector backend was forced.
    if _extension.error is not None:
        return f"unknown ({_extension.reason()})"
    from ._uring import ffi, lib
    return ffi.string(lib.ul_liburing_build_version()).decode()


def _liburing_runtime():
    """The liburing this process runs with: its own answer where it has
    io_uring_major_version() (2.4+), else the version in the name of the
    file the dynamic linker mapped.  Reads memory maps, no io_uring call."""
    if _extension.error is not None:
        return None
    path = None
    with open("/proc/self/maps") as maps:
        for line in maps:
            if "/liburing.so" in line:
                path = line[line.index("/"):].rstrip("\n")
                break
    if path is None:
        return "linked statically (the build version applies)"
    real = os.path.realpath(path)
    try:
        library = ctypes.CDLL(path)
        version = f"{library.io_uring_major_version()}.{library.io_uring_minor_version()}"
        return f"{version} ({real})"
    except (OSError, AttributeError):
        name = os.path.basename(real)
        version = name.partition(".so.")[2] or "unknown"
        return f"{version} (from the file name {real}; io_uring_major_version() came in 2.4)"


def _memlock():
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    return {"soft": None if soft == resource.RLIM_INFINITY else soft,
            "hard": None if hard == resource.RLIM_INFINITY else hard}


def _io_uring_disabled_sysctl():
    try:
        with open("/proc/sys/kernel/io_uring_disabled") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None     # kernels before 6.6 have no such switch


def collect():
    """Everything ``info`` reports, as plain data."""
    uname = os.uname()
    info = {
        "distribution": DISTRIBUTION,
        "uringloop_version": __version__,
        "python": platform.python_version(),
        "kernel": {"release": uname.release, "version": uname.version,
                   "machine": uname.machine},
        "io_uring_disabled_sysctl": _io_uring_disabled_sysctl(),
        "liburing_build_version": _liburing_version(),
        "liburing_runtime_version": _liburing_runtime(),
        "rlimit_memlock": _memlock(),
        "knobs": knobs_in_environment(),
        "requested_backend": _backend.requested_backend(),
        "hot_loop": _accel.description,
    }
    if info["requested_backend"] == "selector":
        info["backend"] = "selector"
        info["backend_reason"] = (f"{_backend._ENV}=selector: io_uring not "
                                  f"probed, no io_uring syscall made")
        info["ring"] = None
        return info
    error = _backend.probe_ring()
    if error is not None:
        info["backend"] = "selector"
        info["backend_reason"] = f"io_uring unavailable: {error}"
        if info["requested_backend"] == "uring":
            info["backend"] = "none"
            info["backend_reason"] += (f" (with {_backend._ENV}=uring, "
                                       f"new_event_loop() raises)")
        info["ring"] = None
        return info
    info["backend"] = "io_uring"
    info["backend_reason"] = None
    info["ring"] = _ring_report()
    return info


def _names_line(names, value):
    return f"{' '.join(names) or '-'} (0x{value:x})"


def _bytes(n):
    if n is None:
        return "unlimited"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def _wrapped(label, names):
    return textwrap.wrap(" ".join(names) or "-", width=100, initial_indent=f"{label:21}",
                         subsequent_indent=" " * 21)


def format_text(info, all_opcodes=False):
    kernel = info["kernel"]
    memlock = info["rlimit_memlock"]
    lines = [
        f"{info['distribution']} {info['uringloop_version']} (import uringloop) "
        f"on Python {info['python']}",
        f"kernel:              Linux {kernel['release']} {kernel['machine']} ({kernel['version']})",
        f"liburing (build):    {info['liburing_build_version']}",
    ]
    if info["liburing_runtime_version"] is not None:
        lines.append(f"liburing (runtime):  {info['liburing_runtime_version']}")
    lines.append(f"RLIMIT_MEMLOCK:      {_bytes(memlock['soft'])} (hard {_bytes(memlock['hard'])})")
    disabled = info["io_uring_disabled_sysctl"]
    if disabled is not None:
        lines.append(f"io_uring_disabled:   {disabled} (sysctl kernel.io_uring_disabled)")
    knobs = [f"{name}={value}" for name, value in info["knobs"].items()]
    lines += _wrapped("knobs set:", knobs or ["none"])
    lines.append(f"loop turn:           {info['hot_loop']}")
    backend = info["backend"]
    if info["backend_reason"]:
        backend += f" -- {info['backend_reason']}"
    ring = info["ring"]
    if ring is None:
        lines.append(f"backend:             {backend}")
        return "\n".join(lines) + "\n"
    buffers = ring["buffers"]
    lines += [
        f"backend:             {backend}",
        f"setup flags granted: {_names_line(ring['setup_flag_names'], ring['setup_flags'])}",
        f"features:            {_names_line(ring['feature_names'], ring['features'])}",
        f"registered ring fd:  {'yes' if ring['registered_ring_fd'] else 'no'}",
        f"ring entries:        SQ {ring['sq_entries']}, CQ {ring['cq_entries']}",
        "provided buffers:    " + (f"{buffers['count']} x {_bytes(buffers['size'])}"
                                   if buffers["count"] else "none"),
        "registered files:    " + (f"{ring['fixed_file_slots']} slots"
                                   if ring["fixed_file_slots"] else "none"),
        "optional paths of a new loop (URINGLOOP_DISABLE=name,... turns one off):",
    ]
    width = max(map(len, ring["paths"]))
    lines += [f"  {name:{width}}  {state}" for name, state in ring["paths"].items()]
    used = set(ring["opcodes_used"])
    if all_opcodes:
        lines.append(f"opcodes supported by the kernel ({len(ring['opcodes_supported'])}, "
                     f"* = used by the loop):")
        for name in ring["opcodes_supported"]:
            lines.append(f"  {'*' if name in used else ' '} {name}")
    else:
        lines.append(f"opcodes:             {len(ring['opcodes_supported'])} supported by the "
                     f"kernel, {len(used)} used by the loop (--opcodes lists them all)")
    lines += _wrapped("used by the loop:", ring["opcodes_used"])
    unused = ring["opcodes_available_unused"]
    lines += _wrapped(f"unused ({len(unused)}):", unused)
    missing = ring["opcodes_used_but_unsupported"]
    if missing:
        lines.append(f"used but NOT supported by this kernel: {' '.join(missing)}")
    return "\n".join(lines) + "\n"


def _per(numerator, denominator):
    return f"{numerator / denominator:.2f}" if denominator else "-"


def format_stats(stats):
    """One loop's ``ring_stats()`` (as URINGLOOP_STATS wrote it) as text."""
    config, buffers = stats["config"], stats["buffers"]
    files = config["fixed_files"]
    by_opcode = sorted(stats["sqes_by_opcode"].items(), key=lambda item: -item[1])
    on = [name for name, state in config["paths"].items() if state == "on"]
    lines = [
        f"loop {stats['loop']:#x} in pid {stats['pid']}"
        f"{'' if stats['closed'] else ' (never closed: counted at exit)'}",
        f"  turns {stats['turns']}, io_uring_enter calls {stats['enters']}, "
        f"turns with completions {stats['batches']}",
        f"  SQEs {stats['sqes']}: " + (", ".join(f"{name} {n}" for name, n in by_opcode) or "-"),
        f"  CQEs {stats['cqes']}: {stats['cqes_to_python']} to Python, {stats['cqes_in_c']} "
        f"handled in C, {stats['cqes_cancelled']} cancelled ({stats['cancels']} cancel requests; "
        f"{stats['sqes_resubmitted']} dropped with the thread that submitted them, resubmitted)",
        f"  per turn: {_per(stats['sqes'], stats['turns'])} SQEs, "
        f"{_per(stats['cqes'], stats['turns'])} CQEs; per enter: "
        f"{_per(stats['sqes'], stats['enters'])} SQEs, {_per(stats['cqes'], stats['enters'])} CQEs",
        "  provided buffers: " + (
            f"{buffers['count']} x {_bytes(buffers['size'])}, {buffers['circulating']} "
            f"circulating, high water {buffers['high_water']}, ENOBUFS {stats['enobufs']}"
            if buffers["count"] else "none"),
        "  registered files: " + (
            f"{files['slots']} slots, {files['installed']} sockets installed, "
            f"high water {files['high_water']}, {files['in_use']} in use, "
            f"{files['table_full'] + files['refused']} used their fd instead"
            if files["slots"] else "none"),
        f"  CQ overflow: {stats['cq_overflow_turns']} turns saw it, "
        f"{stats['cqes_dropped']} CQEs dropped",
        f"  ring: SQ {config['sq_entries']}, CQ {config['cq_entries']}, "
        f"{' '.join(config['setup_flags'])}, registered fd "
        f"{'yes' if config['registered_ring_fd'] else 'no'}",
        f"  paths on: {' '.join(on) or '-'}",
    ]
    return "\n".join(lines) + "\n"


def run_with_stats(command):
    """Run ``command`` with URINGLOOP_STATS set; (exit status, [stats])."""
    with tempfile.TemporaryDirectory(prefix="uringloop-stats-") as workdir:
        path = os.path.join(workdir, "stats.jsonl")
        env = dict(os.environ, URINGLOOP_STATS=path)
        # Ctrl-C reaches the command through the terminal; this process
        # waits for it to close its loops rather than die first.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            proc = subprocess.Popen(command, env=env)
            forward = lambda signum, frame: proc.send_signal(signum)  # noqa: E731
            signal.signal(signal.SIGTERM, forward)
            status = proc.wait()
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stats = []
        if os.path.exists(path):
            with open(path) as f:
                stats = [json.loads(line) for line in f if line.strip()]
    return status, stats


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m uringloop")
    parser.add_argument("--version", action="version",
                        version=f"{DISTRIBUTION} {__version__}")
    commands = parser.add_subparsers(dest="command")
    info_cmd = commands.add_parser(
        "info", help="kernel, liburing, io_uring features, knobs, optional paths, chosen backend")
    info_cmd.add_argument("--json", action="store_true", help="print JSON")
    info_cmd.add_argument("--opcodes", action="store_true",
                          help="list every opcode the kernel supports")
    stats_cmd = commands.add_parser(
        "stats", help="run a command and print ring_stats() of every loop it made",
        usage="python -m uringloop stats [--json] -- COMMAND [ARG...]")
    stats_cmd.add_argument("--json", action="store_true", help="print JSON")
    stats_cmd.add_argument("cmd", nargs=argparse.REMAINDER, help="the command to run")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "stats":
        command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not command:
            stats_cmd.error("a command to run is required, after --")
        try:
            status, stats = run_with_stats(command)
        except OSError as exc:
            parser.exit(127, f"python -m uringloop: error: {exc}\n")
        if args.json:
            json.dump(stats, sys.stdout, indent=2)
            sys.stdout.write("\n")
        else:
            sys.stdout.write("".join(map(format_stats, stats))
                             or "no uringloop loop was made (or none closed or exited)\n")
        return status if status >= 0 else 128 - status
    try:
        info = collect()
    except ValueError as exc:     # a bad URINGLOOP_BACKEND or knob
        parser.exit(2, f"python -m uringloop: error: {exc}\n")
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(info, all_opcodes=args.opcodes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
