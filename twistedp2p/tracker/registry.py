"""
The tracker's business logic: who is online on this tracker, what each
session published, heartbeats and evictions.

A plain object: no protocol code and no global reactor.  Time comes from an
injected C{IReactorTime}; each connection is reached through a small
L{ILink}; the index lives in an L{IIndexStore}.  Protocols call these
methods and turn the results (or L{WireError}s) into frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    TimeoutError,
    fail,
    inlineCallbacks,
    succeed,
)
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface

from twistedp2p import wire
from twistedp2p.errors import IndexUnavailable
from twistedp2p.identity import fingerprint
from twistedp2p.logs import tracker_gate
from twistedp2p.tracker.model import CatalogueEntry, CatalogueKey, Publication, Session, Source, shared_strings

Observer = Callable[[str, dict], Any]
Probe = Callable[[str, int], Deferred]


class ILink(Interface):
    """
    What the registry needs from one peer's connection.
    """

    def ping():
        """
        Send a ping whose answer someone waits for (a contested hello, the
        admin's ping; native sessions only).

        @return: Deferred firing when the pong arrives, failing when the
            connection is lost first.  Cancelling it forgets the ping.
        """

    def send_heartbeat(answered, token):
        """
        Send a heartbeat ping and keep no state for it but C{answered} and
        C{token}: when an answer to one of this connection's heartbeat
        pings arrives, call C{answered(token, ping_id)} (with the latest
        ones given).  Ping ids only grow on one connection.

        @return: the ping's id, or None when nothing could be sent (no
            native session, or the connection is going away).
        """

    def close():
        """
        Close the connection.  The registry has already forgotten the
        session when it calls this.
        """


def not_registered() -> wire.WireError:
    return wire.WireError("not_registered", "say hello first")


def key_mismatch(hostname: str, bound: str, offered: str) -> wire.WireError:
    """
    The refusal of a signed hello under a hostname bound to another key:
    it names both fingerprints and the remedy.
    """
    return wire.WireError(
        "key_mismatch",
        f"hostname {hostname!r} is bound to key {bound}, not to this peer's key {offered}: "
        f"use another --hostname, or if {hostname}'s key changed on purpose, "
        f"ask the tracker's admin to run 'forget {hostname}'",
    )


@dataclass(eq=False, slots=True)
class LiveSession:
    """
    The registry's record of one live session of this tracker.

    Heartbeat pings are tracked here by id and time, not by a Deferred
    each: C{ping_floor} to C{ping_id} are the ids of the unanswered ones
    (a link's ping ids only grow), C{ping_sent} when the latest left.
    """

    session: Session
    link: Any
    #: fname -> what this session published under it.
    publications: dict[str, Publication] = field(default_factory=dict)
    last_seen: float = 0.0
    #: Consecutive heartbeats left unanswered.
    missed: int = 0
    #: True while the latest heartbeat ping has no answer.
    awaiting: bool = False
    #: Round trip of the latest answered ping, in seconds.
    rtt: float | None = None
    #: The heartbeat slice (see L{Registry.heartbeat_tick}); native only.
    slot: int = 0
    ping_id: int | None = None
    ping_floor: int | None = None
    ping_sent: float = 0.0

    @property
    def key(self) -> tuple[str, int]:
        return (self.session.hostname, self.session.p2p_port)


@dataclass(frozen=True)
class PeerStatus:
    """
    One row of L{Registry.peers}.
    """

    session: Session
    last_seen: float
    files: int
    missed: int
    rtt: float | None


@dataclass(frozen=True)
class PingResult:
    """
    One live session's answer to L{Registry.ping_host}.

    C{rtt} is the wire ping's round trip in seconds, or None when it was not
    answered in time, the session is a seed client (C{seed} is True: it
    gets no tracker-initiated messages) or another tracker holds it.
    C{port_open} says whether the P2P port accepted a TCP connection (None:
    no probe configured), and C{connect_rtt} how long that connect took.
    C{via} names the tracker holding the session when it is not this one
    (a tracker sharing the index): no wire ping is possible then, and the
    port probe is the only check.
    """

    session: Session
    rtt: float | None
    port_open: bool | None
    via: str | None = None
    connect_rtt: float | None = None

    @property
    def seed(self) -> bool:
        return self.session.is_seed


_LINK_GONE = (ConnectionDone, ConnectionLost, CancelledError)


class Registry:
    """
    Live sessions of one tracker, and the rules that change them.

    @param store: the L{IIndexStore} that holds the index.
    @param clock: C{IReactorTime}.
    @param tracker_id: prefix of the session ids this tracker hands out.
    @param heartbeat: seconds between heartbeat rounds: between two pings
        of one session (the value is announced to native peers in hello).
        The service calls L{heartbeat_tick} every L{heartbeat_tick_interval}
        seconds, which spreads the pings of a round over the interval.
    @param misses: consecutive unanswered pings that evict a session.
    @param ping_timeout: seconds a holder of a contested hostname and port
        has to answer a ping, and an admin ping to answer.
    @param probe: C{probe(ip, port) -> Deferred[bool]}, whether a P2P port
        accepts TCP connections (L{ping_host}); None to skip that check.
    @param heartbeat_slices: how many ticks (slices of the sessions) one
        round takes; default: one tick per L{HEARTBEAT_TICK} seconds, at most
        L{MAX_HEARTBEAT_SLICES}.
    @param max_files: publications one session may hold at once; a publish
        of a new name past it fails with C{quota} (None: no cap).
    """

    log = Logger(observer=tracker_gate)
    #: The shortest default tick of the heartbeat, in seconds: small
    #: slices keep each tick's pings (and their answers, which come back
    #: together) short for the requests that wait behind them.
    HEARTBEAT_TICK = 0.02
    MAX_HEARTBEAT_SLICES = 1000
    #: The default cap on one session's publications (C{--max-files-per-peer}).
    DEFAULT_MAX_FILES = 10000

    def __init__(
        self,
        store: Any,
        clock: Any,
        tracker_id: str,
        heartbeat: float = 30.0,
        misses: int = 3,
        ping_timeout: float = 5.0,
        probe: Probe | None = None,
        heartbeat_slices: int | None = None,
        max_files: int | None = DEFAULT_MAX_FILES,
    ) -> None:
        self.store = store
        self.max_files = max_files
        self.clock = clock
        self.tracker_id = tracker_id
        self.heartbeat_interval = heartbeat
        self.misses = misses
        self.ping_timeout = ping_timeout
        self.probe = probe
        self._live: dict[str, LiveSession] = {}
        self._by_key: dict[tuple[str, int], LiveSession] = {}
        self._counter = 0
        self._observers: list[Observer] = []
        self._renewing = False
        #: The store's synchronous read view, if it has one (the hot path).
        self._view = getattr(store, "read_view", None)
        if heartbeat_slices is None:
            heartbeat_slices = int(heartbeat / self.HEARTBEAT_TICK)
        self.heartbeat_slices = max(1, min(self.MAX_HEARTBEAT_SLICES, heartbeat_slices))
        # Native sessions by heartbeat slice: each tick visits one slice.
        self._slices: list[dict[str, LiveSession]] = [{} for _ in range(self.heartbeat_slices)]
        self._next_slice = 0
        self._answered = self._heartbeat_answer

    # -- observers -----------------------------------------------------------

    def subscribe(self, observer: Observer) -> None:
        """
        Call C{observer(kind, fields)} for every event: C{session_up},
        C{session_down} (C{reason}), C{publish} (C{status}), C{unpublish},
        C{evicted} (C{reason}; followed by its C{session_down}), C{rejected}
        (C{code}, C{message}), C{fetch} (C{sources}, and C{elapsed}: the
        seconds the lookup took) and C{store_error} (C{what}, C{error}: a
        store failure no request reports, such as a removal or a renewal
        that failed).  An observer that raises is logged and otherwise
        ignored.
        """
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def _emit(self, kind: str, **fields: Any) -> None:
        for observer in list(self._observers):
            try:
                observer(kind, fields)
            except Exception:
                self.log.failure("observer {observer!r} failed on {kind}", observer=observer, kind=kind)

    def rejected(self, code: str, message: str, session_id: str | None = None, address: str | None = None) -> None:
        """
        Tell observers a request was refused (the protocol calls this for
        every error answer it sends).
        """
        if self._observers:
            self._emit("rejected", code=code, message=message, session_id=session_id, address=address)

    # -- sessions ------------------------------------------------------------

    def session(self, session_id: str) -> Session | None:
        live = self._live.get(session_id)
        return live.session if live is not None else None

    def __len__(self) -> int:
        return len(self._live)

    def hello(
        self, link: Any, hostname: str, ip: str, p2p_port: int, version: int | None, key: str | None = None
    ) -> Deferred[Session]:
        """
        Register a new session for C{link}.

        C{key} is the public key whose signature over this connection's
        challenge the caller has checked (an authenticated hello), or None
        (seed clients, native hellos without a key).  An authenticated
        hostname is bound to its key on first use (the store keeps the
        binding); a hello with another key under a bound hostname fails
        with C{key_mismatch}.

        A live session holding the same hostname and P2P port:

          - an authenticated newcomer replaces an unauthenticated holder
            at once; an unauthenticated newcomer never replaces an
            authenticated holder (C{duplicate_session});
          - between unauthenticated ones, a seed holder is replaced at
            once by a newcomer from its own address, and refused
            (C{duplicate_session}) to anyone else;
          - otherwise (a native holder of the same standing) the holder is
            pinged: if it answers within C{ping_timeout} this hello fails
            with C{duplicate_session}, else the holder is evicted.

        @return: Deferred firing the new L{Session}; failing with a
            L{wire.WireError} or L{IndexUnavailable}.
        """
        if key is not None:
            d = self.store.bind_key(hostname, key)
            d.addCallback(self._key_bound, link, hostname, ip, p2p_port, version, key)
            return d
        return self._hello(link, hostname, ip, p2p_port, version, None)

    def _key_bound(
        self, bound: str, link: Any, hostname: str, ip: str, p2p_port: int, version: int | None, key: str
    ) -> Deferred[Session]:
        offered = fingerprint(key)
        if bound != key:
            raise key_mismatch(hostname, fingerprint(bound), offered)
        return self._hello(link, hostname, ip, p2p_port, version, offered)

    def _hello(
        self, link: Any, hostname: str, ip: str, p2p_port: int, version: int | None, key_fingerprint: str | None
    ) -> Deferred[Session]:
        if (hostname, p2p_port) in self._by_key:
            return self._contested_hello(link, hostname, ip, p2p_port, version, key_fingerprint)
        # The common case, without a generator: nobody holds the name.
        return self._register(link, hostname, ip, p2p_port, version, key_fingerprint)

    @inlineCallbacks
    def _contested_hello(
        self, link: Any, hostname: str, ip: str, p2p_port: int, version: int | None, key_fingerprint: str | None
    ):
        key = (hostname, p2p_port)
        authenticated = key_fingerprint is not None
        while True:
            holder = self._by_key.get(key)
            if holder is None:
                break
            sid = holder.session.session_id
            if holder.session.authenticated and not authenticated:
                raise wire.WireError(
                    "duplicate_session",
                    f"{hostname} port {p2p_port} is held by an authenticated session "
                    f"(key {holder.session.fingerprint}); an unauthenticated hello cannot replace it",
                )
            if authenticated and not holder.session.authenticated:
                yield self.evict(sid, f"replaced by the authenticated owner of {hostname} (key {key_fingerprint})")
                continue
            if holder.session.is_seed:
                if holder.session.ip != ip:
                    raise wire.WireError(
                        "duplicate_session",
                        f"{hostname} port {p2p_port} is held by a seed session from another address",
                    )
                yield self.evict(sid, "replaced by a new session from the same host and port")
                continue
            answered = yield self._ping(holder, self.ping_timeout)
            if self._live.get(sid) is not holder:
                # It left (or was evicted by someone else) meanwhile.
                continue
            if answered is not None:
                raise wire.WireError(
                    "duplicate_session",
                    f"{hostname} port {p2p_port} is already registered by a live session",
                )
            yield self.evict(sid, f"did not answer a ping within {self.ping_timeout:g} s "
                                  f"while a new session claimed its hostname and port")
        session = yield self._register(link, hostname, ip, p2p_port, version, key_fingerprint)
        return session

    def forget_key(self, hostname: str) -> Deferred[bool]:
        """
        For the admin shell: drop C{hostname}'s key binding, so that the
        next authenticated hello under it binds its own key.  Live sessions
        are left alone.

        @return: Deferred firing True if there was a binding.
        """
        d = self.store.forget_key(hostname)
        d.addCallback(self._key_forgotten, hostname)
        return d

    def _key_forgotten(self, forgotten: bool, hostname: str) -> bool:
        if forgotten:
            self.log.info("key binding of {hostname} forgotten", hostname=hostname)
        return forgotten

    def host_key(self, hostname: str) -> Deferred[str | None]:
        """
        The public key C{hostname} is bound to, or None.
        """
        return self.store.host_key(hostname)

    def _register(
        self,
        link: Any,
        hostname: str,
        ip: str,
        p2p_port: int,
        version: int | None,
        key_fingerprint: str | None = None,
    ) -> Deferred[Session]:
        """
        Record a session for a hostname and port nobody holds, and write it.
        """
        now = self.clock.seconds()
        self._counter += 1
        session = Session(
            session_id=f"{self.tracker_id}:{self._counter}",
            hostname=hostname,
            ip=ip,
            p2p_port=p2p_port,
            version=version,
            connected_at=now,
            tracker_id=self.tracker_id,
            fingerprint=key_fingerprint,
        )
        live = LiveSession(session, link, last_seen=now)
        # Reserve the hostname and port before the write, so that a hello
        # arriving meanwhile sees this session as the holder.
        self._live[session.session_id] = live
        self._by_key[(hostname, p2p_port)] = live
        if version is not None:
            live.slot = self._counter % self.heartbeat_slices
            self._slices[live.slot][session.session_id] = live
        try:
            d = self.store.add_session(session)
        except BaseException:
            self._forget(live)
            raise
        d.addCallbacks(self._registered, self._not_registered, (live,), None, (live,))
        return d

    def _not_registered(self, failure: Failure, live: LiveSession) -> Failure:
        self._forget(live)
        return failure

    def _registered(self, _: Any, live: LiveSession) -> Session:
        session = live.session
        if self._live.get(session.session_id) is not live:
            # Evicted or disconnected while the store was writing.  Its
            # removal may have completed before this add (a pool of database
            # connections keeps no order): remove it again, or it outlives
            # the session in the index.
            d = self.store.remove_session(session.session_id)
            d.addErrback(self._log_store_failure, "removing session {session_id}", session.session_id)
            raise wire.WireError("not_registered", "the session ended during hello")
        self.log.info(
            "session {session_id} up: {hostname} {ip}:{port} ({kind})",
            session_id=session.session_id,
            hostname=session.hostname,
            ip=session.ip,
            port=session.p2p_port,
            kind=("seed client" if session.version is None else f"version {session.version}")
            + (f", key {session.fingerprint}" if session.fingerprint else ", unauthenticated"),
        )
        self._emit("session_up", session=session)
        return session

    def _forget(self, live: LiveSession) -> bool:
        """
        Drop C{live} from the registry's maps (not from the store).
        """
        sid = live.session.session_id
        if self._live.get(sid) is not live:
            return False
        del self._live[sid]
        if self._by_key.get(live.key) is live:
            del self._by_key[live.key]
        self._slices[live.slot].pop(sid, None)
        return True

    def _end(self, session_id: str) -> tuple[LiveSession | None, Deferred]:
        live = self._live.get(session_id)
        if live is None or not self._forget(live):
            return None, succeed(None)
        d = self.store.remove_session(session_id)
        d.addErrback(self._log_store_failure, "removing session {session_id}", session_id)
        return live, d

    def disconnected(self, session_id: str, reason: str = "connection closed") -> Deferred:
        """
        The connection of C{session_id} closed: forget it and its records.
        Unknown (already evicted) sessions are ignored.
        """
        live, d = self._end(session_id)
        if live is not None:
            self.log.info("session {session_id} down: {reason}", session_id=session_id, reason=reason)
            self._emit("session_down", session=live.session, reason=reason)
        return d

    def evict(self, session_id: str, reason: str) -> Deferred:
        """
        Close a session's connection and drop its records.

        @return: Deferred firing once the store forgot it (never failing: a
            store failure is logged and the next resync repairs it).
        """
        live, d = self._end(session_id)
        if live is None:
            return d
        self.log.warn(
            "evicted session {session_id} ({hostname} {ip}:{port}): {reason}",
            session_id=session_id,
            hostname=live.session.hostname,
            ip=live.session.ip,
            port=live.session.p2p_port,
            reason=reason,
        )
        try:
            live.link.close()
        except Exception:
            self.log.failure("closing the connection of {session_id}", session_id=session_id)
        self._emit("evicted", session=live.session, reason=reason)
        self._emit("session_down", session=live.session, reason=reason)
        return d

    def _log_store_failure(self, failure: Failure, what: str, session_id: str) -> None:
        if failure.check(IndexUnavailable):
            # The index is down (a database outage): expected, and said in
            # one line; the next renewal or resync repairs the index.
            self.log.warn(
                "store failed " + what + ": {error}", session_id=session_id, error=failure.getErrorMessage()
            )
        else:
            self.log.failure("store failed " + what, failure, session_id=session_id)
        self._emit("store_error", what=what.format(session_id=session_id), error=failure.getErrorMessage())

    def shutdown(self, reason: str = "tracker shutting down") -> Deferred:
        """
        Close every session (the tracker stops).  @return: Deferred firing
        once the store forgot them all.
        """
        ds = [self.evict(sid, reason) for sid in list(self._live)]
        return DeferredList(ds, consumeErrors=True).addCallback(lambda _: None)

    # -- publications --------------------------------------------------------

    def _require(self, session_id: str) -> LiveSession:
        live = self._live.get(session_id)
        if live is None:
            raise not_registered()
        return live

    def publish(
        self,
        session_id: str,
        fname: str,
        lname: str | None = None,
        file_size: int | None = None,
        last_modified: float | str | None = None,
        sha256: str | None = None,
        allow_overwrite: bool = False,
        root: str | None = None,
        piece_size: int | None = None,
    ) -> Deferred[str]:
        """
        Publish a file for a session.

        C{root} and C{piece_size} identify the content for multi-source
        downloads (docs/swarm.md); they are kept only together.

        @return: Deferred firing C{"created"}, C{"updated"}, C{"unchanged"}
            or C{"conflict"} (see the protocol); the store is written only
            for the first two.
        """
        live = self._live.get(session_id)
        if live is None:
            return fail(not_registered())
        live.last_seen = self.clock.seconds()
        if live.session.version is not None or not lname:
            # Native peers never send local paths: the shared name is what
            # a downloader asks for.
            lname = fname
        if root is None or piece_size is None:
            root = piece_size = None
        fname, lname, sha256, root = shared_strings(fname, lname, sha256, root)
        new = Publication(fname, lname, file_size, last_modified, sha256, root, piece_size)
        old = live.publications.get(fname)
        if old is None:
            if self.max_files is not None and len(live.publications) >= self.max_files:
                return fail(wire.WireError(
                    "quota",
                    f"this session already publishes {len(live.publications)} files, the most this tracker "
                    f"accepts from one session ({self.max_files}); unpublish some first",
                ))
            status = wire.CREATED
        elif old == new:
            return succeed(self._published(live, new, wire.UNCHANGED))
        elif allow_overwrite:
            status = wire.UPDATED
        else:
            return succeed(self._published(live, new, wire.CONFLICT))
        d = self.store.put(session_id, new)
        d.addCallback(self._stored, live, new, status)
        return d

    def _stored(self, _: None, live: LiveSession, new: Publication, status: str) -> str:
        if self._live.get(live.session.session_id) is live:
            live.publications[new.fname] = new
        return self._published(live, new, status)

    def _published(self, live: LiveSession, publication: Publication, status: str) -> str:
        if status in (wire.CREATED, wire.UPDATED):
            # One line per publication: debug (a peer may publish thousands).
            self.log.debug(
                "{session_id} {status} {fname!r}",
                session_id=live.session.session_id,
                status=status,
                fname=publication.fname,
            )
        if self._observers:
            self._emit("publish", session=live.session, publication=publication, status=status)
        return status

    def unpublish(self, session_id: str, fname: str) -> Deferred[None]:
        """
        Withdraw one of the session's publications.  Fails with
        C{not_published} when it has none under that name.
        """
        live = self._live.get(session_id)
        if live is None:
            return fail(not_registered())
        live.last_seen = self.clock.seconds()
        if fname not in live.publications:
            return fail(wire.WireError("not_published", f"{fname!r} is not published by this session"))
        d = self.store.delete(session_id, fname)
        d.addCallback(self._unpublished, live, fname)
        return d

    def _unpublished(self, _: bool, live: LiveSession, fname: str) -> None:
        live.publications.pop(fname, None)
        self.log.debug("{session_id} unpublished {fname!r}", session_id=live.session.session_id, fname=fname)
        self._emit("unpublish", session=live.session, fname=fname)

    def publications_of(self, session_id: str) -> list[Publication]:
        live = self._live.get(session_id)
        return list(live.publications.values()) if live is not None else []

    # -- reads ---------------------------------------------------------------

    def fetch(self, session_id: str, fname: str, limit: int = wire.DEFAULT_LIMIT) -> Deferred[list[Source]]:
        """
        The live sources of C{fname}, oldest first, never the requester.

        The hot path: when the requester has not published C{fname} itself
        the store's list is returned as is.
        """
        live = self._live.get(session_id)
        if live is None:
            return fail(not_registered())
        started = self.clock.seconds() if self._observers else 0.0
        if fname in live.publications:
            d = self.store.sources(fname, limit + 1)
            d.addCallback(_without, session_id, limit)
        else:
            d = self.store.sources(fname, limit)
        if self._observers:
            d.addCallback(self._fetched, live, fname, started)
        return d

    def fetch_now(self, session_id: str, fname: str, limit: int = wire.DEFAULT_LIMIT) -> list[Source] | None:
        """
        L{fetch} without Deferreds, for stores that keep a synchronous read
        view (an attribute C{read_view} with C{sources(fname, limit)}, such
        as L{MemoryIndex}).

        @return: the sources, or None when the store has no read view (call
            L{fetch} then).
        @raise wire.WireError: C{not_registered}.
        """
        view = self._view
        if view is None:
            return None
        live = self._live.get(session_id)
        if live is None:
            raise not_registered()
        observed = bool(self._observers)
        started = self.clock.seconds() if observed else 0.0
        if fname in live.publications:
            sources = _without(view.sources(fname, limit + 1), session_id, limit)
        else:
            sources = view.sources(fname, limit)
        if observed:
            self._fetched(sources, live, fname, started)
        return sources

    def _fetched(self, sources: list[Source], live: LiveSession, fname: str, started: float) -> list[Source]:
        elapsed = self.clock.seconds() - started
        self._emit("fetch", session=live.session, fname=fname, sources=len(sources), elapsed=elapsed)
        return sources

    def catalogue(
        self, pattern: str | None = "", limit: int = wire.DEFAULT_LIMIT, after: CatalogueKey | None = None
    ) -> Deferred[list[CatalogueEntry]]:
        """
        The catalogue entries matching C{pattern}, in catalogue order, at
        most C{limit}, after the key C{after} (a page's cursor) if given.
        """
        if after is None:
            return self.store.catalogue(pattern, limit)
        return self.store.catalogue(pattern, limit, after)

    def discover(self, hostname: str) -> Deferred[list[Source]]:
        """
        Every publication of every live session with that hostname.
        """
        return self.store.host_files(hostname)

    def peers(self) -> list[PeerStatus]:
        """
        This tracker's live sessions, oldest first.
        """
        return [
            PeerStatus(live.session, live.last_seen, len(live.publications), live.missed, live.rtt)
            for live in sorted(self._live.values(), key=lambda l: l.session.connected_at)
        ]

    def snapshot(self) -> list[tuple[Session, list[Publication]]]:
        """
        This tracker's live state, as L{IIndexStore.resync} wants it.
        """
        return [(live.session, list(live.publications.values())) for live in self._live.values()]

    # -- heartbeats ----------------------------------------------------------

    @property
    def heartbeat_tick_interval(self) -> float:
        """
        Seconds between two calls of L{heartbeat_tick}.
        """
        return self.heartbeat_interval / self.heartbeat_slices

    def heartbeat(self) -> Deferred[None]:
        """
        One whole heartbeat round at once: every slice (see
        L{heartbeat_tick}), then renew the store.  For tests and tools; the
        service spreads the round with L{heartbeat_tick}.

        @return: see L{heartbeat_tick}.
        """
        now = self.clock.seconds()
        for sessions in self._slices:
            self._beat(sessions, now)
        return self._renew()

    def heartbeat_tick(self) -> Deferred[None]:
        """
        One tick of the heartbeat, to be called every
        L{heartbeat_tick_interval} seconds: it visits the next slice of the
        native sessions, so each session is visited once per heartbeat
        interval and a round's pings are spread over the interval instead of
        leaving at once.  A visit counts a miss when the previous ping is
        unanswered, evicts the session at C{misses} misses in a row, else
        pings it.  The tick that ends a round renews the store too (and
        resyncs it when it asks).

        @return: Deferred firing when the store is renewed, or at once on
            other ticks (never failing; errors are logged).  Pings are not
            waited for.
        """
        index = self._next_slice
        self._next_slice = (index + 1) % self.heartbeat_slices
        self._beat(self._slices[index], self.clock.seconds())
        if self._next_slice == 0:
            return self._renew()
        return succeed(None)

    def _beat(self, sessions: dict[str, LiveSession], now: float) -> None:
        misses = self.misses
        # One bound method for every ping, and the session id (which exists
        # anyway) as the token: no allocation per session or per ping.
        answered = self._answered
        for live in list(sessions.values()):
            if live.awaiting:
                live.missed += 1
                if live.missed >= misses:
                    self.evict(live.session.session_id, f"missed {live.missed} heartbeat pings")
                    continue
            try:
                ping_id = live.link.send_heartbeat(answered, live.session.session_id)
            except Exception:
                self.log.failure("pinging {session_id}", session_id=live.session.session_id)
                ping_id = None
            live.awaiting = True
            live.ping_sent = now
            if ping_id is not None:
                live.ping_id = ping_id
                if live.ping_floor is None:
                    live.ping_floor = ping_id

    def _heartbeat_answer(self, session_id: str, ping_id: int) -> bool:
        """
        A heartbeat ping of C{session_id} was answered: the session is alive
        (a late answer to an earlier unanswered ping counts too).

        @return: False when C{ping_id} is not one of its unanswered pings.
        """
        live = self._live.get(session_id)
        if live is None or live.ping_floor is None or not live.ping_floor <= ping_id <= live.ping_id:
            return False
        now = self.clock.seconds()
        if ping_id == live.ping_id:
            live.rtt = now - live.ping_sent
        live.last_seen = now
        live.awaiting = False
        live.missed = 0
        live.ping_id = live.ping_floor = None
        return True

    def _renew(self) -> Deferred[None]:
        if self._renewing:
            return succeed(None)
        self._renewing = True
        d = self.store.renew()
        d.addCallback(self._renewed)
        d.addErrback(self._renew_failed)
        d.addBoth(self._renew_done)
        return d

    def _renewed(self, lost: bool) -> Deferred | None:
        if not lost:
            return None
        snapshot = self.snapshot()
        self.log.warn("the index lost this tracker's records: resyncing {n} sessions", n=len(snapshot))
        return self.store.resync(snapshot)

    def _renew_failed(self, failure: Failure) -> None:
        if failure.check(IndexUnavailable):
            self.log.warn("index unavailable during heartbeat: {error}", error=failure.getErrorMessage())
        else:
            self.log.failure("renewing the index failed", failure)
        self._emit("store_error", what="renewing the index", error=failure.getErrorMessage())

    def _renew_done(self, _: Any) -> None:
        self._renewing = False

    def _ping(self, live: LiveSession, timeout: float | None) -> Deferred[float | None]:
        """
        Ping a native session.

        @return: Deferred firing the round trip in seconds, or None when the
            connection went away or C{timeout} passed first.  Never fails.
        """
        sent = self.clock.seconds()
        try:
            d = live.link.ping()
        except Exception:
            self.log.failure("pinging {session_id}", session_id=live.session.session_id)
            return succeed(None)
        if timeout is not None:
            d.addTimeout(timeout, self.clock)
        d.addCallbacks(self._pinged, self._ping_failed, callbackArgs=(live, sent))
        return d

    def _pinged(self, _: Any, live: LiveSession, sent: float) -> float:
        now = self.clock.seconds()
        live.last_seen = now
        live.rtt = now - sent
        return live.rtt

    def _ping_failed(self, failure: Failure) -> None:
        if not failure.check(TimeoutError, *_LINK_GONE):
            self.log.failure("ping failed", failure)
        return None

    def ping_host(self, hostname: str) -> Deferred[list[PingResult]]:
        """
        For the admin shell: ping every live session with that hostname on
        the wire (native ones of this tracker) and probe its P2P port.

        Sessions that other trackers sharing the index hold (as the store's
        C{sessions()} lists them) cannot be pinged from here: their P2P
        port is probed directly and the result says which tracker holds
        them (C{via}).

        @return: Deferred firing a list of L{PingResult}, oldest session
            first, empty when no live session has that hostname.
        """
        lives = [l for l in self._live.values() if l.session.hostname == hostname]
        d = self.store.sessions()
        d.addErrback(self._sessions_unavailable)
        d.addCallback(self._check_all, hostname, lives)
        return d

    def _sessions_unavailable(self, failure: Failure) -> list[Session]:
        failure.trap(IndexUnavailable)
        self.log.warn(
            "ping: cannot list other trackers' sessions: {error}", error=failure.getErrorMessage()
        )
        return []

    def _check_all(self, sessions: list[Session], hostname: str, lives: list[LiveSession]) -> Deferred:
        checks = [(live.session, self._check(live)) for live in lives]
        for session in sessions:
            if session.hostname == hostname and session.tracker_id != self.tracker_id:
                checks.append((session, self._check_remote(session)))
        checks.sort(key=lambda check: check[0].connected_at)
        return DeferredList([d for _, d in checks], consumeErrors=True).addCallback(
            lambda results: [r for ok, r in results if ok]
        )

    @inlineCallbacks
    def _check(self, live: LiveSession):
        session = live.session
        probed = self._timed_probe(session.ip, session.p2p_port)
        rtt = None
        if not session.is_seed:
            rtt = yield self._ping(live, self.ping_timeout)
        port_open, connect_rtt = yield probed
        return PingResult(session, rtt, port_open, connect_rtt=connect_rtt)

    @inlineCallbacks
    def _check_remote(self, session: Session):
        port_open, connect_rtt = yield self._timed_probe(session.ip, session.p2p_port)
        return PingResult(session, None, port_open, via=session.tracker_id, connect_rtt=connect_rtt)

    def _timed_probe(self, ip: str, port: int) -> Deferred[tuple[bool | None, float | None]]:
        """
        L{_probe}, and the seconds the connect took when the port was open.
        """
        started = self.clock.seconds()
        d = self._probe(ip, port)
        d.addCallback(lambda open_: (open_, self.clock.seconds() - started if open_ else None))
        return d

    def _probe(self, ip: str, port: int) -> Deferred[bool | None]:
        if self.probe is None:
            return succeed(None)
        d = self.probe(ip, port)
        d.addErrback(lambda f: self.log.failure("probing {ip}:{port}", f, ip=ip, port=port) or False)
        return d

def _without(sources: list[Source], session_id: str, limit: int) -> list[Source]:
    kept = [s for s in sources if s.session.session_id != session_id]
    del kept[limit:]
    return kept
