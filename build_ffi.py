"""Build the cffi extension ``uringloop._uring`` (out-of-line API mode).

``csrc/uring.h`` is both the C header and the cdef: whatever it declares is
the entire surface Python can call.  Besides it the cdef names the system
types it uses and the kernel and libc constants Python needs
(``KERNEL_CONSTANTS``), whose values cffi takes from the system headers
at build time: Python copies none by hand.  The extension links the system
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

# Pasted by cffi after its own #include <Python.h>, before the wrappers.
# cffi releases and retakes the GIL around every C call; here every call but
# ul_ring_turn only fills an SQE or copies a few bytes (no wait), and the
# GIL handoff would cost as much as the call.  So ul_ring_turn, the one call
# that can block, releases the GIL itself, and the wrappers' release macros
# become plain blocks.  (Should cffi stop using those macros, calls simply
# release the GIL again: slower, never wrong.)
PRELUDE = """
#include <stdint.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include "compat.h"
#include "uring.h"

static int ul_ring_turn_releasing_gil(struct ul_ring *ring, long long timeout_ns,
                                      struct ul_completion *out, unsigned max,
                                      unsigned *inline_count)
{
    int ret;
    Py_BEGIN_ALLOW_THREADS
    ret = (ul_ring_turn)(ring, timeout_ns, out, max, inline_count);
    Py_END_ALLOW_THREADS
    return ret;
}
#define ul_ring_turn(...) ul_ring_turn_releasing_gil(__VA_ARGS__)
#undef Py_BEGIN_ALLOW_THREADS
#define Py_BEGIN_ALLOW_THREADS {
#undef Py_END_ALLOW_THREADS
#define Py_END_ALLOW_THREADS }
"""


# io_uring's (from liburing's headers, through compat.h) and <fcntl.h>'s.
KERNEL_CONSTANTS = (
    "IORING_CQE_F_MORE", "IORING_CQE_F_BUFFER", "IORING_CQE_BUFFER_SHIFT",
    "UL_IORING_OP_FTRUNCATE", "IORING_OP_SEND_ZC",
    "IORING_SETUP_SQPOLL", "IORING_SETUP_R_DISABLED", "IORING_SETUP_SUBMIT_ALL", "IORING_SETUP_COOP_TASKRUN",
    "IORING_SETUP_TASKRUN_FLAG", "IORING_SETUP_SINGLE_ISSUER", "IORING_SETUP_DEFER_TASKRUN",
    "AT_FDCWD", "AT_SYMLINK_NOFOLLOW", "AT_REMOVEDIR", "AT_EMPTY_PATH",
)


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
    """ + "".join(f"#define {name} ...\n" for name in KERNEL_CONSTANTS) + cdef)
    version = _pkg_config("--modversion") or "unknown"
    cflags = ["-Wall", "-Wextra", "-Werror", "-O2",
              f'-DUL_LIBURING_VERSION="{version}"']
    cflags += shlex.split(_pkg_config("--cflags") or "")
    cflags += shlex.split(os.environ.get("URINGLOOP_CFLAGS", ""))
    ldflags = shlex.split(os.environ.get("URINGLOOP_LDFLAGS", ""))
    ffi.set_source(
        "uringloop._uring",
        PRELUDE,
        sources=[str((CSRC / name).relative_to(HERE)) for name in ("uring.c", "files.c", "sendq.c", "fixed.c", "resubmit.c")],
        include_dirs=[str(CSRC.relative_to(HERE))],
        libraries=["uring"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
    )
    return ffi


ffibuilder = _make_ffi()

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
