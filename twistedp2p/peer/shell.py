"""
The peer's command shell on stdin/stdout (see ``docs/shell.md``).

Commands run one at a time in the order they were read, so a script piped
in behaves like a person typing; ``status`` and ``help`` are answered at
once even while an earlier command runs.  Every failure prints exactly one
line starting ``error: `` and the shell goes on.  At the end of input the
shell finishes what is queued, then calls C{on_exit} (the service stops the
reactor, so the process exits 0).
"""

from __future__ import annotations

import os
import shlex
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p import errors
from twistedp2p.peer.events import Event
from twistedp2p.peer.progress import FetchProgress, human_seconds
from twistedp2p.shellbase import ShellLineReceiver
from twistedp2p.textfmt import human_size, quote_name, short_hash, table

HELP = """\
commands:
  publish LNAME FNAME [--force]   share local file LNAME (in the repository or a share root) as FNAME
  publish PATH [--force]          share a file under its path in the repository (or share root);
                                  a folder: every file below it as PATH/relative/path;
                                  a glob (*.pdf): each match, as if named alone
  unpublish FNAME                 stop sharing FNAME
  fetch FNAME [--from HOSTNAME] [--force]
                                  download FNAME into the repository (verified, from up to
                                  --max-sources sources at once; resumes a partial download),
                                  then share it; on a terminal it runs in the background
  fetch DIR/ [--from HOSTNAME] [--force]
                                  download every file the tracker lists under DIR/
  transfers                       downloads and uploads in progress, and paused downloads
  pause FNAME                     stop fetching FNAME, keeping its verified pieces
  resume FNAME                    continue a paused (or partial) download
  cancel FNAME                    stop fetching FNAME and remove its partial download
  search [PATTERN]                list shared files (substring, or glob with * ? [)
  status                          tracker link, limits, published files, transfers
  help                            this text
  quit                            finish queued commands (and transfers) and exit"""

#: Commands answered at once, even while an earlier command runs.
IMMEDIATE = {"status", "help", "transfers"}

#: Tab completion of C{publish}'s first argument lists at most this many
#: local files and folders (the shallowest first).
MAX_LOCAL_PATHS = 5000
#: Seconds before that listing is read again (in a thread) on the next Tab.
LOCAL_PATHS_TTL = 10.0


class ArgumentError(Exception):
    """bad arguments"""


def parse_args(
    command: str,
    args: Sequence[str],
    positional: Sequence[str],
    optional: Sequence[str] = (),
    flags: Sequence[str] = (),
    options: Sequence[str] = (),
) -> dict[str, Any]:
    """
    Parse C{args} for C{command}: required then optional positionals,
    C{--flag}s and C{--option VALUE} (or C{--option=VALUE}) anywhere.

    @raise ArgumentError: with a usage message.
    """
    result: dict[str, Any] = {f: False for f in flags}
    result.update({o: None for o in options})
    values: list[str] = []
    items = list(args)
    i = 0
    while i < len(items):
        item = items[i]
        if item.startswith("--") and len(item) > 2:
            name, eq, value = item[2:].partition("=")
            if name in flags and not eq:
                result[name] = True
            elif name in options:
                if not eq:
                    i += 1
                    if i >= len(items):
                        raise ArgumentError(f"{command}: --{name} needs a value")
                    value = items[i]
                if not value:
                    raise ArgumentError(f"{command}: --{name} needs a value")
                result[name] = value
            else:
                raise ArgumentError(f"{command}: unknown option {item}")
        else:
            values.append(item)
        i += 1
    if len(values) < len(positional) or len(values) > len(positional) + len(optional):
        want = " ".join(
            list(positional)
            + [f"[{o}]" for o in optional]
            + [f"[--{f}]" for f in flags]
            + [f"[--{o} {o.upper()}]" for o in options]
        )
        raise ArgumentError(f"usage: {command} {want}".rstrip())
    for name, value in zip(list(positional) + list(optional), values):
        result[name] = value
    for name in optional:
        result.setdefault(name, None)
    return result


