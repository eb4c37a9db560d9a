"""
The tracker's admin shell on stdin/stdout: one command per line, answers
printed when ready.  It owns no logic: every command asks the registry.
"""

from __future__ import annotations

import shlex
import time
from typing import Any, Callable

from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p.errors import P2PError
from twistedp2p.identity import fingerprint
from twistedp2p.shellbase import ShellLineReceiver
from twistedp2p.textfmt import human_size, quote_name, short_hash, table
from twistedp2p.tracker.registry import PingResult, Registry

_HELP = [
    ("peers", "live sessions: hostname, address, version, since, last seen, files"),
    ("files [PATTERN]", "the catalogue (glob like *.pdf, a substring, or a folder like docs/)"),
    ("discover HOSTNAME", "files a host published, with size and sha256"),
    ("ping HOSTNAME", "is that host online (on any tracker), and does its P2P port accept connections"),
    ("evict HOST", "close the sessions of HOST (hostname, IP or IP:PORT) on this tracker and drop their files"),
    ("forget HOSTNAME", "drop the key HOSTNAME is bound to: the next key that says hello as HOSTNAME is bound"),
    ("help", "this list"),
    ("quit", "stop the tracker"),
]


def _clock_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@implementer(IHalfCloseableProtocol)
class TrackerShell(ShellLineReceiver):
    """
    C{do_*} commands over the registry (after Twisted's stdiodemo).

    @param registry: the tracker's L{Registry}.
    @param quit: called by C{quit} to stop the tracker.
    @param interactive: print a prompt (stdin is a terminal).
    """

    prompt = b"tracker> "
    log = Logger()

    def __init__(
        self,
        registry: Registry,
        quit: Callable[[], Any],
        interactive: bool = False,
        banner: str | None = None,
        editing: bool = False,
    ) -> None:
        self.registry = registry
        self._quit = quit
        self.interactive = interactive
        self.banner = banner
        #: Under the line editor (twistedp2p.terminal), which draws the prompt.
        self.editing = editing
        self._closed = False
        #: The names the last C{files} listed, for completion.
        self._names: list[str] = []

    def connectionMade(self) -> None:
        if self.banner:
            self.say(self.banner)
        elif self.interactive:
            self.sendLine(b"twistedp2p tracker: type 'help' for commands")
        self._prompt()

    def _prompt(self) -> None:
        if self.interactive and not self.editing and not self._closed:
            self.transport.write(self.prompt)

    def say(self, text: str) -> None:
        if not self._closed:
            self.sendLine(text.encode("utf-8", "replace"))

    # -- input ---------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        try:
            text = line.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.say("error: that line is not valid UTF-8")
            self._prompt()
            return
        if not text:
            self._prompt()
            return
        command, _, rest = text.partition(" ")
        method = getattr(self, "do_" + command.lower(), None)
        if method is None:
            self.say(f"error: unknown command {command!r}; try 'help'")
            self._prompt()
            return
        d = maybeDeferred(method, rest.strip())
        d.addErrback(self._failed, command)
        d.addBoth(lambda _: self._prompt())

    def lineTooLong(self) -> None:
        self.say(f"error: line longer than {self.MAX_LENGTH} bytes")

    def _failed(self, failure: Failure, command: str) -> None:
        if failure.check(UsageError, P2PError):
            self.say(f"error: {failure.value}")
        else:
            self.log.failure("shell command {command!r} failed", failure, command=command)
            self.say(f"error: {command} failed: {failure.getErrorMessage()}")

    def readConnectionLost(self) -> None:
        """
        End of input: the shell takes no more commands (answers still on
        their way are printed); the tracker keeps running.
        """
        self.log.info("stdin closed: the admin shell is off, the tracker keeps running")
        if self.interactive:
            # Ctrl-D on a terminal: say what happens.
            self.say("shell closed; the tracker is still running (stop it with Ctrl-C)")
        self.interactive = False

    def writeConnectionLost(self) -> None:
        self._closed = True

    def connectionLost(self, reason: Any = None) -> None:
        self._closed = True

    def complete(self, words: list[str] | tuple[str, ...], prefix: str) -> list[str]:
        """
        Tab completion for the line editor: command names, then the live
        hostnames (this tracker's sessions) or the names the last C{files}
        listed.  Reads memory only.
        """
        if not words:
            return [name[3:] for name in dir(self) if name.startswith("do_")]
        command = words[0].lower()
        if command in ("discover", "ping", "evict", "forget"):
            return sorted({p.session.hostname for p in self.registry.peers()})
        if command == "files":
            return list(self._names)
        return []

    # -- commands ------------------------------------------------------------

    def do_help(self, rest: str) -> None:
        """help: list commands"""
        for line in table(["command", "what it does"], [[c, w] for c, w in _HELP]):
            self.say(line)

    def do_quit(self, rest: str) -> None:
        """quit: stop the tracker"""
        self.say("stopping the tracker")
        self._quit()

    def do_peers(self, rest: str) -> None:
        """peers: the live sessions"""
        _no_args("peers", rest)
        now = self.registry.clock.seconds()
        rows = []
        for peer in self.registry.peers():
            s = peer.session
            rows.append(
                [
                    s.hostname,
                    f"{s.ip}:{s.p2p_port}",
                    "seed" if s.version is None else str(s.version),
                    _clock_time(s.connected_at),
                    _ago(now - peer.last_seen),
                    str(peer.files),
                    s.fingerprint or "unauthenticated",
                ]
            )
        if not rows:
            self.say("no live sessions")
            return
        header = ["hostname", "address", "version", "connected since", "last seen", "files", "key"]
        for line in table(header, rows):
            self.say(line)

    def do_files(self, rest: str):
        """files [PATTERN]: the catalogue"""
        pattern = _words(rest)
        d = self.registry.catalogue(pattern, 1000)
        d.addCallback(self._show_files, pattern)
        return d

    def _show_files(self, entries: list, pattern: str) -> None:
        if not pattern:
            self._names = sorted({e.fname for e in entries})
        if not entries:
            self.say("no files" + (f" match {pattern!r}" if pattern else ""))
            return
        rows = [
            [quote_name(e.fname), human_size(e.file_size), short_hash(e.sha256), str(e.sources), ",".join(e.hostnames)]
            for e in entries
        ]
        for line in table(["name", "size", "sha256", "sources", "hosts"], rows, right=[1, 3]):
            self.say(line)

    def do_discover(self, rest: str):
        """discover HOSTNAME: what that host published"""
        hostname = _one_arg("discover", "HOSTNAME", rest)
        d = self.registry.discover(hostname)
        d.addCallback(self._show_discovered, hostname)
        return d

    def _show_discovered(self, sources: list, hostname: str) -> None:
        if not sources:
            self.say(f"{hostname}: no published files (or not online)")
            return
        rows = [
            [
                quote_name(s.publication.fname),
                human_size(s.publication.file_size),
                short_hash(s.publication.sha256),
                f"{s.session.ip}:{s.session.p2p_port}",
            ]
            for s in sources
        ]
        for line in table(["name", "size", "sha256", "source"], rows, right=[1]):
            self.say(line)

    def do_forget(self, rest: str):
        """forget HOSTNAME: drop the hostname's key binding"""
        hostname = _one_arg("forget", "HOSTNAME", rest)
        d = self.registry.host_key(hostname)
        d.addCallback(self._forget, hostname)
        return d

    def _forget(self, key: str | None, hostname: str):
        if key is None:
            self.say(f"{hostname}: no key bound")
            return None
        d = self.registry.forget_key(hostname)
        d.addCallback(
            lambda _: self.say(
                f"{hostname}: forgot key {fingerprint(key)}; the next peer to say hello as {hostname} "
                f"with a signed hello binds its key"
            )
        )
        return d

    def do_ping(self, rest: str):
        """ping HOSTNAME: online check"""
        hostname = _one_arg("ping", "HOSTNAME", rest)
        d = self.registry.ping_host(hostname)
        d.addCallback(self._show_ping, hostname)
        return d

    def _show_ping(self, results: list[PingResult], hostname: str) -> None:
        if not results:
            self.say(f"{hostname}: offline")
            return
        for r in results:
            self.say(describe_ping(r, self.registry.ping_timeout))


    def do_evict(self, rest: str):
        """evict HOST: close that host's sessions on this tracker"""
        host = _one_arg("evict", "HOST", _words(rest))
        matches = [
            p.session
            for p in self.registry.peers()
            if host in (p.session.hostname, p.session.ip, f"{p.session.ip}:{p.session.p2p_port}")
        ]
        if not matches:
            raise UsageError(f"no live session of {host} on this tracker (see 'peers')")
        done = []
        for s in matches:
            d = self.registry.evict(s.session_id, "evicted by the tracker's admin")
            d.addCallback(
                lambda _, s=s: self.say(
                    f"evicted {s.hostname} ({s.ip}:{s.p2p_port}, session {s.session_id}): its files are unlisted"
                )
            )
            done.append(d)
        return gatherResults(done).addCallback(lambda _: None)


