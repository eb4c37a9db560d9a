"""
The peer's dashboard: published files, publishing from a file picker,
catalogue search with one-click fetch, transfers with progress, the
tracker link and the K cap.

L{PeerDashboard} answers the API by calling the same L{PeerNode} methods
the peer shell calls (so every input is checked by the same code), and
turns the node's events into dashboard events.  L{list_shareable} is the
file picker: it only lists what L{Library.resolve} accepts.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import IService
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from twistedp2p import errors, wire
from twistedp2p.peer.node import FolderPublishResult, PublishFailed
from twistedp2p.web.api import ApiError, Params, Routes, bool_field, error_reply, text_field
from twistedp2p.web.dashboard import add_log_routes, dashboard_service
from twistedp2p.web.metrics import PeerMetrics
from twistedp2p.web.sse import EventHub, Ticker

#: Seconds between transfer progress updates while transfers run.
PROGRESS_INTERVAL = 0.5
#: Finished transfers kept for the page.
RECENT_TRANSFERS = 20
#: The file picker lists at most this many files ...
MAX_PICKER_FILES = 2000
#: ... and looks at most at this many directory entries.
MAX_PICKER_SCAN = 50000
#: The file picker lists at most this many folders.
MAX_PICKER_FOLDERS = 500

_LEVELS = {
    "published": "ok",
    "fetched": "ok",
    "transfer_started": "info",
    "notice": "info",
}


def list_shareable(
    library: Any,
    max_files: int = MAX_PICKER_FILES,
    max_scan: int = MAX_PICKER_SCAN,
    max_folders: int = MAX_PICKER_FOLDERS,
) -> dict[str, Any]:
    """
    The regular files a user may publish: everything under the repository
    and the share roots that L{Library.resolve} accepts (hidden
    directories are not entered), and the folders that hold them (each
    share root, and every folder below a root; publish shares a folder as
    C{publish DIR} does).  Blocking: run it in a thread.

    @return: C{{"files": [...], "folders": [...], "truncated": bool,
        "roots": [...]}}; each file has C{lname} (what to pass to publish:
        relative to the repository, or absolute in a share root), C{root},
        C{relpath}, C{size}, C{mtime} and C{published_as} (shared names of
        it); each folder has C{lname}, C{root}, C{relpath} (C{.} for a
        share root), C{name} (the shared name it gets without C{fname};
        None if its path is not a valid name) and C{files} (how many of
        the listed files are below it).
    """
    published: dict[str, list[str]] = {}
    for entry in library.entries():
        published.setdefault(entry.path, []).append(entry.fname)
    files: list[dict[str, Any]] = []
    folders: dict[Path, dict[str, Any]] = {}
    scanned = 0
    truncated = False
    seen: set[str] = set()
    repo = Path(library.repo)
    for root in library.roots():
        root = Path(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            here = Path(dirpath)
            if here != repo and here not in folders:
                if len(folders) >= max_folders:
                    truncated = True
                else:
                    lname = str(here.relative_to(repo)) if root == repo else str(here)
                    try:
                        name = library.name_for(lname)
                    except (errors.UnsafePath, errors.BadName):
                        name = None
                    folders[here] = {
                        "lname": lname,
                        "root": str(root),
                        "relpath": str(here.relative_to(root)),
                        "name": name,
                        "files": 0,
                    }
            for name in sorted(filenames):
                scanned += 1
                if scanned > max_scan or len(files) >= max_files:
                    truncated = True
                    break
                path = Path(dirpath) / name
                lname = str(path.relative_to(repo)) if root == repo else str(path)
                try:
                    real = library.resolve(lname)
                    st = os.stat(real)
                except (errors.UnsafePath, OSError):
                    continue
                if str(real) in seen:
                    continue
                seen.add(str(real))
                for folder in (Path(dirpath), *Path(dirpath).parents):
                    if folder in folders:
                        folders[folder]["files"] += 1
                    if folder == root:
                        break
                files.append(
                    {
                        "lname": lname,
                        "root": str(root),
                        "relpath": str(path.relative_to(root)),
                        "size": st.st_size,
                        "mtime": st.st_mtime,
                        "published_as": published.get(str(real), []),
                    }
                )
            if truncated:
                break
        if truncated:
            break
    return {
        "roots": [str(r) for r in library.roots()],
        "files": files,
        # (Folders with nothing to share are left out.)
        "folders": [f for f in folders.values() if f["files"]],
        "truncated": truncated,
    }


def _publish_answer(r: Any) -> dict[str, Any]:
    """
    The API's answer for one item of L{PeerNode.publish_any}: a file, a
    folder or (one match of a glob) a failure.
    """
    if isinstance(r, PublishFailed):
        return {"lname": r.lname, "error": f"error: {r.message}"}
    if isinstance(r, FolderPublishResult):
        n = len(r.published)
        text = f"published {r.folder}: {n} file{'' if n == 1 else 's'} ({r.size} bytes)"
        if r.failed:
            text += f", {len(r.failed)} left out"
        return {
            "folder": r.folder,
            "path": r.path,
            "size": r.size,
            "files": [_publish_answer(f) for f in r.published],
            "failed": [list(f) for f in r.failed],
            "text": text,
        }
    return {
        "fname": r.fname,
        "status": r.status,
        "size": r.size,
        "sha256": r.sha256,
        "path": r.path,
        "text": f"published {r.fname}: {r.status}",
    }


class _Rate:
    """
    A smoothed transfer rate from (time, bytes done) samples.
    """

    def __init__(self, now: float, done: int) -> None:
        self.time = now
        self.done = done
        self.rate: float | None = None

    def update(self, now: float, done: int) -> float | None:
        dt = now - self.time
        if dt >= 0.25:
            current = max(0, done - self.done) / dt
            self.rate = current if self.rate is None else 0.5 * self.rate + 0.5 * current
            self.time, self.done = now, done
        return self.rate


class PeerDashboard:
    """
    API handlers and event translation for one peer.

    @param node: the L{PeerNode}.
    @param run_in_thread: C{f(*args) -> Deferred} for blocking work (the
        file picker).
    """

    log = Logger()

    def __init__(
        self,
        node: Any,
        hub: EventHub,
        run_in_thread: Callable[..., Any],
        progress_interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.node = node
        self.hub = hub
        self.clock = hub.clock
        self._run = run_in_thread
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_TRANSFERS)
        self._rates: dict[int, _Rate] = {}
        self.ticker = Ticker(
            hub,
            self.clock,
            progress_interval,
            {"transfers": self.transfers_snapshot, "status": self.status_snapshot, "library": self.library_snapshot},
        )

    def open(self) -> None:
        self.node.events.subscribe(self.observe)

    def close(self) -> None:
        self.node.events.unsubscribe(self.observe)

    # -- events --------------------------------------------------------------

    def observe(self, event: Any) -> None:
        """
        A node event: log it on the dashboard and push what it changed.
        """
        fields = {k: v for k, v in event.fields.items() if k != "transfer"}
        transfer = event.fields.get("transfer")
        if transfer is not None:
            fields["transfer"] = transfer
        if event.kind == "transfer_finished" and isinstance(transfer, dict):
            outcome = str(event.fields.get("outcome", ""))
            self.recent.appendleft({**transfer, "outcome": outcome, "finished": float(event.time)})
            self._rates.pop(transfer.get("id"), None)
            level = "ok" if outcome == "done" else "error"
        elif event.kind == "link":
            level = "ok" if event.fields.get("state") == "connected" else "warn"
        elif event.kind == "unpublished":
            level = "info" if event.fields.get("reason") == "requested" else "warn"
        else:
            level = _LEVELS.get(event.kind, "info")
        self.hub.publish(event.kind, level, event.message, **fields)
        if event.kind.startswith("transfer") or event.kind in ("fetched", "stopped"):
            self.ticker.push_now("transfers")
        if event.kind in ("published", "unpublished", "fetched"):
            self.ticker.push_now("library")
        self.ticker.push_now("status")

    # -- snapshots -----------------------------------------------------------

    def transfers_snapshot(self) -> dict[str, Any]:
        now = float(self.clock.seconds())
        active = []
        live_ids = set()
        for t in self.node.transfers.active():
            live_ids.add(t.id)
            row = t.to_dict(now)
            meter = self._rates.get(t.id)
            if meter is None:
                meter = self._rates[t.id] = _Rate(t.started, 0)
            rate = meter.update(now, t.done)
            if rate is None:
                rate = row["rate"]
            row["rate"] = rate
            row["eta"] = (t.total - t.done) / rate if t.total is not None and rate and rate > 0 else None
            active.append(row)
        for stale in set(self._rates) - live_ids:
            del self._rates[stale]
        paused = [
            {"fname": fname, "kept": kept, "pieces": pieces}
            for fname, (kept, pieces) in sorted(getattr(self.node, "paused", {}).items())
        ]
        return {"active": active, "recent": list(self.recent), "sessions": self._sessions(), "paused": paused}

    def _sessions(self) -> dict[str, Any]:
        slots = self.node.slots
        return {
            "limit": slots.limit,
            "upload_limit": slots.limits["up"],
            "download_limit": slots.limits["down"],
            "in_use": slots.in_use,
            "uploads": slots.active.get("up", 0),
            "downloads": slots.active.get("down", 0),
            "waiting": slots.waiting,
            "refused": slots.refused,
        }

    def status_snapshot(self) -> dict[str, Any]:
        status = self.node.status()
        status.pop("transfers", None)
        status.pop("published", None)
        link = status.get("tracker")
        if isinstance(link, dict) and isinstance(link.get("retry_in"), float):
            # Whole seconds: the page shows no more, and the snapshot then
            # changes (and is pushed) at most once a second while waiting.
            link["retry_in"] = float(round(link["retry_in"]))
        status["published_count"] = len(self.node.library)
        return status

    def library_snapshot(self) -> dict[str, Any]:
        return {"files": self.node.published()}

    # -- API -----------------------------------------------------------------

    def routes(self) -> Routes:
        routes = Routes()
        routes.get("status", lambda p, b: {**self.status_snapshot(), "time": float(self.clock.seconds())})
        routes.get("library", lambda p, b: self.library_snapshot())
        routes.get("files", self.files)
        routes.get("transfers", lambda p, b: self.transfers_snapshot())
        routes.get("search", self.search)
        routes.post("publish", self.publish)
        routes.post("unpublish", self.unpublish)
        routes.post("fetch", self.fetch)
        routes.post("pause", self.pause)
        routes.post("resume", self.resume)
        routes.post("cancel", self.cancel)
        return add_log_routes(routes, self.hub)

    def files(self, params: Params, body: Any) -> Any:
        return self._run(list_shareable, self.node.library)

    def search(self, params: Params, body: Any) -> Any:
        pattern = params.text("pattern", "")
        d = self.node.search(pattern)

        def found(entries: list[dict[str, Any]]) -> dict[str, Any]:
            for entry in entries:
                mine = self.node.library.get(entry.get("fname"))
                entry["local"] = mine is not None and mine.sha256 == entry.get("sha256")
                entry["others"] = [h for h in entry.get("hostnames", []) if h != self.node.hostname]
            return {"pattern": pattern, "files": entries}

        d.addCallback(found)
        return d

    def publish(self, params: Params, body: dict[str, Any]) -> Any:
        lname = text_field(body, "lname")
        fname = text_field(body, "fname", required=False)
        if fname == "":
            raise ApiError(400, "'fname' must not be empty (leave it out to share under the path's name)")
        force = bool_field(body, "force")
        # What the shell's publish does: a file, a folder (every file below
        # it), or a glob (each match).
        d = self.node.publish_any(lname, fname, force)

        def answer(results: list[Any]) -> dict[str, Any]:
            if len(results) == 1 and not isinstance(results[0], PublishFailed):
                return _publish_answer(results[0])
            items = [_publish_answer(r) for r in results]
            ok = sum(1 for item in items if "error" not in item)
            return {"items": items, "text": f"published {ok} of {len(items)} matches of {lname}"}

        d.addCallback(answer)
        d.addErrback(self._refused, "publish", lname)
        return d

    def unpublish(self, params: Params, body: dict[str, Any]) -> Any:
        fname = text_field(body, "fname")
        d = self.node.unpublish(fname)
        d.addCallback(
            lambda r: {
                "fname": r.fname,
                "tracker_told": r.tracker_told,
                "text": f"unpublished {r.fname}"
                + ("" if r.tracker_told else " (the tracker could not be told; it forgets it when the session ends)"),
            }
        )
        d.addErrback(self._refused, "unpublish", fname)
        return d

    def fetch(self, params: Params, body: dict[str, Any]) -> Any:
        fname = text_field(body, "fname")
        source = text_field(body, "source", required=False) or None
        force = bool_field(body, "force")
        if source is not None:
            wire.hostname("source", source)
        if fname.endswith("/"):
            # A folder, as the shell's fetch DIR/: every file listed below it.
            d = self.node.fetch_folder(fname, source=source, force=force)
            d.addCallback(self._fetched_folder)
        else:
            d = self.node.fetch(fname, source=source, force=force)
            d.addCallback(self._fetched)
        d.addErrback(self._refused, "fetch", fname)
        return d

    def _fetched_folder(self, r: Any) -> dict[str, Any]:
        n = len(r.fetched)
        text = f"fetched {r.folder}: {n} file{'' if n == 1 else 's'} ({r.size} bytes)"
        if r.present:
            text += f", {len(r.present)} already here"
        if r.failed:
            text += f", {len(r.failed)} failed"
        if not r.verified:
            text += " (not all verified: seed sources)"
        return {
            "folder": r.folder,
            "size": r.size,
            "verified": r.verified,
            "fetched": [
                {
                    "fname": f.fname,
                    "path": f.path,
                    "size": f.size,
                    "sha256": f.sha256,
                    "verified": f.verified,
                    "source": f.source.hostname,
                }
                for f in r.fetched
            ],
            "present": list(r.present),
            "failed": [list(f) for f in r.failed],
            "text": text,
        }

    def _fetched(self, r: Any) -> dict[str, Any]:
        return {
            "fname": r.fname,
            "path": r.path,
            "size": r.size,
            "sha256": r.sha256,
            "verified": r.verified,
            "source": r.source.hostname,
            "elapsed": r.elapsed,
            "published": r.published,
            "replaced": r.replaced,
            "failures": [list(f) for f in r.failures],
            "text": f"fetched {r.fname} ({r.size} bytes) from {r.source.hostname}"
            + ("" if r.verified else " (unverified: seed source)"),
        }

    def pause(self, params: Params, body: dict[str, Any]) -> Any:
        fname = text_field(body, "fname")
        if fname not in self.node.fetching():
            raise ApiError(404, f"{fname} is not being fetched")
        d = self.node.pause(fname)
        d.addCallback(
            lambda kept: {
                "fname": fname,
                "kept": kept[0],
                "pieces": kept[1],
                "text": f"paused {fname}"
                + (f": {kept[0]} of {kept[1]} pieces kept" if kept[1] is not None else ": nothing kept"),
            }
        )
        d.addErrback(self._refused, "pause", fname)
        return d

    def cancel(self, params: Params, body: dict[str, Any]) -> Any:
        fname = text_field(body, "fname")
        if fname not in self.node.fetching() and fname not in self.node.paused:
            raise ApiError(404, f"{fname} is not being fetched or paused")
        d = self.node.cancel(fname)
        d.addCallback(lambda _: {"fname": fname, "text": f"cancelled {fname}: partial download removed"})
        d.addErrback(self._refused, "cancel", fname)
        return d

    def resume(self, params: Params, body: dict[str, Any]) -> Any:
        fname = text_field(body, "fname")
        d = self.node.resume(fname)
        d.addCallback(self._fetched)
        d.addErrback(self._refused, "resume", fname)
        return d

    def _refused(self, failure: Failure, action: str, subject: str) -> Failure:
        """
        Log a refused action on the dashboard too, then let the API answer it.
        """
        reply = error_reply(failure.value)
        if reply is not None and reply.status in (409,) and (
            reply.body.get("conflict") or reply.body.get("exists")
        ):
            level = "warn"
        else:
            level = "error"
        if reply is not None:
            self.hub.publish("refused", level, f"{action} {subject}: {reply.body['error']}", action=action,
                             subject=subject, error=reply.body["error"])
        return failure


def peer_web_service(
    node: Any,
    endpoint: str,
    token: str | None,
    reactor: Any,
    *,
    on_fatal: Callable[[str], Any] | None = None,
    run_in_thread: Callable[..., Any] | None = None,
) -> IService:
    """
    The peer's C{--web} service: add it as a child of the peer's
    C{MultiService}.

    @param node: the L{PeerNode}.
    @param endpoint: a server endpoint string.
    @param token: the API token, or None (loopback only).
    @param run_in_thread: for the file picker; default: the reactor's
        thread pool.
    """
    if run_in_thread is None:

        def run_in_thread(f: Callable[..., Any], *args: Any) -> Any:
            return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

    dashboard = PeerDashboard(node, EventHub(reactor), run_in_thread)
    return dashboard_service(
        dashboard,
        PeerMetrics(node),
        "peer.html",
        endpoint,
        token,
        reactor,
        label="peer dashboard",
        on_fatal=on_fatal,
    )