# -- output formats (documented in docs/shell.md) ------------------------------------


def format_publish(result: Any) -> str:
    return f"published {result.fname}: {result.status} ({result.size} bytes, sha256 {result.sha256})"


def format_publish_any(result: Any) -> list[str]:
    """
    The lines for one item of L{PeerNode.publish_any}: a file, a folder
    (a summary line, then one ``error:`` line per file left out) or a
    failure.
    """
    if hasattr(result, "message") and hasattr(result, "lname"):
        return [f"error: {result.message}"]
    if hasattr(result, "folder"):
        n = len(result.published)
        lines = [f"published {result.folder}: {n} file{'' if n == 1 else 's'}, {human_size(result.size)}"]
        lines.extend(f"error: {fname}: {message}" for fname, message in result.failed)
        return lines
    return [format_publish(result)]


def format_fetch_folder(result: Any) -> list[str]:
    """
    The summary of C{fetch DIR/}, then one ``error:`` line per file that
    failed.
    """
    n = len(result.fetched)
    check = "verified" if result.verified else "not all verified (seed sources)"
    line = f"fetched {result.folder}: {n} file{'' if n == 1 else 's'}, {human_size(result.size)}, {check}"
    if result.present:
        line += f" ({len(result.present)} already here)"
    return [line] + [f"error: {fname}: {message}" for fname, message in result.failed]


def format_unpublish(result: Any) -> str:
    if result.tracker_told:
        return f"unpublished {result.fname}"
    return f"unpublished {result.fname} (tracker not reachable; it drops the file with our session)"


def human_rate(rate: float) -> str:
    return "unlimited" if not rate else f"{human_size(rate)}/s"


def format_fetch(result: Any) -> str:
    check = "sha256 verified" if result.verified else f"unverified (seed source), sha256 {result.sha256}"
    contributors = list(getattr(result, "contributors", ()) or ())
    if len(contributors) > 1:
        # A contributor without a key fingerprint is marked as a single
        # source is: its hostname is a claim.
        keys = list(getattr(result, "contributor_keys", ()) or ())
        hosts = ", ".join(
            host + (" (unauthenticated)" if i < len(keys) and keys[i] is None else "")
            for i, (host, _) in enumerate(contributors)
        )
        origin = f"{len(contributors)} sources ({hosts})"
    else:
        origin = result.source.hostname
        if getattr(result.source, "authenticated", None) is False:
            # The tracker listed no key for it: its hostname is a claim.
            origin += " (unauthenticated)"
    amount = f"{result.size} bytes"
    resumed = getattr(result, "resumed", 0)
    if resumed:
        amount += f" ({resumed} resumed from disk)"
    line = f"fetched {result.fname} from {origin}: {amount}, {check} -> {result.path}"
    if not result.published:
        line += " (not announced yet: tracker not reachable)"
    return line


def format_search(files: Sequence[dict[str, Any]]) -> list[str]:
    rows = []
    for f in files:
        size = f.get("file_size")
        rows.append(
            [
                human_size(size if isinstance(size, int) else None),
                str(f.get("sources", 0)),
                short_hash(f.get("sha256"), "unverified"),
                quote_name(str(f.get("fname"))),
            ]
        )
    lines = table(["SIZE", "SOURCES", "SHA256", "NAME"], rows, right=[0, 1]) if rows else []
    lines.append(f"{len(files)} file{'' if len(files) == 1 else 's'}")
    return lines


