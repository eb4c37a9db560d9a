"""
The in-memory index: a pure synchronous data structure (L{MemoryIndex}) and
an L{IIndexStore} over it that keeps nothing on disk (L{MemoryStore}).

The SQLite and PostgreSQL stores answer their reads from a L{MemoryIndex}
too, so its API is shared by every store.  ``sources()`` is the tracker's
hot path: it costs O(sources of that name), and the list it slices is built
once per change of that name, not once per call.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Iterable

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from twistedp2p.tracker.model import (
    CatalogueEntry,
    Publication,
    Session,
    CatalogueKey,
    Source,
    group_catalogue,
    pattern_matcher,
)
from twistedp2p.tracker.store.interface import IIndexStore
from twistedp2p.tracker.store.schema import LATEST_SCHEMA_VERSION


class MemoryIndex:
    """
    Live sessions and their publications, indexed for the tracker's reads.

    Every publication takes a sequence number (``seq``); a replace takes a new
    one, so a replaced publication moves to the end of its name's list.
    Sources are always listed oldest ``seq`` first.

    Not thread-safe: use it from one thread (the reactor thread).  Lists it
    returns are fresh copies that callers may keep or change.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}
        # session_id -> {fname: Source}; the session's own publications.
        self._by_session: dict[str, dict[str, Source]] = {}
        # fname -> {session_id: Source}, kept in ascending seq order.
        self._by_name: dict[str, dict[str, Source]] = {}
        # fname -> list of the values of _by_name[fname]; rebuilt lazily.
        self._lists: dict[str, list[Source]] = {}
        # hostname -> its one session id, or {session_id: None} (an ordered
        # set) when several sessions share it: nearly every hostname has
        # one session, and a dict each would cost ~200 bytes per session.
        self._by_host: dict[str, str | dict[str, None]] = {}
        self._next_seq = 1
        # The catalogue, cached: the shared names in order (None: rebuilt
        # on the next read, after a name came or went), and each name's
        # entries (dropped with its source list when the name changes).
        self._names: list[str] | None = None
        self._entries: dict[str, list[CatalogueEntry]] = {}

    # -- sessions ------------------------------------------------------------

    def add_session(self, session: Session) -> None:
        """
        Record a live session; a record with the same id is replaced (and its
        publications now point at the new record).
        """
        sid = session.session_id
        old = self._sessions.get(sid)
        if old is not None and old.hostname != session.hostname:
            self._unhost(old)
        self._sessions[sid] = session
        self._host(session.hostname, sid)
        own = self._by_session.setdefault(sid, {})
        if old is not None and own:
            for fname, source in list(own.items()):
                fresh = Source(session, source.publication, source.seq)
                own[fname] = fresh
                self._by_name[fname][sid] = fresh
                self._changed(fname)

    def remove_session(self, session_id: str) -> bool:
        """
        Forget a session and every publication it holds.

        @return: True if the session was known.
        """
        session = self._sessions.pop(session_id, None)
        if session is None:
            return False
        self._unhost(session)
        for fname in self._by_session.pop(session_id, {}):
            self._unlink(session_id, fname)
        return True

    def _host(self, hostname: str, sid: str) -> None:
        hosts = self._by_host.get(hostname)
        if hosts is None or hosts == sid:
            self._by_host[hostname] = sid
        elif type(hosts) is str:
            self._by_host[hostname] = {hosts: None, sid: None}
        else:
            hosts[sid] = None

    def _unhost(self, session: Session) -> None:
        hostname = session.hostname
        hosts = self._by_host.get(hostname)
        if hosts is None:
            return
        if type(hosts) is str:
            if hosts == session.session_id:
                del self._by_host[hostname]
            return
        hosts.pop(session.session_id, None)
        if len(hosts) == 1:
            self._by_host[hostname] = next(iter(hosts))
        elif not hosts:
            del self._by_host[hostname]

    def session(self, session_id: str) -> Session | None:
        return self._sessions.get(session_id)

    def sessions(self) -> list[Session]:
        """
        Every live session, oldest (``connected_at``, then first added)
        first.
        """
        return sorted(self._sessions.values(), key=_connected_at)

    # -- publications --------------------------------------------------------

    def put(self, session_id: str, publication: Publication, seq: int | None = None) -> int:
        """
        Insert or replace the publication C{session_id} holds under
        C{publication.fname}.

        @param seq: the sequence number to use (a database assigned it), or
            None to take the next one from this index's own counter.  The
            counter always moves past a given C{seq}.
        @return: the sequence number the publication now has.
        @raise KeyError: if the session is unknown.
        """
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(session_id)
        if seq is None:
            seq = self._next_seq
        if seq >= self._next_seq:
            self._next_seq = seq + 1
        fname = publication.fname
        source = Source(session, publication, seq)
        self._by_session[session_id][fname] = source
        entries = self._by_name.get(fname)
        if entries is None:
            self._by_name[fname] = {session_id: source}
            self._names = None
        else:
            entries.pop(session_id, None)
            last = next(reversed(entries.values()), None) if entries else None
            entries[session_id] = source
            if last is not None and last.seq > seq:
                # Out of order (a seq given by a database): restore order.
                ordered = sorted(entries.values(), key=_seq)
                entries.clear()
                for s in ordered:
                    entries[s.session.session_id] = s
        self._changed(fname)
        return seq

    def delete(self, session_id: str, fname: str) -> bool:
        """
        Remove one publication.  @return: True if there was one.
        """
        own = self._by_session.get(session_id)
        if own is None or own.pop(fname, None) is None:
            return False
        self._unlink(session_id, fname)
        return True

    def _unlink(self, session_id: str, fname: str) -> None:
        entries = self._by_name.get(fname)
        if entries is not None:
            entries.pop(session_id, None)
            if not entries:
                del self._by_name[fname]
                self._names = None
        self._changed(fname)

    def _changed(self, fname: str) -> None:
        """
        The sources of C{fname} changed: drop what was derived from them.
        """
        self._lists.pop(fname, None)
        self._entries.pop(fname, None)

    def publications_of(self, session_id: str) -> list[Publication]:
        """
        The publications of one session, oldest first.
        """
        own = self._by_session.get(session_id)
        if not own:
            return []
        return [s.publication for s in sorted(own.values(), key=_seq)]

    # -- reads ---------------------------------------------------------------

    def sources(self, fname: str, limit: int) -> list[Source]:
        """
        The sources of C{fname}, oldest first, at most C{limit}.
        """
        cached = self._lists.get(fname)
        if cached is None:
            entries = self._by_name.get(fname)
            if entries is None:
                return []
            cached = self._lists[fname] = list(entries.values())
        return cached[:limit]

    def host_files(self, hostname: str) -> list[Source]:
        """
        Every publication of every session with this hostname, oldest first.
        """
        ids = self._by_host.get(hostname)
        if not ids:
            return []
        if type(ids) is str:
            ids = (ids,)
        found: list[Source] = []
        for sid in ids:
            found.extend(self._by_session.get(sid, {}).values())
        found.sort(key=_seq)
        return found

    def catalogue(self, pattern: str | None, limit: int, after: CatalogueKey | None = None) -> list[CatalogueEntry]:
        """
        Distinct contents (L{content_key}) whose name matches C{pattern}, in
        catalogue order (L{catalogue_key}), at most C{limit}, after the
        key C{after} if given (the next page).

        The sorted names and each name's entries are cached until they
        change, so repeated searches neither sort nor regroup: a page costs
        the names it scans for the pattern plus the entries it returns.
        """
        names = self._names
        if names is None:
            names = self._names = sorted(self._by_name)
        matches = pattern_matcher(pattern) if pattern else None
        found: list[CatalogueEntry] = []
        start = bisect_left(names, after[0]) if after is not None else 0
        cache = self._entries
        for i in range(start, len(names)):
            name = names[i]
            if matches is not None and not matches(name):
                continue
            entries = cache.get(name)
            if entries is None:
                entries = cache[name] = group_catalogue(list(self._by_name[name].values()), len(self._by_name[name]))
            for entry in entries:
                if after is not None and entry.key <= after:
                    continue
                found.append(entry)
                if len(found) >= limit:
                    return found
        return found

    def clear(self) -> None:
        """
        Forget everything (the seq counter keeps counting).
        """
        self._sessions.clear()
        self._by_session.clear()
        self._by_name.clear()
        self._lists.clear()
        self._by_host.clear()
        self._names = None
        self._entries.clear()

    def load(self, snapshot: Iterable[tuple[Session, Iterable[Publication]]]) -> None:
        """
        Replace everything with C{snapshot}: C{(Session, [Publication])}
        pairs, publications taking new seqs in the order given.
        """
        self.clear()
        for session, publications in snapshot:
            self.add_session(session)
            for publication in publications:
                self.put(session.session_id, publication)

    def __len__(self) -> int:
        """
        The number of live sessions.
        """
        return len(self._sessions)


