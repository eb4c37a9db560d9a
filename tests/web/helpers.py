"""
Helpers for the dashboard tests: real tracker and peer services in-process
on the real reactor (loopback, ports from tcp:0) with their web services,
an HTTP client that keeps no connections, and an event-stream reader.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Protocol
from twisted.web.client import HTTPConnectionPool

import treq

from twistedp2p.peer import service as peer_service
from twistedp2p.tracker import service as tracker_service
from twistedp2p.web.peer_site import peer_web_service
from twistedp2p.web.tracker_site import tracker_web_service

LOOPBACK = "tcp:0:interface=127.0.0.1"


def coroutine(f: Callable[..., Any]) -> Callable[..., Any]:
    """
    Let a trial test be an C{async def}.
    """

    def run(self: Any, *args: Any, **kwargs: Any) -> Deferred:
        return Deferred.fromCoroutine(f(self, *args, **kwargs))

    run.__name__ = f.__name__
    run.__doc__ = f.__doc__
    return run


def temp_dir(case: Any) -> Path:
    """
    A fresh directory under the system temp dir, removed after the test.
    """
    path = tempfile.mkdtemp(prefix="twistedp2p-web-")
    case.addCleanup(shutil.rmtree, path, True)
    return Path(path)


class Client:
    """
    treq with a non-persistent pool (nothing left open after a test), and
    JSON helpers that return C{(status, decoded body)}.
    """

    def __init__(self, case: Any, base: str, token: str | None = None) -> None:
        self.base = base
        self.token = token
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        case.addCleanup(self.pool.closeCachedConnections)

    def headers(self, extra: dict[str, str] | None = None, token: bool = True) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if token and self.token:
            h["X-P2P-Token"] = self.token
        h.update(extra or {})
        return h

    async def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                      token: bool = True, raw: bytes | None = None) -> tuple[int, Any, Any]:
        """
        @return: C{(status, JSON body or bytes, response)}.
        """
        h = self.headers(headers, token)
        data = raw
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            h.setdefault("Content-Type", "application/json")
        response = await treq.request(method, self.base + path, data=data, headers=h, pool=self.pool)
        content = await response.content()
        ctype = (response.headers.getRawHeaders("content-type") or [""])[0]
        if ctype.startswith("application/json"):
            return response.code, json.loads(content.decode("utf-8")), response
        return response.code, content, response

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        code, body, _ = await self.request("GET", path, **kw)
        return code, body

    async def post(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        code, body, _ = await self.request("POST", path, body if body is not None else {}, **kw)
        return code, body


class _StreamProtocol(Protocol):
    def __init__(self, stream: "EventStream") -> None:
        self.stream = stream
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            self.stream._block(block.decode("utf-8"))

    def connectionLost(self, reason: Any = None) -> None:
        self.stream.closed.callback(None)


class EventStream:
    """
    One open C{/api/events} stream: every event received, and Deferreds
    that fire when a matching one arrives.
    """

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.comments: list[str] = []
        self.retry: int | None = None
        self._waiting: list[tuple[Callable[[str, Any], bool], Deferred]] = []
        self.closed: Deferred = Deferred()
        self.protocol: _StreamProtocol | None = None
        self.response: Any = None

    @classmethod
    async def open(cls, case: Any, client: Client, headers: dict[str, str] | None = None) -> "EventStream":
        stream = cls()
        h = client.headers({"Accept": "text/event-stream", **(headers or {})})
        response = await treq.get(client.base + "api/events", headers=h, pool=client.pool, unbuffered=True)
        stream.response = response
        stream.protocol = _StreamProtocol(stream)
        response.deliverBody(stream.protocol)
        case.addCleanup(stream.close)
        return stream

    def close(self) -> Deferred:
        if not self.closed.called and self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.stopProducing()
        return self.closed

    def _block(self, block: str) -> None:
        kind, data = "message", []
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif line.startswith("retry:"):
                self.retry = int(line[6:].strip())
            elif line.startswith("event:"):
                kind = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
        if not data:
            return
        payload = json.loads("\n".join(data))
        self.events.append((kind, payload))
        for entry in list(self._waiting):
            match, d = entry
            if match(kind, payload):
                self._waiting.remove(entry)
                d.callback((kind, payload))

    def wait_for(self, kind: str, where: Callable[[Any], bool] = lambda data: True) -> Deferred:
        """
        Fire with C{(kind, data)} of the first event (already received or
        coming) of that kind matching C{where}.
        """

        def match(k: str, data: Any) -> bool:
            return k == kind and where(data)

        for k, data in self.events:
            if match(k, data):
                d: Deferred = Deferred()
                d.callback((k, data))
                return d
        d = Deferred()
        self._waiting.append((match, d))
        return d


class Services:
    """
    Start a tracker, peers and their dashboards for one test; everything
    stops in the test's cleanup.
    """

    def __init__(self, case: Any) -> None:
        self.case = case
        self.base = temp_dir(case)
        self.tracker: Any = None
        self.tracker_port: int | None = None

    async def start_tracker(self, token: str | None = None) -> tuple[Any, Any]:
        config = tracker_service.Options()
        config.parseOptions(["--listen", LOOPBACK, "--db", "memory", "--no-shell"])
        self.tracker = tracker_service.makeService(config, reactor)
        self.tracker.startService()
        self.case.addCleanup(self.tracker.stopService)
        port = await self.tracker.whenListening()
        self.tracker_port = port.getHost().port
        web = tracker_web_service(self.tracker.registry, LOOPBACK, token, reactor)
        await self._start_web(web)
        return self.tracker, web

    async def start_peer(self, name: str, token: str | None = None, web: bool = True, *extra: str) -> tuple[Any, Any]:
        repo = self.base / name
        repo.mkdir(exist_ok=True)
        config = peer_service.Options()
        config.parseOptions(
            ["--repo", str(repo), "--hostname", name, "--listen", LOOPBACK, "--no-shell",
             "--tracker", f"tcp:127.0.0.1:{self.tracker_port}", *extra]
        )
        peer = peer_service.makeService(config, reactor)
        peer.startService()
        self.case.addCleanup(lambda: peer.stopService() if peer.running else None)
        await peer.whenListening()
        await peer.link.client_service.whenConnected()
        service = None
        if web:
            service = peer_web_service(peer.node, LOOPBACK, token, reactor)
            await self._start_web(service)
        return peer, service

    async def _start_web(self, web: Any) -> None:
        web.startService()
        self.case.addCleanup(lambda: web.stopService() if web.running else None)
        await web.whenListening()


def until(check: Callable[[], Any], clock: Any = reactor, interval: float = 0.02, limit: float = 10.0) -> Deferred:
    """
    Fire once C{check()} is true, checking every C{interval} seconds
    (for state that has no event to wait on, e.g. a remote disconnect
    seen by the tracker); fail after C{limit} seconds.
    """
    from twisted.internet.task import LoopingCall

    deadline = clock.seconds() + limit
    done: Deferred = Deferred()

    def poll() -> None:
        if check():
            loop.stop()
        elif clock.seconds() > deadline:
            raise AssertionError("condition not reached in time")

    loop = LoopingCall(poll)
    loop.clock = clock
    d = loop.start(interval, now=True)
    d.chainDeferred(done)
    return done
