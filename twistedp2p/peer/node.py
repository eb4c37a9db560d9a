"""
L{PeerNode}: what every peer command calls (the shell now, the web
dashboard later).  No protocol code here: the library, the tracker link,
the session slots and L{Download} do the work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from twisted.internet.defer import CancelledError, Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedp2p import errors, wire
from twistedp2p.peer.download import (
    Connect,
    Download,
    DownloadSettings,
    FetchResult,
    Progress,
    _unlink_quietly,
    choose_sources,
)
from twistedp2p.peer.events import Events
from twistedp2p.peer.library import ChangedWhileHashing, Entry, Library
from twistedp2p.peer.partfile import part_name
from twistedp2p.peer.pieces import piece_count
from twistedp2p.peer.ratelimit import TokenBucket
from twistedp2p.peer.slots import DOWN, UP, Slots
from twistedp2p.peer.swarm import PartState, SwarmDownload, find_states, plan_swarm, read_state, state_name
from twistedp2p.peer.transfers import Transfers
from twistedp2p.textfmt import quote_name


@dataclass(frozen=True)
class PublishResult:
    fname: str
    #: The tracker's answer: ``created``, ``updated`` or ``unchanged``.
    status: str
    size: int
    sha256: str
    path: str


@dataclass(frozen=True)
class FolderPublishResult:
    """
    What C{publish DIR} did: the shared-name prefix (C{DIR}), the files
    published, and C{(fname, message)} for each file that was not.
    """

    folder: str
    path: str
    published: tuple[PublishResult, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.published)


@dataclass(frozen=True)
class PublishFailed:
    """
    One match of a glob (or one argument) that could not be published.
    """

    lname: str
    message: str


@dataclass(frozen=True)
class FolderFetchResult:
    """
    What C{fetch DIR/} did: the files fetched (each verified as usual), the
    names already here with the listed content (not fetched again), and
    C{(fname, message)} for each file that failed.
    """

    folder: str
    fetched: tuple[FetchResult, ...]
    present: tuple[str, ...]
    failed: tuple[tuple[str, str], ...]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.fetched)

    @property
    def verified(self) -> bool:
        return all(r.verified for r in self.fetched)


#: Files of one folder fetched at once (at most the download slots).
FOLDER_FETCHES = 4
#: Tracker publish requests of one folder in flight at once.
FOLDER_PUBLISHES = 32
#: Seconds between two checks of the published files for changes on disk.
WATCH_INTERVAL = 5.0

#: The characters that make a C{publish} argument a glob.
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class UnpublishResult:
    fname: str
    #: False when the tracker could not be told (it forgets the file when
    #: our session ends; we never announce it again).
    tracker_told: bool


class PeerNode:
    """
    One peer: publishes, unpublishes, fetches and searches.

    Every method that talks to the tracker returns a Deferred and fails with
    an L{errors.P2PError} subclass for anything a user may cause or meet.

    @ivar events: an L{Events}; subscribe to hear ``link``, ``published``,
        ``unpublished``, ``fetched``, ``transfer_started`` and
        ``transfer_finished`` events.
    @ivar link: the L{TrackerLink} (set by the service).
    @ivar p2p_port: the port we serve on (set by the service once bound).
    @ivar uploads: the upload factory (set by the service), for the
        served-ranges counters in L{status}.
    @ivar upload_bucket: the upload cap, for L{status}.
    """

    log = Logger()

    def __init__(
        self,
        *,
        hostname: str,
        library: Library,
        slots: Slots,
        transfers: Transfers,
        events: Events,
        clock: Any,
        run_in_thread: Callable[..., Deferred],
        connect: Connect,
        settings: DownloadSettings | None = None,
        link: Any = None,
        download_bucket: TokenBucket | None = None,
    ) -> None:
        self.hostname = hostname
        self.library = library
        self.repo = library.repo
        self.slots = slots
        self.transfers = transfers
        self.events = events
        self.clock = clock
        self.settings = settings or DownloadSettings()
        self.link = link
        self.p2p_port: int | None = None
        #: The short fingerprint of this peer's key (L{twistedp2p.identity}),
        #: once the service loaded it.
        self.fingerprint: str | None = None
        self.download_bucket = download_bucket
        self.upload_bucket: TokenBucket | None = None
        self.uploads: Any = None
        self._run = run_in_thread
        self._connect = connect
        self._fetching: set[str] = set()
        self._running: set[Deferred] = set()
        #: Multi-source downloads in progress (a stopping peer waits for
        #: them to record their pieces).
        self._swarms: set[SwarmDownload] = set()
        #: The Deferred of each fetch in progress, by name (pause, cancel).
        self._calls: dict[str, Deferred] = {}
        #: Why a fetch is being stopped (``paused``, ``cancelled``), by name.
        self._stopping: dict[str, str] = {}
        self._stop_waiters: dict[str, list[Deferred]] = {}
        #: Downloads paused by L{pause}: name -> (pieces kept, piece count).
        self.paused: dict[str, tuple[int, int | None]] = {}
        self._stopped = False
        library.stale_observers.append(self._stale)

    # -- tracker --------------------------------------------------------------

    def _tracker(self, action: str, **fields: Any) -> Deferred:
        if self.link is None:
            return fail(errors.TrackerUnavailable())

        def translate(failure: Any) -> Any:
            if failure.check(errors.RequestFailed) and failure.value.code == "index_unavailable":
                raise errors.IndexUnavailable(str(failure.value))
            return failure

        return self.link.request(action, **fields).addErrback(translate)

    @staticmethod
    def publish_fields(entry: Entry, allow_overwrite: bool) -> dict[str, Any]:
        """
        The ``publish`` request for an entry (native peers send their shared
        name as ``lname``: local paths never leave the peer).
        """
        fields = {
            "fname": entry.fname,
            "lname": entry.fname,
            "file_size": entry.size,
            "last_modified": entry.mtime,
            "sha256": entry.sha256,
            "allow_overwrite": allow_overwrite,
        }
        if entry.root is not None and entry.pieces is not None:
            fields["root"] = entry.root
            fields["piece_size"] = entry.piece_size
        return fields

    def announce_all(self, protocol: Any) -> Deferred:
        """
        Tell a new tracker session about every published file (called by
        the link after each hello).  Stale entries are dropped first.
        """
        return Deferred.fromCoroutine(self._announce_all(protocol))

    async def _announce_all(self, protocol: Any) -> None:
        try:
            # Files changed while we were away are hashed and announced
            # again (below) rather than dropped by the prune.
            await self._check_changes(tell_tracker=False)
        except Exception:
            self.log.failure("checking published files for changes failed")
        await self.library.prune()
        try:
            await self.library.ensure_pieces()
        except Exception:
            # Announce without roots: those files are still served whole.
            self.log.failure("hashing published files piece by piece failed")
        entries = self.library.entries()
        results = await DeferredList(
            [protocol.request("publish", **self.publish_fields(e, True)) for e in entries],
            consumeErrors=True,
        )
        for entry, (ok, value) in zip(entries, results):
            if not ok:
                self.log.warn(
                    "announcing {fname} failed: {error}",
                    fname=entry.fname,
                    error=value.getErrorMessage(),
                )
        if entries:
            self.log.info("announced {n} published file(s)", n=len(entries))
        self.resume_pending().addErrback(
            lambda f: self.log.failure("looking for partial downloads failed", f)
        )

    def _stale(self, entry: Entry, reason: str) -> None:
        self.events.emit(
            "unpublished",
            f"unpublished {entry.fname}: {reason}",
            fname=entry.fname,
            reason=reason,
        )
        if self.link is None or self.link.protocol is None:
            return

        def ignore(failure: Any) -> None:
            failure.trap(errors.RequestFailed, errors.TrackerUnavailable)
            self.log.info(
                "could not unpublish stale {fname}: {error}",
                fname=entry.fname,
                error=failure.getErrorMessage(),
            )

        self._tracker("unpublish", fname=entry.fname).addErrback(ignore)

    # -- commands ----------------------------------------------------------------

    def publish(self, lname: str, fname: str, force: bool = False) -> Deferred:
        """
        Publish the local file C{lname} under the shared name C{fname}.

        @return: Deferred firing a L{PublishResult}; fails with
            L{errors.BadName}, L{errors.UnsafePath}, L{errors.Conflict}
            (C{fname} is published for different content and not C{force}),
            L{errors.TrackerUnavailable}, L{errors.RequestFailed}.
        """
        return Deferred.fromCoroutine(self._publish(lname, fname, force))

    async def _publish(self, lname: str, fname: str, force: bool) -> PublishResult:
        entry = await self.library.describe(lname, fname)
        existing = self.library.get(fname)
        same_content = existing is not None and existing.same_content(entry)
        if existing is not None and not same_content and not force:
            raise errors.Conflict(
                f"{fname} is already published for {existing.path}"
                f" ({existing.size} bytes, sha256 {existing.sha256[:12]}); use --force to replace it"
            )
        reply = await self._tracker(
            "publish", **self.publish_fields(entry, force or existing is not None)
        )
        status = reply.get("status")
        if status == wire.CONFLICT:
            raise errors.Conflict(
                f"the tracker already lists {fname} for this peer with different content;"
                " use --force to replace it"
            )
        if existing is not None and existing.same_file(entry):
            entry = dataclasses.replace(entry, published_at=existing.published_at)
        await self.library.put(entry)
        if status not in (wire.CREATED, wire.UPDATED, wire.UNCHANGED):
            status = wire.CREATED if existing is None else wire.UPDATED
        self.events.emit(
            "published",
            f"published {fname}: {status}",
            fname=fname,
            status=status,
            size=entry.size,
            sha256=entry.sha256,
        )
        return PublishResult(fname, status, entry.size, entry.sha256, entry.path)

    # -- publish FILE, publish DIR, publish GLOB -------------------------------------

    def publish_any(self, lname: str, fname: str | None = None, force: bool = False) -> Deferred:
        """
        What the shell's C{publish} does with its arguments: a glob
        (C{*}, C{?}, C{[}; no C{fname}) publishes each match as if named
        alone; a folder is published with L{publish_folder}; a file under
        C{fname}, or without one under L{Library.name_for} its path.

        @return: Deferred firing a list, one item per file or folder, of
            L{PublishResult}, L{FolderPublishResult} or L{PublishFailed};
            fails (for one file or folder named alone) as L{publish} does.
        """
        return Deferred.fromCoroutine(self._publish_any(lname, fname, force))

    async def _publish_any(self, lname: str, fname: str | None, force: bool) -> list[Any]:
        if "\0" in lname:
            raise errors.UnsafePath(f"{lname!r}: a path must not contain NUL")
        is_glob = any(c in lname for c in GLOB_CHARS)
        if is_glob and not await self._run(os.path.lexists, self.repo / lname):
            if fname is not None:
                raise errors.BadName(f"{lname}: a pattern publishes each match under its own name; give no FNAME")
            matches = await self._run(self.library.expand, lname)
            if not matches:
                raise errors.UnsafePath(f"{lname}: no file matches in the repository or a share root")
            out: list[Any] = []
            for match in matches:
                try:
                    out.extend(await self._publish_any(match, None, force))
                except errors.P2PError as e:
                    out.append(PublishFailed(match, str(e)))
            return out
        if await self._run(self.library.is_folder, lname):
            return [await self.publish_folder(lname, fname, force)]
        if fname is None:
            fname = await self._run(self.library.name_for, lname)
        return [await self.publish(lname, fname, force)]

    def publish_folder(self, lname: str, prefix: str | None = None, force: bool = False) -> Deferred:
        """
        Publish every regular file below the folder C{lname} as
        C{PREFIX/relative/path} (C{prefix}: the folder's own name by
        default; see L{Library.scan_folder}).  The walk and the hashing
        run in threads; a file that cannot be published is reported in
        the result and does not stop the others.

        @return: Deferred firing a L{FolderPublishResult}; fails with
            L{errors.UnsafePath} or L{errors.BadName} for the folder itself.
        """
        return Deferred.fromCoroutine(self._publish_folder(lname, prefix, force))

    async def _publish_folder(self, lname: str, prefix: str | None, force: bool) -> FolderPublishResult:
        scan = await self._run(self.library.scan_folder, lname, prefix)
        failed = list(scan.problems)
        entries: list[tuple[Entry, Entry | None]] = []
        for fname, path in scan.files:
            try:
                entry = await self._run(self.library.describe_path, path, fname)
            except errors.P2PError as e:
                failed.append((fname, str(e)))
                continue
            existing = self.library.get(fname)
            if existing is not None and not existing.same_content(entry) and not force:
                failed.append(
                    (fname, f"already published for {existing.path}; use --force to replace it")
                )
                continue
            if existing is not None and existing.same_file(entry):
                entry = dataclasses.replace(entry, published_at=existing.published_at)
            entries.append((entry, existing))
        published: list[PublishResult] = []
        kept: list[Entry] = []
        for start in range(0, len(entries), FOLDER_PUBLISHES):
            batch = entries[start : start + FOLDER_PUBLISHES]
            replies = await DeferredList(
                [
                    self._tracker("publish", **self.publish_fields(e, force or old is not None))
                    for e, old in batch
                ],
                consumeErrors=True,
            )
            for (entry, existing), (ok, reply) in zip(batch, replies):
                if not ok:
                    if not reply.check(errors.P2PError):
                        self.log.failure("publishing {fname} failed", reply, fname=entry.fname)
                    failed.append((entry.fname, reply.getErrorMessage()))
                    continue
                status = reply.get("status")
                if status == wire.CONFLICT:
                    failed.append(
                        (entry.fname, "the tracker lists it for this peer with different content; use --force")
                    )
                    continue
                if status not in (wire.CREATED, wire.UPDATED, wire.UNCHANGED):
                    status = wire.CREATED if existing is None else wire.UPDATED
                kept.append(entry)
                published.append(PublishResult(entry.fname, status, entry.size, entry.sha256, entry.path))
        if kept:
            await self.library.put_many(kept)
        result = FolderPublishResult(scan.prefix, scan.path, tuple(published), tuple(sorted(failed)))
        self.events.emit(
            "published",
            f"published {scan.prefix}: {len(published)} files",
            fname=scan.prefix + "/",
            status="folder",
            files=len(published),
            size=result.size,
            failed=len(failed),
        )
        return result

    def unpublish(self, fname: str) -> Deferred:
        """
        Stop sharing C{fname}: at once locally, then at the tracker.

        @return: Deferred firing an L{UnpublishResult}; fails with
            L{errors.BadName} or L{errors.NotPublished}.
        """
        return Deferred.fromCoroutine(self._unpublish(fname))

    async def _unpublish(self, fname: str) -> UnpublishResult:
        problem = wire.fname_problem(fname)
        if problem is not None:
            raise errors.BadName(f"{fname!r}: {problem}")
        if fname not in self.library:
            raise errors.NotPublished(f"{fname} is not published here")
        await self.library.remove(fname)
        told = True
        try:
            await self._tracker("unpublish", fname=fname)
        except errors.RequestFailed as e:
            if e.code != "not_published":
                told = False
                self.log.warn("the tracker refused to unpublish {fname}: {e}", fname=fname, e=str(e))
        except (errors.TrackerUnavailable, errors.IndexUnavailable):
            told = False
        self.events.emit("unpublished", f"unpublished {fname}", fname=fname, reason="requested")
        return UnpublishResult(fname, told)

    def fetch(
        self,
        fname: str,
        source: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> Deferred:
        """
        Download C{fname} into the repository, verify it, and share it.

        @param source: only fetch from this hostname (or address).
        @param force: replace an existing C{REPO/fname}.
        @param progress: called with C{(bytes done, total or None)}.
        @return: Deferred firing a L{FetchResult}; fails with
            L{errors.BadName}, L{errors.AlreadyExists} (checked before
            anything is downloaded), L{errors.NoSources},
            L{errors.AmbiguousContent}, L{errors.TransferFailed},
            L{errors.TrackerUnavailable}.
        """
        if fname not in self._calls:
            # Fetching a paused download continues it, as resume does.
            self.paused.pop(fname, None)
        d = Deferred.fromCoroutine(self._fetch(fname, source, force, progress))
        return self._track(self._named(fname, d))

    def _named(self, fname: str, d: Deferred) -> Deferred:
        if not d.called and fname not in self._calls:
            self._calls[fname] = d

            def forget(result: Any) -> Any:
                # First in the chain: sees the fetch's own result.
                if self._calls.get(fname) is d:
                    del self._calls[fname]
                self._ended(fname, result)
                return result

            d.addBoth(forget)
        return d

    def fetching(self) -> list[str]:
        """
        The names being fetched now (foreground and background).
        """
        return sorted(self._calls)

    def pause(self, fname: str) -> Deferred:
        """
        Stop fetching C{fname}, keeping its verified pieces on disk; its
        fetch fails with L{errors.Interrupted} (reason ``paused``) and
        L{resume} continues it.

        @return: Deferred firing C{(pieces kept, piece count or None)} once
            the partial download is recorded; fails with
            L{errors.NotPublished}-like L{errors.TransferFailed} when
            C{fname} is not being fetched.
        """
        return self._stop_fetch(fname, "paused")

    def cancel(self, fname: str) -> Deferred:
        """
        Stop fetching C{fname} (or forget a paused download) and remove its
        partial files.

        @return: Deferred firing C{(pieces dropped, piece count or None)}.
        """
        if fname not in self._calls and fname in self.paused:
            kept = self.paused.pop(fname)
            return self._discard(fname).addCallback(lambda _: kept)
        return self._stop_fetch(fname, "cancelled")

    def resume(self, fname: str, progress: Progress | None = None) -> Deferred:
        """
        Continue a paused download (or any partial one) from its part file.
        """
        if fname in self._calls:
            return fail(errors.TransferFailed(f"{fname} is already being fetched"))
        closing = [s.closed for s in self._swarms if s.fname == fname]
        self.paused.pop(fname, None)
        d = DeferredList(closing, consumeErrors=True) if closing else succeed(None)
        return d.addCallback(lambda _: self.fetch(fname, progress=progress))

    def _stop_fetch(self, fname: str, reason: str) -> Deferred:
        call = self._calls.get(fname)
        if call is None:
            return fail(errors.TransferFailed(f"{fname} is not being fetched"))
        self._stopping[fname] = reason
        outcome: Deferred = Deferred()
        self._stop_waiters.setdefault(fname, []).append(outcome)
        call.cancel()
        return outcome

    def _ended(self, fname: str, result: Any) -> None:
        """
        The fetch of C{fname} ended: answer the L{pause} or L{cancel} that
        stopped it, once its partial download is recorded (or removed).
        """
        reason = self._stopping.pop(fname, None)
        waiters = self._stop_waiters.pop(fname, [])
        if not waiters:
            return
        if isinstance(result, Failure) and result.check(errors.Interrupted):
            kept = (result.value.kept, result.value.pieces)
        else:
            kept = (0, None)
        closing = [s.closed for s in self._swarms if s.fname == fname]
        d = DeferredList(closing, consumeErrors=True) if closing else succeed(None)
        if reason == "cancelled":
            d.addCallback(lambda _: self._discard(fname))
        d.addBoth(lambda _: [w.callback(kept) for w in waiters])

    def _discard(self, fname: str) -> Deferred:
        part = self.repo / part_name(fname)
        return self._run(_unlink_quietly, self.repo / state_name(fname)).addCallback(
            lambda _: self._run(_unlink_quietly, part)
        )

    def fetch_folder(
        self,
        folder: str,
        source: str | None = None,
        force: bool = False,
        progress: Progress | None = None,
    ) -> Deferred:
        """
        Fetch every file the tracker lists under C{folder} (C{DIR/}: a
        C{search} for that prefix), each as L{fetch} would (verified,
        shared), at most L{FOLDER_FETCHES} at once.  C{progress} hears the
        whole folder: C{(bytes done of every file, their total)}.  Names
        already published here with the listed content are not fetched
        again (unless C{force}).

        @return: Deferred firing a L{FolderFetchResult}; fails with
            L{errors.BadName} or L{errors.NoSources} (nothing listed).
        """
        return self._track(Deferred.fromCoroutine(self._fetch_folder(folder, source, force, progress)))

    async def _fetch_folder(
        self, folder: str, source: str | None, force: bool, progress: Progress | None
    ) -> FolderFetchResult:
        problem = wire.folder_problem(folder)
        if problem is not None:
            raise errors.BadName(f"{folder!r}: {problem}")
        listed = await self.search(folder)
        sizes: dict[str, int] = {}
        shas: dict[str, set[Any]] = {}
        for item in listed:
            fname = item.get("fname")
            if not isinstance(fname, str) or not fname.startswith(folder) or wire.fname_problem(fname):
                continue
            size = item.get("file_size")
            sizes[fname] = max(sizes.get(fname, 0), size if isinstance(size, int) and size >= 0 else 0)
            shas.setdefault(fname, set()).add(item.get("sha256"))
        if not sizes:
            raise errors.NoSources(f"no live source shares a file under {folder}")
        present = []
        todo = []
        for fname in sorted(sizes):
            entry = self.library.get(fname)
            if (
                not force
                and entry is not None
                and shas[fname] == {entry.sha256}
                and await self.library.check_serving(fname) is not None
            ):
                present.append(fname)
            else:
                todo.append(fname)
        total = sum(sizes[f] for f in todo)
        done: dict[str, int] = {}

        def file_progress(fname: str) -> Progress:
            def report(n: int, _total: int | None) -> None:
                done[fname] = n
                if progress is not None:
                    progress(sum(done.values()), total)

            return report

        fetched: list[FetchResult] = []
        failed: list[tuple[str, str]] = []
        queue = iter(todo)

        async def worker() -> None:
            for fname in queue:
                if self._stopped:
                    failed.append((fname, "not fetched: the peer is stopping"))
                    continue
                try:
                    result = await self.fetch(fname, source, force, file_progress(fname))
                except errors.AlreadyHave:
                    present.append(fname)
                    done[fname] = sizes[fname]
                except errors.P2PError as e:
                    failed.append((fname, str(e)))
                    done[fname] = 0
                except CancelledError:
                    raise
                except Exception as e:
                    self.log.failure("fetching {fname} failed", fname=fname)
                    failed.append((fname, f"unexpected failure: {e}"))
                    done[fname] = 0
                else:
                    fetched.append(result)
                    done[fname] = result.size

        width = max(1, min(FOLDER_FETCHES, self.slots.limits[DOWN]))
        workers = [Deferred.fromCoroutine(worker()) for _ in range(min(width, len(todo)))]
        for ok, value in await DeferredList(workers, consumeErrors=True):
            if not ok:
                # Only a cancelled fetch gets here (the peer is stopping).
                value.raiseException()
        if progress is not None and todo:
            progress(sum(done.values()), total)
        return FolderFetchResult(
            folder,
            tuple(sorted(fetched, key=lambda r: r.fname)),
            tuple(sorted(present)),
            tuple(sorted(failed)),
        )

    def _track(self, d: Deferred) -> Deferred:
        if not d.called:
            self._running.add(d)

            def forget(result: Any) -> Any:
                self._running.discard(d)
                return result

            d.addBoth(forget)
        return d

    def start(self) -> None:
        """
        The peer (re)starts: partial downloads may be resumed again.
        """
        self._stopped = False

    def stop(self) -> Deferred:
        """
        Cancel every fetch in progress (the peer is stopping).  Whole-file
        downloads remove their partial files; multi-source ones keep their
        verified pieces for the next start.

        @return: Deferred firing once every partial download is recorded.
        """
        self._stopped = True
        closing = [swarm.closed for swarm in self._swarms]
        for d in list(self._running):
            d.cancel()
        if not closing:
            return succeed(None)
        return DeferredList(closing, consumeErrors=True).addCallback(lambda _: None)

    async def _fetch(
        self,
        fname: str,
        source: str | None,
        force: bool,
        progress: Progress | None,
        background: bool = False,
    ) -> FetchResult:
        problem = wire.fname_problem(fname)
        if problem is not None:
            raise errors.BadName(f"{fname!r}: {problem}")
        final = self.repo / fname
        if fname in self._fetching:
            raise errors.TransferFailed(f"{fname} is already being fetched")
        if not force and os.path.lexists(final):
            await self._already_here(fname, final, source)
        self._fetching.add(fname)
        try:
            return await self._fetch_sources(fname, source, force, progress, background)
        except (CancelledError, errors.Interrupted) as e:
            stopped = e if isinstance(e, errors.Interrupted) else self._interrupted(fname)
            if stopped.reason == "paused":
                self.paused[fname] = (stopped.kept, stopped.pieces)
            self.events.emit(
                "stopped",
                str(stopped),
                fname=fname,
                reason=stopped.reason,
                kept=stopped.kept,
                pieces=stopped.pieces,
            )
            raise stopped
        finally:
            self._fetching.discard(fname)

    async def _already_here(self, fname: str, final: Any, source: str | None) -> None:
        """
        C{REPO/fname} exists: fail with L{errors.AlreadyHave} when it holds
        the content the sources publish (same SHA-256), else with
        L{errors.AlreadyExists}.
        """
        exists = errors.AlreadyExists(f"{final} already exists; use --force to replace it")
        try:
            reply = await self._tracker("fetch", fname=fname)
            peer_list = reply.get("peer_list")
            sources = choose_sources(fname, peer_list if isinstance(peer_list, list) else [], source)
        except errors.P2PError:
            raise exists
        wanted = sources[0].sha256
        if not wanted:
            raise exists
        mine = self.library.get(fname)
        stat = await self._run(_stat_of, final)
        if stat is None or stat[0] != sources[0].file_size:
            sha = None
        elif mine is not None and os.path.realpath(mine.path) == os.path.realpath(final) and stat == (
            mine.size,
            mine.mtime_ns,
        ):
            sha = mine.sha256
        else:
            sha = await self._run(_sha256_of, final)
        if sha != wanted:
            raise exists
        raise errors.AlreadyHave(
            f"{fname}: already here, same content (sha256 {wanted[:12]}) -> {final}",
            path=str(final),
            sha256=wanted,
        )

    async def _fetch_sources(
        self,
        fname: str,
        source: str | None,
        force: bool,
        progress: Progress | None,
        background: bool,
    ) -> FetchResult:
        reply = await self._tracker("fetch", fname=fname)
        peer_list = reply.get("peer_list")
        if not isinstance(peer_list, list):
            peer_list = []
        sources = choose_sources(fname, peer_list, source)
        limit = self.settings.max_file_size
        size = sources[0].file_size
        if limit is not None and size is not None and size > limit:
            raise errors.FileTooLarge(
                f"{fname} is {size} bytes, more than this peer accepts (--max-file-size {limit})"
            )
        existing = self.library.get(fname)
        if existing is not None and not force and await self.library.check_serving(fname) is None:
            # The file changed or went away before the change watch saw it:
            # the stale entry is dropped (and unpublished), not trusted.
            existing = None
        if (
            existing is not None
            and not force
            and existing.sha256 != sources[0].sha256
        ):
            raise errors.Conflict(
                f"{fname} is already published here for {existing.path}; use --force to replace it"
            )
        if existing is not None and not force and existing.sha256:
            raise errors.AlreadyHave(
                f"{fname}: already here, same content (sha256 {existing.sha256[:12]}) -> {existing.path}",
                path=existing.path,
                sha256=existing.sha256,
            )
        if "/" in fname:
            await self._run(self.library.make_folders, fname)
        state_path = self.repo / state_name(fname)
        state = await self._run(_read_state_quietly, state_path)
        plan = plan_swarm(sources, prefer_root=state.root if state is not None else None)
        if plan is not None:
            result = await self._swarm(fname, plan, force, progress)
        else:
            if state is not None:
                self.log.info(
                    "discarding the partial download of {fname} (root {root}):"
                    " its sources publish no piece list",
                    fname=fname,
                    root=state.root[:12],
                )
                await self._run(_unlink_quietly, state_path)
            try:
                result = await Download(fname, sources, self.repo, **self._download_options(force, progress)).run()
            except CancelledError:
                # A whole-file download keeps nothing.
                raise self._interrupted(fname, whole_file=True)
        published = await self._share_fetched(result)
        result = dataclasses.replace(result, published=published)
        self.events.emit(
            "fetched",
            f"fetched {fname} from {result.source.hostname}",
            fname=fname,
            source=result.source.hostname,
            size=result.size,
            sha256=result.sha256,
            verified=result.verified,
            path=result.path,
            published=result.published,
            contributors=[list(c) for c in result.contributors],
            contributor_keys=list(result.contributor_keys),
            authenticated=result.source.authenticated,
            pieces=result.piece_count,
            resumed=result.resumed,
            background=background,
        )
        return result

    async def _swarm(self, fname: str, plan: Any, force: bool, progress: Progress | None) -> FetchResult:
        swarm = SwarmDownload(fname, plan, self.repo, **self._download_options(force, progress))
        self._swarms.add(swarm)
        swarm.closed.addBoth(lambda _: self._swarms.discard(swarm))
        try:
            return await swarm.run()
        except CancelledError:
            if swarm.fallback is not None:
                # (Every root was exhausted: a whole-file download keeps
                # nothing.)
                raise self._interrupted(fname, whole_file=True)
            # Before the part is open, a previous run's pieces stay as
            # they were recorded.
            kept = len(swarm.have) or len(swarm._claimed)
            raise self._interrupted(fname, kept, piece_count(plan.size, plan.piece_size))

    def _interrupted(
        self, fname: str, kept: int = 0, pieces: int | None = None, whole_file: bool = False
    ) -> errors.Interrupted:
        """
        The error a stopped fetch fails with; its text is the line the
        shell prints (docs/shell.md).
        """
        reason = self._stopping.get(fname, "interrupted")
        name = quote_name(fname)
        if reason == "cancelled":
            text = f"cancelled: {name}, partial download removed"
        elif pieces is not None:
            then = f"resume {name} continues it" if reason == "paused" else "the next fetch resumes it"
            text = f"{reason}: {name}, {kept} of {pieces} pieces kept; {then}"
        elif whole_file:
            text = f"{reason}: {name}, nothing kept (a whole-file download starts again)"
        else:
            text = f"{reason}: {name}"
        return errors.Interrupted(text, fname=fname, reason=reason, kept=kept, pieces=pieces)

    def _download_options(self, force: bool, progress: Progress | None) -> dict[str, Any]:
        """
        What a L{Download} and a L{SwarmDownload} take from this node.
        """
        return {
            "connect": self._connect,
            "clock": self.clock,
            "run_in_thread": self._run,
            "slots": self.slots,
            "transfers": self.transfers,
            "settings": self.settings,
            "force": force,
            "progress": progress,
            "bucket": self.download_bucket,
        }

    def resume_pending(self) -> Deferred:
        """
        Resume, in the background, every partial multi-source download in
        the repository that is not being fetched now (at start-up, once the
        tracker link is up).  Each one emits ``resuming``, then ``fetched``
        or ``resume_failed``.

        @return: Deferred firing the names resumed.
        """
        return Deferred.fromCoroutine(self._resume_pending())

    async def _resume_pending(self) -> list[str]:
        found = await self._run(find_states, self.repo)
        names = []
        for path, state in found:
            if isinstance(state, str):
                self.log.warn("ignoring the partial-download state {path}: {why}", path=str(path), why=state)
                continue
            if self._stopped or state.fname in self._fetching or state.fname in self.paused:
                continue
            if os.path.lexists(self.repo / state.fname):
                self.log.info(
                    "not resuming {fname}: {path} exists (fetch it with --force to replace it)",
                    fname=state.fname,
                    path=str(self.repo / state.fname),
                )
                continue
            names.append(state.fname)
            self._resume(state)
        return names

    def _resume(self, state: PartState) -> None:
        fname = state.fname
        self.events.emit(
            "resuming",
            f"resuming {fname}: {len(state.have)} of {state.count} pieces on disk",
            fname=fname,
            have=len(state.have),
            pieces=state.count,
        )

        def failed(failure: Any) -> None:
            if failure.check(CancelledError):
                return
            if failure.check(errors.Interrupted):
                if failure.value.reason == "paused":
                    self.events.emit("paused", f"paused {fname}", fname=fname)
                return
            if not failure.check(errors.P2PError):
                self.log.failure("resuming {fname} failed", failure, fname=fname)
            self.events.emit(
                "resume_failed",
                f"resuming {fname} failed: {failure.getErrorMessage()}; the partial download is kept",
                fname=fname,
                reason=failure.getErrorMessage(),
            )

        d = Deferred.fromCoroutine(self._fetch(fname, None, False, None, background=True))
        d = self._track(self._named(fname, d))
        d.addErrback(failed)

    async def _share_fetched(self, result: FetchResult) -> bool:
        entry = await self.library.describe_known(
            result.path, result.fname, result.size, result.sha256, pieces=result.pieces
        )
        await self.library.put(entry)
        try:
            await self._tracker("publish", **self.publish_fields(entry, True))
        except (errors.TrackerUnavailable, errors.RequestFailed, errors.IndexUnavailable) as e:
            self.log.info(
                "fetched {fname} but could not announce it yet ({error});"
                " it is announced on the next connection",
                fname=result.fname,
                error=str(e),
            )
            return False
        return True

    # -- changes on disk ---------------------------------------------------------------

    def check_changes(self) -> Deferred:
        """
        Look for published files changed on disk (a C{stat} of each, in a
        thread; the service calls this every L{WATCH_INTERVAL} seconds): a
        file changed in place is hashed again (in a thread) and published
        again under the same name (``published`` event with
        C{republished=True}); a file gone, moved or no longer shareable is
        unpublished at once (``unpublished`` event, as at a fetch).

        @return: Deferred firing the names republished and unpublished;
            it never fails (problems are logged).
        """
        d = Deferred.fromCoroutine(self._check_changes())

        def failed(failure: Any) -> tuple[list[str], list[str]]:
            self.log.failure("checking published files for changes failed", failure)
            return [], []

        return d.addErrback(failed)

    async def _check_changes(self, tell_tracker: bool = True) -> tuple[list[str], list[str]]:
        republished: list[str] = []
        dropped: list[str] = []
        for entry, kind, reason in await self.library.scan_changes():
            if self.library.get(entry.fname) != entry:
                continue
            if kind == "changed":
                fresh = await self._rehash(entry, tell_tracker)
                if fresh is None:
                    continue
                if isinstance(fresh, Entry):
                    republished.append(entry.fname)
                    continue
                reason = fresh
            self.library.drop(entry, reason)
            dropped.append(entry.fname)
        return republished, dropped

    async def _rehash(self, entry: Entry, tell_tracker: bool = True) -> Entry | str | None:
        """
        Hash a changed file again and publish it again (at the tracker too
        when C{tell_tracker}; else the caller announces it).  @return: the new
        entry; None to leave it for the next check (it is still being
        written, or the entry changed meanwhile); or why it may not be
        shared any more.
        """
        try:
            fresh = await self.library.describe(entry.path, entry.fname)
        except ChangedWhileHashing:
            return None
        except errors.P2PError as e:
            return str(e)
        if self.library.get(entry.fname) != entry:
            return None
        await self.library.put(fresh)
        try:
            if tell_tracker:
                await self._tracker("publish", **self.publish_fields(fresh, True))
        except (errors.TrackerUnavailable, errors.RequestFailed, errors.IndexUnavailable) as e:
            self.log.info(
                "republished {fname} here but could not tell the tracker ({error});"
                " it is announced on the next connection",
                fname=entry.fname,
                error=str(e),
            )
        self.log.info(
            "republished {fname} (changed on disk): {size} bytes, sha256 {sha256}",
            fname=entry.fname,
            size=fresh.size,
            sha256=fresh.sha256,
        )
        self.events.emit(
            "published",
            f"republished {entry.fname} (changed on disk)",
            fname=entry.fname,
            status=wire.UPDATED,
            size=fresh.size,
            sha256=fresh.sha256,
            republished=True,
        )
        return fresh

    #: Catalogue pages a search follows at most (C{next} cursors), a guard
    #: against a tracker that never ends: 100 pages of up to 1,000 entries.
    MAX_SEARCH_PAGES = 100

    def search(self, pattern: str = "") -> Deferred:
        """
        The tracker's catalogue: one dict per distinct content (``fname``,
        ``file_size``, ``sha256``, ``sources``, ``hostnames``), by name.
        The tracker answers in pages; every page is fetched (following its
        ``next`` cursor), up to L{MAX_SEARCH_PAGES}.  A pattern ending
        with ``/`` lists that folder.
        """
        if len(pattern) > wire.MAX_PATTERN_CHARS:
            return fail(errors.BadName(f"a pattern is at most {wire.MAX_PATTERN_CHARS} characters"))
        return Deferred.fromCoroutine(self._search(pattern))

    async def _search(self, pattern: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        fields: dict[str, Any] = {"pattern": pattern}
        for _ in range(self.MAX_SEARCH_PAGES):
            reply = await self._tracker("search", **fields)
            files = reply.get("files")
            if isinstance(files, list):
                found += [f for f in files if isinstance(f, dict)]
            cursor = reply.get("next")
            if not isinstance(cursor, str) or not cursor:
                break
            fields = {"pattern": pattern, "cursor": cursor}
        else:
            self.log.warn("search {pattern!r}: stopped after {n} pages", pattern=pattern, n=self.MAX_SEARCH_PAGES)
        return found

    def published(self) -> list[dict[str, Any]]:
        """
        The published files as ``status`` and the dashboard show them.
        """
        return [
            {
                "fname": e.fname,
                "path": e.path,
                "size": e.size,
                "sha256": e.sha256,
                "mtime": e.mtime,
                "published_at": e.published_at,
            }
            for e in self.library.entries()
        ]

    def status(self) -> dict[str, Any]:
        """
        A snapshot for ``status`` and the dashboard (plain JSON-able data).
        """
        link = self.link.status() if self.link is not None else {"state": "stopped"}
        return {
            "hostname": self.hostname,
            "fingerprint": self.fingerprint,
            "p2p_port": self.p2p_port,
            "repo": str(self.repo),
            "share_roots": [str(r) for r in self.library.share_roots],
            "tracker": link,
            "sessions": {
                "limit": self.slots.limit,
                "upload_limit": self.slots.limits[UP],
                "download_limit": self.slots.limits[DOWN],
                "in_use": self.slots.in_use,
                "uploads": self.slots.active[UP],
                "downloads": self.slots.active[DOWN],
                "waiting": self.slots.waiting,
                "peak_uploads": self.slots.peak[UP],
                "peak_downloads": self.slots.peak[DOWN],
                "refused": self.slots.refused,
            },
            "published": self.published(),
            "transfers": self.transfers.snapshot(),
            "completed": dict(self.transfers.completed),
            "served": {
                "ranges": getattr(self.uploads, "served_ranges", 0),
                "bytes": getattr(self.uploads, "served_bytes", 0),
            },
            "limits": {
                "upload_rate": self.upload_bucket.rate if self.upload_bucket is not None else 0,
                "download_rate": self.download_bucket.rate if self.download_bucket is not None else 0,
                "max_file_size": self.settings.max_file_size,
                "max_sources": self.settings.max_sources,
            },
        }


def _stat_of(path: Any) -> tuple[int, int] | None:
    """
    (In a thread.)  C{(size, mtime_ns)} of a file, or None.
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _sha256_of(path: Any) -> str | None:
    """
    (In a thread.)  The SHA-256 of a file, or None when it cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def _read_state_quietly(path: Any) -> PartState | None:
    """
    A partial download's state, or None when there is none or it is
    unreadable (the download then removes it).
    """
    try:
        return read_state(path)
    except (OSError, ValueError):
        return None
