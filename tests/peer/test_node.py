"""
Tests for L{twistedp2p.peer.node.PeerNode} against a fake tracker link.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.download import DownloadSettings
from twistedp2p.peer.node import PeerNode
from twistedp2p.peer.upload import UploadFactory

from .helpers import FakeNetwork, PeerParts, sync_run, temp_dir

DATA = os.urandom(100_000)
SHA = hashlib.sha256(DATA).hexdigest()


class FakeLink:
    """
    Answers requests with C{handlers[action](fields)} (a reply dict, or an
    exception to fail with); records every request.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.protocol: Any = object()
        self.handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "publish": lambda f: {"status": "created"},
            "unpublish": lambda f: {"status": "success"},
            "search": lambda f: {"status": "success", "files": []},
            "fetch": lambda f: {"status": "success", "peer_list": []},
        }

    def request(self, action: str, **fields: Any) -> Deferred:
        self.requests.append((action, fields))
        answer = self.handlers[action](fields)
        if isinstance(answer, Exception):
            return fail(answer)
        return succeed(answer)

    def actions(self) -> list[str]:
        return [a for a, _ in self.requests]

    def status(self) -> dict[str, Any]:
        return {"state": "connected", "tracker": "A"}


def node_for(parts: PeerParts, link: FakeLink, net: FakeNetwork) -> PeerNode:
    """
    A node called "me" over C{parts}, talking to the tracker through
    C{link} and to other peers through C{net}; threads run synchronously.
    """
    return PeerNode(
        hostname="me",
        library=parts.library,
        slots=parts.slots,
        transfers=parts.transfers,
        events=parts.events,
        clock=parts.clock,
        run_in_thread=sync_run,
        connect=net.connect,
        settings=DownloadSettings(jitter=lambda: 0.5),
        link=link,
    )


class NodeTestsMixin:
    def setUp(self) -> None:
        base = temp_dir(self)
        self.parts = PeerParts(base / "me")
        self.repo = self.parts.repo
        self.link = FakeLink()
        self.net = FakeNetwork(self.parts.clock)
        self.node = node_for(self.parts, self.link, self.net)
        self.source = PeerParts(base / "source")
        self.source.publish("f", DATA)
        self.net.servers[7000] = UploadFactory(
            self.source.library, self.source.slots, self.source.transfers, self.source.clock
        )

    def write(self, name: str, data: bytes = b"content") -> Path:
        path = self.repo / name
        path.write_bytes(data)
        return path


