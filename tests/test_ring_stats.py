"""``loop.ring_stats()``: counters kept in C since the loop was made, the
ring's configuration, and ``URINGLOOP_STATS`` / ``python -m uringloop
stats`` that collect them from a real program."""
import asyncio
import json
import os
import socket
import subprocess
import sys

import pytest

from .conftest import run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROUND_TRIPS = 50


def consistent(stats):
    assert stats["sqes"] == sum(stats["sqes_by_opcode"].values())
    assert stats["cqes"] == stats["cqes_to_python"] + stats["cqes_in_c"]
    assert stats["batches"] <= stats["turns"]
    assert stats["cancels"] == stats["sqes_by_opcode"].get("ASYNC_CANCEL", 0)
    assert stats["cqes_dropped"] == stats["sqes_dropped"] == 0


def delta(after, before, *names):
    return {name: after[name] - before[name] for name in names}


def test_a_fresh_loop(uloop):
    stats = uloop.ring_stats()
    consistent(stats)
    assert stats["cqes"] == 0 and stats["cqes_cancelled"] == 0 and stats["enobufs"] == 0
    config = stats["config"]
    assert (config["sq_entries"], config["cq_entries"]) == (1024, 4096)
    assert "CQSIZE" in config["setup_flags"] and "NODROP" in config["features"]
    assert config["paths"]["multishot_recv"] == "on"
    assert stats["buffers"] == {"count": 512, "size": 128 * 1024, "circulating": 8,
                                "in_use": 0, "high_water": 0}
    json.dumps(stats)  # plain data


def test_sock_calls_count_one_sqe_and_one_cqe_each(uloop):
    # sock_sendall sends at once (the socket takes "ping"): no SQE; each
    # sock_recv is one RECV and one CQE.
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)

    async def main():
        before = uloop.ring_stats()
        for _ in range(ROUND_TRIPS):
            await uloop.sock_sendall(a, b"ping")
            assert await uloop.sock_recv(b, 100) == b"ping"
        return before, uloop.ring_stats()

    with a, b:
        before, after = run(uloop, main())
    consistent(after)
    sqes = {name: after["sqes_by_opcode"].get(name, 0) - before["sqes_by_opcode"].get(name, 0)
            for name in ("SEND", "RECV")}
    assert sqes == {"SEND": 0, "RECV": ROUND_TRIPS}
    moved = delta(after, before, "cqes", "cqes_to_python", "turns", "enters", "batches")
    assert moved["cqes"] == moved["cqes_to_python"] == ROUND_TRIPS
    assert moved["batches"] >= ROUND_TRIPS
    assert 0 < moved["enters"] and moved["batches"] <= moved["turns"]
    # sock_recv took provided buffers, handed back at the next turn.
    assert after["buffers"]["high_water"] >= 1


def test_stream_sends_are_handled_in_c(uloop):
    """A stream transport's successful sends never reach Python: a write
    goes to the socket at once, and a send the ring makes for what the
    socket refused completes in C."""
    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    async def main():
        server = await uloop.create_server(Echo, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        before = uloop.ring_stats()
        for _ in range(ROUND_TRIPS):
            writer.write(b"x" * 100)
            await reader.readexactly(100)
        after = uloop.ring_stats()
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()
        return before, after

    before, after = run(uloop, main())
    consistent(after)
    sends = after["sqes_by_opcode"].get("SEND", 0) - before["sqes_by_opcode"].get("SEND", 0)
    assert after["cqes_in_c"] - before["cqes_in_c"] == sends
    # Only the two transports' receives (one completion per round trip each).
    assert after["cqes_to_python"] - before["cqes_to_python"] <= 2 * ROUND_TRIPS + 4
    # One multishot receive per transport, armed before the round trips.
    assert after["sqes_by_opcode"].get("RECV", 0) == before["sqes_by_opcode"].get("RECV", 0)
    assert after["sqes_by_opcode"]["ACCEPT"] == 1


def test_cancellations_are_counted(uloop):
    a, b = socket.socketpair()
    a.setblocking(False)

    async def main():
        before = uloop.ring_stats()
        task = asyncio.ensure_future(uloop.sock_recv(a, 10))
        await asyncio.sleep(0.01)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.01)
        return before, uloop.ring_stats()

    with a, b:
        before, after = run(uloop, main())
    consistent(after)
    assert after["cancels"] - before["cancels"] == 1
    assert after["cqes_cancelled"] - before["cqes_cancelled"] == 1


def test_closed_loop_keeps_its_final_stats(uloop):
    run(uloop, asyncio.sleep(0))
    uloop.close()
    final = uloop.ring_stats()
    assert final == uloop.ring_stats() and final["turns"] > 0


_PROGRAM = """
import asyncio, sys
import uringloop

async def main():
    await asyncio.sleep(0)
    return asyncio.get_running_loop()

uringloop.run(main())                              # closed by asyncio.Runner
left_open = uringloop.new_event_loop()             # counted at exit
left_open.run_until_complete(asyncio.sleep(0))
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def child_env(**extra):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("URINGLOOP_") or name == "URINGLOOP_SINGLE_THREAD"}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def test_uringloop_stats_environment_variable(tmp_path):
    path = tmp_path / "stats.jsonl"
    proc = subprocess.run([sys.executable, "-c", _PROGRAM],
                          env=child_env(URINGLOOP_STATS=str(path)),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["closed"] for line in lines] == [True, False]
    assert len({line["pid"] for line in lines}) == 1
    for line in lines:
        assert line["turns"] > 0 and "config" in line
        consistent(line)


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_command(as_json):
    args = ["stats"] + (["--json"] if as_json else []) + ["--", sys.executable, "-c",
                                                          _PROGRAM, "3"]
    proc = subprocess.run([sys.executable, "-m", "uringloop", *args], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr  # the command's own status
    if as_json:
        stats = json.loads(proc.stdout)
        assert len(stats) == 2 and all(s["turns"] > 0 for s in stats)
    else:
        out = proc.stdout
        assert out.count("\nloop ") + out.startswith("loop ") == 2, out
        assert "(never closed: counted at exit)" in out
        assert "io_uring_enter calls" in out and "SQEs " in out and "POLL_ADD" in out
        assert "paths on:" in out


def test_stats_command_needs_a_command():
    proc = subprocess.run([sys.executable, "-m", "uringloop", "stats"], env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "a command to run is required" in proc.stderr
