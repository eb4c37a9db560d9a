"""
Shared helpers for the peer tests.
"""

from __future__ import annotations

import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.test import iosim

from twistedp2p.peer.download import DownloadSettings
from twistedp2p.peer.events import Events
from twistedp2p.peer.library import Library
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.transfers import Transfers

#: A sha256 for results the shell tests make up.
SHA_AB = "ab" * 32

#: A L{PeerNode.status} snapshot for the shell tests' fake nodes: one
#: published file, one upload in progress.
NODE_STATUS = {
    "hostname": "me",
    "p2p_port": 4242,
    "repo": "/repo",
    "share_roots": [],
    "tracker": {"state": "connected", "tracker": "tcp:t:9999", "address": "10.0.0.9", "session": "x:1"},
    "sessions": {"limit": 4, "in_use": 1, "uploads": 1, "downloads": 0, "waiting": 0,
                 "peak_uploads": 1, "peak_downloads": 0, "refused": 0},
    "published": [{"fname": "A", "path": "/repo/a", "size": 7, "sha256": SHA_AB, "mtime": 1.0, "published_at": 2.0}],
    "transfers": [{"id": 1, "direction": "up", "fname": "A", "peer": "10.0.0.5:555", "done": 3,
                   "total": 7, "percent": 3 / 7 * 100, "rate": 2048.0, "started": 1.0}],
    "completed": {"up": 0, "down": 0},
}


def temp_dir(case: Any) -> Path:
    """
    A fresh directory under the system temp dir, removed after the test
    (C{mktemp} would be relative to the working directory under pytest).
    """
    path = tempfile.mkdtemp(prefix="twistedp2p-peer-")
    case.addCleanup(shutil.rmtree, path, True)
    return Path(path)


def frame(message: Any) -> bytes:
    """
    One Int32 frame holding C{message} (bytes as is, anything else JSON).
    """
    body = message if isinstance(message, bytes) else json.dumps(message).encode("utf-8")
    return struct.pack("!I", len(body)) + body


def split_frame(data: bytes) -> tuple[dict[str, Any], bytes]:
    """
    Parse the first frame of C{data}: C{(message, rest)}.
    """
    (n,) = struct.unpack("!I", data[:4])
    return json.loads(data[4 : 4 + n].decode("utf-8")), data[4 + n :]


def all_frames(data: bytes) -> list[dict[str, Any]]:
    out = []
    while data:
        message, data = split_frame(data)
        out.append(message)
    return out


def sync_run(f: Any, *args: Any, **kwargs: Any) -> Deferred:
    return maybeDeferred(f, *args, **kwargs)


class PeerParts:
    """
    A library in a temp repo plus slots, transfers and events on a Clock.
    """

    def __init__(self, base: Path, max_sessions: int = 4) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.repo = base / "repo"
        self.repo.mkdir(parents=True, exist_ok=True)
        self.events = Events(self.clock)
        self.seen: list[Any] = []
        self.events.subscribe(self.seen.append)
        self.library = Library(self.repo, [], sync_run, self.clock)
        self.slots = Slots(max_sessions)
        self.transfers = Transfers(self.clock, self.events)

    def download_options(
        self,
        connect: Any,
        progress: list[tuple[int, Any]],
        force: bool = False,
        run_in_thread: Any = sync_run,
        bucket: Any = None,
        **settings: Any,
    ) -> dict[str, Any]:
        """
        The keyword arguments of a L{Download} or a L{SwarmDownload} into
        this repository: C{progress} collects C{(done, total)} calls;
        C{settings} are L{DownloadSettings} fields (retry jitter 0.5 unless
        given).
        """
        settings.setdefault("jitter", lambda: 0.5)
        return {
            "connect": connect,
            "clock": self.clock,
            "run_in_thread": run_in_thread,
            "slots": self.slots,
            "transfers": self.transfers,
            "settings": DownloadSettings(**settings),
            "force": force,
            "progress": lambda done, total: progress.append((done, total)),
            "bucket": bucket,
        }

    def publish(self, fname: str, data: bytes) -> Any:
        path = self.repo / fname
        path.write_bytes(data)
        d = self.library.describe(fname, fname)
        entries: list[Any] = []
        d.addCallback(entries.append)
        assert entries, "describe did not finish synchronously"
        self.library.put(entries[0])
        return entries[0]


class FakeNetwork:
    """
    Connects a Download's protocols to server factories through iosim.
    C{servers[port]} is a factory, or "refuse", or "hang" (connect never
    completes).
    """

    def __init__(self, clock) -> None:
        self.clock = clock
        self.servers: dict[int, Any] = {}
        self.pumps: list[iosim.IOPump] = []
        self.connects: list[int] = []

    def connect(self, ip: str, port: int, factory: Factory) -> Deferred:
        self.connects.append(port)
        server_factory = self.servers.get(port, "refuse")
        if server_factory == "refuse":
            return fail(ConnectionRefusedError())
        if server_factory == "hang":
            return Deferred()
        if callable(server_factory) and not isinstance(server_factory, Factory):
            server_factory = server_factory()
        server = server_factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        client = factory.buildProtocol(IPv4Address("TCP", ip, port))
        pump = iosim.connect(
            server,
            iosim.FakeTransport(server, True, peerAddress=IPv4Address("TCP", "127.0.0.1", 40000)),
            client,
            iosim.FakeTransport(client, False),
            greet=False,
            clock=self.clock,
        )
        self.pumps.append(pump)
        return succeed(client)

    def flush(self) -> None:
        for _ in range(10000):
            moved = False
            for pump in list(self.pumps):
                if pump.pump(advanceClock=False):
                    moved = True
            if not moved:
                return
        raise AssertionError("the network never went quiet")
