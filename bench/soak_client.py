"""The soak's client process: churns connections against bench/soak_server.py
and verifies every byte that comes back.

    python -m bench.soak_client --ports JSON --seconds T --seed S [--workers W]
                                [--styles protocol,tls,...] [--behaviours echo,abort,...]

Always on asyncio's default loop, whatever loop the server runs, so that a
bug of the loop under test cannot hide itself on both ends.

Owns: the client behaviours and the verification.  ``--workers`` tasks run
sessions back to back until ``--seconds`` have passed; each worker has its
own ``random.Random`` (from the seed and its index), which picks the style
(server), the behaviour and every size, so a run is repeatable up to
timing.  A stream session connects, then sends pipelined messages of 1 B
to 4 MiB (log-uniform) from one task while another reads:

  echo          read the whole echo, then close
  half_close    send everything, ``write_eof()``, read until EOF (not over TLS)
  slow_reader   a 4 KiB receive buffer, reads of 1 B to 4 KiB with sleeps, so
                the server's write side fills up and pauses
  abort         ``transport.abort()`` mid-write (half the time with
                ``SO_LINGER`` 0, a RST)
  cancel        cancel the reading or the writing task at a random moment,
                then drop the connection (close or abort)
  connect_abort connect and reset at once (the server may not have accepted yet)

Verification: what was sent waits in a queue; every received byte is
compared with the next unverified byte sent, in order, and an echo must
end (EOF or close) exactly at the length sent.  That holds for the bytes
an aborted or cancelled session received before it dropped, too.  A
mismatch records where it happened and, if the bytes that arrived appear
further on in what was sent, how far ahead (data delivered early: a
reordering or a loss).  A session that makes no progress for
``STALL_SECONDS`` is cancelled and counted as an unexpected error.

UDP sessions send bursts of datagrams (8-byte sequence number + payload),
resend the missing ones up to ``UDP_TRIES`` times and count what never
came back as lost, apart from corruption: a datagram that differs from the
one sent under its number, or arrives more often than it was sent, is a
mismatch.

Data flow: prints one JSON line on stdout at the end (see ``Stats.report``).
"""
import argparse
import asyncio
import collections
import json
import math
import random
import socket
import ssl
import struct
import sys
import time

STREAM_STYLES = ("protocol", "buffered", "streams", "tls", "sock")
ALL_STYLES = STREAM_STYLES + ("udp",)
BEHAVIOURS = {"echo": 30, "half_close": 15, "slow_reader": 10, "abort": 12,
              "cancel": 12, "connect_abort": 6}
MAX_MESSAGE = 4 * 1024 * 1024
MAX_SESSION_BYTES = 8 * 1024 * 1024
MAX_SLOW_BYTES = 1024 * 1024
MAX_DATAGRAM = 60000
UDP_TRIES = 4
UDP_WAIT = 0.2
STALL_SECONDS = 20
DETAILS_KEPT = 20
HISTORY_BYTES = 8 * 1024 * 1024
SEQ = struct.Struct("!Q")


def log_uniform(rng, top):
    return min(top, max(1, int(math.exp(rng.uniform(0, math.log(top + 1))))))


class Stats:
    def __init__(self):
        self.sessions = collections.Counter()      # "style/behaviour" -> count
        self.bytes_sent = 0
        self.bytes_verified = 0
        self.mismatches = 0
        self.unexpected = 0
        self.details = []
        self.by_kind = collections.Counter()       # "mismatch style/behaviour" -> count
        self.udp = collections.Counter()

    def record(self, kind, session, what):
        if kind == "mismatch":
            self.mismatches += 1
        else:
            self.unexpected += 1
        self.by_kind[f"{kind} {session.kind}"] += 1
        if len(self.details) < DETAILS_KEPT:
            self.details.append(f"{kind}: {session.label}: {what}")

    def report(self):
        return {"sessions": dict(self.sessions), "connections": sum(
                    n for key, n in self.sessions.items() if not key.startswith("udp")),
                "bytes_sent": self.bytes_sent, "bytes_verified": self.bytes_verified,
                "mismatches": self.mismatches, "unexpected": self.unexpected,
                "udp": dict(self.udp), "by_kind": dict(self.by_kind),
                "details": self.details}


