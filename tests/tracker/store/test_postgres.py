"""
L{PostgresStore} against the store contract on a real PostgreSQL server, and
what only a shared database has: several trackers and their leases, the
LISTEN/NOTIFY view, outages, the schema and its indexes.  The pure parts
(URL parsing, glob translation, the view) are tested without a server.

Every test that needs the server creates its own database and drops it.
"""

from __future__ import annotations

import fnmatch
import re
from itertools import repeat
from urllib.parse import urlsplit, urlunsplit

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.trial import unittest

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import CatalogueEntry, Publication, Session, group_catalogue, pattern_matcher
from twistedp2p.tracker.store import pg_sql
from twistedp2p.tracker.store.pg_link import Link, LinkDown, parse_url
from twistedp2p.tracker.store.pg_view import IndexView, session_to_row
from twistedp2p.tracker.store.postgres import MAX_BATCH, PostgresStore, catalogue_query, glob_to_regex
from twistedp2p.tracker.store.schema import LATEST_SCHEMA_VERSION, SchemaTooNew
from tests.pgutil import base_dsn, postgres_skip_reason, run_sql, throwaway_database
from tests.tracker.store.contract import SHA_A, SHA_B, KeyBindingContract, RemovalContract, RootContract, StoreContract

SKIP = postgres_skip_reason()


#: Schema version 1 as the schema brief gives it (no root, no piece_size).
V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE trackers (tracker_id TEXT PRIMARY KEY, started_at DOUBLE PRECISION, lease_expires DOUBLE PRECISION);
CREATE TABLE sessions (session_id TEXT PRIMARY KEY, tracker_id TEXT NOT NULL, hostname TEXT NOT NULL,
    ip TEXT NOT NULL, p2p_port INTEGER NOT NULL, version INTEGER NULL, connected_at DOUBLE PRECISION NOT NULL);
CREATE INDEX sessions_hostname ON sessions (hostname);
CREATE INDEX sessions_tracker ON sessions (tracker_id);
CREATE TABLE publications (seq BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions ON DELETE CASCADE, fname TEXT NOT NULL, lname TEXT NOT NULL,
    file_size BIGINT NULL, last_modified TEXT NULL, sha256 TEXT NULL, UNIQUE (session_id, fname));
