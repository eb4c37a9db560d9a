"""
L{TrackerProtocol} over L{StringTransport}: framing, errors, seed and native
answers, ordering, heartbeats.
"""

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import wire
from twistedp2p.tracker.protocol import SourceWireCache, TrackerFactory, TrackerProtocol
from twistedp2p.tracker.registry import Registry

from tests.tracker.helpers import SEED_SAMPLE, SHA_A, SHA_B, ControlledStore, frame, frames, seed_source_row


class Peer:
    """
    One connection: the protocol, its transport, and helpers.
    """

    def __init__(self, factory, ip="10.0.0.1", port=50000):
        self.proto = factory.buildProtocol(None)
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", ip, port))
        self.proto.makeConnection(self.transport)

    def send(self, *messages):
        self.proto.dataReceived(b"".join(frame(m) for m in messages))

    def received(self):
        out = frames(self.transport.value())
        self.transport.clear()
        return out

    def ask(self, message):
        self.send(message)
        [answer] = self.received()
        return answer

    def lose(self):
        self.proto.connectionLost(None)


class ProtocolTestBase(SynchronousTestCase):
    #: Whether the store offers a synchronous read view (fetch fast path).
    view = False

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(100)
        self.store = ControlledStore(view=self.view)
        self.registry = Registry(self.store, self.clock, "trk", heartbeat=30.0, misses=2, ping_timeout=5.0)
        self.events = []
        self.registry.subscribe(lambda kind, fields: self.events.append((kind, fields)))
        self.factory = TrackerFactory(self.registry, self.clock)

    def peer(self, **kw):
        return Peer(self.factory, **kw)

    def native(self, hostname="n", port=4000, **kw):
        p = self.peer(**kw)
        answer = p.ask({"action": "hello", "hostname": hostname, "p2p_port": port, "version": 1, "id": 1})
        self.assertEqual(answer["status"], "success", answer)
        return p

    def seed(self, hostname="s", port=5000, **kw):
        p = self.peer(**kw)
        answer = p.ask({"action": "hello", "hostname": hostname, "p2p_port": port})
        self.assertEqual(answer["status"], "success", answer)
        return p

    def rejected_codes(self):
        return [f["code"] for k, f in self.events if k == "rejected"]


class HelloTests(ProtocolTestBase):
    def test_seed_hello_exact_answer(self):
        p = self.peer()
        answer = p.ask({"action": "hello", "hostname": "peer1", "p2p_port": 5000})
        self.assertEqual(answer, {"status": "success", "message": "welcome peer1"})
        self.assertEqual(p.proto.session.version, None)
        self.assertEqual(p.proto.session.ip, "10.0.0.1")

    def test_native_hello_answer(self):
        p = self.peer(ip="192.168.1.27")
        answer = p.ask({"action": "hello", "hostname": "lab", "p2p_port": 40123, "version": 1, "id": 7})
        self.assertEqual(
            answer,
            {
                "status": "success",
                "id": 7,
                "message": "welcome lab",
                "version": 1,
                "session": "trk:1",
                "address": "192.168.1.27",
                "heartbeat": 30.0,
            },
        )

    def test_already_registered(self):
        p = self.native()
        answer = p.ask({"action": "hello", "hostname": "x", "p2p_port": 1, "version": 1, "id": 2})
        self.assertEqual((answer["code"], answer["id"]), ("already_registered", 2))
        self.assertEqual(len(self.registry), 1)

    def test_requests_before_hello(self):
        p = self.peer()
        for action in ["publish", "unpublish", "fetch", "list_shared_files", "search", "discover"]:
            message = {"action": action, "fname": "a", "hostname": "h", "id": 3}
            answer = p.ask(message)
            self.assertEqual((answer["status"], answer["code"], answer["id"]), ("error", "not_registered", 3))
        self.assertEqual(p.ask({"action": "ping"}), {"status": "success", "message": "pong"})
        self.assertEqual(p.ask({"action": "ping", "id": 4}), {"status": "success", "id": 4, "message": "pong"})

    def test_duplicate_session(self):
        holder = self.native("h", 4000)
        newcomer = self.peer(ip="10.0.0.2")
        newcomer.send({"action": "hello", "hostname": "h", "p2p_port": 4000, "version": 1, "id": 1})
        self.assertEqual(newcomer.received(), [])
        [ping] = holder.received()
        self.assertEqual(ping["action"], "ping")
        holder.send({"status": "success", "message": "pong", "id": ping["id"]})
        [answer] = newcomer.received()
        self.assertEqual((answer["code"], answer["id"]), ("duplicate_session", 1))
        self.assertIsNone(newcomer.proto.session)
        # The refused connection may try again later (not already_registered).
        newcomer.send({"action": "hello", "hostname": "h", "p2p_port": 4001, "version": 1, "id": 2})
        self.assertEqual(newcomer.received()[0]["status"], "success")

    def test_silent_holder_replaced(self):
        holder = self.native("h", 4000)
        newcomer = self.peer(ip="10.0.0.2")
        newcomer.send({"action": "hello", "hostname": "h", "p2p_port": 4000, "version": 1, "id": 1})
        self.clock.advance(5)
        self.assertEqual(newcomer.received()[0]["status"], "success")
        self.assertTrue(holder.transport.disconnecting)

    def test_seed_holder_replaced(self):
        holder = self.seed("h", 4000)
        newcomer = self.seed("h", 4000)
        self.assertTrue(holder.transport.disconnecting)
        self.assertEqual(holder.received(), [])
        holder.lose()
        self.assertEqual(len(self.registry), 1)
        self.assertEqual(newcomer.proto.session.session_id, self.registry.peers()[0].session.session_id)

    def test_hello_timeout(self):
        p = self.peer()
        self.clock.advance(TrackerProtocol.HELLO_TIMEOUT - 1)
        self.assertFalse(p.transport.disconnecting)
        self.clock.advance(1)
        self.assertTrue(p.transport.disconnecting)

    def test_no_timeout_after_hello(self):
        p = self.seed()
        self.clock.advance(TrackerProtocol.HELLO_TIMEOUT * 10)
        self.assertFalse(p.transport.disconnecting)

    def test_connection_lost_during_hello(self):
        self.store.hold = True
        p = self.peer()
        p.send({"action": "hello", "hostname": "h", "p2p_port": 1})
        p.lose()
        self.store.release()
        self.store.release()
        self.assertEqual(len(self.registry), 0)
        self.assertEqual(self.successResultOf(self.store.sessions()), [])

    def test_connection_lost_removes_session(self):
        p = self.native()
        p.ask({"action": "publish", "fname": "a", "sha256": SHA_A, "file_size": 1, "id": 2})
        p.lose()
        self.assertEqual(len(self.registry), 0)
        self.assertEqual(self.successResultOf(self.store.sources("a", 10)), [])


