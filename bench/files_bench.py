"""Async file I/O side by side: uringloop's file API on its ring vs aiofiles
vs ``loop.run_in_executor`` with plain ``os`` calls, in one run.

Workloads (the same data, offsets and file set for every contender):

  (a) random 4 KiB reads, 64 in flight, over one big file in the page cache
  (b) sequential read of that file in 1 MiB chunks: read() returning bytes,
      and readinto() a reused 1 MiB buffer
  (c) open + read + close of 10,000 small files, one at a time and 64 at a
      time

Contenders:

  uringloop      uringloop.open(...) on a uringloop.Loop (every op a ring request)
  aiofiles       aiofiles.open(...) on asyncio's default loop (each op a thread hop);
                 for (a) every worker has its own handle (seek + read), as a
                 shared handle's position would race
  executor       loop.run_in_executor(None, os.pread ...) on asyncio's loop; for
                 (c) one hop per file (os.open + os.read + os.close in the thread),
                 the cheapest way to use the executor; os.preadv for readinto
  uringloop/exec uringloop.open(...) on asyncio's loop: the same API falling back
                 to the executor (for reference)

Each cell is the best of --repeat runs (default 3; 1 with --quick), since
the machines here are shared and noisy; load averages are printed before
and after.  Prints a markdown table with the ratios; --json PATH also saves
the cells, which is how bench/bench.py (the main job) takes them into its
results and bench/report.py renders them there.

    python bench/files_bench.py            # 1 GiB file, about 3 minutes
    python bench/files_bench.py --quick    # 256 MiB file, under half a minute
    python bench/files_bench.py --dir /mnt/x --size-mib 512 --repeat 5

Needs ``pip install aiofiles`` (its column is skipped, with a note, if it is
missing).  The data lives in a temporary directory under --dir (default:
the system temp dir) and is removed at the end.
"""
import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import report  # noqa: E402
import uringloop  # noqa: E402

try:
    import aiofiles
except ImportError:
    aiofiles = None

READ_SIZE = 4096
CONCURRENCY = 64
CHUNK = 1 << 20
SMALL_FILES = 10_000
SMALL_SIZE = 2048


# -- (a) random 4 KiB reads, 64 in flight ------------------------------------------

async def _split_among_workers(offsets, work):
    share = [offsets[i::CONCURRENCY] for i in range(CONCURRENCY)]
    await asyncio.gather(*(work(part) for part in share))


async def random_uringloop(path, offsets):
    async with uringloop.open(path, "rb") as f:
        async def work(part):
            for off in part:
                await f.pread(READ_SIZE, off)
        await _split_among_workers(offsets, work)


async def random_aiofiles(path, offsets):
    async def work(part):
        async with aiofiles.open(path, "rb") as f:
            for off in part:
                await f.seek(off)
                await f.read(READ_SIZE)
    await _split_among_workers(offsets, work)


async def random_executor(path, offsets):
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        async def work(part):
            for off in part:
                await loop.run_in_executor(None, os.pread, fd, READ_SIZE, off)
        await _split_among_workers(offsets, work)
    finally:
        os.close(fd)


# -- (b) sequential 1 MiB reads ---------------------------------------------------

async def sequential_uringloop(path, size):
    async with uringloop.open(path, "rb") as f:
        while await f.read(CHUNK):
            pass


async def sequential_aiofiles(path, size):
    async with aiofiles.open(path, "rb") as f:
        while await f.read(CHUNK):
            pass


async def sequential_executor(path, size):
    loop = asyncio.get_running_loop()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while data := await loop.run_in_executor(None, os.pread, fd, CHUNK, offset):
            offset += len(data)
    finally:
        os.close(fd)


async def readinto_uringloop(path, size):
    buffer = bytearray(CHUNK)
    async with uringloop.open(path, "rb") as f:
        while await f.readinto(buffer):
            pass


async def readinto_aiofiles(path, size):
    buffer = bytearray(CHUNK)
    async with aiofiles.open(path, "rb") as f:
        while await f.readinto(buffer):
            pass


async def readinto_executor(path, size):
    loop = asyncio.get_running_loop()
    buffer = bytearray(CHUNK)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        offset = 0
        while n := await loop.run_in_executor(None, os.preadv, fd, [buffer], offset):
            offset += n
    finally:
        os.close(fd)


# -- (c) open + read + close of many small files ------------------------------------

async def _each_file(paths, concurrency, one):
    if concurrency == 1:
        for path in paths:
            await one(path)
        return
    async def work(part):
        for path in part:
            await one(path)
    await asyncio.gather(*(work(paths[i::concurrency]) for i in range(concurrency)))


async def small_uringloop(paths, concurrency):
    async def one(path):
        async with uringloop.open(path, "rb") as f:
            await f.read()
    await _each_file(paths, concurrency, one)


async def small_aiofiles(paths, concurrency):
    async def one(path):
        async with aiofiles.open(path, "rb") as f:
            await f.read()
    await _each_file(paths, concurrency, one)


def _read_whole_file(path):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


