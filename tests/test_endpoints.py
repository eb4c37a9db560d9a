"""
Tests for L{twistedp2p.endpoints}: the one parser of C{--tracker},
C{--listen} and C{--web}, and the options that use it.
"""

from __future__ import annotations

from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, serverFromString
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import endpoints
from twistedp2p.peer import service as peer_service
from twistedp2p.tracker import service as tracker_service
from twistedp2p.web.options import is_local_endpoint


class ParseClientTests(SynchronousTestCase):
    def test_host_port(self) -> None:
        for given, expected in [
            ("127.0.0.1:9999", "127.0.0.1:9999"),
            ("127.0.0.1", "127.0.0.1:9999"),
            ("tracker.lan", "tracker.lan:9999"),
            ("tracker.lan:7000", "tracker.lan:7000"),
            ("localhost:1", "localhost:1"),
            ("[::1]:9999", "[::1]:9999"),
            ("[::1]", "[::1]:9999"),
            ("::1", "[::1]:9999"),
            ("  10.0.0.2:80 ", "10.0.0.2:80"),
            ("7000", "127.0.0.1:7000"),
        ]:
            self.assertEqual(endpoints.parse_client(given), expected, given)

    def test_endpoint_strings_kept(self) -> None:
        for given in ["tcp:127.0.0.1:9999", "tcp:host=10.0.0.2:port=9999", "TCP:h:1", "unix:/run/p2p.sock"]:
            self.assertEqual(endpoints.parse_client(given), given)

    def test_nonsense(self) -> None:
        for given in ["", "  ", "host:", "host:port", "host:70000", "host:0", "a b", "[::1", "[x]:1",
                      "[::1]x", "1:2:3", "tcp:", "tcp:host", "bogus:1:2", "-host", "127.0.0.1:-1",
                      "host/path:1", "99999"]:
            with self.assertRaises(usage.UsageError, msg=given) as caught:
                endpoints.parse_client(given, option="tracker")
            self.assertIn("--tracker", str(caught.exception))

    def test_address_gets_hostname_endpoint(self) -> None:
        reactor = MemoryReactorClock()
        endpoint = endpoints.client_endpoint(reactor, "[::1]:7000")
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(endpoints.client_address("[::1]:7000"), endpoints.Address("::1", 7000))
        self.assertIsNone(endpoints.client_address("tcp:127.0.0.1:9999"))
        endpoint = endpoints.client_endpoint(reactor, "tracker.lan:9999")
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertIsInstance(endpoints.client_endpoint(reactor, "tcp:127.0.0.1:9999"), TCP4ClientEndpoint)

    def test_host_is_never_parsed_as_endpoint_syntax(self) -> None:
        """
        A host name that Twisted's parser would split (C{=}) is refused,
        not pasted into an endpoint string.
        """
        self.assertRaises(usage.UsageError, endpoints.parse_client, "a=b:1")


class ParseServerTests(SynchronousTestCase):
    def test_forms(self) -> None:
        for given, expected in [
            ("5000", "tcp:5000"),
            ("0", "tcp:0"),
            (":5000", "tcp:5000"),
            ("127.0.0.1:5000", "tcp:5000:interface=127.0.0.1"),
            ("localhost:5000", "tcp:5000:interface=127.0.0.1"),
            ("[::1]:5000", "tcp6:5000:interface=\\:\\:1"),
            ("tcp:7070", "tcp:7070"),
            ("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
            ("unix:/tmp/x.sock", "unix:/tmp/x.sock"),
        ]:
            self.assertEqual(endpoints.parse_server(given), expected, given)

    def test_parsed_strings_are_endpoints(self) -> None:
        reactor = MemoryReactorClock()
        endpoint = serverFromString(reactor, endpoints.parse_server("[::1]:5000"))
        self.assertEqual((endpoint._port, endpoint._interface), (5000, "::1"))
        self.assertTrue(is_local_endpoint(endpoints.parse_server("[::1]:5000")))
        self.assertTrue(is_local_endpoint(endpoints.parse_server("127.0.0.1:5000")))
        self.assertFalse(is_local_endpoint(endpoints.parse_server("5000")))

    def test_default_port(self) -> None:
        self.assertEqual(endpoints.parse_server("127.0.0.1", default_port=9999), "tcp:9999:interface=127.0.0.1")
        self.assertRaises(usage.UsageError, endpoints.parse_server, "127.0.0.1")

    def test_nonsense(self) -> None:
        for given in ["", "65536", "-1", "host:5000", "example.com:80", "tcp:x", "bogus:1", "1.2.3.4:x",
                      "[::1]:", "tcp:5000:colour=blue"]:
            with self.assertRaises(usage.UsageError, msg=given) as caught:
                endpoints.parse_server(given, option="listen", default_port=0)
            self.assertIn("--listen", str(caught.exception))


class OptionsUseTheParserTests(SynchronousTestCase):
    """
    Every option that takes an endpoint goes through L{endpoints}.
    """

    def peer(self, *args: str) -> peer_service.Options:
        config = peer_service.Options()
        config.parseOptions(["--repo", self.mktemp(), *args])
        return config

    def tracker(self, *args: str) -> tracker_service.Options:
        config = tracker_service.Options()
        config.parseOptions(list(args))
        return config

    def test_peer(self) -> None:
        config = self.peer("--tracker", "127.0.0.1:9999", "--tracker", "backup.lan", "--listen", "5000",
                           "--web", "127.0.0.1:8080")
        self.assertEqual(config["tracker"], ["127.0.0.1:9999", "backup.lan:9999"])
        self.assertEqual(config["listen"], "tcp:5000")
        self.assertEqual(config["web"], "tcp:8080:interface=127.0.0.1")
        self.assertFalse(config["web-token-generated"])

    def test_tracker(self) -> None:
        config = self.tracker("--listen", "5000", "--web", "[::1]:8080", "--db", "memory")
        self.assertEqual(config["listen"], "tcp:5000:backlog=1024")
        self.assertEqual(config["web"], "tcp6:8080:interface=\\:\\:1")
        config = self.tracker("--listen", "127.0.0.1", "--db", "memory")
        self.assertEqual(config["listen"], "tcp:9999:interface=127.0.0.1:backlog=1024")

    def test_errors(self) -> None:
        for args in (["--tracker", "nonsense:host:1"], ["--tracker", "x:y"], ["--listen", "host.lan:1"],
                     ["--web", "abc"]):
            self.assertRaises(usage.UsageError, self.peer, *args)
        for args in (["--listen", "99999"], ["--web", "no where"]):
            self.assertRaises(usage.UsageError, self.tracker, *args)
