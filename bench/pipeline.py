"""
Pipelined answers from memory: does a peer hold a bounded amount of memory
when a client pipelines ``pieces`` and ``ping`` requests and never reads?

``python -m bench.pipeline`` starts a tracker and a real peer (``twistd
p2ppeer``) that publishes a 64 MiB file (sparse: 256 pieces, so each
``pieces`` answer is about 17 KB).  A client in this process connects to the
peer's port and sends C{--requests} requests (default 100,000; alternately
``pieces`` and ``ping``; with ``--kind get``, one ``get`` read in full and then ranges
of one chunk, 256 KiB) without reading a byte, for as long as the peer
takes them (the send stops once the peer has not taken a byte for 3 s, or
after C{--seconds}).  The peer's RSS (``VmRSS``) is sampled every 0.5 s:
for 2 s while idle, then until the send stops, then for C{--after} seconds more (default 2).  The
report gives the requests the peer took, the idle and peak RSS and their
difference.  Docs: docs/hardening.md ("Pipelined answers from memory").
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import struct
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.peers import Peer
from bench.procs import Children, raise_nofile
from bench.soak import rss_kib, run_and_report

MiB = 2**20


def log(text: str) -> None:
    sys.stderr.write(f"pipeline: {text}\n")
    sys.stderr.flush()


def frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message).encode()
    return struct.pack("!I", len(body)) + body


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("the peer closed the connection")
        data += chunk
    return bytes(data)


class Flooder(threading.Thread):
    """
    Send C{count} pipelined requests and never read; stop when the peer has
    taken nothing for C{stall} seconds, or after C{limit} seconds.
    """

    def __init__(self, port: int, fname: str, count: int, stall: float, limit: float, kind: str = "pieces") -> None:
        super().__init__(daemon=True)
        self.kind = kind
        self.port, self.fname, self.count, self.stall, self.limit = port, fname, count, stall, limit
        self.sent_bytes = 0
        self.total_bytes = 0
        self.sent_requests = 0
        self.sock: socket.socket | None = None

    def run(self) -> None:
        if self.kind == "get":
            # Ranges of one chunk (256 KiB) each, all over the file.
            requests = [
                frame({"action": "get", "fname": self.fname, "offset": (i % 256) * 262144, "length": 262144, "id": i})
                for i in range(self.count)
            ]
        else:
            requests = [
                frame({"action": "pieces", "fname": self.fname, "id": i})
                if i % 2 == 0
                else frame({"action": "ping", "id": i})
                for i in range(self.count)
            ]
        ends = []
        at = 0
        for r in requests:
            at += len(r)
            ends.append(at)
        data = memoryview(b"".join(requests))
        self.total_bytes = len(data)
        sock = self.sock = socket.create_connection(("127.0.0.1", self.port))
        if self.kind == "get":
            # One get read in full first: the peer then has the file open,
            # and answers the next ones at once.
            first = frame({"action": "get", "fname": self.fname, "offset": 0, "length": 262144, "id": 0})
            sock.sendall(first)
            (n,) = struct.unpack("!I", _recv_exact(sock, 4))
            _recv_exact(sock, n + 262144)
        # Do not read: keep the receive window as small as the kernel lets us.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(0.2)
        started = last = time.monotonic()
        while self.sent_bytes < len(data):
            now = time.monotonic()
            if now - last > self.stall or now - started > self.limit:
                break
            try:
                n = sock.send(data[self.sent_bytes : self.sent_bytes + 65536])
            except socket.timeout:
                continue
            except OSError:
                break
            if n:
                self.sent_bytes += n
                last = time.monotonic()
        self.sent_requests = sum(1 for e in ends if e <= self.sent_bytes)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    raise_nofile()
    with Children(workdir) as kids:
        tracker = kids.tracker("tracker", "memory")
        alice = Peer(kids, "alice", tracker.port, workdir / "alice")
        with open(workdir / "alice" / "big.bin", "wb") as f:
            f.truncate(64 * MiB)
        alice.publish("big.bin", "big.bin", timeout=120)
        idle = []
        for _ in range(5):
            idle.append(rss_kib(alice.pid))
            time.sleep(0.5)
        flooder = Flooder(alice.p2p_port, "big.bin", args.requests, 3.0, args.seconds, args.kind)
        t0 = time.monotonic()
        flooder.start()
        samples: list[int] = []
        while flooder.is_alive():
            samples.append(rss_kib(alice.pid))
            flooder.join(0.5)
        for _ in range(int(args.after * 2)):
            samples.append(rss_kib(alice.pid))
            time.sleep(0.5)
        seconds = time.monotonic() - t0
        if flooder.sock is not None:
            flooder.sock.close()
        idle_kib = int(statistics.median(idle))
        return {
            "requests": args.requests,
            "kind": args.kind,
            "taken": flooder.sent_requests,
            "taken_bytes": flooder.sent_bytes,
            "request_bytes": flooder.total_bytes,
            "seconds": seconds,
            "idle_kib": idle_kib,
            "max_kib": max(samples),
            "delta_kib": max(samples) - idle_kib,
            "samples": len(samples),
        }


def markdown(r: dict[str, Any], command: str) -> str:
    return "\n".join(
        [
            f"Command: `{command}`  ",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {r['requests']:,} pipelined {r['kind']} requests"
            f" ({r['request_bytes'] / MiB:.1f} MiB), of which the peer's socket accepted {r['taken']:,}"
            f" ({r['taken_bytes'] / MiB:.2f} MiB) before the send stalled; {r['samples']} RSS samples"
            f" over {r['seconds']:.1f} s.",
            "",
            "| peer RSS | MiB |",
            "| --- | ---: |",
            f"| idle | {r['idle_kib'] / 1024:.1f} |",
            f"| max while flooded | {r['max_kib'] / 1024:.1f} |",
            f"| delta | {r['delta_kib'] / 1024:+.1f} |",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="requests to pipeline (default 100,000)")
    parser.add_argument("--seconds", type=float, default=60.0, help="give up sending after this long (default 60)")
    parser.add_argument("--kind", choices=("pieces", "get"), default="pieces",
                        help="pieces: alternate pieces and ping (default); get: one-chunk ranges")
    parser.add_argument("--after", type=float, default=2.0, help="keep sampling this long after the send stopped")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    args.write_docs = False
    run_and_report("pipeline", args, argv, run, markdown, lambda text: None)


if __name__ == "__main__":
    main()
