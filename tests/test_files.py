"""Async file I/O (``uringloop.open`` and the path functions).

Every behaviour test runs on both loops (the ``loop`` fixture): on
uringloop every operation is an io_uring request, on asyncio's own loop
the same API runs ``os`` calls in the executor; both must behave like the
built-in ``open()``, and many tests compare against it directly.  The
fixture fails a test if anything reached the loop's exception handler.
Tests on the ``uloop`` fixture only need a request that stays in the kernel
(a FIFO with no data) to observe cancellation of the SQE itself.  The last
test proves with strace that concurrent preads run in the kernel through
the ring: no pread64 syscall, no thread.
"""
import asyncio
import concurrent.futures
import errno
import gc
import io
import mmap
import os
import random
import shutil
import stat as stat_module
import subprocess
import sys
import textwrap
import threading
import warnings

import pytest

import uringloop
from uringloop.files import _ops as _files_ops
from uringloop._uring import ffi

from .conftest import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))





def open_fds():
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


def drain_fifo(path):
    """Everything currently in the FIFO, read without blocking."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks)


# -- the engine ------------------------------------------------------------

def test_engine_follows_the_loop(loop, tmp_path):
    async def main():
        async with uringloop.open(tmp_path / "f", "wb") as f:
            return f.engine
    assert run(loop, main()) == ("io_uring" if loop.is_uring else "executor")


def test_a_completion_hook_that_raises_fails_the_waiter(loop, tmp_path):
    """An exception anywhere in a completion resolves the awaiting call
    with it: the caller neither hangs nor leaves it to the loop's
    exception handler."""
    path = tmp_path / "f"
    path.write_bytes(b"abc")

    def on_cqe(res):
        raise ValueError(f"hook saw {res}")

    async def main():
        engine = _files_ops.engine_for(loop)
        buf = ffi.new("char[]", 3)
        fd = os.open(path, os.O_RDONLY)
        try:
            with pytest.raises(ValueError, match="hook saw 3"):
                await _files_ops.perform(engine, engine.read, (fd, buf, 3, 0, buf),
                                         on_cqe=on_cqe)
        finally:
            os.close(fd)
    run(loop, main())


def test_open_is_awaitable_and_a_context_manager(loop, tmp_path):
    path = tmp_path / "f"

    async def main():
        f = await uringloop.open(path, "wb")
        assert isinstance(f, uringloop.AsyncFile) and not f.closed
        await f.write(b"abc")
        await f.close()
        assert f.closed
        async with uringloop.open(path, "rb") as g:
            assert await g.read() == b"abc"
        assert g.closed
        return repr(g)
    assert "closed" in run(loop, main())


# -- reading and writing bytes -----------------------------------------------

def test_read_sizes_and_eof(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main():
        async with uringloop.open(path, "rb") as f:
            assert await f.read(0) == b""
            assert await f.read(3) == b"012"
            assert await f.read(100) == b"3456789"   # short read at EOF
            assert await f.read(5) == b""
            assert await f.read() == b""
            await f.seek(0)
            assert await f.read(None) == b"0123456789"
            await f.seek(2)
            assert await f.read(-1) == b"23456789"
            with pytest.raises(TypeError, match="integer or None"):
                await f.read("3")
    run(loop, main())


@pytest.mark.parametrize("buffering", [-1, 0, 7, 4096])
def test_large_round_trip(loop, tmp_path, buffering):
    path = tmp_path / "f"
    data = random.Random(5).randbytes(3 * 1024 * 1024 + 17)

    async def main():
        async with uringloop.open(path, "wb", buffering=buffering) as f:
            assert await f.write(data[:10]) == 10
            assert await f.write(memoryview(data)[10:200_000]) == 199_990
            assert await f.write(bytearray(data[200_000:])) == len(data) - 200_000
        assert path.read_bytes() == data
        async with uringloop.open(path, "rb", buffering=buffering) as f:
            got = [await f.read(1000), await f.read(500_000)]
            while chunk := await f.read(300_000):
                got.append(chunk)
        assert b"".join(got) == data
        assert await uringloop.read_bytes(path) == data
    run(loop, main())


def test_read1_and_unbuffered_reads(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)

    async def main():
        async with uringloop.open(path, "rb", buffering=0) as f:
            assert await f.read1(0) == b""
            assert await f.read1(10) == b"x" * 10
            assert await f.read(1000) == b"x" * 90   # unbuffered: one read
        async with uringloop.open(path, "rb") as f:
            assert await f.read1() == b"x" * 100
    run(loop, main())


@pytest.mark.parametrize("buffering", [-1, 0, 100])
def test_readinto(loop, tmp_path, buffering):
    path = tmp_path / "f"
    data = random.Random(4).randbytes(300_000)
    path.write_bytes(data)

    async def main():
        async with uringloop.open(path, "rb", buffering=buffering) as f:
            small = bytearray(10)
            assert await f.readinto(small) == 10 and small == data[:10]
            big = bytearray(200_000)
            view = memoryview(big)[5:]
            got = await f.readinto(view)
            assert big[5:5 + got] == data[10:10 + got]
            assert got == (199_995 if buffering else got)
            rest = bytearray(500_000)
            total = 10 + got
            while n := await f.readinto(rest):
                assert rest[:n] == data[total:total + n]
                total += n
            assert total == len(data)
            with pytest.raises(TypeError):
                await f.readinto(b"read-only")
    run(loop, main())


def test_cancelled_readinto_loses_nothing(loop, tmp_path):
    path = tmp_path / "f"
    data = random.Random(6).randbytes(1 << 20)
    path.write_bytes(data)

    async def main():
        async with uringloop.open(path, "rb", buffering=4096) as f:
            position, cancelled = 0, 0
            for _ in range(20):
                target = bytearray(100_000)
                task = asyncio.ensure_future(f.readinto(target))
                await asyncio.sleep(0)
                task.cancel()
                try:
                    n = await task
                except asyncio.CancelledError:
                    cancelled += 1
                else:
                    assert target[:n] == data[position:position + n]
                    position += n
                assert await f.tell() == position
            assert cancelled >= 10
            assert await f.read() == data[position:]
    run(loop, main())


def test_readline_readlines_and_iteration(loop, tmp_path):
    path = tmp_path / "f"
    lines = [b"first\n", b"\n", b"x" * 200_000 + b"\n", b"last without newline"]
    path.write_bytes(b"".join(lines))

    async def main():
        async with uringloop.open(path, "rb", buffering=4096) as f:
            assert [line async for line in f] == lines
        async with uringloop.open(path, "rb") as f:
            assert await f.readline(3) == b"fir"
            assert await f.readline() == b"st\n"
            assert await f.readlines() == lines[1:]
            assert await f.readline() == b""
        async with uringloop.open(path, "rb") as f:
            assert await f.readlines(3) == lines[:1]
    run(loop, main())


def test_seek_and_tell(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main():
        async with uringloop.open(path, "rb+") as f:
            assert await f.tell() == 0
            assert await f.read(4) == b"0123"
            assert await f.tell() == 4
            assert await f.seek(2, os.SEEK_CUR) == 6
            assert await f.read(1) == b"6"
            assert await f.seek(-3, os.SEEK_END) == 7
            assert await f.read() == b"789"
            await f.write(b"AB")                     # extends the file
            assert await f.tell() == 12
            assert await f.seek(0, os.SEEK_END) == 12
            assert await f.seek(20) == 20            # past the end is allowed
            assert await f.read() == b""
            with pytest.raises(OSError) as info:
                await f.seek(-1)
            assert info.value.errno == errno.EINVAL
            with pytest.raises(ValueError, match="whence value 5 unsupported"):
                await f.seek(0, 5)
        assert path.read_bytes() == b"0123456789AB"
    run(loop, main())


def test_write_after_read_goes_to_the_read_position(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"line1\nline2\nline3\n")

    async def main():
        async with uringloop.open(path, "rb+") as f:
            assert await f.readline() == b"line1\n"   # reads ahead 64 KiB
            await f.write(b"LINE2")
            assert await f.tell() == 11
            assert await f.read() == b"\nline3\n"
    run(loop, main())
    assert path.read_bytes() == b"line1\nLINE2\nline3\n"


def test_append_modes(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"start")

    async def main():
        async with uringloop.open(path, "ab") as f:
            assert await f.tell() == 5
            await f.write(b"+one")
            await f.flush()
            assert await f.tell() == 9
        async with uringloop.open(path, "ab+") as f:
            await f.seek(0)
            assert await f.read(5) == b"start"
            await f.write(b"+two")                   # O_APPEND: at the end
            await f.flush()
            assert await f.tell() == 13
            await f.seek(0)
            assert await f.read() == b"start+one+two"
            await f.pwrite(b"!", 0)                  # Linux appends, as os.pwrite does
    run(loop, main())
    assert path.read_bytes() == b"start+one+two!"


def test_write_buffering_and_flush(loop, tmp_path):
    path = tmp_path / "f"

    async def main():
        async with uringloop.open(path, "wb") as f:
            await f.write(b"buffered")
            assert path.read_bytes() == b""
            await f.flush()
            assert path.read_bytes() == b"buffered"
        async with uringloop.open(path, "wb", buffering=0) as f:
            await f.write(b"direct")
            assert path.read_bytes() == b"direct"
            await f.writelines([b"-a", bytearray(b"-b")])
            assert path.read_bytes() == b"direct-a-b"
        async with uringloop.open(path, "ab") as f:
            await f.write(b"-closed")
        assert path.read_bytes() == b"direct-a-b-closed"   # close flushes
        with pytest.warns(RuntimeWarning, match="line buffering"):
            await (await uringloop.open(path, "rb", buffering=1)).close()
    run(loop, main())


def test_write_type_errors(loop, tmp_path):
    async def main():
        async with uringloop.open(tmp_path / "f", "wb") as f:
            with pytest.raises(TypeError, match="a bytes-like object is required, not 'str'"):
                await f.write("text")
            with pytest.raises(TypeError, match="not 'int'"):
                await f.write(3)
        async with uringloop.open(tmp_path / "f", "w") as f:
            with pytest.raises(TypeError, match="write\\(\\) argument must be str, not bytes"):
                await f.write(b"bytes")
    run(loop, main())


class _Stingy:
    """An engine wrapper whose reads and writes move at most ``cap`` bytes
    per request, as a kernel may (pipes, signals, quotas); ``sizes``
    records the length of every request it was asked for."""

    def __init__(self, engine, cap=None):
        self._engine, self._cap = engine, cap
        self.sizes = []

    @property
    def requests(self):
        return len(self.sizes)

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def _trim(self, vecs):
        self.sizes.append(sum(nbytes for _, nbytes in vecs))
        if self._cap is None:
            return vecs
        out, left = [], self._cap
        for ptr, nbytes in vecs:
            if left:
                out.append((ptr, min(nbytes, left)))
                left -= out[-1][1]
        return out

    def read(self, fd, ptr, nbytes, offset, keep, cb):
        (ptr, nbytes), = self._trim([(ptr, nbytes)])
        return self._engine.read(fd, ptr, nbytes, offset, keep, cb)

    def write(self, fd, ptr, nbytes, offset, keep, cb):
        (ptr, nbytes), = self._trim([(ptr, nbytes)])
        return self._engine.write(fd, ptr, nbytes, offset, keep, cb)

    def readv(self, fd, vecs, offset, keep, cb):
        return self._engine.readv(fd, self._trim(vecs), offset, keep, cb)

    def writev(self, fd, vecs, offset, keep, cb):
        return self._engine.writev(fd, self._trim(vecs), offset, keep, cb)


def test_short_reads_and_writes_are_resubmitted(loop, tmp_path):
    path = tmp_path / "f"
    data = random.Random(8).randbytes(100_000)

    async def main():
        async with uringloop.open(path, "wb", buffering=1000) as f:
            f._engine = stingy = _Stingy(f._engine, 777)
            await f.write(data[:500])                 # buffered
            await f.write(data[500:])                 # buffered + data: WRITEV, cut short
            await f.flush()
            assert stingy.requests >= len(data) // 777
            await f.pwrite(data[:3000], 0)            # pwrite resubmits too
        assert path.read_bytes() == data
        async with uringloop.open(path, "rb") as f:
            f._engine = _Stingy(f._engine, 1000)
            assert await f.read(5000) == data[:5000]  # short reads mid-file: read on
            await f.seek(0)
            assert await f.read() == data
    run(loop, main())


# -- lengths beyond one request ---------------------------------------------------

def test_every_request_is_capped_and_the_rest_loops(loop, tmp_path, monkeypatch):
    """No read or write request asks for more than the cap (an SQE length
    is 32 bits); each operation loops over the rest.  The cap shrunk to
    4 KiB makes every path loop on a small file."""
    cap = 4096
    monkeypatch.setattr(_files_ops, "MAX_RW", cap)
    path = tmp_path / "f"
    data = random.Random(3).randbytes(50_000)

    async def main():
        async with uringloop.open(path, "wb", buffering=1000) as f:
            f._engine = recorder = _Stingy(f._engine)
            await f.write(data[:500])                       # buffered
            await f.write(data[500:30_000])                 # buffered + data: WRITEV
            await f.pwrite(data[30_000:40_000], 30_000)
            assert await f.pwritev([data[40_000:45_000], data[45_000:]], 40_000) == 10_000
        async with uringloop.open(path, "rb", buffering=1000) as f:
            f._engine = reader = _Stingy(f._engine)
            assert await f.read(12_000) == data[:12_000]
            into = bytearray(12_000)
            assert await f.readinto(into) == 12_000 and into == data[12_000:24_000]
            assert await f.read() == data[24_000:]          # to the end: size + 1 asked
            assert await f.pread(50_001, 0) == data
            parts = [bytearray(30_000), bytearray(30_000)]
            assert await f.preadv(parts, 0) == 50_000
            assert b"".join(parts)[:50_000] == data
        async with uringloop.open(path, "w", encoding="latin-1") as f:
            f.buffer._engine = texts = _Stingy(f.buffer._engine)
            await f.write(data.decode("latin-1"))
        return recorder.sizes, reader.sizes, texts.sizes

    written, read, texts = run(loop, main())
    assert path.read_bytes() == data
    for sizes in (written, read, texts):
        assert max(sizes) == cap, sizes
    assert len(written) >= len(data) // cap and len(texts) >= len(data) // cap


MAP_NORESERVE = getattr(mmap, "MAP_NORESERVE", 0x4000)   # 3.13 names it


def test_writes_over_4_gib_go_through(loop):
    """A write of more than 4 GiB -- from untouched MAP_NORESERVE memory to
    /dev/null, so it costs neither RAM nor disk -- is written in full, in
    requests no larger than the cap (it was an OverflowError)."""
    size = (4 << 30) + 100
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | MAP_NORESERVE)
    view = memoryview(region)

    async def main():
        async with uringloop.open("/dev/null", "wb") as f:
            f._engine = recorder = _Stingy(f._engine)
            assert await f.write(view) == size
            assert await f.write(b"x") == 1                 # buffered, then WRITEV with view
            assert await f.write(view) == size
            assert await f.pwrite(view, 0) == size
            assert await f.pwritev([b"head", view], 0) == size + 4
        return recorder.sizes

    try:
        sizes = run(loop, main(), timeout=120)
    finally:
        view.release()
        region.close()
    assert max(sizes) == _files_ops.MAX_RW <= 0x7FFFF000
    assert sum(sizes) >= 4 * size


def test_reads_into_buffers_over_4_gib(loop, tmp_path):
    """Reads into a buffer of more than 4 GiB (untouched MAP_NORESERVE
    memory) ask the kernel for at most the cap at a time."""
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    size = (4 << 30) + 100
    region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | MAP_NORESERVE)
    view = memoryview(region)

    async def main():
        async with uringloop.open(path, "rb") as f:
            f._engine = recorder = _Stingy(f._engine)
            assert await f.readinto(view) == 10
            assert await f.preadv([view], 0) == 10
            assert await f.pread(size, 0) == b"0123456789"
            await f.seek(0)
            assert await f.read(size) == b"0123456789"
        return recorder.sizes

    try:
        sizes = run(loop, main())
        assert view[:10] == b"0123456789"
    finally:
        view.release()
        region.close()
    assert max(sizes) <= _files_ops.MAX_RW


# -- explicit offsets ----------------------------------------------------------

def test_pread_pwrite_preadv_pwritev(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main():
        async with uringloop.open(path, "rb+") as f:
            assert await f.read(2) == b"01"
            assert await f.pread(3, 5) == b"567"
            assert await f.pread(100, 8) == b"89"     # short at EOF, like os.pread
            assert await f.pread(5, 50) == b""
            assert await f.pread(0, 0) == b""
            assert await f.tell() == 2                # no position change
            assert await f.pwrite(b"AB", 3) == 2
            assert await f.pwritev([b"x", memoryview(b"yz")], 12) == 3
            a, b = bytearray(2), bytearray(3)
            assert await f.preadv([a, b], 2) == 5
            assert (a, b) == (bytearray(b"2A"), bytearray(b"B56"))
            assert await f.read(3) == b"2AB"
            with pytest.raises(OSError) as info:
                await f.pread(1, -1)
            assert info.value.errno == errno.EINVAL
            with pytest.raises(OSError) as info:
                await f.pread(-1, 0)                  # os.pread's answer, not ValueError
            assert info.value.errno == errno.EINVAL
    run(loop, main())
    assert path.read_bytes() == b"012AB56789\0\0xyz"


def test_many_concurrent_preads(loop, tmp_path):
    path = tmp_path / "f"
    data = random.Random(1).randbytes(1 << 20)
    path.write_bytes(data)
    offsets = [random.Random(2).randrange(0, len(data) - 4096) for _ in range(256)]

    async def main():
        async with uringloop.open(path, "rb") as f:
            return await asyncio.gather(*(f.pread(4096, off) for off in offsets))
    for off, got in zip(offsets, run(loop, main())):
        assert got == data[off:off + 4096]


# -- whole-file operations -------------------------------------------------------

def test_truncate(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")

    async def main():
        async with uringloop.open(path, "rb+") as f:
            assert await f.read(4) == b"0123"
            assert await f.truncate() == 4            # at the position
            assert await f.tell() == 4
            assert await f.read() == b""
            assert await f.truncate(8) == 8           # grows with zeros
            assert await f.read() == b"\0" * 4
        async with uringloop.open(path, "rb") as f:
            with pytest.raises(io.UnsupportedOperation):
                await f.truncate(0)
    run(loop, main())
    assert path.read_bytes() == b"0123" + b"\0" * 4


def test_fsync_fdatasync_fallocate_stat(loop, tmp_path):
    path = tmp_path / "f"

    async def main():
        async with uringloop.open(path, "wb") as f:
            await f.write(b"abc")
            await f.fsync()
            assert path.read_bytes() == b"abc"
            await f.fdatasync()
            await f.fallocate(0, 8192)
            st = await f.stat()
            assert st.st_size == 8192 and st.st_blocks >= 16
            with pytest.raises(OSError) as info:
                await f.fallocate(0, 0)
            assert info.value.errno == errno.EINVAL
    run(loop, main())


def test_closed_file(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")

    async def main():
        f = await uringloop.open(path, "rb+")
        await f.close()
        await f.close()                               # idempotent
        for op in (f.read(), f.readline(), f.pread(1, 0), f.tell(), f.flush(),
                   f.write(b"x"), f.seek(0), f.truncate(), f.fsync(), f.stat()):
            with pytest.raises(ValueError, match="closed file"):
                await op
        for op in (f.fileno, f.readable, f.writable, f.seekable):
            with pytest.raises(ValueError):
                op()
    run(loop, main())


def test_unsupported_operations(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"data")

    async def main():
        async with uringloop.open(path, "ab") as f:
            assert (f.readable(), f.writable(), f.seekable()) == (False, True, True)
            for op in (f.read(), f.readline(), f.read1(), f.pread(1, 0)):
                with pytest.raises(io.UnsupportedOperation, match="read"):
                    await op
        async with uringloop.open(path, "rb") as f:
            for op in (f.write(b"x"), f.pwrite(b"x", 0)):
                with pytest.raises(io.UnsupportedOperation, match="write"):
                    await op
        async with uringloop.open(path, "w") as f:
            with pytest.raises(io.UnsupportedOperation, match="not readable"):
                await f.read()
        async with uringloop.open(path, "r") as f:
            with pytest.raises(io.UnsupportedOperation, match="not writable"):
                await f.write("x")
    run(loop, main())


# -- errors exactly as open() ------------------------------------------------------

def _builtin_error(path, mode, **kwargs):
    try:
        open(path, mode, **kwargs).close()
    except Exception as exc:  # noqa: BLE001 - any exception is the expectation
        return exc
    raise AssertionError(f"open({path!r}, {mode!r}) did not fail")


def _error_cases(tmp_path):
    (tmp_path / "exists").write_bytes(b"")
    (tmp_path / "dir").mkdir()
    cases = [(tmp_path / "missing", "rb"), (tmp_path / "missing" / "x", "w"),
             (tmp_path / "dir", "rb"), (tmp_path / "dir", "r"), (tmp_path / "dir", "wb"),
             (tmp_path / "dir", "a"), (tmp_path / "exists", "x"),
             (tmp_path / "exists" / "sub", "rb"), (str(tmp_path / "missing"), "rb"),
             (os.fsencode(tmp_path / "missing"), "rb")]
    if os.path.exists("/proc/sys/kernel/ostype"):   # read-only even for root
        cases.append(("/proc/sys/kernel/ostype", "w"))
    return cases


def test_open_errors_match_builtin(loop, tmp_path):
    for path, mode in _error_cases(tmp_path):
        expected = _builtin_error(path, mode)
        with pytest.raises(type(expected)) as info:
            run(loop, uringloop.open(path, mode))
        assert (info.value.errno, info.value.filename) == (expected.errno, expected.filename), \
            (path, mode)
        assert str(info.value) == str(expected)


@pytest.mark.parametrize("kwargs", [
    dict(mode="z"), dict(mode="rw"), dict(mode="rr"), dict(mode="tb"), dict(mode="b"),
    dict(mode="+"), dict(mode="r+b+"), dict(mode="rU"), dict(mode=""), dict(mode="wx"),
    dict(mode="rb", encoding="utf8"), dict(mode="rb", errors="strict"),
    dict(mode="rb", newline=""), dict(mode="r", newline="x"), dict(mode="r", buffering=0),
    dict(mode="r", encoding="no-such-codec"), dict(mode="r", encoding="hex"),
    dict(mode=3), dict(mode="r", newline=3), dict(mode="r", encoding=3),
    dict(mode="rb", buffering="x"), dict(mode="rb", buffering=1.5),
    dict(mode="rb", buffering=1 << 31), dict(mode="rb", buffering=-(1 << 31) - 1),
    dict(mode="rb", buffering=1 << 64),
])
def test_bad_arguments_match_builtin(tmp_path, kwargs):
    path = tmp_path / "f"
    path.write_bytes(b"")
    expected = _builtin_error(path, **kwargs)
    with pytest.raises(type(expected)) as info:
        uringloop.open(path, **kwargs)    # checked before any I/O, like open()
    assert str(info.value) == str(expected)


def test_bad_paths(loop, tmp_path):
    async def main():
        with pytest.raises(ValueError, match="embedded null byte"):
            await uringloop.open(str(tmp_path) + "/a\0b", "rb")
        with pytest.raises(TypeError, match="expected str, bytes or os.PathLike"):
            await uringloop.open(3.5, "rb")
        with pytest.raises(ValueError, match="embedded null byte"):
            await uringloop.stat("a\0b")
    run(loop, main())


def test_modes_and_names_match_builtin(loop, tmp_path):
    path = tmp_path / "f"
    for mode in ("rb", "r+b", "w+b", "wb", "ab", "a+b", "r", "w+", "a+t"):
        path.write_bytes(b"")
        with open(path, mode) as builtin:
            expected = (builtin.mode, builtin.name)

        async def main():
            async with uringloop.open(path, mode) as f:
                return f.mode, f.name
        assert run(loop, main()) == (expected[0], os.fspath(path))


# -- text mode ---------------------------------------------------------------------

TEXTS = ["plain ascii\nsecond line\n", "caf\u00e9 \u20ac \U0001f600\nna\u00efve\n",
         "dos\r\nlines\r\nmixed\rold mac\rand\nunix", "no newline at all", "",
         "\r\n\r\n\r\r\n\n", "x" * 70_000 + "\r\n" + "y" * 10]


@pytest.mark.parametrize("newline", [None, "", "\n", "\r", "\r\n"])
@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1"])
def test_text_reading_matches_builtin(loop, tmp_path, newline, encoding):
    path = tmp_path / "f"

    async def main(text):
        async with uringloop.open(path, "r", encoding=encoding, errors="replace",
                                  newline=newline, buffering=4096) as f:
            lines = [line async for line in f]
        async with uringloop.open(path, encoding=encoding, errors="replace",
                                  newline=newline) as f:
            first, rest = await f.read(7), await f.read()
        return lines, first + rest

    for text in TEXTS:
        path.write_bytes(text.encode(encoding, "replace"))
        with open(path, encoding=encoding, errors="replace", newline=newline) as f:
            expected_lines = f.readlines()
        with open(path, encoding=encoding, errors="replace", newline=newline) as f:
            expected_all = f.read()
        lines, everything = run(loop, main(text))
        assert lines == expected_lines
        assert everything == expected_all


@pytest.mark.parametrize("newline", [None, "", "\n", "\r", "\r\n"])
def test_text_writing_matches_builtin(loop, tmp_path, newline):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    parts = ["caf\u00e9\n", "two\r\nthree", "\n", "end"]
    with open(theirs, "w", encoding="utf-16", newline=newline) as f:
        f.writelines(parts)

    async def main():
        async with uringloop.open(ours, "w", encoding="utf-16", newline=newline) as f:
            await f.writelines(parts)
        async with uringloop.open(ours, "a", encoding="utf-16", newline=newline) as f:
            assert await f.write("+") == 1            # no second BOM
    run(loop, main())
    with open(theirs, "a", encoding="utf-16", newline=newline) as f:
        f.write("+")
    assert ours.read_bytes() == theirs.read_bytes()


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16", "latin-1"])
def test_text_tell_seek_round_trip(loop, tmp_path, encoding):
    path = tmp_path / "f"
    text = "".join(f"line {i} \u00e9\u00e8 {'z' * (i % 50)}\r\n" for i in range(3000))
    path.write_bytes(text.encode(encoding))

    async def main():
        async with uringloop.open(path, encoding=encoding, buffering=1000) as f:
            marks = []
            while True:
                marks.append(await f.tell())
                if not await f.readline():
                    break
            picked = random.Random(3).sample(range(len(marks)), 40)
            for i in picked:
                assert await f.seek(marks[i]) == marks[i]
                assert await f.tell() == marks[i]
                assert await f.read(30) == expected[i][:30]
            await f.seek(0)
            assert await f.read(5) == "line "
            assert await f.seek(0, os.SEEK_CUR) == await f.tell()
            end = await f.seek(0, os.SEEK_END)
            assert end == path.stat().st_size and await f.read() == ""
            with pytest.raises(io.UnsupportedOperation, match="nonzero cur-relative"):
                await f.seek(1, os.SEEK_CUR)
            with pytest.raises(io.UnsupportedOperation, match="nonzero end-relative"):
                await f.seek(1, os.SEEK_END)
            with pytest.raises(ValueError, match="negative seek position"):
                await f.seek(-1)
            with pytest.raises(ValueError, match="invalid whence"):
                await f.seek(0, 7)
            return marks

    with open(path, encoding=encoding) as f:
        lines = f.readlines()
    expected = ["".join(lines[i:])[:30] for i in range(len(lines) + 1)]
    marks = run(loop, main())
    if encoding != "utf-16":
        # Stateless encodings: tell() is the plain byte offset, as built-in.
        with open(path, encoding=encoding) as f:
            builtin_marks = []
            while True:
                builtin_marks.append(f.tell())
                if not f.readline():
                    break
        assert marks == builtin_marks


def test_text_update_mode_writes_where_reading_stopped(loop, tmp_path):
    path = tmp_path / "f"
    path.write_text("caf\u00e9\nline2\nline3\n", encoding="utf-8")

    async def main():
        async with uringloop.open(path, "r+", encoding="utf-8") as f:
            assert await f.readline() == "caf\u00e9\n"
            await f.write("LINE2")
            assert await f.readline() == "\n"
            assert await f.tell() == 12
            await f.truncate()
    run(loop, main())
    assert path.read_text(encoding="utf-8") == "caf\u00e9\nLINE2\n"


def test_text_line_buffering_and_errors(loop, tmp_path):
    path = tmp_path / "f"

    async def main():
        async with uringloop.open(path, "w", buffering=1, encoding="ascii") as f:
            await f.write("no newline")
            assert path.read_bytes() == b""
            await f.write(" now\n")
            assert path.read_bytes() == b"no newline now\n"
            with pytest.raises(UnicodeEncodeError):
                await f.write("\u00e9")
        path.write_bytes(b"ok \xff bad")
        async with uringloop.open(path, encoding="utf-8") as f:
            with pytest.raises(UnicodeDecodeError):
                await f.read()
        async with uringloop.open(path, encoding="utf-8", errors="replace") as f:
            assert await f.read() == "ok \ufffd bad"
            assert f.encoding == "utf-8" and f.errors == "replace"
        async with uringloop.open(path, "r", newline="") as f:
            assert f.newlines is None
    run(loop, main())


# -- path functions --------------------------------------------------------------

def _same_stat(ours, theirs):
    fields = [n for n in dir(theirs) if n.startswith("st_") and "atime" not in n]
    return {n: getattr(ours, n) for n in fields} == {n: getattr(theirs, n) for n in fields}


def test_stat_matches_os_stat(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x" * 12345)
    link = tmp_path / "link"
    link.symlink_to(path)

    async def main():
        st = await uringloop.stat(path)
        lst = await uringloop.stat(link, follow_symlinks=False)
        with open(path, "rb") as f:
            fst = await uringloop.stat(f.fileno())
        with pytest.raises(FileNotFoundError) as info:
            await uringloop.stat(tmp_path / "missing")
        assert info.value.filename == str(tmp_path / "missing")
        return st, lst, fst, await uringloop.stat(link), await uringloop.stat("/dev/null")
    st, lst, fst, via_link, dev = run(loop, main())
    assert _same_stat(st, os.stat(path)) and _same_stat(via_link, os.stat(path))
    assert _same_stat(lst, os.lstat(link)) and stat_module.S_ISLNK(lst.st_mode)
    assert _same_stat(fst, os.stat(path))
    assert _same_stat(dev, os.stat("/dev/null")) and dev.st_rdev == os.stat("/dev/null").st_rdev
    assert st.st_mtime_ns == os.stat(path).st_mtime_ns
    assert abs(st.st_mtime - os.stat(path).st_mtime) < 1e-6


def test_remove_rename_mkdir_makedirs(loop, tmp_path):
    async def main():
        await uringloop.write_bytes(tmp_path / "a", b"A")
        await uringloop.rename(tmp_path / "a", tmp_path / "b")
        assert not (tmp_path / "a").exists() and (tmp_path / "b").read_bytes() == b"A"
        with pytest.raises(FileNotFoundError) as info:
            await uringloop.rename(tmp_path / "a", tmp_path / "c")
        assert (info.value.filename, info.value.filename2) == (str(tmp_path / "a"),
                                                               str(tmp_path / "c"))
        assert str(tmp_path / "a") in str(info.value) and " -> " in str(info.value)
        await uringloop.remove(tmp_path / "b")
        with pytest.raises(FileNotFoundError):
            await uringloop.remove(tmp_path / "b")
        await uringloop.mkdir(tmp_path / "d", 0o700)
        assert stat_module.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o700 & ~_umask()
        with pytest.raises(IsADirectoryError):
            await uringloop.remove(tmp_path / "d")
        with pytest.raises(FileExistsError):
            await uringloop.mkdir(tmp_path / "d")
        await uringloop.rmdir(tmp_path / "d")
        deep = tmp_path / "x" / "y" / "z"
        await uringloop.makedirs(deep)
        assert deep.is_dir()
        with pytest.raises(FileExistsError):
            await uringloop.makedirs(deep)
        await uringloop.makedirs(deep, exist_ok=True)
        await uringloop.makedirs(str(tmp_path / "p" / "q") + "/", exist_ok=True)
        assert (tmp_path / "p" / "q").is_dir()
        (tmp_path / "file").write_bytes(b"")
        with pytest.raises(FileExistsError):
            await uringloop.makedirs(tmp_path / "file", exist_ok=True)
        with pytest.raises(NotADirectoryError):
            await uringloop.makedirs(tmp_path / "file" / "sub")
    run(loop, main())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_whole_file_helpers(loop, tmp_path):
    async def main():
        path = tmp_path / "t"
        assert await uringloop.write_text(path, "caf\u00e9\n", encoding="latin-1") == 5
        assert path.read_bytes() == b"caf\xe9\n"
        assert await uringloop.read_text(path, encoding="latin-1") == "caf\u00e9\n"
        await uringloop.write_text(path, "a\nb", newline="\r\n")
        assert await uringloop.read_bytes(path) == b"a\r\nb"
        assert await uringloop.read_text(path) == "a\nb"
        assert await uringloop.write_bytes(path, bytearray(b"raw")) == 3
        assert path.read_bytes() == b"raw"
        with pytest.raises(TypeError):
            await uringloop.write_text(path, b"bytes")
        with pytest.raises(FileNotFoundError):
            await uringloop.read_bytes(tmp_path / "missing")
        assert await uringloop.read_bytes("/proc/self/status") != b""   # size 0, short reads
    run(loop, main())


# -- cancellation and closing ------------------------------------------------------

def test_cancelled_read_loses_nothing(loop, tmp_path):
    path = tmp_path / "f"
    data = bytes(range(256)) * 64
    path.write_bytes(data)

    async def main():
        async with uringloop.open(path, "rb", buffering=0) as f:
            assert await f.read(10) == data[:10]
            position, cancelled = 10, 0
            for _ in range(20):
                task = asyncio.ensure_future(f.read(100))
                await asyncio.sleep(0)            # started: the request is out
                task.cancel()
                try:
                    got = await task
                except asyncio.CancelledError:
                    cancelled += 1                # as if the read never happened
                else:
                    # Finished before the cancel (the bytes a cancelled read
                    # got were waiting in the read-ahead): in order.
                    assert got == data[position:position + 100]
                    position += 100
                assert await f.tell() == position
            assert cancelled >= 10
            assert await f.read(100) == data[position:position + 100]
            assert await f.read() == data[position + 100:]
    run(loop, main())


def test_cancelled_write_moves_position_by_what_was_written(loop, tmp_path):
    path = tmp_path / "f"
    data = b"w" * 300_000

    async def main():
        async with uringloop.open(path, "wb") as f:
            await f.write(b"head")                  # buffered, must survive
            task = asyncio.ensure_future(f.write(data))
            await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await f.write(b"tail")
            position = await f.tell()
        return position
    position = run(loop, main())
    content = path.read_bytes()
    # Whatever part of `data` the kernel took is there, the buffered head
    # is never lost, and the tail lands exactly at the reported position.
    assert content.startswith(b"head") and content.endswith(b"tail")
    assert len(content) == position and content[4:-4] == data[:len(content) - 8]


def test_cancelling_a_pending_read_cancels_the_sqe(uloop, fifo):
    async def main():
        ring = uloop._ring
        async with uringloop.open(fifo, "rb+", buffering=0) as f:
            await asyncio.sleep(0)
            baseline = ring.pending()
            task = asyncio.ensure_future(f.read(5))
            await asyncio.sleep(0.05)
            assert ring.pending() == baseline + 1     # the read sits in the kernel
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(100):
                if ring.pending() == baseline:
                    break
                await asyncio.sleep(0.001)
            assert ring.pending() == baseline         # its CQE came back (cancelled)
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(writer, b"hello")
            os.close(writer)
            assert await f.read(5) == b"hello"        # nothing was consumed
    run(uloop, main())


def test_cancelled_pipe_write_keeps_its_buffer_until_the_cqe(uloop, fifo):
    data = bytes(range(256)) * 1024                   # more than the pipe holds

    async def main():
        ring = uloop._ring
        async with uringloop.open(fifo, "rb+", buffering=0) as f:
            task = asyncio.ensure_future(f.write(data))
            await asyncio.sleep(0.05)
            held = [entry.keepalive for entry in ring._ops.values() if entry.keepalive]
            assert held, "the write's buffer must be in the ops table"
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            got = drain_fifo(fifo)
            assert got == data[:len(got)] and len(got) < len(data)
    run(uloop, main())


def test_close_cancels_reads_in_flight_and_closes_the_fd(uloop, fifo):
    async def main():
        f = await uringloop.open(fifo, "rb+")
        fd = f.fileno()
        readers = [asyncio.ensure_future(f.read(5)) for _ in range(3)]
        readers.append(asyncio.ensure_future(f.read1(5)))
        await asyncio.sleep(0.05)
        await f.close()
        for reader in readers:
            with pytest.raises(ValueError, match="closed file"):
                await reader
        with pytest.raises(OSError) as info:
            os.fstat(fd)
        assert info.value.errno == errno.EBADF
    run(uloop, main())


def test_close_waits_for_writes_and_survives_cancellation(loop, tmp_path):
    path = tmp_path / "f"
    before = open_fds()

    async def main():
        f = await uringloop.open(path, "wb")
        writes = [asyncio.ensure_future(f.pwrite(b"%d" % i, i)) for i in range(10)]
        await f.write(b"0")
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(f.close())
        await asyncio.sleep(0)
        closing.cancel()                         # the close still completes
        await asyncio.gather(*writes)
        await asyncio.sleep(0.1)
        await f.close()
    run(loop, main())
    assert path.read_bytes() == b"0123456789"
    assert open_fds() == before


def test_cancelled_opens_leak_no_fd(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    before = open_fds()

    async def main():
        ring_idle = loop._ring.pending() if loop.is_uring else None
        for delay_turns in range(4):
            tasks = [asyncio.ensure_future(uringloop.open(path, "rb")) for _ in range(50)]
            for _ in range(delay_turns):
                await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            for result in await asyncio.gather(*tasks, return_exceptions=True):
                if isinstance(result, uringloop.AsyncFile):
                    await result.close()
        # Opens given up still complete, and their fds are closed later.
        # Wait for the engine to be idle: the fd table alone can match
        # `before` while opens are still queued in the executor.
        if loop.is_uring:
            # With no request of ours left in the ring no fd can appear, and
            # one whose completion callback has yet to run is in the table.
            while loop._ring.pending() > ring_idle or open_fds() != before:
                await asyncio.sleep(0.001)
        else:
            # Returns once every job has run and delivered its result.
            await loop.shutdown_default_executor()
    run(loop, main())
    assert open_fds() == before


def test_opens_cancelled_before_executor_shutdown_leak_no_fd(tmp_path, monkeypatch):
    """asyncio.run() shuts the default executor down before closing the
    loop; opens given up earlier may only finish meanwhile."""
    path = tmp_path / "f"
    path.write_bytes(b"x")
    gate = threading.Event()
    real_open = _files_ops._open_and_stat

    def held_open(*args):
        gate.wait()
        return real_open(*args)
    monkeypatch.setattr(_files_ops, "_open_and_stat", held_open)
    before = open_fds()
    loop = asyncio.SelectorEventLoop()
    reports = []
    loop.set_exception_handler(lambda lp, ctx: reports.append(ctx))

    async def main():
        tasks = [asyncio.ensure_future(uringloop.open(path, "rb")) for _ in range(3)]
        await asyncio.sleep(0)                  # all three wait at the gate
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        loop.call_soon(gate.set)                # once the shutdown has begun
        await loop.shutdown_default_executor()
    try:
        run(loop, main())
    finally:
        loop.close()
    assert reports == [] and open_fds() == before


def test_file_closed_after_executor_shutdown_closes_its_fd(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"x")
    loop = asyncio.SelectorEventLoop()

    async def main():
        f = await uringloop.open(path, "rb")
        fd = f.fileno()
        await loop.shutdown_default_executor()
        await f.close()                         # no executor: closed in place
        return fd
    try:
        fd = run(loop, main())
    finally:
        loop.close()
    with pytest.raises(OSError) as info:
        os.fstat(fd)
    assert info.value.errno == errno.EBADF


def test_unclosed_file_warns_and_closes_its_fd(loop, tmp_path):
    path = tmp_path / "f"
    before = open_fds()

    async def main():
        f = await uringloop.open(path, "wb")
        await f.write(b"kept")
        return f.fileno()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(loop, main())
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)
    assert open_fds() == before
    assert path.read_bytes() == b"kept"


def test_executor_fallback_on_a_closed_ring_is_not_used(tmp_path):
    """engine_for only picks the ring of a live uringloop.Loop."""
    loop = uringloop.Loop()
    assert _files_ops.engine_for(loop).name == "io_uring"
    loop.close()
    assert _files_ops.engine_for(loop).name == "executor"
    other = asyncio.SelectorEventLoop()
    assert _files_ops.engine_for(other).name == "executor"
    other.close()


# -- caller buffers pinned for the kernel --------------------------------------------

def test_readinto_buffer_stays_pinned_until_the_completion(loop, fifo):
    """readinto's buffer is pinned while the read is out, and unpinned by
    the time its CancelledError reaches the caller (the ring's request has
    settled; an executor worker reads into memory of its own) -- not when
    the garbage collector gets to the pin: here the CancelledError keeps
    the frames holding it alive.  A memoryview with a pin on it refuses
    release()."""
    async def main():
        async with uringloop.open(fifo, "rb+", buffering=0) as f:
            target = memoryview(bytearray(5))
            task = asyncio.ensure_future(f.readinto(target))
            await asyncio.sleep(0)                  # the read is out; the FIFO is empty
            with pytest.raises(BufferError):
                target.release()
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as cancelled:
                await task
            target.release()
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(writer, b"hello")
            os.close(writer)
            assert await f.read(5) == b"hello"      # after the cancelled read's completion
            assert cancelled.value.__traceback__ is not None
    run(loop, main())


_GC_CYCLE_SCRIPT = textwrap.dedent("""
    import asyncio, gc, sys
    sys.path.insert(0, {repo!r})
    import uringloop

    async def main():
        async with uringloop.open({path!r}, "wb") as f:
            for _ in range(5):
                data = memoryview(bytearray(64))
                try:
                    await f.pwrite(data, 1 << 62)     # EFBIG, after pinning data
                except OSError as exc:
                    exc.cycle = exc   # garbage: the error, its frames, the pin, the view
                gc.collect()

    for factory in (uringloop.Loop, asyncio.SelectorEventLoop):
        loop = factory()
        loop.run_until_complete(main())
        loop.close()
    print("survived")
