"""
Tests for L{twistedp2p.cli}: the C{twistedp2p} console command builds the
same twistd command lines as C{./p2p}.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import twistedp2p
from twistedp2p import cli


class TwistdArgvTests(SynchronousTestCase):
    def test_tracker(self) -> None:
        self.assertEqual(
            cli.twistd_argv("tracker", ["--db", "memory"], {}),
            ["-n", "--pidfile=", "--logfile=tracker.log", "p2ptracker", "--db", "memory"],
        )

    def test_peer_logs_into_its_repo(self) -> None:
        self.assertEqual(
            cli.twistd_argv("peer", ["--repo", "alice", "--hostname", "alice"], {}),
            ["-n", "--pidfile=", "--logfile=alice/.p2p/peer.log", "p2ppeer", "--repo", "alice", "--hostname", "alice"],
        )
        self.assertEqual(cli.twistd_argv("peer", [], {})[2], "--logfile=p2p-repo/.p2p/peer.log")
        self.assertEqual(cli.twistd_argv("peer", ["--repo=b"], {})[2], "--logfile=b/.p2p/peer.log")

    def test_logfile_from_environment(self) -> None:
        self.assertEqual(cli.twistd_argv("peer", [], {"P2P_LOGFILE": "x.log"})[2], "--logfile=x.log")
        self.assertEqual(cli.twistd_argv("tracker", [], {"P2P_LOGFILE": "t.log"})[2], "--logfile=t.log")

    def test_log_format(self) -> None:
        self.assertEqual(
            cli.twistd_argv("tracker", ["--log-format", "json", "--db", "memory"], {}),
            ["-n", "--pidfile=", "--logfile=tracker.log", "--logger=twistedp2p.logs.json_logger",
             "p2ptracker", "--db", "memory"],
        )
        self.assertEqual(cli.twistd_argv("tracker", ["--log-format=text"], {})[-1], "p2ptracker")
        e = self.assertRaises(SystemExit, cli.twistd_argv, "peer", ["--log-format", "xml"], {})
        self.assertIn("json or text", str(e))


class MainTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.out = io.StringIO()
        self.err = io.StringIO()
        self.patch(sys, "stdout", self.out)
        self.patch(sys, "stderr", self.err)
        self.ran: list[list[str]] = []

    def run_twistd(self, argv: list[str]) -> int:
        self.ran.append(argv)
        return 0

    def test_version(self) -> None:
        self.assertEqual(cli.main(["--version"], self.run_twistd), 0)
        self.assertEqual(self.out.getvalue(), twistedp2p.version_text() + "\n")
        self.assertTrue(self.out.getvalue().startswith(f"twistedp2p {twistedp2p.__version__} (Twisted "))

    def test_help(self) -> None:
        self.assertEqual(cli.main([], self.run_twistd), 0)
        self.assertIn("twistedp2p tracker", self.out.getvalue())

    def test_peer_makes_its_log_directory(self) -> None:
        repo = Path(self.mktemp())
        self.assertEqual(cli.main(["peer", "--repo", str(repo), "--no-shell"], self.run_twistd), 0)
        self.assertTrue((repo / ".p2p").is_dir())
        self.assertEqual(self.ran[0][-4:], ["p2ppeer", "--repo", str(repo), "--no-shell"])

    def test_peer_version_makes_nothing(self) -> None:
        repo = Path(self.mktemp())
        cli.main(["peer", "--repo", str(repo), "--version"], self.run_twistd)
        self.assertFalse(repo.exists())

    def test_unknown_command(self) -> None:
        self.assertEqual(cli.main(["seed"], self.run_twistd), 2)
        self.assertIn("unknown command 'seed'", self.err.getvalue())
        self.assertEqual(self.ran, [])

    def test_bench_outside_a_clone(self) -> None:
        self.patch(cli, "source_tree", lambda: None)
        self.assertEqual(cli.main(["bench"], self.run_twistd), 2)
        self.assertIn("needs a clone", self.err.getvalue())

    def test_source_tree_of_this_clone(self) -> None:
        self.assertEqual(cli.source_tree(), Path(__file__).resolve().parent.parent)