def format_status(status: dict[str, Any]) -> list[str]:
    lines = [f"peer {status['hostname']}: p2p port {status['p2p_port']}, repo {status['repo']}"]
    if status.get("fingerprint"):
        lines[0] += f", key {status['fingerprint']}"
    link = status["tracker"]
    state = link.get("state")
    if state == "connected":
        lines.append(
            f"tracker: connected to {link.get('tracker')}"
            f" (address {link.get('address')}, session {link.get('session')})"
        )
    elif state == "connecting":
        lines.append(f"tracker: connecting to {link.get('tracker')}")
    elif state == "waiting":
        retry = link.get("retry_in")
        when = f"retrying in {retry:.1f} s" if retry is not None else "retrying"
        lines.append(f"tracker: not connected ({link.get('last_error') or 'no connection'}); {when}")
    else:
        lines.append(f"tracker: {state}")
    s = status["sessions"]
    up_of = f" of {s['upload_limit']}" if "upload_limit" in s else ""
    down_of = f" of {s['download_limit']}" if "download_limit" in s else ""
    lines.append(
        f"sessions: {s['in_use']} of {s['limit']} in use"
        f" ({s['uploads']}{up_of} up, {s['downloads']}{down_of} down, {s['waiting']} waiting)"
    )
    limits = status.get("limits")
    if limits is not None:
        size = limits.get("max_file_size")
        lines.append(
            f"limits: upload {human_rate(limits.get('upload_rate') or 0)},"
            f" download {human_rate(limits.get('download_rate') or 0)},"
            f" max file size {'unlimited' if size is None else human_size(size)},"
            f" {limits.get('max_sources')} sources per download"
        )
    served = status.get("served")
    if served is not None:
        lines.append(f"served: {served['ranges']} ranges, {human_size(served['bytes'])}")
    published = status["published"]
    lines.append(f"published: {len(published)}")
    if published:
        rows = [
            [quote_name(p["fname"]), human_size(p["size"]), short_hash(p["sha256"]), p["path"]]
            for p in published
        ]
        lines.extend("  " + line for line in table(["NAME", "SIZE", "SHA256", "PATH"], rows, right=[1]))
    lines.extend(format_transfers(status["transfers"]))
    return lines


def format_transfers(
    transfers: Sequence[dict[str, Any]],
    paused: dict[str, tuple[int, int | None]] | None = None,
    starting: Sequence[str] = (),
) -> list[str]:
    """
    The ``transfers`` lines of ``status`` and of the ``transfers`` command
    (which also lists the fetches still looking for sources, and the paused
    downloads).
    """
    paused = paused or {}
    lines = [f"transfers: {len(transfers) + len(starting) + len(paused)}"]
    for t in transfers:
        arrow = "to" if t["direction"] == "up" else "from"
        total = t["total"]
        pct = f" ({t['percent']:.0f}%)" if t["percent"] is not None else ""
        amount = f"{human_size(t['done'])} of {human_size(total)}{pct}"
        rate = t.get("current_rate", t["rate"])
        line = f"  {t['direction']} {quote_name(t['fname'])} {arrow} {t['peer']}: {amount}, {human_size(rate)}/s"
        if t["direction"] == "down":
            line += f", eta {human_seconds(t.get('eta'))}"
            if t.get("sources") is not None:
                line += f", {t['sources']} source{'' if t['sources'] == 1 else 's'} active"
        lines.append(line)
    for fname in starting:
        lines.append(f"  down {quote_name(fname)}: looking for sources")
    for fname, (kept, pieces) in sorted(paused.items()):
        state = f"{kept} of {pieces} pieces kept" if pieces is not None else "nothing kept"
        lines.append(f"  paused {quote_name(fname)}: {state}; resume {quote_name(fname)} continues it")
    return lines


