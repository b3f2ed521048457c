"""Optional io_uring paths and the knobs that shape a loop's ring: what the
environment asks for, what this kernel offers, and what a new loop
therefore turns on.

The kernel is probed, never judged by its version string: setup flags by
asking for them (a refused set falls back to the next, see ``Ring``),
opcodes by the ring's opcode probe, the provided-buffer ring by
registering it, and the multishot flags -- which no probe lists, and which
an older kernel may silently ignore -- and the release of an emptied
registered-file slot by a real round trip on a small ring of their own,
once per process (a kernel does not change under a running process).

Knobs, read when a loop is made (a bad value raises ``ValueError`` there):

  URINGLOOP_DISABLE=name,...    turn optional paths off: names of ``PATHS``, or ``all``
  URINGLOOP_SQ_ENTRIES=N        submission queue entries (default 1024)
  URINGLOOP_CQ_ENTRIES=N        completion queue entries (default 4 x SQ)
  URINGLOOP_BUFFERS=COUNTxSIZE  provided receive buffers, e.g. 512x128k (the default)
  URINGLOOP_SINGLE_THREAD=0|1   SINGLE_ISSUER + DEFER_TASKRUN for every loop (1) or none (0);
                                unset, only ``uringloop.run()``'s (``_ring.loop_setup_flags``)
  URINGLOOP_SQPOLL=IDLE_MS      a kernel thread polls the SQ, sleeping after IDLE_MS idle
  URINGLOOP_NAPI=USEC           NAPI busy polling for up to USEC per wait (real NICs only)
  URINGLOOP_FIXED_FILES=1       a registered-file table for stream transports' sockets
  URINGLOOP_SEND_ZC=BYTES       stream writes of BYTES and up go out zero-copy (SEND_ZC)
  URINGLOOP_DEFER_WRITES=1      stream writes wait for the ring's next submission

Data flow: ``Loop.__init__`` calls :func:`read_knobs`, makes its ring with
:meth:`Knobs.ring_arguments`, then :func:`configure` reads back what the
kernel granted, registers what it needs on the ring and returns a
:class:`Features`: the paths that are on, and for every path that is off
the reason.  The loop and the file engine test membership in
``features.on``; ``loop.ring_stats()`` and ``python -m uringloop info``
report :meth:`Features.report`.
"""
import os
import re
import resource
import socket
import time

# The ring module needs the C extension; reading knobs must not (``python
# -m uringloop info`` lists them where the extension cannot load), so the
# functions that touch a ring import it themselves.

# Every optional path a loop takes when the kernel has it: name -> (what it
# is, the kernel that brought it, what the loop does without it).  These
# are the names URINGLOOP_DISABLE takes.
PATHS = {
    "submit_all": ("IORING_SETUP_SUBMIT_ALL", "5.18",
                   "a failing SQE stops the rest of its submission; they go next turn"),
    "coop_taskrun": ("IORING_SETUP_COOP_TASKRUN + TASKRUN_FLAG", "5.19",
                     "completion work may interrupt the loop (an IPI) instead of "
                     "waiting for its next enter"),
    "registered_ring_fd": ("the ring fd registered for its one issuer thread "
                           "(SINGLE_ISSUER rings only)", "5.18",
                           "each enter looks the ring fd up"),
    "buffer_ring": ("a ring of provided receive buffers: sock_recv takes one per call, "
                    "multishot receives draw on it", "5.19",
                    "sock_recv allocates a buffer per call; no multishot receive"),
    "multishot_recv": ("one armed receive per Protocol stream transport, drawing on "
                       "the buffer ring", "6.0",
                       "one receive per read, into the transport's buffer"),
    "multishot_accept": ("one armed accept per listening socket", "5.19",
                         "one accept per connection, re-armed after each"),
    "ftruncate": ("IORING_OP_FTRUNCATE for AsyncFile.truncate", "6.9",
                  "truncate runs in the loop's executor"),
}
# Opt-in paths, off unless asked for: reported with the others.
OPT_IN = {
    "single_issuer": ("IORING_SETUP_SINGLE_ISSUER + DEFER_TASKRUN", "6.1",
                      "uringloop.run(), or URINGLOOP_SINGLE_THREAD=1"),
    "sqpoll": ("IORING_SETUP_SQPOLL: a kernel thread submits", "5.11 (unprivileged)",
               "URINGLOOP_SQPOLL=IDLE_MS"),
    "napi": ("IORING_REGISTER_NAPI busy polling", "6.9", "URINGLOOP_NAPI=USEC"),
    "fixed_files": ("a sparse registered-file table: stream transports' receives and "
                    "sends name a slot (IOSQE_FIXED_FILE), not an fd", "5.19",
                    "URINGLOOP_FIXED_FILES=1"),
    "send_zc": ("IORING_OP_SEND_ZC for big stream writes", "6.0", "URINGLOOP_SEND_ZC=BYTES"),
    "defer_writes": ("stream writes wait for the ring's next submission, which sends a "
                     "turn's writes in one enter: write() returns before they are in the "
                     "kernel, unlike asyncio's", "5.6", "URINGLOOP_DEFER_WRITES=1"),
}

