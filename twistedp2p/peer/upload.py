"""
The peer port: serve published files to other peers.

Native peers send ``pieces`` (the piece list of a file) and ``get`` (a byte
range: one header frame, then the raw bytes), and may pipeline several
requests on one connection: they are answered in order, one at a time.
Seed-protocol clients send one ``get_file`` or ``download`` and get the raw
file until we close.  Bytes are pulled by the transport through a
L{FileSender} (through a L{ThrottledConsumer} under ``--upload-rate``), so a
slow reader never makes us buffer the file.  Answers made from memory
(``pieces``, ``ping``) are written under the transport's flow control too:
while its buffer is over its bound, the connection is neither read nor
answered (L{UploadProtocol.pauseProducing}), so a client that pipelines
requests and never reads makes us buffer one answer, not all of them.

Requests only ever name a shared name, which the L{Library} maps to a file;
nothing here interprets a request as a path.  A connection holds one
session slot from its first ``get`` until it closes or has had nothing to
send for L{SESSION_LINGER} seconds.
"""

from __future__ import annotations

import os
from collections import deque
from struct import Struct
from typing import Any

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import FileSender, Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from twistedp2p import eagerwrite, wire
from twistedp2p.eagerwrite import EagerConsumer, capable, eager_write, read_now
from twistedp2p.peer.library import Library
from twistedp2p.peer.ratelimit import ThrottledConsumer, TokenBucket
from twistedp2p.peer.slots import UP, RateFloor, Slot, Slots
from twistedp2p.peer.transfers import Transfer, Transfers

#: The Int32 length prefix of a frame.
_pack_length = Struct("!I").pack
#: Seconds a connection may stay idle (no complete request, no progress).
IDLE_TIMEOUT = 60.0
#: Requests a connection may have waiting behind the one being served.
MAX_PIPELINED = 32
#: Seconds a connection keeps its session slot once it has nothing left to
#: send: the socket buffers hold several pieces, so a pipelining
#: downloader's next request often arrives after our queue ran dry.
SESSION_LINGER = 2.0
#: Seed-protocol requests: answered with raw bytes or a close, never a frame.
SEED_ACTIONS = frozenset(("get_file", "download"))
#: An upload session must move at least this many bytes per second
#: (``--min-upload-rate``; under ``--upload-rate``, at most half of an
#: equal share of the cap) over each window once its grace is over, or it
#: is closed and its slot freed (L{slots.RateFloor}).
MIN_UPLOAD_RATE = 4 * 1024
UPLOAD_RATE_GRACE = 20.0
UPLOAD_RATE_WINDOW = 20.0


class ChunkSender(FileSender):
    """
    A L{FileSender} with bigger reads: 16 KiB costs one reactor round per
    16 KiB on fast links.  Under an upload cap the chunks stay smaller, so
    that the cap is followed closely.
    """

    CHUNK_SIZE = 256 * 1024
    THROTTLED_CHUNK_SIZE = 64 * 1024

    def resumeProducing(self) -> None:
        FileSender.resumeProducing(self)
        if self.file is not None and getattr(self.file, "remaining", None) == 0:
            # A range is done once its last byte is written: finish now
            # rather than on the transport's next pull, so that the next
            # pipelined request starts at once.
            FileSender.resumeProducing(self)


class RangeReader:
    """
    A file-like view of C{length} bytes of an open file from C{offset},
    read with C{pread}: the file's own position is never used, so several
    uploads may share one descriptor (L{Library.open_for_serving}).
    """

    def __init__(self, f: Any, length: int, offset: int = 0) -> None:
        self._fd = f.fileno()
        self._pos = offset
        self.remaining = length

    def read(self, size: int) -> bytes:
        size = min(size, self.remaining)
        if size <= 0:
            return b""
        # (An empty read, with bytes still due, means the file shrank.)
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        self.remaining -= len(data)
        return data


