"""
Tests for L{twistedp2p.peer.upload}: the peer port, on a StringTransport.
"""

from __future__ import annotations

import hashlib
import os
import struct
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import wire
from twistedp2p.peer.pieces import PieceList
from twistedp2p.peer.ratelimit import TokenBucket
from twistedp2p.peer.upload import MAX_PIPELINED, SESSION_LINGER, RangeReader, UploadFactory, get_header

from .helpers import PeerParts, all_frames, frame, split_frame, temp_dir

DATA = os.urandom(200_000)


class UploadTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.parts = PeerParts(temp_dir(self), max_sessions=2)
        self.entry = self.parts.publish("a.bin", DATA)
        self.factory = UploadFactory(
            self.parts.library, self.parts.slots, self.parts.transfers, self.parts.clock, 60.0
        )

    def connect(self):
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        proto.makeConnection(transport)
        return proto, transport

    def pump(self, transport: StringTransport, limit: int = 1000) -> None:
        """
        Pull the registered producer until it unregisters.
        """
        for _ in range(limit):
            if transport.producer is None:
                return
            transport.producer.resumeProducing()
        self.fail("the producer never finished")

    def get(self, proto, **fields) -> None:
        message = {"action": "get", "fname": "a.bin"}
        message.update(fields)
        proto.dataReceived(frame(message))

    def test_header_then_bytes(self) -> None:
        proto, t = self.connect()
        self.get(proto, id=3)
        self.assertFalse(t.streaming)
        self.pump(t)
        header, rest = split_frame(t.value())
        self.assertEqual(
            header,
            {
                "status": "success",
                "id": 3,
                "fname": "a.bin",
                "offset": 0,
                "length": len(DATA),
                "file_size": len(DATA),
                "sha256": hashlib.sha256(DATA).hexdigest(),
            },
        )
        self.assertEqual(rest, DATA)
        self.assertFalse(t.disconnecting)
        # The connection keeps its slot a moment for a next request.
        self.assertEqual(self.parts.slots.in_use, 1)
        self.parts.clock.advance(SESSION_LINGER)
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.completed["up"], 1)

    def test_range(self) -> None:
        proto, t = self.connect()
        self.get(proto, offset=1000, length=5000)
        self.pump(t)
        header, rest = split_frame(t.value())
        self.assertEqual((header["offset"], header["length"]), (1000, 5000))
        self.assertEqual(rest, DATA[1000:6000])

    def test_range_to_end(self) -> None:
        proto, t = self.connect()
        self.get(proto, offset=len(DATA) - 10)
        self.pump(t)
        header, rest = split_frame(t.value())
        self.assertEqual(rest, DATA[-10:])

    def test_range_beyond_end(self) -> None:
        proto, t = self.connect()
        self.get(proto, offset=10, length=len(DATA))
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["code"]), ("error", "bad_field"))
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_range_beyond_end_message(self) -> None:
        """
        The refusal says what was asked in words: never Python's None for
        a length left out.
        """
        for fields, asked in (
            ({"offset": len(DATA) + 1}, f"offset {len(DATA) + 1}"),
            ({"offset": len(DATA) + 1, "length": None}, f"offset {len(DATA) + 1}"),
            ({"offset": 10, "length": len(DATA)}, f"{len(DATA)} bytes from offset 10"),
        ):
            proto, t = self.connect()
            self.get(proto, id=4, **fields)
            [reply] = all_frames(t.value())
            self.assertEqual(
                reply,
                {
                    "status": "error",
                    "id": 4,
                    "code": "bad_field",
                    "message": f"{asked} is beyond the end of a.bin ({len(DATA)} bytes)",
                },
            )

    def test_second_get_on_same_connection(self) -> None:
        proto, t = self.connect()
        self.get(proto, length=10)
        self.pump(t)
        first = t.value()
        t.clear()
        self.get(proto, offset=10, length=10)
        self.pump(t)
        self.assertEqual(split_frame(first)[1] + split_frame(t.value())[1], DATA[:20])

    def test_empty_file(self) -> None:
        self.parts.publish("empty", b"")
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get", "fname": "empty"}))
        self.pump(t)
        header, rest = split_frame(t.value())
        self.assertEqual((header["length"], rest), (0, b""))

    def test_unknown_name(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get", "fname": "nope", "id": 1}))
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["code"], reply["id"]), ("error", "not_found", 1))
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_changed_file_not_served(self) -> None:
        (self.parts.repo / "a.bin").write_bytes(b"changed")
        proto, t = self.connect()
        self.get(proto)
        [reply] = all_frames(t.value())
        self.assertEqual(reply["code"], "not_found")
        self.assertNotIn("a.bin", self.parts.library)

    def test_never_a_path(self) -> None:
        """
        A request naming a path, even one inside the repository, is not
        served: only shared names are.
        """
        (self.parts.repo / "plain.txt").write_bytes(b"x")
        for name in ("plain.txt", str(self.parts.repo / "a.bin"), "../a.bin"):
            proto, t = self.connect()
            proto.dataReceived(frame({"action": "get", "fname": name}))
            [reply] = all_frames(t.value())
            self.assertEqual(reply["status"], "error", name)

    def test_busy(self) -> None:
        holders = []
        for _ in range(2):
            proto, t = self.connect()
            self.get(proto)
            holders.append(t)
        proto, t = self.connect()
        self.get(proto, id=9)
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["id"]), ("busy", 9))
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.parts.slots.refused, 1)
        self.assertEqual(self.parts.slots.peak["up"], 2)
        # A finished transfer frees its slot (once it lingered).
        self.pump(holders[0])
        self.parts.clock.advance(SESSION_LINGER)
        proto, t = self.connect()
        self.get(proto)
        self.assertEqual(split_frame(t.value())[0]["status"], "success")

    def test_lost_connection_frees_slot(self) -> None:
        # (More than the first chunk: the range is still being sent.)
        self.big()
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        self.assertEqual(self.parts.slots.in_use, 1)
        proto.connectionLost(None)
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.active(), [])
        self.assertEqual(self.parts.transfers.completed["up"], 0)

    def test_seed_get_file(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get_file", "lname": "a.bin"}))
        self.pump(t)
        self.assertEqual(t.value(), DATA)
        self.assertTrue(t.disconnecting)

    def test_transfer_events_in_order(self) -> None:
        """
        Observers hear of an upload once its first bytes are out, and of its
        end after that: a seed request, which ends as soon as its bytes are
        sent, and a native get, which ends when its session does.
        """
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get_file", "lname": "a.bin"}))
        self.pump(t)
        proto, t = self.connect()
        self.get(proto, id=1)
        self.pump(t)
        self.parts.clock.advance(60)
        kinds = [(e.kind, e.fields["transfer"]["id"]) for e in self.parts.seen if e.kind.startswith("transfer_")]
        self.assertEqual(
            kinds,
            [("transfer_started", 1), ("transfer_finished", 1), ("transfer_started", 2), ("transfer_finished", 2)],
        )

    def test_seed_download(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "download", "fname": "a.bin"}))
        self.pump(t)
        self.assertEqual(t.value(), DATA)
        self.assertTrue(t.disconnecting)

    def test_seed_unknown_closes_silently(self) -> None:
        for name in ("nope", "../etc/passwd", str(self.parts.repo / "a.bin")):
            proto, t = self.connect()
            proto.dataReceived(frame({"action": "get_file", "lname": name}))
            self.assertEqual(t.value(), b"")
            self.assertTrue(t.disconnecting)

    def test_seed_invalid_request_closes_silently(self) -> None:
        """
        A seed request with an invalid name (empty, a NUL byte, a control
        character, not a string, missing) or another invalid field gets
        what an unpublished name gets: a close without a byte, never an
        error frame that the seed client would save as the file.
        """
        cases = [
            {"action": "get_file", "lname": ""},
            {"action": "get_file", "lname": "a.bin\x00"},
            {"action": "get_file", "lname": "\x00"},
            {"action": "get_file", "lname": "a\x07.bin"},
            {"action": "get_file", "lname": 5},
            {"action": "get_file"},
            {"action": "get_file", "lname": "a.bin", "id": -1},
            {"action": "download", "fname": ""},
            {"action": "download", "fname": "a.bin\x00"},
            {"action": "download", "fname": ["a.bin"]},
        ]
        for message in cases:
            proto, t = self.connect()
            proto.dataReceived(frame(message))
            self.assertEqual(t.value(), b"", message)
            self.assertTrue(t.disconnecting, message)
            self.assertEqual(self.parts.slots.in_use, 0)

    def test_unhashable_action_gets_error(self) -> None:
        self.assertErrorFrame(frame({"action": ["get_file"], "lname": ""}), "no_action")

    def test_seed_busy_closes_silently(self) -> None:
        for _ in range(2):
            proto, t = self.connect()
            self.get(proto)
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get_file", "lname": "a.bin"}))
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)

    def assertErrorFrame(self, data: bytes, code: str) -> None:
        proto, t = self.connect()
        proto.dataReceived(data)
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["code"]), ("error", code))
        self.assertTrue(t.disconnecting)

    def test_garbage(self) -> None:
        self.assertErrorFrame(frame(b"\xff\xfe"), "bad_utf8")
        self.assertErrorFrame(frame(b"{nope"), "bad_json")
        self.assertErrorFrame(frame([1, 2]), "not_object")
        self.assertErrorFrame(frame({"x": 1}), "no_action")
        self.assertErrorFrame(frame({"action": "rm -rf"}), "unknown_action")
        self.assertErrorFrame(frame({"action": "get"}), "bad_field")
        self.assertErrorFrame(frame({"action": "get", "fname": "a.bin", "offset": -1}), "bad_field")

    def test_one_error_frame_only(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame(b"junk") + frame({"action": "get", "fname": "a.bin"}) + frame(b"more"))
        self.assertEqual([m["code"] for m in all_frames(t.value())], ["bad_json"])
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_oversized_frame_closes(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(struct.pack("!I", wire.MAX_REQUEST_FRAME + 1) + b"x" * 100)
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)

    def test_ping(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "ping", "id": 4}))
        self.assertEqual(all_frames(t.value()), [{"status": "success", "id": 4, "message": "pong"}])
        self.assertFalse(t.disconnecting)

    def test_idle_timeout(self) -> None:
        proto, t = self.connect()
        self.parts.clock.advance(59)
        self.assertFalse(t.disconnecting)
        self.parts.clock.advance(2)
        self.assertTrue(t.disconnecting)

    def test_partial_frame_does_not_reset_timeout(self) -> None:
        """
        A client that sends part of a frame and stalls is still closed.
        """
        proto, t = self.connect()
        for _ in range(7):
            self.parts.clock.advance(10)
            proto.dataReceived(b"\x00")
        self.assertTrue(t.disconnecting)

    def test_stalled_reader_times_out_and_frees_slot(self) -> None:
        self.big()
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        t.producer.resumeProducing()
        self.parts.clock.advance(61)
        self.assertTrue(t.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.parts.slots.in_use, 0)

    def big(self) -> None:
        self.parts.publish("big.bin", os.urandom(4 * 1024 * 1024))

    def read_every(self, t: StringTransport, seconds: float, until: float) -> float:
        """
        Take one chunk every C{seconds} seconds (the clock in steps of 1 s)
        until the connection is closed or C{until}; @return: the time then.
        """
        clock = self.parts.clock
        start = clock.seconds()
        next_read = start + seconds
        while clock.seconds() - start < until and not t.disconnecting and t.producer is not None:
            clock.advance(1)
            if clock.seconds() >= next_read and t.producer is not None and not t.disconnecting:
                t.producer.resumeProducing()
                next_read += seconds
        return clock.seconds() - start

    def test_slow_upload_closed_after_grace(self) -> None:
        """
        A reader taking 256 KiB every 50 s (5 KiB/s) keeps the idle timeout
        (60 s) at bay, but is below a minimum of 8 KiB/s: once the grace
        (20 s) and one window (20 s) are over, the upload is closed and its
        slot freed.
        """
        self.big()
        self.factory.min_rate = 8 * 1024
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        self.assertEqual(self.parts.slots.active["up"], 1)
        elapsed = self.read_every(t, 50, 400)
        self.assertTrue(t.disconnecting)
        self.assertLessEqual(elapsed, 60)
        proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.active(), [])

    def test_upload_above_the_minimum_kept(self) -> None:
        self.big()
        self.factory.min_rate = 8 * 1024
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        # 256 KiB every 10 s (26 KiB/s): the whole file, never closed.
        self.read_every(t, 10, 400)
        self.assertFalse(t.disconnecting)
        self.assertIsNone(t.producer)
        self.assertEqual(len(t.value()) > 4 * 1024 * 1024, True)

    def test_minimum_follows_our_own_cap(self) -> None:
        """
        Under --upload-rate, an upload is never asked for more than half an
        equal share of the cap: a slow upload caused by our own cap stays.
        """
        self.big()
        self.factory.min_rate = 8 * 1024
        self.factory.bucket = TokenBucket(4 * 1024, self.parts.clock)
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        # The reader takes what comes; our cap gives 4 KiB/s, and the
        # minimum is 2 KiB/s then.
        self.read_every(t, 1, 200)
        self.assertFalse(t.disconnecting)
        self.assertGreater(len(t.value()), 150 * 4 * 1024)

    def test_progress_keeps_connection(self) -> None:
        proto, t = self.connect()
        proto.factory.min_rate = 0  # (the idle timeout alone)
        self.get(proto)
        while t.producer is not None:
            self.parts.clock.advance(50)
            t.producer.resumeProducing()
        self.assertFalse(t.disconnecting)

    def test_pipelined_gets_answered_in_order(self) -> None:
        """
        Requests sent while a range is going out wait their turn; the
        connection keeps its one slot until nothing is left to send.
        """
        proto, t = self.connect()
        self.get(proto, offset=0, length=70_000, id=1)
        self.get(proto, offset=70_000, length=10, id=2)
        proto.dataReceived(frame({"action": "ping", "id": 3}))
        self.get(proto, offset=5, length=5, id=4)
        self.assertEqual((self.parts.slots.in_use, self.parts.slots.peak["up"]), (1, 1))
        self.pump(t)
        self.pump(t)
        self.pump(t)
        data = t.value()
        out = []
        for expected in (70_000, 10, None, 5):
            message, data = split_frame(data)
            out.append(message["id"])
            if expected is not None:
                out.append(data[:expected])
                data = data[expected:]
        self.assertEqual(out, [1, DATA[:70_000], 2, DATA[70_000:70_010], 3, 4, DATA[5:10]])
        self.assertEqual(data, b"")
        self.assertFalse(t.disconnecting)
        self.assertEqual(self.parts.slots.in_use, 1)
        # A request within the linger keeps the same session.
        self.parts.clock.advance(SESSION_LINGER - 0.1)
        self.get(proto, offset=0, length=1, id=5)
        self.pump(t)
        self.parts.clock.advance(SESSION_LINGER)
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.slots.peak["up"], 1)
        # One upload session in the table, for all three ranges.
        self.assertEqual(self.parts.transfers.completed["up"], 1)
        self.assertEqual((self.factory.served_ranges, self.factory.served_bytes), (4, 70_016))

    def test_closing_frees_the_slot_at_once(self) -> None:
        proto, t = self.connect()
        self.get(proto)
        self.pump(t)
        self.assertEqual(self.parts.slots.in_use, 1)
        proto.connectionLost(None)
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.completed["up"], 1)

    def test_too_many_pipelined_requests_abort(self) -> None:
        self.big()
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        for _ in range(MAX_PIPELINED):
            self.get(proto, length=1)
        self.assertFalse(t.disconnecting)
        from twisted.logger import capturedLogs

        with capturedLogs() as events:
            # The one too many, and more behind it in the same read.
            proto.dataReceived(b"".join(frame({"action": "get", "fname": "a.bin", "length": 1}) for _ in range(20)))
        self.assertTrue(t.disconnecting)
        self.assertEqual(len([e for e in events if "pipelined more" in e.get("log_format", "")]), 1)

    def test_pieces(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "pieces", "fname": "a.bin", "id": 7}))
        [reply] = all_frames(t.value())
        pieces = self.entry.pieces
        self.assertEqual(
            reply,
            {
                "status": "success",
                "id": 7,
                "fname": "a.bin",
                "file_size": len(DATA),
                "piece_size": pieces.piece_size,
                "root": pieces.root,
                "sha256": hashlib.sha256(DATA).hexdigest(),
                "pieces": [hashlib.sha256(DATA[:262144]).hexdigest()],
            },
        )
        self.assertEqual(PieceList.from_wire(reply, self.entry.root), pieces)
        self.assertFalse(t.disconnecting)
        # No slot for a piece list.
        self.assertEqual(self.parts.slots.peak["up"], 0)

    def test_pieces_unknown_or_unhashed(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "pieces", "fname": "nope", "id": 1}))
        [reply] = all_frames(t.value())
        self.assertEqual((reply["status"], reply["code"]), ("error", "not_found"))
        self.assertTrue(t.disconnecting)
        self.successResultOf(self.parts.library.put(self.entry.with_pieces(None)))
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "pieces", "fname": "a.bin", "id": 2}))
        [reply] = all_frames(t.value())
        self.assertEqual(reply["code"], "not_found")
        self.assertIn("no piece list", reply["message"])

    def test_pieces_then_gets_pipelined(self) -> None:
        proto, t = self.connect()
        proto.dataReceived(
            frame({"action": "pieces", "fname": "a.bin"})
            + frame({"action": "get", "fname": "a.bin", "offset": 0, "length": 3})
        )
        self.pump(t)
        pieces, rest = split_frame(t.value())
        header, rest = split_frame(rest)
        self.assertEqual((pieces["root"], header["length"], rest), (self.entry.root, 3, DATA[:3]))

    def test_upload_rate_limit(self) -> None:
        """
        Under a cap, the sender's next chunk waits for the bucket to refill;
        the bytes sent track rate x time plus the burst.
        """
        clock = self.parts.clock
        big = os.urandom(1_000_000)
        self.parts.publish("big.bin", big)
        self.factory.bucket = TokenBucket(100_000, clock, burst=65536)
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        sent = []
        for _ in range(40):
            if t.producer is not None:
                t.producer.resumeProducing()
            clock.advance(0.1)
            sent.append(len(t.value()))
        # 4 s at 100 kB/s plus the 64 KiB burst and one chunk of debt.
        self.assertLessEqual(sent[-1], 400_000 + 65536 + 65536 + 200)
        self.assertGreaterEqual(sent[-1], 400_000 - 65536)
        while t.producer is not None:
            t.producer.resumeProducing()
            clock.advance(0.1)
        self.assertEqual(split_frame(t.value())[1], big)

    def test_file_shrinks_while_serving(self) -> None:
        self.parts.publish("big.bin", os.urandom(1_000_000))
        proto, t = self.connect()
        self.get(proto, fname="big.bin")
        t.producer.resumeProducing()
        with open(self.parts.repo / "big.bin", "r+b") as f:
            f.truncate(1000)
        self.pump(t)
        self.assertTrue(t.disconnecting)
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_range_reader(self) -> None:
        path = self.parts.repo / "digits"
        path.write_bytes(b"0123456789")
        with open(path, "rb") as f:
            r = RangeReader(f, 4)
            self.assertEqual((r.read(3), r.read(3), r.read(3)), (b"012", b"3", b""))
            # Its own offsets: the file's position is neither used nor moved.
            f.seek(7)
            r = RangeReader(f, 3, 5)
            self.assertEqual((r.read(2), r.read(5), r.read(1)), (b"56", b"7", b""))
            self.assertEqual(f.tell(), 7)

    def test_open_file_shared_by_sessions(self) -> None:
        """
        A second request for a file checked moments ago is served at once
        from the open file (no thread job), and two sessions reading it
        interleaved each get their own range.
        """
        jobs = []
        library = self.parts.library
        real = library._run
        library._run = lambda f, *a, **kw: (jobs.append(f), real(f, *a, **kw))[1]
        p1, t1 = self.connect()
        self.get(p1, id=1, offset=0, length=100_000)
        self.assertEqual(len(jobs), 1)
        p2, t2 = self.connect()
        self.get(p2, id=2, offset=100_000, length=100_000)
        self.assertEqual(len(jobs), 1)
        for _ in range(1000):
            if t1.producer is None and t2.producer is None:
                break
            for t in (t1, t2):
                if t.producer is not None:
                    t.producer.resumeProducing()
        self.assertEqual(split_frame(t1.value())[1], DATA[:100_000])
        self.assertEqual(split_frame(t2.value())[1], DATA[100_000:])

    def test_open_file_checked_again(self) -> None:
        """
        After SERVING_RECHECK seconds, or when the open file changed or was
        deleted, a request checks the file in full again.
        """
        from twistedp2p.peer.library import SERVING_RECHECK

        jobs = []
        library = self.parts.library
        real = library._run
        library._run = lambda f, *a, **kw: (jobs.append(f.__name__ == "_open_checked"), real(f, *a, **kw))[1]
        def served() -> bytes:
            proto, t = self.connect()
            self.get(proto)
            self.pump(t)
            proto.connectionLost(Failure(ConnectionDone()))
            return split_frame(t.value())[1]

        self.assertEqual((served(), served()), (DATA, DATA))
        self.assertEqual(sum(jobs), 1)
        self.parts.clock.advance(SERVING_RECHECK)
        self.assertEqual(served(), DATA)
        self.assertEqual(sum(jobs), 2)
        (self.parts.repo / "a.bin").unlink()
        proto, t = self.connect()
        self.get(proto)
        self.assertEqual(sum(jobs), 3)
        [reply] = all_frames(t.value())
        self.assertEqual(reply["code"], "not_found")
        self.assertNotIn("a.bin", library)


