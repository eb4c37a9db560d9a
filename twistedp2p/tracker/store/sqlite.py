"""
The embedded index: SQLite through C{adbapi} (one thread), read through an
in-memory view.

Writes run in the pool's single thread, batched: the writes issued while a
batch is being written go together in the next one, one transaction for the
lot (see L{SQLiteStore._write}).  Each write's Deferred fires only after its
batch committed.  Reads are answered from the view (L{MemoryIndex}) without
touching the database.  Removals (sessions, publications) leave the view at
once, before their write; additions enter it once committed.  One tracker
owns the file: C{start()} drops every session a previous run left behind.
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
from twistedp2p.tracker.store.removals import settle_removal
from twistedp2p.tracker.store.schema import (
    LATEST_SCHEMA_VERSION,
    SchemaTooNew,
    decode_mtime,
    encode_mtime,
)

#: Trust on first use (version 3): the public key each hostname is bound to.
_CREATE_HOST_KEYS = """CREATE TABLE IF NOT EXISTS host_keys (
        hostname TEXT PRIMARY KEY,
        public_key TEXT NOT NULL,
        bound_at REAL NOT NULL)"""

_CREATE = [
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
        connected_at REAL NOT NULL,
        fingerprint TEXT NULL)""",
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
        root TEXT NULL,
        piece_size INTEGER NULL,
        UNIQUE (session_id, fname))""",
    "CREATE INDEX IF NOT EXISTS publications_fname ON publications (fname, seq)",
    _CREATE_HOST_KEYS,
]

#: Columns added after version 1: name -> SQL type.  Version 2 adds the
#: content root and its piece size (docs/swarm.md).
_ADDED_COLUMNS = {2: [("root", "TEXT NULL"), ("piece_size", "INTEGER NULL")]}


def _add_columns(cursor: Any, version: int) -> None:
    """
    Add the columns of schema C{version} that are missing (idempotent: a
    migration interrupted half way, or run twice, is completed).
    """
    cursor.execute("PRAGMA table_info(publications)")
    present = {row[1] for row in cursor.fetchall()}
    for name, kind in _ADDED_COLUMNS[version]:
        if name not in present:
            cursor.execute(f"ALTER TABLE publications ADD COLUMN {name} {kind}")


#: version -> a step (run with a cursor) that brings a database from that
#: version to the next.
def _migrate_2_3(cursor: Any) -> None:
    """
    Version 3: the key bindings, and the fingerprint of each session's key
    (idempotent, like L{_add_columns}).
    """
    cursor.execute(_CREATE_HOST_KEYS)
    cursor.execute("PRAGMA table_info(sessions)")
    if "fingerprint" not in {row[1] for row in cursor.fetchall()}:
        cursor.execute("ALTER TABLE sessions ADD COLUMN fingerprint TEXT NULL")


_MIGRATIONS: dict[int, Callable[[Any], None]] = {1: lambda cursor: _add_columns(cursor, 2), 2: _migrate_2_3}

_INSERT_SESSION = (
    "INSERT INTO sessions (session_id, tracker_id, hostname, ip, p2p_port,"
    " version, connected_at, fingerprint) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (session_id) DO UPDATE SET tracker_id = excluded.tracker_id,"
    " hostname = excluded.hostname, ip = excluded.ip,"
    " p2p_port = excluded.p2p_port, version = excluded.version,"
    " connected_at = excluded.connected_at, fingerprint = excluded.fingerprint"
)
_DELETE_PUBLICATION = "DELETE FROM publications WHERE session_id = ? AND fname = ?"
_INSERT_PUBLICATION = (
    "INSERT INTO publications (session_id, fname, lname, file_size,"
    " last_modified, sha256, root, piece_size) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
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
    return (s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at, s.fingerprint)


def _insert_publication(cursor: Any, session_id: str, p: Publication) -> int:
    cursor.execute(_DELETE_PUBLICATION, (session_id, p.fname))
    cursor.execute(
        _INSERT_PUBLICATION,
        (
            session_id,
            p.fname,
            p.lname,
            p.file_size,
            encode_mtime(p.last_modified),
            p.sha256,
            p.root,
            p.piece_size,
        ),
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

    schema_version = LATEST_SCHEMA_VERSION
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
        #: Transactions committed by writes (one per batch), for tests and
        #: metrics.
        self.commits = 0
        # Writes waiting for the next batch: (interaction, args, Deferred).
        self._queued: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        self._writing = False
        self._stopping: Deferred[None] | None = None
        # Removals issued and not yet written, by session id and by
        # (session id, fname): an addition committing meanwhile stays out of
        # the view.  Values count the pending removals of that key.
        self._removing: dict[str, int] = {}
        self._unpublishing: dict[tuple[str, str], int] = {}

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
            for statement in _CREATE:
                cursor.execute(statement)
            cursor.execute("INSERT INTO schema_version (version) VALUES (?)", (LATEST_SCHEMA_VERSION,))
        else:
            cursor.execute("SELECT version FROM schema_version")
            row = cursor.fetchone()
            if row is None:
                raise IndexUnavailable(f"the SQLite index {self.path!r} has an empty schema_version table")
            version = row[0]
            if version > LATEST_SCHEMA_VERSION:
                raise SchemaTooNew(version, LATEST_SCHEMA_VERSION, where=repr(self.path))
            while version < LATEST_SCHEMA_VERSION:
                self.log.info(
                    "migrating the SQLite index {path} from schema version {version}",
                    path=self.path,
                    version=version,
                )
                # One transaction (the interaction's): all of it or nothing.
                _MIGRATIONS[version](cursor)
                version += 1
                cursor.execute("UPDATE schema_version SET version = ?", (version,))
            # Idempotent: brings back an index someone dropped by hand.
            for statement in _CREATE[1:]:
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
        self._stopping = None
        if pool is not None:
            pool.close()

    def stop(self) -> Deferred[None]:
        """
        Wait for queued writes, then close the database.
        """
        if self._pool is None:
            return succeed(None)
        if self._stopping is None:
            # Writes run in order: this no-op completes after every write
            # queued before it.  Later writes are refused.
            d = self._write(_nothing)
            self._stopping = d
            d.addErrback(lambda f: self.log.failure("closing the SQLite index", f))
            d.addBoth(lambda _: self._close_pool())
        waiter: Deferred[None] = Deferred()
        self._stopping.addBoth(_fire_and_pass, waiter)
        return waiter

    # -- writes --------------------------------------------------------------

    def _write(self, interaction: Callable[..., Any], *args: Any) -> Deferred[Any]:
        """
        Queue C{interaction(cursor, *args)}.

        Writes run in the order issued, in batches: a write issued while no
        batch runs starts one at once; the writes issued while a batch runs
        (a burst of hellos or of disconnects) wait and all go in the next
        one, a single transaction (see L{_run_batch}).  Errors: a write
        SQLite refuses fails alone, with L{IndexUnavailable}, and the rest of
        its batch commits; when the transaction itself fails (the commit,
        the disk), every write of the batch fails with L{IndexUnavailable}.

        @return: Deferred firing the interaction's result once its batch
            committed.
        """
        if self._pool is None or self._stopping is not None:
            return _fail_unavailable("the SQLite index is not open")
        d: Deferred[Any] = Deferred()
        self._queued.append((interaction, args, d))
        if not self._writing:
            self._next_batch()
        return d

    def _next_batch(self) -> None:
        """
        Write everything queued as one batch (or fail it if the database
        was closed meanwhile).
        """
        batch, self._queued = self._queued, []
        if not batch:
            self._writing = False
            return
        if self._pool is None:
            self._writing = False
            for _, _, d in batch:
                d.errback(IndexUnavailable("the SQLite index is closed"))
            return
        self._writing = True
        d = self._pool.runInteraction(_run_batch, [(interaction, args) for interaction, args, _ in batch])
        d.addCallbacks(self._batch_done, self._batch_failed, (batch,), None, (batch,))

    def _batch_done(self, outcomes: list[tuple[bool, Any]], batch: list[Any]) -> None:
        self.commits += 1
        for (_, _, d), (ok, value) in zip(batch, outcomes):
            if ok:
                d.callback(value)
            else:
                d.errback(self._refused(value))
        # Writes the callbacks issued join whatever queued meanwhile.
        self._next_batch()

    def _refused(self, failure: Failure) -> Failure:
        """
        One write of a batch failed (and was rolled back alone).
        """
        if not failure.check(sqlite3.Error):
            return failure
        self.log.failure("the SQLite index refused a write", failure)
        return Failure(IndexUnavailable(f"the SQLite index failed: {failure.value}"))

    def _batch_failed(self, failure: Failure, batch: list[Any]) -> None:
        if failure.check(sqlite3.Error):
            self.log.failure("the SQLite index failed writing {n} changes", failure, n=len(batch))
            message = f"the SQLite index failed: {failure.value}"
            for _, _, d in batch:
                d.errback(IndexUnavailable(message))
        else:
            for _, _, d in batch:
                d.errback(failure)
        self._next_batch()

    def _unavailable(self, failure: Failure, what: str) -> Failure:
        failure.trap(sqlite3.Error)
        self.log.failure("{what}", failure, what=what)
        raise IndexUnavailable(f"{what}: {failure.value}")

    def add_session(self, session: Session) -> Deferred[None]:
        d = self._write(_add_session, session)
        d.addCallback(self._session_added, session)
        return d

    def _session_added(self, _: Any, session: Session) -> None:
        # Not if it was removed meanwhile: the removal is already written.
        if session.session_id not in self._removing:
            self.index.add_session(session)

    def remove_session(self, session_id: str) -> Deferred[None]:
        self.index.remove_session(session_id)
        _count(self._removing, session_id)
        d = self._write(_remove_session, session_id)
        d.addBoth(settle_removal, self._removing, session_id, self.index.remove_session, session_id)
        d.addCallback(lambda _: None)
        return d

    def put(self, session_id: str, publication: Publication) -> Deferred[None]:
        d = self._write(_insert_publication_txn, session_id, publication)
        d.addCallback(self._put_done, session_id, publication)
        return d

    def _put_done(self, seq: int, session_id: str, publication: Publication) -> None:
        if session_id in self._removing or (session_id, publication.fname) in self._unpublishing:
            return
        if self.index.session(session_id) is not None:
            self.index.put(session_id, publication, seq)

    def delete(self, session_id: str, fname: str) -> Deferred[bool]:
        in_view = self.index.delete(session_id, fname)
        key = (session_id, fname)
        _count(self._unpublishing, key)
        d = self._write(_delete_publication, session_id, fname)
        d.addBoth(settle_removal, self._unpublishing, key, self.index.delete, session_id, fname)
        d.addCallback(lambda deleted: bool(deleted or in_view))
        return d

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
        # Removals issued after the snapshot was taken stay hidden.
        for session_id in self._removing:
            self.index.remove_session(session_id)
        for session_id, fname in self._unpublishing:
            self.index.delete(session_id, fname)

    def bind_key(self, hostname: str, key: str) -> Deferred[str]:
        return self._write(_bind_key, hostname, key, self._clock.seconds())

    def host_key(self, hostname: str) -> Deferred[str | None]:
        return self._write(_host_key, hostname)

    def forget_key(self, hostname: str) -> Deferred[bool]:
        return self._write(_forget_key, hostname)

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

    def catalogue(self, pattern: str | None, limit: int, after: Any = None) -> Deferred[list[CatalogueEntry]]:
        return succeed(self.index.catalogue(pattern, limit, after))

    def sessions(self) -> Deferred[list[Session]]:
        return succeed(self.index.sessions())


def _fail_unavailable(message: str) -> Deferred[Any]:
    d: Deferred[Any] = Deferred()
    d.errback(IndexUnavailable(message))
    return d


def _fire_and_pass(result: Any, d: Deferred[None]) -> Any:
    d.callback(None)
    return result


def _count(pending: dict[Any, int], key: Any) -> None:
    pending[key] = pending.get(key, 0) + 1


# Interactions: run in the pool's thread with an adbapi Transaction (cursor).


def _run_batch(cursor: Any, writes: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[tuple[bool, Any]]:
    """
    Run a batch of writes in one transaction (adbapi commits it).

    All at once first; if one fails, the batch is rolled back and run again
    with each write in its own savepoint, so that only the writes that fail
    are lost.  (Savepoints for every write would cost two more statements
    each, and every statement hands the GIL back and forth with the
    reactor's thread.)

    @return: per write, C{(True, result)} or C{(False, Failure)}.
    """
    _begin(cursor)
    try:
        return [(True, interaction(cursor, *args)) for interaction, args in writes]
    except Exception:
        failure = Failure()
    if cursor.connection.in_transaction:
        cursor.execute("ROLLBACK")
    if len(writes) == 1:
        return [(False, failure)]
    _begin(cursor)
    outcomes: list[tuple[bool, Any]] = []
    for interaction, args in writes:
        cursor.execute("SAVEPOINT write")
        try:
            result = interaction(cursor, *args)
        except Exception:
            outcomes.append((False, Failure()))
            cursor.execute("ROLLBACK TO write")
        else:
            outcomes.append((True, result))
        cursor.execute("RELEASE write")
    return outcomes


def _begin(cursor: Any) -> None:
    if not cursor.connection.in_transaction:
        # Explicitly: otherwise a first SAVEPOINT would open (and its
        # RELEASE commit) a transaction of its own.
        cursor.execute("BEGIN")


def _nothing(cursor: Any) -> None:
    return None


def _add_session(cursor: Any, session: Session) -> None:
    cursor.execute(_INSERT_SESSION, _session_row(session))


def _bind_key(cursor: Any, hostname: str, key: str, now: float) -> str:
    cursor.execute(
        "INSERT INTO host_keys (hostname, public_key, bound_at) VALUES (?, ?, ?) ON CONFLICT (hostname) DO NOTHING",
        (hostname, key, now),
    )
    return _host_key(cursor, hostname)


def _host_key(cursor: Any, hostname: str) -> str | None:
    cursor.execute("SELECT public_key FROM host_keys WHERE hostname = ?", (hostname,))
    row = cursor.fetchone()
    return None if row is None else row[0]


def _forget_key(cursor: Any, hostname: str) -> bool:
    cursor.execute("DELETE FROM host_keys WHERE hostname = ?", (hostname,))
    return cursor.rowcount > 0


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
        sessions = connection.execute(
            "SELECT session_id, tracker_id, hostname, ip, p2p_port, version, connected_at"
            " FROM sessions ORDER BY connected_at"
        ).fetchall()
        publications = [
            row[:5] + (decode_mtime(row[5]),) + row[6:]
            for row in connection.execute("SELECT * FROM publications ORDER BY seq")
        ]
    finally:
        connection.close()
    return sessions, publications
