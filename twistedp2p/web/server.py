"""
The HTTP side of a dashboard: the resource tree, the site and the
L{WebService} a tracker or a peer adds as a child when run with C{--web}.

  - C{/}: the dashboard page; C{/static/NAME}: its CSS and scripts
    (package data, read once at start; no directory listing);
  - C{/api/...}: the JSON API (L{twistedp2p.web.api.ApiResource});
  - C{/metrics}: Prometheus text format (L{twistedp2p.web.metrics}).
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.endpoints import serverFromString
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from twisted.python.failure import Failure
from twisted.web.pages import notFound
from twisted.web.resource import Resource
from twisted.web.server import Site

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


#: A line of a page that stands for a fragment: C{<!--#include _NAME.html -->}.
_INCLUDE = re.compile(rb"^([ \t]*)<!--#include ([\w.-]+) -->[ \t]*$", re.MULTILINE)


def read_static() -> dict[str, tuple[bytes, str]]:
    """
    The dashboard files shipped in C{twistedp2p/web/static}: name ->
    (bytes, content type).

    Files whose name starts with C{_} are fragments the two pages share
    (head, event log, footer): they are not served, but pasted into the
    pages in place of their C{<!--#include _NAME -->} lines, indented like
    those lines.
    """
    shipped = {
        item.name: item.read_bytes()
        for item in resources.files("twistedp2p.web").joinpath("static").iterdir()
        if item.is_file()
    }
    found: dict[str, tuple[bytes, str]] = {}
    for name, data in shipped.items():
        suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
        if name.startswith("_") or suffix not in _TYPES:
            continue
        if suffix == ".html":
            data = include_fragments(name, data, shipped)
        found[name] = (data, _TYPES[suffix])
    return found


def include_fragments(name: str, page: bytes, files: dict[str, bytes]) -> bytes:
    """
    C{page} with each include line replaced by its fragment from C{files}
    (fragments include nothing themselves).

    @raise ValueError: for a fragment that is not shipped (a packaging
        mistake: better found at start than as a broken page).
    """

    def paste(match: re.Match[bytes]) -> bytes:
        indent, fragment = match.group(1), match.group(2).decode("ascii")
        if not fragment.startswith("_") or fragment not in files:
            raise ValueError(f"static/{name} includes {fragment!r}, which is not a fragment in static/")
        lines = files[fragment].rstrip(b"\n").split(b"\n")
        return b"\n".join(indent + line if line else line for line in lines)

    return _INCLUDE.sub(paste, page)


class _Page(Resource):
    """
    One static file, revalidated by the browser on each load.
    """

    isLeaf = True

    def __init__(self, data: bytes, content_type: str) -> None:
        Resource.__init__(self)
        self.data = data
        self.content_type = content_type.encode("ascii")

    def render_GET(self, request: Any) -> bytes:
        if request.postpath and request.postpath != [b""]:
            return notFound().render(request)
        request.setHeader(b"Content-Type", self.content_type)
        request.setHeader(b"Cache-Control", b"no-cache")
        return self.data

    render_HEAD = render_GET


class StaticFiles(Resource):
    """
    C{/static/NAME} for the files we ship, nothing else.
    """

    def __init__(self, files: dict[str, tuple[bytes, str]]) -> None:
        Resource.__init__(self)
        for name, (data, content_type) in files.items():
            self.putChild(name.encode("utf-8"), _Page(data, content_type))

    def getChild(self, path: bytes, request: Any) -> Resource:
        return notFound()


class _Root(Resource):
    def getChild(self, path: bytes, request: Any) -> Resource:
        return notFound()


def build_root(page: str, api: Resource, metrics: Resource) -> Resource:
    """
    The resource tree: C{page} (a static file name) at C{/}.
    """
    files = read_static()
    root = _Root()
    data, content_type = files[page]
    root.putChild(b"", _Page(data, content_type))
    root.putChild(b"static", StaticFiles(files))
    root.putChild(b"api", api)
    root.putChild(b"metrics", metrics)
    return root


class DashboardSite(Site):
    """
    A C{Site} that never shows tracebacks, sends the same security headers
    on every answer, and logs state-changing and failed requests with
    named fields instead of an access-log line for every request.
    """

    displayTracebacks = False
    noisy = False
    _logger = Logger(namespace="twistedp2p.web.access")

    def getResourceFor(self, request: Any) -> Resource:
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        request.setHeader(b"Referrer-Policy", b"no-referrer")
        request.setHeader(b"X-Frame-Options", b"DENY")
        request.setHeader(b"Content-Security-Policy", CONTENT_SECURITY_POLICY.encode("ascii"))
        return Site.getResourceFor(self, request)

    def log(self, request: Any) -> None:  # type: ignore[override]
        code = request.code
        if request.method in (b"GET", b"HEAD") and code < 400:
            return
        self._logger.info(
            "web {method} {uri} -> {code} ({client})",
            method=request.method.decode("ascii", "replace"),
            uri=request.uri.decode("utf-8", "replace")[:200],
            code=code,
            client=getattr(request.getClientAddress(), "host", "local"),
        )


class _Connections(WrappingFactory):
    """
    Wraps the site to know its open connections, so that stopping the
    dashboard closes them (browsers keep HTTP connections alive).
    """

    noisy = False

    def __init__(self, site: Site) -> None:
        WrappingFactory.__init__(self, site)
        self._idle: list[Deferred] = []

    def unregisterProtocol(self, p: Any) -> None:
        WrappingFactory.unregisterProtocol(self, p)
        if not self.protocols:
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    def close_all(self) -> Deferred:
        """
        Close every connection; fire once they are all gone.
        """
        if not self.protocols:
            return succeed(None)
        d: Deferred = Deferred()
        self._idle.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection() if hasattr(p.transport, "abortConnection") else p.transport.loseConnection()
        return d


class WebService(Service):
    """
    Serve one dashboard on a server endpoint string.

    @param hub: the dashboard's L{twistedp2p.web.sse.EventHub}.
    @param tickers: L{twistedp2p.web.sse.Ticker}s to run while serving.
    @param on_start: callables run when the service starts (subscribe).
    @param on_stop: callables run when the service stops (unsubscribe).
    @param on_fatal: called with a message when the endpoint cannot listen.
    """

    log = Logger()

    def __init__(
        self,
        endpoint: str,
        root: Resource,
        reactor: Any,
        hub: Any,
        tickers: list[Any] = (),  # type: ignore[assignment]
        on_start: list[Callable[[], Any]] = (),  # type: ignore[assignment]
        on_stop: list[Callable[[], Any]] = (),  # type: ignore[assignment]
        label: str = "web dashboard",
        token: str | None = None,
        on_fatal: Callable[[str], Any] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.reactor = reactor
        self.hub = hub
        self.tickers = list(tickers)
        self.label = label
        self.token = token
        self.site = DashboardSite(root, reactor=reactor)
        self.factory = _Connections(self.site)
        self._on_start = list(on_start)
        self._on_stop = list(on_stop)
        self._on_fatal = on_fatal
        self.port: Any = None
        self._failure: Failure | None = None
        self._waiters: list[Deferred] = []
        self._starting: Deferred | None = None

    @property
    def url(self) -> str | None:
        """
        C{http://HOST:PORT/} once listening on TCP, else None.
        """
        if self.port is None:
            return None
        address = self.port.getHost()
        host = getattr(address, "host", None)
        if host is None:
            return None
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{address.port}/"

    def startService(self) -> None:
        Service.startService(self)
        self._failure = None
        for callback in self._on_start:
            callback()
        self.hub.start()
        for ticker in self.tickers:
            ticker.start()
        try:
            d = serverFromString(self.reactor, self.endpoint).listen(self.factory)
        except Exception:
            d = fail()
        self._starting = d
        d.addCallbacks(self._listening, self._listen_failed)

    def _listening(self, port: Any) -> None:
        self._starting = None
        if not self.running:
            port.stopListening()
            return
        self.port = port
        self.log.info(
            "{label} listening on {where}{auth}",
            label=self.label,
            where=self.url or str(port.getHost()),
            auth=" (API token required)" if self.token else "",
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _listen_failed(self, failure: Failure) -> None:
        self._starting = None
        self._failure = failure
        message = f"the {self.label} cannot listen on {self.endpoint}: {failure.getErrorMessage()}"
        self.log.critical("{message}", message=message)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)
        if self._on_fatal is not None:
            self._on_fatal(message)

    def whenListening(self) -> Deferred:
        """
        @return: Deferred firing the C{IListeningPort} (failing when the
            endpoint cannot listen).
        """
        if self.port is not None:
            return succeed(self.port)
        if self._failure is not None:
            return fail(self._failure)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def stopService(self) -> Deferred:
        Service.stopService(self)
        for ticker in self.tickers:
            ticker.stop()
        self.hub.stop()
        for callback in self._on_stop:
            try:
                callback()
            except Exception:
                self.log.failure("stopping the {label}", label=self.label)
        port, self.port = self.port, None
        stops = [self.factory.close_all()]
        if port is not None:
            stops.append(port.stopListening() or succeed(None))
        return DeferredList(stops, consumeErrors=True).addCallback(lambda _: None)
