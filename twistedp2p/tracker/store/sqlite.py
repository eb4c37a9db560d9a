"""
The embedded index: SQLite through C{adbapi} (one thread), read through an
in-memory view.

Every write runs in the pool's single thread and commits before the view
changes and the write's Deferred fires; reads are answered from the view
(L{MemoryIndex}) without touching the database.  One tracker owns the file:
C{start()} drops every session a previous run left behind.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Callable, Iterable

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import CatalogueEntry, Publication, Session, Source
from twistedp2p.tracker.store.interface import IIndexStore
from twistedp2p.tracker.store.memory import MemoryIndex
from twistedp2p.tracker.store.schema import (
    SCHEMA_VERSION,
    SchemaTooNew,
    decode_mtime,
    encode_mtime,
)

_CREATE_V1 = [
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS trackers (
        tracker_id TEXT PRIMARY KEY,
        started_at REAL,
        lease_expires REAL)""",
    """CREATE TABLE IF NOT EXISTS sessions (
        session_id TEXT PRIMARY KEY,
        tracker_id TEXT NOT NULL,
        hostname TEXT NOT NULL,
        ip TEXT NOT NULL,
        p2p_port INTEGER NOT NULL,
        version INTEGER NULL,
        connected_at REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS sessions_hostname ON sessions (hostname)",
    "CREATE INDEX IF NOT EXISTS sessions_tracker ON sessions (tracker_id)",
    # AUTOINCREMENT: a seq is never reused, so a replace (delete + insert)
    # always takes a larger one.
    """CREATE TABLE IF NOT EXISTS publications (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL
            REFERENCES sessions (session_id) ON DELETE CASCADE,
        fname TEXT NOT NULL,
        lname TEXT NOT NULL,
        file_size BIGINT NULL,
        last_modified TEXT NULL,
        sha256 TEXT NULL,
        UNIQUE (session_id, fname))""",
    "CREATE INDEX IF NOT EXISTS publications_fname ON publications (fname, seq)",
]

#: version -> statements that bring a database from that version to the next.
_MIGRATIONS: dict[int, list[str]] = {}

_INSERT_SESSION = (
    "INSERT INTO sessions (session_id, tracker_id, hostname, ip, p2p_port,"
    " version, connected_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET tracker_id = excluded.tracker_id,"
    " hostname = excluded.hostname, ip = excluded.ip,"
    " p2p_port = excluded.p2p_port, version = excluded.version,"
    " connected_at = excluded.connected_at"
)
_DELETE_PUBLICATION = "DELETE FROM publications WHERE session_id = ? AND fname = ?"
_INSERT_PUBLICATION = (
    "INSERT INTO publications (session_id, fname, lname, file_size,"
    " last_modified, sha256) VALUES (?, ?, ?, ?, ?, ?)"
)


def _open_connection(connection: sqlite3.Connection) -> None:
    """
    Per-connection settings (C{cp_openfun}): cascade deletes need foreign
    keys on; WAL lets readers (the admin with the sqlite3 shell) in while
    we write.
    """
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")


def _session_row(s: Session) -> tuple[Any, ...]:
    return (s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at)


def _insert_publication(cursor: Any, session_id: str, p: Publication) -> int:
    cursor.execute(_DELETE_PUBLICATION, (session_id, p.fname))
    cursor.execute(
        _INSERT_PUBLICATION,
        (session_id, p.fname, p.lname, p.file_size, encode_mtime(p.last_modified), p.sha256),
    )
    return cursor.lastrowid


@implementer(IIndexStore)
class SQLiteStore:
    """
    An L{IIndexStore} in one SQLite file (or C{":memory:"}).

    @param path: the database file, created if missing, or C{":memory:"}.
    @param clock: time source (C{IReactorTime}) for the tracker row.  When
        C{reactor} is not given and C{clock} is a full reactor, the pool uses
        it too.
    @param tracker_id: the tracker that owns the file.
    @param reactor: the reactor for the C{adbapi} pool's thread and startup
        (default: C{clock} if it can run threads, else the global one, which
        C{adbapi} looks up itself).
    """

    schema_version = SCHEMA_VERSION
    log = Logger()

    def __init__(self, path: str, clock: Any, tracker_id: str = "local", reactor: Any = None) -> None:
        self.path = path
        self.tracker_id = tracker_id
        self._clock = clock
        if reactor is None and hasattr(clock, "callInThread"):
            reactor = clock
        self._reactor = reactor
        self._pool: adbapi.ConnectionPool | None = None
        self.index = MemoryIndex()
        #: Synchronous reads for the registry's hot path (see
        #: L{Registry.fetch_now}).
        self.read_view = self.index

    # -- life cycle ----------------------------------------------------------

    def describe(self) -> str:
        """
        Where the index lives, for people.
        """
        return "SQLite in memory" if self.path == ":memory:" else f"SQLite {self.path}"

    def start(self) -> Deferred[None]:
        """
        Open the file, create or migrate the schema, and drop what a
        previous run left.  Fails with L{SchemaTooNew} for a newer schema,
        L{IndexUnavailable} when SQLite cannot open or write the file.
        """
        kwargs: dict[str, Any] = {}
        if self._reactor is not None:
            kwargs["cp_reactor"] = self._reactor
        self._pool = adbapi.ConnectionPool(
            "sqlite3",
            self.path,
            cp_min=1,
            cp_max=1,
            cp_noisy=False,
            cp_openfun=_open_connection,
            check_same_thread=False,
            **kwargs,
        )
        self.index.clear()
        d = self._pool.runInteraction(self._setup, self._clock.seconds())
        d.addErrback(self._unavailable, f"cannot open the SQLite index {self.path!r}")
        d.addErrback(self._close_after_failure)
        return d

    def _setup(self, cursor: Any, now: float) -> None:
        cursor.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'")
        if cursor.fetchone() is None:
            for statement in _CREATE_V1:
                cursor.execute(statement)
            cursor.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        else:
            cursor.execute("SELECT version FROM schema_version")
            row = cursor.fetchone()
            if row is None:
                raise IndexUnavailable(f"the SQLite index {self.path!r} has an empty schema_version table")
            version = row[0]
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(version, where=repr(self.path))
            while version < SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    cursor.execute(statement)
                version += 1
                cursor.execute("UPDATE schema_version SET version = ?", (version,))
            # Idempotent: brings back an index someone dropped by hand.
            for statement in _CREATE_V1[1:]:
                cursor.execute(statement)
        # A single tracker owns this file: whatever is in it is stale.
        cursor.execute("DELETE FROM publications")
        cursor.execute("DELETE FROM sessions")
        cursor.execute("DELETE FROM trackers")
        cursor.execute(
            "INSERT INTO trackers (tracker_id, started_at, lease_expires) VALUES (?, ?, NULL)",
            (self.tracker_id, now),
        )

    def _close_after_failure(self, failure: Failure) -> Failure:
        self._close_pool()
        return failure

    def _close_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def stop(self) -> Deferred[None]:
        """
        Wait for queued writes, then close the database.
        """
        pool = self._pool
        if pool is None:
            return succeed(None)
        # The pool has one thread: this no-op runs after every queued write.
        d = pool.runInteraction(lambda cursor: None)
        d.addErrback(lambda f: self.log.failure("closing the SQLite index", f))
        d.addBoth(lambda _: self._close_pool())
        return d

    # -- writes --------------------------------------------------------------

    def _write(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if self._pool is None:
            return _fail_unavailable("the SQLite index is not open")
        d = self._pool.runInteraction(interaction, *args)
        d.addErrback(self._unavailable, "the SQLite index failed")
        return d

    def _unavailable(self, failure: Failure, what: str) -> Failure:
        failure.trap(sqlite3.Error)
        self.log.failure("{what}", failure, what=what)
        raise IndexUnavailable(f"{what}: {failure.value}")

    def add_session(self, session: Session) -> Deferred[None]:
        d = self._write(_add_session, session)
        d.addCallback(lambda _: self.index.add_session(session))
        return d

    def remove_session(self, session_id: str) -> Deferred[None]:
        d = self._write(_remove_session, session_id)
        d.addCallback(lambda _: self.index.remove_session(session_id) and None)
        return d

    def put(self, session_id: str, publication: Publication) -> Deferred[None]:
        d = self._write(_insert_publication_txn, session_id, publication)
        d.addCallback(lambda seq: self.index.put(session_id, publication, seq) and None)
        return d

    def delete(self, session_id: str, fname: str) -> Deferred[bool]:
        d = self._write(_delete_publication, session_id, fname)
        d.addCallback(self._deleted, session_id, fname)
        return d

    def _deleted(self, deleted: bool, session_id: str, fname: str) -> bool:
        in_view = self.index.delete(session_id, fname)
        return bool(deleted or in_view)

    def resync(self, snapshot: Iterable[tuple[Session, Iterable[Publication]]]) -> Deferred[None]:
        """
        Replace every row with C{snapshot} in one transaction, then the view.
        """
        rows = [(session, list(publications)) for session, publications in snapshot]
        d = self._write(_resync, rows)
        d.addCallback(self._load_view, rows)
        return d

    def _load_view(self, seqs: list[list[int]], rows: list[tuple[Session, list[Publication]]]) -> None:
        self.index.clear()
        for (session, publications), numbers in zip(rows, seqs):
            self.index.add_session(session)
            for publication, seq in zip(publications, numbers):
                self.index.put(session.session_id, publication, seq)

    def renew(self) -> Deferred[bool]:
        """
        Nothing to renew: this tracker owns the file.
        """
        return succeed(False)

    # -- reads (from the view) -----------------------------------------------

    def sources(self, fname: str, limit: int) -> Deferred[list[Source]]:
        return succeed(self.index.sources(fname, limit))

    def host_files(self, hostname: str) -> Deferred[list[Source]]:
        return succeed(self.index.host_files(hostname))

    def catalogue(self, pattern: str | None, limit: int) -> Deferred[list[CatalogueEntry]]:
        return succeed(self.index.catalogue(pattern, limit))

    def sessions(self) -> Deferred[list[Session]]:
        return succeed(self.index.sessions())


def _fail_unavailable(message: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(IndexUnavailable(message))
    return d


# Interactions: run in the pool's thread with an adbapi Transaction (cursor).


def _add_session(cursor: Any, session: Session) -> None:
    cursor.execute(_INSERT_SESSION, _session_row(session))


def _remove_session(cursor: Any, session_id: str) -> None:
    cursor.execute("DELETE FROM sessions WHERE session_id = ?", (session_id,))


def _insert_publication_txn(cursor: Any, session_id: str, publication: Publication) -> int:
    return _insert_publication(cursor, session_id, publication)


def _delete_publication(cursor: Any, session_id: str, fname: str) -> bool:
    cursor.execute(_DELETE_PUBLICATION, (session_id, fname))
    return cursor.rowcount > 0


def _resync(cursor: Any, rows: list[tuple[Session, list[Publication]]]) -> list[list[int]]:
    cursor.execute("DELETE FROM publications")
    cursor.execute("DELETE FROM sessions")
    seqs = []
    for session, publications in rows:
        cursor.execute(_INSERT_SESSION, _session_row(session))
        seqs.append([_insert_publication(cursor, session.session_id, p) for p in publications])
    return seqs


def read_rows(path: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """
    Read every session and publication row from a database file,
    synchronously: for tests and offline tools only, never on the reactor.
    """
    connection = sqlite3.connect(path)
    try:
        sessions = connection.execute("SELECT * FROM sessions ORDER BY connected_at").fetchall()
        publications = [
            row[:5] + (decode_mtime(row[5]),) + row[6:]
            for row in connection.execute("SELECT * FROM publications ORDER BY seq")
        ]
    finally:
        connection.close()
    return sessions, publications