class PublishTests(NodeTestsMixin, SynchronousTestCase):
    def test_created(self) -> None:
        self.write("a.txt")
        result = self.successResultOf(self.node.publish("a.txt", "A"))
        self.assertEqual((result.fname, result.status, result.size), ("A", "created", 7))
        self.assertEqual(result.sha256, hashlib.sha256(b"content").hexdigest())
        [(action, fields)] = self.link.requests
        self.assertEqual(action, "publish")
        self.assertEqual(fields["lname"], "A", "local paths never leave the peer")
        self.assertEqual(fields["allow_overwrite"], False)
        self.assertEqual(fields["sha256"], result.sha256)
        self.assertIn("A", self.parts.library)
        self.assertEqual([e.kind for e in self.parts.seen], ["published"])

    def test_same_file_again(self) -> None:
        self.write("a.txt")
        self.successResultOf(self.node.publish("a.txt", "A"))
        first = self.parts.library.get("A")
        self.parts.clock.advance(10)
        self.link.handlers["publish"] = lambda f: {"status": "unchanged"}
        result = self.successResultOf(self.node.publish("a.txt", "A"))
        self.assertEqual(result.status, "unchanged")
        self.assertEqual(self.parts.library.get("A").published_at, first.published_at)

    def test_same_content_other_path(self) -> None:
        self.write("a.txt")
        self.write("b.txt")
        self.successResultOf(self.node.publish("a.txt", "A"))
        self.link.handlers["publish"] = lambda f: {"status": "updated"}
        result = self.successResultOf(self.node.publish("b.txt", "A"))
        self.assertEqual(result.status, "updated")
        self.assertTrue(self.link.requests[-1][1]["allow_overwrite"])

    def test_conflict_needs_force(self) -> None:
        self.write("a.txt")
        self.write("b.txt", b"other")
        self.successResultOf(self.node.publish("a.txt", "A"))
        f = self.failureResultOf(self.node.publish("b.txt", "A"), errors.Conflict)
        self.assertIn("use --force", str(f.value))
        self.assertEqual(len(self.link.requests), 1)
        self.assertTrue(self.parts.library.get("A").path.endswith("a.txt"))
        self.link.handlers["publish"] = lambda f: {"status": "updated"}
        result = self.successResultOf(self.node.publish("b.txt", "A", force=True))
        self.assertEqual(result.status, "updated")
        self.assertTrue(self.link.requests[-1][1]["allow_overwrite"])
        self.assertTrue(self.parts.library.get("A").path.endswith("b.txt"))

    def test_tracker_conflict(self) -> None:
        self.write("a.txt")
        self.link.handlers["publish"] = lambda f: {"status": "conflict"}
        self.failureResultOf(self.node.publish("a.txt", "A"), errors.Conflict)
        self.assertNotIn("A", self.parts.library)

    def test_tracker_down(self) -> None:
        self.write("a.txt")
        self.link.handlers["publish"] = lambda f: errors.TrackerUnavailable()
        self.failureResultOf(self.node.publish("a.txt", "A"), errors.TrackerUnavailable)
        self.assertNotIn("A", self.parts.library)

    def test_index_unavailable(self) -> None:
        self.write("a.txt")
        self.link.handlers["publish"] = lambda f: errors.RequestFailed("db down", "index_unavailable")
        self.failureResultOf(self.node.publish("a.txt", "A"), errors.IndexUnavailable)

    def test_unsafe_and_bad_name(self) -> None:
        self.write("a.txt")
        self.failureResultOf(self.node.publish("/etc/passwd", "p"), errors.UnsafePath)
        self.failureResultOf(self.node.publish("a.txt", "../x"), errors.BadName)
        self.assertEqual(self.link.requests, [])


class UnpublishTests(NodeTestsMixin, SynchronousTestCase):
    def test_unpublish(self) -> None:
        self.write("a.txt")
        self.successResultOf(self.node.publish("a.txt", "A"))
        result = self.successResultOf(self.node.unpublish("A"))
        self.assertTrue(result.tracker_told)
        self.assertEqual(self.link.requests[-1], ("unpublish", {"fname": "A"}))
        self.assertNotIn("A", self.parts.library)

    def test_not_published(self) -> None:
        self.failureResultOf(self.node.unpublish("A"), errors.NotPublished)
        self.failureResultOf(self.node.unpublish("a//b"), errors.BadName)

    def test_tracker_down_still_unpublishes_locally(self) -> None:
        self.write("a.txt")
        self.successResultOf(self.node.publish("a.txt", "A"))
        self.link.handlers["unpublish"] = lambda f: errors.TrackerUnavailable()
        result = self.successResultOf(self.node.unpublish("A"))
        self.assertFalse(result.tracker_told)
        self.assertNotIn("A", self.parts.library)

    def test_stale_file_unpublished(self) -> None:
        path = self.write("a.txt")
        self.successResultOf(self.node.publish("a.txt", "A"))
        path.write_bytes(b"changed!")
        self.assertIsNone(self.successResultOf(self.parts.library.check_serving("A")))
        self.assertEqual(self.link.requests[-1], ("unpublish", {"fname": "A"}))
        self.assertEqual(self.parts.seen[-1].kind, "unpublished")
        self.assertIn("changed", self.parts.seen[-1].message)