class Mismatch(Exception):
    pass


class Session:
    """One connection: what was sent and not yet seen back, and progress."""

    def __init__(self, stats, kind, label):
        self.stats = stats
        self.kind = kind                      # "style/behaviour"
        self.label = label
        self.total = 0                        # bytes the session means to send
        self.pending = collections.deque()   # bytes sent, not yet verified
        self.head = 0                         # verified bytes of pending[0]
        self.history = collections.deque()   # the last verified chunks, for diagnosis
        self.history_bytes = 0
        self.sent = 0
        self.verified = 0
        self.progress = time.monotonic()
        self.dropping = False                 # set just before a deliberate drop

    def will_send(self, data):
        self.pending.append(data)
        self.sent += len(data)
        self.stats.bytes_sent += len(data)

    def received(self, data):
        self.progress = time.monotonic()
        view = memoryview(data)
        while view:
            if not self.pending:
                raise Mismatch(f"{len(view)} bytes more than sent, at offset {self.verified}")
            chunk = self.pending[0]
            n = min(len(chunk) - self.head, len(view))
            if chunk[self.head:self.head + n] != view[:n]:
                self.mismatch(bytes(view))
            self.head += n
            self.verified += n
            self.stats.bytes_verified += n
            view = view[n:]
            if self.head == len(chunk):
                self.history.append(self.pending.popleft())
                self.history_bytes += len(chunk)
                self.head = 0
                while self.history_bytes - len(self.history[0]) >= HISTORY_BYTES:
                    self.history_bytes -= len(self.history.popleft())

    def mismatch(self, got):
        """Raises a Mismatch saying where the received bytes differ and where
        in this connection's stream, if anywhere, they come from."""
        stream = b"".join(self.history) + b"".join(self.pending)
        here = self.history_bytes + self.head   # the next byte expected, in stream
        first = next(i for i, (a, b) in enumerate(zip(stream[here:], got)) if a != b)
        offset = self.verified + first
        probe = got[first:first + 32]
        ahead = stream.find(probe, here + first + 1) if len(probe) >= 16 else -1
        behind = stream.rfind(probe, 0, here + first) if len(probe) >= 16 else -1
        if ahead >= 0:
            where = (f"they were sent {ahead - here - first} bytes later "
                     f"(later data delivered first: reordered or lost)")
        elif behind >= 0:
            where = f"they repeat bytes sent {here + first - behind} bytes earlier"
        else:
            where = "they are nowhere in what this connection sent (foreign bytes)"
        raise Mismatch(f"byte {offset} of {self.sent} sent differs (all before it matched); "
                       f"{where}")

    def ended(self):
        """The echo ended (EOF, or the session is done reading); a session
        dropped on purpose may end anywhere."""
        if self.verified != self.total and not self.dropping:
            raise Mismatch(f"echo ended after {self.verified} of {self.total} bytes")


