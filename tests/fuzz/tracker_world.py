"""
A tracker in memory with any number of scripted connections, and a model
of what each connection must be answered.

L{TrackerWorld} runs a real L{Registry} and L{TrackerFactory} on a
C{task.Clock} and a L{ControlledStore} (writes can be held or failed).
Each L{Conn} is one client: bytes it queues reach the protocol only when
an op delivers them, in any split.  Everything the protocol writes is cut
into frames as it is written (L{FrameTap}), and every answer is checked
against the model at that moment:

  - it is one JSON object with a string C{status}; errors carry a
    documented C{code} (never C{internal}) and a C{message};
  - answers come one per request, in request order, with the request's id
    where the protocol says so;
  - garbage (undecodable, invalid) gets exactly the error C{wire} names
    and changes nothing;
  - hello, publish and unpublish get the status the model predicts, and
    change the registry exactly as predicted;
  - fetch, search, list and discover answers equal what the model's
    records say (when no store write is held).

After every op, connections the tracker closed are torn down, the log is
checked (see L{TrackerWorld.check_log}) and, when no write is in flight,
L{check_registry_invariants} runs plus a check that the registry holds
exactly the sessions and publications the model predicts.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from twistedp2p import wire
from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import Publication, Source
from twistedp2p.tracker.protocol import TrackerFactory, TrackerProtocol
from twistedp2p.tracker.registry import Registry

from tests.fuzz.invariants import (
    InvariantError,
    check_catalogue_answer,
    check_registry_invariants,
    expected_catalogue,
)
from tests.tracker.helpers import ControlledStore

#: Error codes of docs/protocol.md that a tracker may send.
ERROR_CODES = frozenset(
    "bad_utf8 bad_json not_object bad_id no_action unknown_action bad_field not_registered "
    "already_registered duplicate_session not_published index_unavailable not_found quota too_large "
    "bad_signature key_mismatch".split()
)
PUBLISH_STATUSES = frozenset([wire.CREATED, wire.UNCHANGED, wire.UPDATED, wire.CONFLICT])

HEARTBEAT = 30.0
MISSES = 2
PING_TIMEOUT = 5.0
#: Seconds a connection has to say hello, and a frame has to complete
#: once begun (the tracker's defaults).
HELLO_TIMEOUT = 30.0
FRAME_TIMEOUT = 30.0


def publication_for(fields: dict[str, Any], native: bool) -> Publication:
    """
    The publication a valid publish request must create (the protocol's
    rules: native peers' lname is their shared name; a seed client's is
    its own, unless it sent none).
    """
    values = dict(fields)
    if native or not values.get("lname"):
        values["lname"] = values["fname"]
    names = {f.name for f in dataclasses.fields(Publication)}
    return Publication(**{k: v for k, v in values.items() if k in names})


class FuzzFailure(AssertionError):
    """
    The tracker did something the model forbids.
    """


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzFailure(message)


class OrderedStore(ControlledStore):
    """
    A L{ControlledStore} whose held writes complete in the order they were
    made, as with SQLite's single writer thread, unless the test completes
    the newest first (L{release_newest}), as a pool of database
    connections (PostgreSQL) may.
    """

    releasing = False

    def release(self) -> None:
        """
        Complete every held write in order, including writes made by the
        callbacks of earlier ones, then stop holding.
        """
        self.releasing = True
        self.hold = True
        try:
            while self.held:
                self._complete(self.held.pop(0))
        finally:
            self.releasing = False
            self.hold = False

    def release_newest(self) -> None:
        """
        Complete only the most recent held write.
        """
        if self.held:
            self._complete(self.held.pop())

    def _complete(self, item: tuple) -> None:
        d, apply = item
        try:
            result = apply()
        except KeyError:
            # A publication for a session the index no longer has (its
            # removal completed first): a database store refuses it too.
            d.errback(IndexUnavailable("the session is no longer in the index"))
            return
        result.chainDeferred(d)


class FrameTap(StringTransport):
    """
    A transport that cuts what the protocol writes into Int32 frames and
    hands each to C{on_frame} the moment it is complete.

    Lenient, like a real TCP transport: pausing or resuming after
    C{loseConnection} is allowed and does nothing.
    """

    def __init__(self, on_frame: Any, peer: IPv4Address) -> None:
        StringTransport.__init__(self, peerAddress=peer, lenient=True)
        self._on_frame = on_frame
        self._pending = b""

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self._pending += data
        while len(self._pending) >= 4:
            (n,) = struct.unpack("!I", self._pending[:4])
            if len(self._pending) < 4 + n:
                break
            body, self._pending = self._pending[4 : 4 + n], self._pending[4 + n :]
            self._on_frame(body)


@dataclass
class Received:
    """
    One complete frame the protocol has received.
    """

    body: bytes
    #: A wire error code when the frame is garbage, else None.
    garbage: str | None
    message: dict | None
    request: wire.Request | None
    #: A native hello received before any session: until its answer, the
    #: protocol may count this connection as native.
    native_hello: bool = False


@dataclass
class Conn:
    """
    One scripted client connection and the model of its session.
    """

    world: "TrackerWorld"
    index: int
    ip: str
    port: int
    auto_pong: bool
    proto: TrackerProtocol = field(init=False)
    transport: FrameTap = field(init=False)
    stream: bytearray = field(default_factory=bytearray)
    delivered: int = 0
    #: Parse position in C{stream} (start of the next frame).
    parsed: int = 0
    #: The protocol will close: an oversized length prefix was delivered.
    oversized: bool = False
    awaiting: deque = field(default_factory=deque)
    answers: int = 0
    closed: bool = False
    #: True once the tracker sent us a heartbeat or contest ping: the
    #: protocol then treats our status frames as pong answers.
    pinged: bool = False
    #: Some frame's fate could not be predicted: only weak checks remain.
    ambiguous: bool = False
    # -- the model -------------------------------------------------------
    session_id: str | None = None
    native: bool = False
    pubs: dict = field(default_factory=dict)
    hostname: str | None = None
    p2p_port: int | None = None

    #: When the incomplete frame now delivered began (None: no partial).
    partial_since: float | None = None
    #: Reading was paused at some point (the frame deadline stops then).
    ever_paused: bool = False
    #: The case script queued a hello (the runner's bookkeeping).
    said_hello: bool = False
    #: Native hellos received whose answer has not been seen yet.
    native_hellos: int = 0

    def __post_init__(self) -> None:
        addr = IPv4Address("TCP", self.ip, self.port)
        self.proto = self.world.factory.buildProtocol(addr)
        self.transport = FrameTap(self._tapped, addr)
        self.proto.makeConnection(self.transport)

    @property
    def open(self) -> bool:
        return not self.closed

    # -- client side -------------------------------------------------------

    def queue(self, data: bytes) -> None:
        if not self.closed:
            self.stream += data

    def queue_body(self, body: bytes) -> None:
        self.queue(struct.pack("!I", len(body)) + body)

    def deliver(self, n: int | None = None) -> int:
        """
        Hand up to C{n} queued bytes (all when None) to the protocol, as a
        real transport would: nothing while reading is paused or after the
        connection started closing.
        """
        if self.closed or self.transport.disconnecting or self.transport.producerState != "producing":
            return 0
        end = len(self.stream) if n is None else min(len(self.stream), self.delivered + n)
        if end <= self.delivered:
            return 0
        data = bytes(self.stream[self.delivered : end])
        self.delivered = end
        completed = self._note_frames()
        now = self.world.clock.seconds()
        if self.delivered == self.parsed or self.oversized:
            self.partial_since = None
        elif completed or self.partial_since is None:
            self.partial_since = now
        self.proto.dataReceived(data)
        if self.transport.producerState != "producing":
            self.ever_paused = True
        return len(data)

    def _note_frames(self) -> int:
        """
        Record the frames completed by the bytes delivered so far.

        @return: how many completed.
        """
        completed = 0
        while not self.oversized and self.delivered - self.parsed >= 4:
            (n,) = struct.unpack("!I", bytes(self.stream[self.parsed : self.parsed + 4]))
            if n > wire.MAX_REQUEST_FRAME:
                self.oversized = True
                self.world.units["oversized"] += 1
                break
            if self.delivered - self.parsed < 4 + n:
                break
            body = bytes(self.stream[self.parsed + 4 : self.parsed + 4 + n])
            self.parsed += 4 + n
            completed += 1
            self.world.units["frames"] += 1
            self._received(body)
        return completed

    def _received(self, body: bytes) -> None:
        try:
            message = wire.decode(body)
        except wire.WireError as e:
            self.awaiting.append(Received(body, e.code, None, None))
            return
        if "action" not in message and "status" in message:
            if self.pinged or self.native:
                return  # a pong: never answered
            if self.native_hellos:
                # Whether the protocol already counts us native depends on
                # where our hello is in its queue.
                self.ambiguous = True
                return
        try:
            request = wire.parse_request(message, wire.TRACKER_REQUESTS)
        except wire.WireError as e:
            self.awaiting.append(Received(body, e.code, message, None))
            return
        native_hello = request.action == "hello" and request.fields["version"] is not None and self.session_id is None
        self.native_hellos += native_hello
        self.awaiting.append(Received(body, None, message, request, native_hello))

    def lose(self) -> None:
        """
        The connection is gone (either side closed it).
        """
        if self.closed:
            return
        self.closed = True
        sid = self.proto.session.session_id if self.proto.session is not None else self.session_id
        self.proto.connectionLost(Failure(ConnectionDone()))
        if sid is not None:
            self.world.closed_sessions.add(sid)
        self.session_id = None
        self.pubs = {}

    # -- tracker side ------------------------------------------------------

    def _tapped(self, body: bytes) -> None:
        # Called from inside the protocol (even from its Deferred
        # callbacks): record a failure for after_op to raise, so that the
        # check cannot change what the protocol does next.
        try:
            self._on_frame(body)
        except AssertionError as e:
            self.world.failures.append(e)

    def _on_frame(self, body: bytes) -> None:
        world = self.world
        _expect(len(body) <= wire.MAX_REPLY_FRAME, f"conn {self.index}: a {len(body)}-byte answer")
        try:
            message = json.loads(body.decode("utf-8"))
        except ValueError as e:
            raise FuzzFailure(f"conn {self.index}: the tracker wrote a frame that is not JSON: {e}")
        _expect(isinstance(message, dict), f"conn {self.index}: the tracker wrote a non-object {message!r}")
        if "action" in message:
            _expect(
                message.get("action") == "ping" and set(message) == {"action", "id"} and type(message["id"]) is int,
                f"conn {self.index}: unexpected tracker request {message!r}",
            )
            _expect(
                self.native or self.native_hellos > 0,
                f"conn {self.index}: a ping to a connection without a native hello",
            )
            self.pinged = True
            world.units["pings"] += 1
            if self.auto_pong:
                self.queue_body(json.dumps({"status": "success", "message": "pong", "id": message["id"]}).encode())
            return
        world.units["answers"] += 1
        self.answers += 1
        _expect(isinstance(message.get("status"), str), f"conn {self.index}: an answer without status: {message!r}")
        if message["status"] == wire.ERROR:
            _expect(
                message.get("code") in ERROR_CODES and isinstance(message.get("message"), str),
                f"conn {self.index}: bad error answer {message!r}",
            )
        if self.ambiguous:
            return
        _expect(bool(self.awaiting), f"conn {self.index}: an answer to no request: {message!r}")
        rec = self.awaiting.popleft()
        self.native_hellos -= rec.native_hello
        world.check_answer(self, rec, message)


class TrackerWorld:
    """
    One tracker, its connections, and the rules their answers must follow.

    @ivar units: counts of what was fed and checked (frames, answers...).
    """

    def __init__(self, view: bool = True) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.store = OrderedStore(view=view)
        self.registry = Registry(
            self.store, self.clock, "fz", heartbeat=HEARTBEAT, misses=MISSES, ping_timeout=PING_TIMEOUT
        )
        self.factory = TrackerFactory(self.registry, self.clock)
        self.conns: list[Conn] = []
        self.closed_sessions: set[str] = set()
        #: (session_id, fname) in the order the store took each put.
        self.pub_order: list[tuple[str, str]] = []
        #: A store outage happened and no resync has repaired it since.
        self.dirty = False
        self.outages = 0
        #: Failures found while the protocol was writing (raised by after_op).
        self.failures: list[AssertionError] = []
        #: How requests were answered ("action:status:code"), to judge
        #: what the generators reach.
        self.outcomes: dict[str, int] = {}
        self.units: dict[str, int] = {"frames": 0, "answers": 0, "pings": 0, "oversized": 0, "ops": 0}
        self._log: list[dict] = []
        globalLogPublisher.addObserver(self._log.append)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._log.append)

    # -- ops ---------------------------------------------------------------

    def connect(self, ip: str, auto_pong: bool) -> Conn:
        conn = Conn(self, len(self.conns), ip, 40000 + len(self.conns), auto_pong)
        self.conns.append(conn)
        return conn

    def pick(self, i: int) -> Conn | None:
        live = [c for c in self.conns if c.open]
        return live[i % len(live)] if live else None

    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)
        now = self.clock.seconds()
        for c in self.conns:
            if c.open and c.partial_since is not None and not c.ever_paused:
                if now - c.partial_since >= FRAME_TIMEOUT:
                    _expect(
                        c.transport.disconnecting,
                        f"conn {c.index}: stalled {now - c.partial_since:g} s inside a frame and still open",
                    )

    def heartbeat(self) -> None:
        """
        One heartbeat round.  After an outage the store says it lost
        records (as a shared database store does), so the registry resyncs
        it; publications then take new sequence numbers in snapshot order.
        """
        resync = self.dirty and not self.store.failing
        self.store.renew_result = resync
        self.registry.heartbeat()
        self.store.renew_result = False
        if resync:
            self.dirty = False
            self.pub_order = [(s.session_id, p.fname) for s, pubs in self.registry.snapshot() for p in pubs]

    def heartbeat_tick(self) -> None:
        """
        One tick of the heartbeat as the service runs it (a slice of the
        sessions), when the registry spreads its rounds that way.
        """
        tick = getattr(self.registry, "heartbeat_tick", None)
        if tick is None:
            self.heartbeat()
            return
        self.store.renew_result = False
        tick()

    def hold(self, on: bool) -> None:
        if on:
            self.store.hold = True
        else:
            self.store.release()

    def release_newest(self) -> None:
        self.store.release_newest()

    def outage(self, on: bool) -> None:
        if on and not self.store.failing:
            self.outages += 1
            self.dirty = True
        self.store.failing = on

    def after_op(self) -> None:
        """
        Tear down what the tracker closed, then check the log and, when
        quiescent, every invariant.
        """
        self.units["ops"] += 1
        self.raise_failures()
        for _ in range(10):
            closing = [c for c in self.conns if c.open and c.transport.disconnecting]
            if not closing:
                break
            for c in closing:
                c.lose()
        self.raise_failures()
        self.check_log()
        if self.quiescent():
            self.check_state()

    def raise_failures(self) -> None:
        if self.failures:
            first = self.failures[0]
            raise FuzzFailure(f"{first} (and {len(self.failures) - 1} more)") from first

    def quiescent(self) -> bool:
        return not self.store.held and not self.store.releasing and not self.dirty

    def settle(self) -> None:
        """
        Let everything in flight finish: release writes, end the outage,
        deliver every queued byte, let pings answer or time out, resync.
        """
        self.outage(False)
        self.hold(False)
        for _ in range(50):
            moved = 0
            self.clock.advance(0)
            for c in self.conns:
                moved += c.deliver()
            self.after_op()
            if not moved:
                if self.clock.getDelayedCalls() and any(
                    d.getTime() <= self.clock.seconds() + PING_TIMEOUT for d in self.clock.getDelayedCalls()
                ):
                    self.clock.advance(PING_TIMEOUT)
                    self.after_op()
                    continue
                break
        if self.dirty:
            self.heartbeat()
            self.after_op()

    def finish(self) -> None:
        """
        Settle, then check that every request still open was answered, and
        that connections without a session are closed by the hello timeout.
        """
        self.settle()
        for c in self.conns:
            if c.open and not c.ambiguous:
                _expect(
                    not c.awaiting,
                    f"conn {c.index}: {len(c.awaiting)} requests never answered "
                    f"(first: {c.awaiting[0].body[:80]!r})" if c.awaiting else "",
                )
        self.clock.advance(HELLO_TIMEOUT + 1)
        self.after_op()
        for c in self.conns:
            if c.open:
                _expect(c.proto.session is not None, f"conn {c.index}: open without a session after the hello timeout")

    # -- checks ------------------------------------------------------------

    def check_log(self) -> None:
        """
        The log rule: no event at level error or critical, and no logged
        failure, except a failure of the store (L{IndexUnavailable}) while
        the fuzzer had cut it off.
        """
        events, self._log[:] = list(self._log), []
        for event in events:
            failure = event.get("log_failure")
            level = event.get("log_level")
            if failure is not None:
                if self.outages and failure.check(IndexUnavailable):
                    continue
                raise FuzzFailure(f"logged failure: {event.get('log_format')!r}\n{failure.getTraceback()}")
            if level is not None and level.name in ("error", "critical"):
                raise FuzzFailure(f"logged {level.name}: {event.get('log_format')!r} {event}")

    def check_state(self) -> None:
        try:
            check_registry_invariants(self.registry, self.store, self.closed_sessions)
        except InvariantError as e:
            raise FuzzFailure(f"invariant broken: {e}")
        # The registry holds exactly what the model predicts.
        want = {}
        for c in self.conns:
            if c.open and c.session_id is not None and not c.ambiguous:
                want[c.session_id] = c.pubs
        have = {s.session_id: {p.fname: p for p in pubs} for s, pubs in self.registry.snapshot()}
        if any(c.ambiguous for c in self.conns):
            _expect(set(want) <= set(have), f"model sessions {sorted(want)} not all live in {sorted(have)}")
        else:
            _expect(set(want) == set(have), f"live sessions {sorted(have)} != model {sorted(want)}")
        for sid, pubs in want.items():
            _expect(have[sid] == pubs, f"{sid} publications {have[sid]} != model {pubs}")

    def _live_sources(self, fname: str | None = None, hostname: str | None = None) -> list[dict]:
        """
        The sources the model says are live, oldest publication first.
        """
        records = {s.session_id: (s, {p.fname: p for p in pubs}) for s, pubs in self.registry.snapshot()}
        out = []
        for sid, f in self.pub_order:
            if sid not in records or (fname is not None and f != fname):
                continue
            session, pubs = records[sid]
            if hostname is not None and session.hostname != hostname:
                continue
            if f in pubs:
                out.append((sid, Source(session, pubs[f], 0).to_wire()))
        return out

    def _order(self, sid: str, fname: str, present: bool) -> None:
        key = (sid, fname)
        if key in self.pub_order:
            self.pub_order.remove(key)
        if present:
            self.pub_order.append(key)

    def check_answer(self, conn: Conn, rec: Received, answer: dict) -> None:
        where = f"conn {conn.index} answering {rec.body[:120]!r}"

        def expect_error(code: str, request_id: Any) -> None:
            want = {"status": "error", "code": code}
            got = {"status": answer.get("status"), "code": answer.get("code")}
            _expect(got == want, f"{where}: got {answer!r}, want code {code}")
            keys = {"status", "code", "message"} | ({"id"} if request_id is not None else set())
            _expect(set(answer) == keys, f"{where}: error keys {sorted(answer)} != {sorted(keys)}")
            _expect(answer.get("id") == request_id, f"{where}: id {answer.get('id')!r} != {request_id!r}")

        def expect_success(status: str, request_id: Any, **fields: Any) -> None:
            keys = {"status"} | set(fields) | ({"id"} if request_id is not None else set())
            _expect(answer.get("status") == status, f"{where}: got {answer!r}, want status {status}")
            _expect(set(answer) == keys, f"{where}: keys {sorted(answer)} != {sorted(keys)}")
            _expect(answer.get("id") == request_id, f"{where}: id {answer.get('id')!r} != {request_id!r}")
            for name, value in fields.items():
                if value is not ...:
                    _expect(answer[name] == value, f"{where}: {name} {answer[name]!r} != {value!r}")

        if rec.garbage is not None:
            self.outcomes[f"garbage:{rec.garbage}"] = self.outcomes.get(f"garbage:{rec.garbage}", 0) + 1
            expect_error(rec.garbage, None if rec.message is None else wire.safe_id(rec.message))
            return
        request = rec.request
        assert request is not None
        kind = f"{request.action}:{answer.get('status')}:{answer.get('code', '')}"
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        rid = request.id
        own_id = rid if conn.native else None
        f = request.fields
        action = request.action
        unavailable = answer.get("code") == "index_unavailable"
        if unavailable:
            _expect(self.store.failing, f"{where}: index_unavailable while the store works")
        if action == "ping":
            expect_success("success", rid, message="pong")
            return
        if action == "challenge":
            if conn.session_id is not None:
                expect_error("already_registered", rid)
            else:
                expect_success("success", rid, nonce=..., tracker="fz", address=conn.ip)
            return
        if action == "hello":
            if conn.session_id is not None:
                expect_error("already_registered", rid)
                return
            if f["key"] is not None or f["signature"] is not None:
                # Generated keys and signatures never verify (and no
                # challenge's nonce is known to the generator).
                if f["key"] is None or f["signature"] is None or f["version"] is None:
                    expect_error("bad_field", rid)
                else:
                    expect_error("bad_signature", rid)
                return
            if answer.get("status") == "error":
                code = answer.get("code")
                _expect(code in ("duplicate_session", "not_registered", "index_unavailable"), f"{where}: {answer!r}")
                expect_error(code, rid)
                if code == "duplicate_session":
                    holders = [
                        p.session
                        for p in self.registry.peers()
                        if (p.session.hostname, p.session.p2p_port) == (f["hostname"], f["p2p_port"])
                    ]
                    # A native holder that answered its ping, or a seed
                    # holder from another address (docs/protocol.md).
                    _expect(
                        len(holders) == 1 and (holders[0].version is not None or holders[0].ip != conn.ip),
                        f"{where}: duplicate_session but the holders are {holders}",
                    )
                return
            session = conn.proto.session
            _expect(session is not None, f"{where}: welcomed without a session")
            if f["version"] is None:
                expect_success("success", None, message=f"welcome {f['hostname']}")
            else:
                expect_success(
                    "success",
                    rid,
                    message=f"welcome {f['hostname']}",
                    version=wire.PROTOCOL_VERSION,
                    session=session.session_id,
                    address=conn.ip,
                    heartbeat=HEARTBEAT,
                )
            _expect(
                (session.hostname, session.ip, session.p2p_port, session.version)
                == (f["hostname"], conn.ip, f["p2p_port"], f["version"]),
                f"{where}: session record {session}",
            )
            holders = [
                p.session.session_id
                for p in self.registry.peers()
                if (p.session.hostname, p.session.p2p_port) == (f["hostname"], f["p2p_port"])
            ]
            if self.quiescent():
                _expect(holders == [session.session_id], f"{where}: key held by {holders}")
            conn.session_id = session.session_id
            conn.native = f["version"] is not None
            conn.hostname, conn.p2p_port = f["hostname"], f["p2p_port"]
            conn.pubs = {}
            return
        if conn.session_id is None:
            expect_error("not_registered", rid)
            return
        sid = conn.session_id
        if self.registry.session(sid) is None:
            # The tracker ended the session (another hello replaced it, or
            # it was evicted) and is closing the connection.  What was
            # queued still gets answers: refusals, or results computed
            # before the end; none can change the registry any more.
            _expect(conn.transport.disconnecting, f"{where}: session {sid} ended but its connection stays open")
            conn.pubs = {}
            return
        if action == "publish":
            fname = f["fname"]
            if f.get("root") is None and f.get("piece_size") is not None or (
                f.get("root") is not None and f.get("piece_size") is None
            ):
                expect_error("bad_field", rid)
                return
            if conn.native and f.get("sha256") is None:
                # Only seed clients may publish without a SHA-256.
                expect_error("bad_field", rid)
                return
            new = publication_for(f, conn.native)
            old = conn.pubs.get(fname)
            if old is None:
                status = wire.CREATED
            elif old == new:
                status = wire.UNCHANGED
            elif f["allow_overwrite"]:
                status = wire.UPDATED
            else:
                status = wire.CONFLICT
            if unavailable and status in (wire.CREATED, wire.UPDATED):
                expect_error("index_unavailable", rid)
                return
            expect_success(status, own_id, fname=fname, message=...)
            if status in (wire.CREATED, wire.UPDATED):
                conn.pubs[fname] = new
                self._order(sid, fname, True)
            return
        if action == "unpublish":
            fname = f["fname"]
            if fname not in conn.pubs:
                expect_error("not_published", rid)
            elif unavailable:
                expect_error("index_unavailable", rid)
            else:
                expect_success("success", own_id, fname=fname)
                del conn.pubs[fname]
                self._order(sid, fname, False)
            return
        if unavailable:
            expect_error("index_unavailable", rid)
            return
        exact = self.quiescent()
        if action == "fetch":
            if conn.native:
                expect_success("success", own_id, fname=f["fname"], peer_list=...)
            else:
                expect_success("success", None, peer_list=...)
            peers = answer["peer_list"]
            if any((p["hostname"], p["port"]) == (conn.hostname, conn.p2p_port) for p in peers):
                # Only allowed while a write is in flight, for an ended
                # session with our hostname and port whose removal has not
                # reached the store yet.
                stale = [
                    s.session_id
                    for s in self.store.inner.index.sessions()
                    if (s.hostname, s.p2p_port) == (conn.hostname, conn.p2p_port) and s.session_id != sid
                ]
                _expect(not exact and bool(stale), f"{where}: fetch returned the requester")
            if exact:
                want = [w for s, w in self._live_sources(fname=f["fname"]) if s != sid][: f["limit"]]
                _expect(peers == want, f"{where}: peer_list {peers} != {want}")
            self.units["sources"] = self.units.get("sources", 0) + len(peers)
            return
        if action in ("list_shared_files", "search"):
            if conn.native and "next" in answer:
                # A page that leaves entries out says where to go on.
                expect_success("success", own_id, files=..., next=...)
                _expect(isinstance(answer["next"], str), f"{where}: next {answer['next']!r} is not a cursor")
            elif conn.native:
                expect_success("success", own_id, files=...)
            else:
                expect_success("success", None, files=...)
            if exact:
                want = expected_catalogue(self.registry, f.get("pattern") or "")
                problem = check_catalogue_answer(answer["files"], want, f["limit"])
                _expect(problem is None, f"{where}: {problem}; files {answer['files']}, want {want}")
                if conn.native:
                    _expect(
                        ("next" in answer) == (len(want) > f["limit"]),
                        f"{where}: next {answer.get('next')!r} with {len(want)} entries and limit {f['limit']}",
                    )
            return
        if action == "discover":
            expect_success("success", own_id, hostname=f["hostname"], files=...)
            if exact:
                want = [w for _, w in self._live_sources(hostname=f["hostname"])]
                _expect(answer["files"] == want, f"{where}: files {answer['files']} != {want}")
            return
        raise FuzzFailure(f"{where}: no model for {action!r}")