class FetchTests(NodeTestsMixin, SynchronousTestCase):
    def peer_list(self, *ports: int) -> None:
        self.link.handlers["fetch"] = lambda f: {
            "status": "success",
            "peer_list": [
                {"hostname": f"h{p}", "ip": "127.0.0.1", "port": p, "lname": "f", "fname": "f",
                 "file_size": len(DATA), "last_modified": 1.0, "sha256": SHA, "version": 1}
                for p in ports
            ],
        }

    def test_fetch_verifies_and_shares(self) -> None:
        self.peer_list(7000)
        d = self.node.fetch("f")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.verified, result.published, result.source.hostname), (True, True, "h7000"))
        self.assertEqual((self.repo / "f").read_bytes(), DATA)
        entry = self.parts.library.get("f")
        self.assertEqual((entry.sha256, entry.path), (SHA, str(self.repo / "f")))
        self.assertEqual(self.link.actions(), ["fetch", "publish"])
        self.assertTrue(self.link.requests[-1][1]["allow_overwrite"])
        self.assertIn("fetched", [e.kind for e in self.parts.seen])

    def test_exists_checked_first(self) -> None:
        self.peer_list(7000)
        self.write("f", b"mine")
        f = self.failureResultOf(self.node.fetch("f"), errors.AlreadyExists)
        self.assertNotIsInstance(f.value, errors.AlreadyHave)
        # Only a lookup (to tell the same content from another): no download.
        self.assertEqual(self.link.actions(), ["fetch"])
        self.assertEqual(self.net.connects, [])

    def test_exists_tracker_down(self) -> None:
        self.link.handlers["fetch"] = lambda f: errors.TrackerUnavailable()
        self.write("f", DATA)
        f = self.failureResultOf(self.node.fetch("f"), errors.AlreadyExists)
        self.assertNotIsInstance(f.value, errors.AlreadyHave)

    def test_already_here_same_content(self) -> None:
        """
        REPO/FNAME holds what the sources publish: the fetch says so.
        """
        self.peer_list(7000)
        self.write("f", DATA)
        f = self.failureResultOf(self.node.fetch("f"), errors.AlreadyHave)
        self.assertEqual((f.value.path, f.value.sha256), (str(self.repo / "f"), SHA))
        self.assertIn("already here, same content", str(f.value))
        self.assertEqual(self.net.connects, [])

    def test_already_published_same_content(self) -> None:
        self.write("g", DATA)
        self.successResultOf(self.node.publish("g", "f"))
        self.peer_list(7000)
        f = self.failureResultOf(self.node.fetch("f"), errors.AlreadyHave)
        self.assertEqual(f.value.path, str(self.repo / "g"))
        self.assertFalse((self.repo / "f").exists())

    def test_published_file_gone_is_fetched_again(self) -> None:
        """
        The published file was deleted before the change watch noticed:
        the fetch does not answer "already here" from the library's record;
        the stale entry is unpublished and the file is downloaded.
        """
        path = self.write("f", DATA)
        self.successResultOf(self.node.publish("f", "f"))
        path.unlink()
        self.peer_list(7000)
        d = self.node.fetch("f")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertTrue(result.verified)
        self.assertEqual((self.repo / "f").read_bytes(), DATA)
        self.assertIn(("unpublish", {"fname": "f"}), self.link.requests)

    def test_no_sources(self) -> None:
        self.failureResultOf(self.node.fetch("f"), errors.NoSources)

    def test_bad_name(self) -> None:
        self.failureResultOf(self.node.fetch(".hidden"), errors.BadName)

    def test_one_fetch_per_name(self) -> None:
        self.peer_list(7000)
        first = self.node.fetch("f")
        self.failureResultOf(self.node.fetch("f"), errors.TransferFailed)
        self.net.flush()
        self.successResultOf(first)

    def test_published_later_when_tracker_down(self) -> None:
        self.peer_list(7000)
        self.link.handlers["publish"] = lambda f: errors.TrackerUnavailable()
        d = self.node.fetch("f")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertFalse(result.published)
        self.assertIn("f", self.parts.library)

    def test_stop_cancels(self) -> None:
        self.peer_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        self.node.stop()
        f = self.failureResultOf(d, errors.Interrupted)
        self.assertEqual((f.value.reason, f.value.pieces), ("interrupted", None))
        self.assertEqual(self.parts.slots.in_use, 0)


