"""The soak: echo servers of every style on the loop under test, churned by
clients that verify every byte, with the server's RSS and fds watched.

    python -m bench.soak --minutes N [--loop uringloop|asyncio|both] [--seed S]
                         [--workers W] [--styles protocol,tls,...]
                         [--behaviours echo,abort,...] [--json out.json]

Owns: running one soak per loop (one after the other with ``--loop both``,
``--minutes`` each), sampling the server from /proc, judging the result,
printing the table, and the exit status (1 if any loop failed).

One soak, for one loop:

  1. a key and self-signed certificate for the TLS server (``openssl``, else
     the ``cryptography`` package, else the test certificate of CPython's
     ``test`` package);
  2. bench/soak_server.py in its own process on that loop; wait for its
     JSON line (pid, backend, ports); sample VmRSS and the open fds from
     /proc/PID (the start figures);
  3. bench/soak_client.py in its own process on asyncio's loop, for the
     given time; sample the server every half second meanwhile;
  4. once the client is done, wait (up to ``SETTLE_SECONDS``) for the
     server's fd count to come back down; sample (the end figures);
  5. SIGTERM the server, read its final JSON line (counts, unexpected
     exceptions, exception-handler calls, connections still open).

A loop fails on: any checksum mismatch, any unexpected client error
(including a stall), any unexpected server exception or exception-handler
call (but one: CPython's own TLS race, see soak_server.py, counted apart),
server connections still open after every client left, more fds at the
end than at the start, no byte verified by sessions that echo, or a child
that died, hung or reported nothing.  Children are killed whatever happens.
"""
import argparse
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from bench.soak_client import ALL_STYLES, BEHAVIOURS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
READY_SECONDS = 30
CLIENT_GRACE_SECONDS = 120
SETTLE_SECONDS = 10
STOP_SECONDS = 30
SAMPLE_SECONDS = 0.5


def make_cert(directory):
    """Path of one PEM with a private key and its self-signed certificate,
    and where it came from."""
    path = os.path.join(directory, "soak-keycert.pem")
    if shutil.which("openssl"):
        key, crt = path + ".key", path + ".crt"
        env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                        "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost"],
                       check=True, capture_output=True, env=env)
        with open(path, "wb") as out:
            for part in (key, crt):
                with open(part, "rb") as f:
                    out.write(f.read())
        return path, "openssl"
    try:
        return cert_from_cryptography(path), "cryptography"
    except ImportError:
        pass
    import importlib.util
    spec = importlib.util.find_spec("test")
    if spec and spec.submodule_search_locations:
        for base in spec.submodule_search_locations:
            for candidate in ("certdata/keycert.pem", "keycert.pem"):
                if os.path.exists(os.path.join(base, candidate)):
                    return os.path.join(base, candidate), "CPython's test package"
    raise RuntimeError("no way to make a TLS certificate: no openssl, no cryptography, "
                       "no CPython test package")


