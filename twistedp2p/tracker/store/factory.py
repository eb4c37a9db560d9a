"""
Turn the tracker's C{--db} setting into a store.

  - nothing: the SQLite file C{p2ptracker.sqlite3} in the current directory
  - C{PATH}, C{sqlite:PATH}, C{sqlite:///ABSOLUTE/PATH}: that SQLite file
  - C{memory} or C{:memory:}: SQLite in memory (nothing survives a restart)
  - C{postgresql://...} or C{postgres://...}: the shared PostgreSQL store
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

DEFAULT_SQLITE_FILE = "p2ptracker.sqlite3"

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*):")


@dataclass(frozen=True)
class DatabaseURL:
    """
    A parsed C{--db} value: C{kind} is C{"sqlite"} or C{"postgres"};
    C{target} is the SQLite path (or C{":memory:"}) or the PostgreSQL URL.
    """

    kind: str
    target: str


def parse_db_url(url: str | None) -> DatabaseURL:
    """
    Check a C{--db} value without opening anything.

    @raise ValueError: with a message for people when the value is unusable.
    """
    if url is None or url == "":
        return DatabaseURL("sqlite", DEFAULT_SQLITE_FILE)
    if url.strip() != url:
        raise ValueError(f"database URL {url!r} has leading or trailing white space")
    if url in ("memory", ":memory:", "sqlite::memory:", "sqlite:memory"):
        return DatabaseURL("sqlite", ":memory:")
    match = _SCHEME.match(url)
    if match is None or len(match.group(1)) == 1:
        # No scheme (or a Windows drive letter): a file path.
        return DatabaseURL("sqlite", _check_path(url))
    scheme = match.group(1).lower()
    rest = url[match.end():]
    if scheme in ("postgresql", "postgres"):
        if not rest.startswith("//"):
            raise ValueError(f"a PostgreSQL URL looks like postgresql://user@host:5432/dbname, not {url!r}")
        return DatabaseURL("postgres", url)
    if scheme == "sqlite":
        if rest.startswith("//"):
            path = rest[2:]
            if not path.startswith("/"):
                raise ValueError(
                    f"{url!r}: a sqlite URL has no host part; use sqlite:PATH or sqlite:///ABSOLUTE/PATH"
                )
        else:
            path = rest
        return DatabaseURL("sqlite", _check_path(path))
    raise ValueError(
        f"unknown database {url!r}: use a file path, sqlite:PATH, memory, or postgresql://USER@HOST/DBNAME"
    )


def _check_path(path: str) -> str:
    if not path:
        raise ValueError("the SQLite database path is empty")
    if "\x00" in path:
        raise ValueError("the SQLite database path contains a NUL character")
    if os.path.isdir(path):
        raise ValueError(f"{path!r} is a directory, not a SQLite database file")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise ValueError(f"the directory {parent!r} of the SQLite database does not exist")
    return path


def store_from_url(
    url: str | None,
    clock: Any,
    tracker_id: str,
    *,
    lease: float | None = None,
    pool_size: int | None = None,
    **opts: Any,
):
    """
    Build (without starting) the L{IIndexStore} a C{--db} value names.

    @param clock: the reactor (or at least C{IReactorTime}) the store uses.
    @param lease: seconds this tracker's records outlive its last renewal,
        for other trackers sharing a PostgreSQL index (None: the store's
        default).  An embedded SQLite store is never shared: it has no lease
        and ignores this.
    @param pool_size: PostgreSQL connections for writes (None: the store's
        default); ignored for SQLite, which uses one thread.
    @param opts: passed to the store's constructor or C{from_url}.
    @raise ValueError: for an unusable value, or when PostgreSQL support is
        not installed.
    """
    parsed = parse_db_url(url)
    if parsed.kind == "postgres":
        try:
            from twistedp2p.tracker.store.postgres import PostgresStore
        except ModuleNotFoundError as e:
            if e.name in ("twistedp2p.tracker.store.postgres", "txpostgres", "psycopg2"):
                raise ValueError(f"PostgreSQL support is not available yet ({e.name} is missing)")
            raise
        shared = {name: value for name, value in (("lease", lease), ("pool_size", pool_size)) if value is not None}
        return PostgresStore.from_url(parsed.target, clock=clock, tracker_id=tracker_id, **shared, **opts)
    from twistedp2p.tracker.store.sqlite import SQLiteStore

    path = parsed.target
    if path != ":memory:":
        path = os.path.abspath(path)
    return SQLiteStore(path, clock=clock, tracker_id=tracker_id, **opts)


def postgres_options(url: str | None) -> dict[str, Any]:
    """
    The store options (C{lease}, C{pool_size}, ...) a PostgreSQL C{--db}
    URL sets in its query string; they win over the command line's.  Empty
    for SQLite.

    @raise ValueError: for an unusable URL.
    """
    parsed = parse_db_url(url)
    if parsed.kind != "postgres":
        return {}
    try:
        from twistedp2p.tracker.store.pg_link import parse_url
    except ModuleNotFoundError as e:
        raise ValueError(f"PostgreSQL support is not available ({e.name} is missing)")
    return parse_url(parsed.target)[1]
