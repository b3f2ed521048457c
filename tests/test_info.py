"""``python -m uringloop info`` run as users run it: in a subprocess,
checked against what this machine (Linux 6.18) really offers."""
import json
import os
import subprocess
import sys

import pytest

import uringloop
from uringloop import _names as name_tables
from uringloop._ring import OPCODES_USED

from .test_backend import (NR_IO_URING_ENTER, NR_IO_URING_REGISTER,
                           NR_IO_URING_SETUP, RET_ERRNO_EPERM,
                           RET_KILL_PROCESS, run_child, x86_64_only)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_info(*args, backend=None, env=None):
    knobs = env or {}
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("URINGLOOP_") or name == "URINGLOOP_SINGLE_THREAD"}
    env.update(knobs)
    if backend is not None:
        env["URINGLOOP_BACKEND"] = backend
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "uringloop", *args], env=env,
                          capture_output=True, text=True, timeout=60)


def test_text_report():
    proc = run_info("info")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    lines = out.splitlines()
    assert f"Linux {os.uname().release}" in out
    assert "liburing (build):    2." in out
    # The runtime library, not only the headers built against.
    assert any(l.startswith("liburing (runtime):  2.") for l in lines)
    assert any(l.startswith("RLIMIT_MEMLOCK:      ") for l in lines)
    assert "backend:             io_uring" in lines
    assert any(l.startswith("setup flags granted:") and "CQSIZE" in l for l in lines)
    features = next(l for l in lines if l.startswith("features:"))
    assert "NODROP" in features and "FAST_POLL" in features and "EXT_ARG" in features
    # A ring fd is registered only for a SINGLE_ISSUER ring (it is per thread).
    single_issuer = any(l.startswith("setup flags granted:") and "SINGLE_ISSUER" in l
                        for l in lines)
    assert f"registered ring fd:  {'yes' if single_issuer else 'no'}" in lines
    assert "ring entries:        SQ 1024, CQ 4096" in lines
    assert "provided buffers:    512 x 128 KiB" in lines
    # What a fresh loop turned on, from the probe: all of it on 6.18.
    for name in ("multishot_recv", "multishot_accept", "buffer_ring", "ftruncate"):
        assert any(l.split() == [name, "on"] for l in lines), name
    assert any(l.split()[:2] == ["sqpoll", "off:"] for l in lines)
    assert any(l.split()[:2] == ["send_zc", "off:"] and "URINGLOOP_SEND_ZC" in l for l in lines)
    # A summary of the opcodes, not one line each.
    assert any(l.startswith("opcodes:             63 supported by the kernel") for l in lines)
    unused = " ".join(l for l in lines if l.startswith(("unused (", " " * 21)))
    for name in ("TEE", "TIMEOUT", "SENDMSG_ZC", "WAITID", "BIND", "PIPE"):
        assert name in unused.split(), name
    assert "  * RECV" not in lines and len(lines) < 50
    assert "NOT supported" not in out


def test_opcodes_lists_them_all():
    proc = run_info("info", "--opcodes")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Every op the loop uses is supported here and starred.
    for name in ("RECV", "SEND", "RECVMSG", "SENDMSG", "ACCEPT", "POLL_ADD",
                 "FTRUNCATE"):
        assert f"  * {name}" in lines, name
    # Supported but unused ops are listed too, by name, unstarred.
    for name in ("TEE", "TIMEOUT", "SENDMSG_ZC", "WAITID", "BIND", "PIPE"):
        assert f"    {name}" in lines, name


def test_knobs_show_and_shape_the_reported_loop():
    proc = run_info("info", "--json", env={
        "URINGLOOP_DISABLE": "multishot_accept,ftruncate", "URINGLOOP_SQ_ENTRIES": "64",
        "URINGLOOP_BUFFERS": "16x4k"})
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    info["knobs"].pop("URINGLOOP_SINGLE_THREAD", None)  # the suite's own setting
    assert info["knobs"] == {"URINGLOOP_BUFFERS": "16x4k",
                             "URINGLOOP_DISABLE": "multishot_accept,ftruncate",
                             "URINGLOOP_SQ_ENTRIES": "64"}
    ring = info["ring"]
    assert (ring["sq_entries"], ring["cq_entries"]) == (64, 256)
    assert ring["buffers"] == {"count": 16, "size": 4096}
    assert ring["paths"]["multishot_accept"] == "off: URINGLOOP_DISABLE"
    assert ring["paths"]["ftruncate"] == "off: URINGLOOP_DISABLE"
    assert ring["paths"]["multishot_recv"] == "on"
    text = run_info("info", env={"URINGLOOP_SQPOLL": "5"}).stdout
    knobs_line = next(l for l in text.splitlines() if l.startswith("knobs set:"))
    assert "URINGLOOP_SQPOLL=5" in knobs_line.split()
    assert any(l.split() == ["sqpoll", "on"] for l in text.splitlines())