class RequestTests(ProtocolTestBase):
    def test_seed_session_answers(self):
        src = self.seed("src", 5000, ip="10.0.0.5")
        answer = src.ask({"action": "publish", **SEED_SAMPLE, "allow_overwrite": False})
        self.assertEqual(answer["status"], "created")
        self.assertNotIn("id", answer)
        dst = self.seed("dst", 5001)
        answer = dst.ask({"action": "fetch", "fname": "sample.txt"})
        self.assertEqual(answer, {"status": "success", "peer_list": [seed_source_row("src", "10.0.0.5", 5000)]})
        answer = dst.ask({"action": "list_shared_files"})
        self.assertEqual(
            answer,
            {
                "status": "success",
                "files": [{"fname": "sample.txt", "file_size": 10, "sha256": None, "sources": 1, "hostnames": ["src"]}],
            },
        )
        self.assertEqual(dst.ask({"action": "ping"}), {"status": "success", "message": "pong"})
        self.assertEqual(src.ask({"action": "publish", "fname": "sample.txt", "lname": "/other"})["status"], "conflict")

    def test_native_publish_statuses_and_ids(self):
        p = self.native()
        pub = {"action": "publish", "fname": "a.pdf", "lname": "a.pdf", "file_size": 3, "last_modified": 1.5, "sha256": SHA_A}
        self.assertEqual(p.ask(dict(pub, id=10))["status"], "created")
        self.assertEqual(p.ask(dict(pub, id=11)), {"status": "unchanged", "id": 11, "fname": "a.pdf", "message": "'a.pdf' unchanged"})
        answer = p.ask(dict(pub, sha256=SHA_B, id=12))
        self.assertEqual((answer["status"], answer["id"]), ("conflict", 12))
        self.assertIn("allow_overwrite", answer["message"])
        self.assertEqual(p.ask(dict(pub, sha256=SHA_B, allow_overwrite=True, id=13))["status"], "updated")

    def test_native_fetch_and_search_and_discover(self):
        src = self.native("src", 4000, ip="10.0.0.3")
        src.ask({"action": "publish", "fname": "a.pdf", "file_size": 3, "last_modified": 1.5, "sha256": SHA_A, "id": 1})
        me = self.native("me", 4001)
        answer = me.ask({"action": "fetch", "fname": "a.pdf", "id": 5})
        self.assertEqual(answer["id"], 5)
        self.assertEqual(answer["fname"], "a.pdf")
        self.assertEqual(
            answer["peer_list"],
            [
                {
                    "hostname": "src",
                    "ip": "10.0.0.3",
                    "port": 4000,
                    "lname": "a.pdf",
                    "fname": "a.pdf",
                    "file_size": 3,
                    "last_modified": 1.5,
                    "sha256": SHA_A,
                    "version": 1,
                }
            ],
        )
        # The requester never sees itself; twice to exercise the cache.
        self.assertEqual(src.ask({"action": "fetch", "fname": "a.pdf", "id": 6})["peer_list"], [])
        self.assertEqual(me.ask({"action": "fetch", "fname": "a.pdf", "id": 7})["peer_list"], answer["peer_list"])
        self.assertEqual(me.ask({"action": "fetch", "fname": "nothing", "id": 8}), {"status": "success", "id": 8, "fname": "nothing", "peer_list": []})
        answer = me.ask({"action": "search", "pattern": "*.PDF", "id": 9})
        self.assertEqual(answer["files"], [{"fname": "a.pdf", "file_size": 3, "sha256": SHA_A, "sources": 1, "hostnames": ["src"]}])
        self.assertEqual(me.ask({"action": "search", "pattern": "zzz", "id": 10})["files"], [])
        answer = me.ask({"action": "discover", "hostname": "src", "id": 11})
        self.assertEqual((answer["hostname"], len(answer["files"]), answer["files"][0]["sha256"]), ("src", 1, SHA_A))

    def test_root_published_and_fetched(self):
        """
        A native peer's root and piece size reach every fetch answer (seed
        clients too: they ignore keys they do not know) and the catalogue.
        """
        root = "d" * 64
        src = self.native("src", 4000, ip="10.0.0.3")
        pub = {"action": "publish", "fname": "a.pdf", "file_size": 3, "last_modified": 1.5,
               "sha256": SHA_A, "root": root, "piece_size": 262144, "id": 1}
        self.assertEqual(src.ask(pub)["status"], "created")
        self.assertEqual(src.ask(dict(pub, id=2))["status"], "unchanged")
        self.assertEqual(src.ask(dict(pub, piece_size=524288, id=3))["status"], "conflict")
        me = self.native("me", 4001)
        [entry] = me.ask({"action": "fetch", "fname": "a.pdf", "id": 5})["peer_list"]
        self.assertEqual((entry["root"], entry["piece_size"], entry["sha256"]), (root, 262144, SHA_A))
        [entry] = self.seed("old", 5000).ask({"action": "fetch", "fname": "a.pdf"})["peer_list"]
        self.assertEqual(entry["root"], root)
        [row] = me.ask({"action": "search", "pattern": "", "id": 6})["files"]
        self.assertEqual((row["sha256"], row["sources"]), (SHA_A, 1))

    def test_root_needs_piece_size(self):
        p = self.native()
        for partial in ({"root": "d" * 64}, {"piece_size": 262144}):
            answer = p.ask(dict({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 1}, **partial))
            self.assertEqual((answer["status"], answer["code"]), ("error", "bad_field"))
        answer = p.ask({"action": "publish", "fname": "a", "root": "D" * 64, "piece_size": 1, "id": 2})
        self.assertEqual(answer["code"], "bad_field")
        answer = p.ask({"action": "publish", "fname": "a", "root": "d" * 64, "piece_size": 0, "id": 3})
        self.assertEqual(answer["code"], "bad_field")
        self.assertEqual(self.successResultOf(self.store.sources("a", 10)), [])

    def test_fetch_limit(self):
        for i in range(5):
            self.native(f"h{i}", 4000 + i).ask({"action": "publish", "fname": "x", "sha256": SHA_A, "id": 1})
        me = self.native("me", 1)
        answer = me.ask({"action": "fetch", "fname": "x", "limit": 2, "id": 2})
        self.assertEqual([p["hostname"] for p in answer["peer_list"]], ["h0", "h1"])

    def test_unpublish(self):
        p = self.native()
        p.ask({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 1})
        self.assertEqual(p.ask({"action": "unpublish", "fname": "a", "id": 2}), {"status": "success", "id": 2, "fname": "a"})
        answer = p.ask({"action": "unpublish", "fname": "a", "id": 3})
        self.assertEqual((answer["code"], answer["id"]), ("not_published", 3))


    def test_native_publish_needs_sha256(self):
        """
        A versioned client must say what its file hashes to; a seed client
        (which does not hash) need not.
        """
        p = self.native()
        answer = p.ask({"action": "publish", "fname": "a", "file_size": 1, "id": 1})
        self.assertEqual((answer["status"], answer["code"], answer["id"]), ("error", "bad_field", 1))
        self.assertEqual(self.successResultOf(self.store.sources("a", 10)), [])
        self.assertEqual(self.seed().ask({"action": "publish", "fname": "a", "lname": "/x/a"})["status"], "created")

    def test_list_shared_files_pattern(self):
        """
        list_shared_files takes search's pattern (and lists all without).
        """
        src = self.native("src", 4000)
        for name in ("a.pdf", "b.txt"):
            src.ask({"action": "publish", "fname": name, "sha256": SHA_A, "id": 1})
        me = self.native("me", 4001)
        answer = me.ask({"action": "list_shared_files", "pattern": "*.PDF", "id": 2})
        self.assertEqual([f["fname"] for f in answer["files"]], ["a.pdf"])
        answer = me.ask({"action": "list_shared_files", "id": 3})
        self.assertEqual([f["fname"] for f in answer["files"]], ["a.pdf", "b.txt"])


