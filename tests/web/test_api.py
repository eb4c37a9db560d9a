"""
Unit tests for L{twistedp2p.web.api}: the guard, exception mapping and
JSON encoding.
"""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.test.requesthelper import DummyRequest

from twistedp2p import errors, wire
from twistedp2p.web.api import ApiError, Guard, error_reply, to_json


def request(headers: dict[str, str]) -> DummyRequest:
    r = DummyRequest([b"api"])
    for name, value in headers.items():
        r.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
    return r


class GuardTests(SynchronousTestCase):
    def test_token_headers(self) -> None:
        guard = Guard("tok-123456")
        self.assertIsNone(guard.problem(request({"X-P2P-Token": "tok-123456"}), True))
        self.assertIsNone(guard.problem(request({"Authorization": "Bearer tok-123456"}), False))
        self.assertIsNone(guard.problem(request({"Authorization": "bearer  tok-123456 "}), False))
        for headers in ({}, {"X-P2P-Token": "tok-12345"}, {"Authorization": "Basic tok-123456"},
                        {"Authorization": "Bearer"}):
            problem = guard.problem(request(headers), False)
            self.assertEqual(problem.status, 401, headers)
        # With a token, the host name does not matter (a reverse proxy may
        # rewrite it).
        self.assertIsNone(guard.problem(request({"X-P2P-Token": "tok-123456", "Host": "p2p.example"}), True))

    def test_loopback_hosts_without_token(self) -> None:
        guard = Guard(None, check_host=True)
        for host in ("127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.5.0.1", "app.localhost:1"):
            self.assertIsNone(guard.problem(request({"Host": host}), False), host)
        for host in ("evil.example", "evil.example:8080", "10.0.0.1:8080", "", "127.0.0.1.evil.example"):
            self.assertEqual(guard.problem(request({"Host": host}), False).status, 403, host)
        self.assertIsNone(Guard(None, check_host=False).problem(request({"Host": "anything"}), False))

    def test_origin_of_posts_without_token(self) -> None:
        guard = Guard(None)
        ok = {"Host": "127.0.0.1:8080", "Origin": "http://127.0.0.1:8080"}
        self.assertIsNone(guard.problem(request(ok), True))
        self.assertIsNone(guard.problem(request({"Host": "127.0.0.1:8080"}), True))
        for origin in ("http://evil.example", "http://127.0.0.1:9999", "null"):
            problem = guard.problem(request({"Host": "127.0.0.1:8080", "Origin": origin}), True)
            self.assertEqual((problem.status, problem.message), (403, "cross-origin request refused"), origin)
        # GETs are not checked for Origin (a page cannot read the answer).
        self.assertIsNone(guard.problem(request({"Host": "127.0.0.1:8080", "Origin": "http://evil.example"}), False))


class ErrorReplyTests(SynchronousTestCase):
    def test_mapping(self) -> None:
        cases = [
            (errors.Conflict("x"), 409, {"conflict": True}),
            (errors.AlreadyExists("x"), 409, {"exists": True}),
            (errors.AmbiguousContent("x"), 409, {"ambiguous": True}),
            (errors.NotPublished("x"), 404, {}),
            (errors.NoSources("x"), 404, {}),
            (errors.TrackerUnavailable("x"), 503, {}),
            (errors.IndexUnavailable("x"), 503, {}),
            (errors.VerificationFailed("x"), 502, {}),
            (errors.Busy("x"), 502, {}),
            (errors.BadName("x"), 400, {}),
            (errors.UnsafePath("x"), 400, {}),
            (errors.P2PError("x"), 400, {}),
            (errors.RequestFailed("x", code="bad_field"), 400, {"code": "bad_field"}),
            (errors.RequestFailed("x", code="internal"), 502, {"code": "internal"}),
            (wire.WireError("bad_field", "x"), 400, {"code": "bad_field"}),
            (ApiError(418, "x", teapot=True), 418, {"teapot": True}),
        ]
        for exc, status, extra in cases:
            reply = error_reply(exc)
            self.assertEqual(reply.status, status, exc)
            self.assertEqual(reply.body, {"error": "error: x", **extra}, exc)
        self.assertIsNone(error_reply(ValueError("x")))

    def test_docstring_message(self) -> None:
        self.assertEqual(error_reply(errors.TrackerUnavailable()).body["error"], "error: not connected to the tracker")

    def test_json(self) -> None:
        self.assertEqual(json.loads(to_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": "é"})),
                         {"a": None, "b": [None, 1.5], "c": "é"})
