"""
``twistd p2ppeer``: options and the service tree of a peer.

Start order: listen on the P2P endpoint (so hello can carry the port
actually bound), then the tracker link, then the stdio shell.  The only
module of the peer that imports the global reactor, as a default.
"""

from __future__ import annotations

import math
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, DeferredList, fail, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, serverFromString
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure

from twistedp2p import wire
from twistedp2p import discovery
from twistedp2p.eagerwrite import accept_on_data
from twistedp2p.endpoints import client_endpoint, parse_client, parse_server
from twistedp2p.identity import KEY_FILE, KeyFileError
from twistedp2p.identity import load_or_create as load_identity
from twistedp2p.peer.download import DownloadSettings
from twistedp2p.peer.events import Events
from twistedp2p.peer.library import STATE_DIR, Library
from twistedp2p.peer.node import WATCH_INTERVAL, PeerNode
from twistedp2p.peer.ratelimit import TokenBucket, parse_size
from twistedp2p.peer.slots import Slots
from twistedp2p.peer.tracker_link import TrackerLink
from twistedp2p.peer.transfers import Transfers
from twistedp2p.peer.upload import IDLE_TIMEOUT, MIN_UPLOAD_RATE, UploadFactory
from twistedp2p.process import exit_nonzero, stop_reactor
from twistedp2p.web.options import WEB_OPTIONS, check_web_options, say_dashboard

DEFAULT_TRACKER = "tcp:127.0.0.1:9999"
DEFAULT_REPO = "./p2p-repo"
DEFAULT_LISTEN = "tcp:0"
#: Seconds to connect to a source (the TTFB bound cuts it shorter).
CONNECT_TIMEOUT = 10


def _positive_seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number of seconds greater than 0")
    if not math.isfinite(number) or number <= 0:
        raise ValueError("must be a number of seconds greater than 0")
    return number


_positive_seconds.coerceDoc = "Seconds, greater than 0."  # type: ignore[attr-defined]


def _seconds_or_off(value: str) -> float:
    """
    A number of seconds, or 0 for never.
    """
    try:
        seconds = float(value)
    except ValueError:
        raise usage.UsageError(f"not a number of seconds: {value!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise usage.UsageError(f"must be 0 (never) or a positive number of seconds: {value!r}")
    return seconds


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be an integer of at least 1")
    if number < 1:
        raise ValueError("must be an integer of at least 1")
    return number


_at_least_one.coerceDoc = "An integer, at least 1."  # type: ignore[attr-defined]


def _bytes(value: str) -> int:
    return parse_size(value)


_bytes.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes; the suffixes K, M and G mean KiB, MiB and GiB (1024-based), e.g. 2M."
)


def _rate(value: str) -> int:
    return parse_size(value)


_rate.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes per second for the whole peer; K, M and G mean KiB, MiB and GiB"
    " (1024-based), e.g. 2M; 0 means unlimited."
)


def _udp_port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError("must be a UDP port from 1 to 65535")
    return int(value)


_udp_port.coerceDoc = "A UDP port, 1 to 65535."  # type: ignore[attr-defined]


