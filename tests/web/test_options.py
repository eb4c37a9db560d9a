"""
Tests for L{twistedp2p.web.options}: which endpoints count as local, and
when a token is required, generated and printed.
"""

from __future__ import annotations

import io

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.web.options import WEB_OPTIONS, check_web_options, is_local_endpoint, split_endpoint


class Options(usage.Options):
    optParameters = WEB_OPTIONS

    def postOptions(self) -> None:
        self.out = io.StringIO()
        check_web_options(self, self.out)


def parse(*args: str) -> Options:
    config = Options()
    config.parseOptions(list(args))
    return config


class EndpointTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(
            split_endpoint(r"tcp6:8080:interface=\:\:1"), ("tcp6", ["8080"], {"interface": "::1"})
        )
        self.assertEqual(split_endpoint("TCP:port=80"), ("tcp", [], {"port": "80"}))

    def test_local(self) -> None:
        for description in (
            "tcp:8080:interface=127.0.0.1",
            "tcp:port=8080:interface=127.0.0.2",
            "tcp:0:interface=localhost",
            r"tcp6:8080:interface=\:\:1",
            "unix:/tmp/p2p.sock",
        ):
            self.assertTrue(is_local_endpoint(description), description)

    def test_not_local(self) -> None:
        for description in (
            "tcp:8080",
            "tcp:8080:interface=0.0.0.0",
            "tcp:8080:interface=192.168.1.5",
            r"tcp6:8080:interface=\:\:",
            "tcp6:8080",
            "tcp:8080:interface=lab-pc",
            "systemd:domain=INET:index=0",
        ):
            self.assertFalse(is_local_endpoint(description), description)


class CheckTests(SynchronousTestCase):
    def test_off_by_default(self) -> None:
        config = parse()
        self.assertEqual((config["web"], config["web-token"], config["web-token-generated"]), (None, None, False))

    def test_loopback_needs_no_token(self) -> None:
        config = parse("--web", "tcp:8080:interface=127.0.0.1")
        self.assertIsNone(config["web-token"])
        self.assertEqual(config.out.getvalue(), "")

    def test_all_interfaces_generate_and_print_a_token(self) -> None:
        config = parse("--web", "tcp:8080")
        token = config["web-token"]
        self.assertTrue(config["web-token-generated"])
        self.assertGreaterEqual(len(token), 24)
        self.assertIn(f"Generated web token: {token}", config.out.getvalue())
        self.assertNotEqual(parse("--web", "tcp:8080")["web-token"], token)

    def test_given_token_is_kept(self) -> None:
        config = parse("--web", "tcp:8080", "--web-token", "s3cret-token")
        self.assertEqual((config["web-token"], config["web-token-generated"]), ("s3cret-token", False))
        self.assertEqual(config.out.getvalue(), "")
        config = parse("--web", "tcp:8080:interface=127.0.0.1", "--web-token", "s3cret-token")
        self.assertEqual(config["web-token"], "s3cret-token")

    def test_errors(self) -> None:
        for args, message in [
            (["--web", "nonsense:1"], "--web 'nonsense:1': give a PORT"),
            (["--web", "tcp:x"], "bad --web endpoint"),
            (["--web", "tcp:8080", "--web-token", "short"], "--web-token must be 8 to 256"),
            (["--web", "tcp:8080", "--web-token", "has space here"], "--web-token must be"),
            (["--web-token", "s3cret-token"], "--web-token needs --web"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                parse(*args)
            self.assertIn(message, str(caught.exception))


class DashboardLinkTests(SynchronousTestCase):
    def test_link(self) -> None:
        from twistedp2p.web.options import dashboard_link

        self.assertEqual(dashboard_link("http://127.0.0.1:8080/", None), "http://127.0.0.1:8080/")
        self.assertEqual(dashboard_link("http://0.0.0.0:8080/", "t0ken-abc"), "http://127.0.0.1:8080/#token=t0ken-abc")
        self.assertEqual(dashboard_link("http://[::]:8080/", None), "http://[::1]:8080/")
        self.assertEqual(dashboard_link("http://[::1]:80/", "t0ken-abc"), "http://[::1]:80/#token=t0ken-abc")
        self.assertIsNone(dashboard_link(None, "t0ken-abc"))
