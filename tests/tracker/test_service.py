"""
The tracker's command line, store URLs, and service start/stop order.
"""

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python import usage
from twisted.trial import unittest

from twistedp2p.errors import IndexUnavailable
from tests.tracker.helpers import temp_dir
from twistedp2p.tracker import service
from twistedp2p.tracker.store.factory import DatabaseURL, parse_db_url, store_from_url
from twistedp2p.tracker.store.memory import MemoryStore
from twistedp2p.tracker.store.sqlite import SQLiteStore


def parse(*argv):
    options = service.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(unittest.SynchronousTestCase):
    def test_defaults(self):
        o = parse()
        self.assertEqual(o["listen"], "tcp:9999:backlog=1024")
        self.assertIsNone(o["db"])
        self.assertEqual((o["heartbeat"], o["heartbeat-misses"], o["ping-timeout"]), (30.0, 3, 5.0))
        self.assertRegex(o["tracker-id"], r"^[0-9a-f]{8}$")
        self.assertNotEqual(o["tracker-id"], parse()["tracker-id"])
        self.assertFalse(o["no-shell"])

    def test_values(self):
        o = parse(
            "--listen", "tcp:7070:interface=127.0.0.1",
            "--db", "memory",
            "--heartbeat", "0.5",
            "--heartbeat-misses", "1",
            "--ping-timeout", "2",
            "--tracker-id", "east-1",
            "--no-shell",
        )
        self.assertEqual(o["listen"], "tcp:7070:interface=127.0.0.1:backlog=1024")
        self.assertEqual((o["heartbeat"], o["heartbeat-misses"], o["ping-timeout"]), (0.5, 1, 2.0))
        self.assertEqual(o["tracker-id"], "east-1")
        self.assertTrue(o["no-shell"])

    def test_backlog_kept(self):
        self.assertEqual(parse("--listen", "tcp:7070:backlog=5")["listen"], "tcp:7070:backlog=5")
        self.assertEqual(service.with_backlog("unix:/tmp/x"), "unix:/tmp/x:backlog=1024")
        self.assertEqual(service.with_backlog("ssl:443"), "ssl:443")

    def test_bad_values(self):
        cases = [
            (["--listen", "bogus:1"], "--listen"),
            (["--listen", "tcp:notaport"], "--listen"),
            (["--heartbeat", "0"], "greater than 0"),
            (["--heartbeat", "-1"], "greater than 0"),
            (["--heartbeat", "nan"], "greater than 0"),
            (["--heartbeat", "soon"], "heartbeat"),
            (["--heartbeat-misses", "0"], "at least 1"),
            (["--heartbeat-misses", "1.5"], "heartbeat-misses"),
            (["--ping-timeout", "0"], "greater than 0"),
            (["--tracker-id", "a:b"], "--tracker-id"),
            (["--tracker-id", ""], "--tracker-id"),
            (["--db", "mysql://x/y"], "unknown database"),
            (["--db", "sqlite://host/x"], "no host"),
            (["--db", "/no/such/dir/x.db"], "does not exist"),
        ]
        for argv, text in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(text, str(e), argv)


