"""Path operations without an open file, and whole-file helpers:
``stat``, ``remove``, ``rmdir``, ``rename``, ``mkdir``, ``makedirs``,
``read_bytes``, ``write_bytes``, ``read_text``, ``write_text``.

What this module owns: these coroutines and their ``os``-compatible
errors (the subclass picked by errno, ``filename``/``filename2`` set;
arguments refused with ``os``'s exception types before any operation).

Data flow: each call encodes its path(s), runs one operation on the
running loop's engine (``statx``, ``unlinkat``, ``renameat``, ``mkdirat``
on the ring, or the ``os`` function in the executor) and turns a negative
result into the OSError ``os`` would raise.  The whole-file helpers are
open/read-or-write/close through ``_binary.open``.
"""
import asyncio
import os
import stat as stat_module

from ._binary import open as _open
from ._args import c_int, fd_number
from ._ops import engine_for, fspath_bytes, perform
from .._native import os_error


async def _run(method_name, args, filename, filename2=None):
    engine = engine_for(asyncio.get_running_loop())
    res = await perform(engine, getattr(engine, method_name), args)
    if isinstance(res, int) and res < 0:
        raise os_error(res, filename, filename2)
    return res


async def stat(path, *, follow_symlinks=True):
    """``os.stat`` through statx: a path, or an open file descriptor."""
    if isinstance(path, int):
        fd = fd_number(path)
        if not follow_symlinks:
            raise ValueError("stat: cannot use fd and follow_symlinks together")
        return await _run("statx", (None, fd, True), fd)
    return await _run("statx", (fspath_bytes(path), None, follow_symlinks), os.fspath(path))


async def remove(path):
    """``os.remove``: unlink a file (IsADirectoryError for a directory)."""
    await _run("unlinkat", (fspath_bytes(path), False), os.fspath(path))


async def rmdir(path):
    """``os.rmdir``: remove an empty directory."""
    await _run("unlinkat", (fspath_bytes(path), True), os.fspath(path))


async def rename(src, dst):
    """``os.rename``: replace ``dst`` with ``src``, atomically."""
    await _run("renameat", (fspath_bytes(src), fspath_bytes(dst)),
               os.fspath(src), os.fspath(dst))


async def mkdir(path, mode=0o777):
    """``os.mkdir``."""
    encoded, mode = fspath_bytes(path), c_int(mode)
    await _run("mkdirat", (encoded, mode), os.fspath(path))


async def _is_dir(path):
    try:
        return stat_module.S_ISDIR((await stat(path)).st_mode)
    except OSError:
        return False


async def makedirs(name, mode=0o777, exist_ok=False):
    """``os.makedirs``: create ``name`` and any missing parents (which get
    mode 0o777, as in os.makedirs since Python 3.7).  Tries the leaf first,
    so an existing parent costs no extra operation.  Unlike os.makedirs,
    a bad ``mode`` is refused before any directory is made."""
    mode = c_int(mode)
    try:
        await mkdir(name, mode)
        return
    except FileNotFoundError:
        head, tail = os.path.split(os.fspath(name))
        if not tail:
            head, tail = os.path.split(head)
        if not head or not tail:
            raise
    except OSError:
        if not exist_ok or not await _is_dir(name):
            raise
        return
    await makedirs(head, exist_ok=True)
    if tail == (os.curdir if isinstance(tail, str) else os.curdir.encode()):
        return
    try:
        await mkdir(name, mode)
    except OSError:
        # Someone else made it meanwhile: as os.makedirs does.
        if not exist_ok or not await _is_dir(name):
            raise


async def read_bytes(path):
    """The whole content of the file at ``path``."""
    async with _open(path, "rb") as f:
        return await f.read()


async def write_bytes(path, data):
    """Replace the content of ``path`` with ``data``; returns its length."""
    view = memoryview(data)
    async with _open(path, "wb") as f:
        return await f.write(view)


async def read_text(path, encoding=None, errors=None, newline=None):
    """The whole content of ``path``, decoded."""
    async with _open(path, "r", encoding=encoding, errors=errors, newline=newline) as f:
        return await f.read()


async def write_text(path, data, encoding=None, errors=None, newline=None):
    """Replace the content of ``path`` with the text ``data``."""
    if not isinstance(data, str):
        raise TypeError(f"data must be str, not {type(data).__name__}")
    async with _open(path, "w", encoding=encoding, errors=errors, newline=newline) as f:
        return await f.write(data)
