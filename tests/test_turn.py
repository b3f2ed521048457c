"""The loop turn in C (uringloop._speedups, chosen by uringloop/_turn.py)
against its pure-Python reference and asyncio's own loop.

Each scenario records what a loop did (callbacks run, in which order, what
the timer heap and the exception handler saw) and must record the same on
asyncio's selector loop, on uringloop with asyncio's Python ``_run_once``
and on uringloop with the C turn, whichever path URINGLOOP_PURE_PYTHON
selects for the rest of the suite.
"""
import asyncio
import contextvars
import functools
import gc
import heapq
import random
import sys
from asyncio import events

import pytest

from uringloop import _accel, _turn
from uringloop._op import RingCallback

from .conftest import finish_strict_loop, new_strict_loop

speedups = pytest.importorskip("uringloop._speedups")

PATHS = ("asyncio", "python", "c")


def new_loop(path, monkeypatch):
    if path == "c":
        _turn.configure(speedups)
        monkeypatch.setattr(_accel, "speedups", speedups)
    elif path == "python":
        monkeypatch.setattr(_accel, "speedups", None)
    return new_strict_loop("asyncio" if path == "asyncio" else "uringloop")


def traces(scenario, monkeypatch):
    """scenario(loop) -> trace, on each path; the traces, all equal."""
    results = {}
    for path in PATHS:
        with monkeypatch.context() as patch:
            loop = new_loop(path, patch)
            try:
                results[path] = scenario(loop)
            finally:
                loop.handler_calls.clear()
                finish_strict_loop(loop)
    assert results["python"] == results["asyncio"]
    assert results["c"] == results["asyncio"]
    return results["asyncio"]


def one_iteration(loop):
    loop.call_soon(loop.stop)
    loop.run_forever()


@pytest.mark.parametrize("path", PATHS[1:])
def test_a_loop_class_property_is_honoured_by_the_turn(monkeypatch, path):
    # The C turn reads the loop's fields at their offsets (fields of the C
    # class, csrc/speedups.c) only when the class cannot intercept them.
    # Here a property says the loop is in debug mode while the instance
    # dict (where the setter keeps asyncio's value) says not: Python's
    # lookup answers the property, so every turn must be asyncio's
    # debug-mode _run_once.
    import uringloop

    class AlwaysDebug(uringloop.Loop):
        @property
        def _debug(self):
            return True

        @_debug.setter
        def _debug(self, value):
            self.__dict__["_debug"] = value

    seen = []
    with monkeypatch.context() as patch:
        if path == "c":
            _turn.configure(speedups)
            patch.setattr(_accel, "speedups", speedups)
        else:
            patch.setattr(_accel, "speedups", None)
        real = asyncio.BaseEventLoop._run_once
        patch.setattr(asyncio.BaseEventLoop, "_run_once",
                      lambda lp: (seen.append(lp), real(lp))[1])
        loop = AlwaysDebug()
        try:
            assert loop.__dict__["_debug"] is False and loop.get_debug()
            one_iteration(loop)
        finally:
            loop.close()
    assert seen and all(lp is loop for lp in seen)


def test_the_loop_state_the_turn_reads_is_freed_and_seen_by_the_collector():
    # With the accelerator the turn's fields (_ready, _scheduled, ...) are
    # the C class's own; a closed loop still referenced from its own ready
    # queue must be collected, and what its fields held released.
    import gc
    import weakref

    import uringloop

    turn_class = next(c for c in uringloop.Loop.__mro__ if c.__name__ == "TurnMixin")
    if _accel.speedups is not None:
        assert turn_class.__module__ == "uringloop._speedups"
        for name in ("_ready", "_scheduled", "_stopping", "_debug", "_closed"):
            assert type(vars(turn_class)[name]).__name__ == "member_descriptor", name

    class Held:
        pass

    loop = uringloop.Loop()
    loop.close()
    held = Held()
    loop._ready.append(held)
    held.loop = loop   # a cycle through the _ready field
    loop_alive, held_alive = weakref.ref(loop), weakref.ref(held)
    del loop, held
    gc.collect()
    assert loop_alive() is None and held_alive() is None


@pytest.mark.parametrize("path,case,python_turns", [
    ("c", "plain", False), ("python", "plain", True), ("c", "debug", True),
    ("c", "patched Handle._run", True), ("c", "sock op in flight", False)])
