# cffi hooks into setuptools through setup(); all metadata is in pyproject.toml.
from setuptools import setup

setup(cffi_modules=["build_ffi.py:ffibuilder"])
