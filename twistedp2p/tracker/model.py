"""
Plain records the tracker and its stores exchange.  No I/O here.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import json
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
    #: Short fingerprint of the key that signed its hello
    #: (L{twistedp2p.identity}); None for an unauthenticated session (seed
    #: clients, and native hellos without a key).
    fingerprint: str | None = None

    @property
    def is_seed(self) -> bool:
        return self.version is None

    @property
    def authenticated(self) -> bool:
        return self.fingerprint is not None


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
        if s.fingerprint is not None:
            # Only authenticated sources carry one (docs/protocol.md).
            entry["fingerprint"] = s.fingerprint
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

    #: Host names listed in one entry's answer; C{more_hostnames} counts the
    #: rest, so an entry's size does not grow with its sources.
    MAX_HOSTNAMES = 100

    def to_wire(self) -> dict[str, Any]:
        # The root only groups entries: the answer keeps its version 1 form.
        hostnames = self.hostnames
        entry = {
            "fname": self.fname,
            "file_size": self.file_size,
            "sha256": self.sha256,
            "sources": self.sources,
            "hostnames": list(hostnames[: self.MAX_HOSTNAMES]),
        }
        if len(hostnames) > self.MAX_HOSTNAMES:
            entry["more_hostnames"] = len(hostnames) - self.MAX_HOSTNAMES
        return entry

    @property
    def key(self) -> "CatalogueKey":
        """
        Where this entry sorts in the catalogue (see L{catalogue_key}).
        """
        return catalogue_key(self.fname, self.file_size, self.sha256, self.root)


#: (fname, sha256 or "", file_size or -1, root or ""): the catalogue's order.
CatalogueKey = tuple[str, str, int, str]


def catalogue_key(fname: str, file_size: int | None, sha256: str | None, root: str | None) -> CatalogueKey:
    """
    The catalogue's sort key: by name, then content.  Distinct entries of
    one name have distinct keys, so a key marks a place to continue from.
    """
    return (fname, sha256 or "", -1 if file_size is None else file_size, root or "")


def encode_cursor(key: CatalogueKey) -> str:
    """
    The C{next} cursor of a catalogue page ending at the entry with C{key}:
    an opaque string for clients (URL-safe base64 of the key as JSON).
    """
    data = json.dumps(list(key), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> CatalogueKey:
    """
    The key a cursor from L{encode_cursor} holds.

    @raise ValueError: it is not one.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = json.loads(raw.decode("utf-8"))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValueError("not a cursor this tracker gave")
    if (
        not isinstance(value, list)
        or len(value) != 4
        or not all(isinstance(value[i], str) for i in (0, 1, 3))
        or type(value[2]) is not int
    ):
        raise ValueError("not a cursor this tracker gave")
    return (value[0], value[1], value[2], value[3])


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

    Empty or None matches everything.  A pattern ending with ``/`` is a
    folder: it matches the names that start with it, exactly (case counts,
    ``*?[`` are themselves).  Otherwise a pattern with ``*``, ``?`` or
    ``[`` is a shell glob, and anything else is a substring; both ignore
    case.
    """
    if not pattern:
        return lambda name: True
    if pattern.endswith("/"):
        return lambda name: name.startswith(pattern)
    folded = pattern.casefold()
    if any(c in pattern for c in "*?["):
        return lambda name: fnmatch.fnmatchcase(name.casefold(), folded)
    return lambda name: folded in name.casefold()


def group_catalogue(sources: list[Source], limit: int, after: CatalogueKey | None = None) -> list[CatalogueEntry]:
    """
    Group sources into catalogue entries by (fname, file_size, sha256,
    root) (see L{content_key}), in catalogue order (L{catalogue_key}), at
    most ``limit`` entries, only those after the key C{after} if given.
    """
    groups: dict[tuple[str, int | None, str | None, str | None], list[Source]] = {}
    for source in sources:
        p = source.publication
        groups.setdefault((p.fname,) + content_key(p), []).append(source)
    entries = []
    keyed = sorted(((catalogue_key(k[0], k[1], k[2], k[3]), k, m) for k, m in groups.items()), key=_first)
    for key, (fname, file_size, sha256, root), members in keyed:
        if after is not None and key <= after:
            continue
        hosts = tuple(dict.fromkeys(m.session.hostname for m in members))
        entries.append(CatalogueEntry(fname, file_size, sha256, len(members), hosts, root))
        if len(entries) >= limit:
            break
    return entries


def _first(item: tuple) -> Any:
    return item[0]
