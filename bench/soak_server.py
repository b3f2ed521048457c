"""The soak's server process: echo servers of every style on one event loop.

    python -m bench.soak_server --loop uringloop|asyncio --cert PEM [--seed S]

Owns: the six echo servers (below), each on its own ephemeral port of
127.0.0.1, all on the loop under test; counting what they did; recording
every call of the loop's exception handler and every exception a handler
did not expect (a protocol fed data or EOF while its reading is paused
counts as one).  It checks nothing about the data: the clients
(bench/soak_client.py) verify every byte; the orchestrator (bench/soak.py)
samples this process's RSS and fds from /proc.

  protocol  ``asyncio.Protocol``: ``data_received`` writes back; pauses
            reading while the transport is over its (small, random) write
            high-water mark, and now and then pauses and resumes reading
            for a few milliseconds on its own (pause/resume churn)
  buffered  ``asyncio.BufferedProtocol`` handing out buffers of 1 B to
            64 KiB, same flow control and churn; half the connections
            hand out one bytearray that ``get_buffer`` resizes in place
            before every read and that now and then is compacted in a
            callback after ``buffer_updated`` (a transport still exporting
            it between reads makes that a BufferError; one writing there
            late, a checksum mismatch)
  streams   ``asyncio.start_server`` with ``limit=1024``, so the
            StreamReader pauses its transport all the time; reads of
            random sizes, ``write`` + ``drain``
  tls       the same over TLS (``--cert``: one PEM with key and cert); on
            both loops this runs on asyncio's own ``_SelectorSocketTransport``
            (``_make_ssl_transport``), over uringloop's poll requests there
  sock      ``loop.sock_accept`` / ``sock_recv`` / ``sock_recv_into`` /
            ``sock_sendall``; some receives and accepts are cancelled while
            pending and retried (see ``cancel_or_take``); a cancelled
            ``sock_recv_into`` has its part of the reused buffer marked,
            and the mark must still be there after the retry
            (``recv_into_reusing``)
  udp       a ``DatagramProtocol`` that sends each datagram back

Every stream server echoes until the peer's EOF, then closes after the
echo is flushed, so a half-closing client reads the rest of its echo.

Data flow with the orchestrator: once listening, one JSON line on stdout
(pid, backend, ports); on SIGTERM the servers close, the connections still
open are counted and closed, and one final JSON line reports the counts,
the unexpected exceptions and the exception-handler calls.  Exit status 0
unless the loop is not the one asked for (2).
"""
import argparse
import asyncio
import collections
import json
import os
import random
import signal
import socket
import ssl
import sys
import time
import traceback

from bench.echo_server import loop_factory, set_nodelay

STREAM_STYLES = ("protocol", "buffered", "streams", "tls", "sock")
STREAM_LIMIT = 1024
# What a peer that aborts (RST) or cuts a TLS record short may leave behind.
DISCONNECTS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
TLS_DISCONNECTS = DISCONNECTS + (ssl.SSLError,)
HIGH_WATER_MARKS = (None, 1024, 16 * 1024, 64 * 1024, 256 * 1024)
# Most connections get a small kernel send buffer, so that the echo
# backs up into the transport (or sock_sendall) instead of the kernel.
SEND_BUFFERS = (None, 4096, 16 * 1024, 64 * 1024)
# Receive sizes (BufferedProtocol buffers, stream reads, sock_recv sizes):
# now and then tiny, mostly not, so a session of megabytes still ends.
READ_SIZES = (1, 7, 512, 4096, 65536)
READ_WEIGHTS = (1, 1, 4, 10, 30)
CHURN_CHANCE = 0.05
CANCEL_CHANCE = 0.15
DETAILS_KEPT = 20


def raised_at(exc):
    """Where an exception came from: its innermost frames, briefly."""
    frames = traceback.extract_tb(exc.__traceback__)[-3:]
    if not frames:
        return ""
    return " (raised at " + " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno} {f.name}" for f in reversed(frames)) + ")"


