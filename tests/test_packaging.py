"""The packaging CI: ``python -m build`` makes the sdist and, from it, the
wheel; the wheel installs into a fresh venv and works there, outside the
source tree (and, being abi3, in venvs of the other supported CPythons
pyenv has here, 3.11 included whichever built it), and types check
against it.

The build runs once per module on a copy of the tracked tree (no build
products of the checkout can leak in), in build's isolated environment
(setuptools and cffi from the index, as for a user).  It is skipped in the
AddressSanitizer pass, whose preloaded runtime would follow the compiler
and pip around: the normal pass runs it.
"""
import glob
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

import uringloop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VERSION = uringloop.__version__
NAME = "uringloop_asyncio"
WHEEL = f"{NAME}-{VERSION}-cp311-abi3-linux_{platform.machine()}.whl"
SDIST = f"{NAME}-{VERSION}.tar.gz"
USER_PROGRAM = os.path.join(REPO, "tests", "typed_user_program.py")

pytestmark = pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="builds a normal wheel: runs in the normal pass, not under ASan")

_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so", "*.o",
    ".mypy_cache", ".pytest_cache", "results", "_uring.c")


def _run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def _clean_env():
    # Nothing from the checkout may reach the installed package.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "URINGLOOP_"))}
    return env


def _other_pythons():
    """The other supported CPythons on this machine (pyenv), by minor
    version: the wheel is tagged cp311-abi3, whichever one built it."""
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = {}
    for exe in sorted(glob.glob(os.path.join(root, "versions", "3.*", "bin", "python3.*"))):
        match = re.fullmatch(r"python3\.(\d+)", os.path.basename(exe))
        if match and 11 <= int(match.group(1)) != sys.version_info.minor:
            found[f"3.{match.group(1)}"] = exe
    return sorted(found.items())


# A thousand loop turns leave None's reference count as they found it.
# Under 3.12's and 3.13's headers Py_RETURN_NONE takes no new reference
# (None is immortal there), so a wheel built on them took one per turn
# from 3.11's None, which aborts the interpreter once it reaches zero.
_NONE_BALANCE = """
import asyncio, sys, uringloop
async def main():
    before = sys.getrefcount(None)
    for _ in range(1000):
        await asyncio.sleep(0)
    return sys.getrefcount(None) - before
print("None balance", uringloop.run(main()))
"""


def _make_venv(python, path, wheel):
    _run([python, "-m", "venv", str(path)])
    venv_python = str(path / "bin" / "python")
    _run([venv_python, "-m", "pip", "install", "-q", str(wheel)], env=_clean_env())
    return venv_python


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    work = tmp_path_factory.mktemp("packaging")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=_NOT_SOURCE)
    out = work / "dist"
    # No --sdist/--wheel: build makes the sdist, then the wheel from it.
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(source)])
    return out


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory):
    """A fresh venv with the wheel installed (and nothing else of ours)."""
    return _make_venv(sys.executable, tmp_path_factory.mktemp("venv"), dist / WHEEL)


def test_build_makes_one_sdist_and_one_abi3_wheel(dist):
    assert sorted(os.listdir(dist)) == sorted([SDIST, WHEEL])


def test_sdist_can_rebuild_the_extension(dist):
    with tarfile.open(dist / SDIST) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    c_sources = {os.path.relpath(p, REPO) for p in glob.glob(os.path.join(REPO, "csrc", "*.[ch]"))}
    assert c_sources and c_sources <= names
    needed = {"build_ffi.py", "setup.py", "pyproject.toml", "LICENSE", "README.md",
              "CHANGELOG.md", "uringloop/__init__.py", "uringloop/__init__.pyi",
              "uringloop/py.typed", "tests/conftest.py", "tests/typed_user_program.py"}
    assert needed <= names, needed - names
    assert not [n for n in names if n.endswith((".so", ".o")) or n == "uringloop/_uring.c"]


