"""Build the CPython extension ``uringloop._speedups`` (csrc/speedups.c,
csrc/stream_speedups.c): the loop turn, the timer heap, completion
dispatch and the stream transport's per-message methods in C (see
uringloop/_turn.py and uringloop/_stream.py).

Why a plain extension beside the cffi one: the turn holds and calls Python
objects (handles, the ready deque, the timer heap), which cffi can only
reach through handles and Python-level callbacks, costing what the C is
meant to save.  It uses only the limited C API of 3.11, so setuptools names
it ``_speedups.abi3.so`` and the distribution stays one cp311-abi3 wheel.
Compiled with warnings as errors; extra flags come from
``URINGLOOP_CFLAGS`` / ``URINGLOOP_LDFLAGS``, as for build_ffi.py.

``python build_speedups.py`` builds it into the source tree (tests/asan.sh).
"""
import os
import shlex

from setuptools import Extension

LIMITED_API = "0x030B0000"   # 3.11


def extension():
    return Extension(
        "uringloop._speedups",
        sources=["csrc/speedups.c", "csrc/stream_speedups.c"],
        include_dirs=["csrc"],   # uring.h: ul_ring_turn, called through its address
        define_macros=[("Py_LIMITED_API", LIMITED_API)],
        py_limited_api=True,
        extra_compile_args=["-Wall", "-Wextra", "-Werror", "-O2"]
        + shlex.split(os.environ.get("URINGLOOP_CFLAGS", "")),
        extra_link_args=shlex.split(os.environ.get("URINGLOOP_LDFLAGS", "")),
    )


if __name__ == "__main__":
    from setuptools import setup
    setup(name="uringloop-speedups", ext_modules=[extension()],
          script_args=["build_ext", "--inplace", "--build-temp", "build/speedups"])