class AnnounceAndStatusTests(NodeTestsMixin, SynchronousTestCase):
    def test_announce_all(self) -> None:
        for name in ("a", "b", "c"):
            self.write(name)
            self.successResultOf(self.node.publish(name, name.upper()))
        (self.repo / "b").unlink()
        self.link.requests.clear()
        self.successResultOf(self.node.announce_all(self.link))
        published = [f["fname"] for a, f in self.link.requests if a == "publish"]
        self.assertEqual(published, ["A", "C"])
        self.assertTrue(all(f["allow_overwrite"] for a, f in self.link.requests if a == "publish"))
        self.assertNotIn("B", self.parts.library)

    def test_announce_tolerates_failures(self) -> None:
        self.write("a")
        self.successResultOf(self.node.publish("a", "A"))
        self.link.handlers["publish"] = lambda f: errors.RequestFailed("no", "bad_field")
        self.successResultOf(self.node.announce_all(self.link))

    def test_search(self) -> None:
        self.link.handlers["search"] = lambda f: {
            "status": "success", "files": [{"fname": "x", "sources": 1}, "junk"]
        }
        self.assertEqual(self.successResultOf(self.node.search("x*")), [{"fname": "x", "sources": 1}])
        self.assertEqual(self.link.requests[-1], ("search", {"pattern": "x*"}))

    def test_search_follows_cursors(self) -> None:
        """
        A catalogue in pages: every page is fetched, in order, by its
        cursor; a tracker that never ends is cut at MAX_SEARCH_PAGES.
        """
        def page(fields):
            n = int(fields.get("cursor", "0"))
            reply = {"status": "success", "files": [{"fname": f"f{n}"}, {"fname": f"f{n + 1}"}]}
            if n < 4:
                reply["next"] = str(n + 2)
            return reply

        self.link.handlers["search"] = page
        found = self.successResultOf(self.node.search("f*"))
        self.assertEqual([f["fname"] for f in found], [f"f{i}" for i in range(6)])
        self.assertEqual(self.link.requests[-1], ("search", {"pattern": "f*", "cursor": "4"}))
        self.link.handlers["search"] = lambda f: {"status": "success", "files": [{"fname": "x"}], "next": "again"}
        self.patch(self.node, "MAX_SEARCH_PAGES", 3)
        self.assertEqual(len(self.successResultOf(self.node.search(""))), 3)

    def test_status(self) -> None:
        self.write("a")
        self.successResultOf(self.node.publish("a", "A"))
        self.node.p2p_port = 4242
        status = self.node.status()
        self.assertEqual(status["hostname"], "me")
        self.assertEqual(status["p2p_port"], 4242)
        self.assertEqual(status["tracker"]["state"], "connected")
        self.assertEqual([p["fname"] for p in status["published"]], ["A"])
        # Uploads and downloads have their own slots (4 each by default).
        self.assertEqual(status["sessions"]["limit"], 8)
        self.assertEqual((status["sessions"]["upload_limit"], status["sessions"]["download_limit"]), (4, 4))
        self.assertEqual(status["transfers"], [])


