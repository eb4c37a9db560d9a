"""
Resource limits: silent, half-open and stalled connections are closed on
the tracker port and the peer port, and a slow reader never makes a peer
buffer the file it uploads.

Unit tests run on a task.Clock and StringTransports; the integration
tests (L{LoopbackLimitTests}) use the real reactor on 127.0.0.1 with
short timeouts, bounded by trial's timeout.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import sys
import termios
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from twistedp2p import wire
from twistedp2p.peer.library import Library, run_synchronously
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.transfers import Transfers
from twistedp2p.peer.upload import ChunkSender, UploadFactory
from twistedp2p.tracker.protocol import TrackerFactory, TrackerProtocol
from twistedp2p.tracker.registry import Registry
from twistedp2p.tracker.store.memory import MemoryStore

from tests.fuzz.strategies import body_of, frame


def _header(length: int) -> bytes:
    return struct.pack("!I", length)


class TrackerPortLimitTests(unittest.SynchronousTestCase):
    """
    The tracker closes connections that say nothing, that stall inside a
    frame, and sessions whose peer stops answering.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.registry = Registry(MemoryStore("t"), self.clock, "t", heartbeat=30.0, misses=3, ping_timeout=5.0)
        self.factory = TrackerFactory(self.registry, self.clock)

    def connect(self) -> tuple[TrackerProtocol, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5000))
        proto.makeConnection(transport)
        return proto, transport

    def hello(self, proto: TrackerProtocol, version: int | None = None) -> None:
        message = {"action": "hello", "hostname": "h", "p2p_port": 1}
        if version is not None:
            message.update(version=version, id=1)
        proto.dataReceived(frame(body_of(message)))
        self.assertIsNotNone(proto.session)

    def test_silent_connection_closed(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(TrackerProtocol.HELLO_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)

    def test_header_then_stall_before_hello(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(_header(100) + b"{")
        self.clock.advance(TrackerProtocol.HELLO_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_dribbling_does_not_extend_hello_timeout(self) -> None:
        proto, transport = self.connect()
        for byte in _header(50) + b'{"action"':
            self.clock.advance(TrackerProtocol.HELLO_TIMEOUT / 10)
            proto.dataReceived(bytes([byte]))
        self.assertTrue(transport.disconnecting)

    def test_pings_before_hello_do_not_extend(self) -> None:
        proto, transport = self.connect()
        for _ in range(10):
            self.clock.advance(TrackerProtocol.HELLO_TIMEOUT / 5)
            proto.dataReceived(frame(body_of({"action": "ping"})))
        self.assertTrue(transport.disconnecting)

    def test_seed_session_stalled_in_a_frame_closed(self) -> None:
        """
        A registered seed client (never pinged) that starts a frame and
        stalls is closed after the frame timeout, and its session ends.
        """
        proto, transport = self.connect()
        self.hello(proto)
        proto.dataReceived(_header(60) + b'{"action": "pu')
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT - 0.1)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(len(self.registry), 0)

    def test_native_session_stalled_in_a_frame_closed(self) -> None:
        proto, transport = self.connect()
        self.hello(proto, version=1)
        proto.dataReceived(_header(60))
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT)
        self.assertTrue(transport.disconnecting)

    def test_frame_completed_in_time_keeps_session(self) -> None:
        """
        A frame that arrives slowly but completes within the frame timeout
        is answered, and an idle registered seed session stays open.
        """
        proto, transport = self.connect()
        self.hello(proto)
        data = frame(body_of({"action": "ping"}))
        for byte in data:
            self.clock.advance(TrackerProtocol.FRAME_TIMEOUT / (2 * len(data)))
            proto.dataReceived(bytes([byte]))
        self.assertIn(b"pong", transport.value())
        self.clock.advance(10 * TrackerProtocol.FRAME_TIMEOUT)
        self.assertFalse(transport.disconnecting)

    def test_each_frame_has_its_own_deadline(self) -> None:
        """
        The deadline runs from the first byte of the frame still incomplete,
        not from the first byte ever.
        """
        proto, transport = self.connect()
        self.hello(proto)
        ping = frame(body_of({"action": "ping"}))
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT * 0.6)
        proto.dataReceived(ping + ping[:3])
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT * 0.6)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(ping[3:] + ping[:2])
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT * 0.6)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(TrackerProtocol.FRAME_TIMEOUT * 0.4)
        self.assertTrue(transport.disconnecting)

    def test_unanswered_heartbeats_evict_native(self) -> None:
        """
        A native session that stops answering (a half-open connection) is
        evicted after the configured number of missed heartbeats.
        """
        proto, transport = self.connect()
        self.hello(proto, version=1)
        # The first round pings; each later one counts a miss.
        for _ in range(self.registry.misses):
            self.registry.heartbeat()
            self.assertFalse(transport.disconnecting)
        self.registry.heartbeat()
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.registry), 0)