class BufferedTransport(StringTransport):
    """
    A StringTransport with a bounded buffer, as a TCP transport has: while
    more than C{bufferSize} bytes wait, a registered streaming producer is
    paused (at the write that crossed the bound); L{drain} hands the
    buffered bytes to the reader and resumes the producer, as a TCP
    transport does once its buffer is empty.
    """

    bufferSize = 4096

    def __init__(self) -> None:
        StringTransport.__init__(self, peerAddress=IPv4Address("TCP", "127.0.0.1", 5555))
        self.delivered = b""
        #: The most bytes ever buffered at once.
        self.peak = 0

    def write(self, data: bytes) -> None:
        StringTransport.write(self, data)
        self._written()

    def writeSequence(self, data: Any) -> None:
        StringTransport.writeSequence(self, data)
        self._written()

    def _written(self) -> None:
        buffered = len(self.io.getvalue())
        self.peak = max(self.peak, buffered)
        if self.producer is not None and self.streaming and buffered > self.bufferSize:
            if self.producerState != "paused-producer":
                self.producerState = "paused-producer"
                self.producer.pauseProducing()

    def pauseProducing(self) -> None:
        # (Reading, as a TCP transport's pauseProducing stops reading.)
        self.reading = False

    def resumeProducing(self) -> None:
        self.reading = True

    reading = True

    def drain(self) -> None:
        self.delivered += self.value()
        self.clear()
        if self.producer is not None:
            if not self.streaming:
                self.producer.resumeProducing()
            elif self.producerState == "paused-producer":
                self.producerState = "producing"
                self.producer.resumeProducing()


