"""uringloop: a drop-in asyncio event loop for Linux whose I/O runs on io_uring.

    import uringloop
    uringloop.run(main())
    asyncio.run(main(), loop_factory=uringloop.new_event_loop)   # 3.12+
    asyncio.set_event_loop_policy(uringloop.EventLoopPolicy())

``new_event_loop()`` returns a :class:`Loop` on io_uring, or -- when io_uring
cannot run here -- a :class:`SelectorLoop` after one warning; see
``_backend`` for the ``URINGLOOP_BACKEND`` switch.  ``loop.backend`` says
which one you got.  Importing never fails for want of liburing: without
the C extension (``_extension``) the fallback is all there is.
"""
import asyncio

from . import _extension
from ._backend import BackendUnavailableError, SelectorLoop

if _extension.load() is None:
    from .loop import Loop
else:
    Loop = _extension.UnavailableLoop
# Async file I/O (on the ring under a Loop, in the executor elsewhere).
# ``open`` is left out of __all__ so that a star import cannot shadow the
# built-in.
from .files._binary import AsyncFile, open
from .files._paths import (makedirs, mkdir, read_bytes, read_text, remove, rename, rmdir,
                           stat, write_bytes, write_text)
from .files._text import AsyncTextFile

__all__ = ["Loop", "SelectorLoop", "new_event_loop", "run", "install",
           "EventLoopPolicy", "BackendUnavailableError",
           "AsyncFile", "AsyncTextFile", "stat", "remove", "rmdir", "rename", "mkdir",
           "makedirs", "read_bytes", "write_bytes", "read_text", "write_text"]
__version__ = "0.1.0"


def new_event_loop():
    """A new event loop on the best backend this process can use."""
    from ._backend import uring_usable
    return Loop() if uring_usable() else SelectorLoop()


def _policy_class():
    # Python 3.14 deprecates the policy classes: asyncio warns when its
    # DefaultEventLoopPolicy is looked up, so the subclass is made on first
    # use of uringloop.EventLoopPolicy and importing uringloop stays silent.
    cls = globals().get("EventLoopPolicy")
    if cls is None:
        class EventLoopPolicy(asyncio.DefaultEventLoopPolicy):
            """An event loop policy whose loops come from :func:`new_event_loop`."""

            def _loop_factory(self):
                return new_event_loop()

        EventLoopPolicy.__module__ = __name__
        EventLoopPolicy.__qualname__ = "EventLoopPolicy"
        globals()["EventLoopPolicy"] = cls = EventLoopPolicy
    return cls


def __getattr__(name):
    if name == "EventLoopPolicy":
        return _policy_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def install():
    """Make uringloop the loop of ``asyncio.run`` and ``asyncio.new_event_loop``
    (through an event loop policy, which Python 3.14 deprecates)."""
    asyncio.set_event_loop_policy(_policy_class()())


def run(main, *, debug=None):
    """Run a coroutine on a new uringloop loop, like ``asyncio.run``."""
    if asyncio._get_running_loop() is not None:
        # asyncio.run()'s check and message; the coroutine will never run,
        # so close it rather than leave a "never awaited" warning behind.
        if asyncio.iscoroutine(main):
            main.close()
        raise RuntimeError("asyncio.run() cannot be called from a running event loop")
    with asyncio.Runner(debug=debug, loop_factory=_new_run_loop) as runner:
        return runner.run(main)


def _new_run_loop():
    """run()'s loop: no other thread can run it (it runs until run()
    returns, then closes), so its ring may be SINGLE_ISSUER + DEFER_TASKRUN
    (see _ring.loop_setup_flags) unless URINGLOOP_SINGLE_THREAD says."""
    from ._backend import uring_usable
    return Loop(_single_thread=True) if uring_usable() else SelectorLoop()
