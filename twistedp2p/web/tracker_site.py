"""
The tracker's dashboard: live sessions, the catalogue, discover, ping and
evict, and a live event log.

L{TrackerDashboard} turns registry events into dashboard events and
answers the API by calling the same L{Registry} methods the admin shell
calls; L{tracker_web_service} builds the C{--web} service.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import IService
from twisted.logger import Logger

from twistedp2p import wire
from twistedp2p.tracker.shell import describe_ping
from twistedp2p.web.api import ApiError, Params, Routes, text_field
from twistedp2p.web.dashboard import add_log_routes, dashboard_service
from twistedp2p.web.metrics import TrackerMetrics
from twistedp2p.web.sse import EventHub, Ticker

#: Seconds between checks for changed heartbeat data in the peer table.
PEERS_INTERVAL = 2.0
MAX_REASON = 200

_PUBLISH_LEVEL = {"created": "ok", "updated": "info", "unchanged": "muted", "conflict": "warn"}


def session_json(session: Any) -> dict[str, Any]:
    return {
        "session_id": session.session_id,
        "hostname": session.hostname,
        "ip": session.ip,
        "p2p_port": session.p2p_port,
        "version": session.version,
        "seed": session.version is None,
        "connected_at": session.connected_at,
        # The short fingerprint of the key that signed its hello; null for
        # an unauthenticated session (docs/protocol.md).
        "fingerprint": session.fingerprint,
        "authenticated": session.fingerprint is not None,
    }


def peer_json(status: Any) -> dict[str, Any]:
    """
    One row of the peer table, from a L{PeerStatus}.
    """
    row = session_json(status.session)
    row.update(last_seen=status.last_seen, files=status.files, missed=status.missed, rtt=status.rtt)
    return row


def source_json(source: Any) -> dict[str, Any]:
    row = source.to_wire()
    row["session_id"] = source.session.session_id
    return row


def ping_json(result: Any, timeout: float) -> dict[str, Any]:
    """
    One answer of L{Registry.ping_host}, worded as the shell words it.
    """
    return {
        **session_json(result.session),
        "rtt": result.rtt,
        "answered": result.seed or result.rtt is not None or result.via is not None,
        "port_open": result.port_open,
        "via": result.via,
        "text": describe_ping(result, timeout),
    }


class TrackerDashboard:
    """
    API handlers and event translation for one tracker.

    @param registry: the tracker's L{Registry}.
    @param hub: the L{EventHub} the dashboard streams.
    """

    log = Logger()

    def __init__(self, registry: Any, hub: EventHub, peers_interval: float = PEERS_INTERVAL) -> None:
        self.registry = registry
        self.hub = hub
        self.clock = hub.clock
        self.ticker = Ticker(hub, self.clock, peers_interval, {"peers": self.peers_snapshot})

    def open(self) -> None:
        self.registry.subscribe(self.observe)

    def close(self) -> None:
        self.registry.unsubscribe(self.observe)

    # -- events --------------------------------------------------------------

    def observe(self, kind: str, fields: dict[str, Any]) -> None:
        """
        A registry event: log it on the dashboard, push the peer table.
        """
        session = fields.get("session")
        who = session_json(session) if session is not None else {}
        host = who.get("hostname", "?")
        if kind == "session_up":
            what = "seed client" if who["seed"] else f"version {who['version']}"
            self.hub.publish(kind, "ok", f"{host} up from {who['ip']}:{who['p2p_port']} ({what})", **who)
        elif kind == "session_down":
            reason = str(fields.get("reason", ""))
            self.hub.publish(kind, "info", f"{host} down: {reason}", reason=reason, **who)
        elif kind == "evicted":
            reason = str(fields.get("reason", ""))
            self.hub.publish(kind, "error", f"evicted {host} ({who.get('ip')}:{who.get('p2p_port')}): {reason}",
                             reason=reason, **who)
        elif kind == "publish":
            status = str(fields.get("status"))
            p = fields.get("publication")
            fname = getattr(p, "fname", "?")
            self.hub.publish(
                kind,
                _PUBLISH_LEVEL.get(status, "info"),
                f"{host} published {fname}: {status}",
                status=status,
                fname=fname,
                file_size=getattr(p, "file_size", None),
                sha256=getattr(p, "sha256", None),
                **who,
            )
        elif kind == "unpublish":
            fname = str(fields.get("fname"))
            self.hub.publish(kind, "info", f"{host} unpublished {fname}", fname=fname, **who)
        elif kind == "rejected":
            code, message = str(fields.get("code")), str(fields.get("message"))
            where = fields.get("address") or fields.get("session_id") or "?"
            self.hub.publish(
                kind, "error", f"rejected a request from {where}: {code}: {message}",
                code=code, message=message, address=fields.get("address"), session_id=fields.get("session_id"),
            )
        elif kind == "fetch":
            fname, n = str(fields.get("fname")), fields.get("sources", 0)
            self.hub.publish(kind, "info", f"{host} looked up {fname}: {n} source(s)", fname=fname, sources=n, **who)
        elif kind == "store_error":
            # A store failure no request reported (a removal, a renewal).
            what, error = str(fields.get("what", "")), str(fields.get("error", ""))
            self.hub.publish(kind, "error", f"index store error {what}: {error}".strip(), what=what, error=error)
            return
        else:
            return
        if kind != "fetch":
            self.ticker.push_soon("peers")

    # -- snapshots -----------------------------------------------------------

    def peers_snapshot(self) -> dict[str, Any]:
        return {"peers": [peer_json(p) for p in self.registry.peers()]}

    # -- API -----------------------------------------------------------------

    def routes(self) -> Routes:
        routes = Routes()
        routes.get("status", self.status)
        routes.get("peers", self.peers)
        routes.get("catalogue", self.catalogue)
        routes.get("discover", self.discover)
        routes.post("ping", self.ping)
        routes.post("evict", self.evict)
        return add_log_routes(routes, self.hub)

    def status(self, params: Params, body: Any) -> dict[str, Any]:
        r = self.registry
        return {
            "role": "tracker",
            "tracker_id": r.tracker_id,
            "heartbeat": r.heartbeat_interval,
            "heartbeat_misses": r.misses,
            "ping_timeout": r.ping_timeout,
            "sessions": len(r.peers()),
            "time": float(self.clock.seconds()),
        }

    def peers(self, params: Params, body: Any) -> dict[str, Any]:
        return {**self.peers_snapshot(), "time": float(self.clock.seconds())}

    def catalogue(self, params: Params, body: Any) -> Any:
        pattern = wire.pattern("pattern", params.text("pattern", ""))
        limit = params.integer("limit", wire.limit, wire.DEFAULT_LIMIT)
        d = self.registry.catalogue(pattern, limit)
        d.addCallback(lambda entries: {"pattern": pattern, "files": [e.to_wire() for e in entries]})
        return d

    def discover(self, params: Params, body: Any) -> Any:
        hostname = _hostname(params.text("hostname"))
        online = [peer_json(p) for p in self.registry.peers() if p.session.hostname == hostname]
        d = self.registry.discover(hostname)
        d.addCallback(
            lambda sources: {
                "hostname": hostname,
                "online": bool(online),
                "sessions": online,
                "files": [source_json(s) for s in sources],
            }
        )
        return d

    def ping(self, params: Params, body: dict[str, Any]) -> Any:
        hostname = _hostname(body.get("hostname"))
        timeout = self.registry.ping_timeout
        d = self.registry.ping_host(hostname)
        d.addCallback(
            lambda results: {
                "hostname": hostname,
                "online": bool(results),
                "results": [ping_json(r, timeout) for r in results],
                "text": f"{hostname}: offline" if not results else "; ".join(ping_json(r, timeout)["text"] for r in results),
            }
        )
        return d

    def evict(self, params: Params, body: dict[str, Any]) -> Any:
        session_id = text_field(body, "session_id")
        reason = text_field(body, "reason", required=False, default="")
        wire._text(MAX_REASON, allow_empty=True)("reason", reason)
        session = self.registry.session(session_id)
        if session is None:
            raise ApiError(404, f"no live session {session_id!r} on this tracker")
        why = "evicted from the web dashboard" + (f": {reason}" if reason else "")
        d = self.registry.evict(session_id, why)
        d.addCallback(lambda _: {"evicted": session_id, "hostname": session.hostname, "reason": why})
        return d


def _hostname(value: Any) -> str:
    if value is None or value == "":
        raise ApiError(400, "a hostname is required")
    return wire.hostname("hostname", value)


def tracker_web_service(
    registry: Any,
    endpoint: str,
    token: str | None,
    reactor: Any,
    *,
    on_fatal: Callable[[str], Any] | None = None,
) -> IService:
    """
    The tracker's C{--web} service: add it as a child of the tracker's
    C{MultiService}.

    @param registry: the tracker's L{Registry}.
    @param endpoint: a server endpoint string (C{tcp:8080:interface=127.0.0.1}).
    @param token: the API token, or None (only sensible on loopback; see
        L{twistedp2p.web.options.check_web_options}).
    @param on_fatal: called with a message if the endpoint cannot listen.
    """
    dashboard = TrackerDashboard(registry, EventHub(reactor))
    return dashboard_service(
        dashboard,
        TrackerMetrics(registry),
        "tracker.html",
        endpoint,
        token,
        reactor,
        label="tracker dashboard",
        on_fatal=on_fatal,
    )
