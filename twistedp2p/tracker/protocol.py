"""
The tracker's side of a tracker connection: frames in, registry calls,
frames out.  No business logic here (see L{twistedp2p.tracker.registry}).

Requests of one connection are answered in the order they arrived: while an
answer is pending (a store write, a contested hello) later requests wait in
a bounded queue, and past C{MAX_QUEUED} the connection stops being read.
Answers (frames with C{"status"}) from native peers are matched to the
tracker's heartbeat pings at once, queue or not.

Back-pressure: each connection is registered with its transport as a
streaming producer of answers.  When the transport's write buffer grows past
its C{bufferSize} (a client that does not read its answers), the transport
calls L{TrackerProtocol.pauseProducing}: the connection stops being read
and stops answering what it already read, until the transport has sent
everything and calls L{TrackerProtocol.resumeProducing}.  A connection
therefore buffers at most C{bufferSize} plus one answer.  Answers written
straight to the socket (L{twistedp2p.eagerwrite}) never reach that buffer,
so each connection also yields the reactor once it produced C{TURN_BYTES}
in one go: the work done for it in one reactor turn is at most one answer
past that budget, whatever the kernel's buffers take.
"""

from __future__ import annotations

import itertools
from collections import deque
from struct import Struct
from sys import intern
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.interfaces import IPushProducer
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p import identity, wire
from twistedp2p.eagerwrite import capable as _eager_capable
from twistedp2p.eagerwrite import eager_write as _eager_write
from twistedp2p.errors import IndexUnavailable
from twistedp2p.logs import tracker_gate
from twistedp2p.tracker.model import decode_cursor, encode_cursor
from twistedp2p.tracker.registry import ILink, Registry

_SUCCESS = wire.SUCCESS
_encode = wire.encode
#: A tracker ping (what C{_encode({"action": "ping", "id": N})} gives),
#: formatted rather than encoded: heartbeats send one per session.
_PING = b'{"action":"ping","id":%d}'
#: The Int32 length prefix.
_LENGTH = Struct("!I")
_pack_length = _LENGTH.pack
_unpack_length = _LENGTH.unpack_from
#: Bytes of catalogue entries in one answer: the client's frame limit, less
#: room for the answer's other fields (status, id, next cursor).
_FILES_BUDGET = wire.MAX_REPLY_FRAME - 8 * 1024


