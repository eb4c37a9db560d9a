"""
Fetch one file from the sources a tracker listed.

L{choose_sources} orders the sources (a pure function).  L{Download} tries
them in turn: connect, send ``get`` (or ``get_file`` to a seed source),
bound the time to first byte, write the bytes to a hidden ``.part`` file
while hashing them off the reactor thread (L{PartWriter}, with
backpressure), verify size and SHA-256, and move the file into place
without ever overwriting a file the user has (unless forced).
"""

from __future__ import annotations

import hashlib
import os
import random
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet.defer import (
    CancelledError,
    Deferred,
    TimeoutError as DeferredTimeout,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from twistedp2p import errors, wire
from twistedp2p.identity import is_fingerprint
from twistedp2p.peer.partfile import (
    DIRECT_ALIGN,
    LocalWriteError,
    NoSpaceLeft,
    PartFile,
    SerialWorker,
    after_all,
    first_line,
    install,
    part_name,
    free_bytes,
    summarize_failures,
    unlink_quietly,
    write_error,
)
from twistedp2p.peer.ratelimit import PauseReasons, TokenBucket, throttle_download
from twistedp2p.peer.slots import DOWN, RateFloor, Slots
from twistedp2p.peer.transfers import Transfers

#: Bytes handed to the writer threads at a time.
WRITE_CHUNK = 1024 * 1024
#: Bytes a download connection reads at a time (without a download cap).
READ_SIZE = 1024 * 1024
#: Stop reading from the source while this much is waiting to be written.
MAX_PENDING = 4 * WRITE_CHUNK
#: Seconds without data (after the first byte) before giving up a source.
STALL_TIMEOUT = 30.0
#: The largest download from a source that publishes no size (a seed
#: source) when ``--max-file-size`` is not given.
UNSIZED_MAX_FILE_SIZE = 64 * 1024**3
#: Bytes a download from a source that publishes no size leaves free on
#: the repository's file system (it stops before), and the most bytes it
#: takes between two checks of the free space.
DISK_MARGIN = 256 * 1024 * 1024
FREE_CHECK_BYTES = 64 * 1024 * 1024
#: Base delays between rounds of retrying busy sources (each gets jitter);
#: their number bounds the retries, their sum the extra wait.
BUSY_DELAYS = (0.2, 0.4, 0.8, 1.2, 1.6, 2.0, 2.0, 2.0, 2.0, 2.0)

#: (Kept under its old name for the modules that import it from here.)
_unlink_quietly = unlink_quietly

Connect = Callable[[str, int, Factory], Deferred]
Progress = Callable[[int, "int | None"], None]


def big_reads(transport: Any, bucket: TokenBucket | None) -> None:
    """
    Let a download connection read up to L{READ_SIZE} per call rather than
    Twisted's 64 KiB (fewer reactor rounds on fast links); under a download
    cap reads stay small, so that the cap is followed closely.
    """
    if (bucket is None or not bucket.limited) and isinstance(getattr(transport, "bufferSize", None), int):
        transport.bufferSize = READ_SIZE


# -- choosing sources ------------------------------------------------------------


@dataclass(frozen=True)
class SourceInfo:
    """
    One entry of a tracker's ``peer_list``.
    """

    hostname: str
    ip: str
    port: int
    lname: str
    fname: str
    file_size: int | None
    sha256: str | None
    version: int | None = None
    #: The content root and piece size it published (docs/swarm.md), or
    #: None (seed sources, older peers).
    root: str | None = None
    piece_size: int | None = None
    #: The short fingerprint of the key that signed the source's hello
    #: (docs/protocol.md); None for an unauthenticated source.
    fingerprint: str | None = None

    @property
    def authenticated(self) -> bool:
        return self.fingerprint is not None

    @property
    def addresses(self) -> tuple[str, ...]:
        """
        The forms C{--from} accepts for its address: C{IP},
        C{IP:PORT} and, for IPv6, C{[IP]:PORT}.
        """
        return (self.ip, f"{self.ip}:{self.port}", f"[{self.ip}]:{self.port}")

    @property
    def seed(self) -> bool:
        """A seed-protocol source: no SHA-256, served with ``get_file``."""
        return self.sha256 is None

    @property
    def label(self) -> str:
        return f"{self.hostname} ({self.ip}:{self.port})"

    @classmethod
    def from_wire(cls, entry: Any) -> "SourceInfo":
        """
        @raise ValueError: for an entry we cannot use.
        """
        if not isinstance(entry, dict):
            raise ValueError("a peer_list entry must be an object")
        try:
            hostname = wire.hostname("hostname", entry.get("hostname"))
            ip = wire._text(255)("ip", entry.get("ip"))
            port = wire.port("port", entry.get("port"))
            fname = entry.get("fname")
            lname = entry.get("lname") if entry.get("lname") is not None else fname
            lname = wire.lname("lname", lname)
            size = entry.get("file_size")
            if size is not None:
                size = wire.size("file_size", size)
            sha = entry.get("sha256")
            if sha is not None and not wire.is_sha256(sha):
                raise wire.WireError("bad_field", "sha256 must be 64 lowercase hex digits")
            version = entry.get("version")
        except wire.WireError as e:
            raise ValueError(e.message)
        root, piece_size = entry.get("root"), entry.get("piece_size")
        try:
            wire.piece_size("piece_size", piece_size)
            usable = wire.is_sha256(root) and sha is not None
        except wire.WireError:
            usable = False
        if not usable:
            # A source without a usable root still serves whole files.
            root = piece_size = None
        fingerprint = entry.get("fingerprint")
        if not (isinstance(fingerprint, str) and is_fingerprint(fingerprint)):
            fingerprint = None
        return cls(hostname, ip, port, lname, fname, size, sha, version, root, piece_size, fingerprint)


def _content_groups(sources: Sequence[SourceInfo]) -> dict[tuple, list[SourceInfo]]:
    groups: dict[tuple, list[SourceInfo]] = {}
    for s in sources:
        groups.setdefault((s.sha256, s.file_size), []).append(s)
    return groups


def _describe_groups(fname: str, groups: dict[tuple, list[SourceInfo]]) -> str:
    parts = []
    for (sha, size), members in groups.items():
        hosts = ", ".join(dict.fromkeys(m.hostname for m in members))
        size_text = "unknown size" if size is None else f"{size} bytes"
        sha_text = f"sha256 {sha[:12]}" if sha else "unverified"
        parts.append(f"{sha_text} ({size_text}) on {hosts}")
    return (
        f"several different files are published as {fname}: "
        + "; ".join(parts)
        + "; choose one with --from HOSTNAME (or a key fingerprint, or IP:PORT)"
    )


def select_source(entries: Sequence[SourceInfo], source: str) -> list[SourceInfo]:
    """
    The entries C{--from SOURCE} names, in their order: those whose key
    fingerprint (16 hex digits), C{IP}, C{IP:PORT} or C{[IP]:PORT} is
    C{source}, and those whose hostname is C{source}.  When some source
    of that hostname is authenticated (signed its hello), the
    unauthenticated ones claiming the same hostname are left out: a
    hostname proves nothing by itself.
    """
    by_host = [e for e in entries if e.hostname == source]
    if any(e.authenticated for e in by_host):
        by_host = [e for e in by_host if e.authenticated]
    keep = {id(e) for e in by_host}
    keep.update(id(e) for e in entries if e.fingerprint == source or source in e.addresses)
    return [e for e in entries if id(e) in keep]


def choose_sources(
    fname: str, peer_list: Sequence[Any], source: str | None = None
) -> list[SourceInfo]:
    """
    Order the usable sources of C{fname}: verified (SHA-256) sources in the
    tracker's order, then seed sources that may hold the same content.

    @param source: only sources whose hostname (or address) is this.
    @raise errors.NoSources: nothing usable (or nothing from C{source}).
    @raise errors.AmbiguousContent: several different contents.
    """
    entries = []
    for item in peer_list:
        try:
            entries.append(SourceInfo.from_wire(item))
        except ValueError:
            continue
    if source is not None:
        entries = select_source(entries, source)
        if not entries:
            raise errors.NoSources(f"{source} does not share {fname} (or is not online)")
    if not entries:
        raise errors.NoSources(f"no live source has {fname}")
    verified = [e for e in entries if not e.seed]
    seeds = [e for e in entries if e.seed]
    vgroups = _content_groups(verified)
    if len(vgroups) > 1:
        raise errors.AmbiguousContent(_describe_groups(fname, vgroups))
    if verified:
        size = verified[0].file_size
        seeds = [s for s in seeds if s.file_size is None or s.file_size == size]
    else:
        sizes = {s.file_size for s in seeds if s.file_size is not None}
        if len(sizes) > 1:
            raise errors.AmbiguousContent(
                _describe_groups(fname, {k: v for k, v in _content_groups(seeds).items()})
            )
    return verified + seeds


# -- writing -----------------------------------------------------------------------


class PartWriter:
    """
    Buffer received bytes and hand them, C{chunk_size} at a time, to two
    serial thread queues that run side by side: one writes the chunks in
    order at their offsets, the other feeds the SHA-256 in the same order.
    A chunk's memory is released once both are done with it; while more
    than C{max_pending} bytes wait, the producer (the connection) is paused,
    and resumed at half of that.
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        run_in_thread: Callable[..., Deferred],
        chunk_size: int = WRITE_CHUNK,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.path = path
        self._chunk_size = chunk_size
        self._max_pending = max_pending
        self._buf: list[bytes] = []
        self._buffered = 0
        self._pending = 0
        #: Where the next chunk goes (reactor side).
        self._offset = 0
        self._writes = SerialWorker(run_in_thread)
        self._hashes = SerialWorker(run_in_thread)
        self._hasher = hashlib.sha256()
        self._file: PartFile | None = None
        #: Bytes written (by the write queue).
        self.written = 0
        self.error: Failure | None = None
        self.producer: Any = None
        self.paused = False
        #: Called once with the failure when writing fails.
        self.on_error: Callable[[Failure], None] | None = None

    def open(self) -> Deferred:
        """
        Create (or truncate) the part file.
        """

        def work() -> None:
            try:
                self._file = PartFile(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            except OSError as e:
                raise write_error(self.path, e)

        return self._writes.submit(work)

    @property
    def identity(self) -> tuple[int, int] | None:
        """The part file's device and inode, once it is open."""
        return None if self._file is None else self._file.identity

    @property
    def waiting(self) -> int:
        """Bytes received but not yet both written and hashed."""
        return self._buffered + self._pending

    def write(self, data: bytes) -> None:
        if self.error is not None or not data:
            return
        self._buf.append(data)
        self._buffered += len(data)
        if self._buffered >= self._chunk_size:
            self._flush()
        if self.waiting > self._max_pending and self.producer is not None and not self.paused:
            self.paused = True
            self.producer.pauseProducing()

    def _flush(self, last: bool = False) -> None:
        if not self._buf or self.error is not None:
            return
        chunks, size = self._buf, self._buffered
        self._buf = []
        self._buffered = 0
        keep = 0 if last else size % DIRECT_ALIGN
        if keep and keep < size:
            # Chunks end on an aligned offset (so they can be written
            # directly); the few bytes past it go with the next chunk.
            size -= keep
            head = chunks.pop()
            cut = len(head) - keep
            if cut > 0:
                chunks.append(memoryview(head)[:cut])
                self._buf = [memoryview(head)[cut:]]
            else:
                # (A last piece shorter than what is kept: take it whole,
                # and the remainder from the pieces before it.)
                self._buf = [head]
                rest = keep - len(head)
                while rest:
                    prev = chunks.pop()
                    if len(prev) > rest:
                        chunks.append(memoryview(prev)[: len(prev) - rest])
                        self._buf.insert(0, memoryview(prev)[len(prev) - rest :])
                        rest = 0
                    else:
                        self._buf.insert(0, prev)
                        rest -= len(prev)
            self._buffered = keep
        self._pending += size
        offset, self._offset = self._offset, self._offset + size
        left = [2]

        def release(_: Any = None) -> None:
            left[0] -= 1
            if left[0]:
                return
            self._pending -= size
            if self.paused and self.waiting <= self._max_pending // 2:
                self.paused = False
                if self.producer is not None:
                    self.producer.resumeProducing()

        def failed(failure: Failure) -> None:
            release()
            if self.error is None:
                self.error = failure
                if failure.check(LocalWriteError):
                    # (A full disk, say: the fetch reports it in one line.)
                    self.log.warn("{error}", error=failure.getErrorMessage())
                else:
                    self.log.failure("writing {path} failed", failure, path=str(self.path))
                if self.on_error is not None:
                    self.on_error(failure)

        self._writes.submit(self._write_chunk, offset, chunks).addCallbacks(release, failed)
        self._hashes.submit(self._hash_chunk, chunks).addCallbacks(release, failed)

    def _write_chunk(self, offset: int, chunks: list[bytes]) -> None:
        """(Write queue.)"""
        if self.error is not None or self._file is None:
            return
        try:
            self.written += self._file.write(chunks, offset)
        except OSError as e:
            raise write_error(self.path, e)

    def _hash_chunk(self, chunks: list[bytes]) -> None:
        """(Hash queue.)"""
        for chunk in chunks:
            self._hasher.update(chunk)

    def finish(self) -> Deferred:
        """
        Write what is left, flush to disk and close.

        @return: Deferred firing C{(bytes written, sha256 hex)}, or failing
            with L{LocalWriteError}.
        """
        self._flush(last=True)

        def close() -> tuple[int, str]:
            if self.error is not None:
                self._close_quietly()
                self._raise()
            try:
                self._close_synced()
            except OSError as e:
                raise write_error(self.path, e)
            return self.written, self._hasher.hexdigest()

        return after_all([self._writes], self._hashes, close)

    def _raise(self) -> None:
        assert self.error is not None
        e = self.error.value
        if isinstance(e, LocalWriteError):
            raise e
        if isinstance(e, OSError):
            raise write_error(self.path, e)
        self.error.raiseException()

    def _close_synced(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.sync()
            finally:
                f.close()

    def _close_quietly(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError as e:
                self.log.warn("closing {path} failed: {e}", path=str(self.path), e=e)

    def discard(self) -> Deferred:
        """
        Stop writing, close and remove the part file.  Never fails.
        """
        self._buf = []
        self._buffered = 0
        if self.error is None:
            self.error = Failure(CancelledError("discarded"))

        def remove() -> None:
            self._close_quietly()
            unlink_quietly(self.path)

        def log_failure(failure: Failure) -> None:
            self.log.failure("removing {path} failed", failure, path=str(self.path))

        return after_all([self._writes], self._hashes, remove).addErrback(log_failure)


class DiskBudget:
    """
    How much a download of unknown size may still write: the free space of
    the repository's file system (C{statvfs}, in a thread) less a margin,
    read before the first byte and again at least every C{every} bytes and
    whenever half of what was left is used.  Bytes beyond what the last
    reading allowed fail the download at once (L{on_full}), before the
    disk is full.
    """

    def __init__(
        self,
        part: Path,
        settings: DownloadSettings,
        run_in_thread: Callable[..., Deferred],
    ) -> None:
        self._part = part
        self._settings = settings
        self._run = run_in_thread
        self.used = 0
        #: C{used} may reach this; None until the first reading.
        self._allowed: int | None = None
        self._next_check = 0
        self._checking = False
        self._free: int | None = None
        #: Called once with a L{NoSpaceLeft} when the budget is spent.
        self.on_full: Callable[[NoSpaceLeft], None] = lambda e: None
        self._full = False

    def check(self) -> Deferred:
        """
        Read the free space now.  @return: a Deferred firing None, or
        failing with L{NoSpaceLeft} if nothing may be written.
        """
        self._checking = True
        used = self.used
        d = self._run(self._settings.free_space, self._part.parent)

        def got(free: int | None) -> None:
            self._checking = False
            self._free = free
            if free is None:
                # (Unknown: the size limit still bounds the download.)
                self._allowed = None
                self._next_check = used + self._settings.free_check_bytes
                return
            room = free - self._settings.disk_margin
            self._allowed = used + max(room, 0)
            self._next_check = used + max(1, min(self._settings.free_check_bytes, room // 2))
            if room <= 0:
                raise self._error()

        return d.addCallback(got)

    def _error(self) -> NoSpaceLeft:
        return NoSpaceLeft(
            self._part,
            self._free,
            note=(
                f"this peer keeps {self._settings.disk_margin} bytes free when the source"
                " does not say how large the file is"
            ),
        )

    def add(self, n: int) -> None:
        """
        C{n} more bytes are about to be written.
        """
        self.used += n
        if self._full:
            return
        if self._allowed is not None and self.used > self._allowed:
            self._spent()
            return
        if self.used >= self._next_check and not self._checking:
            self.check().addErrback(self._check_failed)

    def _check_failed(self, failure: Failure) -> None:
        failure.trap(NoSpaceLeft)
        self._spent()

    def _spent(self) -> None:
        if not self._full:
            self._full = True
            self.on_full(self._error())


# -- the protocols -------------------------------------------------------------------


class _TransferProtocol(TimeoutMixin):
    """
    What both download protocols share: two one-shot signals, the sink, a
    stall timer, and pause/resume for backpressure.

    C{started} fires (None) on the first byte, at the end, or on failure:
    whatever comes first; C{done} fires the byte count or fails with a
    L{errors.TransferFailed}.
    """

    log = Logger()
    transport: Any

    def __init__(
        self,
        source: SourceInfo,
        sink: Callable[[bytes], None],
        progress: Callable[[int, int | None], None],
        clock: Any,
        stall_timeout: float = STALL_TIMEOUT,
    ) -> None:
        self.source = source
        self.sink = sink
        self.progress = progress
        self.received = 0
        self.expected: int | None = None
        self.callLater = clock.callLater
        self._stall = stall_timeout
        self.started: Deferred = Deferred(lambda d: self._abort())
        self.done: Deferred = Deferred()
        self._finished = False
        #: The download cap (set by L{Download}), and the size limit.
        self.bucket: TokenBucket | None = None
        self.max_size: int | None = None
        self.max_size_reason = ""
        self.reasons = PauseReasons(self._pause_transport, self._resume_transport)
        #: The minimum rate the source must keep (set by L{Download});
        #: checked from the first byte on.
        self.floor: RateFloor | None = None
        self._floor_call: Any = None

    def _check_rate(self) -> None:
        self._floor_call = None
        if self._finished or self.floor is None:
            return
        rate = self.floor.check()
        if rate is None:
            self._floor_call = self.callLater(max(1.0, self.floor.due_in()), self._check_rate)
            return
        self._fail(
            f"the source is too slow: {rate:.0f} bytes/s over {self.floor.window:g} s"
            f" (minimum {self.floor.rate:.0f})"
        )

    def _stop_floor(self) -> None:
        call, self._floor_call = self._floor_call, None
        if call is not None and call.active():
            call.cancel()

    def _abort(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def _signal_started(self) -> None:
        if not self.started.called:
            self.started.callback(None)

    def _succeed(self) -> None:
        if self._finished:
            return
        self._finished = True
        self.setTimeout(None)
        self._stop_floor()
        self._signal_started()
        self.done.callback(self.received)

    def _fail(self, reason: str | Exception) -> None:
        if self._finished:
            return
        self._finished = True
        self.setTimeout(None)
        self._stop_floor()
        exc = reason if isinstance(reason, Exception) else errors.TransferFailed(reason)
        self._signal_started()
        self.done.errback(exc)
        self._abort()

    def _take(self, data: bytes) -> None:
        """
        Count, forward to the sink and report progress.
        """
        self._signal_started()
        if not self.reasons.paused:
            self.resetTimeout()
        floor = self.floor
        if floor is not None and floor.enabled:
            if not self.received and self._floor_call is None and not self._finished:
                self._floor_call = self.callLater(max(1.0, floor.due_in()), self._check_rate)
            floor.moved(len(data))
        self.received += len(data)
        if self.max_size is not None and self.received > self.max_size:
            self._fail(
                errors.FileTooLarge(f"the source sent more than this peer accepts ({self.max_size_reason})")
            )
            return
        throttle_download(self.bucket, len(data), self.reasons)
        self.sink(data)
        try:
            self.progress(self.received, self.expected)
        except Exception:
            self.log.failure("progress callback failed")

    def timeoutConnection(self) -> None:
        self._fail(f"the source stalled: no data for {self._stall:g} s")

    # Backpressure: the writer pauses us (and the rate cap may too), which
    # pauses the transport until every reason is gone.
    def pauseProducing(self) -> None:
        self.reasons.add("disk")

    def resumeProducing(self) -> None:
        self.reasons.remove("disk")

    def _pause_transport(self) -> None:
        self.setTimeout(None)
        if self.floor is not None:
            self.floor.pause()
        if self.transport is not None:
            self.transport.pauseProducing()

    def _resume_transport(self) -> None:
        if self.floor is not None:
            self.floor.resume()
        if self._finished:
            return
        self.setTimeout(self._stall)
        if self.transport is not None:
            self.transport.resumeProducing()


class GetProtocol(_TransferProtocol, Int32StringReceiver):
    """
    Native download: send ``get``, read one header frame, then leave frame
    mode and count exactly ``length`` raw bytes (like
    C{LineReceiver.setRawMode}).
    """

    MAX_LENGTH = wire.MAX_REPLY_FRAME

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _TransferProtocol.__init__(self, *args, **kwargs)
        self.header: dict[str, Any] | None = None
        self._raw = False
        self._buffer = b""

    def connectionMade(self) -> None:
        self.setTimeout(self._stall)
        big_reads(self.transport, self.bucket)
        self.sendString(
            wire.encode({"action": "get", "fname": self.source.fname, "offset": 0, "length": None})
        )

    def dataReceived(self, data: bytes) -> None:
        if self._raw:
            self.rawDataReceived(data)
            return
        self._buffer += data
        while not self._raw and not self._finished and len(self._buffer) >= self.prefixLength:
            (length,) = struct.unpack(self.structFormat, self._buffer[: self.prefixLength])
            if length > self.MAX_LENGTH:
                self._fail(f"the source sent a {length}-byte frame")
                return
            end = self.prefixLength + length
            if len(self._buffer) < end:
                return
            frame, self._buffer = self._buffer[self.prefixLength : end], self._buffer[end:]
            self.stringReceived(frame)
        if self._raw and self._buffer:
            rest, self._buffer = self._buffer, b""
            self.rawDataReceived(rest)

    def setRawMode(self) -> None:
        self._raw = True

    def stringReceived(self, frame: bytes) -> None:
        self.resetTimeout()
        try:
            message = wire.decode(frame)
        except wire.WireError as e:
            self._fail(f"the source sent a bad frame ({e.message})")
            return
        status = message.get("status")
        text = message.get("message") if isinstance(message.get("message"), str) else ""
        if status == wire.BUSY:
            self._fail(errors.Busy(f"busy ({text})" if text else "busy"))
        elif status == wire.ERROR:
            self._fail(f"refused: {text or message.get('code') or 'error'}")
        elif status == wire.SUCCESS:
            self._header(message)
        else:
            self._fail(f"unexpected answer {str(status)[:40]!r}")

    def _header(self, message: dict[str, Any]) -> None:
        length = message.get("length")
        size = message.get("file_size")
        sha = message.get("sha256")
        ok_int = lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # noqa: E731
        if not (ok_int(length) and ok_int(size) and message.get("offset", 0) == 0 and length == size):
            self._fail("the source sent a bad header")
            return
        if sha != self.source.sha256 or (
            self.source.file_size is not None and size != self.source.file_size
        ):
            self._fail("the source now has different content than it published")
            return
        self.header = message
        self.expected = length
        self.setRawMode()
        if length == 0:
            self._succeed()

    def rawDataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        assert self.expected is not None
        room = self.expected - self.received
        if len(data) > room:
            self._fail("the source sent more bytes than announced")
            return
        self._take(data)
        if self.received == self.expected:
            self._succeed()
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure = None) -> None:
        self.setTimeout(None)
        if self.header is None:
            self._fail("the source closed the connection without answering")
        else:
            self._fail(f"the connection was lost after {self.received} of {self.expected} bytes")


class SeedGetProtocol(_TransferProtocol, Protocol):
    """
    Seed-protocol download: send ``get_file`` with the source's ``lname``
    and read raw bytes until the source closes.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        _TransferProtocol.__init__(self, *args, **kwargs)
        self.expected = self.source.file_size

    def connectionMade(self) -> None:
        self.setTimeout(self._stall)
        big_reads(self.transport, self.bucket)
        frame = wire.encode({"action": "get_file", "lname": self.source.lname})
        self.transport.write(struct.pack("!I", len(frame)) + frame)

    def dataReceived(self, data: bytes) -> None:
        if self._finished:
            return
        if self.expected is not None and self.received + len(data) > self.expected:
            self._fail("the source sent more bytes than published")
            return
        self._take(data)

    def connectionLost(self, reason: Failure = None) -> None:
        self.setTimeout(None)
        clean = reason is None or reason.check(ConnectionDone) is not None
        if self.received == 0 and self.expected != 0:
            self._fail("the source closed without sending anything (busy, or the name is unknown there)")
        elif self.expected is not None and self.received != self.expected:
            self._fail(f"the connection closed after {self.received} of {self.expected} bytes")
        elif self.expected is None and not clean:
            self._fail(f"the connection was lost after {self.received} bytes")
        else:
            self._succeed()


class _Prebuilt(Factory):
    """
    Hands out one prepared protocol (we connect to an IP address, so there
    is a single connection attempt).
    """

    noisy = False

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Any:
        self._protocol.factory = self
        return self._protocol


# -- the download ------------------------------------------------------------------


@dataclass(frozen=True)
class FetchResult:
    """
    What a successful fetch produced.
    """

    fname: str
    path: str
    size: int
    sha256: str
    #: False when the bytes came from a seed source (no SHA-256 to check).
    verified: bool
    source: SourceInfo
    #: C{(source label, reason)} for every failed attempt before success.
    failures: tuple[tuple[str, str], ...] = ()
    elapsed: float = 0.0
    #: Set by the node: the tracker was told we now share the file.
    published: bool = False
    replaced: bool = False
    #: Multi-source downloads: C{(hostname, pieces)} for every source that
    #: delivered pieces, most first; the piece count; the bytes that were
    #: already on disk (resumed); the verified piece list.
    contributors: tuple[tuple[str, int], ...] = ()
    #: The key fingerprint of each contributor, in the same order (None:
    #: an unauthenticated source, whose hostname proves nothing).
    contributor_keys: tuple[str | None, ...] = ()
    piece_count: int = 0
    resumed: int = 0
    pieces: Any = None


@dataclass
class _Attempt:
    source: SourceInfo
    size: int
    sha256: str


@dataclass
class DownloadSettings:
    ttfb_timeout: float = 2.0
    stall_timeout: float = STALL_TIMEOUT
    busy_delays: Sequence[float] = BUSY_DELAYS
    chunk_size: int = WRITE_CHUNK
    max_pending: int = MAX_PENDING
    jitter: Callable[[], float] = field(default=random.random)
    #: Multi-source downloads: received bytes that may wait for the writer
    #: threads before the sources are paused (at least four pieces).
    swarm_pending: int = 16 * 1024 * 1024
    #: Multi-source downloads (docs/swarm.md): sources at once, piece
    #: requests in flight per source, copies of one piece in the endgame.
    max_sources: int = 4
    pipeline: int = 4
    endgame_copies: int = 2
    #: Failed connections (without a verified piece between them) before a
    #: source is no longer used for the file, and the base delay between
    #: attempts (times the number of failures).
    source_retries: int = 3
    retry_delay: float = 1.0
    #: Record the verified pieces at most this often, or after this many.
    checkpoint_interval: float = 0.5
    checkpoint_pieces: int = 64
    #: Refuse files larger than this (``--max-file-size``); None: no limit
    #: but L{unsized_max_file_size} for a source that publishes no size.
    max_file_size: int | None = None
    #: A source that publishes no size (a seed source): the most bytes
    #: taken from it without ``--max-file-size``, the bytes left free on
    #: the disk, the most bytes between two checks of the free space, and
    #: how the free space is read (blocking: run in a thread).
    unsized_max_file_size: int = UNSIZED_MAX_FILE_SIZE
    disk_margin: int = DISK_MARGIN
    free_check_bytes: int = FREE_CHECK_BYTES
    free_space: Callable[[Path], "int | None"] = field(default=free_bytes)
    #: After its grace (from the connection), a source connection must
    #: deliver at least this many bytes per second over each window in
    #: which this peer did not hold it back (its cap, its disk), else it
    #: is closed as failed and another source takes its place (0: off).
    #: Whole-file downloads check it from the first byte on.
    min_source_rate: float = 4 * 1024
    source_rate_grace: float = 10.0
    source_rate_window: float = 20.0


class _Fetch:
    """
    What both kinds of download (L{Download}, L{swarm.SwarmDownload}) are
    given: the name, the repository, how to connect and run blocking work,
    the peer's slots, transfer table, settings and download cap.

    @param connect: C{connect(ip, port, factory) -> Deferred[protocol]};
        production uses C{HostnameEndpoint(reactor, ip, port)}.
    @param bucket: the peer's download cap (``--download-rate``), or None.
    """

    log = Logger()

    def __init__(
        self,
        fname: str,
        repo: Path,
        *,
        connect: Connect,
        clock: Any,
        run_in_thread: Callable[..., Deferred],
        slots: Slots,
        transfers: Transfers,
        settings: DownloadSettings | None = None,
        force: bool = False,
        progress: Progress | None = None,
        bucket: TokenBucket | None = None,
    ) -> None:
        self.fname = fname
        self.repo = Path(repo)
        self.final = self.repo / fname
        self.part = self.repo / part_name(fname)
        self._connect = connect
        self._clock = clock
        self._run = run_in_thread
        self._slots = slots
        self._transfers = transfers
        self.settings = settings or DownloadSettings()
        self.force = force
        self._progress = progress or (lambda done, total: None)
        self.bucket = bucket
        #: C{(source label, reason)} of each failed attempt, in order.
        self.failures: list[tuple[str, str]] = []


class Download(_Fetch):
    """
    Fetch C{fname} from C{sources} (whole files, one source at a time) into
    C{repo}.
    """

    def __init__(self, fname: str, sources: Sequence[SourceInfo], repo: Path, **kwargs: Any) -> None:
        _Fetch.__init__(self, fname, repo, **kwargs)
        self.sources = list(sources)
        #: The part file's device and inode (only it is moved into place).
        self._identity: tuple[int, int] | None = None

    def run(self) -> Deferred:
        """
        @return: Deferred firing a L{FetchResult}, or failing with
            L{errors.AlreadyExists}, L{errors.TransferFailed} (every source
            failed; the message lists why) or L{LocalWriteError}.
        """
        return Deferred.fromCoroutine(self._run_all())

    async def _run_all(self) -> FetchResult:
        started = self._clock.seconds()
        if not self.force and os.path.lexists(self.final):
            raise errors.AlreadyExists(f"{self.final} already exists; use --force to replace it")
        queue = list(self.sources)
        busy: list[SourceInfo] = []
        rounds = 0
        while True:
            while queue:
                source = queue.pop(0)
                try:
                    attempt = await self._attempt(source)
                except errors.Busy as e:
                    self._record(source, str(e))
                    busy.append(source)
                    continue
                except NoSpaceLeft as e:
                    # (The attempt removed the part file.)
                    raise e.fetching(self.fname)
                except LocalWriteError:
                    raise
                except errors.TransferFailed as e:
                    self._record(source, str(e))
                    continue
                replaced = await self._install()
                return FetchResult(
                    fname=self.fname,
                    path=str(self.final),
                    size=attempt.size,
                    sha256=attempt.sha256,
                    verified=not source.seed,
                    source=source,
                    failures=tuple(self.failures),
                    elapsed=self._clock.seconds() - started,
                    replaced=replaced,
                )
            if not busy or rounds >= len(self.settings.busy_delays):
                break
            delay = self.settings.busy_delays[rounds] * (0.5 + self.settings.jitter())
            rounds += 1
            self.log.info(
                "{n} busy source(s) for {fname}; retrying in {delay:.2f} s",
                n=len(busy),
                fname=self.fname,
                delay=delay,
            )
            await deferLater(self._clock, delay, lambda: None)
            queue, busy = busy, []
        raise errors.TransferFailed(self._summary())

    def _record(self, source: SourceInfo, reason: str) -> None:
        self.log.info(
            "fetching {fname} from {source} failed: {reason}",
            fname=self.fname,
            source=source.label,
            reason=reason,
        )
        self.failures.append((source.label, reason))

    def _summary(self) -> str:
        return summarize_failures(self.fname, self.failures)

    async def _attempt(self, source: SourceInfo) -> _Attempt:
        slot = await self._slots.acquire(DOWN)
        try:
            writer = PartWriter(self.part, self._run, self.settings.chunk_size, self.settings.max_pending)
            await writer.open()
            self._identity = writer.identity
            transfer = self._transfers.start(DOWN, self.fname, source.label, source.file_size)
            try:
                size, digest = await self._receive(source, writer, transfer)
            except BaseException as e:
                transfer.finish(f"failed: {e}")
                await writer.discard()
                raise
            transfer.finish("done")
            return _Attempt(source, size, digest)
        finally:
            slot.release()

    async def _receive(self, source: SourceInfo, writer: PartWriter, transfer: Any) -> tuple[int, str]:
        budget: DiskBudget | None = None
        if source.file_size is None:
            # A source that publishes no size could send until the disk is
            # full: bounded by a size limit and by the free space.
            budget = DiskBudget(self.part, self.settings, self._run)
            await budget.check()

        def sink(data: bytes) -> None:
            transfer.add(len(data))
            if budget is not None:
                budget.add(len(data))
                if protocol._finished:
                    return
            writer.write(data)

        def progress(done: int, total: int | None) -> None:
            transfer.total = total
            self._progress(done, total)

        kind = SeedGetProtocol if source.seed else GetProtocol
        protocol = kind(source, sink, progress, self._clock, self.settings.stall_timeout)
        protocol.bucket = self.bucket
        settings = self.settings
        protocol.floor = RateFloor(
            settings.min_source_rate, self._clock, settings.source_rate_grace, settings.source_rate_window
        )
        protocol.max_size = self.settings.max_file_size
        protocol.max_size_reason = f"--max-file-size {protocol.max_size}"
        if budget is not None:
            budget.on_full = protocol._fail
            if protocol.max_size is None:
                protocol.max_size = self.settings.unsized_max_file_size
                protocol.max_size_reason = (
                    f"{protocol.max_size} bytes from a source that does not say how large the file is;"
                    " --max-file-size sets the limit"
                )
        writer.on_error = lambda failure: protocol._fail(
            failure.value
            if isinstance(failure.value, LocalWriteError)
            else LocalWriteError(f"cannot write {self.part}: {failure.getErrorMessage()}")
        )

        async def first_byte() -> None:
            await self._connect(source.ip, source.port, _Prebuilt(protocol))
            writer.producer = protocol
            await protocol.started

        waiting = Deferred.fromCoroutine(first_byte())
        waiting.addTimeout(self.settings.ttfb_timeout, self._clock)
        try:
            await waiting
        except DeferredTimeout:
            protocol.done.addErrback(lambda f: None)
            protocol._fail("timeout")
            raise errors.TransferFailed(f"no data within {self.settings.ttfb_timeout:g} s")
        except (errors.P2PError, CancelledError):
            protocol.done.addErrback(lambda f: None)
            raise
        except Exception as e:
            protocol.done.addErrback(lambda f: None)
            raise errors.TransferFailed(f"cannot connect ({first_line(e)})")
        await protocol.done
        size, digest = await writer.finish()
        if protocol.expected is not None and size != protocol.expected:
            raise errors.VerificationFailed(
                f"got {size} bytes, expected {protocol.expected}"
            )
        if not source.seed and digest != source.sha256:
            raise errors.VerificationFailed(
                f"the bytes do not match the published SHA-256 ({digest[:12]} != {source.sha256[:12]})"
            )
        return size, digest

    async def _install(self) -> bool:
        """
        Move the verified part into place.  @return: True when an existing
        file was replaced (only with force).
        """
        return await self._run(install, self.part, self.final, self.force, False, self._identity)
