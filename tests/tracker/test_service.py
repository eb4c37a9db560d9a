"""
The tracker's command line, store URLs, and service start/stop order.
"""

import io
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import EventLoggingObserver, MemoryReactor
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from twistedp2p.errors import IndexUnavailable
from tests.tracker.helpers import temp_dir
from twistedp2p.logs import LevelGate, tracker_gate
from twistedp2p.tracker import service
from twistedp2p.tracker.gcfreeze import GCFreezer
from twistedp2p.tracker.store.factory import DatabaseURL, parse_db_url, postgres_options, store_from_url
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
        self.assertEqual((o["lease"], o["db-pool-size"]), (90.0, 3))

    def test_lease_default_follows_heartbeat(self):
        self.assertEqual(parse("--heartbeat", "0.5")["lease"], 1.5)
        o = parse("--heartbeat", "0.5", "--lease", "2", "--db-pool-size", "5")
        self.assertEqual((o["lease"], o["db-pool-size"]), (2.0, 5))

    def test_lease_in_url_checked(self):
        """
        A lease in the URL's query string wins over --lease (the store reads
        it), so it must be longer than the heartbeat too.
        """
        parse("--heartbeat", "1", "--db", "postgresql://u@h/db?lease=1.5")
        e = self.assertRaises(
            usage.UsageError, parse, "--heartbeat", "2", "--lease", "9", "--db", "postgresql://u@h/db?lease=2"
        )
        self.assertIn("lease= in --db (2 s) must be longer than --heartbeat (2 s)", str(e))

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

    def test_max_files_per_peer(self):
        self.assertEqual(parse()["max-files-per-peer"], 10000)
        o = parse("--max-files-per-peer", "5", "--db", "memory", "--no-shell")
        self.assertEqual(o["max-files-per-peer"], 5)
        from twisted.internet.task import Clock

        self.assertEqual(service.makeService(o, Clock()).registry.max_files, 5)
        self.assertRaises(usage.UsageError, parse, "--max-files-per-peer", "0")

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
            (["--lease", "0"], "greater than 0"),
            (["--lease", "soon"], "--lease"),
            (["--lease", "30"], "--lease (30 s) must be longer than --heartbeat (30 s)"),
            (["--heartbeat", "5", "--lease", "4"], "must be longer than --heartbeat"),
            (["--db-pool-size", "0"], "at least 1"),
            (["--db-pool-size", "two"], "--db-pool-size"),
            (["--db", "postgresql://u@h:notaport/db"], "bad port"),
            (["--db", "postgresql://u@h/db?pool_size=many"], "pool_size"),
            (["--tracker-id", "a:b"], "--tracker-id"),
            (["--tracker-id", ""], "--tracker-id"),
            (["--db", "mysql://x/y"], "unknown database"),
            (["--db", "sqlite://host/x"], "no host"),
            (["--db", "/no/such/dir/x.db"], "does not exist"),
            (["--log-level", "verbose"], "--log-level: unknown log level 'verbose'"),
        ]
        for argv, text in cases:
            e = self.assertRaises(usage.UsageError, parse, *argv)
            self.assertIn(text, str(e), argv)

    def test_log_level_and_gc_freeze(self):
        o = parse()
        self.assertEqual((o["log-level"], o["no-gc-freeze"]), (LogLevel.info, False))
        o = parse("--log-level", "DEBUG", "--no-gc-freeze")
        self.assertEqual((o["log-level"], o["no-gc-freeze"]), (LogLevel.debug, True))

    def test_make_service_sets_gate_and_freezer(self):
        self.patch(tracker_gate, "level", LogLevel.info)
        tracker = service.makeService(parse("--db", "memory", "--log-level", "warn"), reactor)
        self.assertEqual(tracker_gate.level, LogLevel.warn)
        self.assertIsInstance(tracker.gc_freezer, GCFreezer)
        self.assertIsNone(service.makeService(parse("--db", "memory", "--no-gc-freeze"), reactor).gc_freezer)


class LevelGateTests(unittest.SynchronousTestCase):
    def test_drops_below_level(self):
        seen = []
        gate = LevelGate(LogLevel.info, seen.append)
        log = Logger(observer=gate)
        log.debug("no")
        log.info("yes {n}", n=1)
        log.error("yes")
        self.assertEqual([e["log_format"] for e in seen], ["yes {n}", "yes"])
        gate.level = LogLevel.debug
        log.debug("now")
        self.assertEqual(seen[-1]["log_format"], "now")

    def test_global_publisher_by_default(self):
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        Logger(observer=LevelGate()).warn("to everyone")
        self.assertEqual([e["log_format"] for e in logged], ["to everyone"])


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

    def test_postgres_only_options(self):
        """
        lease and pool_size reach a PostgreSQL store and never a SQLite one
        (an embedded index is not shared: no lease, no pool).
        """
        store = store_from_url("memory", clock=reactor, tracker_id="t", lease=7.0, pool_size=9)
        self.assertIsInstance(store, SQLiteStore)
        store = store_from_url(
            "postgresql://u@127.0.0.1:1/db", clock=reactor, tracker_id="t", lease=7.0, pool_size=2
        )
        self.assertEqual((store.lease, store.pool_size, store.tracker_id), (7.0, 2, "t"))
        store = store_from_url("postgresql://u@127.0.0.1:1/db", clock=reactor, tracker_id="t")
        self.assertEqual((store.lease, store.pool_size), (90.0, 3))
        # The URL's query string wins.
        store = store_from_url("postgresql://u@127.0.0.1:1/db?lease=4", clock=reactor, tracker_id="t", lease=7.0)
        self.assertEqual(store.lease, 4.0)

    def test_postgres_options(self):
        self.assertEqual(postgres_options("memory"), {})
        self.assertEqual(postgres_options(None), {})
        self.assertEqual(postgres_options("postgresql://u@h/db"), {})
        self.assertEqual(
            postgres_options("postgresql://u@h/db?lease=5&pool_size=2&sslmode=require"),
            {"lease": 5.0, "pool_size": 2},
        )

    def test_postgres_description_hides_password(self):
        store = store_from_url("postgresql://alice:s3cret@db.example:6543/p2p", clock=reactor, tracker_id="t")
        self.assertEqual(store.describe(), "PostgreSQL alice@db.example:6543/p2p")
        tracker = service.TrackerService(reactor, store, "tcp:0", "t")
        self.assertEqual(tracker.store_description, "PostgreSQL alice@db.example:6543/p2p")
        self.assertNotIn("s3cret", repr(store))

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


