"""
Tests for L{twistedp2p.peer.pieces} (piece sizes, the root, piece lists on
the wire, bitmaps) and for the piece lists the L{Library} keeps.
"""

from __future__ import annotations

import hashlib
import json
import os

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import errors
from twistedp2p.peer.library import LIBRARY_FILE, STATE_DIR, Library
from twistedp2p.peer.pieces import (
    MAX_PIECE_SIZE,
    MIN_PIECE_SIZE,
    PieceList,
    bitmap_decode,
    bitmap_encode,
    hash_file,
    piece_count,
    piece_size_for,
    piece_size_problem,
    pieces_of,
    root_of,
)

from .helpers import sync_run, temp_dir

KiB, MiB, GiB = 1024, 1024**2, 1024**3


class PieceSizeTests(SynchronousTestCase):
    def test_rule(self) -> None:
        self.assertEqual(piece_size_for(0), MIN_PIECE_SIZE)
        self.assertEqual(piece_size_for(16 * MiB), 256 * KiB)
        self.assertEqual(piece_size_for(256 * MiB), 256 * KiB)
        self.assertEqual(piece_size_for(256 * MiB + 1), 512 * KiB)
        self.assertEqual(piece_size_for(GiB), MiB)
        self.assertEqual(piece_size_for(4 * GiB), MAX_PIECE_SIZE)
        self.assertEqual(piece_size_for(100 * GiB), MAX_PIECE_SIZE)
        # Beyond 256 GiB, at most 65536 pieces.
        self.assertEqual(piece_size_for(1024 * GiB), 16 * MiB)
        for size in (1, 10**6, 3 * GiB + 5, 10**13):
            self.assertLessEqual(piece_count(size, piece_size_for(size)), 65536)

    def test_other_piece_sizes_refused(self) -> None:
        """
        A piece list is accepted only with the rule's piece size for its
        size (whatever its root), from the wire or from the library's
        files: the source does not choose how much a downloader holds.
        """
        data = os.urandom(600 * KiB)
        for piece_size in (MIN_PIECE_SIZE // 2, 2 * MIN_PIECE_SIZE, GiB):
            p = pieces_of(data, piece_size)
            e = self.assertRaises(ValueError, PieceList.from_wire, p.to_wire(), p.root)
            self.assertIn(f"piece size {piece_size} is not the rule's for {600 * KiB} bytes, {MIN_PIECE_SIZE}", str(e))
            self.assertRaises(ValueError, PieceList.from_bytes, p.size, p.sha256, piece_size, p.to_bytes(), p.root)
        self.assertIsNone(piece_size_problem(600 * KiB, MIN_PIECE_SIZE))

    def test_spans(self) -> None:
        p = pieces_of(b"a" * (2 * MIN_PIECE_SIZE + 5))
        self.assertEqual(p.count, 3)
        self.assertEqual(p.span(0), (0, MIN_PIECE_SIZE))
        self.assertEqual(p.span(2), (2 * MIN_PIECE_SIZE, 5))


class RootTests(SynchronousTestCase):
    def test_construction(self) -> None:
        """
        The root is SHA-256 over the tag, the size (8 bytes) and the piece
        size (4 bytes), big-endian, then the raw piece digests in order.
        """
        data = os.urandom(600 * KiB)
        pieces = pieces_of(data, 256 * KiB)
        digests = [hashlib.sha256(data[i : i + 256 * KiB]).digest() for i in range(0, len(data), 256 * KiB)]
        expected = hashlib.sha256(
            b"twistedp2p-pieces-v1" + len(data).to_bytes(8, "big") + (256 * KiB).to_bytes(4, "big") + b"".join(digests)
        ).hexdigest()
        self.assertEqual(pieces.root, expected)
        self.assertEqual(root_of(len(data), 256 * KiB, digests), expected)
        self.assertEqual(pieces.sha256, hashlib.sha256(data).hexdigest())
        # The piece size is part of the identity.
        self.assertNotEqual(pieces_of(data, 512 * KiB).root, expected)

    def test_hash_file_one_pass(self) -> None:
        path = temp_dir(self) / "f"
        data = os.urandom(700 * KiB)
        path.write_bytes(data)
        self.assertEqual(hash_file(path), pieces_of(data))
        self.assertEqual(hash_file(path, 256 * KiB).count, 3)
        empty = temp_dir(self) / "e"
        empty.write_bytes(b"")
        self.assertEqual(hash_file(empty), pieces_of(b""))
        self.assertEqual(pieces_of(b"").count, 0)

    def test_wire_round_trip(self) -> None:
        p = pieces_of(os.urandom(600 * KiB))
        message = json.loads(json.dumps(p.to_wire()))
        self.assertEqual(PieceList.from_wire(message, p.root), p)
        self.assertEqual(PieceList.from_wire(message), p)

    def test_wire_rejects(self) -> None:
        p = pieces_of(os.urandom(600 * KiB))
        good = p.to_wire()
        other_root = "0" * 64
        for bad, why in (
            ("nope", "not an object"),
            (dict(good, pieces=good["pieces"][:2]), "does not match the file size"),
            (dict(good, pieces=["X" * 64] * 3), "not 64 lowercase hex"),
            (dict(good, piece_size=0), "piece_size"),
            (dict(good, file_size=-1), "file_size"),
            (dict(good, sha256="abc"), "sha256"),
            (dict(good, pieces=list(reversed(good["pieces"]))), "does not hash to the published root"),
        ):
            e = self.assertRaises(ValueError, PieceList.from_wire, bad, p.root)
            self.assertIn(why, str(e))
        e = self.assertRaises(ValueError, PieceList.from_wire, good, other_root)
        self.assertIn("does not hash", str(e))

    def test_bytes_round_trip(self) -> None:
        p = pieces_of(os.urandom(600 * KiB))
        self.assertEqual(PieceList.from_bytes(p.size, p.sha256, p.piece_size, p.to_bytes(), p.root), p)
        self.assertRaises(ValueError, PieceList.from_bytes, p.size, p.sha256, p.piece_size, p.to_bytes()[:-1], p.root)
        self.assertRaises(ValueError, PieceList.from_bytes, p.size, p.sha256, p.piece_size, p.to_bytes(), "0" * 64)


class BitmapTests(SynchronousTestCase):
    def test_round_trip(self) -> None:
        self.assertEqual(bitmap_encode({0, 7, 8}, 10), "8180")
        self.assertEqual(bitmap_decode("8180", 10), {0, 7, 8})
        self.assertEqual(bitmap_encode(set(), 0), "")
        self.assertRaises(ValueError, bitmap_decode, "81", 10)
        self.assertRaises(ValueError, bitmap_decode, "zz80", 10)


class LibraryPiecesTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.repo = temp_dir(self)

    def library(self) -> Library:
        return Library(self.repo, [], sync_run)

    def test_published_with_pieces_and_kept(self) -> None:
        data = os.urandom(600 * KiB)
        (self.repo / "a").write_bytes(data)
        lib = self.library()
        entry = self.successResultOf(lib.describe("a", "A"))
        self.assertEqual(entry.pieces, pieces_of(data))
        self.assertEqual((entry.root, entry.piece_size), (entry.pieces.root, 256 * KiB))
        self.successResultOf(lib.put(entry))
        saved = json.loads((self.repo / STATE_DIR / LIBRARY_FILE).read_text())["files"][0]
        self.assertEqual((saved["root"], saved["piece_size"]), (entry.root, 256 * KiB))
        self.assertNotIn("pieces", saved)
        again = self.library().get("A")
        self.assertEqual(again.pieces, entry.pieces)
        # Unpublished: the piece list goes too.
        self.successResultOf(lib.remove("A"))
        self.assertEqual(os.listdir(self.repo / STATE_DIR / "pieces"), [])

    def test_lost_piece_list_hashed_again(self) -> None:
        data = os.urandom(300 * KiB)
        (self.repo / "a").write_bytes(data)
        lib = self.library()
        entry = self.successResultOf(lib.describe("a", "A"))
        self.successResultOf(lib.put(entry))
        (self.repo / STATE_DIR / "pieces" / entry.root).write_bytes(b"garbage")
        lib = self.library()
        self.assertIsNone(lib.get("A").pieces)
        self.flushLoggedErrors()
        [updated] = self.successResultOf(lib.ensure_pieces())
        self.assertEqual(updated.pieces, pieces_of(data))
        self.assertEqual(self.library().get("A").pieces, pieces_of(data))

    def test_old_library_gets_pieces(self) -> None:
        """
        A library written by version 1 (no roots) is hashed piece by piece
        on demand; a file that changed meanwhile is dropped as stale.
        """
        (self.repo / "a").write_bytes(b"a" * 1000)
        (self.repo / "b").write_bytes(b"b" * 1000)
        lib = self.library()
        for name in ("a", "b"):
            self.successResultOf(lib.put(self.successResultOf(lib.describe(name, name)).with_pieces(None)))
        data = json.loads((self.repo / STATE_DIR / LIBRARY_FILE).read_text())
        self.assertEqual([f["root"] for f in data["files"]], [None, None])
        (self.repo / "b").write_bytes(b"changed")
        lib = self.library()
        updated = self.successResultOf(lib.ensure_pieces())
        self.assertEqual([e.fname for e in updated], ["a"])
        self.assertNotIn("b", lib)
        self.assertEqual(self.successResultOf(lib.ensure_pieces()), [])

    def test_max_file_size(self) -> None:
        (self.repo / "a").write_bytes(b"x" * 1001)
        lib = self.library()
        lib.max_file_size = 1000
        f = self.failureResultOf(lib.describe("a", "A"), errors.FileTooLarge)
        self.assertIn("1001 bytes", str(f.value))

    def test_describe_known_keeps_pieces(self) -> None:
        data = os.urandom(1000)
        (self.repo / "a").write_bytes(data)
        lib = self.library()
        p = pieces_of(data)
        entry = self.successResultOf(lib.describe_known(self.repo / "a", "A", len(data), p.sha256, pieces=p))
        self.assertEqual(entry.root, p.root)
