"""Bad input to ``uringloop.open()``'s files and to the path functions gets
the error the built-in gives, never a wrong action.

Each case runs the same call twice: once on a file from the built-in
``open()`` (or through the ``os`` function the method is named after:
``pread`` against ``os.pread``, ``stat`` against ``os.stat`` ...), once
on a ``uringloop.open()`` file awaited on the ``loop`` fixture, so the
io_uring engine and the executor engine are both held to the built-in.
Compared: the exception type, errno and message (the message only where
CPython's own is the same on 3.11-3.13), the result, and what the call
did -- the file position after it and the file's content after close.

Deliberate differences, not tested here: ``preadv``/``pwritev`` take
offset -1 as EINVAL like ``pread``/``pwrite``, where ``os.preadv`` reads at
the kernel's file position (an ``AsyncFile`` keeps its own); the pread
family and ``fallocate`` on a closed file or one opened without the
right mode raise the file's ValueError / UnsupportedOperation, not EBADF;
``pread(n)`` of an absurd ``n`` allocates only what one read can fill
(os.pread: MemoryError); ``makedirs`` refuses a bad mode before making any
parent; ``seek`` to an offset that fits off_t but not the file system
succeeds and the next read or write fails (io's lseek fails at once).
"""
import array
import asyncio
import io
import os
import pathlib

import pytest

import uringloop

from .conftest import run

CONTENT = b"0123456789\nabc\n"
HUGE = 1 << 63          # one past the largest off_t / ssize_t
HUGER = 1 << 64


def _describe(exc, message=True):
    return ("error", type(exc), getattr(exc, "errno", None), str(exc) if message else None)


def _sync_outcome(call, message=True):
    try:
        return ("ok", call())
    except Exception as exc:  # noqa: BLE001 - the exception is the expectation
        return _describe(exc, message)


async def _outcome(call, message=True):
    try:
        return ("ok", await call())
    except Exception as exc:  # noqa: BLE001
        return _describe(exc, message)


def _builtin_run(path, mode, name, args, closed):
    path.write_bytes(CONTENT)
    f = open(path, mode)
    if closed:
        f.close()
    outcome = _sync_outcome(lambda: getattr(f, name)(*args))
    position = None if f.closed else _sync_outcome(f.tell)
    f.close()
    return outcome, position, path.read_bytes()


async def _our_run(path, mode, name, args, closed):
    path.write_bytes(CONTENT)
    f = await uringloop.open(path, mode)
    if closed:
        await f.close()
    outcome = await _outcome(lambda: getattr(f, name)(*args))
    position = None if f.closed else await _outcome(f.tell)
    await f.close()
    return outcome, position, path.read_bytes()


# io.TextIOWrapper cannot tell() after readlines() (it iterated); the
# position is then not compared.
_TELL_DISABLED = ("error", OSError, None, "telling position disabled by next() call")


def _compare_methods(loop, path, cases):
    """``cases``: (mode, method, args factory, closed?)."""
    failures = []
    for mode, name, make_args, closed in cases:
        expected = _builtin_run(path, mode, name, make_args(), closed)
        got = run(loop, _our_run(path, mode, name, make_args(), closed))
        if expected[1] == _TELL_DISABLED:
            got = (got[0], _TELL_DISABLED, got[2])
        if got != expected:
            failures.append(f"{mode} {name}{make_args()!r} closed={closed}:\n"
                            f"   built-in {expected}\n   ours     {got}")
    assert not failures, "\n".join(failures)


def _sizes(*values):
    return [lambda v=v: (v,) for v in values]


