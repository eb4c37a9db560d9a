"""
Two trackers over one index (two L{MemoryStore}s sharing a L{MemoryIndex},
as two trackers share a PostgreSQL database): C{discover} and C{ping} answer
for sessions the other tracker holds.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver, StringTransport
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import Session
from twistedp2p.tracker.registry import PingResult, Registry
from twistedp2p.tracker.shell import TrackerShell, describe_ping
from twistedp2p.tracker.store.memory import MemoryIndex, MemoryStore

from tests.tracker.helpers import SHA_A, FakeLink


class TwoTrackers(SynchronousTestCase):
    """
    Trackers A and B share an index; A's probe answers from C{self.open}
    (a bool, or a Deferred the test fires later).
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        index = MemoryIndex()
        self.probed = []
        self.open = True
        self.a = Registry(MemoryStore("A", index), self.clock, "A", ping_timeout=5.0, probe=self.probe)
        self.b = Registry(MemoryStore("B", index), self.clock, "B", ping_timeout=5.0)
        self.shell = TrackerShell(self.a, quit=lambda: None)
        self.transport = StringTransport()
        self.shell.makeConnection(self.transport)

    def probe(self, ip, port):
        self.probed.append((ip, port))
        return self.open if isinstance(self.open, Deferred) else succeed(self.open)

    def hello(self, registry, hostname, port=4000, ip="10.0.0.2", version=1):
        link = FakeLink()
        self.clock.advance(1)
        session = self.successResultOf(registry.hello(link, hostname, ip, port, version))
        return session, link

    def command(self, line):
        self.transport.clear()
        self.shell.dataReceived(line.encode("utf-8") + b"\n")
        return self.transport.value().decode("utf-8").splitlines()


class RemotePingTests(TwoTrackers):
    def test_other_trackers_session_is_probed_not_pinged(self):
        session, link = self.hello(self.b, "bob")
        self.open = Deferred()
        d = self.a.ping_host("bob")
        self.assertNoResult(d)
        self.clock.advance(0.0003)
        self.open.callback(True)
        [result] = self.successResultOf(d)
        self.assertEqual(result, PingResult(session, None, True, via="B", connect_rtt=result.connect_rtt))
        self.assertAlmostEqual(result.connect_rtt, 0.0003, places=6)
        self.assertEqual(self.probed, [("10.0.0.2", 4000)])
        self.assertEqual(link.pings, [])

    def test_closed_port_has_no_connect_rtt(self):
        self.hello(self.b, "bob")
        self.open = False
        [result] = self.successResultOf(self.a.ping_host("bob"))
        self.assertEqual((result.via, result.port_open, result.connect_rtt), ("B", False, None))

    def test_local_and_remote_oldest_first(self):
        remote, _ = self.hello(self.b, "h", port=1)
        local, link = self.hello(self.a, "h", port=2)
        later, _ = self.hello(self.b, "h", port=3)
        self.hello(self.b, "other", port=4)
        d = self.a.ping_host("h")
        link.answer_all()
        results = self.successResultOf(d)
        self.assertEqual([r.session for r in results], [remote, local, later])
        self.assertEqual([r.via for r in results], ["B", None, "B"])
        self.assertEqual(results[1].rtt, 0.0)

    def test_own_stale_record_not_reported(self):
        """
        A record with this tracker's id but no live session (its removal
        still on the way) is neither pinged nor probed.
        """
        self.successResultOf(
            self.a.store.add_session(Session("A:99", "ghost", "10.0.0.9", 9, 1, 1.0, "A"))
        )
        self.assertEqual(self.successResultOf(self.a.ping_host("ghost")), [])
        self.assertEqual(self.probed, [])

    def test_index_unavailable_still_answers_local(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        _, link = self.hello(self.a, "h")
        self.a.store.sessions = lambda: fail(IndexUnavailable("database down"))
        d = self.a.ping_host("h")
        link.answer_all()
        [result] = self.successResultOf(d)
        self.assertIsNone(result.via)
        warnings = [e for e in logged if e["log_level"] == LogLevel.warn]
        self.assertEqual([e["error"] for e in warnings], ["database down"])


class RemoteShellTests(TwoTrackers):
    def test_ping_via_other_tracker(self):
        self.hello(self.b, "bob", port=4100)
        self.open = Deferred()
        self.transport.clear()
        self.shell.dataReceived(b"ping bob\n")
        self.clock.advance(0.00031)
        self.open.callback(True)
        self.assertEqual(
            self.transport.value().decode(),
            "bob (10.0.0.2:4100): online (via tracker B), p2p port open, connect rtt 0.31 ms\n",
        )

    def test_ping_via_other_tracker_port_closed(self):
        self.hello(self.b, "bob")
        self.open = False
        self.assertEqual(self.command("ping bob"), ["bob (10.0.0.2:4000): online (via tracker B), p2p port closed"])

    def test_ping_via_other_tracker_without_probe(self):
        self.hello(self.b, "bob")
        self.a.probe = None
        self.assertEqual(self.command("ping bob"), ["bob (10.0.0.2:4000): online (via tracker B)"])

    def test_discover_other_trackers_session(self):
        session, _ = self.hello(self.b, "bob")
        self.successResultOf(self.b.publish(session.session_id, "notes.pdf", None, 10, 1.0, SHA_A, False))
        lines = self.command("discover bob")
        self.assertEqual(lines[1].split(), ["notes.pdf", "10", "B", SHA_A[:12], "10.0.0.2:4000"])

    def test_describe_ping_local_unchanged(self):
        """
        This tracker's own sessions keep their wording (the connect time
        is only shown where it is the only measure).
        """
        session = Session("A:1", "a", "10.0.0.1", 4000, 1, 1.0, "A")
        self.assertEqual(
            describe_ping(PingResult(session, 0.00041, True, connect_rtt=0.0002), 5.0),
            "a (10.0.0.1:4000): online, rtt 0.41 ms, p2p port open",
        )
