"""
The peer's session with the tracker, kept alive by a L{ClientService}.

On every (re)connect the link says ``hello`` (with the port the peer
actually listens on) and lets the node announce every published file again.
Several ``--tracker`` endpoints form a failover list (L{FailoverEndpoint}).
Requests made while the link is down fail at once with
L{errors.TrackerUnavailable}; only while a connection attempt is underway
do they wait for its outcome.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

from twisted.application.internet import ClientService
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p import errors, wire
from twistedp2p.peer.client import REQUEST_TIMEOUT, TrackerClientFactory, TrackerClientProtocol
from twistedp2p.peer.events import Events

# Link states.
CONNECTING = "connecting"
CONNECTED = "connected"
WAITING = "waiting"
STOPPED = "stopped"


@implementer(IStreamClientEndpoint)
class FailoverEndpoint:
    """
    Connect to the current endpoint of a list; on a failed connect try the
    next, once round the list per C{connect}.  A label is read with
    C{str()} each time, so it may change (L{twistedp2p.discovery}).  L{advance} moves on after a
    lost connection.

    C{observer(kind, label, **info)} hears ``attempt``, ``failed`` (with
    ``reason`` and ``next``, when another endpoint is tried next),
    ``exhausted`` (with ``reason``: every endpoint failed once) and
    ``connected``.
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, IStreamClientEndpoint]],
        observer: Callable[..., None] | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("at least one endpoint is needed")
        self._endpoints = list(endpoints)
        self._index = 0
        self._observer = observer or (lambda kind, label, **info: None)

    @property
    def current(self) -> str:
        return str(self._endpoints[self._index][0])

    @property
    def labels(self) -> list[str]:
        return [str(label) for label, _ in self._endpoints]

    def peek_next(self) -> str:
        return str(self._endpoints[(self._index + 1) % len(self._endpoints)][0])

    def advance(self) -> None:
        self._index = (self._index + 1) % len(self._endpoints)

    def connect(self, protocolFactory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, factory: Any) -> Any:
        failure: BaseException | None = None
        for attempt in range(len(self._endpoints)):
            label, endpoint = self._endpoints[self._index]
            self._observer("attempt", str(label))
            try:
                protocol = await endpoint.connect(factory)
            except CancelledError:
                raise
            except Exception as e:
                failure = e
                self.advance()
                if attempt + 1 < len(self._endpoints):
                    self._observer("failed", str(label), reason=_reason(e), next=self.current)
                continue
            self._observer("connected", str(label))
            return protocol
        assert failure is not None
        self._observer("exhausted", self.current, reason=_reason(failure))
        raise failure


def _reason(e: BaseException | Failure) -> str:
    if isinstance(e, Failure):
        e = e.value
    text = str(e).strip() or e.__class__.__name__
    return text.splitlines()[0]


def reconnect_policy(
    initial: float = 0.5, factor: float = 1.5, max_delay: float = 10.0, rand: Callable[[], float] = random.random
) -> Callable[[int], float]:
    """
    Seconds to wait before reconnect attempt C{attempt} (0, 1, ...): an
    exponential backoff from C{initial} to C{max_delay}, plus a random part
    of up to one second or, once the backoff passed a second, up to the
    backoff itself.  Peers that lost a tracker together (it restarted)
    spread their first attempts over a second, as with Twisted's
    C{backoffPolicy}; but those that keep failing (a tracker still busy with
    the first of many thousands) spread further each time, instead of
    coming back in waves one second wide.
    """

    def policy(attempt: int) -> float:
        base = min(initial * factor ** min(attempt, 64), max_delay)
        return base + rand() * max(1.0, base)

    return policy