# Arguments that are wrong (type, sign, magnitude) or at the edge of valid.
_BINARY_READS = [
    ("read", _sizes(-1, None, -5, -HUGE, -HUGE - 1, 2.0, "3", HUGE, HUGER, True, 0, 3)),
    ("read1", _sizes(-1, -5, 2.0, None, HUGER, -HUGE - 1, 0, 4)),
    ("readline", _sizes(-5, None, 2.0, HUGE, HUGER, 0, 4)),
    ("readlines", _sizes(-5, None, 2.0, HUGER, 0, 12)),
    ("readinto", [lambda: (b"xx",), lambda: ("xx",), lambda: (None,),
                  lambda: (memoryview(b"ab"),), lambda: (bytearray(4),),
                  lambda: (array.array("i", [0, 0]),), lambda: (memoryview(bytearray(6))[::2],)]),
]
_BINARY_WRITES = [
    ("write", [lambda: ("text",), lambda: (None,), lambda: (1.5,), lambda: (3,),
               lambda: (array.array("i", [1, 2]),), lambda: (memoryview(b"abcdef")[::2],),
               lambda: (memoryview(b"abcd").cast("B", (2, 2)),), lambda: (b"",)]),
    ("writelines", [lambda: ([b"a", "b"],), lambda: (None,), lambda: ([],), lambda: ((b"x", 3),)]),
]
_BINARY_POSITION = [
    ("seek", [lambda: (1.5,), lambda: ("1",), lambda: (-1,), lambda: (0, 5), lambda: (0, 1.0),
              lambda: (0, None), lambda: (HUGE,), lambda: (HUGER,), lambda: (-HUGE - 1,),
              lambda: (-100, 2), lambda: (-100, 1), lambda: (HUGE - 1, 2), lambda: (3, 1),
              lambda: (0, os.SEEK_DATA), lambda: (4, os.SEEK_DATA), lambda: (100, os.SEEK_DATA),
              lambda: (-1, os.SEEK_DATA), lambda: (0, os.SEEK_HOLE), lambda: (100, os.SEEK_HOLE)]),
    ("truncate", _sizes(-1, 1.5, "1", HUGE, HUGER, -HUGE - 1, None, 3, 100)),
    ("tell", [tuple]),
    ("flush", [tuple]),
]
_PLAIN = [("fileno", [tuple]), ("readable", [tuple]), ("writable", [tuple]),
          ("seekable", [tuple])]


def _cases(table, modes, closed):
    return [(mode, name, make_args, closed)
            for name, arg_list in table for make_args in arg_list for mode in modes]


def test_binary_methods_match_builtin(loop, tmp_path):
    table = _BINARY_READS + _BINARY_WRITES + _BINARY_POSITION
    _compare_methods(loop, tmp_path / "f", _cases(table, ["rb+"], closed=False))


def test_binary_closed_file_matches_builtin(loop, tmp_path):
    table = _BINARY_READS + _BINARY_WRITES + _BINARY_POSITION
    cases = _cases(table + _PLAIN, ["rb+"], closed=True)
    cases += _cases(_BINARY_WRITES + [("truncate", _sizes(None, 1.5))], ["rb"], closed=True)
    cases += _cases([("read", _sizes(3)), ("readinto", [lambda: (bytearray(1),)])], ["ab"],
                    closed=True)
    _compare_methods(loop, tmp_path / "f", cases)


def test_binary_wrong_mode_matches_builtin(loop, tmp_path):
    reads = [("read", _sizes(-1, 3, -5)), ("read1", _sizes(-1, 3)), ("readline", _sizes(-1, 2.0)),
             ("readlines", _sizes(-1)),
             ("readinto", [lambda: (bytearray(2),), lambda: ("xx",), lambda: (b"xx",)])]
    writes = [("write", [lambda: (b"x",), lambda: ("x",), lambda: (None,)]),
              ("writelines", [lambda: ([b"x"],), lambda: ([],)]),
              ("truncate", _sizes(None, 0, 1.5, "x"))]
    cases = _cases(reads, ["ab", "wb"], closed=False) + _cases(writes, ["rb"], closed=False)
    _compare_methods(loop, tmp_path / "f", cases)


def test_unbuffered_binary_matches_fileio(loop, tmp_path):
    path = tmp_path / "f"
    for n in (-5, -1, None, 4):
        path.write_bytes(CONTENT)
        with open(path, "rb", buffering=0) as f:
            expected = f.read(n)

        async def main():
            async with uringloop.open(path, "rb", buffering=0) as f:
                return await f.read(n)
        assert run(loop, main()) == expected, n


