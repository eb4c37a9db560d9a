"""
L{SQLiteStore} against the store contract, plus what only a file has:
schema versions, a previous run's rows, errors.
"""

import os
import sqlite3

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial import unittest

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import Publication, Session
from twistedp2p.tracker.store.schema import SchemaTooNew, decode_mtime, encode_mtime
from twistedp2p.tracker.store.sqlite import SQLiteStore, read_rows
from tests.tracker.helpers import temp_path
from tests.tracker.store.contract import StoreContract


def session(sid="t:1", hostname="a", version=1):
    return Session(sid, hostname, "10.0.0.1", 4000, version, 1.0, "t")


class SQLiteFileStoreTests(StoreContract, unittest.TestCase):
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


class SQLiteMemoryStoreTests(StoreContract, unittest.TestCase):
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
                ("t:1", "a.txt", "C:/a.txt", 3, "2025-11-06T13:45:00Z", None),
                ("t:1", "b.txt", "b.txt", 4, 17.5, "c" * 64),
            ],
        )
        yield store.remove_session("t:1")
        self.assertEqual(read_rows(self.path), ([], []))

    @inlineCallbacks
    def test_schema_and_wal(self):
        yield self.started()
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(1,)])
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
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(1,)])

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

    @inlineCallbacks
    def test_refuses_newer_schema(self):
        db = sqlite3.connect(self.path)
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (2)")
        db.commit()
        db.close()
        store = SQLiteStore(self.path, clock=reactor, tracker_id="t")
        failure = yield self.assertFailure(store.start(), SchemaTooNew)
        self.assertIn("schema version 2", str(failure))
        self.assertIn("upgrade", str(failure))
        # Nothing was touched.
        db = sqlite3.connect(self.path)
        self.addCleanup(db.close)
        self.assertEqual(db.execute("SELECT version FROM schema_version").fetchall(), [(2,)])
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
