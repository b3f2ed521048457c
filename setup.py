# cffi hooks into setuptools through setup(); all metadata is in pyproject.toml.
# Both extensions use only the limited C API (cffi defines Py_LIMITED_API
# for _uring; build_speedups.py for _speedups), so they are named
# *.abi3.so and one cp311-abi3 wheel serves 3.11 and later.
import os
import sys

from setuptools import setup

# A PEP 517 build does not put the source tree on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from build_speedups import extension  # noqa: E402

setup(cffi_modules=["build_ffi.py:ffibuilder"],
      ext_modules=[extension()],
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
