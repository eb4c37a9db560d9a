"""
Tests for L{twistedp2p.peer.client.TrackerClientProtocol}.
"""

from __future__ import annotations

import struct

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors, wire
from twistedp2p.peer.client import TrackerClientFactory

from .helpers import all_frames, frame


class ClientTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.proto = TrackerClientFactory(self.clock, request_timeout=30).buildProtocol(None)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def sent(self):
        frames = all_frames(self.transport.value())
        self.transport.clear()
        return frames

    def test_ids_and_answers(self) -> None:
        d1 = self.proto.request("hello", hostname="h", p2p_port=1, version=1)
        d2 = self.proto.request("search", pattern="")
        self.assertEqual(
            self.sent(),
            [
                {"action": "hello", "id": 1, "hostname": "h", "p2p_port": 1, "version": 1},
                {"action": "search", "id": 2, "pattern": ""},
            ],
        )
        # Answers may come in any order; ids match them.
        self.proto.dataReceived(frame({"status": "success", "id": 2, "files": []}))
        self.assertNoResult(d1)
        self.assertEqual(self.successResultOf(d2)["files"], [])
        self.proto.dataReceived(frame({"status": "success", "id": 1}))
        self.successResultOf(d1)
        self.assertEqual(self.proto.pending, 0)

    def test_statuses_other_than_error_succeed(self) -> None:
        for status in ("created", "unchanged", "updated", "conflict"):
            d = self.proto.request("publish", fname="a")
            [sent] = self.sent()
            self.proto.dataReceived(frame({"status": status, "id": sent["id"]}))
            self.assertEqual(self.successResultOf(d)["status"], status)

    def test_error_reply(self) -> None:
        d = self.proto.request("unpublish", fname="a")
        self.proto.dataReceived(
            frame({"status": "error", "id": 1, "code": "not_published", "message": "a is not published"})
        )
        f = self.failureResultOf(d, errors.RequestFailed)
        self.assertEqual((str(f.value), f.value.code), ("a is not published", "not_published"))
        self.assertEqual(f.value.reply["code"], "not_published")

    def test_ping_answered(self) -> None:
        self.proto.dataReceived(frame({"action": "ping", "id": 77}))
        self.assertEqual(self.sent(), [{"status": "success", "id": 77, "message": "pong"}])

    def test_ping_between_answers(self) -> None:
        d = self.proto.request("search")
        self.sent()
        self.proto.dataReceived(frame({"action": "ping", "id": 5}) + frame({"status": "success", "id": 1}))
        self.assertEqual(self.sent(), [{"status": "success", "id": 5, "message": "pong"}])
        self.successResultOf(d)

    def test_unknown_tracker_request(self) -> None:
        self.proto.dataReceived(frame({"action": "format_disk", "id": 3}))
        [reply] = self.sent()
        self.assertEqual((reply["status"], reply["code"], reply["id"]), ("error", "unknown_action", 3))

    def test_garbage_ignored(self) -> None:
        d = self.proto.request("search")
        self.proto.dataReceived(frame(b"\xff") + frame([1]) + frame({"status": "success", "id": 99}))
        self.assertNoResult(d)
        self.assertFalse(self.transport.disconnecting)

    def test_pending_errback_on_loss(self) -> None:
        d1 = self.proto.request("search")
        d2 = self.proto.request("fetch", fname="x")
        lost = []
        self.proto.on_lost.append(lost.append)
        self.proto.connectionLost(Failure(ConnectionLost()))
        self.failureResultOf(d1, errors.TrackerUnavailable)
        self.failureResultOf(d2, errors.TrackerUnavailable)
        self.assertEqual(len(lost), 1)
        # And later requests fail at once.
        self.failureResultOf(self.proto.request("search"), errors.TrackerUnavailable)

    def test_timeout(self) -> None:
        d = self.proto.request("search")
        self.clock.advance(29)
        self.assertNoResult(d)
        self.clock.advance(2)
        f = self.failureResultOf(d, errors.TrackerUnavailable)
        self.assertIn("did not answer search within 30 s", str(f.value))
        # A late answer is ignored.
        self.proto.dataReceived(frame({"status": "success", "id": 1}))

    def test_big_reply_accepted(self) -> None:
        d = self.proto.request("search")
        files = [{"fname": f"file-{i}", "sources": 1} for i in range(5000)]
        self.proto.dataReceived(frame({"status": "success", "id": 1, "files": files}))
        self.assertEqual(len(self.successResultOf(d)["files"]), 5000)

    def test_oversized_reply_disconnects(self) -> None:
        self.proto.dataReceived(struct.pack("!I", wire.MAX_REPLY_FRAME + 1))
        self.assertTrue(self.transport.disconnecting)
        self.flushLoggedErrors()
