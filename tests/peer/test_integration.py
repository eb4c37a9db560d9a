"""
Peers and the real tracker in-process, on a real reactor over 127.0.0.1
(every port from tcp:0): publish, fetch and verify; many downloaders
against one source with K=4; sources that stall, drop or speak the seed
protocol; garbage at the peer port.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from twistedp2p import errors, wire
from twistedp2p.peer import service as peer_service
from twistedp2p.peer.client import TrackerClientProtocol
from twistedp2p.peer.pieces import pieces_of
from twistedp2p.tracker import service as tracker_service

from .doubles import FakeSourceFactory
from .helpers import frame, split_frame, temp_dir

DATA = os.urandom(1_500_000)
SHA = hashlib.sha256(DATA).hexdigest()
PIECES = pieces_of(DATA)
ROOTED = {"root": PIECES.root, "piece_size": PIECES.piece_size}


def coroutine(f):
    """Let a trial test be an ``async def``."""

    def run(self, *args, **kwargs):
        return Deferred.fromCoroutine(f(self, *args, **kwargs))

    run.__name__ = f.__name__
    return run


class Collect(Protocol):
    """
    A raw client: sends C{request} on connect, collects everything until
    the connection closes, then fires C{done} with the bytes.
    """

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Any = None) -> None:
        self.done.callback(self.data)


class SeedTrackerClient(Int32StringReceiver):
    """
    A seed-protocol tracker client: no ids, answers in order.
    """

    MAX_LENGTH = wire.MAX_REPLY_FRAME

    def __init__(self) -> None:
        self.waiting: list[Deferred] = []

    def ask(self, message: dict[str, Any]) -> Deferred:
        d: Deferred = Deferred()
        self.waiting.append(d)
        self.sendString(wire.encode(message))
        return d

    def stringReceived(self, data: bytes) -> None:
        self.waiting.pop(0).callback(wire.decode(data))


class Silent(Protocol):
    """Accepts and never sends."""


class HalfThenClose(Protocol):
    """Answers a get with a true header, half the bytes, then closes."""

    def dataReceived(self, data: bytes) -> None:
        header = {"status": "success", "fname": "f", "offset": 0, "length": len(DATA),
                  "file_size": len(DATA), "sha256": SHA}
        self.transport.write(frame(header) + DATA[: len(DATA) // 2])
        self.transport.loseConnection()


class SeedSource(Protocol):
    """Serves get_file for its one local name, then closes."""

    LNAME = "/home/seed/files/f.bin"

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) < 4:
            return
        (n,) = struct.unpack("!I", self.buffer[:4])
        if len(self.buffer) < 4 + n:
            return
        message = wire.decode(self.buffer[4 : 4 + n])
        if message == {"action": "get_file", "lname": self.LNAME}:
            self.transport.write(DATA)
        self.transport.loseConnection()


class IntegrationBase(unittest.TestCase):
    """
    A real tracker and peers in this process (no tests of its own).
    """

    timeout = 60

    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.peers = 0

    async def start_tracker(self) -> int:
        config = tracker_service.Options()
        config.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--db", "memory", "--no-shell"])
        self.tracker = tracker_service.makeService(config, reactor)
        self.tracker.startService()
        self.addCleanup(self.tracker.stopService)
        port = await self.tracker.whenListening()
        self.tracker_port = port.getHost().port
        return self.tracker_port

    async def start_peer(
        self,
        name: str | None = None,
        *extra: str,
        trackers: list[str] | None = None,
        observe: Any = None,
        **overrides: Any,
    ):
        self.peers += 1
        name = name or f"peer{self.peers}"
        args = ["--repo", str(self.base / name), "--hostname", name,
                "--listen", "tcp:0:interface=127.0.0.1", "--no-shell"]
        for t in trackers or [f"tcp:127.0.0.1:{self.tracker_port}"]:
            args += ["--tracker", t]
        config = peer_service.Options()
        config.parseOptions(args + list(extra))
        peer = peer_service.makeService(config, reactor, **overrides)
        if observe is not None:
            peer.events.subscribe(observe)
        peer.startService()
        self.addCleanup(lambda: peer.stopService() if peer.running else None)
        await peer.whenListening()
        await peer.link.client_service.whenConnected()
        return peer

    async def listen(self, protocol_class) -> int:
        factory = protocol_class if isinstance(protocol_class, Factory) else Factory.forProtocol(protocol_class)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def register_native(self, hostname: str, p2p_port: int, **publication: Any) -> TrackerClientProtocol:
        """
        A test double that says a native hello for C{p2p_port} and
        publishes f with the real content's size and SHA-256.
        """
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), TrackerClientProtocol(reactor)
        )
        self.addCleanup(client.transport.loseConnection)
        await client.request("hello", hostname=hostname, p2p_port=p2p_port, version=1)
        fields = {"fname": "f", "lname": "f", "file_size": len(DATA), "last_modified": 1.0, "sha256": SHA}
        fields.update(publication)
        await client.request("publish", **fields)
        return client

    async def published_source(self, name: str = "source", *extra: str, **overrides: Any):
        source = await self.start_peer(name, *extra, **overrides)
        (source.library.repo / "f.bin").write_bytes(DATA)
        result = await source.node.publish("f.bin", "f")
        self.assertEqual(result.status, "created")
        return source



class PeerIntegrationTests(IntegrationBase):
    # -- the tests -----------------------------------------------------------------

    @coroutine
    async def test_publish_fetch_verify(self) -> None:
        await self.start_tracker()
        source = await self.published_source()
        me = await self.start_peer("me")
        files = await me.node.search("")
        self.assertEqual(
            files, [{"fname": "f", "file_size": len(DATA), "sha256": SHA, "sources": 1, "hostnames": ["source"]}]
        )
        progress = []
        result = await me.node.fetch("f", progress=lambda d, t: progress.append((d, t)))
        self.assertEqual((result.verified, result.sha256, result.source.hostname), (True, SHA, "source"))
        self.assertEqual((me.library.repo / "f").read_bytes(), DATA)
        self.assertEqual(progress[-1], (len(DATA), len(DATA)))
        self.assertTrue(result.published)
        # The fetcher is now a second source.
        [entry] = await me.node.search("f")
        self.assertEqual((entry["sources"], sorted(entry["hostnames"])), (2, ["me", "source"]))
        # Fetching again without --force is refused before any transfer.
        with self.assertRaises(errors.AlreadyExists):
            await me.node.fetch("f")
        self.assertEqual(source.transfers.completed["up"], 1)

    @coroutine
    async def test_many_downloaders_k4(self) -> None:
        """
        Ten peers fetch one file from a source with K=4 at once: the source
        never runs more than 4 uploads, answers the rest busy, and every
        downloader completes after retrying.
        """
        await self.start_tracker()
        # Once armed, hold every upload at its start (the file lookup runs
        # through run_in_thread) until the source has refused a request, so
        # the cap is certainly reached rather than left to timing.
        held: list[Deferred] = []
        armed, opened = [], []

        def gated(f, *args, **kwargs):
            if armed and not opened:
                d: Deferred = Deferred()
                held.append(d)
                if len(held) > 4:
                    # The cap was broken: let everything go, the asserts fail.
                    opened.append(True)
                    reactor.callLater(0, open_gate)
                return d.addCallback(lambda _: deferToThread(f, *args, **kwargs))
            return deferToThread(f, *args, **kwargs)

        def open_gate() -> None:
            for d in held:
                d.callback(None)

        source = await self.published_source("source", "--max-sessions", "4", run_in_thread=gated)
        armed.append(True)
        real_try = source.slots.try_acquire

        def try_acquire(kind="up"):
            slot = real_try(kind)
            if slot is None and not opened:
                opened.append(True)
                reactor.callLater(0, open_gate)
            return slot

        self.patch(source.slots, "try_acquire", try_acquire)
        downloaders = [await self.start_peer(f"d{i}") for i in range(10)]
        results = await gatherResults([d.node.fetch("f") for d in downloaders])
        for d, result in zip(downloaders, results):
            self.assertEqual((result.verified, result.sha256), (True, SHA))
            self.assertEqual((d.library.repo / "f").read_bytes(), DATA)
        self.assertEqual(len(held), 4)
        self.assertEqual(source.slots.peak["up"], 4)
        self.assertGreaterEqual(source.slots.refused, 1)
        self.assertEqual(source.transfers.completed["up"], 10)
        self.assertTrue(any("busy" in reason for r in results for _, reason in r.failures))

    @coroutine
    async def test_ttfb_switches_to_next_source(self) -> None:
        await self.start_tracker()
        silent_port = await self.listen(Silent)
        # It publishes the same root, so it is asked first (tracker order).
        await self.register_native("silent", silent_port, **ROOTED)
        await self.published_source()
        me = await self.start_peer("me", "--ttfb-timeout", "0.5")
        started = reactor.seconds()
        result = await me.node.fetch("f")
        self.assertEqual(result.source.hostname, "source")
        self.assertEqual(result.failures, ((f"silent (127.0.0.1:{silent_port})", "no data within 0.5 s"),))
        self.assertGreaterEqual(reactor.seconds() - started, 0.5)
        self.assertEqual((me.library.repo / "f").read_bytes(), DATA)

    @coroutine
    async def test_drop_mid_transfer_switches_source(self) -> None:
        await self.start_tracker()
        # Answers the piece list, then closes half way through a piece.
        dropper = FakeSourceFactory(DATA, drop_after=PIECES.piece_size // 2)
        bad_port = await self.listen(dropper)
        await self.register_native("dropper", bad_port, **ROOTED)
        await self.published_source()
        me = await self.start_peer("me")
        result = await me.node.fetch("f")
        self.assertEqual((result.source.hostname, result.verified), ("source", True))
        self.assertTrue(dropper.dropped)
        self.assertEqual(result.failures[0][0], f"dropper (127.0.0.1:{bad_port})")
        self.assertIn("connection was lost", result.failures[0][1])
        self.assertEqual((me.library.repo / "f").read_bytes(), DATA)
        self.assertEqual([n for n in os.listdir(me.library.repo) if n.endswith(".part")], [])

    @coroutine
    async def test_garbage_at_peer_port(self) -> None:
        await self.start_tracker()
        source = await self.published_source()
        port = source.port.getHost().port
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)

        garbage = await connectProtocol(endpoint, Collect(frame(b"\x00\xffnot json")))
        reply, rest = split_frame(await garbage.done)
        self.assertEqual((reply["status"], reply["code"], rest), ("error", "bad_utf8", b""))

        unknown = await connectProtocol(endpoint, Collect(frame({"action": "delete", "fname": "f"})))
        reply, rest = split_frame(await unknown.done)
        self.assertEqual(reply["code"], "unknown_action")

        oversized = await connectProtocol(endpoint, Collect(struct.pack("!I", 2**31) + b"x" * 1000))
        self.assertEqual(await oversized.done, b"")

        # The peer still serves.
        good = await connectProtocol(endpoint, Collect(frame({"action": "get_file", "lname": "f"})))
        self.assertEqual(await good.done, DATA)

    @coroutine
    async def test_seed_client_get_file(self) -> None:
        await self.start_tracker()
        source = await self.published_source()
        # The peer port hands connections over with their request (clients
        # speak first), seed clients' included.
        self.assertGreater(source.port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT), 0)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", source.port.getHost().port)
        client = await connectProtocol(endpoint, Collect(frame({"action": "get_file", "lname": "f"})))
        self.assertEqual(await client.done, DATA)
        missing = await connectProtocol(endpoint, Collect(frame({"action": "get_file", "lname": "f.bin"})))
        self.assertEqual(await missing.done, b"")
        legacy = await connectProtocol(endpoint, Collect(frame({"action": "download", "fname": "f"})))
        self.assertEqual(await legacy.done, DATA)

    @coroutine
    async def test_fetch_from_seed_source(self) -> None:
        await self.start_tracker()
        seed_port = await self.listen(SeedSource)
        seed = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), SeedTrackerClient()
        )
        self.addCleanup(seed.transport.loseConnection)
        hello = await seed.ask({"action": "hello", "hostname": "seedbox", "p2p_port": seed_port})
        self.assertEqual(hello["status"], "success")
        published = await seed.ask(
            {"action": "publish", "fname": "f", "lname": SeedSource.LNAME, "file_size": len(DATA),
             "last_modified": "2025-10-01T12:00:00", "allow_overwrite": True}
        )
        self.assertNotEqual(published["status"], "error")
        me = await self.start_peer("me")
        result = await me.node.fetch("f")
        self.assertEqual((result.verified, result.sha256, result.source.hostname), (False, SHA, "seedbox"))
        self.assertEqual((me.library.repo / "f").read_bytes(), DATA)

    @coroutine
    async def test_failover_to_second_tracker(self) -> None:
        await self.start_tracker()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        peer = await self.start_peer(
            "me",
            trackers=[f"tcp:127.0.0.1:{closed}", f"tcp:127.0.0.1:{self.tracker_port}"],
        )
        self.assertEqual(peer.link.status()["tracker"], f"tcp:127.0.0.1:{self.tracker_port}")
        self.assertEqual(peer.link.state, "connected")
        # It registered with the second tracker.
        (peer.library.repo / "x").write_bytes(b"x")
        self.assertEqual((await peer.node.publish("x", "x")).status, "created")

    @coroutine
    async def test_restart_shares_again(self) -> None:
        await self.start_tracker()
        source = await self.published_source()
        await source.stopService()
        again = await self.start_peer("source")
        self.assertIn("f", again.library)
        # The re-announce runs in the link's prepareConnection, before
        # whenConnected fires.
        other = await self.start_peer("other")
        [entry] = await other.node.search("f")
        self.assertEqual(entry["hostnames"], ["source"])
        result = await other.node.fetch("f")
        self.assertEqual(result.sha256, SHA)
