"""
Tests for L{twistedp2p.peer.download}: source choice, the downloader
protocols, the part writer, and whole downloads over iosim on a Clock.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.download import (
    Download,
    GetProtocol,
    LocalWriteError,
    NoSpaceLeft,
    PartWriter,
    SeedGetProtocol,
    SourceInfo,
    choose_sources,
    part_name,
)
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.peer.upload import UploadFactory

from .helpers import FakeNetwork, PeerParts, frame, split_frame, sync_run, temp_dir

DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


def entry(host: str, port: int = 1000, sha: str | None = SHA, size: int | None = len(DATA), **kw):
    e = {
        "hostname": host,
        "ip": "127.0.0.1",
        "port": port,
        "lname": kw.pop("lname", "f"),
        "fname": "f",
        "file_size": size,
        "last_modified": 1.0,
        "sha256": sha,
        "version": None if sha is None else 1,
    }
    e.update(kw)
    return e


class ChooseSourcesTests(SynchronousTestCase):
    def test_tracker_order_verified_first(self) -> None:
        peers = [entry("s1", sha=None), entry("v1"), entry("s2", sha=None, size=None), entry("v2")]
        self.assertEqual(
            [s.hostname for s in choose_sources("f", peers)], ["v1", "v2", "s1", "s2"]
        )

    def test_from(self) -> None:
        peers = [entry("a"), entry("b")]
        self.assertEqual([s.hostname for s in choose_sources("f", peers, "b")], ["b"])
        e = self.assertRaises(errors.NoSources, choose_sources, "f", peers, "c")
        self.assertIn("c does not share f", str(e))

    def test_from_by_address(self) -> None:
        peers = [entry("a", ip="10.0.0.1"), entry("b", ip="10.0.0.2")]
        self.assertEqual([s.hostname for s in choose_sources("f", peers, "10.0.0.2")], ["b"])

    def test_from_by_fingerprint(self) -> None:
        """
        --from FINGERPRINT picks the source whose key it is, whatever
        hostname it (or an impostor) claims.
        """
        peers = [
            entry("alice", ip="10.6.6.6", port=1, fingerprint="6666666666666666"),
            entry("alice", ip="10.0.0.1", port=2, fingerprint="0123456789abcdef"),
            entry("bob", ip="10.0.0.2", port=3),
        ]
        [s] = choose_sources("f", peers, "0123456789abcdef")
        self.assertEqual((s.ip, s.port, s.fingerprint), ("10.0.0.1", 2, "0123456789abcdef"))
        self.assertRaises(errors.NoSources, choose_sources, "f", peers, "ffffffffffffffff")

    def test_from_by_ip_and_port(self) -> None:
        peers = [
            entry("a", ip="10.0.0.1", port=4000),
            entry("a", ip="10.0.0.1", port=4001),
            entry("b", ip="::1", port=4000),
        ]
        [s] = choose_sources("f", peers, "10.0.0.1:4001")
        self.assertEqual((s.ip, s.port), ("10.0.0.1", 4001))
        [s] = choose_sources("f", peers, "[::1]:4000")
        self.assertEqual(s.hostname, "b")
        self.assertEqual(len(choose_sources("f", peers, "10.0.0.1")), 2)
        self.assertRaises(errors.NoSources, choose_sources, "f", peers, "10.0.0.1:5000")

    def test_from_hostname_prefers_authenticated(self) -> None:
        """
        Sources claiming a hostname without a key are left out when a source
        of that hostname proved its key; alone, they are kept (and marked
        unauthenticated).
        """
        impostor = entry("alice", ip="10.6.6.6", port=1)
        owner = entry("alice", ip="10.0.0.1", port=2, fingerprint="0123456789abcdef")
        [s] = choose_sources("f", [impostor, owner], "alice")
        self.assertEqual(s.ip, "10.0.0.1")
        self.assertTrue(s.authenticated)
        [s] = choose_sources("f", [impostor], "alice")
        self.assertFalse(s.authenticated)

    def test_malformed_fingerprint_ignored(self) -> None:
        [s] = choose_sources("f", [entry("a", fingerprint="not hex")])
        self.assertIsNone(s.fingerprint)

    def test_none(self) -> None:
        self.assertRaises(errors.NoSources, choose_sources, "f", [])

    def test_ambiguous(self) -> None:
        peers = [entry("a"), entry("b", sha="b" * 64, size=7), entry("c")]
        e = self.assertRaises(errors.AmbiguousContent, choose_sources, "f", peers)
        text = str(e)
        self.assertIn(f"sha256 {SHA[:12]} ({len(DATA)} bytes) on a, c", text)
        self.assertIn("sha256 bbbbbbbbbbbb (7 bytes) on b", text)
        self.assertIn("--from", text)

    def test_from_resolves_ambiguity(self) -> None:
        peers = [entry("a"), entry("b", sha="b" * 64, size=7)]
        [s] = choose_sources("f", peers, "b")
        self.assertEqual(s.sha256, "b" * 64)

    def test_seeds_of_other_sizes_dropped(self) -> None:
        peers = [entry("v"), entry("s1", sha=None, size=5), entry("s2", sha=None, size=len(DATA))]
        self.assertEqual([s.hostname for s in choose_sources("f", peers)], ["v", "s2"])

    def test_seeds_of_several_sizes_ambiguous(self) -> None:
        peers = [entry("s1", sha=None, size=5), entry("s2", sha=None, size=6)]
        self.assertRaises(errors.AmbiguousContent, choose_sources, "f", peers)

    def test_bad_entries_skipped(self) -> None:
        peers = [{"hostname": "x"}, "nope", entry("ok"), entry("badport", port=0)]
        self.assertEqual([s.hostname for s in choose_sources("f", peers)], ["ok"])

    def test_part_name(self) -> None:
        self.assertEqual(part_name("a.txt"), ".a.txt.part")
        long = "x" * 255
        self.assertLessEqual(len(part_name(long)), 255)
        self.assertTrue(part_name(long).startswith("."))


def source(port: int = 1000, seed: bool = False, host: str = "src", **kw) -> SourceInfo:
    return SourceInfo.from_wire(entry(host, port, sha=None if seed else SHA, **kw))


class ProtocolTestsMixin:
    def make(self, cls, src: SourceInfo):
        from twisted.internet.task import Clock

        self.clock = Clock()
        self.received: list[bytes] = []
        self.progress: list[tuple[int, Any]] = []
        proto = cls(src, self.received.append, lambda d, t: self.progress.append((d, t)), self.clock, 30.0)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport


class GetProtocolTests(ProtocolTestsMixin, SynchronousTestCase):
    def header(self, **kw) -> bytes:
        h = {"status": "success", "fname": "f", "offset": 0, "length": len(DATA),
             "file_size": len(DATA), "sha256": SHA}
        h.update(kw)
        return frame(h)

    def test_request(self) -> None:
        proto, t = self.make(GetProtocol, source())
        message, rest = split_frame(t.value())
        self.assertEqual(message, {"action": "get", "fname": "f", "offset": 0, "length": None})

    def test_raw_mode_same_packet(self) -> None:
        """
        Bytes after the header in the same packet are raw data, even when
        they look like a frame.
        """
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header() + DATA[:1000])
        self.assertEqual(b"".join(self.received), DATA[:1000])
        self.assertTrue(proto.started.called)
        self.assertFalse(proto.done.called)
        proto.dataReceived(DATA[1000:])
        self.assertEqual(b"".join(self.received), DATA)
        self.assertEqual(self.successResultOf(proto.done), len(DATA))
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.progress[-1], (len(DATA), len(DATA)))

    def test_byte_by_byte_header(self) -> None:
        proto, t = self.make(GetProtocol, source())
        for b in self.header():
            proto.dataReceived(bytes([b]))
        self.assertFalse(proto.started.called)
        proto.dataReceived(DATA)
        self.successResultOf(proto.done)

    def test_exact_length(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header() + DATA + b"extra")
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertIn("more bytes than announced", str(f.value))

    def test_busy(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(frame({"status": "busy", "message": "full"}))
        self.failureResultOf(proto.done, errors.Busy)
        self.assertTrue(proto.started.called)

    def test_error(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(frame({"status": "error", "code": "not_found", "message": "f is not published here"}))
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertEqual(str(f.value), "refused: f is not published here")

    def test_other_content(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header(sha256="c" * 64))
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertIn("different content", str(f.value))

    def test_bad_header(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header(length="many"))
        self.failureResultOf(proto.done, errors.TransferFailed)

    def test_lost_mid_transfer(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header() + DATA[:10])
        proto.connectionLost(Failure(ConnectionLost()))
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertIn(f"after 10 of {len(DATA)} bytes", str(f.value))

    def test_lost_before_header(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(proto.done, errors.TransferFailed)

    def test_stall(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header() + DATA[:10])
        self.clock.advance(29)
        self.assertFalse(proto.done.called)
        self.clock.advance(2)
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertIn("stalled", str(f.value))

    def test_paused_does_not_stall(self) -> None:
        proto, t = self.make(GetProtocol, source())
        proto.dataReceived(self.header() + DATA[:10])
        proto.pauseProducing()
        self.assertEqual(t.producerState, "paused")
        self.clock.advance(100)
        self.assertFalse(proto.done.called)
        proto.resumeProducing()
        self.assertEqual(t.producerState, "producing")

    def test_empty_file(self) -> None:
        src = SourceInfo.from_wire(entry("s", sha=hashlib.sha256(b"").hexdigest(), size=0))
        proto, t = self.make(GetProtocol, src)
        proto.dataReceived(self.header(length=0, file_size=0, sha256=src.sha256))
        self.assertEqual(self.successResultOf(proto.done), 0)


class SeedGetProtocolTests(ProtocolTestsMixin, SynchronousTestCase):
    def test_request_and_bytes_until_close(self) -> None:
        proto, t = self.make(SeedGetProtocol, source(seed=True, lname="/home/x/f.bin"))
        message, _ = split_frame(t.value())
        self.assertEqual(message, {"action": "get_file", "lname": "/home/x/f.bin"})
        proto.dataReceived(DATA[:5])
        proto.dataReceived(DATA[5:])
        self.assertFalse(proto.done.called)
        proto.connectionLost(None)
        self.assertEqual(self.successResultOf(proto.done), len(DATA))

    def test_close_without_bytes(self) -> None:
        proto, t = self.make(SeedGetProtocol, source(seed=True))
        proto.connectionLost(None)
        f = self.failureResultOf(proto.done, errors.TransferFailed)
        self.assertIn("without sending anything", str(f.value))

    def test_short(self) -> None:
        proto, t = self.make(SeedGetProtocol, source(seed=True))
        proto.dataReceived(DATA[:5])
        proto.connectionLost(None)
        self.failureResultOf(proto.done, errors.TransferFailed)

    def test_unknown_size_dirty_close(self) -> None:
        proto, t = self.make(SeedGetProtocol, source(seed=True, size=None))
        proto.dataReceived(DATA[:5])
        proto.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(proto.done, errors.TransferFailed)

    def test_unknown_size_clean_close(self) -> None:
        proto, t = self.make(SeedGetProtocol, source(seed=True, size=None))
        proto.dataReceived(DATA[:5])
        proto.connectionLost(None)
        self.assertEqual(self.successResultOf(proto.done), 5)


class ManualThreads:
    """
    A run_in_thread whose jobs run only when the test says so.
    """

    def __init__(self) -> None:
        self.jobs: list[tuple[Deferred, Callable, tuple]] = []

    def __call__(self, f, *args, **kwargs):
        d: Deferred = Deferred()
        self.jobs.append((d, f, args))
        return d

    def run_one(self) -> None:
        d, f, args = self.jobs.pop(0)
        try:
            result = f(*args)
        except BaseException:
            d.errback()
        else:
            d.callback(result)

    def run_all(self) -> None:
        while self.jobs:
            self.run_one()


class FakeProducer:
    def __init__(self) -> None:
        self.state = "producing"

    def pauseProducing(self) -> None:
        self.state = "paused"

    def resumeProducing(self) -> None:
        self.state = "producing"


class PartWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.path = self.dir / ".f.part"

    def test_writes_and_hashes(self) -> None:
        w = PartWriter(self.path, sync_run, chunk_size=1000, max_pending=4000)
        self.successResultOf(w.open())
        for i in range(0, len(DATA), 777):
            w.write(DATA[i : i + 777])
        self.assertEqual(self.successResultOf(w.finish()), (len(DATA), SHA))
        self.assertEqual(self.path.read_bytes(), DATA)

    def test_backpressure(self) -> None:
        """
        While too much waits for the writer threads, the producer is
        paused; it resumes once the backlog is written and hashed (both
        queues: a chunk is released when neither needs it); memory stays
        bounded.
        """
        threads = ManualThreads()
        producer = FakeProducer()
        w = PartWriter(self.path, threads, chunk_size=1000, max_pending=4000)
        w.producer = producer
        d = w.open()
        threads.run_all()
        self.successResultOf(d)
        for i in range(5):
            w.write(b"x" * 1000)
        self.assertEqual(producer.state, "paused")
        self.assertEqual(w.waiting, 5000)
        # Queued: the first chunk's write, then its hash.
        threads.run_one()
        self.assertEqual((producer.state, w.waiting), ("paused", 5000))
        threads.run_one()
        self.assertEqual((producer.state, w.waiting), ("paused", 4000))
        # The other four chunks: one batch per queue.
        threads.run_one()
        self.assertEqual((producer.state, w.waiting), ("paused", 4000))
        threads.run_one()
        self.assertEqual((producer.state, w.waiting), ("producing", 0))
        d = w.finish()
        threads.run_all()
        self.assertEqual(self.successResultOf(d), (5000, hashlib.sha256(b"x" * 5000).hexdigest()))

    def test_write_and_hash_run_side_by_side(self) -> None:
        """
        A chunk's hash job is queued at once, not after its write: the two
        queues each have a job in flight.
        """
        threads = ManualThreads()
        w = PartWriter(self.path, threads, chunk_size=10, max_pending=10**6)
        w.open()
        threads.run_all()
        w.write(b"y" * 10)
        self.assertEqual(
            sorted(job[2][0][0][0].__name__ for job in threads.jobs), ["_hash_chunk", "_write_chunk"]
        )
        d = w.finish()
        threads.run_all()
        self.assertEqual(self.successResultOf(d), (10, hashlib.sha256(b"y" * 10).hexdigest()))

    def test_chunks_end_on_aligned_offsets(self) -> None:
        """
        Every chunk but the last is cut at a multiple of DIRECT_ALIGN (so
        it may be written directly); the bytes past it start the next one.
        """
        from twistedp2p.peer.partfile import DIRECT_ALIGN

        offsets = []
        w = PartWriter(self.path, sync_run, chunk_size=2 * DIRECT_ALIGN, max_pending=10**9)
        real = w._write_chunk
        w._write_chunk = lambda offset, chunks: (offsets.append(offset), real(offset, chunks))[1]
        self.successResultOf(w.open())
        data = whole = os.urandom(9 * DIRECT_ALIGN + 77)
        for size in (100, 3 * DIRECT_ALIGN, 5, DIRECT_ALIGN - 1, 2 * DIRECT_ALIGN + 3, 1, 10**6):
            part, data_left = data[:size], data[size:]
            w.write(part)
            data = data_left
        self.assertEqual(self.successResultOf(w.finish()), (len(whole), hashlib.sha256(whole).hexdigest()))
        self.assertEqual(self.path.read_bytes(), whole)
        self.assertTrue(all(o % DIRECT_ALIGN == 0 for o in offsets), offsets)
        self.assertGreater(len(offsets), 2)

    def test_writes_in_order(self) -> None:
        threads = ManualThreads()
        w = PartWriter(self.path, threads, chunk_size=10, max_pending=10**6)
        w.open()
        for i in range(20):
            w.write(bytes([65 + i]) * 10)
        d = w.finish()
        threads.run_all()
        self.successResultOf(d)
        self.assertEqual(self.path.read_bytes(), b"".join(bytes([65 + i]) * 10 for i in range(20)))

    def test_write_error(self) -> None:
        errors_seen = []
        w = PartWriter(self.path, sync_run, chunk_size=10)
        w.on_error = errors_seen.append
        self.successResultOf(w.open())

        def full(chunks, offset):
            raise OSError(28, "No space left on device")

        w._file.write = full
        w.write(b"x" * 20)
        self.assertEqual(len(errors_seen), 1)
        f = self.failureResultOf(w.finish(), NoSpaceLeft)
        self.assertIn(f"no space left on device (writing {self.path};", str(f.value))
        # Expected, and said in one line: no traceback logged.
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_open_error(self) -> None:
        w = PartWriter(self.dir / "missing" / ".f.part", sync_run)
        self.failureResultOf(w.open(), LocalWriteError)

    def test_discard(self) -> None:
        w = PartWriter(self.path, sync_run, chunk_size=10)
        self.successResultOf(w.open())
        w.write(b"x" * 25)
        self.successResultOf(w.discard())
        self.assertFalse(self.path.exists())


# -- whole downloads over iosim ----------------------------------------------------------


class Silent(Protocol):
    """Accepts and never answers."""


class Busy(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(frame({"status": "busy", "message": "full"}))
        self.transport.loseConnection()


class HalfThenClose(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(
            frame({"status": "success", "fname": "f", "offset": 0, "length": len(DATA),
                   "file_size": len(DATA), "sha256": SHA})
            + DATA[: len(DATA) // 2]
        )
        self.transport.loseConnection()


class WrongBytes(Protocol):
    def dataReceived(self, data: bytes) -> None:
        self.transport.write(
            frame({"status": "success", "fname": "f", "offset": 0, "length": len(DATA),
                   "file_size": len(DATA), "sha256": SHA})
            + b"\0" * len(DATA)
        )


class SeedServer(Protocol):
    def dataReceived(self, data: bytes) -> None:
        message, _ = split_frame(data)
        assert message == {"action": "get_file", "lname": "/seed/f"}, message
        self.transport.write(DATA)
        self.transport.loseConnection()


class DownloadTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = temp_dir(self)
        self.source_parts = PeerParts(base / "source")
        self.source_parts.publish("f", DATA)
        self.parts = PeerParts(base / "me")
        self.clock = self.parts.clock
        self.net = FakeNetwork(self.clock)
        self.good = UploadFactory(
            self.source_parts.library, self.source_parts.slots, self.source_parts.transfers,
            self.source_parts.clock,
        )
        self.progress: list[tuple[int, Any]] = []

    def download(self, sources, force=False, **settings) -> Deferred:
        options = self.parts.download_options(self.net.connect, self.progress, force=force, **settings)
        return Download("f", sources, self.parts.repo, **options).run()

    def assertNoPart(self) -> None:
        self.assertEqual([n for n in os.listdir(self.parts.repo) if n.endswith(".part")], [])

    def dribbler(self):
        """
        A native source that answers the get, then sends one byte every
        20 s (never long enough without data to stall).
        """
        from twisted.protocols.basic import Int32StringReceiver

        from twistedp2p import wire

        clock = self.clock

        class Dribbler(Int32StringReceiver):
            def stringReceived(self, frame):
                self.sendString(wire.encode({"status": "success", "fname": "f", "offset": 0, "length": len(DATA),
                                             "file_size": len(DATA), "sha256": SHA}))
                self.drip(0)

            def drip(self, i):
                if not self.transport.disconnecting and i < len(DATA):
                    self.transport.write(DATA[i : i + 1])
                    clock.callLater(20, self.drip, i + 1)

        return Factory.forProtocol(Dribbler)

    def test_dribbling_source_replaced(self) -> None:
        """
        Whole-file downloads keep the same minimum rate per source (4 KiB/s
        over 20 s once 10 s have passed): a byte every 20 s never stalls,
        but is given up at 30 s for the next source.
        """
        self.net.servers[1] = self.dribbler()
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)])
        for _ in range(29):
            self.net.flush()
            self.clock.advance(1)
        self.assertNoResult(d)
        for _ in range(3):
            self.net.flush()
            self.clock.advance(1)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        [(label, reason)] = result.failures
        self.assertIn("the source is too slow: ", reason)
        self.assertIn("(minimum 4096)", reason)

    def test_one_good_source(self) -> None:
        self.net.servers[1] = self.good
        d = self.download([source(1)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.size, result.sha256, result.verified), (len(DATA), SHA, True))
        self.assertEqual(result.path, str(self.parts.repo / "f"))
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(self.progress[-1], (len(DATA), len(DATA)))
        self.assertNoPart()
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.completed["down"], 1)

    def test_ttfb_timeout_switches_source(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(Silent)
        self.net.servers[2] = self.good
        d = self.download([source(1, host="slow"), source(2)], ttfb_timeout=2.0)
        self.net.flush()
        self.assertNoResult(d)
        self.clock.advance(1.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.source.port, 2)
        self.assertEqual(result.failures, (("slow (127.0.0.1:1)", "no data within 2 s"),))
        # The silent source's connection was dropped.
        self.assertTrue(self.net.pumps[0].clientIO.disconnecting)

    def test_ttfb_covers_connect(self) -> None:
        self.net.servers[1] = "hang"
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)], ttfb_timeout=2.0)
        self.clock.advance(2.5)
        self.net.flush()
        self.assertEqual(self.successResultOf(d).source.port, 2)

    def test_refused_switches_source(self) -> None:
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.source.port, 2)
        self.assertIn("cannot connect", result.failures[0][1])

    def test_drop_mid_transfer(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(HalfThenClose)
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.source.port, result.verified), (2, True))
        self.assertIn("lost after", result.failures[0][1])
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        # Progress restarted from zero with the second source.
        self.assertIn((len(DATA) // 2, len(DATA)), self.progress)

    def test_bad_bytes_switch_source(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(WrongBytes)
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.source.port, 2)
        self.assertIn("do not match the published SHA-256", result.failures[0][1])

    def test_busy_retried_with_backoff(self) -> None:
        answers = ["busy", "busy"]

        def flaky():
            if answers:
                answers.pop()
                return Factory.forProtocol(Busy)
            return self.good

        self.net.servers[1] = flaky
        d = self.download([source(1)], busy_delays=(1.0, 2.0, 4.0))
        self.net.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.net.connects), 1)
        self.clock.advance(1.0)
        self.net.flush()
        self.assertEqual(len(self.net.connects), 2)
        self.assertNoResult(d)
        self.clock.advance(2.0)
        self.net.flush()
        self.assertEqual(len(self.net.connects), 3)
        self.assertEqual(self.successResultOf(d).failures[0][1], "busy (full)")

    def test_busy_retries_bounded(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(Busy)
        d = self.download([source(1)], busy_delays=(1.0, 1.0))
        for _ in range(5):
            self.net.flush()
            self.clock.advance(1.0)
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertEqual(len(self.net.connects), 3)
        self.assertIn("busy", str(f.value))

    def test_busy_not_retried_before_other_sources(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(Busy)
        self.net.servers[2] = self.good
        d = self.download([source(1), source(2)])
        self.net.flush()
        self.assertEqual(self.successResultOf(d).source.port, 2)
        self.assertEqual(self.net.connects, [1, 2])

    def test_all_fail(self) -> None:
        self.net.servers[2] = lambda: Factory.forProtocol(HalfThenClose)
        d = self.download([source(1, host="a"), source(2, host="b")])
        self.net.flush()
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn("could not fetch f from any source", str(f.value))
        self.assertIn("a (127.0.0.1:1): cannot connect", str(f.value))
        self.assertIn("b (127.0.0.1:2): the connection was lost", str(f.value))
        self.assertFalse((self.parts.repo / "f").exists())
        self.assertNoPart()

    def test_exists_refused_before_download(self) -> None:
        (self.parts.repo / "f").write_bytes(b"mine")
        self.net.servers[1] = self.good
        d = self.download([source(1)])
        self.failureResultOf(d, errors.AlreadyExists)
        self.assertEqual(self.net.connects, [])
        self.assertEqual((self.parts.repo / "f").read_bytes(), b"mine")

    def test_appears_during_download(self) -> None:
        self.net.servers[1] = self.good
        d = self.download([source(1)])
        (self.parts.repo / "f").write_bytes(b"mine")
        self.net.flush()
        self.failureResultOf(d, errors.AlreadyExists)
        self.assertEqual((self.parts.repo / "f").read_bytes(), b"mine")
        self.assertNoPart()

    def test_force_replaces(self) -> None:
        (self.parts.repo / "f").write_bytes(b"mine")
        self.net.servers[1] = self.good
        d = self.download([source(1)], force=True)
        self.net.flush()
        self.assertTrue(self.successResultOf(d).replaced)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)

    def test_seed_source(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(SeedServer)
        d = self.download([source(1, seed=True, lname="/seed/f")])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.verified, result.sha256, result.size), (False, SHA, len(DATA)))
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)

    def test_verified_before_seed(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(SeedServer)
        self.net.servers[2] = self.good
        srcs = choose_sources("f", [entry("seed", 1, sha=None, lname="/seed/f"), entry("native", 2)])
        d = self.download(srcs)
        self.net.flush()
        self.assertEqual(self.successResultOf(d).source.hostname, "native")

    def test_waits_for_slot(self) -> None:
        """
        A download waits for a download slot; uploads never hold one.
        """
        self.parts.slots = Slots(1)
        self.parts.slots.try_acquire("up")
        held = self.parts.slots.try_acquire("down")
        self.net.servers[1] = self.good
        d = self.download([source(1)])
        self.net.flush()
        self.assertEqual(self.net.connects, [])
        held.release()
        self.net.flush()
        self.successResultOf(d)

    def test_cancel_removes_part(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(Silent)
        d = self.download([source(1)])
        self.net.flush()
        d.cancel()
        self.failureResultOf(d)
        self.net.flush()
        self.assertNoPart()
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_local_write_error_is_fatal(self) -> None:
        self.net.servers[1] = self.good
        self.net.servers[2] = self.good
        # A directory where the part file goes: opening it fails, even as root.
        (self.parts.repo / ".f.part").mkdir()
        d = self.download([source(1), source(2)])
        self.net.flush()
        self.failureResultOf(d, LocalWriteError)
        self.assertEqual(self.net.connects, [])


class TransferTableTests(SynchronousTestCase):
    def test_rate_and_percent(self) -> None:
        from twisted.internet.task import Clock

        clock = Clock()
        table = Transfers(clock)
        t = table.start("down", "f", "peer", 1000)
        clock.advance(2)
        t.add(500)
        [snap] = table.snapshot()
        self.assertEqual((snap["percent"], snap["rate"]), (50.0, 250.0))
        t.finish()
        t.finish()
        self.assertEqual(table.snapshot(), [])
        self.assertEqual(table.completed["down"], 1)
