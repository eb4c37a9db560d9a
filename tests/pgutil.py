"""
Shared helpers for tests that need a real PostgreSQL server.

The server comes from C{P2P_PG_DSN} (a C{postgresql://} URL whose user may
create databases), by default C{postgresql://postgres@127.0.0.1:5432/postgres}.
Each test gets its own throwaway database and drops it afterwards, so tests
never see each other's rows and leave nothing behind.

When the server cannot be reached the tests are skipped with a reason, unless
C{P2P_REQUIRE_POSTGRES=1} (as in CI): then they run and fail, so a missing
database can never turn a CI run green.

These helpers block (plain psycopg2, short timeouts): they are fixtures,
called between test steps, never from code under test.
"""

from __future__ import annotations

import os
import secrets
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

import psycopg2

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT = 2

_reason_cache: list[str | None] = []


def base_dsn() -> str:
    """
    The URL of the maintenance database tests create their databases from.
    """
    return os.environ.get("P2P_PG_DSN") or DEFAULT_DSN


def postgres_required() -> bool:
    return os.environ.get("P2P_REQUIRE_POSTGRES", "") not in ("", "0")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def postgres_skip_reason() -> str | None:
    """
    Why PostgreSQL tests cannot run here, or None when they can (or must).

    Use it as a trial C{skip} class attribute.  Checked once per process.
    """
    if not _reason_cache:
        _reason_cache.append(_probe())
    reason = _reason_cache[0]
    if reason is not None and postgres_required():
        # P2P_REQUIRE_POSTGRES: run the tests; throwaway_database() fails
        # with this reason.
        return None
    return reason


def _probe() -> str | None:
    dsn = base_dsn()
    try:
        connection = psycopg2.connect(dsn, connect_timeout=CONNECT_TIMEOUT)
    except psycopg2.Error as e:
        first_line = (str(e).strip().splitlines() or ["?"])[0]
        return (
            f"PostgreSQL not reachable at {_redacted(dsn)} ({first_line}); set "
            f"P2P_PG_DSN to a postgresql:// URL of a server where the user may "
            f"create databases, or P2P_REQUIRE_POSTGRES=1 to fail instead of skip"
        )
    connection.close()
    return None


def database_url(name: str) -> str:
    """
    The base URL with its database replaced by C{name}.
    """
    parts = urlsplit(base_dsn())
    return urlunsplit(parts._replace(path="/" + name))


def _admin() -> Any:
    reason = _reason_cache[0] if _reason_cache else _probe()
    if reason is not None:
        raise RuntimeError(reason)
    connection = psycopg2.connect(base_dsn(), connect_timeout=CONNECT_TIMEOUT)
    connection.autocommit = True
    return connection


def throwaway_database() -> tuple[str, Callable[[], None]]:
    """
    Create an empty database named C{p2ptest_<pid>_<random>}.

    @return: C{(url, drop)}: its URL, and a function that drops it (closing
        any connection still open to it).
    """
    name = f"p2ptest_{os.getpid()}_{secrets.token_hex(4)}"
    admin = _admin()
    try:
        with admin.cursor() as cursor:
            # The name is ours (digits and hex), so it is safe as an identifier.
            cursor.execute(f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8'")
    finally:
        admin.close()

    def drop() -> None:
        connection = _admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            connection.close()

    return database_url(name), drop


def run_sql(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """
    Run one statement in autocommit on database C{url} and return its rows
    (an empty list for statements without any): for setting up or checking
    a database from a test.
    """
    connection = psycopg2.connect(url, connect_timeout=CONNECT_TIMEOUT)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []
    finally:
        connection.close()
