"""A user program that touches every public name of uringloop.

tests/test_packaging.py installs the wheel into a fresh venv, runs this
there (outside the source tree) and checks it with ``mypy --strict``
against the installed package, as a user's type checker would see it.
Prints one line per part; the last is "ok".
"""
import asyncio
import os
import sys
import tempfile

import uringloop
from uringloop import (AsyncFile, AsyncTextFile, BackendUnavailableError, EventLoopPolicy,
                       Loop, SelectorLoop)


async def use_files(tmp: str) -> int:
    path = os.path.join(tmp, "data.bin")
    written: int = await uringloop.write_bytes(path, b"line one\nline two\n")
    data: bytes = await uringloop.read_bytes(path)
    await uringloop.write_text(path + ".txt", "text\n", encoding="utf-8")
    text: str = await uringloop.read_text(path + ".txt", encoding="utf-8")
    async with uringloop.open(path, "r+b") as f:
        binary: AsyncFile = f
        head: bytes = await f.read(4)
        buf = bytearray(4)
        got: int = await f.readinto(buf)
        line: bytes = await f.readline()
        rest: list[bytes] = await f.readlines()
        block: bytes = await f.pread(4, 0)
        got += await f.pwrite(b"LINE", 0)
        await f.seek(0)
        lines = [each async for each in f]
        where: int = await f.tell()
        st: os.stat_result = await f.stat()
        await f.fsync()
    opened = await uringloop.open(path + ".txt", "r+", encoding="utf-8")
    textfile: AsyncTextFile = opened
    chars: str = await textfile.read()
    await textfile.write("more\n")
    await textfile.close()
    either = await uringloop.open(path, os.environ.get("MODE", "rb"))
    await either.close()
    await uringloop.makedirs(os.path.join(tmp, "a", "b"), exist_ok=True)
    await uringloop.mkdir(os.path.join(tmp, "c"))
    await uringloop.rename(os.path.join(tmp, "c"), os.path.join(tmp, "d"))
    await uringloop.rmdir(os.path.join(tmp, "d"))
    await uringloop.remove(path + ".txt")
    size = (await uringloop.stat(path)).st_size
    assert data == b"line one\nline two\n" and text == chars == "text\n"
    assert (head, bytes(buf), line, rest, block) == (b"line", b" one", b"\n", [b"line two\n"],
                                                     b"line")
    assert got == 8 and lines == [b"LINE one\n", b"line two\n"]
    return written + len(line) + len(rest) + where + st.st_size + size + len(binary.engine)


async def main() -> str:
    with tempfile.TemporaryDirectory() as tmp:
        await use_files(tmp)
    loop = asyncio.get_running_loop()
    return getattr(loop, "backend", type(loop).__name__)


def entry() -> None:
    print("version", uringloop.__version__)
    print("run", uringloop.run(main(), debug=False))
    loop = uringloop.new_event_loop()
    print("new_event_loop", loop.backend, loop.run_until_complete(main()))
    loop.close()
    with asyncio.Runner(loop_factory=uringloop.new_event_loop) as runner:
        print("Runner", runner.run(main()))
    if sys.version_info >= (3, 12):
        print("asyncio.run", asyncio.run(main(), loop_factory=uringloop.new_event_loop))
    try:
        Loop().close()
    except BackendUnavailableError as exc:
        print("Loop", exc)
    SelectorLoop().close()
    policy: asyncio.AbstractEventLoopPolicy = EventLoopPolicy()
    uringloop.install()
    try:
        print("install", asyncio.run(main()), type(policy).__name__)
    finally:
        asyncio.set_event_loop_policy(None)
    print("ok")


if __name__ == "__main__":
    entry()
