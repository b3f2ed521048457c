"""Choosing the backend: io_uring when it really works here, else the
selector loop with a warning; never a silent fallback.

``URINGLOOP_BACKEND`` decides: ``auto`` (default) probes the ring with a
real round trip -- ring setup *and* a no-op submitted and reaped, because
some seccomp filters allow ``io_uring_setup`` and deny ``io_uring_enter``
-- and falls back with one ``RuntimeWarning`` (a single message, not a
warning plus a log record: Python prints it on stderr by default and
``logging.captureWarnings`` routes it to logging); ``uring`` raises
instead of falling back; ``selector`` makes no io_uring syscall at all
(some sandboxes kill the process on the first one).  The probe runs once
per process; a C extension that could not be loaded (``_extension``) is
reported as its failure without touching the ring modules.
``SelectorLoop``, the fallback, lives here so that it needs no C.
"""
import asyncio
import os
import warnings

_ENV = "URINGLOOP_BACKEND"
_CHOICES = ("auto", "uring", "selector")

_probe_error = None
_probed = False
_warned = False


class BackendUnavailableError(RuntimeError):
    """``URINGLOOP_BACKEND=uring`` was asked for but io_uring cannot run."""


class SelectorLoop(asyncio.SelectorEventLoop):
    """The fallback when io_uring is unavailable: asyncio's own selector
    loop, labelled so that callers can tell which backend they got."""

    backend = "selector"


def requested_backend():
    value = os.environ.get(_ENV, "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise ValueError(f"{_ENV}={value!r}: expected one of {', '.join(_CHOICES)}")
    return value


def probe_ring():
    """Return None if io_uring works in this process, else the reason."""
    global _probe_error, _probed
    if _probed:
        return _probe_error
    from . import _extension
    try:
        if _extension.error is not None:
            raise ImportError(_extension.reason())
        from ._op import RingCallback
        from ._ring import Ring
        ring = Ring(entries=8)
        try:
            done = []
            ring.submit_nop(RingCallback(lambda res, flags: done.append(res)))
            try:
                ring.run_turn(1.0)
            except OSError as exc:
                raise OSError(exc.errno, f"io_uring_enter failed: {exc.strerror}") from None
            if done != [0]:
                raise OSError(f"no-op round trip through io_uring failed: {done!r}")
        finally:
            ring.close()
    except (OSError, ImportError) as exc:
        _probe_error = exc
    _probed = True
    return _probe_error


def uring_usable():
    """Decide the backend; warns once when falling back."""
    global _warned
    choice = requested_backend()
    if choice == "selector":
        return False
    error = probe_ring()
    if error is None:
        return True
    if choice == "uring":
        raise BackendUnavailableError(
            f"{_ENV}=uring but io_uring is unavailable here: {error}")
    if not _warned:
        _warned = True
        message = (f"uringloop: io_uring is unavailable ({error}); "
                   f"using the selector backend. Set {_ENV}=selector to "
                   f"silence this, or {_ENV}=uring to make it an error.")
        warnings.warn(message, RuntimeWarning, stacklevel=3)
    return False