def _closed_port():
    """
    A loopback port nothing listens on (bound, then released).
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    def test_make_service_postgres_options(self):
        """
        makeService hands --lease and --db-pool-size to the PostgreSQL store
        (building it does not connect).
        """
        config = parse(
            "--db", "postgresql://u@127.0.0.1:1/db", "--heartbeat", "0.5", "--lease", "2",
            "--db-pool-size", "4", "--no-shell", "--tracker-id", "a",
        )
        tracker = service.makeService(config, reactor)
        self.assertEqual((tracker.store.lease, tracker.store.pool_size), (2.0, 4))
        self.assertEqual(tracker.store_description, "PostgreSQL u@127.0.0.1:1/db")
        config = parse("--db", "memory", "--lease", "60", "--no-shell")
        self.assertIsInstance(service.makeService(config, reactor).store, SQLiteStore)
        yield None

    @inlineCallbacks
    def test_store_failure_is_fatal(self):
        """
        A known cause (here the index) stops the tracker with its message in
        one critical log line, without a traceback.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        fatal = []
        tracker = service.TrackerService(
            reactor, FailingStore(), "tcp:0:interface=127.0.0.1", "t", on_fatal=fatal.append
        )
        waiting = tracker.whenListening()
        tracker.startService()
        yield self.assertFailure(waiting, IndexUnavailable)
        yield self.assertFailure(tracker.whenListening(), IndexUnavailable)
        self.assertEqual(fatal, ["cannot open the index: disk on fire"])
        critical = [e for e in logged if e["log_level"] == LogLevel.critical]
        self.assertEqual(len(critical), 1)
        self.assertEqual(critical[0]["reason"], "cannot open the index: disk on fire")
        self.assertNotIn("log_failure", critical[0])
        yield tracker.stopService()

    @inlineCallbacks
    def test_unexpected_start_failure_has_traceback(self):
        store = MemoryStore()
        store.start = lambda: fail(RuntimeError("a bug"))
        fatal = []
        tracker = service.TrackerService(reactor, store, "tcp:0:interface=127.0.0.1", "t", on_fatal=fatal.append)
        tracker.startService()
        yield self.assertFailure(tracker.whenListening(), RuntimeError)
        self.assertEqual(fatal, ["a bug"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        yield tracker.stopService()

    @inlineCallbacks
    def test_postgres_unreachable_is_fatal(self):
        """
        A real PostgreSQL store pointed at a closed port: the tracker does
        not listen and says where it tried, without the password.
        """
        url = f"postgresql://u:s3cret@127.0.0.1:{_closed_port()}/db"
        store = store_from_url(url, clock=reactor, tracker_id="t", lease=2.0, pool_size=1)
        fatal = []
        tracker = service.TrackerService(reactor, store, "tcp:0:interface=127.0.0.1", "t", on_fatal=fatal.append)
        tracker.startService()
        yield self.assertFailure(tracker.whenListening(), IndexUnavailable)
        [message] = fatal
        self.assertRegex(message, r"^cannot use the PostgreSQL index at postgresql://u:\*\*\*@127\.0\.0\.1:\d+/db: ")
        self.assertNotIn("s3cret", message)
        yield tracker.stopService()

    def test_exit_nonzero_writes_one_line_to_real_stderr(self):
        """
        twistd sends sys.stderr to its log (maybe a file): the one line goes
        to the process's own stderr.
        """
        real = io.StringIO()
        self.patch(sys, "__stderr__", real)
        self.patch(sys, "stderr", io.StringIO())

        tracker = service.TrackerService(MemoryReactor(), MemoryStore(), "tcp:0", "t")
        tracker._exit_nonzero("the index is down")
        self.assertEqual(real.getvalue(), "p2ptracker: cannot start: the index is down\n")
        self.assertEqual(sys.stderr.getvalue(), "")
        # The reactor is not running yet: the exit waits for it.
        self.assertEqual(len(tracker.reactor.whenRunningHooks), 1)

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

        tracker.registry.heartbeat_tick = broken
        tracker._beat()
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class PluginTests(unittest.SynchronousTestCase):
    def test_plugin_names_this_module(self):
        from twisted.plugins import twistedp2p_plugins

        self.assertEqual(twistedp2p_plugins.p2ptracker.module, "twistedp2p.tracker.service")
        self.assertTrue(hasattr(service, "Options") and hasattr(service, "makeService"))
