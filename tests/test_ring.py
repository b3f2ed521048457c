"""The ring layer (uringloop._ring) on its own, without a loop: the ops
table's lifetime rules, the SQ-full and large-batch paths, close, and the
process boundary (fork)."""
import errno
import gc
import os
import socket
import weakref

import pytest

from uringloop import _ring
from uringloop._names import OPCODE_NAMES
from uringloop._op import RingCallback
from uringloop._ring import Ring
from uringloop._uring import ffi


@pytest.fixture
def ring():
    r = Ring(entries=64)
    yield r
    r.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def turn_until(ring, predicate, turns=50):
    for _ in range(turns):
        if predicate():
            return
        ring.run_turn(0.1)
    assert predicate()


def test_nop_round_trip(ring):
    seen = []
    ud = ring.submit_nop(RingCallback(lambda res, flags: seen.append((res, flags))))
    assert ud > 0
    assert ring.pending() == 1
    ring.run_turn(1.0)
    assert seen == [(0, 0)]
    assert ring.pending() == 0


def test_a_callback_entry_runs_the_callback_it_holds_and_is_collected(ring):
    # With the accelerator RingCallback is a C class that owns its
    # on_completion field (the dispatch reads it at an offset); the
    # callback it holds when the completion arrives is the one that runs,
    # and an entry in a cycle through that field is still collected.
    seen = []
    entry = RingCallback(lambda res, flags: seen.append("first"))
    entry.on_completion = lambda res, flags: seen.append("second")
    ring.submit_nop(entry)
    ring.run_turn(1.0)
    assert seen == ["second"]

    class Held:
        def __call__(self, res, flags):
            pass

    held = Held()
    held.entry = RingCallback(held)
    alive = weakref.ref(held)
    del held
    gc.collect()
    assert alive() is None


def test_user_data_is_never_reused(ring):
    ids = [ring.submit_nop(RingCallback(lambda res, flags: None)) for _ in range(10)]
    ring.run_turn(1.0)
    ids += [ring.submit_nop(RingCallback(lambda res, flags: None)) for _ in range(10)]
    ring.run_turn(1.0)
    assert len(set(ids)) == 20 and 0 not in ids


def test_entry_and_buffer_released_only_on_completion(ring, pair):
    a, b = pair
    seen = []
    buf = ffi.new("char[]", 16)
    buf_ref = weakref.ref(buf)
    ring.submit_recv(a.fileno(), buf, 16,
                     RingCallback(lambda res, flags: seen.append(ffi.unpack(buf_ref(), res))))
    del buf
    for _ in range(3):
        ring.run_turn(0)
    gc.collect()
    # Nothing arrived: the entry and the buffer the kernel will write stay.
    assert seen == [] and ring.pending() == 1
    assert buf_ref() is not None
    b.send(b"data")
    turn_until(ring, lambda: seen)
    assert seen == [b"data"]          # the callback still saw the buffer
    assert ring.pending() == 0
    gc.collect()
    assert buf_ref() is None


def test_ops_table_holds_the_entry_with_what_the_kernel_uses(ring, pair):
    # The entry contract (see _ring.py): the table holds the object handed
    # to submit_*, which the ring gives the buffers to keep alive.
    a, b = pair
    buf = ffi.new("char[]", 8)
    seen = []
    entry = RingCallback(lambda res, flags: seen.append(res))
    ud = ring.submit_recv(a.fileno(), buf, 8, entry)
    assert ring._ops[ud] is entry
    assert entry.keepalive is buf and entry.returns_fd is False
    b.send(b"x")
    turn_until(ring, lambda: seen)
    assert seen == [1] and ud not in ring._ops


def test_cancel_pending_recv(ring, pair):
    a, _ = pair
    seen = []
    buf = ffi.new("char[]", 16)
    buf_ref = weakref.ref(buf)
    ud = ring.submit_recv(a.fileno(), buf, 16, RingCallback(lambda res, flags: seen.append(res)))
    del buf
    ring.run_turn(0)                 # the recv is now armed in the kernel
    ring.cancel(ud)
    gc.collect()
    # A cancel is a request: until its completion the buffer stays pinned.
    assert ring.pending() == 1 and buf_ref() is not None
    turn_until(ring, lambda: seen)
    assert seen == [-errno.ECANCELED]
    assert ring.pending() == 0
    gc.collect()
    assert buf_ref() is None


def test_cancel_before_submission(ring, pair):
    # Cancel queued in the same turn as its target: still exactly one
    # completion, and it says cancelled.
    a, _ = pair
    seen = []
    ud = ring.submit_recv(a.fileno(), ffi.new("char[]", 4), 4,
                          RingCallback(lambda res, flags: seen.append(res)))
    ring.cancel(ud)
    turn_until(ring, lambda: seen)
    ring.run_turn(0)
    assert seen == [-errno.ECANCELED]


