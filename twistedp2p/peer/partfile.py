"""
What both kinds of download (L{twistedp2p.peer.download}, whole files, and
L{twistedp2p.peer.swarm}, pieces) share about files on disk: the hidden
part name, ordered thread queues, atomic small-file writes, and moving a
verified part into place without overwriting what a user has.

Everything here except L{SerialWorker} blocks: call it in a thread.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedp2p import errors

log = Logger()


class LocalWriteError(errors.TransferFailed):
    """the downloaded file cannot be written here"""


#: Write errors that mean the file system (or the user's quota) is full.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})


class NoSpaceLeft(LocalWriteError):
    """
    The file system holding a part file is full (or the user's quota is):
    one line, C{[fetch FNAME: ]no space left on device (writing PATH; N
    bytes free there[; the partial download was removed])}.
    """

    def __init__(
        self,
        path: Path,
        free: int | None = None,
        fname: str | None = None,
        removed: bool = False,
        note: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.free = free
        self.fname = fname
        self.removed = removed
        #: Why the download stopped before the disk was full, if it did.
        self.note = note
        details = [f"writing {self.path}"]
        if free is not None:
            details.append(f"{free} bytes free there")
        if note is not None:
            details.append(note)
        if removed:
            details.append("the partial download was removed")
        prefix = f"fetch {fname}: " if fname else ""
        super().__init__(f"{prefix}no space left on device ({'; '.join(details)})")

    def fetching(self, fname: str, removed: bool = True) -> "NoSpaceLeft":
        """
        The same error as the fetch of C{fname} reports it (its part file
        removed, unless C{removed} is false).
        """
        return NoSpaceLeft(self.path, self.free, fname, removed, self.note)


def free_bytes(path: Path) -> int | None:
    """
    Bytes an unprivileged process may still write on the file system
    holding C{path} (C{statvfs}), or None if that cannot be known.
    """
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def write_error(path: Path, e: OSError) -> LocalWriteError:
    """
    The error to report for C{e}, raised while writing (or creating) the
    part file C{path}: L{NoSpaceLeft} for a full file system or quota
    (with the free space left, a C{statvfs}), else L{LocalWriteError}.
    """
    if e.errno in NO_SPACE_ERRNOS:
        return NoSpaceLeft(path, free_bytes(path.parent))
    return LocalWriteError(f"cannot write {path}: {e.strerror or e}")


def part_name(fname: str) -> str:
    """
    The hidden name of a partial download (short enough for any file
    system even for a 255-byte shared name).
    """
    return _hidden(fname, ".part")


def _hidden(fname: str, suffix: str) -> str:
    """
    C{.NAME}C{suffix} beside the file: a shared name in a folder
    (C{DIR/sub/NAME}) keeps its hidden files in that folder
    (C{DIR/sub/.NAME}C{suffix}).
    """
    folder, slash, base = fname.rpartition("/")
    name = f".{base}{suffix}"
    if len(name.encode("utf-8")) > 255:
        name = "." + hashlib.sha256(base.encode("utf-8")).hexdigest()[:40] + suffix
    return folder + slash + name


# -- ordered thread jobs ---------------------------------------------------------------


class SerialWorker:
    """
    Jobs run in a thread one after the other, in the order given, through
    C{run_in_thread}; the jobs queued while a batch runs go together in the
    next one, so a busy reactor costs one round trip per batch, not per job.
    Several workers run side by side (each uses one pool thread at a time).
    """

    def __init__(self, run_in_thread: Callable[..., Deferred]) -> None:
        self._run = run_in_thread
        self._queue: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred]] = []
        self._busy = False

    def submit(self, work: Callable[..., Any], *args: Any) -> Deferred:
        """
        @return: a Deferred for C{work(*args)}'s outcome.
        """
        d: Deferred = Deferred()
        self._queue.append((work, args, d))
        self._pump()
        return d

    def _pump(self) -> None:
        if self._busy or not self._queue:
            return
        batch, self._queue = self._queue, []
        self._busy = True
        self._run(_run_batch, [(work, args) for work, args, _ in batch]).addBoth(self._done, batch)

    def _done(self, outcomes: Any, batch: list[tuple[Callable[..., Any], tuple[Any, ...], Deferred]]) -> None:
        self._busy = False
        if isinstance(outcomes, Failure):
            outcomes = [outcomes] * len(batch)
        for (_, _, d), outcome in zip(batch, outcomes):
            if isinstance(outcome, Failure):
                d.errback(outcome)
            else:
                d.callback(outcome)
        self._pump()


def _run_batch(jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]]) -> list[Any]:
    """
    (In a thread.)  Run each job; a failing job gives its L{Failure} and
    the next ones still run.
    """
    outcomes: list[Any] = []
    for work, args in jobs:
        try:
            outcomes.append(work(*args))
        except BaseException:
            outcomes.append(Failure())
    return outcomes


def after_all(workers: Sequence[SerialWorker], last: SerialWorker, work: Callable[..., Any], *args: Any) -> Deferred:
    """
    Run C{work} on C{last} once everything queued so far on C{workers} is
    done, in their order (so jobs that the earlier ones' outcomes add to
    the later ones are waited for too).  @return: a Deferred for its outcome.
    """
    outcome: Deferred = Deferred()

    def step(i: int) -> None:
        if i == len(workers):
            last.submit(work, *args).chainDeferred(outcome)
        else:
            workers[i].submit(lambda: None).addBoth(lambda _: step(i + 1))

    step(0)
    return outcome


# -- blocking helpers --------------------------------------------------------------------


def write_all(fd: int, chunks: Sequence[Any], offset: int) -> int:
    """
    Write C{chunks} (bytes-like, in order) at C{offset}, retrying short
    writes.  @return: the bytes written.
    """
    total = 0
    views = [memoryview(c) for c in chunks if len(c)]
    try:
        while views:
            n = os.pwritev(fd, views, offset) if len(views) > 1 else os.pwrite(fd, views[0], offset)
            total += n
            offset += n
            while views and n >= len(views[0]):
                n -= len(views[0])
                views.pop(0).release()
            if n:
                views[0] = views[0][n:]
    finally:
        # A failed write's traceback keeps this frame: the views must not
        # keep the chunks (an mmap'd buffer among them) exported.
        for view in views:
            view.release()
    return total


#: Offsets and lengths of direct writes are multiples of this.
DIRECT_ALIGN = 4096


class PartFile:
    """
    An open part file: one ordinary descriptor (reads, short or unaligned
    writes, fsync) and, where the file system supports it, a second one
    opened with C{O_DIRECT} for the aligned bulk of each write.

    Direct writes do not go through the page cache: a download of a large
    file neither fills memory with pages it will not read again nor pays
    for allocating them (on the virtual machines here, writing into fresh
    page-cache pages costs about as much CPU as hashing the data).  The
    bytes are copied into one reused aligned buffer first.  Durability is
    unchanged: the file is still fsynced before it is moved into place.
    Where C{O_DIRECT} is refused (tmpfs, some file systems), or a direct
    write fails with C{EINVAL}, every write is an ordinary one.

    Blocking: use it from the writer thread only.
    """

    def __init__(self, path: Path, flags: int, direct: bool = True) -> None:
        self.path = Path(path)
        self.fd = open_part(path, flags)
        st = os.fstat(self.fd)
        #: The part file's device and inode (L{install} moves only it).
        self.identity = (st.st_dev, st.st_ino)
        self._direct: int | None = None
        self._buffer: mmap.mmap | None = None
        flag = getattr(os, "O_DIRECT", 0)
        if direct and flag:
            try:
                self._direct = os.open(
                    path, (flags & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL)) | flag | os.O_NOFOLLOW
                )
            except OSError:
                self._direct = None
            else:
                # (By name again: only if it is still the same file.)
                st = os.fstat(self._direct)
                if (st.st_dev, st.st_ino) != self.identity:
                    self._close_direct()

    @property
    def direct(self) -> bool:
        return self._direct is not None

    def write(self, chunks: Sequence[Any], offset: int) -> int:
        """
        Write C{chunks} (bytes-like, in order) at C{offset}.  @return: the
        bytes written.
        """
        size = sum(len(c) for c in chunks)
        bulk = size - size % DIRECT_ALIGN
        if self._direct is None or offset % DIRECT_ALIGN or not bulk:
            return write_all(self.fd, chunks, offset)
        buffer = self._buffer
        if buffer is None or len(buffer) < bulk:
            if buffer is not None:
                buffer.close()
            buffer = self._buffer = mmap.mmap(-1, bulk)
        pos = 0
        tail: list[Any] = []
        refused = None
        with memoryview(buffer) as view, view[:bulk] as aligned:
            for chunk in chunks:
                n = len(chunk)
                take = min(n, bulk - pos)
                if take:
                    view[pos : pos + take] = chunk if take == n else memoryview(chunk)[:take]
                    pos += take
                if take < n:
                    tail.append(memoryview(chunk)[take:])
            try:
                done = os.pwrite(self._direct, aligned, offset)
            except OSError as e:
                if e.errno != errno.EINVAL:
                    raise
                refused, done = e.strerror or str(e), 0
            if done < bulk:
                # (A short or refused direct write: the rest the ordinary way.)
                with aligned[done:] as rest:
                    write_all(self.fd, [rest], offset + done)
        if refused is not None:
            log.info("direct writes refused ({why}); writing through the page cache", why=refused)
            self._close_direct()
        if tail:
            write_all(self.fd, tail, offset + bulk)
        return size

    def sync(self) -> None:
        """
        Flush to disk.  @raise LocalWriteError: (L{NoSpaceLeft} for a full
        disk, which some file systems only report here).
        """
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise write_error(self.path, e)

    def _close_direct(self) -> None:
        fd, self._direct = self._direct, None
        if fd is not None:
            os.close(fd)

    def _close_fd(self) -> None:
        fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """
        Close both descriptors and let go of the buffer, whatever fails on
        the way (then the first error is raised).  Closing twice is no error.
        """
        error: OSError | None = None
        for step in (self._close_direct, self._close_fd):
            try:
                step()
            except OSError as e:
                error = error or e
        buffer, self._buffer = self._buffer, None
        if buffer is not None:
            try:
                buffer.close()
            except BufferError:
                # A view of it is still alive somewhere: the mapping goes
                # with the last one (it is memory, not the file's space).
                log.warn("the part file's write buffer is still in use; leaving it to the garbage collector")
        if error is not None:
            raise error


def open_part(path: Path, flags: int) -> int:
    """
    Open a part file as C{flags} say (C{O_CREAT}, and C{O_TRUNC} for a new
    download), but only ever a regular file of ours at C{path} itself: a
    symbolic link, a hard link to another name, a FIFO or a device planted
    there is never followed nor written to.  It is removed (the name only,
    never what it points to) and a new part file is created in its place
    with C{O_EXCL}, which creates a file or fails, never follows.

    C{O_TRUNC} starts from an empty file: whatever is at C{path} is removed
    first.  Otherwise an existing regular file (with no other name) is
    opened for resuming.

    @return: the descriptor.
    """
    base = (flags & ~(os.O_CREAT | os.O_TRUNC | os.O_EXCL)) | os.O_NOFOLLOW | os.O_CLOEXEC
    if not flags & os.O_TRUNC:
        try:
            # (O_NONBLOCK: a FIFO planted there must not block the open.)
            fd = os.open(path, base | os.O_NONBLOCK)
        except FileNotFoundError:
            fd = -1
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
                raise
            log.warn("{path} is not a regular file; replacing it", path=str(path))
            fd = -1
        if fd >= 0:
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                os.set_blocking(fd, True)
                return fd
            os.close(fd)
            log.warn("{path} is not a regular file of its own; replacing it", path=str(path))
    if flags & os.O_CREAT:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except IsADirectoryError:
            raise
        return os.open(path, base | os.O_CREAT | os.O_EXCL, 0o644)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))


def regular_part(part: Path, identity: tuple[int, int] | None = None) -> bool:
    """
    Whether C{part} is (still) a regular file with no other name (and, when
    C{identity} is given, that device and inode): the only thing
    L{install} moves into place.  Not a symbolic link.
    """
    try:
        st = os.lstat(part)
    except OSError:
        return False
    if identity is not None and (st.st_dev, st.st_ino) != identity:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_nlink == 1


def write_atomically(target: Path, data: bytes, sync_dir: bool = True) -> None:
    """
    Replace C{target} with C{data}: temp file beside it, fsync, rename, and
    (C{sync_dir}) fsync the directory so that the rename is durable.
    """
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=target.name + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        unlink_quietly(Path(tmp))
        raise
    if sync_dir:
        fsync_dir(directory)


def fsync_dir(path: Path) -> None:
    """
    Make a rename durable.  Some file systems cannot fsync a directory;
    the rename itself is still atomic there, so that is not an error.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        log.debug("cannot open {path} to fsync it: {e}", path=str(path), e=e)
        return
    try:
        os.fsync(fd)
    except OSError as e:
        log.debug("cannot fsync {path}: {e}", path=str(path), e=e)
    finally:
        os.close(fd)


def unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def link_exclusive(part: Path, final: Path) -> None:
    """
    Put C{part} at C{final} only if nothing is there (atomic with
    C{os.link}); fall back to an exclusive create + rename where hard
    links are not supported.
    """
    try:
        # (Never through a symbolic link: link the name itself.)
        os.link(part, final, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.EXDEV):
            raise
        fd = os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
        os.replace(part, final)
        return
    os.unlink(part)


def install(part: Path, final: Path, force: bool, keep_part: bool, identity: tuple[int, int] | None = None) -> bool:
    """
    Move a verified (and synced) part file to its final name: over an
    existing file only with C{force}, else never; and only a regular file
    with no other name (L{regular_part}; of C{identity}, the part file's
    device and inode, when given).

    @param keep_part: when the final name was taken meanwhile, keep the
        part (a resumable download) rather than remove it.
    @return: True when an existing file was replaced.
    @raise errors.AlreadyExists: the final name appeared meanwhile.
    @raise LocalWriteError: the move failed (the part is removed unless
        C{keep_part}), or C{part} is not the file the download wrote (it
        is removed).
    """
    if not regular_part(part, identity):
        unlink_quietly(part)
        raise LocalWriteError(f"{part} is no longer the file this download wrote; nothing was moved into place")
    existed = os.path.lexists(final)
    try:
        if force:
            os.replace(part, final)
        else:
            link_exclusive(part, final)
    except FileExistsError:
        if keep_part:
            kept = f" (the download is kept in {part.name})"
        else:
            unlink_quietly(part)
            kept = ""
        raise errors.AlreadyExists(f"{final} appeared during the download; nothing was overwritten{kept}")
    except OSError as e:
        if not keep_part:
            unlink_quietly(part)
        raise LocalWriteError(f"cannot move the download to {final}: {e.strerror or e}")
    return existed and force


def summarize_failures(fname: str, failures: Sequence[tuple[str, str]]) -> str:
    """
    One line for a fetch that found no source to finish it: the last
    reason of each source, in the order they first failed.
    """
    last: dict[str, str] = {}
    for label, reason in failures:
        last[label] = reason
    details = "; ".join(f"{label}: {reason}" for label, reason in last.items())
    return f"could not fetch {fname} from any source ({details})"


def first_line(e: BaseException) -> str:
    text = str(e).strip() or e.__class__.__name__
    return text.splitlines()[0]