def _seq(source: Source) -> int:
    return source.seq


def _connected_at(session: Session) -> float:
    return session.connected_at


@implementer(IIndexStore)
class MemoryStore:
    """
    An L{IIndexStore} that keeps the index in memory only.

    Every Deferred it returns has already fired.  It has no database to lose,
    so C{renew} always answers False.
    """

    schema_version = LATEST_SCHEMA_VERSION

    def __init__(self, tracker_id: str = "memory", index: MemoryIndex | None = None) -> None:
        self.tracker_id = tracker_id
        self.index = index if index is not None else MemoryIndex()
        #: Synchronous reads for the registry's hot path (see
        #: L{Registry.fetch_now}).
        self.read_view = self.index
        #: hostname -> bound public key; kept across C{start} (but not
        #: across processes: nothing here outlives the tracker).
        self._keys: dict[str, str] = {}

    def bind_key(self, hostname: str, key: str) -> Deferred[str]:
        return succeed(self._keys.setdefault(hostname, key))

    def host_key(self, hostname: str) -> Deferred[str | None]:
        return succeed(self._keys.get(hostname))

    def forget_key(self, hostname: str) -> Deferred[bool]:
        return succeed(self._keys.pop(hostname, None) is not None)

    def start(self) -> Deferred[None]:
        self.index.clear()
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def add_session(self, session: Session) -> Deferred[None]:
        self.index.add_session(session)
        return succeed(None)

    def remove_session(self, session_id: str) -> Deferred[None]:
        self.index.remove_session(session_id)
        return succeed(None)

    def put(self, session_id: str, publication: Publication) -> Deferred[None]:
        self.index.put(session_id, publication)
        return succeed(None)

    def delete(self, session_id: str, fname: str) -> Deferred[bool]:
        return succeed(self.index.delete(session_id, fname))

    def sources(self, fname: str, limit: int) -> Deferred[list[Source]]:
        return succeed(self.index.sources(fname, limit))

    def host_files(self, hostname: str) -> Deferred[list[Source]]:
        return succeed(self.index.host_files(hostname))

    def catalogue(
        self, pattern: str | None, limit: int, after: CatalogueKey | None = None
    ) -> Deferred[list[CatalogueEntry]]:
        return succeed(self.index.catalogue(pattern, limit, after))

    def sessions(self) -> Deferred[list[Session]]:
        return succeed(self.index.sessions())

    def renew(self) -> Deferred[bool]:
        return succeed(False)

    def resync(self, snapshot) -> Deferred[None]:
        self.index.load(snapshot)
        return succeed(None)