class PeerPortLimitTests(unittest.SynchronousTestCase):
    """
    The peer port closes silent and stalled connections after its idle
    timeout, and a stalled transfer gives its session slot back.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        base = Path(self.mktemp())
        repo = base / "repo"
        repo.mkdir(parents=True)
        (repo / "big").write_bytes(os.urandom(300_000))
        self.library = Library(repo, [], run_synchronously, self.clock)
        entry = self.successResultOf(self.library.describe("big", "big"))
        self.successResultOf(self.library.put(entry))
        self.slots = Slots(1)
        self.factory = UploadFactory(self.library, self.slots, Transfers(self.clock), self.clock, idle_timeout=10.0)

    def connect(self) -> tuple[Any, StringTransport]:
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.0.0.1", 5000))
        proto.makeConnection(transport)
        return proto, transport

    def test_silent_connection_closed(self) -> None:
        proto, transport = self.connect()
        self.clock.advance(9.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.1)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.slots.in_use, 0)

    def test_header_then_stall_closed(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(_header(40) + b'{"action": "get", ')
        self.clock.advance(10.0)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(self.slots.in_use, 0)

    def test_requests_do_not_keep_a_stalled_transfer_alive(self) -> None:
        """
        A downloader that stops reading but keeps sending requests (pings,
        pipelined gets) is still closed once its transfer made no progress
        for the idle timeout: requests queued behind a stalled transfer are
        not progress.
        """
        proto, transport = self.connect()
        proto.dataReceived(frame(body_of({"action": "get", "fname": "big"})))
        for _ in range(3):
            self.clock.advance(4.0)
            proto.dataReceived(frame(body_of({"action": "ping"})))
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.slots.in_use, 0)

    def test_stalled_reader_gives_slot_back(self) -> None:
        proto, transport = self.connect()
        proto.dataReceived(frame(body_of({"action": "get", "fname": "big"})))
        self.assertEqual(self.slots.in_use, 1)
        # The transport never asks for more (the reader stopped reading).
        self.clock.advance(10.0)
        self.assertTrue(transport.disconnecting)
        proto.connectionLost(None)
        self.assertEqual(self.slots.in_use, 0)
        # The slot serves the next downloader.
        proto, transport = self.connect()
        proto.dataReceived(frame(body_of({"action": "get", "fname": "big"})))
        self.assertEqual(self.slots.in_use, 1)


# -- real connections on 127.0.0.1 ---------------------------------------------


class RawClient(Protocol):
    """
    Sends C{greeting} on connect, keeps what it receives, fires C{closed}
    when the connection ends.
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.data = bytearray()
        self.closed: Deferred = Deferred()
        self._waiting: list[tuple[int, Deferred]] = []

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def until(self, n: int) -> Deferred:
        """
        Fire once at least C{n} bytes have arrived.
        """
        d: Deferred = Deferred()
        self._waiting.append((n, d))
        self._check()
        return d

    @inlineCallbacks
    def header(self):
        """
        Wait for the first frame; @return: its message and its total size.
        """
        yield self.until(4)
        (n,) = struct.unpack("!I", bytes(self.data[:4]))
        yield self.until(4 + n)
        return wire.decode(bytes(self.data[4 : 4 + n])), 4 + n

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        self._check()

    def _check(self) -> None:
        ready = [w for w in self._waiting if len(self.data) >= w[0]]
        self._waiting = [w for w in self._waiting if len(self.data) < w[0]]
        for _, d in ready:
            d.callback(None)

    def connectionLost(self, reason: Any = None) -> None:
        self.closed.callback(bytes(self.data))