def test_which_turns_run_asyncios_python_run_once(monkeypatch, path, case, python_turns):
    # The C turn (the loop class's C _run_once, or the reference calling
    # _speedups.run_once in a pure-Python build) never enters asyncio's
    # Python _run_once; the Python path, debug mode and a replaced
    # Handle._run always do.  A sock_* op in flight runs the reference's
    # closed-socket check first, then the C turn.
    seen, checks = [], []
    with monkeypatch.context() as patch:
        loop = new_loop(path, patch)
        real = asyncio.BaseEventLoop._run_once
        patch.setattr(asyncio.BaseEventLoop, "_run_once",
                      lambda lp: (seen.append(lp), real(lp))[1])
        if case == "debug":
            loop.set_debug(True)
        elif case == "patched Handle._run":
            handle_run = events.Handle._run
            patch.setattr(events.Handle, "_run", lambda handle: handle_run(handle))
        elif case == "sock op in flight":
            patch.setattr(loop, "_sock_ops", {object()})
            patch.setattr(loop, "_check_sock_ops", lambda: checks.append(True))
        try:
            one_iteration(loop)
        finally:
            loop.set_debug(False)
            finish_strict_loop(loop)
    assert bool(seen) == python_turns
    assert all(lp is loop for lp in seen)
    assert bool(checks) == (case == "sock op in flight")


def test_many_cancelled_timers_rebuild_the_heap(monkeypatch):
    def scenario(loop):
        rng = random.Random(7)
        base = loop.time() + 1000
        timers = [loop.call_at(base + rng.random(), lambda: None) for _ in range(150)]
        for timer in timers[:100]:
            timer.cancel()
        one_iteration(loop)
        return (len(loop._scheduled), loop._timer_cancelled_count,
                [timers.index(t) for t in loop._scheduled],
                [t._scheduled for t in timers])
    count, cancelled, _, flags = traces(scenario, monkeypatch)
    assert (count, cancelled) == (50, 0)
    assert flags == [False] * 100 + [True] * 50