@implementer(IHalfCloseableProtocol)
class PeerShell(ShellLineReceiver):
    """
    A line shell over a L{PeerNode}; owns no logic.

    @param on_exit: called once, after C{quit} or the end of input, when
        every queued command (and, interactively, every fetch) has finished.
    @param is_tty: stdout is a terminal: show a live progress bar during
        fetches (else a plain progress line now and then).
    @param interactive: stdin is a terminal: C{fetch} and C{resume} run in
        the background and the shell answers the next command at once.
    """

    MAX_LENGTH = 64 * 1024
    log = Logger()

    def __init__(
        self,
        node: Any,
        on_exit: Callable[[], None] | None = None,
        is_tty: bool = False,
        clock: Any = None,
        interactive: bool = False,
        run_in_thread: Callable[..., Deferred] | None = None,
    ) -> None:
        self.node = node
        self._on_exit = on_exit
        self.is_tty = is_tty
        self.interactive = interactive
        self._clock = clock if clock is not None else node.clock
        self._queue: deque[tuple[str, Callable[[], Any]]] = deque()
        self._running: str | None = None
        self._eof = False
        self._quit_read = False
        self._exited = False
        self._bar_shown = False
        self._can_write = True
        #: The fetches this shell started, by name, with their progress.
        self._fetches: dict[str, FetchProgress] = {}
        #: Background fetches (interactive) still running.
        self._background: set[Deferred] = set()
        #: Local files and folders, for completing publish (with a thread runner).
        self._local: LocalPaths | None = None
        library = getattr(node, "library", None)
        if run_in_thread is not None and library is not None:
            repo, roots = library.repo, tuple(getattr(library, "share_roots", ()))
            self._local = LocalPaths(lambda: list_local_paths(repo, roots), run_in_thread, self._clock)

    # -- connection ------------------------------------------------------------

    def connectionMade(self) -> None:
        self.node.events.subscribe(self._event)
        if self._local is not None and self.interactive:
            # Read once now, so that the first Tab has names to offer.
            self._local.refresh()
        self.say(
            f"p2ppeer {self.node.hostname} serving on port {self.node.p2p_port},"
            f" repository {self.node.library.repo}; type 'help' for commands"
        )

    def readConnectionLost(self) -> None:
        """
        End of input: finish what is queued (and the background fetches),
        then exit.
        """
        self._eof = True
        if self._background and self._queue_idle():
            n = len(self._background)
            self.say(f"waiting for {n} transfer{'' if n == 1 else 's'}... (Ctrl-C stops them; they resume later)")
        self._pump()

    def writeConnectionLost(self) -> None:
        self._can_write = False

    def connectionLost(self, reason: Failure = None) -> None:
        self._can_write = False
        self.node.events.unsubscribe(self._event)
        self._eof = True
        self._queue.clear()
        if self._running is None:
            self._exit()

    def lineTooLong(self) -> None:
        if not (self._exited or self._quit_read):
            # (After quit, input is ignored: long lines too.)
            self.say("error: line too long")

    # -- output ------------------------------------------------------------------

    def say(self, line: str) -> None:
        if not self._can_write or self.transport is None:
            return
        show = getattr(self.transport, "show_status", None)
        if show is not None:
            # A line-editing terminal: it prints above the bars and the prompt.
            self.transport.write(line.encode("utf-8", "replace") + b"\n")
            return
        if self._bar_shown:
            self.transport.write(b"\r\x1b[K")
            self._bar_shown = False
        self.transport.write(line.encode("utf-8", "replace") + b"\n")
        self._draw_bars()

    def _event(self, event: Event) -> None:
        if event.kind == "link":
            self.say(event.message)
        elif event.kind == "unpublished" and event.fields.get("reason") != "requested":
            self.say(f"notice: {event.message}")
        elif event.kind == "published" and event.fields.get("republished"):
            self.say(event.message)
        elif event.kind == "resuming":
            self.say(event.message)
        elif event.kind == "resume_failed":
            self.say(f"notice: {event.message}")
        elif event.kind == "stopped":
            # Paused, cancelled or interrupted: one line, whoever started it.
            self.say(event.message)
        elif event.kind == "fetched" and event.fields.get("background"):
            # A download resumed at start-up: no command prints its line.
            f = event.fields
            self.say(
                format_fetch(
                    SimpleNamespace(
                        fname=f["fname"],
                        verified=f["verified"],
                        sha256=f["sha256"],
                        size=f["size"],
                        path=f["path"],
                        published=f["published"],
                        contributors=f.get("contributors", ()),
                        contributor_keys=f.get("contributor_keys", ()),
                        resumed=f.get("resumed", 0),
                        source=SimpleNamespace(hostname=f["source"], authenticated=f.get("authenticated")),
                    )
                )
            )

    def _progress(self, fname: str) -> FetchProgress:
        progress = FetchProgress(fname, self._clock, transfer=lambda: self._download_of(fname))
        progress._on_update = lambda: self._progressed(progress)
        return progress

    def _progressed(self, progress: FetchProgress) -> None:
        if self.is_tty:
            self._draw_bars()
        else:
            line = progress.plain_line()
            if line is not None:
                self.say(line)

    def _draw_bars(self) -> None:
        """
        Redraw the progress bars (a terminal only).
        """
        if not self.is_tty or not self._can_write or self.transport is None:
            return
        columns = _columns(self.transport)
        bars = [p.bar(columns) for p in self._fetches.values() if p.total is not None or p.done]
        show = getattr(self.transport, "show_status", None)
        if show is not None:
            show(bars)
            return
        if bars:
            # A plain terminal: one line, redrawn with a carriage return.
            self.transport.write(b"\r" + bars[-1].encode("utf-8", "replace") + b"\x1b[K")
            self._bar_shown = True
        elif self._bar_shown:
            self.transport.write(b"\r\x1b[K")
            self._bar_shown = False

    def _download_of(self, fname: str) -> Any:
        transfers = getattr(self.node, "transfers", None)
        if transfers is None:
            return None
        if fname.endswith("/"):
            # A folder (fetch DIR/): the sources of its files being fetched.
            down = [t for t in transfers.active() if t.direction == "down" and t.fname.startswith(fname)]
            if not down:
                return None
            return SimpleNamespace(sources=sum(t.sources or 1 for t in down), resumed=0)
        for t in transfers.active():
            if t.direction == "down" and t.fname == fname:
                return t
        return None

    # -- input --------------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        if self._exited or self._quit_read:
            return
        text = line.decode("utf-8", "replace").strip()
        if not text or text.startswith("#"):
            return
        try:
            argv = shlex.split(text)
        except ValueError as e:
            message = f"error: cannot parse the line ({e})"
            self._enqueue(text, lambda: self.say(message))
            return
        if not argv:
            return
        command, args = argv[0].lower(), argv[1:]
        handler = getattr(self, f"do_{command}", None)
        if handler is None:
            message = f"error: unknown command {command!r}; type help"
            self._enqueue(text, lambda: self.say(message))
            return
        if command in IMMEDIATE:
            self._execute(text, lambda: handler(args))
            return
        if command in ("quit", "exit") and not args:
            # Nothing after quit runs, not even status or help.
            self._quit_read = True
        self._enqueue(text, lambda: handler(args))

    def _enqueue(self, text: str, run: Callable[[], Any]) -> None:
        self._queue.append((text, run))
        self._pump()

    def _queue_idle(self) -> bool:
        return self._running is None and not self._queue

    def _pump(self) -> None:
        if self._running is not None:
            return
        if self._queue:
            text, run = self._queue.popleft()
            self._running = text
            d = self._execute(text, run)

            def next_one(_: Any) -> None:
                self._running = None
                self._pump()

            d.addBoth(next_one)
            return
        if self._eof and not self._background:
            self._exit()

    def _execute(self, text: str, run: Callable[[], Any]) -> Deferred:
        d = maybeDeferred(run)
        d.addErrback(self._report, text)
        return d

    def _report(self, failure: Failure, text: str) -> None:
        if failure.check(errors.Interrupted):
            # The node's "stopped" event has said it.
            return
        if failure.check(errors.AlreadyHave):
            self.say(str(failure.value))
            return
        if failure.check(errors.P2PError, ArgumentError):
            self.say(f"error: {failure.value}")
            return
        self.log.failure("command {command!r} failed", failure, command=text)
        self.say(f"error: unexpected failure: {failure.getErrorMessage() or failure.type.__name__}")

    def _exit(self) -> None:
        if self._exited:
            return
        self._exited = True
        if self._on_exit is not None:
            self._on_exit()

    # -- commands -------------------------------------------------------------------

    def do_help(self, args: Sequence[str]) -> None:
        for line in HELP.splitlines():
            self.say(line)

    def do_status(self, args: Sequence[str]) -> None:
        parse_args("status", args, [])
        for line in format_status(self.node.status()):
            self.say(line)

    def do_transfers(self, args: Sequence[str]) -> None:
        parse_args("transfers", args, [])
        transfers = self.node.status()["transfers"]
        fetching = getattr(self.node, "fetching", lambda: [])()
        moving = {t["fname"] for t in transfers if t["direction"] == "down"}
        starting = [f for f in fetching if f not in moving]
        for line in format_transfers(transfers, dict(getattr(self.node, "paused", {})), starting):
            self.say(line)

    def do_quit(self, args: Sequence[str]) -> None:
        parse_args("quit", args, [])
        self.say("bye")
        self._eof = True
        if self._background:
            n = len(self._background)
            self.say(f"waiting for {n} transfer{'' if n == 1 else 's'}... (Ctrl-C stops them; they resume later)")

    do_exit = do_quit

    def do_publish(self, args: Sequence[str]) -> Deferred:
        a = parse_args("publish", args, ["LNAME"], optional=["FNAME"], flags=["force"])
        d = self.node.publish_any(a["LNAME"], a["FNAME"], force=a["force"])

        def show(results: list[Any]) -> None:
            for result in results:
                for line in format_publish_any(result):
                    self.say(line)

        return d.addCallback(show)

    def do_unpublish(self, args: Sequence[str]) -> Deferred:
        a = parse_args("unpublish", args, ["FNAME"])
        return self.node.unpublish(a["FNAME"]).addCallback(lambda r: self.say(format_unpublish(r)))

    def do_fetch(self, args: Sequence[str]) -> Deferred | None:
        a = parse_args("fetch", args, ["FNAME"], flags=["force"], options=["from"])
        fname = a["FNAME"]
        if fname.endswith("/"):
            return self._fetching(
                fname,
                lambda progress: self.node.fetch_folder(fname, source=a["from"], force=a["force"], progress=progress),
                format_fetch_folder,
            )
        return self._fetching(
            fname,
            lambda progress: self.node.fetch(fname, source=a["from"], force=a["force"], progress=progress),
        )

    def do_resume(self, args: Sequence[str]) -> Deferred | None:
        a = parse_args("resume", args, ["FNAME"])
        fname = a["FNAME"]
        return self._fetching(fname, lambda progress: self.node.resume(fname, progress=progress))

    def do_pause(self, args: Sequence[str]) -> Deferred:
        a = parse_args("pause", args, ["FNAME"])
        # The fetch's own line ("paused: ...") says how it went.
        return self.node.pause(a["FNAME"]).addCallback(lambda _: None)

    def do_cancel(self, args: Sequence[str]) -> Deferred:
        a = parse_args("cancel", args, ["FNAME"])
        fname = a["FNAME"]
        running = fname in getattr(self.node, "fetching", lambda: [])()

        def done(_: Any) -> None:
            if not running:
                # A paused download: no fetch is there to say it.
                self.say(f"cancelled: {quote_name(fname)}, partial download removed")

        return self.node.cancel(fname).addCallback(done)

    def _fetching(
        self,
        fname: str,
        start: Callable[[Any], Deferred],
        lines: Callable[[Any], list[str]] = lambda r: [format_fetch(r)],
    ) -> Deferred | None:
        """
        Start a fetch with a progress display; its result C{lines} are
        printed when it ends.  Interactively it runs in the background (the
        command is done at once), else the command waits for it.
        """
        progress = self._progress(fname)
        mine = fname not in self._fetches
        if mine:
            self._fetches[fname] = progress
        d = start(progress)

        def finished(result: Any) -> Any:
            if mine and self._fetches.get(fname) is progress:
                del self._fetches[fname]
            self._draw_bars()
            return result

        d.addBoth(finished)
        def show(result: Any) -> None:
            for line in lines(result):
                self.say(line)

        d.addCallback(show)
        if not self.interactive:
            return d
        text = f"fetch {fname}"
        d.addErrback(self._report, text)
        # (Not d.called: a Deferred waiting on an inner one is "called"
        # too.  One that has its result already is forgotten at once.)
        self._background.add(d)

        def forget(_: Any) -> None:
            self._background.discard(d)
            self._pump()

        d.addBoth(forget)
        return None

    def do_search(self, args: Sequence[str]) -> Deferred:
        a = parse_args("search", args, [], optional=["PATTERN"])

        def show(files: list[dict[str, Any]]) -> None:
            if not a["PATTERN"]:
                self._remember(files)
                self._catalogue_at = self._clock.seconds()
            for line in format_search(files):
                self.say(line)

        return self.node.search(a["PATTERN"] or "").addCallback(show)

    #: The names (and hosts) the last C{search} listed, for completion.
    last_catalogue: list[str] = []
    last_hosts: list[str] = []
    _catalogue_at: float | None = None
    _refreshing = False

    # -- completion (the line editor's Tab; docs/shell.md) ------------------------------

    #: Seconds before completion asks the tracker for the catalogue again.
    CATALOGUE_TTL = 30.0

    def complete(self, words: Sequence[str], prefix: str) -> list[str]:
        """
        Candidates for the word being typed: a command name first, then
        shared names (the last catalogue, refreshed in the background, and
        the library), the names being fetched or paused, or hostnames
        after C{--from}.  Never waits for anything.
        """
        if not words:
            return [name[3:] for name in dir(self) if name.startswith("do_")]
        command = words[0].lower()
        if words[-1] == "--from":
            self._refresh_catalogue()
            return list(self.last_hosts)
        if prefix.startswith("--"):
            return {"fetch": ["--from", "--force"], "publish": ["--force"]}.get(command, [])
        library = [e.fname for e in self.node.library.entries()] if hasattr(self.node.library, "entries") else []
        if command in ("fetch", "search"):
            self._refresh_catalogue()
            return list(self.last_catalogue) + ([] if command == "fetch" else library)
        if command == "publish":
            given = [w for w in words[1:] if not w.startswith("--")]
            if given:
                return library
            # LNAME: a file or folder below the repository or a share root.
            return path_candidates(self._local.names(), prefix) if self._local is not None else []
        if command == "unpublish":
            return library
        if command in ("pause", "cancel", "resume"):
            names = list(getattr(self.node, "fetching", lambda: [])()) + list(getattr(self.node, "paused", {}))
            if command == "resume":
                # A partial download from an earlier run is in no list here.
                self._refresh_catalogue()
                names += self.last_catalogue
            return names
        return []

    def _refresh_catalogue(self) -> None:
        now = self._clock.seconds()
        if self._refreshing or (self._catalogue_at is not None and now - self._catalogue_at < self.CATALOGUE_TTL):
            return
        self._refreshing = True

        def got(files: list[dict[str, Any]]) -> None:
            self._remember(files)

        def done(_: Any) -> None:
            self._refreshing = False
            self._catalogue_at = self._clock.seconds()

        self.node.search("").addCallbacks(got, lambda _: None).addBoth(done)

    def _remember(self, files: list[dict[str, Any]]) -> None:
        self.last_catalogue = sorted({str(f.get("fname")) for f in files})
        hosts = {h for f in files for h in (f.get("hostnames") or []) if isinstance(h, str)}
        self.last_hosts = sorted(hosts - {getattr(self.node, "hostname", None)})