CREATE INDEX publications_fname ON publications (fname, seq);
"""


def session(tracker: str, n: int, hostname: str = "host", at: float | None = None, port: int = 4000) -> Session:
    return Session(f"{tracker}:{n}", hostname, "10.0.0.1", port, 1, float(n) if at is None else at, tracker)


def pub(fname: str = "notes.pdf", size: int = 10, sha: str | None = SHA_A, lname: str | None = None) -> Publication:
    return Publication(fname, lname or fname, size, 1_764_000_000.5, sha)


def hosts(sources):
    return [s.session.hostname for s in sources]


class DatabaseMixin:
    """
    A throwaway database per test (C{self.url}) and a way to make stores on
    it that are stopped after the test.
    """

    skip = SKIP
    # Everything here takes well under a second: a hang is a bug.
    timeout = 30

    def setUp(self):
        self.url, drop = throwaway_database()
        self.addCleanup(drop)

    def make(self, tracker_id="A", url=None, clock=None, **options):
        """
        A new (not started) store on the test's database.
        """
        store = PostgresStore.from_url(
            url or self.url, clock=clock or reactor, tracker_id=tracker_id, reactor=reactor, **options
        )
        self.addCleanup(store.stop)
        return store

    @inlineCallbacks
    def started(self, tracker_id="A", **kwargs):
        store = self.make(tracker_id, **kwargs)
        yield store.start()
        return store

    def rows(self, statement, params=None):
        return run_sql(self.url, statement, params)


class PostgresStoreContractTests(
    DatabaseMixin, KeyBindingContract, RemovalContract, StoreContract, RootContract, unittest.TestCase
):
    """
    The contract.  The clock is a L{task.Clock} that never moves: no lease
    passes and no timeout fires, so a query or notification that got lost
    shows as a hang instead of being papered over by a reconnection.
    """

    def make_store(self):
        return self.started(self.tracker_id, clock=task.Clock())

    @inlineCallbacks
    def reopen_store(self, store):
        yield store.stop()
        again = yield self.make_store()
        return again


class SharedDatabaseTests(DatabaseMixin, unittest.TestCase):
    """
    Two trackers, A and B, on one database, each with its own clock.
    """

    LEASE = 10.0

    @inlineCallbacks
    def pair(self):
        self.clock_a, self.clock_b = task.Clock(), task.Clock()
        self.clock_a.advance(1000)
        self.clock_b.advance(1000)
        a = yield self.started("A", clock=self.clock_a, lease=self.LEASE)
        b = yield self.started("B", clock=self.clock_b, lease=self.LEASE)
        return a, b

    @inlineCallbacks
    def assertCoherent(self, *stores):
        """
        Every store's view answers as the database does.
        """
        for store in stores:
            yield store.whenSynced()
            direct = store.direct()
            for fname in ("notes.pdf", "other.txt"):
                self.assertEqual((yield store.sources(fname, 100)), (yield direct.sources(fname, 100)))
            for host in ("a", "b"):
                self.assertEqual((yield store.host_files(host)), (yield direct.host_files(host)))
            self.assertEqual((yield store.catalogue("", 100)), (yield direct.catalogue("", 100)))
            self.assertEqual((yield store.sessions()), (yield direct.sessions()))

    @inlineCallbacks
    def test_writes_of_one_tracker_reach_the_other(self):
        a, b = yield self.pair()
        s = session("A", 1, "a")
        yield a.add_session(s)
        yield a.put(s.session_id, pub())
        # Not a sleep: a barrier through the database, after A's writes.
        yield b.whenSynced()
        [source] = yield b.sources("notes.pdf", 10)
        self.assertEqual(source.session, s)
        self.assertEqual(source.publication, pub())
        self.assertEqual((yield b.sessions()), [s])

        yield a.put(s.session_id, pub(size=99, sha=SHA_B))
        yield b.whenSynced()
        [source] = yield b.sources("notes.pdf", 10)
        self.assertEqual(source.publication.file_size, 99)

        self.assertTrue((yield a.delete(s.session_id, "notes.pdf")))
        yield b.whenSynced()
        self.assertEqual((yield b.sources("notes.pdf", 10)), [])

        yield a.put(s.session_id, pub("other.txt"))
        yield a.remove_session(s.session_id)
        yield b.whenSynced()
        self.assertEqual((yield b.sessions()), [])
        self.assertEqual((yield b.catalogue("", 10)), [])

    @inlineCallbacks
    def test_both_trackers_agree_on_order(self):
        a, b = yield self.pair()
        sa, sb = session("A", 1, "a"), session("B", 2, "b")
        yield a.add_session(sa)
        yield b.add_session(sb)
        yield gatherResults([a.put(sa.session_id, pub()), b.put(sb.session_id, pub())])
        yield a.put(sa.session_id, pub("other.txt"))
        yield b.put(sb.session_id, pub("other.txt", sha=SHA_B))
        yield a.put(sa.session_id, pub(size=5))  # A's replace moves it last
        yield self.assertCoherent(a, b)
        self.assertEqual(hosts((yield a.sources("notes.pdf", 10))), ["b", "a"])
        self.assertEqual((yield a.sources("notes.pdf", 10)), (yield b.sources("notes.pdf", 10)))
        self.assertEqual(hosts((yield b.sources("notes.pdf", 1))), ["b"])
        self.assertEqual(
            (yield b.catalogue("other", 10)),
            [
                CatalogueEntry("other.txt", 10, SHA_A, 1, ("a",)),
                CatalogueEntry("other.txt", 10, SHA_B, 1, ("b",)),
            ],
        )
        self.assertEqual((yield a.sessions()), [sa, sb])

    @inlineCallbacks
    def test_content_root_travels(self):
        a, b = yield self.pair()
        s = session("A", 1, "a")
        yield a.add_session(s)
        rooted = Publication("big.iso", "big.iso", 2**33, 1.0, SHA_A, "d" * 64, 1 << 20)
        yield a.put(s.session_id, rooted)
        yield b.whenSynced()
        [source] = yield b.sources("big.iso", 10)
        self.assertEqual(source.publication, rooted)
        [entry] = yield b.catalogue("big", 10)
        self.assertEqual(entry.root, "d" * 64)
        yield a.resync([(s, [rooted])])
        yield self.assertCoherent(a, b)

    @inlineCallbacks
    def test_long_publication_is_read_by_seq(self):
        """
        A publication too long for a notification (lname up to 4096
        characters) still reaches the other tracker whole.
        """
        a, b = yield self.pair()
        s = session("A", 1, "a")
        yield a.add_session(s)
        long = pub("long.bin", lname="C:/" + "長" * 4000)
        yield a.put(s.session_id, long)
        yield b.whenSynced()
        [source] = yield b.sources("long.bin", 10)
        self.assertEqual(source.publication, long)
        yield self.assertCoherent(a, b)

    @inlineCallbacks
    def test_lease_expiry(self):
        """
        Once A's lease passes by B's clock, B's reads drop A's records at
        once; B's next renewal deletes them from the database; A's next
        renewal says they were lost, and its resync brings them back.
        """
        a, b = yield self.pair()
        sa, sb = session("A", 1, "a"), session("B", 2, "b")
        yield a.add_session(sa)
        yield a.put(sa.session_id, pub())
        yield b.add_session(sb)
        yield b.put(sb.session_id, pub())
        yield b.whenSynced()
        self.assertEqual(hosts((yield b.sources("notes.pdf", 10))), ["a", "b"])

        self.clock_b.advance(self.LEASE / 2)
        self.assertFalse((yield b.renew()))
        self.clock_b.advance(self.LEASE / 2 + 1)
        # A's lease passed by B's clock (B's did not): A's records are
        # hidden before anyone deleted anything.
        self.assertEqual(hosts((yield b.sources("notes.pdf", 10))), ["b"])
        self.assertEqual((yield b.sessions()), [sb])
        self.assertEqual((yield b.catalogue("", 10)), [CatalogueEntry("notes.pdf", 10, SHA_A, 1, ("b",))])
        self.assertEqual(len(self.rows("SELECT * FROM sessions WHERE tracker_id = 'A'")), 1)

        self.assertFalse((yield b.renew()))
        self.assertEqual(self.rows("SELECT * FROM sessions WHERE tracker_id = 'A'"), [])
        self.assertEqual(self.rows("SELECT * FROM trackers WHERE tracker_id = 'A'"), [])
        # A's own view followed the deletion.
        yield a.whenSynced()
        self.assertEqual((yield a.sessions()), [sb])

        self.clock_a.advance(self.LEASE + 1)
        self.assertTrue((yield a.renew()))
        yield a.resync([(sa, [pub()])])
        self.assertFalse((yield a.renew()))
        yield b.whenSynced()
        self.assertEqual(hosts((yield b.sources("notes.pdf", 10))), ["b", "a"])
        yield self.assertCoherent(a, b)

    @inlineCallbacks
    def test_restart_drops_only_own_rows(self):
        """
        Rows a previous run of A left (it crashed) go when A starts again;
        B's stay, in the database and in B's view.
        """
        self.clock_a, self.clock_b = task.Clock(), task.Clock()
        b = yield self.started("B", clock=self.clock_b, lease=self.LEASE)
        sb = session("B", 1, "b")
        yield b.add_session(sb)
        yield b.put(sb.session_id, pub())
        # What a crashed run of A left behind.
        old = session("A", 7, "a")
        self.rows(
            "INSERT INTO trackers VALUES ('A', 0, %(lease)s);"
            " INSERT INTO sessions VALUES (%(sid)s, 'A', 'a', '10.0.0.1', 1, 1, 7.0);"
            " INSERT INTO publications (session_id, fname, lname) VALUES (%(sid)s, 'notes.pdf', 'x')",
            {"sid": old.session_id, "lease": self.LEASE},
        )
        a = yield self.started("A", clock=self.clock_a, lease=self.LEASE)
        self.assertEqual(
            self.rows("SELECT session_id FROM sessions ORDER BY session_id"), [(sb.session_id,)]
        )
        self.assertEqual(self.rows("SELECT session_id, fname FROM publications"), [(sb.session_id, "notes.pdf")])
        self.assertEqual(hosts((yield a.sources("notes.pdf", 10))), ["b"])
        yield b.whenSynced()
        self.assertEqual((yield b.sessions()), [sb])
        yield self.assertCoherent(a, b)

    @inlineCallbacks
    def test_stop_signs_off(self):
        a, b = yield self.pair()
        yield a.add_session(session("A", 1, "a"))
        yield b.add_session(session("B", 2, "b"))
        yield a.stop()
        yield b.whenSynced()
        self.assertEqual([s.tracker_id for s in (yield b.sessions())], ["B"])
        self.assertEqual(self.rows("SELECT tracker_id FROM trackers"), [("B",)])

    @inlineCallbacks
    def test_resync_keeps_unchanged_seqs(self):
        a, b = yield self.pair()
        s = session("A", 1, "a")
        yield a.add_session(s)
        yield a.put(s.session_id, pub("keep"))
        yield a.put(s.session_id, pub("change"))
        [before] = yield a.sources("keep", 10)
        yield a.resync([(s, [pub("keep"), pub("change", size=1), pub("change", size=2)])])
        [after] = yield a.sources("keep", 10)
        self.assertEqual(after.seq, before.seq)
        [changed] = yield a.sources("change", 10)
        self.assertEqual(changed.publication.file_size, 2)
        self.assertGreater(changed.seq, before.seq)
        yield self.assertCoherent(a, b)

    @inlineCallbacks
    def test_put_for_a_session_gone_from_the_database(self):
        """
        Another tracker deleted our session (our lease had lapsed): the put
        fails with IndexUnavailable and the next renewal asks for a resync.
        """
        a, b = yield self.pair()
        s = session("A", 1, "a")
        yield a.add_session(s)
        self.rows("DELETE FROM sessions")
        yield self.assertFailure(a.put(s.session_id, pub()), IndexUnavailable)
        self.assertTrue((yield a.renew()))
        yield a.resync([(s, [pub()])])
        self.assertFalse((yield a.renew()))
        yield self.assertCoherent(a, b)


class BatchTests(DatabaseMixin, unittest.TestCase):
    """
    Writes issued while a batch is in flight go together in the next one.
    """

    @inlineCallbacks
    def test_a_burst_is_one_batch(self):
        store = yield self.started("A", clock=task.Clock())
        other = yield self.started("B", clock=task.Clock())
        before = store.batches
        sessions = [session("A", n, f"h{n}") for n in range(1, 51)]
        # The first write leaves at once; the 49 issued meanwhile wait for
        # it and go together.
        yield gatherResults([store.add_session(s) for s in sessions])
        self.assertEqual(store.batches - before, 2)
        before = store.batches
        yield gatherResults([store.put(s.session_id, pub()) for s in sessions])
        self.assertEqual(store.batches - before, 2)
        self.assertEqual(self.rows("SELECT count(*) FROM publications"), [(50,)])
        # Every change reached the other tracker, in order.
        yield other.whenSynced()
        seqs = [source.seq for source in (yield other.sources("notes.pdf", 100))]
        self.assertEqual(len(seqs), 50)
        self.assertEqual(seqs, sorted(seqs))
        removals = [store.remove_session(s.session_id) for s in sessions[:25]]
        deletions = [store.delete(s.session_id, "notes.pdf") for s in sessions[25:]]
        self.assertEqual((yield store.sources("notes.pdf", 100)), [])
        yield gatherResults(removals)
        self.assertEqual((yield gatherResults(deletions)), [True] * 25)
        yield other.whenSynced()
        self.assertEqual((yield other.sources("notes.pdf", 100)), [])
        self.assertEqual(len((yield other.sessions())), 25)

    @inlineCallbacks
    def test_a_storm_of_removals(self):
        """
        Removals that follow each other go as few statements and
        notifications (several, when one cannot carry them all), and every
        tracker drops every session.
        """
        store = yield self.started("A", clock=task.Clock())
        other = yield self.started("B", clock=task.Clock())
        sessions = [session("A", n, f"h{n}") for n in range(1, 1201)]
        yield gatherResults([store.add_session(s) for s in sessions])
        yield gatherResults([store.put(s.session_id, pub()) for s in sessions])
        yield other.whenSynced()
        self.assertEqual(len((yield other.sources("notes.pdf", 2000))), 1200)
        before = store.batches
        yield gatherResults([store.remove_session(s.session_id) for s in sessions])
        # The first alone, then at most MAX_BATCH per batch.
        self.assertEqual(store.batches - before, 1 + -(-1199 // MAX_BATCH))
        yield other.whenSynced()
        self.assertEqual((yield other.sources("notes.pdf", 2000)), [])
        self.assertEqual((yield other.sessions()), [])
        self.assertEqual(self.rows("SELECT count(*) FROM sessions"), [(0,)])
        self.assertEqual(self.rows("SELECT count(*) FROM publications"), [(0,)])

    @inlineCallbacks
    def test_a_refused_write_fails_alone(self):
        """
        A publication for a session no longer in the database makes its
        batch roll back; the batch's writes are sent again one by one and
        only that one fails.
        """
        store = yield self.started("A", clock=task.Clock())
        a, gone = session("A", 1, "a"), session("A", 2, "gone")
        yield store.add_session(a)
        yield store.add_session(gone)
        self.rows("DELETE FROM sessions WHERE session_id = %s", (gone.session_id,))
        first = store.whenSynced()
        writes = [store.put(a.session_id, pub("x")), store.put(gone.session_id, pub("y")),
                  store.put(a.session_id, pub("z"))]
        yield first
        yield writes[0]
        yield self.assertFailure(writes[1], IndexUnavailable)
        yield writes[2]
        self.assertEqual(
            self.rows("SELECT fname FROM publications ORDER BY seq"), [("x",), ("z",)]
        )
        self.assertEqual(hosts((yield store.sources("z", 10))), ["a"])
        # The loss is noticed: the next renewal asks for a resync.
        self.assertTrue((yield store.renew()))


class _Half(Protocol):
    """
    One side of a forwarded connection: passes bytes to its peer, unless
    the proxy is stalled.
    """

    peer: _Half | None = None

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy

    def connectionMade(self) -> None:
        self.proxy.halves.add(self)

    def dataReceived(self, data: bytes) -> None:
        if not self.proxy.stalled and self.peer is not None:
            self.peer.transport.write(data)

    def connectionLost(self, reason) -> None:
        self.proxy.halves.discard(self)
        if self.peer is not None:
            self.peer.transport.loseConnection()


class _Front(_Half):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.transport.pauseProducing()
        back = _Half(self.proxy)
        endpoint = TCP4ClientEndpoint(reactor, self.proxy.host, self.proxy.port)
        connectProtocol(endpoint, back).addCallbacks(self._joined, lambda _: self.transport.loseConnection())

    def _joined(self, back: _Half) -> None:
        self.peer, back.peer = back, self
        self.transport.resumeProducing()


class Proxy(Factory):
    """
    A TCP forwarder on 127.0.0.1 to the PostgreSQL server, which a test can
    cut (close everything and stop listening), restore, or stall (keep the
    connections open but pass nothing).
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.halves: set[_Half] = set()
        self.stalled = False
        self.listening = None
        self.number = 0

    def buildProtocol(self, addr):
        return _Front(self)

    def start(self) -> None:
        self.listening = reactor.listenTCP(self.number, self, interface="127.0.0.1")
        self.number = self.listening.getHost().port

    def cut(self) -> Deferred:
        port, self.listening = self.listening, None
        for half in list(self.halves):
            half.transport.abortConnection()
        return port.stopListening()

    def restore(self) -> None:
        """
        Listen again after a cut.
        """
        self.start()

    def stop(self) -> Deferred | None:
        for half in list(self.halves):
            half.transport.abortConnection()
        if self.listening is not None:
            return self.listening.stopListening()
        return None

    def url(self, base: str) -> str:
        """
        C{base} (a database URL), reached through this proxy.
        """
        parts = urlsplit(base)
        auth = parts.netloc.rpartition("@")[0]
        return urlunsplit(parts._replace(netloc=f"{auth}@127.0.0.1:{self.number}" if auth else f"127.0.0.1:{self.number}"))


