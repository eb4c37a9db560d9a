"""
The PostgreSQL store's read view: what every tracker sharing the database
holds, kept in memory, one L{MemoryIndex} per tracker.

Pure and synchronous (no I/O, no reactor): L{PostgresStore} feeds it rows
from snapshots and change notifications, and it answers the hot-path reads.
Keeping one index per tracker makes leases cheap to honour: a read skips the
indexes of trackers whose lease has passed, and dropping a tracker is one
dictionary operation.
"""

from __future__ import annotations

import heapq
from itertools import islice
from sys import intern
from typing import Any, Iterable, Sequence

from twistedp2p.tracker.model import CatalogueEntry, Publication, Session, Source, group_catalogue, shared_strings
from twistedp2p.tracker.store.memory import MemoryIndex
from twistedp2p.tracker.store.schema import decode_mtime

#: Column order of a session row (as in the C{sessions} table).
SESSION_COLUMNS = (
    "session_id", "tracker_id", "hostname", "ip", "p2p_port", "version", "connected_at", "fingerprint",
)
#: Column order of a publication row (as in the C{publications} table).
PUBLICATION_COLUMNS = (
    "seq", "session_id", "fname", "lname", "file_size", "last_modified", "sha256", "root", "piece_size",
)


def session_from_row(row: Sequence[Any]) -> Session:
    """
    A L{Session} from a row in L{SESSION_COLUMNS} order.
    """
    session_id, tracker_id, hostname, ip, port, version, connected_at = row[:7]
    # Rows of trackers older than schema version 3 have no fingerprint.
    fingerprint = row[7] if len(row) > 7 else None
    # Every row decoded from a notification brings its own copies of the
    # strings: share the ones many sessions have in common (interned
    # strings are freed with their last user).
    return Session(
        session_id=session_id,
        hostname=hostname,
        ip=intern(ip),
        p2p_port=int(port),
        version=None if version is None else int(version),
        connected_at=float(connected_at),
        tracker_id=intern(tracker_id),
        fingerprint=fingerprint,
    )


def session_to_row(session: Session) -> list[Any]:
    """
    The inverse of L{session_from_row}.
    """
    s = session
    return [s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at, s.fingerprint]


def publication_from_row(row: Sequence[Any]) -> tuple[int, str, Publication]:
    """
    C{(seq, session_id, Publication)} from a row in L{PUBLICATION_COLUMNS}
    order (C{last_modified} still JSON-encoded, as stored).
    """
    seq, session_id, fname, lname, file_size, last_modified, sha256, root, piece_size = row
    fname, lname, sha256, root = shared_strings(fname, lname, sha256, root)
    publication = Publication(
        fname=fname,
        lname=lname,
        file_size=None if file_size is None else int(file_size),
        last_modified=decode_mtime(last_modified),
        sha256=sha256,
        root=root,
        piece_size=None if piece_size is None else int(piece_size),
    )
    return int(seq), session_id, publication


