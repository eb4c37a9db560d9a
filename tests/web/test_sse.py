"""
Unit tests for L{twistedp2p.web.sse} on a L{Clock} with twisted.web's
L{DummyRequest}: framing, replay, keep-alive, cleanup and the ticker.
"""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from twistedp2p.web.sse import EventHub, Ticker


class StreamRequest(DummyRequest):
    """
    A L{DummyRequest} that keeps a registered streaming producer (as
    twisted.web's requests do) instead of pulling it in a loop, with a
    transport that records an abort.
    """

    def __init__(self, *args, **kw):
        DummyRequest.__init__(self, *args, **kw)
        self.producer = None
        self.streaming = None
        self.transport = StringTransport()

    def registerProducer(self, producer, streaming):
        self.producer, self.streaming = producer, streaming

    def unregisterProducer(self):
        self.producer = None


def parse(written: list[bytes]) -> list[dict]:
    """
    SSE blocks in what a request received: a dict per block.
    """
    text = b"".join(written).decode("utf-8")
    blocks = []
    for block in text.split("\n\n"):
        if not block:
            continue
        fields: dict = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            fields.setdefault(key, []).append(value.strip())
        blocks.append(fields)
    return blocks


class EventHubTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.hub = EventHub(self.clock, keepalive=15.0, history=3)

    def open(self, last_id: str | None = None) -> DummyRequest:
        request = StreamRequest([b"events"])
        if last_id is not None:
            request.requestHeaders.setRawHeaders(b"last-event-id", [last_id.encode()])
        self.assertIs(self.hub.render_stream(request), NOT_DONE_YET)
        return request

    def test_stream_starts_with_retry_and_ready(self) -> None:
        request = self.open()
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"text/event-stream; charset=utf-8"])
        blocks = parse(request.written)
        self.assertEqual(blocks[0], {"retry": ["2000"]})
        self.assertEqual(blocks[1]["event"], ["ready"])
        self.assertEqual(json.loads(blocks[1]["data"][0]), {"time": 1000.0, "last_id": 0, "resumed": False})
        self.assertEqual(self.hub.clients, 1)

    def test_publish_numbers_and_sends(self) -> None:
        request = self.open()
        self.clock.advance(5)
        event = self.hub.publish("publish", "ok", "a published x", fname="x")
        self.assertEqual(event, {"id": 1, "kind": "publish", "time": 1005.0, "level": "ok",
                                 "text": "a published x", "fname": "x"})
        last = parse(request.written)[-1]
        self.assertEqual((last["id"], last["event"]), (["1"], ["publish"]))
        self.assertEqual(json.loads(last["data"][0]), event)

    def test_push_is_not_numbered_or_kept(self) -> None:
        request = self.open()
        self.hub.push("peers", {"peers": []})
        last = parse(request.written)[-1]
        self.assertNotIn("id", last)
        self.assertEqual(last["event"], ["peers"])
        self.assertEqual(list(self.hub.history), [])

    def test_history_is_bounded(self) -> None:
        for i in range(5):
            self.hub.publish("notice", "info", str(i))
        self.assertEqual([e["text"] for e in self.hub.recent()], ["2", "3", "4"])
        self.assertEqual([e["text"] for e in self.hub.recent(since=3)], ["3", "4"])
        self.assertEqual([e["text"] for e in self.hub.recent(limit=1)], ["4"])

    def test_resume_replays_what_was_missed(self) -> None:
        for i in range(3):
            self.hub.publish("notice", "info", str(i))
        request = self.open(last_id="1")
        blocks = parse(request.written)
        self.assertEqual([b["id"] for b in blocks if "id" in b], [["2"], ["3"]])
        self.assertTrue(json.loads(blocks[-1]["data"][0])["resumed"])

    def test_resume_too_old_is_a_fresh_start(self) -> None:
        for i in range(6):
            self.hub.publish("notice", "info", str(i))
        request = self.open(last_id="1")
        blocks = parse(request.written)
        self.assertEqual([b for b in blocks if "id" in b], [])
        self.assertFalse(json.loads(blocks[-1]["data"][0])["resumed"])
        for bad in ("x", "-3", "99"):
            blocks = parse(self.open(last_id=bad).written)
            self.assertFalse(json.loads(blocks[-1]["data"][0])["resumed"], bad)

    def test_keepalive_comments_while_started(self) -> None:
        request = self.open()
        self.hub.start()
        before = len(request.written)
        self.clock.advance(15)
        self.assertEqual(request.written[before:], [b": keep-alive\n\n"])
        self.hub.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_disconnect_removes_the_stream(self) -> None:
        request = self.open()
        request.processingFailed(Failure(ConnectionDone("client went away")))
        self.assertEqual(self.hub.clients, 0)
        self.hub.publish("notice", "info", "after")
        self.assertNotIn(b"after", b"".join(request.written))

    def test_stop_finishes_every_stream(self) -> None:
        requests = [self.open(), self.open()]
        self.hub.stop()
        self.assertEqual([r.finished for r in requests], [1, 1])
        self.assertEqual(self.hub.clients, 0)

    def test_failing_write_drops_only_that_stream(self) -> None:
        good, bad = self.open(), self.open()

        def broken(data: bytes) -> None:
            raise OSError("broken pipe")

        bad.write = broken
        self.hub.publish("notice", "info", "x")
        self.assertEqual(self.hub.clients, 1)
        self.assertIn(b'"text":"x"', b"".join(good.written))
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)


class TickerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = EventHub(self.clock)
        self.state = {"n": 1}
        self.ticker = Ticker(self.hub, self.clock, 1.0, {"thing": lambda: dict(self.state)})

    def pushed(self, request: DummyRequest) -> list:
        return [json.loads(b["data"][0]) for b in parse(request.written) if b.get("event") == ["thing"]]

    def test_pushes_only_changes_and_only_with_listeners(self) -> None:
        calls = []
        self.ticker.snapshots["thing"] = lambda: calls.append(1) or dict(self.state)
        self.ticker.start()
        self.clock.advance(1)
        self.assertEqual(calls, [])
        request = StreamRequest([b""])
        self.hub.render_stream(request)
        self.clock.advance(1)
        self.clock.advance(1)
        self.assertEqual(self.pushed(request), [{"n": 1}])
        self.state["n"] = 2
        self.clock.advance(1)
        self.assertEqual(self.pushed(request), [{"n": 1}, {"n": 2}])
        self.state["n"] = 3
        self.ticker.push_now("thing")
        self.assertEqual(self.pushed(request)[-1], {"n": 3})
        self.ticker.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_push_soon_coalesces_a_burst(self) -> None:
        request = StreamRequest([b""])
        self.hub.render_stream(request)
        for n in range(2, 6):
            self.state["n"] = n
            self.ticker.push_soon("thing", 0.25)
        self.assertEqual(self.pushed(request), [])
        self.clock.advance(0.25)
        self.assertEqual(self.pushed(request), [{"n": 5}])
        self.ticker.push_soon("thing", 0.25)
        self.ticker.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_failing_snapshot_is_logged_and_skipped(self) -> None:
        self.ticker.snapshots["bad"] = lambda: 1 / 0
        request = StreamRequest([b""])
        self.hub.render_stream(request)
        self.ticker.tick()
        self.assertEqual(self.pushed(request), [{"n": 1}])
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class SlowStreamTests(SynchronousTestCase):
    """
    Stalled readers of /api/events (issue 15, item 8): a stream holds back
    at most C{max_queued} bytes while its connection's buffer is full, the
    stream that would pass it is dropped, and at most C{max_streams} are
    open.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = EventHub(self.clock, max_streams=3, max_queued=4096)

    def open(self) -> StreamRequest:
        request = StreamRequest([b"events"])
        self.assertIs(self.hub.render_stream(request), NOT_DONE_YET)
        return request

    def test_registered_as_streaming_producer(self) -> None:
        request = self.open()
        self.assertIsNotNone(request.producer)
        self.assertTrue(request.streaming)

    def test_paused_stream_queues_then_resumes_in_order(self) -> None:
        request = self.open()
        before = len(request.written)
        request.producer.pauseProducing()
        for i in range(5):
            self.hub.publish("notice", "info", f"n{i}")
        self.assertEqual(len(request.written), before)
        request.producer.resumeProducing()
        texts = [json.loads(b["data"][0])["text"] for b in parse(request.written) if b.get("event") == ["notice"]]
        self.assertEqual(texts, [f"n{i}" for i in range(5)])
        self.assertEqual(self.hub.clients, 1)

    def test_slowest_stream_dropped_others_kept(self) -> None:
        stalled, reading = self.open(), self.open()
        stalled.producer.pauseProducing()
        for i in range(200):
            self.hub.publish("notice", "info", "x" * 100)
        self.assertEqual(self.hub.clients, 1)
        self.assertEqual(self.hub.dropped, 1)
        self.assertTrue(stalled.transport.disconnecting)
        self.assertIsNone(stalled.producer)
        self.assertFalse(reading.transport.disconnecting)
        texts = [b for b in parse(reading.written) if b.get("event") == ["notice"]]
        self.assertEqual(len(texts), 200)
        # The ring still has the latest events for the reconnect.
        self.assertEqual(len(self.hub.recent(0)), 200)

    def test_queue_bounded_while_paused(self) -> None:
        request = self.open()
        request.producer.pauseProducing()
        stream = request.producer
        for i in range(30):
            self.hub.publish("notice", "info", "y" * 100)
            self.assertLessEqual(stream.queued, 4096)

    def test_stream_cap_503(self) -> None:
        for _ in range(3):
            self.open()
        request = StreamRequest([b"events"])
        body = self.hub.render_stream(request)
        self.assertEqual(request.responseCode, 503)
        self.assertIn(b"too many event streams", body)
        self.assertEqual(self.hub.clients, 3)
        self.assertEqual(self.hub.refused, 1)