def stdlib_race(exc):
    """The name of a known race in CPython's own asyncio (3.11 to 3.13)
    that ``exc`` comes from, or None.  Both are seen on asyncio's loop too:

    * "TLS double connection_lost": in ``_SelectorSocketTransport.
      _write_ready`` of a closing transport, ``_maybe_resume_protocol()``
      lets an SSLProtocol write again; that write fails (the peer reset),
      ``_force_close`` schedules ``_call_connection_lost(exc)``, and
      ``_write_ready`` then calls ``_call_connection_lost(None)`` itself
      without counting it in ``_conn_lost``: the scheduled call finds
      ``_sock`` None (an AttributeError).
    * "cancelled sock_accept": the selector loop removes a cancelled
      ``sock_accept``'s reader from a done-callback, i.e. one iteration
      late; if the listener becomes readable meanwhile, ``_sock_accept``
      accepts and calls ``set_result`` on the cancelled future
      (InvalidStateError, and the connection is dropped)."""
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else None
    if not frames or os.path.basename(frames[-1].filename) != "selector_events.py":
        return None
    if (isinstance(exc, AttributeError) and frames[-1].name == "_call_connection_lost"
            and "'NoneType' object has no attribute 'close'" in str(exc)):
        return "TLS double connection_lost"
    if isinstance(exc, asyncio.InvalidStateError) and frames[-1].name == "_sock_accept":
        return "cancelled sock_accept"
    return None


def dropped_connection(exc):
    """The socket the "cancelled sock_accept" race accepted and then
    dropped (still referenced from the failed frame), or None.  Served as
    if accepted: otherwise CPython's bug would show as a session that ends
    without its echo, or as an fd leaked until the cycle collector ran,
    on the reference loop."""
    tb = exc.__traceback__
    while tb.tb_next is not None:
        tb = tb.tb_next
    conn = tb.tb_frame.f_locals.get("conn")
    return conn if isinstance(conn, socket.socket) else None


class Soak:
    """Counts and failures of the whole server process."""

    def __init__(self, loop, seed):
        self.loop = loop
        self.rng = random.Random(f"server-{seed}")
        self.styles = {name: {"connections": 0, "bytes": 0, "disconnects": 0, "open": set()}
                       for name in STREAM_STYLES}
        self.styles["udp"] = {"datagrams": 0, "bytes": 0, "refused": 0}
        self.events = collections.Counter()   # what the flow control and cancels did
        self.unexpected = []
        self.by_kind = collections.Counter()  # kind of unexpected event -> count
        self.unexpected_count = 0
        self.handler_calls = []
        self.handler_count = 0
        self.stdlib_races = collections.Counter()
        self.tasks = set()
        loop.set_exception_handler(self.exception_handler)

    def exception_handler(self, loop, context):
        exc = context.get("exception")
        loop.default_exception_handler(context)
        race = stdlib_race(exc)
        if race is not None:
            self.stdlib_races[race] += 1
            conn = dropped_connection(exc) if race == "cancelled sock_accept" else None
            if conn is not None:
                self.serve_sock_connection(conn)
            return
        self.handler_count += 1
        self.by_kind[f"exception handler: {context.get('message')}: {type(exc).__name__}"] += 1
        line = (f"{context.get('message')}: {exc!r}{raised_at(exc)}" if exc
                else str(context.get("message")))
        if len(self.handler_calls) < DETAILS_KEPT:
            self.handler_calls.append(line)

    def fail(self, style, what, exc):
        self.unexpected_count += 1
        self.by_kind[f"{style}: {what}: {type(exc).__name__}"] += 1
        if len(self.unexpected) < DETAILS_KEPT:
            self.unexpected.append(f"{style}: {what}: {exc!r}{raised_at(exc)}")
        print(f"soak_server: {style}: {what}: {exc!r}", file=sys.stderr, flush=True)

    def opened(self, style, conn):
        stats = self.styles[style]
        stats["connections"] += 1
        stats["open"].add(conn)

    def closed(self, style, conn, exc):
        stats = self.styles[style]
        stats["open"].discard(conn)
        if exc is None:
            return
        if isinstance(exc, TLS_DISCONNECTS if style == "tls" else DISCONNECTS):
            stats["disconnects"] += 1
        else:
            self.fail(style, "connection lost", exc)

    def read_size(self):
        return self.rng.choices(READ_SIZES, READ_WEIGHTS)[0]

    def setup_socket(self, sock):
        set_nodelay(sock)
        size = self.rng.choice(SEND_BUFFERS)
        if size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)

    def serve_sock_connection(self, conn):
        conn.setblocking(False)
        self.setup_socket(conn)
        self.spawn(sock_echo(self, conn))

    def spawn(self, coro):
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def report(self, open_at_stop):
        styles = {name: {k: v for k, v in stats.items() if k != "open"}
                  for name, stats in self.styles.items()}
        for name, count in open_at_stop.items():
            styles[name]["open_at_stop"] = count
        return {"styles": styles, "events": dict(self.events),
                "unexpected": self.unexpected, "unexpected_count": self.unexpected_count,
                "handler_calls": self.handler_calls, "handler_count": self.handler_count,
                "stdlib_races": dict(self.stdlib_races),
                "by_kind": dict(self.by_kind)}


