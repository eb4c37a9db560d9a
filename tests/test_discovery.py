"""
Tests for L{twistedp2p.discovery}: the datagrams, the tracker's announcer
and the peer's finder on a fake UDP transport and a L{task.Clock}, the
choice of tracker, and (integration) both on real loopback multicast.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

from twistedp2p import discovery, wire
from twistedp2p.endpoints import Address


class FakeMulticast:
    """
    The parts of a multicast UDP transport the protocols use.
    """

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, int]]] = []
        self.joined: list[tuple[str, str]] = []
        self.interface: str | None = None
        self.loop: int | None = None
        self.join_result: Any = None

    def setOutgoingInterface(self, interface: str) -> None:
        self.interface = interface

    def setLoopbackMode(self, mode: int) -> None:
        self.loop = mode

    def joinGroup(self, group: str, interface: str = "") -> Deferred:
        self.joined.append((group, interface))
        if isinstance(self.join_result, Exception):
            from twisted.internet.defer import fail

            return fail(self.join_result)
        return succeed(None)

    def write(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, addr))


def connect(protocol: discovery._Multicast, transport: FakeMulticast | None = None) -> FakeMulticast:
    transport = transport or FakeMulticast()
    protocol.transport = transport
    protocol.startProtocol()
    return transport


class DatagramTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        message = discovery.parse(discovery.announcement("t-1", 7000))
        self.assertEqual(
            message, {"kind": "twistedp2p-tracker", "v": 1, "tracker_id": "t-1", "port": 7000,
                      "protocol": wire.PROTOCOL_VERSION},
        )
        self.assertEqual(discovery.parse(discovery.query())["kind"], "twistedp2p-query")
        self.assertLessEqual(len(discovery.announcement("x" * 64, 65535)), discovery.MAX_DATAGRAM)

    def test_garbage(self) -> None:
        good = {"kind": "twistedp2p-tracker", "v": 1, "tracker_id": "a", "port": 1, "protocol": 1}
        for data in [
            b"", b"\xff\xfe", b"hello", b"[]", b"null", b"{}" + b" " * 600,
            json.dumps({**good, "kind": "other"}).encode(),
            json.dumps({**good, "v": 2}).encode(),
            json.dumps({**good, "v": True}).encode(),
            json.dumps({**good, "tracker_id": "a b"}).encode(),
            json.dumps({**good, "tracker_id": 5}).encode(),
            json.dumps({**good, "port": 0}).encode(),
            json.dumps({**good, "port": 70000}).encode(),
            json.dumps({**good, "port": "9999"}).encode(),
            json.dumps({**good, "port": True}).encode(),
            json.dumps({**good, "protocol": None}).encode(),
        ]:
            self.assertRaises(discovery.NotOurs, discovery.parse, data)


class AnnouncerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.announcer = discovery.Announcer("t-1", lambda: 7000, self.clock, interval=10, port=5353,
                                             interface="127.0.0.1")
        self.transport = connect(self.announcer)

    def test_announces_now_and_every_interval(self) -> None:
        self.assertEqual(self.transport.joined, [(discovery.GROUP, "127.0.0.1")])
        self.assertEqual((self.transport.interface, self.transport.loop), ("127.0.0.1", 1))
        self.assertEqual(self.transport.sent, [(discovery.announcement("t-1", 7000), (discovery.GROUP, 5353))])
        self.clock.advance(9.9)
        self.assertEqual(len(self.transport.sent), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.transport.sent), 2)

    def test_answers_queries_to_the_group_not_too_often(self) -> None:
        self.clock.advance(1)
        self.announcer.datagramReceived(discovery.query(), ("10.0.0.7", 5353))
        self.assertEqual(len(self.transport.sent), 2)
        self.assertEqual(self.transport.sent[-1][1], (discovery.GROUP, 5353))
        self.announcer.datagramReceived(discovery.query(), ("10.0.0.8", 5353))
        self.assertEqual(len(self.transport.sent), 2)
        self.clock.advance(discovery.MIN_ANSWER_GAP)
        self.announcer.datagramReceived(discovery.query(), ("10.0.0.8", 5353))
        self.assertEqual(len(self.transport.sent), 3)

    def test_ignores_announcements_and_garbage(self) -> None:
        logged: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        self.clock.advance(1)
        self.announcer.datagramReceived(discovery.announcement("other", 1), ("10.0.0.7", 5353))
        self.announcer.datagramReceived(b"\x00garbage", ("10.0.0.7", 5353))
        self.assertEqual(len(self.transport.sent), 1)
        ignored = [e for e in logged if "ignored a datagram" in e.get("log_format", "")]
        self.assertEqual([e["log_level"] for e in ignored], [LogLevel.debug])

    def test_stop(self) -> None:
        self.announcer.stopProtocol()
        self.clock.advance(100)
        self.assertEqual(len(self.transport.sent), 1)


class FinderTests(SynchronousTestCase):
    def setUp(self) -> None:
        # the suite keeps discovery on loopback (tests/conftest.py); these
        # tests are about the default, with no interface given at all
        self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != discovery.INTERFACE_ENV})
        self.clock = Clock()
        self.finder = discovery.Finder(self.clock, port=5353, stale_after=30)
        self.transport = connect(self.finder)

    def hear(self, tracker_id: str, host: str, port: int, protocol: int = wire.PROTOCOL_VERSION) -> None:
        self.finder.datagramReceived(discovery.announcement(tracker_id, port, protocol), (host, 5353))

    def test_joins_default_and_loopback_and_queries(self) -> None:
        self.assertEqual(self.transport.joined, [(discovery.GROUP, ""), (discovery.GROUP, "127.0.0.1")])
        self.assertIsNone(self.transport.interface)
        self.assertEqual(self.transport.sent, [(discovery.query(), (discovery.GROUP, 5353))])

    def test_interface_from_the_environment(self) -> None:
        """
        With no interface given, C{P2P_DISCOVERY_INTERFACE} names it: only
        that interface is joined and used for sending.
        """
        self.patch(os, "environ", {discovery.INTERFACE_ENV: "127.0.0.1"})
        transport = connect(discovery.Finder(self.clock, port=5353))
        self.assertEqual(transport.joined, [(discovery.GROUP, "127.0.0.1")])
        self.assertEqual(transport.interface, "127.0.0.1")

    def test_wait_fires_with_the_next_announcement_querying_meanwhile(self) -> None:
        d = self.finder.wait(3)
        self.assertNoResult(d)
        self.assertEqual(len(self.transport.sent), 2)
        self.clock.advance(discovery.QUERY_GAP)
        self.assertEqual(len(self.transport.sent), 3)
        self.hear("t-1", "10.0.0.5", 9999)
        heard = self.successResultOf(d)
        self.assertEqual((heard.tracker_id, heard.address), ("t-1", Address("10.0.0.5", 9999)))
        self.clock.advance(10)
        self.assertEqual(len(self.transport.sent), 3)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_wait_times_out(self) -> None:
        d = self.finder.wait(3)
        self.clock.advance(3)
        failure = self.failureResultOf(d, discovery.NoTrackerFound)
        self.assertIn("no tracker announced itself on the LAN within 3 s (UDP port 5353)", str(failure.value))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_known_fresh_answers_at_once_most_recent_wins(self) -> None:
        self.hear("t-1", "10.0.0.5", 9999)
        self.clock.advance(5)
        self.hear("t-2", "10.0.0.6", 9999)
        self.assertEqual(self.successResultOf(self.finder.wait(3)).tracker_id, "t-2")
        self.clock.advance(31)
        self.assertIsNone(self.finder.best())
        self.assertNoResult(self.finder.wait(3))

    def test_other_protocol_versions_and_garbage_ignored(self) -> None:
        d = self.finder.wait(3)
        self.hear("old", "10.0.0.5", 9999, protocol=wire.PROTOCOL_VERSION + 1)
        self.finder.datagramReceived(b"{not json", ("10.0.0.9", 5353))
        self.finder.datagramReceived(discovery.query(), ("10.0.0.9", 5353))
        self.assertNoResult(d)
        self.assertEqual(self.finder.heard, {})
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cannot_join(self) -> None:
        finder = discovery.Finder(self.clock, port=5353, interface="10.9.9.9")
        transport = FakeMulticast()
        transport.join_result = OSError("No such device")
        connect(finder, transport)
        self.assertEqual(transport.joined, [(discovery.GROUP, "10.9.9.9")])
        d = finder.wait(2)
        self.clock.advance(2)
        self.assertIn("LAN discovery is unavailable", str(self.failureResultOf(d).value))


class RememberTests(SynchronousTestCase):
    def test_round_trip_and_bad_files(self) -> None:
        path = Path(self.mktemp()) / ".p2p" / "tracker.json"
        self.assertIsNone(discovery.read_remembered(path))
        discovery.write_remembered(path, Address("::1", 7000), "t-1")
        self.assertEqual(discovery.read_remembered(path), Address("::1", 7000))
        for text in ["", "[]", '{"host": "", "port": 1}', '{"host": "h", "port": 0}', '{"host": 1, "port": 1}']:
            path.write_text(text)
            self.assertIsNone(discovery.read_remembered(path), text)


class DiscoveringEndpointTests(SynchronousTestCase):
    """
    The order of candidates: remembered, heard on the LAN, the default.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.finder = discovery.Finder(self.clock, port=5353)
        connect(self.finder)
        self.remembered: list[tuple[Address, str | None]] = []
        self.attempts: list[str] = []
        self.up: set[str] = set()
        self.patch(discovery, "HostnameEndpoint", self.hostname_endpoint)
        self.patch(discovery, "client_endpoint", lambda reactor, d: _Fake(self, d))

    def hostname_endpoint(self, reactor: Any, host: str, port: int, timeout: float = 30) -> Any:
        return _Fake(self, str(Address(host, port)))

    def endpoint(self, remembered: Address | None) -> discovery.DiscoveringEndpoint:
        return discovery.DiscoveringEndpoint(
            self.clock, self.finder, remembered=remembered,
            remember=lambda a, t: self.remembered.append((a, t)), fallback="tcp:127.0.0.1:9999", wait=3,
        )

    def test_remembered_first(self) -> None:
        self.up = {"10.0.0.1:9999"}
        endpoint = self.endpoint(Address("10.0.0.1", 9999))
        self.assertEqual(self.successResultOf(endpoint.connect(Factory())), "10.0.0.1:9999")
        self.assertEqual(self.attempts, ["10.0.0.1:9999"])
        self.assertEqual(str(endpoint), "10.0.0.1:9999")

    def test_then_the_lan_and_it_is_remembered(self) -> None:
        self.up = {"10.0.0.2:7000"}
        endpoint = self.endpoint(Address("10.0.0.1", 9999))
        self.assertEqual(str(endpoint), "10.0.0.1:9999")
        d = endpoint.connect(Factory())
        self.assertNoResult(d)
        self.finder.datagramReceived(discovery.announcement("t-2", 7000), ("10.0.0.2", 5353))
        self.assertEqual(self.successResultOf(d), "10.0.0.2:7000")
        self.assertEqual(self.attempts, ["10.0.0.1:9999", "10.0.0.2:7000"])
        self.assertEqual(self.remembered, [(Address("10.0.0.2", 7000), "t-2")])
        self.assertEqual(str(endpoint), "10.0.0.2:7000")

    def test_then_the_default_then_a_reason(self) -> None:
        endpoint = self.endpoint(None)
        self.assertEqual(str(endpoint), "a tracker on the LAN")
        d = endpoint.connect(Factory())
        self.clock.advance(3)
        failure = self.failureResultOf(d, discovery.NoTrackerFound)
        self.assertEqual(self.attempts, ["tcp:127.0.0.1:9999"])
        self.assertEqual(
            str(failure.value),
            "no tracker announced itself on the LAN within 3 s (UDP port 5353); tcp:127.0.0.1:9999: Connection was refused by other side: refused.",
        )
        self.assertEqual(self.remembered, [])


