"""
The files a peer publishes, by shared name, never by path.

A L{Library} maps each shared name (``fname``) to an L{Entry}: the resolved
path of the file, its size, modification time and SHA-256.  It is kept in
``REPO/.p2p/library.json`` (atomic writes), so a restarted peer still shares
what it shared before.  Each entry also carries its piece list (hashed in
the same read as the whole-file SHA-256, ``docs/swarm.md``), kept in
``REPO/.p2p/pieces/ROOT`` so that serving it needs no rehash.  Paths come only from the local user (``publish
LNAME FNAME``) and must resolve inside the repository or a share root;
remote requests only ever name an ``fname``.

Blocking work (stat, hashing, writing the JSON file) goes through the
injected C{run_in_thread} callable: C{deferToThread} in production, a
synchronous call in unit tests.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import json
import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, DeferredLock, fail, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python import runtime

from twistedp2p import errors, wire
from twistedp2p.peer.partfile import write_atomically
from twistedp2p.peer.pieces import PieceList, hash_file

#: Bytes read per call when hashing a file.
HASH_CHUNK = 1024 * 1024
#: The peer's own state directory inside the repository.
STATE_DIR = ".p2p"
LIBRARY_FILE = "library.json"
#: Piece lists by root, inside the state directory.
PIECES_DIR = "pieces"
LIBRARY_VERSION = 1
#: Seconds during which a published file checked in full (path, root,
#: type, size, modification time) is served again on an C{fstat} of its
#: open descriptor alone, without a thread hop; after that, the next
#: request checks it in full again (in a thread).
SERVING_RECHECK = 1.0
#: Published files kept open that way at most (the least recently checked
#: are closed first, once no upload uses them).
MAX_SERVED_OPEN = 64

RunInThread = Callable[..., Deferred]


class ChangedWhileHashing(errors.P2PError):
    """the file changed while it was being hashed"""


def run_synchronously(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
    """
    A C{run_in_thread} that runs C{f} at once on the calling thread; for
    tests and for callers that are not on the reactor thread.
    """
    return maybeDeferred(f, *args, **kwargs)


def sha256_file(path: str | os.PathLike, chunk: int = HASH_CHUNK) -> tuple[int, str]:
    """
    Hash a whole file in C{chunk}-sized reads (blocking; call it in a
    thread).  @return: C{(bytes read, hex digest)}.
    """
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            n += len(block)
            h.update(block)
    return n, h.hexdigest()


@dataclass(frozen=True)
class Entry:
    """
    One published file.
    """

    fname: str
    #: Absolute, resolved path (symlinks followed) inside a root.
    path: str
    size: int
    #: Modification time in seconds since the epoch (what the tracker sees).
    mtime: float
    sha256: str
    #: When it was published, by the library's clock.
    published_at: float
    #: Modification time in nanoseconds, for exact change detection.
    mtime_ns: int = 0
    #: The root over the piece list and its piece size; None until the
    #: file has been hashed piece by piece (libraries of older versions).
    root: str | None = None
    piece_size: int | None = None
    #: The piece list itself (not in library.json: see L{Library}).
    pieces: PieceList | None = field(default=None, compare=False, repr=False)
    #: The file's device and inode when it was published: only that very
    #: file is served under this name (None: a library of an older
    #: version, until the first full check records them).
    dev: int | None = None
    ino: int | None = None

    def same_content(self, other: "Entry") -> bool:
        return self.size == other.size and self.sha256 == other.sha256

    def same_file(self, other: "Entry") -> bool:
        """
        Same path, size, modification time and content.
        """
        return (
            self.path == other.path
            and self.size == other.size
            and self.mtime_ns == other.mtime_ns
            and self.sha256 == other.sha256
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "fname": self.fname,
            "path": self.path,
            "size": self.size,
            "mtime": self.mtime,
            "sha256": self.sha256,
            "published_at": self.published_at,
            "mtime_ns": self.mtime_ns,
            "root": self.root,
            "piece_size": self.piece_size,
            "dev": self.dev,
            "ino": self.ino,
        }

    def with_pieces(self, pieces: PieceList | None) -> "Entry":
        """
        This entry with C{pieces} (and its root), or without any.
        """
        if pieces is None:
            return replace(self, root=None, piece_size=None, pieces=None)
        return replace(self, root=pieces.root, piece_size=pieces.piece_size, pieces=pieces)

    @classmethod
    def from_json(cls, data: Any) -> "Entry":
        """
        @raise ValueError: if C{data} is not a valid entry.
        """
        if not isinstance(data, dict):
            raise ValueError("an entry must be an object")
        try:
            entry = cls(
                fname=data["fname"],
                path=data["path"],
                size=data["size"],
                mtime=float(data["mtime"]),
                sha256=data["sha256"],
                published_at=float(data["published_at"]),
                mtime_ns=int(data.get("mtime_ns") or int(float(data["mtime"]) * 1e9)),
                root=data.get("root"),
                piece_size=data.get("piece_size"),
                dev=data.get("dev"),
                ino=data.get("ino"),
            )
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad entry: {e}")
        problem = wire.fname_problem(entry.fname)
        if problem:
            raise ValueError(problem)
        if not isinstance(entry.path, str) or not os.path.isabs(entry.path):
            raise ValueError("path must be absolute")
        if isinstance(entry.size, bool) or not isinstance(entry.size, int) or entry.size < 0:
            raise ValueError("size must be a non-negative integer")
        if not wire.is_sha256(entry.sha256):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        if entry.root is not None and (
            not wire.is_sha256(entry.root)
            or isinstance(entry.piece_size, bool)
            or not isinstance(entry.piece_size, int)
            or entry.piece_size < 1
        ):
            raise ValueError("root must be 64 hex digits with a positive piece_size")
        for value in (entry.dev, entry.ino):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError("dev and ino must be non-negative integers")
        if (entry.dev is None) != (entry.ino is None):
            raise ValueError("dev and ino go together")
        return entry


class ServedFile:
    """
    One published file, open, checked in full at C{checked_at}, shared by
    the uploads that serve it: each gets a L{FileLease} and reads with
    C{pread} at its own offsets, so none moves another's position.  The
    descriptor is closed when the library has let go of it and the last
    lease is closed.
    """

    def __init__(self, entry: Entry, f: Any, checked_at: float) -> None:
        self.entry = entry
        self._f = f
        self.checked_at = checked_at
        self._refs = 1
        #: The delayed call that lets go of the file when its window ends.
        self.expiry: Any = None

    def fileno(self) -> int:
        return self._f.fileno()

    def lease(self) -> "FileLease":
        self._refs += 1
        return FileLease(self)

    def release(self) -> None:
        self._refs -= 1
        if not self._refs:
            self._f.close()

    def unchanged(self) -> bool:
        """
        The open file still has its published size and modification time
        and still has a name (an C{fstat}: no path is looked up).
        """
        try:
            st = os.fstat(self._f.fileno())
        except (OSError, ValueError):
            return False
        return st.st_nlink > 0 and _file_problem(self.entry, st) is None


class FileLease:
    """
    One upload's use of a L{ServedFile}: C{fileno()} for C{pread}, and
    C{close()} (once) when done.
    """

    def __init__(self, served: ServedFile) -> None:
        self._served = served
        self.closed = False

    def fileno(self) -> int:
        return self._served.fileno()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._served.release()


class Library:
    """
    Published files by shared name, persisted in C{REPO/.p2p/library.json}.

    @ivar stale_observers: callables C{(entry, reason)} told when an entry
        is dropped because its file changed or moved (so the node can
        unpublish it at the tracker).
    @ivar max_file_size: refuse to describe files larger than this many
        bytes (None: no limit).
    """

    log = Logger()

    def __init__(
        self,
        repo: str | os.PathLike,
        share_roots: Sequence[str | os.PathLike] = (),
        run_in_thread: RunInThread = run_synchronously,
        clock: Any = None,
    ) -> None:
        self.repo = Path(repo).resolve()
        self.share_roots = tuple(Path(r).resolve() for r in share_roots)
        self._run = run_in_thread
        self._clock = clock
        self._entries: dict[str, Entry] = {}
        #: Open published files recently checked in full, by shared name.
        self._serving: dict[str, ServedFile] = {}
        self._save_lock = DeferredLock()
        self.stale_observers: list[Callable[[Entry, str], None]] = []
        self.state_dir = self.repo / STATE_DIR
        self.path = self.state_dir / LIBRARY_FILE
        self.pieces_dir = self.state_dir / PIECES_DIR
        self.max_file_size: int | None = None
        self._load()

    # -- reading --------------------------------------------------------

    def get(self, fname: str) -> Entry | None:
        return self._entries.get(fname)

    def entries(self) -> list[Entry]:
        """
        Every entry, sorted by shared name.
        """
        return [self._entries[k] for k in sorted(self._entries)]

    def __contains__(self, fname: object) -> bool:
        return fname in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    # -- path safety ------------------------------------------------------

    def roots(self) -> tuple[Path, ...]:
        return (self.repo,) + self.share_roots

    def _root_of(self, real: Path) -> Path | None:
        for root in self.roots():
            if real == root or real.is_relative_to(root):
                return root
        return None

    def resolve(self, lname: str) -> Path:
        """
        Resolve a local name given by the user (absolute, or relative to the
        repository) to the real path of a regular file inside the repository
        or a share root (blocking: a few stat calls).

        @raise errors.UnsafePath: naming what is wrong.
        """
        if not isinstance(lname, str) or not lname:
            raise errors.UnsafePath("a local file name must not be empty")
        if "\0" in lname:
            raise errors.UnsafePath(f"{lname!r}: a path must not contain NUL")
        given = Path(lname)
        if not given.is_absolute():
            given = self.repo / given
        try:
            real = given.resolve(strict=True)
        except FileNotFoundError:
            raise errors.UnsafePath(f"{lname}: no such file")
        except (OSError, RuntimeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise errors.UnsafePath(f"{lname}: cannot resolve the path ({reason})")
        root = self._root_of(real)
        if root is None:
            raise errors.UnsafePath(
                f"{lname}: resolves to {real}, which is outside the repository"
                f" ({self.repo}) and every share root"
            )
        try:
            mode = os.stat(real).st_mode
        except OSError as e:
            raise errors.UnsafePath(f"{lname}: cannot stat ({e.strerror})")
        if stat.S_ISDIR(mode):
            raise errors.UnsafePath(f"{lname}: is a directory, not a file")
        if not stat.S_ISREG(mode):
            raise errors.UnsafePath(f"{lname}: is not a regular file")
        if root == self.repo:
            first = real.relative_to(self.repo).parts[0]
            if first.startswith("."):
                raise errors.UnsafePath(
                    f"{lname}: hidden names in the repository are the peer's own"
                    " state (partial downloads, library), not shareable files"
                )
        return real

    # -- building entries --------------------------------------------------

    def describe(self, lname: str, fname: str) -> Deferred:
        """
        Check C{fname}, resolve C{lname} and hash the file in a thread.

        @return: Deferred firing an L{Entry} (not yet added), or failing
            with L{errors.BadName}, L{errors.UnsafePath} or L{errors.P2PError}.
        """
        problem = wire.fname_problem(fname)
        if problem is not None:
            return fail(errors.BadName(f"{fname!r}: {problem}"))
        now = self._now()

        def work() -> Entry:
            path = self.resolve(lname)
            self.check_size(os.stat(path).st_size, lname)
            return self._entry_for(fname, path, now)

        return self._run(work)

    def check_size(self, size: int, what: str) -> None:
        """
        @raise errors.FileTooLarge: if C{size} is over L{max_file_size}.
        """
        if self.max_file_size is not None and size > self.max_file_size:
            raise errors.FileTooLarge(
                f"{what} is {size} bytes, more than this peer accepts"
                f" (--max-file-size {self.max_file_size})"
            )

    def describe_known(
        self,
        path: str | os.PathLike,
        fname: str,
        size: int,
        sha256: str,
        pieces: PieceList | None = None,
    ) -> Deferred:
        """
        An entry for a file whose content we just verified (a finished
        download): resolve and stat it in a thread, without hashing again.
        C{pieces} is its verified piece list, when the download had one.

        @raise errors.P2PError: if its size is not C{size}.
        """
        problem = wire.fname_problem(fname)
        if problem is not None:
            return fail(errors.BadName(f"{fname!r}: {problem}"))
        now = self._now()

        def work() -> Entry:
            real = self.resolve(str(path))
            st = os.stat(real)
            if st.st_size != size:
                raise errors.P2PError(f"{real}: changed after the download")
            entry = Entry(
                fname, str(real), st.st_size, st.st_mtime, sha256, now, st.st_mtime_ns, dev=st.st_dev, ino=st.st_ino
            )
            if pieces is not None and pieces.size == size and pieces.sha256 == sha256:
                entry = entry.with_pieces(pieces)
            return entry

        return self._run(work)

    def _entry_for(self, fname: str, path: Path, now: float) -> Entry:
        before = os.stat(path)
        pieces = hash_file(path)
        after = os.stat(path)
        if (before.st_size, before.st_mtime_ns, before.st_dev, before.st_ino) != (
            after.st_size,
            after.st_mtime_ns,
            after.st_dev,
            after.st_ino,
        ) or pieces.size != after.st_size:
            raise ChangedWhileHashing(f"{path}: the file changed while it was being hashed; try again")
        return Entry(
            fname=fname,
            path=str(path),
            size=after.st_size,
            mtime=after.st_mtime,
            sha256=pieces.sha256,
            published_at=now,
            mtime_ns=after.st_mtime_ns,
            dev=after.st_dev,
            ino=after.st_ino,
        ).with_pieces(pieces)

    def ensure_pieces(self) -> Deferred:
        """
        Hash piece by piece (in a thread) every entry that has no piece list
        yet (a library written by an older version, or a lost piece file),
        and save.  An entry whose file no longer matches it is dropped as
        stale.

        @return: Deferred firing the list of entries that gained a list.
        """
        todo = [e for e in self._entries.values() if e.pieces is None]
        if not todo:
            return succeed([])

        def work() -> list[tuple[Entry, Any]]:
            out: list[tuple[Entry, Any]] = []
            for entry in todo:
                reason, f = self._open_checked(entry)
                if reason is not None:
                    out.append((entry, reason))
                    continue
                try:
                    pieces = hash_file(entry.path, f=f)
                finally:
                    f.close()
                if pieces.sha256 != entry.sha256 or pieces.size != entry.size:
                    out.append((entry, "the file changed since it was published"))
                else:
                    out.append((entry, pieces))
            return out

        def hashed(results: list[tuple[Entry, Any]]) -> Deferred:
            updated = []
            for entry, outcome in results:
                if isinstance(outcome, str):
                    self._drop_stale(entry, outcome)
                elif self._entries.get(entry.fname) == entry:
                    fresh = entry.with_pieces(outcome)
                    self._entries[entry.fname] = fresh
                    updated.append(fresh)
            self.log.info("hashed {n} published file(s) piece by piece", n=len(updated))
            return self._save().addCallback(lambda _: updated)

        return self._run(work).addCallback(hashed)

    # -- changing ----------------------------------------------------------

    def put(self, entry: Entry) -> Deferred:
        """
        Add or replace an entry and save.  @return: Deferred firing None
        once the library file is written.
        """
        self._entries[entry.fname] = entry
        self._forget_served(entry.fname)
        return self._save()

    def remove(self, fname: str) -> Deferred:
        """
        Drop an entry (if present) and save.  @return: Deferred firing the
        removed L{Entry} or None.
        """
        entry = self._entries.pop(fname, None)
        self._forget_served(fname)
        if entry is None:
            return succeed(None)
        return self._save().addCallback(lambda _: entry)

    # -- serving -------------------------------------------------------------

    def stale_reason(self, entry: Entry) -> str | None:
        """
        Say why an entry may no longer be served, or None if it still may
        (blocking: a few stat calls).  The path must still resolve to
        itself inside a root and name the published file (its device and
        inode) with the published size and mtime.
        """
        try:
            real = Path(entry.path).resolve(strict=True)
        except (OSError, RuntimeError):
            return "the file is gone"
        if str(real) != entry.path:
            return "the path now resolves elsewhere"
        if self._root_of(real) is None:
            return "the file is no longer inside a share root"
        try:
            st = os.stat(real)
        except OSError:
            return "the file is gone"
        return _file_problem(entry, st)

    def _open_checked(self, entry: Entry) -> tuple[str | None, Any]:
        """
        (Blocking.)  L{stale_reason}, then open the published path without
        following a symbolic link in its last part (and without blocking on
        a FIFO), and check the descriptor itself: the published device and
        inode, a regular file of the published size and time.  Whatever was
        swapped in between the check and the open (a symbolic link, another
        file, a hard link to another file, a directory of links above it)
        is refused there.

        @return: C{(None, open file)}, or C{(reason, None)}.
        """
        reason = self.stale_reason(entry)
        if reason is not None:
            return reason, None
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "the path is now a symbolic link", None
            return "the file cannot be opened", None
        f = os.fdopen(fd, "rb")
        try:
            st = os.fstat(fd)
            reason = _file_problem(entry, st) or (None if st.st_nlink else "the file is gone")
            if reason is None:
                os.set_blocking(fd, True)
        except BaseException:
            f.close()
            raise
        if reason is not None:
            f.close()
            return reason, None
        return None, f

    def check_serving(self, fname: str) -> Deferred:
        """
        Re-check a published file before serving it.

        @return: Deferred firing the L{Entry}, or None when C{fname} is not
            published or its file changed (the entry is then removed and
            C{stale_observers} are told).
        """
        return self.open_for_serving(fname).addCallback(
            lambda found: _close_and_entry(found)
        )

    def open_for_serving(self, fname: str) -> Deferred:
        """
        Re-check a published file and open it for reading.

        The full check (L{stale_reason}: the path still resolves to itself
        inside a root, a regular file of the published size and time) runs
        in a thread.  The open file is then kept: for L{SERVING_RECHECK}
        seconds, requests for the same name are served from it at once, on
        the reactor thread, after an C{fstat} of the descriptor (same size
        and time, not deleted).  Within that window a file renamed away or
        replaced by another one under the same path is still served as it
        was published (the same bytes); a file changed or deleted in place
        is not.

        @return: Deferred firing C{(entry, file)}, where C{file} has
            C{fileno()} (read it with C{pread}) and C{close()}; or None when
            the name is not published or no longer matches its file.
        """
        entry = self._entries.get(fname)
        if entry is None:
            return succeed(None)
        found = self.serving_now(fname)
        if found is not None:
            return succeed(found)
        self._forget_served(fname)
        checked_at = self._now()

        def checked(result: tuple[str | None, Any]) -> Any:
            reason, f = result
            if reason is not None:
                self._drop_stale(entry, reason)
                return None
            served = self._with_identity(entry, f)
            fresh = ServedFile(served, f, checked_at)
            lease = fresh.lease()
            if self._entries.get(fname) is served and fname not in self._serving:
                self._serving[fname] = fresh
                # An idle peer keeps no published file open: the descriptor
                # goes when its window ends (or its last upload does).
                if hasattr(self._clock, "callLater"):
                    fresh.expiry = self._clock.callLater(
                        SERVING_RECHECK, self._expire_served, fname, fresh
                    )
                while len(self._serving) > MAX_SERVED_OPEN:
                    self._forget_served(next(iter(self._serving)))
            else:
                fresh.release()
            return served, lease

        return self._run(self._open_checked, entry).addCallback(checked)

    def _with_identity(self, entry: Entry, f: Any) -> Entry:
        """
        C{entry}, with the device and inode of its open, fully checked file
        recorded (and saved) if it has none yet (a library written by an
        older version).
        """
        if entry.dev is not None:
            return entry
        st = os.fstat(f.fileno())
        recorded = replace(entry, dev=st.st_dev, ino=st.st_ino)
        if self._entries.get(entry.fname) is not entry:
            return recorded
        self._entries[entry.fname] = recorded
        self._save().addErrback(lambda failure: self.log.failure("saving the library failed", failure))
        return recorded

    def serving_now(self, fname: str) -> tuple[Entry, "FileLease"] | None:
        """
        L{open_for_serving}'s answer without a Deferred, when it is known at
        once: C{fname}'s file is open, inside its L{SERVING_RECHECK} window
        and unchanged (an C{fstat}).  None means ask L{open_for_serving}.
        """
        served = self._serving.get(fname)
        if (
            served is not None
            and served.entry is self._entries.get(fname)
            and self._now() - served.checked_at < SERVING_RECHECK
            and served.unchanged()
        ):
            return served.entry, served.lease()
        return None

    def _forget_served(self, fname: str) -> None:
        served = self._serving.pop(fname, None)
        if served is not None:
            if served.expiry is not None and served.expiry.active():
                served.expiry.cancel()
            served.release()

    def close(self) -> None:
        """
        Let go of every published file kept open for serving (at shutdown);
        an upload still reading one keeps it until its lease is closed.
        """
        for fname in list(self._serving):
            self._forget_served(fname)

    def _expire_served(self, fname: str, served: "ServedFile") -> None:
        if self._serving.get(fname) is served:
            served.expiry = None
            self._forget_served(fname)

    def prune(self) -> Deferred:
        """
        Check every entry (in a thread) and drop the stale ones.

        @return: Deferred firing a list of C{(entry, reason)} dropped.
        """
        snapshot = list(self._entries.values())

        def work() -> list[tuple[Entry, str]]:
            out = []
            for entry in snapshot:
                reason = self.stale_reason(entry)
                if reason is not None:
                    out.append((entry, reason))
            return out

        def dropped(stale: list[tuple[Entry, str]]) -> list[tuple[Entry, str]]:
            for entry, reason in stale:
                self._drop_stale(entry, reason)
            return stale

        return self._run(work).addCallback(dropped)

    def _drop_stale(self, entry: Entry, reason: str) -> None:
        if self._entries.get(entry.fname) != entry:
            return
        self.log.warn(
            "no longer sharing {fname} ({path}): {reason}",
            fname=entry.fname,
            path=entry.path,
            reason=reason,
        )
        del self._entries[entry.fname]
        self._forget_served(entry.fname)
        self._save().addErrback(
            lambda f: self.log.failure("saving the library failed", f)
        )
        for observer in list(self.stale_observers):
            try:
                observer(entry, reason)
            except Exception:
                self.log.failure("stale observer {observer} failed", observer=observer)

    # -- names, folders and globs (``publish FILE``, ``publish DIR``) -------------

    def name_for(self, lname: str) -> str:
        """
        The shared name C{publish LNAME} (one argument) gives a file or a
        folder: its path relative to the repository or the share root it
        is in, C{/}-separated, as the user wrote it (C{..} and C{.}
        collapsed, symbolic links not followed); a path that is only
        inside a root once its links are resolved is named from its
        resolved path.  A root itself is named by its last component
        (blocking: resolves the path).

        @raise errors.UnsafePath: if it is inside no root.
        @raise errors.BadName: if that name is not a valid shared name.
        """
        given = Path(os.path.abspath(self.repo / lname))
        candidates = [given]
        try:
            candidates.append(given.resolve(strict=True))
        except (OSError, RuntimeError):
            pass
        for path in candidates:
            # The most specific root first (a repository inside a share root).
            for root in sorted(self.roots(), key=lambda r: len(r.parts), reverse=True):
                if path == root:
                    name = root.name
                elif path.is_relative_to(root):
                    name = "/".join(path.relative_to(root).parts)
                else:
                    continue
                problem = wire.fname_problem(name)
                if problem is not None:
                    raise errors.BadName(
                        f"{lname}: cannot be shared as {name!r} ({problem}); give a name: publish LNAME FNAME"
                    )
                return name
        raise errors.UnsafePath(f"{lname}: outside the repository ({self.repo}) and every share root")

    def expand(self, pattern: str) -> list[str]:
        """
        The paths a glob (C{*}, C{?}, C{[...]}) matches (blocking): an
        absolute pattern as it is, a relative one in the repository and in
        each share root.  Hidden names match only a pattern component that
        starts with C{.}; matches in the repository's hidden state are
        dropped.  Sorted, without duplicates (by resolved path).
        """
        if os.path.isabs(pattern):
            bases = [Path("/")]
            relative = pattern.lstrip("/")
        else:
            bases = list(self.roots())
            relative = pattern
        found: dict[str, str] = {}
        for base in bases:
            for match in sorted(glob.glob(relative, root_dir=base)):
                path = base / match
                if _hidden_in_repo(path, self.repo):
                    continue
                try:
                    key = str(path.resolve(strict=True))
                except (OSError, RuntimeError):
                    key = str(path)
                found.setdefault(key, str(path))
        return sorted(found.values())

    def is_folder(self, lname: str) -> bool:
        """
        C{lname} (relative to the repository, or absolute) is a directory
        (blocking; symbolic links followed).
        """
        return os.path.isdir(self.repo / lname)

    def scan_folder(self, lname: str, prefix: str | None = None) -> "FolderScan":
        """
        Every regular file below the folder C{lname}, each with its shared
        name C{PREFIX/relative/path} (C{prefix} defaults to L{name_for}
        C{lname}) (blocking: walks the tree; run it in a thread).

        The folder must resolve inside a root.  Hidden files and folders
        (names starting with C{.}: the peer's state, partial downloads) are
        skipped silently; symbolic links to files are followed when they
        resolve inside a root; links to folders are not followed; anything
        else that cannot be shared is listed in C{problems}.  At most
        C{wire.MAX_LIMIT} files.

        @raise errors.UnsafePath: if C{lname} is not a folder inside a root.
        @raise errors.BadName: if the prefix is not a valid shared name.
        """
        given = self.repo / lname
        try:
            real = given.resolve(strict=True)
        except FileNotFoundError:
            raise errors.UnsafePath(f"{lname}: no such folder")
        except (OSError, RuntimeError) as e:
            reason = getattr(e, "strerror", None) or str(e)
            raise errors.UnsafePath(f"{lname}: cannot resolve the path ({reason})")
        if not real.is_dir():
            raise errors.UnsafePath(f"{lname}: is not a folder")
        if self._root_of(real) is None:
            raise errors.UnsafePath(
                f"{lname}: resolves to {real}, which is outside the repository"
                f" ({self.repo}) and every share root"
            )
        if _hidden_in_repo(real, self.repo):
            raise errors.UnsafePath(f"{lname}: hidden folders in the repository are the peer's own state")
        if prefix is None:
            prefix = self.name_for(lname)
        problem = wire.fname_problem(prefix)
        if problem is not None:
            raise errors.BadName(f"{prefix!r}: {problem}")
        scan = FolderScan(prefix, str(real))
        for top, dirs, files in os.walk(real):
            folder = Path(top)
            inner = folder.relative_to(real).parts
            keep = []
            for d in sorted(dirs):
                if d.startswith("."):
                    continue
                if (folder / d).is_symlink():
                    scan.problems.append((_join(prefix, inner, d), "a link to a folder is not followed"))
                    continue
                keep.append(d)
            dirs[:] = keep
            for f in sorted(files):
                if f.startswith("."):
                    continue
                fname = _join(prefix, inner, f)
                path = folder / f
                problem = wire.fname_problem(fname)
                if problem is not None:
                    scan.problems.append((fname, problem))
                    continue
                try:
                    target = path.resolve(strict=True)
                    mode = os.stat(target).st_mode
                except (OSError, RuntimeError) as e:
                    scan.problems.append((fname, f"cannot resolve the path ({getattr(e, 'strerror', None) or e})"))
                    continue
                if not stat.S_ISREG(mode):
                    scan.problems.append((fname, "not a regular file"))
                    continue
                if self._root_of(target) is None or _hidden_in_repo(target, self.repo):
                    scan.problems.append((fname, f"a link to {target}, outside every share root"))
                    continue
                if len(scan.files) >= wire.MAX_LIMIT:
                    scan.problems.append((fname, f"a folder is published with at most {wire.MAX_LIMIT} files"))
                    continue
                scan.files.append((fname, str(target)))
        scan.files.sort()
        scan.problems.sort()
        return scan

    def describe_path(self, path: str, fname: str) -> Entry:
        """
        Hash the file at C{path} (already checked by L{scan_folder}) as an
        entry for C{fname} (blocking: run it in a thread).
        """
        real = self.resolve(path)
        self.check_size(os.stat(real).st_size, fname)
        return self._entry_for(fname, real, self._now())

    def put_many(self, entries: Sequence[Entry]) -> Deferred:
        """
        Add or replace several entries and save once.
        """
        for entry in entries:
            self._entries[entry.fname] = entry
            self._forget_served(entry.fname)
        return self._save()

    def make_folders(self, fname: str) -> None:
        """
        Create the folders a download of C{fname} (C{DIR/sub/NAME}) lands
        in, inside the repository (blocking).  Folders that exist must
        resolve inside the repository, outside its hidden state: a link
        somewhere else is refused before anything is created.

        @raise errors.UnsafePath: naming what is wrong.
        """
        parts = fname.split("/")[:-1]
        if not parts:
            return
        folder = self.repo.joinpath(*parts)
        existing = folder
        while not os.path.lexists(existing):
            existing = existing.parent
        for path in (existing, None):
            if path is None:
                try:
                    os.makedirs(folder, exist_ok=True)
                except OSError as e:
                    raise errors.UnsafePath(f"cannot create {folder}: {e.strerror or e}")
                path = folder
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError) as e:
                raise errors.UnsafePath(f"{path}: cannot resolve the path ({getattr(e, 'strerror', None) or e})")
            if not real.is_dir():
                raise errors.UnsafePath(f"{path} is not a folder; {fname} cannot be saved")
            if not (real == self.repo or real.is_relative_to(self.repo)) or _hidden_in_repo(real, self.repo):
                raise errors.UnsafePath(f"{path} resolves to {real}, outside the repository; {fname} is not saved")

    # -- noticing changes on disk -------------------------------------------------

    def scan_changes(self) -> Deferred:
        """
        Check every entry against its file (in a thread: a few C{stat}
        calls each, no reading).

        @return: Deferred firing a list of C{(entry, kind, reason)}: kind
            C{"changed"} when the same path still holds a regular file
            inside a root but its size or modification time differ (hash it
            again), C{"gone"} when it may not be served any more.
        """
        snapshot = list(self._entries.values())

        def work() -> list[tuple[Entry, str, str]]:
            out = []
            for entry in snapshot:
                reason = self.stale_reason(entry)
                if reason is not None:
                    out.append((entry, self._change_kind(entry), reason))
            return out

        return self._run(work)

    def _change_kind(self, entry: Entry) -> str:
        try:
            real = Path(entry.path).resolve(strict=True)
            mode = os.stat(real).st_mode
        except (OSError, RuntimeError):
            return "gone"
        if str(real) == entry.path and stat.S_ISREG(mode) and self._root_of(real) is not None:
            return "changed"
        return "gone"

    def drop(self, entry: Entry, reason: str) -> None:
        """
        Stop sharing C{entry} because of C{reason} (if it is still the
        current entry for its name); C{stale_observers} are told.
        """
        self._drop_stale(entry, reason)

    # -- persistence -----------------------------------------------------------

    def _now(self) -> float:
        if self._clock is not None:
            return float(self._clock.seconds())
        return runtime.seconds()

    def _load(self) -> None:
        """
        Read the library file (at start-up, before the reactor runs).  A
        corrupt file is moved aside, never overwritten, and reported.
        """
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return
        try:
            data = json.loads(raw.decode("utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("files"), list):
                raise ValueError("not a library file")
        except ValueError as e:
            aside = self.path.with_name(f"{LIBRARY_FILE}.corrupt-{os.getpid()}-{int(self._now())}")
            os.replace(self.path, aside)
            self.log.error(
                "library file {path} is unreadable ({error}); moved to {aside},"
                " starting with an empty library",
                path=str(self.path),
                error=str(e),
                aside=str(aside),
            )
            return
        for item in data["files"]:
            try:
                entry = Entry.from_json(item)
            except ValueError as e:
                self.log.warn("skipping a bad library entry: {error}", error=str(e))
                continue
            self._entries[entry.fname] = self._load_pieces(entry)

    def _save(self) -> Deferred:
        entries = self.entries()
        snapshot = {
            "version": LIBRARY_VERSION,
            "files": [e.to_json() for e in entries],
        }
        pieces = {e.root: e.pieces for e in entries if e.root is not None and e.pieces is not None}
        return self._save_lock.run(self._run, self._write, snapshot, pieces)

    def _write(self, snapshot: dict[str, Any], pieces: dict[str, PieceList] | None = None) -> None:
        """
        Write the piece lists that are new, then the library atomically
        (temp file, fsync, rename, fsync dir), then drop the piece lists no
        entry uses any more.
        """
        self.state_dir.mkdir(parents=True, exist_ok=True)
        pieces = pieces or {}
        if pieces:
            self.pieces_dir.mkdir(exist_ok=True)
            for root, plist in pieces.items():
                target = self.pieces_dir / root
                data = plist.to_bytes()
                try:
                    current = target.stat().st_size
                except FileNotFoundError:
                    current = -1
                if current != len(data):
                    write_atomically(target, data)
        data = json.dumps(snapshot, indent=1, sort_keys=True).encode("utf-8")
        write_atomically(self.path, data)
        try:
            names = os.listdir(self.pieces_dir)
        except FileNotFoundError:
            return
        for name in names:
            if name not in pieces and wire.is_sha256(name):
                try:
                    os.unlink(self.pieces_dir / name)
                except FileNotFoundError:
                    pass

    def _load_pieces(self, entry: Entry) -> Entry:
        """
        Attach an entry's piece list from its file (at start-up).  A missing
        or damaged list is logged and left for L{ensure_pieces}.
        """
        if entry.root is None or entry.piece_size is None:
            return entry.with_pieces(None)
        try:
            data = (self.pieces_dir / entry.root).read_bytes()
            pieces = PieceList.from_bytes(entry.size, entry.sha256, entry.piece_size, data, entry.root)
        except (OSError, ValueError) as e:
            self.log.warn(
                "the piece list of {fname} is unusable ({error}); it is hashed again",
                fname=entry.fname,
                error=str(e),
            )
            # Our own cache, not the user's data: a fresh one replaces it.
            try:
                os.unlink(self.pieces_dir / entry.root)
            except OSError:
                pass
            return entry.with_pieces(None)
        return entry.with_pieces(pieces)


def _file_problem(entry: Entry, st: os.stat_result) -> str | None:
    """
    Why C{st} (of the published path, or of the descriptor opened on it)
    is not the file C{entry} published, or None.
    """
    if not stat.S_ISREG(st.st_mode):
        return "the path is no longer a regular file"
    if entry.dev is not None and (st.st_dev, st.st_ino) != (entry.dev, entry.ino):
        return "the path now names another file than the one published (device and inode differ)"
    if st.st_size != entry.size or st.st_mtime_ns != entry.mtime_ns:
        return "the file changed since it was published"
    return None


def _close_and_entry(found: Any) -> Entry | None:
    if found is None:
        return None
    entry, f = found
    f.close()
    return entry


@dataclass
class FolderScan:
    """
    What L{Library.scan_folder} found: the shared-name prefix, the folder's
    real path, C{files} as C{(fname, real path)} and C{problems} as
    C{(fname, what is wrong)}.
    """

    prefix: str
    path: str
    files: list[tuple[str, str]] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)


def _join(prefix: str, inner: Sequence[str], name: str) -> str:
    return "/".join((prefix, *inner, name))


def _hidden_in_repo(path: Path, repo: Path) -> bool:
    """
    C{path} is, or is inside, a hidden name of the repository (its
    C{.p2p} state, partial downloads).
    """
    try:
        parts = path.relative_to(repo).parts
    except ValueError:
        return False
    return any(part.startswith(".") for part in parts)