def test_cancel_of_finished_op_is_a_no_op(ring):
    seen = []
    ud = ring.submit_nop(RingCallback(lambda res, flags: seen.append(res)))
    ring.run_turn(1.0)
    ring.cancel(ud)
    ring.cancel(123456789)
    ring.run_turn(0)
    assert seen == [0] and ring.pending() == 0


def test_sq_full_submits_and_continues():
    ring = Ring(entries=8)
    try:
        seen = []
        for i in range(100):
            ring.submit_nop(RingCallback(lambda res, flags, i=i: seen.append((i, res))))
        turn_until(ring, lambda: len(seen) == 100)
        assert sorted(seen) == [(i, 0) for i in range(100)]
        assert ring.pending() == 0
    finally:
        ring.close()


def test_more_completions_than_one_batch(ring):
    big = Ring(entries=1024)
    try:
        seen = []
        count = 3 * _ring._BATCH + 17
        for i in range(count):
            big.submit_nop(RingCallback(lambda res, flags, i=i: seen.append(i)))
        big.run_turn(1.0)
        # One turn drains every batch the kernel has ready, in order.
        assert seen == list(range(count))
        assert big.pending() == 0
    finally:
        big.close()


def test_callback_error_is_reported_and_others_still_run(ring):
    seen, errors = [], []
    ring.on_callback_error = errors.append

    def boom(res, flags):
        raise ValueError("boom")

    ring.submit_nop(RingCallback(lambda res, flags: seen.append(1)))
    ring.submit_nop(RingCallback(boom))
    ring.submit_nop(RingCallback(lambda res, flags: seen.append(3)))
    ring.run_turn(1.0)
    assert seen == [1, 3]
    assert [type(e) for e in errors] == [ValueError]


def test_callback_error_without_handler_propagates(ring):
    def boom(res, flags):
        raise ValueError("boom")

    ring.submit_nop(RingCallback(boom))
    with pytest.raises(ValueError):
        ring.run_turn(1.0)
    assert ring.pending() == 0


def test_run_turn_timeout_without_work(ring):
    ring.run_turn(0)
    ring.run_turn(0.01)
    assert ring.pending() == 0


def test_close_with_ops_in_flight_drains_them(pair):
    a, b = pair
    ring = Ring(entries=16)
    seen = []
    leaked_before = len(_ring._leaked_rings)
    bufs = [ffi.new("char[]", 32) for _ in range(4)]
    for buf in bufs:
        ring.submit_recv(a.fileno(), buf, 32, RingCallback(lambda res, flags: seen.append(res)))
    ring.submit_poll(b.fileno(), 1, RingCallback(lambda res, flags: seen.append(res)))
    ring.run_turn(0)
    fd = os.readlink(f"/proc/self/fd/{_fd_of(ring)}")
    assert "io_uring" in fd
    ring.close()
    assert ring.closed and ring.pending() == 0
    assert len(_ring._leaked_rings) == leaked_before   # every buffer came back
    assert seen == []                                   # close runs no callbacks
    ring.close()                                        # idempotent


def test_close_releases_the_ring_fd():
    before = _ring_fds()
    rings = [Ring(entries=8) for _ in range(10)]
    assert _ring_fds() == before + 10
    for r in rings:
        r.close()
    assert _ring_fds() == before


def test_use_after_close_raises(pair):
    ring = Ring(entries=8)
    ring.close()
    with pytest.raises(RuntimeError, match="closed"):
        ring.submit_nop(RingCallback(lambda res, flags: None))
    with pytest.raises(RuntimeError, match="closed"):
        ring.submit_recv(pair[0].fileno(), ffi.new("char[]", 1), 1, RingCallback(lambda r, f: None))
    with pytest.raises(RuntimeError, match="closed"):
        ring.run_turn(0)
    ring.cancel(1)      # cancelling on a closed ring is harmless


def test_bad_fd_completes_with_ebadf(ring):
    seen = []
    ring.submit_recv(999_999, ffi.new("char[]", 4), 4,
                     RingCallback(lambda res, flags: seen.append(res)))
    turn_until(ring, lambda: seen)
    assert seen == [-errno.EBADF]


def test_fork_child_cannot_use_the_ring(ring):
    ring.submit_nop(RingCallback(lambda res, flags: None))   # something queued in the parent
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            try:
                ring.submit_nop(RingCallback(lambda res, flags: None))
            except RuntimeError as exc:
                if "fork" in str(exc):
                    try:
                        ring.run_turn(0)
                    except RuntimeError:
                        ring.close()           # only closes the child's fd copy
                        code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's ring is untouched by the child.
    seen = []
    ring.submit_nop(RingCallback(lambda res, flags: seen.append(res)))
    turn_until(ring, lambda: seen)
    assert ring.pending() == 0


