#!/usr/bin/env bash
# The main job of the README: from a fresh clone, set everything up and run
# the side-by-side echo benchmark (asyncio, uvloop, uringloop, C io_uring).
#
#   bash bench/run.sh            short matrix, about 2 minutes
#   bash bench/run.sh --full     full matrix, about 20 minutes
#   bash bench/run.sh --publish  also refresh bench/echo.png and README.md's table
#
# tests/bootstrap.sh installs liburing-dev, creates .venv and builds
# uringloop; uvloop and matplotlib come in through $URINGLOOP_EXTRAS.  This
# script adds the tools the benchmark runs (strace, taskset, gcc) with apt
# when missing, then hands over to bench/bench.py, which compiles the C
# client and server and writes bench/results/.
set -euo pipefail
export URINGLOOP_EXTRAS="${URINGLOOP_EXTRAS:-} uvloop matplotlib"
source "$(dirname "${BASH_SOURCE[0]}")/../tests/bootstrap.sh"

missing=()
command -v strace >/dev/null || missing+=(strace)
command -v taskset >/dev/null || missing+=(util-linux)
command -v gcc >/dev/null || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "bench: installing ${missing[*]} with apt-get"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi
if [ "$(nproc)" -lt 2 ]; then
    echo "bench: needs 2 CPUs (server on core 0, client on core 1); this machine has $(nproc)" >&2
    exit 1
fi

.venv/bin/python bench/bench.py "$@"