class Client:
    def __init__(self, args):
        self.ports = json.loads(args.ports)
        self.seed = args.seed
        self.workers = args.workers
        self.styles = tuple(args.styles.split(","))
        self.behaviours = {name: BEHAVIOURS[name] for name in args.behaviours.split(",")}
        self.stats = Stats()
        self.tls = ssl.create_default_context()
        self.tls.check_hostname = False
        self.tls.verify_mode = ssl.CERT_NONE

    async def run(self, seconds):
        self.deadline = time.monotonic() + seconds
        self.active = set()
        monitor = asyncio.ensure_future(self.monitor())
        await asyncio.gather(*(self.worker(i) for i in range(self.workers)))
        monitor.cancel()
        return self.stats.report()

    async def monitor(self):
        """Past the deadline, says on stderr which sessions are still running."""
        await asyncio.sleep(max(0, self.deadline - time.monotonic()) + 5)
        while True:
            for s in self.active:
                print(f"soak_client: still running: {s.label}, {s.verified} of {s.total} "
                      f"bytes echoed, {s.sent} sent, dropping={s.dropping}, idle "
                      f"{time.monotonic() - s.progress:.1f} s", file=sys.stderr, flush=True)
            await asyncio.sleep(5)

    async def worker(self, index):
        rng = random.Random(f"client-{self.seed}-{index}")
        number = 0
        while time.monotonic() < self.deadline:
            number += 1
            style = rng.choice(self.styles)
            if style == "udp":
                behaviour = "burst"
            else:
                behaviour = rng.choices(list(self.behaviours), list(self.behaviours.values()))[0]
                if behaviour == "half_close" and style == "tls":
                    behaviour = "echo"   # TLS has no half-close
            session = Session(self.stats, f"{style}/{behaviour}",
                              f"{style}/{behaviour} #{index}.{number}")
            self.stats.sessions[f"{style}/{behaviour}"] += 1
            # The session's own generator: how long it runs cannot change
            # the choices of the sessions after it.
            session_rng = random.Random(rng.getrandbits(64))
            if style == "udp":
                coro = self.udp_session(session_rng, session)
            else:
                coro = self.stream_session(session_rng, session, style, behaviour)
            await self.watch(session, coro)

    async def watch(self, session, coro):
        self.active.add(session)
        try:
            await self.watched(session, coro)
        finally:
            self.active.discard(session)

    async def watched(self, session, coro):
        task = asyncio.ensure_future(coro)
        while not task.done():
            await asyncio.wait({task}, timeout=1)
            if not task.done() and time.monotonic() - session.progress > STALL_SECONDS:
                task.cancel()
                await asyncio.wait({task})
                self.stats.record("unexpected", session, f"no progress for {STALL_SECONDS} s, "
                                  f"{session.verified} of {session.sent} bytes echoed")
                return
        try:
            task.result()
        except Mismatch as exc:
            self.stats.record("mismatch", session, str(exc))
        except Exception as exc:
            if not session.dropping:
                self.stats.record("unexpected", session, f"{exc!r} after {session.verified} "
                                  f"of {session.sent} bytes echoed")

    async def connect(self, style, rcvbuf=None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.ports[style]))
        except BaseException:
            sock.close()
            raise
        return sock

    async def stream_session(self, rng, session, style, behaviour):
        if behaviour == "connect_abort":
            sock = await self.connect(style)
            session.dropping = True
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            return
        slow = behaviour == "slow_reader"
        sock = await self.connect(style, rcvbuf=4096 if slow else None)
        tls = dict(ssl=self.tls, server_hostname="localhost") if style == "tls" else {}
        # A slow reader's StreamReader holds little, so its socket fills up.
        reader, writer = await asyncio.open_connection(
            sock=sock, limit=1024 if slow else 2 ** 16, **tls)
        limit = MAX_SLOW_BYTES if slow else MAX_SESSION_BYTES
        sizes = []
        while len(sizes) < 8 and sum(sizes) < limit:
            sizes.append(log_uniform(rng, MAX_MESSAGE))
            if rng.random() < 0.3:
                break
        total = session.total = min(sum(sizes), limit)
        messages = []
        for size in sizes:
            size = min(size, total - sum(map(len, messages)))
            if size > 0:
                messages.append(rng.randbytes(size))
        pauses = [rng.random() < 0.2 and rng.uniform(0, 0.005) for _ in messages]
        write = asyncio.ensure_future(self.write(session, writer, messages, pauses,
                                                 half_close=behaviour == "half_close"))
        read_rng = random.Random(rng.getrandbits(64))   # the reading task's own
        read = asyncio.ensure_future(self.read(session, reader, read_rng, slow,
                                               until_eof=behaviour == "half_close"))
        try:
            if behaviour in ("abort", "cancel"):
                await self.drop(rng, session, writer, behaviour, read, write)
                # What was already on its way is still read and verified.
                await asyncio.wait({read}, timeout=1)
            else:
                await asyncio.gather(read, write)
        finally:
            for task in (read, write):
                task.cancel()
            await asyncio.wait({read, write})
            writer.close()
        for task in (read, write):
            if not task.cancelled() and isinstance(task.exception(), Mismatch):
                raise task.exception()
        if not session.dropping:
            await writer.wait_closed()

    async def write(self, session, writer, messages, pauses, half_close):
        for data, pause in zip(messages, pauses):
            session.will_send(data)
            writer.write(data)
            await writer.drain()
            session.progress = time.monotonic()
            if pause:
                await asyncio.sleep(pause)
        if half_close:
            writer.write_eof()

    async def read(self, session, reader, rng, slow, until_eof):
        while until_eof or session.verified < session.total:
            data = await reader.read(rng.randint(1, 4096) if slow else 256 * 1024)
            if not data:
                break
            session.received(data)
            if slow:
                await asyncio.sleep(0.001)
        session.ended()

    async def drop(self, rng, session, writer, behaviour, read, write):
        """Lets the session run a little, then drops it deliberately."""
        await asyncio.wait({read, write}, timeout=rng.uniform(0, 0.02),
                           return_when=asyncio.FIRST_EXCEPTION)
        for task in (read, write):
            if task.done() and task.exception():
                task.result()   # went wrong before the drop: reported as such
        session.dropping = True
        if behaviour == "cancel":
            rng.choice((read, write)).cancel()
            await asyncio.sleep(0)
        if behaviour == "abort" or rng.random() < 0.5:
            if rng.random() < 0.5:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
        else:
            writer.close()

    async def udp_session(self, rng, session):
        loop = asyncio.get_running_loop()
        echoes = UdpClient(session)
        transport, _ = await loop.create_datagram_endpoint(
            lambda: echoes, remote_addr=("127.0.0.1", self.ports["udp"]))
        try:
            for seq in range(rng.randint(1, 32)):
                echoes.sent[seq] = SEQ.pack(seq) + rng.randbytes(log_uniform(rng, MAX_DATAGRAM))
            for _ in range(UDP_TRIES):
                missing = [seq for seq in echoes.sent if seq not in echoes.seen]
                if not missing:
                    break
                for seq in missing:
                    echoes.sends[seq] += 1
                    self.stats.udp["sent"] += 1
                    transport.sendto(echoes.sent[seq])
                await echoes.wait_all(UDP_WAIT)
            self.stats.udp["datagrams"] += len(echoes.sent)
            self.stats.udp["lost"] += sum(seq not in echoes.seen for seq in echoes.sent)
            self.stats.udp["verified"] += len(echoes.seen)
            if echoes.problem:
                raise Mismatch(echoes.problem)
            if echoes.error:
                raise echoes.error
        finally:
            transport.close()