# -- local paths for completing publish's first argument ---------------------------------


def list_local_paths(repo: Any, share_roots: Sequence[Any] = (), limit: int = MAX_LOCAL_PATHS) -> list[str]:
    """
    (Blocking: run it in a thread.)  The files and folders below the
    repository and the share roots, as C{publish} takes them: relative to
    the repository (a share root inside it too), else absolute; folders end
    with C{/}.  Breadth first (the shallowest names survive the bound), at
    most C{limit} names; hidden names (C{.p2p}, C{.NAME.part}) are skipped
    and links to folders are listed but not entered.
    """
    repo = Path(repo)
    found: list[str] = []
    seen: set[str] = set()
    queue: deque[Path] = deque([repo, *(Path(r) for r in share_roots)])
    entered: set[Path] = set()
    while queue and len(found) < limit:
        folder = queue.popleft()
        if folder in entered:
            continue
        entered.add(folder)
        try:
            with os.scandir(folder) as it:
                items = sorted(it, key=lambda e: e.name)
        except OSError:
            continue
        for item in items:
            if item.name.startswith("."):
                continue
            path = Path(item.path)
            try:
                name = "/".join(path.relative_to(repo).parts)
            except ValueError:
                name = str(path)
            try:
                is_dir = item.is_dir()
                if is_dir and not item.is_symlink():
                    queue.append(path)
            except OSError:
                continue
            if is_dir:
                name += "/"
            if name not in seen:
                seen.add(name)
                found.append(name)
                if len(found) >= limit:
                    break
    return found


