# cffi hooks into setuptools through setup(); all metadata is in pyproject.toml.
# The extension uses only the limited C API (cffi defines Py_LIMITED_API and
# names it _uring.abi3.so), so one cp311-abi3 wheel serves 3.11 and later.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"],
      options={"bdist_wheel": {"py_limited_api": "cp311"}})