@implementer(ILink, IPushProducer)
class TrackerProtocol(Int32StringReceiver, TimeoutMixin):
    """
    One peer's connection to the tracker.

    @ivar session: the L{Session} after a successful hello, else None.
    """

    MAX_LENGTH = wire.MAX_REQUEST_FRAME
    #: Requests waiting behind a pending answer before reading pauses.
    MAX_QUEUED = 128
    #: Seconds a new connection has to say hello.
    HELLO_TIMEOUT = 30.0
    #: Seconds a frame may take from its first byte to its last: a client
    #: that stalls inside a frame (half-open) is closed, session or not.
    FRAME_TIMEOUT = 30.0
    #: Bytes of answers after which a connection lets the reactor run
    #: other connections before it answers more (one turn's budget).
    TURN_BYTES = 64 * 1024

    log = Logger(observer=tracker_gate)

    # Every attribute a connection sets has a slot (its value is set in
    # __init__).  An instance dict would cost well over 1 KiB per held
    # session: CPython shares one table of attribute names among a class's
    # instances only up to 30 names, and a connection has more.
    __slots__ = (
        # set by the base classes (Protocol, IntNStringReceiver,
        # _PauseableMixin, TimeoutMixin) and by __init__
        "factory", "connected", "transport", "paused", "timeOut", "_TimeoutMixin__timeoutCall",
        "_unprocessed", "_compatibilityOffset",
        "registry", "clock", "_wire_cache", "_ping_ids",
        # the L{Session} after a successful hello, else None
        "session", "_session_id", "_native", "_lost", "_pending", "_in_step", "_resume_call",
        # Reading stops while either holds: the transport's write buffer is
        # over its bound (L{pauseProducing}), or C{MAX_QUEUED} requests wait;
        # a third reason: the connection used its turn's budget (TURN_BYTES).
        "_write_blocked", "_queue_full", "_yielding", "_turn_bytes", "_yield_call",
        # registered with the transport as its producer
        "_producing",
        # the id of the request being answered (the latest one handled:
        # later ones wait while its answer is pending); only its id is kept,
        # not the request, which a held session would keep alive
        "_answering",
        # bytes received that no complete frame has taken yet
        "_unparsed", "_frame_call", "_ip",
        # the transport is a plain TCP connection: write to its socket at
        # once while its buffer is empty (see L{sendString})
        "_eager",
        # created when first needed: most connections never queue a request
        # and only admin or contested-hello pings use the Deferred table
        "_queue", "_pings",
        # what an answered heartbeat ping is reported to (L{send_heartbeat})
        "_heartbeat_answered", "_heartbeat_token",
        # the nonce of this connection's latest C{challenge}, until a hello
        # uses it (L{twistedp2p.identity})
        "_nonce",
    )

    def __init__(
        self,
        registry: Registry,
        clock: Any,
        ping_ids: Callable[[], int] | None = None,
        wire_cache: "SourceWireCache | None" = None,
    ) -> None:
        self.registry = registry
        self.clock = clock
        self._wire_cache = wire_cache if wire_cache is not None else SourceWireCache()
        self._ping_ids = ping_ids or itertools.count(1).__next__
        # Every slot is set here (see __slots__), to what a new connection
        # starts with.
        self.factory = None
        self.connected = 0
        self.transport = None
        self.paused = False
        self.timeOut = None
        self._TimeoutMixin__timeoutCall = None
        self._unprocessed = b""
        self._compatibilityOffset = 0
        self.session = None
        self._session_id = None
        self._native = False
        self._lost = False
        self._pending = False
        self._in_step = False
        self._resume_call = None
        self._write_blocked = False
        self._queue_full = False
        self._yielding = False
        self._turn_bytes = 0
        self._yield_call = None
        self._producing = False
        self._answering = None
        self._unparsed = 0
        self._frame_call = None
        self._ip = "0.0.0.0"
        self._eager = False
        self._queue = None
        self._pings = None
        self._heartbeat_answered = None
        self._heartbeat_token = None
        self._nonce = None

    def callLater(self, delay: float, f: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        """
        For L{TimeoutMixin}: our clock, not the global reactor.
        """
        return self.clock.callLater(delay, f, *args, **kw)

    # -- connection life -----------------------------------------------------

    def connectionMade(self) -> None:
        transport = self.transport
        # One string per address, shared by every session from it.
        self._ip = intern(getattr(transport.getPeer(), "host", "0.0.0.0"))
        if _eager_capable(transport):
            self._eager = True
            # Requests and answers are small and latency-bound.
            transport.setTcpNoDelay(True)
            # The transport sets these on its first buffered write; set now,
            # while the instance is new, its attributes stay in CPython's
            # compact per-class layout instead of a dict of their own
            # (about 0.7 KiB per connection).
            transport.dataBuffer = b""
            transport.offset = 0
        # Back-pressure: the transport pauses us while its write buffer is
        # over its bound (see the module docstring).
        transport.registerProducer(self, True)
        self._producing = True
        self.log.debug("connection from {peer}", peer=self._peer)
        self.setTimeout(self.HELLO_TIMEOUT)

    @property
    def _peer(self) -> str:
        """
        The peer's address and port, for log lines (computed: it is rarely
        needed and every connection would keep a string).
        """
        peer = self.transport.getPeer() if self.transport is not None else None
        return f"{getattr(peer, 'host', self._ip)}:{getattr(peer, 'port', '?')}"

    def timeoutConnection(self) -> None:
        self.log.info("closing {peer}: no hello within {timeout:g} s", peer=self._peer, timeout=self.HELLO_TIMEOUT)
        self.close()

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:
        self._lost = True
        self._producing = False
        self.setTimeout(None)
        self._queue = None
        self._heartbeat_answered = None
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        if self._yield_call is not None and self._yield_call.active():
            self._yield_call.cancel()
        if self._frame_call is not None and self._frame_call.active():
            self._frame_call.cancel()
        pings, self._pings = self._pings, None
        for d in (pings or {}).values():
            d.errback(ConnectionLost(f"connection to {self._peer} lost"))
        if self._session_id is not None:
            # The registry logs the session's end: one line is enough.
            self.registry.disconnected(self._session_id)
        else:
            self.log.debug("connection from {peer} closed", peer=self._peer)

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "closing {peer}: frame of {length} bytes exceeds {limit}",
            peer=self._peer,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.registry.rejected("frame_too_long", f"frame of {length} bytes", self._session_id, self._peer)
        self.close()

    # -- ILink ---------------------------------------------------------------

    def ping(self) -> Deferred:
        """
        Send a ping; fire on its pong (a contested hello, an admin ping).
        """
        if self._lost or not self._native:
            return fail(ConnectionLost("no native session on this connection"))
        ping_id = self._ping_ids()
        pings = self._pings
        if pings is None:
            pings = self._pings = {}
        d: Deferred = Deferred(lambda _: pings.pop(ping_id, None))
        pings[ping_id] = d
        self.sendString(_PING % ping_id)
        return d

    def send_heartbeat(self, answered: Callable[[Any, int], bool], token: Any) -> int | None:
        """
        Send a heartbeat ping; its answer goes to C{answered(token,
        ping_id)}.  No Deferred and no per-ping state: this runs for every
        session every heartbeat.
        """
        if self._lost or not self._native:
            return None
        ping_id = self._ping_ids()
        self._heartbeat_answered = answered
        self._heartbeat_token = token
        self.sendString(_PING % ping_id)
        return ping_id

    def close(self) -> None:
        """
        Close the connection once what is buffered is sent.  The producer is
        unregistered first: a transport does not close while a paused
        producer is registered with it.
        """
        if self._producing:
            self._producing = False
            self.transport.unregisterProducer()
        self.transport.loseConnection()

    # -- IPushProducer: the transport's back-pressure --------------------------

    def pauseProducing(self) -> None:
        """
        The transport's write buffer is over its bound: stop reading and
        answering until it drained.
        """
        self._write_blocked = True
        self._update_reading()

    def resumeProducing(self) -> None:
        """
        The transport sent everything it buffered.
        """
        self._write_blocked = False
        self._schedule_resume()

    def stopProducing(self) -> None:
        """
        The transport is gone (L{connectionLost} follows).
        """
        self._producing = False
        self._write_blocked = True
        self.paused = True

    def _update_reading(self) -> None:
        """
        Read (and answer) while no reason to pause holds; else pause the
        transport's reading.  Resuming answers what was read and queued
        meanwhile from the reactor's next turn, never from inside a write
        or our own C{dataReceived}.
        """
        if self._lost:
            return
        if self._write_blocked or self._queue_full or self._yielding:
            if not self.paused:
                self.paused = True
                self.transport.pauseProducing()
                self._watch_frame(restart=False)
        elif self.paused:
            self._schedule_resume()

    def _schedule_resume(self) -> None:
        if not self._lost and (self._resume_call is None or not self._resume_call.active()):
            self._resume_call = self.clock.callLater(0, self._resume_reading)

    # -- frames in -----------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """
        L{Int32StringReceiver.dataReceived}'s framing, inlined: the same
        buffer (C{_unprocessed}), pause and length limit, without its
        per-frame check of the instance C{__dict__} for the long-deprecated
        C{recvd} attribute (which also gives every connection a dict).
        """
        self._unparsed += len(data)
        before = self._unparsed
        buffer = self._unprocessed + data if self._unprocessed else data
        offset = 0
        end = len(buffer)
        limit = self.MAX_LENGTH
        while end - offset >= 4 and not self.paused:
            (length,) = _unpack_length(buffer, offset)
            if length > limit:
                self._unprocessed = buffer[offset:]
                self.lengthLimitExceeded(length)
                return
            start = offset + 4
            offset = start + length
            if offset > end:
                offset = start - 4
                break
            self.stringReceived(buffer[start:offset])
        self._unprocessed = buffer[offset:] if offset else buffer
        self._watch_frame(restart=self._unparsed < before)

    def sendString(self, string: bytes) -> None:
        """
        Send one frame: on a plain TCP connection with nothing buffered,
        straight to the socket (L{twistedp2p.eagerwrite}), else through the
        transport.

        A frame longer than clients accept (C{wire.MAX_REPLY_FRAME}) is
        never sent: the request gets the error C{too_large} instead.
        """
        if len(string) > wire.MAX_REPLY_FRAME:
            string = _encode(self._error(
                "too_large",
                f"the answer would be {len(string)} bytes, over the {wire.MAX_REPLY_FRAME}-byte frame limit; "
                f"ask for fewer entries (limit)",
                self._answering,
            ))
        data = _pack_length(len(string)) + string
        if self._eager:
            _eager_write(self.transport, data)
        else:
            self.transport.write(data)
        self._turn_bytes += len(data)
        if self._turn_bytes >= self.TURN_BYTES and not self._yielding and not self._lost:
            self._yielding = True
            self._yield_call = self.clock.callLater(0, self._end_turn)
            self._update_reading()

    def _end_turn(self) -> None:
        """
        The reactor ran a turn since this connection used its budget.
        """
        self._yield_call = None
        self._yielding = False
        self._turn_bytes = 0
        self._resume_reading()

    def _watch_frame(self, restart: bool) -> None:
        """
        Keep a deadline on the incomplete frame, if any: it runs from the
        frame's first byte (C{restart}: a frame completed, so the one left
        began in this read), and not while reading is paused.
        """
        waiting = self._unparsed > 0 and not self.paused and not self._lost
        call = self._frame_call
        if call is not None and (restart or not waiting):
            self._frame_call = None
            if call.active():
                call.cancel()
        if waiting and self._frame_call is None:
            self._frame_call = self.clock.callLater(self.FRAME_TIMEOUT, self._frame_timed_out)

    def _frame_timed_out(self) -> None:
        self._frame_call = None
        self.log.info(
            "closing {peer}: a frame did not complete within {timeout:g} s", peer=self._peer, timeout=self.FRAME_TIMEOUT
        )
        self.close()

    def stringReceived(self, frame: bytes) -> None:
        self._unparsed -= self.prefixLength + len(frame)
        try:
            message = wire.decode(frame)
        except wire.WireError as e:
            self._enqueue(None, e)
            return
        if "action" not in message and "status" in message and self._native:
            self._answer(message)
            return
        self._enqueue(message, None)

    def _answer(self, message: dict) -> None:
        """
        A native peer answered one of our pings.
        """
        ping_id = message.get("id")
        if type(ping_id) is int:
            pings = self._pings
            d = pings.pop(ping_id, None) if pings else None
            if d is not None:
                d.callback(message)
                return
            answered = self._heartbeat_answered
            if answered is not None and answered(self._heartbeat_token, ping_id):
                return
        self.log.debug("{peer} answered an unknown request {id!r}", peer=self._peer, id=ping_id)

    def _enqueue(self, message: dict | None, error: wire.WireError | None) -> None:
        if self._pending or self._write_blocked or self._yielding or self._queue:
            # Behind a pending answer, or read before the transport paused
            # us: answered in order once that answer is sent or the
            # transport drained.
            queue = self._queue
            if queue is None:
                queue = self._queue = deque()
            queue.append((message, error))
            if len(queue) >= self.MAX_QUEUED and not self._queue_full:
                self.log.warn("{peer} has {n} requests queued: pausing reads", peer=self._peer, n=len(queue))
                self._queue_full = True
                self._update_reading()
            if not self._pending and not self._write_blocked and not self._yielding:
                self._drain()
            return
        self._step(message, error)
        if self._queue and not self._pending:
            self._drain()

    def _step(self, message: dict | None, error: wire.WireError | None) -> None:
        """
        Handle one request; its answer is sent now or when it is ready.
        """
        self._answering = None if message is None else wire.safe_id(message)
        if error is not None:
            self._send_error(error.code, error.message, None)
            return
        try:
            result = self._dispatch(message)
        except wire.WireError as e:
            self._send_error(e.code, e.message, wire.safe_id(message))
            return
        except Exception:
            self.log.failure("handling {action!r} from {peer}", action=message.get("action"), peer=self._peer)
            self._send_error("internal", "internal error", wire.safe_id(message))
            return
        kind = type(result)
        if kind is bytes:
            self.sendString(result)
            return
        if kind is dict:
            self.sendString(_encode(result))
            return
        self._pending = True
        self._in_step = True
        if kind is tuple:
            # (Deferred, build, args): one callback builds and sends, the
            # cheapest way through an already-fired Deferred.
            d, build, args = result
            d.addCallbacks(self._build, self._failed, (build, args, message), None, (message,))
        else:
            result.addCallbacks(self._reply, self._failed, errbackArgs=(message,))
        self._in_step = False

    def _build(self, value: Any, build: Callable[..., Any], args: tuple, message: dict) -> None:
        try:
            reply = build(value, *args)
        except Exception:
            self._failed(Failure(), message)
            return
        self._reply(reply)

    def _reply(self, reply: dict | bytes | None) -> None:
        """
        Send the answer to the pending request (a message or its encoded
        bytes; None sends nothing), then answer what queued behind it.
        """
        self._pending = False
        if reply is not None and not self._lost:
            self.sendString(reply if type(reply) is bytes else _encode(reply))
        if not self._in_step and self._queue:
            self._drain()

    def _failed(self, failure: Failure, message: dict) -> None:
        request_id = wire.safe_id(message)
        if failure.check(wire.WireError):
            e = failure.value
            reply = self._error(e.code, e.message, request_id)
        elif failure.check(IndexUnavailable):
            self.log.warn("index unavailable answering {peer}: {error}", peer=self._peer, error=failure.getErrorMessage())
            # Say what the code means: peers and seed clients print the text.
            text = str(failure.value)
            if not text.lower().startswith("index unavailable"):
                text = f"index unavailable: {text}"
            reply = self._error("index_unavailable", text, request_id)
        else:
            self.log.failure("handling {action!r} from {peer}", failure, action=message.get("action"), peer=self._peer)
            reply = self._error("internal", "internal error", request_id)
        self._reply(reply)

    def _drain(self) -> None:
        """
        Answer queued requests until one has to wait.
        """
        queue = self._queue
        while queue and not self._pending and not self._lost and not self._write_blocked and not self._yielding:
            message, error = queue.popleft()
            self._step(message, error)
        if not queue and self._queue is queue:
            # Most of the time nothing waits: keep no empty deque around.
            self._queue = None
        if self._queue_full and len(queue or ()) < self.MAX_QUEUED // 2:
            self._queue_full = False
            self._update_reading()

    def _resume_reading(self) -> None:
        """
        Reading resumed: answer what queued while paused, then the frames
        already received.
        """
        self._resume_call = None
        if self._lost or self._write_blocked or self._yielding:
            return
        if self._queue and not self._pending:
            # May clear _queue_full.
            self._drain()
        if self.paused and not (self._lost or self._write_blocked or self._queue_full or self._yielding):
            self.paused = False
            self.transport.resumeProducing()
            self.dataReceived(b"")

    def _error(self, code: str, message: str, request_id: Any) -> dict:
        self.log.warn("rejected request from {peer}: {code}: {message}", peer=self._peer, code=code, message=message)
        self.registry.rejected(code, message, self._session_id, self._peer)
        return wire.error(code, message, request_id)

    def _send_error(self, code: str, message: str, request_id: Any) -> None:
        self.sendString(_encode(self._error(code, message, request_id)))

    def _dispatch(self, message: dict) -> dict | Deferred:
        request = wire.parse_request(message, wire.TRACKER_REQUESTS)
        action = request.action
        if self._session_id is None and action != "hello" and action != "ping" and action != "challenge":
            raise wire.WireError("not_registered", f"{action} needs a hello first")
        return self._HANDLERS[action](self, request)

    # -- handlers ------------------------------------------------------------
    # Each returns the answer (a dict, or its encoded bytes), a Deferred
    # firing one, or (Deferred, build, args): build(result, *args) makes it.

    def _hello(self, request: wire.Request) -> Deferred:
        # Requests are handled one at a time, so no other hello is pending.
        if self.session is not None:
            raise wire.WireError("already_registered", "this connection already said hello")
        f = request.fields
        key = self._hello_key(f)
        # Native from now on: a contested hello may ping this connection
        # while its own registration is being written.
        self._native = f["version"] is not None
        d = self.registry.hello(self, f["hostname"], self._ip, f["p2p_port"], f["version"], key)
        d.addCallbacks(self._welcome, self._not_welcome, (request,))
        return d

    def _hello_key(self, f: dict) -> str | None:
        """
        The public key of a signed hello, once its signature over this
        connection's challenge checks out; None for an unsigned hello.
        The challenge is used up either way.
        """
        key, signature = f["key"], f["signature"]
        if key is None and signature is None:
            return None
        if key is None or signature is None:
            raise wire.WireError("bad_field", "a signed hello needs both 'key' and 'signature'")
        if f["version"] is None:
            raise wire.WireError("bad_field", "a signed hello needs 'version'")
        nonce, self._nonce = self._nonce, None
        if nonce is None:
            raise wire.WireError("bad_signature", "no challenge to answer: send 'challenge' before a signed hello")
        message = identity.hello_message(
            nonce, self.registry.tracker_id, self._ip, f["hostname"], f["p2p_port"], key
        )
        if not identity.verify(key, signature, message):
            raise wire.WireError("bad_signature", "the hello signature does not match this connection's challenge")
        return key

    def _challenge(self, request: wire.Request) -> dict:
        """
        A fresh nonce for a signed hello on this connection (the previous
        one, if unused, is forgotten).
        """
        if self.session is not None:
            raise wire.WireError("already_registered", "this connection already said hello")
        self._nonce = identity.new_nonce()
        return wire.reply(
            _SUCCESS, request.id, nonce=self._nonce, tracker=self.registry.tracker_id, address=self._ip
        )

    def _not_welcome(self, failure: Failure) -> Failure:
        self._native = False
        return failure

    def _welcome(self, session: Any, request: wire.Request) -> dict:
        if self._lost:
            # The peer left while we were registering it.
            self.registry.disconnected(session.session_id)
            return None
        self.session = session
        self._session_id = session.session_id
        self._native = session.version is not None
        self.setTimeout(None)
        message = f"welcome {session.hostname}"
        if not self._native:
            return {"status": _SUCCESS, "message": message}
        reply = wire.reply(
            _SUCCESS,
            request.id,
            message=message,
            version=wire.PROTOCOL_VERSION,
            session=session.session_id,
            address=session.ip,
            heartbeat=self.registry.heartbeat_interval,
        )
        if session.fingerprint is not None:
            reply["fingerprint"] = session.fingerprint
        return reply

    def _client_ping(self, request: wire.Request) -> dict:
        return wire.reply(_SUCCESS, request.id, message="pong")

    def _publish(self, request: wire.Request) -> Deferred:
        f = request.fields
        if (f["root"] is None) != (f["piece_size"] is None):
            raise wire.WireError("bad_field", "publish needs both 'root' and 'piece_size', or neither")
        if self._native and f["sha256"] is None:
            # What a downloader verifies the bytes against: only seed
            # clients, which do not hash, may leave it out.
            raise wire.WireError("bad_field", "publish from a versioned client needs 'sha256'")
        d = self.registry.publish(
            self._session_id,
            f["fname"],
            f["lname"],
            f["file_size"],
            f["last_modified"],
            f["sha256"],
            f["allow_overwrite"],
            root=f["root"],
            piece_size=f["piece_size"],
        )
        d.addCallback(self._published, request)
        return d

    def _published(self, status: str, request: wire.Request) -> dict:
        fname = request.fields["fname"]
        if status == wire.CONFLICT:
            message = f"{fname!r} is already published for a different file; set allow_overwrite to replace it"
        else:
            message = f"{fname!r} {status}"
        return wire.reply(status, request.id if self._native else None, fname=fname, message=message)

    def _unpublish(self, request: wire.Request) -> Deferred:
        d = self.registry.unpublish(self._session_id, request.fields["fname"])
        d.addCallback(self._unpublished, request)
        return d

    def _unpublished(self, _: Any, request: wire.Request) -> dict:
        return wire.reply(_SUCCESS, request.id if self._native else None, fname=request.fields["fname"])

    def _fetch(self, request: wire.Request) -> bytes | tuple:
        fname = request.fields["fname"]
        sources = self.registry.fetch_now(self._session_id, fname, request.fields["limit"])
        if sources is not None:
            return self._peer_list(sources, fname, request.id)
        d = self.registry.fetch(self._session_id, fname, request.fields["limit"])
        return d, self._peer_list, (fname, request.id)

    def _peer_list(self, sources: list, fname: str, request_id: int | None) -> bytes:
        """
        The fetch answer, encoded from each source's cached JSON.
        """
        cache = self._wire_cache
        peers = b",".join([cache.encode(s) for s in sources])
        if not self._native:
            return b'{"status":"success","peer_list":[' + peers + b"]}"
        if request_id is None:
            head = b'{"status":"success","fname":'
        else:
            head = b'{"status":"success","id":%d,"fname":' % request_id
        return b"".join((head, cache.name(fname), b',"peer_list":[', peers, b"]}"))

    def _search(self, request: wire.Request) -> Deferred:
        """
        One page of the catalogue (also list_shared_files: the same
        catalogue, the same pattern): one entry more than C{limit} is asked
        for, to know whether a next page exists.
        """
        after = None
        if request.fields["cursor"] is not None:
            try:
                after = decode_cursor(request.fields["cursor"])
            except ValueError as e:
                raise wire.WireError("bad_field", f"cursor: {e}")
        limit = request.fields["limit"]
        d = self.registry.catalogue(request.fields["pattern"], limit + 1, after)
        d.addCallback(self._files, request, limit)
        return d

    def _files(self, entries: list, request: wire.Request, limit: int) -> bytes:
        """
        The catalogue answer, encoded from each entry's cached JSON: at
        most C{limit} entries and at most L{_FILES_BUDGET} bytes of them,
        so the frame always fits the client's limit.  A native answer that
        leaves entries out says where to go on (C{next}); a seed answer
        keeps the seed form (the first page only).
        """
        encode = self._wire_cache.encode
        parts = []
        size = 0
        more = len(entries) > limit
        for entry in entries[:limit]:
            data = encode(entry)
            size += len(data) + 1
            if size > _FILES_BUDGET and parts:
                more = True
                break
            parts.append(data)
        files = b",".join(parts)
        if not self._native:
            return b'{"status":"success","files":[' + files + b"]}"
        if request.id is None:
            head = b'{"status":"success","files":['
        else:
            head = b'{"status":"success","id":%d,"files":[' % request.id
        if not more:
            return b"".join((head, files, b"]}"))
        cursor = _encode(encode_cursor(entries[len(parts) - 1].key))
        return b"".join((head, files, b'],"next":', cursor, b"}"))

    def _discover(self, request: wire.Request) -> Deferred:
        hostname = request.fields["hostname"]
        d = self.registry.discover(hostname)
        d.addCallback(self._discovered, hostname, request)
        return d

    def _discovered(self, sources: list, hostname: str, request: wire.Request) -> dict:
        return wire.reply(
            _SUCCESS,
            request.id if self._native else None,
            hostname=hostname,
            files=[s.to_wire() for s in sources],
        )

    #: action -> handler: one table for the class, not one per connection.
    _HANDLERS: dict[str, Callable[["TrackerProtocol", wire.Request], Any]] = {
        "hello": _hello,
        "challenge": _challenge,
        "ping": _client_ping,
        "publish": _publish,
        "unpublish": _unpublish,
        "fetch": _fetch,
        "list_shared_files": _search,
        "search": _search,
        "discover": _discover,
    }


class SourceWireCache:
    """
    The JSON encoding of each L{Source}'s C{peer_list} entry, computed once.

    The store's view hands out the same L{Source} objects until they change,
    so they are keyed by identity (the object is kept alive with its bytes,
    so an id is never reused while cached).  Cleared when it grows past
    C{size}.
    """

    def __init__(self, size: int = 50000) -> None:
        self.size = size
        self._entries: dict[int, tuple[Any, bytes]] = {}
        self._names: dict[str, bytes] = {}

    def name(self, fname: str) -> bytes:
        """
        The JSON encoding of a shared name (a string), cached too.
        """
        data = self._names.get(fname)
        if data is None:
            if len(self._names) >= self.size:
                self._names.clear()
            data = self._names[fname] = _encode(fname)
        return data

    def encode(self, source: Any) -> bytes:
        entry = self._entries.get(id(source))
        if entry is not None and entry[0] is source:
            return entry[1]
        data = _encode(source.to_wire())
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[id(source)] = (source, data)
        return data

    def __len__(self) -> int:
        return len(self._entries)


class TrackerFactory(Factory):
    """
    Builds a L{TrackerProtocol} per connection and remembers them, so the
    service can close them all when it stops.
    """

    log = Logger()
    noisy = False

    def __init__(self, registry: Registry, clock: Any) -> None:
        self.registry = registry
        self.clock = clock
        self.connections: set[TrackerProtocol] = set()
        self._ping_ids = itertools.count(1).__next__
        self._wire_cache = SourceWireCache()

    def buildProtocol(self, addr: Any) -> TrackerProtocol:
        p = _TrackedProtocol(self.registry, self.clock, self._ping_ids, self._wire_cache)
        p.factory = self
        return p

    def disconnect_all(self) -> None:
        """
        Close every connection (the tracker stops).
        """
        for p in list(self.connections):
            p.close()


class _TrackedProtocol(TrackerProtocol):
    """
    A L{TrackerProtocol} that keeps its factory's set of connections.
    """

    def connectionMade(self) -> None:
        self.factory.connections.add(self)
        TrackerProtocol.connectionMade(self)

    def connectionLost(self, reason: Failure = ConnectionDone()) -> None:
        self.factory.connections.discard(self)
        TrackerProtocol.connectionLost(self, reason)
