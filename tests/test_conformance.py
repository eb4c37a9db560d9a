"""
docs/protocol.md against the real code.

Every request example of the document (a fenced block `json request
SCENARIO` or `text request SCENARIO`) is sent to a real tracker (in
process, memory store, loopback) or a real peer port, as its scenario says
(the scenarios are listed in the document, "How to read the examples"), in
the document's order; the answer must have exactly the keys of the
documented answer (the block after it), each of the same JSON type, and
the same `status` and `code`.  A `get` answer's raw bytes, the seed
requests' raw answers and the peer port's close after an error are checked
too.

The other direction: every action of L{wire}, every error code the code
base raises and every status of L{wire} must be documented, and the
documented ones must exist.
"""

from __future__ import annotations

import ast
import codecs
import hashlib
import json
import random
import re
import struct
import tempfile
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial import unittest

import twistedp2p
from twistedp2p import wire
from twistedp2p.errors import IndexUnavailable
from twistedp2p.identity import Identity
from twistedp2p.peer.events import Events
from twistedp2p.peer.library import Library
from twistedp2p.peer.node import PeerNode
from twistedp2p.peer.slots import UP, Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.peer.upload import UploadFactory
from twistedp2p.tracker import service
from twisted.internet.defer import fail, maybeDeferred

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"

TRACKER_SCENARIOS = {"native", "seed", "fresh", "contested", "index-down", "quota", "small-frames", "signed", "signed-other-key"}
PEER_SCENARIOS = {"peer", "peer-busy", "peer-raw", "peer-silent"}
#: Scenarios whose request has no answer block (raw bytes, or nothing).
RAW_SCENARIOS = {"peer-raw", "peer-silent"}
SCENARIOS = TRACKER_SCENARIOS | PEER_SCENARIOS | {"heartbeat"}

#: What the source lab-pc-03 publishes and serves.
SOURCE_NAME = "notes.pdf"
SOURCE_DATA = random.Random(14).randbytes(102400)


# -- the document ------------------------------------------------------------------


@dataclass
class Block:
    line: int
    lang: str
    words: list[str]
    body: str

    @property
    def kind(self) -> str:
        return self.words[0] if self.words else ""

    @property
    def where(self) -> str:
        return f"docs/protocol.md:{self.line}"


@dataclass
class Example:
    request: Block
    scenario: str
    answer: Block | None

    def request_bytes(self) -> bytes:
        if self.request.lang == "text":
            return codecs.escape_decode(self.request.body.strip().encode("utf-8"))[0]
        return wire.encode(json.loads(self.request.body))

    def request_message(self) -> dict[str, Any]:
        return json.loads(self.request.body)

    def answer_message(self) -> dict[str, Any]:
        assert self.answer is not None
        return json.loads(self.answer.body)


_FENCE = re.compile(r"^```(\S*)(?:[ \t]+(.*))?$")