class OutageTests(DatabaseMixin, unittest.TestCase):
    """
    A store reaching PostgreSQL through a proxy that the test breaks.
    """

    def setUp(self):
        super().setUp()
        settings = parse_url(base_dsn())[0]
        self.proxy = Proxy(settings.host or "127.0.0.1", settings.port or 5432)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)

    @inlineCallbacks
    def test_outage_and_recovery(self):
        """
        Cut: writes fail at once (no timeout involved: the timeout is far
        away), reads answer from the view.  Restored: the store reconnects
        by itself, renew() asks for a resync, and the resync restores what
        the database lost meanwhile.
        """
        store = yield self.started(
            "A", url=self.proxy.url(self.url), timeout=300.0, delays=lambda: repeat(0.05)
        )
        s = session("A", 1, "a")
        yield store.add_session(s)
        yield store.put(s.session_id, pub())
        self.assertFalse((yield store.renew()))

        yield self.proxy.cut()
        failure = yield self.assertFailure(store.put(s.session_id, pub("other.txt")), IndexUnavailable)
        self.assertNotIn("took more than", str(failure))
        self.assertEqual(hosts((yield store.sources("notes.pdf", 10))), ["a"])
        self.assertEqual((yield store.sessions()), [s])
        yield self.assertFailure(store.renew(), IndexUnavailable)
        # Meanwhile the database loses our records.
        self.rows("DELETE FROM sessions")

        self.proxy.restore()
        yield store.whenConnected()
        self.assertTrue((yield store.renew()))
        # The reloaded view shows the loss until the resync.
        self.assertEqual((yield store.sessions()), [])
        yield store.resync([(s, [pub()])])
        self.assertFalse((yield store.renew()))
        self.assertEqual(hosts((yield store.sources("notes.pdf", 10))), ["a"])
        self.assertEqual(self.rows("SELECT session_id, fname FROM publications"), [(s.session_id, "notes.pdf")])
        yield store.put(s.session_id, pub("other.txt"))
        self.assertEqual(hosts((yield store.direct().sources("other.txt", 10))), ["a"])

    @inlineCallbacks
    def test_removal_during_outage_hides_at_once(self):
        store = yield self.started("A", url=self.proxy.url(self.url), delays=lambda: repeat(0.05))
        s = session("A", 1, "a")
        yield store.add_session(s)
        yield store.put(s.session_id, pub())
        yield self.proxy.cut()
        yield self.assertFailure(store.delete(s.session_id, "notes.pdf"), IndexUnavailable)
        self.assertEqual((yield store.sources("notes.pdf", 10)), [])
        yield self.assertFailure(store.remove_session(s.session_id), IndexUnavailable)
        self.assertEqual((yield store.sessions()), [])

    @inlineCallbacks
    def test_stalled_server_times_out(self):
        """
        A server that stops answering (without closing) fails writes with
        IndexUnavailable after the timeout (on the store's clock), and the
        stuck connection is replaced once the server answers again.
        """
        clock = task.Clock()
        store = yield self.started("A", url=self.proxy.url(self.url), clock=clock, timeout=5.0)
        s = session("A", 1, "a")
        yield store.add_session(s)
        self.proxy.stalled = True
        d = store.put(s.session_id, pub())
        self.assertNoResult(d)
        clock.advance(5)
        failure = yield self.assertFailure(d, IndexUnavailable)
        self.assertIn("took more than 5 s", str(failure))
        self.assertEqual((yield store.sessions()), [s])

        # The other connections were idle: nothing of theirs was dropped.
        self.proxy.stalled = False
        connected = store.whenConnected()
        # The timed-out connection retries after the first backoff delay.
        clock.advance(10)
        yield connected
        self.assertTrue((yield store.renew()))
        yield store.resync([(s, [pub()])])
        self.assertFalse((yield store.renew()))
        self.assertEqual(hosts((yield store.sources("notes.pdf", 10))), ["a"])

    @inlineCallbacks
    def test_start_fails_when_unreachable(self):
        yield self.proxy.cut()
        store = self.make("A", url=self.proxy.url(self.url))
        failure = yield self.assertFailure(store.start(), IndexUnavailable)
        self.assertIn(f"127.0.0.1:{self.proxy.number}", str(failure))
        self.assertEqual((yield store.sessions()), [])
        yield self.assertFailure(store.add_session(session("A", 1)), IndexUnavailable)

    @inlineCallbacks
    def test_start_times_out_on_a_stalled_server(self):
        clock = task.Clock()
        self.proxy.stalled = True
        store = self.make("A", url=self.proxy.url(self.url), clock=clock, connect_timeout=3.0)
        d = store.start()
        self.assertNoResult(d)
        clock.advance(3)
        yield self.assertFailure(d, IndexUnavailable)


