"""Subprocesses on uringloop: exit noticed by a pidfd poll on the ring.

Where asyncio defines the behaviour the test runs on both uringloop and
asyncio's own loop, so a difference fails on one side only; the tests of
how children are watched (no thread, no child watcher, reaping at close)
run on uringloop alone.
"""
import asyncio
import errno
import gc
import hashlib
import os
import signal
import sys
import threading
import time
import warnings
from unittest import mock

import pytest

import uringloop
from uringloop import _subprocess

from . import conftest

PY = sys.executable
PIPE = asyncio.subprocess.PIPE


@pytest.fixture(autouse=True)
def current_loop(request):
    """The test's loop as the current one too (asyncio's child watchers
    of 3.11 find the loop that way)."""
    fixture = next((name for name in ("loop", "uloop") if name in request.fixturenames), None)
    if fixture is None:
        yield
        return
    asyncio.set_event_loop(request.getfixturevalue(fixture))
    yield
    asyncio.set_event_loop(None)


def run(loop, coro, timeout=60):
    return conftest.run(loop, coro, timeout)


def open_fds():
    return set(os.listdir("/proc/self/fd"))


def is_gone_or_zombie(pid):
    """'gone', 'zombie' or 'alive' for a pid of ours."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"
    return "zombie" if state == "Z" else "alive"


def wait_state(pid, wanted, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = is_gone_or_zombie(pid)
        if state == wanted:
            return state
        time.sleep(0.01)
    return is_gone_or_zombie(pid)


# -- exit codes and signals ------------------------------------------------

@pytest.mark.parametrize("code", [0, 1, 3, 255])
def test_exit_code(loop, code):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", f"raise SystemExit({code})")
        return await proc.wait()
    assert run(loop, main()) == code


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_killed_by_signal_is_negative(loop, sig):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import time; print('up', flush=True); time.sleep(60)",
            stdout=PIPE)
        assert await proc.stdout.readline() == b"up\n"
        proc.send_signal(sig)
        return await proc.wait()
    assert run(loop, main()) == -sig


def test_shell_killing_itself(loop):
    async def main():
        proc = await asyncio.create_subprocess_shell("kill -9 $$")
        return await proc.wait()
    assert run(loop, main()) == -signal.SIGKILL


def test_returncode_visible_everywhere(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "raise SystemExit(7)")
        transport = proc._transport
        popen = transport.get_extra_info("subprocess")
        await proc.wait()
        return proc.returncode, transport.get_returncode(), popen.returncode
    assert run(loop, main()) == (7, 7, 7)


def test_reaped_by_popen_wait_reports_popens_code(loop):
    # User code may reap the child itself through the Popen object; the
    # loop must then neither hang nor report a made-up code.
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "raise SystemExit(9)")
        popen = proc._transport.get_extra_info("subprocess")
        popen.wait()
        return await proc.wait()
    if isinstance(loop, uringloop.Loop):
        assert run(loop, main()) == 9
    else:
        # asyncio's watcher finds the pid gone and reports 255.
        assert run(loop, main()) in (9, 255)


# -- pipes -------------------------------------------------------------------

WRITER = r"""
import os, sys
block = bytes(range(256)) * 4096            # 1 MiB
for i in range(int(sys.argv[1])):
    view = memoryview(block[i % 256:] + block[:i % 256])
    while view:
        view = view[os.write(1, view):]