class PullingTransport(BufferedTransport):
    """
    A L{BufferedTransport} that asks a pull producer for its first chunk
    when it registers, as C{FileDescriptor.registerProducer} does.
    """

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        BufferedTransport.registerProducer(self, producer, streaming)
        if not streaming:
            producer.resumeProducing()


class OutputFlowControlTests(SynchronousTestCase):
    """
    Answers made from memory (C{pieces}, C{ping}) are written under the
    transport's flow control: a client that pipelines them and does not
    read makes the peer buffer about one answer beyond the transport's
    bound, and reading stops until the buffer drains.
    """

    def setUp(self) -> None:
        self.parts = PeerParts(temp_dir(self), max_sessions=2)
        # Several pieces: each piece-list answer is a few hundred bytes.
        self.data = os.urandom(6 * 256 * 1024 + 5)
        self.entry = self.parts.publish("a.bin", self.data)
        self.factory = UploadFactory(
            self.parts.library, self.parts.slots, self.parts.transfers, self.parts.clock, 60.0
        )

    def connect(self) -> tuple[Any, BufferedTransport]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = BufferedTransport()
        proto.makeConnection(transport)
        return proto, transport

    def pieces_reply_size(self) -> int:
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "pieces", "fname": "a.bin", "id": 1}))
        return len(t.value())

    def drain_all(self, t: BufferedTransport, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not t.value() and t.producer is None:
                return
            t.drain()
        self.fail("the output never drained")

    def test_pipelined_pings_bounded(self) -> None:
        proto, t = self.connect()
        n = 5000
        proto.dataReceived(b"".join(frame({"action": "ping", "id": i}) for i in range(n)))
        one = len(frame({"status": "success", "id": n, "message": "pong"}))
        # The unread answers stay within the bound plus one answer, and the
        # connection is no longer read.
        self.assertLessEqual(t.peak, t.bufferSize + one)
        self.assertFalse(t.reading)
        self.assertIs(t.producer, proto)
        self.assertFalse(t.disconnecting)
        # As the reader drains, every answer comes, in order.
        self.drain_all(t)
        replies = all_frames(t.delivered)
        self.assertEqual([r["id"] for r in replies], list(range(n)))
        self.assertTrue(t.reading)
        self.assertIsNone(t.producer)
        self.assertLessEqual(t.peak, t.bufferSize + one)

    def test_pipelined_pieces_bounded(self) -> None:
        one = self.pieces_reply_size()
        proto, t = self.connect()
        n = 2000
        proto.dataReceived(b"".join(frame({"action": "pieces", "fname": "a.bin", "id": i}) for i in range(n)))
        self.assertLessEqual(t.peak, t.bufferSize + one + 16)
        self.assertFalse(t.reading)
        self.drain_all(t)
        replies = all_frames(t.delivered)
        self.assertEqual([r["id"] for r in replies], list(range(n)))
        self.assertEqual({r["root"] for r in replies}, {self.entry.root})

    def test_pipelined_small_gets_bounded(self) -> None:
        """
        Ranges that fit in the first chunk go out with their header, with
        no producer to pull the rest: they are written under the same flow
        control, so pipelining thousands of them without reading makes the
        peer buffer one answer beyond the bound, not all of them.
        """
        proto, t = self.connect()
        n, size = 2000, 1000
        proto.dataReceived(
            b"".join(
                frame({"action": "get", "fname": "a.bin", "offset": i * 7, "length": size, "id": i})
                for i in range(n)
            )
        )
        one = 200 + size
        self.assertLessEqual(t.peak, t.bufferSize + one)
        self.assertFalse(t.reading)
        self.drain_all(t)
        data = t.delivered
        for i in range(n):
            header, data = split_frame(data)
            self.assertEqual((header["id"], header["length"]), (i, size))
            self.assertEqual(data[:size], self.data[i * 7 : i * 7 + size])
            data = data[size:]
        self.assertEqual(data, b"")
        self.assertLessEqual(t.peak, t.bufferSize + one)

    def test_pipelined_ranges_ending_in_the_first_pull_bounded(self) -> None:
        """
        A transport asks a pull producer for a chunk as soon as it is
        registered (as Twisted's TCP transport does): a range of one and a
        bit chunks used to end right there, and the next pipelined one was
        answered at once, and so on: 20 unread ranges of 300,000 bytes
        were all buffered (found by the upload fuzzer's buffer bound).
        Now the rest of a range whose first write filled the buffer waits
        for it to drain, and nothing is read meanwhile.
        """
        from twistedp2p.peer.upload import ChunkSender

        proto, t = self.connect_pulling()
        n, size = 20, 300_000
        proto.dataReceived(
            b"".join(
                frame({"action": "get", "fname": "a.bin", "offset": i, "length": size, "id": i}) for i in range(n)
            )
        )
        # One answer (its header and first chunk) beyond the bound; once
        # draining, at most the last chunk the transport pulled of the
        # range before, plus one answer.
        one = 200 + ChunkSender.CHUNK_SIZE
        self.assertLessEqual(t.peak, t.bufferSize + one)
        self.assertFalse(t.reading)
        self.drain_all(t)
        data = t.delivered
        for i in range(n):
            header, data = split_frame(data)
            self.assertEqual((header["id"], header["length"]), (i, size))
            self.assertEqual(data[:size], self.data[i : i + size])
            data = data[size:]
        self.assertEqual(data, b"")
        self.assertLessEqual(t.peak, ChunkSender.CHUNK_SIZE + one)
        self.assertEqual(self.parts.slots.in_use, 1)
        proto.connectionLost(None)
        self.assertEqual(self.parts.slots.in_use, 0)

    def test_lost_while_a_range_waits_for_the_buffer(self) -> None:
        proto, t = self.connect_pulling()
        proto.dataReceived(frame({"action": "get", "fname": "a.bin", "offset": 0, "length": 300_000, "id": 1}))
        self.assertEqual(len(self.parts.transfers.active()), 1)
        proto.connectionLost(None)
        self.assertEqual(self.parts.slots.in_use, 0)
        self.assertEqual(self.parts.transfers.active(), [])

    def connect_pulling(self) -> tuple[Any, "PullingTransport"]:
        proto = self.factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 5555))
        transport = PullingTransport()
        proto.makeConnection(transport)
        return proto, transport

    def test_pings_queued_behind_a_range(self) -> None:
        """
        Pings that came while a range was going out are answered after it,
        in order, under the same flow control.
        """
        proto, t = self.connect()
        proto.dataReceived(frame({"action": "get", "fname": "a.bin", "offset": 0, "length": 10}))
        # (The range went out whole; the pull producer finishes on a pull.)
        pings = b"".join(frame({"action": "ping", "id": i}) for i in range(MAX_PIPELINED))
        proto.dataReceived(pings)
        self.drain_all(t)
        header, rest = split_frame(t.delivered)
        self.assertEqual(rest[:10], self.data[:10])
        self.assertEqual([r["id"] for r in all_frames(rest[10:])], list(range(MAX_PIPELINED)))

    def test_close_while_paused(self) -> None:
        """
        An error answer closes the connection even while this protocol is
        the paused producer.
        """
        proto, t = self.connect()
        proto.dataReceived(b"".join(frame({"action": "ping", "id": i}) for i in range(1000)))
        self.assertIs(t.producer, proto)
        proto.dataReceived(b"")
        self.drain_all(t)
        proto.dataReceived(frame({"action": "pieces", "fname": "nope", "id": 1}))
        self.assertTrue(t.disconnecting)
        self.assertIsNone(t.producer)

    def test_draining_reader_is_progress(self) -> None:
        """
        A reader that takes the buffered answers now and then (each time
        within the idle timeout) keeps its connection.
        """
        # (Without the minimum upload rate, which a range this small and
        # this slow a reader would fail: the idle timeout alone.)
        self.factory.min_rate = 0
        proto, t = self.connect()
        # Piece lists queued behind a range: answered as the reader drains,
        # with no further request coming.
        n = MAX_PIPELINED - 1
        proto.dataReceived(
            frame({"action": "get", "fname": "a.bin", "offset": 0, "length": 10})
            + b"".join(frame({"action": "pieces", "fname": "a.bin", "id": i}) for i in range(n))
        )
        drains = 0
        while t.value() or t.producer is not None:
            self.parts.clock.advance(50)
            self.assertFalse(t.disconnecting)
            t.drain()
            drains += 1
        self.assertGreater(drains, 3)
        header, rest = split_frame(t.delivered)
        self.assertEqual([r["id"] for r in all_frames(rest[10:])], list(range(n)))

    def test_idle_timeout_while_output_full(self) -> None:
        """
        A reader that never reads the answers is closed by the idle timeout
        (no request is read while the buffer is full).
        """
        proto, t = self.connect()
        proto.dataReceived(b"".join(frame({"action": "ping", "id": i}) for i in range(5000)))
        self.parts.clock.advance(61)
        self.assertTrue(t.disconnecting)