class SchemaTests(DatabaseMixin, unittest.TestCase):
    """
    Creation, versions and indexes.
    """

    @inlineCallbacks
    def test_refuses_a_newer_schema(self):
        newer = LATEST_SCHEMA_VERSION + 1
        self.rows(
            "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (%s)",
            (newer,),
        )
        store = self.make("A")
        failure = yield self.assertFailure(store.start(), SchemaTooNew)
        self.assertEqual(failure.found, newer)
        self.assertIn(f"schema version {newer}", str(failure))
        # Nothing of ours was created in it.
        self.assertEqual(self.rows("SELECT to_regclass('trackers')"), [(None,)])

    @inlineCallbacks
    def test_creation_is_idempotent_and_concurrent(self):
        stores = [self.make(t) for t in ("A", "B", "C")]
        yield gatherResults([s.start() for s in stores])
        self.assertEqual(self.rows("SELECT version FROM schema_version"), [(LATEST_SCHEMA_VERSION,)])
        yield stores[0].stop()
        again = yield self.started("A")
        self.assertEqual(self.rows("SELECT version FROM schema_version"), [(LATEST_SCHEMA_VERSION,)])
        self.assertEqual(again.schema_version, LATEST_SCHEMA_VERSION)

    @inlineCallbacks
    def test_migrates_version_1(self):
        """
        A version 1 database (the schema brief's) gains the version 2
        columns; another tracker's rows survive.
        """
        self.rows(V1_SCHEMA)
        self.rows(
            "INSERT INTO trackers VALUES ('B', 0, 1e12);"
            " INSERT INTO sessions VALUES ('B:1', 'B', 'b', '10.0.0.2', 1, 1, 1.0);"
            " INSERT INTO publications (session_id, fname, lname, sha256) VALUES ('B:1', 'old.txt', 'old.txt', NULL)"
        )
        store = yield self.started("A")
        self.assertEqual(self.rows("SELECT version FROM schema_version"), [(LATEST_SCHEMA_VERSION,)])
        self.assertEqual(self.rows("SELECT fname, root, piece_size FROM publications"), [("old.txt", None, None)])
        [source] = yield store.sources("old.txt", 10)
        self.assertEqual(source.publication, Publication("old.txt", "old.txt"))
        s = session("A", 1, "a")
        yield store.add_session(s)
        rooted = Publication("new.bin", "new.bin", 5, 1.0, SHA_A, "c" * 64, 262144)
        yield store.put(s.session_id, rooted)
        self.assertEqual(self.rows("SELECT root, piece_size FROM publications WHERE fname = 'new.bin'"),
                         [("c" * 64, 262144)])
        # Version 3: key bindings, and the sessions' fingerprints (the old
        # row keeps none: it is unauthenticated).
        self.assertEqual((yield store.bind_key("a", "d" * 64)), "d" * 64)
        self.assertEqual((yield store.bind_key("a", "e" * 64)), "d" * 64)
        self.assertEqual(self.rows("SELECT fingerprint FROM sessions WHERE session_id = 'B:1'"), [(None,)])

    @inlineCallbacks
    def test_restores_a_dropped_index(self):
        store = yield self.started("A")
        yield store.stop()
        self.rows("DROP INDEX publications_fname")
        yield self.started("A")
        self.assertEqual(self.rows("SELECT to_regclass('publications_fname') IS NOT NULL"), [(True,)])

    def explain(self, statement, params, *disable):
        """
        The plan of C{statement}, with sequential scans (and C{disable})
        off so that a few rows suffice to show which indexes can serve it.
        """
        params = dict(params, me="A", now=0.0)
        settings = "".join(f"SET {name} = off; " for name in ("enable_seqscan",) + disable)
        rows = self.rows(settings + "EXPLAIN " + statement, params)
        return "\n".join(row[0] for row in rows)

    @inlineCallbacks
    def test_queries_use_the_indexes(self):
        store = yield self.started("A")
        sessions = [session("A", n, f"host{n % 7}") for n in range(40)]
        publications = [(s, [pub(f"file{n:03d}.bin") for n in range(i, i + 10)]) for i, s in enumerate(sessions)]
        yield store.resync(publications)
        self.rows("ANALYZE")
        plan = self.explain(pg_sql.DB_SOURCES, {"fname": "file005.bin", "limit": 10})
        self.assertIn("publications_fname", plan)
        plan = self.explain(pg_sql.DB_HOST_FILES, {"hostname": "host3"})
        self.assertIn("sessions_hostname", plan)
        # Searches: a full scan of the (fname, seq) index also returns rows
        # in catalogue order, which the planner likes on small tables; with
        # plain index scans off, only an index that matches can serve.
        for pattern in ("ile01", "FILE0*.bin"):
            statement, params = catalogue_query(pattern)
            plan = self.explain(statement, params, "enable_indexscan")
            self.assertIn("Bitmap Index Scan on publications_fname_trgm", plan)
        # And the database answers as the view does.
        direct = store.direct()
        for pattern in ("ile01", "FILE0*.bin", "*[!0-4].bin", "[--g]*[0-]?.bin", "*[5-1]*", "*[!]*", ""):
            self.assertEqual((yield direct.catalogue(pattern, 15)), (yield store.catalogue(pattern, 15)))


