#!/usr/bin/env bash
# The main job of the README: set up from a fresh clone and run the demo.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../tests/bootstrap.sh"
.venv/bin/python bench/echo_demo.py "$@"