class _Fake:
    def __init__(self, case: DiscoveringEndpointTests, label: str) -> None:
        self.case = case
        self.label = label

    def connect(self, factory: Any) -> Deferred:
        from twisted.internet.defer import fail
        from twisted.internet.error import ConnectionRefusedError

        self.case.attempts.append(self.label)
        if self.label in self.case.up:
            return succeed(self.label)
        return fail(ConnectionRefusedError("refused"))


class LoopbackMulticastTests(TestCase):
    """
    Integration: an announcer and a finder on real loopback multicast, with
    garbage on the same port.
    """

    def udp_port(self) -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    async def test_finder_hears_the_announcer(self) -> None:
        port = self.udp_port()
        finder = discovery.Finder(reactor, port=port)
        finding = discovery.MulticastService(reactor, finder)
        finding.startService()
        self.addCleanup(finding.stopService)
        # garbage first: ignored, and the finder keeps listening
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"\xff garbage", ("127.0.0.1", port))
        announcer = discovery.Announcer("it-1", lambda: 4242, reactor, interval=60, port=port,
                                        interface="127.0.0.1")
        announcing = discovery.MulticastService(reactor, announcer)
        waiting = finder.wait(10)
        announcing.startService()
        self.addCleanup(announcing.stopService)
        heard = await waiting
        self.assertEqual((heard.tracker_id, heard.host, heard.port), ("it-1", "127.0.0.1", 4242))
        # a query is answered: a second finder, started later, hears at once
        late = discovery.Finder(reactor, port=port, interface="127.0.0.1")
        later = discovery.MulticastService(reactor, late)
        later.startService()
        self.addCleanup(later.stopService)
        heard = await late.wait(10)
        self.assertEqual(heard.port, 4242)
        await deferLater(reactor, 0, lambda: None)