class TrackerLink(Service):
    """
    The tracker session: a L{ClientService} over a L{FailoverEndpoint}.

    @param endpoints: C{(label, endpoint)} pairs, in failover order.
    @param hello_fields: returns ``hostname`` and ``p2p_port`` for hello.
    @param on_session: called with the protocol after every successful
        hello (re-announce the library); may return a Deferred.
    @param identity: the peer's L{twistedp2p.identity.Identity}: each hello
        is signed over the tracker's challenge (one more round trip); None
        for an unsigned hello.  A tracker that does not know C{challenge}
        (an older one) gets an unsigned hello.
    """

    log = Logger()

    def __init__(
        self,
        endpoints: Sequence[tuple[str, IStreamClientEndpoint]],
        hello_fields: Callable[[], dict[str, Any]],
        on_session: Callable[[TrackerClientProtocol], Any],
        clock: Any,
        events: Events,
        retry_policy: Callable[[int], float] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        identity: Any = None,
    ) -> None:
        self._clock = clock
        self.identity = identity
        self._events = events
        self._hello_fields = hello_fields
        self._on_session = on_session
        self._request_timeout = request_timeout
        self._policy = retry_policy or reconnect_policy()
        self.endpoint = FailoverEndpoint(endpoints, self._endpoint_event)
        self.factory = TrackerClientFactory(clock, request_timeout)
        self.client_service = ClientService(
            self.endpoint,
            self.factory,
            retryPolicy=self._retry,
            clock=clock,
            prepareConnection=self._prepare,
        )
        #: One of connecting, connected, waiting, stopped.
        self.state = CONNECTING
        self.protocol: TrackerClientProtocol | None = None
        #: The tracker's answer to our last successful hello.
        self.session: dict[str, Any] | None = None
        self.tracker: str | None = None
        self.last_error: str | None = None
        self.next_retry_at: float | None = None
        self._down_reported = False
        self._stopping = False

    # -- service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        self._stopping = False
        self.state = CONNECTING
        self.client_service.startService()

    def stopService(self) -> Deferred:
        super().stopService()
        self._stopping = True
        self.state = STOPPED
        return self.client_service.stopService()

    # -- requests ----------------------------------------------------------------

    def request(self, action: str, **fields: Any) -> Deferred:
        """
        Send a request on the live session.

        @return: Deferred firing the reply; fails at once with
            L{errors.TrackerUnavailable} when the link is down, or after the
            current connection attempt fails.
        """
        protocol = self.protocol
        if protocol is not None and protocol.connected:
            return protocol.request(action, **fields)
        if self.state != CONNECTING:
            return fail(errors.TrackerUnavailable(self.why_down()))
        waiting = self.client_service.whenConnected(failAfterFailures=1)
        waiting.addTimeout(self._request_timeout, self._clock)

        def not_connected(failure: Failure) -> None:
            raise errors.TrackerUnavailable(self.why_down(failure))

        def connected(_: Any) -> Deferred:
            if self.protocol is None or not self.protocol.connected:
                raise errors.TrackerUnavailable(self.why_down())
            return self.protocol.request(action, **fields)

        waiting.addErrback(not_connected)
        waiting.addCallback(connected)
        return waiting

    def why_down(self, failure: Failure | None = None) -> str:
        where = ", ".join(self.endpoint.labels)
        reason = _reason(failure) if failure is not None and not failure.check(CancelledError) else self.last_error
        if self.state == STOPPED:
            return "not connected to the tracker (the peer is stopping)"
        if reason:
            return f"not connected to the tracker ({where}: {reason}); retrying in the background"
        return f"not connected to the tracker ({where}); retrying in the background"

    def status(self) -> dict[str, Any]:
        retry_in = None
        if self.state == WAITING and self.next_retry_at is not None:
            retry_in = max(0.0, self.next_retry_at - self._clock.seconds())
        session = self.session or {}
        return {
            "state": self.state,
            "tracker": self.tracker if self.state == CONNECTED else self.endpoint.current,
            "trackers": self.endpoint.labels,
            "session": session.get("session") if self.state == CONNECTED else None,
            "address": session.get("address") if self.state == CONNECTED else None,
            "last_error": self.last_error,
            "retry_in": retry_in,
        }

    # -- connection life -----------------------------------------------------

    def _retry(self, attempt: int) -> float:
        delay = self._policy(attempt)
        if not self._stopping:
            self.state = WAITING
            self.next_retry_at = self._clock.seconds() + delay
        return delay

    def _endpoint_event(self, kind: str, label: str, **info: Any) -> None:
        if self._stopping:
            return
        if kind == "attempt":
            self.state = CONNECTING
        elif kind == "failed":
            self.last_error = f"{label}: {info['reason']}"
            self.log.info("cannot connect to tracker {label}: {reason}", label=label, reason=info["reason"])
            if not self._down_reported:
                self._say(f"cannot reach {label} ({info['reason']}), trying {info['next']}")
        elif kind == "exhausted":
            self.last_error = info["reason"]
            self.log.info("no tracker reachable: {reason}", reason=info["reason"])
            if not self._down_reported:
                self._down_reported = True
                where = ", ".join(self.endpoint.labels)
                self._say(f"cannot reach {where} ({info['reason']}), retrying in the background")

    def _say(self, text: str, **fields: Any) -> None:
        self._events.emit("link", f"tracker link: {text}", state=self.state, **fields)

    def _prepare(self, protocol: TrackerClientProtocol) -> Deferred:
        return Deferred.fromCoroutine(self._hello(protocol))

    async def _hello(self, protocol: TrackerClientProtocol) -> None:
        label = self.endpoint.current
        fields = dict(self._hello_fields())
        fields["version"] = wire.PROTOCOL_VERSION
        try:
            if self.identity is not None:
                fields.update(await self._signature(protocol, fields))
            reply = await protocol.request("hello", **fields)
        except (errors.RequestFailed, errors.TrackerUnavailable) as e:
            # Not a failed connect for ClientService: we drop the connection
            # and its loss schedules the retry.
            self.last_error = f"hello refused: {e}"
            self.log.warn("tracker {label} refused hello: {error}", label=label, error=str(e))
            if not self._down_reported:
                self._down_reported = True
                if getattr(e, "code", None) == "key_mismatch":
                    # The tracker's message names both keys and the remedy.
                    self._events.emit(
                        "link", f"error: tracker {label} refused this peer's key: {e}", state=self.state
                    )
                else:
                    self._say(f"{label} refused hello ({e}), retrying in the background")
            protocol.transport.loseConnection()
            return
        self.protocol = protocol
        self.session = reply
        self.tracker = label
        self.last_error = None
        self.next_retry_at = None
        self._down_reported = False
        self.state = CONNECTED
        protocol.on_lost.append(lambda reason: self._lost(protocol, reason))
        self._say(f"connected to {label}", tracker=label, address=reply.get("address"))
        try:
            await self._on_session(protocol)
        except Exception:
            self.log.failure("announcing the library to {label} failed", label=label)

    async def _signature(self, protocol: TrackerClientProtocol, fields: dict[str, Any]) -> dict[str, Any]:
        """
        Ask for a challenge and sign it (docs/protocol.md, "Signed hello").

        @return: the C{key} and C{signature} fields of hello, or none when
            the tracker does not know C{challenge}.
        """
        try:
            challenge = await protocol.request("challenge")
        except errors.RequestFailed as e:
            if e.code == "unknown_action":
                self.log.info("tracker {label} does not authenticate peers: unsigned hello", label=self.endpoint.current)
                return {}
            raise
        nonce, tracker, address = challenge.get("nonce"), challenge.get("tracker"), challenge.get("address")
        if not all(isinstance(v, str) for v in (nonce, tracker, address)):
            raise errors.RequestFailed("the tracker's challenge is malformed", code="bad_challenge")
        identity = self.identity
        signature = identity.sign_hello(nonce, tracker, address, fields["hostname"], fields["p2p_port"])
        return {"key": identity.public_key, "signature": signature}

    def _lost(self, protocol: TrackerClientProtocol, reason: Failure) -> None:
        if protocol is not self.protocol:
            return
        self.protocol = None
        self.session = None
        if self._stopping:
            return
        label = self.tracker or self.endpoint.current
        self.last_error = f"lost the connection to {label}"
        self.state = WAITING
        self._down_reported = False
        if len(self.endpoint.labels) > 1:
            self.endpoint.advance()
            self._say(f"lost {label}, trying {self.endpoint.current}")
        else:
            self._say(f"lost {label}, reconnecting")
