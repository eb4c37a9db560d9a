"""
A source that publishes no size (a seed source) cannot fill the disk
(issue 15, item 13): such a download is bounded by a size limit
(``--max-file-size``, else 64 GiB) and by the free space of the
repository's file system, read before the first byte and again as bytes
come, leaving a margin free.  It fails with one line and its part file
removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from twisted.internet.protocol import Factory, Protocol
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.download import UNSIZED_MAX_FILE_SIZE, Download, DownloadSettings, SourceInfo
from twistedp2p.peer.partfile import NoSpaceLeft

from .helpers import FakeNetwork, PeerParts, temp_dir
from .test_nospace import mount_tmpfs

MiB = 1024 * 1024


class Zeros:
    """
    A file-like object of C{size} bytes, for a L{FileSender}.
    """

    def __init__(self, size: int) -> None:
        self.left = size

    def read(self, n: int) -> bytes:
        n = min(n, self.left)
        self.left -= n
        return b"z" * n


class Endless(Protocol):
    """
    A seed source that answers get_file with C{factory.size} bytes, pulled
    64 KiB at a time by the transport, and then closes: it never says how
    many.
    """

    def dataReceived(self, data: bytes) -> None:
        sender = FileSender()
        sender.CHUNK_SIZE = 64 * 1024
        d = sender.beginFileTransfer(Zeros(self.factory.size), self.transport)
        d.addBoth(lambda _: self.transport.loseConnection())


class UnsizedBase:
    def setUp(self) -> None:
        self.parts = PeerParts(temp_dir(self))
        self.net = FakeNetwork(self.parts.clock)
        self.part = self.parts.repo / ".f.part"
        self.seen_sizes: list[int] = []

    def serve(self, size: int) -> None:
        factory = Factory.forProtocol(Endless)
        factory.size = size
        self.net.servers[1] = factory

    def fetch(self, **settings: Any) -> Any:
        source = SourceInfo.from_wire(
            {"hostname": "seed", "ip": "127.0.0.1", "port": 1, "lname": "f", "fname": "f",
             "file_size": None, "sha256": None}
        )
        options = self.parts.download_options(self.net.connect, [], chunk_size=64 * 1024, **settings)
        d = Download("f", [source], self.parts.repo, **options).run()
        self.net.flush()
        return d

    def disk(self, capacity: int) -> Any:
        """
        A file system of C{capacity} bytes holding only the part file.
        """

        def free_space(path: Path) -> int:
            used = self.part.stat().st_size if self.part.exists() else 0
            self.seen_sizes.append(used)
            return capacity - used

        return free_space

    def assertNothingLeft(self) -> None:
        self.assertEqual(sorted(n for n in os.listdir(self.parts.repo) if n != ".p2p"), [])
        self.assertEqual(self.parts.slots.in_use, 0)


class UnsizedSourceTests(UnsizedBase, SynchronousTestCase):
    def test_default_limit(self) -> None:
        self.assertEqual(DownloadSettings().unsized_max_file_size, 64 * 1024**3)
        self.assertEqual(UNSIZED_MAX_FILE_SIZE, 64 * 1024**3)

    def test_size_limit_without_max_file_size(self) -> None:
        self.serve(5 * MiB)
        d = self.fetch(unsized_max_file_size=MiB)
        failure = self.failureResultOf(d, errors.FileTooLarge)
        self.assertIn(f"{MiB} bytes from a source that does not say how large the file is", str(failure.value))
        self.assertNothingLeft()

    def test_max_file_size_bounds_it(self) -> None:
        self.serve(5 * MiB)
        d = self.fetch(max_file_size=2 * MiB)
        failure = self.failureResultOf(d, errors.FileTooLarge)
        self.assertIn(f"--max-file-size {2 * MiB}", str(failure.value))
        self.assertNothingLeft()

    def test_stops_before_the_disk_is_full(self) -> None:
        """
        The source would send 20 MiB on a disk with 6 MiB free: the
        download stops with one line once it would leave less than the
        margin (1 MiB) free, having written at most 5 MiB.
        """
        self.serve(20 * MiB)
        d = self.fetch(free_space=self.disk(6 * MiB), disk_margin=MiB, free_check_bytes=4 * MiB)
        failure = self.failureResultOf(d, NoSpaceLeft)
        text = str(failure.value)
        self.assertTrue(text.startswith("fetch f: no space left on device (writing "), text)
        self.assertIn(f"this peer keeps {MiB} bytes free when the source does not say how large the file is", text)
        self.assertIn("the partial download was removed", text)
        self.assertLessEqual(max(self.seen_sizes), 5 * MiB)
        # Read before the first byte, and again as the bytes came.
        self.assertEqual(self.seen_sizes[0], 0)
        self.assertGreater(len(self.seen_sizes), 2)
        self.assertNothingLeft()

    def test_refused_before_connecting(self) -> None:
        self.serve(MiB)
        d = self.fetch(free_space=self.disk(MiB // 2), disk_margin=MiB)
        self.failureResultOf(d, NoSpaceLeft)
        self.assertEqual(self.net.connects, [])
        self.assertNothingLeft()

    def test_fits(self) -> None:
        self.serve(3 * MiB)
        d = self.fetch(free_space=self.disk(10 * MiB), disk_margin=MiB, free_check_bytes=MiB)
        result = self.successResultOf(d)
        self.assertEqual((result.size, result.verified), (3 * MiB, False))
        self.assertEqual((self.parts.repo / "f").stat().st_size, 3 * MiB)

    def test_sized_sources_not_checked(self) -> None:
        """
        (A source that says its size is bounded by it.)
        """
        calls = []
        self.serve(MiB)
        source = SourceInfo.from_wire(
            {"hostname": "seed", "ip": "127.0.0.1", "port": 1, "lname": "f", "fname": "f",
             "file_size": MiB, "sha256": None}
        )
        options = self.parts.download_options(self.net.connect, [], free_space=calls.append)
        d = Download("f", [source], self.parts.repo, **options).run()
        self.net.flush()
        self.successResultOf(d)
        self.assertEqual(calls, [])


class RealTmpfsUnsizedTests(UnsizedBase, SynchronousTestCase):
    """
    On a real 4 MiB tmpfs, with the real free space (C{statvfs}): a 20 MiB
    stream stops with the margin (1 MiB) still free, and leaves the tmpfs
    empty.
    """

    def setUp(self) -> None:
        UnsizedBase.setUp(self)
        self.parts = PeerParts(mount_tmpfs(self, "4m"))
        self.part = self.parts.repo / ".f.part"

    def test_real_free_space(self) -> None:
        self.serve(20 * MiB)
        d = self.fetch(disk_margin=MiB, free_check_bytes=MiB)
        failure = self.failureResultOf(d, NoSpaceLeft)
        self.assertIn("this peer keeps", str(failure.value))
        self.assertNothingLeft()
        st = os.statvfs(self.parts.repo)
        self.assertGreater(st.f_bavail * st.f_frsize, 3 * MiB)