class FlowControl:
    """Reading stays paused while any reason holds: the write side over its
    high-water mark ("write") or a short random pause of its own ("churn")."""

    def start(self, soak, style, transport):
        self.soak, self.style, self.transport = soak, style, transport
        self.paused = set()
        high = soak.rng.choice(HIGH_WATER_MARKS)
        if high is not None:
            transport.set_write_buffer_limits(high=high)
        soak.setup_socket(transport.get_extra_info("socket"))
        soak.opened(style, transport)

    def pause(self, reason):
        self.soak.events[f"{self.style} pause ({reason})"] += 1
        if not self.paused and not self.transport.is_closing():
            self.transport.pause_reading()
        self.paused.add(reason)

    def resume(self, reason):
        self.paused.discard(reason)
        if not self.paused and not self.transport.is_closing():
            self.transport.resume_reading()

    def echo(self, data):
        if self.paused:
            self.soak.fail(self.style, "data delivered while reading is paused",
                           RuntimeError(f"{len(data)} bytes, paused for {sorted(self.paused)}"))
        self.soak.styles[self.style]["bytes"] += len(data)
        self.transport.write(data)
        if "churn" not in self.paused and self.soak.rng.random() < CHURN_CHANCE:
            self.pause("churn")
            self.soak.loop.call_later(self.soak.rng.uniform(0, 0.005), self.resume, "churn")

    def pause_writing(self):
        self.pause("write")

    def resume_writing(self):
        self.resume("write")

    def eof_received(self):
        if self.paused:
            self.soak.fail(self.style, "EOF delivered while reading is paused",
                           RuntimeError(f"paused for {sorted(self.paused)}"))
        return False  # the transport closes once the echo is flushed

    def connection_lost(self, exc):
        self.soak.closed(self.style, self.transport, exc)


class EchoProtocol(FlowControl, asyncio.Protocol):
    def __init__(self, soak):
        self.soak = soak

    def connection_made(self, transport):
        self.start(self.soak, "protocol", transport)

    def data_received(self, data):
        self.echo(data)


class EchoBufferedProtocol(FlowControl, asyncio.BufferedProtocol):
    def __init__(self, soak):
        self.soak = soak
        self.buffer = bytearray(max(READ_SIZES))
        # Resizing: get_buffer() hands out the bytearray itself, resized.
        self.resizing = soak.rng.random() < 0.5

    def connection_made(self, transport):
        self.start(self.soak, "buffered", transport)

    def get_buffer(self, sizehint):
        size = self.soak.read_size()
        if not self.resizing:
            return memoryview(self.buffer)[:size]
        buffer = self.buffer
        try:
            # In place: asyncio lets a protocol do this between reads.
            if len(buffer) > size:
                del buffer[size:]
            else:
                buffer.extend(bytes(size - len(buffer)))
        except BufferError as exc:
            self.soak.fail("buffered", "bytearray resized between reads", exc)
            self.buffer = buffer = bytearray(size)
        self.soak.events["buffered resized"] += 1
        return buffer

    def buffer_updated(self, nbytes):
        self.echo(bytes(self.buffer[:nbytes]))
        if self.resizing and self.soak.rng.random() < 0.3:
            # Later, while the transport waits for the next bytes: asyncio
            # holds no buffer then.
            self.soak.loop.call_soon(self.compact, nbytes)

    def compact(self, nbytes):
        """Drop the front, as a parser drops what it consumed."""
        try:
            del self.buffer[:nbytes]
        except BufferError as exc:
            self.soak.fail("buffered", "bytearray compacted between reads", exc)
        self.soak.events["buffered compacted"] += 1


