"""
Tests for L{twistedp2p.peer.shell.PeerShell} with a fake node.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.download import FetchResult, SourceInfo
from twistedp2p.peer.events import Events
from twistedp2p.peer.node import PublishResult, UnpublishResult
from twistedp2p.peer.shell import (
    PeerShell,
    format_fetch,
    format_publish,
    format_search,
    format_status,
    parse_args,
    ArgumentError,
)

from tests.peer.helpers import NODE_STATUS as STATUS, SHA_AB as SHA


def fetch_result(verified: bool = True, published: bool = True) -> FetchResult:
    src = SourceInfo("lab-3", "10.0.0.3", 4000, "f", "f", 12, SHA if verified else None, 1)
    return FetchResult("f", "/repo/f", 12, SHA, verified, src, published=published)


class FakeNode:
    def __init__(self) -> None:
        self.hostname = "me"
        self.p2p_port = 4321
        self.library = SimpleNamespace(repo="/repo")
        self.clock = Clock()
        self.events = Events(self.clock)
        self.calls: list[tuple[str, tuple, dict, Deferred]] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((name, args, kwargs, d))
        return d

    def publish(self, lname, fname, force=False):
        return self._call("publish", lname, fname, force=force)

    def unpublish(self, fname):
        return self._call("unpublish", fname)

    def fetch(self, fname, source=None, force=False, progress=None):
        return self._call("fetch", fname, source=source, force=force, progress=progress)

    def search(self, pattern=""):
        return self._call("search", pattern)

    def status(self):
        return STATUS


class ShellTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = FakeNode()
        self.exits = 0
        self.shell = PeerShell(self.node, on_exit=self.on_exit, is_tty=False)
        self.transport = StringTransport()
        self.shell.makeConnection(self.transport)
        self.assertEqual(
            self.output(),
            ["p2ppeer me serving on port 4321, repository /repo; type 'help' for commands"],
        )

    def on_exit(self) -> None:
        self.exits += 1

    def type(self, text: str) -> None:
        self.shell.dataReceived(text.encode("utf-8"))

    def output(self) -> list[str]:
        lines = self.transport.value().decode("utf-8").splitlines()
        self.transport.clear()
        return lines

    def test_commands_run_in_order(self) -> None:
        self.type("publish a.txt A\nunpublish B\n")
        self.assertEqual([c[0] for c in self.node.calls], ["publish"])
        self.node.calls[0][3].callback(PublishResult("A", "created", 7, SHA, "/repo/a.txt"))
        self.assertEqual([c[0] for c in self.node.calls], ["publish", "unpublish"])
        self.node.calls[1][3].callback(UnpublishResult("B", True))
        self.assertEqual(
            self.output(), [f"published A: created (7 bytes, sha256 {SHA})", "unpublished B"]
        )

    def test_status_and_help_immediate(self) -> None:
        self.type("fetch f\nstatus\nhelp\n")
        out = self.output()
        self.assertEqual(out[0], "peer me: p2p port 4242, repo /repo")
        self.assertIn("commands:", out)
        self.assertEqual(len(self.node.calls), 1)

    def test_arguments(self) -> None:
        self.type('publish "my file.txt" "My File" --force\n')
        self.assertEqual(self.node.calls[0][:3], ("publish", ("my file.txt", "My File"), {"force": True}))

    def test_fetch_options(self) -> None:
        self.type("fetch f --from lab-3 --force\n")
        name, args, kwargs, d = self.node.calls[0]
        self.assertEqual((args, kwargs["source"], kwargs["force"], kwargs["progress"]), (("f",), "lab-3", True, None))
        d.callback(fetch_result())
        self.assertEqual(self.output(), ["fetched f from lab-3: 12 bytes, sha256 verified -> /repo/f"])

    def test_fetch_from_equals(self) -> None:
        self.type("fetch f --from=lab-3\n")
        self.assertEqual(self.node.calls[0][2]["source"], "lab-3")

    def test_error_lines(self) -> None:
        self.type('publish "unclosed\nfrobnicate\npublish onlyone\nfetch f --bogus\nfetch f --from\n')
        self.assertEqual(
            self.output(),
            [
                "error: cannot parse the line (No closing quotation)",
                "error: unknown command 'frobnicate'; type help",
                "error: usage: publish LNAME FNAME [--force]",
                "error: fetch: unknown option --bogus",
                "error: fetch: --from needs a value",
            ],
        )
        self.assertEqual(self.node.calls, [])

    def test_known_failure_one_line(self) -> None:
        self.type("unpublish A\nsearch\n")
        self.node.calls[0][3].errback(errors.NotPublished("A is not published here"))
        self.assertEqual(self.output(), ["error: A is not published here"])
        self.node.calls[1][3].callback([])
        self.assertEqual(self.output(), ["0 files"])

    def test_docstring_message(self) -> None:
        self.type("search\n")
        self.node.calls[0][3].errback(errors.TrackerUnavailable())
        self.assertEqual(self.output(), ["error: not connected to the tracker"])

    def test_unexpected_failure_logged(self) -> None:
        self.type("search\n")
        self.node.calls[0][3].errback(ZeroDivisionError("oops"))
        self.assertEqual(self.output(), ["error: unexpected failure: oops"])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)

    def test_eof_finishes_pending_work(self) -> None:
        self.type("search\nunpublish A\n")
        self.shell.readConnectionLost()
        self.assertEqual(self.exits, 0)
        self.node.calls[0][3].callback([])
        self.assertEqual(self.exits, 0)
        self.node.calls[1][3].callback(UnpublishResult("A", True))
        self.assertEqual(self.exits, 1)
        self.assertEqual(self.output(), ["0 files", "unpublished A"])

    def test_eof_idle(self) -> None:
        self.shell.readConnectionLost()
        self.assertEqual(self.exits, 1)

    def test_quit(self) -> None:
        self.type("search\nquit\nsearch\nstatus\n")
        self.node.calls[0][3].callback([])
        self.assertEqual(self.output(), ["0 files", "bye"])
        self.assertEqual(self.exits, 1)
        self.assertEqual(len(self.node.calls), 1)
        self.type("search\n")
        self.assertEqual(len(self.node.calls), 1)

    def test_blank_and_comment_lines(self) -> None:
        self.type("\n   \n# a comment\r\n")
        self.assertEqual(self.output(), [])

    def test_link_events_printed(self) -> None:
        self.node.events.emit("link", "tracker link: lost A, trying B")
        self.node.events.emit("published", "published X: created")
        self.node.events.emit("unpublished", "unpublished X: the file is gone", reason="the file is gone")
        self.node.events.emit("unpublished", "unpublished Y", reason="requested")
        self.assertEqual(
            self.output(), ["tracker link: lost A, trying B", "notice: unpublished X: the file is gone"]
        )

    def test_no_progress_bar_without_tty(self) -> None:
        self.type("fetch f\n")
        self.assertIsNone(self.node.calls[0][2]["progress"])

    def test_progress_bar_on_tty(self) -> None:
        shell = PeerShell(self.node, on_exit=self.on_exit, is_tty=True)
        t = StringTransport()
        shell.makeConnection(t)
        t.clear()
        shell.dataReceived(b"fetch f\n")
        progress = self.node.calls[0][2]["progress"]
        self.node.clock.advance(1)
        progress(50, 100)
        self.assertTrue(t.value().startswith(b"\rfetch f ["))
        self.assertIn(b"50.0%", t.value())
        t.clear()
        self.node.calls[0][3].callback(fetch_result())
        self.assertTrue(t.value().startswith(b"\r\x1b[K"))
        self.assertIn(b"fetched f from lab-3", t.value())

    def test_connection_lost(self) -> None:
        self.type("search\n")
        self.shell.connectionLost(None)
        self.node.calls[0][3].callback([])
        self.assertEqual(self.exits, 1)


class FormatTests(SynchronousTestCase):
    def test_fetch_unverified(self) -> None:
        self.assertEqual(
            format_fetch(fetch_result(verified=False)),
            f"fetched f from lab-3: 12 bytes, unverified (seed source), sha256 {SHA} -> /repo/f",
        )

    def test_fetch_not_announced(self) -> None:
        self.assertTrue(format_fetch(fetch_result(published=False)).endswith("(not announced yet: tracker not reachable)"))

    def test_publish(self) -> None:
        self.assertEqual(
            format_publish(PublishResult("n", "unchanged", 1, SHA, "/x")),
            f"published n: unchanged (1 bytes, sha256 {SHA})",
        )

    def test_search(self) -> None:
        lines = format_search(
            [
                {"fname": "notes.pdf", "file_size": 102400, "sha256": SHA, "sources": 2},
                {"fname": "seed file", "file_size": None, "sha256": None, "sources": 1},
            ]
        )
        self.assertEqual(
            lines,
            [
                "        SIZE  SOURCES  SHA256        NAME",
                "      102400        2  abababababab  notes.pdf",
                "           ?        1  unverified    seed file",
                "2 files",
            ],
        )
        self.assertEqual(format_search([{"fname": "x", "file_size": 1, "sha256": SHA, "sources": 1}])[-1], "1 file")

    def test_status(self) -> None:
        self.assertEqual(
            format_status(STATUS),
            [
                "peer me: p2p port 4242, repo /repo",
                "tracker: connected to tcp:t:9999 (address 10.0.0.9, session x:1)",
                "sessions: 1 of 4 in use (1 up, 0 down, 0 waiting)",
                "published: 1",
                f"  A: 7 bytes, sha256 {SHA[:12]}, /repo/a",
                "transfers: 1",
                "  up A to 10.0.0.5:555: 3/7 bytes (43%), 2.0 KiB/s",
            ],
        )

    def test_status_down(self) -> None:
        status = dict(STATUS, tracker={"state": "waiting", "last_error": "refused", "retry_in": 2.5})
        self.assertEqual(format_status(status)[1], "tracker: not connected (refused); retrying in 2.5 s")

    def test_parse_args(self) -> None:
        self.assertEqual(
            parse_args("x", ["a", "--force"], ["A"], optional=["B"], flags=["force"]),
            {"A": "a", "B": None, "force": True},
        )
        self.assertRaises(ArgumentError, parse_args, "x", ["a", "b", "c"], ["A"], optional=["B"])
        self.assertRaises(ArgumentError, parse_args, "x", ["--force=1"], [], flags=["force"])


class SwarmFormatTests(SynchronousTestCase):
    """
    The lines of multi-source downloads (docs/shell.md).
    """

    def test_fetch_several_sources_and_resumed(self) -> None:
        result = dataclasses.replace(
            fetch_result(), contributors=(("lab-3", 40), ("lab-4", 24)), resumed=4, piece_count=64
        )
        self.assertEqual(
            format_fetch(result),
            "fetched f from 2 sources (lab-3, lab-4): 12 bytes (4 resumed from disk), sha256 verified -> /repo/f",
        )
        one = dataclasses.replace(fetch_result(), contributors=(("lab-3", 64),))
        self.assertEqual(format_fetch(one), "fetched f from lab-3: 12 bytes, sha256 verified -> /repo/f")

    def test_status_limits_served_eta_sources(self) -> None:
        status = dict(
            STATUS,
            limits={"upload_rate": 2 * 1024**2, "download_rate": 0, "max_file_size": None, "max_sources": 4},
            served={"ranges": 12, "bytes": 3145728},
            transfers=STATUS["transfers"] + [
                {"id": 2, "direction": "down", "fname": "B", "peer": "3 sources", "done": 50, "total": 100,
                 "percent": 50.0, "rate": 10.0, "current_rate": 25.0, "eta": 2.0, "sources": 3, "started": 1.0}
            ],
        )
        lines = format_status(status)
        self.assertIn(
            "limits: upload 2.0 MiB/s, download unlimited, max file size unlimited, 4 sources per download", lines
        )
        self.assertIn("served: 12 ranges, 3145728 bytes", lines)
        self.assertEqual(lines[-1], "  down B from 3 sources: 50/100 bytes (50%), 25 B/s, eta 2s, 3 sources active")

    def test_background_lines(self) -> None:
        node = FakeNode()
        shell = PeerShell(node)
        t = StringTransport()
        shell.makeConnection(t)
        t.clear()
        node.events.emit("resuming", "resuming f: 3 of 10 pieces on disk", fname="f")
        node.events.emit(
            "fetched", "fetched f from a", fname="f", source="a", size=12, sha256=SHA, verified=True,
            path="/repo/f", published=True, contributors=[["a", 7]], pieces=10, resumed=5, background=True,
        )
        node.events.emit("fetched", "fetched g from a", fname="g", source="a", size=1, sha256=SHA,
                         verified=True, path="/repo/g", published=True, background=False)
        node.events.emit("resume_failed", "resuming f failed: no live source has f; the partial download is kept")
        self.assertEqual(
            t.value().decode().splitlines(),
            [
                "resuming f: 3 of 10 pieces on disk",
                "fetched f from a: 12 bytes (5 resumed from disk), sha256 verified -> /repo/f",
                "notice: resuming f failed: no live source has f; the partial download is kept",
            ],
        )

    def test_human_seconds(self) -> None:
        from twistedp2p.peer.shell import human_seconds

        self.assertEqual([human_seconds(x) for x in (None, 0.4, 59, 61, 3600 * 2 + 65)], ["?", "0s", "59s", "1m01s", "2h01m"])