def cert_from_cryptography(path):
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .sign(key, hashes.SHA256()))
    with open(path, "wb") as out:
        out.write(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    return path


def sample(pid):
    """(VmRSS in KiB, open fds) of a live process."""
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


class Child:
    """A child Python process running one of the soak's modules; its stdout
    lines arrive through a queue, its stderr goes to a file."""

    def __init__(self, module, args, stderr_path):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (REPO, env.get("PYTHONPATH"))))
        self.stderr_path = stderr_path
        self.stderr = open(stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        self.lines = queue.Queue()
        threading.Thread(target=self.pump, daemon=True).start()

    def pump(self):
        for line in self.proc.stdout:
            self.lines.put(line.decode(errors="replace"))
        self.lines.put(None)

    def json_line(self, timeout):
        """The next stdout line that holds a JSON object, or None when the
        process ended or the time ran out."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if line is None:
                return None
            if line.startswith("{"):
                return json.loads(line)

    def stderr_tail(self, lines=15):
        self.stderr.flush()
        with open(self.stderr_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def run_one(loop, seconds, seed, workers, workdir, styles=ALL_STYLES, behaviours=BEHAVIOURS):
    """Soaks the server on ``loop`` for ``seconds``; returns the result."""
    result = {"loop": loop, "seconds": seconds, "seed": seed, "workers": workers,
              "styles": list(styles), "behaviours": list(behaviours), "failures": []}
    failures = result["failures"]
    cert, result["cert"] = make_cert(workdir)
    children = []
    try:
        server = Child("bench.soak_server",
                       ["--loop", loop, "--seed", str(seed), "--cert", cert],
                       os.path.join(workdir, f"server-{loop}.stderr"))
        children.append(server)
        ready = server.json_line(READY_SECONDS)
        if not ready or "error" in ready:
            failures.append(f"server did not start: {ready}\n{server.stderr_tail()}")
            return result
        pid = ready["pid"]
        result["backend"] = ready["backend"]
        rss, fds = sample(pid)
        result["rss_kib"] = {"start": rss, "max": rss}
        result["fds"] = {"start": fds, "max": fds}

        client = Child("bench.soak_client",
                       ["--ports", json.dumps(ready["ports"]), "--seconds", str(seconds),
                        "--seed", str(seed), "--workers", str(workers),
                        "--styles", ",".join(styles), "--behaviours", ",".join(behaviours)],
                       os.path.join(workdir, f"client-{loop}.stderr"))
        children.append(client)
        deadline = time.monotonic() + seconds + CLIENT_GRACE_SECONDS
        while client.proc.poll() is None and time.monotonic() < deadline:
            if server.proc.poll() is not None:
                break
            record_sample(result, pid)
            time.sleep(SAMPLE_SECONDS)
        if server.proc.poll() is not None:
            failures.append(f"server died (status {server.proc.returncode})\n"
                            f"{server.stderr_tail()}")
            return result
        if client.proc.poll() is None:
            failures.append(f"client still running after {seconds + CLIENT_GRACE_SECONDS:.0f} s")
            return result
        report = client.json_line(5)
        if report is None:
            failures.append(f"client reported nothing (status {client.proc.returncode})\n"
                            f"{client.stderr_tail()}")
            return result
        result["client"] = report

        settle = time.monotonic() + SETTLE_SECONDS
        while True:
            rss, fds = record_sample(result, pid)
            if fds <= result["fds"]["start"] or time.monotonic() > settle:
                break
            time.sleep(SAMPLE_SECONDS)
        result["rss_kib"]["end"] = rss
        result["fds"]["end"] = fds

        server.proc.send_signal(signal.SIGTERM)
        final = server.json_line(STOP_SECONDS)
        if final is None:
            failures.append(f"server sent no final report\n{server.stderr_tail()}")
            return result
        result["server"] = final
        server.proc.wait(STOP_SECONDS)
        if server.proc.returncode != 0:
            failures.append(f"server exited with status {server.proc.returncode}")
        return result
    except Exception as exc:   # e.g. the server vanished while sampled
        failures.append(f"soak aborted: {exc!r}")
        return result
    finally:
        for child in children:
            child.kill()
        judge(result)


def record_sample(result, pid):
    rss, fds = sample(pid)
    result["rss_kib"]["max"] = max(result["rss_kib"]["max"], rss)
    result["fds"]["max"] = max(result["fds"]["max"], fds)
    return rss, fds


def judge(result):
    failures = result["failures"]
    client, server = result.get("client"), result.get("server")
    if client:
        if client["mismatches"]:
            failures.append(f"{client['mismatches']} checksum mismatches")
        if client["unexpected"]:
            failures.append(f"{client['unexpected']} unexpected client errors")
        echoing = any(key.split("/")[1] in ("echo", "half_close", "slow_reader", "burst")
                      for key in client["sessions"])
        if echoing and not client["bytes_verified"]:
            failures.append("no byte verified")
    if server:
        if server["unexpected_count"]:
            failures.append(f"{server['unexpected_count']} unexpected server exceptions")
        if server["handler_count"]:
            failures.append(f"{server['handler_count']} exception-handler calls in the server")
        still_open = {name: stats["open_at_stop"] for name, stats in server["styles"].items()
                      if stats.get("open_at_stop")}
        if still_open:
            failures.append(f"server connections still open after the clients left: {still_open}")
    fds = result.get("fds", {})
    if "end" in fds and fds["end"] > fds["start"]:
        failures.append(f"server fds grew from {fds['start']} to {fds['end']}")
    result["ok"] = not failures
    return result


def table(results):
    head = ("loop", "backend", "conns", "verified MiB", "mismatch", "unexpected",
            "udp lost/sent", "RSS MiB start/end/max", "fds start/end/max", "result")
    rows = [head]
    for r in results:
        client, server = r.get("client") or {}, r.get("server") or {}
        unexpected = (client.get("unexpected", 0), server.get("unexpected_count", 0),
                      server.get("handler_count", 0))
        udp = client.get("udp", {})
        rss, fds = r.get("rss_kib", {}), r.get("fds", {})
        mib = lambda kib: f"{kib / 1024:.0f}" if kib is not None else "?"
        rows.append((r["loop"], r.get("backend", "?"), str(client.get("connections", "?")),
                     f"{client.get('bytes_verified', 0) / 2 ** 20:.0f}",
                     str(client.get("mismatches", "?")), "{}/{}/{}".format(*unexpected),
                     f"{udp.get('lost', 0)}/{udp.get('sent', 0)}",
                     "/".join(mib(rss.get(k)) for k in ("start", "end", "max")),
                     "/".join(str(fds.get(k, "?")) for k in ("start", "end", "max")),
                     "ok" if r["ok"] else "FAIL"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows]
    lines.append("(unexpected = client errors / server exceptions / exception-handler calls)")
    for r in results:
        for race, count in ((r.get("server") or {}).get("stdlib_races") or {}).items():
            lines.append(f"({r['loop']}: {count} exception-handler calls from CPython's own "
                         f"{race} race, not counted)")
    return "\n".join(lines)


def details(result):
    """What a failed loop found, for a human to reproduce."""
    client, server = result.get("client") or {}, result.get("server") or {}
    lines = [f"{result['loop']}: FAILED (seed {result['seed']}, "
             f"{result['seconds']:.0f} s, {result['workers']} workers, "
             f"styles {','.join(result['styles'])}, "
             f"behaviours {','.join(result['behaviours'])})"]
    lines += [f"  - {f}" for f in result["failures"]]
    for side, report in (("client", client), ("server", server)):
        lines += [f"  {side} {n} x {kind}" for kind, n in sorted(
            report.get("by_kind", {}).items(), key=lambda item: -item[1])]
    lines += [f"  client {d}" for d in client.get("details", [])]
    lines += [f"  server unexpected: {d}" for d in server.get("unexpected", [])]
    lines += [f"  server exception handler: {d}" for d in server.get("handler_calls", [])]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, required=True, help="per loop")
    parser.add_argument("--loop", choices=("uringloop", "asyncio", "both"), default="both")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=16, help="concurrent client sessions")
    parser.add_argument("--styles", default=",".join(ALL_STYLES),
                        help="only these servers (comma-separated), to narrow down a failure")
    parser.add_argument("--behaviours", default=",".join(BEHAVIOURS),
                        help="only these client behaviours (comma-separated)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    # A SIGTERM to the soak still kills its children (through the finally).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    loops = ("uringloop", "asyncio") if args.loop == "both" else (args.loop,)
    results = []
    with tempfile.TemporaryDirectory(prefix="uringloop-soak-") as workdir:
        for loop in loops:
            print(f"soak: {loop} for {args.minutes * 60:.0f} s (seed {args.seed})", flush=True)
            results.append(run_one(loop, args.minutes * 60, args.seed, args.workers, workdir,
                                   args.styles.split(","), args.behaviours.split(",")))
    print(table(results))
    for result in results:
        if not result["ok"]:
            print(details(result))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
