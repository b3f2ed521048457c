"""The public API as users meet it: the stub that types it agrees with
the runtime, and importing it stays silent where Python 3.14 deprecates
event loop policies."""
import asyncio
import os
import subprocess
import sys
import textwrap

import pytest

import uringloop
from uringloop import _accel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_stub_matches_the_runtime(tmp_path):
    pytest.importorskip("mypy", reason="mypy comes with the test extra (tests/bootstrap.sh)")
    config = tmp_path / "mypy.ini"
    # The implementation modules are untyped: only the stub is checked.
    config.write_text(f"[mypy]\ncache_dir = {tmp_path / 'cache'}\n"
                      f"[mypy-uringloop.*]\nignore_errors = True\nfollow_imports = skip\n")
    allowlist = tmp_path / "allowlist.txt"
    with open(os.path.join(REPO, "tests", "stubtest_allowlist.txt")) as f:
        entries = f.read()
    if _accel.speedups is not None:
        # The name is then the reference's C subclass, which owns the
        # handle's slots as fields (a disjoint base at runtime).
        entries += "uringloop._scheduling.Handle\n"
    allowlist.write_text(entries)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(config),
         "--allowlist", str(allowlist), "uringloop"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_exported_name_exists_and_is_typed():
    with open(os.path.join(os.path.dirname(uringloop.__file__), "__init__.pyi")) as f:
        stub = f.read()
    for name in [*uringloop.__all__, "open", "__version__"]:
        assert hasattr(uringloop, name), name
        assert (f"def {name}(" in stub or f"class {name}(" in stub
                or f"class {name}:" in stub or f"{name}:" in stub), name


# asyncio as Python 3.14 has it: looking up DefaultEventLoopPolicy warns.
_ASYNCIO_3_14 = """
import asyncio, warnings
_policy = asyncio.DefaultEventLoopPolicy
del asyncio.DefaultEventLoopPolicy

def __getattr__(name):
    if name == "DefaultEventLoopPolicy":
        warnings.warn("'asyncio.DefaultEventLoopPolicy' is deprecated and slated "
                      "for removal in Python 3.16", DeprecationWarning, stacklevel=2)
        return _policy
    raise AttributeError(name)

asyncio.__getattr__ = __getattr__
"""


def test_import_and_run_do_not_touch_the_deprecated_policy_api():
    body = textwrap.dedent("""
        import warnings
        warnings.simplefilter("error", DeprecationWarning)
        import asyncio, uringloop

        async def main():
            return type(asyncio.get_running_loop()).__name__

        assert uringloop.run(main()) == "Loop"
        with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
            assert runner.run(main()) == "Loop"
        loop = uringloop.new_event_loop()
        loop.close()
        try:
            uringloop.EventLoopPolicy
        except DeprecationWarning as exc:
            print("policy:", exc)
    """)
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("URINGLOOP_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", _ASYNCIO_3_14 + body], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("policy: 'asyncio.DefaultEventLoopPolicy' is deprecated")


def test_event_loop_policy_is_one_class():
    assert uringloop.EventLoopPolicy is uringloop.EventLoopPolicy
    assert uringloop.EventLoopPolicy.__module__ == "uringloop"
    assert issubclass(uringloop.EventLoopPolicy, asyncio.DefaultEventLoopPolicy)
    uringloop.install()
    try:
        assert type(asyncio.get_event_loop_policy()) is uringloop.EventLoopPolicy
        loop = asyncio.new_event_loop()
        assert loop.backend == "io_uring"
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)
