"""
Multi-source downloads between real peers in this process, on a real
reactor over 127.0.0.1: several sources at once under upload caps, the
download cap's accuracy, a lying source, a source that goes away, and a
downloader stopped and started again.

Timing bounds here are loose (both sides of each comparison are measured
in the same test) and the transfers short (a few seconds).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import formatEvent, globalLogPublisher

from twistedp2p import errors
from twistedp2p.peer.pieces import pieces_of
from twistedp2p.peer.swarm import read_state, state_name

from .doubles import FakeSourceFactory
from .test_integration import IntegrationBase, coroutine

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class SwarmIntegrationTests(IntegrationBase):
    async def sources(self, data: bytes, n: int, *extra: str, prefix: str = "s") -> list[Any]:
        peers = []
        for i in range(n):
            peer = await self.start_peer(f"{prefix}{i + 1}", *extra)
            (peer.library.repo / "f.bin").write_bytes(data)
            await peer.node.publish("f.bin", "f")
            peers.append(peer)
        return peers

    def when_progress(self, at_least: int) -> tuple[Any, Deferred]:
        reached: Deferred = Deferred()

        def progress(done: int, total: Any) -> None:
            if done >= at_least and not reached.called:
                reached.callback(done)

        return progress, reached

    @coroutine
    async def test_four_capped_sources_beat_one(self) -> None:
        """
        Four sources each capped at 4 MiB/s: a fetch uses all four and takes
        well under half the time of a fetch from one of them, which itself
        runs at the cap (within 5%).
        """
        data = os.urandom(12 * MiB)
        await self.start_tracker()
        sources = await self.sources(data, 4, "--upload-rate", "4M")
        one = await self.start_peer("one")
        started = reactor.seconds()
        result = await one.node.fetch("f", source="s1")
        single = reactor.seconds() - started
        self.assertEqual(result.sha256, sha(data))
        rate = len(data) / single
        self.assertLess(abs(rate - 4 * MiB) / (4 * MiB), 0.05, f"{rate / MiB:.2f} MiB/s")
        await one.node.unpublish("f")

        many = await self.start_peer("many")
        started = reactor.seconds()
        result = await many.node.fetch("f")
        parallel = reactor.seconds() - started
        self.assertEqual((many.library.repo / "f").read_bytes(), data)
        self.assertEqual(sorted(h for h, _ in result.contributors), ["s1", "s2", "s3", "s4"])
        self.assertLess(parallel, single / 2, f"4 sources {parallel:.2f} s, 1 source {single:.2f} s")
        self.assertGreaterEqual(sum(s.upload_factory.served_ranges for s in sources), result.piece_count * 2)

    @coroutine
    async def test_download_cap_holds_total(self) -> None:
        """
        --download-rate caps the sum over every source, within 5%.
        """
        data = os.urandom(6 * MiB)
        await self.start_tracker()
        await self.sources(data, 2)
        me = await self.start_peer("me", "--download-rate", "2M")
        started = reactor.seconds()
        result = await me.node.fetch("f")
        elapsed = reactor.seconds() - started
        self.assertEqual(len(result.contributors), 2)
        rate = len(data) / elapsed
        self.assertLess(abs(rate - 2 * MiB) / (2 * MiB), 0.05, f"{rate / MiB:.3f} MiB/s")
        self.assertGreaterEqual(me.download_bucket.taken, len(data))

    @coroutine
    async def test_lying_source_dropped(self) -> None:
        data = os.urandom(3 * MiB)
        pieces = pieces_of(data)
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        await self.start_tracker()
        # every piece it sends is bad, so whichever it is asked for first
        # gets it dropped, however the two sources race
        liar = FakeSourceFactory(data, pieces=pieces, corrupt=set(range(pieces.count)))
        port = await self.listen(liar)
        await self.register_native(
            "liar", port, file_size=len(data), sha256=pieces.sha256, root=pieces.root, piece_size=pieces.piece_size
        )
        # the honest source is rate-limited, so that it cannot have sent
        # every piece before the liar's first one arrives (on a loaded
        # machine it could, and the liar would never be checked)
        await self.sources(data, 1, "--upload-rate", "2M")
        me = await self.start_peer("me")
        result = await me.node.fetch("f")
        self.assertEqual((me.library.repo / "f").read_bytes(), data)
        self.assertEqual([host for host, _ in result.contributors], ["s1"])
        self.assertTrue(any(reason.endswith("does not match its SHA-256") for _, reason in result.failures))
        lines = [formatEvent(e) for e in logged if "dropping source" in formatEvent(e)]
        self.assertEqual(len(lines), 1)
        self.assertIn(f"liar (127.0.0.1:{port})", lines[0])
        self.assertEqual(len(liar.connections), 1)

    @coroutine
    async def test_source_stops_mid_transfer(self) -> None:
        data = os.urandom(4 * MiB)
        await self.start_tracker()
        a, b = await self.sources(data, 2, "--upload-rate", "2M")
        me = await self.start_peer("me")
        progress, reached = self.when_progress(MiB)
        fetching = me.node.fetch("f", progress=progress)
        await reached
        await a.stopService()
        result = await fetching
        self.assertEqual((me.library.repo / "f").read_bytes(), data)
        self.assertTrue(any(label.startswith("s1 ") for label, _ in result.failures))
        self.assertIn("s2", [h for h, _ in result.contributors])

    @coroutine
    async def test_stopped_downloader_resumes_at_start(self) -> None:
        """
        A downloader stopped mid-transfer records its verified pieces; when
        it starts again it resumes on its own and fetches only the rest.
        """
        data = os.urandom(6 * MiB)
        count = pieces_of(data).count
        await self.start_tracker()
        sources = await self.sources(data, 2)
        me = await self.start_peer("me", "--download-rate", "4M")
        progress, reached = self.when_progress(2 * MiB)
        fetching = me.node.fetch("f", progress=progress)
        fetching.addErrback(lambda f: f.trap(Exception))
        await reached
        await me.stopService()
        state = read_state(me.library.repo / state_name("f"))
        self.assertGreaterEqual(len(state.have), 2 * MiB // pieces_of(data).piece_size)
        served_before = sum(s.upload_factory.served_ranges for s in sources)

        events: list[Any] = []
        done: Deferred = Deferred()

        def observe(event: Any) -> None:
            events.append(event)
            if event.kind in ("fetched", "resume_failed") and not done.called:
                done.callback(event)

        again = await self.start_peer("me", observe=observe)
        event = await done
        self.assertEqual(event.kind, "fetched")
        self.assertTrue(event.fields["background"])
        self.assertEqual((again.library.repo / "f").read_bytes(), data)
        self.assertEqual(event.fields["resumed"], sum(pieces_of(data).span(i)[1] for i in state.have))
        self.assertEqual([e.kind for e in events if e.kind == "resuming"], ["resuming"])
        served_after = sum(s.upload_factory.served_ranges for s in sources) - served_before
        self.assertGreater(served_after, 0)
        self.assertLess(served_after, count)
        self.assertFalse((again.library.repo / state_name("f")).exists())
        # It shares the file now, with its piece list.
        self.assertEqual(again.library.get("f").root, pieces_of(data).root)

    @coroutine
    async def test_max_file_size(self) -> None:
        await self.start_tracker()
        small = await self.start_peer("small", "--max-file-size", "1K")
        (small.library.repo / "big").write_bytes(b"x" * 1025)
        with self.assertRaises(errors.FileTooLarge) as raised:
            await small.node.publish("big", "big")
        self.assertIn("--max-file-size 1024", str(raised.exception))
        await self.sources(b"y" * 2048, 1)
        with self.assertRaises(errors.FileTooLarge):
            await small.node.fetch("f")
        self.assertFalse((small.library.repo / "f").exists())
