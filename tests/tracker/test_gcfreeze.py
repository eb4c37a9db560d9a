"""
L{GCFreezer}, and what it relies on: a tracker session's objects are freed
by reference counting alone, without the cyclic collector.
"""

import gc
import weakref

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.protocols.basic import Int32StringReceiver
from twisted.trial import unittest

from twisted.logger import LogLevel

from twistedp2p import wire
from twistedp2p.logs import tracker_gate
from twistedp2p.tracker import service
from twistedp2p.tracker.gcfreeze import GCFreezer


class FakeGC:
    """
    The parts of the C{gc} module L{GCFreezer} uses, recording calls.
    """

    def __init__(self):
        self.callbacks = []
        self.calls = []

    def get_threshold(self):
        return (700, 10, 10)

    def collect(self):
        self.calls.append("collect")

    def freeze(self):
        self.calls.append("freeze")

    def unfreeze(self):
        self.calls.append("unfreeze")

    def run(self, generation):
        for callback in list(self.callbacks):
            callback("start", {"generation": generation})
        for callback in list(self.callbacks):
            callback("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


class GCFreezerTests(unittest.SynchronousTestCase):
    def test_freezes_after_full_collections_only(self):
        fake = FakeGC()
        freezer = GCFreezer(fake)
        fake.run(2)
        self.assertEqual(fake.calls, [])
        freezer.start()
        self.assertEqual(fake.calls, [])
        fake.run(0)
        fake.run(1)
        self.assertEqual(fake.calls, [])
        fake.run(2)
        self.assertEqual(fake.calls, ["freeze"])
        fake.run(2)
        self.assertEqual((fake.calls, freezer.freezes), (["freeze", "freeze"], 2))

    def test_stop_unfreezes(self):
        fake = FakeGC()
        freezer = GCFreezer(fake)
        freezer.start()
        freezer.start()
        self.assertEqual(len(fake.callbacks), 1)
        freezer.stop()
        freezer.stop()
        self.assertEqual((fake.callbacks, fake.calls), ([], ["unfreeze"]))
        fake.run(2)
        self.assertEqual(fake.calls, ["unfreeze"])

    def test_real_gc(self):
        """
        With the real collector: survivors of a full collection end up in
        the permanent generation, and C{stop} brings them back.
        """
        freezer = GCFreezer()
        self.addCleanup(freezer.stop)
        freezer.start()
        kept = [[] for _ in range(10)]
        gc.collect()
        self.assertGreaterEqual(gc.get_freeze_count(), len(kept))
        self.assertGreaterEqual(freezer.freezes, 1)
        freezer.stop()
        self.assertEqual(gc.get_freeze_count(), 0)


class Client(Int32StringReceiver):
    MAX_LENGTH = wire.MAX_REPLY_FRAME

    def __init__(self):
        self.answers = []
        self.waiting = None

    def ask(self, **message):
        self.waiting = Deferred()
        self.sendString(wire.encode(message))
        return self.waiting

    def stringReceived(self, data):
        message = wire.decode(data)
        if "action" in message:
            self.sendString(wire.encode({"status": "success", "id": message["id"]}))
            return
        self.answers.append(message)
        d, self.waiting = self.waiting, None
        if d is not None:
            d.callback(message)


class SessionObjectsTests(unittest.TestCase):
    """
    Frozen objects are only freed by reference counting: a session's
    protocol, transport and records must not be kept by reference cycles
    once the session ended.
    """

    timeout = 20

    @inlineCallbacks
    def test_session_freed_without_cyclic_gc(self):
        # A test run keeps every log event (and so its log_source, the
        # protocol) in the log system's start-up buffer: log nothing.
        self.patch(tracker_gate, "level", LogLevel.critical)
        config = service.Options()
        config.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--db", "memory", "--no-shell",
                             "--no-gc-freeze", "--log-level", "critical"])
        tracker = service.makeService(config, reactor)
        tracker.startService()
        self.addCleanup(tracker.stopService)
        port = (yield tracker.whenListening()).getHost().port
        down = []
        gone = Deferred()

        def observe(kind, fields):
            if kind == "session_down":
                down.append(fields)
                if len(down) == 2:
                    gone.callback(None)

        tracker.registry.subscribe(observe)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        source = yield connectProtocol(endpoint, Client())
        yield source.ask(action="hello", hostname="src", p2p_port=7000, version=1, id=1)
        yield source.ask(action="publish", fname="a.txt", file_size=1, sha256="a" * 64, id=2)
        # A contested hello pings the holder (a Deferred per ping).
        contender = yield connectProtocol(endpoint, Client())
        refused = yield contender.ask(action="hello", hostname="src", p2p_port=7000, version=1, id=1)
        self.assertEqual(refused["code"], "duplicate_session")
        fetcher = yield connectProtocol(endpoint, Client())
        yield fetcher.ask(action="hello", hostname="dst", p2p_port=7001, version=1, id=1)
        answer = yield fetcher.ask(action="fetch", fname="a.txt", id=2)
        self.assertEqual(answer["peer_list"][0]["hostname"], "src")
        tracker.registry.heartbeat()
        refs = [weakref.ref(p) for p in tracker.factory.connections]
        refs += [weakref.ref(p.transport) for p in tracker.factory.connections]
        self.assertEqual(len(refs), 6)

        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        closed = contender.waiting = Deferred()
        contender.connectionLost = lambda reason: closed.callback(None)
        for client in (source, fetcher, contender):
            client.transport.loseConnection()
        yield gone
        yield closed
        # Let the reactor finish with the connections.
        yield deferLater(0.05)
        self.assertEqual([r() for r in refs], [None] * len(refs))
        self.assertEqual(len(tracker.registry), 0)


def deferLater(seconds):
    from twisted.internet import task

    return task.deferLater(reactor, seconds, lambda: None)