def test_introspection(ring):
    assert ring.features & 0b10                     # NODROP on any 5.5+ kernel
    assert ring.setup_flags & (1 << 3)              # CQSIZE is always asked for
    assert isinstance(ring.registered_fd, bool)
    supported = {OPCODE_NAMES[op] for op in ring.supported_opcodes()
                 if op < len(OPCODE_NAMES)}
    assert set(_ring.OPCODES_USED) <= supported


def test_python_caps_requests_as_c_does():
    # One constant in two languages: uring.h's cap on a socket operation is
    # the one the Python side applies to receives and file requests.
    from uringloop._native import MAX_IO_LEN
    from uringloop._uring import lib
    assert MAX_IO_LEN == lib.UL_MAX_IO_LEN


def _fd_of(ring):
    from uringloop._uring import lib
    return lib.ul_ring_fd(ring._ptr)


def _ring_fds():
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            count += "io_uring" in os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            pass
    return count



def test_close_closes_fds_that_complete_during_the_drain():
    # An accept that completes while (or just before) the ring closes
    # returns an fd nobody will receive: close() must close it, not leak it.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    ring = Ring(entries=8)
    seen = []
    ring.submit_accept(listener.fileno(), socket.SOCK_CLOEXEC,
                       RingCallback(lambda res, flags: seen.append(res), returns_fd=True))
    ring.run_turn(0)
    fds_before = set(os.listdir("/proc/self/fd"))
    client = socket.create_connection(listener.getsockname())
    ring.close()
    assert seen == []  # callbacks do not run during close
    leaked = set(os.listdir("/proc/self/fd")) - fds_before - {str(client.fileno())}
    assert not leaked
    client.close()
    listener.close()


# -- C-owned send queues (csrc/sendq.c) ----------------------------------
from uringloop._uring import lib  # noqa: E402


class SendQueueOwner:
    """A send queue on ``fd`` and the events it reported."""

    def __init__(self, ring, fd):
        self.ring = ring
        self.events = []
        self.queue, self.user_data = ring.new_send_queue(fd, self.on_event)

    def on_event(self, res, flags):
        self.events.append((flags >> lib.UL_SENDQ_EVENT_SHIFT, res))

    def write(self, data):
        return lib.ul_sendq_write(self.queue, data, len(data))

    def size(self):
        return lib.ul_sendq_size(self.queue)