# -- text files --------------------------------------------------------------------

_TEXT_METHODS = [
    ("read", _sizes(-1, -5, None, 2.0, "3", HUGE, HUGER, 0, 3)),
    ("readline", _sizes(-1, -5, None, 2.0, HUGE, HUGER, 0, 4)),
    ("readlines", _sizes(-5, None, 2.0, HUGER, 12)),
    ("write", [lambda: (b"x",), lambda: (None,), lambda: (3,), lambda: ("",)]),
    ("writelines", [lambda: ([b"x"],), lambda: (None,), lambda: ([],), lambda: (["a", 3],)]),
    ("seek", [lambda: (-1,), lambda: (0, 3), lambda: (0, 1.5), lambda: (1, 1), lambda: (1, 2),
              lambda: (HUGE,), lambda: (0, 1), lambda: (0, 2)]),
    ("truncate", _sizes(-1, 1.5, "1", HUGE, -HUGE - 1, None, 3)),
    ("tell", [tuple]),
    ("flush", [tuple]),
]


def test_text_methods_match_builtin(loop, tmp_path):
    _compare_methods(loop, tmp_path / "f", _cases(_TEXT_METHODS, ["r+"], closed=False))


def test_text_closed_file_matches_builtin(loop, tmp_path):
    cases = _cases(_TEXT_METHODS + _PLAIN + [("seek", [lambda: ("x",)])], ["r+"], closed=True)
    cases += _cases([("write", [lambda: ("x",)]), ("truncate", _sizes(None))], ["r"], closed=True)
    cases += _cases([("read", _sizes(-1)), ("readline", _sizes(-1))], ["a"], closed=True)
    _compare_methods(loop, tmp_path / "f", cases)


def test_text_wrong_mode_matches_builtin(loop, tmp_path):
    reads = [("read", _sizes(-1, 2.0)), ("readline", _sizes(-1, None)), ("readlines", _sizes(-1))]
    writes = [("write", [lambda: ("x",), lambda: (3,)]), ("writelines", [lambda: (["x"],)]),
              ("truncate", _sizes(None, 1.5))]
    cases = _cases(reads, ["a", "w"], closed=False) + _cases(writes, ["r"], closed=False)
    _compare_methods(loop, tmp_path / "f", cases)


def test_text_file_has_engine(loop, tmp_path):
    async def main():
        async with uringloop.open(tmp_path / "t", "w") as f:
            return f.engine, f.buffer.engine
    assert run(loop, main()) == (("io_uring",) * 2 if loop.is_uring else ("executor",) * 2)


def test_iterating_a_closed_file_matches_builtin(loop, tmp_path):
    path = tmp_path / "f"
    path.write_bytes(CONTENT)
    for mode in ("rb", "r"):
        f = open(path, mode)
        f.close()
        expected = _sync_outcome(lambda: iter(f))

        async def main():
            f = await uringloop.open(path, mode)
            await f.close()
            return _sync_outcome(lambda: aiter(f))
        assert run(loop, main()) == expected, mode


# -- the pread family, against the os functions --------------------------------------

