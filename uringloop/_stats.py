"""``loop.ring_stats()``: the ring's counters, kept in C (``struct
ul_ring_stats`` in csrc/uring.c), named for Python, with the ring's
configuration and the loop's optional paths; and ``URINGLOOP_STATS=PATH``,
which appends each loop's stats to PATH (``-``: stderr) as one JSON line
when the loop closes -- or at exit, for a loop never closed -- which is
what ``python -m uringloop stats -- <command>`` reads back.

Cost: the counters are plain increments in C on paths the ring takes
anyway (one per turn, per submit call, per SQE handed over and per CQE
reaped); Python does no work per completion for them.  Reading them
copies one struct.

Data flow: ``Loop.__init__`` calls :func:`track`, ``Loop.close`` calls
:func:`ring_stats` (kept as the loop's final stats) and :func:`closed`.
"""
import atexit
import json
import os
import sys
import weakref

from ._names import FEATURE_NAMES, SETUP_FLAG_NAMES, bit_names, opcode_name
from ._uring import ffi

_ENV = "URINGLOOP_STATS"
# struct ul_ring_stats fields reported as they are.
_COUNTERS = ("turns", "enters", "batches", "cqes", "cqes_to_python", "cqes_cancelled",
             "sqes_resubmitted", "enobufs", "cq_overflow_turns", "cqes_dropped",
             "sqes_dropped")
_ASYNC_CANCEL = 14  # IORING_OP_ASYNC_CANCEL

_tracked = weakref.WeakKeyDictionary()  # loop -> (path, pid) under URINGLOOP_STATS
_atexit_registered = False


def ring_stats(loop):
    """The dict ``loop.ring_stats()`` returns."""
    ring = loop._ring
    counters = ring.counters()
    by_opcode = ffi.unpack(counters.sqes_by_opcode, 256)
    stats = {name: getattr(counters, name) for name in _COUNTERS}
    stats.update({
        "sqes": sum(by_opcode),
        "sqes_by_opcode": {opcode_name(op): n for op, n in enumerate(by_opcode) if n},
        "cqes_in_c": counters.cqes - counters.cqes_to_python,
        "cancels": by_opcode[_ASYNC_CANCEL],
        "ops_in_flight": ring.pending(),
        "buffers": {
            "count": counters.buffer_count,
            "size": counters.buffer_size,
            "circulating": counters.buffers_circulating,
            "in_use": counters.buffers_in_use,
            "high_water": counters.buffers_high_water,
        },
    })
    features = loop._features
    stats["config"] = {
        "sq_entries": ring.sq_entries,
        "cq_entries": ring.cq_entries,
        "setup_flags": bit_names(ring.setup_flags, SETUP_FLAG_NAMES),
        "features": bit_names(ring.features, FEATURE_NAMES),
        "registered_ring_fd": ring.registered_fd,
        "fixed_files": ring.files_usage(),
        "paths": features.report(),
        "knobs": dict(features.environment),
    }
    return stats


def track(loop):
    """Note a new loop if URINGLOOP_STATS asks for its stats."""
    global _atexit_registered
    path = os.environ.get(_ENV)
    if not path:
        return
    _tracked[loop] = (path, os.getpid())
    if not _atexit_registered:
        _atexit_registered = True
        atexit.register(_dump_unclosed)


def closed(loop):
    """The loop is closing: write its stats if it is tracked."""
    entry = _tracked.pop(loop, None)
    if entry is not None:
        _write(entry[0], loop, loop.ring_stats(), closed=True)


def _dump_unclosed():
    for loop, (path, pid) in list(_tracked.items()):
        # A forked child inherits its parent's loops: not its to report.
        if pid == os.getpid() and not loop._ring.closed:
            _write(path, loop, ring_stats(loop), closed=False)
    _tracked.clear()


def _write(path, loop, stats, closed):
    line = json.dumps({"pid": os.getpid(), "loop": id(loop), "closed": closed, **stats})
    if path == "-":
        sys.stderr.write(line + "\n")
        return
    with open(path, "a") as f:
        f.write(line + "\n")
