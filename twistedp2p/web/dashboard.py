"""
The plumbing the tracker's and the peer's dashboards share around their
own handlers: the event-log endpoints and the assembly of the C{--web}
service (token guard, resource tree, metrics, live updates).

A dashboard object (L{twistedp2p.web.tracker_site.TrackerDashboard},
L{twistedp2p.web.peer_site.PeerDashboard}) has C{hub} (its
L{EventHub}), C{ticker}, C{open()}/C{close()} (subscribe to and leave
what it shows) and C{routes()}.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.application.service import IService

from twistedp2p import wire
from twistedp2p.web.api import ApiResource, Guard, Params, Routes, non_negative
from twistedp2p.web.metrics import MetricsPage
from twistedp2p.web.options import is_tcp_endpoint
from twistedp2p.web.server import WebService, build_root
from twistedp2p.web.sse import EventHub

#: Events C{GET /api/log} returns when the page gives no C{limit}.
DEFAULT_LOG_LIMIT = 200


def add_log_routes(routes: Routes, hub: EventHub) -> Routes:
    """
    Add the two event-log endpoints to C{routes}: C{GET log} (the events
    the hub keeps, C{?since=ID&limit=N}) and C{GET events} (the live
    stream).
    """

    def recent_log(params: Params, body: Any) -> dict[str, Any]:
        since = params.integer("since", non_negative, 0)
        limit = params.integer("limit", wire.limit, DEFAULT_LOG_LIMIT)
        return {"events": hub.recent(since, limit)}

    routes.get("log", recent_log)
    routes.get("events", hub.render_stream, raw=True)
    return routes


def dashboard_service(
    dashboard: Any,
    metrics: Any,
    page: str,
    endpoint: str,
    token: str | None,
    reactor: Any,
    *,
    label: str,
    on_fatal: Callable[[str], Any] | None = None,
) -> IService:
    """
    The C{--web} service of one dashboard: C{page} (a static file name)
    at C{/}, the dashboard's API under C{/api/} and C{metrics} at
    C{/metrics}, both behind one L{Guard}.  The dashboard and the metrics
    follow their source while the service runs.

    @param token: the API token, or None (loopback only; see
        L{twistedp2p.web.options.check_web_options}).
    @param on_fatal: called with a message if the endpoint cannot listen.
    @return: the service, with C{dashboard} and C{metrics} attributes.
    """
    guard = Guard(token, check_host=is_tcp_endpoint(endpoint))
    root = build_root(page, ApiResource(dashboard.routes(), guard), MetricsPage(metrics, guard, reactor))
    service = WebService(
        endpoint,
        root,
        reactor,
        dashboard.hub,
        tickers=[dashboard.ticker],
        on_start=[dashboard.open, metrics.open],
        on_stop=[dashboard.close, metrics.close],
        label=label,
        token=token,
        on_fatal=on_fatal,
    )
    service.dashboard = dashboard  # type: ignore[attr-defined]
    service.metrics = metrics  # type: ignore[attr-defined]
    return service
