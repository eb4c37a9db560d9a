"""
``python -m bench.attack [--quick] [--code DIR]``: the non-reading client
attack on a real tracker (docs/hardening.md, issue 15 item 1).

A tracker (``twistd p2ptracker --db memory``) gets a catalogue of a few
thousand files from one seed client.  Then attacker connections each
pipeline many ``search`` requests for the whole catalogue (``limit`` 10,000)
and never read an answer, while a bystander pings the tracker.  The
tracker's RSS is sampled throughout; the bystander's slowest ping is kept.

``--code DIR`` runs the tracker from another checkout of the project (for
a before/after comparison: ``git archive main | tar -x -C DIR``).  Loopback
only; every process started here is stopped here by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.procs import ROOT, Process, rss_bytes, twistd

_LISTENING = re.compile(r"listening on IPv4Address\(type='TCP', host='([^']+)', port=(\d+)\)")


def _frame(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return struct.pack("!I", len(data)) + data


class Client:
    """A blocking seed-protocol client."""

    def __init__(self, port: int, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(120)
        self.sock.connect(("127.0.0.1", port))

    def _exactly(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the tracker closed the connection")
            data += chunk
        return data

    def receive(self) -> dict:
        (length,) = struct.unpack("!I", self._exactly(4))
        return json.loads(self._exactly(length))

    def ask(self, message: dict) -> dict:
        self.sock.sendall(_frame(message))
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def start_tracker(workdir: Path, code: Path | None) -> tuple[Process, int]:
    logfile = workdir / "tracker.log"
    env = {"PYTHONPATH": str(code)} if code else None
    proc = Process(
        "tracker",
        [twistd(), "-n", "--pidfile=", f"--logfile={logfile}", "p2ptracker", "--no-shell",
         "--listen", "tcp:0:interface=127.0.0.1", "--db", "memory"],
        cwd=workdir, stdin=False, stderr_path=workdir / "tracker.stderr", env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if logfile.exists():
            match = _LISTENING.search(logfile.read_text(errors="replace"))
            if match:
                return proc, int(match.group(2))
        if not proc.alive():
            raise SystemExit(f"the tracker exited: {(workdir / 'tracker.stderr').read_text()[-600:]}")
        time.sleep(0.05)
    proc.stop()
    raise SystemExit("the tracker did not listen within 30 s")


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="p2p-attack-") as tmp:
        proc, port = start_tracker(Path(tmp), args.code)
        clients: list[Client] = []
        try:
            publisher = Client(port)
            clients.append(publisher)
            publisher.ask({"action": "hello", "hostname": "library", "p2p_port": 5000})
            batch = b"".join(
                _frame({"action": "publish", "fname": f"{i:05d}-{'n' * 60}.pdf", "file_size": i, "lname": f"f{i}"})
                for i in range(args.files)
            )
            publisher.sock.sendall(batch)
            for _ in range(args.files):
                publisher.receive()
            sample = publisher.ask({"action": "list_shared_files", "limit": 10000})
            answer_bytes = len(json.dumps(sample, separators=(",", ":")))
            baseline = rss_bytes(proc.pid)

            attackers = []
            for i in range(args.attackers):
                a = Client(port, rcvbuf=4096)
                clients.append(a)
                a.ask({"action": "hello", "hostname": f"greedy{i}", "p2p_port": 6000 + i})
                attackers.append(a)
            bystander = Client(port)
            clients.append(bystander)
            bystander.ask({"action": "hello", "hostname": "bystander", "p2p_port": 7000})

            request = _frame({"action": "search", "pattern": "", "limit": 10000})
            stop = threading.Event()

            def flood(a: Client) -> None:
                # Pipeline without reading; the send blocks once the
                # tracker stops reading (that is the defence working).
                a.sock.settimeout(0.5)
                sent = 0
                while sent < args.searches and not stop.is_set():
                    try:
                        a.sock.sendall(request)
                        sent += 1
                    except socket.timeout:
                        continue
                    except OSError:
                        return

            peaks = [baseline]

            def sample() -> None:
                # RSS every 0.2 s, whether or not the bystander is answered.
                while not stop.wait(0.2):
                    peaks.append(rss_bytes(proc.pid))

            threads = [threading.Thread(target=flood, args=(a,), daemon=True) for a in attackers]
            threads.append(threading.Thread(target=sample, daemon=True))
            for t in threads:
                t.start()
            pings: list[float] = []
            failed = 0
            started = time.monotonic()
            bystander.sock.settimeout(args.seconds)
            while time.monotonic() - started < args.seconds:
                t0 = time.monotonic()
                try:
                    bystander.ask({"action": "ping"})
                    pings.append(time.monotonic() - t0)
                except (OSError, ConnectionError):
                    # Not answered within the whole attack's duration.
                    failed += 1
                    break
                time.sleep(0.2)
            stop.set()
            peak = max(peaks + [rss_bytes(proc.pid)])
        finally:
            for c in clients:
                c.close()
            proc.stop()
    pings.sort()
    return {
        "code": str(args.code or ROOT),
        "files": args.files,
        "answer_bytes": answer_bytes,
        "attackers": args.attackers,
        "searches_each": args.searches,
        "seconds": args.seconds,
        "rss_before_mib": round(baseline / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "pings": len(pings),
        "ping_p50_ms": round(1000 * pings[len(pings) // 2], 1) if pings else None,
        "ping_max_ms": round(1000 * pings[-1], 1) if pings else None,
        "pings_unanswered_within_the_attack": failed,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 files, 2 attackers, 10 s")
    parser.add_argument("--files", type=int, help="catalogue size (default 5,000; quick 2,000)")
    parser.add_argument("--attackers", type=int, help="non-reading connections (default 4; quick 2)")
    parser.add_argument("--searches", type=int, default=5000, help="searches each attacker pipelines (default 5,000)")
    parser.add_argument("--seconds", type=float, help="how long the attack runs (default 30; quick 10)")
    parser.add_argument("--code", type=Path, help="run the tracker from this checkout (before/after)")
    args = parser.parse_args(argv)
    args.files = args.files or (2000 if args.quick else 5000)
    args.attackers = args.attackers or (2 if args.quick else 4)
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    if args.code:
        args.code = args.code.resolve()
    print(json.dumps(run(args)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
