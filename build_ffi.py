"""Build the cffi extension ``uringloop._uring`` (out-of-line API mode).

``csrc/uring.h`` is both the C header and the cdef: whatever it declares is
the entire surface Python can call.  The extension links the system
liburing (found with pkg-config when available) and is compiled with
warnings as errors.  Extra flags come from ``URINGLOOP_CFLAGS`` /
``URINGLOOP_LDFLAGS`` (the AddressSanitizer test pass uses them).
"""
import os
import pathlib
import shlex
import subprocess

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

PRELUDE = """
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "uring.h"
"""


def _pkg_config(*args):
    try:
        out = subprocess.run(["pkg-config", *args, "liburing"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.strip()


def _make_ffi():
    ffi = FFI()
    cdef = (CSRC / "uring.h").read_text()
    ffi.cdef("""
        typedef int... socklen_t;
        struct msghdr { socklen_t msg_namelen; ...; };
        struct iovec { ...; };
        struct sockaddr_storage { ...; };
    """ + cdef)
    version = _pkg_config("--modversion") or "unknown"
    cflags = ["-Wall", "-Wextra", "-Werror", "-O2",
              f'-DUL_LIBURING_VERSION="{version}"']
    cflags += shlex.split(_pkg_config("--cflags") or "")
    cflags += shlex.split(os.environ.get("URINGLOOP_CFLAGS", ""))
    ldflags = shlex.split(os.environ.get("URINGLOOP_LDFLAGS", ""))
    ffi.set_source(
        "uringloop._uring",
        PRELUDE,
        sources=[str((CSRC / name).relative_to(HERE)) for name in ("uring.c", "files.c", "sendq.c")],
        include_dirs=[str(CSRC.relative_to(HERE))],
        libraries=["uring"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return ffi


ffibuilder = _make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
