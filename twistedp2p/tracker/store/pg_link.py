"""
Connections to PostgreSQL for the shared store, on top of txpostgres.

  - L{parse_url} reads a C{postgresql://} URL into L{ConnectionSettings} and
    the store's own options.
  - L{Link} is one txpostgres C{Connection} that knows whether it is up,
    bounds every query (and the connection attempt) with a timeout on the
    injected clock, and, once it has been up, reconnects itself with backoff
    after a loss.  A query on a link that is down fails at once.
  - L{Pool} is txpostgres' C{ConnectionPool} over a fixed set of links,
    preferring links that are up.

Nothing here blocks the reactor thread: psycopg2 runs in asynchronous mode
(polled by the reactor), host names are resolved by the reactor's resolver
before libpq sees them (libpq would resolve synchronously), and a query
that takes too long is abandoned by closing its connection, never by
psycopg2's C{cancel()}, which opens a blocking connection to the server.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import psycopg2
import psycopg2.extensions
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from txpostgres.txpostgres import Connection, ConnectionPool

#: Options of the store (not of libpq) a URL may carry as query parameters.
STORE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "pool_size": int,
    "lease": float,
    "timeout": float,
    "connect_timeout": float,
}

#: libpq settings used unless the URL says otherwise: TCP keepalives notice
#: a vanished server on an idle connection (the LISTEN one) within a minute.
LIBPQ_DEFAULTS = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


class LinkDown(Exception):
    """
    The connection to PostgreSQL is down (and reconnecting).
    """


class QueryTimeout(Exception):
    """
    PostgreSQL did not answer in time; the connection was closed.
    """


@dataclass(frozen=True)
class ConnectionSettings:
    """
    Where and how to connect, from a C{postgresql://} URL.
    """

    host: str | None = None
    port: int | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    dbname: str | None = None
    #: Further libpq settings (C{sslmode}, C{application_name}, ...).
    extra: tuple[tuple[str, str], ...] = ()

    def redacted(self) -> str:
        """
        The URL without its password: safe for logs and error messages.
        """
        auth = quote(self.user or "", safe="") + (":***" if self.password is not None else "")
        host = self.host or ""
        if ":" in host:
            host = f"[{host}]"
        where = host + (f":{self.port}" if self.port is not None else "")
        return f"postgresql://{auth + '@' if auth else ''}{where}/{quote(self.dbname or '', safe='')}"

    def kwargs(self, hostaddr: str | None = None) -> dict[str, Any]:
        """
        Keyword arguments for C{psycopg2.connect}.
        """
        found: dict[str, Any] = dict(LIBPQ_DEFAULTS)
        found.update(self.extra)
        for key in ("host", "port", "user", "password", "dbname"):
            value = getattr(self, key)
            if value is not None:
                found[key] = value
        if hostaddr is not None:
            found["hostaddr"] = hostaddr
        return found

    def needs_lookup(self) -> bool:
        """
        Whether the host is a name libpq would resolve (synchronously).
        """
        host = self.host
        if host is None or host.startswith("/") or "hostaddr" in dict(self.extra):
            return False
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return True
        return False

    def resolve(self, reactor: Any) -> Deferred[dict[str, Any]]:
        """
        The connection keyword arguments, with the host name resolved
        through the reactor (off the reactor thread) when it is one.
        """
        resolve = getattr(reactor, "resolve", None)
        if not self.needs_lookup() or resolve is None:
            return succeed(self.kwargs())
        return resolve(self.host).addCallback(lambda address: self.kwargs(hostaddr=address))


def parse_url(url: str) -> tuple[ConnectionSettings, dict[str, Any]]:
    """
    Read C{postgresql://user[:password]@host[:port]/dbname[?k=v&...]}
    (or C{postgres://}).

    Query parameters named in L{STORE_OPTIONS} become store options; any
    other is passed to libpq as is.

    @return: C{(settings, store_options)}.
    @raise ValueError: with a message for people.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL (postgresql://USER@HOST:PORT/DBNAME): {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in the PostgreSQL URL {_without_password(url)!r}") from None
    dbname = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    if "/" in dbname:
        raise ValueError(f"bad database name {dbname!r} in the PostgreSQL URL")
    options: dict[str, Any] = {}
    extra: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in STORE_OPTIONS:
            try:
                options[key] = STORE_OPTIONS[key](value)
            except ValueError:
                raise ValueError(f"bad {key}={value!r} in the PostgreSQL URL") from None
        else:
            extra[key] = value
    settings = ConnectionSettings(
        host=unquote(parts.hostname) if parts.hostname else None,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        dbname=dbname or None,
        extra=tuple(sorted(extra.items())),
    )
    return settings, options


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(":" + parts.password + "@", ":***@", 1)


def backoff(initial: float = 0.5, factor: float = 2.0, cap: float = 10.0) -> Iterator[float]:
    """
    Reconnection delays: C{initial}, doubling up to C{cap}, forever.
    """
    delay = initial
    while True:
        yield delay
        delay = min(delay * factor, cap)


def is_connection_failure(failure: Failure) -> bool:
    """
    Whether a failed query means the connection itself is unusable (as
    opposed to an error in the statement, or a transaction conflict).
    """
    if failure.check(psycopg2.extensions.TransactionRollbackError, psycopg2.extensions.QueryCanceledError):
        return False
    return bool(
        failure.check(
            psycopg2.OperationalError,
            psycopg2.InterfaceError,
            ConnectionDone,
            ConnectionLost,
            QueryTimeout,
            LinkDown,
        )
    )


_NEW, _CONNECTING, _UP, _DOWN, _CLOSED = "new", "connecting", "up", "down", "closed"


class Link(Connection):
    """
    One txpostgres connection with a known state, timeouts and reconnection.

    @param reactor: the reactor psycopg2's socket is polled by.
    @param clock: C{IReactorTime} for timeouts and reconnection delays.
    @param settings: where to connect.
    @param name: for logs (e.g. C{"pool 1"}, C{"listener"}).
    @param timeout: seconds a query may take before the link is closed.
    @param connect_timeout: seconds a connection attempt may take.
    @param delays: a zero-argument callable returning an iterator of
        reconnection delays.
    @param on_up: called with the link each time it is (re)connected; may
        return a Deferred.  If it fails, the connection counts as failed.
    @param on_down: called with the link and the reason each time a link
        that was up goes down.
    @param on_notify: called with each C{psycopg2.extensions.Notify}
        received, in order, in a later reactor turn (see
        L{checkForNotifies}).
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        clock: Any,
        settings: ConnectionSettings,
        name: str,
        timeout: float = 10.0,
        connect_timeout: float = 5.0,
        delays: Callable[[], Iterator[float]] = backoff,
        on_up: Callable[[Link], Any] | None = None,
        on_down: Callable[[Link, Failure], None] | None = None,
        on_notify: Callable[[Any], None] | None = None,
    ) -> None:
        Connection.__init__(self, reactor=reactor)
        self.clock = clock
        self.settings = settings
        self.name = name
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._delays_factory = delays
        self._delays = delays()
        self.on_up = on_up
        self.on_down = on_down
        self.on_notify = on_notify
        self._state = _NEW
        # Reconnect after a loss only once the link has been up.
        self._keep = False
        self._attempt: object | None = None
        self._retry_call: Any = None
        # Notifications received, not yet delivered (see checkForNotifies).
        self._received: list[Any] = []
        self._delivery: Any = None

    def __repr__(self) -> str:
        return f"<Link {self.name} {self._state} {self.settings.redacted()}>"

    @property
    def is_up(self) -> bool:
        return self._state == _UP

    @property
    def state(self) -> str:
        return self._state

    # -- connecting ------------------------------------------------------------

    def connect(self, *ignored: Any, **ignoredKeywords: Any) -> Deferred[Link]:
        """
        Connect once (no retry if this fails).  Arguments are ignored: the
        link knows its settings (txpostgres' pool passes its own).

        @return: Deferred firing with the link once it is up and C{on_up}
            is done, or failing with the reason it could not connect.
        """
        if self._state in (_CONNECTING, _UP):
            return fail(psycopg2.InterfaceError(f"{self.name} is already {self._state}"))
        self._cancel_retry()
        self._state = _CONNECTING
        attempt = self._attempt = object()
        d = self.settings.resolve(self.reactor)
        d.addCallback(self._start_connecting, attempt)
        d = self._bounded(d, self.connect_timeout, "connecting")
        d.addCallback(self._connected, attempt)
        d.addErrback(self._connect_failed, attempt)
        return d

    def _start_connecting(self, kwargs: dict[str, Any], attempt: object) -> Deferred[Any]:
        if attempt is not self._attempt:
            raise LinkDown(f"{self.name}: connection attempt abandoned")
        return Connection.connect(self, **kwargs)

    def _connected(self, _: Any, attempt: object) -> Deferred[Link]:
        if attempt is not self._attempt or self._state != _CONNECTING:
            raise LinkDown(f"{self.name}: connection attempt abandoned")
        self._state = _UP
        d = maybeDeferred(self.on_up, self) if self.on_up is not None else succeed(None)
        d.addCallback(self._ready)
        return d

    def _ready(self, _: Any) -> Link:
        if self._state != _UP:
            raise LinkDown(f"{self.name} went down while being set up")
        self._keep = True
        self._delays = self._delays_factory()
        self.log.debug("{link} up", link=self.name)
        return self

    def _connect_failed(self, failure: Failure, attempt: object) -> Failure:
        if attempt is self._attempt:
            self._went_down(failure)
        return failure

    # -- losing the connection ---------------------------------------------------

    def _went_down(self, reason: Failure) -> None:
        """
        The connection is unusable: close it, tell C{on_down} if it was up,
        and schedule a reconnection if the link has ever been up.
        """
        if self._state not in (_CONNECTING, _UP):
            return
        was_up = self._state == _UP
        self._state = _DOWN
        self._attempt = None
        self._abandon()
        if was_up:
            self.log.warn("{link} lost: {reason}", link=self.name, reason=_describe(reason))
            if self.on_down is not None:
                self.on_down(self, reason)
        if self._keep:
            self._schedule_retry()

    def _abandon(self) -> None:
        """
        Close the psycopg2 connection, failing any query still running, and
        drop notifications not delivered yet: they belong to a session that
        is over.
        """
        delivery, self._delivery = self._delivery, None
        if delivery is not None and delivery.active():
            delivery.cancel()
        self._received = []
        if self._connection is not None:
            Connection.close(self)

    def _schedule_retry(self) -> None:
        delay = next(self._delays)
        self.log.info("{link}: reconnecting in {delay} s", link=self.name, delay=delay)
        self._retry_call = self.clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        if self._state != _DOWN:
            return
        self.connect().addErrback(self._retry_failed)

    def _retry_failed(self, failure: Failure) -> None:
        # The next attempt is already scheduled by _went_down.
        self.log.info("{link}: reconnection failed: {reason}", link=self.name, reason=_describe(failure))

    def _cancel_retry(self) -> None:
        call, self._retry_call = self._retry_call, None
        if call is not None and call.active():
            call.cancel()

    def reset(self, why: str) -> None:
        """
        Drop the connection now (it looks stuck) and reconnect as after a
        loss.
        """
        self._went_down(Failure(LinkDown(f"{self.name}: {why}")))

    def close(self) -> None:
        """
        Close for good: no reconnection.  Queries still running fail.
        """
        self._state = _CLOSED
        self._attempt = None
        self._cancel_retry()
        self._abandon()

    # -- txpostgres hooks -------------------------------------------------------------

    def connectionLost(self, reason: Failure) -> None:
        if self._connection is not None:
            Connection.connectionLost(self, reason)
        self._went_down(reason)

    def doRead(self) -> Any:
        """
        txpostgres' C{Connection.doRead}, made safe for a connection that
        died under it: the server closed it (psycopg2 raises from
        C{poll()}), or libpq dropped the socket during an outage, leaving a
        connection that is not C{closed} but whose descriptor is -1, which
        the reactor refuses (C{ValueError}) when asked to watch it again.
        Either way the error is returned, so that the reactor calls
        C{connectionLost} with it instead of logging "Unhandled Error".
        """
        try:
            self.reactor.removeReader(self)
            connection = self._connection
            if connection is None or connection.closed:
                return ConnectionDone(f"{self.name}: the connection is closed")
            self.continuePolling()
            self.checkForNotifies()
            return self._watch()
        except psycopg2.Error as e:
            return e
        except ValueError as e:
            # A descriptor of -1 reached the reactor.
            return ConnectionLost(f"{self.name}: {e}")

    def _watch(self) -> Any:
        """
        Watch the connection for notifications again, if it is still
        usable; @return: None, or the reason it is not.
        """
        connection = self._connection
        if connection is None or connection.closed:
            return None
        if connection.fileno() < 0:
            return ConnectionLost(f"{self.name}: the server connection's socket is gone")
        self.reactor.addReader(self)
        return None

    def doWrite(self) -> Any:
        try:
            self.reactor.removeWriter(self)
            connection = self._connection
            if connection is None or connection.closed:
                return ConnectionDone(f"{self.name}: the connection is closed")
            self.continuePolling()
            return None
        except psycopg2.Error as e:
            return e
        except ValueError as e:
            return ConnectionLost(f"{self.name}: {e}")

    def fileno(self) -> int:
        # txpostgres answers -1 for a closed connection; a connection that
        # lost its socket without being closed must not raise either.
        connection = self._connection
        if connection is None or connection.closed:
            return -1
        try:
            return connection.fileno()
        except psycopg2.Error:
            return -1

    def cursorFinished(self, cursor: Any) -> None:
        """
        A query finished: watch the connection for notifications again,
        unless it died meanwhile (then the next poll reports it).
        """
        self._cursors.discard(cursor)
        connection = self._connection
        if connection is None or connection.closed or self.fileno() < 0:
            return
        self.reactor.addReader(self)
        self.checkForNotifies()

    def checkForNotifies(self) -> None:
        """
        Queue notifications for C{on_notify}, in order, and deliver them
        in the next reactor turn (txpostgres would run its observers
        through a cooperator, out of our control).

        Never synchronously: this runs inside C{doRead} (and
        C{cursorFinished}), and a query started there would have its
        result read, and lost, by the connection instead of its cursor.
        """
        notifies = self._connection.notifies
        if not notifies:
            return
        self._received.extend(notifies)
        del notifies[:]
        if self._delivery is None:
            self._delivery = self.reactor.callLater(0, self._deliver)

    def _deliver(self) -> None:
        self._delivery = None
        received, self._received = self._received, []
        if self.on_notify is None or self._state != _UP:
            return
        for notify in received:
            try:
                self.on_notify(notify)
            except Exception:
                self.log.failure("{link}: handling a notification failed", link=self.name)

    def _doit(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred[Any]:
        """
        Every query: fail at once when down, else run it under the lock
        with a timeout; a connection failure takes the link down.
        """
        if self._state != _UP:
            return fail(LinkDown(f"{self.name} is {self._state}"))
        d = self.lock.run(method, *args, **kwargs)
        d = self._bounded(d, self.timeout, "query")
        d.addErrback(self._query_failed)
        return d

    def _query_failed(self, failure: Failure) -> Failure:
        broken = self._connection is None or bool(self._connection.closed)
        if broken or is_connection_failure(failure):
            self._went_down(failure)
        return failure

    def runBatch(self, parts: list[tuple[str, dict[str, Any]]]) -> Deferred[Any]:
        """
        Run several statements as one query: one round trip, and one
        implicit transaction (PostgreSQL runs a multi-statement query
        atomically), all or nothing.  The parameters are interpolated on
        this side (as psycopg2 always does), each statement with its own.

        @return: Deferred firing the rows of the last statement.
        """
        if self._state != _UP or self._connection is None:
            return fail(LinkDown(f"{self.name} is {self._state}"))
        try:
            cursor = self._connection.cursor()
            try:
                query = b";\n".join(cursor.mogrify(statement, params) for statement, params in parts)
            finally:
                cursor.close()
        except Exception:
            return fail()
        return self.runQuery(query)

    def _bounded(self, d: Deferred[Any], seconds: float, what: str) -> Deferred[Any]:
        """
        C{d}, or a L{QueryTimeout} after C{seconds} on the clock (closing the
        connection, which also fails C{d}).
        """
        result: Deferred[Any] = Deferred()

        def expire() -> None:
            timeout = Failure(QueryTimeout(f"{self.name}: {what} took more than {seconds:g} s"))
            if not result.called:
                result.errback(timeout)
            self._went_down(timeout)

        timer = self.clock.callLater(seconds, expire)

        def done(outcome: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                if isinstance(outcome, Failure):
                    result.errback(outcome)
                else:
                    result.callback(outcome)

        d.addBoth(done)
        return result


def _describe(failure: Failure) -> str:
    text = str(failure.value).strip().splitlines()
    return text[0] if text else failure.type.__name__


class Pool(ConnectionPool):
    """
    txpostgres' fixed-size pool over the given links.  A query takes a link
    that is up when there is one (one that is down fails it at once).
    """

    def __init__(self, reactor: Any, links: list[Link]) -> None:
        # Set before ConnectionPool.__init__, which would otherwise import
        # the global reactor and build its own connections.
        self.reactor = reactor
        self.min = len(links)
        self.links = list(links)
        supply = iter(self.links)
        self.connectionFactory = lambda reactor, cooperator: next(supply)
        ConnectionPool.__init__(self, None)

    def _take(self) -> Link:
        link = next((c for c in self.connections if c.is_up), None)
        if link is None:
            link = next(iter(self.connections))
        self.connections.remove(link)
        return link

    def _runQuery(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        link = self._take()
        d = link.runQuery(*args, **kwargs)
        return d.addBoth(self._putBackAndPassthrough, link)

    def runBatch(self, parts: list[tuple[str, dict[str, Any]]]) -> Deferred[Any]:
        """
        L{Link.runBatch} on a link of the pool.
        """
        return self._semaphore.run(self._runBatch, parts)

    def _runBatch(self, parts: list[tuple[str, dict[str, Any]]]) -> Deferred[Any]:
        link = self._take()
        d = link.runBatch(parts)
        return d.addBoth(self._putBackAndPassthrough, link)

    def _runOperation(self, *args: Any, **kwargs: Any) -> Deferred[Any]:
        link = self._take()
        d = link.runOperation(*args, **kwargs)
        return d.addBoth(self._putBackAndPassthrough, link)

    def close(self) -> None:
        """
        Close every link, busy or not.
        """
        for link in self.links:
            link.close()

    def is_up(self) -> bool:
        """
        Whether every link is up.
        """
        return all(link.is_up for link in self.links)