class URLTests(unittest.SynchronousTestCase):
    """
    Reading C{postgresql://} URLs (no server needed).
    """

    def test_full(self):
        settings, options = parse_url("postgresql://p2p:s%40cret@db.example:5433/index?pool_size=4&sslmode=require")
        self.assertEqual(settings.host, "db.example")
        self.assertEqual(settings.port, 5433)
        self.assertEqual(settings.user, "p2p")
        self.assertEqual(settings.password, "s@cret")
        self.assertEqual(settings.dbname, "index")
        self.assertEqual(options, {"pool_size": 4})
        self.assertEqual(dict(settings.extra), {"sslmode": "require"})
        self.assertNotIn("cret", settings.redacted())
        self.assertNotIn("cret", repr(settings))
        self.assertEqual(settings.redacted(), "postgresql://p2p:***@db.example:5433/index")
        self.assertTrue(settings.needs_lookup())

    def test_short_scheme_and_defaults(self):
        settings, options = parse_url("postgres://127.0.0.1/x")
        self.assertEqual((settings.host, settings.port, settings.user, settings.password), ("127.0.0.1", None, None, None))
        self.assertFalse(settings.needs_lookup())
        kwargs = settings.kwargs()
        self.assertEqual(kwargs["dbname"], "x")
        self.assertNotIn("password", kwargs)
        self.assertEqual(kwargs["keepalives"], "1")

    def test_bad(self):
        for url in ("mysql://x/y", "postgresql://h:notaport/x", "postgresql://h/x?pool_size=many"):
            self.assertRaises(ValueError, parse_url, url)

    def test_from_url_options(self):
        store = PostgresStore.from_url(
            "postgresql://u@h/d?lease=45&timeout=2", clock=reactor, tracker_id="T", lease=90.0, pool_size=2
        )
        self.assertEqual((store.lease, store.timeout, store.pool_size), (45.0, 2.0, 2))
        self.assertIn("twistedp2p-tracker T", dict(store.settings.extra)["application_name"])
        self.assertRaises(
            ValueError, PostgresStore.from_url, "postgresql://u@h/d?pool_size=0", clock=reactor, tracker_id="T"
        )
        self.assertRaises(ValueError, PostgresStore.from_url, "postgresql://u@h/d", clock=task.Clock(), tracker_id="T")

    def test_writes_fail_before_start(self):
        store = PostgresStore.from_url("postgresql://u@h/d", clock=reactor, tracker_id="T")
        self.failureResultOf(store.put("T:1", pub()), IndexUnavailable)
        self.assertEqual(self.successResultOf(store.sources("notes.pdf", 1)), [])
        self.successResultOf(store.stop())

    def test_link_down_fails_at_once(self):
        settings = parse_url("postgresql://u@127.0.0.1/d")[0]
        link = Link(reactor, task.Clock(), settings, "test")
        self.failureResultOf(link.runQuery("SELECT 1"), LinkDown)