def test_bad_knob_is_a_usage_error():
    proc = run_info("info", env={"URINGLOOP_DISABLE": "nonsense"})
    assert proc.returncode == 2
    assert "URINGLOOP_DISABLE: unknown nonsense" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_json_report():
    proc = run_info("info", "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "io_uring"
    assert info["backend_reason"] is None
    assert info["kernel"]["release"] == os.uname().release
    ring = info["ring"]
    supported = ring["opcodes_supported"]
    assert {"NOP", "RECV", "SEND", "PIPE"} <= set(supported)
    # Named in kernel order, no holes on 6.18 (NOP .. PIPE = 0 .. 62).
    assert supported[:len(name_tables.OPCODE_NAMES)] == list(name_tables.OPCODE_NAMES)
    assert ring["opcodes_used"] == list(OPCODES_USED)
    assert ring["opcodes_used_but_unsupported"] == []
    assert set(ring["opcodes_available_unused"]) == set(supported) - set(OPCODES_USED)
    assert info["liburing_runtime_version"].startswith("2.")
    assert set(info["rlimit_memlock"]) == {"soft", "hard"}
    assert ring["paths"]["multishot_recv"] == "on"
    assert ring["features"] & 0b10  # NODROP
    assert ring["setup_flag_names"] == name_tables.bit_names(ring["setup_flags"],
                                                     name_tables.SETUP_FLAG_NAMES)


def test_selector_requested_probes_nothing():
    proc = run_info("info", "--json", backend="selector")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "selector"
    assert "URINGLOOP_BACKEND=selector" in info["backend_reason"]
    assert info["ring"] is None


def test_bad_backend_value_is_a_usage_error():
    proc = run_info("info", backend="nonsense")
    assert proc.returncode == 2
    assert "URINGLOOP_BACKEND='nonsense'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_command_prints_the_help():
    proc = run_info()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: python -m uringloop")
    assert "info" in proc.stdout and "--version" in proc.stdout


def test_version_names_the_distribution():
    proc = run_info("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"uringloop-asyncio {uringloop.__version__}\n"
    first = run_info("info").stdout.splitlines()[0]
    assert first.startswith(f"uringloop-asyncio {uringloop.__version__} (import uringloop) ")


_INFO_IN_SANDBOX = """
import sys, runpy
sys.argv = ["uringloop", "info"]
runpy.run_module("uringloop", run_name="__main__")
"""


@x86_64_only
def test_info_under_seccomp_reports_the_fallback():
    proc, _ = run_child({NR_IO_URING_SETUP: RET_ERRNO_EPERM}, body=_INFO_IN_SANDBOX,
                        parse_report=False)
    assert proc.returncode == 0, proc.stderr
    backend = next(l for l in proc.stdout.splitlines() if l.startswith("backend:"))
    assert "selector" in backend and "io_uring_setup failed" in backend
    assert "opcodes" not in proc.stdout


@x86_64_only
def test_info_with_selector_survives_a_killing_filter():
    kill = {nr: RET_KILL_PROCESS
            for nr in (NR_IO_URING_SETUP, NR_IO_URING_ENTER, NR_IO_URING_REGISTER)}
    proc, _ = run_child(kill, backend="selector", body=_INFO_IN_SANDBOX,
                        parse_report=False)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "backend:             selector" in proc.stdout


@pytest.mark.parametrize("value,names,expected", [
    (0b1010, ("A", "B", "C", "D"), ["B", "D"]),
    (1 << 40, ("A",), ["bit 40"]),
    (0, ("A",), []),
])
def test_bit_names(value, names, expected):
    assert name_tables.bit_names(value, names) == expected


def test_fixed_files_knob_shows():
    off = run_info("info").stdout.splitlines()
    assert "registered files:    none" in off
    assert any(l.split()[:2] == ["fixed_files", "off:"] for l in off)
    proc = run_info("info", env={"URINGLOOP_FIXED_FILES": "1"})
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(l.split() == ["fixed_files", "on"] for l in lines)
    slots = next(l for l in lines if l.startswith("registered files:")).split()
    assert int(slots[2]) > 0 and slots[3] == "slots"
    assert "URINGLOOP_FIXED_FILES=1" in next(l for l in lines if l.startswith("knobs set:"))


def test_opcodes_used_lists_every_op_the_c_layer_prepares():
    # Scans the C sources so a new operation cannot be left out of "info".
    import glob
    import re
    aliases = {"CANCEL64": "ASYNC_CANCEL", "RECV_MULTISHOT": "RECV",
               "MULTISHOT_ACCEPT": "ACCEPT"}
    prepared = set()
    for path in glob.glob(os.path.join(REPO, "csrc", "*.c")):
        with open(path) as f:
            text = f.read()
            for name in re.findall(r"io_uring_prep_(\w+)\(", text):
                if name != "rw":  # the generic helper: its opcode is named below
                    prepared.add(aliases.get(name.upper(), name.upper()))
            # Ops newer than liburing 2.3's helpers: SQEs filled by hand.
            prepared.update(re.findall(r"io_uring_prep_rw\(UL_IORING_OP_(\w+),", text))
    assert prepared, "no C sources found"
    assert prepared == set(OPCODES_USED)


def test_opcode_table_matches_kernel_numbering():
    # Spot checks against include/uapi/linux/io_uring.h.
    assert name_tables.OPCODE_NAMES.index("RECV") == 27
    assert name_tables.OPCODE_NAMES.index("SEND_ZC") == 47
    assert name_tables.OPCODE_NAMES.index("PIPE") == 62
    assert name_tables.opcode_name(200) == "op 200"
    assert set(OPCODES_USED) <= set(name_tables.OPCODE_NAMES)