@pytest.mark.parametrize("scheduled,cancelled", [(100, 60), (101, 50), (101, 51)])
def test_cancelled_timers_at_the_thresholds(monkeypatch, scheduled, cancelled):
    # Over 100 timers and over half cancelled: rebuild; otherwise only the
    # cancelled ones at the head of the heap go.
    def scenario(loop):
        base = loop.time() + 1000
        timers = [loop.call_at(base + i, lambda: None) for i in range(scheduled)]
        for timer in timers[::2][:cancelled // 2] + timers[1::2][:cancelled - cancelled // 2]:
            timer.cancel()
        one_iteration(loop)
        return (len(loop._scheduled), loop._timer_cancelled_count,
                [timers.index(t) for t in loop._scheduled])
    trace = traces(scenario, monkeypatch)
    assert trace[0] < scheduled


def test_cancelled_head_timers_are_popped(monkeypatch):
    def scenario(loop):
        base = loop.time() + 1000
        timers = [loop.call_at(base + i, lambda: None) for i in range(10)]
        for timer in timers[:3] + timers[5:6]:
            timer.cancel()
        one_iteration(loop)
        return (len(loop._scheduled), loop._timer_cancelled_count,
                [t._scheduled for t in timers])
    assert traces(scenario, monkeypatch) == (7, 1, [False] * 3 + [True] * 7)


def test_stop_runs_the_batch_and_leaves_what_it_scheduled(monkeypatch):
    def scenario(loop):
        ran = []

        def first():
            ran.append("first")
            loop.stop()
            loop.call_soon(ran.append, "scheduled by first")

        loop.call_soon(first)
        loop.call_soon(ran.append, "second")
        loop.run_forever()
        ran.append("stopped")
        one_iteration(loop)
        return ran
    assert traces(scenario, monkeypatch) == [
        "first", "second", "stopped", "scheduled by first"]


def test_call_soon_and_due_timers_order(monkeypatch):
    def scenario(loop):
        ran = []

        def start():
            loop.call_soon(ran.append, "soon 1")
            loop.call_later(0, ran.append, "later 0")
            loop.call_at(loop.time() - 1, ran.append, "at past")
            loop.call_soon(ran.append, "soon 2")
            cancelled = loop.call_soon(ran.append, "cancelled")
            cancelled.cancel()

        loop.call_soon(start)
        loop.run_until_complete(asyncio.sleep(0.01))
        return ran
    assert traces(scenario, monkeypatch) == ["soon 1", "soon 2", "at past", "later 0"]


def test_timers_with_equal_when_run_in_heap_order(monkeypatch):
    def scenario(loop):
        ran = []
        when = loop.time() - 1   # all due at the next turn: one heap, popped in order
        rng = random.Random(3)
        timers = [loop.call_at(when + rng.choice((0, 0, 0, 1e-6)), ran.append, i)
                  for i in range(40)]
        for timer in timers[5:40:7]:
            timer.cancel()
        loop.run_until_complete(asyncio.sleep(0.02))
        return ran
    ran = traces(scenario, monkeypatch)
    assert sorted(ran) == sorted(set(range(40)) - set(range(5, 40, 7)))


def test_a_callback_error_reaches_the_handler_as_handle_run_reports_it(monkeypatch):
    def fails(a, b):
        raise ValueError(a + b)

    def scenario(loop):
        seen = []

        def handler(_loop, context):
            seen.append((context["message"], sorted(context), type(context["exception"]),
                         context["exception"].args, context["handle"] in handles,
                         sys.exc_info()[1] is context["exception"]))

        loop.set_exception_handler(handler)
        handles = [loop.call_soon(fails, 1, 2), loop.call_later(0, fails, 3, 4)]
        loop.run_until_complete(asyncio.sleep(0.01))
        return seen
    seen = traces(scenario, monkeypatch)
    # The arguments are shown outside debug mode only before 3.13.
    args = ("(1, 2)", "(3, 4)") if sys.version_info < (3, 13) else ("()", "()")
    assert [entry[0].split(" at ")[0] for entry in seen] == [
        "Exception in callback test_a_callback_error_reaches_the_handler_as_handle_run_"
        f"reports_it.<locals>.fails{shown}" for shown in args]
    assert all(entry[1:] == (["exception", "handle", "message"], ValueError,
                             entry[3], True, True) for entry in seen)


def test_keyboard_interrupt_leaves_the_rest_of_the_batch(monkeypatch):
    def scenario(loop):
        ran = []

        def interrupt():
            raise KeyboardInterrupt

        loop.call_soon(ran.append, "before")
        loop.call_soon(interrupt)
        loop.call_soon(ran.append, "after")
        with pytest.raises(KeyboardInterrupt):
            loop.run_forever()
        ran.append("interrupted")
        one_iteration(loop)
        return ran
    assert traces(scenario, monkeypatch) == ["before", "interrupted", "after"]


def test_debug_switched_on_mid_turn_runs_the_rest_as_asyncio_does(monkeypatch):
    def scenario(loop):
        ran = []
        loop.call_soon(loop.set_debug, True)
        handle = loop.call_soon(lambda: ran.append(loop._current_handle is handle))
        one_iteration(loop)
        loop.set_debug(False)
        return ran
    assert traces(scenario, monkeypatch) == [True]


def test_a_patched_handle_run_still_sees_every_callback(monkeypatch):
    seen = []
    original = events.Handle._run

    def instrumented(handle):
        seen.append(handle._callback)
        return original(handle)

    with monkeypatch.context() as patch:
        loop = new_loop("c", patch)
        patch.setattr(events.Handle, "_run", instrumented)
        try:
            loop.call_soon(len, "x")
            one_iteration(loop)
        finally:
            finish_strict_loop(loop)
    assert len in seen


class _Timer:
    """Compares as TimerHandle does: by _when only."""
    def __init__(self, when, tag):
        self._when = when
        self.tag = tag

    def __lt__(self, other):
        return self._when < other._when


@pytest.mark.parametrize("number", [float, int])
def test_heap_push_and_pop_match_heapq_with_equal_keys(number):
    rng = random.Random(11)
    ours, reference = [], []
    popped_ours, popped_reference = [], []
    for step in range(3000):
        if reference and rng.random() < 0.4:
            popped_ours.append(speedups.heap_pop(ours).tag)
            popped_reference.append(heapq.heappop(reference).tag)
        else:
            timer = _Timer(number(rng.randrange(20)), step)
            speedups.heap_push(ours, timer)
            heapq.heappush(reference, timer)
        assert [t.tag for t in ours] == [t.tag for t in reference]
    assert popped_ours == popped_reference
    with pytest.raises(IndexError):
        speedups.heap_pop([])


def test_the_loops_own_turn_hooks_run_before_the_c_turn(monkeypatch):
    # The sock_* mixin checks for sockets closed under their ops each turn
    # while ops are in flight (its _check_sock_ops): the C turn must call
    # it first, not replace it, and skip it with no op in flight.
    import socket
    from uringloop import _sockops
    calls = []
    original = _sockops.RingSocketOpsMixin._check_sock_ops

    def counted(self):
        calls.append(self)
        return original(self)

    with monkeypatch.context() as patch:
        loop = new_loop("c", patch)
        patch.setattr(_sockops.RingSocketOpsMixin, "_check_sock_ops", counted)
        a, b = socket.socketpair()
        a.setblocking(False)
        try:
            one_iteration(loop)
            assert calls == []
            receive = loop.create_task(loop.sock_recv(a, 10))
            one_iteration(loop)   # the task starts its receive
            one_iteration(loop)
            assert calls and calls[0] is loop
            receive.cancel()
            one_iteration(loop)
        finally:
            a.close()
            b.close()
            finish_strict_loop(loop)


def test_the_c_turn_makes_a_plain_ring_turn_itself(monkeypatch):
    # Completions without polls are reaped and deferred by the C turn, not
    # through RingSelector.select; polls (add_reader) still go through it.
    import socket
    with monkeypatch.context() as patch:
        loop = new_loop("c", patch)
        try:
            one_iteration(loop)   # arms the self-pipe's poll and binds the thread
            selects = []
            real_select = loop._selector.select
            patch.setattr(loop._selector, "select",
                          lambda timeout: (selects.append(timeout), real_select(timeout))[1])
            done = []
            loop._ring.submit_nop(RingCallback(lambda res, flags: done.append(res)))
            for _ in range(100):
                if done:
                    break
                one_iteration(loop)
            assert done == [0] and selects == []

            a, b = socket.socketpair()
            try:
                read = loop.create_future()
                loop.add_reader(a, lambda: read.set_result(a.recv(1)))
                b.send(b"x")
                assert loop.run_until_complete(read) == b"x"
                loop.remove_reader(a)
            finally:
                a.close()
                b.close()
            assert selects
        finally:
            finish_strict_loop(loop)


def test_the_rings_turn_state_checks_what_it_is_given():
    # Ring.c_turn_state: what the C turn reads to make the ring turn
    # itself; bad input is refused at construction, not met in a turn.
    import threading
    import weakref

    TurnState = speedups.TurnState
    for args, error in [((1, 2, 3, 4, ()), TypeError), (("x", 2, 3, 4, []), TypeError),
                        ((0, 2, 3, 4, []), ValueError), ((1, 2, 3, 0, []), ValueError),
                        ((1, 2, 3, 4), TypeError)]:
        with pytest.raises(error):
            TurnState(*args)
    unfinished = []
    state = TurnState(1, 2, 3, 4, unfinished)
    with pytest.raises(TypeError):
        state.bind("main")
    state.bind(threading.get_ident())

    class Held:
        pass

    held = Held()
    held.state = state
    unfinished.append(held)   # a cycle the collector must see through
    alive = weakref.ref(held)
    del state, unfinished, held
    gc.collect()
    assert alive() is None
    closed = TurnState(1, 2, 3, 4, [])
    closed.close()
    closed.close()   # idempotent, as Ring.close may run after a fork's


def _dispatch_scenario(ring):
    """Ring.run_callbacks on a hand-made batch: kept (IORING_CQE_F_MORE) and
    popped entries, a stale user_data, a callback that raises with no
    handler (the rest stays unfinished), then with a handler (it sees the
    exception as the one being handled), then with one that raises too."""
    from uringloop._ring import CQE_F_MORE
    trace = []

    def entry(name, fails=False):
        def on_completion(res, flags):
            trace.append((name, res, flags))
            if fails:
                raise ValueError(name)
        return RingCallback(on_completion)

    ops = ring._ops
    ops.update({1: entry("a"), 2: entry("more"), 3: entry("fails", True), 5: entry("e"),
                6: entry("fails again", True), 7: None})
    batch = iter([(1, 0, 0), (2, 7, CQE_F_MORE), (4, 0, 0), (3, -1, 0), (5, 1, 4),
                  (7, 0, 0), (6, 0, 0)])
    ring._unfinished.append(batch)
    with pytest.raises(ValueError) as raised:
        ring.run_callbacks(batch)
    trace.append(("raised", raised.value.args, sorted(ops), len(ring._unfinished)))

    def report(exc):
        trace.append(("reported", exc.args, sys.exc_info()[1] is exc))
        raise RuntimeError("handler")

    ring.on_callback_error = report
    with pytest.raises(RuntimeError) as raised:
        ring.run_callbacks(batch)
    trace.append(("handler raised", type(raised.value.__context__), sorted(ops),
                  len(ring._unfinished)))
    ring.on_callback_error = lambda exc: trace.append(("reported", exc.args))
    ring.run_callbacks(batch)
    ring.run_callbacks(iter([(2, 0, 0)]))
    trace.append(("done", sorted(ops), len(ring._unfinished)))
    return trace


def test_completion_dispatch_in_c_matches_the_reference(monkeypatch):
    from uringloop._ring import Ring
    runs, results = [], {}
    for path in ("python", "c"):
        with monkeypatch.context() as patch:
            if path == "c":
                real = speedups.run_callbacks
                patch.setattr(speedups, "run_callbacks",
                              lambda *args: (runs.append(args[-1]), real(*args))[1])
                patch.setattr(_accel, "speedups", speedups)
            else:
                patch.setattr(_accel, "speedups", None)
            ring = Ring(entries=16)
            try:
                results[path] = _dispatch_scenario(ring)
            finally:
                ring._ops.clear()
                ring.close()
    assert results["c"] == results["python"]
    assert runs   # the C dispatch ran
    assert results["c"][-1] == ("done", [], 0)


def test_the_c_turn_dispatches_its_batches_in_c(monkeypatch):
    # A batch the C turn deferred is a _speedups.Batch, run by the C
    # dispatch from the ready queue; it also iterates as (user_data, res,
    # flags) for the Python paths (Ring.close forgets unfinished batches).
    with monkeypatch.context() as patch:
        loop = new_loop("c", patch)
        try:
            one_iteration(loop)
            batches = []
            real = speedups.run_callbacks
            patch.setattr(speedups, "run_callbacks",
                          lambda *args: (batches.append(args[-1]), real(*args))[1])
            done = []
            ud = loop._ring.submit_nop(RingCallback(lambda res, flags: done.append(res)))
            for _ in range(100):
                if done:
                    break
                one_iteration(loop)
            assert done == [0]
            batch = batches[0]
            assert type(batch) is speedups.Batch and list(batch) == []
            seen = []
            patch.setattr(speedups, "run_callbacks", lambda ring, ops, unfinished, batch: (
                seen.append((type(batch), list(batch))), real(ring, ops, unfinished, batch)))
            ud = loop._ring.submit_nop(RingCallback(lambda res, flags: done.append(res)))
            for _ in range(100):
                if seen:
                    break
                one_iteration(loop)
            # Iterated in Python first: the C dispatch found it exhausted.
            assert seen == [(speedups.Batch, [(ud, 0, 0)])] and done == [0]
            assert loop._ring._unfinished == []
            del loop._ring._ops[ud]
        finally:
            finish_strict_loop(loop)


def test_a_loop_class_with_its_own_process_events_is_called_every_turn(monkeypatch):
    # The C turn skips _process_events for a ring turn without events only
    # when the class has asyncio's, which then does nothing.
    import uringloop
    calls = []

    class Counting(uringloop.Loop):
        def _process_events(self, event_list):
            calls.append(list(event_list))
            super()._process_events(event_list)

    with monkeypatch.context() as patch:
        _turn.configure(speedups)
        patch.setattr(_accel, "speedups", speedups)
        loop = Counting()
        try:
            one_iteration(loop)
            done = []
            loop._ring.submit_nop(RingCallback(lambda res, flags: done.append(res)))
            turns = 0
            while not done and turns < 100:
                one_iteration(loop)
                turns += 1
            assert done == [0]
        finally:
            loop.close()
    assert len(calls) == turns + 1 and calls[-1] == []


@pytest.mark.parametrize("path", ["c", "python"])
def test_debug_switched_on_by_process_events_applies_to_the_turns_handles(monkeypatch, path):
    # The C turn reads loop._debug once for a completion batch it defers and
    # the handle that runs it only while no Python code ran in between.
    import uringloop
    seen = []

    class Switching(uringloop.Loop):
        def _process_events(self, event_list):
            if self.switch:
                self.switch = False
                self.set_debug(True)
            super()._process_events(event_list)

    with monkeypatch.context() as patch:
        if path == "c":
            _turn.configure(speedups)
            patch.setattr(_accel, "speedups", speedups)
        else:
            patch.setattr(_accel, "speedups", None)
        loop = Switching()
        loop.switch = False
        try:
            one_iteration(loop)
            loop._ring.submit_nop(RingCallback(
                lambda res, flags: seen.append(loop._current_handle is not None)))
            loop.switch = True
            for _ in range(100):
                if seen:
                    break
                loop._run_once()
        finally:
            loop.set_debug(False)
            loop.close()
    assert seen == [True]


def test_receive_bytes_copies_what_the_reference_copies(monkeypatch):
    from uringloop._ring import _CQE_BUFFER_SHIFT, Ring
    monkeypatch.setattr(_accel, "speedups", speedups)
    ring = Ring(entries=16)
    try:
        if not ring.enable_receive_buffers(4, 64):
            pytest.skip("no provided buffer rings on this kernel")
        assert isinstance(ring.receive_buffer, functools.partial)   # the C copy
        ring._buffers[:] = bytes(range(256))
        for bid in range(4):
            for nbytes in (0, 1, 63, 64):
                flags = bid << _CQE_BUFFER_SHIFT | 4
                assert (ring.receive_buffer(flags, nbytes)
                        == Ring.receive_buffer(ring, flags, nbytes)
                        == bytes(range(bid * 64, bid * 64 + nbytes)))
        for flags, nbytes in ((4 << _CQE_BUFFER_SHIFT, 1), (0, 65), (0, -1)):
            with pytest.raises(ValueError):
                ring.receive_buffer(flags, nbytes)
    finally:
        ring.close()


def test_sendq_write_is_ul_sendq_write_without_cffi(monkeypatch):
    # A stream transport's write() goes through _speedups.sendq_write with
    # the accelerator on; the bytes reach the peer as through cffi.
    import socket
    monkeypatch.setattr(_accel, "speedups", speedups)
    _turn.configure(speedups)
    from uringloop._ring import Ring
    from uringloop._uring import ffi, lib
    ring = Ring(entries=16)
    a, b = socket.socketpair()
    try:
        queue, user_data = ring.new_send_queue(a.fileno(), lambda res, flags: None)
        address = int(ffi.cast("uintptr_t", queue))
        assert speedups.sendq_write(address, b"hello", 5) == 5
        assert speedups.sendq_write(address, b"world!", 5) == lib.ul_sendq_size(queue) == 10
        with pytest.raises(TypeError):
            speedups.sendq_write(address, bytearray(b"x"), 1)
        with pytest.raises(ValueError):
            speedups.sendq_write(address, b"x", 2)
        while lib.ul_sendq_size(queue):
            ring.run_turn(0.1)
        assert b.recv(100) == b"helloworld"
        assert ring.release_send_queue(queue, user_data)
    finally:
        ring.close()
        a.close()
        b.close()


def test_writes_the_c_write_hands_back_go_through_the_c_sendq_write(monkeypatch):
    # A bytes write never leaves C (csrc/stream_speedups.c); a bytearray
    # goes to the Python reference write(), which calls sendq_write.
    calls = []
    real = speedups.sendq_write
    with monkeypatch.context() as patch:
        patch.setattr(speedups, "sendq_write",
                      lambda *args: (calls.append(args[1]), real(*args))[1])
        loop = new_loop("c", patch)
        try:
            def serve(reader, writer):
                writer.write(bytearray(b"hi"))
                writer.close()   # from 3.12, wait_closed() waits for it
            async def main():
                server = await asyncio.start_server(serve, "127.0.0.1", 0)
                port = server.sockets[0].getsockname()[1]
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                data = await reader.read(2)
                writer.close()
                server.close()
                await server.wait_closed()
                return data
            assert loop.run_until_complete(main()) == b"hi"
        finally:
            finish_strict_loop(loop)
    assert b"hi" in calls


def test_new_handle_builds_what_the_lean_handle_init_builds():
    import contextvars
    from uringloop import _scheduling
    speedups_loop = asyncio.new_event_loop()
    try:
        def callback(*args):
            pass
        slots = ("_loop", "_callback", "_args", "_cancelled", "_repr", "_source_traceback")
        for context in (None, contextvars.copy_context()):
            ours = speedups.new_handle(callback, (1, 2), speedups_loop, context)
            reference = _scheduling.Handle(callback, (1, 2), speedups_loop, context)
            assert type(ours) is _scheduling.Handle
            assert ([getattr(ours, name) for name in slots]
                    == [getattr(reference, name) for name in slots])
            if context is None:   # a copy of the current context, each time
                assert type(ours._context) is contextvars.Context
                assert ours._context is not reference._context
            else:
                assert ours._context is context
        with pytest.raises(TypeError):
            speedups.new_handle(callback, [1, 2], speedups_loop, None)
    finally:
        speedups_loop.close()


def _ring_paths(scenario, monkeypatch):
    """scenario(loop) -> trace on the Python turn and the C turn (ring
    completions: no asyncio path); both traces, which must be equal."""
    results = {}
    for path in ("python", "c"):
        with monkeypatch.context() as patch:
            loop = new_loop(path, patch)
            try:
                results[path] = scenario(loop)
            finally:
                finish_strict_loop(loop)
    assert results["c"] == results["python"]
    return results["c"]


def test_a_turns_completions_run_where_their_handle_would_have_run(monkeypatch):
    # The C turn runs a batch of completions in place, without a handle:
    # after the callbacks ready before the turn, before the timers that
    # fell due, and what the completions schedule runs next turn.
    def scenario(loop):
        one_iteration(loop)   # binds the ring to this thread
        trace = []

        def completed(res, flags):
            trace.append("completion")
            loop.call_soon(trace.append, "scheduled by the completion")

        loop.call_soon(trace.append, "ready before")
        loop._ring.submit_nop(RingCallback(completed))
        loop.call_at(loop.time() - 1, trace.append, "due timer")
        for turn in range(2):
            loop.call_soon(trace.append, f"end of turn {turn}")   # also: no waiting
            loop._run_once()
        return trace

    assert _ring_paths(scenario, monkeypatch) == [
        "ready before", "end of turn 0", "completion", "due timer",
        "scheduled by the completion", "end of turn 1"]


def test_a_completion_callbacks_reported_error_leaves_the_loops_context_alone(monkeypatch):
    # The batch of completions runs in no context of its own (the C turn
    # makes none; see _speedups.run_batch): the loop's report of a
    # completion callback's exception gives the exception handler one, so
    # what the handler sets stays out of the context that runs the loop.
    set_by_handler = contextvars.ContextVar("set_by_handler")

    def scenario(loop):
        one_iteration(loop)
        seen = []

        def handler(loop, context):
            seen.append(context["message"])
            set_by_handler.set(True)

        def fails(res, flags):
            raise ValueError("completion")

        loop.set_exception_handler(handler)
        loop._ring.submit_nop(RingCallback(fails))
        for _ in range(2):
            loop.call_soon(seen.append, "turn")   # also: no waiting
            loop._run_once()
        return seen, set_by_handler.get(None)

    assert _ring_paths(scenario, monkeypatch) == (
        ["turn", "Exception in an io_uring completion callback", "turn"], None)


def test_an_exception_out_of_a_turns_completions_goes_to_the_handler(monkeypatch):
    # With no ring error handler, a completion's exception leaves the
    # batch (the rest runs first thing next turn, before the ready
    # callbacks, as the ring runs unfinished batches) and is reported as a
    # failed callback; the C turn builds the handle for the report then.
    def scenario(loop):
        one_iteration(loop)
        trace = []
        loop._ring.on_callback_error = None

        def fails(res, flags):
            trace.append("fails")
            raise ValueError("completion")

        loop._ring.submit_nop(RingCallback(fails))
        loop._ring.submit_nop(RingCallback(lambda res, flags: trace.append("next")))
        for _ in range(3):
            loop.call_soon(trace.append, "turn")   # also: no waiting
            loop._run_once()
        [context] = loop.handler_calls
        loop.handler_calls.clear()
        trace.append((context["message"].startswith("Exception in callback "),
                       type(context["exception"]), type(context["handle"]).__name__))
        return trace

    assert _ring_paths(scenario, monkeypatch) == [
        "turn", "fails", "next", "turn", "turn", (True, ValueError, "Handle")]