def _ip_address(option: str, value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise usage.UsageError(f"--{option} {value!r}: give the IPv4 address of an interface")


def _bytes_per_second(value: str) -> int:
    return parse_size(value)


_bytes_per_second.coerceDoc = (  # type: ignore[attr-defined]
    "Bytes per second; K, M and G mean KiB, MiB and GiB (1024-based); 0 turns the rule off."
)


class Options(usage.Options):
    """
    Command line of ``twistd p2ppeer``.
    """

    synopsis = "[options]"
    longdesc = (
        "A twistedp2p peer: publishes files to a tracker, serves them to other "
        "peers and fetches theirs.  Commands are read from stdin (see docs/shell.md)."
    )
    optParameters = [
        ["hostname", None, None, "The name other peers see (default: this host's name)."],
        ["repo", None, DEFAULT_REPO, "Repository directory: downloads land here (created if missing)."],
        [
            "listen",
            None,
            DEFAULT_LISTEN,
            "The P2P port: PORT, IP:PORT or a server endpoint (e.g. 7070, 192.168.1.5:7070, tcp:0).",
        ],
        ["max-sessions", None, None, "Sets both --max-uploads and --max-downloads to K.", _at_least_one],
        ["max-uploads", None, None, "Uploads at once (default 4; beyond them: busy).", _at_least_one],
        ["max-downloads", None, None, "Download connections at once (default 4).", _at_least_one],
        ["min-upload-rate", None, MIN_UPLOAD_RATE, "An upload slower than this after its grace is closed", _bytes_per_second],
        ["ttfb-timeout", None, 2.0, "Seconds to wait for a source's first byte.", _positive_seconds],
        ["max-sources", None, 4, "Sources one download uses at once.", _at_least_one],
        ["upload-rate", None, 0, "Cap on the peer's total upload rate", _rate],
        ["download-rate", None, 0, "Cap on the peer's total download rate", _rate],
        ["max-file-size", None, None, "Refuse to publish or download files larger than this", _bytes],
        [
            "watch-interval",
            None,
            WATCH_INTERVAL,
            "Seconds between checks of the published files for changes on disk (0: never).",
            _seconds_or_off,
        ],
        *WEB_OPTIONS,
        ["discovery-port", None, discovery.DEFAULT_PORT, "UDP port of LAN tracker discovery.", _udp_port],
        [
            "discovery-interface",
            None,
            None,
            "IP address of the interface to look for trackers on (default: the system's choice, and loopback).",
        ],
    ]
    optFlags = [
        ["no-shell", None, "Do not read commands from stdin (daemon, compose)."],
        [
            "no-discover",
            None,
            "Without --tracker, do not look for a tracker on the LAN nor use the remembered one: "
            "only 127.0.0.1:9999.",
        ],
    ]

    def opt_version(self) -> None:
        """
        Print twistedp2p's version and exit.
        """
        from twistedp2p import version_text

        print(version_text())
        sys.exit(0)

    def __init__(self) -> None:
        super().__init__()
        self["tracker"] = []
        self["share-root"] = []

    def opt_tracker(self, endpoint: str) -> None:
        """The tracker: HOST[:PORT] (port 9999 by default; IPv6 as [::1]:9999) or a client endpoint
        (tcp:HOST:PORT); repeat for a failover list (default 127.0.0.1:9999)."""
        self["tracker"].append(endpoint)

    def opt_share_root(self, directory: str) -> None:
        """Another directory whose files may be published (repeatable; must exist)."""
        self["share-root"].append(directory)

    def postOptions(self) -> None:
        #: Trackers found on the LAN (and remembered) unless --tracker or --no-discover.
        self["discover"] = not self["tracker"] and not self["no-discover"]
        if self["discovery-interface"] is not None:
            self["discovery-interface"] = _ip_address("discovery-interface", self["discovery-interface"])
        if not self["tracker"]:
            self["tracker"] = [DEFAULT_TRACKER]
        self["tracker"] = [parse_client(value, option="tracker") for value in self["tracker"]]
        self["listen"] = parse_server(self["listen"], option="listen", default_port=0)
        if self["hostname"] is None:
            self["hostname"] = socket.gethostname() or "localhost"
        try:
            wire.hostname("hostname", self["hostname"])
        except wire.WireError as e:
            raise usage.UsageError(f"bad --hostname: {e.message}")
        roots = []
        for root in self["share-root"]:
            path = Path(root).expanduser()
            if not path.is_dir():
                raise usage.UsageError(f"--share-root {root}: not an existing directory")
            roots.append(str(path.resolve()))
        self["share-root"] = roots
        repo = Path(self["repo"]).expanduser()
        if repo.exists() and not repo.is_dir():
            raise usage.UsageError(f"--repo {self['repo']}: exists and is not a directory")
        self["repo"] = str(repo.absolute())
        for kind in ("max-uploads", "max-downloads"):
            if self[kind] is None:
                self[kind] = self["max-sessions"] or 4
        check_web_options(self)


class ShellService(Service):
    """
    The stdio shell, started once the peer listens; only under ``-n``
    without ``--no-shell``.
    """

    def __init__(
        self,
        node: PeerNode,
        reactor: Any,
        on_exit: Callable[[], None],
        run_in_thread: Callable[..., Deferred] | None = None,
    ) -> None:
        self._node = node
        self._reactor = reactor
        self._on_exit = on_exit
        self._run_in_thread = run_in_thread or _thread_runner(reactor)
        self._stdio: Any = None

    def startService(self) -> None:
        super().startService()
        from twisted.internet import stdio

        from twistedp2p.peer.shell import PeerShell

        # The file descriptors as the process got them: under twistd,
        # sys.stdout is a LoggingFile that is never a terminal.
        interactive, is_tty = _isatty(0), _isatty(1)
        editing = interactive and is_tty
        shell = PeerShell(
            self._node,
            on_exit=self._on_exit,
            is_tty=is_tty,
            interactive=interactive,
            # (Completion lists local paths in a thread.)
            run_in_thread=self._run_in_thread if editing else None,
        )
        if editing:
            # A person at a terminal: line editing, history, completion.
            from twistedp2p.terminal import HistoryFile, start_editing_shell

            history = HistoryFile(Path(self._node.library.repo) / HISTORY_FILE, self._run_in_thread)
            self._stdio = start_editing_shell(shell, self._reactor, "p2p> ", shell.complete, history)
        else:
            self._stdio = stdio.StandardIO(shell, reactor=self._reactor)


#: The peer shell's history, in the repository (docs/shell.md).
HISTORY_FILE = ".p2p/history"


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


class PeerService(MultiService):
    """
    A peer: P2P listener, tracker link and (optionally) the stdio shell.

    @ivar node: the L{PeerNode} every command goes through.
    @ivar library: the L{Library}.
    @ivar slots: the L{Slots} (K cap; high-water marks for tests).
    @ivar link: the L{TrackerLink}.
    @ivar port: the C{IListeningPort} once listening, else None.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        *,
        hostname: str,
        repo: str,
        share_roots: list[str],
        trackers: list[str],
        listen: str = DEFAULT_LISTEN,
        max_sessions: int = 4,
        max_uploads: int | None = None,
        max_downloads: int | None = None,
        min_upload_rate: float = MIN_UPLOAD_RATE,
        ttfb_timeout: float = 2.0,
        shell: bool = False,
        run_in_thread: Callable[..., Deferred] | None = None,
        settings: DownloadSettings | None = None,
        idle_timeout: float = IDLE_TIMEOUT,
        retry_policy: Callable[[int], float] | None = None,
        on_fatal: Callable[[str], Any] | None = None,
        web: str | None = None,
        web_token: str | None = None,
        max_sources: int = 4,
        upload_rate: float = 0,
        download_rate: float = 0,
        max_file_size: int | None = None,
        discover: bool = False,
        discovery_port: int = discovery.DEFAULT_PORT,
        discovery_interface: str | None = None,
        discovery_wait: float = discovery.DEFAULT_WAIT,
        watch_interval: float = WATCH_INTERVAL,
        identity: Any = None,
    ) -> None:
        MultiService.__init__(self)
        self.reactor = reactor
        self.listen = listen
        Path(repo).mkdir(parents=True, exist_ok=True)
        if run_in_thread is None:
            run_in_thread = _thread_runner(reactor)
        self.events = Events(reactor)
        self.library = Library(repo, share_roots, run_in_thread, reactor)
        self.library.max_file_size = max_file_size
        self.slots = Slots(max_sessions, uploads=max_uploads, downloads=max_downloads)
        self.transfers = Transfers(reactor, self.events)
        settings = settings or DownloadSettings()
        settings.ttfb_timeout = ttfb_timeout
        settings.max_sources = max_sources
        settings.max_file_size = max_file_size
        #: The peer's total bandwidth caps (None: unlimited).
        self.upload_bucket = TokenBucket(upload_rate, reactor) if upload_rate else None
        self.download_bucket = TokenBucket(download_rate, reactor) if download_rate else None
        self.node = PeerNode(
            hostname=hostname,
            library=self.library,
            slots=self.slots,
            transfers=self.transfers,
            events=self.events,
            clock=reactor,
            run_in_thread=run_in_thread,
            connect=self._connect_source,
            settings=settings,
            download_bucket=self.download_bucket,
        )
        self.node.upload_bucket = self.upload_bucket
        #: LAN discovery (a peer without --tracker): the UDP listener, or None.
        self.discovery: Any = None
        endpoints: list[tuple[Any, Any]] = [(t, client_endpoint(reactor, t)) for t in trackers]
        if discover:
            endpoints = [self._discovering(repo, trackers, run_in_thread, discovery_port, discovery_interface,
                                           discovery_wait)]
        self.link = TrackerLink(
            endpoints,
            hello_fields=lambda: {"hostname": hostname, "p2p_port": self.node.p2p_port},
            on_session=self.node.announce_all,
            clock=reactor,
            events=self.events,
            retry_policy=retry_policy,
        )
        self.node.link = self.link
        #: The peer's key pair (L{twistedp2p.identity}); loaded, or made,
        #: in L{startService}.
        self.identity = identity
        self.upload_factory = UploadFactory(
            self.library,
            self.slots,
            self.transfers,
            reactor,
            idle_timeout,
            bucket=self.upload_bucket,
            min_rate=min_upload_rate,
        )
        self.node.uploads = self.upload_factory
        #: Published files changed on disk are published again (or
        #: unpublished) without waiting for a fetch to notice: a check every
        #: C{watch_interval} seconds while the service runs (0: never).
        self.watch_interval = watch_interval
        self.watcher = LoopingCall(self.node.check_changes)
        self.watcher.clock = reactor
        self.shell = shell
        self.port: Any = None
        self._waiters: list[Deferred] = []
        self._listen_failure: Failure | None = None
        self._on_fatal = on_fatal or self._exit_nonzero
        #: The dashboard (--web), started once the P2P port is bound.
        self.web: Any = None
        if web is not None:
            from twistedp2p.web.peer_site import peer_web_service

            self.web = peer_web_service(
                self.node, web, web_token, reactor, on_fatal=self._on_fatal, run_in_thread=run_in_thread
            )

    def _discovering(
        self, repo: str, trackers: list[str], run_in_thread: Callable[..., Deferred], port: int,
        interface: str | None, wait: float,
    ) -> tuple[Any, Any]:
        """
        The tracker endpoint of a peer without C{--tracker}: the remembered
        tracker (C{REPO/.p2p/tracker.json}), then one announced on the LAN,
        then the default address.
        """
        path = Path(repo) / ".p2p" / "tracker.json"
        finder = discovery.Finder(self.reactor, port=port, interface=interface)
        self.discovery = discovery.MulticastService(self.reactor, finder)

        def remember(address: Any, tracker_id: str | None) -> None:
            d = run_in_thread(discovery.write_remembered, path, address, tracker_id)
            d.addErrback(lambda f: self.log.warn("cannot remember the tracker in {path}: {reason}",
                                                 path=str(path), reason=f.getErrorMessage()))

        endpoint = discovery.DiscoveringEndpoint(
            self.reactor, finder, remembered=discovery.read_remembered(path), remember=remember,
            fallback=trackers[0] if trackers else None, wait=wait,
        )
        return (endpoint, endpoint)

    def _connect_source(self, ip: str, port: int, factory: Any) -> Deferred:
        # Addresses from the wire go into an endpoint object, never into an
        # endpoint string.
        return HostnameEndpoint(self.reactor, ip, port, timeout=CONNECT_TIMEOUT).connect(factory)

    # -- start -------------------------------------------------------------------

    def startService(self) -> None:
        """
        Listen first; the link and the shell start once the port is bound.
        """
        Service.startService(self)
        if not self._load_identity():
            return
        self.node.start()
        try:
            endpoint = serverFromString(self.reactor, self.listen)
            d = endpoint.listen(self.upload_factory)
        except Exception:
            d = fail()
        d.addCallbacks(self._listening, self._listen_failed)

    def _load_identity(self) -> bool:
        """
        Load the key pair from C{REPO/.p2p/identity.key}, made at first
        start (a few hundred bytes, once).  A key file that cannot be used
        is fatal: it is never replaced behind the user's back.
        """
        if self.identity is None:
            try:
                self.identity, created = load_identity(str(self.library.repo / STATE_DIR))
            except KeyFileError as e:
                message = str(e)
                self.log.critical("{message}", message=message)
                self._listen_failure = Failure(e)
                self._on_fatal(message)
                return False
            self.log.info(
                "{what} identity key {fingerprint} ({path})",
                what="made a new" if created else "loaded the",
                fingerprint=self.identity.fingerprint,
                path=str(self.library.repo / STATE_DIR / KEY_FILE),
            )
        self.link.identity = self.identity
        self.node.fingerprint = self.identity.fingerprint
        return True

    def _listening(self, port: Any) -> None:
        if not self.running:
            port.stopListening()
            return
        self.port = port
        # Downloaders speak first: a connection reaches us with its request.
        accept_on_data(port)
        self.node.p2p_port = port.getHost().port
        self.log.info(
            "peer {hostname} serving on port {port}, repository {repo}",
            hostname=self.node.hostname,
            port=self.node.p2p_port,
            repo=str(self.library.repo),
        )
        if self.discovery is not None:
            self.addService(self.discovery)
        self.addService(self.link)
        if self.watch_interval and not self.watcher.running:
            self.watcher.start(self.watch_interval, now=True)
        if self.web is not None:
            self.addService(self.web)
            say_dashboard(self.web, "peer")
        if self.shell:
            ShellService(self.node, self.reactor, self._quit, self.node._run).setServiceParent(self)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _listen_failed(self, failure: Failure) -> None:
        self._listen_failure = failure
        message = f"cannot listen on {self.listen}: {failure.getErrorMessage()}"
        self.log.critical("{message}", message=message)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)
        self._on_fatal(message)

    def whenListening(self) -> Deferred:
        """
        @return: Deferred firing the C{IListeningPort} of the P2P port.
        """
        if self.port is not None:
            return succeed(self.port)
        if self._listen_failure is not None:
            return fail(self._listen_failure)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    def _quit(self) -> None:
        stop_reactor(self.reactor)

    def _exit_nonzero(self, message: str) -> None:
        """
        Say why on stderr, stop the reactor and leave the process with
        status 1.
        """
        exit_nonzero(self.reactor, f"p2ppeer: {message}")

    # -- stop --------------------------------------------------------------------------

    def stopService(self) -> Deferred:
        """
        Stop the shell and the link, then close the P2P port.  Partial
        downloads record their verified pieces before the peer exits.
        """
        recorded = self.node.stop()
        if self.watcher.running:
            self.watcher.stop()
        stopping = MultiService.stopService(self)
        self.upload_factory.disconnect_all()
        self.library.close()
        for bucket in (self.upload_bucket, self.download_bucket):
            if bucket is not None:
                bucket.stop()
        port, self.port = self.port, None
        steps = [stopping, recorded]
        if port is not None:
            steps.append(maybeDeferred(port.stopListening))
        return DeferredList(steps, consumeErrors=True).addCallback(lambda _: None)


def _thread_runner(reactor: Any) -> Callable[..., Deferred]:
    def run(f: Callable[..., Any], *args: Any, **kwargs: Any) -> Deferred:
        return deferToThreadPool(reactor, reactor.getThreadPool(), f, *args, **kwargs)

    return run


def makeService(config: Options, reactor: Any = None, **overrides: Any) -> PeerService:
    """
    Build the peer from parsed L{Options}; C{overrides} go to
    L{PeerService} (tests pass C{run_in_thread}, C{settings}, ...).
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    return PeerService(
        reactor,
        hostname=config["hostname"],
        repo=config["repo"],
        share_roots=config["share-root"],
        trackers=config["tracker"],
        listen=config["listen"],
        max_uploads=config["max-uploads"],
        max_downloads=config["max-downloads"],
        min_upload_rate=config["min-upload-rate"],
        ttfb_timeout=config["ttfb-timeout"],
        shell=not config["no-shell"],
        web=config["web"],
        web_token=config["web-token"],
        max_sources=config["max-sources"],
        upload_rate=config["upload-rate"],
        download_rate=config["download-rate"],
        max_file_size=config["max-file-size"],
        discover=config["discover"],
        discovery_port=config["discovery-port"],
        discovery_interface=config["discovery-interface"],
        watch_interval=config["watch-interval"],
        **overrides,
    )
