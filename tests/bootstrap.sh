# Sourced by tests/run.sh and bench/run.sh: makes a fresh clone ready to run.
#
# Chooses the Python: $PYTHON when set (an existing .venv made with another
# interpreter is recreated), else the one .venv was made with, else
# python3; it says which.  Installs missing Debian packages (as root or
# with sudo): the liburing headers and pkg-config to find them, a C
# compiler, strace for the tests that prove the data goes through io_uring,
# and -- for Debian's own Python, which ships CPython's test suite
# separately -- the headers and libpython3.X-testsuite, because
# tests/conformance runs test.test_asyncio.  A Python without that package
# stops here with the reason rather than running a suite that tests less.
# Then creates .venv and builds uringloop into it (editable, so the cffi
# extension lands in the tree).  Extra pip requirements come in
# $URINGLOOP_EXTRAS, extra Debian packages in $URINGLOOP_APT.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

python_cmd=${PYTHON:-}
if [ -z "$python_cmd" ] && [ -x .venv/bin/python ]; then
    python_cmd=$(readlink -f .venv/bin/python)
fi
python_cmd=${python_cmd:-python3}
python_real=$("$python_cmd" -c 'import os, sys; print(os.path.realpath(sys.executable))')
python_version=$("$python_real" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Debian packages the build and the tests need.
missing=()
[ -f /usr/include/liburing.h ] || missing+=(liburing-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v gcc >/dev/null || missing+=(gcc)
command -v strace >/dev/null || missing+=(strace)
for tool in ${URINGLOOP_APT:-}; do
    dpkg -s "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
debian_python=no
if command -v dpkg >/dev/null && dpkg -S "$python_real" >/dev/null 2>&1; then
    debian_python=yes
    "$python_real" -c 'import test.test_asyncio' 2>/dev/null ||
        missing+=("libpython$python_version-testsuite")
    "$python_real" -c 'import os, sysconfig
raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
        missing+=("python$python_version-dev")
    "$python_real" -c 'import ensurepip' 2>/dev/null || missing+=("python$python_version-venv")
fi

if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "bootstrap: missing ${missing[*]} and no apt-get to install them" >&2
        exit 1
    fi
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "bootstrap: installing ${missing[*]} with apt-get"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi

if ! "$python_real" -c 'import test.test_asyncio' 2>/dev/null; then
    echo "bootstrap: $python_real has no test.test_asyncio (CPython's own asyncio" \
         "tests, which tests/conformance runs): use a Python that ships its test" \
         "suite (pyenv builds do; Debian's needs libpython$python_version-testsuite)" >&2
    exit 1
fi

if [ -x .venv/bin/python ] && [ "$(readlink -f .venv/bin/python)" != "$python_real" ]; then
    echo "bootstrap: .venv was made with $(readlink -f .venv/bin/python); recreating it"
    rm -rf .venv
fi
if [ ! -x .venv/bin/python ]; then
    "$python_real" -m venv .venv
fi
echo "bootstrap: Python $("$python_real" -c 'import platform; print(platform.python_version())')" \
     "($python_real, Debian's own: $debian_python) in .venv"

# A per-version build (``python build_ffi.py``) would be imported before
# the abi3 one the editable install makes: the tests must see this build.
rm -f uringloop/_uring.cpython-*.so
.venv/bin/python -m pip install -q --upgrade pip
# Before it had a name of its own this project installed as "uringloop",
# the index name of another project with the same import name: a .venv
# from then (or with that project) must not keep it beside this one.
if .venv/bin/python -m pip show -q uringloop >/dev/null 2>&1; then
    .venv/bin/python -m pip uninstall -q -y uringloop
fi
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q -e ".[test]" ${URINGLOOP_EXTRAS:-}