def _watch_lost(factory: Any, **attributes: Any) -> list[Deferred]:
    """
    Make C{factory} set C{attributes} on every protocol it builds (short
    timeouts), and return a list that gets, per connection, a Deferred
    fired by the server side's C{connectionLost}.
    """
    lost: list[Deferred] = []
    build = factory.buildProtocol

    def buildProtocol(addr: Any) -> Any:
        p = build(addr)
        for name, value in attributes.items():
            setattr(p, name, value)
        d: Deferred = Deferred()
        lost.append(d)
        connection_lost = p.connectionLost

        def recording(reason: Any = None) -> None:
            connection_lost(reason)
            d.callback(p)

        p.connectionLost = recording
        return p

    factory.buildProtocol = buildProtocol
    return lost


def _queued(sock: Any, request: int) -> int:
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), request, struct.pack("i", 0)))[0]


class LoopbackLimitTests(unittest.TestCase):
    """
    The same limits on real TCP connections, with timeouts of a fraction of
    a second.  Each test waits for the event it expects (a close); trial's
    C{timeout} bounds it.
    """

    timeout = 30
    SHORT = 0.3

    @inlineCallbacks
    def listen(self, factory: Any):
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    @inlineCallbacks
    def client(self, port: int, greeting: bytes = b""):
        proto = RawClient(greeting)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), proto)
        self.addCleanup(lambda: proto.transport.abortConnection() if proto.transport.connected else None)
        return proto

    # -- tracker port ------------------------------------------------------

    @inlineCallbacks
    def tracker(self):
        registry = Registry(MemoryStore("lb"), reactor, "lb")
        factory = TrackerFactory(registry, reactor)
        lost = _watch_lost(factory, HELLO_TIMEOUT=self.SHORT, FRAME_TIMEOUT=self.SHORT)
        port = yield self.listen(factory)
        self.addCleanup(factory.disconnect_all)
        return registry, port, lost

    @inlineCallbacks
    def test_tracker_closes_silent_client(self):
        registry, port, lost = yield self.tracker()
        client = yield self.client(port)
        data = yield client.closed
        self.assertEqual(data, b"")

    @inlineCallbacks
    def test_tracker_closes_half_open_frame_before_hello(self):
        registry, port, lost = yield self.tracker()
        client = yield self.client(port, _header(500) + b'{"action": "hel')
        data = yield client.closed
        self.assertEqual(data, b"")

    @inlineCallbacks
    def test_tracker_closes_stalled_seed_session(self):
        registry, port, lost = yield self.tracker()
        hello = frame(body_of({"action": "hello", "hostname": "stall", "p2p_port": 9}))
        client = yield self.client(port, hello + _header(200) + b'{"action": "publ')
        data = yield client.closed
        self.assertIn(b"welcome stall", data)
        yield lost[0]
        self.assertEqual(len(registry), 0)

    # -- peer port ---------------------------------------------------------

    def peer(self, size: int, idle_timeout: float) -> tuple[UploadFactory, Slots, Transfers, str]:
        repo = Path(self.mktemp()) / "repo"
        repo.mkdir(parents=True)
        block = os.urandom(1 << 20)
        h = hashlib.sha256()
        with open(repo / "big", "wb") as f:
            for _ in range(size >> 20):
                f.write(block)
                h.update(block)
        library = Library(repo, [], run_synchronously, reactor)
        entry = self.successResultOf(library.describe("big", "big"))
        self.successResultOf(library.put(entry))
        slots = Slots(1)
        transfers = Transfers(reactor)
        factory = UploadFactory(library, slots, transfers, reactor, idle_timeout=idle_timeout)
        self.addCleanup(library.close)
        self.addCleanup(factory.disconnect_all)
        return factory, slots, transfers, h.hexdigest()

    @inlineCallbacks
    def test_peer_closes_silent_and_half_open_clients(self):
        factory, slots, transfers, _ = self.peer(1 << 20, self.SHORT)
        port = yield self.listen(factory)
        silent = yield self.client(port)
        half = yield self.client(port, _header(300) + b'{"action": "get", "fn')
        self.assertEqual((yield silent.closed), b"")
        self.assertEqual((yield half.closed), b"")
        self.assertEqual(slots.in_use, 0)

    @inlineCallbacks
    def test_peer_stalled_reader_gives_slot_back(self):
        """
        A downloader that stops reading holds the only session slot until
        the idle timeout; then the slot serves the next downloader.
        """
        factory, slots, transfers, sha = self.peer(64 << 20, self.SHORT)
        lost = _watch_lost(factory)
        port = yield self.listen(factory)
        get = frame(body_of({"action": "get", "fname": "big"}))
        stalled = yield self.client(port, get)
        header, _ = yield stalled.header()
        stalled.transport.pauseProducing()
        self.assertEqual((header["status"], slots.in_use), ("success", 1))
        yield lost[0]
        self.assertEqual(slots.in_use, 0)
        second = yield self.client(port, get)
        header, _ = yield second.header()
        self.assertEqual((header["status"], slots.in_use), ("success", 1))

    @inlineCallbacks
    def test_slow_reader_bounded_buffer(self):
        """
        A downloader pauses reading a 64 MiB file: the uploader stops
        reading the file once the socket buffers are full, and holds at most
        about one chunk in its own buffer; when the reader resumes, the
        whole file arrives intact.
        """
        size = 64 << 20
        factory, slots, transfers, sha = self.peer(size, 60.0)
        port = yield self.listen(factory)
        reader = yield self.client(port, frame(body_of({"action": "get", "fname": "big"})))
        header, header_size = yield reader.header()
        reader.transport.pauseProducing()
        # No event says "the uploader stopped": poll until its byte count
        # has not moved for half a second.
        [transfer] = transfers.active()
        last, still = -1, 0
        while still < 10:
            yield deferLater(reactor, 0.05, lambda: None)
            still = still + 1 if transfer.done == last else 0
            last = transfer.done
        [server] = factory.connections
        handed = transfer.done
        received = len(reader.data) - header_size
        in_client_socket = _queued(reader.transport.getHandle(), termios.FIONREAD)
        in_server_socket = _queued(server.transport.getHandle(), termios.TIOCOUTQ)
        in_uploader = handed - received - in_client_socket - in_server_socket
        self.measured = dict(
            handed=handed, received=received, client_socket=in_client_socket,
            server_socket=in_server_socket, uploader_buffer=in_uploader,
        )
        self.assertLess(handed, size // 2, self.measured)
        # At most the one chunk the sender read last.
        self.assertLessEqual(in_uploader, ChunkSender.CHUNK_SIZE, self.measured)
        # Resume: everything arrives, intact.
        reader.transport.resumeProducing()
        yield reader.until(header_size + size)
        self.assertEqual((header["length"], header["sha256"]), (size, sha))
        self.assertEqual(hashlib.sha256(bytes(reader.data[header_size:])).hexdigest(), sha)
        if os.environ.get("P2P_SHOW_MEASURES"):
            print("slow reader:", self.measured)

    if not sys.platform.startswith("linux"):
        test_slow_reader_bounded_buffer.skip = "measures socket queues with Linux ioctls"

    def test_pipelined_answers_from_memory_bounded(self):
        """
        C{pieces}, C{ping} and small C{get} requests, pipelined.
        """
        return self.pipelined(
            lambda i: [
                {"action": "pieces", "fname": "big"},
                {"action": "ping"},
                {"action": "get", "fname": "big", "offset": i, "length": 1000},
            ],
            1500,
        )

    def test_pipelined_small_gets_bounded(self):
        """
        Only small C{get}s (each range goes out with its header, no producer
        pulls the rest), pipelined.
        """
        return self.pipelined(lambda i: [{"action": "get", "fname": "big", "offset": i, "length": 4000}], 3000)

    if not sys.platform.startswith("linux"):
        test_pipelined_answers_from_memory_bounded.skip = "measures socket queues with Linux ioctls"
        test_pipelined_small_gets_bounded.skip = test_pipelined_answers_from_memory_bounded.skip

    @inlineCallbacks
    def pipelined(self, requests_for, n):
        """
        A client pipelines thousands of C{pieces} and C{ping} requests (the
        answers a peer makes from memory) and small C{get}s (a header and
        one write of bytes) and does not read: the peer stops reading once
        its own buffer is over the transport's bound, and holds at most that
        bound plus one answer; when the client reads, every answer arrives,
        in order.
        """
        repo = Path(self.mktemp()) / "repo"
        repo.mkdir(parents=True)
        # 256 pieces (a sparse file: quick to write and hash): each piece
        # list answer is about 17 KB.
        with open(repo / "big", "wb") as f:
            f.truncate(64 << 20)
        library = Library(repo, [], run_synchronously, reactor)
        entry = self.successResultOf(library.describe("big", "big"))
        self.successResultOf(library.put(entry))
        self.addCleanup(library.close)
        factory = UploadFactory(library, Slots(1), Transfers(reactor), reactor, idle_timeout=60.0)
        self.addCleanup(factory.disconnect_all)
        handled = [0]
        paused: Deferred = Deferred()
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            p = build(addr)
            handle, pause = p._handle, p.pauseProducing

            def _handle(frame: bytes) -> None:
                # Each of these answers is written whole by the time it
                # returns (a get's range fits in its first write).
                handle(frame)
                handled[0] += 1

            def pauseProducing() -> None:
                if not paused.called:
                    paused.callback(None)
                pause()

            p._handle, p.pauseProducing = _handle, pauseProducing
            return p

        factory.buildProtocol = buildProtocol
        port = yield self.listen(factory)
        messages = [m for i in range(n) for m in requests_for(i)]
        for i, m in enumerate(messages):
            m["id"] = i
        requests = b"".join(frame(body_of(m)) for m in messages)
        total = len(messages)
        reader = yield self.client(port, requests)
        reader.transport.pauseProducing()
        [server] = factory.connections
        # (Answers handled, bytes received, in the client's socket, in the
        # peer's socket), at every turn until the peer pauses.
        snapshots = []
        while not paused.called and handled[0] < total:
            snapshots.append(
                (
                    handled[0],
                    len(reader.data),
                    _queued(reader.transport.getHandle(), termios.FIONREAD),
                    _queued(server.transport.getHandle(), termios.TIOCOUTQ),
                )
            )
            yield deferLater(reactor, 0.005, lambda: None)
        snapshots.append(
            (
                handled[0],
                len(reader.data),
                _queued(reader.transport.getHandle(), termios.FIONREAD),
                _queued(server.transport.getHandle(), termios.TIOCOUTQ),
            )
        )
        # The client reads: every answer arrives, in order.
        reader.transport.resumeProducing()
        ids: list[int] = []
        ends = [0]
        while len(ids) < total:
            at = ends[-1]
            yield reader.until(at + 4)
            (size,) = struct.unpack("!I", bytes(reader.data[at : at + 4]))
            yield reader.until(at + 4 + size)
            answer = wire.decode(bytes(reader.data[at + 4 : at + 4 + size]))
            ids.append(answer["id"])
            ends.append(at + 4 + size + (answer["length"] if "offset" in answer else 0))
        yield reader.until(ends[-1])
        self.assertEqual(ids, list(range(total)))
        self.assertEqual(len(reader.data), ends[-1])
        # What the peer held in its own buffer at each turn: the bytes of
        # the answers it had written, less those received or in the sockets.
        one = max(b - a for a, b in zip(ends, ends[1:]))
        bound = server.transport.bufferSize + one
        held = [ends[k] - got - in_client - in_server for k, got, in_client, in_server in snapshots]
        self.measured = dict(
            answered=ends[snapshots[-1][0]], handled=snapshots[-1][0], most_held=max(held), bound=bound
        )
        self.assertTrue(paused.called, self.measured)
        self.assertLessEqual(max(held), bound, self.measured)
        if os.environ.get("P2P_SHOW_MEASURES"):
            print("pipelined answers:", self.measured)
