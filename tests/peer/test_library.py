"""
Tests for L{twistedp2p.peer.library}: path safety, names, persistence.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.library import LIBRARY_FILE, STATE_DIR, Entry, Library, sha256_file

from .helpers import temp_dir


class LibraryTestMixin:
    def setUp(self) -> None:
        self.base = temp_dir(self)
        self.repo = self.base / "repo"
        self.share = self.base / "share"
        self.outside = self.base / "outside"
        for d in (self.repo, self.share, self.outside):
            d.mkdir(parents=True)
        self.clock = Clock()
        self.clock.advance(1000)

    def library(self, roots=None) -> Library:
        return Library(self.repo, [self.share] if roots is None else roots, clock=self.clock)

    def write(self, path: Path, data: bytes = b"hello") -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


class ResolveTests(LibraryTestMixin, SynchronousTestCase):
    def test_relative_to_repo(self) -> None:
        f = self.write(self.repo / "sub" / "a.txt")
        self.assertEqual(self.library().resolve("sub/a.txt"), f.resolve())

    def test_absolute_in_share_root(self) -> None:
        f = self.write(self.share / "b.txt")
        self.assertEqual(self.library().resolve(str(f)), f.resolve())

    def test_missing(self) -> None:
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "nope.txt")
        self.assertEqual(str(e), "nope.txt: no such file")

    def test_directory(self) -> None:
        (self.repo / "dir").mkdir()
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "dir")
        self.assertEqual(str(e), "dir: is a directory, not a file")

    def test_outside(self) -> None:
        f = self.write(self.outside / "secret")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, str(f))
        self.assertIn("outside the repository", str(e))

    def test_dotdot_escape(self) -> None:
        self.write(self.outside / "secret")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "../outside/secret")
        self.assertIn("outside the repository", str(e))

    def test_dotdot_inside_is_fine(self) -> None:
        f = self.write(self.repo / "a.txt")
        (self.repo / "sub").mkdir()
        self.assertEqual(self.library().resolve("sub/../a.txt"), f.resolve())

    def test_symlink_escaping_repo(self) -> None:
        target = self.write(self.outside / "secret")
        os.symlink(target, self.repo / "link")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "link")
        self.assertIn("outside the repository", str(e))

    def test_symlinked_directory_escaping(self) -> None:
        self.write(self.outside / "secret")
        os.symlink(self.outside, self.repo / "d")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "d/secret")
        self.assertIn("outside the repository", str(e))

    def test_symlink_into_share_root(self) -> None:
        target = self.write(self.share / "ok")
        os.symlink(target, self.repo / "link")
        self.assertEqual(self.library().resolve("link"), target.resolve())

    def test_share_root_not_configured(self) -> None:
        f = self.write(self.share / "b.txt")
        e = self.assertRaises(errors.UnsafePath, self.library(roots=[]).resolve, str(f))
        self.assertIn("outside the repository", str(e))

    def test_dangling_symlink(self) -> None:
        os.symlink(self.repo / "gone", self.repo / "link")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "link")
        self.assertEqual(str(e), "link: no such file")

    def test_not_regular(self) -> None:
        os.mkfifo(self.repo / "fifo")
        e = self.assertRaises(errors.UnsafePath, self.library().resolve, "fifo")
        self.assertEqual(str(e), "fifo: is not a regular file")

    def test_hidden_state(self) -> None:
        self.write(self.repo / ".x.part")
        self.write(self.repo / STATE_DIR / LIBRARY_FILE, b'{"version": 1, "files": []}')
        for name in (".x.part", f"{STATE_DIR}/{LIBRARY_FILE}"):
            e = self.assertRaises(errors.UnsafePath, self.library().resolve, name)
            self.assertIn("peer's own state", str(e))

    def test_distinct_messages(self) -> None:
        (self.repo / "dir").mkdir()
        f = self.write(self.outside / "x")
        lib = self.library()
        texts = set()
        for name in ("missing", "dir", str(f)):
            texts.add(str(self.assertRaises(errors.UnsafePath, lib.resolve, name)).split(": ", 1)[1])
        self.assertEqual(len(texts), 3)

    def test_empty(self) -> None:
        self.assertRaises(errors.UnsafePath, self.library().resolve, "")


class DescribeTests(LibraryTestMixin, SynchronousTestCase):
    def test_entry(self) -> None:
        data = b"x" * (3 * 1024 * 1024 + 5)
        f = self.write(self.repo / "big.bin", data)
        entry = self.successResultOf(self.library().describe("big.bin", "big"))
        self.assertEqual(entry.fname, "big")
        self.assertEqual(entry.path, str(f.resolve()))
        self.assertEqual(entry.size, len(data))
        self.assertEqual(entry.sha256, hashlib.sha256(data).hexdigest())
        self.assertEqual(entry.mtime_ns, f.stat().st_mtime_ns)
        self.assertEqual(entry.published_at, 1000)

    def test_bad_names(self) -> None:
        self.write(self.repo / "a")
        for bad in ("", ".hidden", "/a", "a/", "a/.b", "a\\b", "x..y", " pad", "tab\tname", "é" * 200):
            f = self.failureResultOf(self.library().describe("a", bad), errors.BadName)
            self.assertIn("shared name", str(f.value))

    def test_unsafe_path(self) -> None:
        self.failureResultOf(self.library().describe("../x", "x"), errors.UnsafePath)

    def test_runs_in_thread(self) -> None:
        """
        Hashing goes through run_in_thread.
        """
        self.write(self.repo / "a")
        calls = []

        def run(f, *a, **kw):
            calls.append(f)
            from twisted.internet.defer import maybeDeferred

            return maybeDeferred(f, *a, **kw)

        lib = Library(self.repo, [], run, self.clock)
        self.successResultOf(lib.describe("a", "a"))
        self.assertEqual(len(calls), 1)

    def test_sha256_file(self) -> None:
        f = self.write(self.repo / "a", b"abc" * 1000)
        self.assertEqual(sha256_file(f, chunk=7), (3000, hashlib.sha256(b"abc" * 1000).hexdigest()))


class PersistenceTests(LibraryTestMixin, SynchronousTestCase):
    def test_survives_restart(self) -> None:
        self.write(self.repo / "a", b"one")
        self.write(self.share / "b", b"two")
        lib = self.library()
        for lname, fname in (("a", "A"), (str(self.share / "b"), "B")):
            self.successResultOf(lib.put(self.successResultOf(lib.describe(lname, fname))))
        again = self.library()
        self.assertEqual([e.fname for e in again.entries()], ["A", "B"])
        self.assertEqual(again.get("A"), lib.get("A"))
        self.assertEqual(again.get("B"), lib.get("B"))

    def test_remove_persists(self) -> None:
        self.write(self.repo / "a")
        lib = self.library()
        entry = self.successResultOf(lib.describe("a", "A"))
        self.successResultOf(lib.put(entry))
        self.assertEqual(self.successResultOf(lib.remove("A")), entry)
        self.assertIsNone(self.successResultOf(lib.remove("A")))
        self.assertEqual(len(self.library()), 0)

    def test_atomic_no_temp_files(self) -> None:
        self.write(self.repo / "a")
        lib = self.library()
        entry = self.successResultOf(lib.describe("a", "A"))
        self.successResultOf(lib.put(entry))
        self.assertEqual(sorted(os.listdir(self.repo / STATE_DIR)), [LIBRARY_FILE, "pieces"])
        self.assertEqual(os.listdir(self.repo / STATE_DIR / "pieces"), [entry.root])
        data = json.loads((self.repo / STATE_DIR / LIBRARY_FILE).read_text())
        self.assertEqual(data["version"], 1)
        self.assertEqual(data["files"][0]["fname"], "A")

    def test_failed_write_keeps_old_file(self) -> None:
        """
        A write that fails half way leaves the previous library intact and
        no temporary file behind.
        """
        self.write(self.repo / "a")
        lib = self.library()
        self.successResultOf(lib.put(self.successResultOf(lib.describe("a", "A"))))
        before = (self.repo / STATE_DIR / LIBRARY_FILE).read_bytes()
        original = os.replace

        def broken(*a, **kw):
            raise OSError(28, "No space left on device")

        self.patch(os, "replace", broken)
        self.write(self.repo / "b")
        self.failureResultOf(lib.put(self.successResultOf(lib.describe("b", "B"))), OSError)
        self.patch(os, "replace", original)
        self.assertEqual((self.repo / STATE_DIR / LIBRARY_FILE).read_bytes(), before)
        self.assertEqual(sorted(os.listdir(self.repo / STATE_DIR)), [LIBRARY_FILE, "pieces"])
        self.assertEqual(len(os.listdir(self.repo / STATE_DIR / "pieces")), 1)

    def test_corrupt_file_moved_aside(self) -> None:
        state = self.repo / STATE_DIR
        state.mkdir()
        (state / LIBRARY_FILE).write_text("{not json")
        lib = self.library()
        self.assertEqual(len(lib), 0)
        names = os.listdir(state)
        self.assertEqual(len(names), 1)
        self.assertTrue(names[0].startswith(LIBRARY_FILE + ".corrupt-"))
        self.assertEqual((state / names[0]).read_text(), "{not json")
        self.flushLoggedErrors()

    def test_bad_entry_skipped(self) -> None:
        state = self.repo / STATE_DIR
        state.mkdir()
        good = Entry("ok", str(self.repo / "ok"), 1, 1.0, "a" * 64, 2.0, 1_000_000_000)
        (state / LIBRARY_FILE).write_text(
            json.dumps({"version": 1, "files": [good.to_json(), {"fname": "../x"}]})
        )
        lib = self.library()
        self.assertEqual(lib.entries(), [good])


class ServingTests(LibraryTestMixin, SynchronousTestCase):
    def published(self, name: str = "a", data: bytes = b"data") -> tuple[Library, Entry, Path]:
        f = self.write(self.repo / name, data)
        lib = self.library()
        entry = self.successResultOf(lib.describe(name, name))
        self.successResultOf(lib.put(entry))
        self.stale = []
        lib.stale_observers.append(lambda e, reason: self.stale.append((e.fname, reason)))
        return lib, entry, f

    def test_unchanged(self) -> None:
        lib, entry, _ = self.published()
        self.assertEqual(self.successResultOf(lib.check_serving("a")), entry)
        entry2, f = self.successResultOf(lib.open_for_serving("a"))
        self.assertEqual(os.pread(f.fileno(), 100, 0), b"data")
        f.close()
        self.assertEqual(self.stale, [])

    def test_open_files_bounded(self) -> None:
        """
        At most MAX_SERVED_OPEN published files stay open for serving; the
        one checked longest ago is closed first (once no upload uses it).
        """
        from twistedp2p.peer import library

        self.patch(library, "MAX_SERVED_OPEN", 2)
        lib, _, _ = self.published()
        for name in ("b", "c"):
            (lib.repo / name).write_bytes(name.encode())
            lib.put(self.successResultOf(lib.describe(name, name)))
        leases = [self.successResultOf(lib.open_for_serving(n))[1] for n in ("a", "b", "c")]
        self.assertEqual(sorted(lib._serving), ["b", "c"])
        first = leases[0].fileno()
        os.fstat(first)
        leases[0].close()
        self.assertRaises(OSError, os.fstat, first)
        for lease in leases[1:]:
            lease.close()

    def test_idle_file_closed_when_window_ends(self) -> None:
        """
        A published file kept open for serving is closed when its re-check
        window ends, once no upload uses it: an idle peer holds no
        descriptor of its published files.
        """
        from twistedp2p.peer.library import SERVING_RECHECK

        lib, _, _ = self.published()
        _, lease = self.successResultOf(lib.open_for_serving("a"))
        fd = lease.fileno()
        lease.close()
        self.clock.advance(SERVING_RECHECK / 2)
        self.assertEqual(sorted(lib._serving), ["a"])
        os.fstat(fd)
        self.clock.advance(SERVING_RECHECK / 2)
        self.assertEqual(lib._serving, {})
        self.assertRaises(OSError, os.fstat, fd)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_serving_now(self) -> None:
        """
        L{Library.serving_now} answers at once only inside a file's serving
        window, for the file as published: before the first full check,
        after the window, or once the file changed, it answers None (ask
        L{Library.open_for_serving}).
        """
        from twistedp2p.peer.library import SERVING_RECHECK

        lib, _, f = self.published()
        self.assertIsNone(lib.serving_now("a"))
        self.assertIsNone(lib.serving_now("unknown"))
        _, first = self.successResultOf(lib.open_for_serving("a"))
        entry, lease = lib.serving_now("a")
        self.assertIs(entry, lib.get("a"))
        self.assertEqual(os.pread(lease.fileno(), 4, 0), b"data")
        lease.close()
        first.close()
        self.clock.advance(SERVING_RECHECK)
        self.assertIsNone(lib.serving_now("a"))
        _, again = self.successResultOf(lib.open_for_serving("a"))
        again.close()
        f.write_bytes(b"other!")
        self.assertIsNone(lib.serving_now("a"))

    def test_close_lets_go_of_open_files(self) -> None:
        """
        L{Library.close} (at shutdown) closes the files kept open for
        serving and leaves no delayed call behind; an upload still reading
        keeps its descriptor until it is done.
        """
        lib, _, _ = self.published()
        _, lease = self.successResultOf(lib.open_for_serving("a"))
        fd = lease.fileno()
        lib.close()
        self.assertEqual(lib._serving, {})
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(os.pread(fd, 4, 0), b"data")
        lease.close()
        self.assertRaises(OSError, os.fstat, fd)

    def test_unknown(self) -> None:
        lib, _, _ = self.published()
        self.assertIsNone(self.successResultOf(lib.check_serving("b")))

    def test_modified(self) -> None:
        lib, _, f = self.published()
        f.write_bytes(b"other!")
        self.assertIsNone(self.successResultOf(lib.check_serving("a")))
        self.assertEqual(self.stale, [("a", "the file changed since it was published")])
        self.assertNotIn("a", lib)
        self.assertNotIn("a", self.library())

    def test_touched(self) -> None:
        lib, entry, f = self.published()
        os.utime(f, ns=(entry.mtime_ns + 10**9, entry.mtime_ns + 10**9))
        self.assertIsNone(self.successResultOf(lib.check_serving("a")))
        self.assertEqual(len(self.stale), 1)

    def test_deleted(self) -> None:
        lib, _, f = self.published()
        f.unlink()
        self.assertIsNone(self.successResultOf(lib.check_serving("a")))
        self.assertEqual(self.stale, [("a", "the file is gone")])

    def test_replaced_by_symlink_outside(self) -> None:
        lib, _, f = self.published()
        target = self.write(self.outside / "a", b"data")
        f.unlink()
        os.symlink(target, f)
        self.assertIsNone(self.successResultOf(lib.check_serving("a")))
        self.assertEqual(self.stale, [("a", "the path now resolves elsewhere")])

    def test_prune(self) -> None:
        lib, _, f = self.published()
        self.write(self.repo / "b")
        self.successResultOf(lib.put(self.successResultOf(lib.describe("b", "b"))))
        f.unlink()
        dropped = self.successResultOf(lib.prune())
        self.assertEqual([(e.fname, r) for e, r in dropped], [("a", "the file is gone")])
        self.assertEqual([e.fname for e in lib.entries()], ["b"])

    def test_describe_known(self) -> None:
        f = self.write(self.repo / "a", b"xyz")
        lib = self.library()
        entry = self.successResultOf(lib.describe_known(f, "a", 3, "b" * 64))
        self.assertEqual((entry.size, entry.sha256, entry.path), (3, "b" * 64, str(f.resolve())))
        self.failureResultOf(lib.describe_known(f, "a", 4, "b" * 64), errors.P2PError)