class RequestWithReadViewTests(RequestTests):
    """
    The same answers when fetch takes the synchronous path.
    """

    view = True


class BadInputTests(ProtocolTestBase):
    """
    Every bad frame gets one error answer, is logged, and changes nothing.
    """

    def assertOnlyError(self, p, raw, code, request_id=None):
        sessions = self.successResultOf(self.store.sessions())
        writes = list(self.store.writes)
        p.proto.dataReceived(frame(raw))
        answers = p.received()
        self.assertEqual(len(answers), 1, answers)
        self.assertEqual(answers[0]["status"], "error")
        self.assertEqual(answers[0]["code"], code)
        self.assertIsInstance(answers[0]["message"], str)
        if request_id is None:
            self.assertNotIn("id", answers[0])
        else:
            self.assertEqual(answers[0]["id"], request_id)
        self.assertFalse(p.transport.disconnecting)
        self.assertEqual(self.successResultOf(self.store.sessions()), sessions)
        self.assertEqual(self.store.writes, writes)
        self.assertEqual(self.rejected_codes()[-1], code)

    def test_garbage(self):
        for p in (self.peer(), self.native(), self.seed()):
            self.assertOnlyError(p, b"\xff\xfe", "bad_utf8")
            self.assertOnlyError(p, b"{", "bad_json")
            self.assertOnlyError(p, b"", "bad_json")
            self.assertOnlyError(p, b'{"action": "ping", "x": NaN}', "bad_json")
            self.assertOnlyError(p, b"[1, 2]", "not_object")
            self.assertOnlyError(p, b'"hello"', "not_object")
            self.assertOnlyError(p, {"action": "ping", "id": -1}, "bad_id")
            self.assertOnlyError(p, {"action": "ping", "id": "7"}, "bad_id")
            self.assertOnlyError(p, {"id": 4}, "no_action", 4)
            self.assertOnlyError(p, {"action": 3, "id": 4}, "no_action", 4)
            self.assertOnlyError(p, {"action": "get_file", "lname": "x", "id": 5}, "unknown_action", 5)
            self.assertOnlyError(p, {"action": "hello", "hostname": "", "p2p_port": 1, "id": 6}, "bad_field", 6)
            self.assertOnlyError(p, {"action": "hello", "hostname": "h", "p2p_port": 0, "id": 6}, "bad_field", 6)
            self.assertOnlyError(p, {"action": "hello", "hostname": "h", "p2p_port": "1", "id": 6}, "bad_field", 6)
            self.assertOnlyError(p, {"action": "publish", "fname": "../etc/passwd", "id": 7}, "bad_field", 7)
            self.assertOnlyError(p, {"action": "publish", "fname": "a", "sha256": "XYZ", "id": 7}, "bad_field", 7)
            self.assertOnlyError(p, {"action": "fetch", "id": 8}, "bad_field", 8)
            self.assertOnlyError(p, {"action": "fetch", "fname": "a", "limit": 0, "id": 8}, "bad_field", 8)
            # And the connection still answers.
            self.assertEqual(p.ask({"action": "ping"})["message"], "pong")

    def test_deeply_nested_json(self):
        p = self.native()
        self.assertOnlyError(p, b"[" * 60000, "bad_json")

    def test_oversized_frame_closes(self):
        p = self.native()
        p.proto.dataReceived(struct.pack("!I", wire.MAX_REQUEST_FRAME + 1) + b"x" * 100)
        self.assertTrue(p.transport.disconnecting)
        self.assertEqual(p.received(), [])
        self.assertIn("frame_too_long", self.rejected_codes())

    def test_largest_frame_accepted(self):
        p = self.native()
        payload = wire.encode({"action": "ping", "id": 1, "pad": ""})
        padding = wire.MAX_REQUEST_FRAME - len(payload)
        big = wire.encode({"action": "ping", "id": 1, "pad": "x" * padding})
        self.assertEqual(len(big), wire.MAX_REQUEST_FRAME)
        p.proto.dataReceived(frame(big))
        self.assertEqual(p.received(), [{"status": "success", "id": 1, "message": "pong"}])

    def test_internal_error(self):
        p = self.native()

        def broken(*args):
            raise RuntimeError("bug")

        self.registry.fetch = broken
        answer = p.ask({"action": "fetch", "fname": "a", "id": 3})
        self.assertEqual((answer["code"], answer["id"]), ("internal", 3))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(p.ask({"action": "ping", "id": 4})["message"], "pong")

    def test_internal_error_async(self):
        p = self.native()
        d = Deferred()
        self.registry.unpublish = lambda *a: d
        p.send({"action": "unpublish", "fname": "a", "id": 3}, {"action": "ping", "id": 4})
        self.assertEqual(p.received(), [])
        d.errback(RuntimeError("bug"))
        answers = p.received()
        self.assertEqual([(a["status"], a["id"]) for a in answers], [("error", 3), ("success", 4)])
        self.assertEqual(answers[0]["code"], "internal")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_index_unavailable(self):
        p = self.native()
        self.store.failing = True
        answer = p.ask({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 3})
        self.assertEqual((answer["code"], answer["id"]), ("index_unavailable", 3))
        answer = p.ask({"action": "fetch", "fname": "a", "id": 4})
        self.assertEqual((answer["code"], answer["id"]), ("index_unavailable", 4))
        hello = self.peer().ask({"action": "hello", "hostname": "x", "p2p_port": 1})
        self.assertEqual(hello["code"], "index_unavailable")
        self.store.failing = False
        self.assertEqual(p.ask({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 5})["status"], "created")

    def test_unknown_extra_fields_ignored(self):
        p = self.peer()
        answer = p.ask({"action": "hello", "hostname": "h", "p2p_port": 1, "colour": "blue"})
        self.assertEqual(answer["status"], "success")


