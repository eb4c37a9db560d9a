"""
A full disk during a download (issue 15, item 9): the part file and every
descriptor are released, the part file is removed, and the error is one
line, ``fetch NAME: no space left on device (...)``.

The unit tests make writes fail with C{ENOSPC} deterministically; the
last ones fill a real, small tmpfs (skipped, saying why, where one cannot
be mounted).
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from twisted.logger import LogLevel, globalLogPublisher
from twisted.internet.testing import EventLoggingObserver
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer import partfile
from twistedp2p.peer.download import Download, SourceInfo
from twistedp2p.peer.partfile import DIRECT_ALIGN, NoSpaceLeft, PartFile, write_all
from twistedp2p.peer.pieces import pieces_of
from twistedp2p.peer.swarm import SwarmDownload, plan_swarm
from twistedp2p.peer.upload import UploadFactory

from .helpers import FakeNetwork, PeerParts, temp_dir

PIECE = 256 * 1024
DATA = os.urandom(12 * PIECE + 1000)
SHA = hashlib.sha256(DATA).hexdigest()
PIECES = pieces_of(DATA, PIECE)


def open_part_files(repo: Path) -> list[str]:
    """
    What this process has open in C{repo} (its part files' descriptors).
    """
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(repo) + "/"):
            out.append(target)
    return out


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError as e:
        assert e.errno == errno.EBADF, e
        return False
    return True


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class PartFileTests(SynchronousTestCase):
    def test_full_disk_during_a_direct_write_releases_everything(self) -> None:
        """
        The direct write of the aligned bulk is short (the disk filled up)
        and the ordinary write of the rest fails: the error is raised and
        kept (as a Failure keeps it, with its traceback), and closing still
        closes both descriptors.
        """
        path = temp_dir(self) / ".f.part"
        f = PartFile(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        if not f.direct:
            f.close()
            raise self.skipTest("the temporary directory's file system refuses O_DIRECT")
        real_pwrite = os.pwrite

        def pwrite(fd: int, data: Any, offset: int) -> int:
            if fd == f.fd:
                raise enospc()
            # The direct descriptor: half the bulk fits.
            return real_pwrite(fd, memoryview(data)[: len(data) // 2], offset)

        self.patch(os, "pwrite", pwrite)
        fds = (f.fd, f._direct)
        kept = self.assertRaises(OSError, f.write, [b"x" * (4 * DIRECT_ALIGN)], 0)
        self.assertEqual(kept.errno, errno.ENOSPC)
        f.close()
        self.assertEqual([is_open(fd) for fd in fds], [False, False])
        # Closing again is no error.
        f.close()

    def test_write_all_releases_its_views(self) -> None:
        """
        A failed write leaves no view of the written buffer alive, even
        while its traceback is kept.
        """
        import mmap

        buffer = mmap.mmap(-1, DIRECT_ALIGN)

        def pwrite(fd: int, data: Any, offset: int) -> int:
            raise enospc()

        self.patch(os, "pwrite", pwrite)
        kept = self.assertRaises(OSError, write_all, 99, [buffer], 0)
        self.assertIsNotNone(kept.__traceback__)
        buffer.close()


class FullDiskDownloadTests(SynchronousTestCase):
    """
    Both kinds of download, with every write to the part file failing
    with ENOSPC after C{room} bytes.
    """

    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.parts = PeerParts(self.base / "me")
        self.net = FakeNetwork(self.parts.clock)
        src = PeerParts(self.base / "src")
        src.publish("f", DATA)
        self.assertEqual(src.library.get("f").root, PIECES.root)
        self.net.servers[1] = UploadFactory(src.library, src.slots, src.transfers, src.clock)
        self.logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)

    def fill_after(self, room: int) -> None:
        write = PartFile.write
        state = {"written": 0}

        def limited(f: PartFile, chunks: Any, offset: int) -> int:
            size = sum(len(c) for c in chunks)
            if state["written"] + size > room:
                raise enospc()
            state["written"] += size
            return write(f, chunks, offset)

        self.patch(PartFile, "write", limited)

    def entry(self, root: bool) -> dict[str, Any]:
        e = {"hostname": "src", "ip": "127.0.0.1", "port": 1, "lname": "f", "fname": "f",
             "file_size": len(DATA), "sha256": SHA, "version": 1}
        if root:
            e.update(root=PIECES.root, piece_size=PIECE)
        return e

    def check_failed(self, d: Any) -> None:
        failure = self.failureResultOf(d, NoSpaceLeft)
        text = str(failure.value)
        self.assertTrue(text.startswith("fetch f: no space left on device (writing "), text)
        self.assertIn("the partial download was removed", text)
        self.assertEqual(len(text.splitlines()), 1)
        self.assertEqual(sorted(n for n in os.listdir(self.parts.repo) if n != ".p2p"), [])
        self.assertEqual(self.flushLoggedErrors(), [])
        serious = [e for e in self.logged if e.get("log_level") in (LogLevel.error, LogLevel.critical)]
        self.assertEqual(serious, [])
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(open_part_files(self.parts.repo), [])

    def test_whole_file_download(self) -> None:
        self.fill_after(1024 * 1024)
        options = self.parts.download_options(self.net.connect, [])
        d = Download("f", [SourceInfo.from_wire(self.entry(root=False))], self.parts.repo, **options).run()
        self.net.flush()
        self.check_failed(d)

    def test_multi_source_download(self) -> None:
        """
        Some pieces were verified and written before the disk filled up:
        the part is removed all the same (and its state), not kept.
        """
        self.fill_after(4 * PIECE)
        options = self.parts.download_options(self.net.connect, [])
        swarm = SwarmDownload("f", plan_swarm([SourceInfo.from_wire(self.entry(root=True))]), self.parts.repo, **options)
        d = swarm.run()
        self.net.flush()
        self.check_failed(d)
        self.successResultOf(swarm.closed)


class FullDiskAtTheFinalFlushTests(FullDiskDownloadTests):
    """
    Some file systems report a full disk only when the written data is
    flushed: the final C{fsync} of either download fails with ENOSPC.
    """

    def fill_after(self, room: int) -> None:
        def fsync(fd: int) -> None:
            raise enospc()

        self.patch(os, "fsync", fsync)


class FullDiskAtAPeriodicFlushTests(SynchronousTestCase):
    """
    A multi-source download flushes its part file along the way
    (C{fdatasync} every C{SYNC_BYTES}); a file system that reports a full
    disk only there gives the same one line as any other full disk, with
    no traceback logged, the part removed and every descriptor closed.
    """

    setUp = FullDiskDownloadTests.setUp
    entry = FullDiskDownloadTests.entry
    check_failed = FullDiskDownloadTests.check_failed

    def test_multi_source_download(self) -> None:
        from twistedp2p.peer import swarm

        flushed: list[int] = []

        def fdatasync(fd: int) -> None:
            flushed.append(fd)
            raise enospc()

        self.patch(swarm, "SYNC_BYTES", 2 * PIECE)
        # (Only writes through the page cache are flushed along the way.)
        real = swarm.PartFile
        self.patch(swarm, "PartFile", lambda path, flags: real(path, flags, direct=False))
        self.patch(swarm.os, "fdatasync", fdatasync)
        options = self.parts.download_options(self.net.connect, [])
        download = SwarmDownload("f", plan_swarm([SourceInfo.from_wire(self.entry(root=True))]), self.parts.repo, **options)
        d = download.run()
        self.net.flush()
        self.assertEqual(len(flushed), 1)
        self.check_failed(d)
        self.successResultOf(download.closed)


def mount_tmpfs(case: SynchronousTestCase, size: str) -> Path:
    """
    A fresh tmpfs of C{size} (``1m``), unmounted after the test; skips the
    test, saying why, where it cannot be mounted.
    """
    where = Path(tempfile.mkdtemp(prefix="twistedp2p-tmpfs-"))
    case.addCleanup(os.rmdir, where)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise case.skipTest(f"cannot mount a tmpfs to fill up: {e}")
    if done.returncode != 0:
        raise case.skipTest(
            f"cannot mount a tmpfs to fill up (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}"
        )
    case.addCleanup(subprocess.run, ["umount", str(where)], timeout=10)
    return where


class RealTmpfsTests(FullDiskDownloadTests):
    """
    The same downloads into a repository on a real 1 MiB tmpfs (the file
    is 3 MiB): the writes really fail with ENOSPC, and afterwards the
    tmpfs is empty again.
    """

    def setUp(self) -> None:
        FullDiskDownloadTests.setUp(self)
        self.parts = PeerParts(mount_tmpfs(self, "1m"))

    def fill_after(self, room: int) -> None:
        # (The tmpfs fills up by itself.)
        pass

    def check_failed(self, d: Any) -> None:
        FullDiskDownloadTests.check_failed(self, d)
        # Every byte of the part file is free again.
        st = os.statvfs(self.parts.repo)
        repo_state = sum(
            p.stat().st_size for p in Path(self.parts.repo).rglob("*") if p.is_file()
        )
        self.assertLessEqual((st.f_blocks - st.f_bfree) * st.f_frsize, repo_state + 64 * 1024)
        self.assertLess(repo_state, 64 * 1024)
