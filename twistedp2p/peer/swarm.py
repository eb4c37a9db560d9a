"""
Multi-source downloads (``docs/swarm.md``).

L{plan_swarm} picks the content root a fetch follows (a pure function).
L{SwarmDownload} fetches the file in pieces from up to C{max_sources}
sources at once, several pipelined ``get`` requests per connection
(L{PieceConnection}); every piece is checked against the piece list (which
itself must hash to the root) before one writer thread puts it in place in
the preallocated ``.part`` file (L{PieceWriter}).  Which pieces are safely
on disk is recorded beside it in ``.FNAME.part.json`` (L{PartState}), so an
interrupted download resumes where it stopped.  The whole-file SHA-256 is
checked too before the file is moved into place.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from collections import Counter, deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from twisted.internet.defer import CancelledError, Deferred, TimeoutError as DeferredTimeout, succeed
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from twistedp2p import errors, wire
from twistedp2p.peer.download import (
    Connect,
    Download,
    DownloadSettings,
    FetchResult,
    Progress,
    SourceInfo,
    _Fetch,
    _Prebuilt,
    big_reads,
)
from twistedp2p.peer.partfile import (
    DIRECT_ALIGN,
    LocalWriteError,
    NoSpaceLeft,
    PartFile,
    SerialWorker,
    _hidden,
    after_all,
    first_line,
    install,
    part_name,
    summarize_failures,
    unlink_quietly,
    write_atomically,
    write_error,
)
from twistedp2p.peer.pieces import (
    MAX_PIECES,
    PieceList,
    bitmap_decode,
    bitmap_encode,
    piece_count,
    piece_size_problem,
)
from twistedp2p.peer.ratelimit import PauseReasons, TokenBucket, throttle_download
from twistedp2p.peer.slots import DOWN, RateFloor, Slot, Slots
from twistedp2p.peer.transfers import Transfers

STATE_VERSION = 1
#: Bytes a source connection reads at a time (without a download cap).
READ_SIZE = 1024 * 1024
#: Bytes of a piece a source connection collects before handing them to
#: the writer (pieces stream to disk: never held whole).
WRITE_BATCH = 1024 * 1024
#: Written bytes between two flushes of the part file to disk.
SYNC_BYTES = 32 * 1024 * 1024
#: Largest piece count a download accepts from a tracker answer (memory
#: for the piece list and the bitmaps stays small).
MAX_ACCEPTED_PIECES = 4 * MAX_PIECES


class BadSource(errors.TransferFailed):
    """the source sent data that does not match the published hashes"""


class PieceMismatch(BadSource):
    """
    A piece does not match the piece list followed.  Proof against its
    source only when that source published the list's root (it vouched
    for the list); a source that published no root is merely set aside.
    """


# -- which content ----------------------------------------------------------------------


@dataclass(frozen=True)
class RootGroup:
    """
    The sources that published one root (with its piece size) for a
    content: they vouch for the piece list that hashes to it.
    """

    root: str
    piece_size: int
    sources: tuple[SourceInfo, ...]


@dataclass(frozen=True)
class SwarmPlan:
    """
    What a multi-source fetch follows: the size and SHA-256 of the content,
    the roots published for it (L{RootGroup}s, in the order they are
    tried: the first is followed until it is proven false or its sources
    are gone), the native sources that published no root (asked for byte
    ranges only, checked against the root being followed), and the sources
    refused outright (a piece size other than the rule's).
    """

    size: int
    sha256: str
    groups: tuple[RootGroup, ...]
    others: tuple[SourceInfo, ...] = ()
    refused: tuple[SourceInfo, ...] = ()

    @property
    def root(self) -> str:
        return self.groups[0].root

    @property
    def piece_size(self) -> int:
        return self.groups[0].piece_size

    @property
    def listed(self) -> tuple[SourceInfo, ...]:
        """The sources of the root followed now."""
        return self.groups[0].sources

    @property
    def sources(self) -> tuple[SourceInfo, ...]:
        return self.listed + self.others

    def next_root(self) -> "SwarmPlan | None":
        """
        The plan without the root followed now (None when it was the last).
        """
        if len(self.groups) < 2:
            return None
        return replace(self, groups=self.groups[1:])


def plan_swarm(sources: Sequence[SourceInfo], prefer_root: str | None = None) -> SwarmPlan | None:
    """
    Group the native sources of one content (as L{choose_sources} returns
    them) by the root they publish, in the order to try: C{prefer_root} (a
    partial download's) first, then by the number of sources (ties: the
    tracker's order).  Majority only orders the tries: a root is given up
    when the whole file it leads to does not match the published SHA-256
    (L{SwarmDownload}), and the next is tried.

    A source whose piece size is not the one L{piece_size_for} gives for
    the size is refused (never used).  None when no source publishes a
    usable root (the fetch then downloads whole files).

    @raise errors.NoSources: every native source was refused.
    """
    natives = [s for s in sources if not s.seed and s.file_size is not None]
    refused = tuple(
        s
        for s in natives
        if s.root is not None and s.piece_size is not None and piece_size_problem(s.file_size or 0, s.piece_size)
    )
    rooted = [s for s in natives if s.root is not None and s.piece_size is not None and s not in refused]
    others = tuple(s for s in natives if s.root is None)
    if refused and not rooted and not others:
        first = refused[0]
        raise errors.NoSources(
            f"no usable source of {first.fname}: "
            + ", ".join(dict.fromkeys(s.label for s in refused))
            + f" publish{'es' if len(refused) == 1 else ''} a piece list with the wrong piece size: "
            + str(piece_size_problem(first.file_size or 0, first.piece_size or 0))
        )
    if not rooted:
        return None
    counts = Counter((s.root, s.piece_size) for s in rooted)
    order = {k: n for n, k in enumerate(counts)}
    keys = sorted(counts, key=lambda k: (k[0] != prefer_root, -counts[k], order[k]))
    groups = tuple(
        RootGroup(root, piece_size, tuple(s for s in rooted if (s.root, s.piece_size) == (root, piece_size)))
        for root, piece_size in keys
    )
    first = groups[0].sources[0]
    assert first.file_size is not None and first.sha256 is not None
    return SwarmPlan(first.file_size, first.sha256, groups, others, refused)


# -- the resume state --------------------------------------------------------------------


def state_name(fname: str) -> str:
    """
    The hidden name of a partial download's state file.
    """
    return _hidden(fname, ".part.json")


@dataclass(frozen=True)
class PartState:
    """
    What a partial download keeps beside its ``.part`` file: the content it
    follows and which pieces are verified and durable on disk.
    """

    fname: str
    root: str
    piece_size: int
    size: int
    sha256: str
    have: frozenset[int]

    @property
    def count(self) -> int:
        return piece_count(self.size, self.piece_size)

    def have_bytes(self) -> int:
        last = self.count - 1
        tail = self.size - last * self.piece_size if self.count else 0
        return sum(tail if i == last else self.piece_size for i in self.have)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "fname": self.fname,
            "root": self.root,
            "piece_size": self.piece_size,
            "size": self.size,
            "sha256": self.sha256,
            "pieces": self.count,
            "have": bitmap_encode(self.have, self.count),
        }

    @classmethod
    def from_json(cls, data: Any) -> "PartState":
        """
        @raise ValueError: naming what is wrong.
        """
        if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
            raise ValueError("not a partial-download state of a known version")
        fname = data.get("fname")
        problem = wire.fname_problem(fname)
        if problem is not None:
            raise ValueError(f"bad name: {problem}")
        try:
            size = wire.size("size", data.get("size"))
            piece_size = wire.piece_size("piece_size", data.get("piece_size"))
        except wire.WireError as e:
            raise ValueError(e.message)
        root, sha = data.get("root"), data.get("sha256")
        if not (wire.is_sha256(root) and wire.is_sha256(sha)):
            raise ValueError("root and sha256 must be 64 lowercase hex digits")
        problem = piece_size_problem(size, piece_size)
        if problem is not None:
            raise ValueError(problem)
        count = piece_count(size, piece_size)
        if count > MAX_ACCEPTED_PIECES or data.get("pieces") != count:
            raise ValueError("the piece count does not match the size")
        have = data.get("have")
        if not isinstance(have, str):
            raise ValueError("have must be a hex bitmap")
        return cls(fname, root, piece_size, size, sha, frozenset(bitmap_decode(have, count)))


def read_state(path: Path) -> PartState | None:
    """
    Read a state file (blocking).  @return: None when there is none.
    @raise ValueError: for a file that is not a valid state.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("not JSON")
    return PartState.from_json(data)


def write_state(path: Path, state: PartState) -> None:
    """
    Replace the state file atomically (blocking): temp file, fsync, rename.
    """
    write_atomically(path, json.dumps(state.to_json(), sort_keys=True).encode("utf-8"), sync_dir=False)


def find_states(repo: Path) -> list[tuple[Path, PartState | str]]:
    """
    Every partial-download state file in C{repo} and its folders (not the
    hidden ones, not through symbolic links; blocking): C{(path, state)},
    or C{(path, why it is unusable)}.
    """
    found: list[tuple[Path, PartState | str]] = []
    for name in _state_files(repo):
        path = repo / name
        try:
            state = read_state(path)
        except (OSError, ValueError) as e:
            found.append((path, str(e)))
            continue
        if state is not None:
            if state_name(state.fname) != name:
                found.append((path, "its name does not match the file it describes"))
                continue
            found.append((path, state))
    return found


def _state_files(repo: Path) -> list[str]:
    """
    The names (relative to C{repo}, C{/}-separated) of the files that look
    like partial-download states, sorted.
    """
    names: list[str] = []
    for top, dirs, files in os.walk(repo):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        folder = os.path.relpath(top, repo)
        prefix = "" if folder == "." else folder.replace(os.sep, "/") + "/"
        names.extend(prefix + f for f in files if f.startswith(".") and f.endswith(".part.json"))
    return sorted(names)


# -- the writer threads ------------------------------------------------------------------


class PieceWriter:
    """
    The ``.part`` file and its state, worked on by serial queues of thread
    jobs (through C{run_in_thread}) that run side by side:

      - I{writes}: checks each piece against its SHA-256 and writes it in
        place (the only writer; a piece that does not match is never
        written);
      - I{hashes}: feeds the whole-file SHA-256 in piece order.  A piece
        that arrives in order (always, from a single source) is hashed from
        memory at once, in parallel with its check and write; a piece that
        arrives ahead of the prefix is read back from the file once it is
        written.  Should a piece hashed from memory then fail its check,
        the whole-file hash is computed again from the file at the end;
      - I{syncs}: flushes written data to disk every L{SYNC_BYTES}, so that
        the final fsync before the rename has little left to do;
      - I{states}: checkpoints, written atomically.  The pieces a state
        claims are hashed again when a download resumes, so a checkpoint
        needs no fsync of the part file, and it never holds up the writes.

    The order of pieces fed to the whole-file hash is decided on the
    reactor thread (L{_hash_next}, L{_ready}); the thread side only counts.
    """

    log = Logger()

    def __init__(
        self,
        part: Path,
        state_path: Path,
        pieces: PieceList,
        run_in_thread: Callable[..., Deferred],
        check_pieces: bool = True,
    ) -> None:
        self.part = part
        #: Check each piece against its SHA-256 before writing it.  Without
        #: it (a download with a single source: see L{SwarmDownload}) only
        #: the whole-file SHA-256 vouches for the bytes, so every byte is
        #: hashed once rather than twice.
        self.check_pieces = check_pieces
        self.state_path = state_path
        self.pieces = pieces
        self._writes = SerialWorker(run_in_thread)
        self._hashes = SerialWorker(run_in_thread)
        self._syncs = SerialWorker(run_in_thread)
        self._states = SerialWorker(run_in_thread)
        self._unsynced = 0
        self._syncing = False
        #: The first failure of a flush along the way (then L{finish}
        #: fails with it), and who is told of it at once.
        self.sync_error: Failure | None = None
        self.on_error: Callable[[Failure], None] | None = None
        self._direct = False
        self._file: PartFile | None = None
        # Reactor side: the next piece the whole-file hash needs, and the
        # written pieces beyond it.
        self._hash_next = 0
        self._ready: set[int] = set()
        # The piece whose chunks feed the whole-file hash as they come, and
        # whether each piece streaming now does.
        self._feeding: int | None = None
        self._streaming: dict[int, bool] = {}
        # Set on the reactor thread when a piece hashed from memory turned
        # out bad (read by the final job, after every hash job): the
        # whole-file hash is then computed from the file at the end.
        self._tainted = False
        # Touched only by the jobs of the hash queue:
        self._whole = hashlib.sha256()
        self._snapshot: Any = None
        self._prefix = 0
        # Touched only by the jobs of the write queue: each streaming
        # piece's SHA-256 so far.
        self._piece_hashes: dict[int, Any] = {}

    def _last(self, work: Callable[..., Any], *args: Any) -> Deferred:
        """
        Run C{work} (on the hash queue) once everything queued so far is
        done, the jobs that pending writes add to the other queues included.
        """
        return after_all([self._writes, self._syncs, self._states], self._hashes, work, *args)

    # -- jobs --------------------------------------------------------------------

    def open(self, claimed: Iterable[int]) -> Deferred:
        """
        Open (or create) the part file at its full size and check the
        pieces a previous run claimed.  @return: Deferred firing the set of
        pieces that are really there.
        """
        d = self._writes.submit(self._open, sorted(claimed))

        def hash_prefix(good: set[int]) -> set[int]:
            # (Direct writes leave little for the periodic flushes to do.)
            self._direct = self._file is not None and self._file.direct
            self._ready.update(good)
            self._advance()
            return good

        return d.addCallback(hash_prefix)

    def _open(self, claimed: list[int]) -> set[int]:
        try:
            self._file = PartFile(self.part, os.O_RDWR | os.O_CREAT)
        except OSError as e:
            raise write_error(self.part, e)
        fd = self._file.fd
        try:
            if not claimed:
                os.ftruncate(fd, 0)
            if os.fstat(fd).st_size != self.pieces.size:
                os.ftruncate(fd, self.pieces.size)
        except OSError as e:
            raise write_error(self.part, e)
        good = set()
        for index in claimed:
            h = hashlib.sha256()
            if self._read_piece(index, h.update) and h.digest() == self.pieces.digests[index]:
                good.add(index)
        return good

    def _read_piece(self, index: int, sink: Callable[[bytes], Any]) -> bool:
        """
        (A thread.)  Feed piece C{index}, read back from the part file in
        blocks of L{READ_SIZE} (never a whole piece in memory), to C{sink}.
        @return: False when the file is short.
        """
        offset, length = self.pieces.span(index)
        assert self._file is not None
        while length:
            block = os.pread(self._file.fd, min(READ_SIZE, length), offset)
            if not block:
                return False
            sink(block)
            offset += len(block)
            length -= len(block)
        return True

    # -- a piece, streamed ------------------------------------------------------
    #
    # A piece arrives as batches of chunks (L{begin}, L{data}..., L{end}, or
    # L{abort} when its connection is lost half way): each batch is written
    # in place at once while the piece's SHA-256 is computed incrementally
    # on the same queue, so no piece is ever held whole in memory.  Only one
    # copy of a piece is streamed at a time (the download makes sure).

    def begin(self, index: int) -> None:
        """
        A piece starts arriving.  When it is the next one the whole-file
        hash needs, that hash is fed from its chunks as they come.
        """
        feed = not self._tainted and self._feeding is None and index == self._hash_next
        self._streaming[index] = feed
        if feed:
            self._feeding = index
            self._hashes.submit(self._hash_begin).addErrback(self._hash_failed)

    def data(self, index: int, chunks: list[Any], offset: int) -> Deferred:
        """
        The next bytes of piece C{index} (C{offset} within the piece).
        @return: a Deferred firing once C{chunks} are no longer needed
            (written, and hashed into the whole file when fed from memory);
            it fails on a write error.
        """
        start, _ = self.pieces.span(index)
        written = self._writes.submit(self._write_chunks, index, chunks, start + offset)
        if not self._streaming.get(index):
            return written
        # (Hash failures are logged and taint the whole-file hash: only a
        # write failure fails the batch.)
        hashed = self._hashes.submit(self._hash_chunks, chunks).addErrback(self._hash_failed)
        released: Deferred = Deferred()
        left = [2]
        failed: list[Failure] = []

        def one(result: Any) -> None:
            if isinstance(result, Failure):
                failed.append(result)
            left[0] -= 1
            if not left[0]:
                if failed:
                    released.errback(failed[0])
                else:
                    released.callback(None)

        written.addBoth(one)
        hashed.addBoth(one)
        return released

    def end(self, index: int, size: int) -> Deferred:
        """
        The last bytes of piece C{index} were given.  @return: a Deferred
        firing True (it matches its SHA-256: written and counted) or False
        (it does not; its bytes on disk are overwritten by the next copy).
        """
        fed = self._streaming.pop(index, False)
        if fed:
            self._feeding = None
            self._hash_next = index + 1
            self._hashes.submit(self._hash_end).addErrback(self._hash_failed)
        checked = self._writes.submit(self._write_end, index)

        def then(ok: Any) -> Any:
            if ok is True:
                self._unsynced += size
                if self._unsynced >= SYNC_BYTES and not self._syncing and not self._direct:
                    self._unsynced = 0
                    self._syncing = True
                    syncing = self._syncs.submit(self._sync)
                    syncing.addErrback(self._sync_failed)
                    syncing.addBoth(self._synced)
                if not fed and index >= self._hash_next:
                    self._ready.add(index)
            elif fed:
                # A bad piece went into the whole-file hash: it is computed
                # again from the file at the end.
                self._tainted = True
            self._advance()
            return ok

        return checked.addCallback(then)

    def abort(self, index: int) -> None:
        """
        Piece C{index} stops half way (its connection is gone): forget its
        hash; the whole-file hash goes back to where it was before it.
        """
        fed = self._streaming.pop(index, False)
        self._writes.submit(self._write_abort, index)
        if fed:
            self._feeding = None
            self._hashes.submit(self._hash_rollback).addErrback(self._hash_failed)
            self._advance()

    def write(self, index: int, data: Any) -> tuple[Deferred, Deferred]:
        """
        A whole piece at once (L{begin}, L{data}, L{end}).

        @param data: the piece's bytes, or a list of bytes-like chunks.
        @return: two Deferreds: the first fires True (written) or False (it
            does not match its hash); the second fires None once C{data} is
            no longer needed.
        """
        chunks = [data] if isinstance(data, (bytes, bytearray, memoryview)) else list(data)
        self.begin(index)
        released = self.data(index, chunks, 0)
        written = self.end(index, sum(len(c) for c in chunks))
        released.addErrback(lambda _: None)
        return written, released

    def _hash_failed(self, failure: Failure) -> None:
        self._tainted = True
        self.log.failure("hashing {part}", failure, part=str(self.part))

    def _advance(self) -> None:
        """
        Feed the whole-file hash with the written pieces that now follow
        its prefix (read back from the file), unless a piece is being fed
        from memory.
        """
        if self._tainted:
            self._ready.clear()
            return
        while self._feeding is None and self._hash_next in self._ready:
            self._ready.discard(self._hash_next)
            self._hashes.submit(self._hash_written, self._hash_next).addErrback(self._hash_failed)
            self._hash_next += 1

    # (The write queue's jobs.)

    def _write_chunks(self, index: int, chunks: list[Any], offset: int) -> None:
        if self.check_pieces:
            h = self._piece_hashes.get(index)
            if h is None:
                h = self._piece_hashes[index] = hashlib.sha256()
            for c in chunks:
                h.update(c)
        assert self._file is not None
        try:
            self._file.write(chunks, offset)
        except OSError as e:
            raise write_error(self.part, e)

    def _write_end(self, index: int) -> bool:
        h = self._piece_hashes.pop(index, None)
        if not self.check_pieces:
            return True
        digest = (h or hashlib.sha256()).digest()
        return digest == self.pieces.digests[index]

    def _write_abort(self, index: int) -> None:
        self._piece_hashes.pop(index, None)

    def _sync(self) -> None:
        """
        (Sync queue.)  Flush what is written so far (it may run while the
        writer writes further pieces).
        """
        f = self._file
        if f is not None:
            try:
                os.fdatasync(f.fd)
            except OSError as e:
                # (Some file systems report a full disk only here.)
                raise write_error(self.part, e)

    def _synced(self, _: Any) -> None:
        self._syncing = False

    def _sync_failed(self, failure: Failure) -> None:
        """
        A flush along the way failed: the bytes written may not be on disk,
        so the download fails as for a failed write (L{on_error}: for a
        full disk, the one-line L{NoSpaceLeft}), and so would L{finish}.
        """
        if not failure.check(LocalWriteError):
            self.log.failure("flushing {part}", failure, part=str(self.part))
            failure = Failure(LocalWriteError(f"cannot write {self.part}: {failure.getErrorMessage()}"))
        if self.sync_error is None:
            self.sync_error = failure
        if self.on_error is not None:
            self.on_error(failure)
        else:
            self.log.warn("flushing {part} failed: {error}", part=str(self.part), error=failure.getErrorMessage())

    # (The hash queue's jobs.)

    def _hash_begin(self) -> None:
        self._snapshot = self._whole.copy()

    def _hash_chunks(self, chunks: list[Any]) -> None:
        for c in chunks:
            self._whole.update(c)

    def _hash_end(self) -> None:
        self._prefix += 1

    def _hash_rollback(self) -> None:
        if self._snapshot is not None:
            self._whole = self._snapshot
            self._snapshot = None

    def _hash_written(self, index: int) -> None:
        """(Hash queue.)  The next piece, read back from the file."""
        if not self._read_piece(index, self._whole.update):
            raise LocalWriteError(f"{self.part} is shorter than expected")
        self._prefix += 1

    def checkpoint(self, state: PartState) -> Deferred:
        """
        Record C{state} (its pieces are written already).
        """
        return self._states.submit(self._checkpoint, state)

    def _checkpoint(self, state: PartState) -> None:
        # No fsync of the part file here (it would stall the writes for as
        # long as the disk takes): a resumed download hashes every piece the
        # state claims before trusting it, so a piece lost with the page
        # cache (power loss) is simply fetched again.
        write_state(self.state_path, state)

    def finish(self) -> Deferred:
        """
        Flush and close.  @return: Deferred firing the whole-file SHA-256.
        """
        return self._last(self._finish)

    def _finish(self) -> str:
        if self.sync_error is not None:
            self.sync_error.raiseException()
        if self._prefix != self.pieces.count and not self._tainted:
            raise LocalWriteError(f"{self.part} is missing pieces")
        f, self._file = self._file, None
        assert f is not None or not self.pieces.count
        if f is None:
            return self._whole.hexdigest()
        try:
            if self._tainted:
                # A bad piece went into the hash: hash the file as written.
                self._whole = hashlib.sha256()
                offset = 0
                while offset < self.pieces.size:
                    block = os.pread(f.fd, min(READ_SIZE, self.pieces.size - offset), offset)
                    if not block:
                        raise LocalWriteError(f"{self.part} is shorter than expected")
                    self._whole.update(block)
                    offset += len(block)
            f.sync()
        finally:
            f.close()
        return self._whole.hexdigest()

    def close(self, state: PartState | None) -> Deferred:
        """
        Record C{state} (when given) and close, keeping the files.  Never
        fails (a failure is logged).
        """

        def work() -> None:
            try:
                if state is not None:
                    self._checkpoint(state)
            finally:
                f, self._file = self._file, None
                if f is not None:
                    f.close()

        return self._last(work).addErrback(
            lambda f: self.log.failure("saving the partial download {part}", f, part=str(self.part))
        )

    def discard(self) -> Deferred:
        """
        Close and remove the part file and the state.  Never fails.
        """

        def work() -> None:
            f, self._file = self._file, None
            if f is not None:
                f.close()
            unlink_quietly(self.part)
            unlink_quietly(self.state_path)

        return self._last(work).addErrback(
            lambda f: self.log.failure("removing the partial download {part}", f, part=str(self.part))
        )


# -- one source connection --------------------------------------------------------------


@dataclass
class _Request:
    kind: str  # "pieces" or "get"
    index: int = -1
    offset: int = 0
    length: int = 0
    #: Another copy of the piece won: read the bytes and drop them.
    cancelled: bool = False


class PieceConnection(Int32StringReceiver, TimeoutMixin):
    """
    One connection to a source: ``pieces`` (when the source publishes our
    root), then pipelined ``get`` requests for single pieces.  Answers come
    in request order: a header frame, then exactly ``length`` raw bytes.

    Thin: every decision is the L{SwarmDownload}'s.
    """

    MAX_LENGTH = wire.MAX_REPLY_FRAME
    log = Logger()

    def __init__(
        self, swarm: "SwarmDownload", peer: "_Peer", clock: Any, stall_timeout: float, floor: RateFloor | None = None
    ) -> None:
        self.swarm = swarm
        #: The minimum rate this source must keep (checked every window).
        self.floor = floor
        self._floor_call: Any = None
        self.peer = peer
        self.source = peer.source
        self.callLater = clock.callLater
        self._stall = stall_timeout
        self.inflight: deque[_Request] = deque()
        self.slot: Slot | None = None
        self.closed = False
        #: Fires on the first answer (or on failure): time to first byte.
        #: Cancelling it (the first-byte timer) fails the connection.
        self.answered: Deferred = Deferred(lambda d: self.fail(errors.TransferFailed(self.timeout_reason)))
        self.timeout_reason = "no data in time"
        self.pieces_delivered = 0
        self._frames = b""
        self._left = 0
        #: The bytes of the piece being received not handed on yet, as they
        #: came (no copy): at most about L{WRITE_BATCH}.
        self._body: list[Any] = []
        self._body_size = 0
        #: Where in the piece the bytes in C{_body} start.
        self._body_offset = 0
        #: The piece being received is written (this connection streams
        #: it), or its bytes are read and dropped (another copy won).
        self._writing = False
        self.reasons = PauseReasons(self._pause_transport, self._resume_transport)

    # -- requests ----------------------------------------------------------------

    def connectionMade(self) -> None:
        self.setTimeout(self._stall)
        nodelay = getattr(self.transport, "setTcpNoDelay", None)
        if nodelay is not None:
            # Pipelined requests are small: never hold them back.
            nodelay(True)
        big_reads(self.transport, self.swarm.bucket)
        if self.floor is not None and self.floor.enabled:
            self._floor_call = self.callLater(max(1.0, self.floor.due_in()), self._check_rate)
        self.swarm.connected(self)

    def _check_rate(self) -> None:
        self._floor_call = None
        if self.closed or self.floor is None:
            return
        rate = self.floor.check()
        if rate is None:
            self._floor_call = self.callLater(max(1.0, self.floor.due_in()), self._check_rate)
            return
        self.fail(
            errors.TransferFailed(
                f"the source is too slow: {rate:.0f} bytes/s over {self.floor.window:g} s"
                f" (minimum {self.floor.rate:.0f})"
            )
        )

    def ask_pieces(self) -> None:
        self.inflight.append(_Request("pieces"))
        self.sendString(wire.encode({"action": "pieces", "fname": self.source.fname}))

    def ask(self, index: int, offset: int, length: int) -> None:
        if not self.inflight and not self.reasons.paused:
            self.setTimeout(self._stall)
        self.inflight.append(_Request("get", index, offset, length))
        self.sendString(
            wire.encode({"action": "get", "fname": self.source.fname, "offset": offset, "length": length})
        )

    def pending(self) -> list[int]:
        return [r.index for r in self.inflight if r.kind == "get" and not r.cancelled]

    def position(self, index: int) -> int:
        """
        How many answers come before piece C{index}'s on this connection.
        """
        for n, r in enumerate(self.inflight):
            if r.index == index:
                return n
        return 0

    def cancel(self, index: int) -> None:
        for r in self.inflight:
            if r.index == index:
                r.cancelled = True

    # -- bytes -------------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        if self.inflight and not self.reasons.paused:
            self.resetTimeout()
        if self.floor is not None:
            self.floor.moved(len(data))
        throttle_download(self.swarm.bucket, len(data), self.reasons)
        if self._frames:
            # Only a partial frame is ever kept: headers are small.
            data, self._frames = self._frames + data, b""
        view = memoryview(data)
        pos, end = 0, len(data)
        while pos < end and not self.closed:
            if self._left:
                # Raw bytes of a piece: kept as received (the writer threads
                # hash and write the pieces of the list; nothing is copied).
                take = min(self._left, end - pos)
                if self._writing:
                    self._body.append(data if take == end and not pos else view[pos : pos + take])
                    self._body_size += take
                pos += take
                self._left -= take
                if not self._left:
                    self._body_done()
                elif self._body_size >= WRITE_BATCH:
                    self._hand_on(False)
                continue
            if end - pos < 4:
                break
            length = int.from_bytes(view[pos : pos + 4], "big")
            if length > self.MAX_LENGTH:
                self.fail(errors.TransferFailed(f"the source sent a {length}-byte frame"))
                return
            if end - pos - 4 < length:
                break
            frame = bytes(view[pos + 4 : pos + 4 + length])
            pos += 4 + length
            self._answer(frame)
        if pos < end and not self.closed and not self._left:
            self._frames = bytes(view[pos:end])

    def _answer(self, frame: bytes) -> None:
        if not self.answered.called:
            self.answered.callback(None)
        try:
            message = wire.decode(frame)
        except wire.WireError as e:
            self.fail(errors.TransferFailed(f"the source sent a bad frame ({e.message})"))
            return
        if not self.inflight:
            self.fail(errors.TransferFailed("the source sent an answer to no request"))
            return
        head = self.inflight[0]
        status = message.get("status")
        text = message.get("message") if isinstance(message.get("message"), str) else ""
        if status == wire.BUSY:
            self.fail(errors.Busy(f"busy ({text})" if text else "busy"))
        elif status == wire.ERROR:
            self.fail(errors.TransferFailed(f"refused: {text or message.get('code') or 'error'}"))
        elif status != wire.SUCCESS:
            self.fail(errors.TransferFailed(f"unexpected answer {str(status)[:40]!r}"))
        elif head.kind == "pieces":
            self.inflight.popleft()
            try:
                pieces = PieceList.from_wire(message, self.swarm.plan.root)
            except ValueError as e:
                self.fail(BadSource(f"its piece list is not the published one ({e})"))
                return
            if pieces.sha256 != self.swarm.plan.sha256 or pieces.size != self.swarm.plan.size:
                self.fail(BadSource("its piece list is for other content"))
                return
            self.swarm.pieces_received(self, pieces)
        else:
            self._header(head, message)

    def _header(self, head: _Request, message: dict[str, Any]) -> None:
        plan = self.swarm.plan
        if (
            message.get("offset") != head.offset
            or message.get("length") != head.length
            or message.get("file_size") != plan.size
        ):
            self.fail(errors.TransferFailed("the source answered another range than asked"))
            return
        if message.get("sha256") != plan.sha256:
            self.fail(BadSource("the source now has different content than it published"))
            return
        self._left = head.length
        self._body, self._body_size, self._body_offset = [], 0, 0
        self._writing = self.swarm.piece_started(self, head)
        if not self._left:
            self._body_done()

    def _hand_on(self, last: bool) -> None:
        """
        Give the bytes received so far to the download: all of them at the
        end of the piece, else a multiple of L{partfile.DIRECT_ALIGN} (so
        that the writes stay aligned), keeping the rest.
        """
        size = self._body_size if last else self._body_size - self._body_size % DIRECT_ALIGN
        if not size:
            return
        chunks, rest, taken = [], [], 0
        for c in self._body:
            if taken >= size:
                rest.append(c)
            elif taken + len(c) <= size:
                chunks.append(c)
                taken += len(c)
            else:
                cut = size - taken
                view = memoryview(c)
                chunks.append(view[:cut])
                rest.append(view[cut:])
                taken = size
        offset = self._body_offset
        self._body, self._body_size, self._body_offset = rest, self._body_size - size, offset + size
        self.swarm.piece_data(self, self.inflight[0], chunks, offset)

    def _body_done(self) -> None:
        if self._writing:
            self._hand_on(True)
        head = self.inflight.popleft()
        self._body, self._body_size, self._body_offset = [], 0, 0
        writing, self._writing = self._writing, False
        if not self.inflight:
            self.setTimeout(None)
        self.swarm.piece_received(self, head, writing)

    @property
    def streaming(self) -> int | None:
        """The piece this connection is writing now, if any."""
        return self.inflight[0].index if self._writing and self.inflight else None

    # -- flow control ---------------------------------------------------------------

    def _pause_transport(self) -> None:
        self.setTimeout(None)
        if self.floor is not None:
            self.floor.pause()
        if not self.closed and self.transport is not None:
            self.transport.pauseProducing()

    def _resume_transport(self) -> None:
        if self.floor is not None:
            self.floor.resume()
        if self.closed or self.transport is None:
            return
        if self.inflight:
            self.setTimeout(self._stall)
        self.transport.resumeProducing()

    # -- the end -------------------------------------------------------------------

    def timeoutConnection(self) -> None:
        self.fail(errors.TransferFailed(f"the source stalled: no data for {self._stall:g} s"))

    def fail(self, reason: Exception) -> None:
        if self.closed:
            return
        self._close()
        if not self.answered.called:
            self.answered.callback(None)
        self.swarm.connection_failed(self, reason)
        self.abort()

    def abort(self) -> None:
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.abortConnection()

    def finish(self) -> None:
        """
        The download needs nothing more from this connection.
        """
        if self.closed:
            return
        busy = bool(self.inflight)
        self._close()
        if self.transport is not None:
            if busy:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    def _close(self) -> None:
        if self._writing:
            self._writing = False
            self.swarm.piece_aborted(self, self.inflight[0])
        self._body, self._body_size = [], 0
        self.closed = True
        self.setTimeout(None)
        if self._floor_call is not None and self._floor_call.active():
            self._floor_call.cancel()
        self._floor_call = None
        self.reasons.clear()

    def connectionLost(self, reason: Failure = None) -> None:
        self.setTimeout(None)
        if not self.closed:
            waiting = len(self.pending())
            if waiting:
                self.fail(errors.TransferFailed(f"the connection was lost with {waiting} piece(s) pending"))
            else:
                self.fail(errors.TransferFailed("the source closed the connection"))


# -- the download --------------------------------------------------------------------------


@dataclass
class _Peer:
    """
    The download's view of one source.
    """

    source: SourceInfo
    #: May answer ``pieces`` (it published our root).
    listed: bool
    connection: PieceConnection | None = None
    #: Never used again for this file (bad data, or too many failures).
    dropped: bool = False
    #: Not used under this root only: a source that published no root
    #: sent a piece that fails this root's list (no proof against it).
    set_aside: bool = False
    #: Do not connect before this time (busy, or a failed connection).
    retry_at: float = 0.0
    busy: int = 0
    failures: int = 0
    pieces: int = 0

    @property
    def label(self) -> str:
        return self.source.label


class SwarmDownload(_Fetch):
    """
    Fetch one file from several sources following one L{SwarmPlan}.
    """

    def __init__(self, fname: str, plan: SwarmPlan, repo: Path, **kwargs: Any) -> None:
        _Fetch.__init__(self, fname, repo, **kwargs)
        self._options = kwargs
        self.plan = plan
        self.state_path = self.repo / state_name(fname)
        #: Sources proven wrong for this file (never used again in this
        #: fetch, whatever root is followed).
        self.liars: set[SourceInfo] = set()
        #: Roots proven false (their pieces do not make the published file).
        self.false_roots: list[str] = []
        self._use_plan(plan)
        self._reset()
        self.resumed_bytes = 0
        self._slot_wait: Deferred | None = None
        self._retry_call: Any = None
        self._checkpoint_call: Any = None
        self._started_at = 0.0
        self._transfer: Any = None
        self._done: Deferred | None = None
        self._finished = False
        self._stopping = False
        #: Between two roots (the part of the first is being removed).
        self._switching = False
        #: Once every root is exhausted: the whole-file download from the
        #: sources that published no root (L{_whole_file}), and its result.
        self.fallback: Download | None = None
        self._fallback_run: Deferred | None = None
        #: Fires once the part and the state are closed (after success,
        #: failure or stop): a stopping peer waits for it.
        self.closed: Deferred = Deferred()

    def _use_plan(self, plan: SwarmPlan) -> None:
        """
        Follow C{plan}'s first root: its sources may show the piece list;
        sources that published no root serve byte ranges; sources of other
        roots are not used (they are never checked against a list they did
        not vouch for).
        """
        self.plan = plan
        self.peers = [_Peer(s, True) for s in plan.listed if s not in self.liars] + [
            _Peer(s, False) for s in plan.others if s not in self.liars
        ]
        #: With several sources, each piece is checked on arrival, so that a
        #: source sending bad data is caught and dropped at its first bad
        #: piece.  With a single source there is no other to turn to: only
        #: the whole-file SHA-256 is computed (each byte hashed once, not
        #: twice), and a mismatch gives up the root (and its source).  A
        #: resumed download still checks every piece its state claims.
        self.check_pieces = len(self.peers) > 1

    def _reset(self) -> None:
        """
        The per-root state of the download (nothing fetched yet).
        """
        self.pieces: PieceList | None = None
        self.writer: PieceWriter | None = None
        #: Pieces verified and written.
        self.have: set[int] = set()
        #: Pieces handed to the writer, not yet confirmed.
        self._verifying: set[int] = set()
        #: piece -> connections it is requested on.
        self._requested: dict[int, set[PieceConnection]] = {}
        self._heap: list[int] = []
        self._claimed: frozenset[int] = frozenset()
        self._writing_bytes = 0
        self._disk_paused = False
        self._checkpoint_running = False
        self._dirty = 0
        self._opening = False
        self._open_done = False
        #: piece -> the connection streaming it to disk now.
        self._owners: dict[int, PieceConnection] = {}
        # Bytes on their way to the disk before the sources are paused.
        self._max_pending = self.settings.swarm_pending

    # -- running ---------------------------------------------------------------------

    def run(self) -> Deferred:
        """
        @return: Deferred firing a L{FetchResult}, or failing with
            L{errors.AlreadyExists}, L{errors.TransferFailed} (the pieces
            verified so far are kept for the next fetch),
            L{errors.VerificationFailed} or L{LocalWriteError}.  Cancelling
            it stops the download and keeps what is on disk.
        """
        self._done = Deferred(lambda d: self.stop())
        self._started_at = self._clock.seconds()
        self._start()
        return self._done

    def _start(self) -> None:
        if not self.force and os.path.lexists(self.final):
            self._fail_now(errors.AlreadyExists(f"{self.final} already exists; use --force to replace it"))
            return
        d = self._run(self._load_state)
        d.addCallbacks(self._state_loaded, self._fail_now)

    def _load_state(self) -> frozenset[int]:
        """
        (In a thread.)  The pieces a previous run recorded, when it followed
        the same content; another content's leftovers are removed.
        """
        try:
            state = read_state(self.state_path)
        except (OSError, ValueError) as e:
            self.log.warn(
                "discarding the unreadable partial-download state {path}: {error}",
                path=str(self.state_path),
                error=str(e),
            )
            state = None
            unlink_quietly(self.state_path)
        if state is None:
            return frozenset()
        plan = self.plan
        if (state.root, state.piece_size, state.size, state.sha256, state.fname) != (
            plan.root,
            plan.piece_size,
            plan.size,
            plan.sha256,
            self.fname,
        ):
            self.log.info(
                "discarding the partial download of {fname} (root {old}): its sources now publish root {new}",
                fname=self.fname,
                old=state.root[:12],
                new=plan.root[:12],
            )
            unlink_quietly(self.state_path)
            unlink_quietly(self.part)
            return frozenset()
        if not self.part.exists():
            return frozenset()
        return state.have

    def _state_loaded(self, claimed: frozenset[int]) -> None:
        if self._finished:
            return
        self._claimed = claimed
        if claimed:
            self.log.info(
                "resuming {fname}: {n} of {total} pieces recorded on disk",
                fname=self.fname,
                n=len(claimed),
                total=piece_count(self.plan.size, self.plan.piece_size),
            )
        self._transfer = self._transfers.start(DOWN, self.fname, self._label(), self.plan.size)
        self._transfer.sources = 0
        if self.plan.size == 0:
            # Nothing to fetch: no piece, no source needed.
            self._set_pieces(PieceList(0, self.plan.sha256, self.plan.piece_size, ()))
            return
        self._fill()

    def _label(self) -> str:
        """
        Who the transfer is from, as ``status`` and ``transfers`` show it:
        the source, or how many, naming those that are unauthenticated
        (no key fingerprint: their hostname proves nothing).
        """
        if len(self.peers) == 1:
            peer = self.peers[0]
            return peer.label + ("" if peer.source.authenticated else ", unauthenticated")
        label = f"{len(self.peers)} sources"
        bare = [p.source.hostname for p in self.peers if not p.source.authenticated]
        if bare:
            label += ", unauthenticated: " + ", ".join(dict.fromkeys(bare))
        return label

    # -- sources and slots --------------------------------------------------------------

    def _active(self) -> list[PieceConnection]:
        return [p.connection for p in self.peers if p.connection is not None]

    def _candidates(self) -> list[_Peer]:
        now = self._clock.seconds()
        out = []
        for p in self.peers:
            if p.dropped or p.connection is not None or p.retry_at > now:
                continue
            if not p.listed and self.pieces is None:
                continue
            out.append(p)
        return out

    def _fill(self) -> None:
        """
        Connect to more sources while there are fewer than C{max_sources}
        connections, sources to use and work to share.
        """
        if self._finished or self._stopping or self._slot_wait is not None:
            return
        if self.pieces is not None and not self._unrequested():
            self._check_done()
            return
        while len(self._active()) < self.settings.max_sources:
            candidates = self._candidates()
            if not candidates:
                break
            if self.pieces is None and self._active():
                # One piece list at a time; more sources once we have it.
                break
            peer = candidates[0]
            if self._active():
                slot = self._slots.take_if_free(DOWN)
                if slot is None:
                    break
                self._open(peer, slot)
                continue
            wait = self._slot_wait = self._slots.acquire(DOWN)

            def got(slot: Slot, peer: _Peer = peer) -> None:
                self._slot_wait = None
                if self._finished or self._stopping or peer.dropped or peer.connection is not None:
                    slot.release()
                else:
                    self._open(peer, slot)
                self._fill()

            def not_got(failure: Failure) -> None:
                self._slot_wait = None
                failure.trap(CancelledError)

            wait.addCallbacks(got, not_got)
            return
        self._schedule_retry()
        self._check_done()

    def _schedule_retry(self) -> None:
        """
        Wake up when the next waiting source may be tried again.
        """
        if self._finished or self._stopping:
            return
        waiting = [p.retry_at for p in self.peers if not p.dropped and p.connection is None and p.retry_at > self._clock.seconds()]
        if not waiting:
            return
        delay = max(0.0, min(waiting) - self._clock.seconds())
        if self._retry_call is not None and self._retry_call.active():
            if self._retry_call.getTime() <= self._clock.seconds() + delay:
                return
            self._retry_call.cancel()
        self._retry_call = self._clock.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._retry_call = None
        self._fill()

    def _open(self, peer: _Peer, slot: Slot) -> None:
        settings = self.settings
        floor = RateFloor(settings.min_source_rate, self._clock, settings.source_rate_grace, settings.source_rate_window)
        connection = PieceConnection(self, peer, self._clock, settings.stall_timeout, floor)
        connection.timeout_reason = f"no data within {self.settings.ttfb_timeout:g} s"
        connection.slot = slot
        peer.connection = connection
        self._update_sources()
        d = self._connect(peer.source.ip, peer.source.port, _Prebuilt(connection))

        def first_answer() -> Deferred:
            return connection.answered

        d.addCallback(lambda _: first_answer())
        d.addTimeout(self.settings.ttfb_timeout, self._clock)

        def failed(failure: Failure) -> None:
            if connection.closed:
                return
            if failure.check(DeferredTimeout):
                connection.fail(errors.TransferFailed(f"no data within {self.settings.ttfb_timeout:g} s"))
            elif failure.check(CancelledError):
                connection.fail(errors.TransferFailed("cancelled"))
            else:
                connection.fail(errors.TransferFailed(f"cannot connect ({first_line(failure.value)})"))

        d.addErrback(failed)

    def connected(self, connection: PieceConnection) -> None:
        """
        (From the connection.)  Ask for the piece list, or for pieces.
        """
        if self._finished or self._stopping:
            connection.finish()
            return
        if self._disk_paused:
            connection.reasons.add("disk")
        if connection.peer.listed:
            # Every source that published our root shows its list first: a
            # source whose list does not hash to the root is never used.
            # Piece requests may follow at once (answers come in order).
            connection.ask_pieces()
        self._feed(connection)

    def pieces_received(self, connection: PieceConnection, pieces: PieceList) -> None:
        if self._finished or self._stopping:
            return
        if self.pieces is None:
            self._set_pieces(pieces)
        self._feed(connection)

    def _set_pieces(self, pieces: PieceList) -> None:
        self.pieces = pieces
        self.writer = PieceWriter(self.part, self.state_path, pieces, self._run, self.check_pieces)
        self.writer.on_error = self._write_failed
        self._opening = True
        self.writer.open(self._claimed).addCallbacks(self._opened, self._write_failed)

    def _opened(self, good: set[int]) -> None:
        self._opening = False
        self._open_done = True
        if self._finished:
            return
        assert self.pieces is not None
        lost = len(self._claimed) - len(good)
        if lost:
            self.log.warn(
                "{n} piece(s) of the partial download of {fname} no longer verify; fetching them again",
                n=lost,
                fname=self.fname,
            )
        self.have = set(good)
        self.resumed_bytes = sum(self.pieces.span(i)[1] for i in good)
        self._transfer.resume_from(self.resumed_bytes)
        self._heap = [i for i in range(self.pieces.count) if i not in self.have]
        heapq.heapify(self._heap)
        if self._stopping:
            return
        if not self._work_left():
            self._check_done()
            return
        for connection in self._active():
            self._feed(connection)
        self._fill()

    # -- choosing pieces ---------------------------------------------------------------

    def _work_left(self) -> bool:
        assert self.pieces is not None
        return len(self.have) < self.pieces.count

    def _unrequested(self) -> bool:
        """
        Some piece is neither verified, nor being written, nor requested.
        """
        assert self.pieces is not None
        busy = len(self.have) + len(self._verifying) + len(self._requested)
        return busy < self.pieces.count

    def _next_piece(self, connection: PieceConnection) -> int | None:
        heap = self._heap
        while heap:
            index = heapq.heappop(heap)
            if index not in self.have and index not in self._verifying and not self._requested.get(index):
                return index
        if connection.inflight:
            return None
        # Endgame (every piece is requested, this connection is idle): ask
        # for the piece expected last, one that fewer than endgame_copies
        # connections have; the first copy to arrive wins.
        best: int | None = None
        latest = -1
        for index, holders in self._requested.items():
            if connection in holders or len(holders) >= self.settings.endgame_copies:
                continue
            if index in self._verifying or index in self.have:
                continue
            depth = max(h.position(index) for h in holders) if holders else 0
            if depth > latest:
                best, latest = index, depth
        return best

    def _feed(self, connection: PieceConnection) -> None:
        """
        Keep C{pipeline} pieces requested on C{connection}; close it when
        nothing is left for it.
        """
        if connection.closed or connection.transport is None or self.pieces is None or self._opening:
            return
        while len(connection.inflight) < self.settings.pipeline:
            index = self._next_piece(connection)
            if index is None:
                break
            self._requested.setdefault(index, set()).add(connection)
            offset, length = self.pieces.span(index)
            connection.ask(index, offset, length)
        if not connection.inflight:
            self._release(connection)
            connection.finish()
            self._fill()

    def _return(self, index: int) -> None:
        """
        Put a piece back in the pool (its request failed).
        """
        if index not in self.have and index not in self._verifying and not self._requested.get(index):
            heapq.heappush(self._heap, index)

    # -- pieces arriving -------------------------------------------------------------

    def piece_started(self, connection: PieceConnection, request: _Request) -> bool:
        """
        (From the connection.)  The bytes of a piece start arriving.
        @return: True when this connection is to write them (one copy of a
            piece streams to disk at a time: a copy that starts while
            another streams, or after it won, is read and dropped).
        """
        index = request.index
        if self._finished or self._stopping or self.writer is None or request.cancelled:
            return False
        if index in self.have or index in self._verifying or index in self._owners:
            return False
        self._owners[index] = connection
        self.writer.begin(index)
        return True

    def piece_data(self, connection: PieceConnection, request: _Request, chunks: list[Any], offset: int) -> None:
        """
        (From the connection.)  The next bytes of the piece it streams, as
        received (no copy), C{offset} bytes into the piece.
        """
        if self.writer is None or self._owners.get(request.index) is not connection:
            return
        size = sum(len(c) for c in chunks)
        self._writing_bytes += size
        if self._writing_bytes > self._max_pending and not self._disk_paused:
            self._disk_paused = True
            for c in self._active():
                c.reasons.add("disk")
        self.writer.data(request.index, chunks, offset).addBoth(self._data_done, size)

    def _data_done(self, result: Any, size: int) -> None:
        self._released(None, size)
        if isinstance(result, Failure):
            self._write_failed(result)

    def piece_aborted(self, connection: PieceConnection, request: _Request) -> None:
        """
        (From the connection, closing.)  The piece it streamed stops half
        way: its hash is forgotten (the piece goes back to the pool with
        the connection's other requests).
        """
        if self._owners.get(request.index) is connection:
            del self._owners[request.index]
            if self.writer is not None:
                self.writer.abort(request.index)

    def piece_received(self, connection: PieceConnection, request: _Request, written: bool) -> None:
        """
        (From the connection.)  The last byte of a piece arrived; C{written}:
        this connection streamed it to disk (else its bytes were dropped).
        """
        holders = self._requested.get(request.index)
        if holders is not None:
            holders.discard(connection)
            if not holders:
                del self._requested[request.index]
        index = request.index
        if self._finished or self._stopping:
            return
        if not written or self._owners.get(index) is not connection:
            self._feed(connection)
            return
        del self._owners[index]
        assert self.writer is not None
        self._verifying.add(index)
        size = request.length
        checked = self.writer.end(index, size)
        checked.addCallbacks(self._written, self._write_failed, (connection, index, size))
        self._feed(connection)

    def _released(self, _: Any, size: int) -> None:
        self._writing_bytes -= size
        if self._disk_paused and self._writing_bytes <= self._max_pending // 2:
            self._disk_paused = False
            for c in self._active():
                c.reasons.remove("disk")

    def _written(self, ok: bool, connection: PieceConnection, index: int, size: int) -> None:
        self._verifying.discard(index)
        if self._finished:
            return
        peer = connection.peer
        if not ok:
            self._return(index)
            reason = PieceMismatch(f"piece {index} does not match its SHA-256")
            if connection.closed:
                self._bad_source(peer, reason)
                self._fill()
            else:
                connection.fail(reason)
            return
        self.have.add(index)
        peer.pieces += 1
        peer.failures = 0
        for other in list(self._requested.pop(index, ())):
            # Endgame: another copy is still on its way; drop it.
            other.cancel(index)
            if not other.pending():
                self._release(other)
                other.finish()
        self._transfer.add(size)
        self._dirty += 1
        self._want_checkpoint()
        try:
            # (It may stop this download: nothing of ours runs after it.)
            self._progress(self._transfer.done, self.plan.size)
        except Exception:
            self.log.failure("progress callback failed")
        if self._finished:
            return
        if not self._work_left():
            self._check_done()
        else:
            self._fill()

    def _write_failed(self, failure: Failure, *ignored: Any) -> None:
        self._opening = False
        if self._finished:
            return
        if not failure.check(LocalWriteError):
            self.log.failure("writing {part} failed", failure, part=str(self.part))
            failure = Failure(LocalWriteError(f"cannot write {self.part}: {failure.getErrorMessage()}"))
        elif failure.check(NoSpaceLeft):
            # (_fail_now removes the part file: its space comes back.)
            failure = Failure(failure.value.fetching(self.fname))
        self._fail_now(failure)

    # -- checkpoints -----------------------------------------------------------------

    def _state(self) -> PartState:
        plan = self.plan
        return PartState(self.fname, plan.root, plan.piece_size, plan.size, plan.sha256, frozenset(self.have))

    def _want_checkpoint(self) -> None:
        if self._dirty >= self.settings.checkpoint_pieces:
            self._checkpoint()
        elif self._checkpoint_call is None:
            self._checkpoint_call = self._clock.callLater(self.settings.checkpoint_interval, self._checkpoint)

    def _checkpoint(self) -> None:
        if self._checkpoint_call is not None:
            if self._checkpoint_call.active():
                self._checkpoint_call.cancel()
            self._checkpoint_call = None
        if self._finished or self._checkpoint_running or not self._dirty or self.writer is None:
            return
        self._dirty = 0
        self._checkpoint_running = True

        def done(_: Any) -> None:
            self._checkpoint_running = False
            if self._dirty and not self._finished:
                self._want_checkpoint()

        self.writer.checkpoint(self._state()).addCallbacks(done, self._checkpoint_failed)

    def _checkpoint_failed(self, failure: Failure) -> None:
        self._checkpoint_running = False
        self.log.failure("recording the progress of {fname} failed", failure, fname=self.fname)
        self._write_failed(failure)

    # -- failures ----------------------------------------------------------------------

    def _release(self, connection: PieceConnection) -> None:
        peer = connection.peer
        if peer.connection is connection:
            peer.connection = None
        slot, connection.slot = connection.slot, None
        if slot is not None:
            slot.release()
        for index in connection.pending():
            holders = self._requested.get(index)
            if holders is not None:
                holders.discard(connection)
                if not holders:
                    del self._requested[index]
            self._return(index)
        self._update_sources()

    def _bad_source(self, peer: _Peer, reason: Exception) -> None:
        """
        A source sent data that does not verify.  When that is proof
        against it (anything but a piece that fails against a list it did
        not vouch for), never use it again for this file, and say so;
        otherwise set it aside while this root is followed.
        """
        proof = peer.listed or not isinstance(reason, PieceMismatch)
        if not peer.dropped:
            if proof:
                self.log.warn(
                    "dropping source {source} for {fname}: {reason}; it is not used again for this file",
                    source=peer.label,
                    fname=self.fname,
                    reason=str(reason),
                )
            else:
                self.log.info(
                    "not using source {source} for {fname} under root {root}: {reason}"
                    " (it published no root, so this proves nothing against it)",
                    source=peer.label,
                    fname=self.fname,
                    root=self.plan.root[:12],
                    reason=str(reason),
                )
        peer.dropped = True
        if proof:
            self.liars.add(peer.source)
        else:
            peer.set_aside = True

    def connection_failed(self, connection: PieceConnection, reason: Exception) -> None:
        """
        (From the connection.)  Give its pieces back and decide when (or
        whether) to use its source again.
        """
        peer = connection.peer
        self._release(connection)
        if self._finished or self._stopping:
            return
        text = str(reason)
        now = self._clock.seconds()
        if isinstance(reason, BadSource):
            self._bad_source(peer, reason)
        elif isinstance(reason, errors.Busy):
            delays = self.settings.busy_delays
            if peer.busy >= len(delays):
                peer.dropped = True
            else:
                peer.retry_at = now + delays[peer.busy] * (0.5 + self.settings.jitter())
            peer.busy += 1
        else:
            peer.failures += 1
            if peer.failures >= self.settings.source_retries:
                peer.dropped = True
            else:
                peer.retry_at = now + self.settings.retry_delay * peer.failures
        self.failures.append((peer.label, text))
        self.log.info(
            "{fname}: source {source} failed ({reason}){what}",
            fname=self.fname,
            source=peer.label,
            reason=text,
            what="; not using it again" if peer.dropped else "",
        )
        self._fill()

    def _check_done(self) -> None:
        if self._finished or self._stopping:
            return
        if self.pieces is not None and not self._work_left() and not self._verifying:
            self._complete()
            return
        if self._active() or self._slot_wait is not None or self._opening:
            return
        if any(not p.dropped and (p.listed or self.pieces is not None) for p in self.peers):
            # Sources waiting for a retry.
            self._schedule_retry()
            return
        if self._next_plan() is not None:
            self._give_up_root(f"no source of root {self.plan.root[:12]} is left")
            return
        if self._whole_file(f"no source of root {self.plan.root[:12]} is left"):
            return
        self._fail_now(errors.TransferFailed(self._summary()))

    def _next_plan(self) -> SwarmPlan | None:
        """
        The plan for the next root that has a source not proven wrong.
        """
        plan = self.plan.next_root()
        while plan is not None and all(s in self.liars for s in plan.listed):
            plan = plan.next_root()
        return plan

    def _give_up_root(self, why: str) -> None:
        """
        Stop following the current root (proven false, or no source of it
        is left): remove what was fetched under it and follow the next.
        """
        plan = self._next_plan()
        assert plan is not None
        self._stop_timers()
        self._close_connections()
        self.log.warn(
            "{fname}: {why}; following root {root} ({sources}) instead",
            fname=self.fname,
            why=why,
            root=plan.root[:12],
            sources=", ".join(s.label for s in plan.listed if s not in self.liars),
        )
        writer = self.writer
        gone = writer.discard() if writer is not None else succeed(None)
        self._finished = self._switching = True

        def follow(_: Any) -> None:
            self._switching = False
            if self._stopping:
                self.closed.callback(None)
                return
            self._finished = False
            self._use_plan(plan)
            self._reset()
            self.resumed_bytes = 0
            self._transfer.resume_from(0)
            self._transfer.sources = 0
            self._transfer.peer = self._label()
            self._fill()

        gone.addBoth(follow)

    def _rootless_left(self) -> list[SourceInfo]:
        """
        The sources that published no root and may still serve the whole
        file: not proven wrong, and not given up for failing to connect or
        answer (set aside by a false-looking list is no proof).
        """
        return [
            p.source
            for p in self.peers
            if not p.listed and p.source not in self.liars and (not p.dropped or p.set_aside)
        ]

    def _whole_file(self, why: str) -> bool:
        """
        Every root is exhausted (proven false, or no source of it is left):
        fetch the whole file from the sources that published no root, one
        at a time, checked against the published SHA-256 (a L{Download}),
        after removing what was fetched under the last root.  They are
        never blamed for a root's list.  @return: False when there is no
        such source (or the fetch is stopping).
        """
        rootless = self._rootless_left()
        if not rootless or self._stopping:
            return False
        self._stop_timers()
        self._close_connections()
        self.log.warn(
            "{fname}: {why}; fetching the whole file from the sources that published no root ({sources}),"
            " checked against its SHA-256",
            fname=self.fname,
            why=why,
            sources=", ".join(s.label for s in rootless),
        )
        writer = self.writer
        if writer is not None:
            gone = writer.discard()
        else:
            gone = self._run(lambda: (unlink_quietly(self.part), unlink_quietly(self.state_path)))
        self._finished = self._switching = True
        if self._transfer is not None:
            self._transfer.finish(f"failed: {why}; whole file from the sources without a root")

        def start(_: Any) -> None:
            self._switching = False
            if self._stopping:
                self.closed.callback(None)
                return
            self.fallback = Download(self.fname, rootless, self.repo, **self._options)
            self._fallback_run = self.fallback.run()
            self._fallback_run.addBoth(self._fallback_ended, why)

        gone.addBoth(start)
        return True

    def _fallback_ended(self, result: Any, why: str) -> None:
        """
        The whole-file download ended: its result (with every failure of
        this fetch) or its failure is this fetch's.
        """
        if isinstance(result, Failure):
            if type(result.value) in (errors.TransferFailed, errors.VerificationFailed):
                # (Say why the sources without a root were the last resort.)
                result = Failure(type(result.value)(f"{result.getErrorMessage()} (after: {why})"))
        else:
            assert self.fallback is not None
            result = replace(
                result,
                failures=tuple(self.failures) + tuple(self.fallback.failures),
                elapsed=self._clock.seconds() - self._started_at,
            )
        self.closed.callback(None)
        assert self._done is not None
        if not self._done.called:
            if isinstance(result, Failure):
                self._done.errback(result)
            else:
                self._done.callback(result)

    def _summary(self) -> str:
        text = summarize_failures(self.fname, self.failures)
        if self.have and self.pieces is not None:
            text += (
                f"; {len(self.have)} of {self.pieces.count} pieces are kept for the next fetch"
            )
        return text

    def _update_sources(self) -> None:
        if self._transfer is not None:
            self._transfer.sources = len(self._active())

    # -- the end ----------------------------------------------------------------------

    def _stop_timers(self) -> None:
        for name in ("_retry_call", "_checkpoint_call"):
            call = getattr(self, name)
            if call is not None and call.active():
                call.cancel()
            setattr(self, name, None)
        if self._slot_wait is not None:
            wait, self._slot_wait = self._slot_wait, None
            wait.cancel()

    def _close_connections(self) -> None:
        for connection in self._active():
            self._release(connection)
            connection.finish()

    def _complete(self) -> None:
        self._finished = True
        self._stop_timers()
        self._close_connections()
        assert self.writer is not None
        d = self.writer.finish()
        d.addCallback(self._verify_whole)
        d.addCallback(lambda _: self._run(self._install))
        d.addCallbacks(self._installed, self._final_failure)

    def _verify_whole(self, digest: str) -> None:
        if digest != self.plan.sha256:
            what = "the pieces verify but the whole file" if self.check_pieces else "the bytes"
            raise errors.VerificationFailed(
                f"{what} do{'es' if self.check_pieces else ''} not match the published SHA-256"
                f" ({digest[:12]} != {self.plan.sha256[:12]})"
            )

    def _install(self) -> bool:
        """
        (In a thread.)  Move the verified part into place (kept when the
        name was taken meanwhile), then drop the state.  @return: True when
        an existing file was replaced.
        """
        replaced = install(self.part, self.final, self.force, True)
        unlink_quietly(self.state_path)
        return replaced

    def _installed(self, replaced: bool) -> None:
        self._transfer.set_done(self.plan.size)
        self._transfer.finish("done")
        delivered = sorted((p for p in self.peers if p.pieces), key=lambda p: -p.pieces)
        contributors = [(p.source.hostname, p.pieces) for p in delivered]
        main = max(self.peers, key=lambda p: (p.pieces, p.listed))
        assert self.pieces is not None
        result = FetchResult(
            fname=self.fname,
            path=str(self.final),
            size=self.plan.size,
            sha256=self.plan.sha256,
            verified=True,
            source=main.source,
            failures=tuple(self.failures),
            elapsed=self._clock.seconds() - self._started_at,
            replaced=replaced,
            contributors=tuple(contributors),
            contributor_keys=tuple(p.source.fingerprint for p in delivered),
            piece_count=self.pieces.count,
            resumed=self.resumed_bytes,
            pieces=self.pieces,
        )
        self.closed.callback(None)
        assert self._done is not None
        self._done.callback(result)

    def _final_failure(self, failure: Failure) -> None:
        """
        Verification or installation failed after every piece arrived.  A
        whole file that does not match the published SHA-256 proves the
        root false (its pieces all matched its list): its sources are
        dropped and the next root, if any, is followed.
        """
        if failure.check(errors.VerificationFailed):
            self.false_roots.append(self.plan.root)
            for peer in self.peers:
                if peer.listed and peer.source not in self.liars:
                    self.liars.add(peer.source)
                    self.failures.append((peer.label, f"its piece list (root {self.plan.root[:12]}) does not give the published SHA-256"))
                    self.log.warn(
                        "dropping source {source} for {fname}: the file its piece list (root {root}) leads to"
                        " does not match the published SHA-256; it is not used again for this file",
                        source=peer.label,
                        fname=self.fname,
                        root=self.plan.root[:12],
                    )
            if self._next_plan() is not None and not self._stopping:
                self._give_up_root(f"root {self.plan.root[:12]} is false ({failure.getErrorMessage()})")
                return
            if self._whole_file(f"root {self.plan.root[:12]} is false, and no other root is left"):
                return
            if len(self.false_roots) > 1 or len(self.plan.groups) > 1:
                failure = Failure(
                    errors.VerificationFailed(
                        f"could not fetch {self.fname}: no published piece list gives its SHA-256"
                        f" {self.plan.sha256[:12]} (roots tried: "
                        + ", ".join(r[:12] for r in self.false_roots)
                        + "); its sources are not used again for this file"
                    )
                )
        if failure.check(NoSpaceLeft):
            # (The final flush found the disk full: the part is removed.)
            failure = Failure(failure.value.fetching(self.fname))
        if failure.check(errors.AlreadyExists):
            keep = self.writer.close(None) if self.writer is not None else succeed(None)
        else:
            keep = self.writer.discard() if self.writer is not None else succeed(None)
        self._end(failure, keep)

    def _fail_now(self, reason: Any) -> None:
        """
        Give up: keep what verified for the next fetch (or remove the part
        when nothing did).  A full disk removes the part, so that its space
        comes back at once.
        """
        if self._finished:
            return
        self._finished = True
        self._stop_timers()
        self._close_connections()
        failure = reason if isinstance(reason, Failure) else Failure(reason)
        if failure.check(errors.VerificationFailed, NoSpaceLeft) and self.writer is not None:
            keep: Deferred = self.writer.discard()
        else:
            keep = self._keep()
        self._end(failure, keep)

    def _keep(self) -> Deferred:
        """
        Close the part file, recording the verified pieces; remove it when
        there are none.  Before the part is open, leave the files as they
        are (a previous run's pieces are still recorded).
        """
        if self.writer is None:
            return succeed(None)
        if not self._open_done:
            return self.writer.close(None)
        if self.have:
            return self.writer.close(self._state())
        return self.writer.discard()

    def _end(self, failure: Failure, keep: Deferred) -> None:
        if self._transfer is not None:
            self._transfer.finish(f"failed: {failure.getErrorMessage()}")

        def closed(_: Any) -> None:
            self.closed.callback(None)
            if self._done is not None and not self._done.called:
                self._done.errback(failure)

        keep.addBoth(closed)

    def stop(self) -> Deferred:
        """
        Stop now (the peer is stopping, or the fetch was cancelled): close
        every connection and record what is on disk.  @return: L{closed}.
        """
        if self._fallback_run is not None:
            # (The whole-file download: it removes its part.)
            self._stopping = True
            self._fallback_run.cancel()
            return self.closed
        if self._switching:
            # (Between two roots: nothing is kept; L{closed} fires once the
            # previous root's part is removed.)
            if not self._stopping:
                self._stopping = True
                if self._transfer is not None:
                    self._transfer.finish("stopped")
            return self.closed
        if self._finished:
            return self.closed
        self._finished = self._stopping = True
        self._stop_timers()
        self._close_connections()
        if self._transfer is not None:
            self._transfer.finish("stopped")
        if self._open_done and self.pieces is not None:
            self.log.info(
                "stopped fetching {fname}: {n} of {total} pieces kept for the next fetch",
                fname=self.fname,
                n=len(self.have),
                total=self.pieces.count,
            )
        self._keep().addBoth(lambda _: self.closed.callback(None))
        return self.closed
