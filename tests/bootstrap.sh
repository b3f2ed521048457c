# Sourced by tests/run.sh and bench/run.sh: makes a fresh clone ready to run.
#
# Installs missing Debian packages (as root or with sudo), creates .venv
# with the running python3, and builds
# uringloop into it (editable, so the cffi extension lands in the tree).
# Extra pip requirements for the caller come in $URINGLOOP_EXTRAS.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo_root"

# Debian packages the build and the tests need: the liburing headers (and
# pkg-config to find them), strace for the tests that prove the data goes
# through io_uring.  Extra ones (the benchmark's) come in $URINGLOOP_APT.
missing=()
[ -f /usr/include/liburing.h ] || missing+=(liburing-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v strace >/dev/null || missing+=(strace)
for tool in ${URINGLOOP_APT:-}; do
    dpkg -s "$tool" >/dev/null 2>&1 || missing+=("$tool")
done

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

python_cmd=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python_cmd" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q -e ".[test]" ${URINGLOOP_EXTRAS:-}