def describe_ping(result: PingResult, ping_timeout: float) -> str:
    """
    One answer of L{Registry.ping_host} in words, e.g.
    C{alice (10.0.0.7:4000): online, rtt 0.21 ms, p2p port open}.

    A session another tracker holds gets no wire ping from here: its line
    says which tracker holds it and how long the TCP connect to its P2P
    port took.
    """
    s = result.session
    parts = []
    if result.via is not None:
        parts.append(f"online (via tracker {result.via})")
    elif result.seed:
        parts.append("online (seed client, no wire ping)")
    elif result.rtt is None:
        parts.append(f"no answer to ping within {ping_timeout:g} s")
    else:
        parts.append(f"online, rtt {result.rtt * 1000:.2f} ms")
    if result.port_open is not None:
        if not result.port_open:
            parts.append("p2p port closed")
        elif result.via is not None and result.connect_rtt is not None:
            parts.append(f"p2p port open, connect rtt {result.connect_rtt * 1000:.2f} ms")
        else:
            parts.append("p2p port open")
    return f"{s.hostname} ({s.ip}:{s.p2p_port}): " + ", ".join(parts)


class UsageError(Exception):
    """
    Wrong arguments to a shell command.
    """


def _no_args(command: str, rest: str) -> None:
    if rest:
        raise UsageError(f"{command} takes no arguments")


def _words(rest: str) -> str:
    """
    One argument, as typed: a quoted word (C{'my notes.pdf'}, as the
    tables print names) is unquoted; anything else is taken as it is.
    """
    try:
        words = shlex.split(rest)
    except ValueError:
        return rest
    return words[0] if len(words) == 1 else rest


def _one_arg(command: str, name: str, rest: str) -> str:
    if not rest:
        raise UsageError(f"usage: {command} {name}")
    return rest
