"""
The shared index: PostgreSQL through txpostgres, for one or several trackers
serving the same peers.

Writes go to the database through a pool of connections (L{Pool}).  Reads
are answered from memory (L{IndexView}), kept coherent with the database by
LISTEN/NOTIFY on one more, dedicated connection (the listener):

  - every write is one statement that also sends one notification on
    L{CHANNEL}, committed with it, so every tracker sees every change in
    commit order;
  - each tracker applies notifications to its view in the order they
    arrive, and a write's Deferred fires only once the writer's own
    notification (matched by a token) has been applied: a tracker reads its
    own writes, and its view never applies changes out of order;
  - whenever the listener (re)connects, it LISTENs first and then reloads
    the whole view from one snapshot query, so nothing committed meanwhile
    is missed.

Batches.  Writes issued while a batch is in flight wait, and all go in the
next batch: one multi-statement query, so one round trip and one commit for
a burst of hellos, publications or disconnects (each write keeps its own
statement and notification).  One batch is in flight at a time, so writes
commit in the order they were issued.  If a statement of a batch is refused
(a publication of a session another tracker deleted), the transaction rolls
back and its writes are sent again one by one, so that only the refused
one fails.  Writes that need the statement's rows (C{renew}, C{resync}) go
alone.  Removals of sessions that follow each other in a batch (a storm of
disconnects) become one statement and one notification per 7,900 bytes of
payload.  C{renew} goes to the front of the queue: a long queue of writes
must not let this tracker's lease lapse.

Removals (C{remove_session}, C{delete}) leave this tracker's view at once,
before their write, as in the SQLite store; a notification of an addition
committed before the removal does not bring the record back meanwhile.
Other trackers drop it when the removal's notification arrives.

Notification payloads are C{KIND JSON-ARRAY}, the array starting with the
writer's token::

    s+ [token, session_id, tracker_id, hostname, ip, p2p_port, version, connected_at, fingerprint]
    s- [token, session_id]
    S- [[token, session_id], ...]              removals of one batch, together
    p+ [token, seq, session_id, fname, lname, file_size, last_modified, sha256, root, piece_size]
    p? [token, seq]          a publication too long to carry: read it by seq
    p- [token, session_id, fname, rows deleted]
    t  [token, tracker_id, lease_expires, [tracker_id of trackers removed]]
    T  [token, tracker_id, lease_expires]     a tracker (re)started: forget its records
    r  [token, tracker_id]   a tracker resynced: reload its records
    x  [token, [tracker_id, ...]]              trackers signed off
    y  [token]               nothing (a barrier)

Leases.  Trackers sharing the database register in C{trackers} with a
lease; C{renew()} extends this tracker's lease and deletes the sessions of
trackers whose lease passed.  Lease times are seconds since the epoch read
from the injected clock (the reactor: the wall clock), written by each
tracker and compared by the others, so the trackers' clocks must agree to
well within a lease (NTP does).  Reads never show records of another
tracker whose lease has passed by this tracker's clock, even before anyone
deletes them.

Outages.  A connection that fails is closed and reconnected with backoff on
the clock.  While the listener is down, writes fail at once with
L{IndexUnavailable} (the view could not follow them) and reads go on from
the view.  Every query and connection attempt is bounded by a timeout.  Any
loss (a failed write, a dropped connection, a lapsed lease) makes the next
C{renew()} answer True, until a C{resync()} that started after it succeeds.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from dataclasses import replace
from itertools import count
from typing import Any, Callable, Iterable

import psycopg2
import psycopg2.errors
from twisted.internet.defer import Deferred, FirstError, fail, inlineCallbacks, succeed
from twisted.internet.interfaces import IReactorFDSet
from twisted.internet.error import ConnectionDone, ConnectionLost, DNSLookupError
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import CatalogueEntry, Publication, Session, Source, group_catalogue
from twistedp2p.tracker.store import pg_sql as sql
from twistedp2p.tracker.store.interface import IIndexStore
from twistedp2p.tracker.store.removals import settle_removal
from twistedp2p.tracker.store.pg_link import (
    ConnectionSettings,
    Link,
    LinkDown,
    Pool,
    QueryTimeout,
    backoff,
    parse_url,
)
from twistedp2p.tracker.store.pg_view import (
    IndexView,
    publication_from_row,
    session_from_row,
    session_to_row,
)
from twistedp2p.tracker.store.schema import LATEST_SCHEMA_VERSION, SchemaTooNew, encode_mtime

CHANNEL = sql.CHANNEL

#: Most writes in one batch (one query).
MAX_BATCH = 1000

#: Errors of a statement (not of the connection): in a batch, the batch
#: rolls back and its writes are sent again one by one.
_REFUSED = (psycopg2.IntegrityError, psycopg2.DataError, psycopg2.ProgrammingError, psycopg2.NotSupportedError)

#: Failures that mean "the database cannot be reached or did not answer".
_UNREACHABLE = (psycopg2.Error, LinkDown, QueryTimeout, ConnectionDone, ConnectionLost, DNSLookupError)


@implementer(IIndexStore)
class PostgresStore:
    """
    An L{IIndexStore} in a PostgreSQL database that several trackers share.

    @param settings: where the database is (see L{from_url}).
    @param clock: C{IReactorTime}: leases, timeouts, reconnection delays.
    @param tracker_id: this tracker's id; it owns the sessions it adds.
    @param reactor: the reactor polling the connections (C{IReactorFDSet});
        by default C{clock}, which then must be a full reactor.
    @param pool_size: connections for writes (plus one for LISTEN).
    @param lease: seconds a renewal keeps this tracker's records alive for
        other trackers; pass at least two heartbeat intervals.
    @param timeout: seconds any query (and the wait for its notification)
        may take before failing with L{IndexUnavailable}.
    @param connect_timeout: seconds a connection attempt may take.
    @param delays: a callable returning an iterator of reconnection delays.
    """

    schema_version = LATEST_SCHEMA_VERSION
    log = Logger()

    def __init__(
        self,
        settings: ConnectionSettings,
        clock: Any,
        tracker_id: str,
        reactor: Any = None,
        pool_size: int = 3,
        lease: float = 90.0,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        delays: Callable[[], Any] = backoff,
    ) -> None:
        if reactor is None:
            reactor = clock
        if not IReactorFDSet.providedBy(reactor):
            raise ValueError("PostgresStore needs a reactor (IReactorFDSet) to poll its connections")
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, not {pool_size}")
        for name, value in (("lease", lease), ("timeout", timeout), ("connect_timeout", connect_timeout)):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, not {value}")
        if "application_name" not in dict(settings.extra):
            extra = settings.extra + (("application_name", f"twistedp2p-tracker {tracker_id}"[:63]),)
            settings = replace(settings, extra=extra)
        self.settings = settings
        self.tracker_id = tracker_id
        self.pool_size = pool_size
        self.lease = float(lease)
        self.timeout = float(timeout)
        self.connect_timeout = float(connect_timeout)
        self._clock = clock
        self._reactor = reactor
        self._delays = delays
        self.view = IndexView(tracker_id, clock.seconds)
        self._pool: Pool | None = None
        self._listener: Link | None = None
        self._running = False
        # The listener is up and the view loaded: writes may proceed.
        self._ready = False
        # Bumped each time the listener goes down: work of an older
        # connection is ignored when it completes.
        self._epoch = 0
        self._inbox: deque[Callable[[], Deferred[Any] | None]] = deque()
        self._busy = False
        self._waiters: dict[str, Deferred[None]] = {}
        self._instance = secrets.token_hex(4)
        self._tokens = count(1)
        self._losses = 0
        self._repaired = 0
        self._connected_waiters: list[Deferred[None]] = []
        #: Synchronous reads for the registry's hot path (see
        #: L{Registry.fetch_now}).
        self.read_view = self.view
        # Writes not sent yet, and the batch in flight (None: none).
        self._queue: deque[_Op] = deque()
        self._batch: list[_Op] | None = None
        self._batch_done_waiters: list[Deferred[None]] = []
        #: Batches sent (queries that carried writes), for tests and metrics.
        self.batches = 0
        # Removals issued and not confirmed yet, by session id and by
        # (session id, fname), counting each: notifications of additions
        # committed before them stay out of the view.
        self._removing: dict[str, int] = {}
        self._unpublishing: dict[tuple[str, str], int] = {}

    @classmethod
    def from_url(cls, url: str, clock: Any, tracker_id: str, **options: Any) -> PostgresStore:
        """
        A store for C{postgresql://user[:password]@host[:port]/dbname}
        (or C{postgres://}).

        Query parameters C{pool_size}, C{lease}, C{timeout} and
        C{connect_timeout} override the keyword C{options}; any other
        (C{sslmode}, ...) goes to libpq.  Without a password in the URL,
        libpq's C{PGPASSWORD} and C{~/.pgpass} apply.

        @raise ValueError: for an unusable URL or option.
        """
        settings, from_query = parse_url(url)
        options.update(from_query)
        return cls(settings, clock, tracker_id, **options)

    def __repr__(self) -> str:
        return f"<PostgresStore {self.tracker_id} {self.settings.redacted()}>"

    def describe(self) -> str:
        """
        Where the index lives, for people (banners, logs): user, host, port
        and database, never the password.
        """
        s = self.settings
        host = s.host or "local socket"
        if ":" in host:
            host = f"[{host}]"
        where = host + (f":{s.port}" if s.port is not None else "")
        user = f"{s.user}@" if s.user else ""
        return f"PostgreSQL {user}{where}/{s.dbname or ''}"

    # -- life cycle ------------------------------------------------------------

    def start(self) -> Deferred[None]:
        """
        Connect, create or migrate the schema, register this tracker (dropping
        what a previous run of it left, and nothing else), LISTEN and load
        the view.

        Fails with L{SchemaTooNew} for a newer schema and with
        L{IndexUnavailable} when the database cannot be reached.
        """
        if self._pool is not None:
            return fail(RuntimeError("this PostgresStore was already started"))
        links = [self._link(f"pool {n + 1}") for n in range(self.pool_size)]
        self._pool = Pool(self._reactor, links)
        self._listener = self._link(
            "listener", on_up=self._listening, on_down=self._listener_lost, on_notify=self._notified
        )
        self._running = True
        d = self._pool.start()
        d.addCallback(lambda _: self._migrate())
        d.addCallback(lambda _: self._register())
        d.addCallback(lambda _: self._listener.connect())
        d.addCallbacks(self._started, self._start_failed)
        return d

    def _link(self, name: str, **callbacks: Any) -> Link:
        callbacks.setdefault("on_up", self._link_up)
        callbacks.setdefault("on_down", self._link_lost)
        return Link(
            self._reactor,
            self._clock,
            self.settings,
            name,
            timeout=self.timeout,
            connect_timeout=self.connect_timeout,
            delays=self._delays,
            **callbacks,
        )

    @inlineCallbacks
    def _migrate(self) -> Any:
        rows = yield self._pool.runQuery(sql.READ_VERSION)
        version = rows[0][0]
        if version > LATEST_SCHEMA_VERSION:
            raise SchemaTooNew(version, LATEST_SCHEMA_VERSION, where=self.settings.redacted())
        if version == LATEST_SCHEMA_VERSION:
            # Idempotent: restores anything dropped by hand.  A user that may
            # use the tables but not create any gets a warning only.
            yield self._pool.runOperation(sql.CREATE).addErrback(self._ensure_failed)
        while version < LATEST_SCHEMA_VERSION:
            self.log.info(
                "migrating the index schema from version {version}", version=version
            )
            yield self._pool.runOperation(sql.MIGRATIONS[version])
            rows = yield self._pool.runQuery(sql.READ_VERSION)
            if rows[0][0] <= version:
                raise IndexUnavailable(f"migrating the index schema from version {version} failed")
            version = rows[0][0]

    def _ensure_failed(self, failure: Failure) -> None:
        failure.trap(psycopg2.errors.InsufficientPrivilege)
        self.log.warn(
            "cannot check the index schema's tables and indexes: {error}", error=_first_line(failure)
        )

    @inlineCallbacks
    def _register(self) -> Any:
        now = self._clock.seconds()
        expires = now + self.lease
        token = self._token()
        rows = yield self._pool.runQuery(
            sql.REGISTER,
            {
                "me": self.tracker_id,
                "now": now,
                "expires": expires,
                "channel": CHANNEL,
                "payload": _payload("T", token, self.tracker_id, expires),
            },
        )
        wiped = rows[0][0]
        if wiped:
            self.log.info(
                "dropped {n} sessions a previous run of tracker {tracker_id} left",
                n=wiped,
                tracker_id=self.tracker_id,
            )

    def _started(self, _: Any) -> None:
        self.log.info(
            "index {url}: tracker {tracker_id}, {sessions} sessions of {trackers} trackers",
            url=self.settings.redacted(),
            tracker_id=self.tracker_id,
            sessions=len(self.view.all_sessions()),
            trackers=len(self.view.trackers()),
        )
        self._check_connected()

    def _start_failed(self, failure: Failure) -> Failure:
        self._close()
        if failure.check(FirstError):
            failure = failure.value.subFailure
        if failure.check(SchemaTooNew, IndexUnavailable):
            return failure
        if failure.check(*_UNREACHABLE):
            raise IndexUnavailable(
                f"cannot use the PostgreSQL index at {self.settings.redacted()}: {_first_line(failure)}"
            )
        return failure

    def stop(self) -> Deferred[None]:
        """
        Sign off (other trackers forget this one's records at once) and
        close every connection.  Never fails.
        """
        if not self._running:
            self._close()
            return succeed(None)
        self._running = False
        self._fail_queue("the index is stopping")
        if self._batch is not None:
            # Let the batch in flight land first: signing off then removes
            # whatever it wrote.
            waiter: Deferred[None] = Deferred()
            self._batch_done_waiters.append(waiter)
            return waiter.addCallback(lambda _: self._sign_off())
        return self._sign_off()

    def _sign_off(self) -> Deferred[None]:
        if self._pool is None or not any(link.is_up for link in self._pool.links):
            self._close()
            return succeed(None)
        token = self._token()
        d = self._pool.runQuery(
            sql.SIGN_OFF,
            {
                "me": self.tracker_id,
                "channel": CHANNEL,
                "payload": _payload("x", token, [self.tracker_id]),
            },
        )
        d.addErrback(self._sign_off_failed)
        d.addCallback(lambda _: self._close())
        return d

    def _sign_off_failed(self, failure: Failure) -> None:
        if failure.check(*_UNREACHABLE):
            self.log.warn("could not sign off from the index: {error}", error=_first_line(failure))
        else:
            self.log.failure("signing off from the index failed", failure)

    def _close(self) -> None:
        self._running = False
        self._ready = False
        self._epoch += 1
        self._inbox.clear()
        self._busy = False
        self._fail_queue("the index was closed")
        if self._listener is not None:
            self._listener.close()
        if self._pool is not None:
            self._pool.close()
        self._fail_waiters("the index was closed")
        waiters, self._connected_waiters = self._connected_waiters, []
        for d in waiters:
            d.errback(IndexUnavailable("the index was closed"))

    # -- connections -----------------------------------------------------------

    def _link_up(self, link: Link) -> None:
        self._check_connected()

    def _link_lost(self, link: Link, reason: Failure) -> None:
        self._lose(f"{link.name} lost")
        self._check_connected()

    def _listening(self, link: Link) -> Deferred[None]:
        """
        The listener (re)connected: LISTEN, then load the view from a
        snapshot before anything that arrives meanwhile.
        """
        epoch = self._epoch
        d = link.runOperation(f"LISTEN {CHANNEL}")
        d.addCallback(lambda _: self._enqueue_snapshot(link, epoch))
        return d

    def _enqueue_snapshot(self, link: Link, epoch: int) -> Deferred[None]:
        loaded: Deferred[None] = Deferred()

        def load() -> Deferred[None]:
            d = link.runQuery(sql.SNAPSHOT)
            d.addCallback(self._install_snapshot, epoch)
            d.addBoth(_forward, loaded)
            return d

        self._inbox.appendleft(load)
        self._drain()
        return loaded

    def _install_snapshot(self, rows: list[tuple[Any, ...]], epoch: int) -> None:
        if epoch != self._epoch:
            raise LinkDown("the listener went down while loading the view")
        trackers, sessions, publications = rows[0]
        self.view.load(trackers, sessions, publications)
        self._rehide()
        self._ready = True
        self.log.info(
            "index view loaded: {sessions} sessions, {publications} publications, {trackers} trackers",
            sessions=len(sessions),
            publications=len(publications),
            trackers=len(trackers),
        )
        self._check_connected()

    def _listener_lost(self, link: Link, reason: Failure) -> None:
        """
        Notifications may be missed from now on: stop writing (reads go on
        from the view) until the listener is back and the view reloaded.
        """
        self._ready = False
        self._epoch += 1
        self._inbox.clear()
        self._busy = False
        self._lose("the listener connection was lost")
        self._fail_queue("the index connection was lost")
        self._fail_waiters("the index connection was lost")
        self._check_connected()

    def _fail_waiters(self, why: str) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.errback(IndexUnavailable(f"{why}; the write may or may not have been made"))

    def whenConnected(self) -> Deferred[None]:
        """
        @return: Deferred firing once every connection is up and the view
            is loaded (at once if they are).  For tests and status checks.
        """
        if self.is_connected():
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._connected_waiters.append(d)
        return d

    def is_connected(self) -> bool:
        return self._running and self._ready and self._pool is not None and self._pool.is_up()

    def _check_connected(self) -> None:
        if not self.is_connected():
            return
        waiters, self._connected_waiters = self._connected_waiters, []
        for d in waiters:
            d.callback(None)

    # -- notifications -----------------------------------------------------------

    def _notified(self, notify: Any) -> None:
        if notify.channel != CHANNEL:
            return
        payload = notify.payload
        self._inbox.append(lambda: self._apply(payload))
        self._drain()

    def _drain(self) -> None:
        """
        Run queued view updates in order; one that needs the database (a
        reload) holds the rest until it is done.
        """
        while self._inbox and not self._busy:
            step = self._inbox.popleft()
            try:
                d = step()
            except Exception:
                self.log.failure("applying an index notification failed")
                continue
            if d is not None:
                self._busy = True
                d.addBoth(self._stepped, self._epoch)
                return

    def _stepped(self, result: Any, epoch: int) -> None:
        if epoch != self._epoch:
            return
        self._busy = False
        if isinstance(result, Failure) and not result.check(*_UNREACHABLE):
            self.log.failure("applying an index notification failed", result)
        self._drain()

    def _apply(self, payload: str) -> Deferred[None] | None:
        kind, _, body = payload.partition(" ")
        args = json.loads(body)
        if kind == "S-":
            for token, session_id in args:
                self.view.remove_session(session_id)
                self._echo(token)
            return None
        token = args[0]
        view = self.view
        answer = None
        if kind == "s+":
            # Not while this tracker's removal of it is pending: the
            # removal committed after this addition.
            if args[1] not in self._removing:
                view.add_session(session_from_row(args[1:]))
        elif kind == "s-":
            view.remove_session(args[1])
        elif kind == "p+":
            seq, session_id, publication = publication_from_row(args[1:])
            self._put_unless_removed(session_id, publication, seq)
        elif kind == "p-":
            view.delete(args[1], args[2])
            if len(args) > 3:
                answer = args[3]
        elif kind == "t":
            view.set_lease(args[1], args[2])
            for gone in args[3]:
                view.drop_tracker(gone)
        elif kind == "T":
            view.drop_tracker(args[1])
            view.set_lease(args[1], args[2])
        elif kind == "x":
            for gone in args[1]:
                view.drop_tracker(gone)
        elif kind == "p?":
            return self._reload(sql.PUBLICATION_BY_SEQ, {"seq": args[1]}, self._put_row, token)
        elif kind == "r":
            return self._reload(sql.TRACKER_SNAPSHOT, {"tid": args[1]}, self._replace_tracker(args[1]), token)
        elif kind != "y":
            self.log.warn("ignoring an index notification of unknown kind {kind!r}", kind=kind)
        self._echo(token, answer)
        return None

    def _put_unless_removed(self, session_id: str, publication: Publication, seq: int) -> None:
        if session_id in self._removing or (session_id, publication.fname) in self._unpublishing:
            return
        self.view.put(session_id, publication, seq)

    def _rehide(self) -> None:
        """
        Hide again the records whose removal this tracker issued and is
        not confirmed yet (after the view was reloaded from the database).
        """
        for session_id in self._removing:
            self.view.remove_session(session_id)
        for session_id, fname in self._unpublishing:
            self.view.delete(session_id, fname)

    def _reload(self, query: str, params: dict[str, Any], install: Callable[[Any], None], token: str) -> Deferred[None]:
        listener = self._listener
        assert listener is not None
        d = listener.runQuery(query, params)
        d.addCallback(install)
        d.addCallback(lambda _: self._echo(token))
        return d

    def _put_row(self, rows: list[tuple[Any, ...]]) -> None:
        # Gone already (replaced or deleted): a later notification says so.
        for row in rows:
            seq, session_id, publication = publication_from_row(row)
            self._put_unless_removed(session_id, publication, seq)

    def _replace_tracker(self, tracker_id: str) -> Callable[[Any], None]:
        def install(rows: list[tuple[Any, ...]]) -> None:
            trackers, sessions, publications = rows[0]
            self.view.replace_tracker(tracker_id, trackers, sessions, publications)
            if tracker_id == self.tracker_id:
                self._rehide()

        return install

    def _echo(self, token: str, answer: Any = None) -> None:
        waiter = self._waiters.pop(token, None)
        if waiter is not None:
            waiter.callback(answer)

    # -- writes ------------------------------------------------------------------

    def _token(self) -> str:
        return f"{self._instance}.{next(self._tokens)}"

    def _lose(self, why: str) -> None:
        """
        This tracker's records may no longer match its registry.
        """
        self._losses += 1
        self.log.debug("index records may be lost ({why})", why=why)

    def _write(
        self, statement: str, params: dict[str, Any], token: str, what: str, solo: bool = False
    ) -> Deferred[Any]:
        """
        Queue one write for the next batch.

        @param solo: the write needs its statement's rows: it goes in a
            batch of its own.
        @return: Deferred firing once the write's notification has been
            applied to the view: with the statement's rows for a C{solo}
            write, else with what the notification answers (the rows
            deleted, for C{p-}; None otherwise).
        """
        if not self._running or not self._ready or self._pool is None:
            self._lose(what)
            why = "the index is not started" if not self._running else "the index connection is down"
            return fail(IndexUnavailable(f"{what}: {why}"))
        waiter: Deferred[Any] = Deferred()
        self._waiters[token] = waiter
        params["channel"] = CHANNEL
        op = _Op(statement, params, token, what, waiter, solo)
        if statement is sql.RENEW:
            self._queue.appendleft(op)
        else:
            self._queue.append(op)
        self._pump()
        return op.result

    def _pump(self) -> None:
        """
        Send the next batch, unless one is in flight.
        """
        if self._batch is not None or not self._queue:
            return
        if not self._ready or self._pool is None:
            self._fail_queue("the index connection is down")
            return
        queue = self._queue
        batch = [queue.popleft()]
        if not (batch[0].solo or batch[0].alone):
            while queue and len(batch) < MAX_BATCH and not (queue[0].solo or queue[0].alone):
                batch.append(queue.popleft())
        self._batch = batch
        self.batches += 1
        parts = _statements(batch)
        if len(parts) == 1:
            d = self._pool.runQuery(*parts[0])
        else:
            d = self._pool.runBatch(parts)
        d.addCallbacks(self._batch_written, self._batch_failed, (batch,), None, (batch,))

    def _batch_landed(self) -> None:
        self._batch = None
        waiters, self._batch_done_waiters = self._batch_done_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    def _batch_written(self, rows: list[Any], batch: list[_Op]) -> None:
        self._batch_landed()
        # One timer for the whole batch's notifications.
        timer = self._clock.callLater(self.timeout, self._echoes_missing, batch)
        left = [len(batch)]

        def echoed(result: Any) -> Any:
            left[0] -= 1
            if not left[0] and timer.active():
                timer.cancel()
            return result

        for op in batch:
            waiter = op.waiter
            waiter.addBoth(echoed)
            if op.solo:
                waiter.addCallback(lambda _, rows=rows: rows)
            waiter.chainDeferred(op.result)
        self._pump()

    def _echoes_missing(self, batch: list[_Op]) -> None:
        for op in batch:
            self._echo_missing(op.token, op.what)

    def _batch_failed(self, failure: Failure, batch: list[_Op]) -> None:
        self._batch_landed()
        if len(batch) > 1 and failure.check(*_REFUSED):
            # The transaction rolled back: send each write again on its
            # own, so that only the refused one fails.
            for op in reversed(batch):
                op.alone = True
                self._queue.appendleft(op)
        else:
            for op in batch:
                self._op_failed(failure, op)
        self._pump()

    def _op_failed(self, failure: Failure, op: _Op) -> None:
        try:
            result = self._write_failed(failure, op.token, op.waiter, op.what)
        except Exception:
            result = Failure()
        op.result.errback(result)

    def _fail_queue(self, why: str) -> None:
        """
        Fail every write not sent yet.
        """
        queue, self._queue = self._queue, deque()
        for op in queue:
            self._op_failed(Failure(LinkDown(why)), op)

    def _echo_missing(self, token: str, what: str) -> None:
        waiter = self._waiters.pop(token, None)
        if waiter is None:
            return
        self._lose(what)
        waiter.errback(IndexUnavailable(f"{what}: the index did not confirm the change in time"))
        # The listener looks stuck (a half-open connection?): start afresh.
        if self._listener is not None:
            self._listener.reset("a change was not echoed in time")

    def _write_failed(self, failure: Failure, token: str, waiter: Deferred[Any], what: str) -> Failure:
        self._waiters.pop(token, None)
        # The waiter may have failed already (the listener went down); the
        # write's own failure, below, is the one reported.
        waiter.addErrback(lambda _: None)
        self._lose(what)
        if failure.check(psycopg2.errors.ForeignKeyViolation):
            raise IndexUnavailable(f"{what}: the session is no longer in the index")
        if failure.check(*_UNREACHABLE):
            self.log.warn("{what} failed: {error}", what=what, error=_first_line(failure))
            raise IndexUnavailable(f"{what}: {_first_line(failure)}")
        return failure

    def add_session(self, session: Session) -> Deferred[None]:
        token = self._token()
        row = session_to_row(session)
        params = dict(zip(("sid", "tid", "hostname", "ip", "port", "version", "connected", "fingerprint"), row))
        params["payload"] = _payload("s+", token, *row)
        d = self._write(sql.ADD_SESSION, params, token, f"adding session {session.session_id}")
        return d.addCallback(lambda _: None)

    def remove_session(self, session_id: str) -> Deferred[None]:
        """
        Hide the session at once, then delete it (in the next batch).  If
        the write fails the session stays hidden: a hidden source is
        harmless, a dead one is not; the next resync puts the database
        right.
        """
        self.view.remove_session(session_id)
        _count(self._removing, session_id)
        token = self._token()
        params = {"sid": session_id, "payload": _payload("s-", token, session_id)}
        d = self._write(sql.REMOVE_SESSION, params, token, f"removing session {session_id}")
        d.addBoth(settle_removal, self._removing, session_id, self.view.remove_session, session_id)
        return d.addCallback(lambda _: None)

    def put(self, session_id: str, publication: Publication) -> Deferred[None]:
        token = self._token()
        p = publication
        mtime = encode_mtime(p.last_modified)
        head = f"p+ [{json.dumps(token)},"
        tail = "," + json.dumps([session_id, p.fname, p.lname, p.file_size, mtime, p.sha256, p.root, p.piece_size])[1:]
        if len(head) + len(tail) + 20 > sql.MAX_PAYLOAD:
            head, tail = f"p? [{json.dumps(token)},", "]"
        params = {
            "sid": session_id,
            "fname": p.fname,
            "lname": p.lname,
            "size": p.file_size,
            "mtime": mtime,
            "sha": p.sha256,
            "root": p.root,
            "pieces": p.piece_size,
            "head": head,
            "tail": tail,
        }
        d = self._write(sql.PUT, params, token, f"publishing {p.fname!r} for session {session_id}")
        return d.addCallback(lambda _: None)

    def delete(self, session_id: str, fname: str) -> Deferred[bool]:
        """
        Hide the publication at once, then delete it (see
        L{remove_session}).
        """
        in_view = self.view.delete(session_id, fname)
        key = (session_id, fname)
        _count(self._unpublishing, key)
        token = self._token()
        params = {"sid": session_id, "fname": fname, "token": token}
        d = self._write(sql.DELETE, params, token, f"unpublishing {fname!r} for session {session_id}")
        d.addBoth(settle_removal, self._unpublishing, key, self.view.delete, session_id, fname)
        return d.addCallback(lambda deleted: bool(deleted) if deleted is not None else in_view)

    def renew(self) -> Deferred[bool]:
        """
        Extend this tracker's lease and delete the sessions of trackers
        whose lease passed.

        @return: Deferred firing True when this tracker's records may be
            missing or stale (after a connection loss or failed write, or
            when its own lease had lapsed), until a later C{resync}
            succeeds; failing with L{IndexUnavailable} while the database
            is down.
        """
        now = self._clock.seconds()
        expires = now + self.lease
        token = self._token()
        params = {"me": self.tracker_id, "now": now, "expires": expires, "token": token}
        d = self._write(sql.RENEW, params, token, "renewing the lease", solo=True)
        d.addCallback(self._renewed, now)
        return d

    def _renewed(self, rows: list[Any], now: float) -> bool:
        previous = rows[0][0]
        if previous is None or previous < now:
            self.log.warn(
                "the lease of tracker {tracker_id} had lapsed; its records may be gone",
                tracker_id=self.tracker_id,
            )
            self._lose("lease lapsed")
        return self._losses > self._repaired

    def resync(self, snapshot: Iterable[tuple[Session, Iterable[Publication]]]) -> Deferred[None]:
        """
        Make this tracker's rows exactly C{snapshot} in one transaction
        (publications that did not change keep their seq), renewing its
        lease, then reload them into every tracker's view.
        """
        pending = self._losses
        now = self._clock.seconds()
        token = self._token()
        params = _resync_params(snapshot)
        params.update(
            me=self.tracker_id,
            now=now,
            expires=now + self.lease,
            payload=_payload("r", token, self.tracker_id),
        )
        d = self._write(sql.RESYNC, params, token, "resyncing", solo=True)
        d.addCallback(self._resynced, pending)
        return d

    def _resynced(self, _: Any, pending: int) -> None:
        self._repaired = max(self._repaired, pending)

    def whenSynced(self) -> Deferred[None]:
        """
        @return: Deferred firing once the view has applied every change
            committed to the database before this call (by any tracker).
        """
        token = self._token()
        d = self._write(sql.NOTIFY, {"payload": _payload("y", token)}, token, "syncing")
        return d.addCallback(lambda _: None)

    # -- reads (from the view) ---------------------------------------------------

    def sources(self, fname: str, limit: int) -> Deferred[list[Source]]:
        return succeed(self.view.sources(fname, limit))

    def host_files(self, hostname: str) -> Deferred[list[Source]]:
        return succeed(self.view.host_files(hostname))

    def catalogue(self, pattern: str | None, limit: int, after: Any = None) -> Deferred[list[CatalogueEntry]]:
        return succeed(self.view.catalogue(pattern, limit, after))

    def sessions(self) -> Deferred[list[Session]]:
        return succeed(self.view.sessions())

    # -- key bindings --------------------------------------------------------

    @inlineCallbacks
    def bind_key(self, hostname: str, key: str):
        for _ in range(3):
            rows = yield self._key_query(sql.BIND_KEY, {"hostname": hostname, "key": key, "now": self._clock.seconds()},
                                         f"binding the key of {hostname}")
            if rows:
                return rows[0][0]
        raise IndexUnavailable(f"binding the key of {hostname}: the binding keeps changing")

    def host_key(self, hostname: str) -> Deferred[str | None]:
        d = self._key_query(sql.HOST_KEY, {"hostname": hostname}, f"reading the key of {hostname}")
        return d.addCallback(lambda rows: rows[0][0] if rows else None)

    def forget_key(self, hostname: str) -> Deferred[bool]:
        d = self._key_query(sql.FORGET_KEY, {"hostname": hostname}, f"forgetting the key of {hostname}")
        return d.addCallback(bool)

    def _key_query(self, statement: str, params: dict[str, Any], what: str) -> Deferred[Any]:
        if self._pool is None:
            return fail(IndexUnavailable(f"{what}: the index is not open"))
        d = self._pool.runQuery(statement, params)
        d.addErrback(self._key_query_failed, what)
        return d

    def _key_query_failed(self, failure: Failure, what: str) -> Failure:
        if failure.check(*_UNREACHABLE) and not failure.check(IndexUnavailable):
            self.log.warn("{what} failed: {error}", what=what, error=_first_line(failure))
            raise IndexUnavailable(f"{what}: {_first_line(failure)}")
        return failure

    def direct(self) -> DirectReads:
        """
        The same reads, answered by the database itself (bypassing the
        view): for consistency checks and tools, not the hot path.
        """
        if self._pool is None:
            raise RuntimeError("the store is not started")
        return DirectReads(self._pool.runQuery, self.tracker_id, self._clock.seconds)


class DirectReads:
    """
    L{IIndexStore}'s reads as SQL queries (each served by an index; see the
    C{DB_*} statements).  Case-insensitive matching is PostgreSQL's (ILIKE,
    C{~*}), which may differ from the view's for some non-ASCII letters.

    @param run_query: C{runQuery(sql, params)} returning a Deferred of rows.
    @param now: a callable returning the current time, for leases.
    """

    def __init__(self, run_query: Callable[..., Deferred[Any]], tracker_id: str, now: Callable[[], float]) -> None:
        self._run = run_query
        self.tracker_id = tracker_id
        self._now = now

    def _query(self, statement: str, **params: Any) -> Deferred[Any]:
        params.update(me=self.tracker_id, now=self._now())
        return self._run(statement, params)

    def sources(self, fname: str, limit: int) -> Deferred[list[Source]]:
        return self._query(sql.DB_SOURCES, fname=fname, limit=limit).addCallback(_sources)

    def host_files(self, hostname: str) -> Deferred[list[Source]]:
        return self._query(sql.DB_HOST_FILES, hostname=hostname).addCallback(_sources)

    def catalogue(self, pattern: str | None, limit: int, after: Any = None) -> Deferred[list[CatalogueEntry]]:
        statement, params = catalogue_query(pattern)
        d = self._query(statement, **params)
        d.addCallback(_sources)
        return d.addCallback(group_catalogue, limit, after)

    def sessions(self) -> Deferred[list[Session]]:
        d = self._query(sql.DB_SESSIONS)
        return d.addCallback(lambda rows: [session_from_row(row) for row in rows])


def catalogue_query(pattern: str | None) -> tuple[str, dict[str, Any]]:
    """
    The statement and parameters of a catalogue search, following
    L{twistedp2p.tracker.model.pattern_matcher}: empty matches all, a
    pattern ending with C{/} is a folder prefix (case counts), a pattern
    with C{*}, C{?} or C{[} is a glob, anything else a substring; the last
    two compare lower-cased names.
    """
    if not pattern:
        return sql.DB_CATALOGUE_ALL, {}
    if pattern.endswith("/"):
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return sql.DB_CATALOGUE_PREFIX, {"like": f"{escaped}%"}
    folded = pattern.lower()
    if any(c in pattern for c in "*?["):
        return sql.DB_CATALOGUE_GLOB, {"regex": glob_to_regex(folded)}
    escaped = folded.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sql.DB_CATALOGUE_SUBSTRING, {"like": f"%{escaped}%"}


_REGEX_SPECIAL = set(".^$|()[]{}*+?\\")
_BRACKET_SPECIAL = set("\\[]^-")


def glob_to_regex(pattern: str) -> str:
    """
    A shell glob as an anchored regular expression (PostgreSQL's and
    Python's alike), matching what C{fnmatch} matches: C{*}, C{?},
    C{[...]} and C{[!...]} with ranges (a reversed range matches nothing),
    and a C{[} without its C{]} as itself.
    """
    out = ["^"]
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c != "[":
            out.append("\\" + c if c in _REGEX_SPECIAL else c)
        else:
            # Find the closing bracket: a "]" first (after any "!") is a
            # member, not the end.
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append("\\[")
                continue
            body, i = pattern[i:j], j + 1
            negate = body.startswith("!")
            out.append(_bracket(body[1:] if negate else body, negate))
    out.append("$")
    return "".join(out)


def _bracket(body: str, negate: bool) -> str:
    members = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            low, high = body[k], body[k + 2]
            k += 3
            if low <= high:
                members.append(_member(low) + "-" + _member(high))
        else:
            members.append(_member(body[k]))
            k += 1
    if not members:
        # An empty set: matches nothing; negated, any one character.
        return "." if negate else "(?!)"
    return "[" + ("^" if negate else "") + "".join(members) + "]"


def _member(c: str) -> str:
    return "\\" + c if c in _BRACKET_SPECIAL else c


def _sources(rows: list[tuple[Any, ...]]) -> list[Source]:
    found = []
    for row in rows:
        session = session_from_row(row[:8])
        seq, _, publication = publication_from_row(row[8:])
        found.append(Source(session, publication, seq))
    return found


def _resync_params(snapshot: Iterable[tuple[Session, Iterable[Publication]]]) -> dict[str, Any]:
    """
    The parallel arrays of L{sql.RESYNC}; a repeated name within a session
    keeps its last publication.
    """
    columns: dict[str, list[Any]] = {
        key: []
        for key in ("sids", "tids", "hostnames", "ips", "ports", "versions", "connected", "fingerprints",
                    "psids", "fnames", "lnames", "sizes", "mtimes", "shas", "roots", "pieces")
    }
    seen: set[str] = set()
    for session, publications in snapshot:
        if session.session_id in seen:
            continue
        seen.add(session.session_id)
        for key, value in zip(("sids", "tids", "hostnames", "ips", "ports", "versions", "connected",
                               "fingerprints"),
                              session_to_row(session)):
            columns[key].append(value)
        latest: dict[str, Publication] = {}
        for p in publications:
            latest.pop(p.fname, None)
            latest[p.fname] = p
        for p in latest.values():
            columns["psids"].append(session.session_id)
            columns["fnames"].append(p.fname)
            columns["lnames"].append(p.lname)
            columns["sizes"].append(p.file_size)
            columns["mtimes"].append(encode_mtime(p.last_modified))
            columns["shas"].append(p.sha256)
            columns["roots"].append(p.root)
            columns["pieces"].append(p.piece_size)
    return columns


class _Op:
    """
    One write waiting for (or in) a batch.
    """

    __slots__ = ("statement", "params", "token", "what", "waiter", "solo", "alone", "result")

    def __init__(self, statement: str, params: dict[str, Any], token: str, what: str,
                 waiter: Deferred[Any], solo: bool) -> None:
        self.statement = statement
        self.params = params
        self.token = token
        self.what = what
        self.waiter = waiter
        self.solo = solo
        #: Sent on its own (after its batch was refused).
        self.alone = False
        self.result: Deferred[Any] = Deferred()


def _statements(batch: list[_Op]) -> list[tuple[str, dict[str, Any]]]:
    """
    The statements of a batch: one per write, except that removals of
    sessions that follow each other go together (L{sql.REMOVE_SESSIONS}),
    as many per statement as one notification can carry.
    """
    parts: list[tuple[str, dict[str, Any]]] = []
    run: list[_Op] = []

    def flush() -> None:
        if len(run) == 1:
            parts.append((run[0].statement, run[0].params))
        elif run:
            pairs = [[op.token, op.params["sid"]] for op in run]
            start, size = 0, 0
            for i, pair in enumerate(pairs):
                length = len(json.dumps(pair)) + 2
                if size + length > sql.MAX_PAYLOAD - 10 and i > start:
                    parts.append(_removals(pairs[start:i]))
                    start, size = i, 0
                size += length
            parts.append(_removals(pairs[start:]))
        run.clear()

    for op in batch:
        if op.statement is sql.REMOVE_SESSION:
            run.append(op)
            continue
        flush()
        parts.append((op.statement, op.params))
    flush()
    return parts


def _removals(pairs: list[list[str]]) -> tuple[str, dict[str, Any]]:
    if len(pairs) == 1:
        token, session_id = pairs[0]
        return sql.REMOVE_SESSION, {"sid": session_id, "payload": _payload("s-", token, session_id), "channel": CHANNEL}
    return sql.REMOVE_SESSIONS, {
        "sids": [session_id for _, session_id in pairs],
        "payload": "S- " + json.dumps(pairs),
        "channel": CHANNEL,
    }


def _count(pending: dict[Any, int], key: Any) -> None:
    pending[key] = pending.get(key, 0) + 1


def _payload(kind: str, *args: Any) -> str:
    return f"{kind} {json.dumps(list(args))}"


def _forward(result: Any, d: Deferred[Any]) -> Any:
    """
    Fire C{d} with C{result} (a value or a Failure), and pass it on.
    """
    if isinstance(result, Failure):
        d.errback(result)
    else:
        d.callback(result)
    return result


def _first_line(failure: Failure) -> str:
    lines = str(failure.value).strip().splitlines()
    return lines[0] if lines else failure.type.__name__