class OrderingTests(ProtocolTestBase):
    def test_answers_in_request_order(self):
        p = self.seed()
        self.store.hold = True
        p.send(
            {"action": "publish", "fname": "a", "lname": "a"},
            {"action": "ping"},
            {"action": "fetch", "fname": "a"},
            {"action": "publish", "fname": "b", "lname": "b"},
            b"garbage",
            {"action": "list_shared_files"},
        )
        self.assertEqual(p.received(), [])
        self.store.release()
        answers = p.received()
        self.assertEqual([a["status"] for a in answers], ["created", "success", "success"])
        self.assertEqual(answers[1]["message"], "pong")
        self.store.release()
        answers = p.received()
        self.assertEqual([a["status"] for a in answers], ["created", "error", "success"])
        self.assertEqual(answers[1]["code"], "bad_json")
        self.assertEqual([f["fname"] for f in answers[2]["files"]], ["a", "b"])

    def test_pong_while_request_pending(self):
        """
        A pong is matched at once, even while a request waits for the store.
        """
        p = self.native()
        self.registry.heartbeat()
        [ping] = p.received()
        self.assertEqual(set(ping), {"action", "id"})
        self.store.hold = True
        p.send({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 2})
        p.send({"status": "success", "message": "pong", "id": ping["id"]})
        self.assertEqual(self.registry.peers()[0].rtt, 0.0)
        self.store.release()
        self.assertEqual(p.received()[0]["status"], "created")

    def test_ping_ids_unique_across_connections(self):
        a, b = self.native("a"), self.native("b")
        self.registry.heartbeat()
        self.registry.heartbeat()
        ids = [m["id"] for m in a.received() + b.received()]
        self.assertEqual(len(ids), 4)
        self.assertEqual(len(set(ids)), 4)

    def test_heartbeat_eviction_over_protocol(self):
        p = self.native()
        for _ in range(3):
            self.registry.heartbeat()
        self.assertTrue(p.transport.disconnecting)
        p.lose()
        self.assertEqual(len(self.registry), 0)
        self.assertIn("evicted", [k for k, _ in self.events])

    def test_unknown_pong_ignored(self):
        p = self.native()
        p.send({"status": "success", "message": "pong", "id": 999})
        p.send({"status": "success", "message": "pong"})
        self.assertEqual(p.received(), [])
        self.assertFalse(p.transport.disconnecting)

    def test_seed_never_gets_tracker_messages(self):
        p = self.seed()
        for _ in range(5):
            self.registry.heartbeat()
        self.assertEqual(p.received(), [])
        self.assertFalse(p.transport.disconnecting)

    def test_status_frame_from_seed_is_an_error(self):
        p = self.seed()
        answer = p.ask({"status": "success"})
        self.assertEqual(answer["code"], "no_action")

    def test_lost_connection_fails_pending_pings(self):
        p = self.native()
        d = p.proto.ping()
        p.lose()
        self.failureResultOf(d)
        self.failureResultOf(p.proto.ping())

    def test_queue_cap_pauses_and_resumes(self):
        p = self.native()
        self.store.hold = True
        p.send({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 0})
        n = TrackerProtocol.MAX_QUEUED
        p.send(*[{"action": "ping", "id": i} for i in range(1, n + 1)])
        self.assertEqual(p.transport.producerState, "paused")
        self.assertEqual(p.received(), [])
        self.store.release()
        answers = p.received()
        self.assertEqual([a["id"] for a in answers], list(range(n + 1)))
        self.assertEqual(p.transport.producerState, "paused")
        self.clock.advance(0)
        self.assertEqual(p.transport.producerState, "producing")
        self.assertEqual(p.ask({"action": "ping", "id": 5})["id"], 5)

    def test_frames_after_pause_are_kept(self):
        """
        Frames already received when reading pauses are answered after it
        resumes.
        """
        p = self.native()
        self.store.hold = True
        n = TrackerProtocol.MAX_QUEUED
        p.send(
            {"action": "publish", "fname": "a", "sha256": SHA_A, "id": 0},
            *[{"action": "ping", "id": i} for i in range(1, n + 11)],
        )
        self.store.release()
        self.clock.advance(0)
        answers = p.received()
        self.assertEqual([a["id"] for a in answers], list(range(n + 11)))


