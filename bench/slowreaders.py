"""
Slow readers against a peer's own downloads (issue 15, item 7).

``python -m bench.slowreaders`` starts a real tracker and two real peers
(``twistd p2ppeer``) on loopback.  ``alpha`` publishes a 64 MiB file,
``beta`` a 32 MiB one.  Four native clients in this process each send
``alpha`` one ``get`` for its whole file and read it at about 32 KiB/s
(the slow-reader attack: they hold alpha's upload slots for half an hour).
Once they all got their answer's header, ``alpha`` fetches beta's file;
the script reports how long that took (or that it did not complete within
``--timeout`` seconds), and what the readers saw.

Extra peer options (``--peer-args "--max-sessions 4"``) go to both peers.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path

from tests.e2e.harness import Cluster

MiB = 2**20


class SlowReader(threading.Thread):
    """
    One ``get`` for the whole file, read at C{rate} bytes per second until
    C{stop} is set or the peer closes.
    """

    def __init__(self, port: int, fname: str, rate: int, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.port, self.fname, self.rate, self.stop = port, fname, rate, stop
        self.header: dict | None = None
        self.got_header = threading.Event()
        self.read = 0
        self.closed_by_peer = False
        self.closed_at: float | None = None

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            body = json.dumps({"action": "get", "fname": self.fname, "offset": 0, "length": None}).encode()
            s.sendall(struct.pack("!I", len(body)) + body)
            prefix = self._exact(s, 4)
            self.header = json.loads(self._exact(s, struct.unpack("!I", prefix)[0]))
            self.started = time.monotonic()
            self.got_header.set()
            step = 4096
            while not self.stop.is_set():
                try:
                    data = s.recv(step)
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.closed_at = time.monotonic()
                    self.closed_by_peer = True
                    return
                self.read += len(data)
                time.sleep(len(data) / self.rate)

    @staticmethod
    def _exact(s: socket.socket, n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = s.recv(n - len(out))
            if not chunk:
                raise ConnectionError("closed")
            out += chunk
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--rate", type=int, default=32 * 1024, help="bytes/s per reader")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for alpha's fetch")
    parser.add_argument("--peer-args", default="", help="extra options for both peers")
    parser.add_argument("--hold", type=float, default=0.0, help="then wait up to this long for alpha to close the readers")
    args = parser.parse_args()
    extra = shlex.split(args.peer_args)
    with tempfile.TemporaryDirectory(prefix="slowreaders-") as tmp:
        cluster = Cluster(Path(tmp))
        stop = threading.Event()
        try:
            cluster.start_tracker()
            alpha = cluster.start_peer("alpha", *extra)
            beta = cluster.start_peer("beta", *extra)
            (cluster.root / "alpha" / "a.bin").write_bytes(os.urandom(64 * MiB))
            (cluster.root / "beta" / "b.bin").write_bytes(os.urandom(32 * MiB))
            alpha.command("publish a.bin a.bin", r"published a\.bin: created", timeout=60)
            beta.command("publish b.bin b.bin", r"published b\.bin: created", timeout=60)
            port = int(alpha.command("status", r"p2p port (\d+)").group(1))
            readers = [SlowReader(port, "a.bin", args.rate, stop) for _ in range(args.readers)]
            for r in readers:
                r.start()
            for r in readers:
                r.got_header.wait(10)
            statuses = [r.header.get("status") if r.header else "no answer" for r in readers]
            t0 = time.monotonic()
            try:
                alpha.command("fetch b.bin", r"fetched b\.bin from", timeout=args.timeout)
                fetched = f"fetched in {time.monotonic() - t0:.2f} s"
            except Exception:
                fetched = f"NOT fetched within {args.timeout:g} s"
            deadline = time.monotonic() + args.hold
            while time.monotonic() < deadline and not all(r.closed_by_peer for r in readers):
                time.sleep(0.5)
            elapsed = time.monotonic() - t0
            print(f"peer options: {args.peer_args or '(defaults)'}")
            print(f"{args.readers} readers at {args.rate} B/s, answers: {statuses}")
            print(f"alpha's own fetch of b.bin (32 MiB): {fetched}")
            print(
                "readers after %.1f s: %s KiB read each, closed by the peer: %d%s"
                % (
                    elapsed,
                    [r.read // 1024 for r in readers],
                    sum(r.closed_by_peer for r in readers),
                    "".join(
                        f" (after {r.closed_at - r.started:.1f} s)" for r in readers if r.closed_at is not None
                    ),
                )
            )
        finally:
            stop.set()
            cluster.stop()


if __name__ == "__main__":
    main()
