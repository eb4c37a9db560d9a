"""
Folders on a real reactor over 127.0.0.1: one peer publishes a folder,
another fetches it with C{fetch DIR/}; the tracker lists a folder to a seed
client; a changed published file is published again on its own.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

from twistedp2p.peer.node import FolderPublishResult

from .test_integration import IntegrationBase, SeedTrackerClient, coroutine

FILES = {
    "a.txt": b"alpha\n" * 10,
    "sub/my notes.txt": os.urandom(70_000),
    "sub/deep/big.bin": os.urandom(700_000),
    "empty": b"",
}


class FolderIntegrationTests(IntegrationBase):
    def make_docs(self, peer: Any) -> None:
        for rel, data in FILES.items():
            path = peer.library.repo / "docs" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (peer.library.repo / "docs" / ".hidden").write_bytes(b"never shared")

    @coroutine
    async def test_publish_folder_fetch_folder(self) -> None:
        await self.start_tracker()
        alice = await self.start_peer("alice")
        bob = await self.start_peer("bob")
        self.make_docs(alice)
        [published] = await alice.node.publish_any("docs")
        self.assertIsInstance(published, FolderPublishResult)
        self.assertEqual(sorted(r.fname for r in published.published), sorted(f"docs/{n}" for n in FILES))
        self.assertEqual(published.failed, ())
        # The tracker lists the folder (and only it).
        listed = await bob.node.search("docs/")
        self.assertEqual(sorted(f["fname"] for f in listed), sorted(f"docs/{n}" for n in FILES))
        self.assertEqual(await bob.node.search("doc/"), [])
        progress: list[tuple[int, Any]] = []
        result = await bob.node.fetch_folder("docs/", progress=lambda d, t: progress.append((d, t)))
        self.assertEqual(result.failed, ())
        self.assertTrue(result.verified)
        self.assertEqual(result.size, sum(len(d) for d in FILES.values()))
        for rel, data in FILES.items():
            path = bob.library.repo / "docs" / rel
            self.assertEqual(path.read_bytes(), data, rel)
            self.assertEqual(bob.library.get(f"docs/{rel}").sha256, hashlib.sha256(data).hexdigest())
        self.assertFalse((bob.library.repo / "docs" / ".hidden").exists())
        total = sum(len(d) for d in FILES.values())
        self.assertEqual(progress[-1], (total, total))
        self.assertEqual({t for _, t in progress}, {total})
        # No partial files left behind in the folders.
        leftovers = [n for _, _, names in os.walk(bob.library.repo / "docs") for n in names if n.startswith(".")]
        self.assertEqual(leftovers, [])
        # Bob now shares them too.
        [entry] = [e for e in await alice.node.search("docs/sub/deep/") if e["fname"] == "docs/sub/deep/big.bin"]
        self.assertEqual(entry["sources"], 2)

    @coroutine
    async def test_seed_client_lists_a_folder(self) -> None:
        await self.start_tracker()
        alice = await self.start_peer("alice")
        self.make_docs(alice)
        await alice.node.publish_any("docs")
        client = await connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), SeedTrackerClient()
        )
        self.addCleanup(client.transport.loseConnection)
        hello = await client.ask({"action": "hello", "hostname": "seedbox", "p2p_port": 9})
        self.assertEqual(hello["status"], "success")
        reply = await client.ask({"action": "search", "pattern": "docs/sub/"})
        self.assertEqual(reply["status"], "success")
        self.assertNotIn("id", reply)
        self.assertEqual(
            sorted(f["fname"] for f in reply["files"]), ["docs/sub/deep/big.bin", "docs/sub/my notes.txt"]
        )
        reply = await client.ask({"action": "search", "pattern": "docs"})
        self.assertEqual(len(reply["files"]), len(FILES), "a substring still matches as before")

    @coroutine
    async def test_changed_file_republished_on_its_own(self) -> None:
        await self.start_tracker()
        republished: Deferred = Deferred()

        def observe(event: Any) -> None:
            if event.kind == "published" and event.fields.get("republished") and not republished.called:
                republished.callback(event)

        alice = await self.start_peer("alice", "--watch-interval", "0.1", observe=observe)
        bob = await self.start_peer("bob")
        path = alice.library.repo / "notes.txt"
        path.write_bytes(b"first")
        [result] = await alice.node.publish_any("notes.txt")
        self.assertEqual(result.fname, "notes.txt")
        path.write_bytes(b"second version")
        event = await republished
        self.assertEqual(event.message, "republished notes.txt (changed on disk)")
        new = hashlib.sha256(b"second version").hexdigest()
        [entry] = await bob.node.search("notes.txt")
        self.assertEqual((entry["sha256"], entry["file_size"]), (new, 14))
        fetched = await bob.node.fetch("notes.txt")
        self.assertEqual((bob.library.repo / "notes.txt").read_bytes(), b"second version")
        self.assertTrue(fetched.verified)
