"""
Tests for L{twistedp2p.eagerwrite}: the import-time check, both branches
of L{eager_write} and L{eager_write_parts} (direct to the socket, and
through the transport), byte order when something is buffered or a send
is partial, flow control of a file sent through L{EagerConsumer} to a
reader that stops reading, and accepting on data with L{read_now}.
"""

from __future__ import annotations

import hashlib
import io
import os
import select
import socket
import struct
from typing import Any

from twisted.internet import reactor, task, tcp
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.protocols.basic import FileSender
from twisted.trial import unittest

from twistedp2p import eagerwrite
from twistedp2p.eagerwrite import (
    EagerConsumer,
    accept_on_data,
    capable,
    eager_write,
    eager_write_parts,
    read_now,
    supports,
)
from twistedp2p.peer.upload import UploadFactory, UploadProtocol
from twistedp2p.tracker.protocol import TrackerProtocol


class CheckTests(unittest.SynchronousTestCase):
    """
    The import-time check of the private attributes eager writes use.
    """

    def test_running_twisted_supported(self) -> None:
        """
        The Twisted these tests run on has every attribute, so the eager
        path is on for its TCP server connections.
        """
        self.assertTrue(supports(tcp.Server))
        self.assertTrue(eagerwrite.AVAILABLE)
        self.assertEqual(eagerwrite.EAGER_TYPES, (tcp.Server,))

    def test_missing_attribute_unsupported(self) -> None:
        """
        A connection class lacking any one of the attributes is not
        supported.
        """
        for missing in eagerwrite.REQUIRED_ATTRIBUTES:
            names = {n: None for n in eagerwrite.REQUIRED_ATTRIBUTES if n != missing}
            self.assertFalse(supports(type("Conn", (), names)), missing)
        self.assertTrue(supports(type("Conn", (), {n: None for n in eagerwrite.REQUIRED_ATTRIBUTES})))

    def test_attributes_set_in_init_count(self) -> None:
        """
        Attributes a class only sets on its instances (in C{__init__}) are
        found.
        """

        class Conn:
            TLS = connected = disconnecting = dataBuffer = offset = producer = None

            def __init__(self, skt: Any) -> None:
                self.socket = skt
                self._tempDataLen = 0

            def startWriting(self) -> None:
                pass

            def doRead(self) -> None:
                pass

        self.assertTrue(supports(Conn))

    def test_not_capable(self) -> None:
        """
        Transports other than a plain TCP server connection go through
        C{write}, whole and unchanged.
        """
        t = StringTransport()
        self.assertFalse(capable(t))
        self.assertFalse(eager_write(t, b"abc"))
        self.assertEqual(t.value(), b"abc")

    def test_protocols_not_eager_on_fake_transports(self) -> None:
        """
        Frames of the tracker and upload protocols still reach a fake
        transport through C{write}.
        """
        for proto in (UploadProtocol(), TrackerProtocol(None, task.Clock())):
            t = StringTransport()
            proto.transport = t
            proto.sendString(b"hello")
            self.assertEqual(t.value(), struct.pack("!I", 5) + b"hello")


class FakeSocket:
    """
    A socket whose C{sendmsg} takes C{take} bytes (or raises C{error}).
    """

    def __init__(self, take: int, error: OSError | None = None) -> None:
        self.take = take
        self.error = error
        self.sent: list[bytes] = []

    def sendmsg(self, parts: Any) -> int:
        if self.error is not None:
            raise self.error
        data = b"".join(parts)[: self.take]
        self.sent.append(data)
        return len(data)

    def send(self, data: bytes) -> int:
        return self.sendmsg([data])


class FakeConnection(StringTransport):
    """
    An idle, connected plain-TCP-like transport around a L{FakeSocket}.
    """

    TLS = False
    disconnecting = False
    _tempDataLen = 0
    offset = 0
    dataBuffer = b""

    def __init__(self, sock: FakeSocket) -> None:
        StringTransport.__init__(self)
        self.socket = sock
        self.connected = True


