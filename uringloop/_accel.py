"""Which implementation of the hot loop runs: the C accelerator
``uringloop._speedups`` (csrc/speedups.c), or the pure-Python reference
with ``URINGLOOP_PURE_PYTHON=1`` or when the extension cannot be loaded.

``speedups`` is the extension module or None; ``description`` says which
and why, for ``python -m uringloop info``.  Read once, at import: users of
the C paths (``_turn``, ``_scheduling``, ``_ring``, ``_stream``) look here.
"""
import os


def _load():
    if os.environ.get("URINGLOOP_PURE_PYTHON", "0") == "1":
        return None, "pure Python (URINGLOOP_PURE_PYTHON=1)"
    try:
        from . import _speedups
    except ImportError as exc:
        return None, f"pure Python (uringloop._speedups cannot be loaded: {exc})"
    return _speedups, "C (uringloop._speedups)"


speedups, description = _load()


def subclass_in_c(reference, factory, *args):
    """The class to derive from in place of ``reference``: its C subclass,
    ``_speedups.<factory>(reference, *args)``, whose methods take their
    plain cases in C and hand the rest to ``reference``; ``reference``
    itself without the accelerator."""
    if speedups is None:
        return reference
    return getattr(speedups, factory)(reference, *args)
