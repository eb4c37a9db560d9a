"""
Content identity for multi-source downloads: fixed-size pieces, each hashed
with SHA-256, and a root hash over the piece list (``docs/swarm.md``).

Pure functions and one blocking hasher (L{hash_file}, for a thread); no
reactor here.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from typing import Any, Iterable

from twistedp2p import wire

#: Tag hashed first into every root: a new construction gets a new tag.
ROOT_TAG = b"twistedp2p-pieces-v1"
MIN_PIECE_SIZE = 256 * 1024
MAX_PIECE_SIZE = 4 * 1024 * 1024
#: Pieces grow (up to L{MAX_PIECE_SIZE}) until a file has at most this many.
TARGET_PIECES = 1024
#: Beyond L{MAX_PIECE_SIZE}, pieces keep doubling while a file would have
#: more than this many (so a piece list stays a small frame).
MAX_PIECES = 65536
DIGEST_SIZE = 32
#: Bytes read per call while hashing.
READ_CHUNK = 1024 * 1024


def piece_size_for(size: int) -> int:
    """
    The piece size for a file of C{size} bytes: the smallest power of two
    from 256 KiB that gives at most 1024 pieces, capped at 4 MiB (so 4 GiB
    and larger files have 4 MiB pieces), except that files of more than
    256 GiB double it further until they have at most 65536 pieces.
    """
    piece = MIN_PIECE_SIZE
    while piece < MAX_PIECE_SIZE and math.ceil(size / piece) > TARGET_PIECES:
        piece *= 2
    while math.ceil(size / piece) > MAX_PIECES:
        piece *= 2
    return piece


def piece_size_problem(size: int, piece_size: int) -> str | None:
    """
    Why C{piece_size} is not the piece size of a C{size}-byte file (the
    one L{piece_size_for} gives), or None when it is.  A downloader refuses
    any other: the piece size bounds what it holds per piece, so the
    source must not choose it.
    """
    expected = piece_size_for(size)
    if piece_size == expected:
        return None
    return f"piece size {piece_size} is not the rule's for {size} bytes, {expected}"


def piece_count(size: int, piece_size: int) -> int:
    return (size + piece_size - 1) // piece_size


def piece_span(index: int, size: int, piece_size: int) -> tuple[int, int]:
    """
    C{(offset, length)} of piece C{index}; the last one may be short.
    """
    offset = index * piece_size
    return offset, min(piece_size, size - offset)


def root_of(size: int, piece_size: int, digests: Iterable[bytes]) -> str:
    """
    The root hash: SHA-256 over the tag, the size (8 bytes, big-endian), the
    piece size (4 bytes, big-endian) and the raw piece digests in order.
    """
    h = hashlib.sha256(ROOT_TAG)
    h.update(size.to_bytes(8, "big"))
    h.update(piece_size.to_bytes(4, "big"))
    for digest in digests:
        h.update(digest)
    return h.hexdigest()


@dataclass(frozen=True)
class PieceList:
    """
    What identifies one content: its size, whole-file SHA-256, piece size
    and the SHA-256 of every piece (raw 32-byte digests).
    """

    size: int
    sha256: str
    piece_size: int
    digests: tuple[bytes, ...] = field(repr=False)
    root: str = ""

    def __post_init__(self) -> None:
        if not self.root:
            object.__setattr__(self, "root", root_of(self.size, self.piece_size, self.digests))

    @property
    def count(self) -> int:
        return len(self.digests)

    @property
    def hexes(self) -> list[str]:
        """
        The piece digests in hex (computed once: every ``pieces`` answer
        sends them).
        """
        cached = self.__dict__.get("_hexes")
        if cached is None:
            cached = [d.hex() for d in self.digests]
            object.__setattr__(self, "_hexes", cached)
        return list(cached)

    def span(self, index: int) -> tuple[int, int]:
        return piece_span(index, self.size, self.piece_size)

    def to_wire(self) -> dict[str, Any]:
        """
        The fields of a ``pieces`` answer.
        """
        return {
            "file_size": self.size,
            "piece_size": self.piece_size,
            "root": self.root,
            "sha256": self.sha256,
            "pieces": self.hexes,
        }

    @classmethod
    def from_wire(cls, message: Any, root: str | None = None) -> "PieceList":
        """
        Check a ``pieces`` answer: field types, the piece count for the size,
        and (when C{root} is given) that the list hashes to it.

        @raise ValueError: naming what is wrong.
        """
        if not isinstance(message, dict):
            raise ValueError("not an object")
        size = message.get("file_size")
        piece_size = message.get("piece_size")
        sha = message.get("sha256")
        hexes = message.get("pieces")
        try:
            wire.size("file_size", size)
            wire.piece_size("piece_size", piece_size)
        except wire.WireError as e:
            raise ValueError(e.message)
        if not wire.is_sha256(sha):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        problem = piece_size_problem(size, piece_size)
        if problem is not None:
            raise ValueError(problem)
        if not isinstance(hexes, list) or len(hexes) != piece_count(size, piece_size):
            raise ValueError("the piece list does not match the file size")
        if not all(wire.is_sha256(h) for h in hexes):
            raise ValueError("a piece hash is not 64 lowercase hex digits")
        pieces = cls(size, sha, piece_size, tuple(bytes.fromhex(h) for h in hexes))
        expected = root if root is not None else message.get("root")
        if pieces.root != expected:
            raise ValueError("the piece list does not hash to the published root")
        return pieces

    def to_bytes(self) -> bytes:
        return b"".join(self.digests)

    @classmethod
    def from_bytes(cls, size: int, sha256: str, piece_size: int, data: bytes, root: str) -> "PieceList":
        """
        Rebuild a list from L{to_bytes} output.

        @raise ValueError: when it does not hash to C{root}, or its piece
            size is not the rule's (L{piece_size_problem}).
        """
        problem = piece_size_problem(size, piece_size)
        if problem is not None:
            raise ValueError(problem)
        if len(data) != DIGEST_SIZE * piece_count(size, piece_size):
            raise ValueError("wrong length for the piece list")
        digests = tuple(data[i : i + DIGEST_SIZE] for i in range(0, len(data), DIGEST_SIZE))
        pieces = cls(size, sha256, piece_size, digests)
        if pieces.root != root:
            raise ValueError("the piece list does not hash to its root")
        return pieces


def hash_file(path: str | os.PathLike, piece_size: int | None = None, f: Any = None) -> PieceList:
    """
    Read a file once and hash it whole and piece by piece (blocking; call
    it in a thread).  The piece size follows L{piece_size_for} of the size
    at open time unless given.  A file that changes size while being read
    is hashed as read: callers compare its stat before and after.
    """
    own = f is None
    if own:
        f = open(path, "rb")
    try:
        size = os.fstat(f.fileno()).st_size
        if piece_size is None:
            piece_size = piece_size_for(size)
        whole = hashlib.sha256()
        digests = []
        read = 0
        while True:
            piece = hashlib.sha256()
            left = piece_size
            got = 0
            while left:
                block = f.read(min(READ_CHUNK, left))
                if not block:
                    break
                piece.update(block)
                whole.update(block)
                got += len(block)
                left -= len(block)
            if not got:
                break
            digests.append(piece.digest())
            read += got
            if got < piece_size:
                break
        return PieceList(read, whole.hexdigest(), piece_size, tuple(digests))
    finally:
        if own:
            f.close()


def pieces_of(data: bytes, piece_size: int | None = None) -> PieceList:
    """
    The piece list of bytes in memory (small contents, tests, benchmarks).
    """
    if piece_size is None:
        piece_size = piece_size_for(len(data))
    digests = tuple(
        hashlib.sha256(data[i : i + piece_size]).digest() for i in range(0, len(data), piece_size)
    )
    return PieceList(len(data), hashlib.sha256(data).hexdigest(), piece_size, digests)


# -- bitmaps (the resume state) ------------------------------------------------------


def bitmap_encode(have: Iterable[int], count: int) -> str:
    """
    Piece indexes as a hex bitmap, most significant bit first (piece 0 is
    the top bit of the first byte).
    """
    bits = bytearray((count + 7) // 8)
    for i in have:
        if 0 <= i < count:
            bits[i // 8] |= 0x80 >> (i % 8)
    return bits.hex()


def bitmap_decode(text: str, count: int) -> set[int]:
    """
    @raise ValueError: for a bitmap of the wrong length or not hex.
    """
    bits = bytes.fromhex(text)
    if len(bits) != (count + 7) // 8:
        raise ValueError("the bitmap does not match the piece count")
    return {i for i in range(count) if bits[i // 8] & (0x80 >> (i % 8))}