def path_candidates(paths: Sequence[str], prefix: str) -> list[str]:
    """
    The names one level below what C{prefix} names, as a shell completes a
    path: C{docs/} offers C{docs/a.txt} and C{docs/sub/}, not what is
    deeper.
    """
    folder = prefix[: prefix.rfind("/") + 1]
    out: set[str] = set()
    for path in paths:
        if not path.startswith(prefix):
            continue
        rest = path[len(folder) :]
        if not rest:
            continue
        cut = rest.find("/")
        out.add(folder + (rest if cut < 0 else rest[: cut + 1]))
    return sorted(out)


class LocalPaths:
    """
    A cached listing of local paths (L{list_local_paths}), read in a thread
    when it is older than C{ttl}; L{names} never waits: it answers from the
    cache (empty before the first listing arrives).
    """

    log = Logger()

    def __init__(
        self, list_paths: Callable[[], list[str]], run_in_thread: Callable[..., Deferred], clock: Any,
        ttl: float = LOCAL_PATHS_TTL,
    ) -> None:
        self._list = list_paths
        self._run = run_in_thread
        self._clock = clock
        self.ttl = ttl
        self.paths: list[str] = []
        self._read_at: float | None = None
        self._reading = False

    def names(self) -> list[str]:
        self.refresh()
        return self.paths

    def refresh(self) -> None:
        now = self._clock.seconds()
        if self._reading or (self._read_at is not None and now - self._read_at < self.ttl):
            return
        self._reading = True

        def got(paths: list[str]) -> None:
            self.paths = paths

        def done(_: Any) -> None:
            self._reading = False
            self._read_at = self._clock.seconds()

        d = maybeDeferred(self._run, self._list)
        d.addCallbacks(got, lambda f: self.log.failure("listing local paths for completion", f))
        d.addBoth(done)


def _columns(transport: Any) -> int:
    """
    The width to draw the bars in: the terminal's (at least 20, as the line
    editor draws), 80 when it is unknown or 0.
    """
    columns = getattr(transport, "columns", None)
    if isinstance(columns, int) and columns > 0:
        return max(20, columns)
    return 80