async def small_executor(paths, concurrency):
    loop = asyncio.get_running_loop()

    async def one(path):
        await loop.run_in_executor(None, _read_whole_file, path)
    await _each_file(paths, concurrency, one)


# -- the harness ------------------------------------------------------------------

CONTENDERS = {
    # name: (loop factory, {workload: coroutine function})
    "uringloop": (uringloop.Loop, {"random": random_uringloop, "sequential": sequential_uringloop,
                                   "readinto": readinto_uringloop, "small": small_uringloop}),
    "aiofiles": (asyncio.SelectorEventLoop, {"random": random_aiofiles,
                                             "sequential": sequential_aiofiles,
                                             "readinto": readinto_aiofiles,
                                             "small": small_aiofiles}),
    "executor": (asyncio.SelectorEventLoop, {"random": random_executor,
                                             "sequential": sequential_executor,
                                             "readinto": readinto_executor,
                                             "small": small_executor}),
    "uringloop/exec": (asyncio.SelectorEventLoop, {"random": random_uringloop,
                                                   "sequential": sequential_uringloop,
                                                   "readinto": readinto_uringloop,
                                                   "small": small_uringloop}),
}


def timed(factory, coro_fn, *args):
    loop = factory()
    try:
        start = time.perf_counter()
        loop.run_until_complete(coro_fn(*args))
        return time.perf_counter() - start
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def make_big_file(path, size):
    block = os.urandom(CHUNK)
    with open(path, "wb") as f:
        for _ in range(size // CHUNK):
            f.write(block)
    with open(path, "rb") as f:     # warm the page cache
        while f.read(1 << 24):
            pass


def make_small_files(directory, count):
    os.makedirs(directory)
    paths = []
    for i in range(count):
        path = os.path.join(directory, f"{i:05d}")
        with open(path, "wb") as f:
            f.write(os.urandom(SMALL_SIZE))
        paths.append(path)
    return paths


def load():
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="256 MiB file, one run each")
    parser.add_argument("--size-mib", type=int, help="big file size (default 1024, quick 256)")
    parser.add_argument("--reads", type=int, help="random reads per run (default 128k, quick 32k)")
    parser.add_argument("--repeat", type=int, help="runs per cell, best kept (default 3, quick 1)")
    parser.add_argument("--dir", default=None, help="where to put the data")
    parser.add_argument("--json", metavar="PATH", help="also save the results as JSON")
    args = parser.parse_args()
    size = (args.size_mib or (256 if args.quick else 1024)) * CHUNK
    reads = args.reads or (32_768 if args.quick else 131_072)
    repeat = args.repeat or (1 if args.quick else 3)
    contenders = dict(CONTENDERS)
    notes = []
    if aiofiles is None:
        del contenders["aiofiles"]
        notes.append("aiofiles is not installed (pip install aiofiles): its column is empty.")

    workdir = tempfile.mkdtemp(prefix="files_bench-", dir=args.dir)
    load_before = load()
    try:
        print(f"# files_bench: {platform.system()} {platform.release()}, "
              f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"best of {repeat}; load average before {load_before}", flush=True)
        big = os.path.join(workdir, "big")
        make_big_file(big, size)
        rng = random.Random(7)
        offsets = [rng.randrange(0, size // READ_SIZE) * READ_SIZE for _ in range(reads)]
        small = make_small_files(os.path.join(workdir, "small"), SMALL_FILES)

        rows = [
            (f"(a) random 4 KiB reads, {CONCURRENCY} in flight, {size >> 20} MiB file",
             "reads/s", "random", (big, offsets), reads),
            (f"(b) sequential 1 MiB read() of the {size >> 20} MiB file", "MiB/s",
             "sequential", (big, size), size / CHUNK),
            (f"(b) sequential 1 MiB readinto() of the {size >> 20} MiB file", "MiB/s",
             "readinto", (big, size), size / CHUNK),
            (f"(c) open+read+close {SMALL_FILES} x {SMALL_SIZE} B files, one at a time",
             "files/s", "small", (small, 1), SMALL_FILES),
            (f"(c) open+read+close {SMALL_FILES} x {SMALL_SIZE} B files, {CONCURRENCY} at a time",
             "files/s", "small", (small, CONCURRENCY), SMALL_FILES),
        ]
        results = []
        for title, unit, workload, wl_args, amount in rows:
            cells = {}
            for name, (factory, fns) in contenders.items():
                best = min(timed(factory, fns[workload], *wl_args) for _ in range(repeat))
                cells[name] = amount / best
                print(f"  {title} | {name}: {cells[name]:,.0f} {unit}", file=sys.stderr,
                      flush=True)
            results.append((title, unit, cells))

        load_after = load()
        print(f"\nload average after: {load_after}\n")
        saved = {"contenders": list(contenders), "repeat": repeat, "size_mib": size >> 20,
                 "load_before": load_before, "load_after": load_after, "notes": notes,
                 "rows": [{"title": title, "unit": unit, "cells": cells}
                          for title, unit, cells in results]}
        if args.json:
            with open(args.json, "w") as f:
                json.dump(saved, f, indent=1)
        print(report.files_table(saved))
        for note in notes:
            print(f"\n{note}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