class IndexView:
    """
    Sessions and publications of every tracker, with each tracker's lease.

    A tracker's records are visible while its lease (in the store's clock,
    seconds since the epoch) has not passed.  The owning tracker's own
    records are always visible to it: its registry vouches for them, and
    during a database outage it must go on serving its own peers.

    @param tracker_id: the tracker this view belongs to.
    @param now: a callable returning the current time (C{clock.seconds}).
    """

    def __init__(self, tracker_id: str, now: Any) -> None:
        self.tracker_id = tracker_id
        self._now = now
        self._indexes: dict[str, MemoryIndex] = {}
        self._leases: dict[str, float | None] = {}
        self._owner: dict[str, str] = {}

    # -- loading -------------------------------------------------------------

    def load(self, trackers: Iterable[Sequence[Any]], sessions: Iterable[Sequence[Any]],
             publications: Iterable[Sequence[Any]]) -> None:
        """
        Replace everything with a snapshot: C{(tracker_id, lease_expires)}
        rows, session rows and publication rows (see the C{*_COLUMNS}).
        """
        self._indexes.clear()
        self._leases.clear()
        self._owner.clear()
        self._fill(trackers, sessions, publications)

    def replace_tracker(self, tracker_id: str, trackers: Iterable[Sequence[Any]],
                        sessions: Iterable[Sequence[Any]], publications: Iterable[Sequence[Any]]) -> None:
        """
        Replace one tracker's records (and lease) with freshly read rows.
        """
        self.drop_tracker(tracker_id)
        self._fill(trackers, sessions, publications)

    def _fill(self, trackers, sessions, publications) -> None:
        for tracker_id, lease_expires in trackers:
            self.set_lease(tracker_id, lease_expires)
        for row in sessions:
            self.add_session(session_from_row(row))
        for row in publications:
            seq, session_id, publication = publication_from_row(row)
            self.put(session_id, publication, seq)

    # -- changes -------------------------------------------------------------

    def set_lease(self, tracker_id: str, lease_expires: float | None) -> None:
        self._leases[tracker_id] = None if lease_expires is None else float(lease_expires)

    def drop_tracker(self, tracker_id: str) -> None:
        """
        Forget a tracker, its lease and all its records.
        """
        self._leases.pop(tracker_id, None)
        index = self._indexes.pop(tracker_id, None)
        if index is not None:
            for session in index.sessions():
                self._owner.pop(session.session_id, None)

    def add_session(self, session: Session) -> None:
        owner = self._owner.get(session.session_id)
        if owner is not None and owner != session.tracker_id:
            self._indexes[owner].remove_session(session.session_id)
        self._owner[session.session_id] = session.tracker_id
        index = self._indexes.get(session.tracker_id)
        if index is None:
            index = self._indexes[session.tracker_id] = MemoryIndex()
        index.add_session(session)

    def remove_session(self, session_id: str) -> bool:
        owner = self._owner.pop(session_id, None)
        if owner is None:
            return False
        return self._indexes[owner].remove_session(session_id)

    def put(self, session_id: str, publication: Publication, seq: int) -> bool:
        """
        @return: False (and no change) when the session is unknown: its
            removal was seen first, and the rows went with it.
        """
        owner = self._owner.get(session_id)
        if owner is None:
            return False
        self._indexes[owner].put(session_id, publication, seq)
        return True

    def delete(self, session_id: str, fname: str) -> bool:
        owner = self._owner.get(session_id)
        if owner is None:
            return False
        return self._indexes[owner].delete(session_id, fname)

    # -- introspection -------------------------------------------------------

    def lease(self, tracker_id: str) -> float | None:
        return self._leases.get(tracker_id)

    def trackers(self) -> list[str]:
        """
        Every tracker with a lease or records in the view, sorted.
        """
        return sorted(set(self._leases) | set(self._indexes))

    def session(self, session_id: str) -> Session | None:
        owner = self._owner.get(session_id)
        return None if owner is None else self._indexes[owner].session(session_id)

    def publications_of(self, session_id: str) -> list[Publication]:
        owner = self._owner.get(session_id)
        return [] if owner is None else self._indexes[owner].publications_of(session_id)

    def visible(self, tracker_id: str, now: float | None = None) -> bool:
        """
        Whether reads show this tracker's records now.
        """
        if tracker_id == self.tracker_id:
            return True
        lease = self._leases.get(tracker_id)
        if lease is None:
            return False
        return lease >= (self._now() if now is None else now)

    def _live(self) -> list[MemoryIndex]:
        now = self._now()
        return [index for tid, index in self._indexes.items() if self.visible(tid, now)]

    # -- reads ---------------------------------------------------------------

    def sources(self, fname: str, limit: int) -> list[Source]:
        live = self._live()
        if len(live) == 1:
            return live[0].sources(fname, limit)
        merged = heapq.merge(*(index.sources(fname, limit) for index in live), key=_seq)
        return list(islice(merged, limit))

    def host_files(self, hostname: str) -> list[Source]:
        live = self._live()
        if len(live) == 1:
            return live[0].host_files(hostname)
        return list(heapq.merge(*(index.host_files(hostname) for index in live), key=_seq))

    def catalogue(self, pattern: str | None, limit: int, after: Any = None) -> list[CatalogueEntry]:
        live = self._live()
        if len(live) == 1:
            return live[0].catalogue(pattern, limit, after)
        # Each index's first `limit` entries (after `after`) hold every name
        # that can be in the merged first `limit`; regroup all sources of
        # those names.
        names = sorted({e.fname for index in live for e in index.catalogue(pattern, limit, after)})
        found: list[Source] = []
        for name in names:
            found.extend(heapq.merge(*(index.sources(name, 2**62) for index in live), key=_seq))
        return group_catalogue(found, limit, after)

    def sessions(self) -> list[Session]:
        found = [s for index in self._live() for s in index.sessions()]
        found.sort(key=_connected_at)
        return found

    def all_sessions(self) -> list[Session]:
        """
        Every session in the view, visible or not, oldest first.
        """
        found = [s for index in self._indexes.values() for s in index.sessions()]
        found.sort(key=_connected_at)
        return found


def _seq(source: Source) -> int:
    return source.seq


def _connected_at(session: Session) -> float:
    return session.connected_at