class PartsTests(unittest.SynchronousTestCase):
    """
    L{eager_write_parts} on a fake socket: what the socket does not take
    goes to the transport, in order, whatever the split point.
    """

    def setUp(self) -> None:
        self.patch(eagerwrite, "EAGER_TYPES", (FakeConnection,))

    def test_split_points(self) -> None:
        parts = (b"head", b"body-bytes")
        whole = b"".join(parts)
        for take in range(len(whole) + 1):
            t = FakeConnection(FakeSocket(take))
            done = eager_write_parts(t, parts)
            self.assertEqual(done, take == len(whole), take)
            self.assertEqual(b"".join(t.socket.sent) + t.value(), whole, take)
            self.assertEqual(t.value(), whole[take:], take)

    def test_socket_error_all_to_transport(self) -> None:
        t = FakeConnection(FakeSocket(0, BlockingIOError()))
        self.assertFalse(eager_write_parts(t, (b"a", b"b")))
        self.assertEqual(t.value(), b"ab")

    def test_not_capable(self) -> None:
        t = StringTransport()
        self.assertFalse(eager_write_parts(t, (b"a", b"bc")))
        self.assertEqual(t.value(), b"abc")


class Collector(Protocol):
    """
    The reading end: collects bytes; C{wanted} fires once it has C{size}.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.chunks: list[bytes] = []
        self.received = 0
        self.wanted: Deferred = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.chunks.append(data)
        self.received += len(data)
        if self.received >= self.size and not self.wanted.called:
            self.wanted.callback(b"".join(self.chunks))


class Server(Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self)


class LoopbackTests(unittest.TestCase):
    """
    L{eager_write} on real TCP connections over 127.0.0.1.
    """

    async def connect(self, size: int) -> tuple[Any, Collector]:
        factory = Factory.forProtocol(Server)
        factory.made = Deferred()
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = Collector(size)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(client.transport.loseConnection)
        server = await factory.made
        self.addCleanup(server.transport.loseConnection)
        self.assertIs(type(server.transport), tcp.Server)
        return server, client

    async def test_direct_when_nothing_buffered(self) -> None:
        """
        With nothing buffered, the bytes go to the socket at once: the
        transport holds none of them, and they arrive.
        """
        server, client = await self.connect(5)
        t = server.transport
        self.assertTrue(capable(t))
        self.assertTrue(eager_write(t, b"hello"))
        self.assertEqual(t._tempDataLen, 0)
        self.assertEqual(len(t.dataBuffer) - t.offset, 0)
        self.assertEqual(await client.wanted, b"hello")

    async def test_after_buffered_write_keeps_order(self) -> None:
        """
        While the transport has bytes buffered, an eager write queues behind
        them: every byte arrives, in order.
        """
        first = os.urandom(1 << 20)
        server, client = await self.connect(len(first) + 2)
        t = server.transport
        t.write(first)
        self.assertFalse(eager_write(t, b"XY"))
        data = await client.wanted
        self.assertEqual(data, first + b"XY")

    async def test_off_goes_through_write(self) -> None:
        """
        When the check failed at import (no eager types), a TCP connection
        is written to through C{transport.write} only.
        """
        self.patch(eagerwrite, "EAGER_TYPES", ())
        server, client = await self.connect(5)
        t = server.transport
        self.assertFalse(capable(t))
        self.assertFalse(eager_write(t, b"hello"))
        # Buffered by the transport, sent on a later reactor turn.
        self.assertEqual(t._tempDataLen, 5)
        self.assertEqual(await client.wanted, b"hello")

    async def test_closing_transport_goes_through_write(self) -> None:
        """
        A transport that is closing is not written to directly.
        """
        server, client = await self.connect(0)
        t = server.transport
        t.loseConnection()
        self.assertFalse(eager_write(t, b"late"))

    async def test_slow_reader_flow_control(self) -> None:
        """
        A file sent through L{EagerConsumer} to a reader that stopped
        reading is not read into memory: once the socket buffers are full
        the producer is no longer pulled.  When the reader reads again,
        every byte arrives, in order, and the transfer completes.
        """
        size = 48 << 20
        data = os.urandom(size)
        source = io.BytesIO(data)
        server, client = await self.connect(size)
        client.transport.pauseProducing()
        t = server.transport
        sender = FileSender()
        sender.CHUNK_SIZE = 64 * 1024
        done = sender.beginFileTransfer(source, EagerConsumer(t))

        # Wait (reactor turn by turn) until the socket takes no more: the
        # rest waits in the transport's buffer or in the file, for the
        # socket to become writable.
        for _ in range(2000):
            if t.producer is not None and not select.select([], [t.socket], [], 0)[1]:
                break
            await task.deferLater(reactor, 0.001, lambda: None)
        else:
            self.fail(f"the socket never filled up: read {source.tell()}, buffered {len(t.dataBuffer) - t.offset + t._tempDataLen}, producer {t.producer}, received {client.received}")
        read = source.tell()
        for _ in range(50):
            await task.deferLater(reactor, 0, lambda: None)
        # Not pulled while its bytes wait; far from the whole file.
        self.assertEqual(source.tell(), read)
        self.assertLess(read, size)
        self.assertFalse(done.called)
        self.assertEqual(client.received, 0)

        client.transport.resumeProducing()
        got = await client.wanted
        await done
        self.assertEqual(hashlib.sha256(got).digest(), hashlib.sha256(data).digest())
        self.assertEqual(len(got), size)

    async def test_small_file_in_one_eager_write(self) -> None:
        """
        A file of one chunk leaves in the pull that registration makes:
        nothing stays buffered, and the transfer completes.
        """
        data = os.urandom(4096)
        server, client = await self.connect(len(data))
        t = server.transport
        sender = FileSender()
        done = sender.beginFileTransfer(io.BytesIO(data), EagerConsumer(t))
        self.assertEqual(t._tempDataLen, 0)
        self.assertEqual(len(t.dataBuffer) - t.offset, 0)
        self.assertEqual(await client.wanted, data)
        await done


class Early(Protocol):
    """
    Reads at once when accepted (L{read_now}); tells its factory's C{got}
    what it received and whether that was still inside C{connectionMade}.
    """

    in_made = False

    def connectionMade(self) -> None:
        self.factory.made.callback(self)
        self.in_made = True
        read_now(self.transport)
        self.in_made = False

    def dataReceived(self, data: bytes) -> None:
        if self.factory.fail:
            raise ValueError("a protocol error")
        if not self.factory.got.called:
            self.factory.got.callback((data, self.in_made))


class Talker(Protocol):
    """
    A client that sends C{greeting} as soon as it is connected (if any).
    """

    def __init__(self, greeting: bytes = b"") -> None:
        self.greeting = greeting
        self.lost: Deferred = Deferred()

    def connectionMade(self) -> None:
        if self.greeting:
            self.transport.write(self.greeting)

    def connectionLost(self, reason: Any) -> None:
        self.lost.callback(None)


class AcceptOnDataTests(unittest.TestCase):
    """
    L{accept_on_data} and L{read_now} on real loopback connections.
    """

    async def listen(self, defer: bool, fail: bool = False) -> tuple[Any, Factory]:
        factory = Factory.forProtocol(Early)
        factory.made, factory.got, factory.fail = Deferred(), Deferred(), fail
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        if defer:
            self.assertTrue(accept_on_data(port))
            self.assertGreater(port.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT), 0)
        return port, factory

    async def connect(self, port: Any, client: Talker) -> Talker:
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(client.transport.loseConnection)
        return client

    async def test_request_read_in_the_accept_turn(self) -> None:
        """
        On a port that accepts on data, a connection comes with its first
        bytes, and L{read_now} delivers them before C{connectionMade} is
        over.
        """
        port, factory = await self.listen(defer=True)
        await self.connect(port, Talker(b"get"))
        self.assertEqual(await factory.got, (b"get", True))

    async def test_nothing_waiting_is_no_harm(self) -> None:
        """
        Without data waiting, L{read_now} reads nothing, and the bytes that
        come later are read by the reactor as usual.
        """
        port, factory = await self.listen(defer=False)
        client = await self.connect(port, Talker())
        server = await factory.made
        self.assertFalse(factory.got.called)
        self.assertTrue(server.transport.connected)
        client.transport.write(b"later")
        self.assertEqual(await factory.got, (b"later", False))

    async def test_protocol_error_aborts(self) -> None:
        """
        A protocol error raised by the early read is logged and closes that
        connection, as the reactor would; the port goes on accepting.
        """
        port, factory = await self.listen(defer=True, fail=True)
        client = await self.connect(port, Talker(b"bad"))
        await client.lost
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)
        factory.fail, factory.made = False, Deferred()
        await self.connect(port, Talker(b"good"))
        self.assertEqual(await factory.got, (b"good", True))

    def test_not_a_tcp_port(self) -> None:
        self.assertFalse(accept_on_data(object()))


class UploadLoopbackTests(unittest.TestCase):
    """
    The peer port on a real loopback connection, eager path on: pipelined
    gets of a small and a big file come back whole and in order.
    """

    async def test_header_and_small_file_in_one_send(self) -> None:
        """
        A get of a small file is answered with one C{sendmsg}: the header
        frame and the file's bytes together.
        """
        from tests.peer.helpers import PeerParts, frame, split_frame, temp_dir

        sends: list[tuple[bytes, ...]] = []
        real = eagerwrite.eager_write_parts

        def record(transport: Any, parts: Any) -> bool:
            sends.append(tuple(parts))
            return real(transport, parts)

        self.patch(eagerwrite, "eager_write_parts", record)
        parts = PeerParts(temp_dir(self))
        data = os.urandom(4096)
        parts.publish("small.bin", data)
        factory = UploadFactory(parts.library, parts.slots, parts.transfers, parts.clock, 60.0)
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        request = frame({"action": "get", "fname": "small.bin", "offset": 0, "id": 7})
        client = Collector(4096 + 4)
        client.connectionMade = lambda: client.transport.write(request)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(client.transport.loseConnection)
        got = await client.wanted
        while len(got) < 4 or len(got) < 4 + struct.unpack("!I", got[:4])[0] + len(data):
            client.wanted, client.size = Deferred(), len(got) + 1
            got = await client.wanted
        header, rest = split_frame(got)
        self.assertEqual((header["status"], header["id"], rest), ("success", 7, data))
        self.assertEqual(len(sends), 1)
        self.assertEqual(b"".join(sends[0]), got)

    async def test_pipelined_gets_in_order(self) -> None:
        from twisted.internet.address import IPv4Address

        from tests.peer.helpers import PeerParts, frame, split_frame, temp_dir

        parts = PeerParts(temp_dir(self))
        small, big = os.urandom(4096), os.urandom(3 << 20)
        parts.publish("small.bin", small)
        parts.publish("big.bin", big)
        factory = UploadFactory(parts.library, parts.slots, parts.transfers, parts.clock, 60.0)
        built: list[UploadProtocol] = []
        build = factory.buildProtocol

        def keep(addr: IPv4Address) -> UploadProtocol:
            built.append(build(addr))
            return built[-1]

        factory.buildProtocol = keep
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        order = [("small.bin", small), ("big.bin", big), ("small.bin", small)]
        client = Collector(sum(len(d) for _, d in order) + 3 * 4)
        await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client)
        self.addCleanup(client.transport.loseConnection)
        client.transport.write(
            b"".join(frame({"action": "get", "fname": f, "offset": 0, "id": i}) for i, (f, _) in enumerate(order))
        )
        # Headers are about 200 bytes each: wait for all of it.
        while True:
            await client.wanted
            data = b"".join(client.chunks)
            rest, ok = data, True
            for i, (fname, content) in enumerate(order):
                if len(rest) < 4 or len(rest) < 4 + struct.unpack("!I", rest[:4])[0] + len(content):
                    ok = False
                    break
                header, rest = split_frame(rest)
                self.assertEqual((header["status"], header["id"], header["fname"]), ("success", i, fname))
                self.assertEqual(header["length"], len(content))
                self.assertEqual(rest[: len(content)], content)
                rest = rest[len(content) :]
            if ok:
                self.assertEqual(rest, b"")
                break
            client.wanted = Deferred()
            client.size = len(data) + 1
        self.assertTrue(built[0]._eager)
