#!/usr/bin/env bash
# The main job of the README: from a fresh clone, set everything up and run
# the side-by-side echo benchmark (asyncio, uvloop, uringloop, C io_uring).
#
#   bash bench/run.sh            short matrix, about 2 minutes
#   bash bench/run.sh --full     full matrix, about 20 minutes
#   bash bench/run.sh --publish  also refresh bench/echo.png and README.md's table
#
# tests/bootstrap.sh installs the Debian packages (liburing-dev, strace,
# and here also the benchmark's taskset and gcc), creates .venv and builds
# uringloop; uvloop and matplotlib come in through $URINGLOOP_EXTRAS.  Then
# bench/bench.py compiles the C client and server and writes bench/results/.
set -euo pipefail
export URINGLOOP_EXTRAS="${URINGLOOP_EXTRAS:-} uvloop matplotlib"
export URINGLOOP_APT="${URINGLOOP_APT:-} util-linux gcc"
source "$(dirname "${BASH_SOURCE[0]}")/../tests/bootstrap.sh"

if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs 2 CPUs (server on core 0, client on core 1); this machine has $(nproc)" >&2
    exit 1
fi

.venv/bin/python bench/bench.py "$@"
