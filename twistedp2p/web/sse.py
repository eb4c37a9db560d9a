"""
Server-sent events for the dashboards (C{GET /api/events}).

L{EventHub} keeps the open event streams and a ring of recent log events.
Two kinds of message go out:

  - log events (L{EventHub.publish}): numbered (SSE C{id:}), kept in the
    ring for C{/api/log} and for clients resuming with C{Last-Event-ID};
  - state updates (L{EventHub.push}): snapshots such as the peer table or
    the transfers, not numbered and not kept.

Every stream starts with C{retry:}, the missed log events (when resuming)
and a C{ready} event; after C{ready} the page fetches its snapshots, so it
misses nothing that happened between the two.  A comment line goes out
every C{keepalive} seconds so proxies and browsers keep the stream open.
L{Ticker} pushes a snapshot only when it changed, and only while somebody
listens.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any, Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from twistedp2p.web.api import to_json

#: Seconds between keep-alive comments.
KEEPALIVE = 15.0
#: Log events kept for /api/log and resuming streams.
HISTORY = 500
#: Milliseconds a browser waits before reconnecting a dropped stream.
RETRY_MS = 2000


def _frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode("utf-8") + b"\ndata: " + to_json(data) + b"\n\n"


class EventHub:
    """
    The open event streams of one dashboard.

    @param clock: C{IReactorTime} (timestamps and the keep-alive loop).
    """

    log = Logger()

    def __init__(self, clock: Any, keepalive: float = KEEPALIVE, history: int = HISTORY) -> None:
        self.clock = clock
        self.keepalive = keepalive
        self._ids = itertools.count(1)
        self._last_id = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        self._clients: set[Any] = set()
        self._loop: LoopingCall | None = None
        #: Called with each log event after it is sent (metrics, tests).
        self.observers: list[Callable[[dict[str, Any]], None]] = []

    @property
    def clients(self) -> int:
        return len(self._clients)

    # -- sending -------------------------------------------------------------

    def publish(self, kind: str, level: str, text: str, **fields: Any) -> dict[str, Any]:
        """
        Record a log event and send it to every stream.

        @param level: C{info}, C{ok}, C{warn} or C{error} (the page's colour).
        @param text: one line for people.
        """
        self._last_id = next(self._ids)
        event = {
            "id": self._last_id,
            "kind": kind,
            "time": float(self.clock.seconds()),
            "level": level,
            "text": text,
            **fields,
        }
        self.history.append(event)
        self._send(_frame(kind, event, self._last_id))
        for observer in list(self.observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("event observer {observer!r} failed", observer=observer)
        return event

    def push(self, kind: str, data: dict[str, Any]) -> None:
        """
        Send a state update (not logged) to every stream.
        """
        if self._clients:
            self._send(_frame(kind, data))

    def recent(self, since: int = 0, limit: int = HISTORY) -> list[dict[str, Any]]:
        """
        Log events with an id above C{since}, oldest first, at most the
        newest C{limit}.
        """
        found = [e for e in self.history if e["id"] > since]
        return found[-limit:] if limit > 0 else []

    def _send(self, data: bytes) -> None:
        for request in list(self._clients):
            try:
                request.write(data)
            except Exception:
                self.log.failure("writing to an event stream failed")
                self._drop(request)

    # -- streams -------------------------------------------------------------

    def render_stream(self, request: Any) -> Any:
        """
        Open an event stream on C{request} (a C{twisted.web} request that
        passed the API guard).
        """
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        request.setHeader(b"X-Accel-Buffering", b"no")
        if request.method == b"HEAD":
            return b""
        last = _last_event_id(request)
        replay: list[dict[str, Any]] = []
        resumed = False
        if last is not None and self.history and last >= self.history[0]["id"] - 1 and last <= self._last_id:
            replay = self.recent(last)
            resumed = True
        chunks = [b"retry: %d\n\n" % RETRY_MS]
        chunks += [_frame(e["kind"], e, e["id"]) for e in replay]
        chunks.append(
            _frame("ready", {"time": float(self.clock.seconds()), "last_id": self._last_id, "resumed": resumed})
        )
        request.write(b"".join(chunks))
        self._clients.add(request)
        request.notifyFinish().addBoth(self._finished, request)
        return NOT_DONE_YET

    def _finished(self, result: Any, request: Any) -> None:
        self._clients.discard(request)
        if isinstance(result, Failure):
            self.log.debug("event stream closed by the client")

    def _drop(self, request: Any) -> None:
        self._clients.discard(request)
        try:
            request.finish()
        except Exception:
            self.log.failure("closing an event stream failed")

    def _keepalive(self) -> None:
        self._send(b": keep-alive\n\n")

    # -- life ----------------------------------------------------------------

    def start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self._keepalive)
            self._loop.clock = self.clock
            self._loop.start(self.keepalive, now=False).addErrback(
                lambda f: self.log.failure("the keep-alive loop stopped", f)
            )

    def stop(self) -> None:
        """
        Stop the keep-alive loop and end every stream.
        """
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
        for request in list(self._clients):
            self._drop(request)


def _last_event_id(request: Any) -> int | None:
    raw = request.getHeader(b"last-event-id")
    if raw is None:
        return None
    try:
        value = int(raw.decode("ascii") if isinstance(raw, bytes) else raw)
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value >= 0 else None


class Ticker:
    """
    Every C{interval} seconds, while the hub has streams, push each named
    snapshot whose JSON changed since it was last pushed.

    @param snapshots: name -> zero-argument callable returning a dict.
    """

    log = Logger()

    def __init__(self, hub: EventHub, clock: Any, interval: float, snapshots: dict[str, Callable[[], dict[str, Any]]]) -> None:
        self.hub = hub
        self.clock = clock
        self.interval = interval
        self.snapshots = snapshots
        self._last: dict[str, str] = {}
        self._loop: LoopingCall | None = None
        self._soon: dict[str, Any] = {}

    def tick(self) -> None:
        if not self.hub.clients:
            # Nobody listens: the next listener fetches fresh snapshots.
            self._last.clear()
            return
        for name in self.snapshots:
            self._push_if_changed(name)

    def push_now(self, name: str) -> None:
        """
        Push C{name} at once if it changed (after an event that changes it).
        """
        if self.hub.clients:
            self._push_if_changed(name)

    def push_soon(self, name: str, delay: float = 0.25) -> None:
        """
        Push C{name} (if it changed) within C{delay} seconds: a burst of
        events (peers reconnecting and republishing) costs one snapshot.
        """
        if not self.hub.clients or name in self._soon:
            return

        def push() -> None:
            del self._soon[name]
            self.push_now(name)

        self._soon[name] = self.clock.callLater(delay, push)

    def _push_if_changed(self, name: str) -> None:
        try:
            data = self.snapshots[name]()
        except Exception:
            self.log.failure("snapshot {name} failed", name=name)
            return
        encoded = json.dumps(data, sort_keys=True, default=str)
        if self._last.get(name) != encoded:
            self._last[name] = encoded
            self.hub.push(name, data)

    def forget(self, name: str) -> None:
        """
        Push C{name} on the next tick even if it did not change.
        """
        self._last.pop(name, None)

    def start(self) -> None:
        if self._loop is None:
            self._loop = LoopingCall(self.tick)
            self._loop.clock = self.clock
            self._loop.start(self.interval, now=False).addErrback(
                lambda f: self.log.failure("the snapshot loop stopped", f)
            )

    def stop(self) -> None:
        if self._loop is not None:
            if self._loop.running:
                self._loop.stop()
            self._loop = None
        soon, self._soon = self._soon, {}
        for call in soon.values():
            if call.active():
                call.cancel()
