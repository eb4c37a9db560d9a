"""
Prometheus metrics of one tracker or one peer, at C{GET /metrics}.

Each service gets its own C{CollectorRegistry} (never the global one:
tests run several services in one process).  Counters are driven by the
registry's or the node's events; gauges that mirror live state are
refreshed on the reactor thread just before each scrape, and the
exposition itself runs as C{prometheus_client}'s WSGI app in the
reactor's thread pool, which is what
C{prometheus_client.twisted.MetricsResource} does, but with the injected
reactor rather than the global one.
"""

from __future__ import annotations

import re
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest, make_wsgi_app
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource

from twistedp2p.web.api import ApiError, Guard, error_reply, write_json

#: Buckets for tracker lookups (seconds): sub-millisecond to a few seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TrackerMetrics:
    """
    A tracker's metrics, fed by L{Registry.subscribe} events.

    The fetch latency histogram is observed from the C{elapsed} field
    (seconds) of C{fetch} events when the registry provides it.
    """

    log = Logger()

    def __init__(self, registry: Any) -> None:
        self.tracker = registry
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.sessions = Gauge("p2p_tracker_sessions", "Live peer sessions on this tracker.", ["kind"], registry=r)
        self.publications = Gauge(
            "p2p_tracker_publications", "Publications held by this tracker's live sessions.", registry=r
        )
        self.sessions_opened = Counter(
            "p2p_tracker_sessions_opened", "Sessions registered (successful hello).", registry=r
        )
        self.sessions_closed = Counter("p2p_tracker_sessions_closed", "Sessions that ended.", registry=r)
        self.publishes = Counter(
            "p2p_tracker_publishes", "Publish requests by outcome status.", ["status"], registry=r
        )
        self.unpublishes = Counter("p2p_tracker_unpublishes", "Unpublish requests carried out.", registry=r)
        self.fetches = Counter(
            "p2p_tracker_fetch_lookups", "Fetch lookups by result (found or empty).", ["result"], registry=r
        )
        self.fetch_latency = Histogram(
            "p2p_tracker_fetch_latency_seconds",
            "Time to answer a fetch lookup.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.evictions = Counter("p2p_tracker_evictions", "Sessions evicted.", registry=r)
        self.rejected = Counter("p2p_tracker_rejected", "Requests refused, by error code.", ["code"], registry=r)
        self.store_errors = Counter(
            "p2p_tracker_store_errors", "Requests that failed because the index store was unavailable.", registry=r
        )
        for status in ("created", "updated", "unchanged", "conflict"):
            self.publishes.labels(status)
        for result in ("found", "empty"):
            self.fetches.labels(result)
        for kind in ("native", "seed"):
            self.sessions.labels(kind)

    def open(self) -> None:
        """
        Start counting registry events.
        """
        self.tracker.subscribe(self.observe)

    def close(self) -> None:
        self.tracker.unsubscribe(self.observe)

    def observe(self, kind: str, fields: dict[str, Any]) -> None:
        """
        One registry event.
        """
        if kind == "session_up":
            self.sessions_opened.inc()
        elif kind == "session_down":
            self.sessions_closed.inc()
        elif kind == "publish":
            self.publishes.labels(str(fields.get("status"))).inc()
        elif kind == "unpublish":
            self.unpublishes.inc()
        elif kind == "fetch":
            self.fetches.labels("found" if fields.get("sources") else "empty").inc()
            elapsed = fields.get("elapsed")
            if isinstance(elapsed, (int, float)) and elapsed >= 0:
                self.fetch_latency.observe(elapsed)
        elif kind == "evicted":
            self.evictions.inc()
        elif kind == "rejected":
            code = str(fields.get("code"))
            self.rejected.labels(code).inc()
            if code == "index_unavailable":
                self.store_errors.inc()
        elif kind == "store_error":
            self.store_errors.inc()

    def refresh(self) -> None:
        """
        Mirror live state into the gauges (on the reactor thread).
        """
        counts = {"native": 0, "seed": 0}
        files = 0
        for peer in self.tracker.peers():
            counts["seed" if peer.session.version is None else "native"] += 1
            files += peer.files
        for kind, n in counts.items():
            self.sessions.labels(kind).set(n)
        self.publications.set(files)

    def text(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)


_VERIFICATION = re.compile(r"do not match the published|got \d+ bytes, expected \d+")


def is_verification_failure(fields: dict[str, Any]) -> bool:
    """
    Whether a C{transfer_finished} event reports bytes that failed
    verification (size or SHA-256).
    """
    if fields.get("verification_failed") is True:
        return True
    outcome = fields.get("outcome")
    return isinstance(outcome, str) and bool(_VERIFICATION.search(outcome))


class PeerMetrics:
    """
    A peer's metrics, fed by L{PeerNode.events} and refreshed from its
    transfers table, slots and library before each scrape.
    """

    log = Logger()

    def __init__(self, node: Any) -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.in_progress = Gauge(
            "p2p_peer_transfers_in_progress", "Transfers in progress by direction (up, down).", ["direction"], registry=r
        )
        self.bytes = Counter("p2p_peer_bytes", "Bytes moved by direction (up, down).", ["direction"], registry=r)
        self.transfers = Counter(
            "p2p_peer_transfers", "Finished transfers by direction and outcome (done, failed).",
            ["direction", "outcome"], registry=r,
        )
        self.verification_failures = Counter(
            "p2p_peer_verification_failures", "Downloads whose bytes failed size or SHA-256 verification.", registry=r
        )
        self.published = Gauge("p2p_peer_published_files", "Files this peer publishes.", registry=r)
        self.slots = Gauge(
            "p2p_peer_session_slots", "The K cap (limit) and its use (in_use, waiting).", ["state"], registry=r
        )
        self.busy_refusals = Counter(
            "p2p_peer_busy_refusals", "Uploads refused because every session slot was taken.", registry=r
        )
        self.tracker_connected = Gauge(
            "p2p_peer_tracker_connected", "1 while the tracker link is up, else 0.", registry=r
        )
        for direction in ("up", "down"):
            self.in_progress.labels(direction)
            self.bytes.labels(direction)
            for outcome in ("done", "failed"):
                self.transfers.labels(direction, outcome)
        #: Transfer id -> bytes already counted in C{self.bytes}.
        self._counted: dict[int, int] = {}
        self._refused_seen = 0

    def open(self) -> None:
        """
        Start counting the node's events.
        """
        self.node.events.subscribe(self.observe)

    def close(self) -> None:
        self.node.events.unsubscribe(self.observe)

    def observe(self, event: Any) -> None:
        if event.kind != "transfer_finished":
            return
        info = event.fields.get("transfer") or {}
        direction = info.get("direction")
        if direction not in ("up", "down"):
            return
        done = info.get("done") or 0
        self.bytes.labels(direction).inc(max(0, done - self._counted.pop(info.get("id"), 0)))
        outcome = event.fields.get("outcome")
        self.transfers.labels(direction, "done" if outcome == "done" else "failed").inc()
        if is_verification_failure(event.fields):
            self.verification_failures.inc()

    def refresh(self) -> None:
        node = self.node
        active = {"up": 0, "down": 0}
        for t in node.transfers.active():
            if t.direction in active:
                active[t.direction] += 1
                delta = t.done - self._counted.get(t.id, 0)
                if delta > 0:
                    self.bytes.labels(t.direction).inc(delta)
                    self._counted[t.id] = t.done
        for direction, n in active.items():
            self.in_progress.labels(direction).set(n)
        self.published.set(len(node.library))
        slots = node.slots
        self.slots.labels("limit").set(slots.limit)
        self.slots.labels("in_use").set(slots.in_use)
        self.slots.labels("waiting").set(slots.waiting)
        if slots.refused > self._refused_seen:
            self.busy_refusals.inc(slots.refused - self._refused_seen)
            self._refused_seen = slots.refused
        link = getattr(node, "link", None)
        self.tracker_connected.set(1 if link is not None and getattr(link, "state", None) == "connected" else 0)

    def text(self) -> bytes:
        self.refresh()
        return generate_latest(self.registry)


class MetricsPage(Resource):
    """
    C{/metrics}: the API guard, a refresh on the reactor thread, then
    C{prometheus_client}'s WSGI exposition in the reactor's thread pool.
    """

    isLeaf = True

    def __init__(self, metrics: Any, guard: Guard, reactor: Any) -> None:
        Resource.__init__(self)
        self.metrics = metrics
        self.guard = guard
        self._wsgi = WSGIResource(reactor, reactor.getThreadPool(), make_wsgi_app(metrics.registry))

    def render(self, request: Any) -> Any:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"Allow", b"GET")
            return self._refuse(request, ApiError(405, "/metrics accepts GET"))
        problem = self.guard.problem(request, False)
        if problem is not None:
            if problem.status == 401:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="twistedp2p"')
            return self._refuse(request, problem)
        self.metrics.refresh()
        return self._wsgi.render(request)

    def _refuse(self, request: Any, error: ApiError) -> Any:
        write_json(request, error.status, error_reply(error).body)  # type: ignore[union-attr]
        return NOT_DONE_YET
