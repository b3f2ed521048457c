"""Async binary files: ``uringloop.open(path, "rb")`` and friends.

What this module owns: :func:`open` (argument checks in ``_mode``,
then ``openat`` (+ fstat) through ``_ops``), and :class:`AsyncFile`,
the binary file with its read-ahead and write buffers.  Text mode is a
layer on top (``_text``); paths without an open file (stat, rename,
...) live in ``_paths``.

Data flow: every byte moves through one kernel operation on the loop's
engine -- a ring request on a ``uringloop.Loop``, an executor thread
elsewhere.  The file keeps its own position (``_pos``: where the next
kernel read or write goes) and passes explicit offsets, so reads and writes
of different files, and ``pread``/``pwrite`` of the same file, are all in
the kernel at once; only the operations that use the position (``read``,
``readline``, ``write``, ``flush``, ``seek``, ``tell``, ``truncate``) take
turns, through ``_lock``.  Streams (pipes, FIFOs) and ``O_APPEND`` writes
use the kernel's own position (offset -1) instead.

Cancellation rule: the file position moves only by the bytes the kernel
reports as transferred, whenever that report arrives.  Cancelling
``read()`` cancels the request; bytes that arrive anyway are kept in the
read-ahead buffer, so the next read returns them and ``tell()`` is as if
the cancelled read never happened.  Cancelling a ``write()`` cancels the
request and drops the part of *its* data not yet written; bytes the kernel
did write stay written and move the position.  Data accepted earlier into
the write buffer is never dropped: a cancelled ``flush()`` keeps the
unwritten rest buffered.  The next position-dependent operation waits for
the cancelled request's completion before it starts.  Memory the caller
passed (``readinto``'s buffer, ``preadv``'s, the data of a write) is the
caller's again when the CancelledError reaches it (aiofiles hands it back
while its executor job may still use it): the ring's request has settled
by then (a cancelled call waits for it, a turn or two), and an executor
worker, which cannot be stopped, only ever gets memory of the call's own
(a copy).  ``close()`` cancels
reads still in flight, lets writes finish, flushes, and closes the fd only
after the kernel has completed every request on it (the ring-owned fd
rule of _ringfd.py, every request borrowing the fd).
"""
import asyncio
import contextvars
import errno
import functools
import io
import os
import stat as stat_module
import warnings
from collections import deque

from . import _mode
from ._args import (OFF_MAX, bytes_view, c_int, c_long, optional_size,
                          seek_offset, ssize, vector_buffer, writable_buffer)
from ._ops import (CLOSED, CLOSED_PLAIN, CallGroup, LineReading, Pinned, capped,
                         capped_vecs, engine_for, fspath_bytes, perform)
from .._native import new_uncleared, os_error
from .._op import RingCallback
from ._text import AsyncTextFile
from .._uring import ffi

# Reads at the position up to this size reuse the file's landing buffer.
_REUSED_BUFFER_LIMIT = 8 << 20
_WHENCES = (os.SEEK_SET, os.SEEK_CUR, os.SEEK_END, os.SEEK_DATA, os.SEEK_HOLE)


class _ReadAhead:
    """Bytes the kernel has delivered that no caller has taken yet, as a
    queue of the ``bytes`` objects the reads produced (taking a whole chunk
    hands out that object without copying)."""

    __slots__ = ("chunks", "head", "size")

    def __init__(self):
        self.chunks = deque()
        self.head = 0       # bytes of chunks[0] already taken
        self.size = 0

    def push(self, data):
        self.chunks.append(data)
        self.size += len(data)

    def clear(self):
        self.chunks.clear()
        self.head = 0
        self.size = 0

    def find(self, needle, start):
        """Index (counted from the first untaken byte) just past the first
        ``needle`` byte at or after ``start``, or -1."""
        base = -self.head   # where the current chunk starts, in that count
        for chunk in self.chunks:
            end = base + len(chunk)
            if end > start:
                at = chunk.find(needle, max(start - base, 0))
                if at >= 0:
                    return base + at + 1
            base = end
        return -1

    def unread(self, data):
        """Put ``data`` back in front (it was taken, then given back)."""
        if self.head:
            self.chunks[0] = self.chunks[0][self.head:]
            self.head = 0
        self.chunks.appendleft(data)
        self.size += len(data)

    def take(self, n):
        n = min(n, self.size)
        if n == 0:
            return b""
        chunks = self.chunks
        first = chunks[0]
        if self.head == 0 and len(first) == n:
            chunks.popleft()
            self.size -= n
            return first
        parts = []
        left = n
        while left:
            first = chunks[0]
            avail = len(first) - self.head
            if avail > left:
                parts.append(first[self.head:self.head + left])
                self.head += left
                break
            parts.append(first[self.head:] if self.head else first)
            chunks.popleft()
            self.head = 0
            left -= avail
        self.size -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)