_DEFAULT_SQ_ENTRIES = 1024
_MAX_SQ_ENTRIES = 32768        # IORING_MAX_ENTRIES
_MAX_CQ_ENTRIES = 2 * _MAX_SQ_ENTRIES
_MAX_BUFFERS = 32768           # a buffer ring holds at most 2^15 entries
# Registered-file slots: one per fd the process may open (RLIMIT_NOFILE,
# which the kernel also enforces on the table), at most this many (8 bytes
# of kernel memory each).
_MAX_FIXED_FILES = 32768
_MAX_SEND_ZC = 1 << 30         # a threshold above any one send (MAX_IO_LEN)
_SIZE = re.compile(r"^(\d+)([kKmM]?)$")


class Knobs:
    """What the environment asks of a new loop's ring."""

    def __init__(self, disabled=frozenset(), sq_entries=_DEFAULT_SQ_ENTRIES, cq_entries=0,
                 buffers=None, single_thread=False, sqpoll_idle_ms=None, napi_busy_poll_us=None,
                 fixed_files=False, send_zc=None, defer_writes=False, environment=None):
        self.environment = environment or {}  # the URINGLOOP_* variables read
        self.disabled = frozenset(disabled)
        self.sq_entries = sq_entries
        self.cq_entries = cq_entries      # 0: four times sq_entries
        self.buffers = buffers            # (count, size); None: _ring's default pool
        # None: URINGLOOP_SINGLE_THREAD unset, the loop's maker decides
        # (uringloop.run() asks for a single-thread ring; see Loop).
        self.single_thread = single_thread
        self.sqpoll_idle_ms = sqpoll_idle_ms
        self.napi_busy_poll_us = napi_busy_poll_us
        self.fixed_files = fixed_files
        self.send_zc = send_zc            # threshold in bytes; None: off
        self.defer_writes = defer_writes

    def setup_candidates(self):
        """IORING_SETUP_* sets to ask for, best first, without disabled bits.
        SQPOLL cannot be combined with the task-run flags (EINVAL)."""
        from ._ring import _SETUP_FALLBACKS, loop_setup_flags
        from ._uring import lib
        if self.sqpoll_idle_ms is not None:
            first = [lib.IORING_SETUP_SQPOLL | lib.IORING_SETUP_SUBMIT_ALL, lib.IORING_SETUP_SQPOLL]
        else:
            first = [loop_setup_flags(self.single_thread)]
        strip = 0
        if "coop_taskrun" in self.disabled:
            strip |= lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG
        if "submit_all" in self.disabled:
            strip |= lib.IORING_SETUP_SUBMIT_ALL
        candidates = []
        for flags in first + list(_SETUP_FALLBACKS):
            if flags & ~strip not in candidates:
                candidates.append(flags & ~strip)
        return candidates

    def ring_arguments(self):
        """Keyword arguments for ``Ring``."""
        candidates = self.setup_candidates()
        return {"entries": self.sq_entries, "cq_entries": self.cq_entries,
                "setup_flags": candidates[0], "fallbacks": tuple(candidates[1:]),
                "sq_thread_idle": self.sqpoll_idle_ms or 0}