_EXPLICIT = [
    # (method, args factory, the os call it mirrors)
    ("pread", lambda: (-1, 0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1, -1), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (0, -1), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1.0, 0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1, 1.0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (None, 0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (HUGE, 0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (-HUGE - 1, 0), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1, HUGE), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1, -HUGE - 1), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (1, HUGE - 1), lambda fd, *a: os.pread(fd, *a)),
    ("pread", lambda: (4, 12), lambda fd, *a: os.pread(fd, *a)),
    ("pwrite", lambda: ("x", 0), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (None, 0), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"x", -1), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"", -1), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"x", 1.0), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"x", HUGE), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"x", HUGE - 1), lambda fd, *a: os.pwrite(fd, *a)),
    ("pwrite", lambda: (b"xy", 20), lambda fd, *a: os.pwrite(fd, *a)),
    ("preadv", lambda: ([b"x"], 0), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: ([memoryview(b"x")], 0), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: (["x"], 0), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: (bytearray(1), 0), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: ([bytearray(1)], 1.0), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: ([bytearray(1)], HUGE), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: ([bytearray(1)], -2), lambda fd, *a: os.preadv(fd, *a)),
    ("preadv", lambda: ([], 0), lambda fd, *a: os.preadv(fd, *a)),
    ("pwritev", lambda: (["x"], 0), lambda fd, *a: os.pwritev(fd, *a)),
    ("pwritev", lambda: (b"x", 0), lambda fd, *a: os.pwritev(fd, *a)),
    ("pwritev", lambda: ([b"x"], HUGE), lambda fd, *a: os.pwritev(fd, *a)),
    ("pwritev", lambda: ([b"x"], -2), lambda fd, *a: os.pwritev(fd, *a)),
    ("pwritev", lambda: ([], 0), lambda fd, *a: os.pwritev(fd, *a)),
    ("pwritev", lambda: ([b"ab", bytearray(b"c")], 14), lambda fd, *a: os.pwritev(fd, *a)),
    ("fallocate", lambda: (-1, 1), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (0, -1), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (0, 0), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (0, 1.0), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (HUGE, 1), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (0, HUGE), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (HUGE - 2, 10), lambda fd, *a: os.posix_fallocate(fd, *a)),
    ("fallocate", lambda: (2, 30), lambda fd, *a: os.posix_fallocate(fd, *a)),
]


def test_explicit_offsets_match_os(loop, tmp_path):
    path = tmp_path / "f"
    failures = []
    for name, make_args, os_call in _EXPLICIT:
        path.write_bytes(CONTENT)
        fd = os.open(path, os.O_RDWR)
        try:
            # Messages of the os functions name C types and vary between
            # versions for non-sequences: compare type and errno.
            expected = _sync_outcome(lambda: os_call(fd, *make_args()), message=False)
        finally:
            os.close(fd)
        expected_content = path.read_bytes()
        path.write_bytes(CONTENT)

        async def main():
            async with uringloop.open(path, "rb+") as f:
                outcome = await _outcome(lambda: getattr(f, name)(*make_args()), message=False)
                return outcome, await f.tell()
        got, position = run(loop, main())
        if (got, path.read_bytes(), position) != (expected, expected_content, 0):
            failures.append(f"{name}{make_args()!r}: os {expected} {expected_content!r}\n"
                            f"   ours {got} {path.read_bytes()!r} at {position}")
    assert not failures, "\n".join(failures)


# -- path functions, against os ---------------------------------------------------------

def _path_cases(tmp_path):
    missing, a_file, a_dir = tmp_path / "missing", tmp_path / "file", tmp_path / "dir"
    return [
        ("stat", (None,), os.stat), ("stat", (3.5,), os.stat),
        ("stat", (str(tmp_path) + "/a\0b",), os.stat), ("stat", (b"a\0b",), os.stat),
        ("stat", (1000,), os.stat), ("stat", (1 << 31,), os.stat), ("stat", (HUGER,), os.stat),
        ("stat", (-2,), os.stat), ("stat", (missing,), os.stat),
        ("stat", (os.fsencode(missing),), os.stat), ("stat", (str(a_file) + "/x",), os.stat),
        ("remove", (3,), os.remove), ("remove", (None,), os.remove),
        ("remove", ("a\0b",), os.remove), ("remove", (missing,), os.remove),
        ("remove", (a_dir,), os.remove), ("remove", (b"",), os.remove),
        ("rmdir", (a_file,), os.rmdir), ("rmdir", (missing,), os.rmdir),
        ("rmdir", (3,), os.rmdir), ("rmdir", (tmp_path,), os.rmdir),
        ("rename", (3, "x"), os.rename), ("rename", ("x", None), os.rename),
        ("rename", (missing, "a\0"), os.rename), ("rename", (missing, a_file), os.rename),
        ("rename", (str(missing), os.fsencode(a_file)), os.rename),
        ("rename", (a_dir, a_file), os.rename), ("rename", (a_file, a_dir), os.rename),
        ("mkdir", (3,), os.mkdir), ("mkdir", (a_dir,), os.mkdir),
        ("mkdir", (tmp_path / "new", 1.5), os.mkdir), ("mkdir", (tmp_path / "new", None), os.mkdir),
        ("mkdir", (tmp_path / "new", 1 << 40), os.mkdir),
        ("mkdir", (tmp_path / "new", 1 << 31), os.mkdir),
        ("mkdir", (tmp_path / "new", -(1 << 31) - 1), os.mkdir),
        ("mkdir", (missing / "x",), os.mkdir), ("mkdir", ("",), os.mkdir),
        ("makedirs", (3,), os.makedirs), ("makedirs", (None,), os.makedirs),
        ("makedirs", ("",), os.makedirs), ("makedirs", ("a\0b",), os.makedirs),
        ("makedirs", (tmp_path / "new", 1.5), os.makedirs),
        ("makedirs", (a_file / "x",), os.makedirs), ("makedirs", (a_dir,), os.makedirs),
    ]