class _Vectors:
    """Pinned memory the kernel reads or fills front to back over one or
    more requests: each part is ``[pinned pointer, start, end]``, and the
    part from ``start`` on is still to move."""

    __slots__ = ("parts",)

    def __init__(self, pinned):
        self.parts = [[ptr, 0, len(ptr)] for ptr in pinned if len(ptr)]

    def vecs(self):
        """The ``(pointer, length)`` pairs of the next request, capped."""
        return capped_vecs([(ptr + start, end - start) for ptr, start, end in self.parts])

    def advance(self, nbytes):
        parts = self.parts
        while nbytes and parts:
            part = parts[0]
            step = min(nbytes, part[2] - part[1])
            part[1] += step
            nbytes -= step
            if part[1] == part[2]:
                parts.pop(0)


class _Outgoing(_Vectors):
    """Bytes on their way to the kernel: the file's buffered writes (which
    must never be lost) followed by a caller's data (dropped if the caller
    is cancelled), pinned in ``pins``."""

    __slots__ = ("buffered", "keep")

    def __init__(self, pins, buffered, data):
        self.keep = [pins.pin(part) for part in (buffered, data)
                     if part is not None and len(part)]
        super().__init__(self.keep)
        self.buffered = buffered

    def advance(self, nbytes):
        before = len(self.parts)
        super().advance(nbytes)
        if len(self.parts) < before:
            self.buffered = None   # the buffered part was the first

    def unwritten_buffered(self):
        """What is left of the buffered part, and forget it (called once)."""
        if self.buffered is None or not self.parts:
            return b""
        start = self.parts[0][1]
        rest, self.buffered = memoryview(self.buffered)[start:], None
        return rest


