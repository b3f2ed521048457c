"""``import uringloop`` where the C extension cannot be loaded.

An installed wheel links ``liburing.so.2``; on a machine without it the
package must still import, ``new_event_loop()`` must warn once and give the
selector loop, ``URINGLOOP_BACKEND=uring`` must raise, and ``python -m
uringloop info`` must say why.  Each case runs a fresh interpreter two ways:
with the extension's import blocked in ``sys.modules`` (anywhere), and with
the real ``liburing.so.2`` hidden behind an empty file in a private mount
namespace, so that the dynamic loader itself fails (needs root, as CI is).
"""
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A None entry makes ``import uringloop._uring`` raise ImportError.
_BLOCK_EXTENSION = "import sys; sys.modules['uringloop._uring'] = None\n"

_USE_EVERYTHING = """
import asyncio, json, os, sys, tempfile, warnings
warnings.simplefilter("always")
with warnings.catch_warnings(record=True) as caught:
    import uringloop
    loops = [uringloop.new_event_loop() for _ in range(3)]

async def files_and_sockets(path):
    await uringloop.write_text(path, "through the executor")
    async with uringloop.open(path, "rb") as f:
        engine = f.engine
        data = await f.read()
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    eof = await reader.read()
    writer.close()
    server.close()
    return engine, data.decode(), eof.decode()

report = {"backends": [loop.backend for loop in loops],
          "warnings": [[w.category.__name__, str(w.message)] for w in caught]}
with tempfile.TemporaryDirectory() as tmp:
    report["io"] = loops[0].run_until_complete(files_and_sockets(os.path.join(tmp, "f")))
for loop in loops:
    loop.close()
try:
    uringloop.Loop()
except Exception as exc:
    report["Loop()"] = [type(exc).__name__, str(exc)]
report["run"] = uringloop.run(asyncio.sleep(0, "ran"))
print(json.dumps(report))
"""

_NEW_LOOP = """
import json, uringloop
try:
    uringloop.new_event_loop()
except Exception as exc:
    print(json.dumps([type(exc).__name__, str(exc)]))
"""

_INFO = """
import runpy, sys
sys.argv = ["uringloop"] + sys.argv[1:]
runpy.run_module("uringloop", run_name="__main__")
"""


def _loaded_liburing():
    """The file the extension's loader mapped for liburing here."""
    import uringloop._uring  # noqa: F401  (maps liburing into this process)
    with open("/proc/self/maps") as maps:
        for line in maps:
            path = line.split()[-1]
            if re.search(r"/liburing\.so", path):
                return os.path.realpath(path)
    raise AssertionError("liburing is not mapped into this process")


def _can_unshare_mounts():
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True,
                              timeout=30).returncode == 0
    except OSError:
        return False


HOW = [
    "blocked-import",
    pytest.param("hidden-liburing", marks=pytest.mark.skipif(
        not _can_unshare_mounts(), reason="needs a private mount namespace (root)")),
]


def run_without_extension(how, body, *args, backend=None):
    env = dict(os.environ)
    env.pop("URINGLOOP_BACKEND", None)
    if backend is not None:
        env["URINGLOOP_BACKEND"] = backend
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    code = textwrap.dedent(body)
    if how == "blocked-import":
        cmd = [sys.executable, "-c", _BLOCK_EXTENSION + code, *args]
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    with tempfile.NamedTemporaryFile() as empty:
        # Inside the namespace the library's path holds an empty file: the
        # loader fails exactly as on a machine without liburing.
        cmd = ["unshare", "--mount", "--propagation", "private",
               "sh", "-c", 'mount --bind "$1" "$2" && shift 2 && exec "$@"', "sh",
               empty.name, _loaded_liburing(), sys.executable, "-c", code, *args]
        return subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=60)


def _reason_seen(how, message):
    assert "uringloop's C extension cannot be loaded" in message, message
    if how == "hidden-liburing":
        assert "liburing.so" in message, message


@pytest.mark.parametrize("how", HOW)
def test_import_works_and_new_event_loop_falls_back_with_one_warning(how):
    proc = run_without_extension(how, _USE_EVERYTHING)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["backends"] == ["selector"] * 3
    [(category, message)] = report["warnings"]
    assert category == "RuntimeWarning"
    assert "using the selector backend" in message
    _reason_seen(how, message)
    assert report["io"] == ["executor", "through the executor", ""]
    name, message = report["Loop()"]
    assert name == "BackendUnavailableError"
    _reason_seen(how, message)
    assert report["run"] == "ran"


@pytest.mark.parametrize("how", HOW)
def test_uring_forced_raises_the_reason(how):
    proc = run_without_extension(how, _NEW_LOOP, backend="uring")
    assert proc.returncode == 0, proc.stderr
    name, message = json.loads(proc.stdout)
    assert name == "BackendUnavailableError"
    assert "URINGLOOP_BACKEND=uring" in message
    _reason_seen(how, message)


@pytest.mark.parametrize("how", HOW)
def test_info_prints_the_reason(how):
    proc = run_without_extension(how, _INFO, "info")
    assert proc.returncode == 0, proc.stderr
    backend = next(l for l in proc.stdout.splitlines() if l.startswith("backend:"))
    assert backend.startswith("backend:             selector -- io_uring unavailable")
    _reason_seen(how, backend)
    liburing = next(l for l in proc.stdout.splitlines() if l.startswith("liburing"))
    assert "unknown" in liburing
    proc = run_without_extension(how, _INFO, "info", "--json", backend="uring")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "none" and info["ring"] is None
    _reason_seen(how, info["backend_reason"])


@pytest.mark.parametrize("how", HOW)
def test_selector_backend_asked_for_gives_no_warning(how):
    proc = run_without_extension(how, _USE_EVERYTHING, backend="selector")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.splitlines()[-1])
    assert report["backends"] == ["selector"] * 3
    assert report["warnings"] == []
