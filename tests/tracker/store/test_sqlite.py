"""
L{SQLiteStore} against the store contract, plus what only a file has:
schema versions, a previous run's rows, errors.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial import unittest

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import Publication, Session
from twistedp2p.tracker.store.schema import LATEST_SCHEMA_VERSION, SchemaTooNew, decode_mtime, encode_mtime
from twistedp2p.tracker.store import sqlite as sqlite_module
from twistedp2p.tracker.store.sqlite import SQLiteStore, read_rows
from tests.tracker.helpers import temp_path
from tests.tracker.store.contract import KeyBindingContract, RemovalContract, RootContract, StoreContract


def session(sid="t:1", hostname="a", version=1):
    return Session(sid, hostname, "10.0.0.1", 4000, version, 1.0, "t")


class SQLiteFileStoreTests(KeyBindingContract, RemovalContract, RootContract, StoreContract, unittest.TestCase):
    """
    The contract on a database file.
    """

    def make_store(self, path=None):
        if path is None:
            path = self.path = temp_path(self)
        store = SQLiteStore(path, clock=reactor, tracker_id=self.tracker_id)
        self.addCleanup(store.stop)
        return store.start().addCallback(lambda _: store)

    @inlineCallbacks
    def reopen_store(self, store):
        yield store.stop()
        again = yield self.make_store(self.path)
        return again


class SQLiteMemoryStoreTests(KeyBindingContract, RemovalContract, RootContract, StoreContract, unittest.TestCase):
    """
    The contract on C{":memory:"} (one connection, so one database).
    """

    def make_store(self):
        store = SQLiteStore(":memory:", clock=reactor, tracker_id=self.tracker_id)
        self.addCleanup(store.stop)
        return store.start().addCallback(lambda _: store)


class SQLiteFileTests(unittest.TestCase):
    """
    The file itself: schema, previous runs, failures.
    """

    def setUp(self):
        self.path = temp_path(self)

    @inlineCallbacks
    def started(self, path=None):
        store = SQLiteStore(path or self.path, clock=reactor, tracker_id="t")
        self.addCleanup(store.stop)
        yield store.start()
        return store

    @inlineCallbacks
    def test_writes_reach_the_file_before_firing(self):
        store = yield self.started()
        seed = session("t:1", version=None)
        yield store.add_session(seed)
        yield store.put("t:1", Publication("a.txt", "C:/a.txt", 3, "2025-11-06T13:45:00Z", None))
        yield store.put("t:1", Publication("b.txt", "b.txt", 4, 17.5, "c" * 64))
        sessions, publications = read_rows(self.path)
        self.assertEqual(sessions, [("t:1", "t", "a", "10.0.0.1", 4000, None, 1.0)])
        self.assertEqual(
            [p[1:] for p in publications],
            [
                ("t:1", "a.txt", "C:/a.txt", 3, "2025-11-06T13:45:00Z", None, None, None),
                ("t:1", "b.txt", "b.txt", 4, 17.5, "c" * 64, None, None),
            ],
        )
        yield store.remove_session("t:1")
        self.assertEqual(read_rows(self.path), ([], []))

    @inlineCallbacks
    def test_schema_and_wal(self):
        yield self.started()
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(LATEST_SCHEMA_VERSION,)])
        self.assertEqual(db.execute("PRAGMA journal_mode").fetchone()[0], "wal")
        self.assertEqual(db.execute("SELECT tracker_id FROM trackers").fetchall(), [("t",)])

    @inlineCallbacks
    def test_start_is_idempotent_and_cleans_previous_run(self):
        store = yield self.started()
        yield store.add_session(session())
        yield store.put("t:1", Publication("a", "a"))
        yield store.stop()
        self.assertEqual(len(read_rows(self.path)[1]), 1)
        again = yield self.started()
        self.assertEqual(read_rows(self.path), ([], []))
        self.assertEqual((yield again.sessions()), [])
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(LATEST_SCHEMA_VERSION,)])

    @inlineCallbacks
    def test_seq_never_reused(self):
        """
        Replacing the newest publication gives it a larger seq, even though
        the old row (the largest seq) was deleted.
        """
        store = yield self.started()
        yield store.add_session(session())
        yield store.put("t:1", Publication("a", "a", 1))
        [first] = yield store.sources("a", 1)
        yield store.put("t:1", Publication("a", "a", 2))
        [second] = yield store.sources("a", 1)
        self.assertGreater(second.seq, first.seq)
        self.assertEqual([p[0] for p in read_rows(self.path)[1]], [second.seq])

    def make_v1(self):
        """
        A database as schema version 1 left it, with a row in it.
        """
        db = sqlite3.connect(self.path)
        db.executescript(
            """
            CREATE TABLE schema_version (version INTEGER NOT NULL);
            INSERT INTO schema_version VALUES (1);
            CREATE TABLE trackers (tracker_id TEXT PRIMARY KEY, started_at REAL, lease_expires REAL);
            CREATE TABLE sessions (session_id TEXT PRIMARY KEY, tracker_id TEXT NOT NULL,
                hostname TEXT NOT NULL, ip TEXT NOT NULL, p2p_port INTEGER NOT NULL,
                version INTEGER NULL, connected_at REAL NOT NULL);
            CREATE TABLE publications (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
                fname TEXT NOT NULL, lname TEXT NOT NULL, file_size BIGINT NULL,
                last_modified TEXT NULL, sha256 TEXT NULL, UNIQUE (session_id, fname));
            INSERT INTO sessions VALUES ('old:1', 'old', 'a', '10.0.0.1', 4000, 1, 1.0);
            INSERT INTO publications (session_id, fname, lname) VALUES ('old:1', 'a', 'a');
            """
        )
        db.commit()
        db.close()

    def columns(self):
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        version = db.execute("SELECT version FROM schema_version").fetchall()
        names = [row[1] for row in db.execute("PRAGMA table_info(publications)")]
        return version, names

    @inlineCallbacks
    def test_migrates_v1(self):
        self.make_v1()
        store = yield self.started()
        version, names = self.columns()
        self.assertEqual(version, [(LATEST_SCHEMA_VERSION,)])
        self.assertEqual(names[-2:], ["root", "piece_size"])
        yield store.add_session(session())
        yield store.put("t:1", Publication("b", "b", 4, 1.0, "c" * 64, "d" * 64, 262144))
        [source] = yield store.sources("b", 10)
        self.assertEqual((source.publication.root, source.publication.piece_size), ("d" * 64, 262144))
        self.assertEqual(read_rows(self.path)[1][0][-2:], ("d" * 64, 262144))

    @inlineCallbacks
    def test_migrates_v2_keeping_nothing_but_adding_key_bindings(self):
        """
        A version 2 database (version 1, migrated once) gets the key
        bindings table and the sessions' fingerprint column; bindings then
        outlive a restart.
        """
        self.make_v1()
        db = sqlite3.connect(self.path)
        db.executescript(
            "ALTER TABLE publications ADD COLUMN root TEXT NULL;"
            " ALTER TABLE publications ADD COLUMN piece_size INTEGER NULL;"
            " UPDATE schema_version SET version = 2;"
        )
        db.commit()
        db.close()
        store = yield self.started()
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(3,)])
        self.assertIn("fingerprint", [row[1] for row in db.execute("PRAGMA table_info(sessions)")])
        self.assertEqual((yield store.bind_key("alice", "a" * 64)), "a" * 64)
        yield store.add_session(session())
        yield store.stop()
        again = yield self.started()
        self.assertEqual((yield again.bind_key("alice", "b" * 64)), "a" * 64)

    @inlineCallbacks
    def test_migration_idempotent(self):
        """
        A migration that added a column but died before recording the new
        version (version still 1) completes on the next start.
        """
        self.make_v1()
        db = sqlite3.connect(self.path)
        db.execute("ALTER TABLE publications ADD COLUMN root TEXT NULL")
        db.commit()
        db.close()
        store = yield self.started()
        yield store.stop()
        yield self.started()
        version, names = self.columns()
        self.assertEqual(version, [(LATEST_SCHEMA_VERSION,)])
        self.assertEqual(names.count("root"), 1)
        self.assertEqual(names[-2:], ["root", "piece_size"])

    @inlineCallbacks
    def test_refuses_newer_schema(self):
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (99)")
        db.commit()
        db.close()
        store = SQLiteStore(self.path, clock=reactor, tracker_id="t")
        failure = yield self.assertFailure(store.start(), SchemaTooNew)
        self.assertIn("schema version 99", str(failure))
        self.assertIn("upgrade", str(failure))
        # Nothing was touched.
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(99,)])
        # And the store is closed: writes fail cleanly.
        yield self.assertFailure(store.add_session(session()), IndexUnavailable)

    @inlineCallbacks
    def test_unopenable_file(self):
        os.mkdir(self.path)
        store = SQLiteStore(os.path.join(self.path, "no", "such", "dir.db"), clock=reactor)
        failure = yield self.assertFailure(store.start(), IndexUnavailable)
        self.assertIn("cannot open the SQLite index", str(failure))
        self.flushLoggedErrors(sqlite3.Error)

    @inlineCallbacks
    def test_sqlite_error_becomes_index_unavailable(self):
        """
        A write the database refuses (here: a publication of a session it
        does not have) fails with IndexUnavailable and leaves the view alone.
        """
        store = yield self.started()
        yield self.assertFailure(store.put("ghost", Publication("a", "a")), IndexUnavailable)
        self.assertEqual((yield store.sources("a", 10)), [])
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.Error)), 1)

    @inlineCallbacks
    def test_stop_twice(self):
        store = yield self.started()
        yield store.stop()
        yield store.stop()

    def test_mtime_encoding(self):
        for value in [None, 0, 1764000000.25, "2025-11-06T13:45:00Z", "12"]:
            self.assertEqual(decode_mtime(encode_mtime(value)), value)
            if value is not None:
                self.assertIs(type(decode_mtime(encode_mtime(value))), type(value))
        self.assertEqual(decode_mtime("not json"), "not json")
        self.assertEqual(decode_mtime("[1]"), "[1]")


class SQLiteBatchTests(unittest.TestCase):
    """
    Writes are batched: the ones issued while a transaction runs share the
    next one; removals leave the view before their write.
    """

    @inlineCallbacks
    def started(self):
        self.path = temp_path(self)
        store = SQLiteStore(self.path, clock=reactor, tracker_id="t")
        self.addCleanup(store.stop)
        yield store.start()
        return store

    @inlineCallbacks
    def test_removal_hidden_before_written(self):
        store = yield self.started()
        yield store.add_session(session("t:1", "a"))
        yield store.put("t:1", Publication("f", "f", 1))
        d = store.remove_session("t:1")
        # The write runs in the database thread: not done yet, but the
        # session is gone from every answer already.
        self.assertNoResult(d)
        self.assertEqual((yield store.sources("f", 10)), [])
        self.assertEqual((yield store.sessions()), [])
        self.assertEqual(len(read_rows(self.path)[1]), 1)
        yield d
        self.assertEqual(read_rows(self.path), ([], []))

    @inlineCallbacks
    def test_burst_written_in_few_transactions(self):
        store = yield self.started()
        before = store.commits
        n = 300
        writes = []
        for i in range(n):
            sid = f"t:{i}"
            writes.append(store.add_session(session(sid, f"h{i}")))
            writes.append(store.put(sid, Publication("f", "f", i)))
        for i in range(0, n, 2):
            writes.append(store.remove_session(f"t:{i}"))
        results = yield gatherResults(writes)
        self.assertEqual(results, [None] * len(writes))
        # The first write starts a transaction at once; everything issued
        # meanwhile shares the next one.
        self.assertLessEqual(store.commits - before, 2)
        sessions, publications = read_rows(self.path)
        self.assertEqual(len(sessions), n // 2)
        self.assertEqual(sorted(p[1] for p in publications), sorted(f"t:{i}" for i in range(1, n, 2)))
        sources = yield store.sources("f", n)
        self.assertEqual([s.session.session_id for s in sources], [f"t:{i}" for i in range(1, n, 2)])
        self.assertEqual([s.seq for s in sources], [p[0] for p in publications])

    @inlineCallbacks
    def test_refused_write_fails_alone(self):
        """
        A write SQLite refuses (a publication of an unknown session) fails
        with IndexUnavailable; the rest of its batch commits.
        """
        store = yield self.started()
        yield store.add_session(session("t:1"))
        first = store.put("t:1", Publication("a", "a"))
        batch = [
            store.put("t:1", Publication("b", "b")),
            store.put("ghost", Publication("c", "c")),
            store.add_session(session("t:2", "other")),
        ]
        yield first
        yield batch[0]
        yield self.assertFailure(batch[1], IndexUnavailable)
        yield batch[2]
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.Error)), 1)
        sessions, publications = read_rows(self.path)
        self.assertEqual([p[2] for p in publications], ["a", "b"])
        self.assertEqual(len(sessions), 2)
        self.assertEqual((yield store.sources("c", 10)), [])

    @inlineCallbacks
    def test_failed_transaction_fails_its_batch(self):
        """
        When a whole transaction fails, each of its writes fails with
        IndexUnavailable, the view keeps none of them, and later writes
        work.
        """
        store = yield self.started()
        yield store.add_session(session("t:1"))
        real = sqlite_module._run_batch

        def broken(cursor, writes):
            real(cursor, writes)
            raise sqlite3.OperationalError("disk I/O error")

        self.patch(sqlite_module, "_run_batch", broken)
        writes = [store.put("t:1", Publication(name, name)) for name in "abc"]
        for d in writes:
            failure = yield self.assertFailure(d, IndexUnavailable)
            self.assertIn("disk I/O error", str(failure))
        self.assertEqual(len(self.flushLoggedErrors(sqlite3.OperationalError)), 1)
        self.assertEqual(read_rows(self.path)[1], [])
        self.assertEqual((yield store.host_files("a")), [])
        self.patch(sqlite_module, "_run_batch", real)
        yield store.put("t:1", Publication("d", "d"))
        self.assertEqual([p[2] for p in read_rows(self.path)[1]], ["d"])

    @inlineCallbacks
    def test_removal_issued_during_resync_stays_hidden(self):
        store = yield self.started()
        a, b = session("t:1", "a"), session("t:2", "b")
        yield store.add_session(a)
        yield store.add_session(b)
        resynced = store.resync([(a, [Publication("f", "f")]), (b, [Publication("f", "f")])])
        removed = store.remove_session("t:1")
        yield resynced
        self.assertEqual([s.session.hostname for s in (yield store.sources("f", 10))], ["b"])
        yield removed
        self.assertEqual([s.session.hostname for s in (yield store.sources("f", 10))], ["b"])
        self.assertEqual([row[0] for row in read_rows(self.path)[0]], ["t:2"])

    @inlineCallbacks
    def test_writes_after_stop_fail(self):
        store = yield self.started()
        yield store.add_session(session())
        pending = store.put("t:1", Publication("a", "a"))
        stopped = store.stop()
        again = store.stop()
        late = store.put("t:1", Publication("b", "b"))
        yield pending
        yield stopped
        yield again
        yield self.assertFailure(late, IndexUnavailable)
        yield self.assertFailure(store.add_session(session("t:2")), IndexUnavailable)
        self.assertEqual([p[2] for p in read_rows(self.path)[1]], ["a"])


class RunBatchTests(unittest.SynchronousTestCase):
    """
    The batch runner itself, on a plain connection (no thread, no pool).
    """

    def setUp(self):
        self.db = sqlite3.connect(":memory:")
        self.addCleanup(self.db.close)
        self.db.execute("CREATE TABLE t (x INTEGER)")
        self.db.commit()

    def rows(self):
        return [row[0] for row in self.db.execute("SELECT x FROM t ORDER BY x")]

    @staticmethod
    def insert(cursor, x):
        cursor.execute("INSERT INTO t VALUES (?)", (x,))
        return x

    @staticmethod
    def half_then_fail(cursor, x):
        cursor.execute("INSERT INTO t VALUES (?)", (x,))
        cursor.execute("INSERT INTO no_such_table VALUES (1)")

    def run_batch(self, writes):
        outcomes = sqlite_module._run_batch(self.db.cursor(), writes)
        self.db.commit()
        return outcomes

    def test_all_succeed_one_transaction(self):
        outcomes = self.run_batch([(self.insert, (1,)), (self.insert, (2,))])
        self.assertEqual(outcomes, [(True, 1), (True, 2)])
        self.assertEqual(self.rows(), [1, 2])

    def test_failing_write_rolled_back_alone(self):
        outcomes = self.run_batch([(self.insert, (1,)), (self.half_then_fail, (2,)), (self.insert, (3,))])
        self.assertEqual([ok for ok, _ in outcomes], [True, False, True])
        outcomes[1][1].trap(sqlite3.OperationalError)
        self.assertEqual(self.rows(), [1, 3])

    def test_single_failing_write_leaves_nothing(self):
        [(ok, failure)] = self.run_batch([(self.half_then_fail, (2,))])
        self.assertFalse(ok)
        failure.trap(sqlite3.OperationalError)
        self.assertEqual(self.rows(), [])
        self.assertFalse(self.db.in_transaction)