class GetHeaderTests(SynchronousTestCase):
    """
    L{get_header} gives the very bytes the JSON encoder gives for the same
    answer, from fragments kept per entry.
    """

    def entry(self, fname: str, size: int) -> Any:
        from twistedp2p.peer.library import Entry

        return Entry(fname, "/x/" + fname, size, 0.0, hashlib.sha256(fname.encode()).hexdigest(), 0.0)

    def test_same_bytes_as_the_encoder(self) -> None:
        fragments: dict[int, Any] = {}
        for fname in ("a.bin", 'quote"and\\back', "naïve façade ☃.txt", "tab\tname"):
            entry = self.entry(fname, 12345)
            for request_id in (None, 0, 7, 2**53 + 1):
                for offset, length in ((0, 12345), (100, 0), (12344, 1)):
                    expected = wire.encode(
                        wire.reply(
                            wire.SUCCESS,
                            request_id,
                            fname=fname,
                            offset=offset,
                            length=length,
                            file_size=entry.size,
                            sha256=entry.sha256,
                        )
                    )
                    self.assertEqual(get_header(request_id, entry, offset, length, fragments), expected)

    def test_fragments_follow_the_entry(self) -> None:
        """
        A republished file (a new entry, whatever its id) gets fragments of
        its own; the cache stays bounded.
        """
        fragments: dict[int, Any] = {}
        old = self.entry("f.bin", 1)
        get_header(1, old, 0, 1, fragments)
        new = self.entry("f.bin", 2)
        fragments[id(new)] = fragments.pop(id(old))  # as if the id were reused
        self.assertEqual(wire.decode(get_header(1, new, 0, 2, fragments))["file_size"], 2)
        for i in range(300):
            get_header(None, self.entry(f"n{i}", i), 0, 0, fragments)
        self.assertLessEqual(len(fragments), 256)
