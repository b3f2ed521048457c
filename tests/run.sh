#!/usr/bin/env bash
# The test command of the README: set up from a fresh clone, run the whole
# suite, again with the pure-Python loop turn (URINGLOOP_PURE_PYTHON=1),
# the socket and file tests with every optional io_uring path off,
# then the whole suite once more against a build with AddressSanitizer.
# Arguments are passed to pytest (the three whole-suite passes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

echo "== pytest (normal build)"
.venv/bin/python -m pytest -q "$@"

echo "== pytest (pure-Python loop turn: the reference the C accelerator must match)"
URINGLOOP_PURE_PYTHON=1 .venv/bin/python -m pytest -q "$@"

# The fallbacks an older kernel gets: every probed path forced off, under
# the socket and file tests (tests/test_kernel_features.py forces each one
# off alone through an echo).
echo "== pytest, URINGLOOP_DISABLE=all (socket and file tests)"
URINGLOOP_DISABLE=all .venv/bin/python -m pytest -q tests/test_sockops.py \
    tests/test_integrity_streams.py tests/test_files.py

echo "== pytest (AddressSanitizer build)"
tests/asan.sh "$@"