class WireCacheTests(SynchronousTestCase):
    def test_cache_bounded(self):
        from twistedp2p.tracker.model import Publication, Session, Source

        cache = SourceWireCache(size=2)
        session = Session("s", "h", "1.2.3.4", 1, 1, 0.0, "t")
        sources = [Source(session, Publication(f"f{i}", f"f{i}"), i) for i in range(5)]
        for s in sources:
            self.assertEqual(wire.decode(cache.encode(s)), s.to_wire())
        self.assertLessEqual(len(cache), 2)


class HeartbeatPathTests(ProtocolTestBase):
    """
    Heartbeat pings keep no Deferred: the answer goes straight to the
    registry.
    """

    def ping_ids(self, p):
        return [m["id"] for m in p.received() if m.get("action") == "ping"]

    def test_late_pong_keeps_session(self):
        p = self.native()
        self.registry.heartbeat()
        [first] = self.ping_ids(p)
        self.registry.heartbeat()
        self.assertEqual(self.registry.peers()[0].missed, 1)
        self.assertEqual(p.proto._pings, None)
        # An answer to the older ping still proves the peer alive.
        p.send({"status": "success", "message": "pong", "id": first})
        self.assertEqual(self.registry.peers()[0].missed, 0)
        self.registry.heartbeat()
        self.assertFalse(p.transport.disconnecting)

    def test_heartbeat_pong_does_not_answer_waiting_ping(self):
        """
        An admin ping (a Deferred) and a heartbeat ping in flight together
        are each matched by their own id.
        """
        p = self.native()
        d = p.proto.ping()
        self.registry.heartbeat()
        admin, beat = self.ping_ids(p)
        p.send({"status": "success", "message": "pong", "id": beat})
        self.assertNoResult(d)
        self.assertEqual(self.registry.peers()[0].missed, 0)
        p.send({"status": "success", "message": "pong", "id": admin})
        self.assertEqual(self.successResultOf(d)["id"], admin)

    def test_no_ping_after_loss(self):
        p = self.native()
        p.lose()
        self.assertIsNone(p.proto.send_heartbeat(lambda token, ping_id: True, "t"))
        self.assertEqual(p.received(), [])


