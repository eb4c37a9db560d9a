"""
Folder sharing (C{publish DIR}, C{fetch DIR/}), C{publish FILE} and
C{publish GLOB}, and published files noticed changing on disk: the library
on its own, then a L{PeerNode} against a fake tracker link, on a Clock with
a synchronous C{run_in_thread}.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors, wire
from twistedp2p.peer.library import Library
from twistedp2p.peer.node import FolderFetchResult, FolderPublishResult, PublishFailed, PublishResult
from twistedp2p.peer.partfile import part_name
from twistedp2p.peer.slots import DOWN
from twistedp2p.peer.shell import format_fetch_folder, format_publish_any
from twistedp2p.peer.swarm import find_states, state_name
from twistedp2p.peer.upload import UploadFactory
from twistedp2p.tracker.model import pattern_matcher

from .helpers import FakeNetwork, PeerParts, sync_run, temp_dir
from .test_node import FakeLink, node_for


def write(path: Path, data: bytes = b"content") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NamesTests(SynchronousTestCase):
    """
    Shared names with folders, and where their partial downloads live.
    """

    def test_part_files_stay_in_the_folder(self) -> None:
        self.assertEqual(part_name("a.txt"), ".a.txt.part")
        self.assertEqual(part_name("docs/sub/a b.txt"), "docs/sub/.a b.txt.part")
        self.assertEqual(state_name("docs/a.txt"), "docs/.a.txt.part.json")
        long = "docs/" + "x" * 250
        self.assertIsNone(wire.fname_problem(long))
        hidden = part_name(long)
        self.assertTrue(hidden.startswith("docs/."), hidden)
        self.assertLessEqual(len(hidden.split("/")[-1].encode()), 255)

    def test_folder_pattern(self) -> None:
        matches = pattern_matcher("docs/")
        self.assertTrue(matches("docs/a.txt"))
        self.assertTrue(matches("docs/sub/b.txt"))
        self.assertFalse(matches("Docs/a.txt"), "a folder prefix is exact")
        self.assertFalse(matches("mydocs/a.txt"))
        self.assertFalse(matches("docs"))
        # Glob characters in a folder name are themselves.
        self.assertTrue(pattern_matcher("a*b/")("a*b/c"))
        self.assertFalse(pattern_matcher("a*b/")("axb/c"))


class LibraryFolderTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = temp_dir(self)
        self.repo = base / "repo"
        self.share = base / "share"
        self.outside = base / "outside"
        for d in (self.repo, self.share, self.outside):
            d.mkdir()
        self.library = Library(self.repo, [self.share], sync_run)

    def test_scan_nested(self) -> None:
        write(self.repo / "docs" / "a.txt")
        write(self.repo / "docs" / "sub" / "my notes.txt")
        write(self.repo / "docs" / ".hidden")
        write(self.repo / "docs" / ".cache" / "x")
        write(self.repo / "docs" / ".big.bin.part")
        write(self.repo / "docs" / "sub" / "deeper" / "c.bin")
        scan = self.library.scan_folder("docs")
        self.assertEqual(scan.prefix, "docs")
        self.assertEqual(
            [f for f, _ in scan.files], ["docs/a.txt", "docs/sub/deeper/c.bin", "docs/sub/my notes.txt"]
        )
        self.assertEqual(scan.problems, [])
        self.assertEqual(dict(scan.files)["docs/a.txt"], str((self.repo / "docs" / "a.txt").resolve()))

    def test_scan_links(self) -> None:
        write(self.repo / "docs" / "a.txt")
        write(self.outside / "secret")
        write(self.share / "shared.txt")
        os.symlink(self.outside / "secret", self.repo / "docs" / "escape")
        os.symlink(self.share / "shared.txt", self.repo / "docs" / "inside")
        os.symlink(self.outside, self.repo / "docs" / "dirlink")
        os.symlink(self.repo / ".p2p", self.repo / "docs" / "state")
        scan = self.library.scan_folder("docs")
        names = dict(scan.files)
        self.assertEqual(sorted(names), ["docs/a.txt", "docs/inside"])
        self.assertEqual(names["docs/inside"], str((self.share / "shared.txt").resolve()))
        problems = dict(scan.problems)
        self.assertIn("outside every share root", problems["docs/escape"])
        self.assertIn("not followed", problems["docs/dirlink"])
        self.assertIn("docs/state", problems)

    def test_scan_refuses(self) -> None:
        write(self.outside / "x" / "f")
        write(self.repo / "file")
        self.assertRaises(errors.UnsafePath, self.library.scan_folder, str(self.outside / "x"))
        self.assertRaises(errors.UnsafePath, self.library.scan_folder, "../outside/x")
        self.assertRaises(errors.UnsafePath, self.library.scan_folder, "nowhere")
        self.assertRaises(errors.UnsafePath, self.library.scan_folder, "file")
        (self.repo / ".p2p").mkdir(exist_ok=True)
        self.assertRaises(errors.UnsafePath, self.library.scan_folder, ".p2p")
        write(self.repo / "ok" / "f")
        self.assertRaises(errors.BadName, self.library.scan_folder, "ok", "bad/../name")

    def test_scan_with_prefix_and_share_root(self) -> None:
        write(self.share / "photos" / "2025" / "a.jpg")
        scan = self.library.scan_folder(str(self.share / "photos"))
        self.assertEqual([f for f, _ in scan.files], ["photos/2025/a.jpg"])
        scan = self.library.scan_folder(str(self.share / "photos"), "holiday")
        self.assertEqual([f for f, _ in scan.files], ["holiday/2025/a.jpg"])

    def test_name_for(self) -> None:
        write(self.repo / "docs" / "a.txt")
        write(self.share / "b.txt")
        self.assertEqual(self.library.name_for("docs/a.txt"), "docs/a.txt")
        self.assertEqual(self.library.name_for("docs/../docs/a.txt"), "docs/a.txt")
        self.assertEqual(self.library.name_for(str(self.share / "b.txt")), "b.txt")
        self.assertEqual(self.library.name_for(str(self.share)), "share")
        self.assertRaises(errors.UnsafePath, self.library.name_for, str(self.outside / "x"))
        self.assertRaises(errors.BadName, self.library.name_for, ".p2p/library.json")

    def test_expand(self) -> None:
        write(self.repo / "a.pdf")
        write(self.repo / "b.pdf")
        write(self.repo / ".c.pdf")
        write(self.repo / "d.txt")
        write(self.share / "e.pdf")
        found = self.library.expand("*.pdf")
        self.assertEqual(
            found, sorted([str(self.repo / "a.pdf"), str(self.repo / "b.pdf"), str(self.share.resolve() / "e.pdf")])
        )
        self.assertEqual(self.library.expand(str(self.repo / "*.txt")), [str(self.repo / "d.txt")])
        self.assertEqual(self.library.expand("*.none"), [])

    def test_make_folders(self) -> None:
        self.library.make_folders("docs/sub/a.txt")
        self.assertTrue((self.repo / "docs" / "sub").is_dir())
        self.library.make_folders("plain")
        os.symlink(self.outside, self.repo / "escape")
        self.assertRaises(errors.UnsafePath, self.library.make_folders, "escape/new/a.txt")
        self.assertFalse((self.outside / "new").exists(), "nothing is created through the link")
        write(self.repo / "afile")
        self.assertRaises(errors.UnsafePath, self.library.make_folders, "afile/x")

    def test_find_states_in_folders(self) -> None:
        write(self.repo / "docs" / ".a.txt.part.json", b"{}")
        write(self.repo / ".top.part.json", b"{}")
        write(self.repo / ".p2p" / ".x.part.json", b"{}")
        found = [str(p.relative_to(self.repo)) for p, _ in find_states(self.repo)]
        self.assertEqual(found, [".top.part.json", "docs/.a.txt.part.json"])


class FolderNodeTests(SynchronousTestCase):
    def setUp(self) -> None:
        base = temp_dir(self)
        self.parts = PeerParts(base / "me")
        self.repo = self.parts.repo
        self.link = FakeLink()
        self.net = FakeNetwork(self.parts.clock)
        self.node = node_for(self.parts, self.link, self.net)
        self.base = base

    # -- publish -------------------------------------------------------------

    def test_publish_folder(self) -> None:
        write(self.repo / "docs" / "a.txt", b"aaa")
        write(self.repo / "docs" / "sub" / "my notes.txt", b"bb")
        write(self.outside_file(), b"secret")
        os.symlink(self.outside_file(), self.repo / "docs" / "escape")
        [result] = self.successResultOf(self.node.publish_any("docs"))
        self.assertIsInstance(result, FolderPublishResult)
        self.assertEqual([r.fname for r in result.published], ["docs/a.txt", "docs/sub/my notes.txt"])
        self.assertEqual(result.size, 5)
        self.assertEqual([f for f, _ in result.failed], ["docs/escape"])
        self.assertEqual(
            sorted(f["fname"] for a, f in self.link.requests if a == "publish"),
            ["docs/a.txt", "docs/sub/my notes.txt"],
        )
        self.assertEqual(self.parts.library.get("docs/a.txt").sha256, sha(b"aaa"))
        # The library is saved once, with both.
        reloaded = Library(self.repo, [], sync_run)
        self.assertEqual(len(reloaded), 2)
        lines = format_publish_any(result)
        self.assertEqual(lines[0], "published docs: 2 files, 5 B")
        self.assertTrue(lines[1].startswith("error: docs/escape: "), lines)

    def test_publish_folder_conflict_and_tracker_errors(self) -> None:
        write(self.repo / "docs" / "a.txt", b"new")
        write(self.repo / "docs" / "b.txt", b"b")
        write(self.repo / "docs" / "c.txt", b"c")
        write(self.repo / "old.txt", b"old")
        self.successResultOf(self.node.publish("old.txt", "docs/a.txt"))

        def publish(fields: dict[str, Any]) -> Any:
            if fields["fname"] == "docs/c.txt":
                return errors.RequestFailed("bad_field", "refused")
            return {"status": "created"}

        self.link.handlers["publish"] = publish
        [result] = self.successResultOf(self.node.publish_any("docs"))
        self.assertEqual([r.fname for r in result.published], ["docs/b.txt"])
        failed = dict(result.failed)
        self.assertIn("--force", failed["docs/a.txt"])
        self.assertIn("docs/c.txt", failed)
        self.assertEqual(self.parts.library.get("docs/a.txt").sha256, sha(b"old"), "nothing replaced silently")
        self.assertNotIn("docs/c.txt", self.parts.library)

    def test_publish_one_argument(self) -> None:
        write(self.repo / "papers" / "x.pdf")
        [result] = self.successResultOf(self.node.publish_any("papers/x.pdf"))
        self.assertEqual(result.fname, "papers/x.pdf")
        [result] = self.successResultOf(self.node.publish_any("papers/x.pdf", "X"))
        self.assertEqual(result.fname, "X")

    def test_publish_glob(self) -> None:
        write(self.repo / "a.pdf")
        write(self.repo / "b.pdf", b"other")
        write(self.repo / "c.txt")
        write(self.repo / "d.pdf" / "inner.txt")
        results = self.successResultOf(self.node.publish_any("*.pdf"))
        self.assertEqual(
            [type(r) for r in results], [PublishResult, PublishResult, FolderPublishResult]
        )
        self.assertEqual([r.fname for r in results[:2]], ["a.pdf", "b.pdf"])
        self.assertEqual(results[2].published[0].fname, "d.pdf/inner.txt")
        self.failureResultOf(self.node.publish_any("*.none"), errors.UnsafePath)
        self.failureResultOf(self.node.publish_any("*.pdf", "NAME"), errors.BadName)

    def test_publish_glob_reports_each_failure(self) -> None:
        write(self.repo / "a.pdf")
        write(self.repo / "b.pdf", b"other")
        self.successResultOf(self.node.publish("b.pdf", "a.pdf"))
        results = self.successResultOf(self.node.publish_any("*.pdf"))
        self.assertIsInstance(results[0], PublishFailed)
        self.assertIn("--force", results[0].message)
        self.assertEqual(format_publish_any(results[0]), [f"error: {results[0].message}"])
        self.assertEqual(results[1].fname, "b.pdf")

    def outside_file(self) -> Path:
        return self.base / "outside" / "secret"

    # -- fetch DIR/ ------------------------------------------------------------

    def serve(self, files: dict[str, bytes]) -> None:
        """
        A source on port 7000 publishing C{files}; the fake tracker lists
        them (C{search}) and answers C{fetch} for each.
        """
        source = PeerParts(self.base / "source")
        for fname, data in files.items():
            write(source.repo / fname, data)
            entry = self.successResultOf(source.library.describe(fname, fname))
            source.library.put(entry)
        self.net.servers[7000] = UploadFactory(source.library, source.slots, source.transfers, source.clock)

        def item(fname: str) -> dict[str, Any]:
            return {"fname": fname, "file_size": len(files[fname]), "sha256": sha(files[fname]), "sources": 1}

        def search(fields: dict[str, Any]) -> dict[str, Any]:
            matches = pattern_matcher(fields["pattern"])
            return {"status": "success", "files": [item(f) for f in sorted(files) if matches(f)]}

        def fetch(fields: dict[str, Any]) -> dict[str, Any]:
            fname = fields["fname"]
            if fname not in files:
                return {"status": "success", "peer_list": []}
            entry = source.library.get(fname)
            return {
                "status": "success",
                "peer_list": [
                    {"hostname": "src", "ip": "127.0.0.1", "port": 7000, "lname": fname, "fname": fname,
                     "file_size": entry.size, "last_modified": 1.0, "sha256": entry.sha256, "version": 1}
                ],
            }

        self.link.handlers["search"] = search
        self.link.handlers["fetch"] = fetch

    def test_fetch_folder(self) -> None:
        files = {
            "docs/a.txt": os.urandom(3000),
            "docs/sub/my notes.txt": os.urandom(5000),
            "docs/sub/deep/c.bin": b"",
            "other.txt": b"not in the folder",
        }
        self.serve(files)
        progress: list[tuple[int, Any]] = []
        d = self.node.fetch_folder("docs/", progress=lambda done, total: progress.append((done, total)))
        self.net.flush()
        result = self.successResultOf(d)
        self.assertIsInstance(result, FolderFetchResult)
        self.assertEqual(
            [r.fname for r in result.fetched], ["docs/a.txt", "docs/sub/deep/c.bin", "docs/sub/my notes.txt"]
        )
        self.assertEqual(result.failed, ())
        self.assertTrue(result.verified)
        for fname in ("docs/a.txt", "docs/sub/my notes.txt", "docs/sub/deep/c.bin"):
            self.assertEqual((self.repo / fname).read_bytes(), files[fname])
            self.assertEqual(self.parts.library.get(fname).sha256, sha(files[fname]))
        self.assertFalse((self.repo / "other.txt").exists())
        self.assertEqual(("search", {"pattern": "docs/"}), self.link.requests[0])
        # One progress for the whole folder: totals are the folder's.
        self.assertTrue(progress)
        self.assertEqual({total for _, total in progress}, {8000})
        self.assertEqual(progress[-1], (8000, 8000))
        dones = [done for done, _ in progress]
        self.assertEqual(dones, sorted(dones))
        self.assertEqual(format_fetch_folder(result), ["fetched docs/: 3 files, 7.8 KiB, verified"])
        # Again: nothing to fetch, everything is here.
        again = self.successResultOf(self.node.fetch_folder("docs/"))
        self.assertEqual((again.fetched, len(again.present)), ((), 3))
        self.assertEqual(format_fetch_folder(again), ["fetched docs/: 0 files, 0 B, verified (3 already here)"])
        # A file deleted before the change watch noticed is fetched again,
        # not counted as here from the library's record.
        (self.repo / "docs" / "a.txt").unlink()
        d = self.node.fetch_folder("docs/")
        self.net.flush()
        third = self.successResultOf(d)
        self.assertEqual(([r.fname for r in third.fetched], len(third.present)), (["docs/a.txt"], 2))
        self.assertEqual((self.repo / "docs" / "a.txt").read_bytes(), files["docs/a.txt"])

    def test_fetch_folder_reports_each_failure(self) -> None:
        self.serve({"docs/a.txt": b"a" * 100, "docs/b.txt": b"b" * 100})
        write(self.repo / "docs" / "a.txt", b"mine")
        d = self.node.fetch_folder("docs/")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual([r.fname for r in result.fetched], ["docs/b.txt"])
        [(fname, message)] = result.failed
        self.assertEqual(fname, "docs/a.txt")
        self.assertIn("--force", message)
        self.assertEqual((self.repo / "docs" / "a.txt").read_bytes(), b"mine")
        lines = format_fetch_folder(result)
        self.assertEqual(lines[1], f"error: docs/a.txt: {message}")

    def test_fetch_folder_errors(self) -> None:
        self.serve({"docs/a.txt": b"a"})
        self.failureResultOf(self.node.fetch_folder("nothing/"), errors.NoSources)
        self.failureResultOf(self.node.fetch_folder("../"), errors.BadName)
        self.failureResultOf(self.node.fetch_folder("docs"), errors.BadName)

    def test_fetch_folder_refuses_a_link_out(self) -> None:
        self.serve({"docs/a.txt": b"a"})
        (self.base / "elsewhere").mkdir()
        os.symlink(self.base / "elsewhere", self.repo / "docs")
        d = self.node.fetch_folder("docs/")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual(result.fetched, ())
        self.assertIn("outside the repository", result.failed[0][1])
        self.assertEqual(os.listdir(self.base / "elsewhere"), [])

    def test_stop_ends_a_folder_fetch(self) -> None:
        """
        A stopping peer interrupts the files being fetched and starts no
        other; each is reported.
        """
        self.parts.slots.limits[DOWN] = 1
        self.serve({f"docs/{n}.txt": b"x" * 10 for n in range(4)})
        self.net.servers[7000] = "hang"
        d = self.node.fetch_folder("docs/")
        self.assertEqual(len(self.net.connects), 1, "one file at a time with one download slot")
        self.node.stop()
        result = self.successResultOf(d)
        self.assertEqual(result.fetched, ())
        failed = dict(result.failed)
        self.assertEqual(sorted(failed), [f"docs/{n}.txt" for n in range(4)])
        self.assertIn("interrupted", failed["docs/0.txt"])
        self.assertEqual(failed["docs/3.txt"], "not fetched: the peer is stopping")
        self.assertEqual(len(self.net.connects), 1)

    # -- changes on disk ---------------------------------------------------------

    def test_changed_file_is_republished(self) -> None:
        path = write(self.repo / "docs" / "a.txt", b"one")
        self.successResultOf(self.node.publish_any("docs"))
        self.assertEqual(self.successResultOf(self.node.check_changes()), ([], []))
        path.write_bytes(b"two, longer")
        os.utime(path, ns=(0, 123_000_000_000))
        self.link.requests.clear()
        seen = len(self.parts.seen)
        self.assertEqual(self.successResultOf(self.node.check_changes()), (["docs/a.txt"], []))
        entry = self.parts.library.get("docs/a.txt")
        self.assertEqual((entry.sha256, entry.size), (sha(b"two, longer"), 11))
        [(action, fields)] = self.link.requests
        self.assertEqual((action, fields["fname"], fields["sha256"]), ("publish", "docs/a.txt", entry.sha256))
        self.assertTrue(fields["allow_overwrite"])
        [event] = self.parts.seen[seen:]
        self.assertEqual((event.kind, event.message), ("published", "republished docs/a.txt (changed on disk)"))
        self.assertEqual(Library(self.repo, [], sync_run).get("docs/a.txt").sha256, entry.sha256)

    def test_deleted_file_is_unpublished_at_once(self) -> None:
        path = write(self.repo / "a.txt")
        self.successResultOf(self.node.publish_any("a.txt"))
        path.unlink()
        self.link.requests.clear()
        self.assertEqual(self.successResultOf(self.node.check_changes()), ([], ["a.txt"]))
        self.assertNotIn("a.txt", self.parts.library)
        self.assertEqual(self.link.requests, [("unpublish", {"fname": "a.txt"})])
        event = self.parts.seen[-1]
        self.assertEqual(event.kind, "unpublished")
        self.assertIn("gone", event.message)

    def test_republish_without_tracker(self) -> None:
        path = write(self.repo / "a.txt", b"one")
        self.successResultOf(self.node.publish_any("a.txt"))
        path.write_bytes(b"three")
        self.link.handlers["publish"] = lambda f: errors.TrackerUnavailable()
        self.assertEqual(self.successResultOf(self.node.check_changes()), (["a.txt"], []))
        self.assertEqual(self.parts.library.get("a.txt").sha256, sha(b"three"))

    # -- through the shell -------------------------------------------------------------

    def shell(self) -> tuple[Any, Any]:
        from twisted.internet.testing import StringTransport

        from twistedp2p.peer.shell import PeerShell

        shell = PeerShell(self.node)
        transport = StringTransport()
        shell.makeConnection(transport)
        transport.clear()
        return shell, transport

    def test_shell_lines(self) -> None:
        write(self.repo / "docs" / "a.txt", b"aaa")
        write(self.repo / "docs" / "b c.txt", b"bb")
        write(self.repo / "x.pdf", b"x")
        shell, transport = self.shell()
        shell.dataReceived(b"publish docs\npublish '*.pdf'\npublish '*.none'\n")
        self.assertEqual(
            transport.value().decode().splitlines(),
            [
                "published docs: 2 files, 5 B",
                f"published x.pdf: created (1 bytes, sha256 {sha(b'x')})",
                "error: *.none: no file matches in the repository or a share root",
            ],
        )

    def test_shell_fetch_folder(self) -> None:
        self.serve({"docs/a.txt": b"a" * 100, "docs/b.txt": b"b" * 50})
        write(self.repo / "docs" / "b.txt", b"mine")
        shell, transport = self.shell()
        shell.dataReceived(b"fetch docs/\n")
        self.net.flush()
        lines = transport.value().decode().splitlines()
        self.assertEqual(lines[0], "fetched docs/: 1 file, 100 B, verified")
        self.assertTrue(lines[1].startswith("error: docs/b.txt: "), lines)
        self.assertEqual(len(lines), 2)

    def test_changed_while_away_is_announced_again(self) -> None:
        """
        At a new tracker session (a restart, a reconnection), a file changed
        in the meantime is hashed again and announced, not dropped.
        """
        path = write(self.repo / "a.txt", b"one")
        write(self.repo / "b.txt", b"bee")
        self.successResultOf(self.node.publish_any("a.txt"))
        self.successResultOf(self.node.publish_any("b.txt"))
        path.write_bytes(b"changed while away")
        (self.repo / "b.txt").unlink()
        self.link.requests.clear()
        self.successResultOf(self.node.announce_all(self.link))
        publishes = [f for a, f in self.link.requests if a == "publish"]
        self.assertEqual([(f["fname"], f["sha256"]) for f in publishes], [("a.txt", sha(b"changed while away"))])
        self.assertIn(("unpublish", {"fname": "b.txt"}), self.link.requests)
        self.assertEqual(self.parts.seen[-1].kind, "unpublished")
        self.assertIn("republished a.txt (changed on disk)", [e.message for e in self.parts.seen])