def stream_handler(soak, style):
    async def echo(reader, writer):
        soak.opened(style, writer)
        soak.setup_socket(writer.get_extra_info("socket"))
        high = soak.rng.choice(HIGH_WATER_MARKS)
        if high is not None:
            writer.transport.set_write_buffer_limits(high=high)
        exc = None
        try:
            while data := await reader.read(soak.read_size()):
                soak.styles[style]["bytes"] += len(data)
                writer.write(data)
                await writer.drain()
            writer.close()
            await writer.wait_closed()
        except Exception as e:
            exc = e
        finally:
            writer.close()
            soak.closed(style, writer, exc)
    return echo


async def cancel_or_take(soak, kind, make_op):
    """Starts the operation and, now and then, cancels it while it is
    pending, then starts it again.  The cancel happens in a task step woken
    by a timer or ``sleep(0)``: on asyncio's loop a receive or accept that
    completed has already woken its own task by then, so a cancel never
    lands between a completed operation and its awaiting task there, and no
    data or connection is lost.  A loop that completes operations some
    other way must keep what a late cancel could not stop."""
    if soak.rng.random() >= CANCEL_CHANCE:
        return await make_op()
    task = soak.loop.create_task(make_op())
    if soak.rng.random() < 0.5:
        await asyncio.sleep(0)
    else:
        await asyncio.sleep(soak.rng.uniform(0, 0.002))
    if not task.done():
        task.cancel()
        soak.events[f"sock {kind} cancelled while pending"] += 1
    await asyncio.wait({task})
    if task.cancelled():
        return await make_op()
    return task.result()


async def serve_sock(soak, listener):
    loop = soak.loop
    while True:
        try:
            conn, _ = await cancel_or_take(soak, "accept", lambda: loop.sock_accept(listener))
        except Exception as exc:
            soak.fail("sock", "sock_accept", exc)
            continue
        soak.serve_sock_connection(conn)


RECV_INTO_MARK = 0xA5
BUSY_AFTER_CANCEL = 0.001