class MemoryLayoutTests(ProtocolTestBase):
    """
    What keeps a connection small: the dispatch table is the class's, the
    request queue exists only while requests wait, and every attribute a
    connection ever sets has a slot: no connection ever gets an instance
    dict (well over 1 KiB each with more than 30 names).
    """

    def test_layout_over_a_session(self):
        p = self.peer()
        self.assertEqual(vars(p.proto), {})
        p.ask({"action": "hello", "hostname": "n", "p2p_port": 4000, "version": 1, "id": 1})
        self.store.hold = True
        p.send({"action": "publish", "fname": "a", "sha256": SHA_A, "id": 2}, {"action": "ping", "id": 3})
        self.assertEqual(len(p.proto._queue), 1)
        self.store.release()
        self.assertEqual([m["id"] for m in p.received()], [2, 3])
        self.assertIsNone(p.proto._queue)
        # A held session keeps the id of its last request, not the request.
        self.assertEqual(p.proto._answering, 3)
        self.registry.heartbeat()
        ping = p.received()[0]
        p.send({"status": "success", "message": "pong", "id": ping["id"]})
        admin = p.proto.ping()
        p.send(b"garbage")
        p.send(struct.pack("!I", 100) + b"partial")
        p.lose()
        self.failureResultOf(admin)
        self.assertEqual(vars(p.proto), {})


