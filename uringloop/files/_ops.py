"""One file-system operation at a time, on whichever engine the running loop
offers: the io_uring ring of a ``uringloop.Loop``, or the default executor
of any other loop (plain ``os.*`` calls in threads).

What this module owns: the two engines, :class:`FileOp` (a file request
as an _op.Op: one coroutine awaits it, it survives being cancelled, a
short write resubmits its rest), :class:`CallGroup` (the requests one
file has in flight, and the _ringfd.RingFd its fd closes by), the cap on
the bytes one read or write request may move (:func:`capped`,
:func:`capped_vecs`: callers loop over the rest), and the small helpers
every file API needs (path encoding, the ``os.stat_result`` built from a
``statx``).

Data flow: a caller hands an engine method its arguments, including the
memory the kernel will read or write, and the ring entry that hears the
outcome (the op itself, or a _ring.RingCallback; see _ring.py), whose
``on_completion(res, flags)`` gets it; ``res`` is the result (a count,
``(fd, stat)`` for an open, an ``os.stat_result``, 0) or a negative
errno.  The ring engine queues an SQE and keeps that memory in the ring's
ops table until the CQE; the thread engine runs the matching ``os`` call
in the executor and delivers its outcome on the loop thread.
:func:`perform` awaits a :class:`FileOp`: cancelling the awaiting task
asks the engine to cancel the request, and the request's own hooks
(``on_cqe``, ``on_abandon``) still run when the result arrives, so
bookkeeping such as the file position never depends on whether anyone is
still waiting; a caller that lent the ring its own memory waits for the
request to settle before its CancelledError propagates (``lends``).
Caller memory pinned with ``ffi.from_buffer`` for a sequence of
operations is a :class:`Pinned`, unpinned once the last of them has
settled.
"""
import errno
import os

from ._args import optional_size
from .._native import MAX_IO_LEN, os_error
from .._op import Op
from .._ringfd import RingFd
from .._uring import ffi, lib

# The most one read or write request moves.  An SQE's length is 32 bits
# (a longer one would not even reach the kernel), and Linux moves at most
# MAX_RW_COUNT (0x7ffff000) bytes per call anyway; 1 GiB keeps every
# request well inside both, page aligned.  Every file operation asks for
# at most this much and loops over the rest.
MAX_RW = MAX_IO_LEN

# io's messages for a closed file: IOBase's (the text layer's too) and the
# one fileno(), tell() and friends give.
CLOSED = "I/O operation on closed file."
CLOSED_PLAIN = "I/O operation on closed file"

def capped(nbytes):
    """How much of ``nbytes`` one request may move."""
    return min(nbytes, MAX_RW)


def capped_vecs(vecs):
    """The leading part of ``(pointer, length)`` pairs one request may
    move, the last pair shortened if needed."""
    out, left = [], MAX_RW
    for ptr, nbytes in vecs:
        if nbytes > left:
            if left:
                out.append((ptr, left))
            break
        out.append((ptr, nbytes))
        left -= nbytes
    return out


class LineReading:
    """``readlines``, ``writelines``, ``async for`` and ``__anext__`` on top
    of a file's own ``readline`` and ``write`` (binary and text files share
    them)."""

    async def readlines(self, hint=-1):
        hint = optional_size(hint)
        if self.closed:
            raise ValueError(CLOSED)
        lines, total = [], 0
        while True:
            line = await self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    async def writelines(self, lines):
        if self.closed:
            raise ValueError(CLOSED)
        for line in lines:
            await self.write(line)

    def __aiter__(self):
        if self.closed:
            raise ValueError(CLOSED)
        return self

    async def __anext__(self):
        if self.closed:
            raise ValueError(CLOSED)
        line = await self.readline()
        if not line:
            raise StopAsyncIteration
        return line


def fspath_bytes(path):
    """The bytes the kernel needs for ``path`` (str, bytes or PathLike),
    with the errors ``os.open`` gives for bad paths."""
    encoded = os.fsencode(path)
    if b"\0" in encoded:
        raise ValueError("embedded null byte")
    return encoded


