"""
Unit tests for L{twistedp2p.web.metrics}: counters driven by events,
gauges refreshed from state, one registry per service.
"""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.events import Events
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.tracker.model import Publication, Session
from twistedp2p.tracker.registry import PeerStatus
from twistedp2p.web.metrics import PeerMetrics, TrackerMetrics, is_verification_failure


def value(metrics, name: str, **labels) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    assert found is not None, (name, labels)
    return found


def session(version=1, sid="t:1") -> Session:
    return Session(sid, "alpha", "127.0.0.1", 4000, version, 1.0, "t")


class FakeRegistry:
    def __init__(self) -> None:
        self.observers = []
        self.rows = []

    def subscribe(self, f):
        self.observers.append(f)

    def unsubscribe(self, f):
        self.observers.remove(f)

    def peers(self):
        return self.rows

    def emit(self, kind, **fields):
        for f in list(self.observers):
            f(kind, fields)


class TrackerMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.registry = FakeRegistry()
        self.metrics = TrackerMetrics(self.registry)
        self.metrics.open()

    def test_counters_follow_events(self) -> None:
        s = session()
        p = Publication("a", "a", 1, 1.0, "a" * 64)
        self.registry.emit("session_up", session=s)
        for status in ("created", "unchanged", "conflict", "created"):
            self.registry.emit("publish", session=s, publication=p, status=status)
        self.registry.emit("fetch", session=s, fname="a", sources=2, elapsed=0.003)
        self.registry.emit("fetch", session=s, fname="b", sources=0)
        self.registry.emit("rejected", code="bad_field", message="m", session_id=None, address=None)
        self.registry.emit("rejected", code="index_unavailable", message="m", session_id=None, address=None)
        self.registry.emit("evicted", session=s, reason="r")
        self.registry.emit("session_down", session=s, reason="r")
        m = self.metrics
        self.assertEqual(value(m, "p2p_tracker_publishes_total", status="created"), 2)
        self.assertEqual(value(m, "p2p_tracker_publishes_total", status="conflict"), 1)
        self.assertEqual(value(m, "p2p_tracker_fetch_lookups_total", result="found"), 1)
        self.assertEqual(value(m, "p2p_tracker_fetch_lookups_total", result="empty"), 1)
        self.assertEqual(value(m, "p2p_tracker_fetch_latency_seconds_count"), 1)
        self.assertEqual(value(m, "p2p_tracker_fetch_latency_seconds_bucket", le="0.005"), 1)
        self.assertEqual(value(m, "p2p_tracker_rejected_total", code="bad_field"), 1)
        self.assertEqual(value(m, "p2p_tracker_store_errors_total"), 1)
        self.assertEqual(value(m, "p2p_tracker_evictions_total"), 1)
        self.assertEqual(value(m, "p2p_tracker_sessions_opened_total"), 1)
        self.assertEqual(value(m, "p2p_tracker_sessions_closed_total"), 1)

    def test_gauges_refresh_from_state(self) -> None:
        self.registry.rows = [
            PeerStatus(session(1, "t:1"), 1.0, 3, 0, None),
            PeerStatus(session(None, "t:2"), 1.0, 2, 0, None),
            PeerStatus(session(1, "t:3"), 1.0, 0, 0, None),
        ]
        text = self.metrics.text().decode()
        self.assertIn('p2p_tracker_sessions{kind="native"} 2.0', text)
        self.assertIn('p2p_tracker_sessions{kind="seed"} 1.0', text)
        self.assertIn("p2p_tracker_publications 5.0", text)

    def test_own_registry_and_close(self) -> None:
        other = TrackerMetrics(FakeRegistry())
        self.assertIsNot(other.registry, self.metrics.registry)
        self.assertIsNone(REGISTRY.get_sample_value("p2p_tracker_evictions_total"))
        self.metrics.close()
        self.assertEqual(self.registry.observers, [])


class PeerMetricsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events = Events(self.clock)
        self.transfers = Transfers(self.clock, self.events)
        self.slots = Slots(3)
        self.node = SimpleNamespace(
            events=self.events, transfers=self.transfers, slots=self.slots, library=[1, 2],
            link=SimpleNamespace(state="connected"),
        )
        self.metrics = PeerMetrics(self.node)
        self.metrics.open()

    def test_bytes_are_counted_once(self) -> None:
        t = self.transfers.start("down", "f", "alpha", 100)
        t.add(30)
        self.metrics.refresh()
        self.assertEqual(value(self.metrics, "p2p_peer_bytes_total", direction="down"), 30)
        self.assertEqual(value(self.metrics, "p2p_peer_transfers_in_progress", direction="down"), 1)
        t.add(70)
        t.finish("done")
        self.metrics.refresh()
        self.assertEqual(value(self.metrics, "p2p_peer_bytes_total", direction="down"), 100)
        self.assertEqual(value(self.metrics, "p2p_peer_transfers_in_progress", direction="down"), 0)
        self.assertEqual(value(self.metrics, "p2p_peer_transfers_total", direction="down", outcome="done"), 1)
        up = self.transfers.start("up", "g", "beta", 10)
        up.add(4)
        up.finish("failed: connection lost")
        self.assertEqual(value(self.metrics, "p2p_peer_bytes_total", direction="up"), 4)
        self.assertEqual(value(self.metrics, "p2p_peer_transfers_total", direction="up", outcome="failed"), 1)
        self.assertEqual(value(self.metrics, "p2p_peer_verification_failures_total"), 0)

    def test_verification_failures(self) -> None:
        for message in (
            "the bytes do not match the published SHA-256 (aaa != bbb)",
            "got 10 bytes, expected 12",
        ):
            t = self.transfers.start("down", "f", "alpha", 12)
            t.finish(f"failed: {errors.VerificationFailed(message)}")
        t = self.transfers.start("down", "f", "alpha", 12)
        t.finish("failed: no data within 2 s")
        self.assertEqual(value(self.metrics, "p2p_peer_verification_failures_total"), 2)
        self.assertTrue(is_verification_failure({"verification_failed": True, "outcome": "failed"}))

    def test_state_gauges(self) -> None:
        self.slots.try_acquire("up")
        for _ in range(3):
            self.slots.try_acquire("up")
        self.metrics.refresh()
        self.metrics.refresh()
        m = self.metrics
        # (Upload and download slots together: K each.)
        self.assertEqual(value(m, "p2p_peer_session_slots", state="limit"), 6)
        self.assertEqual(value(m, "p2p_peer_session_slots", state="in_use"), 3)
        self.assertEqual(value(m, "p2p_peer_busy_refusals_total"), 1)
        self.assertEqual(value(m, "p2p_peer_published_files"), 2)
        self.assertEqual(value(m, "p2p_peer_tracker_connected"), 1)
        self.node.link.state = "waiting"
        m.refresh()
        self.assertEqual(value(m, "p2p_peer_tracker_connected"), 0)
