"""
The admin shell over a L{StringTransport}.
"""

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.identity import fingerprint
from twistedp2p.tracker.registry import Registry
from twistedp2p.tracker.shell import TrackerShell, table
from twistedp2p.tracker.store.memory import MemoryStore

from tests.tracker.helpers import SHA_A, FakeLink


class ShellTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.open_ports = {("10.0.0.1", 4000)}
        self.registry = Registry(
            MemoryStore(),
            self.clock,
            "t",
            ping_timeout=5.0,
            probe=lambda ip, port: succeed((ip, port) in self.open_ports),
        )
        self.quits = []
        self.shell = TrackerShell(self.registry, quit=lambda: self.quits.append(True))
        self.transport = StringTransport()
        self.shell.makeConnection(self.transport)

    def command(self, line):
        self.transport.clear()
        self.shell.dataReceived(line.encode("utf-8") + b"\n")
        return self.transport.value().decode("utf-8").splitlines()

    def hello(self, hostname, port=4000, version=1, ip="10.0.0.1"):
        link = FakeLink()
        session = self.successResultOf(self.registry.hello(link, hostname, ip, port, version))
        return session, link

    def test_no_prompt_when_not_interactive(self):
        self.assertEqual(self.command("help")[0].split(), ["command", "what", "it", "does"])
        self.assertFalse(self.transport.value().endswith(b"tracker> "))

    def test_prompt_when_interactive(self):
        shell = TrackerShell(self.registry, quit=lambda: None, interactive=True)
        t = StringTransport()
        shell.makeConnection(t)
        self.assertTrue(t.value().endswith(b"tracker> "))
        t.clear()
        shell.dataReceived(b"peers\n")
        self.assertEqual(t.value(), b"no live sessions\ntracker> ")

    def test_help_lists_commands(self):
        text = "\n".join(self.command("help"))
        for command in ["peers", "files", "discover", "ping", "help", "quit"]:
            self.assertIn(command, text)

    def test_unknown_command(self):
        self.assertEqual(self.command("frobnicate now"), ["error: unknown command 'frobnicate'; try 'help'"])

    def test_wrong_arguments(self):
        self.assertEqual(self.command("discover"), ["error: usage: discover HOSTNAME"])
        self.assertEqual(self.command("ping"), ["error: usage: ping HOSTNAME"])
        self.assertEqual(self.command("peers extra"), ["error: peers takes no arguments"])

    def test_bad_utf8_and_blank(self):
        self.transport.clear()
        self.shell.dataReceived(b"\xff\xfe\n")
        self.assertEqual(self.transport.value(), b"error: that line is not valid UTF-8\n")
        self.assertEqual(self.command("   "), [])

    def test_long_line(self):
        self.transport.clear()
        self.shell.dataReceived(b"x" * (TrackerShell.MAX_LENGTH + 10) + b"\n")
        self.assertTrue(self.transport.value().startswith(b"error: line longer than"))
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.command("peers"), ["no live sessions"])

    def test_peers(self):
        s, _ = self.hello("lab-pc", 4000, version=1)
        self.hello("old-pc", 5000, version=None, ip="10.0.0.2")
        self.successResultOf(self.registry.publish(s.session_id, "a", None, 1, 1.0, SHA_A, False))
        self.clock.advance(12)
        lines = self.command("peers")
        self.assertEqual(
            lines[0].split(), ["hostname", "address", "version", "connected", "since", "last", "seen", "files", "key"]
        )
        self.assertEqual(lines[1].split()[:3], ["lab-pc", "10.0.0.1:4000", "1"])
        self.assertEqual(lines[1].split()[-4:], ["12s", "ago", "1", "unauthenticated"])
        self.assertEqual(lines[2].split()[:3], ["old-pc", "10.0.0.2:5000", "seed"])
        self.assertEqual(lines[2].split()[-2:], ["0", "unauthenticated"])

    def test_peers_shows_key_and_forget(self):
        key = "ab" * 32
        self.successResultOf(self.registry.hello(FakeLink(), "alice", "10.0.0.1", 4000, 1, key))
        self.assertEqual(self.command("peers")[1].split()[-1], fingerprint(key))
        self.assertEqual(self.command("forget"), ["error: usage: forget HOSTNAME"])
        self.assertEqual(self.command("forget bob"), ["bob: no key bound"])
        [line] = self.command("forget alice")
        self.assertTrue(line.startswith(f"alice: forgot key {fingerprint(key)};"), line)
        self.assertEqual(self.command("forget alice"), ["alice: no key bound"])

    def test_files(self):
        a, _ = self.hello("a", 1)
        b, _ = self.hello("b", 2)
        for s in (a, b):
            self.successResultOf(self.registry.publish(s.session_id, "notes.pdf", None, 10, 1.0, SHA_A, False))
        self.successResultOf(self.registry.publish(b.session_id, "x.txt", "x.txt", None, None, None, False))
        lines = self.command("files")
        self.assertEqual(lines[0].split(), ["name", "size", "sha256", "sources", "hosts"])
        self.assertEqual(lines[1].split(), ["notes.pdf", "10", "B", SHA_A[:12], "2", "a,b"])
        self.assertEqual(lines[2].split(), ["x.txt", "?", "-", "1", "b"])
        self.assertEqual([l.split()[0] for l in self.command("files *.PDF")[1:]], ["notes.pdf"])
        self.assertEqual(self.command("files zzz"), ["no files match 'zzz'"])

    def test_files_human_quoted_and_aligned(self):
        a, _ = self.hello("a", 1)
        self.successResultOf(self.registry.publish(a.session_id, "日本語 レポート.pdf", None, 3 * 1024**2, 1.0, SHA_A, False))
        self.successResultOf(self.registry.publish(a.session_id, "b.txt", None, 1536, 1.0, SHA_A, False))
        lines = self.command("files")
        self.assertEqual(
            lines,
            [
                "name                      size  sha256        sources  hosts",
                "b.txt                  1.5 KiB  aaaaaaaaaaaa        1  a",
                "'日本語 レポート.pdf'  3.0 MiB  aaaaaaaaaaaa        1  a",
            ],
        )
        # A name printed quoted can be pasted back.
        self.assertEqual(len(self.command("files '日本語 レポート.pdf'")), 2)

    def test_evict(self):
        s, link = self.hello("a", 4000)
        self.successResultOf(self.registry.publish(s.session_id, "n.pdf", None, 10, 1.0, SHA_A, False))
        self.assertEqual(
            self.command("evict a"),
            [f"evicted a (10.0.0.1:4000, session {s.session_id}): its files are unlisted"],
        )
        self.assertEqual(self.registry.peers(), [])
        self.assertTrue(link.closed)
        self.assertEqual(self.command("files"), ["no files"])
        self.assertEqual(self.command("evict a"), ["error: no live session of a on this tracker (see 'peers')"])
        self.assertEqual(self.command("evict"), ["error: usage: evict HOST"])
        s2, _ = self.hello("b", 5000, ip="10.0.0.2")
        self.assertEqual(len(self.command("evict 10.0.0.2:5000")), 1)

    def test_end_of_input_on_a_terminal(self):
        shell = TrackerShell(self.registry, quit=lambda: None, interactive=True)
        t = StringTransport()
        shell.makeConnection(t)
        t.clear()
        shell.readConnectionLost()
        self.assertEqual(t.value(), b"shell closed; the tracker is still running (stop it with Ctrl-C)\n")
        self.assertEqual(self.quits, [])

    def test_files_in_a_folder(self):
        a, _ = self.hello("a", 1)
        for name in ("docs/a.txt", "docs/sub/b c.txt", "mydocs/x", "docs.txt"):
            self.successResultOf(self.registry.publish(a.session_id, name, None, 10, 1.0, SHA_A, False))
        self.assertEqual(
            [l.split()[0] for l in self.command("files docs/")[1:]], ["docs/a.txt", "'docs/sub/b"]
        )
        self.assertEqual(self.command("files none/"), ["no files match 'none/'"])
        self.assertEqual(len(self.command("files docs")) - 1, 4, "a substring as before")

    def test_completion(self):
        self.hello("lab-pc", 4000)
        self.hello("old-pc", 5000, ip="10.0.0.2")
        self.assertIn("evict", self.shell.complete([], ""))
        self.assertEqual(self.shell.complete(["ping"], ""), ["lab-pc", "old-pc"])
        self.assertEqual(self.shell.complete(["files"], ""), [])
        self.command("files")
        self.assertEqual(self.shell.complete(["peers"], ""), [])

    def test_discover(self):
        a, _ = self.hello("a", 4000)
        self.successResultOf(self.registry.publish(a.session_id, "notes.pdf", None, 10, 1.0, SHA_A, False))
        lines = self.command("discover a")
        self.assertEqual(lines[1].split(), ["notes.pdf", "10", "B", SHA_A[:12], "10.0.0.1:4000"])
        self.assertEqual(self.command("discover nobody"), ["nobody: no published files (or not online)"])

    def test_ping_native(self):
        _, link = self.hello("a", 4000)
        self.transport.clear()
        self.shell.dataReceived(b"ping a\n")
        self.assertEqual(self.transport.value(), b"")
        self.clock.advance(0.00041)
        link.answer_all()
        self.assertEqual(
            self.transport.value().decode(),
            "a (10.0.0.1:4000): online, rtt 0.41 ms, p2p port open\n",
        )

    def test_ping_native_silent_port_closed(self):
        self.hello("a", 4001)
        self.transport.clear()
        self.shell.dataReceived(b"ping a\n")
        self.clock.advance(5)
        self.assertEqual(
            self.transport.value().decode(),
            "a (10.0.0.1:4001): no answer to ping within 5 s, p2p port closed\n",
        )

    def test_ping_seed_and_offline(self):
        self.hello("old", 4000, version=None)
        self.assertEqual(self.command("ping old"), ["old (10.0.0.1:4000): online (seed client, no wire ping), p2p port open"])
        self.assertEqual(self.command("ping nobody"), ["nobody: offline"])

    def test_quit(self):
        self.assertEqual(self.command("quit"), ["stopping the tracker"])
        self.assertEqual(self.quits, [True])

    def test_end_of_input_keeps_tracker(self):
        """
        stdin closing does not stop the tracker, and an answer still on its
        way is printed.
        """
        _, link = self.hello("a", 4000)
        self.transport.clear()
        self.shell.dataReceived(b"ping a\n")
        self.shell.readConnectionLost()
        link.answer_all()
        self.assertEqual(self.quits, [])
        self.assertIn(b"a (10.0.0.1:4000): online", self.transport.value())
        self.shell.connectionLost(None)
        self.transport.clear()
        self.shell.say("after the end")
        self.assertEqual(self.transport.value(), b"")

    def test_command_failure_is_one_line(self):
        def broken(*args):
            raise RuntimeError("kaboom")

        self.registry.catalogue = broken
        self.assertEqual(self.command("files"), ["error: files failed: kaboom"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_table(self):
        self.assertEqual(table(["a", "bb"], [["ccc", "d"]]), ["a    bb", "ccc  d"])
