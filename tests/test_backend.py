"""Backend choice under a real seccomp sandbox.

Each case runs a fresh interpreter that first installs a classic-BPF
seccomp filter (built here with ctypes: no libseccomp needed) denying or
killing on chosen io_uring syscalls, then imports uringloop, asks for a
loop and runs a TCP echo round trip on it.  The child reports what it saw
as one JSON line on stdout; stderr carries whatever warnings it printed.
That is the only honest test of the fallback: a mock cannot show that no
io_uring syscall is made, a filter that kills the process can.
"""
import json
import os
import platform
import signal
import subprocess
import sys
import textwrap

import pytest

import uringloop
from uringloop import _backend

NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_IO_URING_REGISTER = 427
RET_ERRNO_EPERM = 0x00050000 | 1
RET_KILL_PROCESS = 0x80000000

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

x86_64_only = pytest.mark.skipif(
    platform.machine() != "x86_64",
    reason="the filter uses x86_64 syscall numbers and AUDIT_ARCH_X86_64")

# Runs in the child before anything else.  RULES maps syscall number ->
# seccomp action; every other syscall is allowed.  A foreign architecture
# is killed outright, so a mismatch can never pass as "allowed".
_SANDBOX = """
import ctypes, struct

def _install_seccomp(rules):
    LD_W_ABS, JEQ_K, RET_K = 0x20, 0x15, 0x06
    AUDIT_ARCH_X86_64 = 0xC000003E
    code = []
    def op(c, k, jt=0, jf=0):
        code.append(struct.pack("=HBBI", c, jt, jf, k))
    op(LD_W_ABS, 4)                              # seccomp_data.arch
    op(JEQ_K, AUDIT_ARCH_X86_64, 1, 0)
    op(RET_K, 0x80000000)                        # kill on a foreign arch
    op(LD_W_ABS, 0)                              # seccomp_data.nr
    for nr, action in rules.items():
        op(JEQ_K, nr, 0, 1)
        op(RET_K, action)
    op(RET_K, 0x7FFF0000)                        # allow the rest
    blob = ctypes.create_string_buffer(b"".join(code))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(code), ctypes.cast(blob, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_SECCOMP")

_install_seccomp(RULES)
"""

_ECHO = """
import asyncio, json, os, sys
import uringloop

def ring_fds():
    # A failed probe must not leave its ring open behind the fallback.
    found = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            found += "io_uring" in os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:   # the listing's own fd
            pass
    return found

async def echo_round_trip():
    async def handle(reader, writer):
        writer.write(await reader.readexactly(5))
        await writer.drain()
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"hello")
    reply = await reader.readexactly(5)
    writer.close()
    server.close()
    await server.wait_closed()
    return reply.decode()

report = {}
try:
    loop = uringloop.new_event_loop()
except Exception as exc:
    report["error"] = [type(exc).__name__, str(exc)]
else:
    report["backend"] = loop.backend
    report["echo"] = loop.run_until_complete(echo_round_trip())
    loop.close()
report["ring_fds"] = ring_fds()
print(json.dumps(report))
"""


def run_child(rules, backend=None, body=_ECHO, parse_report=True):
    env = dict(os.environ)
    env.pop(_backend._ENV, None)
    if backend is not None:
        env[_backend._ENV] = backend
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    script = f"RULES = {rules!r}\n" + textwrap.dedent(_SANDBOX) + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    report = None
    if proc.returncode == 0 and parse_report:
        report = json.loads(proc.stdout.strip().splitlines()[-1])
    return proc, report


def fallback_lines(stderr):
    # Python 3.13 also echoes the warned-about source line for ``-c``.
    return [line for line in stderr.splitlines() if "io_uring is unavailable" in line]


@x86_64_only
def test_setup_denied_falls_back_with_one_warning():
    proc, report = run_child({NR_IO_URING_SETUP: RET_ERRNO_EPERM})
    assert proc.returncode == 0, proc.stderr
    assert report == {"backend": "selector", "echo": "hello", "ring_fds": 0}
    lines = fallback_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    assert "RuntimeWarning" in lines[0]
    assert "selector backend" in lines[0]
    assert "Operation not permitted" in lines[0]


@x86_64_only
def test_setup_denied_with_uring_forced_raises():
    proc, report = run_child({NR_IO_URING_SETUP: RET_ERRNO_EPERM}, backend="uring")
    assert proc.returncode == 0, proc.stderr
    name, message = report["error"]
    assert name == "BackendUnavailableError"
    assert "URINGLOOP_BACKEND=uring" in message
    assert "io_uring_setup" in message and "Operation not permitted" in message
    assert fallback_lines(proc.stderr) == []


@x86_64_only
def test_enter_denied_falls_back():
    # Setup (and register) succeed; only the no-op round trip can tell.
    proc, report = run_child({NR_IO_URING_ENTER: RET_ERRNO_EPERM})
    assert proc.returncode == 0, proc.stderr
    assert report == {"backend": "selector", "echo": "hello", "ring_fds": 0}
    lines = fallback_lines(proc.stderr)
    assert len(lines) == 1 and "selector backend" in lines[0], proc.stderr
    assert "io_uring_enter failed: Operation not permitted" in lines[0]


_KILL_ALL = {NR_IO_URING_SETUP: RET_KILL_PROCESS,
             NR_IO_URING_ENTER: RET_KILL_PROCESS,
             NR_IO_URING_REGISTER: RET_KILL_PROCESS}


@x86_64_only
def test_kill_filter_really_kills_the_probe():
    # Without this the next test could pass with a filter that does nothing.
    proc, _ = run_child(_KILL_ALL)
    assert proc.returncode == -signal.SIGSYS, (proc.returncode, proc.stderr)


@x86_64_only
def test_selector_backend_makes_no_io_uring_syscall():
    proc, report = run_child(_KILL_ALL, backend="selector")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert report == {"backend": "selector", "echo": "hello", "ring_fds": 0}
    assert fallback_lines(proc.stderr) == []


@x86_64_only
def test_fallback_warning_is_given_once_per_process():
    body = _ECHO + textwrap.dedent("""
        for _ in range(3):
            uringloop.new_event_loop().close()
    """)
    proc, report = run_child({NR_IO_URING_SETUP: RET_ERRNO_EPERM}, body=body)
    assert proc.returncode == 0, proc.stderr
    assert len(fallback_lines(proc.stderr)) == 1, proc.stderr


@pytest.mark.parametrize("value", ["bogus", "io_uring", "epoll"])
def test_invalid_backend_value_raises_value_error(monkeypatch, value):
    monkeypatch.setenv("URINGLOOP_BACKEND", value)
    with pytest.raises(ValueError, match="URINGLOOP_BACKEND") as info:
        uringloop.new_event_loop()
    assert "auto, uring, selector" in str(info.value)


@pytest.mark.parametrize("value,backend", [
    ("selector", "selector"), (" Selector ", "selector"),
    ("uring", "io_uring"), ("auto", "io_uring"), ("", "io_uring"),
])
def test_backend_values_in_process(monkeypatch, value, backend):
    # This machine runs io_uring, so auto picks it.
    monkeypatch.setenv("URINGLOOP_BACKEND", value)
    loop = uringloop.new_event_loop()
    try:
        assert loop.backend == backend
        assert loop.run_until_complete(_answer()) == 42
    finally:
        loop.close()


async def _answer():
    return 42