def _count(name, value, low, high):
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ValueError(f"{name}={value!r}: expected a whole number from {low} to {high}")
    return number


def _byte_size(name, text):
    match = _SIZE.match(text.strip())
    if match is None:
        raise ValueError(f"{name}: {text!r} is not a size (bytes, or with k or M)")
    scale = {"": 1, "k": 1024, "K": 1024, "m": 1 << 20, "M": 1 << 20}[match.group(2)]
    return int(match.group(1)) * scale


def _switch(name, environ):
    value = environ.get(name, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{name}={value!r}: expected 0 or 1")
    return value == "1"


def parse_disabled(value):
    names = {part.strip() for part in value.split(",") if part.strip()}
    if "all" in names:
        return frozenset(PATHS)
    unknown = names - set(PATHS)
    if unknown:
        raise ValueError(f"URINGLOOP_DISABLE: unknown {', '.join(sorted(unknown))}; "
                         f"expected names among {', '.join(PATHS)} (or all)")
    return frozenset(names)


def parse_buffers(value):
    count, sep, size = value.lower().partition("x")
    if not sep:
        raise ValueError(f"URINGLOOP_BUFFERS={value!r}: expected COUNTxSIZE, e.g. 512x128k")
    count = _count("URINGLOOP_BUFFERS count", count, 1, _MAX_BUFFERS)
    if count & (count - 1):
        raise ValueError(f"URINGLOOP_BUFFERS={value!r}: the count must be a power of two")
    size = _byte_size("URINGLOOP_BUFFERS", size)
    if not 1 <= size <= 1 << 30 or count * size > 1 << 32:
        raise ValueError(f"URINGLOOP_BUFFERS={value!r}: a size from 1 byte to 1 GiB, "
                         f"at most 4 GiB in all")
    return count, size


def read_knobs(environ=os.environ):
    """The knobs set in ``environ``; ValueError names a bad one."""
    sq_entries = _count("URINGLOOP_SQ_ENTRIES",
                        environ.get("URINGLOOP_SQ_ENTRIES", str(_DEFAULT_SQ_ENTRIES)),
                        1, _MAX_SQ_ENTRIES)
    cq_entries = 0
    if "URINGLOOP_CQ_ENTRIES" in environ:
        # The kernel rounds both up to powers of two; the CQ may not be
        # smaller than the SQ.
        cq_entries = _count("URINGLOOP_CQ_ENTRIES", environ["URINGLOOP_CQ_ENTRIES"],
                            sq_entries, _MAX_CQ_ENTRIES)
    buffers = None
    if "URINGLOOP_BUFFERS" in environ:
        buffers = parse_buffers(environ["URINGLOOP_BUFFERS"])
    sqpoll = None
    if "URINGLOOP_SQPOLL" in environ:
        sqpoll = _count("URINGLOOP_SQPOLL", environ["URINGLOOP_SQPOLL"], 1, 60_000)
    napi = None
    if "URINGLOOP_NAPI" in environ:
        napi = _count("URINGLOOP_NAPI", environ["URINGLOOP_NAPI"], 1, 1_000_000)
    send_zc = None
    if "URINGLOOP_SEND_ZC" in environ:
        send_zc = _byte_size("URINGLOOP_SEND_ZC", environ["URINGLOOP_SEND_ZC"])
        if not 1 <= send_zc <= _MAX_SEND_ZC:
            raise ValueError(f"URINGLOOP_SEND_ZC={environ['URINGLOOP_SEND_ZC']!r}: "
                             f"a size from 1 byte to 1 GiB")
    return Knobs(disabled=parse_disabled(environ.get("URINGLOOP_DISABLE", "")),
                 sq_entries=sq_entries, cq_entries=cq_entries, buffers=buffers,
                 single_thread=(_switch("URINGLOOP_SINGLE_THREAD", environ)
                                if "URINGLOOP_SINGLE_THREAD" in environ else None),
                 sqpoll_idle_ms=sqpoll, napi_busy_poll_us=napi, send_zc=send_zc,
                 fixed_files=_switch("URINGLOOP_FIXED_FILES", environ),
                 defer_writes=_switch("URINGLOOP_DEFER_WRITES", environ),
                 environment=knobs_in_environment(environ))


def knobs_in_environment(environ=os.environ):
    """Every URINGLOOP_* variable that is set, for reports."""
    return {name: value for name, value in sorted(environ.items())
            if name.startswith("URINGLOOP_")}


class Features:
    """The optional paths of one loop: ``on`` (a frozenset of names),
    ``off`` (name -> why), the ``environment`` they were chosen under and
    ``send_zc``, the zero-copy write threshold (None when that is off)."""

    def __init__(self, on, off, environment, send_zc=None):
        self.on = frozenset(on)
        self.off = dict(off)
        self.environment = environment
        self.send_zc = send_zc if "send_zc" in self.on else None

    def report(self):
        """name -> "on" or "off: <why>", every path in a fixed order."""
        return {name: "on" if name in self.on else f"off: {self.off[name]}"
                for name in list(PATHS) + list(OPT_IN)}


# Feature-test results, per process: name -> None (works) or why not.
_multishot = None
_fixed_files = None


def _wait_for(ring, results, deadline_s=2.0):
    deadline = time.monotonic() + deadline_s
    while not results and time.monotonic() < deadline:
        ring.run_turn(0.05)


def _test_multishot_accept(ring):
    from ._op import RingCallback
    from ._uring import lib
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("")  # an abstract address chosen by the kernel
        listener.listen(4)
        got = []
        ring.submit_accept_multishot(
            listener.fileno(), socket.SOCK_CLOEXEC,
            RingCallback(lambda res, flags: got.append((res, flags)), returns_fd=True))
        client.connect(listener.getsockname())
        _wait_for(ring, got)
        if not got:
            return "the accept never completed"
        res, flags = got[0]
        if res >= 0:
            os.close(res)
        if res < 0:
            return f"the kernel refused it ({os.strerror(-res)})"
        # A kernel that ignored the flag accepted once and disarmed.
        return (None if flags & lib.IORING_CQE_F_MORE
                else "the kernel accepted once and disarmed")
    finally:
        client.close()
        listener.close()


def _test_multishot_recv(ring):
    from ._op import RingCallback
    from ._uring import lib
    if not ring.enable_receive_buffers(count=2, size=64):
        return "no provided-buffer ring"
    ours, peer = socket.socketpair()
    try:
        got = []
        ring.submit_recv_multishot(ours.fileno(),
                                   RingCallback(lambda res, flags: got.append((res, flags))))
        peer.send(b"x")
        _wait_for(ring, got)
        if not got:
            return "the receive never completed"
        res, flags = got[0]
        if res < 0:
            return f"the kernel refused it ({os.strerror(-res)})"
        # A kernel that ignores the flag receives zero bytes into the
        # zero-length request: it would look like end of stream.
        if (res != 1 or not flags & lib.IORING_CQE_F_BUFFER
                or not flags & lib.IORING_CQE_F_MORE):
            return "the kernel ignored the multishot flag"
        return None
    finally:
        ours.close()
        peer.close()


def multishot_support():
    """{"multishot_accept": None or why not, "multishot_recv": ...}, from a
    real round trip each on a small ring made for the purpose (the first
    call only; the kernel is the same for the rest of the process)."""
    global _multishot
    if _multishot is None:
        from ._ring import Ring
        results = {}
        try:
            ring = Ring(entries=8)
        except OSError as exc:
            return dict.fromkeys(("multishot_accept", "multishot_recv"),
                                 f"no ring to test it on ({exc})")
        try:
            for name, test in (("multishot_accept", _test_multishot_accept),
                               ("multishot_recv", _test_multishot_recv)):
                try:
                    results[name] = test(ring)
                except OSError as exc:
                    results[name] = f"the test failed ({exc})"
        finally:
            ring.close()
        _multishot = results
    return _multishot


def fixed_file_slots():
    """The size of a loop's registered-file table: within RLIMIT_NOFILE,
    past which the kernel refuses it (and liburing 2.3 would raise the
    process's limit to make room)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return _MAX_FIXED_FILES if soft == resource.RLIM_INFINITY else min(soft, _MAX_FIXED_FILES)


def _test_fixed_file_release(ring):
    """An emptied slot must let its socket go at once, as closing an fd
    does, even while other fixed-file operations stay in flight: a kernel
    that frees emptied slots only once every operation submitted before
    has completed would keep a closed connection open for as long as any
    other connection's receive stays armed, and its peer would never see
    the close."""
    from ._native import new_uncleared
    from ._op import RingCallback
    rc = ring.register_files(2)
    if rc < 0:
        return f"the kernel refused the registration ({os.strerror(-rc)})"
    closing, closing_peer = socket.socketpair()
    armed, armed_peer = socket.socketpair()
    try:
        closing_slot = ring.install_file(closing.fileno())
        armed_slot = ring.install_file(armed.fileno())
        if closing_slot >= 0 or armed_slot >= 0:
            return "the kernel refused to fill a slot"
        got = []
        buf = new_uncleared("char[]", 1)
        ring.submit_recv(armed_slot, buf, 1, RingCallback(lambda res, flags: got.append(res)))
        ring.run_turn(0)
        ring.remove_file(closing_slot)
        closing.close()
        closing_peer.settimeout(1.0)
        try:
            released = closing_peer.recv(1) == b""
        except TimeoutError:
            released = False
        armed_peer.send(b"x")
        _wait_for(ring, got)
        if got != [1]:
            return "a receive on a slot failed"
        return (None if released else
                "the kernel lets an emptied slot's socket go only once older "
                "operations on slots end")
    finally:
        for sock in (closing, closing_peer, armed, armed_peer):
            sock.close()


def fixed_file_support():
    """None if registered files work as the loop needs (see
    _test_fixed_file_release), else why not; tested once per process on a
    small ring of its own."""
    global _fixed_files
    if _fixed_files is None:
        from ._ring import Ring
        try:
            ring = Ring(entries=8)
        except OSError as exc:
            return f"no ring to test it on ({exc})"
        try:
            _fixed_files = _test_fixed_file_release(ring) or ""
        except OSError as exc:
            _fixed_files = f"the test failed ({exc})"
        finally:
            ring.close()
    return _fixed_files or None


def _setup_flag_reason(knobs, granted, name):
    from ._uring import lib
    if name in knobs.disabled:
        return "URINGLOOP_DISABLE"
    if granted & lib.IORING_SETUP_SQPOLL and name == "coop_taskrun":
        return "not with SQPOLL"
    if granted & lib.IORING_SETUP_DEFER_TASKRUN and name == "coop_taskrun":
        return "DEFER_TASKRUN instead (a single-thread ring)"
    return "the kernel refused the setup flag"


def configure(ring, knobs):
    """Decide every optional path of a loop on ``ring`` (made from
    ``knobs``), registering what the chosen ones need; a Features."""
    from ._uring import lib
    on, off = set(), {}
    granted = ring.setup_flags
    disabled = knobs.disabled

    for name, bits in (("submit_all", lib.IORING_SETUP_SUBMIT_ALL),
                       ("coop_taskrun", lib.IORING_SETUP_COOP_TASKRUN)):
        if granted & bits:
            on.add(name)
        else:
            off[name] = _setup_flag_reason(knobs, granted, name)

    if granted & lib.IORING_SETUP_SINGLE_ISSUER:
        on.add("single_issuer")
    elif knobs.single_thread:
        off["single_issuer"] = ("not with SQPOLL" if granted & lib.IORING_SETUP_SQPOLL
                                else "the kernel refused the setup flags")
    else:
        off["single_issuer"] = f"not asked for ({OPT_IN['single_issuer'][2]})"
    if granted & lib.IORING_SETUP_SQPOLL:
        on.add("sqpoll")
    elif knobs.sqpoll_idle_ms is not None:
        off["sqpoll"] = "the kernel refused the setup flag"
    else:
        off["sqpoll"] = f"not asked for ({OPT_IN['sqpoll'][2]})"

    if knobs.napi_busy_poll_us is None:
        off["napi"] = f"not asked for ({OPT_IN['napi'][2]})"
    else:
        rc = ring.register_napi(knobs.napi_busy_poll_us)
        if rc < 0:
            off["napi"] = f"the kernel refused the registration ({os.strerror(-rc)})"
        else:
            on.add("napi")

    if not knobs.fixed_files:
        off["fixed_files"] = f"not asked for ({OPT_IN['fixed_files'][2]})"
    elif fixed_file_support() is not None:
        off["fixed_files"] = fixed_file_support()
    else:
        rc = ring.register_files(fixed_file_slots())
        if rc < 0:
            off["fixed_files"] = f"the kernel refused the registration ({os.strerror(-rc)})"
        else:
            on.add("fixed_files")

    if "registered_ring_fd" in disabled:
        ring.skip_registered_fd()
        off["registered_ring_fd"] = "URINGLOOP_DISABLE"
    elif not granted & lib.IORING_SETUP_SINGLE_ISSUER:
        off["registered_ring_fd"] = "only for a SINGLE_ISSUER ring (a single-thread ring)"
    else:
        on.add("registered_ring_fd")  # at the first turn, in the issuer thread

    needed = [name for name in ("multishot_accept", "multishot_recv") if name not in disabled]
    tested = multishot_support() if needed else {}
    for name in ("multishot_accept", "multishot_recv"):
        if name in disabled:
            off[name] = "URINGLOOP_DISABLE"
        elif tested[name] is not None:
            off[name] = tested[name]
        else:
            on.add(name)
    # sock_recv takes provided buffers whenever the ring has them; a
    # multishot receive cannot do without them.
    if "buffer_ring" in disabled:
        off["buffer_ring"] = "URINGLOOP_DISABLE"
    elif ring.enable_receive_buffers(*(knobs.buffers or ())):
        on.add("buffer_ring")
    else:
        off["buffer_ring"] = "the kernel refused the registration"
    if "multishot_recv" in on and "buffer_ring" not in on:
        on.discard("multishot_recv")
        off["multishot_recv"] = "needs buffer_ring"

    if knobs.send_zc is None:
        off["send_zc"] = f"not asked for ({OPT_IN['send_zc'][2]})"
    elif lib.IORING_OP_SEND_ZC in ring.supported_opcodes():
        on.add("send_zc")
    else:
        off["send_zc"] = "not in the kernel's opcode probe"

    if knobs.defer_writes:
        on.add("defer_writes")
    else:
        off["defer_writes"] = f"not asked for ({OPT_IN['defer_writes'][2]})"

    if "ftruncate" in disabled:
        off["ftruncate"] = "URINGLOOP_DISABLE"
    elif lib.UL_IORING_OP_FTRUNCATE in ring.supported_opcodes():
        on.add("ftruncate")
    else:
        off["ftruncate"] = "not in the kernel's opcode probe"
    return Features(on, off, knobs.environment, knobs.send_zc)
