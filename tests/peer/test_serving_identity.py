"""
Only the very file published is served (issue 15, item 12): a published
file replaced by a hard link to another file of the same size and time, or
a path swapped for a symbolic link between the check and the open, is
answered like an unpublished name, and the entry is dropped as stale.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.library import LIBRARY_FILE, STATE_DIR, Library
from twistedp2p.peer.upload import UploadFactory

from .helpers import PeerParts, all_frames, frame, temp_dir

DATA = b"published bytes " * 1000
SECRET = b"not for sharing " * 1000


class ServingIdentityTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.parts = PeerParts(self.base)
        self.library = self.parts.library
        self.stale: list[tuple[str, str]] = []
        self.library.stale_observers.append(lambda entry, reason: self.stale.append((entry.fname, reason)))
        self.path = self.parts.repo / "sub" / "a.bin"
        self.path.parent.mkdir()
        self.path.write_bytes(DATA)
        entry = self.successResultOf(self.library.describe("sub/a.bin", "a.bin"))
        self.successResultOf(self.library.put(entry))
        self.entry = entry
        self.outside = self.base / "outside"
        self.outside.mkdir()

    def secret_like(self, name: str = "secret") -> Path:
        """
        A file outside the repository with the published file's size and
        modification time.
        """
        secret = self.outside / name
        secret.write_bytes(SECRET)
        self.assertEqual(len(SECRET), self.entry.size)
        os.utime(secret, ns=(self.entry.mtime_ns, self.entry.mtime_ns))
        return secret

    def served(self) -> Any:
        self.library.close()
        return self.successResultOf(self.library.open_for_serving("a.bin"))

    def assertRefused(self, why: str) -> None:
        self.assertIsNone(self.served())
        self.assertIsNone(self.library.get("a.bin"))
        self.assertEqual(len(self.stale), 1)
        self.assertIn(why, self.stale[0][1])

    def test_published_file_served(self) -> None:
        entry, f = self.served()
        self.assertEqual(os.pread(f.fileno(), 100, 0), DATA[:100])
        f.close()
        self.assertEqual((entry.dev, entry.ino), (os.stat(self.path).st_dev, os.stat(self.path).st_ino))

    def test_replaced_by_a_hard_link(self) -> None:
        secret = self.secret_like()
        os.link(secret, self.outside / "link")
        os.replace(self.outside / "link", self.path)
        self.assertRefused("device and inode differ")

    def test_hard_link_answered_like_an_unpublished_name(self) -> None:
        secret = self.secret_like()
        os.link(secret, self.outside / "link")
        os.replace(self.outside / "link", self.path)
        factory = UploadFactory(self.library, self.parts.slots, self.parts.transfers, self.parts.clock)
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        t = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        proto.makeConnection(t)
        proto.dataReceived(frame({"action": "get", "fname": "a.bin", "id": 1}))
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["code"]), ("error", "not_found"))
        self.assertNotIn(b"not for sharing", t.value())
        self.assertIsNone(self.library.get("a.bin"))

    def swap_after_check(self, swap: Any) -> None:
        """
        Run C{swap} between the path check and the open (as another
        process could).
        """
        check = self.library.stale_reason

        def checked_then_swapped(entry: Any) -> Any:
            reason = check(entry)
            swap()
            return reason

        self.library.stale_reason = checked_then_swapped

    def test_symlink_swapped_in_after_the_check(self) -> None:
        secret = self.secret_like()

        def swap() -> None:
            os.symlink(secret, self.outside / "link")
            os.replace(self.outside / "link", self.path)

        self.swap_after_check(swap)
        self.assertRefused("symbolic link")

    def test_directory_swapped_for_a_link_after_the_check(self) -> None:
        """
        A directory above the file swapped for a symbolic link to a
        directory holding a file of the same name, size and time: the open
        (not following only its last part) reaches it; the descriptor's
        device and inode give it away.
        """
        elsewhere = self.outside / "dir"
        elsewhere.mkdir()
        secret = self.secret_like("dir/a.bin")

        def swap() -> None:
            os.rename(self.path.parent, self.base / "moved")
            os.symlink(elsewhere, self.path.parent)

        self.swap_after_check(swap)
        self.assertRefused("device and inode differ")
        self.assertTrue(secret.exists())

    def test_fifo_swapped_in_does_not_block(self) -> None:
        def swap() -> None:
            os.unlink(self.path)
            os.mkfifo(self.path)

        self.swap_after_check(swap)
        done = threading.Event()
        timer = threading.Timer(5, lambda: done.is_set() or os.open(self.path, os.O_WRONLY | os.O_NONBLOCK))
        timer.start()
        try:
            self.assertRefused("no longer a regular file")
        finally:
            done.set()
            timer.cancel()

    def test_prune_sees_the_hard_link(self) -> None:
        secret = self.secret_like()
        os.link(secret, self.outside / "link")
        os.replace(self.outside / "link", self.path)
        dropped = self.successResultOf(self.library.prune())
        self.assertEqual([e.fname for e, _ in dropped], ["a.bin"])

    def test_identity_kept_across_restarts(self) -> None:
        saved = json.loads((self.parts.repo / STATE_DIR / LIBRARY_FILE).read_text())
        [item] = saved["files"]
        self.assertEqual((item["dev"], item["ino"]), (self.entry.dev, self.entry.ino))
        again = Library(self.parts.repo, [], clock=self.parts.clock)
        self.assertEqual(again.get("a.bin"), self.entry)

    def test_older_library_gets_the_identity_recorded(self) -> None:
        """
        An entry of an older library (no device and inode) is served after
        its full check, which records them; a hard link swapped in later
        is then refused.
        """
        library_file = self.parts.repo / STATE_DIR / LIBRARY_FILE
        saved = json.loads(library_file.read_text())
        for item in saved["files"]:
            del item["dev"], item["ino"]
        library_file.write_text(json.dumps(saved))
        self.library = Library(self.parts.repo, [], clock=self.parts.clock)
        self.library.stale_observers.append(lambda entry, reason: self.stale.append((entry.fname, reason)))
        self.assertIsNone(self.library.get("a.bin").dev)
        entry, f = self.served()
        f.close()
        self.assertEqual(entry.ino, os.stat(self.path).st_ino)
        self.assertEqual(self.library.get("a.bin").ino, entry.ino)
        secret = self.secret_like()
        os.link(secret, self.outside / "link")
        os.replace(self.outside / "link", self.path)
        self.assertRefused("device and inode differ")