"""


def _expected_digest(mib):
    block = bytes(range(256)) * 4096
    digest = hashlib.sha256()
    for i in range(mib):
        digest.update(block[i % 256:] + block[:i % 256])
    return digest.hexdigest()


def test_large_output_streams_without_loss(loop):
    mib = 256

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", WRITER, str(mib), stdout=PIPE)
        digest = hashlib.sha256()
        total = 0
        while chunk := await proc.stdout.read(1 << 20):
            digest.update(chunk)
            total += len(chunk)
        return total, digest.hexdigest(), await proc.wait()

    total, digest, code = run(loop, main(), timeout=120)
    assert (total, code) == (mib << 20, 0)
    assert digest == _expected_digest(mib)


def test_large_output_through_communicate(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", WRITER, "64", stdout=PIPE, stderr=PIPE)
        out, err = await proc.communicate()
        return len(out), hashlib.sha256(out).hexdigest(), err, proc.returncode
    size, digest, err, code = run(loop, main(), timeout=120)
    assert (size, err, code) == (64 << 20, b"", 0)
    assert digest == _expected_digest(64)


ECHO = "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer, 1 << 16)"


def test_stdin_backpressure_and_echo(loop):
    # 64 MiB through a child that copies stdin to stdout: writes pause on
    # drain() while the child lags, and every byte comes back in order.
    chunk = os.urandom(1 << 20)
    count = 64

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", ECHO, stdin=PIPE, stdout=PIPE)
        sent = hashlib.sha256()
        peak = 0

        async def feed():
            nonlocal peak
            for _ in range(count):
                proc.stdin.write(chunk)
                sent.update(chunk)
                peak = max(peak, proc.stdin.transport.get_write_buffer_size())
                await proc.stdin.drain()
            proc.stdin.close()
            await proc.stdin.wait_closed()

        async def drain_stdout():
            got = hashlib.sha256()
            total = 0
            while data := await proc.stdout.read(1 << 20):
                got.update(data)
                total += len(data)
            return total, got.hexdigest()

        _, (total, digest) = await asyncio.gather(feed(), drain_stdout())
        return total, digest == sent.hexdigest(), peak, await proc.wait()

    total, same, peak, code = run(loop, main(), timeout=120)
    assert (total, same, code) == (count << 20, True, 0)
    assert peak >= 1 << 19       # the transport buffered: the pipe was full


def test_drain_waits_for_a_child_that_does_not_read(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import sys, time; time.sleep(0.5); sys.stdin.buffer.read()",
            stdin=PIPE)
        proc.stdin.write(b"x" * (4 << 20))
        started = time.monotonic()
        await proc.stdin.drain()
        waited = time.monotonic() - started
        proc.stdin.close()
        await proc.wait()
        return waited
    assert run(loop, main()) >= 0.3


def test_child_ignoring_sigterm_does_not_hang(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
            "print('ready', flush=True); time.sleep(60)",
            stdout=PIPE)
        assert await proc.stdout.readline() == b"ready\n"
        proc.terminate()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(), 0.5)
        proc.kill()
        return await proc.wait()
    assert run(loop, main()) == -signal.SIGKILL


def test_child_closing_stdout_early_does_not_hang(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "import os, time; os.write(1, b'bye'); os.close(1); time.sleep(60)",
            stdout=PIPE)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(proc.communicate(), 0.5)
        assert proc.returncode is None
        proc.kill()
        return await proc.wait()
    assert run(loop, main()) == -signal.SIGKILL


def test_child_exiting_while_grandchild_holds_stdout(loop):
    # The exit is known before the pipe ends; wait() still returns once the
    # exit is known and communicate() once both are.
    async def main():
        proc = await asyncio.create_subprocess_shell(
            "(sleep 0.3; echo late) & echo early", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode
    assert run(loop, main()) == (b"early\nlate\n", 0)


def test_stdin_of_an_exited_child(loop):
    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "pass", stdin=PIPE)
        await proc.wait()
        with pytest.raises((BrokenPipeError, ConnectionResetError)):
            for _ in range(100):
                proc.stdin.write(b"x" * 65536)
                await proc.stdin.drain()
        return proc.returncode
    assert run(loop, main()) == 0


def test_protocol_events(loop):
    events = []

    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.done = loop.create_future()

        def pipe_data_received(self, fd, data):
            events.append(("data", fd, data))

        def pipe_connection_lost(self, fd, exc):
            events.append(("lost", fd))

        def process_exited(self):
            events.append("exited")

        def connection_lost(self, exc):
            self.done.set_result(None)

    async def main():
        transport, proto = await loop.subprocess_exec(
            Proto, PY, "-c", "import sys; sys.stdout.write('o'); sys.stderr.write('e')",
            stdin=None)
        await proto.done
        transport.close()

    run(loop, main())
    assert sorted(map(str, events)) == sorted(map(str, [
        ("data", 1, b"o"), ("data", 2, b"e"), ("lost", 1), ("lost", 2), "exited"]))


# -- how children are watched (uringloop only) -----------------------------

def test_exit_is_reported_after_the_pipes_end(uloop):
    # asyncio 3.11's watcher thread reports an exit after the pipes' end in
    # practice (30 of 30 here), so process_exited() comes last and a wait()
    # returns with the transport finished.  The pidfd's poll could complete
    # before the pipes' last read (12 of 30 before the exit waited for it).
    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.events = []
            self.done = uloop.create_future()

        def pipe_connection_lost(self, fd, exc):
            self.events.append(fd)

        def process_exited(self):
            self.events.append("exited")

        def connection_lost(self, exc):
            self.done.set_result(None)

    async def main():
        transport, proto = await uloop.subprocess_exec(
            Proto, PY, "-c", "import sys; sys.stdout.write('o'); sys.stderr.write('e')")
        await proto.done
        transport.close()
        return proto.events[-1]

    for _ in range(50):
        assert run(uloop, main()) == "exited"


def test_exit_waits_only_a_little_for_a_grandchilds_pipe(uloop):
    # A grandchild keeps stdout open for a second: the exit is reported
    # after a few turns anyway, long before the pipe ends.
    class Proto(asyncio.SubprocessProtocol):
        def __init__(self):
            self.exited = uloop.create_future()
            self.done = uloop.create_future()

        def process_exited(self):
            self.exited.set_result(time.monotonic())

        def connection_lost(self, exc):
            self.done.set_result(time.monotonic())

    async def main():
        started = time.monotonic()
        transport, proto = await uloop.subprocess_shell(
            Proto, "sleep 1 & exit 3", stdin=None, stderr=None)
        exited = await proto.exited
        assert transport.get_returncode() == 3
        lost = await proto.done
        transport.close()
        return exited - started, lost - started

    exited, lost = run(uloop, main())
    assert exited < 0.5 < lost


def test_no_thread_per_child(uloop):
    async def main():
        before = set(threading.enumerate())
        procs = [await asyncio.create_subprocess_exec(PY, "-c", "import time; time.sleep(0.5)")
                 for _ in range(20)]
        during = set(threading.enumerate())
        codes = await asyncio.gather(*(p.wait() for p in procs))
        return during - before, codes
    new_threads, codes = run(uloop, main())
    assert new_threads == set()
    assert codes == [0] * 20


def test_child_watcher_on_the_policy_is_not_used(uloop):
    if not hasattr(asyncio, "AbstractChildWatcher"):
        pytest.skip("child watchers were removed in Python 3.14")
    watcher = mock.Mock(spec=asyncio.AbstractChildWatcher)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        asyncio.set_child_watcher(watcher)
    try:
        async def main():
            proc = await asyncio.create_subprocess_exec(PY, "-c", "pass")
            return await proc.wait()
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            assert run(uloop, main()) == 0
        assert watcher.mock_calls == []
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(None)


def test_loop_in_a_thread(uloop):
    result = []

    def in_thread():
        async def main():
            proc = await asyncio.create_subprocess_exec(
                PY, "-c", "print('hi')", stdout=PIPE)
            out, _ = await proc.communicate()
            return out, proc.returncode
        result.append(uringloop.run(main()))

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(30)
    assert result == [(b"hi\n", 0)]


def test_many_short_children_leave_nothing_behind(uloop):
    async def spawn_all():
        procs = []
        for _ in range(100):
            procs.append(await asyncio.create_subprocess_exec("/bin/true"))
        return await asyncio.gather(*(p.wait() for p in procs))

    run(uloop, asyncio.sleep(0))
    fds = open_fds()
    pending = uloop._ring.pending()
    assert run(uloop, spawn_all()) == [0] * 100
    run(uloop, asyncio.sleep(0.05))
    assert uloop._children == {}
    assert uloop._ring.pending() == pending
    assert open_fds() == fds


def test_falls_back_to_asyncio_without_pidfds(uloop, monkeypatch):
    monkeypatch.setattr(_subprocess, "_pidfd_usable", False)

    async def main():
        proc = await asyncio.create_subprocess_exec(PY, "-c", "raise SystemExit(4)")
        assert uloop._children == {}
        return await proc.wait()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            assert run(uloop, main()) == 4
    finally:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_event_loop_policy(None)


def test_out_of_fds_for_a_pidfd_waits_in_a_thread(uloop, monkeypatch):
    def no_fd(pid):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(_subprocess.os, "pidfd_open", no_fd)

    async def main():
        proc = await asyncio.create_subprocess_exec(
            PY, "-c", "print('x')", stdout=PIPE)
        out, _ = await proc.communicate()
        return out, proc.returncode, uloop._children

    assert run(uloop, main()) == (b"x\n", 0, {})


def test_close_with_a_live_child_neither_kills_nor_leaves_a_zombie():
    fds = open_fds()
    loop = uringloop.Loop()

    def reapers():
        return [t for t in threading.enumerate() if t.name == "uringloop-reaper"]

    async def main():
        return await asyncio.create_subprocess_exec(
            PY, "-c", "import time; time.sleep(60)", stdin=PIPE, stdout=PIPE)

    proc = run(loop, main())
    pid = proc.pid
    loop.close()
    assert is_gone_or_zombie(pid) == "alive"          # not killed by close
    assert len(reapers()) == 1
    os.kill(pid, signal.SIGKILL)
    assert wait_state(pid, "gone") == "gone"          # reaped, not a zombie
    for thread in reapers():
        thread.join(5)
    assert reapers() == []
    assert proc._transport.get_extra_info("subprocess").returncode == -signal.SIGKILL
    # The transport was never closed.  Collecting it closes its pipes and,
    # as with asyncio's loop, warns and reports "Event loop is closed" from
    # its __del__; none of the loop's own fds (ring, pidfd) remain.
    with warnings.catch_warnings(), mock.patch("sys.unraisablehook"):
        warnings.simplefilter("ignore", ResourceWarning)
        del proc
        gc.collect()
    assert open_fds() <= fds


def test_close_reaps_a_child_that_exited_unnoticed():
    loop = uringloop.Loop()

    async def main():
        return await asyncio.create_subprocess_exec(PY, "-c", "pass")

    proc = run(loop, main())
    pid = proc.pid
    assert wait_state(pid, "zombie") == "zombie"       # exited, not yet reaped
    loop.close()
    assert is_gone_or_zombie(pid) == "gone"           # reaped by close itself
    assert not any(t.name == "uringloop-reaper" for t in threading.enumerate())
    assert proc._transport.get_returncode() == 0
    proc._transport.close()                           # no pipes: nothing to do


def test_forked_child_closing_the_loop_leaves_the_parents_children_alone(uloop):
    async def main():
        return await asyncio.create_subprocess_exec(
            PY, "-c", "import sys; sys.stdin.read()", stdin=PIPE)

    proc = run(uloop, main())
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with mock.patch.object(_subprocess.logger, "warning") as warn:
                uloop.close()
            code = 0 if not warn.called else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert is_gone_or_zombie(proc.pid) == "alive"
    proc.stdin.close()
    assert run(uloop, proc.wait()) == 0
