"""
Memory of a multi-source download against the piece size (issue 15, item 5).

``python -m bench.piecemem`` starts a source in a child process: a minimal
native peer port (``pieces`` and pipelined ``get``) serving a file of
C{--size} zero bytes (default 1 GiB) generated on the fly, with the piece
list of C{--piece-size} (default: the rule's, ``pieces.piece_size_for``;
``--piece-size 1G`` is the attack: one 1 GiB piece).  This process
downloads it with L{SwarmDownload} on the real reactor over loopback into
a temporary repository and reports its peak RSS (``VmHWM``) above the RSS
before the download, the time taken and the outcome.

Only twistedp2p's public pieces are used, so the same script runs against
an older checkout (copy it there and run it from that directory).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MiB = 2**20
ZERO = bytes(MiB)


def vm(field: str) -> int:
    """KiB of C{field} (VmHWM, VmRSS) of this process."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def parse_size(text: str) -> int:
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text[-1:].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


# -- the source (child process) ----------------------------------------------------


def serve(size: int, piece_size: int) -> None:
    from twisted.internet import reactor
    from twisted.internet.interfaces import IPullProducer
    from twisted.internet.protocol import Factory
    from twisted.protocols.basic import Int32StringReceiver
    from zope.interface import implementer

    whole = hashlib.sha256()
    left = size
    while left:
        n = min(left, MiB)
        whole.update(ZERO[:n])
        left -= n
    count = (size + piece_size - 1) // piece_size
    full = hashlib.sha256()
    for i in range(0, piece_size, MiB):
        full.update(ZERO[: min(MiB, piece_size - i)])
    digests = []
    for i in range(count):
        length = min(piece_size, size - i * piece_size)
        if length == piece_size:
            digests.append(full.digest())
        else:
            h = hashlib.sha256()
            for j in range(0, length, MiB):
                h.update(ZERO[: min(MiB, length - j)])
            digests.append(h.digest())
    root = hashlib.sha256(b"twistedp2p-pieces-v1")
    root.update(size.to_bytes(8, "big"))
    root.update(piece_size.to_bytes(4, "big"))
    for d in digests:
        root.update(d)
    info = {"file_size": size, "piece_size": piece_size, "root": root.hexdigest(), "sha256": whole.hexdigest()}
    hexes = [d.hex() for d in digests]

    @implementer(IPullProducer)
    class Zeros:
        def __init__(self, proto: "Source", length: int) -> None:
            self.proto, self.left = proto, length

        def resumeProducing(self) -> None:
            n = min(self.left, MiB)
            self.left -= n
            self.proto.transport.write(ZERO[:n])
            if not self.left:
                self.proto.transport.unregisterProducer()
                self.proto.sending = None
                self.proto.next()

        def stopProducing(self) -> None:
            self.left = 0

    class Source(Int32StringReceiver):
        MAX_LENGTH = 65536

        def connectionMade(self) -> None:
            self.queue: list = []
            self.sending = None

        def stringReceived(self, frame: bytes) -> None:
            self.queue.append(json.loads(frame))
            self.next()

        def next(self) -> None:
            while self.queue and self.sending is None:
                m = self.queue.pop(0)
                if m.get("action") == "pieces":
                    self.sendString(json.dumps({"status": "success", "fname": "z", **info, "pieces": hexes}).encode())
                elif m.get("action") == "get":
                    header = {"status": "success", "fname": "z", "offset": m["offset"], "length": m["length"],
                              "file_size": size, "sha256": info["sha256"]}
                    self.sendString(json.dumps(header).encode())
                    self.sending = Zeros(self, m["length"])
                    self.transport.registerProducer(self.sending, False)

    port = reactor.listenTCP(0, Factory.forProtocol(Source), interface="127.0.0.1")
    print(json.dumps({**info, "port": port.getHost().port}), flush=True)
    reactor.run()


# -- the downloader -------------------------------------------------------------------


def download(info: dict, repo: Path) -> dict:
    from twisted.internet import reactor
    from twisted.internet.endpoints import HostnameEndpoint
    from twisted.internet.threads import deferToThreadPool

    from twistedp2p.peer.download import DownloadSettings, SourceInfo
    from twistedp2p.peer.slots import Slots
    from twistedp2p.peer.swarm import SwarmDownload, plan_swarm
    from twistedp2p.peer.transfers import Transfers

    source = SourceInfo("src", "127.0.0.1", info["port"], "z", "z", info["file_size"], info["sha256"], 1,
                        info["root"], info["piece_size"])
    outcome: dict = {}
    base = vm("VmRSS")
    t0 = time.monotonic()
    try:
        plan = plan_swarm([source])
    except Exception as e:
        return {"outcome": f"refused: {e}", "seconds": 0.0, "rss_base_mib": base / 1024, "peak_above_mib": 0.0}

    def connect(ip, port, factory):
        return HostnameEndpoint(reactor, ip, port).connect(factory)

    def run(f, *a, **kw):
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *a, **kw)

    swarm = SwarmDownload("z", plan, repo, connect=connect, clock=reactor, run_in_thread=run, slots=Slots(4),
                          transfers=Transfers(reactor), settings=DownloadSettings())

    def done(result):
        outcome["outcome"] = "fetched, verified" if getattr(result, "verified", False) else repr(result)

    def failed(f):
        outcome["outcome"] = f"failed: {f.getErrorMessage()}"

    def start():
        swarm.run().addCallbacks(done, failed).addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    outcome["seconds"] = time.monotonic() - t0
    outcome["rss_base_mib"] = base / 1024
    outcome["peak_above_mib"] = (vm("VmHWM") - base) / 1024
    return outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G")
    parser.add_argument("--piece-size", default=None, help="default: the rule's for the size")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--skip-rule", action="store_true",
        help="accept any piece size (to measure the streaming alone, with an oversized piece)",
    )
    args = parser.parse_args()
    size = parse_size(args.size)
    if args.piece_size is None:
        from twistedp2p.peer.pieces import piece_size_for

        piece_size = piece_size_for(size)
    else:
        piece_size = parse_size(args.piece_size)
    if args.serve:
        serve(size, piece_size)
        return
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--size", str(size), "--piece-size", str(piece_size)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        info = json.loads(child.stdout.readline())
        if args.skip_rule:
            from twistedp2p.peer import pieces, swarm

            for module in (pieces, swarm):
                if hasattr(module, "piece_size_problem"):
                    module.piece_size_problem = lambda size, piece_size: None  # type: ignore[attr-defined]
        with tempfile.TemporaryDirectory(prefix="piecemem-") as tmp:
            result = download(info, Path(tmp))
    finally:
        child.kill()
        child.wait()
    print(
        f"size {size} bytes, piece size {piece_size}: {result['outcome']}; {result['seconds']:.1f} s;"
        f" RSS before {result['rss_base_mib']:.0f} MiB, peak {result['peak_above_mib']:.0f} MiB above it"
    )


if __name__ == "__main__":
    main()
