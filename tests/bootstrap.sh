# Sourced by tests/run.sh and bench/run.sh: makes a fresh clone ready to run.
#
# Installs the system liburing headers when missing (Debian/Ubuntu, as root
# or with sudo), creates .venv with the running python3, and builds
# uringloop into it (editable, so the cffi extension lands in the tree).
# Extra pip requirements for the caller come in $URINGLOOP_EXTRAS.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

have_liburing() {
    [ -f /usr/include/liburing.h ] || pkg-config --exists liburing 2>/dev/null
}

if ! have_liburing; then
    if ! command -v apt-get >/dev/null; then
        echo "bootstrap: liburing headers missing and no apt-get; install liburing-dev" >&2
        exit 1
    fi
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    echo "bootstrap: installing liburing-dev with apt-get"
    $sudo_cmd apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q liburing-dev pkg-config
fi

python_cmd=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python_cmd" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q -e ".[test]" ${URINGLOOP_EXTRAS:-}