def get_header(request_id: int | None, entry: Any, offset: int, length: int, fragments: dict[int, Any]) -> bytes:
    """
    The body of a C{get} answer's header frame: the JSON object
    C{wire.encode(wire.reply(SUCCESS, request_id, fname=..., offset=...,
    length=..., file_size=..., sha256=...))} gives, put together from the
    entry's encoded parts, kept in C{fragments} (by entry), and the
    request's numbers, without running the JSON encoder on the way to the
    first byte.
    """
    cached = fragments.get(id(entry))
    if cached is None or cached[0] is not entry:
        if len(fragments) >= 256:
            fragments.clear()
        cached = fragments[id(entry)] = (
            entry,
            b',"fname":' + wire.encode(entry.fname),
            b',"file_size":%d,"sha256":%b}' % (entry.size, wire.encode(entry.sha256)),
        )
    _, fname_part, tail = cached
    # Request ids are non-negative integers (wire.parse_request).
    id_part = b"" if request_id is None else b',"id":%d' % request_id
    return b'{"status":"success"%b%b,"offset":%d,"length":%d%b' % (id_part, fname_part, offset, length, tail)


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
        #: A request is being served (file lookup, or bytes going out).
        self._serving = False
        self._connected = False
        self._closing = False
        self._sender: ChunkSender | None = None
        #: Frames received while serving, answered in order.
        self._queue: deque[bytes] = deque()
        #: The session slot, held while this connection has work.
        self._slot: Slot | None = None
        #: The upload session in the transfer table (one per slot hold).
        self._transfer: Transfer | None = None
        #: (entry, open file) of the last native get, reused by the next
        #: ones of this session while the entry and the file are unchanged.
        self._open: tuple[Any, Any] | None = None
        self._linger: Any = None
        #: A plain TCP connection: frames and unthrottled file bytes go to
        #: its socket at once while nothing is buffered (L{eager_write}).
        self._eager = False
        self._peer: str | None = None
        #: This protocol is the transport's registered (streaming) producer,
        #: while it writes an answer from memory, and until the transport's
        #: buffer drains if that answer filled it.
        self._watching = False
        #: The transport said its buffer is over its bound: nothing is read
        #: or answered until it drains.
        self._output_full = False
        #: Inside L{dataReceived} (its loop parses what is buffered).
        self._parsing = False
        #: A range whose first write filled the buffer: (start its sender,
        #: its cleanup, its failure), run once the buffer drains.
        self._rest: tuple[Any, Any, Any] | None = None
        #: The minimum-rate rule of the current upload session, and its timer.
        self._floor: RateFloor | None = None
        self._floor_call: Any = None

    @property
    def peer(self) -> str:
        """
        The other end as C{host:port}, for logs and the transfer table
        (worked out when first needed: not on the way to the first byte).
        """
        if self._peer is None:
            self._peer = describe_peer(self.transport) if self.transport is not None else "?"
        return self._peer

    # -- connection ------------------------------------------------------

    def connectionMade(self) -> None:
        self._connected = True
        self._eager = capable(self.transport)
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            # Headers and pipelined requests are small: never hold them back.
            nodelay(True)
        self.callLater = self.factory.clock.callLater
        if self._eager:
            # The port accepts on data (L{accept_on_data}, set by the peer
            # service): the request is usually here already, so answer it
            # in this turn rather than on the reactor's next one, and before
            # the bookkeeping below, which the first bytes need not wait for.
            # (Nothing here closes the connection synchronously: a close
            # is reported to connectionLost on a later turn.)
            read_now(self.transport)
        self.factory.connections.add(self)
        if self._connected:
            self.setTimeout(self.factory.idle_timeout)

    def connectionLost(self, reason: Failure = None) -> None:
        self._connected = False
        self._watching = False
        self._queue.clear()
        self.factory.connections.discard(self)
        self.setTimeout(None)
        rest, self._rest = self._rest, None
        if rest is not None:
            # A range waiting for the buffer to drain: it stops here.
            rest[1](None)
            rest[2](reason)
        if self._sender is not None:
            # Real transports already stopped the producer; fake ones may not.
            self._sender.stopProducing()
        if not self._serving:
            # Nothing was being sent: whatever this session sent is complete.
            self._end_session("done")

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

    def sendString(self, string: bytes) -> None:
        """
        Send one frame; on a plain TCP connection with nothing buffered,
        straight to the socket rather than on the reactor's next turn.
        """
        if self._eager:
            eager_write(self.transport, _pack_length(len(string)) + string)
        else:
            Int32StringReceiver.sendString(self, string)

    # -- requests ----------------------------------------------------------

    def stringReceived(self, frame: bytes) -> None:
        if self._closing:
            return
        if self._sender is None:
            # A request queued behind bytes that the reader does not take
            # is no progress: only the bytes moving keep a transfer alive.
            self.resetTimeout()
        if len(self._queue) >= MAX_PIPELINED:
            self.log.warn(
                "{peer} pipelined more than {n} requests; closing", peer=self.peer, n=MAX_PIPELINED
            )
            # (The frames read with this one are ignored: one warning.)
            self._closing = True
            self._queue.clear()
            self.transport.abortConnection()
            return
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._queue.append(frame)
        self._drain()

    def _drain(self) -> None:
        """
        Answer queued requests in order until one has to wait; when nothing
        is left, end the upload session (free the slot) unless another
        request comes within L{SESSION_LINGER} seconds.
        """
        while self._queue and not self._serving and not self._closing and self._connected and not self._output_full:
            self._handle(self._queue.popleft())
        if self._serving or self._queue or self._linger is not None:
            return
        if self._slot is None or not self._connected or self._closing:
            self._end_session("done")
        else:
            self._linger = self.callLater(self.factory.session_linger, self._lingered)

    def _lingered(self) -> None:
        self._linger = None
        self._end_session("done")

    def _end_session(self, outcome: str) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._close_open_file()
        transfer, self._transfer = self._transfer, None
        if transfer is not None:
            transfer.finish(outcome)
        slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()
        self._floor = None
        if self._floor_call is not None and self._floor_call.active():
            self._floor_call.cancel()
        self._floor_call = None

    # -- the minimum rate ------------------------------------------------------

    def _hold(self, slot: Slot) -> None:
        """
        An upload session starts: its slot is held under the minimum-rate rule.
        """
        self._slot = slot
        rate = self.factory.min_rate
        if rate > 0 and self._floor is None:
            self._floor = RateFloor(rate, self.factory.clock, self.factory.rate_grace, self.factory.rate_window)
            self._floor_call = self.callLater(max(1.0, self._floor.due_in()), self._check_rate)

    def _check_rate(self) -> None:
        self._floor_call = None
        floor = self._floor
        if floor is None or not self._connected:
            return
        bucket = self.factory.bucket
        if bucket is not None and bucket.limited:
            # Never ask more than half of an equal share of our own cap.
            floor.rate = min(self.factory.min_rate, bucket.rate / (2 * max(1, self.factory.slots.active[UP])))
        rate = floor.check()
        if rate is None:
            self._floor_call = self.callLater(max(1.0, floor.due_in()), self._check_rate)
            return
        self.log.info(
            "closing the upload to {peer}: {rate:.0f} bytes/s over {window:g} s, below the minimum of {min:.0f}"
            " (--min-upload-rate)",
            peer=self.peer,
            rate=rate,
            window=floor.window,
            min=floor.rate,
        )
        self._closing = True
        self._queue.clear()
        self._end_session("aborted: too slow")
        self.transport.abortConnection()

    def _handle(self, frame: bytes) -> None:
        message: dict[str, Any] = {}
        try:
            message = wire.decode(frame)
            request = wire.parse_request(message, wire.PEER_REQUESTS)
        except wire.WireError as e:
            action = message.get("action")
            if type(action) is str and action in SEED_ACTIONS:
                # A seed client saves whatever it receives as the file: an
                # invalid request gets what an unpublished name gets, a
                # close without a byte.
                self.log.info("bad seed request from {peer}: {message}; closing", peer=self.peer, message=e.message)
                self._close()
                return
            self.log.info("bad request from {peer}: {message}", peer=self.peer, message=e.message)
            self._close_with(wire.error(e.code, e.message, wire.safe_id(message)))
            return
        if request.action == "get":
            self._get(request)
        elif request.action == "pieces":
            self._pieces(request)
        elif request.action == "get_file":
            self._seed_get(request.fields["lname"])
        elif request.action == "download":
            self._seed_get(request.fields["fname"])
        elif request.action == "ping":
            self._reply(wire.reply(wire.SUCCESS, request.id, message="pong"))

    def _close_with(self, message: dict[str, Any]) -> None:
        self.sendString(wire.encode(message))
        self._close()

    def _close(self) -> None:
        self._closing = True
        self._queue.clear()
        # (A registered producer that is paused would hold the close back.)
        self._unwatch_output()
        self.transport.loseConnection()

    # -- flow control of answers made from memory ------------------------------

    def _reply(self, message: dict[str, Any]) -> None:
        """
        Send an answer made from memory under the transport's flow control:
        this protocol is registered as the transport's streaming producer
        while it writes, so a transport whose buffer goes over its bound
        (C{bufferSize}, 64 KiB for TCP) tells it at once
        (L{pauseProducing}), and it stays registered until the buffer has
        drained (L{resumeProducing}).  A C{get}'s header and first chunk
        are written the same way (L{_send}); the rest of a range has its
        own producer (L{ChunkSender}), pulled by the transport when its
        buffer is empty, and requests that come meanwhile wait in the queue.
        """
        self._watch_output()
        self.sendString(wire.encode(message))
        if not self._output_full:
            self._unwatch_output()

    def _watch_output(self) -> None:
        if self._connected and not self._watching:
            self._watching = True
            self.transport.registerProducer(self, True)

    def dataReceived(self, data: bytes) -> None:
        self._parsing = True
        try:
            Int32StringReceiver.dataReceived(self, data)
        finally:
            self._parsing = False

    def _read_on(self) -> None:
        """
        Parse the frames read before a pause, unless that is being done
        already (the loop of an outer L{dataReceived} goes on by itself).
        """
        if not self._parsing and not self.paused and self._connected and not self._closing:
            self.dataReceived(b"")

    def _unwatch_output(self) -> None:
        if self._watching:
            self._watching = False
            self._output_full = False
            self.transport.unregisterProducer()

    def pauseProducing(self) -> None:
        """
        The transport's buffer is over its bound: stop reading (the
        transport stops reading the socket, and frames already read stay
        unparsed) and answering until it drains.
        """
        if self._output_full:
            return
        self._output_full = True
        Int32StringReceiver.pauseProducing(self)

    def resumeProducing(self) -> None:
        """
        The transport's buffer drained: answer what is queued, then read on.
        (The reader took every byte we had: progress, for the idle timeout.)
        """
        if not self._output_full:
            return
        self._unwatch_output()
        if not self._connected or self._closing:
            return
        self.resetTimeout()
        self.paused = False
        self.transport.resumeProducing()
        rest, self._rest = self._rest, None
        if rest is not None:
            # (The range in progress goes on; requests wait behind it.)
            rest[0]()
        self._drain()
        # The frames read before the pause (the buffer may fill again on the
        # way: the loop stops when paused).
        self._read_on()

    def stopProducing(self) -> None:
        """
        The transport is closing (it forgets its producer itself).
        """
        self._watching = False
        self._output_full = False
        self.paused = True

    # -- native pieces ---------------------------------------------------------

    def _pieces(self, request: wire.Request) -> None:
        # Answered from memory: the list is metadata, and every get checks
        # the file again before a byte is sent.
        fname = request.fields["fname"]
        entry = self.factory.library.get(fname)
        if entry is None or entry.pieces is None:
            why = "is not published here" if entry is None else "has no piece list yet"
            self._close_with(wire.error("not_found", f"{fname} {why}", request.id))
            return
        self._reply(wire.reply(wire.SUCCESS, request.id, fname=fname, **entry.pieces.to_wire()))

    # -- native get ------------------------------------------------------------

    def _get(self, request: wire.Request) -> None:
        fname = request.fields["fname"]
        slot = self._slot or self.factory.slots.try_acquire(UP)
        if slot is None:
            self.log.info("busy: refusing {fname} to {peer}", fname=fname, peer=self.peer)
            self._close_with(
                wire.reply(
                    wire.BUSY,
                    request.id,
                    message=f"serving {self.factory.slots.limits[UP]} uploads already; try again later",
                )
            )
            return
        self._hold(slot)
        self._serving = True
        found = self._reuse(fname)
        if found is None:
            found = self.factory.library.serving_now(fname)
        if found is not None:
            self._start_get(found, request)
            return
        self._close_open_file()
        d = self.factory.library.open_for_serving(fname)
        d.addCallback(self._start_get, request)
        d.addErrback(self._failed_before_sending, request.id)

    def _reuse(self, fname: str) -> tuple[Any, Any] | None:
        """
        The file this session already opened for C{fname}, if it is still
        what the library publishes under that name with the same size and
        modification time (an fstat; the full check ran when it was opened).
        """
        if self._open is None:
            return None
        entry, f = self._open
        if self.factory.library.get(fname) is not entry:
            return None
        try:
            st = os.fstat(f.fileno())
        except (OSError, ValueError):
            return None
        if (st.st_size, st.st_mtime_ns) != (entry.size, entry.mtime_ns):
            return None
        return self._open

    def _close_open_file(self) -> None:
        opened, self._open = self._open, None
        if opened is not None:
            opened[1].close()

    def _start_get(self, found: Any, request: wire.Request) -> None:
        fname = request.fields["fname"]
        if found is None:
            self._serving = False
            self._end_session("failed: not found")
            if self._connected:
                self._close_with(
                    wire.error("not_found", f"{fname} is not published here", request.id)
                )
            return
        entry, f = found
        if self._open is not found:
            self._close_open_file()
            self._open = found
        if not self._connected:
            self._serving = False
            self._end_session("aborted: connection lost")
            return
        offset = request.fields["offset"]
        length = request.fields["length"]
        if offset > entry.size or (length is not None and offset + length > entry.size):
            self._serving = False
            self._end_session("failed: bad range")
            asked = f"offset {offset}" if length is None else f"{length} bytes from offset {offset}"
            self._close_with(
                wire.error("bad_field", f"{asked} is beyond the end of {fname} ({entry.size} bytes)", request.id)
            )
            return
        if length is None:
            length = entry.size - offset
        header = get_header(request.id, entry, offset, length, self.factory.header_fragments)
        self._send(f, fname, length, close_after=False, keep_open=True, offset=offset, header=header)

    def _failed_before_sending(self, failure: Failure, request_id: Any) -> None:
        self._serving = False
        self._end_session("failed: internal error")
        self.log.failure("serving a request from {peer} failed", failure, peer=self.peer)
        if self._connected:
            self._close_with(wire.error("internal", "the peer failed to serve that file", request_id))

    # -- seed get_file -------------------------------------------------------

    def _seed_get(self, name: str) -> None:
        if wire.fname_problem(name) is not None:
            self.log.info("seed request from {peer} for a bad name; closing", peer=self.peer)
            self._close()
            return
        slot = self._slot or self.factory.slots.try_acquire(UP)
        if slot is None:
            self.log.info("busy: closing seed request from {peer}", peer=self.peer)
            self._close()
            return
        self._hold(slot)
        self._serving = True

        def found(result: Any) -> None:
            if result is None or not self._connected:
                if result is not None:
                    result[1].close()
                self._serving = False
                self._end_session("failed: not found")
                self._close()
                return
            entry, f = result
            self._send(f, name, entry.size, close_after=True)

        d = self.factory.library.open_for_serving(name)
        d.addCallback(found)
        d.addErrback(self._failed_seed)

    def _failed_seed(self, failure: Failure) -> None:
        self._serving = False
        self._end_session("failed: internal error")
        self.log.failure("serving a seed request from {peer} failed", failure, peer=self.peer)
        self._close()

    # -- the bytes -------------------------------------------------------------

    def _send(
        self,
        f: Any,
        fname: str,
        length: int,
        close_after: bool,
        keep_open: bool = False,
        offset: int = 0,
        header: bytes | None = None,
    ) -> None:
        """
        Send C{length} bytes of C{f} from C{offset}, after the C{header}
        frame if one is given.

        Unthrottled, the header and the first chunk leave at once, in one
        write (one segment for a small file): the transfer table entry and
        the L{ChunkSender} that sends the rest under the transport's flow
        control are set up after them, off the way to the first byte.
        Under an upload cap every byte, the first chunk too, goes through
        the L{ThrottledConsumer}.
        """
        reader = RangeReader(f, length, offset)
        bucket = self.factory.bucket
        throttled = bucket is not None and bucket.limited
        first = b""
        # The answer's first write is watched as an answer from memory is:
        # a transport whose buffer it fills stops this connection's reading
        # and answering (L{_reply}).
        self._watch_output()
        if not throttled:
            first = reader.read(ChunkSender.CHUNK_SIZE)
            parts = [first] if first else []
            if header is not None:
                parts.insert(0, _pack_length(len(header)) + header)
                header = None
            if parts and self._eager:
                eagerwrite.eager_write_parts(self.transport, parts)
            elif parts:
                self.transport.writeSequence(parts)
        elif header is not None:
            self.sendString(header)
        transfer = self._transfer
        if transfer is not None and transfer.fname != fname:
            self._transfer = None
            transfer.finish("done")
            transfer = None
        if transfer is None:
            # Observers hear of it once the first bytes are out.
            transfer = self._transfer = self.factory.transfers.start(UP, fname, self.peer, length, announce=False)
        else:
            transfer.total = (transfer.total or 0) + length
        if first:
            transfer.add(len(first))
            if self._floor is not None:
                self._floor.moved(len(first))

        def count(chunk: bytes) -> bytes:
            transfer.add(len(chunk))
            if self._floor is not None:
                self._floor.moved(len(chunk))
            self.resetTimeout()
            return chunk

        def finished(_: Any) -> None:
            if reader.remaining:
                # The file shrank under us: the downloader must not mistake
                # a short stream for a complete one.
                self._end_session("aborted: the file shrank")
                self.log.warn("{fname} shrank while being served; aborting", fname=fname)
                self._closing = True
                self.transport.abortConnection()
                return
            self.factory.served_ranges += 1
            self.factory.served_bytes += length
            if close_after:
                self._end_session("done")
                self._close()
            else:
                self.resetTimeout()
                self._drain()

        def lost(failure: Failure) -> None:
            self.log.info(
                "upload of {fname} to {peer} stopped after {done} of {total} bytes",
                fname=fname,
                peer=self.peer,
                done=transfer.done,
                total=transfer.total,
            )
            self._end_session("aborted: connection lost")

        def cleanup(result: Any) -> Any:
            if not keep_open:
                f.close()
            self._sender = None
            self._serving = False
            return result

        if not reader.remaining:
            # The whole range went with the header: nothing for a producer
            # to pull.  (A pull producer would be asked for more at once,
            # whatever the transport holds: the next pipelined request
            # would be answered without any flow control.)
            if not self._output_full:
                self._unwatch_output()
            cleanup(None)
            self.factory.transfers.announce(transfer)
            finished(None)
            return
        def pull_rest() -> None:
            # The rest is pulled by the transport when its buffer is empty;
            # the requests that come meanwhile are read and wait in the queue.
            consumer: Any = self.transport
            sender = ChunkSender()
            if throttled:
                consumer = ThrottledConsumer(self.transport, bucket)
                sender.CHUNK_SIZE = ChunkSender.THROTTLED_CHUNK_SIZE
            elif self._eager:
                consumer = EagerConsumer(self.transport)
            self._sender = sender
            d = sender.beginFileTransfer(reader, consumer, transform=count)
            d.addBoth(cleanup)
            d.addCallbacks(finished, lost)

        self.factory.transfers.announce(transfer)
        if self._output_full:
            # The first write took the buffer over its bound: the rest
            # waits until it drains (L{resumeProducing}), as does reading.
            # (A transport asks a pull producer for a chunk as soon as it
            # registers: a range that ended there would let the next
            # pipelined one be answered at once, and so on, unbounded.)
            self._rest = (pull_rest, cleanup, lost)
            return
        self._unwatch_output()
        pull_rest()


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
        bucket: TokenBucket | None = None,
        session_linger: float = SESSION_LINGER,
        min_rate: float = MIN_UPLOAD_RATE,
        rate_grace: float = UPLOAD_RATE_GRACE,
        rate_window: float = UPLOAD_RATE_WINDOW,
    ) -> None:
        self.library = library
        self.slots = slots
        self.transfers = transfers
        self.clock = clock
        self.idle_timeout = idle_timeout
        #: The upload cap (``--upload-rate``), shared by every connection.
        self.bucket = bucket
        self.session_linger = session_linger
        #: The minimum rate of an upload session (L{MIN_UPLOAD_RATE}).
        self.min_rate = min_rate
        self.rate_grace = rate_grace
        self.rate_window = rate_window
        #: Open connections, so a stopping peer can close them.
        self.connections: set[UploadProtocol] = set()
        #: Encoded parts of get headers, by published entry (L{get_header}).
        self.header_fragments: dict[int, Any] = {}
        #: Native ranges (``get``) served in full, and their bytes.
        self.served_ranges = 0
        self.served_bytes = 0

    def disconnect_all(self) -> None:
        """
        Abort every open connection (the peer is stopping).
        """
        for protocol in list(self.connections):
            protocol.transport.abortConnection()
