"""
The peer's side of the tracker connection: numbered requests, one Deferred
per pending request, and answers to the tracker's heartbeat pings.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

from twisted.internet.defer import Deferred, TimeoutError as DeferredTimeout, fail
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.python.failure import Failure

from twistedp2p import errors, wire

#: Seconds a tracker has to answer one request.
REQUEST_TIMEOUT = 30.0


class TrackerClientProtocol(Int32StringReceiver):
    """
    A native (versioned) client of the tracker.

    Frames with ``action`` are requests from the tracker (``ping``); frames
    with ``status`` answer ours, matched by ``id``.
    """

    MAX_LENGTH = wire.MAX_REPLY_FRAME
    log = Logger()

    def __init__(self, clock: Any = None, request_timeout: float | None = REQUEST_TIMEOUT) -> None:
        self.clock = clock
        self.request_timeout = request_timeout
        self._ids = itertools.count(1)
        self._pending: dict[int, Deferred] = {}
        self.connected = False
        #: Called with the reason when the connection is lost.
        self.on_lost: list[Callable[[Failure], None]] = []

    # -- connection --------------------------------------------------------

    def connectionMade(self) -> None:
        self.connected = True

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected = False
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(errors.TrackerUnavailable("the connection to the tracker was lost"))
        for callback in list(self.on_lost):
            try:
                callback(reason)
            except Exception:
                self.log.failure("connection-lost callback {callback} failed", callback=callback)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.error(
            "the tracker sent a {length}-byte frame (limit {limit}); disconnecting",
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.transport.loseConnection()

    # -- requests ------------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._pending)

    def request(self, action: str, **fields: Any) -> Deferred:
        """
        Send one request.

        @return: Deferred firing the reply dict (any non-error status:
            ``success``, ``created``, ``unchanged``, ``updated``,
            ``conflict``), or failing with L{errors.RequestFailed} for an
            error reply and L{errors.TrackerUnavailable} when the connection
            is lost or the tracker does not answer in time.
        """
        if not self.connected:
            return fail(errors.TrackerUnavailable())
        request_id = next(self._ids)
        message = {"action": action, "id": request_id}
        message.update(fields)
        d: Deferred = Deferred()
        self._pending[request_id] = d
        self.sendString(wire.encode(message))
        if self.request_timeout is not None and self.clock is not None:

            def timed_out(failure: Failure) -> Failure:
                failure.trap(DeferredTimeout)
                self._pending.pop(request_id, None)
                raise errors.TrackerUnavailable(
                    f"the tracker did not answer {action} within {self.request_timeout:g} s"
                )

            d.addTimeout(self.request_timeout, self.clock)
            d.addErrback(timed_out)
        return d

    # -- frames ----------------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        try:
            message = wire.decode(frame)
        except wire.WireError as e:
            self.log.warn("ignoring a bad frame from the tracker: {error}", error=e.message)
            return
        if "action" in message:
            self._tracker_request(message)
        elif "status" in message:
            self._answer(message)
        else:
            self.log.warn("ignoring a frame with neither action nor status from the tracker")

    def _tracker_request(self, message: dict[str, Any]) -> None:
        try:
            request = wire.parse_request(message, wire.PEER_CONTROL_REQUESTS)
        except wire.WireError as e:
            self.sendString(wire.encode(wire.error(e.code, e.message, wire.safe_id(message))))
            return
        if request.action == "ping":
            self.sendString(wire.encode(wire.reply(wire.SUCCESS, request.id, message="pong")))

    def _answer(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        d = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
        if d is None:
            self.log.warn(
                "ignoring an answer to no pending request (id {id!r})", id=request_id
            )
            return
        if message.get("status") == wire.ERROR:
            code = message.get("code") if isinstance(message.get("code"), str) else "error"
            text = message.get("message")
            if not isinstance(text, str) or not text:
                text = f"the tracker refused the request ({code})"
            d.errback(errors.RequestFailed(text, code, message))
        else:
            d.callback(message)


class TrackerClientFactory(Factory):
    """
    Builds L{TrackerClientProtocol}s with the given clock and timeout.
    """

    noisy = False

    protocol = TrackerClientProtocol

    def __init__(self, clock: Any, request_timeout: float | None = REQUEST_TIMEOUT) -> None:
        self.clock = clock
        self.request_timeout = request_timeout

    def buildProtocol(self, addr: Any) -> TrackerClientProtocol:
        p = TrackerClientProtocol(self.clock, self.request_timeout)
        p.factory = self
        return p
