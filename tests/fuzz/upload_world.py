"""
A peer's upload port in memory, fed scripted connections, with a model of
what each request may be answered.

The repository (L{UploadFixture}) holds published files with known bytes,
files that are not published (inside the repository and outside it, each
full of a marker that must never be sent), and a published name whose file
was replaced by a symbolic link to the outside.  Every request frame the
protocol receives is recorded together with the server state at that
moment (sending or not, closing or not, whether the slot table refused
it); its answer is then read off the connection's output:

  - only a published, still valid name ever produces file bytes, and
    exactly the bytes of the range asked for (C{get}) or of the whole file
    (C{get_file}/C{download});
  - a range that does not fit the file is refused, never clipped;
  - garbage gets the error C{wire} names, then the connection closes (an
    invalid C{get_file}/C{download}: a close without a byte);
  - a request during a transfer aborts the connection;
  - C{busy} only when every session slot is taken;
  - nothing else is ever written, and the marker never.

After every op: the log has no failure and no error, slots in use match
the transfers running, and an idle connection is closed once the idle
timeout has passed since its last request or chunk.

The transport double (L{PullTransport}) has a write buffer with a bound
(L{BUFFER_BOUND}), as a TCP transport's C{bufferSize}: a write that takes
it over the bound pauses a registered streaming producer (the protocol,
while it writes answers from memory), the reader draining it (the C{pump}
op) resumes it or pulls the next chunk from a file producer, and while the
protocol has paused the transport, nothing is read from the client.  Each
write is checked against L{invariants.check_output_held}: the bytes the
source holds never exceed the bound plus one answer.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from tests.fuzz.invariants import check_output_held
from twistedp2p import wire
from twistedp2p.peer.library import Library, LIBRARY_FILE, STATE_DIR, run_synchronously
from twistedp2p.peer.slots import UP, Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.peer.upload import MAX_PIPELINED, UploadFactory, UploadProtocol

#: Bytes that are in the repository (and next to it) but never published.
SECRET = b"<<NOT-PUBLISHED-MUST-NEVER-BE-SENT>>"
IDLE_TIMEOUT = 60.0
MAX_SESSIONS = 2
#: The transport's write-buffer bound (TCP's C{bufferSize} is 64 KiB; a
#: small one here, so that a few pipelined answers reach it).
BUFFER_BOUND = 4096


class FuzzFailure(AssertionError):
    """
    The upload port did something the model forbids.
    """


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise FuzzFailure(message)


class UploadFixture:
    """
    A repository built once per test and reused by every example: each
    example gets a fresh L{Library} loaded from the same saved state.

    @ivar contents: published shared name -> its bytes.
    @ivar stale: published names whose file no longer matches (never served).
    @ivar paths: names of files that exist but must not be served by name
        (paths inside and outside the repository, the library file).
    """

    def __init__(self, base: Path) -> None:
        self.repo = base / "repo"
        outside = base / "outside"
        (self.repo / "sub").mkdir(parents=True)
        outside.mkdir()
        rng = random.Random(7)
        self.contents = {
            # Several of the sender's chunks, so that transfers can stall.
            "a.bin": rng.randbytes(700_000),
            "small": b"0123456789",
            "empty": b"",
            "ü name": rng.randbytes(3000),
        }
        files = {"a.bin": "a.bin", "small": "small.txt", "empty": "empty", "ü name": "sub/ü.txt"}
        for name, rel in files.items():
            (self.repo / rel).write_bytes(self.contents[name])
        (self.repo / "secret.txt").write_bytes(SECRET * 4)
        (outside / "secret.txt").write_bytes(SECRET * 4)
        (self.repo / "moved.bin").write_bytes(b"will be replaced")
        library = Library(self.repo, [], run_synchronously, Clock())
        for name, rel in list(files.items()) + [("moved", "moved.bin")]:
            entry = _sync(library.describe(rel, name))
            _sync(library.put(entry))
        # The published file is replaced by a link to a file outside.
        (self.repo / "moved.bin").unlink()
        os.symlink(outside / "secret.txt", self.repo / "moved.bin")
        self.stale = {"moved"}
        self.state = (self.repo / STATE_DIR / LIBRARY_FILE).read_bytes()
        self.places = {"{repo}": str(self.repo), "{outside}": str(outside)}
        self.sha = {name: hashlib.sha256(data).hexdigest() for name, data in self.contents.items()}

    #: Names worth asking for.  C{{repo}} and C{{outside}} stand for the
    #: fixture's directories (L{place}).
    PUBLISHED = ["a.bin", "small", "empty", "ü name"]
    #: The stale name, and paths of files that exist (inside and outside
    #: the repository, the library's own file): never served.
    UNSAFE = [
        "moved",
        "secret.txt",
        "sub/ü.txt",
        "../outside/secret.txt",
        "{outside}/secret.txt",
        "{repo}/a.bin",
        "{repo}/secret.txt",
        f"{STATE_DIR}/{LIBRARY_FILE}",
        "moved.bin",
        "small.txt",
    ]
    NEAR = ["A.BIN", "a.bin ", " a.bin", "a.bin\x00", "a.bi", "ü name/", "u\u0308 name", ".p2p"]

    def place(self, message: Any) -> Any:
        """
        C{message} with the directory placeholders in its strings filled in.
        """
        if isinstance(message, dict):
            return {k: self.place(v) for k, v in message.items()}
        if isinstance(message, str):
            for mark, path in self.places.items():
                message = message.replace(mark, path)
        return message

    def library(self, clock: Clock) -> Library:
        (self.repo / STATE_DIR / LIBRARY_FILE).write_bytes(self.state)
        return Library(self.repo, [], run_synchronously, clock)


def _sync(d: Any) -> Any:
    box: list[Any] = []
    d.addBoth(box.append)
    if isinstance(box[0], Failure):
        box[0].raiseException()
    return box[0]


class PullTransport(StringTransport):
    """
    A StringTransport that behaves like a TCP transport where it matters
    here: it asks a pull producer for its first chunk when registered (later
    chunks come when the world says the buffer drained, L{UploadConn.pump});
    it holds what was written until the reader drains it, and a write that
    takes that over L{BUFFER_BOUND} pauses a registered streaming producer
    (resumed once drained), as C{FileDescriptor} does; while the protocol
    has paused it, it reads nothing (L{UploadConn.deliver}); and it tells
    the connection's model about every write and close as they happen.
    """

    bufferSize = BUFFER_BOUND

    def __init__(self, conn: "UploadConn", peer: IPv4Address) -> None:
        StringTransport.__init__(self, peerAddress=peer, lenient=True)
        self._conn = conn
        #: Bytes written and not yet taken by the reader, and those of them
        #: the protocol wrote itself (not pulled from a file producer).
        self.held = 0
        self.own = 0
        #: The streaming producer was paused for a full buffer.
        self.producer_paused = False

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        StringTransport.registerProducer(self, producer, streaming)
        self.producer_paused = False
        if not streaming:
            producer.resumeProducing()

    def unregisterProducer(self) -> None:
        StringTransport.unregisterProducer(self)
        self.producer_paused = False
        # The transfer ended: the protocol counts that as activity.
        self._conn.last_activity = self._conn.world.clock.seconds()

    def write(self, data: bytes) -> None:
        world = self._conn.world
        pulled = self.producer is not None and not self.streaming
        if not pulled:
            problem = check_output_held(self.own, len(data), self.bufferSize)
            if problem is not None:
                world.failures.append(FuzzFailure(f"conn {self._conn.index}: {problem}"))
            self.own += len(data)
        self.held += len(data)
        world.units["peak_held"] = max(world.units["peak_held"], self.held)
        StringTransport.write(self, data)
        self._conn.written(data)
        if self.producer is not None and self.streaming and self.held > self.bufferSize:
            self.producer_paused = True
            world.units["paused"] += 1
            self.producer.pauseProducing()

    def drained(self) -> None:
        """
        The reader took every byte held: resume a paused streaming producer,
        or pull the next chunk from a file producer.
        """
        self.held = self.own = 0
        if self.producer is None:
            return
        if not self.streaming:
            self.producer.resumeProducing()
        elif self.producer_paused:
            self.producer_paused = False
            # (The reader took every byte: progress, for the idle timeout.)
            self._conn.last_activity = self._conn.world.clock.seconds()
            self.producer.resumeProducing()

    def writeSequence(self, data: Any) -> None:
        # (StringTransport's own would bypass write, and so the model.)
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        if not self.disconnecting:
            self._conn.closing()
        StringTransport.loseConnection(self)

    def abortConnection(self) -> None:
        if not self.disconnecting:
            self._conn.closing()
        StringTransport.abortConnection(self)


@dataclass(eq=False)
class Receipt:
    """
    One frame the protocol received, and what the model knew then.
    """

    body: bytes
    #: The server had started closing: the frame is ignored.
    closing: bool
    #: Requests received before it and not answered yet.
    unanswered: int
    #: The server aborted the connection on receiving it.
    aborted: bool = False


@dataclass
class UploadConn:
    """
    One scripted client of the upload port, and the model of its answers:
    requests are answered one at a time, in order.  The model reads each
    answer as the protocol writes it.
    """

    world: "UploadWorld"
    index: int
    proto: UploadProtocol = field(init=False)
    transport: PullTransport = field(init=False)
    stream: bytearray = field(default_factory=bytearray)
    delivered: int = 0
    receipts: list = field(default_factory=list)
    #: Receipts whose answer has started.
    answered: int = 0
    out: bytearray = field(default_factory=bytearray)
    #: Output bytes already matched.
    consumed: int = 0
    #: File bytes still owed for the transfer in progress, and whether the
    #: connection closes after them (seed protocol).
    owed: bytes | None = None
    close_after: bool = False
    #: The server answered something after which it must close.
    must_close: bool = False
    closed: bool = False
    last_activity: float = 0.0
    #: Every slot was taken when the latest write happened (a busy answer
    #: is legitimate then).
    busy_ok: bool = False

    def __post_init__(self) -> None:
        addr = IPv4Address("TCP", "127.0.0.1", 50000 + self.index)
        self.proto = self.world.factory.buildProtocol(addr)
        self.transport = PullTransport(self, addr)
        received = self.proto.stringReceived

        def recording(frame: bytes) -> None:
            receipt = Receipt(frame, self.transport.disconnecting, len(self.receipts) - self.answered)
            self.receipts.append(receipt)
            self.world.units["frames"] += 1
            if not receipt.closing and self.transport.producer is None:
                # (Behind a transfer, only its bytes moving count.)
                self.last_activity = self.world.clock.seconds()
            received(frame)
            receipt.aborted = self.transport.disconnected and not receipt.closing

        self.proto.stringReceived = recording
        self.last_activity = self.world.clock.seconds()
        self.proto.makeConnection(self.transport)

    @property
    def open(self) -> bool:
        return not self.closed

    def queue(self, data: bytes) -> None:
        self.stream += data

    def deliver(self, n: int | None) -> None:
        if self.closed or self.transport.disconnecting:
            return
        if self.transport.producerState == "paused":
            # The protocol stopped reading (its output is over the bound):
            # the bytes wait in the socket.
            return
        end = len(self.stream) if n is None else min(len(self.stream), self.delivered + n)
        if end > self.delivered:
            data = bytes(self.stream[self.delivered : end])
            self.delivered = end
            self.proto.dataReceived(data)

    def pump(self, n: int) -> None:
        """
        The reader takes everything the transport holds, C{n} times: each
        time a paused producer is resumed, or a file producer asked for
        its next chunk.
        """
        for _ in range(n):
            if self.closed:
                return
            self.transport.drained()

    def lose(self) -> None:
        if not self.closed:
            self.closed = True
            self.proto.connectionLost(Failure(ConnectionDone()))

    # -- the model ---------------------------------------------------------

    def written(self, data: bytes) -> None:
        if self.transport.producer is not None:
            self.last_activity = self.world.clock.seconds()
        self.out += data
        slots = self.world.slots
        self.busy_ok = slots.active[UP] >= slots.limits[UP]
        try:
            _expect(SECRET[:16] not in data, f"conn {self.index}: wrote unpublished bytes")
            self.read_answers()
        except AssertionError as e:
            # Raised inside the protocol: keep it for after_op, so that the
            # check cannot change what the protocol does next.
            self.world.failures.append(e)

    @property
    def final(self) -> bool:
        """
        The transport is closing and nothing will write to it any more: a
        closing TCP transport still resumes a registered producer (a range's
        sender, or the protocol paused over the bound, which then answers
        what it has queued) and closes once it unregisters.
        """
        return self.transport.disconnecting and self.transport.producer is None

    def closing(self) -> None:
        """
        The server starts closing: a seed request at the head of the line
        gets no bytes, which must be allowed (once no producer can still
        answer it).
        """
        try:
            self.read_answers(closing=self.transport.producer is None)
        except AssertionError as e:
            self.world.failures.append(e)

    def read_answers(self, closing: bool = False) -> None:
        """
        Match the output written so far with the requests received so far,
        in order; stop at the first answer not written yet.
        """
        fixture = self.world.fixture
        while True:
            if self.owed is not None:
                got = bytes(self.out[self.consumed : self.consumed + len(self.owed)])
                _expect(got == self.owed[: len(got)], f"conn {self.index}: wrong file bytes at {self.consumed}")
                self.consumed += len(got)
                self.world.units["served_bytes"] += len(got)
                self.owed = self.owed[len(got) :]
                if self.owed:
                    return
                self.owed = None
                if self.close_after:
                    self.must_close = True  # a seed transfer ends the connection
                continue
            if self.must_close:
                # The server closes after its last answer: what was
                # pipelined behind it is dropped.
                self.answered = len(self.receipts)
            while self.answered < len(self.receipts) and self.receipts[self.answered].closing:
                self.answered += 1  # ignored by a closing server
            if self.answered == len(self.receipts):
                _expect(
                    self.consumed == len(self.out),
                    f"conn {self.index}: bytes nobody asked for: {bytes(self.out[self.consumed:])[:80]!r}",
                )
                return
            r = self.receipts[self.answered]
            if r.aborted:
                _expect(r.unanswered >= MAX_PIPELINED, f"conn {self.index}: aborted with {r.unanswered} requests waiting")
                self.answered = len(self.receipts)
                return
            if not self._answer(r, fixture, closing):
                return
            self.answered += 1

    def _frame(self) -> dict | None:
        if len(self.out) - self.consumed < 4:
            return None
        (n,) = struct.unpack("!I", self.out[self.consumed : self.consumed + 4])
        if len(self.out) - self.consumed - 4 < n:
            return None
        body = bytes(self.out[self.consumed + 4 : self.consumed + 4 + n])
        self.consumed += 4 + n
        message = json.loads(body.decode("utf-8"))
        _expect(isinstance(message, dict) and isinstance(message.get("status"), str), f"bad answer {message!r}")
        self.world.units["answers"] += 1
        kind = f"{message['status']}:{message.get('code', '')}"
        self.world.outcomes[kind] = self.world.outcomes.get(kind, 0) + 1
        return message

    def _answer(self, r: Receipt, fixture: UploadFixture, closing: bool) -> bool:
        """
        Read the answer to C{r} if it is there.  @return: whether it was.
        """
        where = f"conn {self.index} answering {r.body[:100]!r}"
        message = None
        try:
            message = wire.decode(r.body)
            request = wire.parse_request(message, wire.PEER_REQUESTS)
        except wire.WireError as e:
            action = message.get("action") if isinstance(message, dict) else None
            if type(action) is str and action in ("get_file", "download"):
                # An invalid seed request: closed without a byte, as an
                # unpublished name (never an error frame, which a seed
                # client would save as the file).
                _expect(self.consumed == len(self.out), f"{where}: bytes for an invalid seed request")
                if not closing:
                    return False
                self.must_close = True
                return True
            answer = self._frame()
            if answer is None:
                return False
            want = wire.error(e.code, e.message, None if message is None else wire.safe_id(message))
            _expect(
                {k: answer.get(k) for k in ("status", "code", "id")} == {k: want.get(k) for k in ("status", "code", "id")},
                f"{where}: got {answer!r}, want code {e.code}",
            )
            self.must_close = True
            return True
        rid = request.id
        action = request.action
        slots = self.world.slots
        if action in ("get_file", "download"):
            name = request.fields["lname" if action == "get_file" else "fname"]
            servable = name in fixture.contents and name not in self.world.dropped
            if self.consumed < len(self.out):
                _expect(servable, f"{where}: bytes for a name that is not published")
                self.world.units["served"] += 1
                self.owed = fixture.contents[name]
                self.close_after = True
                return True
            if not closing:
                return False
            # Closed without a byte: only for a name not served, or busy
            # (every slot taken, this connection holding none), or an empty
            # file (its end closes at once).
            _expect(
                not servable or slots.active[UP] >= slots.limits[UP] or fixture.contents[name] == b"",
                f"{where}: closed without sending a published file",
            )
            if name in fixture.stale and slots.active[UP] < slots.limits[UP]:
                self.world.dropped.add(name)
            self.must_close = True
            return True
        answer = self._frame()
        if answer is None:
            return False
        if action == "ping":
            _expect(answer == wire.reply(wire.SUCCESS, rid, message="pong"), f"{where}: got {answer!r}")
            return True
        name = request.fields["fname"]
        servable = name in fixture.contents and name not in self.world.dropped
        if answer.get("status") == wire.ERROR and answer.get("code") == "not_found":
            _expect(answer.get("id") == rid, f"{where}: id of {answer!r}")
            _expect(
                not servable or action == "pieces",
                f"{where}: not_found for a published file",
            )
            if name in fixture.stale and action != "pieces":
                self.world.dropped.add(name)
            self.must_close = True
            return True
        if action == "pieces":
            # Metadata, answered from memory: a stale entry may still have
            # one (its gets are refused); anything else must be published.
            if name in fixture.stale and name not in self.world.dropped:
                _expect(answer.get("status") == wire.SUCCESS and answer.get("fname") == name, f"{where}: got {answer!r}")
                return True
            _expect(servable, f"{where}: a piece list for a name that is not published")
            _expect(
                answer.get("status") == wire.SUCCESS and answer.get("fname") == name and answer.get("id") == rid
                and answer.get("file_size") == len(fixture.contents[name]) and answer.get("sha256") == fixture.sha[name],
                f"{where}: got {answer!r}",
            )
            return True
        if action != "get":
            raise FuzzFailure(f"{where}: no model for {action!r}")
        if answer.get("status") == wire.BUSY:
            # (Checked as it was written: every slot was taken.)
            _expect(answer.get("id") == rid and self.busy_ok, f"{where}: busy with a free slot")
            self.must_close = True
            return True
        _expect(servable, f"{where}: got {answer!r} for a name that is not published")
        data = fixture.contents[name]
        offset = request.fields["offset"]
        length = request.fields["length"]
        if offset > len(data) or (length is not None and offset + length > len(data)):
            _expect(
                answer.get("status") == wire.ERROR and answer.get("code") == "bad_field" and answer.get("id") == rid,
                f"{where}: got {answer!r}, want a refused range",
            )
            self.must_close = True
            return True
        if length is None:
            length = len(data) - offset
        want = wire.reply(
            wire.SUCCESS, rid, fname=name, offset=offset, length=length, file_size=len(data), sha256=fixture.sha[name]
        )
        _expect(answer == want, f"{where}: header {answer!r}, want {want!r}")
        self.world.units["served"] += 1
        self.owed = data[offset : offset + length]
        self.close_after = False
        return True

    def check(self) -> None:
        """
        After an op: what was received is answered, unless a transfer or
        lookup is still in progress.
        """
        self.read_answers(closing=self.final)
        pending = [r for r in self.receipts[self.answered :] if not r.closing]
        if pending and self.transport.producer is None and not self.transport.disconnecting:
            raise FuzzFailure(f"conn {self.index}: {len(pending)} requests never answered (first {pending[0].body[:80]!r})")
        if self.must_close and self.transport.producer is None and self.owed is None:
            _expect(self.transport.disconnecting, f"conn {self.index}: did not close after its last answer")


class UploadWorld:
    """
    One upload port (factory, library, slots, transfers) on a Clock.
    """

    def __init__(self, fixture: UploadFixture) -> None:
        self.fixture = fixture
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.library = fixture.library(self.clock)
        self.slots = Slots(MAX_SESSIONS)
        self.transfers = Transfers(self.clock)
        # (min_rate=0: the idle-timeout rule below is checked exactly; the
        # minimum rate has its own tests in tests/peer/test_upload.py.)
        self.factory = UploadFactory(self.library, self.slots, self.transfers, self.clock, IDLE_TIMEOUT, min_rate=0)
        self.conns: list[UploadConn] = []
        #: Failures found while the protocol was writing (raised by after_op).
        self.failures: list[AssertionError] = []
        #: Stale names the library has dropped (after a request found them).
        self.dropped: set[str] = set()
        #: (C{served_bytes}: file bytes written and checked.)
        self.units = {
            "frames": 0, "answers": 0, "served_bytes": 0, "served": 0, "ops": 0, "paused": 0, "peak_held": 0,
        }
        #: Answers by "status:code", to judge what the generators reach.
        self.outcomes: dict[str, int] = {}
        self._log: list[dict] = []
        globalLogPublisher.addObserver(self._log.append)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self._log.append)

    def connect(self) -> UploadConn:
        conn = UploadConn(self, len(self.conns))
        self.conns.append(conn)
        return conn

    def pick(self, i: int, closing: bool = False) -> UploadConn | None:
        """
        The C{i}th open connection (modulo), among those still reading
        unless C{closing}.
        """
        live = [c for c in self.conns if c.open and (closing or not c.transport.disconnecting)]
        return live[i % len(live)] if live else None

    def tick(self, seconds: float) -> None:
        before = {c.index for c in self.conns if c.open and not c.transport.disconnecting}
        self.clock.advance(seconds)
        now = self.clock.seconds()
        for c in self.conns:
            if c.index in before and c.transport.disconnecting:
                _expect(
                    now - c.last_activity >= IDLE_TIMEOUT,
                    f"conn {c.index} closed {now - c.last_activity:g} s after its last activity",
                )
            elif c.open and not c.transport.disconnecting:
                _expect(
                    now - c.last_activity < IDLE_TIMEOUT,
                    f"conn {c.index} still open {now - c.last_activity:g} s after its last activity",
                )

    def after_op(self) -> None:
        self.units["ops"] += 1
        if self.failures:
            raise FuzzFailure(f"{self.failures[0]} (and {len(self.failures) - 1} more)") from self.failures[0]
        for c in self.conns:
            if c.open:
                c.check()
        for c in self.conns:
            # A closing TCP transport goes on pulling from a registered
            # producer and closes once it unregisters; an abort is at once.
            if c.open and c.transport.disconnecting and (c.transport.producer is None or c.transport.disconnected):
                _expect(
                    not c.owed or c.transport.disconnected,
                    f"conn {c.index}: closed with {len(c.owed or b'')} file bytes unsent",
                )
                c.owed = None
                c.lose()
        self.check_log()
        # A connection holds a slot while it has work: a transfer running,
        # or requests waiting behind one.  (A protocol registered as the
        # streaming producer of its own answers, paused until the reader
        # drains them, holds none for a ping or a piece list.)
        sending = sum(
            1 for c in self.conns if c.open and c.transport.producer is not None and not c.transport.streaming
        )
        _expect(sending <= self.slots.in_use <= self.slots.limits[UP], f"{self.slots.in_use} slots in use, {sending} sending")
        _expect(len(self.transfers.active()) == self.slots.in_use, f"{len(self.transfers.active())} uploads listed, {self.slots.in_use} slots held")
        for name in self.dropped:
            _expect(name not in self.library, f"stale {name!r} still published")

    def check_log(self) -> None:
        events, self._log[:] = list(self._log), []
        for event in events:
            failure = event.get("log_failure")
            if failure is not None:
                raise FuzzFailure(f"logged failure: {event.get('log_format')!r}\n{failure.getTraceback()}")
            level = event.get("log_level")
            if level is not None and level.name in ("error", "critical"):
                raise FuzzFailure(f"logged {level.name}: {event.get('log_format')!r}")

    def finish(self) -> None:
        """
        Drain every transfer, then let the idle timeout close the rest.
        """
        for _ in range(1000):
            busy = [c for c in self.conns if c.open and c.transport.producer is not None]
            if not busy:
                break
            for c in busy:
                c.pump(1)
            self.after_op()
        for c in self.conns:
            if c.open:
                _expect(c.owed is None, f"conn {c.index}: a transfer stopped short")
        self.tick(IDLE_TIMEOUT)
        self.after_op()
        _expect(not any(c.open for c in self.conns), "a connection outlived the idle timeout")
        _expect(self.slots.in_use == 0 and not self.transfers.active(), "a slot or transfer outlived its connection")