class OptionsTests(SynchronousTestCase):
    def test_peer(self) -> None:
        from twistedp2p.peer import service

        def parse(*args: str) -> Any:
            config = service.Options()
            config.parseOptions(["--repo", self.mktemp(), *args])
            return config

        config = parse()
        self.assertEqual((config["discover"], config["discovery-port"], config["discovery-interface"]),
                         (True, 9999, None))
        self.assertFalse(parse("--tracker", "10.0.0.1")["discover"])
        self.assertFalse(parse("--no-discover")["discover"])
        config = parse("--discovery-port", "5000", "--discovery-interface", "127.0.0.1")
        self.assertEqual((config["discovery-port"], config["discovery-interface"]), (5000, "127.0.0.1"))
        for args in (["--discovery-port", "0"], ["--discovery-port", "x"], ["--discovery-interface", "eth0"]):
            self.assertRaises(usage.UsageError, parse, *args)

    def test_peer_service_wiring(self) -> None:
        from twistedp2p.peer import service

        config = service.Options()
        repo = Path(self.mktemp())
        (repo / ".p2p").mkdir(parents=True)
        discovery.write_remembered(repo / ".p2p" / "tracker.json", Address("10.0.0.3", 9999), "t")
        config.parseOptions(["--repo", str(repo), "--no-shell", "--discovery-port", "5000"])
        peer = service.makeService(config, MemoryReactorClock())
        self.assertEqual(peer.discovery.protocol.port, 5000)
        self.assertEqual(peer.link.endpoint.labels, ["10.0.0.3:9999"])
        config = service.Options()
        config.parseOptions(["--repo", str(repo), "--no-shell", "--no-discover"])
        peer = service.makeService(config, MemoryReactorClock())
        self.assertIsNone(peer.discovery)
        self.assertEqual(peer.link.endpoint.labels, ["tcp:127.0.0.1:9999"])

    def test_tracker(self) -> None:
        from twistedp2p.tracker import service

        def parse(*args: str) -> Any:
            config = service.Options()
            config.parseOptions(["--db", "memory", *args])
            return config

        config = parse()
        self.assertEqual(
            (config["no-announce"], config["announce-interval"], config["discovery-port"],
             config["discovery-interface"]),
            (False, 10.0, 9999, None),
        )
        self.assertIsNone(service.makeService(parse("--no-announce"), MemoryReactorClock()).announce)
        tracker = service.makeService(parse("--announce-interval", "2", "--discovery-port", "5000"),
                                      MemoryReactorClock())
        self.assertEqual(tracker.announce, {"interval": 2.0, "port": 5000, "interface": None})
        for args in (["--announce-interval", "0"], ["--discovery-port", "65536"],
                     ["--discovery-interface", "::1"]):
            self.assertRaises(usage.UsageError, parse, *args)

    def test_tracker_on_loopback_announces_on_loopback(self) -> None:
        from twistedp2p.tracker.service import announce_interface

        self.assertEqual(announce_interface("tcp:9999:interface=127.0.0.1", None), "127.0.0.1")
        self.assertIsNone(announce_interface("tcp:9999", None))
        self.assertIsNone(announce_interface("tcp:9999:interface=192.168.1.5", None))
        self.assertEqual(announce_interface("tcp:9999", "192.168.1.5"), "192.168.1.5")

    def test_tracker_on_a_unix_socket_does_not_announce(self) -> None:
        from twisted.internet.address import IPv4Address, UNIXAddress

        from twistedp2p.tracker import service

        config = service.Options()
        config.parseOptions(["--db", "memory", "--no-shell"])
        reactor = MemoryReactorClock()
        tracker = service.makeService(config, reactor)

        class Port:
            def __init__(self, address: Any) -> None:
                self.address = address

            def getHost(self) -> Any:
                return self.address

        tracker._start_announcing(Port(UNIXAddress(b"/tmp/t.sock")))
        self.assertIsNone(tracker.announcer)
        tracker._start_announcing(Port(IPv4Address("TCP", "0.0.0.0", 7000)))
        self.assertIsNotNone(tracker.announcer)
        self.assertEqual(tracker.announcer.protocol.tcp_port(), 7000)
