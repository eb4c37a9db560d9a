"""
Tests for L{twistedp2p.peer.shell.PeerShell} with a fake node.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.download import FetchResult, SourceInfo
from twistedp2p.peer.events import Events
from twistedp2p.peer.node import PublishResult, UnpublishResult
from twistedp2p.peer.progress import FetchProgress
from twistedp2p.peer.shell import (
    LOCAL_PATHS_TTL,
    list_local_paths,
    PeerShell,
    format_fetch,
    format_publish,
    format_search,
    format_status,
    parse_args,
    ArgumentError,
)

from tests.peer.helpers import NODE_STATUS as STATUS, SHA_AB as SHA


def fetch_result(verified: bool = True, published: bool = True, fingerprint: str | None = "0123456789abcdef"):
    src = SourceInfo(
        "lab-3", "10.0.0.3", 4000, "f", "f", 12, SHA if verified else None, 1, fingerprint=fingerprint
    )
    return FetchResult("f", "/repo/f", 12, SHA, verified, src, published=published)


class FakeNode:
    def __init__(self) -> None:
        self.hostname = "me"
        self.p2p_port = 4321
        self.library = SimpleNamespace(repo="/repo")
        self.clock = Clock()
        self.events = Events(self.clock)
        self.calls: list[tuple[str, tuple, dict, Deferred]] = []
        self.paused: dict = {}

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Deferred:
        d: Deferred = Deferred()
        self.calls.append((name, args, kwargs, d))
        return d

    def publish_any(self, lname, fname=None, force=False):
        d = self._call("publish", lname, fname, force=force)
        return d.addCallback(lambda r: r if isinstance(r, list) else [r])

    def fetch_folder(self, folder, source=None, force=False, progress=None):
        return self._call("fetch_folder", folder, source=source, force=force, progress=progress)

    def unpublish(self, fname):
        return self._call("unpublish", fname)

    def fetch(self, fname, source=None, force=False, progress=None):
        return self._call("fetch", fname, source=source, force=force, progress=progress)

    def search(self, pattern=""):
        return self._call("search", pattern)

    def pause(self, fname):
        return self._call("pause", fname)

    def cancel(self, fname):
        return self._call("cancel", fname)

    def resume(self, fname, progress=None):
        return self._call("resume", fname, progress=progress)

    def fetching(self):
        return sorted(c[1][0] for c in self.calls if c[0] in ("fetch", "resume") and not c[3].called)

    def status(self):
        return STATUS


class ShellDriver:
    """
    Types into C{self.shell} and reads what it printed on C{self.transport}.
    """

    def on_exit(self) -> None:
        self.exits += 1

    def type(self, text: str) -> None:
        self.shell.dataReceived(text.encode("utf-8"))

    def output(self) -> list[str]:
        lines = self.transport.value().decode("utf-8").splitlines()
        self.transport.clear()
        return lines


class ShellTests(ShellDriver, SynchronousTestCase):
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
        self.assertEqual((args, kwargs["source"], kwargs["force"]), (("f",), "lab-3", True))
        self.assertIsInstance(kwargs["progress"], FetchProgress)
        d.callback(fetch_result())
        self.assertEqual(self.output(), ["fetched f from lab-3: 12 bytes, sha256 verified -> /repo/f"])

    def test_fetch_from_equals(self) -> None:
        self.type("fetch f --from=lab-3\n")
        self.assertEqual(self.node.calls[0][2]["source"], "lab-3")

    def test_error_lines(self) -> None:
        self.type('publish "unclosed\nfrobnicate\npublish one two three\nfetch f --bogus\nfetch f --from\n')
        self.assertEqual(
            self.output(),
            [
                "error: cannot parse the line (No closing quotation)",
                "error: unknown command 'frobnicate'; type help",
                "error: usage: publish LNAME [FNAME] [--force]",
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
        """
        Not a terminal: a short fetch prints only its result; a long one a
        plain progress line every 10 seconds.
        """
        self.type("fetch f\n")
        progress = self.node.calls[0][2]["progress"]
        self.node.clock.advance(1)
        progress(50, 100)
        self.assertEqual(self.output(), [])
        self.node.clock.advance(9)
        progress(60, 100)
        self.assertEqual(self.output(), ["progress f: 60% (60 B of 100 B), 1 B/s, eta 36s"])
        self.node.clock.advance(5)
        progress(70, 100)
        self.assertEqual(self.output(), [])
        self.node.calls[0][3].callback(fetch_result())
        self.assertNotIn(b"\r", self.transport.value())

    def test_progress_bar_on_tty(self) -> None:
        shell = PeerShell(self.node, on_exit=self.on_exit, is_tty=True)
        t = StringTransport()
        shell.makeConnection(t)
        t.clear()
        shell.dataReceived(b"fetch f\n")
        progress = self.node.calls[0][2]["progress"]
        self.node.clock.advance(1)
        progress(50, 100)
        self.assertTrue(t.value().startswith(b"\rf ["), t.value())
        self.assertIn(b" 50%  50 B of 100 B  50 B/s  eta 1s", t.value())
        t.clear()
        # Another line is printed above the bar, which is redrawn.
        shell.dataReceived(b"status\n")
        self.assertTrue(t.value().startswith(b"\r\x1b[Kpeer me"))
        self.assertTrue(t.value().endswith(b"\x1b[K"))
        t.clear()
        self.node.calls[0][3].callback(fetch_result())
        self.assertTrue(t.value().startswith(b"\r\x1b[K"))
        self.assertIn(b"fetched f from lab-3", t.value())
        self.assertTrue(t.value().endswith(b"\n"))

    def test_connection_lost(self) -> None:
        self.type("search\n")
        self.shell.connectionLost(None)
        self.node.calls[0][3].callback([])
        self.assertEqual(self.exits, 1)


class InteractiveTests(ShellDriver, SynchronousTestCase):
    """
    stdin is a terminal: fetches run in the background.
    """

    def setUp(self) -> None:
        self.node = FakeNode()
        self.exits = 0
        self.shell = PeerShell(self.node, on_exit=self.on_exit, is_tty=False, interactive=True)
        self.transport = StringTransport()
        self.shell.makeConnection(self.transport)
        self.transport.clear()

    def test_commands_answered_during_fetches(self) -> None:
        self.type("fetch f\nfetch g\nsearch x\n")
        self.assertEqual([(c[0], c[1]) for c in self.node.calls], [("fetch", ("f",)), ("fetch", ("g",)), ("search", ("x",))])
        self.node.calls[2][3].callback([])
        self.assertEqual(self.output(), ["0 files"])
        self.node.calls[1][3].callback(fetch_result())
        self.assertEqual(self.output(), ["fetched f from lab-3: 12 bytes, sha256 verified -> /repo/f"])
        self.node.calls[0][3].errback(errors.NoSources("no live source has f"))
        self.assertEqual(self.output(), ["error: no live source has f"])

    def test_end_of_input_waits_for_transfers(self) -> None:
        self.type("fetch f\n")
        self.shell.readConnectionLost()
        self.assertEqual(self.output(), ["waiting for 1 transfer... (Ctrl-C stops them; they resume later)"])
        self.assertEqual(self.exits, 0)
        self.node.calls[0][3].callback(fetch_result())
        self.assertEqual(self.exits, 1)

    def test_end_of_input_waits_for_a_resume_behind_an_inner_deferred(self) -> None:
        """
        resume's Deferred waits on another one (the fetch) after a first
        step: it is still a transfer to wait for.
        """
        inner: Deferred = Deferred()
        self.node.resume = lambda fname, progress=None: succeed(None).addCallback(lambda _: inner)
        self.type("resume f\n")
        self.shell.readConnectionLost()
        self.assertEqual(self.output(), ["waiting for 1 transfer... (Ctrl-C stops them; they resume later)"])
        self.assertEqual(self.exits, 0)
        inner.callback(fetch_result())
        self.assertEqual(self.exits, 1)

    def test_quit_waits_for_transfers(self) -> None:
        self.type("fetch f\nquit\n")
        self.assertEqual(self.output(), ["bye", "waiting for 1 transfer... (Ctrl-C stops them; they resume later)"])
        self.node.calls[0][3].callback(fetch_result())
        self.assertEqual(self.exits, 1)

    def test_interrupted_is_one_line(self) -> None:
        """
        A stopped fetch prints the node's one line, not an error.
        """
        self.type("fetch f\n")
        text = "interrupted: f, 3 of 8 pieces kept; the next fetch resumes it"
        self.node.events.emit("stopped", text, fname="f", reason="interrupted", kept=3, pieces=8)
        self.node.calls[0][3].errback(errors.Interrupted(text, fname="f", kept=3, pieces=8))
        self.assertEqual(self.output(), [text])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_already_have(self) -> None:
        self.type("fetch f\n")
        message = "f: already here, same content (sha256 abababababab) -> /repo/f"
        self.node.calls[0][3].errback(errors.AlreadyHave(message, path="/repo/f", sha256=SHA))
        self.assertEqual(self.output(), [message])

    def test_pause_resume_cancel(self) -> None:
        self.type("fetch 'my file'\npause 'my file'\n")
        self.assertEqual([c[0] for c in self.node.calls], ["fetch", "pause"])
        self.node.calls[1][3].callback((1, 4))
        self.assertEqual(self.output(), [])
        self.type("resume 'my file'\ncancel other\n")
        self.assertEqual([(c[0], c[1]) for c in self.node.calls[2:]], [("resume", ("my file",)), ("cancel", ("other",))])
        self.assertIsInstance(self.node.calls[2][2]["progress"], FetchProgress)
        self.node.calls[3][3].callback((0, None))
        self.assertEqual(self.output(), ["cancelled: other, partial download removed"])
        self.type("pause nope\n")
        self.node.calls[4][3].errback(errors.TransferFailed("nope is not being fetched"))
        self.assertEqual(self.output(), ["error: nope is not being fetched"])

    def test_transfers(self) -> None:
        self.node.paused = {"p q": (2, 5)}
        self.type("fetch new\ntransfers\n")
        self.assertEqual(
            self.output(),
            [
                "transfers: 3",
                "  up A to 10.0.0.5:555: 3 B of 7 B (43%), 2.0 KiB/s",
                "  down new: looking for sources",
                "  paused 'p q': 2 of 5 pieces kept; resume 'p q' continues it",
            ],
        )


class CompletionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.node = FakeNode()
        self.node.library = SimpleNamespace(repo="/repo", entries=lambda: [SimpleNamespace(fname="mine.txt")])
        self.node.paused = {"p.bin": (1, 2)}
        self.shell = PeerShell(self.node, is_tty=False, interactive=True)
        self.shell.makeConnection(StringTransport())

    def test_commands(self) -> None:
        names = self.shell.complete([], "")
        for command in ("fetch", "search", "transfers", "pause", "resume", "cancel", "publish", "quit"):
            self.assertIn(command, names)

    def test_catalogue_is_fetched_in_the_background_and_cached(self) -> None:
        self.assertEqual(self.shell.complete(["fetch"], "d"), [])
        [(name, args, _, d)] = self.node.calls
        self.assertEqual((name, args), ("search", ("",)))
        d.callback([{"fname": "data.bin", "hostnames": ["alice", "me"]}, {"fname": "b c", "hostnames": ["bob"]}])
        self.assertEqual(self.shell.complete(["fetch"], "d"), ["b c", "data.bin"])
        self.assertEqual(self.shell.complete(["fetch", "data.bin", "--from"], ""), ["alice", "bob"])
        self.assertEqual(len(self.node.calls), 1)
        # Stale after CATALOGUE_TTL: asked again, still answering from the cache.
        self.node.clock.advance(PeerShell.CATALOGUE_TTL + 1)
        self.assertEqual(self.shell.complete(["fetch"], ""), ["b c", "data.bin"])
        self.assertEqual(len(self.node.calls), 2)

    def test_names_by_command(self) -> None:
        self.assertEqual(self.shell.complete(["unpublish"], ""), ["mine.txt"])
        self.assertEqual(self.shell.complete(["fetch"], "--f"), ["--from", "--force"])
        self.type_fetch()
        self.assertEqual(self.shell.complete(["pause"], ""), ["x", "p.bin"])

    def type_fetch(self) -> None:
        self.shell.dataReceived(b"fetch x\n")


class LocalPathCompletionTests(SynchronousTestCase):
    """
    publish's first argument completes local files and folders, from a
    listing read in a thread and cached.
    """

    def setUp(self) -> None:
        base = Path(self.mktemp()).resolve()
        self.repo = base / "repo"
        self.share = base / "share"
        for path in ("a.txt", "docs/b.txt", "docs/sub/c.txt", "my dir/d.txt", ".p2p/library.json",
                     ".x.part", "docs/.hidden"):
            (self.repo / path).parent.mkdir(parents=True, exist_ok=True)
            (self.repo / path).write_text("x")
        self.share.mkdir()
        (self.share / "e.txt").write_text("x")
        self.node = FakeNode()
        self.node.library = SimpleNamespace(
            repo=str(self.repo), share_roots=(self.share,), entries=lambda: [SimpleNamespace(fname="mine.txt")]
        )
        self.runs: list[tuple[Any, Deferred]] = []

        def run_in_thread(f: Any, *args: Any) -> Deferred:
            d: Deferred = Deferred()
            self.runs.append((lambda: f(*args), d))
            return d

        self.shell = PeerShell(self.node, is_tty=True, interactive=True, run_in_thread=run_in_thread)
        self.shell.makeConnection(StringTransport())

    def finish_listing(self) -> None:
        work, d = self.runs.pop(0)
        d.callback(work())

    def test_listing(self) -> None:
        paths = list_local_paths(self.repo, [self.share])
        self.assertEqual(
            paths[:4], ["a.txt", "docs/", "my dir/", str(self.share / "e.txt")]
        )
        self.assertEqual(sorted(paths[4:]), ["docs/b.txt", "docs/sub/", "docs/sub/c.txt", "my dir/d.txt"])
        # Bounded, the shallowest names first.
        self.assertEqual(list_local_paths(self.repo, [self.share], limit=2), ["a.txt", "docs/"])

    def test_first_argument_of_publish(self) -> None:
        # Read in a thread when the shell starts; nothing yet to offer.
        self.assertEqual(len(self.runs), 1)
        self.assertEqual(self.shell.complete(["publish"], ""), [])
        self.assertEqual(len(self.runs), 1)
        self.finish_listing()
        self.assertEqual(self.shell.complete(["publish"], ""), ["/", "a.txt", "docs/", "my dir/"])
        self.assertEqual(self.shell.complete(["publish"], "docs/"), ["docs/b.txt", "docs/sub/"])
        self.assertEqual(self.shell.complete(["publish"], "docs/s"), ["docs/sub/"])
        self.assertEqual(self.shell.complete(["publish", "--force"], "m"), ["my dir/"])
        share = str(self.share) + "/"
        self.assertEqual(self.shell.complete(["publish"], share), [share + "e.txt"])
        # The second argument is a shared name.
        self.assertEqual(self.shell.complete(["publish", "a.txt"], ""), ["mine.txt"])

    def test_listing_is_cached_then_read_again(self) -> None:
        self.finish_listing()
        (self.repo / "new.txt").write_text("x")
        self.assertNotIn("new.txt", self.shell.complete(["publish"], ""))
        self.assertEqual(self.runs, [])
        self.node.clock.advance(LOCAL_PATHS_TTL + 1)
        # Stale: the cache answers while the listing is read again.
        self.assertNotIn("new.txt", self.shell.complete(["publish"], ""))
        self.finish_listing()
        self.assertIn("new.txt", self.shell.complete(["publish"], ""))

    def test_a_failed_listing_keeps_the_shell_going(self) -> None:
        _, d = self.runs.pop(0)
        d.errback(OSError("gone"))
        self.assertEqual(self.shell.complete(["publish"], ""), [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class FormatTests(SynchronousTestCase):
    def test_fetch_unverified(self) -> None:
        self.assertEqual(
            format_fetch(fetch_result(verified=False, fingerprint=None)),
            f"fetched f from lab-3 (unauthenticated): 12 bytes, unverified (seed source), sha256 {SHA} -> /repo/f",
        )

    def test_fetch_from_unauthenticated_source(self) -> None:
        """
        A source the tracker lists without a key fingerprint is named as
        unauthenticated, verified bytes or not.
        """
        self.assertEqual(
            format_fetch(fetch_result(fingerprint=None)),
            "fetched f from lab-3 (unauthenticated): 12 bytes, sha256 verified -> /repo/f",
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
                "     SIZE  SOURCES  SHA256        NAME",
                "100.0 KiB        2  abababababab  notes.pdf",
                "        ?        1  unverified    'seed file'",
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
                "  NAME  SIZE  SHA256        PATH",
                f"  A      7 B  {SHA[:12]}  /repo/a",
                "transfers: 1",
                "  up A to 10.0.0.5:555: 3 B of 7 B (43%), 2.0 KiB/s",
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

    def test_fetch_several_sources_marks_the_unauthenticated(self) -> None:
        """
        A multi-source download names each contributor that had no key
        fingerprint (issue 15 item 4), as a single source is named.
        """
        result = dataclasses.replace(
            fetch_result(),
            contributors=(("alice", 40), ("bob", 20), ("carol", 4)),
            contributor_keys=("0123456789abcdef", None, "fedcba9876543210"),
        )
        self.assertEqual(
            format_fetch(result),
            "fetched f from 3 sources (alice, bob (unauthenticated), carol): 12 bytes, sha256 verified -> /repo/f",
        )

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
        self.assertIn("served: 12 ranges, 3.0 MiB", lines)
        self.assertEqual(lines[-1], "  down B from 3 sources: 50 B of 100 B (50%), 25 B/s, eta 2s, 3 sources active")

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
        node.events.emit(
            "fetched", "fetched h from a", fname="h", source="a", size=12, sha256=SHA, verified=True,
            path="/repo/h", published=True, contributors=[["a", 7], ["b", 3]], contributor_keys=[None, "0" * 16],
            pieces=10, resumed=0, background=True, authenticated=False,
        )
        node.events.emit(
            "fetched", "fetched i from a", fname="i", source="a", size=12, sha256=SHA, verified=True,
            path="/repo/i", published=True, contributors=[["a", 10]], contributor_keys=[None],
            pieces=10, resumed=0, background=True, authenticated=False,
        )
        node.events.emit("fetched", "fetched g from a", fname="g", source="a", size=1, sha256=SHA,
                         verified=True, path="/repo/g", published=True, background=False)
        node.events.emit("resume_failed", "resuming f failed: no live source has f; the partial download is kept")
        self.assertEqual(
            t.value().decode().splitlines(),
            [
                "resuming f: 3 of 10 pieces on disk",
                "fetched f from a: 12 bytes (5 resumed from disk), sha256 verified -> /repo/f",
                "fetched h from 2 sources (a (unauthenticated), b): 12 bytes, sha256 verified -> /repo/h",
                "fetched i from a (unauthenticated): 12 bytes, sha256 verified -> /repo/i",
                "notice: resuming f failed: no live source has f; the partial download is kept",
            ],
        )

    def test_human_seconds(self) -> None:
        from twistedp2p.peer.shell import human_seconds

        self.assertEqual([human_seconds(x) for x in (None, 0.4, 59, 61, 3600 * 2 + 65)], ["?", "0s", "59s", "1m01s", "2h01m"])
