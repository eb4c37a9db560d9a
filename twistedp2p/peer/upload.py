"""
The peer port: serve published files to other peers.

One request frame (``get`` for native peers; ``get_file`` or ``download``
for seed-protocol clients), then raw file bytes pulled by the transport
through a L{FileSender}, so a slow reader never makes us buffer the file.
Requests only ever name a shared name, which the L{Library} maps to a file;
nothing here interprets a request as a path.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import FileSender, Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from twistedp2p import wire
from twistedp2p.peer.library import Library
from twistedp2p.peer.slots import UP, Slot, Slots
from twistedp2p.peer.transfers import Transfers

#: Seconds a connection may stay idle (no complete request, no progress).
IDLE_TIMEOUT = 60.0


class ChunkSender(FileSender):
    """
    A L{FileSender} with bigger reads: 16 KiB costs one reactor round per
    16 KiB on fast links.
    """

    CHUNK_SIZE = 64 * 1024


class RangeReader:
    """
    A file-like view of the next C{length} bytes of an open file.
    """

    def __init__(self, f: Any, length: int) -> None:
        self._f = f
        self.remaining = length

    def read(self, size: int) -> bytes:
        size = min(size, self.remaining)
        if size <= 0:
            return b""
        data = self._f.read(size)
        self.remaining -= len(data)
        return data


def describe_peer(transport: Any) -> str:
    peer = transport.getPeer()
    host = getattr(peer, "host", None)
    port = getattr(peer, "port", None)
    return f"{host}:{port}" if host is not None else str(peer)


class UploadProtocol(Int32StringReceiver, TimeoutMixin):
    """
    One connection to our peer port.  Thin: requests are decoded here and
    the L{Library} and L{Slots} decide.
    """

    MAX_LENGTH = wire.MAX_REQUEST_FRAME
    log = Logger()

    factory: "UploadFactory"

    def __init__(self) -> None:
        self._serving = False
        self._connected = False
        self._closing = False
        self._sender: ChunkSender | None = None
        self.peer = "?"

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        self.factory.connections.add(self)
        self.peer = describe_peer(self.transport)
        self.callLater = self.factory.clock.callLater
        self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason: Failure = None) -> None:
        self._connected = False
        self.factory.connections.discard(self)
        self.setTimeout(None)
        if self._sender is not None:
            # Real transports already stopped the producer; fake ones may not.
            self._sender.stopProducing()

    def timeoutConnection(self) -> None:
        self.log.info("closing idle connection from {peer}", peer=self.peer)
        abort = getattr(self.transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            self.transport.loseConnection()

    def lengthLimitExceeded(self, length: int) -> None:
        self.log.warn(
            "{peer} sent a {length}-byte frame (limit {limit}); closing",
            peer=self.peer,
            length=length,
            limit=self.MAX_LENGTH,
        )
        self.transport.loseConnection()

    # -- requests ----------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        if self._closing:
            return
        if self._serving:
            # Requests are not pipelined: a frame while we send bytes is a
            # protocol violation, and we cannot answer in the byte stream.
            self.log.warn("{peer} sent a request during a transfer; closing", peer=self.peer)
            self.transport.abortConnection()
            return
        self.resetTimeout()
        message: dict[str, Any] = {}
        try:
            message = wire.decode(frame)
            request = wire.parse_request(message, wire.PEER_REQUESTS)
        except wire.WireError as e:
            self.log.info("bad request from {peer}: {message}", peer=self.peer, message=e.message)
            self._close_with(wire.error(e.code, e.message, wire.safe_id(message)))
            return
        if request.action == "get":
            self._get(request)
        elif request.action == "get_file":
            self._seed_get(request.fields["lname"])
        elif request.action == "download":
            self._seed_get(request.fields["fname"])
        elif request.action == "ping":
            self.sendString(wire.encode(wire.reply(wire.SUCCESS, request.id, message="pong")))

    def _close_with(self, message: dict[str, Any]) -> None:
        self.sendString(wire.encode(message))
        self._close()

    def _close(self) -> None:
        self._closing = True
        self.transport.loseConnection()

    # -- native get ------------------------------------------------------------

    def _get(self, request: wire.Request) -> None:
        fname = request.fields["fname"]
        slot = self.factory.slots.try_acquire(UP)
        if slot is None:
            self.log.info("busy: refusing {fname} to {peer}", fname=fname, peer=self.peer)
            self._close_with(
                wire.reply(
                    wire.BUSY,
                    request.id,
                    message=f"serving {self.factory.slots.limit} sessions already; try again later",
                )
            )
            return
        self._serving = True
        d = self.factory.library.open_for_serving(fname)
        d.addCallback(self._start_get, slot, request)
        d.addErrback(self._failed_before_sending, slot, request.id)

    def _start_get(self, found: Any, slot: Slot, request: wire.Request) -> None:
        fname = request.fields["fname"]
        if found is None:
            self._serving = False
            slot.release()
            if self._connected:
                self._close_with(
                    wire.error("not_found", f"{fname} is not published here", request.id)
                )
            return
        entry, f = found
        if not self._connected:
            f.close()
            slot.release()
            return
        offset = request.fields["offset"]
        length = request.fields["length"]
        if offset > entry.size or (length is not None and offset + length > entry.size):
            f.close()
            slot.release()
            self._serving = False
            self._close_with(
                wire.error(
                    "bad_field",
                    f"range {offset}+{length} is beyond the end of {fname} ({entry.size} bytes)",
                    request.id,
                )
            )
            return
        if length is None:
            length = entry.size - offset
        f.seek(offset)
        self.sendString(
            wire.encode(
                wire.reply(
                    wire.SUCCESS,
                    request.id,
                    fname=fname,
                    offset=offset,
                    length=length,
                    file_size=entry.size,
                    sha256=entry.sha256,
                )
            )
        )
        self._send(f, slot, fname, length, close_after=False)

    def _failed_before_sending(self, failure: Failure, slot: Slot, request_id: Any) -> None:
        slot.release()
        self._serving = False
        self.log.failure("serving a request from {peer} failed", failure, peer=self.peer)
        if self._connected:
            self._close_with(wire.error("internal", "the peer failed to serve that file", request_id))

    # -- seed get_file -------------------------------------------------------

    def _seed_get(self, name: str) -> None:
        if wire.fname_problem(name) is not None:
            self.log.info("seed request from {peer} for a bad name; closing", peer=self.peer)
            self._close()
            return
        slot = self.factory.slots.try_acquire(UP)
        if slot is None:
            self.log.info("busy: closing seed request from {peer}", peer=self.peer)
            self._close()
            return
        self._serving = True

        def found(result: Any) -> None:
            if result is None or not self._connected:
                if result is not None:
                    result[1].close()
                slot.release()
                self._serving = False
                self._close()
                return
            entry, f = result
            self._send(f, slot, name, entry.size, close_after=True)

        d = self.factory.library.open_for_serving(name)
        d.addCallback(found)
        d.addErrback(self._failed_seed, slot)

    def _failed_seed(self, failure: Failure, slot: Slot) -> None:
        slot.release()
        self._serving = False
        self.log.failure("serving a seed request from {peer} failed", failure, peer=self.peer)
        self._close()

    # -- the bytes -------------------------------------------------------------

    def _send(self, f: Any, slot: Slot, fname: str, length: int, close_after: bool) -> None:
        transfer = self.factory.transfers.start(UP, fname, self.peer, length)
        reader = RangeReader(f, length)

        def count(chunk: bytes) -> bytes:
            transfer.add(len(chunk))
            self.resetTimeout()
            return chunk

        def finished(_: Any) -> None:
            if reader.remaining:
                # The file shrank under us: the downloader must not mistake
                # a short stream for a complete one.
                transfer.finish("aborted: the file shrank")
                self.log.warn("{fname} shrank while being served; aborting", fname=fname)
                self.transport.abortConnection()
                return
            transfer.finish("done")
            if close_after:
                self._close()
            else:
                self.resetTimeout()

        def lost(failure: Failure) -> None:
            transfer.finish("aborted: connection lost")
            self.log.info(
                "upload of {fname} to {peer} stopped after {done} of {total} bytes",
                fname=fname,
                peer=self.peer,
                done=transfer.done,
                total=length,
            )

        def cleanup(result: Any) -> Any:
            f.close()
            slot.release()
            self._sender = None
            self._serving = False
            return result

        self._sender = sender = ChunkSender()
        d = sender.beginFileTransfer(reader, self.transport, transform=count)
        d.addBoth(cleanup)
        d.addCallbacks(finished, lost)


class UploadFactory(Factory):
    """
    Builds L{UploadProtocol}s sharing a library, the session slots and the
    transfer table.
    """

    noisy = False

    protocol = UploadProtocol

    def __init__(
        self,
        library: Library,
        slots: Slots,
        transfers: Transfers,
        clock: Any,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.library = library
        self.slots = slots
        self.transfers = transfers
        self.clock = clock
        self.idle_timeout = idle_timeout
        #: Open connections, so a stopping peer can close them.
        self.connections: set[UploadProtocol] = set()

    def disconnect_all(self) -> None:
        """
        Abort every open connection (the peer is stopping).
        """
        for protocol in list(self.connections):
            protocol.transport.abortConnection()
