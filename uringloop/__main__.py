"""``python -m uringloop info [--json]``: what io_uring offers here and what
the loop takes from it.  ``--version`` names the distribution
(``uringloop-asyncio``: the import name is ``uringloop``); no command
prints the help.

Data flow: the backend is chosen exactly as ``new_event_loop()`` chooses it
(``_backend``), so the report can never disagree with the loop.  Only when
that choice is io_uring (or io_uring was asked for and failed) does the
command open a ring of its own, made like the loop's, and read back the
granted setup flags, feature bits, registered ring fd and the kernel's
opcode probe; with ``URINGLOOP_BACKEND=selector`` it makes no io_uring
syscall, because the sandboxes that need that setting kill on the first.
When the C extension cannot be loaded (no liburing here), the report says
so instead of failing: that is the reason the backend is the selector.

The name tables follow the kernel's numbering in
``include/uapi/linux/io_uring.h``; a number newer than the table prints as
``op N`` / ``bit N`` rather than being hidden.
"""
import argparse
import json
import os
import platform
import sys

from . import __version__, _backend, _extension
from ._names import (FEATURE_NAMES, OPCODE_NAMES, SETUP_FLAG_NAMES, bit_names,
                     opcode_name)

# The name on the package index (``pip install uringloop-asyncio``).
DISTRIBUTION = "uringloop-asyncio"

def _ring_report():
    from ._ring import OPCODES_USED, Ring, loop_setup_flags

    report = {}
    # The ring a loop would get here, bound to this thread as a running
    # loop binds it (which is when a ring fd is registered, if ever).
    ring = Ring(setup_flags=loop_setup_flags())
    try:
        ring._bind_thread()
        supported = sorted(ring.supported_opcodes())
        report.update({
            "setup_flags": ring.setup_flags,
            "setup_flag_names": bit_names(ring.setup_flags, SETUP_FLAG_NAMES),
            "features": ring.features,
            "feature_names": bit_names(ring.features, FEATURE_NAMES),
            "registered_ring_fd": ring.registered_fd,
        })
    finally:
        ring.close()
    names = [opcode_name(op) for op in supported]
    report["opcodes_supported"] = names
    report["opcodes_used"] = list(OPCODES_USED)
    report["opcodes_used_but_unsupported"] = [n for n in OPCODES_USED if n not in names]
    return report


def _liburing_version():
    # Loading the extension makes no io_uring syscall, so this is safe
    # even where the selector backend was forced.
    if _extension.error is not None:
        return f"unknown ({_extension.reason()})"
    from ._uring import ffi, lib
    return ffi.string(lib.ul_liburing_build_version()).decode()


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
        "requested_backend": _backend.requested_backend(),
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


def format_text(info):
    kernel = info["kernel"]
    lines = [
        f"{info['distribution']} {info['uringloop_version']} (import uringloop) "
        f"on Python {info['python']}",
        f"kernel:              Linux {kernel['release']} {kernel['machine']} ({kernel['version']})",
        f"liburing (build):    {info['liburing_build_version']}",
    ]
    disabled = info["io_uring_disabled_sysctl"]
    if disabled is not None:
        lines.append(f"io_uring_disabled:   {disabled} (sysctl kernel.io_uring_disabled)")
    backend = info["backend"]
    if info["backend_reason"]:
        backend += f" -- {info['backend_reason']}"
    ring = info["ring"]
    if ring is None:
        lines.append(f"backend:             {backend}")
        return "\n".join(lines) + "\n"
    lines += [
        f"backend:             {backend}",
        f"setup flags granted: {_names_line(ring['setup_flag_names'], ring['setup_flags'])}",
        f"features:            {_names_line(ring['feature_names'], ring['features'])}",
        f"registered ring fd:  {'yes' if ring['registered_ring_fd'] else 'no'}",
        f"opcodes supported by the kernel ({len(ring['opcodes_supported'])}, "
        f"* = used by the loop):",
    ]
    used = set(ring["opcodes_used"])
    for name in ring["opcodes_supported"]:
        lines.append(f"  {'*' if name in used else ' '} {name}")
    lines.append(f"opcodes used by the loop: {' '.join(ring['opcodes_used'])}")
    missing = ring["opcodes_used_but_unsupported"]
    if missing:
        lines.append(f"used but NOT supported by this kernel: {' '.join(missing)}")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m uringloop")
    parser.add_argument("--version", action="version",
                        version=f"{DISTRIBUTION} {__version__}")
    commands = parser.add_subparsers(dest="command")
    info_cmd = commands.add_parser(
        "info", help="kernel, liburing, io_uring features and opcodes, chosen backend")
    info_cmd.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        info = collect()
    except ValueError as exc:     # a bad URINGLOOP_BACKEND
        parser.exit(2, f"python -m uringloop: error: {exc}\n")
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(format_text(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
