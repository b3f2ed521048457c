#!/usr/bin/env bash
# The main job of the README: from a fresh clone, set everything up and run
# the side-by-side benchmarks (asyncio, uvloop, uringloop): echo (with a C
# io_uring server as the ceiling), HTTP, loop.sendfile, and async files
# (uringloop vs aiofiles vs the executor).
#
#   bash bench/run.sh            short matrix, a couple of minutes
#   bash bench/run.sh --full     full matrix, about 25 minutes
#   bash bench/run.sh --publish  also refresh the charts in bench/ and README.md's tables
#   bash bench/run.sh --only instructions   instructions per request under callgrind
#                                (not in the default run; about 12 minutes)
#
# tests/bootstrap.sh installs the Debian packages (liburing-dev, strace,
# and here also the benchmark's taskset, gcc, wrk and valgrind), creates .venv and
# builds uringloop; uvloop, matplotlib, httptools, uvicorn and aiofiles come
# in through $URINGLOOP_EXTRAS.  Then bench/bench.py compiles the C client
# and server, runs every part and writes bench/results/.
set -euo pipefail
export URINGLOOP_EXTRAS="${URINGLOOP_EXTRAS:-} uvloop matplotlib httptools uvicorn aiofiles"
export URINGLOOP_APT="${URINGLOOP_APT:-} util-linux gcc wrk valgrind"
source "$(dirname "${BASH_SOURCE[0]}")/../tests/bootstrap.sh"

if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs 2 CPUs (server on core 0, client on core 1); this machine has $(nproc)" >&2
    exit 1
fi

.venv/bin/python bench/bench.py "$@"
