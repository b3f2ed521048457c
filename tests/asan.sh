#!/usr/bin/env bash
# Runs the test suite against a copy of the tree whose C layer is compiled
# with -fsanitize=address, with the ASan runtime preloaded into the venv's
# python.  Leak checking is off: the interpreter itself keeps memory alive
# at exit by design; what we look for are invalid reads and writes.
set -euo pipefail
repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d /tmp/uringloop-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT

cd "$repo_root"
git ls-files -z --cached --others --exclude-standard | \
    xargs -0 cp --parents -t "$work" 2>/dev/null || cp -r csrc uringloop tests build_ffi.py pyproject.toml "$work"
cd "$work"
rm -f uringloop/_uring*.so uringloop/_speedups*.so
# cffi compiles through setuptools, which a 3.12+ venv lacks unless
# bootstrap put it there (the test extra).
"$repo_root/.venv/bin/python" -c 'import setuptools' 2>/dev/null || {
    echo "asan.sh: no setuptools in .venv: run tests/bootstrap.sh first" >&2; exit 1; }
URINGLOOP_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1" \
URINGLOOP_LDFLAGS="-fsanitize=address" \
    "$repo_root/.venv/bin/python" build_ffi.py >/dev/null
URINGLOOP_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -O1" \
URINGLOOP_LDFLAGS="-fsanitize=address" \
    "$repo_root/.venv/bin/python" build_speedups.py >/dev/null

export LD_PRELOAD=$(gcc -print-file-name=libasan.so)
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1"
export PYTHONPATH="$work"
# The editable install in .venv points at the normal build: make sure the
# sanitized extension is the one imported.
"$repo_root/.venv/bin/python" -c '
import sys, uringloop._uring as ext, uringloop._speedups as speedups
for module in (ext, speedups):
    assert module.__file__.startswith(sys.argv[1]), module.__file__
    print("ASan build:", module.__file__)' "$work"
"$repo_root/.venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