def _stat_from_statx(buf):
    out = ffi.new("struct ul_stat *")
    lib.ul_statx_decode(buf, out)
    # Field order of os.stat_result on Linux: the ten tuple fields (with
    # integer times), then float times, nanosecond times, blksize,
    # blocks, rdev.
    return os.stat_result((
        out.mode, out.ino, out.dev, out.nlink, out.uid, out.gid, out.size,
        out.atime_sec, out.mtime_sec, out.ctime_sec,
        out.atime_sec + out.atime_nsec * 1e-9,
        out.mtime_sec + out.mtime_nsec * 1e-9,
        out.ctime_sec + out.ctime_nsec * 1e-9,
        out.atime_sec * 1_000_000_000 + out.atime_nsec,
        out.mtime_sec * 1_000_000_000 + out.mtime_nsec,
        out.ctime_sec * 1_000_000_000 + out.ctime_nsec,
        out.blksize, out.blocks, out.rdev,
    ))


class _Converted:
    """The ring entry of a request whose result ``convert`` turns into what
    ``entry`` (its op) expects: an open's fd into ``(fd, stat)``, a statx
    into an ``os.stat_result``.  A failure (a negative errno) passes as is."""

    __slots__ = ("entry", "convert", "keepalive", "returns_fd")

    def __init__(self, entry, convert, returns_fd=False):
        self.entry = entry
        self.convert = convert
        self.keepalive = None
        self.returns_fd = returns_fd

    def on_completion(self, res, flags):
        self.entry.on_completion(res if res < 0 else self.convert(res), flags)

    def ring_closed(self, res):
        self.entry.ring_closed(res)


class RingEngine:
    """Operations as io_uring requests on the loop's ring."""

    name = "io_uring"
    # A cancelled request settles within a turn or two (ASYNC_CANCEL stops
    # a read or write waiting on a pipe; one on a disk file finishes), so
    # a caller may lend the kernel its own memory and, when cancelled,
    # wait for the request to settle before it gets that memory back
    # (perform's ``lends``).
    settles_promptly = True

    def __init__(self, loop):
        self.loop = loop
        self._ring = loop._ring
        # IORING_OP_FTRUNCATE came with kernel 6.9; lseek has no opcode.
        self._ftruncate_on_ring = "ftruncate" in loop._features.on
        self._threads = ThreadEngine(loop)

    def cancel(self, handle):
        self._ring.cancel(handle)

    def open_file(self, path, flags, mode, entry):
        """openat on the ring, then fstat(2) of the new fd on the loop
        thread; ``entry`` gets ``(fd, stat_result)`` or a negative errno.

        fstat rather than a statx request because io_uring never runs
        statx inline: every one would be a round trip through an io-wq
        kernel thread, on every open.  fstat of an fd just opened is
        answered from the inode in memory (NFS revalidated it during the
        open); asyncio's own pipe and sendfile code calls os.fstat on the
        loop thread the same way."""
        cpath = ffi.new("char[]", path)
        return self._ring.submit(lib.ul_prep_openat, (lib.AT_FDCWD, cpath, flags, mode),
                                 _Converted(entry, _fstat_or_close, returns_fd=True), cpath)

    def read(self, fd, ptr, nbytes, offset, keep, entry):
        return self._ring.submit(lib.ul_prep_read, (fd, ptr, nbytes, offset), entry, keep)

    def write(self, fd, ptr, nbytes, offset, keep, entry):
        return self._ring.submit(lib.ul_prep_write, (fd, ptr, nbytes, offset), entry, keep)

    @staticmethod
    def _iovecs(vecs):
        iov = ffi.new("struct iovec[]", len(vecs))
        for i, (ptr, nbytes) in enumerate(vecs):
            lib.ul_iovec_set(iov, i, ptr, nbytes)
        return iov

    def readv(self, fd, vecs, offset, keep, entry):
        iov = self._iovecs(vecs)
        return self._ring.submit(lib.ul_prep_readv, (fd, iov, len(vecs), offset), entry,
                                 (iov, keep))

    def writev(self, fd, vecs, offset, keep, entry):
        iov = self._iovecs(vecs)
        return self._ring.submit(lib.ul_prep_writev, (fd, iov, len(vecs), offset), entry,
                                 (iov, keep))

    def fsync(self, fd, datasync, entry):
        return self._ring.submit(lib.ul_prep_fsync, (fd, int(datasync)), entry, None)

    def fallocate(self, fd, offset, length, entry):
        return self._ring.submit(lib.ul_prep_fallocate, (fd, 0, offset, length), entry, None)

    def ftruncate(self, fd, length, entry):
        if self._ftruncate_on_ring:
            return self._ring.submit(lib.ul_prep_ftruncate, (fd, length), entry, None)
        return self._threads.ftruncate(fd, length, entry)

    def lseek(self, fd, offset, whence, entry):
        # SEEK_DATA/SEEK_HOLE may read extent maps from disk; no opcode.
        return self._threads.lseek(fd, offset, whence, entry)

    def statx(self, path, fd, follow_symlinks, entry):
        """Stat ``path`` or, when it is None, the open file ``fd``."""
        buf = ffi.new("struct ul_statx_buf *")
        if path is None:
            cpath, dfd, flags = ffi.new("char[]", b""), fd, lib.AT_EMPTY_PATH
        else:
            cpath, dfd, flags = ffi.new("char[]", path), lib.AT_FDCWD, 0
        if not follow_symlinks:
            flags |= lib.AT_SYMLINK_NOFOLLOW

        return self._ring.submit(lib.ul_prep_statx, (dfd, cpath, flags, buf),
                                 _Converted(entry, lambda res: _stat_from_statx(buf)),
                                 (cpath, buf))

    def close(self, fd, entry):
        return self._ring.submit(lib.ul_prep_close, (fd,), entry, None)

    def close_detached(self, fd, entry):
        """Hand the close of ``fd`` to the kernel before returning, so the
        caller need not wait for the completion (``entry`` still gets it).
        IORING_OP_CLOSE runs at submission for most files; for files with
        a flush method (NFS, FUSE) it runs in io-wq, where it may block
        without blocking the loop.  Returns True."""
        self._ring.submit(lib.ul_prep_close, (fd,), entry, None)
        self._ring.submit_now()
        return True

    def unlinkat(self, path, rmdir, entry):
        cpath = ffi.new("char[]", path)
        flags = lib.AT_REMOVEDIR if rmdir else 0
        return self._ring.submit(lib.ul_prep_unlinkat, (lib.AT_FDCWD, cpath, flags), entry, cpath)

    def renameat(self, src, dst, entry):
        csrc, cdst = ffi.new("char[]", src), ffi.new("char[]", dst)
        return self._ring.submit(lib.ul_prep_renameat,
                                 (lib.AT_FDCWD, csrc, lib.AT_FDCWD, cdst, 0), entry, (csrc, cdst))

    def mkdirat(self, path, mode, entry):
        cpath = ffi.new("char[]", path)
        # mode_t is unsigned: -1 means all bits, as os.mkdir converts it.
        return self._ring.submit(lib.ul_prep_mkdirat, (lib.AT_FDCWD, cpath, mode & 0xFFFFFFFF),
                                 entry, cpath)


