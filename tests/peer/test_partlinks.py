"""
Part files are never opened through what someone planted at their name
(issue 15, item 11): a symbolic link, a hard link, a FIFO at
``REPO/.FNAME.part`` is replaced, never followed or written to, and only
the regular file a download wrote is moved into place.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.download import Download, SourceInfo
from twistedp2p.peer.partfile import LocalWriteError, PartFile, install, part_name
from twistedp2p.peer.pieces import pieces_of
from twistedp2p.peer.swarm import SwarmDownload, plan_swarm
from twistedp2p.peer.upload import UploadFactory

from .helpers import FakeNetwork, PeerParts, temp_dir

PIECE = 256 * 1024
DATA = os.urandom(3 * PIECE + 100)
SHA = hashlib.sha256(DATA).hexdigest()
PIECES = pieces_of(DATA, PIECE)
VICTIM = b"the user's precious file, outside the repository\n"


class PlantedPartTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.parts = PeerParts(self.base / "me")
        self.victim = self.base / "victim.txt"
        self.victim.write_bytes(VICTIM)
        self.part = self.parts.repo / part_name("f")
        self.net = FakeNetwork(self.parts.clock)
        src = PeerParts(self.base / "src")
        src.publish("f", DATA)
        self.net.servers[1] = UploadFactory(src.library, src.slots, src.transfers, src.clock)

    def source(self, root: bool) -> SourceInfo:
        e = {"hostname": "src", "ip": "127.0.0.1", "port": 1, "lname": "f", "fname": "f",
             "file_size": len(DATA), "sha256": SHA, "version": 1}
        if root:
            e.update(root=PIECES.root, piece_size=PIECE)
        return SourceInfo.from_wire(e)

    def fetch(self, root: bool) -> Any:
        options = self.parts.download_options(self.net.connect, [])
        if root:
            d = SwarmDownload("f", plan_swarm([self.source(True)]), self.parts.repo, **options).run()
        else:
            d = Download("f", [self.source(False)], self.parts.repo, **options).run()
        self.net.flush()
        return self.successResultOf(d)

    def assertVictimIntact(self) -> None:
        self.assertEqual(self.victim.read_bytes(), VICTIM)
        self.assertEqual(os.stat(self.victim).st_nlink, 1)

    def assertFetched(self) -> None:
        final = self.parts.repo / "f"
        self.assertEqual(final.read_bytes(), DATA)
        self.assertTrue(stat.S_ISREG(os.lstat(final).st_mode))
        self.assertFalse(os.path.lexists(self.part))

    def test_symlink_whole_file(self) -> None:
        os.symlink(self.victim, self.part)
        self.fetch(root=False)
        self.assertVictimIntact()
        self.assertFetched()

    def test_symlink_multi_source(self) -> None:
        """
        The multi-source download opens its part without truncating (to
        resume): a symbolic link there is still not followed.
        """
        os.symlink(self.victim, self.part)
        self.fetch(root=True)
        self.assertVictimIntact()
        self.assertFetched()

    def test_dangling_symlink_multi_source(self) -> None:
        target = self.base / "created-through-the-link"
        os.symlink(target, self.part)
        self.fetch(root=True)
        self.assertFalse(os.path.lexists(target))
        self.assertFetched()

    def test_hard_link_multi_source(self) -> None:
        os.link(self.victim, self.part)
        self.fetch(root=True)
        self.assertEqual(self.victim.read_bytes(), VICTIM)
        self.assertFetched()

    def test_fifo_multi_source(self) -> None:
        os.mkfifo(self.part)
        self.fetch(root=True)
        self.assertFetched()

    def test_part_file_open(self) -> None:
        os.symlink(self.victim, self.part)
        f = PartFile(self.part, os.O_RDWR | os.O_CREAT)
        try:
            f.write([b"x" * 10], 0)
        finally:
            f.close()
        self.assertVictimIntact()
        self.assertEqual(self.part.read_bytes(), b"x" * 10)
        self.assertFalse(os.path.islink(self.part))

    def test_install_only_a_regular_file(self) -> None:
        """
        A part swapped for a symbolic link once written is not moved (nor
        linked) into place.
        """
        final = self.parts.repo / "f"
        os.symlink(self.victim, self.part)
        self.assertRaises(LocalWriteError, install, self.part, final, False, False)
        self.assertFalse(os.path.lexists(final))
        self.assertFalse(os.path.lexists(self.part))
        self.assertVictimIntact()

    def test_install_only_the_file_written(self) -> None:
        final = self.parts.repo / "f"
        f = PartFile(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        identity = f.identity
        f.close()
        # (Moved aside, not removed: its inode number is not reused.)
        os.rename(self.part, self.base / "aside")
        Path(self.part).write_bytes(b"another file")
        self.assertRaises(LocalWriteError, install, self.part, final, False, False, identity)
        self.assertFalse(os.path.lexists(final))
