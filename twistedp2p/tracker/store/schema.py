"""
What the SQL stores share: the schema version, its error, and the encoding
of the columns that are not plain SQL types.  No I/O here.
"""

from __future__ import annotations

import json

from twistedp2p.errors import P2PError

#: The newest index schema: version 2 adds ``publications.root`` and
#: ``publications.piece_size`` (docs/swarm.md); version 3 adds the
#: ``host_keys`` table (hostname -> public key, trust on first use) and
#: ``sessions.fingerprint``.  Both SQL stores (SQLite and PostgreSQL)
#: write it and migrate older databases to it on start.
LATEST_SCHEMA_VERSION = 3

#: The first schema (no root, no piece size).  No store writes it any more;
#: the name stays for code that imported it.
SCHEMA_VERSION = 1


class SchemaTooNew(P2PError):
    """the index database was written by a newer version of twistedp2p"""

    def __init__(self, found: int, known: int = LATEST_SCHEMA_VERSION, where: str = "") -> None:
        place = f" {where}" if where else ""
        super().__init__(
            f"the index database{place} has schema version {found}, but this "
            f"tracker only knows versions up to {known}: upgrade twistedp2p or "
            f"use another database"
        )
        self.found = found
        self.known = known


def encode_mtime(value: float | str | None) -> str | None:
    """
    The C{last_modified} column: the JSON encoding of the number or string,
    so that C{1764000000.0} and C{"2025-11-06T13:45:00Z"} both come back
    with their type.
    """
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False)


def decode_mtime(text: str | None) -> float | str | None:
    """
    The inverse of L{encode_mtime}.  A column that is not valid JSON (a
    hand-edited database) comes back as the raw text.
    """
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        return value
    return text
