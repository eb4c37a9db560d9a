"""
Plain records the tracker and its stores exchange.  No I/O here.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from sys import intern
from typing import Any, Callable


@dataclass(frozen=True, slots=True)
class Session:
    """
    One live connection of a peer to a tracker.
    """

    #: Unique across trackers and restarts (tracker id + counter).
    session_id: str
    hostname: str
    #: The address as seen on the connection, not as claimed.
    ip: str
    p2p_port: int
    #: Protocol version from hello; None for a seed-protocol client.
    version: int | None
    #: Seconds since the epoch, from the tracker's clock.
    connected_at: float
    #: The tracker that owns the session.
    tracker_id: str

    @property
    def is_seed(self) -> bool:
        return self.version is None


@dataclass(frozen=True, slots=True)
class Publication:
    """
    One file a session has published under a shared name.
    """

    fname: str
    #: What a downloader asks for: the shared name for native peers, the
    #: seed client's own local name for seed peers.
    lname: str
    file_size: int | None = None
    #: Seconds since the epoch (native) or an ISO-8601 string (seed).
    last_modified: float | str | None = None
    #: None for seed-protocol sources, which are unverified.
    sha256: str | None = None
    #: The root hash over the piece list (docs/swarm.md), and the piece
    #: size it was built with; None for seed sources and older peers.
    root: str | None = None
    piece_size: int | None = None


@dataclass(frozen=True, slots=True)
class Source:
    """
    A publication joined with the session that holds it: one row of a
    ``fetch`` answer.  ``seq`` orders publications (oldest first).
    """

    session: Session
    publication: Publication
    seq: int

    def to_wire(self) -> dict[str, Any]:
        s, p = self.session, self.publication
        entry = {
            "hostname": s.hostname,
            "ip": s.ip,
            "port": s.p2p_port,
            "lname": p.lname,
            "fname": p.fname,
            "file_size": p.file_size,
            "last_modified": p.last_modified,
            "sha256": p.sha256,
            "version": s.version,
        }
        if p.root is not None:
            entry["root"] = p.root
            entry["piece_size"] = p.piece_size
        return entry


@dataclass(frozen=True)
class CatalogueEntry:
    """
    One distinct content under one shared name, with its live sources.
    """

    fname: str
    file_size: int | None
    sha256: str | None
    sources: int
    hostnames: tuple[str, ...]
    #: The root hash shared by these sources, when they published one.
    root: str | None = None

    def to_wire(self) -> dict[str, Any]:
        # The root only groups entries: the answer keeps its version 1 form.
        return {
            "fname": self.fname,
            "file_size": self.file_size,
            "sha256": self.sha256,
            "sources": self.sources,
            "hostnames": list(self.hostnames),
        }


def shared_strings(
    fname: str, lname: str, sha256: str | None, root: str | None
) -> tuple[str, str, str | None, str | None]:
    """
    Many sessions publish the same popular files: one copy of each name and
    hash, however many publications hold it (interned strings are freed
    with their last user).  A local name equal to the shared name is the
    same string.

    @return: C{(fname, lname, sha256, root)}.
    """
    fname = intern(fname)
    lname = fname if lname == fname else lname
    return (
        fname,
        lname,
        None if sha256 is None else intern(sha256),
        None if root is None else intern(root),
    )


def content_key(publication: Publication) -> tuple[int | None, str | None, str | None]:
    """
    What makes two publications of one name the same catalogue entry: the
    root where present (it fixes the size and the bytes), else the size and
    SHA-256.
    """
    return (publication.file_size, publication.sha256, publication.root)


def pattern_matcher(pattern: str | None) -> Callable[[str], bool]:
    """
    Turn a catalogue search pattern into a predicate on shared names.

    Empty or None matches everything.  A pattern with ``*``, ``?`` or ``[``
    is a shell glob; anything else is a substring.  Both ignore case.
    """
    if not pattern:
        return lambda name: True
    folded = pattern.casefold()
    if any(c in pattern for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name.casefold(), folded)
    return lambda name: folded in name.casefold()


def group_catalogue(sources: list[Source], limit: int) -> list[CatalogueEntry]:
    """
    Group sources into catalogue entries by (fname, file_size, sha256,
    root) (see L{content_key}), sorted by name, at most ``limit`` entries.
    """
    groups: dict[tuple[str, int | None, str | None, str | None], list[Source]] = {}
    for source in sources:
        p = source.publication
        groups.setdefault((p.fname,) + content_key(p), []).append(source)
    entries = []
    for (fname, file_size, sha256, root), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][2] or "", kv[0][1] or 0, kv[0][3] or "")
    ):
        hosts = tuple(dict.fromkeys(m.session.hostname for m in members))
        entries.append(CatalogueEntry(fname, file_size, sha256, len(members), hosts, root))
        if len(entries) >= limit:
            break
    return entries