class BoundedTransport(StringTransport):
    """
    A L{StringTransport} that applies a TCP transport's back-pressure rule:
    a registered streaming producer is paused when a write takes the
    buffer past C{bufferSize}, and resumed when L{drain} sends everything.
    """

    bufferSize = 4096

    def write(self, data):
        StringTransport.write(self, data)
        if self.producer is not None and self.streaming and len(self.io.getvalue()) > self.bufferSize:
            self.producer.pauseProducing()

    def drain(self):
        sent = self.value()
        self.clear()
        if self.producer is not None and self.streaming:
            self.producer.resumeProducing()
        return sent


class BackPressureTests(ProtocolTestBase):
    """
    A client that pipelines large requests and does not read its answers:
    the connection stops being read (and answering) while the transport's
    buffer is over its bound, and goes on when it drained.
    """

    def setUp(self):
        ProtocolTestBase.setUp(self)
        source = self.native("src", 4001)
        for i in range(40):
            source.ask({"action": "publish", "fname": f"{i:03d}-" + "x" * 100, "sha256": SHA_A, "id": 10 + i})
        self.one_answer = None

    def slow_reader(self):
        p = Peer(self.factory)
        p.transport = BoundedTransport(peerAddress=IPv4Address("TCP", "10.0.0.9", 50009))
        p.proto.makeConnection(p.transport)
        answer = p.ask({"action": "hello", "hostname": "slow", "p2p_port": 4002, "version": 1, "id": 1})
        self.assertEqual(answer["status"], "success")
        return p

    def test_registered_as_streaming_producer(self):
        p = self.slow_reader()
        self.assertIs(p.transport.producer, p.proto)
        self.assertTrue(p.transport.streaming)

    def test_stops_reading_until_drained(self):
        p = self.slow_reader()
        searches = [{"action": "search", "pattern": "", "limit": 10000, "id": 100 + i} for i in range(50)]
        p.send(*searches)
        answer_size = len(frame(frames(p.transport.value())[0]))
        # Paused after the answer that crossed the bound: the transport
        # holds at most the bound plus one answer, reading is paused.
        self.assertEqual(p.transport.producerState, "paused")
        self.assertLessEqual(len(p.transport.value()), p.transport.bufferSize + answer_size)
        ids = []
        rounds = 0
        while len(ids) < len(searches):
            rounds += 1
            self.assertLess(rounds, 100)
            sent = frames(p.transport.value())
            ids += [a["id"] for a in sent]
            self.assertLessEqual(len(p.transport.value()), p.transport.bufferSize + answer_size)
            p.transport.drain()
            # Nothing is answered from inside the transport's call.
            self.assertEqual(p.transport.value(), b"")
            self.clock.advance(0)
        self.assertEqual(ids, [s["id"] for s in searches])
        self.assertGreater(rounds, 5)
        self.assertEqual(p.transport.producerState, "producing")
        self.assertEqual(p.ask({"action": "ping", "id": 7})["id"], 7)

    def test_close_while_paused_unregisters(self):
        """
        A transport does not close while a paused producer is registered:
        closing the connection (an eviction, a timeout) unregisters it.
        """
        p = self.slow_reader()
        p.send(*[{"action": "search", "limit": 10000, "id": 100 + i} for i in range(10)])
        self.assertEqual(p.transport.producerState, "paused")
        self.registry.evict(p.proto.session.session_id, "test")
        self.assertIsNone(p.transport.producer)
        self.assertTrue(p.transport.disconnecting)


