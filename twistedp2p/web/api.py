"""
The JSON API machinery both dashboards share: a small router, the token
and origin guard, request parsing and the one place that turns exceptions
into C{{"error": "error: ..."}} answers (never a traceback).

A handler is a plain callable C{handler(params, body)} returning a dict
(200), a L{Reply} or a Deferred of either; it raises L{ApiError}, an
L{errors.P2PError} or a L{wire.WireError} for anything a user can cause.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from twistedp2p import errors, wire

#: Largest JSON body a POST may carry.
MAX_BODY = 64 * 1024

JSON_TYPE = b"application/json; charset=utf-8"


class ApiError(Exception):
    """
    A request the API refuses: HTTP C{status}, a message for people (shown
    as C{"error: " + message}) and extra JSON fields for the page.
    """

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.extra = extra


@dataclass
class Reply:
    """
    A handler's answer with an HTTP status other than 200.
    """

    status: int
    body: dict[str, Any]


#: P2PError subclasses in lookup order -> (HTTP status, extra fields).
_STATUS: list[tuple[type, int, dict[str, Any]]] = [
    (errors.Conflict, 409, {"conflict": True}),
    (errors.AlreadyHave, 409, {"exists": True, "same": True}),
    (errors.AlreadyExists, 409, {"exists": True}),
    (errors.AmbiguousContent, 409, {"ambiguous": True}),
    (errors.NotPublished, 404, {}),
    (errors.NoSources, 404, {}),
    (errors.TrackerUnavailable, 503, {}),
    (errors.IndexUnavailable, 503, {}),
    (errors.Interrupted, 409, {"stopped": True}),
    (errors.TransferFailed, 502, {}),
    (errors.FileTooLarge, 413, {}),
    (errors.BadName, 400, {}),
    (errors.UnsafePath, 400, {}),
]

_REQUEST_FAILED_STATUS = {"bad_field": 400, "not_published": 404, "not_found": 404}


def error_reply(exc: BaseException) -> Reply | None:
    """
    The answer for a known exception, or None for an unexpected one.
    """
    if isinstance(exc, ApiError):
        return Reply(exc.status, {"error": f"error: {exc.message}", **exc.extra})
    if isinstance(exc, wire.WireError):
        return Reply(400, {"error": f"error: {exc.message}", "code": exc.code})
    if isinstance(exc, errors.RequestFailed):
        status = _REQUEST_FAILED_STATUS.get(exc.code, 502)
        return Reply(status, {"error": f"error: {exc}", "code": exc.code})
    if isinstance(exc, errors.P2PError):
        for kind, status, extra in _STATUS:
            if isinstance(exc, kind):
                return Reply(status, {"error": f"error: {exc}", **extra})
        return Reply(400, {"error": f"error: {exc}"})
    return None


def to_json(value: Any) -> bytes:
    """
    Encode an answer: UTF-8 JSON, non-finite floats as null.
    """
    return json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"), default=str).encode(
        "utf-8"
    )


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(request: Any, status: int, body: Mapping[str, Any]) -> None:
    """
    Send a complete JSON answer (unless the client already left).
    """
    if getattr(request, "_p2p_gone", False) or request.finished:
        return
    data = to_json(body)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON_TYPE)
    request.setHeader(b"Cache-Control", b"no-store")
    request.setHeader(b"Content-Length", b"%d" % len(data))
    request.write(data)
    request.finish()


# -- parameters --------------------------------------------------------------


class Params:
    """
    Query-string parameters of one request, decoded as UTF-8.
    """

    def __init__(self, args: Mapping[bytes, list[bytes]]) -> None:
        self._args = args

    def text(self, name: str, default: str | None = None) -> str | None:
        values = self._args.get(name.encode("ascii"))
        if not values:
            return default
        try:
            return values[0].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, f"query parameter {name} is not valid UTF-8")

    def integer(self, name: str, check: Callable[[str, Any], int], default: int) -> int:
        raw = self.text(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            raise ApiError(400, f"{name} must be an integer")
        return check(name, value)


def non_negative(name: str, value: int) -> int:
    """
    A check for L{Params.integer}: C{value} unless it is negative.
    """
    if value < 0:
        raise ApiError(400, f"{name} must not be negative")
    return value


def text_field(body: Mapping[str, Any], name: str, required: bool = True, default: Any = None) -> Any:
    """
    A string field of a JSON body (C{default} when absent and optional).
    """
    value = body.get(name)
    if value is None or (required and value == ""):
        if required:
            raise ApiError(400, f"{name!r} is required")
        return default
    if not isinstance(value, str):
        raise ApiError(400, f"{name!r} must be a string")
    return value


def bool_field(body: Mapping[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(400, f"{name!r} must be true or false")
    return value


# -- the guard ---------------------------------------------------------------


def _host_name(host_header: str) -> str:
    """
    The host part of a C{Host} header value (brackets of IPv6 removed).
    """
    host = host_header.strip()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") == 1:
        return host.split(":", 1)[0]
    return host


def _is_loopback_name(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Guard:
    """
    Who may call the API.

    With a C{token}, every call must carry it (C{X-P2P-Token: T} or
    C{Authorization: Bearer T}); a custom header cannot be sent
    cross-origin without a CORS preflight we never grant, so POSTs are
    CSRF-safe.  Without one (loopback only), requests must be addressed to
    a loopback name (C{check_host}: defeats DNS rebinding) and a POST must
    come from our own origin.  Every POST must be C{application/json}.
    """

    token: str | None = None
    check_host: bool = True

    def problem(self, request: Any, state_changing: bool) -> ApiError | None:
        if self.token is not None:
            given = _header(request, b"x-p2p-token")
            if given is None:
                scheme, _, value = (_header(request, b"authorization") or "").partition(" ")
                given = value.strip() if scheme.lower() == "bearer" else None
            if given is None or not hmac.compare_digest(given.encode("utf-8"), self.token.encode("utf-8")):
                return ApiError(
                    401,
                    "this dashboard needs its web token (header X-P2P-Token or Authorization: Bearer)",
                    token_required=True,
                )
        else:
            host = _header(request, b"host") or ""
            if self.check_host and not _is_loopback_name(_host_name(host)):
                return ApiError(
                    403,
                    "without --web-token this dashboard only answers requests addressed to "
                    "localhost or a loopback address",
                )
            origin = _header(request, b"origin")
            if state_changing and origin is not None and origin != "null":
                if urlsplit(origin).netloc.lower() != host.lower():
                    return ApiError(403, "cross-origin request refused")
            elif state_changing and origin == "null":
                return ApiError(403, "cross-origin request refused")
        return None


def _header(request: Any, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


# -- the router --------------------------------------------------------------


@dataclass
class Route:
    """
    One endpoint: C{handler(params, body)}, or for C{raw} routes
    C{handler(request)} that renders the response itself (event streams).
    """

    handler: Callable[..., Any]
    raw: bool = False


@dataclass
class Routes:
    """
    Path (below C{/api/}) -> HTTP method -> L{Route}.
    """

    table: dict[str, dict[str, Route]] = field(default_factory=dict)

    def get(self, path: str, handler: Callable[..., Any], raw: bool = False) -> None:
        self.table.setdefault(path, {})["GET"] = Route(handler, raw)

    def post(self, path: str, handler: Callable[..., Any]) -> None:
        self.table.setdefault(path, {})["POST"] = Route(handler)


class ApiResource(Resource):
    """
    Everything under C{/api/}: guard, route, parse, call, answer.
    """

    isLeaf = True
    log = Logger()

    def __init__(self, routes: Routes, guard: Guard) -> None:
        Resource.__init__(self)
        self.routes = routes
        self.guard = guard

    def render(self, request: Any) -> Any:
        request._p2p_gone = False
        request.notifyFinish().addErrback(_mark_gone, request)
        method = request.method.decode("ascii", "replace").upper()
        if method == "HEAD":
            method = "GET"
        path = "/".join(seg.decode("utf-8", "replace") for seg in request.postpath).strip("/")
        methods = self.routes.table.get(path)
        if methods is None:
            return self._refuse(request, ApiError(404, f"no such API endpoint: /api/{path}"))
        route = methods.get(method)
        if route is None:
            allowed = sorted(methods)
            request.setHeader(b"Allow", ", ".join(allowed).encode("ascii"))
            hint = " (state changes need POST)" if "POST" in allowed else ""
            return self._refuse(
                request, ApiError(405, f"/api/{path} accepts {' or '.join(allowed)}, not {method}{hint}")
            )
        problem = self.guard.problem(request, method == "POST")
        if problem is not None:
            if problem.status == 401:
                request.setHeader(b"WWW-Authenticate", b'Bearer realm="twistedp2p"')
            return self._refuse(request, problem)
        if route.raw:
            return route.handler(request)
        body = None
        if method == "POST":
            try:
                body = _read_body(request)
            except ApiError as e:
                return self._refuse(request, e)
        d = maybeDeferred(route.handler, Params(request.args), body)
        d.addCallbacks(self._answer, self._failed, callbackArgs=(request,), errbackArgs=(request, path))
        d.addErrback(lambda f: self.log.failure("answering /api/{path}", f, path=path))
        return NOT_DONE_YET

    def _refuse(self, request: Any, error: ApiError) -> Any:
        write_json(request, error.status, error_reply(error).body)  # type: ignore[union-attr]
        return NOT_DONE_YET

    def _answer(self, result: Any, request: Any) -> None:
        if isinstance(result, Reply):
            write_json(request, result.status, result.body)
        else:
            write_json(request, 200, result if result is not None else {})

    def _failed(self, failure: Failure, request: Any, path: str) -> None:
        reply = error_reply(failure.value)
        if reply is None:
            self.log.failure("API call /api/{path} failed", failure, path=path)
            reply = Reply(500, {"error": f"error: internal error in /api/{path} (details are in the log)"})
        write_json(request, reply.status, reply.body)


def _mark_gone(failure: Failure, request: Any) -> None:
    request._p2p_gone = True


def _read_body(request: Any) -> dict[str, Any]:
    content_type = (_header(request, b"content-type") or "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise ApiError(415, "a POST body must be JSON (Content-Type: application/json)")
    length = _header(request, b"content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
        raise ApiError(413, f"a POST body is at most {MAX_BODY} bytes")
    raw = request.content.read(MAX_BODY + 1) if request.content is not None else b""
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"a POST body is at most {MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        return wire.decode(raw)
    except wire.WireError as e:
        raise ApiError(400, _BODY_PROBLEMS.get(e.code, e.message))


_BODY_PROBLEMS = {
    "bad_utf8": "the POST body is not valid UTF-8",
    "bad_json": "the POST body is not valid JSON",
    "not_object": "the POST body must be a JSON object",
}