class SwarmNodeTests(NodeTestsMixin, SynchronousTestCase):
    """
    What the node adds to multi-source downloads: roots in publish, the
    choice between pieces and whole files, start-up resume, limits.
    """

    def rooted_list(self, *ports: int, root: bool = True) -> None:
        pieces = self.source.library.get("f").pieces

        def answer(fields):
            peers = []
            for p in ports:
                entry = {"hostname": f"h{p}", "ip": "127.0.0.1", "port": p, "lname": "f", "fname": "f",
                         "file_size": len(DATA), "last_modified": 1.0, "sha256": SHA, "version": 1}
                if root:
                    entry.update(root=pieces.root, piece_size=pieces.piece_size)
                peers.append(entry)
            return {"status": "success", "peer_list": peers}

        self.link.handlers["fetch"] = answer
        return pieces

    def test_publish_sends_root(self) -> None:
        self.write("a.txt", b"x" * 1000)
        self.successResultOf(self.node.publish("a.txt", "A"))
        fields = self.link.requests[-1][1]
        entry = self.parts.library.get("A")
        self.assertEqual((fields["root"], fields["piece_size"]), (entry.root, 256 * 1024))

    def test_fetch_with_root_uses_pieces_and_shares_them(self) -> None:
        pieces = self.rooted_list(7000)
        d = self.node.fetch("f")
        self.net.flush()
        result = self.successResultOf(d)
        self.assertEqual((result.piece_count, result.pieces), (pieces.count, pieces))
        self.assertEqual(self.parts.library.get("f").root, pieces.root)
        publish = self.link.requests[-1][1]
        self.assertEqual(publish["root"], pieces.root)
        fetched = [e for e in self.parts.seen if e.kind == "fetched"][0]
        self.assertEqual((fetched.fields["pieces"], fetched.fields["background"]), (pieces.count, False))

    def test_whole_file_path_discards_a_state(self) -> None:
        from twistedp2p.peer.swarm import PartState, state_name, write_state

        pieces = self.source.library.get("f").pieces
        write_state(self.repo / state_name("f"), PartState("f", pieces.root, pieces.piece_size, len(DATA), SHA, frozenset({0})))
        self.rooted_list(7000, root=False)
        d = self.node.fetch("f")
        self.net.flush()
        self.successResultOf(d)
        self.assertFalse((self.repo / state_name("f")).exists())

    def test_max_file_size(self) -> None:
        self.node.settings.max_file_size = len(DATA) - 1
        self.rooted_list(7000)
        f = self.failureResultOf(self.node.fetch("f"), errors.FileTooLarge)
        self.assertIn("--max-file-size", str(f.value))
        self.assertEqual(self.net.connects, [])

    def test_resume_pending_and_stop(self) -> None:
        """
        A stopped peer records its pieces; at the next session the node
        resumes the download on its own.
        """
        from twistedp2p.peer.swarm import read_state, state_name

        pieces = self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        self.net.flush()
        stopped = self.node.stop()
        self.failureResultOf(d)
        self.successResultOf(stopped)
        # Nothing verified yet: nothing kept.
        self.assertIsNone(read_state(self.repo / state_name("f")))

        # A previous run left verified pieces behind.
        from twistedp2p.peer.swarm import PartState, part_name, write_state

        (self.repo / part_name("f")).write_bytes(DATA[: pieces.piece_size])
        write_state(self.repo / state_name("f"),
                    PartState("f", pieces.root, pieces.piece_size, len(DATA), SHA, frozenset({0})))
        self.node.start()
        self.rooted_list(7000)
        names = self.successResultOf(self.node.resume_pending())
        self.assertEqual(names, ["f"])
        self.net.flush()
        kinds = [e.kind for e in self.parts.seen]
        self.assertIn("resuming", kinds)
        fetched = [e for e in self.parts.seen if e.kind == "fetched"][-1]
        self.assertTrue(fetched.fields["background"])
        self.assertEqual(fetched.fields["resumed"], pieces.span(0)[1])
        self.assertEqual((self.repo / "f").read_bytes(), DATA)
        # Nothing left to resume.
        self.assertEqual(self.successResultOf(self.node.resume_pending()), [])

    def with_piece_on_disk(self) -> Any:
        from twistedp2p.peer.swarm import PartState, part_name, state_name, write_state

        pieces = self.source.library.get("f").pieces
        (self.repo / part_name("f")).write_bytes(DATA[: pieces.piece_size])
        write_state(self.repo / state_name("f"),
                    PartState("f", pieces.root, pieces.piece_size, len(DATA), SHA, frozenset({0})))
        return pieces

    def test_pause_keeps_pieces_and_resume_continues(self) -> None:
        from twistedp2p.peer.swarm import read_state, state_name

        pieces = self.with_piece_on_disk()
        self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        # A caller that handles the failure itself (as the shell does)
        # does not keep pause from answering.
        seen: list = []
        d.addErrback(lambda f: seen.append(f) or f)
        self.net.flush()
        self.assertEqual(self.node.fetching(), ["f"])
        paused = self.node.pause("f")
        self.assertEqual(len(seen), 1)
        f = self.failureResultOf(d, errors.Interrupted)
        self.assertEqual((f.value.reason, f.value.kept, f.value.pieces), ("paused", 1, pieces.count))
        self.assertEqual(str(f.value), f"paused: f, 1 of {pieces.count} pieces kept; resume f continues it")
        self.assertEqual(self.successResultOf(paused), (1, pieces.count))
        self.assertEqual(self.node.paused, {"f": (1, pieces.count)})
        [stopped] = [e for e in self.parts.seen if e.kind == "stopped"]
        self.assertEqual((stopped.fields["reason"], stopped.message), ("paused", str(f.value)))
        self.assertEqual(self.node.fetching(), [])
        self.assertEqual(read_state(self.repo / state_name("f")).have, frozenset({0}))
        # A paused download is not resumed behind the user's back.
        self.assertEqual(self.successResultOf(self.node.resume_pending()), [])

        self.rooted_list(7000)
        # (fetch would do as resume does.)
        done = self.node.resume("f")
        self.net.flush()
        result = self.successResultOf(done)
        self.assertEqual(result.resumed, pieces.span(0)[1])
        self.assertEqual((self.repo / "f").read_bytes(), DATA)
        self.assertEqual(self.node.paused, {})

    def test_cancel_removes_the_partial_download(self) -> None:
        from twistedp2p.peer.swarm import part_name, state_name

        pieces = self.with_piece_on_disk()
        self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        d.addErrback(lambda f: None)
        self.net.flush()
        cancelled = self.node.cancel("f")
        [stopped] = [e for e in self.parts.seen if e.kind == "stopped"]
        self.assertEqual(stopped.fields["reason"], "cancelled")
        self.assertEqual(self.successResultOf(cancelled), (1, pieces.count))
        self.assertFalse((self.repo / part_name("f")).exists())
        self.assertFalse((self.repo / state_name("f")).exists())
        self.assertEqual(self.node.paused, {})

    def test_fetch_continues_a_paused_download(self) -> None:
        self.with_piece_on_disk()
        self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        self.net.flush()
        self.node.pause("f")
        self.failureResultOf(d, errors.Interrupted)
        self.rooted_list(7000)
        done = self.node.fetch("f")
        self.assertEqual(self.node.paused, {})
        self.net.flush()
        self.assertEqual(self.successResultOf(done).fname, "f")

    def test_cancel_a_paused_download(self) -> None:
        from twistedp2p.peer.swarm import part_name, state_name

        self.with_piece_on_disk()
        self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        d = self.node.fetch("f")
        self.net.flush()
        self.node.pause("f")
        self.failureResultOf(d, errors.Interrupted)
        self.successResultOf(self.node.cancel("f"))
        self.assertFalse((self.repo / part_name("f")).exists())
        self.assertFalse((self.repo / state_name("f")).exists())

    def test_pause_cancel_resume_unknown(self) -> None:
        self.failureResultOf(self.node.pause("nope"), errors.TransferFailed)
        self.failureResultOf(self.node.cancel("nope"), errors.TransferFailed)
        self.rooted_list(7001)
        self.net.servers[7001] = "hang"
        self.node.fetch("f")
        self.failureResultOf(self.node.resume("f"), errors.TransferFailed)

    def test_resume_failure_is_a_notice_and_keeps_the_state(self) -> None:
        from twistedp2p.peer.swarm import PartState, part_name, state_name, write_state

        pieces = self.source.library.get("f").pieces
        (self.repo / part_name("f")).write_bytes(DATA[: pieces.piece_size])
        write_state(self.repo / state_name("f"),
                    PartState("f", pieces.root, pieces.piece_size, len(DATA), SHA, frozenset({0})))
        self.successResultOf(self.node.resume_pending())
        [failed] = [e for e in self.parts.seen if e.kind == "resume_failed"]
        self.assertIn("no live source has f", failed.message)
        self.assertTrue((self.repo / state_name("f")).exists())

    def test_resume_skips_existing_file(self) -> None:
        from twistedp2p.peer.swarm import PartState, state_name, write_state

        pieces = self.source.library.get("f").pieces
        write_state(self.repo / state_name("f"),
                    PartState("f", pieces.root, pieces.piece_size, len(DATA), SHA, frozenset({0})))
        self.write("f", b"mine")
        self.assertEqual(self.successResultOf(self.node.resume_pending()), [])
        self.assertEqual(self.link.requests, [])
