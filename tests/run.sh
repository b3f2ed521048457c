#!/usr/bin/env bash
# The test command of the README: set up from a fresh clone, run the whole
# suite, again with the pure-Python loop turn (URINGLOOP_PURE_PYTHON=1),
# then once more against a build with AddressSanitizer.
# Arguments are passed to pytest (both passes).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/bootstrap.sh"

echo "== pytest (normal build)"
.venv/bin/python -m pytest -q "$@"

echo "== pytest (pure-Python loop turn: the reference the C accelerator must match)"
URINGLOOP_PURE_PYTHON=1 .venv/bin/python -m pytest -q "$@"

echo "== pytest (AddressSanitizer build)"
tests/asan.sh "$@"
