"""
Tests for L{twistedp2p.peer.partfile}: part files, ordered thread queues,
installing a finished download.
"""

from __future__ import annotations

import errno
import os

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer import partfile
from twistedp2p.peer.partfile import (
    DIRECT_ALIGN,
    PartFile,
    SerialWorker,
    install,
    summarize_failures,
    write_all,
)

from .helpers import sync_run, temp_dir
from .test_download import ManualThreads

DATA = os.urandom(3 * DIRECT_ALIGN + 123)


class PartFileTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = temp_dir(self) / ".f.part"

    def write_pieces(self, f: PartFile) -> None:
        # An aligned bulk with an unaligned tail, in chunks that straddle
        # the boundary, then a short unaligned write at an unaligned offset.
        cut = 2 * DIRECT_ALIGN + 7
        body = DATA[: cut + 100]
        chunks = [body[:10], memoryview(body)[10:cut], body[cut:]]
        self.assertEqual(f.write(chunks, 0), len(body))
        self.assertEqual(f.write([DATA[len(body) :]], len(body)), len(DATA) - len(body))

    def test_writes_whatever_the_alignment(self) -> None:
        f = PartFile(self.path, os.O_RDWR | os.O_CREAT)
        self.write_pieces(f)
        f.sync()
        f.close()
        self.assertEqual(self.path.read_bytes(), DATA)

    def test_without_direct_writes(self) -> None:
        f = PartFile(self.path, os.O_RDWR | os.O_CREAT, direct=False)
        self.assertFalse(f.direct)
        self.write_pieces(f)
        f.close()
        self.assertEqual(self.path.read_bytes(), DATA)

    def test_refused_direct_write_falls_back(self) -> None:
        """
        A direct write refused with EINVAL (alignment rules the file system
        has and we did not guess) is written the ordinary way, and so is
        everything after it.
        """
        f = PartFile(self.path, os.O_RDWR | os.O_CREAT)
        if not f.direct:
            f.close()
            raise self.skipTest("this file system refuses O_DIRECT")
        real = os.pwrite
        calls = []

        def pwrite(fd, data, offset):
            calls.append(fd)
            if fd == f._direct:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real(fd, data, offset)

        self.patch(partfile.os, "pwrite", pwrite)
        self.write_pieces(f)
        self.assertFalse(f.direct)
        f.close()
        self.assertEqual(self.path.read_bytes(), DATA)

    def test_write_all_retries_short_writes(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT)
        self.addCleanup(os.close, fd)
        real = os.pwritev

        def short(fd, views, offset):
            return real(fd, [views[0][:3]], offset)

        self.patch(partfile.os, "pwritev", short)
        self.assertEqual(write_all(fd, [b"abcdef", b"gh", b"ij"], 0), 10)
        self.assertEqual(self.path.read_bytes(), b"abcdefghij")


class SerialWorkerTests(SynchronousTestCase):
    def test_batches_in_order(self) -> None:
        threads = ManualThreads()
        w = SerialWorker(threads)
        seen: list[int] = []
        results = [w.submit(seen.append, i) for i in range(3)]
        # The first job alone, then the two queued meanwhile in one batch.
        self.assertEqual(len(threads.jobs), 1)
        threads.run_one()
        self.assertEqual(len(threads.jobs), 1)
        threads.run_one()
        self.assertEqual(seen, [0, 1, 2])
        for d in results:
            self.assertIsNone(self.successResultOf(d))

    def test_a_failing_job_does_not_stop_the_next(self) -> None:
        w = SerialWorker(sync_run)
        failed = w.submit(lambda: 1 / 0)
        self.failureResultOf(failed, ZeroDivisionError)
        self.assertEqual(self.successResultOf(w.submit(lambda: 5)), 5)


class InstallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.dir = temp_dir(self)
        self.part = self.dir / ".f.part"
        self.final = self.dir / "f"
        self.part.write_bytes(b"new")

    def test_into_place(self) -> None:
        self.assertFalse(install(self.part, self.final, False, False))
        self.assertEqual(self.final.read_bytes(), b"new")
        self.assertFalse(self.part.exists())

    def test_never_over_a_file_without_force(self) -> None:
        self.final.write_bytes(b"mine")
        self.assertRaises(errors.AlreadyExists, install, self.part, self.final, False, True)
        self.assertEqual(self.final.read_bytes(), b"mine")
        self.assertTrue(self.part.exists())
        self.assertRaises(errors.AlreadyExists, install, self.part, self.final, False, False)
        self.assertFalse(self.part.exists())

    def test_force_replaces(self) -> None:
        self.final.write_bytes(b"mine")
        self.assertTrue(install(self.part, self.final, True, False))
        self.assertEqual(self.final.read_bytes(), b"new")

    def test_summary_keeps_the_last_reason_per_source(self) -> None:
        text = summarize_failures("f", [("a", "busy"), ("b", "refused"), ("a", "stalled")])
        self.assertEqual(text, "could not fetch f from any source (a: stalled; b: refused)")