def test_wheel_contents_and_metadata(dist):
    with zipfile.ZipFile(dist / WHEEL) as wheel:
        names = set(wheel.namelist())
        info = f"{NAME}-{VERSION}.dist-info"
        metadata = wheel.read(f"{info}/METADATA").decode()
        tags = wheel.read(f"{info}/WHEEL").decode()
    assert {"uringloop/_uring.abi3.so", "uringloop/_speedups.abi3.so", "uringloop/py.typed",
            "uringloop/__init__.pyi",
            "uringloop/__init__.py", "uringloop/__main__.py",
            f"{info}/licenses/LICENSE"} <= names
    # Only the package: no C sources, tests or per-version extension.
    assert all(n.startswith(("uringloop/", info)) for n in names), names
    assert not [n for n in names if re.search(r"cpython-\d+.*\.so$", n)]
    assert f"Tag: cp311-abi3-linux_{platform.machine()}" in tags.splitlines()
    fields = metadata.split("\n\n", 1)[0].splitlines()
    for line in ("Name: uringloop-asyncio", f"Version: {VERSION}", "License-Expression: MIT",
                 "Requires-Python: >=3.11", "Classifier: Development Status :: 3 - Alpha",
                 "Classifier: Typing :: Typed", "Classifier: Operating System :: POSIX :: Linux",
                 "License-File: LICENSE"):
        assert line in fields, line
    assert any(line.startswith("Requires-Dist: cffi") for line in fields)


def test_twine_check_passes(dist):
    _run([sys.executable, "-m", "twine", "check", "--strict", str(dist / SDIST),
          str(dist / WHEEL)])


def test_installed_wheel_runs_outside_the_source_tree(venv, tmp_path):
    env = _clean_env()
    where = _run([venv, "-c", "import uringloop, uringloop._uring as e; "
                  "print(uringloop.__file__); print(e.__file__)"],
                 cwd=tmp_path, env=env).stdout.split()
    site = os.path.dirname(os.path.dirname(venv))
    assert all(p.startswith(site) and "site-packages" in p for p in where), where
    assert where[1].endswith("_uring.abi3.so")
    # The extension links the system liburing rather than carrying one.
    dynamic = _run(["readelf", "-d", where[1]]).stdout
    assert re.search(r"NEEDED.*\[liburing\.so\.2\]", dynamic), dynamic
    shutil.copy(USER_PROGRAM, tmp_path)
    out = _run([venv, "typed_user_program.py"], cwd=tmp_path, env=env).stdout
    assert out.splitlines()[-1] == "ok", out
    assert "run io_uring" in out.splitlines()
    info = _run([venv, "-m", "uringloop", "info"], cwd=tmp_path, env=env).stdout
    assert info.startswith(f"uringloop-asyncio {VERSION} (import uringloop) on Python ")
    assert "backend:             io_uring" in info.splitlines()
    assert "loop turn:           C (uringloop._speedups)" in info.splitlines()
    version = _run([venv, "-m", "uringloop", "--version"], cwd=tmp_path, env=env).stdout
    assert version == f"uringloop-asyncio {VERSION}\n"


def test_mypy_strict_accepts_a_user_program_against_the_installed_wheel(venv, tmp_path):
    # mypy finds uringloop in the venv's site-packages, as a user's does:
    # py.typed and the stub must have been installed.
    shutil.copy(USER_PROGRAM, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--python-executable", venv,
         "--cache-dir", str(tmp_path / "cache"), "typed_user_program.py"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("Success: no issues found in 1 source file")


@pytest.mark.parametrize("version,python", _other_pythons())
def test_the_abi3_wheel_runs_on_the_other_pythons(dist, tmp_path, version, python):
    venv = _make_venv(python, tmp_path / "venv", dist / WHEEL)
    shutil.copy(USER_PROGRAM, tmp_path)
    out = _run([venv, "typed_user_program.py"], cwd=tmp_path, env=_clean_env()).stdout
    assert out.splitlines()[-1] == "ok", out
    if version != "3.11":
        assert "asyncio.run io_uring" in out.splitlines()   # 3.12+: loop_factory=
    balance = _run([venv, "-c", _NONE_BALANCE], cwd=tmp_path, env=_clean_env()).stdout
    assert abs(int(balance.split()[-1])) < 100, balance
    info = _run([venv, "-m", "uringloop", "info"], cwd=tmp_path, env=_clean_env()).stdout
    assert f" on Python {version}." in info.splitlines()[0]
    assert "loop turn:           C (uringloop._speedups)" in info.splitlines()
