"""
Tests for L{twistedp2p.peer.tracker_link}: the failover endpoint and the
tracker session, on a Clock with fake endpoints.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from twistedp2p import errors, identity
from twistedp2p.peer.events import Events
from twistedp2p.peer.tracker_link import CONNECTED, WAITING, FailoverEndpoint, TrackerLink, reconnect_policy

from .helpers import all_frames, frame


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """
    Records connection attempts; the test decides how each ends.
    """

    def __init__(self) -> None:
        self.attempts: list[tuple[Deferred, Any]] = []
        self.cancelled = 0

    def connect(self, factory: Any) -> Deferred:
        def cancel(d: Deferred) -> None:
            self.cancelled += 1

        d: Deferred = Deferred(cancel)
        self.attempts.append((d, factory))
        return d

    def succeed(self) -> tuple[Any, StringTransport]:
        d, factory = self.attempts[-1]
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        d.callback(proto)
        return proto, transport

    def refuse(self) -> None:
        d, _ = self.attempts[-1]
        d.errback(ConnectionRefusedError("refused"))


class FailoverEndpointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.a, self.b = FakeEndpoint(), FakeEndpoint()
        self.seen: list[tuple] = []
        self.ep = FailoverEndpoint(
            [("A", self.a), ("B", self.b)], lambda kind, label, **info: self.seen.append((kind, label, info))
        )

    def test_first_works(self) -> None:
        d = self.ep.connect(Factory.forProtocol(Protocol))
        self.a.succeed()
        self.successResultOf(d)
        self.assertEqual(self.ep.current, "A")
        self.assertEqual([s[:2] for s in self.seen], [("attempt", "A"), ("connected", "A")])

    def test_moves_to_next_on_failure(self) -> None:
        d = self.ep.connect(Factory.forProtocol(Protocol))
        self.a.refuse()
        self.assertNoResult(d)
        self.b.succeed()
        self.successResultOf(d)
        self.assertEqual(self.ep.current, "B")
        self.assertEqual(self.seen[1][0:2], ("failed", "A"))
        self.assertEqual(self.seen[1][2]["next"], "B")

    def test_all_fail(self) -> None:
        d = self.ep.connect(Factory.forProtocol(Protocol))
        self.a.refuse()
        self.b.refuse()
        self.failureResultOf(d, ConnectionRefusedError)
        self.assertEqual(self.seen[-1][0], "exhausted")
        # The next round starts where the list wrapped to.
        self.assertEqual(self.ep.current, "A")

    def test_advance_after_loss(self) -> None:
        self.ep.advance()
        d = self.ep.connect(Factory.forProtocol(Protocol))
        self.assertEqual((len(self.a.attempts), len(self.b.attempts)), (0, 1))
        self.b.succeed()
        self.successResultOf(d)

    def test_cancel(self) -> None:
        d = self.ep.connect(Factory.forProtocol(Protocol))
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.a.cancelled, 1)
        self.assertEqual(len(self.b.attempts), 0)

    def test_needs_an_endpoint(self) -> None:
        self.assertRaises(ValueError, FailoverEndpoint, [])


class TrackerLinkTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events(self.clock)
        self.lines: list[str] = []
        self.events.subscribe(lambda e: self.lines.append(e.message) if e.kind == "link" else None)
        self.a, self.b = FakeEndpoint(), FakeEndpoint()
        self.sessions: list[Any] = []
        self.link = TrackerLink(
            [("A", self.a), ("B", self.b)],
            hello_fields=lambda: {"hostname": "me", "p2p_port": 4242},
            on_session=self.on_session,
            clock=self.clock,
            events=self.events,
            retry_policy=lambda attempt: 1.0,
            request_timeout=30,
        )

    def on_session(self, protocol: Any) -> Any:
        self.sessions.append(protocol)
        return succeed(None)

    def hello(self, endpoint: FakeEndpoint, answer: dict | None = None):
        proto, t = endpoint.succeed()
        [hello] = all_frames(t.value())
        t.clear()
        reply = {"status": "success", "id": hello["id"], "address": "10.1.1.1", "session": "s:1"}
        if answer is not None:
            reply = dict(answer, id=hello["id"])
        proto.dataReceived(frame(reply))
        return proto, t, hello

    def test_hello_and_announce(self) -> None:
        self.link.startService()
        proto, t, hello = self.hello(self.a)
        self.assertEqual(
            hello, {"action": "hello", "id": 1, "hostname": "me", "p2p_port": 4242, "version": 1}
        )
        self.assertEqual(self.link.state, CONNECTED)
        self.assertEqual(len(self.sessions), 1)
        self.assertEqual(self.lines, ["tracker link: connected to A"])
        status = self.link.status()
        self.assertEqual((status["tracker"], status["address"], status["session"]), ("A", "10.1.1.1", "s:1"))

    def test_request_when_connected(self) -> None:
        self.link.startService()
        proto, t, _ = self.hello(self.a)
        d = self.link.request("search", pattern="x")
        [sent] = all_frames(t.value())
        self.assertEqual(sent["action"], "search")
        proto.dataReceived(frame({"status": "success", "id": sent["id"], "files": []}))
        self.assertEqual(self.successResultOf(d)["files"], [])

    def test_request_waits_for_first_attempt(self) -> None:
        self.link.startService()
        d = self.link.request("search")
        self.assertNoResult(d)
        proto, t, _ = self.hello(self.a)
        [sent] = all_frames(t.value())
        self.assertEqual(sent["action"], "search")

    def test_request_fails_when_first_round_fails(self) -> None:
        self.link.startService()
        d = self.link.request("search")
        self.a.refuse()
        self.assertNoResult(d)
        self.b.refuse()
        f = self.failureResultOf(d, errors.TrackerUnavailable)
        self.assertIn("not connected to the tracker", str(f.value))
        self.assertEqual(self.link.state, WAITING)
        self.assertEqual(
            self.lines,
            [
                "tracker link: cannot reach A (Connection was refused by other side: refused.), trying B",
                "tracker link: cannot reach A, B (Connection was refused by other side: refused.),"
                " retrying in the background",
            ],
        )

    def test_fails_fast_while_waiting(self) -> None:
        self.link.startService()
        self.a.refuse()
        self.b.refuse()
        self.failureResultOf(self.link.request("search"), errors.TrackerUnavailable)
        self.assertEqual(self.link.status()["retry_in"], 1.0)

    def test_quiet_while_down(self) -> None:
        self.link.startService()
        for _ in range(5):
            self.a.refuse()
            self.b.refuse()
            self.clock.advance(1.0)
        self.assertEqual(len(self.lines), 2)
        self.hello(self.a)
        self.assertEqual(self.lines[-1], "tracker link: connected to A")

    def test_lost_then_failover(self) -> None:
        self.link.startService()
        proto, t, _ = self.hello(self.a)
        pending = self.link.request("search")
        proto.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pending, errors.TrackerUnavailable)
        self.assertEqual(self.lines[-1], "tracker link: lost A, trying B")
        self.assertEqual(self.link.state, WAITING)
        self.failureResultOf(self.link.request("search"), errors.TrackerUnavailable)
        self.clock.advance(1.0)
        self.assertEqual(len(self.b.attempts), 1)
        self.hello(self.b)
        self.assertEqual(self.lines[-1], "tracker link: connected to B")
        # The library is announced again on the new session.
        self.assertEqual(len(self.sessions), 2)

    def test_hello_refused(self) -> None:
        self.link.startService()
        proto, t, _ = self.hello(
            self.a, {"status": "error", "code": "duplicate_session", "message": "taken"}
        )
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.sessions, [])
        self.assertEqual(self.lines, ["tracker link: A refused hello (taken), retrying in the background"])
        proto.connectionLost(Failure(ConnectionDone()))
        self.clock.advance(1.0)
        self.hello(self.a)
        self.assertEqual(len(self.sessions), 1)

    def test_announce_failure_does_not_break_link(self) -> None:
        def broken(protocol):
            raise RuntimeError("boom")

        self.link._on_session = broken
        self.link.startService()
        self.hello(self.a)
        self.assertEqual(self.link.state, CONNECTED)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_stop(self) -> None:
        self.link.startService()
        proto, t, _ = self.hello(self.a)
        d = self.link.stopService()
        self.assertTrue(t.disconnecting)
        proto.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(d)
        self.failureResultOf(self.link.request("search"), errors.TrackerUnavailable)
        self.assertEqual(self.lines, ["tracker link: connected to A"])


class ReconnectPolicyTests(SynchronousTestCase):
    """
    L{reconnect_policy}: exponential backoff, and a random part that is up
    to a second early on and grows with the backoff later.
    """

    def test_backoff_without_randomness(self) -> None:
        policy = reconnect_policy(rand=lambda: 0.0)
        self.assertEqual([policy(a) for a in range(4)], [0.5, 0.75, 1.125, 1.6875])
        self.assertEqual(policy(20), 10.0)
        # No overflow however long the tracker stays away.
        self.assertEqual(policy(10**6), 10.0)

    def test_random_part(self) -> None:
        """
        The random part is up to one second while the backoff is under a
        second, and up to the backoff itself after that.
        """
        policy = reconnect_policy(rand=lambda: 1.0)
        self.assertEqual(policy(0), 1.5)
        self.assertEqual(policy(1), 1.75)
        self.assertEqual(policy(2), 2.25)
        self.assertEqual(policy(20), 20.0)

    def test_default_is_random(self) -> None:
        delays = {reconnect_policy()(0) for _ in range(50)}
        self.assertGreater(len(delays), 1)
        self.assertTrue(all(0.5 <= d <= 1.5 for d in delays), delays)


class SignedHelloTests(SynchronousTestCase):
    """
    The link with a key: challenge, then a signed hello.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events(self.clock)
        self.lines: list[str] = []
        self.events.subscribe(lambda e: self.lines.append(e.message) if e.kind == "link" else None)
        self.a = FakeEndpoint()
        self.link = TrackerLink(
            [("A", self.a)],
            hello_fields=lambda: {"hostname": "me", "p2p_port": 4242},
            on_session=lambda protocol: succeed(None),
            clock=self.clock,
            events=self.events,
            retry_policy=lambda attempt: 1.0,
            identity=identity.Identity.generate(),
        )

    def challenge(self, endpoint: FakeEndpoint, answer: dict):
        proto, t = endpoint.succeed()
        [challenge] = all_frames(t.value())
        t.clear()
        self.assertEqual(challenge, {"action": "challenge", "id": 1})
        proto.dataReceived(frame(dict(answer, id=1)))
        return proto, t

    def test_old_tracker_gets_an_unsigned_hello(self) -> None:
        self.link.startService()
        proto, t = self.challenge(self.a, {"status": "error", "code": "unknown_action", "message": "?"})
        [hello] = all_frames(t.value())
        self.assertEqual(hello, {"action": "hello", "id": 2, "hostname": "me", "p2p_port": 4242, "version": 1})

    def test_key_mismatch_is_an_error_line(self) -> None:
        self.link.startService()
        proto, t = self.challenge(
            self.a, {"status": "success", "nonce": "cd" * 32, "tracker": "trk", "address": "10.1.1.1"}
        )
        [hello] = all_frames(t.value())
        message = "hostname 'me' is bound to key 1111222233334444, not to this peer's key 5555666677778888: ..."
        proto.dataReceived(frame({"status": "error", "id": hello["id"], "code": "key_mismatch", "message": message}))
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.lines, [f"error: tracker A refused this peer's key: {message}"])