class UdpClient(asyncio.DatagramProtocol):
    def __init__(self, session):
        self.session = session
        self.sent = {}                           # seq -> datagram
        self.sends = collections.Counter()       # seq -> times sent
        self.seen = collections.Counter()        # seq -> times received
        self.problem = None
        self.error = None
        self.complete = asyncio.Event()

    def datagram_received(self, data, addr):
        self.session.progress = time.monotonic()
        seq = SEQ.unpack(data[:8])[0] if len(data) >= 8 else None
        if seq not in self.sent:
            self.problem = self.problem or f"a datagram of {len(data)} bytes with no sent number"
        elif data != self.sent[seq]:
            self.problem = self.problem or (f"datagram {seq}: {len(data)} bytes back, "
                                            f"{len(self.sent[seq])} sent, contents differ")
        elif self.seen[seq] >= self.sends[seq]:
            self.problem = self.problem or f"datagram {seq} came back more often than sent"
        else:
            self.seen[seq] += 1
            self.session.stats.bytes_verified += len(data)
            if len(self.seen) == len(self.sent):
                self.complete.set()

    def error_received(self, exc):
        self.error = self.error or exc

    async def wait_all(self, timeout):
        try:
            await asyncio.wait_for(self.complete.wait(), timeout)
        except TimeoutError:
            pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", required=True, help="JSON: style -> port")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--styles", default=",".join(ALL_STYLES),
                        help="the servers to use, comma-separated")
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS),
                        help="the stream behaviours to use, comma-separated")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(Client(args).run(args.seconds))), flush=True)


if __name__ == "__main__":
    main()
