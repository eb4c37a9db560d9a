"""
Text for people on a terminal, shared by both shells: human sizes, short
hashes, names quoted so they can be pasted back, and columns aligned by
their width on screen (a CJK character takes two columns), measured with
``wcwidth``.
"""

from __future__ import annotations

import shlex
import unicodedata
from typing import Sequence

try:
    from wcwidth import wcswidth as _wcswidth
except ImportError:  # pragma: no cover - wcwidth is a dependency; this keeps an old venv working
    _wcswidth = None

#: Hex digits of a SHA-256 shown in tables.
SHORT_HASH = 12

#: What makes a name need quotes: what shlex splits at or interprets, and globs.
_SPECIAL = frozenset(" \t\"'\\*?[")


def human_size(n: float | None) -> str:
    """
    C{512 B}, C{1.2 KiB}, C{3.4 MiB}, C{5.0 GiB} (1024-based); C{?} for None.
    """
    if n is None:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def short_hash(sha256: str | None, missing: str = "-") -> str:
    """
    The first L{SHORT_HASH} hex digits, or C{missing} when there is none.
    """
    return sha256[:SHORT_HASH] if sha256 else missing


def quote_name(name: str) -> str:
    """
    A shared name as the shells read it back (C{shlex}): unchanged when it
    has no space, quote, backslash or glob character, else quoted like a
    POSIX shell (C{'my notes.pdf'}).
    """
    if name and name.isprintable() and not name.startswith("#") and not any(c in _SPECIAL for c in name):
        return name
    return shlex.quote(name)


def width(text: str) -> int:
    """
    Columns C{text} takes on a terminal (wide characters count two,
    combining ones nothing; a control character counts one).
    """
    if _wcswidth is not None:
        w = _wcswidth(text)
        if w >= 0:
            return w
    return sum(_char_width(c) for c in text)


def _char_width(c: str) -> int:
    if unicodedata.combining(c):
        return 0
    return 2 if unicodedata.east_asian_width(c) in ("W", "F") else 1


def pad(text: str, columns: int, right: bool = False) -> str:
    """
    C{text} padded with spaces to C{columns} screen columns.
    """
    fill = " " * max(0, columns - width(text))
    return fill + text if right else text + fill


def truncate(text: str, columns: int) -> str:
    """
    C{text} cut to at most C{columns} screen columns (an ellipsis marks
    the cut).
    """
    if width(text) <= columns:
        return text
    out, used = [], 0
    for c in text:
        w = width(c)
        if used + w > columns - 1:
            break
        out.append(c)
        used += w
    return "".join(out) + "…"


def table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> list[str]:
    """
    Columns two spaces apart, aligned by screen width; the columns whose
    index is in C{right} are right-aligned.  The last column is not padded.
    """
    all_rows = [list(header)] + [list(r) for r in rows]
    n = len(header)
    widths = [max(width(str(r[i])) for r in all_rows) for i in range(n)]
    lines = []
    for row in all_rows:
        cells = []
        for i, cell in enumerate(row):
            last = i == n - 1
            if last and i not in right:
                cells.append(str(cell))
            else:
                cells.append(pad(str(cell), widths[i], right=i in right))
        lines.append("  ".join(cells).rstrip())
    return lines