class CataloguePagingTests(ProtocolTestBase):
    """
    Catalogue answers never exceed the client's frame limit (issue 15,
    item 3): pages of C{limit} entries and of at most the frame budget,
    with a C{next} cursor; host names capped per entry.
    """

    view = True

    def publish_many(self, n, hosts=1, size=0):
        peers = [self.native(f"h{j:03d}", 4100 + j) for j in range(hosts)]
        for i in range(n):
            for p in peers:
                answer = p.ask({"action": "publish", "fname": f"{i:05d}.bin", "sha256": SHA_A, "file_size": size, "id": 9})
                self.assertEqual(answer["status"], "created")
        return peers

    def all_pages(self, p, limit, action="search"):
        names, pages, cursor = [], 0, None
        while True:
            request = {"action": action, "limit": limit, "id": 50 + pages}
            if cursor is not None:
                request["cursor"] = cursor
            answer = p.ask(request)
            self.assertEqual(answer["status"], "success", answer)
            pages += 1
            names += [f["fname"] for f in answer["files"]]
            cursor = answer.get("next")
            if cursor is None:
                return names, pages

    def test_pages_by_limit(self):
        self.publish_many(25)
        p = self.native("reader", 4999)
        first = p.ask({"action": "search", "pattern": "", "limit": 10, "id": 3})
        self.assertEqual(len(first["files"]), 10)
        self.assertIsInstance(first["next"], str)
        names, pages = self.all_pages(p, 10)
        self.assertEqual(names, [f"{i:05d}.bin" for i in range(25)])
        self.assertEqual(pages, 3)
        names, pages = self.all_pages(p, 25, "list_shared_files")
        self.assertEqual((len(names), pages), (25, 1))

    def test_no_next_on_the_last_page(self):
        self.publish_many(3)
        p = self.native("reader", 4999)
        answer = p.ask({"action": "search", "limit": 3, "id": 3})
        self.assertNotIn("next", answer)

    def test_several_contents_of_one_name_span_pages(self):
        a = self.native("a", 4001)
        b = self.native("b", 4002)
        a.ask({"action": "publish", "fname": "same", "sha256": SHA_A, "file_size": 1, "id": 2})
        b.ask({"action": "publish", "fname": "same", "sha256": SHA_B, "file_size": 2, "id": 2})
        p = self.native("reader", 4999)
        page = p.ask({"action": "search", "limit": 1, "id": 3})
        rest = p.ask({"action": "search", "limit": 1, "cursor": page["next"], "id": 4})
        self.assertEqual({page["files"][0]["sha256"], rest["files"][0]["sha256"]}, {SHA_A, SHA_B})
        self.assertNotIn("next", rest)

    def test_bad_cursor(self):
        p = self.native("reader", 4999)
        for cursor in ["nope", "[1,2]", '["a","b","c","d"]', ""]:
            answer = p.ask({"action": "search", "cursor": cursor, "id": 8})
            self.assertEqual((answer["status"], answer["code"], answer["id"]), ("error", "bad_field", 8))

    def test_hostnames_capped(self):
        from twistedp2p.tracker.model import CatalogueEntry

        cap = CatalogueEntry.MAX_HOSTNAMES
        self.publish_many(1, hosts=cap + 5)
        p = self.native("reader", 4999)
        [entry] = p.ask({"action": "search", "id": 3})["files"]
        self.assertEqual(entry["sources"], cap + 5)
        self.assertEqual(len(entry["hostnames"]), cap)
        self.assertEqual(entry["more_hostnames"], 5)

    def test_pages_by_bytes(self):
        """
        Entries that do not fit the frame budget go to the next page, for
        native and seed clients alike; no answer passes the frame limit.
        """
        self.patch(wire, "MAX_REPLY_FRAME", 4096)
        from twistedp2p.tracker import protocol

        self.patch(protocol, "_FILES_BUDGET", 2048)
        self.publish_many(60)
        p = self.native("reader", 4999)
        names, pages = self.all_pages(p, 1000)
        self.assertEqual(names, [f"{i:05d}.bin" for i in range(60)])
        self.assertGreater(pages, 2)
        seed = self.seed()
        seed.send({"action": "list_shared_files"})
        raw = seed.transport.value()
        [answer] = seed.received()
        self.assertLessEqual(len(raw), 4096)
        self.assertEqual(set(answer), {"status", "files"})
        self.assertEqual(answer["files"][0]["fname"], "00000.bin")

    def test_oversized_answer_is_an_error(self):
        """
        The frame limit holds for every answer: one that would pass it
        (here a fetch of many sources) is replaced by C{too_large}.
        """
        self.patch(wire, "MAX_REPLY_FRAME", 2048)
        self.publish_many(1, hosts=20)
        p = self.native("reader", 4999)
        answer = p.ask({"action": "fetch", "fname": "00000.bin", "id": 77})
        self.assertEqual((answer["status"], answer["code"], answer["id"]), ("error", "too_large", 77))
        self.assertEqual(p.ask({"action": "ping", "id": 78})["id"], 78)
