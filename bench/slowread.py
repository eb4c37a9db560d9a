"""
Slow reader: does a source peer hold a bounded amount of file data in
memory while a downloader reads a big file slowly?

``python -m bench.slowread`` starts a tracker and a real source peer
(``twistd p2ppeer``) that publishes a 1 GiB file of random bytes
(``--quick``: 64 MiB; ``--size BYTES``).  A native client, in this process,
connects to the peer's port, sends one ``get`` for the whole file and reads
it slowly: C{--step} bytes (default 4 MiB), then a pause, paced so the whole
read takes about C{--seconds} (default 40; quick 8).  It hashes what it
reads and checks it against the published sha256.

The source's RSS (``VmRSS``) is sampled every 0.5 s: first for 2 s while
it is idle (the file published, nobody reading), then throughout the read.
The report gives the idle RSS, min/max/slope during the read and the delta
(max during the read minus idle), against the file's size.  ``--write-docs``
puts the table into the "Slow reader" section of docs/benchmarks.md;
``--json PATH`` writes the figures for a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.peers import Peer
from bench.procs import BenchError, Children, raise_nofile
from bench.soak import replace_docs_section, rss_kib, run_and_report, slope

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- slowread-results -->", "<!-- /slowread-results -->"
MiB = 2**20


def log(text: str) -> None:
    sys.stderr.write(f"slowread: {text}\n")
    sys.stderr.flush()


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(4 * MiB, left))
            f.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise BenchError("the source closed the connection early")
        data += chunk
    return bytes(data)


class SlowReader(threading.Thread):
    def __init__(self, port: int, fname: str, size: int, step: int, pause: float) -> None:
        super().__init__(daemon=True)
        self.port, self.fname, self.size, self.step, self.pause = port, fname, size, step, pause
        self.header: dict[str, Any] = {}
        self.sha256 = ""
        self.received = 0
        self.error: str | None = None
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=120) as sock:
                body = json.dumps({"action": "get", "fname": self.fname, "offset": 0, "length": None, "id": 1}).encode()
                sock.sendall(struct.pack("!I", len(body)) + body)
                (n,) = struct.unpack("!I", recv_exact(sock, 4))
                self.header = json.loads(recv_exact(sock, n))
                if self.header.get("status") != "success":
                    raise BenchError(f"get refused: {self.header}")
                digest = hashlib.sha256()
                while self.received < self.size:
                    goal = min(self.size, self.received + self.step)
                    while self.received < goal:
                        chunk = sock.recv(min(256 * 1024, goal - self.received))
                        if not chunk:
                            raise BenchError(f"the source closed after {self.received} bytes")
                        digest.update(chunk)
                        self.received += len(chunk)
                    if self.received < self.size:
                        time.sleep(self.pause)
                self.sha256 = digest.hexdigest()
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
        self.seconds = time.monotonic() - started


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    raise_nofile()
    with Children(workdir) as kids:
        tracker = kids.tracker("tracker", "memory")
        alice = Peer(kids, "alice", tracker.port, workdir / "alice")
        log(f"writing a {args.size / MiB:,.0f} MiB file")
        digest = make_file(workdir / "alice" / "big.bin", args.size)
        alice.publish("big.bin", "big.bin", timeout=600)
        idle = []
        for _ in range(5):
            idle.append(rss_kib(alice.pid))
            time.sleep(0.5)
        steps = max(1, args.size // args.step)
        pause = args.seconds / steps
        log(f"reading it in {args.step / MiB:g} MiB steps, {pause * 1000:.0f} ms apart")
        reader = SlowReader(alice.p2p_port, "big.bin", args.size, args.step, pause)
        t0 = time.monotonic()
        reader.start()
        samples: list[tuple[float, int]] = []
        while reader.is_alive():
            samples.append((time.monotonic() - t0, rss_kib(alice.pid)))
            reader.join(0.5)
        if reader.error:
            raise BenchError(reader.error)
        idle_kib = int(statistics.median(idle))
        during = [r for _, r in samples]
        return {
            "size": args.size,
            "step": args.step,
            "pause": pause,
            "read_seconds": reader.seconds,
            "verified": reader.sha256 == digest and reader.header.get("sha256") == digest,
            "samples": len(samples),
            "idle_kib": idle_kib,
            "min_kib": min(during),
            "max_kib": max(during),
            "slope_kib_min": slope([(t / 60, r) for t, r in samples]),
            "delta_kib": max(during) - idle_kib,
        }


def markdown(r: dict[str, Any], command: str) -> str:
    size = r["size"]
    return "\n".join(
        [
            f"Command: `{command}`  ",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: a {size / MiB:,.0f} MiB file read in "
            f"{r['step'] / MiB:g} MiB steps {r['pause'] * 1000:.0f} ms apart, {r['read_seconds']:.1f} s in all "
            f"({size / MiB / r['read_seconds']:.1f} MiB/s), sha256 {'verified' if r['verified'] else 'MISMATCH'}; "
            f"{r['samples']} samples of the source's RSS, every 0.5 s.",
            "",
            "| source peer RSS | MiB |",
            "| --- | ---: |",
            f"| idle (file published, no reader) | {r['idle_kib'] / 1024:.1f} |",
            f"| during the read: min | {r['min_kib'] / 1024:.1f} |",
            f"| during the read: max | {r['max_kib'] / 1024:.1f} |",
            f"| delta: max during the read - idle | {r['delta_kib'] / 1024:+.1f} ({r['delta_kib'] * 1024 / size:.2%} of the file) |",
            f"| slope during the read | {r['slope_kib_min'] / 1024:+.2f} MiB/min |",
            "",
        ]
    )


def write_docs(text: str) -> None:
    replace_docs_section(text, BEGIN, END, "Slow reader")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slowread", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB read over about 8 s")
    parser.add_argument("--size", type=int, help="file size in bytes (default 1 GiB; quick 64 MiB)")
    parser.add_argument("--seconds", type=float, help="pace the read to about this long (default 40; quick 8)")
    parser.add_argument("--step", type=int, default=4 * MiB, help="bytes read between pauses (default 4 MiB)")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--write-docs", action="store_true", help="replace the Slow reader results in docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.size is None:
        args.size = 64 * MiB if args.quick else 1024 * MiB
    if args.seconds is None:
        args.seconds = 8.0 if args.quick else 40.0
    result = run_and_report("slowread", args, argv, run, markdown, write_docs)
    if not result["verified"]:
        raise SystemExit("slowread: the bytes read do not match the published sha256")


if __name__ == "__main__":
    main()