def blocks(text: str) -> list[Block]:
    """
    The fenced blocks of a Markdown text.
    """
    found: list[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        start = i
        i += 1
        body: list[str] = []
        while i < len(lines) and lines[i] != "```":
            body.append(lines[i])
            i += 1
        found.append(Block(start + 1, m.group(1), (m.group(2) or "").split(), "\n".join(body)))
        i += 1
    return found


def examples(text: str) -> tuple[list[Example], list[Block], list[str]]:
    """
    The request examples (each with its answer block), the `unchecked`
    blocks, and what is wrong with the annotations.
    """
    problems: list[str] = []
    found: list[Example] = []
    unchecked: list[Block] = []
    all_blocks = blocks(text)
    for index, block in enumerate(all_blocks):
        if block.lang not in ("json", "text"):
            continue
        kind = block.kind
        if block.lang == "text" and kind != "request":
            continue
        if kind == "request":
            if len(block.words) != 2 or block.words[1] not in SCENARIOS:
                problems.append(f"{block.where}: request needs one scenario of {sorted(SCENARIOS)}: {block.words}")
                continue
            scenario = block.words[1]
            following = all_blocks[index + 1] if index + 1 < len(all_blocks) else None
            answer = following if following is not None and following.lang == "json" and following.kind == "answer" else None
            if scenario in RAW_SCENARIOS and answer is not None:
                problems.append(f"{block.where}: a {scenario} request has no answer block")
            if scenario not in RAW_SCENARIOS and answer is None:
                problems.append(f"{block.where}: request without a `json answer` block after it")
                continue
            found.append(Example(block, scenario, answer))
        elif kind == "answer":
            previous = all_blocks[index - 1] if index else None
            if previous is None or previous.kind != "request":
                problems.append(f"{block.where}: answer block without a request block before it")
        elif kind == "unchecked":
            if len(block.words) < 2:
                problems.append(f"{block.where}: `unchecked` needs a reason")
            unchecked.append(block)
        else:
            problems.append(f"{block.where}: a json block must be `request SCENARIO`, `answer` or `unchecked REASON`")
        if block.lang == "json" and kind in ("request", "answer", "unchecked"):
            try:
                value = json.loads(block.body)
            except ValueError as e:
                problems.append(f"{block.where}: not JSON: {e}")
                continue
            if not isinstance(value, dict):
                problems.append(f"{block.where}: not a JSON object")
    return found, unchecked, problems


def table_column(text: str, header: str) -> list[str]:
    """
    The backticked words of the first column of the table whose header
    row starts with C{header}.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith(header):
            words: list[str] = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                first = row.split("|")[1]
                words.extend(re.findall(r"`([^`]+)`", first))
            return words
    raise AssertionError(f"docs/protocol.md has no table headed {header!r}")


# -- shapes ------------------------------------------------------------------------


def kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape(value: Any) -> Any:
    """
    The keys and JSON types of a value: what the document promises.
    """
    if isinstance(value, dict):
        return ("object", tuple(sorted((k, shape(v)) for k, v in value.items())))
    if isinstance(value, list):
        return ("array", frozenset(shape(v) for v in value))
    return kind_of(value)


def shape_problems(documented: Any, real: Any, path: str = "") -> list[str]:
    """
    How C{real} differs from C{documented} in keys and types (empty when
    they agree).
    """
    if kind_of(documented) != kind_of(real):
        return [f"{path or 'answer'}: documented {kind_of(documented)}, got {kind_of(real)} ({real!r:.80})"]
    if isinstance(documented, dict):
        problems = []
        missing = sorted(set(documented) - set(real))
        extra = sorted(set(real) - set(documented))
        if missing:
            problems.append(f"{path or 'answer'}: documented keys missing: {missing}")
        if extra:
            problems.append(f"{path or 'answer'}: undocumented keys: {extra}")
        for key in sorted(set(documented) & set(real)):
            problems.extend(shape_problems(documented[key], real[key], f"{path}.{key}" if path else key))
        return problems
    if isinstance(documented, list):
        want = {shape(v): v for v in documented}
        got = {shape(v): v for v in real}
        problems = []
        for s in set(got) - set(want):
            example = got[s]
            # Say how it differs from the closest documented element.
            near = [p for d in documented for p in shape_problems(d, example, f"{path}[]")]
            problems.append(f"{path}[]: undocumented element {example!r:.200}: {near[:3]}")
        for s in set(want) - set(got):
            problems.append(f"{path}[]: documented element never seen: {want[s]!r:.200}")
        return problems
    return []


def answer_problems(documented: dict, real: dict) -> list[str]:
    problems = shape_problems(documented, real)
    for key in ("status", "code"):
        if documented.get(key) != real.get(key):
            problems.append(f"{key}: documented {documented.get(key)!r}, got {real.get(key)!r}")
    return problems


# -- clients -----------------------------------------------------------------------


class Client(Protocol):
    """
    A client of either port: raw bytes in, frames parsed on demand.  On a
    tracker connection it answers the tracker's pings (and records them).
    """

    def __init__(self, answer_pings: bool = True) -> None:
        self.buffer = b""
        self.closed = False
        self.answer_pings = answer_pings
        self.pings: list[dict] = []
        self._waiters: list[tuple[Any, Deferred]] = []
        self._frames: list[dict] = []
        self.raw_mode = False

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        if not self.raw_mode:
            self._parse()
        self._wake()

    def _parse(self) -> None:
        while len(self.buffer) >= 4:
            (n,) = struct.unpack("!I", self.buffer[:4])
            if len(self.buffer) < 4 + n:
                return
            message = json.loads(self.buffer[4 : 4 + n].decode("utf-8"))
            self.buffer = self.buffer[4 + n :]
            if isinstance(message, dict) and "action" in message:
                self.pings.append(message)
                if self.answer_pings:
                    self.send(wire.reply(wire.SUCCESS, message.get("id"), message="pong"))
                continue
            self._frames.append(message)
            if message.get("status") == "success" and "length" in message and "offset" in message:
                # A get header: the raw bytes follow.
                self.raw_mode = True
                return

    def connectionLost(self, reason: Failure = None) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiters = self._waiters, []
        for test, d in waiting:
            if test():
                d.callback(None)
            else:
                self._waiters.append((test, d))

    def until(self, test: Any, timeout: float = 5.0) -> Deferred:
        d: Deferred = Deferred()
        if test():
            d.callback(None)
            return d
        self._waiters.append((test, d))
        return d.addTimeout(timeout, reactor)

    def send_raw(self, body: bytes) -> None:
        self.transport.write(struct.pack("!I", len(body)) + body)

    def send(self, message: dict) -> None:
        self.send_raw(wire.encode(message))

    @inlineCallbacks
    def answer(self):
        yield self.until(lambda: bool(self._frames) or self.closed)
        if not self._frames:
            raise AssertionError("the connection closed without an answer")
        return self._frames.pop(0)

    @inlineCallbacks
    def ask(self, message: dict):
        self.send(message)
        answer = yield self.answer()
        return answer

    @inlineCallbacks
    def raw(self, n: int):
        """
        The next C{n} raw bytes (after a get header).
        """
        yield self.until(lambda: len(self.buffer) >= n or self.closed)
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        self.raw_mode = False
        self._parse()
        return data


def sync_run(f: Any, *args: Any, **kwargs: Any) -> Deferred:
    return maybeDeferred(f, *args, **kwargs)


# -- the test ------------------------------------------------------------------------


class ConformanceTests(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def setUp(self):
        base = Path(tempfile.mkdtemp(prefix="p2p-conformance-"))
        self.addCleanup(shutil.rmtree, base, True)
        # The tracker: memory store, a short heartbeat (the heartbeat
        # example waits for a ping).
        config = service.Options()
        config.parseOptions(
            ["--listen", "tcp:0:interface=127.0.0.1", "--db", "memory", "--no-shell", "--heartbeat", "0.2"]
        )
        self.tracker = service.makeService(config, reactor)
        self.tracker.startService()
        self.addCleanup(self.tracker.stopService)
        port = yield self.tracker.whenListening()
        self.tracker_port = port.getHost().port
        # The source lab-pc-03: a peer port serving notes.pdf.
        repo = base / "repo"
        repo.mkdir()
        (repo / SOURCE_NAME).write_bytes(SOURCE_DATA)
        self.library = Library(repo, [], sync_run, reactor)
        self.addCleanup(self.library.close)
        entry = yield self.library.describe(SOURCE_NAME, SOURCE_NAME)
        yield self.library.put(entry)
        self.entry = entry
        self.slots = Slots(4)
        upload = UploadFactory(self.library, self.slots, Transfers(reactor, Events(reactor)), reactor, 60.0)
        self.peer_listening = reactor.listenTCP(0, upload, interface="127.0.0.1")
        self.addCleanup(self.peer_listening.stopListening)
        self.addCleanup(upload.disconnect_all)
        self.peer_port = self.peer_listening.getHost().port
        # lab-pc-03's tracker session, which publishes what a native peer does.
        self.source = yield self.connect_tracker()
        welcome = yield self.source.ask(
            {"action": "hello", "hostname": "lab-pc-03", "p2p_port": self.peer_port, "version": 1, "id": 1}
        )
        self.assertEqual(welcome["status"], "success")
        published = yield self.source.ask(dict(PeerNode.publish_fields(entry, True), action="publish", id=2))
        self.assertEqual(published["status"], "created")
        #: The key of the `signed` examples.
        self.signer = Identity.generate()
        # The requesters of the examples.
        self.native = yield self.connect_tracker()
        self.seed = yield self.connect_tracker()

    @inlineCallbacks
    def connect_tracker(self):
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), Client())
        self.addCleanup(client.transport.loseConnection)
        return client

    @inlineCallbacks
    def connect_peer(self):
        client = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.peer_port), Client(False))
        self.addCleanup(client.transport.abortConnection)
        return client

    @inlineCallbacks
    def test_every_documented_example(self):
        """
        Each request of docs/protocol.md, in order, gets an answer of the
        documented shape.
        """
        found, _, problems = examples(DOC.read_text(encoding="utf-8"))
        self.assertEqual(problems, [])
        failures: list[str] = []
        for example in found:
            try:
                got = yield self.run_example(example)
            except Exception as e:
                failures.append(f"{example.request.where} ({example.scenario}): {type(e).__name__}: {e}")
                continue
            for problem in got:
                failures.append(f"{example.request.where} ({example.scenario}): {problem}")
        self.assertEqual(failures, [], "\n" + "\n".join(failures))
        self.assertGreater(len(found), 30)

    @inlineCallbacks
    def run_example(self, example: Example):
        scenario = example.scenario
        if scenario in TRACKER_SCENARIOS:
            problems = yield self.run_tracker(example)
        elif scenario == "heartbeat":
            problems = yield self.run_heartbeat(example)
        else:
            problems = yield self.run_peer(example)
        return problems

    @inlineCallbacks
    def run_tracker(self, example: Example):
        scenario = example.scenario
        registry = self.tracker.registry
        body = example.request_bytes()
        restore = None
        if scenario == "native" or scenario in ("index-down", "quota", "small-frames"):
            client = self.native
        elif scenario == "seed":
            client = self.seed
        else:
            client = yield self.connect_tracker()
            if scenario == "contested":
                message = example.request_message()
                message.update(hostname="lab-pc-03", p2p_port=self.peer_port)
                body = wire.encode(message)
            elif scenario in ("signed", "signed-other-key"):
                challenge = yield client.ask({"action": "challenge"})
                signer = self.signer if scenario == "signed" else Identity.generate()
                message = example.request_message()
                message.update(
                    key=signer.public_key,
                    signature=signer.sign_hello(
                        challenge["nonce"],
                        challenge["tracker"],
                        challenge["address"],
                        message["hostname"],
                        message["p2p_port"],
                    ),
                )
                body = wire.encode(message)
        if scenario == "index-down":
            store = registry.store
            saved = store.put

            def down(*args: Any, **kwargs: Any) -> Deferred:
                return fail(IndexUnavailable("the database is down"))

            store.put = down
            restore = lambda: setattr(store, "put", saved)
        elif scenario == "small-frames":
            saved_limit = wire.MAX_REPLY_FRAME
            wire.MAX_REPLY_FRAME = 256
            restore = lambda: setattr(wire, "MAX_REPLY_FRAME", saved_limit)
        elif scenario == "quota":
            saved_max = registry.max_files
            registry.max_files = 0
            restore = lambda: setattr(registry, "max_files", saved_max)
        try:
            client.send_raw(body)
            answer = yield client.answer()
        finally:
            if restore is not None:
                restore()
        return answer_problems(example.answer_message(), answer)

    @inlineCallbacks
    def run_heartbeat(self, example: Example):
        """
        Wait for the tracker's next ping to the native connection; the
        documented answer must be what a native client sends back.
        """
        client = self.native
        seen = len(client.pings)
        yield client.until(lambda: len(client.pings) > seen, timeout=5.0)
        ping = client.pings[seen]
        problems = answer_problems(example.request_message(), ping)
        problems += [f"pong: {p}" for p in answer_problems(
            example.answer_message(), wire.reply(wire.SUCCESS, ping["id"], message="pong")
        )]
        if ping.get("action") != "ping":
            problems.append(f"the tracker sent {ping!r}")
        return problems

    @inlineCallbacks
    def run_peer(self, example: Example):
        scenario = example.scenario
        client = yield self.connect_peer()
        held = []
        if scenario == "peer-busy":
            while True:
                slot = self.slots.try_acquire(UP)
                if slot is None:
                    break
                held.append(slot)
        try:
            client.send_raw(example.request_bytes())
            if scenario in RAW_SCENARIOS:
                client.raw_mode = True
                yield client.until(lambda: client.closed, timeout=5.0)
                want = SOURCE_DATA if scenario == "peer-raw" else b""
                if client.buffer != want:
                    return [f"raw answer of {len(client.buffer)} bytes, documented {len(want)}"]
                return []
            answer = yield client.answer()
        finally:
            for slot in held:
                slot.release()
        problems = answer_problems(example.answer_message(), answer)
        if answer.get("status") == wire.SUCCESS and "length" in answer:
            request = example.request_message()
            offset = request.get("offset") or 0
            data = yield client.raw(answer["length"])
            if data != SOURCE_DATA[offset : offset + answer["length"]]:
                problems.append("the bytes after the get header are not the range asked for")
        if answer.get("status") in (wire.ERROR, wire.BUSY):
            try:
                yield client.until(lambda: client.closed, timeout=5.0)
            except Exception:
                problems.append("the peer port did not close after an error or busy answer")
        return problems

    @inlineCallbacks
    def test_version_negotiation(self):
        """
        What "Versions" says: 1 to 1000 accepted, the answer always says 1,
        anything else is bad_field.
        """
        for version, port in ((1000, 7001), (2, 7002)):
            client = yield self.connect_tracker()
            answer = yield client.ask(
                {"action": "hello", "hostname": "v", "p2p_port": port, "version": version, "id": 1}
            )
            self.assertEqual((answer["status"], answer["version"]), ("success", 1))
            self.assertEqual(self.tracker.registry.session(answer["session"]).version, version)
        for version in (0, 1001, 1.0, "1", True):
            client = yield self.connect_tracker()
            answer = yield client.ask({"action": "hello", "hostname": "v", "p2p_port": 7003, "version": version})
            self.assertEqual((answer["status"], answer["code"]), ("error", "bad_field"), version)

    @inlineCallbacks
    def test_what_counts_as_a_pong(self):
        """
        The heartbeat as documented: an answer with the ping's id counts
        whatever its status; requests do not count, and a session that
        only sends requests is evicted by a close without a frame.
        """
        registry = self.tracker.registry
        misses = registry.misses

        class Answering(Client):
            def _parse(self) -> None:
                Client._parse(self)
                for ping in self.pings[self.answered :]:
                    self.send({"status": "error", "id": ping["id"], "code": "x", "message": "not a pong"})
                self.answered = len(self.pings)

        answering = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), Answering(answer_pings=False)
        )
        answering.answered = 0
        self.addCleanup(answering.transport.loseConnection)
        chatty = yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", self.tracker_port), Client(answer_pings=False)
        )
        self.addCleanup(chatty.transport.loseConnection)
        for client, hostname in ((answering, "answers-with-errors"), (chatty, "only-asks")):
            welcome = yield client.ask({"action": "hello", "hostname": hostname, "p2p_port": 7010, "version": 1, "id": 1})
            self.assertEqual(welcome["status"], "success")
        # The chatty one sends a request (which is answered) for each ping
        # instead of answering it, until it is evicted.
        while not chatty.closed:
            seen = len(chatty.pings)
            yield chatty.until(lambda: len(chatty.pings) > seen or chatty.closed, timeout=10.0)
            if not chatty.closed:
                pong = yield chatty.ask({"action": "ping", "id": 99})
                self.assertEqual(pong, {"status": "success", "id": 99, "message": "pong"})
        # Closed without a frame: nothing but pings and the pongs asked for.
        self.assertEqual((chatty.buffer, chatty._frames), (b"", []))
        self.assertEqual({p["action"] for p in chatty.pings}, {"ping"})
        self.assertGreaterEqual(len(chatty.pings), misses)
        # Meanwhile the other one, answering with error frames, stays.
        yield answering.until(lambda: len(answering.pings) > 2 * misses, timeout=10.0)
        self.assertFalse(answering.closed)
        [status] = [p for p in registry.peers() if p.session.hostname == "answers-with-errors"]
        self.assertLess(status.missed, misses)

    @inlineCallbacks
    def test_last_seen_not_refreshed_by_reads(self):
        """
        docs/api.md: last_seen moves with hello, publish, unpublish and
        answered pings, not with other requests (a seed session: no pings).
        """
        registry = self.tracker.registry
        yield self.seed.ask({"action": "hello", "hostname": "reader", "p2p_port": 7020})

        def last_seen() -> float:
            [status] = [p for p in registry.peers() if p.session.hostname == "reader"]
            return status.last_seen

        before = last_seen()
        for request in (
            {"action": "fetch", "fname": "notes.pdf"},
            {"action": "search", "pattern": "notes"},
            {"action": "list_shared_files"},
            {"action": "discover", "hostname": "lab-pc-03"},
            {"action": "ping"},
        ):
            answer = yield self.seed.ask(request)
            self.assertEqual(answer["status"], "success")
        self.assertEqual(last_seen(), before)

    # -- the other direction: nothing undocumented ----------------------------------

    def test_every_action_has_an_example(self):
        found, _, _ = examples(DOC.read_text(encoding="utf-8"))
        documented: dict[str, set[str]] = {"tracker": set(), "peer": set(), "heartbeat": set()}
        for example in found:
            if example.request.lang != "json":
                continue
            action = example.request_message().get("action")
            side = "tracker" if example.scenario in TRACKER_SCENARIOS else (
                "heartbeat" if example.scenario == "heartbeat" else "peer"
            )
            documented[side].add(action)
        self.assertEqual(set(wire.TRACKER_REQUESTS) - documented["tracker"], set(), "tracker actions without an example")
        self.assertEqual(set(wire.PEER_REQUESTS) - documented["peer"], set(), "peer port actions without an example")
        self.assertEqual(set(wire.PEER_CONTROL_REQUESTS) - documented["heartbeat"], set())

    def test_error_codes_documented(self):
        """
        The table of error codes lists exactly the codes the code base
        raises, and each has an example (checked, or `unchecked` with a
        reason).
        """
        text = DOC.read_text(encoding="utf-8")
        table = set(table_column(text, "| code |"))
        raised = raised_codes()
        self.assertEqual(raised - table, set(), "error codes the code raises that docs/protocol.md does not list")
        self.assertEqual(table - raised, set(), "error codes docs/protocol.md lists that nothing raises")
        found, unchecked, _ = examples(text)
        shown = {e.answer_message().get("code") for e in found if e.answer is not None}
        shown |= {json.loads(b.body).get("code") for b in unchecked}
        self.assertEqual(table - shown, set(), "error codes without an example")

    def test_statuses_documented(self):
        text = DOC.read_text(encoding="utf-8")
        table = set(table_column(text, "| status | used by |"))
        statuses = {wire.SUCCESS, wire.ERROR, wire.BUSY, wire.CREATED, wire.UPDATED, wire.UNCHANGED, wire.CONFLICT}
        self.assertEqual(table, statuses)
        publish = set(table_column(text, "| status | meaning |"))
        self.assertEqual(publish, {wire.CREATED, wire.UPDATED, wire.UNCHANGED, wire.CONFLICT, wire.ERROR})

    def test_shape_check_can_fail(self):
        """
        The shape check sees a missing key, an extra key, a changed type,
        and an undocumented kind of list element.
        """
        doc = {"status": "success", "id": 1, "files": [{"fname": "a", "sha256": None}]}
        self.assertEqual(answer_problems(doc, json.loads(json.dumps(doc))), [])
        self.assertTrue(answer_problems(doc, {"status": "success", "files": []}))
        self.assertTrue(answer_problems(doc, dict(doc, extra=1)))
        self.assertTrue(answer_problems(doc, dict(doc, id="1")))
        self.assertTrue(answer_problems(doc, dict(doc, files=[{"fname": "a", "sha256": "x"}])))
        self.assertTrue(answer_problems(doc, dict(doc, status="error")))


#: Calls whose first argument is an error code.
_CODE_CALLS = {"WireError", "error", "_error", "_send_error"}


def raised_codes() -> set[str]:
    """
    The string literals passed as the code of a wire error anywhere in the
    package (C{WireError(code, ...)}, C{wire.error(code, ...)}, the
    tracker's C{_error}/C{_send_error}).
    """
    codes: set[str] = set()
    for path in Path(twistedp2p.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in _CODE_CALLS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                if re.fullmatch(r"[a-z][a-z0-9_]*", first.value):
                    codes.add(first.value)
    return codes
