"""Loading the C extension ``uringloop._uring``, or standing in for it.

The extension links ``liburing.so.2``.  Where that library (or the
extension itself) cannot be loaded -- a container without liburing, a
source tree never built -- ``import uringloop`` must still work, because
the selector backend and the file API's executor engine need nothing from
C.  ``load()`` imports the extension once, at package import.  On failure
it records why (``error``) and registers a stand-in module under the
extension's name: its ``ffi`` is a plain ``cffi.FFI()``, enough for the
byte buffers the executor paths allocate and copy, and its ``lib`` raises
``ImportError`` with the original reason on any use.  Nothing imports the
ring modules then: ``_backend`` reports ``error`` as the reason io_uring
is unavailable, and ``uringloop.Loop`` is :class:`UnavailableLoop`.
"""
import asyncio
import importlib
import sys
import types

import cffi

from ._backend import BackendUnavailableError

NAME = __name__.rpartition(".")[0] + "._uring"

error = None    # why the extension could not be loaded; None once loaded


class _UnloadableLib:
    def __init__(self, reason):
        self._reason = reason

    def __getattr__(self, name):
        raise ImportError(self._reason)


class UnavailableLoop(asyncio.SelectorEventLoop):
    """``uringloop.Loop`` when the C extension cannot be loaded: making one
    raises :class:`BackendUnavailableError` with the reason, as
    ``URINGLOOP_BACKEND=uring`` does; ``new_event_loop()`` falls back."""

    backend = "io_uring"

    def __new__(cls, *args, **kwargs):
        raise BackendUnavailableError(f"uringloop.Loop needs io_uring; {reason()}")


def reason():
    return f"uringloop's C extension cannot be loaded: {error}"


def load():
    """Import the extension; return None, or the ImportError it raised."""
    global error
    try:
        importlib.import_module(NAME)
    except ImportError as exc:
        error = exc
        stand_in = types.ModuleType(NAME, f"Stand-in for {NAME}, which cannot be loaded.")
        stand_in.ffi = cffi.FFI()
        stand_in.lib = _UnloadableLib(reason())
        sys.modules[NAME] = stand_in
    return error