class AsyncFile(LineReading):
    """A binary file opened by :func:`uringloop.open`.  Methods that touch
    the file are coroutines; ``fileno``/``readable``/``writable``/
    ``seekable`` and the attributes are not."""

    def __init__(self, engine, fd, name, spec, st):
        self._engine = engine
        self._loop = engine.loop
        self._fd = fd
        self.name = name
        self.mode = spec.binary_mode
        self._readable = spec.readable
        self._writable = spec.writable
        self._appending = spec.appending
        self._regular = stat_module.S_ISREG(st.st_mode)
        self._seekable = self._regular or stat_module.S_ISBLK(st.st_mode) or _lseek_works(fd)
        # Only a hint: the end-of-file test trusts it only together with a
        # short read (see _at_eof).
        self._size_hint = st.st_size if self._regular else 0
        self._chunk = spec.buffer_size
        self._pos = st.st_size if spec.appending and self._regular else 0
        self._ahead = _ReadAhead()
        # Set when a pwrite may have changed bytes held in the read-ahead;
        # the next turn at the position drops them.
        self._ahead_stale = False
        self._pending = bytearray()   # buffered writes, due at _pos
        self._landing = None          # where reads at the position land (see _fill)
        self._lock = asyncio.Lock()
        self._calls = CallGroup()
        self._closing = False
        self._closer = None

    def __repr__(self):
        return (f"<uringloop.AsyncFile name={self.name!r} mode={self.mode!r} "
                f"engine={self._engine.name}{' closed' if self._closing else ''}>")

    # -- plain attributes ----------------------------------------------
    @property
    def closed(self):
        return self._closing

    @property
    def engine(self):
        """``"io_uring"`` or ``"executor"``: where this file's I/O runs."""
        return self._engine.name

    def fileno(self):
        if self._closing:
            raise ValueError(CLOSED_PLAIN)
        return self._fd

    def readable(self):
        if self._closing:
            raise ValueError(CLOSED_PLAIN)
        return self._readable

    def writable(self):
        if self._closing:
            raise ValueError(CLOSED_PLAIN)
        return self._writable

    def seekable(self):
        if self._closing:
            raise ValueError(CLOSED_PLAIN)
        return self._seekable

    # -- taking turns ----------------------------------------------------
    def _require(self, need, unsupported=None):
        """UnsupportedOperation unless the mode allows ``need``.  The binary
        read and write methods call this first, as io's do (on a closed
        file too: a BufferedWriter has no read at all)."""
        if need == "read" and not self._readable:
            raise io.UnsupportedOperation(unsupported or need)
        if need in ("write", "truncate") and not self._writable:
            raise io.UnsupportedOperation(unsupported or need)

    def _check(self, closed_message, need, unsupported=None):
        if self._closing:
            raise ValueError(closed_message)
        self._require(need, unsupported)

    async def _begin(self, need=None, closed_message=CLOSED, unsupported=None):
        """Wait for this file's turn at its position; pair with _end().
        ``need`` is "read", "write" or "truncate" when the file must allow
        it (``unsupported``: the message otherwise)."""
        self._check(closed_message, need, unsupported)
        await self._lock.acquire()
        try:
            if self._calls.stragglers:
                await self._calls.settle()
            self._check(closed_message, need, unsupported)
            if self._ahead_stale:
                self._ahead_stale = False
                self._drop_ahead()
        except BaseException:
            self._lock.release()
            raise

    def _end(self):
        self._lock.release()

    def _perform(self, method, args, *, reading=False, positioned=False,
                 on_cqe=None, on_abandon=None, more=None, pins=None):
        # Caller memory in ``pins`` is lent to the ring (see perform); the
        # executor engine never gets any (_caller_bytes, _read_into, preadv).
        return perform(self._engine, method, args, self._calls, reading=reading,
                       positioned=positioned, on_cqe=on_cqe, on_abandon=on_abandon,
                       more=more, pins=pins,
                       lends=pins is not None and self._engine.settles_promptly)

    def _caller_bytes(self, view):
        """What of the caller's ``view`` a write may hand its engine: the
        view itself on the ring, which a cancelled write waits for; a copy
        in the executor, whose worker may go on reading after the
        cancellation (unless nobody can change the bytes)."""
        if self._engine.settles_promptly or isinstance(view.obj, bytes):
            return view
        return bytes(view)

    def _error(self, res):
        if self._closing and res == -errno.ECANCELED:
            return ValueError(CLOSED)
        return os_error(res)

    def _logical_pos(self):
        return self._pos - self._ahead.size + len(self._pending)

    # -- reading ----------------------------------------------------------
    async def _fill(self, request):
        """One read of up to ``request`` bytes at the position, into the
        read-ahead; returns the count (0 at end of file)."""
        request = capped(request)
        if request <= _REUSED_BUFFER_LIMIT:
            # Reads at the position take turns (and wait for a cancelled
            # one's completion), so one landing buffer serves them all; a
            # fresh multi-MiB buffer per read costs page faults every time.
            buf = self._landing
            if buf is None or len(buf) < request:
                size = max(request, min(self._chunk, _REUSED_BUFFER_LIMIT))
                buf = self._landing = new_uncleared("char[]", size)
        else:
            buf = new_uncleared("char[]", request)
        offset = self._pos if self._seekable else -1

        def on_cqe(res):
            # Runs even if the reader was cancelled: no byte is lost.
            if res > 0:
                self._pos += res
                self._ahead.push(ffi.unpack(buf, res))

        res = await self._perform(self._engine.read, (self._fd, buf, request, offset, buf),
                                  reading=True, positioned=True, on_cqe=on_cqe)
        if res < 0:
            raise self._error(res)
        return res

    def _at_eof(self, request, res):
        # A short read of a regular file means end of file when the size
        # seen at open agrees; anything else is confirmed by a read of 0
        # (files in /proc report size 0 and return short reads).  Short
        # means short of what _fill asked for: at most the cap.
        return res == 0 or (res < capped(request) and self._regular and
                            0 < self._size_hint <= self._pos)

    async def _before_read(self):
        if self._pending:
            await self._write_out()

    async def _read_locked(self, n):
        await self._before_read()
        ahead = self._ahead
        if n < 0:
            while True:
                remaining = self._size_hint - self._pos
                request = remaining + 1 if self._regular and remaining > 0 else max(
                    self._chunk or _mode.DEFAULT_BUFFER_SIZE, ahead.size)
                if self._at_eof(request, await self._fill(request)):
                    return ahead.take(ahead.size)
        if ahead.size >= n or (not self._chunk and ahead.size):
            return ahead.take(n)
        while ahead.size < n:
            missing = n - ahead.size
            request = missing if missing >= self._chunk else self._chunk
            if self._at_eof(request, await self._fill(request)) or not self._chunk:
                break
        return ahead.take(n)

    async def read(self, n=-1):
        """Up to ``n`` bytes (all that is left if ``n`` is -1 or None);
        fewer only at end of file (or, unbuffered, after one read).  Other
        negative ``n`` are a ValueError, as for io.BufferedReader; an
        unbuffered file takes them for -1, as io.FileIO does."""
        n = optional_size(n)
        self._require("read")
        if n < -1 and self._chunk:
            raise ValueError("read length must be non-negative or -1")
        await self._begin("read", "read of closed file")
        try:
            return await self._read_locked(n)
        finally:
            self._end()

    async def _read1_locked(self, n):
        if n == 0:
            return b""
        await self._before_read()
        if not self._ahead.size:
            await self._fill(max(n, self._chunk) if n >= 0 else
                             self._chunk or _mode.DEFAULT_BUFFER_SIZE)
        return self._ahead.take(n if n >= 0 else self._ahead.size)

    async def _read_into(self, ptr, count, target, pins):
        """One read at the position into the caller's memory: straight
        there on the ring (lent: a cancelled call waits for the request),
        through memory of its own in the executor."""
        offset = self._pos if self._seekable else -1
        lent = self._engine.settles_promptly
        land = ptr if lent else new_uncleared("char[]", count)

        def on_cqe(res):
            if res > 0:
                self._pos += res

        def on_abandon(res):
            # The caller is gone: keep what the kernel wrote for the next
            # read.  Lent memory is still the call's own here (the caller
            # has not had the CancelledError yet).
            if res > 0:
                self._ahead.push(ffi.unpack(land, res))

        res = await self._perform(self._engine.read,
                                  (self._fd, land, count, offset, target if lent else land),
                                  reading=True, positioned=True, on_cqe=on_cqe,
                                  on_abandon=on_abandon, pins=pins if lent else None)
        if res < 0:
            raise self._error(res)
        if not lent:
            ffi.memmove(ptr, land, res)
        return res

    async def _readinto_locked(self, target, pins):
        await self._before_read()
        ahead, want = self._ahead, len(target)
        got = min(want, ahead.size)
        if got:
            ffi.memmove(target, ahead.take(got), got)
        try:
            while got < want and (self._chunk or not got):
                missing = capped(want - got)
                if missing >= self._chunk:
                    res = await self._read_into(target + got, missing, target, pins)
                    got += res
                else:
                    res = await self._fill(self._chunk)
                    piece = ahead.take(missing)
                    ffi.memmove(target + got, piece, len(piece))
                    got += len(piece)
                if self._at_eof(missing if missing >= self._chunk else self._chunk, res):
                    break
        except BaseException:
            # Bytes already copied out go back: the failed or cancelled
            # call returns no count, so the stream must not lose them.
            if got:
                ahead.unread(ffi.unpack(target, got))
            raise
        return got

    async def readinto(self, buffer):
        """Fill the writable bytes-like ``buffer`` from the position and
        return the count (fewer only at end of file or, unbuffered, after
        one read).  Beyond what is read ahead, the ring writes straight
        into ``buffer``: no copy."""
        writable_buffer(buffer, "readinto")
        self._require("read")
        with Pinned() as pins:
            target = pins.pin(buffer, writable=True)
            await self._begin("read", "readinto of closed file")
            try:
                return await self._readinto_locked(target, pins)
            finally:
                self._end()

    async def read1(self, n=-1):
        """At most one kernel read: what is buffered, else one refill."""
        n = ssize(n)
        self._require("read", "read1")
        await self._begin("read", "read of closed file", "read1")
        try:
            return await self._read1_locked(n)
        finally:
            self._end()

    async def _readline_locked(self, limit):
        await self._before_read()
        ahead = self._ahead
        scanned = 0
        eof = False
        while True:
            end = ahead.find(b"\n", scanned)
            if end >= 0:
                break
            if 0 <= limit <= ahead.size or eof:
                end = ahead.size
                break
            scanned = ahead.size
            request = self._chunk or _mode.DEFAULT_BUFFER_SIZE
            eof = self._at_eof(request, await self._fill(request))
        return ahead.take(end if limit < 0 else min(end, limit))

    async def readline(self, size=-1):
        """One line including its ``b"\\n"`` (or up to ``size`` bytes)."""
        size = optional_size(size)
        self._require("read")
        await self._begin("read", "readline of closed file")
        try:
            return await self._readline_locked(size)
        finally:
            self._end()

    # -- writing ----------------------------------------------------------
    def _drop_ahead(self):
        """Forget the bytes read ahead, moving the kernel-side position
        back to the logical one (where writing must start)."""
        if self._ahead.size and self._seekable:
            self._pos -= self._ahead.size
            self._ahead.clear()

    def _after_write(self, nbytes):
        if self._appending and self._seekable:
            # O_APPEND put the bytes at the end and left the kernel's own
            # position there; that is where the file now is.
            self._pos = os.lseek(self._fd, 0, os.SEEK_CUR)
        else:
            self._pos += nbytes

    def _requeue(self, out):
        rest = out.unwritten_buffered()
        if len(rest):
            self._pending[:0] = rest

    async def _write_out(self, data=None):
        """Write the buffered bytes, then ``data``, at the position; the
        request resubmits the rest after short writes."""
        with Pinned() as pins:
            buffered = self._pending
            if buffered:
                self._pending = bytearray()
            out = _Outgoing(pins, buffered or None, data)

            def on_cqe(res):
                if res > 0:
                    self._after_write(res)
                    out.advance(res)

            def on_abandon(res):
                self._requeue(out)

            def next_request():
                if not out.parts:
                    return None
                offset = -1 if self._appending or not self._seekable else self._pos
                return self._write_request(out.vecs(), offset, out.keep)

            request = next_request()
            if request is not None:
                res = await self._perform(*request, positioned=True, on_cqe=on_cqe,
                                          on_abandon=on_abandon, more=next_request, pins=pins)
                if res <= 0:
                    self._requeue(out)
                    raise (self._error(res) if res < 0 else
                           OSError(errno.EIO, "write made no progress"))

    def _write_request(self, vecs, offset, keep):
        """WRITE for one buffer, WRITEV for more: the engine method and its
        arguments."""
        if len(vecs) == 1:
            return self._engine.write, (self._fd, vecs[0][0], vecs[0][1], offset, keep)
        return self._engine.writev, (self._fd, vecs, offset, keep)

    async def _write_locked(self, view):
        self._drop_ahead()
        if self._chunk and len(self._pending) + len(view) <= self._chunk:
            self._pending += view
        else:
            await self._write_out(self._caller_bytes(view))
        return len(view)

    async def write(self, data):
        """Write all of ``data`` (buffered up to the buffer size); returns
        its length."""
        self._require("write")
        view = bytes_view(data)
        await self._begin("write", "write to closed file")
        try:
            return await self._write_locked(view)
        finally:
            self._end()

    async def flush(self):
        await self._begin(None, "flush of closed file")
        try:
            if self._pending:
                await self._write_out()
        finally:
            self._end()

    # -- position ---------------------------------------------------------
    async def _file_size(self):
        st = await self._perform(self._engine.statx, (None, self._fd, True))
        if isinstance(st, int):
            raise os_error(st)
        if self._regular:
            self._size_hint = st.st_size
        return st.st_size

    async def _seek_locked(self, offset, whence):
        if not self._seekable:
            raise os_error(-errno.ESPIPE)
        if self._pending:
            await self._write_out()
        if whence == os.SEEK_SET:
            target = offset
        elif whence == os.SEEK_CUR:
            target = self._logical_pos() + offset
        elif whence == os.SEEK_END:
            target = await self._file_size() + offset
        else:
            # SEEK_DATA, SEEK_HOLE: only the file system knows the answer.
            target = await self._perform(self._engine.lseek, (self._fd, offset, whence))
            if target < 0:
                raise self._error(target)
        if not 0 <= target <= OFF_MAX:
            raise os_error(-errno.EINVAL)
        self._ahead.clear()
        self._pos = target
        return target

    async def seek(self, offset, whence=os.SEEK_SET):
        """Move the position; returns it.  Whence as in io: SEEK_SET,
        SEEK_CUR, SEEK_END, SEEK_DATA or SEEK_HOLE."""
        whence = c_int(whence)
        if whence not in _WHENCES:
            raise ValueError(f"whence value {whence} unsupported")
        if self._closing:
            raise ValueError("seek of closed file")
        offset = seek_offset(offset)
        await self._begin(None, "seek of closed file")
        try:
            return await self._seek_locked(offset, whence)
        finally:
            self._end()

    async def tell(self):
        """The position, once the operations before this call are done."""
        await self._begin(None, CLOSED_PLAIN)
        try:
            if not self._seekable:
                raise os_error(-errno.ESPIPE)
            return self._logical_pos()
        finally:
            self._end()

    async def _truncate_locked(self, size):
        if self._pending:
            await self._write_out()
        if size is None:
            size = self._logical_pos()
        # Read-ahead past the new end would be stale; the position stays.
        self._pos = self._logical_pos()
        self._ahead.clear()
        res = await self._perform(self._engine.ftruncate, (self._fd, size))
        if res < 0:
            raise self._error(res)
        if self._regular:
            self._size_hint = size
        return size

    async def truncate(self, size=None):
        """Resize the file to ``size`` (default: the position); the
        position does not move.  On the ring where the kernel has
        IORING_OP_FTRUNCATE (6.9), else in the executor."""
        self._check("truncate of closed file", "truncate")
        if size is not None:
            size = c_long(size)
        await self._begin("truncate", "truncate of closed file")
        try:
            return await self._truncate_locked(size)
        finally:
            self._end()

    # -- explicit offsets: no position, no turn-taking ---------------------
    def _check_explicit(self, need):
        self._check(CLOSED, need)
        if not self._seekable:
            raise os_error(-errno.ESPIPE)

    async def _pread_pieces(self, n, offset):
        """The chunks of one pread of ``n`` bytes: a single read unless
        ``n`` is over the cap, then capped reads until one comes back
        short (end of file) or fails after some bytes arrived."""
        pieces = []
        while n:
            want = capped(n)
            buf = new_uncleared("char[]", want)
            res = await self._perform(self._engine.read, (self._fd, buf, want, offset, buf),
                                      reading=True)
            if res < 0:
                if pieces:
                    break
                raise self._error(res)
            pieces.append(ffi.unpack(buf, res))
            if res < want:
                break
            n -= res
            offset += res
        return pieces

    async def pread(self, n, offset):
        """Up to ``n`` bytes at ``offset`` (fewer only at end of file),
        like ``os.pread``; the position does not move.  Many preads of one
        file run in the kernel at once."""
        n, offset = ssize(n), c_long(offset)
        self._check_explicit("read")
        if n < 0 or offset < 0:
            raise os_error(-errno.EINVAL)
        if self._pending:
            await self.flush()
        pieces = await self._pread_pieces(n, offset)
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def preadv(self, buffers, offset):
        """Fill writable ``buffers`` from ``offset`` on (less only at end
        of file); returns the byte count, like ``os.preadv``."""
        offset = c_long(offset)
        buffers = [vector_buffer(b, writable=True) for b in buffers]
        self._check_explicit("read")
        if offset < 0:
            raise os_error(-errno.EINVAL)
        with Pinned() as pins:
            pinned = [pins.pin(b, writable=True) for b in buffers]
            if self._pending:
                await self.flush()
            into, total = _Vectors(pinned), 0
            while into.parts:
                vecs = into.vecs()
                res = await self._preadv_once(vecs, offset, pinned, pins)
                if res < 0:
                    if total:
                        break
                    raise self._error(res)
                total += res
                offset += res
                if res < sum(nbytes for _, nbytes in vecs):
                    break
                into.advance(res)
        return total

    async def _preadv_once(self, vecs, offset, pinned, pins):
        """One request of preadv: into the caller's buffers on the ring
        (lent), into memory of its own then scattered in the executor."""
        if self._engine.settles_promptly:
            return await self._perform(self._engine.readv, (self._fd, vecs, offset, pinned),
                                       reading=True, pins=pins)
        want = sum(nbytes for _, nbytes in vecs)
        land = new_uncleared("char[]", want)
        res = await self._perform(self._engine.read, (self._fd, land, want, offset, land),
                                  reading=True)
        done = 0
        for ptr, nbytes in vecs:
            if done >= res:
                break
            step = min(nbytes, res - done)
            ffi.memmove(ptr, land + done, step)
            done += step
        return res

    async def _pwrite_all(self, views, offset):
        with Pinned() as pins:
            pinned = [pins.pin(view) for view in views]
            out = _Vectors(pinned)
            total = sum(len(view) for view in views)
            ahead_start = self._pos - self._ahead.size
            if self._ahead.size and offset < self._pos and offset + total > ahead_start:
                self._ahead_stale = True

            def on_cqe(res):
                nonlocal offset
                if res > 0:
                    offset += res
                    out.advance(res)

            def next_request():
                return self._write_request(out.vecs(), offset, pinned) if out.parts else None

            request = next_request()
            if request is not None:
                res = await self._perform(*request, on_cqe=on_cqe, more=next_request, pins=pins)
                if res <= 0:
                    raise (self._error(res) if res < 0 else
                           OSError(errno.EIO, "write made no progress"))
            return total

    async def pwrite(self, data, offset):
        """Write all of ``data`` at ``offset`` (short writes resubmit the
        rest); the position does not move.  With O_APPEND ("a" modes)
        Linux appends instead, as os.pwrite does."""
        view = bytes_view(data)
        offset = c_long(offset)
        self._check_explicit("write")
        if offset < 0:
            raise os_error(-errno.EINVAL)
        if self._pending:
            await self.flush()
        return await self._pwrite_all([self._caller_bytes(view)], offset)

    async def pwritev(self, buffers, offset):
        """Write every buffer of ``buffers`` at ``offset`` and on; returns
        the total."""
        offset = c_long(offset)
        views = [vector_buffer(b, writable=False) for b in buffers]
        self._check_explicit("write")
        if offset < 0:
            raise os_error(-errno.EINVAL)
        if self._pending:
            await self.flush()
        return await self._pwrite_all([self._caller_bytes(v) for v in views], offset)

    # -- whole-file operations ---------------------------------------------
    async def _sync(self, datasync):
        await self._begin()
        try:
            if self._pending:
                await self._write_out()
            res = await self._perform(self._engine.fsync, (self._fd, datasync))
            if res < 0:
                raise self._error(res)
        finally:
            self._end()

    async def fsync(self):
        """Flush, then fsync(2) the file."""
        await self._sync(False)

    async def fdatasync(self):
        """Flush, then fdatasync(2) the file."""
        await self._sync(True)

    async def fallocate(self, offset, length):
        """Allocate disk space for ``[offset, offset + length)``, growing
        the file if needed (fallocate(2) mode 0, like os.posix_fallocate)."""
        offset, length = c_long(offset), c_long(length)
        self._check(CLOSED, "write")
        if offset < 0 or length <= 0:
            raise os_error(-errno.EINVAL)
        res = await self._perform(self._engine.fallocate, (self._fd, offset, length))
        if res < 0:
            raise self._error(res)
        if self._regular:
            self._size_hint = max(self._size_hint, offset + length)

    async def stat(self):
        """``os.stat_result`` of the open file (statx on the ring)."""
        self._check(CLOSED, None)
        st = await self._perform(self._engine.statx, (None, self._fd, True))
        if isinstance(st, int):
            raise self._error(st)
        return st

    # -- closing ------------------------------------------------------------
    async def close(self):
        """Flush and close.  Reads in flight are cancelled, writes finish,
        and the fd is closed once the kernel has completed everything on
        it -- also when the caller is cancelled meanwhile.  Raises the
        flush (or, for a writable file, close) error, if any, after
        closing."""
        closer = self._closer
        if closer is None:
            self._closing = True
            if self._lock.locked() or self._pending or self._calls.calls:
                self._calls.cancel_reads()
                closer = self._loop.create_task(self._close_when_idle())
            else:
                closer = self._close_fd()
            self._closer = closer
        if closer.done():
            return closer.result()
        await asyncio.shield(closer)

    def _close_fd(self):
        """Close the fd once no request on it is in flight (the ring-owned
        fd rule, _ringfd.py); returns a future for the outcome."""
        done = self._loop.create_future()
        self._calls.fd.close(functools.partial(self._close_now, done))
        return done

    def _close_now(self, done):
        fd, self._fd = self._fd, -1
        if not self._writable and self._engine.close_detached(
                fd, RingCallback(self._report_close_error)):
            # close(2) of a read-only file has no data to lose, and the
            # request is already in the kernel: nobody need wait for it.
            done.set_result(None)
            return

        def on_close(res, flags):
            if res < 0:
                done.set_exception(os_error(res))
            else:
                done.set_result(None)
        self._engine.close(fd, RingCallback(on_close))

    def _report_close_error(self, res, flags):
        if res < 0:
            # A completion runs in no context of its own: the handler gets a copy.
            contextvars.copy_context().run(self._loop.call_exception_handler, {
                "message": f"closing {self!r} failed", "exception": os_error(res)})

    async def _close_when_idle(self):
        error = None
        async with self._lock:
            await self._calls.settle()
            if self._pending:
                try:
                    await self._write_out()
                except Exception as exc:
                    error = exc
                    self._pending = bytearray()
            closing = self._close_fd()
        try:
            await closing
        except OSError as exc:
            error = error or exc
        if error is not None:
            raise error

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.close()

    def __del__(self):
        # Only a file nobody closed gets here (operations in flight hold a
        # reference).  Mirror the built-in: warn, write what is buffered,
        # close the fd -- synchronously, as there is no loop turn left.
        if getattr(self, "_fd", -1) < 0 or getattr(self, "_closer", None) is not None:
            return
        warnings.warn(f"unclosed file {self!r}", ResourceWarning, source=self)
        fd, self._fd = self._fd, -1
        try:
            data = memoryview(self._pending)
            while data:
                if self._appending or not self._seekable:
                    written = os.write(fd, data)
                else:
                    written = os.pwrite(fd, data, self._pos)
                    self._pos += written
                data = data[written:]
        except OSError:
            pass
        finally:
            os.close(fd)


