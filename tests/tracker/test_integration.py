"""
A real tracker on 127.0.0.1 (port from tcp:0), real sockets: the seed
protocol client, bad clients next to good ones, heartbeat eviction.
"""

import json
import socket
import struct

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from twistedp2p import wire
from twistedp2p.tracker import service
from tests.tracker.helpers import SEED_SAMPLE, seed_source_row


class SeedClient:
    """
    A blocking client speaking the seed report's format: a 4-byte network
    order length, then UTF-8 JSON; no ids, one answer per request.
    """

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def send_raw(self, data):
        self.sock.sendall(struct.pack("!I", len(data)) + data)

    def send(self, message):
        self.send_raw(json.dumps(message).encode("utf-8"))

    def _exactly(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def receive(self):
        header = self._exactly(4)
        if header is None:
            return None
        (length,) = struct.unpack("!I", header)
        return json.loads(self._exactly(length).decode("utf-8"))

    def ask(self, message):
        self.send(message)
        return self.receive()

    def close(self):
        self.sock.close()


class RecordingClient(Int32StringReceiver):
    """
    A native client that says hello and then never answers pings.
    """

    MAX_LENGTH = wire.MAX_REPLY_FRAME

    def __init__(self):
        self.received = []
        self.lost = Deferred()

    def connectionMade(self):
        self.sendString(wire.encode({"action": "hello", "hostname": "mute", "p2p_port": 7000, "version": 1, "id": 1}))

    def stringReceived(self, data):
        self.received.append(wire.decode(data))

    def connectionLost(self, reason):
        self.lost.callback(None)


class TrackerIntegrationTests(unittest.TestCase):
    timeout = 20

    @inlineCallbacks
    def start_tracker(self, *extra):
        config = service.Options()
        config.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--db", "memory", "--no-shell", *extra])
        self.tracker = service.makeService(config, reactor)
        self.tracker.startService()
        self.addCleanup(self.tracker.stopService)
        port = yield self.tracker.whenListening()
        return port.getHost().port

    def wait_for(self, kind):
        d = Deferred()

        def observer(event, fields):
            if event == kind and not d.called:
                self.tracker.registry.unsubscribe(observer)
                d.callback(fields)

        self.tracker.registry.subscribe(observer)
        return d

    @inlineCallbacks
    def test_seed_protocol_client(self):
        port = yield self.start_tracker()

        def scenario():
            a, b = SeedClient(port), SeedClient(port)
            try:
                answers = [
                    a.ask({"action": "ping"}),
                    a.ask({"action": "fetch", "fname": "sample.txt"}),
                    a.ask({"action": "hello", "hostname": "peer1", "p2p_port": 5000}),
                    a.ask({"action": "publish", **SEED_SAMPLE, "allow_overwrite": False}),
                    b.ask({"action": "hello", "hostname": "peer2", "p2p_port": 5001}),
                    b.ask({"action": "fetch", "fname": "sample.txt"}),
                    b.ask({"action": "list_shared_files"}),
                    a.ask({"action": "fetch", "fname": "sample.txt"}),
                    b.ask({"action": "ping"}),
                ]
            finally:
                a.close()
                b.close()
            return answers

        answers = yield deferToThread(scenario)
        self.assertEqual(answers[0], {"status": "success", "message": "pong"})
        self.assertEqual(answers[1]["code"], "not_registered")
        self.assertEqual(answers[2], {"status": "success", "message": "welcome peer1"})
        self.assertEqual(answers[3]["status"], "created")
        self.assertEqual(answers[4]["status"], "success")
        self.assertEqual(
            answers[5], {"status": "success", "peer_list": [seed_source_row("peer1", "127.0.0.1", 5000)]}
        )
        self.assertEqual(answers[6]["files"][0]["hostnames"], ["peer1"])
        self.assertEqual(answers[7], {"status": "success", "peer_list": []})
        self.assertEqual(answers[8], {"status": "success", "message": "pong"})

    @inlineCallbacks
    def test_answers_in_order_when_the_socket_is_full(self):
        """
        Answers go to the socket at once while nothing is buffered; once a
        large answer fills the socket, the ones after it wait for it and
        still arrive whole and in order.  (Seed-protocol clients: no
        heartbeat pings in between.)
        """
        port = yield self.start_tracker()
        names = [f"{i:04d}-" + "x" * 200 for i in range(300)]
        a, b = SeedClient(port), SeedClient(port)
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        def register():
            a.ask({"action": "hello", "hostname": "big", "p2p_port": 5000})
            for i, name in enumerate(names):
                a.send({"action": "publish", "fname": name, "file_size": i})
            return [a.receive() for _ in names], b.ask({"action": "hello", "hostname": "slow", "p2p_port": 5001})

        published, welcome = yield deferToThread(register)
        self.assertEqual({p.get("status") for p in published}, {"created"})
        self.assertEqual(welcome["status"], "success")
        [slow] = [p for p in self.tracker.factory.connections if p.session.hostname == "slow"]
        self.assertTrue(slow.transport.getTcpNoDelay())
        # Small socket buffers on both sides: a listing does not fit.
        slow.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        writes = []
        self.patch(slow.transport, "write", lambda data: (writes.append(len(data)), type(slow.transport).write(slow.transport, data)))

        def ask_slowly():
            requests = [
                {"action": "list_shared_files", "limit": 10000},
                {"action": "ping"},
                {"action": "list_shared_files", "limit": 10000},
                {"action": "ping"},
            ]
            frames = [wire.encode(r) for r in requests]
            b.sock.sendall(b"".join(struct.pack("!I", len(f)) + f for f in frames))
            return [b.receive() for _ in requests]

        answers = yield deferToThread(ask_slowly)
        for listing in (answers[0], answers[2]):
            self.assertEqual([f["fname"] for f in listing["files"]], names)
        for pong in (answers[1], answers[3]):
            self.assertEqual(pong, {"status": "success", "message": "pong"})
        # The first listing was partly sent at once and the rest buffered;
        # that passed the transport's bound, so the requests after it were
        # answered only once it drained (each then sent at once or
        # buffered whole).
        sizes = [4 + len(wire.encode(answer)) for answer in answers]
        self.assertLess(writes[0], sizes[0])
        self.assertLessEqual(len(writes), 4)
        for written in writes[1:]:
            self.assertIn(written, sizes[1:])

    @inlineCallbacks
    def test_non_reading_client_is_bounded(self):
        """
        A client pipelines many large searches and never reads: the
        tracker stops reading it once its transport's buffer is over the
        bound, so what it produced for that client stays bounded, and
        another client is answered meanwhile.
        """
        port = yield self.start_tracker()
        names = [f"{i:04d}-" + "y" * 80 for i in range(1000)]
        a, b, c = SeedClient(port), SeedClient(port), SeedClient(port)
        for client in (a, b, c):
            self.addCleanup(client.close)
        # The attacker's receive buffer is small, and it never reads.
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)

        def register():
            a.ask({"action": "hello", "hostname": "big", "p2p_port": 5000})
            for i, name in enumerate(names):
                a.send({"action": "publish", "fname": name, "file_size": i})
            return [a.receive() for _ in names], b.ask({"action": "hello", "hostname": "greedy", "p2p_port": 5001})

        published, welcome = yield deferToThread(register)
        self.assertEqual({p.get("status") for p in published}, {"created"})
        [greedy] = [p for p in self.tracker.factory.connections if p.session and p.session.hostname == "greedy"]
        greedy.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        searches = 100
        produced = []
        # Fires when the tracker paused that client, or (unbounded) answered
        # every search.
        settled = Deferred()

        def send(data):
            produced.append(len(data) + 4)
            type(greedy).sendString(greedy, data)
            if len(produced) >= searches and not settled.called:
                settled.callback(None)

        def pause():
            type(greedy).pauseProducing(greedy)
            if not settled.called:
                settled.callback(None)

        self.patch(greedy, "sendString", send)
        self.patch(greedy, "pauseProducing", pause)
        request = wire.encode({"action": "list_shared_files", "limit": 10000})
        b.sock.sendall((struct.pack("!I", len(request)) + request) * searches)
        yield settled
        pong = yield deferToThread(lambda: [c.ask({"action": "ping"}) for _ in range(3)])
        self.assertEqual(pong, [{"status": "success", "message": "pong"}] * 3)
        answer = max(produced)
        # Unbounded, the tracker would have produced every answer
        # (searches x answer, over 10 MB); bounded: the transport's bound,
        # one answer past it, and what the kernel's buffers took.
        self.assertLess(len(produced), searches // 2)
        self.assertLess(sum(produced), 2 * answer + 2 * 1024 * 1024)
        # Reading resumes as the client reads: its answers are whole, in order.
        first = yield deferToThread(lambda: [b.receive() for _ in range(2)])
        for listing in first:
            self.assertEqual([f["fname"] for f in listing["files"]], names)

    @inlineCallbacks
    def test_bad_clients_do_not_disturb_others(self):
        port = yield self.start_tracker()

        def scenario():
            good, bad = SeedClient(port), SeedClient(port)
            try:
                results = [good.ask({"action": "hello", "hostname": "good", "p2p_port": 5000})]
                for raw in [b"\xff", b"{nope", b"[]", b'{"action": "teleport"}']:
                    bad.send_raw(raw)
                    results.append(bad.receive())
                    results.append(good.ask({"action": "ping"}))
                # Oversized: the tracker closes that connection only.
                bad.sock.sendall(struct.pack("!I", wire.MAX_REQUEST_FRAME + 1) + b"x" * 1000)
                results.append(bad.receive())
                results.append(good.ask({"action": "ping"}))
                results.append(good.ask({"action": "list_shared_files"}))
            finally:
                good.close()
                bad.close()
            return results

        results = yield deferToThread(scenario)
        self.assertEqual(results[0]["status"], "success")
        self.assertEqual(
            [r["code"] for r in results[1:9:2]], ["bad_utf8", "bad_json", "not_object", "unknown_action"]
        )
        self.assertEqual([r["message"] for r in results[2:10:2]], ["pong"] * 4)
        self.assertIsNone(results[9])
        self.assertEqual(results[10], {"status": "success", "message": "pong"})
        self.assertEqual(results[11], {"status": "success", "files": []})

    @inlineCallbacks
    def test_silent_native_client_evicted(self):
        port = yield self.start_tracker("--heartbeat", "0.2", "--heartbeat-misses", "2")
        evicted = self.wait_for("evicted")
        client = RecordingClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        fields = yield evicted
        self.assertEqual(fields["session"].hostname, "mute")
        self.assertIn("missed 2", fields["reason"])
        yield client.lost
        self.assertEqual(client.received[0]["status"], "success")
        pings = [m for m in client.received[1:] if m.get("action") == "ping"]
        self.assertGreaterEqual(len(pings), 2)
        self.assertEqual(len(self.tracker.registry), 0)

    @inlineCallbacks
    def test_stop_closes_sessions(self):
        port = yield self.start_tracker()
        client = RecordingClient()
        up = self.wait_for("session_up")
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        yield up
        yield self.tracker.stopService()
        yield client.lost