async def recv_into_reusing(soak, conn, buffer, size):
    """The bytes of one ``sock_recv_into`` at the front of ``buffer``,
    reused by every receive.  Now and then another task cancels this one
    while the receive is pending (see ``cancel_me``: on asyncio's loop the
    cancel never lands after a completion); the
    buffer is then the caller's again at once: its front is marked before
    anything else runs, the retry goes into the back half, and the mark
    must be intact afterwards -- a receive cancelled too late must write
    nothing there (CPython's test_sock_client_racing caught one)."""
    loop = soak.loop
    front = memoryview(buffer)[:size]
    if soak.rng.random() >= CANCEL_CHANCE:
        return bytes(front[:await loop.sock_recv_into(conn, front)])
    me = asyncio.current_task()
    pending = [True]

    async def cancel_me():
        # Either at once (the step after the receive went out: asyncio's
        # reader cannot have run yet) or from a timer (its wake-up comes
        # after that of a receive completed in the same turn); a sleep(0)
        # here would let asyncio complete the receive first and lose it.
        if soak.rng.random() < 0.5:
            await asyncio.sleep(soak.rng.uniform(0, 0.002))
        if pending[0]:
            me.cancel()

    canceller = loop.create_task(cancel_me())
    try:
        n = await loop.sock_recv_into(conn, front)
        pending[0] = False
        return bytes(front[:n])
    except asyncio.CancelledError:
        if pending[0] is False or me.uncancel():
            raise   # not the canceller's (the server is stopping)
        mark = bytes([RECV_INTO_MARK]) * size
        front[:] = mark
        # Busy for a moment, as a callback may be, before the loop next
        # talks to the kernel: bytes the peer sends meanwhile find the
        # cancelled receive still there.
        time.sleep(BUSY_AFTER_CANCEL)
    finally:
        pending[0] = False
        canceller.cancel()
    soak.events["sock recv_into cancelled while pending"] += 1
    back = memoryview(buffer)[len(buffer) // 2:len(buffer) // 2 + size]
    data = bytes(back[:await loop.sock_recv_into(conn, back)])
    if front != mark:
        soak.fail("sock", "cancelled sock_recv_into wrote into the buffer afterwards",
                  RuntimeError(f"{sum(b != RECV_INTO_MARK for b in front)} of {size} "
                               f"marked bytes changed"))
    return data


async def sock_echo(soak, conn):
    loop = soak.loop
    soak.opened("sock", conn)
    buffer = bytearray(2 * max(READ_SIZES))
    exc = None
    try:
        while True:
            size = soak.read_size()
            if soak.rng.random() < 0.5:
                data = await cancel_or_take(soak, "recv", lambda: loop.sock_recv(conn, size))
            else:
                data = await recv_into_reusing(soak, conn, buffer, size)
            if not data:
                break
            soak.styles["sock"]["bytes"] += len(data)
            await loop.sock_sendall(conn, data)
    except Exception as e:
        exc = e
    finally:
        conn.close()
        soak.closed("sock", conn, exc)


class UdpEcho(asyncio.DatagramProtocol):
    def __init__(self, soak):
        self.soak = soak
        self.stats = soak.styles["udp"]

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.stats["datagrams"] += 1
        self.stats["bytes"] += len(data)
        self.transport.sendto(data, addr)

    def error_received(self, exc):
        # A client endpoint closed before its echo came back: ICMP port
        # unreachable, reported on the next operation.
        if isinstance(exc, ConnectionRefusedError):
            self.stats["refused"] += 1
        else:
            self.soak.fail("udp", "error_received", exc)


async def serve(args):
    loop = asyncio.get_running_loop()
    backend = getattr(loop, "backend", "selector")
    if args.loop == "uringloop" and backend != "io_uring":
        print(json.dumps({"error": f"uringloop fell back to {backend!r}"}), flush=True)
        sys.exit(2)
    soak = Soak(loop, args.seed)
    host = "127.0.0.1"
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert)
    servers = {
        "protocol": await loop.create_server(lambda: EchoProtocol(soak), host, 0),
        "buffered": await loop.create_server(lambda: EchoBufferedProtocol(soak), host, 0),
        "streams": await asyncio.start_server(stream_handler(soak, "streams"), host, 0,
                                              limit=STREAM_LIMIT),
        "tls": await asyncio.start_server(stream_handler(soak, "tls"), host, 0,
                                          limit=STREAM_LIMIT, ssl=tls),
    }
    ports = {name: server.sockets[0].getsockname()[1] for name, server in servers.items()}
    listener = socket.create_server((host, 0), backlog=1024)
    listener.setblocking(False)
    ports["sock"] = listener.getsockname()[1]
    acceptor = loop.create_task(serve_sock(soak, listener))
    udp, _ = await loop.create_datagram_endpoint(lambda: UdpEcho(soak), local_addr=(host, 0))
    ports["udp"] = udp.get_extra_info("sockname")[1]

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(json.dumps({"pid": os.getpid(), "backend": backend, "ports": ports}), flush=True)
    await stop.wait()

    acceptor.cancel()
    await asyncio.wait({acceptor})
    listener.close()
    for server in servers.values():
        server.close()
    udp.close()
    open_at_stop = {name: len(soak.styles[name]["open"]) for name in STREAM_STYLES}
    for name in STREAM_STYLES:
        for conn in list(soak.styles[name]["open"]):
            if isinstance(conn, socket.socket):
                continue   # its task is cancelled below and closes it
            transport = getattr(conn, "transport", conn)
            transport.abort()
    for task in list(soak.tasks):
        task.cancel()
    if soak.tasks:
        await asyncio.wait(set(soak.tasks), timeout=5)
    await asyncio.sleep(0.1)  # let the aborted transports finish closing
    print(json.dumps(soak.report(open_at_stop)), flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--loop", choices=("uringloop", "asyncio"), required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cert", required=True, help="PEM file holding the key and the cert")
    args = parser.parse_args()
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(serve(args))


if __name__ == "__main__":
    main()