def _negative_errno(func, *args):
    # Runs in a worker thread: give the ring's shape of result -- 0 for
    # the os functions that return None, a negative errno for a failure.
    try:
        result = func(*args)
    except OSError as exc:
        return -(exc.errno or errno.EIO)
    return 0 if result is None else result


class _ThreadOpen:
    """An open running in the executor, which its waiter may give up
    (``cancel``) at any moment.  If the waiter is gone by the time the fd
    exists, the worker closes it and reports -ECANCELED; otherwise the fd
    travels to the loop, where the caller's ``on_abandon`` closes it if the
    waiter goes later.  Each fd is closed by exactly one side: the worker
    closes only what it does not deliver.  Closing in the worker matters
    because delivery is a loop callback, which never runs if the loop is
    closed without ``shutdown_default_executor()``."""

    __slots__ = ("abandoned",)

    def __init__(self):
        self.abandoned = False

    def open(self, path, flags, mode):
        if self.abandoned:
            return -errno.ECANCELED    # given up before it started: do not open
        res = _open_and_stat(path, flags, mode)
        if self.abandoned:
            os.close(res[0])
            return -errno.ECANCELED
        return res


class ThreadEngine:
    """The same operations as blocking ``os`` calls in the loop's default
    executor, for loops without a ring.  A call that started cannot be
    stopped: ``cancel`` leaves it to finish, and its result still reaches
    the caller's hooks -- except an open, which closes an fd nobody wants
    in the worker (see :class:`_ThreadOpen`)."""

    name = "executor"
    # A worker blocked in os.readv on an empty pipe may never return: a
    # cancelled caller cannot wait for it, so the memory a worker uses is
    # never the caller's (see RingEngine.settles_promptly).
    settles_promptly = False

    def __init__(self, loop):
        self.loop = loop

    def cancel(self, handle):
        # Never cancel the run_in_executor future: a job already running
        # would finish with nobody to receive its result.
        if isinstance(handle, _ThreadOpen):
            handle.abandoned = True

    def _run(self, entry, func, *args):
        fut = self.loop.run_in_executor(None, _negative_errno, func, *args)

        def deliver(fut):
            try:
                res = fut.result()
            except BaseException as exc:  # not an OSError: report it, fail the call
                self.loop.call_exception_handler({
                    "message": f"uringloop file operation {func.__name__} failed in the executor",
                    "exception": exc,
                })
                res = -errno.EIO
            entry.on_completion(res, 0)

        fut.add_done_callback(deliver)
        return fut

    def open_file(self, path, flags, mode, entry):
        job = _ThreadOpen()
        self._run(entry, job.open, path, flags, mode)
        return job

    @staticmethod
    def _buffers(vecs):
        return [ffi.buffer(ptr, nbytes) for ptr, nbytes in vecs]

    def read(self, fd, ptr, nbytes, offset, keep, entry):
        return self.readv(fd, ((ptr, nbytes),), offset, keep, entry)

    def write(self, fd, ptr, nbytes, offset, keep, entry):
        return self.writev(fd, ((ptr, nbytes),), offset, keep, entry)

    def readv(self, fd, vecs, offset, keep, entry):
        buffers = self._buffers(vecs)
        if offset < 0:
            return self._run(entry, os.readv, fd, buffers)
        return self._run(entry, os.preadv, fd, buffers, offset)

    def writev(self, fd, vecs, offset, keep, entry):
        buffers = self._buffers(vecs)
        if offset < 0:
            return self._run(entry, os.writev, fd, buffers)
        return self._run(entry, os.pwritev, fd, buffers, offset)

    def fsync(self, fd, datasync, entry):
        return self._run(entry, os.fdatasync if datasync else os.fsync, fd)

    def fallocate(self, fd, offset, length, entry):
        return self._run(entry, os.posix_fallocate, fd, offset, length)

    def ftruncate(self, fd, length, entry):
        return self._run(entry, os.ftruncate, fd, length)

    def lseek(self, fd, offset, whence, entry):
        return self._run(entry, os.lseek, fd, offset, whence)

    def statx(self, path, fd, follow_symlinks, entry):
        if path is None:
            return self._run(entry, os.fstat, fd)
        return self._run(entry, _stat, path, follow_symlinks)

    def close(self, fd, entry):
        try:
            return self._run(entry, os.close, fd)
        except RuntimeError:
            # No executor any more: shutdown_default_executor() (asyncio.run
            # calls it) delivers the executor's last results, e.g. an fd
            # whose open was cancelled, after it has refused new work; or
            # the loop is closed.  Closing here beats leaking the fd.
            entry.on_completion(_negative_errno(os.close, fd), 0)
            return None

    def close_detached(self, fd, entry):
        """A thread cannot promise the fd is closed on return: False, and
        the caller closes with ``close`` and waits."""
        return False

    def unlinkat(self, path, rmdir, entry):
        return self._run(entry, os.rmdir if rmdir else os.unlink, path)

    def renameat(self, src, dst, entry):
        return self._run(entry, os.rename, src, dst)

    def mkdirat(self, path, mode, entry):
        return self._run(entry, os.mkdir, path, mode)


