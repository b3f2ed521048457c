"""The ring as Python sees it: the ops table and the once-per-turn reap.

Every operation gets a fresh ``user_data`` number.  The ops table maps that
number to an *entry*, one object per operation in flight, with:

  ``on_completion(res, flags)``  called with each completion;
  ``keepalive``   every object whose memory the kernel may read or write
                  until then (buffers, msghdrs, socket addresses), or None;
                  the ``submit_*`` method stores it there;
  ``returns_fd``  True when the result is a new fd (an accept, an open),
                  which close() must not drop on the floor;
  ``ring_closed(res)``  called instead of ``on_completion`` when the ring
                  closes under the operation, to release what it holds.

An _op.Op is its own entry; a plain callback goes in an
_op.RingCallback, whose ``on_completion`` is the callback itself (no extra
call per completion).  An entry is in the table under one
``user_data`` at a time.  Only a completion removes an entry, so a buffer
outlives a cancelled future or a closed transport for as long as the
kernel holds it.

Stream sends are the exception: their bytes live in C-owned send queues
(csrc/sendq.c), whose successful completions never reach Python; a queue's
owner has one long-lived entry (a :class:`SendQueueEvents`) for the few
events it must hear about.

Data flow: callers queue SQEs with the ``submit_*`` methods (no syscall),
the loop's selector calls :meth:`Ring.run_turn` once per iteration, which
makes one C call that submits, waits and copies a batch of completions
out, polls (tagged ``UL_INLINE_TAG``) apart from the rest.  Poll
completions run at once (they only record readiness); the rest go to the
loop as one batch, run from its ready queue by :meth:`Ring.run_callbacks`
before the next turn -- which matters for multishot receives, whose data
sits in provided buffers that the next C call hands back to the kernel.
An entry leaves the table when its callback runs, so buffers stay alive
until then.  With the accelerator on (``_accel``), that dispatch runs in
C (``_speedups.run_callbacks``, the loop's ready queue calling it directly)
and the C turn defers its batches as ``_speedups.Batch`` objects;
:meth:`Ring.run_callbacks` is the reference both follow.  Callbacks copy what they need and only schedule work
(resolve futures, call protocol methods).
"""
import errno
import functools
import os
import struct
import threading
import weakref

from . import _accel
from ._native import os_error
from ._op import RingCallback
from ._uring import ffi, lib

# One object per OS thread, which a ring that ran there keeps: a thread's
# ident (threading.get_ident()) goes to the next thread as soon as it has
# exited, so the ident alone cannot tell the kernel's idea of "another
# thread" (one whose requests outlive the first) from the same thread.
_this_thread = threading.local()


def _thread_token():
    token = getattr(_this_thread, "token", None)
    if token is None:
        token = _this_thread.token = object()
    return token


_OTHER_THREAD = ("this uringloop loop was first run in another thread and its "
                 "io_uring ring is SINGLE_ISSUER: run it from that thread, or "
                 "create it with URINGLOOP_SINGLE_THREAD=0")

# A batch is copied out per C call; a full batch means more are waiting.
_BATCH = 256
# More completions of the same operation follow (multishot receives and
# accepts, send queue events): its ops-table entry stays.
CQE_F_MORE = lib.IORING_CQE_F_MORE
# struct ul_completion, read a whole batch at a time (cheaper than cdata fields).
_COMPLETION = struct.Struct("=QiI")
assert _COMPLETION.size == ffi.sizeof("struct ul_completion")
_prep_recv = lib.ul_prep_recv
_prep_send = lib.ul_prep_send
_prep_recv_multishot = lib.ul_prep_recv_multishot
_CQE_BUFFER_SHIFT = lib.IORING_CQE_BUFFER_SHIFT
# Provided receive buffers (64 MiB in all): more than a turn's batch of
# completions can hold, so 100+ busy connections do not run the group dry
# (ENOBUFS only costs a re-arm), and each big enough that a 100 KiB message
# usually arrives in one completion (64 KiB buffers split it in two, which
# measured a third slower: twice the Python calls and sends per message).
_RECV_BUFFER_COUNT = 512
_RECV_BUFFER_SIZE = 128 * 1024