def test_path_functions_match_os(loop, tmp_path):
    failures = []
    for name, args, os_call in _path_cases(tmp_path):
        for entry in tmp_path.iterdir():
            (entry.rmdir if entry.is_dir() else entry.unlink)()
        (tmp_path / "file").write_bytes(b"")
        (tmp_path / "dir").mkdir()
        # os's messages say which function and argument; compare type,
        # errno and the filenames.
        expected = _sync_outcome(lambda: os_call(*args), message=False)
        expected_names = _filenames(lambda: os_call(*args))
        listing = sorted(os.listdir(tmp_path))
        for entry in tmp_path.iterdir():
            (entry.rmdir if entry.is_dir() else entry.unlink)()
        (tmp_path / "file").write_bytes(b"")
        (tmp_path / "dir").mkdir()

        async def main():
            call = getattr(uringloop, name)
            return (await _outcome(lambda: call(*args), message=False),
                    await _filenames_async(lambda: call(*args)))
        got, names = run(loop, main())
        if expected[0] == "ok":
            got = got[:1]
            expected = expected[:1]
        if (got, names, sorted(os.listdir(tmp_path))) != (expected, expected_names, listing):
            failures.append(f"{name}{args!r}: os {expected} {expected_names}\n"
                            f"   ours {got} {names}")
    assert not failures, "\n".join(failures)


def _filenames(call):
    try:
        call()
    except OSError as exc:
        return exc.filename, exc.filename2
    except Exception:  # noqa: BLE001
        return None
    return None


async def _filenames_async(call):
    try:
        await call()
    except OSError as exc:
        return exc.filename, exc.filename2
    except Exception:  # noqa: BLE001
        return None
    return None


def test_stat_of_an_fd_refuses_follow_symlinks(loop, tmp_path):
    with open(tmp_path / "f", "wb") as f:
        expected = _sync_outcome(lambda: os.stat(f.fileno(), follow_symlinks=False), False)
        got = run(loop, _outcome(lambda: uringloop.stat(f.fileno(), follow_symlinks=False), False))
    assert got == expected


def test_whole_file_helpers_match_pathlib(loop, tmp_path):
    path = tmp_path / "f"
    cases = [("write_bytes", ("s",)), ("write_bytes", (None,)), ("write_bytes", (3,)),
             ("write_text", (b"s",)), ("write_text", (None,)), ("read_bytes", ()),
             ("read_text", ())]
    failures = []
    for name, args in cases:
        for target in (path, tmp_path / "missing", tmp_path):
            path.write_bytes(CONTENT)
            expected = _sync_outcome(lambda: getattr(pathlib.Path(target), name)(*args))
            path.write_bytes(CONTENT)
            got = run(loop, _outcome(lambda: getattr(uringloop, name)(target, *args)))
            if got != expected:
                failures.append(f"{name}({target}, {args!r}): {expected} / ours {got}")
    assert not failures, "\n".join(failures)