""")


def test_pinned_buffer_in_a_garbage_cycle_does_not_crash(tmp_path):
    """A pin left for the garbage collector, in one cycle with the
    memoryview it exports from, crashed CPython (the collector cleared the
    memoryview first); failed writes are unpinned by their completion."""
    script = tmp_path / "script.py"
    script.write_text(_GC_CYCLE_SCRIPT.format(repo=REPO, path=str(tmp_path / "f")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "survived", proc.stderr
    assert "tp_clear" not in proc.stderr, proc.stderr


# -- proof that preads run through the ring ----------------------------------------

_STRACE_SCRIPT = textwrap.dedent("""
    import asyncio, os, random, sys
    sys.path.insert(0, {repo!r})
    import uringloop

    async def main():
        async with uringloop.open({path!r}, "rb") as f:
            offsets = [random.randrange(0, (1 << 22) - 4096) for _ in range(64)]
            os.getppid()    # a marker syscall in the trace
            chunks = await asyncio.gather(*(f.pread(4096, off) for off in offsets))
            os.getppid()
        assert all(len(c) == 4096 for c in chunks)

    loop = {factory}()
    loop.run_until_complete(main())
    loop.close()
""")


def _strace_available():
    if shutil.which("strace"):
        return True
    if os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "install", "-y", "-q", "strace"], capture_output=True,
                       env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    return shutil.which("strace") is not None


def _trace_preads(tmp_path, factory):
    data_path = tmp_path / "data"
    data_path.write_bytes(os.urandom(1 << 22))
    script = tmp_path / "script.py"
    script.write_text(_STRACE_SCRIPT.format(repo=REPO, path=str(data_path), factory=factory))
    trace = tmp_path / "trace"
    proc = subprocess.run(["strace", "-f", "-qq", "-o", str(trace), sys.executable, str(script)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 and "ptrace" in proc.stderr:
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    lines = trace.read_text().splitlines()
    marks = [i for i, line in enumerate(lines) if "getppid(" in line]
    assert len(marks) == 2, "marker syscalls not found in the trace"
    return lines[marks[0]:marks[1] + 1]


def test_concurrent_preads_use_the_ring_not_threads(tmp_path):
    if not _strace_available():
        pytest.skip("strace is not installed and could not be installed with apt-get")
    window = _trace_preads(tmp_path, "uringloop.Loop")
    syscalls = [line.split("(", 1)[0].split()[-1] for line in window]
    reads = {"read", "readv", "pread64", "preadv", "preadv2"}
    assert not [s for s in syscalls if s in reads], window
    assert not [s for s in syscalls if s.startswith("clone")], window
    assert "io_uring_enter" in syscalls
    # The same program on asyncio's loop does use threads and pread: the
    # trace can see what the assertion above rules out.
    window = _trace_preads(tmp_path, "asyncio.SelectorEventLoop")
    syscalls = [line.split("(", 1)[0].split()[-1] for line in window]
    assert any(s.startswith("preadv") or s.startswith("pread") for s in syscalls)
    assert any(s.startswith("clone") for s in syscalls)


# -- the caller's memory after a cancellation ----------------------------------------

def test_cancelled_readinto_never_writes_into_the_buffer_afterwards(loop, fifo):
    """Once readinto has raised CancelledError, the caller's buffer is the
    caller's again: bytes that arrive afterwards neither land there nor
    are taken from there (they were copied into the read-ahead from the
    caller's new contents: stream corruption).  The ring waits for its
    cancelled request; the executor reads into memory of its own, since a
    worker in readv cannot be stopped."""
    async def main():
        async with uringloop.open(fifo, "rb+", buffering=0) as f:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            try:
                me = asyncio.current_task()
                for attempt in range(3):
                    target = bytearray(5)
                    loop.call_soon(me.cancel)
                    with pytest.raises(asyncio.CancelledError):
                        await f.readinto(target)
                    me.uncancel()
                    word = b"late%d" % attempt
                    os.write(writer, word[:5])
                    target[:] = b"mine!"
                    memoryview(target).release()        # nothing pins it any more
                    target += b"+"                     # and asyncio lets it grow
                    for _ in range(5):
                        await asyncio.sleep(0)
                    assert target == b"mine!+"
                    assert await f.read(5) == word[:5]
            finally:
                os.close(writer)
    run(loop, main())


class _HeldExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, running each job only when the test
    says: the job of a cancelled call can run after its caller moved on."""

    def __init__(self):
        super().__init__(max_workers=1)
        self.jobs = []

    def submit(self, fn, *args):
        fut = concurrent.futures.Future()
        self.jobs.append((fut, fn, args))
        return fut

    def run_all(self):
        jobs, self.jobs = self.jobs, []
        for fut, fn, args in jobs:
            fut.set_result(fn(*args))


def test_cancelled_file_ops_leave_caller_memory_alone_in_the_executor(tmp_path):
    """preadv, readinto and write of a caller's bytearray in the executor:
    a job that runs after its caller was cancelled neither fills the
    caller's buffers nor writes the caller's later contents to the file."""
    path = tmp_path / "f"
    data = random.Random(3).randbytes(300_000)
    path.write_bytes(data)
    loop = asyncio.SelectorEventLoop()
    held = _HeldExecutor()
    loop.set_default_executor(held)

    async def cancelled(coro):
        task = asyncio.ensure_future(coro)
        while not held.jobs:
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return task

    async def main():
        async def opened(mode):
            opening = asyncio.ensure_future(uringloop.open(path, mode, buffering=0))
            while not opening.done():
                held.run_all()
                await asyncio.sleep(0)
            return opening.result()

        f = await opened("rb+")
        a, b = bytearray(1000), bytearray(2000)
        await cancelled(f.preadv([a, b], 10))
        a[:], b[:] = b"a" * 1000, b"b" * 2000
        held.run_all()
        await asyncio.sleep(0)
        assert (a, b) == (b"a" * 1000, b"b" * 2000)

        target = bytearray(100_000)
        await cancelled(f.readinto(target))
        target[:] = b"t" * 100_000
        held.run_all()
        await asyncio.sleep(0)
        assert target == b"t" * 100_000
        task = asyncio.ensure_future(f.read(100_000))
        while not task.done():
            held.run_all()
            await asyncio.sleep(0)
        assert task.result() == data[:100_000]   # the cancelled read's bytes

        source = bytearray(b"w" * 70_000)
        await cancelled(f.pwrite(source, 0))
        source[:] = b"x" * 70_000
        held.run_all()
        await asyncio.sleep(0)
        closing = asyncio.ensure_future(f.close())
        while not closing.done():
            held.run_all()
            await asyncio.sleep(0)
        closing.result()

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
    assert path.read_bytes()[:70_000] == b"w" * 70_000


def test_readinto_cancelled_again_while_its_request_settles(loop, fifo):
    """A second cancellation while the first one's request is settling
    neither raises twice nor hands the buffer back before the request is
    done with it."""
    async def main():
        async with uringloop.open(fifo, "rb+", buffering=0) as f:
            target = bytearray(5)
            task = asyncio.ensure_future(f.readinto(target))
            for _ in range(3):
                await asyncio.sleep(0)
            task.cancel()
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            target += b"+"          # unpinned: the request has settled
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.write(writer, b"hello")
            os.close(writer)
            assert await f.read(5) == b"hello"
            assert target == bytes(5) + b"+"
    run(loop, main())