def _stat(path, follow_symlinks):
    return os.stat(path, follow_symlinks=follow_symlinks)


def _fstat_or_close(fd):
    """``(fd, os.fstat(fd))``, or the negative errno with fd closed."""
    try:
        return fd, os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        return -(exc.errno or errno.EIO)


def _open_and_stat(path, flags, mode):
    # One executor hop for both, as the built-in open() does them.
    res = _fstat_or_close(os.open(path, flags, mode))
    if isinstance(res, int):
        raise os_error(res)
    return res


def engine_for(loop):
    """The ring of a running ``uringloop.Loop``, else the executor."""
    ring = getattr(loop, "_ring", None)
    if ring is not None and getattr(loop, "backend", None) == "io_uring" and not ring.closed:
        return RingEngine(loop)
    return ThreadEngine(loop)


class Pinned:
    """Caller memory pinned for the kernel (``ffi.from_buffer``) across a
    sequence of operations, unpinned (``ffi.release``) once its owner has
    started the last of them (:meth:`done`, or leaving ``with Pinned()``)
    *and* that one has completed: until its completion the kernel or a
    worker thread may still write there, cancelled or not.  The garbage
    collector must not be left to unpin it: when a pin and the memoryview
    it exports from end up in one garbage cycle (an exception's traceback
    holds the frames holding both), the collector may clear the memoryview
    first, and CPython crashes."""

    __slots__ = ("_cdatas", "_in_flight", "_done")

    def __init__(self):
        self._cdatas = []
        self._in_flight = 0
        self._done = False

    def pin(self, obj, writable=False):
        cdata = ffi.from_buffer(obj, require_writable=writable)
        self._cdatas.append(cdata)
        return cdata

    def started(self):
        self._in_flight += 1

    def completed(self):
        self._in_flight -= 1
        self._release_if_idle()

    def done(self):
        """The owner starts no more operations on this memory."""
        self._done = True
        self._release_if_idle()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.done()

    def _release_if_idle(self):
        if self._done and not self._in_flight:
            for cdata in self._cdatas:
                ffi.release(cdata)
            self._cdatas.clear()