def recv_exactly(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        assert chunk, "peer closed early"
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def test_send_queue_copies_the_bytes(ring, pair):
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    data = bytearray(b"before")
    assert lib.ul_sendq_write(owner.queue, ffi.from_buffer(data), 6) == 6
    data[:] = b"AFTER!"               # the caller's buffer is free at once
    turn_until(ring, lambda: owner.size() == 0)
    assert recv_exactly(b, 6) == b"before"
    assert owner.events == []         # a successful send never reaches Python


def test_send_queue_keeps_one_send_in_flight_and_coalesces(ring, pair):
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    assert owner.write(b"a" * 1000) == 1000
    # The send starts when the ring next submits: until then writes join it.
    assert lib.ul_ring_sends_in_flight(ring._ptr) == 0
    assert owner.write(b"b" * 1000) == 2000
    ring.submit_now()
    assert lib.ul_ring_sends_in_flight(ring._ptr) == 1
    assert owner.write(b"c" * 10) == 2010        # queued behind the send
    in_flight = []
    for _ in range(50):
        if owner.size() == 0:
            break
        ring.run_turn(0.1)
        in_flight.append(lib.ul_ring_sends_in_flight(ring._ptr))
    assert owner.size() == 0
    assert max(in_flight) <= 1
    assert recv_exactly(b, 2010) == b"a" * 1000 + b"b" * 1000 + b"c" * 10


def test_send_queue_resubmits_partial_sends(ring, pair):
    a, b = pair
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    owner = SendQueueOwner(ring, a.fileno())
    data = os.urandom(2 * 1024 * 1024)
    owner.write(data[:1024 * 1024])
    owner.write(data[1024 * 1024:])
    b.setblocking(False)
    received = bytearray()
    for _ in range(10_000):
        if len(received) == len(data):
            break
        ring.run_turn(0.01)
        try:
            received += b.recv(1 << 20)
        except BlockingIOError:
            pass
    assert bytes(received) == data
    assert owner.size() == 0 and owner.events == []


def test_send_queue_drained_event_at_threshold(ring, pair):
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    owner.write(b"x" * 100)
    lib.ul_sendq_notify_at(owner.queue, 0)
    turn_until(ring, lambda: owner.events)
    assert owner.events == [(lib.UL_SENDQ_DRAINED, 0)]
    owner.write(b"y")
    turn_until(ring, lambda: owner.size() == 0)
    assert len(owner.events) == 1      # one shot
    assert recv_exactly(b, 101) == b"x" * 100 + b"y"


def test_send_queue_failure_is_reported_once_and_sticks(ring, pair):
    a, b = pair
    b.close()
    owner = SendQueueOwner(ring, a.fileno())
    owner.write(b"to nobody")
    turn_until(ring, lambda: owner.events)
    assert owner.events == [(lib.UL_SENDQ_FAILED, -errno.EPIPE)]
    assert owner.write(b"again") == -errno.EPIPE
    assert lib.ul_ring_sends_in_flight(ring._ptr) == 0


def fill_until_blocked(owner, ring):
    """Queue more than the socket buffers hold, with nobody reading."""
    owner.write(b"z" * (16 * 1024 * 1024))
    ring.run_turn(0)
    assert lib.ul_ring_sends_in_flight(ring._ptr) == 1


def test_send_queue_abort_cancels_and_release_waits_for_the_kernel(ring, pair):
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    fill_until_blocked(owner, ring)
    assert lib.ul_sendq_abort(owner.queue) == 0
    assert owner.size() == 0
    assert not ring.release_send_queue(owner.queue, owner.user_data)   # still in the kernel
    turn_until(ring, lambda: owner.events)
    assert owner.events == [(lib.UL_SENDQ_RELEASED, 0)]
    assert lib.ul_ring_sends_in_flight(ring._ptr) == 0
    assert ring.pending() == 0         # the last event took the entry with it


def test_send_queue_released_idle_is_freed_at_once(ring, pair):
    a, _ = pair
    owner = SendQueueOwner(ring, a.fileno())
    assert ring.pending() == 1
    assert ring.release_send_queue(owner.queue, owner.user_data)
    assert ring.pending() == 0


def test_send_queue_released_with_data_still_sends_it(ring, pair):
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    data = os.urandom(4 * 1024 * 1024)
    owner.write(data)
    assert not ring.release_send_queue(owner.queue, owner.user_data)
    b.setblocking(False)
    received = bytearray()
    for _ in range(10_000):
        if owner.events and len(received) == len(data):
            break
        ring.run_turn(0.01)
        try:
            received += b.recv(1 << 20)
        except BlockingIOError:
            pass
    assert bytes(received) == data
    assert owner.events == [(lib.UL_SENDQ_RELEASED, 0)]


def test_ring_close_cancels_sends_and_tells_the_owners(pair):
    a, _ = pair
    ring = Ring(entries=64)
    owner = SendQueueOwner(ring, a.fileno())
    fill_until_blocked(owner, ring)
    leaked_before = len(_ring._leaked_rings)
    ring.close()
    assert owner.events == [(0, 0)]    # event 0: the queue went with the ring
    assert len(_ring._leaked_rings) == leaked_before


def test_waiting_turn_lets_other_threads_run(ring):
    """The one blocking C call releases the GIL (build_ffi.py keeps it held
    around all the others): another thread runs Python in the middle of a
    turn that waits in the kernel."""
    import threading
    import time
    stamps = []

    def record():
        deadline = time.monotonic() + 0.4
        while time.monotonic() < deadline:
            stamps.append(time.monotonic())

    ring.run_turn(0)                   # bind this thread first
    worker = threading.Thread(target=record)
    worker.start()
    time.sleep(0.01)
    started = time.monotonic()
    ring.run_turn(0.2)                 # nothing completes: waits 0.2 s
    worker.join()
    # Holding the GIL, the wait would leave the worker at most one switch
    # interval (5 ms) at the start.
    assert any(started + 0.05 < stamp < started + 0.15 for stamp in stamps)


def test_turn_woken_only_by_a_c_owned_send_waits_on(ring, pair):
    """A send completion handled in C gives Python nothing to do: the turn
    keeps waiting, but still ends at its timeout."""
    import time
    a, b = pair
    owner = SendQueueOwner(ring, a.fileno())
    ring.run_turn(0)
    owner.write(b"ping")
    started = time.monotonic()
    ring.run_turn(0.2)
    waited = time.monotonic() - started
    assert owner.size() == 0 and owner.events == []   # the send did complete
    assert 0.19 < waited < 1.0
    assert recv_exactly(b, 4) == b"ping"


@pytest.mark.parametrize("count,size", [(512, 128 * 1024), (4, 64), (8, 1000)])
def test_the_receive_pool_starts_on_a_page(ring, count, size):
    # The kernel copies into a provided buffer three times slower when it
    # starts 16 bytes into a page (measured on AMD), which malloc's header
    # used to give every buffer of the pool.
    if not ring.enable_receive_buffers(count, size):
        pytest.skip("no provided buffer rings on this kernel")
    address, pool_count, pool_size = ring.receive_pool
    assert (pool_count, pool_size) == (count, size)
    assert address % os.sysconf("SC_PAGE_SIZE") == 0
