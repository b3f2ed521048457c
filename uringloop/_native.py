"""What every module needs around the C layer, defined once.

* :func:`os_error` turns a negative result (of a C call, a completion or
  an executor job) into the OSError ``os`` would raise: ``OSError`` picks
  the subclass from the errno (``ConnectionResetError`` for ECONNRESET...).
* ``new_uncleared`` is ``ffi.new`` without zeroing, for buffers the
  kernel fills (zeroing a 256 KiB buffer costs page faults for nothing).
* ``MAX_IO_LEN`` is the most one socket or file request moves; callers
  loop over the rest.  It is csrc/uring.h's ``UL_MAX_IO_LEN`` (C caps
  every socket operation there; tests/test_ring.py checks the two agree).

This module loads without the C extension (the stand-in ``ffi`` of
_extension.py allocates and copies, and the file API's executor engine
uses all three).  Kernel constants that only the ring needs come from the
system headers through the cdef (``lib.IORING_*``, ``lib.AT_*``; see
build_ffi.py) where the ring modules use them.
"""
import os

from ._uring import ffi

MAX_IO_LEN = 1 << 30

new_uncleared = ffi.new_allocator(should_clear_after_alloc=False)


def os_error(res, filename=None, filename2=None):
    """The OSError (subclass chosen by errno) for the negative result ``res``."""
    code = -res
    if filename2 is not None:
        return OSError(code, os.strerror(code), filename, None, filename2)
    if filename is not None:
        return OSError(code, os.strerror(code), filename)
    return OSError(code, os.strerror(code))