class _DeadConnection:
    """
    A psycopg2 connection whose socket libpq dropped during an outage:
    not closed, but its descriptor is -1.
    """

    closed = 0
    notifies: list = []

    def fileno(self):
        return -1

    def poll(self):
        import psycopg2.extensions

        return psycopg2.extensions.POLL_OK


class _FDReactor:
    """
    addReader/removeReader as the epoll reactor does them: a descriptor of
    -1 cannot be watched.
    """

    def __init__(self):
        self.readers = set()

    def addReader(self, reader):
        if reader.fileno() < 0:
            raise ValueError("file descriptor cannot be a negative integer (-1)")
        self.readers.add(reader)

    def removeReader(self, reader):
        self.readers.discard(reader)

    def addWriter(self, writer):
        self.addReader(writer)

    def removeWriter(self, writer):
        self.readers.discard(writer)

    def callLater(self, delay, f, *args, **kwargs):
        return task.Clock().callLater(delay, f, *args, **kwargs)


class DeadSocketTests(unittest.SynchronousTestCase):
    """
    A read event on a connection whose socket is gone reports a lost
    connection to the reactor instead of raising (which the reactor would
    log as "Unhandled Error ... ValueError").
    """

    def link(self):
        settings = parse_url("postgresql://u@127.0.0.1/d")[0]
        link = Link(_FDReactor(), task.Clock(), settings, "test")
        link._connection = _DeadConnection()
        return link

    def test_read_returns_connection_lost(self):
        from twisted.internet.error import ConnectionLost

        reason = self.link().doRead()
        self.assertIsInstance(reason, ConnectionLost)

    def test_query_finished_on_a_dead_socket(self):
        link = self.link()
        cursor = object()
        link._cursors.add(cursor)
        link.cursorFinished(cursor)
        self.assertEqual(link.reactor.readers, set())


