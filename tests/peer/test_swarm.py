"""
Tests for L{twistedp2p.peer.swarm}: choosing the root, the resume state,
the piece writer, and whole multi-source downloads over iosim on a Clock.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors, wire
from twistedp2p.peer.download import LocalWriteError, SourceInfo, choose_sources, part_name
from twistedp2p.peer.pieces import PieceList, pieces_of
from twistedp2p.peer.ratelimit import TokenBucket
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.swarm import (
    PartState,
    PieceWriter,
    SwarmDownload,
    find_states,
    plan_swarm,
    read_state,
    state_name,
    write_state,
)
from twistedp2p.peer.upload import UploadFactory

from .doubles import FakeSourceFactory
from .helpers import FakeNetwork, PeerParts, sync_run, temp_dir
from .test_download import ManualThreads

PIECE = 256 * 1024
DATA = os.urandom(12 * PIECE + 1000)
SHA = hashlib.sha256(DATA).hexdigest()
PIECES = pieces_of(DATA, PIECE)
COUNT = PIECES.count  # 13
#: What liars serve (same size): its pieces make a fake root.
FAKE = os.urandom(len(DATA))


def entry(host: str, port: int, root: str | None = PIECES.root, **kw: Any) -> dict[str, Any]:
    e = {
        "hostname": host,
        "ip": "127.0.0.1",
        "port": port,
        "lname": "f",
        "fname": "f",
        "file_size": len(DATA),
        "last_modified": 1.0,
        "sha256": SHA,
        "version": 1,
    }
    if root is not None:
        e["root"] = root
        e["piece_size"] = PIECE
    e.update(kw)
    return e


def source(host: str, port: int, **kw: Any) -> SourceInfo:
    return SourceInfo.from_wire(entry(host, port, **kw))


class PlanTests(SynchronousTestCase):
    def test_no_root_no_plan(self) -> None:
        self.assertIsNone(plan_swarm([source("a", 1, root=None)]))

    def test_listed_and_others(self) -> None:
        plan = plan_swarm([source("a", 1, root=None), source("b", 2), source("c", 3)])
        self.assertEqual((plan.root, plan.piece_size, plan.size, plan.sha256), (PIECES.root, PIECE, len(DATA), SHA))
        self.assertEqual([s.hostname for s in plan.listed], ["b", "c"])
        self.assertEqual([s.hostname for s in plan.others], ["a"])

    def test_roots_in_order_majority_then_preference(self) -> None:
        other = "e" * 64
        srcs = [source("a", 1, root=other), source("b", 2), source("c", 3)]
        plan = plan_swarm(srcs)
        self.assertEqual(plan.root, PIECES.root)
        self.assertEqual([g.root for g in plan.groups], [PIECES.root, other])
        self.assertEqual([s.hostname for s in plan.listed], ["b", "c"])
        # Sources of another root are never asked for bytes under this one.
        self.assertEqual(plan.others, ())
        self.assertEqual([s.hostname for s in plan.next_root().listed], ["a"])
        self.assertIsNone(plan.next_root().next_root())
        self.assertEqual(plan_swarm(srcs, prefer_root=other).root, other)
        # Ties: the tracker's order.
        self.assertEqual(plan_swarm(srcs[:2]).root, other)

    def test_seeds_never_in_a_swarm(self) -> None:
        srcs = choose_sources("f", [entry("a", 1), entry("s", 2, root=None, sha256=None, version=None)])
        self.assertEqual([s.hostname for s in plan_swarm(srcs).sources], ["a"])

    def test_bad_root_fields_ignored(self) -> None:
        s = SourceInfo.from_wire(entry("a", 1, root="XYZ"))
        self.assertEqual((s.root, s.piece_size, s.sha256), (None, None, SHA))
        s = SourceInfo.from_wire(dict(entry("a", 1), piece_size=0))
        self.assertIsNone(s.root)

    def test_piece_size_other_than_the_rule_refused(self) -> None:
        """
        The piece size is the rule's for the size (pieces.piece_size_for),
        never the source's choice: a source announcing another is refused
        (a 1 GiB piece would be a 1 GiB buffer).
        """
        srcs = [source("a", 1, file_size=10**12, piece_size=1)]
        with self.assertRaises(errors.NoSources) as e:
            plan_swarm(srcs)
        self.assertIn("a (127.0.0.1:1) publishes a piece list with the wrong piece size", str(e.exception))
        self.assertIn("16777216", str(e.exception))
        huge = source("big", 2, piece_size=2**30)
        plan = plan_swarm([huge, source("b", 3)])
        self.assertEqual([s.hostname for s in plan.sources], ["b"])
        self.assertEqual(plan.refused, (huge,))


class StateTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)

    def test_round_trip(self) -> None:
        state = PartState("f", PIECES.root, PIECE, len(DATA), SHA, frozenset({0, 3, 12}))
        path = self.dir / state_name("f")
        write_state(path, state)
        self.assertEqual(read_state(path), state)
        data = json.loads(path.read_text())
        self.assertEqual((data["pieces"], data["have"]), (COUNT, "9008"))
        self.assertEqual(state.have_bytes(), 2 * PIECE + 1000)
        self.assertEqual(os.listdir(self.dir), [".f.part.json"])

    def test_bad_states(self) -> None:
        path = self.dir / ".f.part.json"
        self.assertIsNone(read_state(path))
        good = PartState("f", PIECES.root, PIECE, len(DATA), SHA, frozenset()).to_json()
        for bad in (b"nope", b"[]", json.dumps(dict(good, version=9)).encode(),
                    json.dumps(dict(good, have="00")).encode(),
                    json.dumps(dict(good, pieces=3)).encode(),
                    json.dumps(dict(good, fname="../x")).encode()):
            path.write_bytes(bad)
            self.assertRaises(ValueError, read_state, path)

    def test_find_states(self) -> None:
        state = PartState("a b", PIECES.root, PIECE, len(DATA), SHA, frozenset({1}))
        write_state(self.dir / state_name("a b"), state)
        (self.dir / ".junk.part.json").write_text("{")
        write_state(self.dir / ".other.part.json", state)
        (self.dir / "plain.json").write_text("{}")
        found = dict(find_states(self.dir))
        self.assertEqual(found[self.dir / ".a b.part.json"], state)
        self.assertEqual(found[self.dir / ".junk.part.json"], "not JSON")
        self.assertIn("does not match", found[self.dir / ".other.part.json"])
        self.assertEqual(len(found), 3)

    def test_long_names(self) -> None:
        name = "x" * 255
        self.assertLessEqual(len(state_name(name).encode()), 255)
        self.assertTrue(state_name(name).endswith(".part.json"))


class PieceWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.part = self.dir / ".f.part"
        self.state = self.dir / ".f.part.json"

    def test_out_of_order_and_whole_hash(self) -> None:
        w = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.assertEqual(self.successResultOf(w.open(())), set())
        self.assertEqual(os.path.getsize(self.part), len(DATA))
        # A bad copy of piece 5 is written (pieces stream to disk) but not
        # counted; the good copy overwrites it.
        self.assertFalse(self.successResultOf(w.write(5, b"x" * PIECE)[0]))
        for i in [3, 1, 0, 2] + list(range(4, COUNT)):
            offset, length = PIECES.span(i)
            self.assertTrue(self.successResultOf(w.write(i, DATA[offset : offset + length])[0]))
        self.assertEqual(self.successResultOf(w.finish()), SHA)
        self.assertEqual(self.part.read_bytes(), DATA)

    def test_bad_piece_hashed_in_order_is_not_trusted(self) -> None:
        """
        A piece arriving in order is hashed into the whole file beside its
        check; when the check then fails, the whole-file hash is computed
        again from the file at the end, so it still covers exactly the
        bytes on disk.
        """
        w = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.successResultOf(w.open(()))
        self.assertFalse(self.successResultOf(w.write(0, [b"x" * (PIECE - 1), b"y"])[0]))
        for i in range(COUNT):
            offset, length = PIECES.span(i)
            self.assertTrue(self.successResultOf(w.write(i, DATA[offset : offset + length])[0]))
        self.assertEqual(self.successResultOf(w.finish()), SHA)
        self.assertEqual(self.part.read_bytes(), DATA)

    def test_in_order_piece_hashed_beside_its_write(self) -> None:
        threads = ManualThreads()
        w = PieceWriter(self.part, self.state, PIECES, threads)
        opened = w.open(())
        threads.run_all()
        self.successResultOf(opened)
        written, released = w.write(0, DATA[:PIECE])
        # One job on the write queue and one on the hash queue, at once.
        self.assertEqual(len(threads.jobs), 2)
        threads.run_all()
        self.assertTrue(self.successResultOf(written))
        self.successResultOf(released)
        w.discard()
        threads.run_all()

    def test_flushed_along_the_way(self) -> None:
        from twistedp2p.peer import swarm

        synced: list[int] = []
        self.patch(swarm, "SYNC_BYTES", 2 * PIECE)
        # (Only writes through the page cache are flushed along the way.)
        real = swarm.PartFile
        self.patch(swarm, "PartFile", lambda path, flags: real(path, flags, direct=False))
        self.patch(swarm.os, "fdatasync", synced.append)
        w = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.successResultOf(w.open(()))
        for i in range(5):
            offset, length = PIECES.span(i)
            self.successResultOf(w.write(i, DATA[offset : offset + length])[0])
        self.assertEqual(len(synced), 2)
        self.successResultOf(w.close(None))

    def test_resume_checks_claimed_pieces(self) -> None:
        damaged = bytearray(DATA)
        damaged[PIECE + 5] ^= 1
        self.part.write_bytes(bytes(damaged[: 3 * PIECE]))
        w = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.assertEqual(self.successResultOf(w.open({0, 1, 2, 7})), {0, 2})
        self.assertEqual(os.path.getsize(self.part), len(DATA))

    def test_checkpoint_and_close(self) -> None:
        w = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.successResultOf(w.open(()))
        self.successResultOf(w.write(0, DATA[:PIECE])[0])
        state = PartState("f", PIECES.root, PIECE, len(DATA), SHA, frozenset({0}))
        self.successResultOf(w.checkpoint(state))
        self.assertEqual(read_state(self.state), state)
        self.successResultOf(w.close(None))
        self.assertTrue(self.part.exists())
        w2 = PieceWriter(self.part, self.state, PIECES, sync_run)
        self.assertEqual(self.successResultOf(w2.open({0})), {0})
        self.successResultOf(w2.discard())
        self.assertEqual(os.listdir(self.dir), [])


class Silent(Protocol):
    """Accepts and never answers."""


class SwarmTests(SynchronousTestCase):
    """
    Whole downloads: real upload factories or test doubles on iosim.
    """

    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.parts = PeerParts(self.base / "me")
        self.clock = self.parts.clock
        self.net = FakeNetwork(self.clock)
        self.sources: dict[int, PeerParts] = {}
        self.progress: list[tuple[int, Any]] = []
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def real_source(self, port: int) -> UploadFactory:
        parts = PeerParts(self.base / f"src{port}")
        entry = parts.publish("f", DATA)
        # The library chose the same piece size (256 KiB for this size).
        self.assertEqual(entry.root, PIECES.root)
        factory = UploadFactory(parts.library, parts.slots, parts.transfers, parts.clock)
        self.net.servers[port] = factory
        self.sources[port] = parts
        return factory

    def swarm(self, srcs, force: bool = False, bucket=None, threads=sync_run, prefer=None, **settings) -> SwarmDownload:
        options = self.parts.download_options(
            self.net.connect, self.progress, force=force, run_in_thread=threads, bucket=bucket, **settings
        )
        return SwarmDownload("f", plan_swarm(srcs, prefer_root=prefer), self.parts.repo, **options)

    def run_swarm(self, srcs, **kw) -> Deferred:
        self.download = self.swarm(srcs, **kw)
        return self.download.run()

    def leftovers(self) -> list[str]:
        return sorted(n for n in os.listdir(self.parts.repo) if n.startswith(".") and n != ".p2p")

    def messages(self) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.logged]

    # -- the tests -----------------------------------------------------------------

    def test_two_sources_share_the_work(self) -> None:
        a, b = self.real_source(1), self.real_source(2)
        d = self.run_swarm([source("a", 1), source("b", 2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.size, result.sha256, result.verified, result.piece_count), (len(DATA), SHA, True, COUNT))
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(self.leftovers(), [])
        # Each piece once, but for the endgame's few duplicates.
        self.assertGreaterEqual(a.served_ranges + b.served_ranges, COUNT)
        self.assertLessEqual(a.served_ranges + b.served_ranges, COUNT + 2)
        self.assertGreater(a.served_ranges, 0)
        self.assertGreater(b.served_ranges, 0)
        self.assertEqual(sorted(h for h, _ in result.contributors), ["a", "b"])
        self.assertEqual(sum(n for _, n in result.contributors), COUNT)
        self.assertEqual(self.progress[-1], (len(DATA), len(DATA)))
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.slots.peak["down"], 2)
        self.assertEqual(self.parts.transfers.completed["down"], 1)
        self.assertEqual(self.parts.transfers.active(), [])
        self.assertEqual(result.pieces, PIECES)
        self.successResultOf(self.download.closed)

    def test_unauthenticated_contributors_named(self) -> None:
        """
        The result says which contributors were unauthenticated (listed
        without a key fingerprint), and so does the transfer's label.
        """
        self.real_source(1), self.real_source(2)
        srcs = [source("a", 1, fingerprint="0123456789abcdef"), source("b", 2)]
        d = self.run_swarm(srcs)
        [transfer] = self.parts.transfers.active()
        self.assertEqual(transfer.peer, "2 sources, unauthenticated: b")
        self.net.flush()
        result = self.successResultOf(d)
        keys = dict(zip((h for h, _ in result.contributors), result.contributor_keys))
        self.assertEqual(keys, {"a": "0123456789abcdef", "b": None})

    def test_max_sources(self) -> None:
        for port in (1, 2, 3):
            self.real_source(port)
        d = self.run_swarm([source("a", 1), source("b", 2), source("c", 3)], max_sources=2)
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(self.parts.slots.peak["down"], 2)

    def test_corrupt_source_dropped(self) -> None:
        """
        A source whose bytes for some pieces do not match is dropped after
        the first bad piece (and says so in the log); the file arrives
        intact from the honest source.
        """
        liar = FakeSourceFactory(DATA, pieces=PIECES, corrupt={0, 1, 2, 3, 4, 5, 6, 7})
        self.net.servers[1] = liar
        honest = self.real_source(2)
        d = self.run_swarm([source("liar", 1), source("honest", 2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.contributors, (("honest", COUNT),))
        self.assertEqual(len(liar.connections), 1)
        self.assertGreaterEqual(honest.served_ranges, COUNT)
        [line] = [m for m in self.messages() if "dropping source" in m]
        self.assertIn("liar (127.0.0.1:1)", line)
        self.assertIn("does not match its SHA-256", line)
        self.assertIn(("liar (127.0.0.1:1)", "piece 0 does not match its SHA-256"), result.failures)

    def test_bad_piece_list_dropped(self) -> None:
        other = pieces_of(os.urandom(len(DATA)), PIECE)
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=other)
        self.real_source(2)
        d = self.run_swarm([source("liar", 1), source("honest", 2)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertIn("piece list is not the published one", result.failures[0][1])
        self.assertTrue(any("dropping source liar" in m for m in self.messages()))

    def test_only_bad_sources(self) -> None:
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=PIECES, corrupt=set(range(COUNT)))
        self.net.servers[2] = FakeSourceFactory(DATA, pieces=PIECES, corrupt=set(range(COUNT)))
        d = self.run_swarm([source("liar", 1), source("liar2", 2)])
        self.net.flush()
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn("could not fetch f from any source", str(f.value))
        self.assertIn("does not match its SHA-256", str(f.value))
        self.assertEqual(self.leftovers(), [])

    def liar(self, port: int, **faults: Any) -> tuple[FakeSourceFactory, str]:
        """
        A source publishing the honest SHA-256 under a fake root: a piece
        list of other bytes (with the right piece size), which its bytes
        match.
        """
        fake = pieces_of(FAKE, PIECE)
        lie = PieceList(fake.size, SHA, fake.piece_size, fake.digests)
        factory = FakeSourceFactory(FAKE, pieces=lie, **faults)
        self.net.servers[port] = factory
        return factory, lie.root

    def test_bogus_root_majority_does_not_poison(self) -> None:
        """
        Two sources publish a fake root under the honest file's SHA-256
        (the majority root): it is followed first, its whole file does not
        match the SHA-256, so its sources are dropped and the honest root
        is followed; the honest source is never blamed for the fake list.
        """
        _, fake_root = self.liar(1)
        self.liar(2)
        honest = self.real_source(3)
        srcs = [source("liar1", 1, root=fake_root), source("liar2", 2, root=fake_root), source("honest", 3)]
        self.assertEqual(plan_swarm(srcs).root, fake_root)
        d = self.run_swarm(srcs)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.verified, result.sha256), (True, SHA))
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.pieces, PIECES)
        self.assertEqual(result.contributors, (("honest", COUNT),))
        self.assertGreaterEqual(honest.served_ranges, COUNT)
        dropped = [m for m in self.messages() if "dropping source" in m]
        self.assertEqual(len(dropped), 2, dropped)
        self.assertFalse(any("honest" in m for m in dropped))
        self.assertTrue(all("does not match the published SHA-256" in m for m in dropped))
        self.assertEqual(self.download.false_roots, [fake_root])
        self.assertEqual({s.hostname for s in self.download.liars}, {"liar1", "liar2"})
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_bogus_root_sources_that_stall_give_way(self) -> None:
        """
        The fake root's sources show their list, then never send a piece:
        once they are given up, the next root is followed.
        """
        _, fake_root = self.liar(1, silent_gets=True)
        self.real_source(2)
        srcs = [source("liar1", 1, root=fake_root), source("honest", 2)]
        d = self.run_swarm(srcs, source_retries=1, ttfb_timeout=1.0, stall_timeout=5.0, prefer=fake_root)
        for _ in range(10):
            self.net.flush()
            self.clock.advance(5)
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.contributors, (("honest", COUNT),))
        self.assertTrue(any("no source of root" in m for m in self.messages()))

    def test_rootless_source_never_blamed_for_a_false_list(self) -> None:
        """
        A source that published no root (an older peer) serves byte ranges
        under whatever root is followed: its pieces fail against a false
        root's list, which sets it aside for that root only; it is used
        again under the true root, and never dropped.
        """
        _, fake_root = self.liar(1)
        self.real_source(2)
        self.real_source(3)
        srcs = [source("liar", 1, root=fake_root), source("old", 2, root=None), source("honest", 3)]
        d = self.run_swarm(srcs)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        dropped = [m for m in self.messages() if "dropping source" in m]
        self.assertEqual(len(dropped), 1, dropped)
        self.assertIn("liar", dropped[0])
        self.assertTrue(any("not using source old" in m and "proves nothing" in m for m in self.messages()))
        self.assertIn("old", dict(result.contributors))
        self.assertNotIn("old", {s.hostname for s in self.download.liars})

    def test_rootless_sources_serve_the_whole_file_once_every_root_is_false(self) -> None:
        """
        Every published root proves false: the sources that published no
        root (older peers), set aside under the false root, are then asked
        for the whole file, checked against the published SHA-256; they
        are never blamed for the false list.
        """
        _, fake_root = self.liar(1)
        self.liar(2)
        old = self.real_source(3)
        srcs = [source("liar1", 1, root=fake_root), source("liar2", 2, root=fake_root), source("old", 3, root=None)]
        d = self.run_swarm(srcs)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual((result.verified, result.sha256, result.source.hostname), (True, SHA, "old"))
        self.assertEqual(self.download.false_roots, [fake_root])
        self.assertEqual({s.hostname for s in self.download.liars}, {"liar1", "liar2"})
        self.assertFalse(any("dropping source old" in m for m in self.messages()))
        self.assertTrue(any("fetching the whole file from the sources that published no root (old" in m
                            for m in self.messages()))
        # The false root's failures are kept in the result.
        self.assertIn("liar1 (127.0.0.1:1)", dict(result.failures))
        self.assertGreaterEqual(old.served_ranges, 1)
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.active(), [])
        self.successResultOf(self.download.closed)

    def test_rootless_sources_after_the_roots_sources_are_gone(self) -> None:
        """
        The only root's sources never show their list (here: refuse every
        connection): once they are given up, the source that published no
        root serves the whole file.
        """
        self.real_source(2)
        srcs = [source("gone", 1), source("old", 2, root=None)]
        d = self.run_swarm(srcs, source_retries=1)
        for _ in range(5):
            self.net.flush()
            self.clock.advance(5)
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.source.hostname, "old")
        self.assertEqual(self.leftovers(), [])

    def test_rootless_fallback_fails_cleanly(self) -> None:
        """
        The rootless source serves other bytes too: one error naming why it
        was the last resort, nothing left behind.
        """
        _, fake_root = self.liar(1)
        self.liar(2)
        d = self.run_swarm([source("liar", 1, root=fake_root), source("old", 2, root=None)])
        for _ in range(5):
            self.net.flush()
            self.clock.advance(5)
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn("old (127.0.0.1:2)", str(f.value))
        self.assertIn(f"(after: root {fake_root[:12]} is false, and no other root is left)", str(f.value))
        self.assertEqual(self.leftovers(), [])
        self.successResultOf(self.download.closed)

    def test_stop_during_the_rootless_fallback(self) -> None:
        _, fake_root = self.liar(1)
        self.net.servers[2] = Factory.forProtocol(Silent)
        d = self.run_swarm([source("liar", 1, root=fake_root), source("old", 2, root=None)], ttfb_timeout=100.0)
        self.net.flush()
        self.assertIsNotNone(self.download.fallback)
        d.cancel()
        self.net.flush()
        self.failureResultOf(d)
        self.successResultOf(self.download.closed)
        self.assertEqual(self.leftovers(), [])
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_bogus_roots_only(self) -> None:
        """
        Only sources of a fake root: a clear error, nothing left behind.
        """
        _, fake_root = self.liar(1)
        self.liar(2)
        d = self.run_swarm([source("liar1", 1, root=fake_root), source("liar2", 2, root=fake_root)])
        self.net.flush()
        f = self.failureResultOf(d, errors.VerificationFailed)
        self.assertIn("the whole file does not match the published SHA-256", str(f.value))
        self.assertEqual(self.leftovers(), [])
        self.assertFalse((self.parts.repo / "f").exists())
        # Two fake roots: every one tried, then the error names them.
        other = pieces_of(os.urandom(len(DATA)), PIECE)
        lie2 = PieceList(other.size, SHA, PIECE, other.digests)
        self.net.servers[3] = FakeSourceFactory(FAKE, pieces=lie2)
        d = self.run_swarm([source("liar1", 1, root=fake_root), source("liar3", 3, root=lie2.root)])
        self.net.flush()
        f = self.failureResultOf(d, errors.VerificationFailed)
        self.assertIn("no published piece list gives its SHA-256", str(f.value))
        self.assertIn(fake_root[:12], str(f.value))
        self.assertIn(lie2.root[:12], str(f.value))
        self.assertEqual(self.leftovers(), [])

    def dribbler(self, port: int) -> FakeSourceFactory:
        """
        A source that shows its list, then sends one byte of each piece
        every 20 s (never long enough without data to stall).
        """
        factory = FakeSourceFactory(DATA, pieces=PIECES)
        clock = self.clock

        def get(proto, frame):
            message = wire.decode(frame)
            if message.get("action") != "get":
                return FakeSourceFactory.protocol.stringReceived(proto, frame)
            offset, length = message["offset"], message["length"]
            proto.sendString(wire.encode({"status": "success", "fname": "f", "offset": offset, "length": length,
                                          "file_size": len(DATA), "sha256": SHA}))
            body = DATA[offset : offset + length]

            def drip(i=0):
                if i < len(body) and not proto.transport.disconnecting:
                    proto.transport.write(body[i : i + 1])
                    clock.callLater(20, drip, i + 1)

            drip()

        factory.protocol = type("Dribbler", (FakeSourceFactory.protocol,), {"stringReceived": get})
        self.net.servers[port] = factory
        return factory

    def advance(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)
            self.net.flush()

    def test_dribbling_source_dropped_and_replaced(self) -> None:
        """
        One byte every 20 s never trips the stall timeout (30 s without
        data); the minimum rate (4 KiB/s after 10 s, over 20 s windows)
        closes the connection and the next source takes its place.
        """
        self.dribbler(1)
        self.real_source(2)
        d = self.run_swarm([source("drip", 1), source("good", 2)], max_sources=1, source_retries=1)
        self.net.flush()
        self.advance(29)
        self.assertNoResult(d)
        self.advance(2)
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.contributors, (("good", COUNT),))
        [(label, reason)] = result.failures
        self.assertEqual(label, "drip (127.0.0.1:1)")
        self.assertIn("the source is too slow: ", reason)
        self.assertIn("bytes/s over 20 s (minimum 4096)", reason)

    def test_paused_source_not_judged(self) -> None:
        """
        Time this peer holds a source back (its own cap) does not count
        against the source.
        """
        self.dribbler(1)
        d = self.run_swarm([source("drip", 1)], source_retries=1)
        self.net.flush()
        [connection] = [p.connection for p in self.download.peers]
        connection.reasons.add("rate")
        self.advance(100, 5)
        self.assertNoResult(d)
        self.assertFalse(connection.closed)
        connection.reasons.remove("rate")
        self.advance(40, 5)
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn("too slow", str(f.value))

    def test_single_source_checked_whole(self) -> None:
        """
        With one source, pieces are not checked one by one (there is no
        other source to turn to): the whole-file SHA-256 catches bad bytes,
        the fetch fails, and nothing is left behind or put in place.
        """
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=PIECES, corrupt={COUNT - 1})
        d = self.run_swarm([source("liar", 1)])
        self.assertFalse(self.download.check_pieces)
        self.net.flush()
        f = self.failureResultOf(d, errors.VerificationFailed)
        self.assertIn("the bytes do not match the published SHA-256", str(f.value))
        self.assertEqual(self.leftovers(), [])
        self.assertFalse((self.parts.repo / "f").exists())

    def test_source_lost_midway_others_finish(self) -> None:
        dropper = FakeSourceFactory(DATA, pieces=PIECES, drop_after=3 * PIECE + 10)
        self.net.servers[1] = dropper
        self.real_source(2)
        d = self.run_swarm([source("dropper", 1), source("good", 2)], retry_delay=5.0)
        self.net.flush()
        self.clock.advance(5)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertTrue(dropper.dropped)
        self.assertTrue(any("connection was lost" in r for _, r in result.failures))

    def test_single_source_lost_half_way_through_a_piece(self) -> None:
        """
        One source (the whole-file hash fed from the pieces' chunks as they
        stream): its connection drops half way through a piece, so the
        whole-file hash goes back to before that piece, and the piece is
        fetched again after the reconnection; the file verifies.
        """
        from twistedp2p.peer import swarm

        self.patch(swarm, "WRITE_BATCH", 64 * 1024)  # (so the piece streams in batches)
        dropper = FakeSourceFactory(DATA, pieces=PIECES, drop_after=3 * PIECE + 100_000)
        self.net.servers[1] = dropper
        d = self.run_swarm([source("dropper", 1)], retry_delay=1.0)
        self.assertFalse(self.download.check_pieces)
        for _ in range(10):
            self.net.flush()
            self.clock.advance(1)
        result = self.successResultOf(d)
        self.assertTrue(dropper.dropped)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.sha256, SHA)

    def test_busy_source_retried_later(self) -> None:
        busy = FakeSourceFactory(DATA, pieces=PIECES, busy=True)
        self.net.servers[1] = busy
        d = self.run_swarm([source("busy", 1)], busy_delays=(1.0, 2.0))
        self.net.flush()
        self.assertNoResult(d)
        self.assertEqual(len(self.net.connects), 1)
        busy.busy = False
        self.clock.advance(1.0)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(len(self.net.connects), 2)
        self.assertEqual(result.failures, (("busy (127.0.0.1:1)", "busy (full)"),))

    def test_busy_retries_bounded(self) -> None:
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=PIECES, busy=True)
        d = self.run_swarm([source("busy", 1)], busy_delays=(1.0, 1.0))
        for _ in range(5):
            self.net.flush()
            self.clock.advance(1.0)
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertEqual(len(self.net.connects), 3)
        self.assertIn("busy", str(f.value))

    def test_ttfb_timeout_then_next_source(self) -> None:
        self.net.servers[1] = lambda: Factory.forProtocol(Silent)
        self.real_source(2)
        d = self.run_swarm([source("silent", 1), source("good", 2)], ttfb_timeout=2.0)
        self.net.flush()
        self.assertNoResult(d)
        self.assertEqual(self.net.connects, [1])
        self.clock.advance(2.1)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.failures, (("silent (127.0.0.1:1)", "no data within 2 s"),))

    def test_endgame_does_not_wait_for_a_slow_source(self) -> None:
        """
        A source that answers the piece list but never sends a piece: once
        every piece is requested, the idle fast source asks for the slow
        one's pieces too, and the download completes; the slow connection
        is closed.
        """
        slow = FakeSourceFactory(DATA, pieces=PIECES)
        self.net.servers[1] = slow
        self.real_source(2)
        srcs = [source("slow", 1), source("fast", 2)]

        def stalled(message):
            return message.get("action") == "get"

        original = slow.protocol.stringReceived

        def hold_gets(proto, frame):
            from twistedp2p import wire

            if stalled(wire.decode(frame)):
                return
            original(proto, frame)

        self.patch(slow.protocol, "stringReceived", hold_gets)
        d = self.run_swarm(srcs)
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(result.contributors, (("fast", COUNT),))
        self.assertTrue(self.net.pumps[0].clientIO.disconnecting)

    def test_resume_fetches_only_missing_pieces(self) -> None:
        have = {0, 1, 2, 5, 12}
        part = bytearray(len(DATA))
        for i in have:
            offset, length = PIECES.span(i)
            part[offset : offset + length] = DATA[offset : offset + length]
        (self.parts.repo / part_name("f")).write_bytes(bytes(part))
        write_state(self.parts.repo / state_name("f"), PartState("f", PIECES.root, PIECE, len(DATA), SHA, frozenset(have)))
        src = FakeSourceFactory(DATA, pieces=PIECES)
        self.net.servers[1] = src
        d = self.run_swarm([source("a", 1)])
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertEqual(sorted(src.served), sorted(set(range(COUNT)) - have))
        self.assertEqual(result.resumed, sum(PIECES.span(i)[1] for i in have))
        self.assertEqual(self.leftovers(), [])

    def test_resume_refetches_damaged_pieces(self) -> None:
        part = bytearray(DATA)
        part[7] ^= 0xFF
        (self.parts.repo / part_name("f")).write_bytes(bytes(part))
        write_state(self.parts.repo / state_name("f"), PartState("f", PIECES.root, PIECE, len(DATA), SHA, frozenset(range(COUNT))))
        src = FakeSourceFactory(DATA, pieces=PIECES)
        self.net.servers[1] = src
        d = self.run_swarm([source("a", 1)])
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(src.served, [0])
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)
        self.assertTrue(any("no longer verify" in m for m in self.messages()))

    def test_state_of_other_root_discarded(self) -> None:
        other = pieces_of(b"x" * (3 * PIECE), PIECE)
        (self.parts.repo / part_name("f")).write_bytes(b"x" * (3 * PIECE))
        write_state(self.parts.repo / state_name("f"), PartState("f", other.root, PIECE, 3 * PIECE, other.sha256, frozenset({0, 1, 2})))
        src = FakeSourceFactory(DATA, pieces=PIECES)
        self.net.servers[1] = src
        d = self.run_swarm([source("a", 1)])
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(len(src.served), COUNT)
        self.assertTrue(any("discarding the partial download of f" in m for m in self.messages()))

    def test_stop_keeps_verified_pieces_and_resumes(self) -> None:
        src = FakeSourceFactory(DATA, pieces=PIECES, drop_after=4 * PIECE + 100)
        self.net.servers[1] = src
        d = self.run_swarm([source("a", 1)], retry_delay=10.0)
        self.net.flush()
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d)
        self.successResultOf(self.download.closed)
        state = read_state(self.parts.repo / state_name("f"))
        self.assertEqual(state.have, frozenset({0, 1, 2, 3}))
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.active(), [])
        # A second download picks up from there.
        again = FakeSourceFactory(DATA, pieces=PIECES)
        self.net.servers[1] = again
        d = self.run_swarm([source("a", 1)])
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(sorted(again.served), list(range(4, COUNT)))
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)

    def test_checkpoints_batched(self) -> None:
        src = FakeSourceFactory(DATA, pieces=PIECES, drop_after=6 * PIECE + 100)
        self.net.servers[1] = src
        d = self.run_swarm([source("a", 1)], retry_delay=10.0, checkpoint_pieces=4, checkpoint_interval=0.5)
        self.net.flush()
        # Four pieces: written at once; the other two wait for the timer.
        self.assertEqual(read_state(self.parts.repo / state_name("f")).have, frozenset({0, 1, 2, 3}))
        self.clock.advance(0.5)
        self.assertEqual(read_state(self.parts.repo / state_name("f")).have, frozenset(range(6)))
        self.assertNoResult(d)
        d.cancel()
        self.failureResultOf(d)

    def test_failure_keeps_pieces(self) -> None:
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=PIECES, drop_after=2 * PIECE + 100)
        d = self.run_swarm([source("a", 1)], source_retries=1)
        self.net.flush()
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn(f"2 of {COUNT} pieces are kept for the next fetch", str(f.value))
        self.assertEqual(self.leftovers(), [".f.part", ".f.part.json"])

    def test_failure_without_pieces_leaves_nothing(self) -> None:
        d = self.run_swarm([source("a", 1)], source_retries=1)
        self.net.flush()
        f = self.failureResultOf(d, errors.TransferFailed)
        self.assertIn("cannot connect", str(f.value))
        self.assertEqual(self.leftovers(), [])

    def test_exists_refused(self) -> None:
        (self.parts.repo / "f").write_bytes(b"mine")
        self.real_source(1)
        d = self.run_swarm([source("a", 1)])
        self.failureResultOf(d, errors.AlreadyExists)
        self.assertEqual(self.net.connects, [])

    def test_appears_during_download_is_kept(self) -> None:
        self.real_source(1)
        d = self.run_swarm([source("a", 1)])
        (self.parts.repo / "f").write_bytes(b"mine")
        self.net.flush()
        self.failureResultOf(d, errors.AlreadyExists)
        self.assertEqual((self.parts.repo / "f").read_bytes(), b"mine")

    def test_force_replaces(self) -> None:
        (self.parts.repo / "f").write_bytes(b"mine")
        self.real_source(1)
        d = self.run_swarm([source("a", 1)], force=True)
        self.net.flush()
        self.assertTrue(self.successResultOf(d).replaced)
        self.assertEqual((self.parts.repo / "f").read_bytes(), DATA)

    def test_local_write_error(self) -> None:
        (self.parts.repo / part_name("f")).mkdir()
        self.real_source(1)
        d = self.run_swarm([source("a", 1)])
        self.net.flush()
        self.failureResultOf(d, LocalWriteError)
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_empty_file(self) -> None:
        empty = pieces_of(b"")
        srcs = [SourceInfo.from_wire(entry("a", 1, root=empty.root, file_size=0, sha256=empty.sha256))]
        d = self.run_swarm(srcs)
        result = self.successResultOf(d)
        self.assertEqual((result.size, (self.parts.repo / "f").read_bytes()), (0, b""))
        self.assertEqual(self.net.connects, [])

    def test_waits_for_a_slot_extra_sources_only_when_free(self) -> None:
        self.parts.slots = Slots(2)
        held = self.parts.slots.try_acquire("down")
        for port in (1, 2, 3):
            self.real_source(port)
        d = self.run_swarm([source("a", 1), source("b", 2), source("c", 3)])
        self.net.flush()
        self.successResultOf(d)
        # One connection: the other download slot was held.
        self.assertEqual(self.parts.slots.peak["down"], 2)
        self.assertEqual(len(self.net.connects), 1)
        self.assertEqual(self.parts.slots.refused, 0)
        held.release()

    def test_disk_backpressure_pauses_sources(self) -> None:
        """
        While more than max_pending bytes wait for the writer thread, the
        connections are paused; they resume once it catches up.
        """
        from twistedp2p.peer import swarm
        from twistedp2p.peer.swarm import PieceConnection

        seen: list[tuple[str, int]] = []
        pause, resume = PieceConnection._pause_transport, PieceConnection._resume_transport

        def paused(connection):
            seen.append(("pause", self.download._writing_bytes))
            pause(connection)

        def resumed(connection):
            seen.append(("resume", self.download._writing_bytes))
            resume(connection)

        self.patch(PieceConnection, "_pause_transport", paused)
        self.patch(PieceConnection, "_resume_transport", resumed)
        threads = ManualThreads()
        self.net.servers[1] = FakeSourceFactory(DATA, pieces=PIECES)
        d = self.run_swarm([source("a", 1)], threads=threads, swarm_pending=2 * PIECE)
        threads.run_all()  # the state
        self.net.flush()  # the piece list
        threads.run_all()  # open the part
        self.net.flush()  # pieces arrive; the writer is held
        # Up to swarm_pending bytes may wait (pieces stream to the writer
        # in batches, never held whole); one batch more pauses the sources.
        self.assertEqual(seen[0][0], "pause")
        self.assertGreater(seen[0][1], 2 * PIECE)
        self.assertLessEqual(seen[0][1], 2 * PIECE + swarm.WRITE_BATCH)
        # The first bytes are being written, and hashed into the whole file
        # beside that (one job on each queue).
        self.assertEqual(len(threads.jobs), 2)
        for _ in range(50):
            threads.run_all()
            self.net.flush()
        self.successResultOf(d)
        # (iosim delivers to paused transports, so here every piece came in
        # before the writer caught up; the pause is lifted once it does.)
        self.assertFalse(self.download._disk_paused)
        self.assertEqual(self.download._writing_bytes, 0)


class StubSwarm:
    """
    What a L{PieceConnection} calls, recorded.
    """

    @staticmethod
    def assertEqual(a, b) -> None:
        assert a == b, (a, b)

    def __init__(self, bucket=None) -> None:
        self.bucket = bucket
        self.plan = plan_swarm([source("a", 1)])
        self.events: list[Any] = []

    def connected(self, connection) -> None:
        self.events.append("connected")

    def pieces_received(self, connection, pieces) -> None:
        self.events.append(("pieces", pieces.root))

    def piece_started(self, connection, request) -> bool:
        self.streams = getattr(self, "streams", {})
        self.streams[request.index] = []
        return True

    def piece_data(self, connection, request, chunks, offset) -> None:
        got = self.streams[request.index]
        self.assertEqual(offset, sum(len(c) for c in got))
        got.extend(bytes(c) for c in chunks)

    def piece_aborted(self, connection, request) -> None:
        self.events.append(("aborted", request.index))

    def piece_received(self, connection, request, written) -> None:
        self.events.append(("piece", request.index, b"".join(self.streams.pop(request.index))))

    def connection_failed(self, connection, reason) -> None:
        self.events.append(("failed", type(reason).__name__, str(reason)))


class PieceConnectionTests(SynchronousTestCase):
    def make(self, bucket=None):
        from twisted.internet.task import Clock
        from twisted.internet.testing import StringTransport

        from twistedp2p.peer.swarm import PieceConnection, _Peer

        self.clock = Clock()
        self.swarm = StubSwarm(bucket)
        peer = _Peer(source("a", 1), True)
        proto = PieceConnection(self.swarm, peer, self.clock, 30.0)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def header(self, offset, length, **kw) -> bytes:
        from .helpers import frame

        h = {"status": "success", "fname": "f", "offset": offset, "length": length,
             "file_size": len(DATA), "sha256": SHA}
        h.update(kw)
        return frame(h)

    def test_pieces_then_pipelined_gets_in_one_stream(self) -> None:
        from .helpers import all_frames, frame

        proto, t = self.make()
        proto.ask_pieces()
        proto.ask(0, 0, 10)
        proto.ask(3, 3 * PIECE, 5)
        self.assertEqual(
            [m["action"] for m in all_frames(t.value())], ["pieces", "get", "get"]
        )
        stream = (
            frame({"status": "success", "fname": "f", **PIECES.to_wire()})
            + self.header(0, 10) + DATA[:10]
            + self.header(3 * PIECE, 5) + DATA[3 * PIECE : 3 * PIECE + 5]
        )
        for b in stream:
            proto.dataReceived(bytes([b]))
        self.assertEqual(
            self.swarm.events,
            ["connected", ("pieces", PIECES.root), ("piece", 0, DATA[:10]), ("piece", 3, DATA[3 * PIECE : 3 * PIECE + 5])],
        )
        self.assertEqual(proto.inflight, type(proto.inflight)())
        self.assertFalse(t.disconnecting)

    def test_piece_streams_never_held_whole(self) -> None:
        """
        A piece's bytes go on to the download in aligned batches of about
        WRITE_BATCH as they arrive: the connection never holds a piece
        whole, whatever its size (here 3 MiB, read 64 KiB at a time).
        """
        from twistedp2p.peer.swarm import WRITE_BATCH

        proto, t = self.make()
        proto.ask(0, 0, len(DATA))
        stream = self.header(0, len(DATA)) + DATA
        batches = []
        original = self.swarm.piece_data

        def piece_data(connection, request, chunks, offset):
            batches.append((offset, sum(len(c) for c in chunks)))
            original(connection, request, chunks, offset)

        self.swarm.piece_data = piece_data
        held = 0
        for i in range(0, len(stream), 64 * 1024):
            proto.dataReceived(stream[i : i + 64 * 1024])
            held = max(held, proto._body_size)
        self.assertEqual(self.swarm.events[-1], ("piece", 0, DATA))
        self.assertLess(held, WRITE_BATCH)
        self.assertGreaterEqual(len(batches), 3)
        self.assertTrue(all(offset % 4096 == 0 for offset, _ in batches))
        self.assertEqual(sum(n for _, n in batches), len(DATA))

    def test_piece_cut_half_way_is_aborted(self) -> None:
        proto, t = self.make()
        proto.ask(0, 0, len(DATA))
        proto.dataReceived(self.header(0, len(DATA)) + DATA[: 2 * 1024 * 1024])
        proto.connectionLost(None)
        self.assertIn(("aborted", 0), self.swarm.events)

    def assertFails(self, data: bytes, kind: str, text: str) -> None:
        proto, t = self.make()
        proto.ask(0, 0, 10)
        proto.dataReceived(data)
        [event] = [e for e in self.swarm.events if e[0] == "failed"]
        self.assertEqual(event[1], kind)
        self.assertIn(text, event[2])
        self.assertTrue(t.disconnecting)

    def test_failures(self) -> None:
        from .helpers import frame

        self.assertFails(self.header(0, 11), "TransferFailed", "another range")
        self.assertFails(self.header(0, 10, sha256="c" * 64), "BadSource", "different content")
        self.assertFails(frame({"status": "busy", "message": "full"}), "Busy", "busy (full)")
        self.assertFails(frame({"status": "error", "code": "not_found", "message": "gone"}), "TransferFailed", "refused: gone")
        self.assertFails(frame(b"{nope"), "TransferFailed", "bad frame")
        self.assertFails(b"\xff\xff\xff\xff", "TransferFailed", "frame")

    def test_bad_piece_list(self) -> None:
        from .helpers import frame

        proto, t = self.make()
        proto.ask_pieces()
        other = pieces_of(b"x" * 100)
        proto.dataReceived(frame({"status": "success", **other.to_wire()}))
        self.assertEqual(self.swarm.events[-1][:2], ("failed", "BadSource"))

    def test_answer_to_nothing(self) -> None:
        proto, t = self.make()
        proto.dataReceived(self.header(0, 10))
        self.assertIn("answer to no request", self.swarm.events[-1][2])

    def test_stall_only_while_waiting(self) -> None:
        proto, t = self.make()
        proto.ask(0, 0, 10)
        self.clock.advance(29)
        proto.dataReceived(self.header(0, 10) + DATA[:10])
        # Nothing in flight: no stall timer.
        self.clock.advance(100)
        self.assertEqual(self.swarm.events[-1][0], "piece")
        proto.ask(1, PIECE, 10)
        self.clock.advance(31)
        self.assertIn("stalled", self.swarm.events[-1][2])

    def test_lost_with_pieces_pending(self) -> None:
        proto, t = self.make()
        proto.ask(0, 0, 10)
        proto.connectionLost(None)
        self.assertIn("lost with 1 piece(s) pending", self.swarm.events[-1][2])

    def test_rate_limit_pauses_and_resumes(self) -> None:
        proto, t = self.make()
        bucket = TokenBucket(1_000_000, self.clock, burst=65536)
        self.swarm.bucket = bucket
        proto.ask(0, 0, PIECE)
        proto.dataReceived(self.header(0, PIECE) + DATA[:50_000])
        self.assertEqual(t.producerState, "producing")
        proto.dataReceived(DATA[50_000:100_000])
        self.assertEqual(t.producerState, "paused")
        # In debt by about 35 kB: resumed after about 35 ms.
        self.clock.advance(0.03)
        self.assertEqual(t.producerState, "paused")
        self.clock.advance(0.01)
        self.assertEqual(t.producerState, "producing")
        # Paused connections do not stall.
        proto.dataReceived(DATA[100_000:200_000])
        self.assertEqual(t.producerState, "paused")
        self.assertNotIn("failed", [e[0] for e in self.swarm.events])