@implementer(IStreamClientEndpoint)
class TrackerOverIOSim:
    """
    Connects to a real L{TrackerProtocol} in memory (L{iosim}); the client
    appears at C{ip}.
    """

    def __init__(self, factory: Any, ip: str) -> None:
        self.factory = factory
        self.ip = ip
        self.pumps: list[Any] = []

    def connect(self, client_factory: Any) -> Deferred:
        from twisted.internet.address import IPv4Address
        from twisted.test import iosim

        client = client_factory.buildProtocol(None)
        server = self.factory.buildProtocol(None)
        server_transport = iosim.FakeTransport(server, isServer=True, peerAddress=IPv4Address("TCP", self.ip, 50000))
        client_transport = iosim.FakeTransport(client, isServer=False)
        self.pumps.append(iosim.connect(server, server_transport, client, client_transport))
        return succeed(client)

    def flush(self) -> None:
        for pump in self.pumps:
            pump.flush()


class SignedHelloAgainstTrackerTests(SynchronousTestCase):
    """
    Two links with different keys claim one hostname on a real tracker
    protocol and registry: the first binds it, the second is refused.
    """

    def test_impostor_refused(self) -> None:
        from twistedp2p.tracker.protocol import TrackerFactory
        from twistedp2p.tracker.registry import Registry
        from twistedp2p.tracker.store.memory import MemoryStore

        clock = Clock()
        registry = Registry(MemoryStore("t"), clock, "trk")
        factory = TrackerFactory(registry, clock)
        lines: dict[str, list[str]] = {}
        links = {}
        for name, ip in (("owner", "10.0.0.1"), ("impostor", "10.6.6.6")):
            events = Events(clock)
            lines[name] = []
            events.subscribe(lambda e, out=lines[name]: out.append(e.message) if e.kind == "link" else None)
            endpoint = TrackerOverIOSim(factory, ip)
            link = TrackerLink(
                [("T", endpoint)],
                hello_fields=lambda: {"hostname": "alice", "p2p_port": 4242},
                on_session=lambda protocol: succeed(None),
                clock=clock,
                events=events,
                retry_policy=lambda attempt: 1.0,
                identity=identity.Identity.generate(),
            )
            link.startService()
            self.addCleanup(link.stopService)
            endpoint.flush()
            links[name] = link
        self.assertEqual(links["owner"].state, CONNECTED)
        self.assertNotEqual(links["impostor"].state, CONNECTED)
        [row] = registry.peers()
        self.assertEqual((row.session.ip, row.session.fingerprint), ("10.0.0.1", links["owner"].identity.fingerprint))
        [line] = lines["impostor"]
        self.assertTrue(line.startswith("error: tracker T refused this peer's key: "), line)
        self.assertIn(links["owner"].identity.fingerprint, line)
        self.assertIn(links["impostor"].identity.fingerprint, line)
        self.assertIn("forget alice", line)