class DatabaseURLTests(unittest.SynchronousTestCase):
    def test_parse(self):
        tmp = temp_dir(self)
        db = os.path.join(tmp, "t.db")
        self.assertEqual(parse_db_url(None), DatabaseURL("sqlite", "p2ptracker.sqlite3"))
        self.assertEqual(parse_db_url(""), DatabaseURL("sqlite", "p2ptracker.sqlite3"))
        self.assertEqual(parse_db_url("memory"), DatabaseURL("sqlite", ":memory:"))
        self.assertEqual(parse_db_url(":memory:"), DatabaseURL("sqlite", ":memory:"))
        self.assertEqual(parse_db_url(db), DatabaseURL("sqlite", db))
        self.assertEqual(parse_db_url("sqlite:" + db), DatabaseURL("sqlite", db))
        self.assertEqual(parse_db_url("sqlite://" + db), DatabaseURL("sqlite", db))
        self.assertEqual(parse_db_url("relative.db"), DatabaseURL("sqlite", "relative.db"))
        pg = "postgresql://root@127.0.0.1:5432/test"
        self.assertEqual(parse_db_url(pg), DatabaseURL("postgres", pg))
        self.assertEqual(parse_db_url("postgres://h/db"), DatabaseURL("postgres", "postgres://h/db"))

    def test_bad(self):
        d = temp_dir(self)
        for url, text in [
            (d, "is a directory"),
            ("sqlite:", "empty"),
            ("postgresql:db", "postgresql://"),
            ("ftp://x", "unknown database"),
            (" memory", "white space"),
        ]:
            e = self.assertRaises(ValueError, parse_db_url, url)
            self.assertIn(text, str(e))

    def test_store_from_url(self):
        store = store_from_url("memory", clock=reactor, tracker_id="t")
        self.assertIsInstance(store, SQLiteStore)
        self.assertEqual((store.path, store.tracker_id), (":memory:", "t"))
        store = store_from_url("relative.db", clock=reactor, tracker_id="t")
        self.assertEqual(store.path, os.path.abspath("relative.db"))
        store = store_from_url(None, clock=reactor, tracker_id="t")
        self.assertEqual(store.path, os.path.abspath("p2ptracker.sqlite3"))
        self.assertFalse(os.path.exists("relative.db"))

    def test_postgres(self):
        try:
            from twistedp2p.tracker.store.postgres import PostgresStore  # noqa: F401
        except ModuleNotFoundError:
            e = self.assertRaises(ValueError, store_from_url, "postgresql://h/db", clock=reactor, tracker_id="t")
            self.assertIn("PostgreSQL support is not available yet", str(e))
        else:
            raise unittest.SkipTest("the PostgreSQL store exists; its own tests cover from_url")

    def test_postgres_from_url_called(self):
        calls = []

        class FakePostgresStore:
            @classmethod
            def from_url(cls, url, **kw):
                calls.append((url, kw))
                return "store"

        import sys
        import types

        module = types.ModuleType("twistedp2p.tracker.store.postgres")
        module.PostgresStore = FakePostgresStore
        saved = sys.modules.get("twistedp2p.tracker.store.postgres")
        sys.modules["twistedp2p.tracker.store.postgres"] = module
        try:
            result = store_from_url("postgres://h/db", clock="clock", tracker_id="t", pool_size=2)
        finally:
            if saved is None:
                del sys.modules["twistedp2p.tracker.store.postgres"]
            else:
                sys.modules["twistedp2p.tracker.store.postgres"] = saved
        self.assertEqual(result, "store")
        self.assertEqual(calls, [("postgres://h/db", {"clock": "clock", "tracker_id": "t", "pool_size": 2})])


class FailingStore(MemoryStore):
    def start(self):
        return fail(IndexUnavailable("cannot open the index: disk on fire"))


class ServiceTests(unittest.TestCase):
    timeout = 10

    @inlineCallbacks
    def test_make_service_listens_and_stops(self):
        config = parse("--listen", "tcp:0:interface=127.0.0.1", "--db", "memory", "--no-shell", "--tracker-id", "abc")
        tracker = service.makeService(config, reactor)
        self.assertIsInstance(tracker, service.TrackerService)
        self.assertEqual(tracker.registry.tracker_id, "abc")
        tracker.startService()
        port = yield tracker.whenListening()
        self.assertEqual(port.getHost().host, "127.0.0.1")
        self.assertIs((yield tracker.whenListening()), port)
        yield tracker.stopService()
        self.assertFalse(tracker.running)

    @inlineCallbacks
    def test_store_failure_is_fatal(self):
        fatal = []
        tracker = service.TrackerService(
            reactor, FailingStore(), "tcp:0:interface=127.0.0.1", "t", on_fatal=fatal.append
        )
        waiting = tracker.whenListening()
        tracker.startService()
        yield self.assertFailure(waiting, IndexUnavailable)
        yield self.assertFailure(tracker.whenListening(), IndexUnavailable)
        self.assertEqual(fatal, ["cannot open the index: disk on fire"])
        self.assertEqual(len(self.flushLoggedErrors(IndexUnavailable)), 1)
        yield tracker.stopService()

    @inlineCallbacks
    def test_stop_while_starting(self):
        store = MemoryStore()
        starting = Deferred()
        store.start = lambda: starting
        tracker = service.TrackerService(reactor, store, "tcp:0:interface=127.0.0.1", "t")
        tracker.startService()
        stopped = tracker.stopService()
        self.assertNoResult(stopped)
        starting.callback(None)
        yield stopped

    @inlineCallbacks
    def test_probe(self):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory.forProtocol(Protocol))
        number = port.getHost().port
        probe = service.tcp_probe(reactor, 2.0)
        self.assertTrue((yield probe("127.0.0.1", number)))
        yield port.stopListening()
        self.assertFalse((yield probe("127.0.0.1", number)))

    def test_beat_survives_errors(self):
        tracker = service.TrackerService(reactor, MemoryStore(), "tcp:0", "t")

        def broken():
            raise RuntimeError("bug")

        tracker.registry.heartbeat = broken
        tracker._beat()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class PluginTests(unittest.SynchronousTestCase):
    def test_plugin_names_this_module(self):
        from twisted.plugins import twistedp2p_plugins

        self.assertEqual(twistedp2p_plugins.p2ptracker.module, "twistedp2p.tracker.service")
        self.assertTrue(hasattr(service, "Options") and hasattr(service, "makeService"))