# IORING_SETUP_* flag sets, best first; a kernel that refuses one with
# EINVAL gets the next.  SINGLE_ISSUER + DEFER_TASKRUN (6.1) run completion
# work only when the loop enters the ring, never as interrupts in between,
# but tie the ring to the first thread that runs it.
SINGLE_THREAD_SETUP = (lib.IORING_SETUP_SINGLE_ISSUER | lib.IORING_SETUP_DEFER_TASKRUN
                       | lib.IORING_SETUP_R_DISABLED | lib.IORING_SETUP_TASKRUN_FLAG
                       | lib.IORING_SETUP_SUBMIT_ALL)
ANY_THREAD_SETUP = (lib.IORING_SETUP_COOP_TASKRUN | lib.IORING_SETUP_TASKRUN_FLAG
                    | lib.IORING_SETUP_SUBMIT_ALL)
_SETUP_FALLBACKS = (ANY_THREAD_SETUP, lib.IORING_SETUP_SUBMIT_ALL, 0)


def loop_setup_flags(single_thread):
    """The flags a loop's ring asks for.  A single-thread ring
    (``uringloop.run()``'s loops, or any loop with
    ``URINGLOOP_SINGLE_THREAD=1``) trades running one loop from several
    threads (one after another) for SINGLE_ISSUER + DEFER_TASKRUN: since a
    stream write goes to the socket at once, completion work that
    COOP_TASKRUN runs on the way out of each such ``send(2)`` cost
    streams echo 1.4 times the CPU per request here (README, knob table).
    A loop from ``new_event_loop()`` may be run from any thread, as
    asyncio's, so it stays thread-agnostic."""
    return SINGLE_THREAD_SETUP if single_thread else ANY_THREAD_SETUP


# Kernel names (IORING_OP_<name>) of every operation uringloop submits, for
# ``python -m uringloop info``; a new io_uring_prep_* in csrc adds its name
# here (tests/test_info.py checks the two agree).
OPCODES_USED = ("NOP", "POLL_ADD", "ASYNC_CANCEL", "RECV", "SEND", "SEND_ZC",
                "RECVMSG", "SENDMSG", "ACCEPT", "SPLICE",
                "OPENAT", "CLOSE", "READ", "WRITE", "READV", "WRITEV", "FSYNC",
                "FALLOCATE", "STATX", "UNLINKAT", "RENAMEAT", "MKDIRAT", "FTRUNCATE")

# user_data bit of operations whose callback runs inside the turn.
_INLINE_TAG = lib.UL_INLINE_TAG


class SendQueueEvents(RingCallback):
    """A send queue's event entry (see Ring.new_send_queue): it holds no
    buffer and lasts as long as the queue, not one operation."""

    __slots__ = ()

_live_rings = weakref.WeakSet()
# Rings whose kernel side never gave back every buffer at close: kept (with
# those buffers) for the life of the process instead of freed under the kernel.
_leaked_rings = []


def _forget_rings_in_child():
    # A forked child shares the parent's ring mappings; touching them would
    # submit into or reap from the parent's ring.
    for ring in list(_live_rings):
        ring._forked = True
        if ring.c_turn_state is not None:
            ring.c_turn_state.close()
        ring._drop_send_queues()


os.register_at_fork(after_in_child=_forget_rings_in_child)


class RingUnavailableError(OSError):
    """io_uring cannot be used here (blocked, disabled or too old)."""