class FileOp(Op):
    """One file request awaited by one coroutine (see :func:`perform`),
    with the lifecycle of _op.Op: ``method(*args, op)`` on the engine
    submits it; ``on_cqe(res)`` runs at each completion whatever became of
    the waiter; ``on_abandon(res)`` runs once the request has completed
    *and* its waiter was cancelled (in whichever order those two
    happened); ``more()``, after a completion that moved bytes, gives the
    next ``(method, args)`` (the rest of a short write) or None.  The
    memory of ``pins`` stays pinned until the op settles, after the hooks
    are through with it."""

    __slots__ = ("engine", "method", "args", "reading", "positioned", "group",
                 "on_cqe", "on_abandon", "more", "pins", "lends")

    def __init__(self, engine, method, args, group, reading, positioned, on_cqe, on_abandon,
                 more, pins, lends):
        Op.__init__(self, engine.loop, group)
        self.lends = lends
        self.engine = engine
        self.method = method
        self.args = args
        self.reading = reading
        self.positioned = positioned
        self.group = group
        self.on_cqe = on_cqe
        self.on_abandon = on_abandon
        self.more = more
        self.pins = pins
        if pins is not None:
            pins.started()   # undone by release, whatever happens

    def submit(self):
        return self.method(*self.args, self)

    def cancel(self):
        self.engine.cancel(self.user_data)

    def complete(self, res, flags):
        if self.on_cqe is not None:
            self.on_cqe(res)
        fut = self.fut
        if fut.done():   # the waiter was cancelled
            if self.on_abandon is not None:
                self.on_abandon(res)
            return
        if self.more is not None and res > 0:
            request = self.more()
            if request is not None:
                self.method, self.args = request
                self.resubmit()
                return
        fut.set_result(res)

    def unclaim(self, res):
        if self.on_abandon is not None:
            self.on_abandon(res)

    def straggle(self):
        if self.positioned:
            self.group.stragglers.add(self)

    def unstraggle(self):
        if self.positioned:
            self.group.stragglers.discard(self)

    def release(self):
        if self.pins is not None:
            self.pins.completed()


class CallGroup:
    """The requests one file has in flight: the registry of its
    :class:`FileOp` objects, and ``fd``, the :class:`RingFd` its fd closes
    by.  Every request borrows it (an executor job looks the number up when
    a thread gets to it; a file closes after its writes have completed), so
    the fd closes once the last request has completed.

    ``stragglers`` are the position-dependent requests whose waiter was
    cancelled before the completion: the next position-dependent operation
    waits for them, because their result moves the file position."""

    __slots__ = ("calls", "stragglers", "fd")

    def __init__(self):
        self.calls = set()
        self.stragglers = set()
        self.fd = RingFd(None)

    def add(self, op):
        self.calls.add(op)
        self.fd.borrow()

    def discard(self, op):
        if op in self.calls:
            self.calls.remove(op)
            self.fd.give_back()

    def cancel_reads(self):
        for op in list(self.calls):
            if op.reading and not op.settled:
                op.cancel()

    async def settle(self):
        while self.stragglers:
            await next(iter(self.stragglers)).wait_settled()


def perform(engine, method, args, group=None, *, reading=False, positioned=False,
            on_cqe=None, on_abandon=None, more=None, pins=None, lends=False):
    """Await ``method(*args, op)`` on ``engine`` (and the requests ``more``
    adds) for its result: a negative errno is returned, not raised.
    Cancelling the caller asks the engine to cancel the request; the hooks
    still run at completion.  ``pins``: the :class:`Pinned` memory the
    request uses.  ``lends``: that memory is the caller's own (only on an
    engine that ``settles_promptly``), so a cancelled caller waits for the
    request to settle before the CancelledError reaches it: once the caller
    has its memory back, the kernel neither writes nor reads it any more,
    as after a cancelled os call."""
    return FileOp(engine, method, args, group, reading, positioned, on_cqe, on_abandon,
                  more, pins, lends).run()
