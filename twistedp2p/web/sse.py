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

Slow readers: each stream is registered with its request as a streaming
producer, so it knows when the connection's write buffer is full.  While
it is, messages wait in the stream's own queue, at most C{max_queued}
bytes; a stream whose queue would pass that is the slowest reader and is
dropped (its connection aborted: the browser reconnects with
C{Last-Event-ID} and gets what it missed from the ring).  At most
C{max_streams} streams are open at once; one more is answered 503.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from typing import Any, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from twistedp2p.web.api import to_json

#: Seconds between keep-alive comments.
KEEPALIVE = 15.0
#: Log events kept for /api/log and resuming streams.
HISTORY = 500
#: Milliseconds a browser waits before reconnecting a dropped stream.
RETRY_MS = 2000
#: Bytes a stream may hold back while its connection's buffer is full.
MAX_QUEUED = 256 * 1024
#: Event streams open at once; one more is answered 503.
MAX_STREAMS = 64


def _frame(event: str, data: Any, event_id: int | None = None) -> bytes:
    head = b"" if event_id is None else b"id: %d\n" % event_id
    return head + b"event: " + event.encode("utf-8") + b"\ndata: " + to_json(data) + b"\n\n"


class EventHub:
    """
    The open event streams of one dashboard.

    @param clock: C{IReactorTime} (timestamps and the keep-alive loop).
    """

    log = Logger()

    def __init__(
        self,
        clock: Any,
        keepalive: float = KEEPALIVE,
        history: int = HISTORY,
        max_streams: int = MAX_STREAMS,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        self.clock = clock
        self.keepalive = keepalive
        self.max_streams = max_streams
        self.max_queued = max_queued
        #: Streams dropped for falling behind, and refused (503), so far.
        self.dropped = 0
        self.refused = 0
        self._ids = itertools.count(1)
        self._last_id = 0
        self.history: deque[dict[str, Any]] = deque(maxlen=history)
        #: request -> its L{_Stream}.
        self._clients: dict[Any, _Stream] = {}
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
        for request, stream in list(self._clients.items()):
            try:
                kept = stream.send(data)
            except Exception:
                self.log.failure("writing to an event stream failed")
                self._drop(request)
                continue
            if not kept:
                self.dropped += 1
                self.log.warn(
                    "dropping an event stream that fell {n} bytes behind", n=stream.queued + len(data)
                )
                self._drop(request, abort=True)

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
        if len(self._clients) >= self.max_streams:
            self.refused += 1
            self.log.warn("refusing an event stream: {n} are open", n=len(self._clients))
            request.setResponseCode(503)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            request.setHeader(b"Retry-After", b"10")
            return b"too many event streams are open; try again later\n"
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
        stream = _Stream(request, self.max_queued)
        self._clients[request] = stream
        request.registerProducer(stream, True)
        request.notifyFinish().addBoth(self._finished, request)
        return NOT_DONE_YET

    def _finished(self, result: Any, request: Any) -> None:
        self._clients.pop(request, None)
        if isinstance(result, Failure):
            self.log.debug("event stream closed by the client")

    def _drop(self, request: Any, abort: bool = False) -> None:
        """
        End a stream: finish its response, or (C{abort}: a reader too slow
        to take what is buffered for it) abort its connection, which frees
        the buffer at once.
        """
        stream = self._clients.pop(request, None)
        try:
            if stream is not None:
                stream.stop()
                request.unregisterProducer()
            transport = getattr(request, "transport", None)
            if abort and transport is not None:
                transport.abortConnection()
            else:
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


@implementer(IPushProducer)
class _Stream:
    """
    One open event stream: writes to its request while the connection
    takes them, else queues up to C{max_queued} bytes.
    """

    def __init__(self, request: Any, max_queued: int) -> None:
        self.request = request
        self.max_queued = max_queued
        self.paused = False
        self.stopped = False
        self._queue: deque[bytes] = deque()
        #: Bytes waiting in the queue.
        self.queued = 0

    def send(self, data: bytes) -> bool:
        """
        Write or queue C{data}.  @return: False when it does not fit (the
        stream must be dropped).
        """
        if self.stopped:
            return True
        if self.paused or self._queue:
            if self.queued + len(data) > self.max_queued:
                return False
            self._queue.append(data)
            self.queued += len(data)
            return True
        self.request.write(data)
        return True

    def stop(self) -> None:
        self.stopped = True
        self._queue.clear()
        self.queued = 0

    # IPushProducer: the connection's write buffer.

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        queue = self._queue
        while queue and not self.paused and not self.stopped:
            data = queue.popleft()
            self.queued -= len(data)
            self.request.write(data)

    def stopProducing(self) -> None:
        self.stop()


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
