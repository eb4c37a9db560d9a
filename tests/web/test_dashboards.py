"""
Unit tests for the dashboards' event translation and snapshots, on a
L{Clock} with plain objects standing in for the registry and the node.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.events import Events
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.tracker.model import Publication, Session
from twistedp2p.tracker.registry import PeerStatus
from twistedp2p.web.peer_site import PeerDashboard
from twistedp2p.web.sse import EventHub
from twistedp2p.web.tracker_site import TrackerDashboard

from .test_metrics import FakeRegistry


class TrackerDashboardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = EventHub(self.clock)
        self.registry = FakeRegistry()
        self.dashboard = TrackerDashboard(self.registry, self.hub)
        self.dashboard.open()
        self.session = Session("t:1", "lab-pc", "10.0.0.7", 4000, None, 1.0, "t")

    def test_events_become_log_lines(self) -> None:
        p = Publication("a.pdf", "C:/a.pdf", 10, "2025-01-01", None)
        self.registry.emit("session_up", session=self.session)
        for status in ("created", "updated", "unchanged", "conflict"):
            self.registry.emit("publish", session=self.session, publication=p, status=status)
        self.registry.emit("unpublish", session=self.session, fname="a.pdf")
        self.registry.emit("fetch", session=self.session, fname="a.pdf", sources=0)
        self.registry.emit("rejected", code="bad_json", message="frame is not valid JSON",
                           session_id=None, address="10.0.0.9:5555")
        self.registry.emit("evicted", session=self.session, reason="missed 3 heartbeat pings")
        self.registry.emit("session_down", session=self.session, reason="missed 3 heartbeat pings")
        self.registry.emit("something_new", session=self.session)
        lines = [(e["kind"], e["level"], e["text"]) for e in self.hub.recent()]
        self.assertEqual(
            lines,
            [
                ("session_up", "ok", "lab-pc up from 10.0.0.7:4000 (seed client)"),
                ("publish", "ok", "lab-pc published a.pdf: created"),
                ("publish", "info", "lab-pc published a.pdf: updated"),
                ("publish", "muted", "lab-pc published a.pdf: unchanged"),
                ("publish", "warn", "lab-pc published a.pdf: conflict"),
                ("unpublish", "info", "lab-pc unpublished a.pdf"),
                ("fetch", "info", "lab-pc looked up a.pdf: 0 source(s)"),
                ("rejected", "error", "rejected a request from 10.0.0.9:5555: bad_json: frame is not valid JSON"),
                ("evicted", "error", "evicted lab-pc (10.0.0.7:4000): missed 3 heartbeat pings"),
                ("session_down", "info", "lab-pc down: missed 3 heartbeat pings"),
            ],
        )
        publish = self.hub.recent()[1]
        self.assertEqual((publish["session_id"], publish["status"], publish["file_size"], publish["seed"]),
                         ("t:1", "created", 10, True))

    def test_store_errors_are_logged(self) -> None:
        self.registry.emit("store_error", what="removing session t:1", error="database is locked")
        [event] = self.hub.recent()
        self.assertEqual((event["kind"], event["level"], event["text"]),
                         ("store_error", "error", "index store error removing session t:1: database is locked"))

    def test_peers_snapshot(self) -> None:
        self.registry.rows = [PeerStatus(self.session, 5.0, 2, 1, 0.002)]
        self.assertEqual(
            self.dashboard.peers_snapshot(),
            {"peers": [{"session_id": "t:1", "hostname": "lab-pc", "ip": "10.0.0.7", "p2p_port": 4000,
                        "version": None, "seed": True, "connected_at": 1.0, "fingerprint": None, "authenticated": False, "last_seen": 5.0, "files": 2,
                        "missed": 1, "rtt": 0.002}]},
        )

    def test_close_unsubscribes(self) -> None:
        self.dashboard.close()
        self.registry.emit("session_up", session=self.session)
        self.assertEqual(self.hub.recent(), [])


class PeerDashboardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.events = Events(self.clock)
        self.transfers = Transfers(self.clock, self.events)
        self.node = SimpleNamespace(
            events=self.events, transfers=self.transfers, slots=Slots(2), library=[],
            status=lambda: {"hostname": "p", "transfers": [], "published": []},
        )
        self.hub = EventHub(self.clock)
        self.dashboard = PeerDashboard(self.node, self.hub, run_in_thread=None)
        self.dashboard.open()

    def test_rate_and_eta(self) -> None:
        t = self.transfers.start("down", "big.iso", "alpha (127.0.0.1:4000)", 1000)
        [row] = self.dashboard.transfers_snapshot()["active"]
        self.assertEqual((row["done"], row["eta"]), (0, None))
        self.clock.advance(1)
        t.add(100)
        [row] = self.dashboard.transfers_snapshot()["active"]
        self.assertEqual((row["rate"], row["eta"], row["percent"]), (100.0, 9.0, 10.0))
        self.clock.advance(1)
        t.add(300)
        [row] = self.dashboard.transfers_snapshot()["active"]
        # Smoothed: half the old rate, half the new one.
        self.assertEqual((row["rate"], row["eta"]), (200.0, 3.0))

    def test_finished_transfers_are_kept_and_logged(self) -> None:
        t = self.transfers.start("up", "a", "beta", 10)
        t.add(10)
        t.finish("done")
        u = self.transfers.start("down", "b", "gamma", None)
        u.finish("failed: no data within 2 s")
        snapshot = self.dashboard.transfers_snapshot()
        self.assertEqual(snapshot["active"], [])
        self.assertEqual([(r["fname"], r["outcome"]) for r in snapshot["recent"]],
                         [("b", "failed: no data within 2 s"), ("a", "done")])
        # (Upload and download slots together: K each.)
        self.assertEqual(snapshot["sessions"]["limit"], 4)
        levels = [(e["kind"], e["level"]) for e in self.hub.recent()]
        self.assertEqual(levels, [("transfer_started", "info"), ("transfer_finished", "ok"),
                                  ("transfer_started", "info"), ("transfer_finished", "error")])

    def test_link_and_unpublish_levels(self) -> None:
        self.events.emit("link", "tracker link: connected to t", state="connected")
        self.events.emit("link", "tracker link: lost t, reconnecting", state="waiting")
        self.events.emit("unpublished", "unpublished a", fname="a", reason="requested")
        self.events.emit("unpublished", "unpublished b: the file changed", fname="b", reason="the file changed")
        self.assertEqual([e["level"] for e in self.hub.recent()], ["ok", "warn", "info", "warn"])

    def test_status_snapshot_leaves_out_the_big_lists(self) -> None:
        self.assertEqual(self.dashboard.status_snapshot(), {"hostname": "p", "published_count": 0})