_names = st.text(alphabet="abAB.*?[]!-_%x^\\", min_size=0, max_size=8)


class GlobTests(unittest.SynchronousTestCase):
    """
    The database's glob translation agrees with the view's matcher.
    """

    def test_examples(self):
        self.assertEqual(glob_to_regex("*.pdf"), "^.*\\.pdf$")
        self.assertEqual(glob_to_regex("x[[]1]*"), "^x[\\[]1\\].*$")
        self.assertEqual(glob_to_regex("[!a-c]?"), "^[^a-c].$")
        self.assertEqual(glob_to_regex("a[b"), "^a\\[b$")

    @settings(max_examples=500, deadline=None, database=None)
    @given(pattern=_names.filter(lambda p: any(c in p for c in "*?[")), name=_names)
    def test_agrees_with_fnmatch(self, pattern, name):
        expected = fnmatch.fnmatchcase(name.casefold(), pattern.casefold())
        regex = glob_to_regex(pattern.lower())
        self.assertEqual(re.match(regex, name.lower(), re.DOTALL) is not None, expected, (pattern, name, regex))


class IndexViewTests(unittest.SynchronousTestCase):
    """
    The per-tracker view, its leases and merged reads (no server needed).
    """

    def setUp(self):
        self.now = 100.0
        self.view = IndexView("A", lambda: self.now)
        self.view.load([("A", 50.0), ("B", 150.0), ("C", 150.0)], [], [])
        self.seq = 0

    def add(self, tracker, n, hostname, *fnames, size=10, sha=SHA_A):
        s = session(tracker, n, hostname)
        self.view.add_session(s)
        for fname in fnames:
            self.seq += 1
            self.view.put(s.session_id, pub(fname, size=size, sha=sha), self.seq)
        return s

    def test_merged_reads_match_one_index(self):
        self.add("A", 1, "a", "x", "y")
        self.add("B", 2, "b", "x", "z", sha=SHA_B)
        self.add("C", 3, "a", "y", "x")
        self.add("B", 4, "c", "x")
        everything = [src for name in "xyz" for src in self.view.sources(name, 100)]
        self.assertEqual([s.seq for s in self.view.sources("x", 100)], [1, 3, 6, 7])
        self.assertEqual([s.seq for s in self.view.sources("x", 2)], [1, 3])
        self.assertEqual([s.seq for s in self.view.host_files("a")], [1, 2, 5, 6])
        for limit in (1, 2, 3, 10):
            self.assertEqual(self.view.catalogue("", limit), group_catalogue(sorted(everything, key=lambda s: s.seq), limit))
        self.assertEqual([s.session_id for s in self.view.sessions()], ["A:1", "B:2", "C:3", "B:4"])

    def test_expired_lease_hides_other_trackers_only(self):
        self.add("A", 1, "a", "x")  # own lease passed: still shown
        self.add("B", 2, "b", "x")
        self.now = 151.0
        self.assertEqual(hosts(self.view.sources("x", 10)), ["a"])
        self.assertEqual([s.tracker_id for s in self.view.sessions()], ["A"])
        self.assertEqual(len(self.view.all_sessions()), 2)
        self.view.set_lease("B", 200.0)
        self.assertEqual(hosts(self.view.sources("x", 10)), ["a", "b"])

    def test_tracker_without_lease_is_hidden(self):
        self.view.add_session(session("D", 1, "d"))
        self.assertEqual(self.view.sessions(), [])

    def test_drop_and_replace_tracker(self):
        self.add("B", 2, "b", "x")
        self.view.drop_tracker("B")
        self.assertEqual(self.view.sources("x", 10), [])
        self.assertFalse(self.view.put("B:2", pub(), 99))
        s = session("B", 3, "b")
        self.view.replace_tracker(
            "B", [("B", 150.0)], [session_to_row(s)],
            [(7, s.session_id, "y", "y", None, '"2025"', None, None, None)],
        )
        [source] = self.view.sources("y", 10)
        self.assertEqual((source.seq, source.publication.last_modified), (7, "2025"))
        self.assertEqual(self.view.lease("B"), 150.0)

    def test_catalogue_pattern_across_trackers(self):
        self.add("A", 1, "a", "Notes.pdf", "b.txt")
        self.add("B", 2, "b", "notes.PDF")
        matches = pattern_matcher("*.pdf")
        self.assertTrue(all(matches(e.fname) for e in self.view.catalogue("*.pdf", 10)))
        self.assertEqual([e.fname for e in self.view.catalogue("*.pdf", 10)], ["Notes.pdf", "notes.PDF"])