class Ring:
    def __init__(self, entries=1024, setup_flags=ANY_THREAD_SETUP, *, cq_entries=0,
                 fallbacks=_SETUP_FALLBACKS, sq_thread_idle=0):
        error = ffi.new("int *")
        for flags in (setup_flags,) + tuple(fallbacks):
            ptr = lib.ul_ring_create(entries, cq_entries, flags, sq_thread_idle, error)
            # SQPOLL may also be refused as a privilege (before 5.11).
            if ptr != ffi.NULL or not (error[0] == -errno.EINVAL or (
                    error[0] == -errno.EPERM and flags & lib.IORING_SETUP_SQPOLL)):
                break
        if ptr == ffi.NULL:
            code = -error[0]
            raise RingUnavailableError(code, f"io_uring_setup failed: {os.strerror(code)}")
        self._ptr = ptr
        self._thread = None  # the thread that runs turns (see _bind_thread)
        self._thread_token = None  # and its _thread_token() (see note_run)
        self._ops = {}
        self._next_user_data = 1
        self._completions = ffi.new("struct ul_completion[]", _BATCH)
        self._completions_bytes = ffi.buffer(self._completions)
        self._inline_count = ffi.new("unsigned *")
        # Batches whose callbacks have not all run yet, oldest first:
        # deferred to the loop's ready queue, or cut short by an exception
        # (see run_turn).
        self._unfinished = []
        # What the loop's C turn needs to make the ring turn itself (see
        # take_turn), without the accelerator None: the ring, the
        # completion array, its inline count, the batch size, the
        # unfinished batches and the thread bound to the ring (bound by
        # _bind_thread).  Closed when the ring may no longer be entered
        # (closed, or a forked child's).
        self.c_turn_state = None
        if _accel.speedups is not None:
            self.c_turn_state = _accel.speedups.TurnState(
                int(ffi.cast("uintptr_t", ptr)), int(ffi.cast("uintptr_t", self._completions)),
                int(ffi.cast("uintptr_t", self._inline_count)), _BATCH, self._unfinished)
        self._forked = False
        self.on_callback_error = None
        self.buffer_size = 0   # of each provided buffer; 0 while there are none
        self.receive_pool = None   # (address, count, size) of the provided buffers
        _live_rings.add(self)

    # -- introspection -------------------------------------------------
    @property
    def closed(self):
        return self._ptr is None

    @property
    def features(self):
        return lib.ul_ring_features(self._ptr)

    @property
    def setup_flags(self):
        return lib.ul_ring_setup_flags(self._ptr)

    @property
    def registered_fd(self):
        return bool(lib.ul_ring_registered_fd(self._ptr))

    @property
    def sq_entries(self):
        return lib.ul_ring_sq_entries(self._ptr)

    @property
    def cq_entries(self):
        return lib.ul_ring_cq_entries(self._ptr)

    def register_napi(self, busy_poll_us):
        """Busy-poll the NIC queues for up to ``busy_poll_us`` per wait;
        0 or a negative errno."""
        return lib.ul_ring_register_napi(self._ptr, busy_poll_us, 0)

    def skip_registered_fd(self):
        """Never register the ring fd (call before the first turn)."""
        lib.ul_ring_skip_registered_fd(self._ptr)

    def counters(self):
        """The C counters (struct ul_ring_stats) as a new cdata copy."""
        out = ffi.new("struct ul_ring_stats *")
        lib.ul_ring_stats(self._ptr, out)
        return out

    def supported_opcodes(self):
        table = ffi.new("unsigned char[]", 256)
        count = lib.ul_ring_probe(self._ptr, table, 256)
        if count < 0:
            raise os_error(count)
        return {op for op in range(min(count, 256)) if table[op]}

    def pending(self):
        return len(self._ops)

    # -- provided receive buffers ----------------------------------------
    def enable_receive_buffers(self, count=None, size=None):
        """Register the buffer group multishot receives draw from (``count``
        buffers of ``size`` bytes; by default the module's pool); False if
        the kernel cannot (before 5.19), in which case callers keep using
        one-shot receives into their own buffers."""
        count = _RECV_BUFFER_COUNT if count is None else count
        size = _RECV_BUFFER_SIZE if size is None else size
        rc = lib.ul_bufring_setup(self._ptr, count, size)
        if rc < 0:
            return False
        # One view of the whole pool: a receive's bytes are a slice of it
        # (cheaper per call than cdata arithmetic and ffi.unpack's keyword
        # parsing: 2.0k instead of 2.7k instructions for 1 KiB).
        base = lib.ul_bufring_base(self._ptr)
        self._buffers = memoryview(ffi.buffer(base, count * size))
        self.buffer_size = size
        self.receive_pool = (int(ffi.cast("uintptr_t", base)), count, size)
        if _accel.speedups is not None:
            # The same copy in C, called without a frame (an instance
            # attribute in front of the method).
            self.receive_buffer = functools.partial(_accel.speedups.receive_bytes,
                                                    *self.receive_pool)
        return True

    def receive_buffer(self, flags, nbytes):
        """The bytes a receive into a provided buffer delivered (copied: the
        buffer goes back to the kernel at the next turn).  The reference of
        ``_speedups.receive_bytes``, which takes its place with the
        accelerator on (see :meth:`enable_receive_buffers`)."""
        start = (flags >> _CQE_BUFFER_SHIFT) * self.buffer_size
        return self._buffers[start:start + nbytes].tobytes()

    def copy_received(self, flags, nbytes, target):
        """Copy what a receive into a provided buffer delivered into the
        cdata ``target`` (at least ``nbytes`` long)."""
        start = (flags >> _CQE_BUFFER_SHIFT) * self.buffer_size
        ffi.memmove(target, self._buffers[start:start + nbytes], nbytes)

    # -- registered files ------------------------------------------------
    def register_files(self, slots):
        """Register a sparse table of ``slots`` files (csrc/fixed.c); 0 or
        a negative errno."""
        return lib.ul_files_setup(self._ptr, slots)

    def install_file(self, fd):
        """The file target to hand :meth:`submit_recv`,
        :meth:`submit_recv_multishot` and :meth:`new_send_queue` for the
        socket ``fd``: a registered slot (``-1 - slot``) if the table has a
        free one, else ``fd`` itself.  The caller keeps ``fd`` open too and
        empties the slot with :meth:`remove_file` when it closes it."""
        if self._ptr is None or self._forked:
            return fd
        slot = lib.ul_files_install(self._ptr, fd)
        return fd if slot < 0 else -1 - slot

    def remove_file(self, target):
        """Empty the slot of a target :meth:`install_file` returned, under
        the fd close rule (_ringfd.py); a plain fd has none."""
        if target < 0 and self._ptr is not None and not self._forked:
            lib.ul_files_remove(self._ptr, -1 - target)

    def files_usage(self):
        """The table's slots and counters (struct ul_files_usage) as a dict."""
        out = ffi.new("struct ul_files_usage *")
        lib.ul_files_usage(self._ptr, out)
        return {name: getattr(out, name) for name in
                ("slots", "in_use", "high_water", "installed", "table_full", "refused")}

    # -- submission ----------------------------------------------------
    # Each submit_* method takes the operation's entry (see the module
    # header) last among what the kernel needs, and returns its user_data.
    def _start(self, prep_result, user_data, entry, keepalive):
        if prep_result < 0:
            raise os_error(prep_result)
        entry.keepalive = keepalive
        self._ops[user_data] = entry
        return user_data

    def _new_user_data(self):
        self._check_usable()
        user_data = self._next_user_data
        self._next_user_data = user_data + 1
        return user_data

    def _check_usable(self):
        if self._ptr is None:
            raise RuntimeError("the io_uring ring is closed")
        if self._forked:
            raise RuntimeError("an io_uring ring cannot be used after fork(); "
                               "create a new event loop in the child")

    def submit_nop(self, entry):
        ud = self._new_user_data()
        return self._start(lib.ul_prep_nop(self._ptr, ud), ud, entry, None)

    # recv and send are the per-message hot path: written out in full
    # rather than through _new_user_data/_start.
    def submit_recv(self, fd, buf, nbytes, entry):
        if self._forked or self._ptr is None:
            self._check_usable()
        ud = self._next_user_data
        self._next_user_data = ud + 1
        rc = _prep_recv(self._ptr, fd, buf, nbytes, 0, ud)
        if rc < 0:
            raise os_error(rc)
        entry.keepalive = buf
        self._ops[ud] = entry
        return ud

    def submit_recv_multishot(self, fd, entry):
        """A receive that stays armed, each completion naming a provided
        buffer (see :meth:`receive_buffer`); re-arm once a completion comes
        without IORING_CQE_F_MORE."""
        if self._forked or self._ptr is None:
            self._check_usable()
        ud = self._next_user_data
        self._next_user_data = ud + 1
        rc = _prep_recv_multishot(self._ptr, fd, ud)
        if rc < 0:
            raise os_error(rc)
        entry.keepalive = None
        self._ops[ud] = entry
        return ud

    def submit_recv_provided(self, fd, nbytes, entry):
        """A receive of up to ``nbytes`` into a provided buffer (see
        :meth:`receive_buffer`): no buffer to allocate per call."""
        ud = self._new_user_data()
        rc = lib.ul_prep_recv_provided(self._ptr, fd, nbytes, ud)
        return self._start(rc, ud, entry, None)

    def submit_send(self, fd, buf, nbytes, entry, keepalive):
        if self._forked or self._ptr is None:
            self._check_usable()
        ud = self._next_user_data
        self._next_user_data = ud + 1
        rc = _prep_send(self._ptr, fd, buf, nbytes, 0, ud)
        if rc < 0:
            raise os_error(rc)
        entry.keepalive = keepalive
        self._ops[ud] = entry
        return ud

    def new_send_queue(self, fd, on_event):
        """A C-owned send queue for the stream socket ``fd`` (csrc/sendq.c):
        returns ``(queue, user_data)``.  ``on_event(res, flags)`` receives
        its events; the entry lasts until the queue is released."""
        ud = self._new_user_data()
        queue = lib.ul_sendq_new(self._ptr, fd, ud)
        if queue == ffi.NULL:
            raise MemoryError("cannot allocate a send queue")
        self._ops[ud] = SendQueueEvents(on_event)
        return queue, ud

    def release_send_queue(self, queue, user_data):
        """The owner is done with ``queue``: True if it is freed now; False if
        a send is still in the kernel, in which case its last event
        (UL_SENDQ_RELEASED) arrives when that send completes."""
        if self._ptr is None:
            return True  # freed with the ring
        if lib.ul_sendq_release(queue):
            return False
        del self._ops[user_data]
        return True

    def _drop_send_queues(self):
        # Event 0 tells each owner that its queue is gone with the ring (or
        # belongs to the parent, after fork) and must not be touched again.
        for entry in list(self._ops.values()):
            if type(entry) is SendQueueEvents:
                entry.on_completion(0, 0)

    def submit_recvmsg(self, fd, msg, buf, nbytes, entry):
        ud = self._new_user_data()
        return self._start(lib.ul_prep_recvmsg(self._ptr, fd, msg, buf, nbytes, 0, ud),
                           ud, entry, (msg, buf))

    def submit_sendmsg(self, fd, msg, buf, nbytes, sockaddr, entry, keepalive):
        ud = self._new_user_data()
        rc = lib.ul_prep_sendmsg(self._ptr, fd, msg, buf, nbytes,
                                 sockaddr, len(sockaddr), 0, ud)
        return self._start(rc, ud, entry, (msg, keepalive))

    def submit_accept(self, fd, flags, entry):
        """``entry.returns_fd`` must be true (as for every accept)."""
        ud = self._new_user_data()
        return self._start(lib.ul_prep_accept(self._ptr, fd, flags, ud), ud, entry, None)

    def submit_accept_multishot(self, fd, flags, entry):
        """``entry.returns_fd`` must be true (as for every accept)."""
        ud = self._new_user_data()
        rc = lib.ul_prep_accept_multishot(self._ptr, fd, flags, ud)
        return self._start(rc, ud, entry, None)

    def submit_splice(self, fd_in, off_in, fd_out, off_out, nbytes, entry):
        ud = self._new_user_data()
        rc = lib.ul_prep_splice(self._ptr, fd_in, off_in, fd_out, off_out, nbytes, ud)
        return self._start(rc, ud, entry, None)

    def submit_poll(self, fd, mask, entry):
        """A readiness wait whose callback only records what fired, so it
        runs inside the turn even when other callbacks are deferred."""
        ud = self._new_user_data() | _INLINE_TAG
        return self._start(lib.ul_prep_poll(self._ptr, fd, mask, ud), ud, entry, None)

    def submit(self, prep, args, entry, keepalive):
        """Queue any operation ``prep(ring, *args, user_data)`` (a
        ``lib.ul_prep_*`` function); ``keepalive`` stays in the entry
        until its completion.  Used by the file operations (files/_ops.py)
        and read pipes."""
        ud = self._new_user_data()
        return self._start(prep(self._ptr, *args, ud), ud, entry, keepalive)

    def submit_now(self):
        """Hand queued operations to the kernel before the next turn, for
        operations whose effect a peer may be waiting on synchronously
        (asyncio starts connect and send before returning to the loop).
        True once every queued operation is in the kernel."""
        if self._ptr is None:
            return True  # closed: nothing is queued any more
        if self._forked:
            return False  # the SQ is the parent's: never submit into it
        if self._thread != threading.get_ident() and not self._bind_thread(strict=False):
            return False  # not the issuer thread: the next turn submits them
        rc = lib.ul_ring_submit(self._ptr)
        if rc < 0:
            raise os_error(rc)
        return rc == 0

    def cancel(self, user_data):
        """Ask the kernel to cancel an operation.  Its entry (and buffers)
        stay in the ops table until its own completion arrives."""
        if user_data not in self._ops or self._ptr is None or self._forked:
            return
        rc = lib.ul_prep_cancel(self._ptr, user_data)
        if rc < 0:
            raise os_error(rc)

    # -- completion ----------------------------------------------------
    def note_run(self):
        """The loop starts running in the calling thread.  One that got
        the ident of a thread that ran it and exited is another thread all
        the same (the kernel dropped the old one's requests): the turns'
        checks compare idents, so the change is made here."""
        token = _thread_token()
        previous, self._thread_token = self._thread_token, token
        if previous is None or previous is token or self._ptr is None:
            return
        if self._thread == threading.get_ident():
            if self.setup_flags & lib.IORING_SETUP_SINGLE_ISSUER:
                raise RuntimeError(_OTHER_THREAD)
            lib.ul_ring_thread_changed(self._ptr)

    def _bind_thread(self, strict=True):
        """Make the calling thread the one that enters the ring; False (or
        RuntimeError if ``strict``) when a SINGLE_ISSUER ring has another."""
        thread = threading.get_ident()
        if self._thread is None:
            rc = lib.ul_ring_bind_thread(self._ptr)
            if rc < 0:
                raise os_error(rc)
        elif self.setup_flags & lib.IORING_SETUP_SINGLE_ISSUER:
            if not strict:
                return False
            raise RuntimeError(_OTHER_THREAD)
        if self._thread is not None and self._thread != thread:
            # Operations the previous thread submitted are dropped by the
            # kernel if it exits: the ring puts them back (csrc/resubmit.c).
            lib.ul_ring_thread_changed(self._ptr)
        self._thread = thread
        if self.c_turn_state is not None:
            self.c_turn_state.bind(thread)
        return True

    def run_turn(self, timeout, defer=None):
        """Submit queued operations, wait up to ``timeout`` seconds (None:
        until something completes) and take what completed.

        Without ``defer`` the completion callbacks run here.  With it, they
        are handed over as one batch, ``defer(batch)``, to be run later by
        :meth:`run_callbacks`: the loop runs them after the callbacks that
        were already scheduled, where asyncio runs I/O callbacks.  Inline
        completions (the selector's polls) always run here."""
        self._check_usable()
        if self._thread != threading.get_ident():
            self._bind_thread()
        while self._unfinished:
            # Completions reaped earlier whose callbacks have not run: the
            # loop was stopped before their ready-queue callback (an
            # exception escaped another callback) or one of them raised.
            # Their provided buffers go back to the kernel in the C call
            # below, so their bytes must be delivered first; the ready-queue
            # callback then finds the batch exhausted.
            self.run_callbacks(self._unfinished[0])
            timeout = 0
        timeout_ns = -1 if timeout is None else max(0, int(timeout * 1e9))
        while True:
            try:
                count = lib.ul_ring_turn(self._ptr, timeout_ns, self._completions, _BATCH,
                                         self._inline_count)
            except BaseException:
                # A signal handler's exception (KeyboardInterrupt, a test
                # timeout), raised as the call returned, before the count
                # was taken: what the call reaped is handed over first, or
                # those operations would never finish.
                self.take_turn(lib.ul_ring_last_turn(self._ptr), defer)
                raise
            if self.take_turn(count, defer):
                return
            timeout_ns = 0

    def take_turn(self, count, defer=None):
        """Deliver what one ul_ring_turn call copied out, ``count`` being
        what it returned (see run_turn); False when a full batch means more
        are waiting.  The loop's C turn (csrc/speedups.c) makes that call
        itself, through ``c_turn_state``, and comes here for anything but a
        batch without polls that it can defer itself."""
        if count < 0:
            raise os_error(count)
        out_bytes = self._completions_bytes
        inlined = self._inline_count[0]
        batch = None
        if count > inlined:
            batch = _COMPLETION.iter_unpack(out_bytes[:(count - inlined) * _COMPLETION.size])
            self._unfinished.append(batch)
        if inlined:
            polls = reversed(list(_COMPLETION.iter_unpack(
                out_bytes[(_BATCH - inlined) * _COMPLETION.size:])))
            self._unfinished.insert(0, polls)
            self.run_callbacks(polls)
        if batch is not None:
            if defer is None:
                self.run_callbacks(batch)
            else:
                defer(batch)
        # A deferred batch may still point into provided receive buffers,
        # which the next ul_ring_turn gives back to the kernel: reap more
        # only once its callbacks have run, i.e. next turn.
        return count < _BATCH or defer is not None

    def run_callbacks(self, batch):
        """Run the callbacks of ``batch``, an iterator of (user_data, res,
        flags), releasing each ops-table entry (and with it the buffers it
        kept alive) unless more completions of that operation follow.  A
        callback error goes to ``on_callback_error``; without one (or if it
        raises too) the rest of the batch stays unfinished and runs first
        thing next turn.  With the accelerator on, the same in C
        (``_speedups.run_callbacks``); this is the reference."""
        speedups = _accel.speedups
        if speedups is not None:
            return speedups.run_callbacks(self, self._ops, self._unfinished, batch)
        ops = self._ops
        for user_data, res, flags in batch:
            if flags & CQE_F_MORE:
                entry = ops.get(user_data)
            else:
                entry = ops.pop(user_data, None)
            if entry is None:
                continue  # its ring closed meanwhile, or a stale completion
            # Loaded, then called: for a RingCallback that is a plain slot
            # load, where a method-call load of a slot is not specialised.
            on_completion = entry.on_completion
            try:
                on_completion(res, flags)
            except BaseException as exc:  # reported, never lost
                if self.on_callback_error is None:
                    raise
                self.on_callback_error(exc)
        if batch in self._unfinished:  # not if a turn ran it first
            self._unfinished.remove(batch)

    def close(self, drain_timeout=5.0):
        """Cancel everything in flight, wait for the kernel to give every
        buffer back, then release the ring.  Callbacks are not run (but
        send queue owners are told their queue is gone, and each entry's
        ``ring_closed(res)`` is called once its operation is over); an fd
        that an accept or open completing now returns is closed here."""
        if self._ptr is None:
            return
        ptr, self._ptr = self._ptr, None
        if self.c_turn_state is not None:
            self.c_turn_state.close()
        self._drop_send_queues()
        if self._forked:
            # The mapping is the parent's; closing our copy of the fd is the
            # only thing the child may do with it.
            os.close(lib.ul_ring_fd(ptr))
            return
        ops = self._ops
        if ops and self._thread != threading.get_ident():
            self._ptr = ptr  # binding needs it
            try:
                bound = self._bind_thread(strict=False)
            except OSError:
                bound = False
            self._ptr = None
            if not bound:
                # Another thread is the issuer: this one may not enter the
                # ring, so it cannot wait for the kernel to let go.
                _leaked_rings.append((ptr, dict(ops)))
                ops.clear()
                return

        def forget(user_data, res, flags):
            entry = ops.get(user_data)
            if entry is None:
                return
            if entry.returns_fd and res >= 0:
                os.close(res)  # an fd nobody will receive now
            if not flags & CQE_F_MORE:
                del ops[user_data]
                # The callback will never run: an operation that holds what
                # only the kernel needed (a pinned buffer, a pipe) lets go
                # of it here (see _op.Op).
                entry.ring_closed(res)

        # Completions reaped but never run (the loop stopped first) are over
        # as far as the kernel is concerned.
        for batch in self._unfinished:
            for completion in batch:
                forget(*completion)
        self._unfinished.clear()

        def settled():
            # Send queues' event entries live as long as their queues (freed
            # with the ring); what matters is that no send is in the kernel.
            return lib.ul_ring_sends_in_flight(ptr) == 0 and all(
                type(entry) is SendQueueEvents for entry in ops.values())

        if not settled():
            lib.ul_prep_cancel_all(ptr)
            deadline_turns = max(1, int(drain_timeout / 0.05))
            for _ in range(deadline_turns):
                count = lib.ul_ring_turn(ptr, 50_000_000, self._completions, _BATCH,
                                         self._inline_count)
                if count < 0 and count != -errno.EINTR:
                    break
                inlined = self._inline_count[0] if count > 0 else 0
                reaped = [self._completions[i] for i in range(count - inlined)]
                reaped += [self._completions[_BATCH - 1 - i] for i in range(inlined)]
                for cqe in reaped:
                    forget(cqe.user_data, cqe.res, cqe.flags)
                if settled():
                    break
        if lib.ul_ring_sends_in_flight(ptr) or any(
                entry.keepalive is not None for entry in ops.values()):
            # The kernel still holds buffers we cannot account for: keep the
            # ring and the buffers alive forever rather than risk a write
            # into freed memory.
            _leaked_rings.append((ptr, dict(ops)))
            ops.clear()
            return
        # Whatever is left (polls, no-ops, accepts) touches no user memory,
        # e.g. a ring whose io_uring_enter a seccomp filter denies: the
        # kernel cancels those itself when the ring goes away.
        for entry in ops.values():
            entry.ring_closed(-errno.ECANCELED)
        ops.clear()
        lib.ul_ring_destroy(ptr)