def _lseek_works(fd):
    try:
        os.lseek(fd, 0, os.SEEK_CUR)
    except OSError:
        return False
    return True


def _close_later(engine, fd):
    """Close an fd nobody will use (a cancelled or failed open), without
    waiting for the result."""
    engine.close(fd, RingCallback(lambda res, flags: None))


class _Opening:
    """What :func:`open` returns: await it for the file, or use it as an
    async context manager that closes the file on exit.  The opening
    coroutine is created only when awaited, so an ``_Opening`` dropped
    unawaited (a task cancelled before it ran) leaves no warning behind."""

    __slots__ = ("_path", "_spec", "_file")

    def __init__(self, path, spec):
        self._path = path
        self._spec = spec
        self._file = None

    def __await__(self):
        return _open(self._path, self._spec).__await__()

    async def __aenter__(self):
        self._file = await _open(self._path, self._spec)
        return self._file

    async def __aexit__(self, *exc_info):
        await self._file.close()


async def _open(path, spec):
    engine = engine_for(asyncio.get_running_loop())
    encoded = fspath_bytes(path)

    def close_if_opened(res):
        if not isinstance(res, int):
            _close_later(engine, res[0])

    res = await perform(engine, engine.open_file, (encoded, spec.flags, 0o666),
                        on_abandon=close_if_opened)
    if isinstance(res, int):
        raise os_error(res, os.fspath(path))
    fd, st = res
    if stat_module.S_ISDIR(st.st_mode):
        # O_RDONLY opens a directory; open() refuses it.
        _close_later(engine, fd)
        raise os_error(-errno.EISDIR, os.fspath(path))
    binary = AsyncFile(engine, fd, os.fspath(path), spec, st)
    return AsyncTextFile(binary, spec) if spec.text else binary


def open(file, mode="r", buffering=-1, encoding=None, errors=None, newline=None):
    """Open ``file`` for async I/O, with the arguments and errors of the
    built-in ``open()`` (a path only: no fd, opener or closefd).

        async with uringloop.open(path, "rb") as f:
            data = await f.read()

    On a ``uringloop.Loop`` every operation is an io_uring request; on any
    other loop the same API runs ``os`` calls in the default executor.
    The default buffer size is 64 KiB."""
    spec = _mode.parse(mode, buffering, encoding, errors, newline)
    return _Opening(file, spec)
