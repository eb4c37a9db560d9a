"""
``twistd p2ptracker``: options and the service tree of a tracker.

Start order: the store, then (once it started) the listener, the heartbeat
and the admin shell.  Stop order: the listener, the sessions, the store.

Several trackers may share one PostgreSQL index (C{--db postgresql://...},
each with its own C{--tracker-id}): each renews a lease on its records every
heartbeat (C{--lease}), and the others drop them once it lapses.  See
docs/deployment.md.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import sys
from typing import Any, Callable

from twisted.application.service import MultiService, Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger, LogLevel
from twisted.python import usage
from twisted.python.failure import Failure

from twistedp2p import discovery
from twistedp2p.endpoints import parse_server
from twistedp2p.errors import P2PError
from twistedp2p.process import exit_nonzero, stop_reactor
from twistedp2p.logs import level_named, tracker_gate
from twistedp2p.tracker.gcfreeze import GCFreezer
from twistedp2p.tracker.protocol import TrackerFactory
from twistedp2p.tracker.registry import Registry
from twistedp2p.tracker.store.factory import DEFAULT_SQLITE_FILE, postgres_options, store_from_url
from twistedp2p.web.options import WEB_OPTIONS, check_web_options, say_dashboard

DEFAULT_LISTEN = "tcp:9999"
DEFAULT_BACKLOG = 1024
#: Seconds between two heartbeat pings of a session (--heartbeat).
DEFAULT_HEARTBEAT = 30.0
#: The default --lease, in heartbeats: a tracker's records outlive two
#: missed renewals.
LEASE_HEARTBEATS = 3
DEFAULT_POOL_SIZE = 3
_TRACKER_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def _seconds(option: str) -> Callable[[str], float]:
    """
    A coerce function for C{--option SECONDS}: a finite number above 0.
    """

    def coerce(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"--{option} must be a number of seconds greater than 0, not {value!r}")
        return number

    coerce.coerceDoc = "Seconds, greater than 0."  # type: ignore[attr-defined]
    return coerce


def _at_least_one(option: str) -> Callable[[str], int]:
    """
    A coerce function for C{--option N}: an integer of at least 1.
    """

    def coerce(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = 0
        if number < 1:
            raise ValueError(f"--{option} must be an integer of at least 1, not {value!r}")
        return number

    coerce.coerceDoc = "An integer, at least 1."  # type: ignore[attr-defined]
    return coerce


def with_backlog(description: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Add C{backlog=} to a TCP or UNIX server endpoint string that has none,
    so bursts of connecting peers are not refused.
    """
    kind = description.split(":", 1)[0].lower()
    if kind not in ("tcp", "tcp6", "unix"):
        return description
    if re.search(r"(^|:)backlog=", description):
        return description
    return f"{description}:backlog={backlog}"


def _udp_port(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ValueError(f"--discovery-port must be a UDP port from 1 to 65535, not {value!r}")
    return int(value)


_udp_port.coerceDoc = "A UDP port, 1 to 65535."  # type: ignore[attr-defined]


def announce_interface(listen: str, given: str | None) -> str | None:
    """
    The interface a tracker announces itself on: C{given}, else loopback
    when C{listen} only accepts loopback connections (announcing it on the
    LAN would send peers to an address they cannot reach), else None (the
    system's choice).
    """
    if given is not None:
        return given
    from twistedp2p.web.options import is_local_endpoint, split_endpoint

    if split_endpoint(listen)[0] in ("tcp", "tcp6") and is_local_endpoint(listen):
        return discovery.LOOPBACK
    return None


class Options(usage.Options):
    """
    Command line of ``twistd p2ptracker``.
    """

    synopsis = "[options]"
    longdesc = (
        "The twistedp2p tracker: indexes live peers and what they publish; "
        "file bytes move directly between peers."
    )
    optParameters = [
        [
            "listen",
            None,
            DEFAULT_LISTEN,
            "Where peers connect: PORT, IP[:PORT] or a server endpoint "
            "(e.g. 9999, 192.168.1.5:9999, [::1]:9999, tcp:9999:interface=0.0.0.0).",
        ],
        [
            "db",
            None,
            None,
            f"Index database: a SQLite file path (default ./{DEFAULT_SQLITE_FILE}), "
            "sqlite:PATH, memory, or postgresql://USER@HOST/DBNAME.",
        ],
        ["heartbeat", None, DEFAULT_HEARTBEAT, "Seconds between heartbeat pings to native peers.", _seconds("heartbeat")],
        ["heartbeat-misses", None, 3, "Unanswered pings in a row that evict a peer.", _at_least_one("heartbeat-misses")],
        ["ping-timeout", None, 5.0, "Seconds a ping may take (contested hello, admin ping).", _seconds("ping-timeout")],
        [
            "max-files-per-peer",
            None,
            Registry.DEFAULT_MAX_FILES,
            "Files one session may publish at once (more: error 'quota').",
            _at_least_one("max-files-per-peer"),
        ],
        [
            "tracker-id",
            None,
            None,
            "This tracker's id (default: 8 random hex digits).  Give each tracker sharing a "
            "PostgreSQL index its own, fixed id: a restarted tracker drops its previous run's records.",
        ],
        [
            "lease",
            None,
            None,
            f"PostgreSQL only: seconds other trackers keep this tracker's records after its last "
            f"renewal (one per heartbeat); longer than --heartbeat "
            f"(default: {LEASE_HEARTBEATS} x --heartbeat)",
            _seconds("lease"),
        ],
        [
            "db-pool-size",
            None,
            DEFAULT_POOL_SIZE,
            "PostgreSQL only: database connections for writes (plus one for change notifications).",
            _at_least_one("db-pool-size"),
        ],
        [
            "log-level",
            None,
            "info",
            "Lowest level of the tracker's own log events: debug (adds every connection), info, warn, error.",
        ],
        [
            "announce-interval",
            None,
            discovery.DEFAULT_INTERVAL,
            "Seconds between two announcements on the LAN.",
            _seconds("announce-interval"),
        ],
        ["discovery-port", None, discovery.DEFAULT_PORT, "UDP port of LAN tracker discovery.", _udp_port],
        [
            "discovery-interface",
            None,
            None,
            "IPv4 address of the interface to announce on (default: loopback when --listen is on "
            "loopback only, else the system's choice).",
        ],
        *WEB_OPTIONS,
    ]
    optFlags = [
        ["no-shell", None, "Do not read admin commands from stdin."],
        ["no-announce", None, "Do not announce this tracker on the LAN (peers then need --tracker)."],
        [
            "no-gc-freeze",
            None,
            "Leave Python's cyclic garbage collector as it is (by default, objects that survive a full "
            "collection are frozen out of later ones: see docs/benchmarks.md).",
        ],
    ]

    def opt_version(self) -> None:
        """
        Print twistedp2p's version and exit.
        """
        from twistedp2p import version_text

        print(version_text())
        sys.exit(0)

    def postOptions(self) -> None:
        self["listen"] = with_backlog(parse_server(self["listen"], option="listen", default_port=9999))
        try:
            from_url = postgres_options(self["db"])
        except ValueError as e:
            raise usage.UsageError(f"bad --db: {e}")
        if self["lease"] is None:
            self["lease"] = LEASE_HEARTBEATS * self["heartbeat"]
        # A lease in the URL's query string wins (see PostgresStore.from_url).
        lease = from_url.get("lease", self["lease"])
        if not lease > self["heartbeat"]:
            where = "lease= in --db" if "lease" in from_url else "--lease"
            raise usage.UsageError(
                f"{where} ({lease:g} s) must be longer than --heartbeat ({self['heartbeat']:g} s): "
                f"the lease is renewed once per heartbeat"
            )
        if self["tracker-id"] is None:
            self["tracker-id"] = secrets.token_hex(4)
        elif not _TRACKER_ID.match(self["tracker-id"]):
            raise usage.UsageError(
                "--tracker-id must be 1 to 64 letters, digits, '.', '_' or '-'"
            )
        try:
            self["log-level"] = level_named(self["log-level"])
        except ValueError as e:
            raise usage.UsageError(f"--log-level: {e}")
        if self["discovery-interface"] is not None:
            import ipaddress

            try:
                self["discovery-interface"] = str(ipaddress.IPv4Address(self["discovery-interface"]))
            except ValueError:
                raise usage.UsageError(
                    f"--discovery-interface {self['discovery-interface']!r}: give the IPv4 address of an interface"
                )
        check_web_options(self)


def tcp_probe(reactor: Any, timeout: float) -> Callable[[str, int], Deferred]:
    """
    A C{probe(ip, port)} for L{Registry}: does that port accept a TCP
    connection within C{timeout}?  Connects, then closes at once.
    """

    def probe(ip: str, port: int) -> Deferred:
        endpoint = HostnameEndpoint(reactor, ip, port, timeout=timeout)
        d = connectProtocol(endpoint, Protocol())

        def connected(protocol: Protocol) -> bool:
            protocol.transport.loseConnection()
            return True

        d.addCallbacks(connected, lambda _: False)
        return d

    return probe


class TrackerService(MultiService):
    """
    A tracker: store, listener, heartbeat and (optionally) admin shell.

    @ivar registry: the L{Registry}, for tests, tools and the dashboard.
    @ivar store: the L{IIndexStore}.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        store: Any,
        listen: str,
        tracker_id: str,
        heartbeat: float = 30.0,
        misses: int = 3,
        ping_timeout: float = 5.0,
        shell: bool = False,
        on_fatal: Callable[[str], Any] | None = None,
        web: str | None = None,
        web_token: str | None = None,
        gc_freezer: Any = None,
        max_files: int | None = Registry.DEFAULT_MAX_FILES,
        announce: dict[str, Any] | None = None,
    ) -> None:
        MultiService.__init__(self)
        self.reactor = reactor
        self.store = store
        self.listen = listen
        self.tracker_id = tracker_id
        self.heartbeat = heartbeat
        self.shell = shell
        self.registry = Registry(
            store,
            reactor,
            tracker_id,
            heartbeat=heartbeat,
            misses=misses,
            ping_timeout=ping_timeout,
            probe=tcp_probe(reactor, ping_timeout),
            max_files=max_files,
        )
        self.factory = TrackerFactory(self.registry, reactor)
        self._on_fatal = on_fatal or self._exit_nonzero
        #: The dashboard (--web), started once the tracker listens.
        self.web: Any = None
        if web is not None:
            from twistedp2p.web.tracker_site import tracker_web_service

            self.web = tracker_web_service(self.registry, web, web_token, reactor, on_fatal=self._on_fatal)
        self._port: Any = None
        self._waiters: list[Deferred] = []
        self._listen_failure: Failure | None = None
        self._loop: LoopingCall | None = None
        self._starting: Deferred | None = None
        self._stdio: Any = None
        #: The admin shell's history file (a terminal only; set by makeService).
        self.shell_history = os.path.abspath(HISTORY_FILE)
        #: A L{GCFreezer}, started once the tracker listens (None: leave
        #: the garbage collector alone).
        self.gc_freezer = gc_freezer
        #: LAN announcement settings (interval, port, interface), or None.
        self.announce = announce
        #: The announcing UDP listener once listening, else None.
        self.announcer: Any = None

    # -- start ---------------------------------------------------------------

    def startService(self) -> None:
        """
        Start the store; listen once it is up.  twistd wants no Deferred
        here, so a failure is logged and stops the process.
        """
        Service.startService(self)
        d = self._starting = maybeDeferred(self.store.start)
        d.addCallback(lambda _: serverFromString(self.reactor, self.listen).listen(self.factory))
        d.addCallback(self._listening)
        d.addErrback(self._start_failed)

    def _listening(self, port: Any) -> Any:
        self._starting = None
        if not self.running:
            # Stopped while starting.
            return port.stopListening()
        self._port = port
        address = port.getHost()
        self.log.info(
            "tracker {tracker_id} listening on {address} (index: {store})",
            tracker_id=self.tracker_id,
            address=address,
            store=self.store_description,
        )
        # A tick per slice of the sessions: a round's pings are spread over
        # the heartbeat interval (Registry.heartbeat_tick).
        self._loop = LoopingCall(self._beat)
        self._loop.clock = self.reactor
        self._loop.start(self.registry.heartbeat_tick_interval, now=False).addErrback(
            lambda f: self.log.failure("the heartbeat loop stopped", f)
        )
        if self.gc_freezer is not None:
            self.gc_freezer.start()
        if self.announce is not None:
            self._start_announcing(port)
        if self.web is not None:
            # Before the shell, so the dashboard's address comes before the prompt.
            self.addService(self.web)
            say_dashboard(self.web, "tracker")
        if self.shell:
            self._start_shell(
                f"p2ptracker {self.tracker_id} listening on {address.host}:{address.port}"
                f" (index: {self.store_description}); type 'help' for commands"
            )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(port)

    def _start_announcing(self, port: Any) -> None:
        tcp_port = getattr(port.getHost(), "port", None)
        if tcp_port is None:
            self.log.info("not announcing on the LAN: the tracker does not listen on TCP")
            return
        announcer = discovery.Announcer(
            self.tracker_id,
            lambda: tcp_port,
            self.reactor,
            interval=self.announce["interval"],
            port=self.announce["port"],
            interface=announce_interface(self.listen, self.announce["interface"]),
        )
        self.announcer = discovery.MulticastService(self.reactor, announcer)
        self.announcer.startService()

    @property
    def store_description(self) -> str:
        """
        The index in words, for people: the kind of store and where it is.
        """
        describe = getattr(self.store, "describe", None)
        return describe() if callable(describe) else type(self.store).__name__

    def _start_shell(self, banner: str) -> None:
        from twisted.internet import stdio

        from twistedp2p.tracker.shell import TrackerShell

        interactive = _isatty(0)
        editing = interactive and _isatty(1)
        shell = TrackerShell(
            self.registry, quit=self._quit, interactive=interactive, banner=banner, editing=editing
        )
        if editing:
            # A person at a terminal: line editing, history, completion.
            from twisted.internet.threads import deferToThreadPool

            from twistedp2p.terminal import HistoryFile, start_editing_shell

            def run(f: Callable[..., Any], *args: Any) -> Deferred:
                return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

            history = HistoryFile(self.shell_history, run)
            self._stdio = start_editing_shell(shell, self.reactor, "tracker> ", shell.complete, history)
        else:
            self._stdio = stdio.StandardIO(shell, reactor=self.reactor)

    def _quit(self) -> None:
        stop_reactor(self.reactor)

    def _beat(self) -> None:
        # Never raise: a LoopingCall stops at the first exception.
        try:
            self.registry.heartbeat_tick()
        except Exception:
            self.log.failure("heartbeat tick failed")

    def _start_failed(self, failure: Failure) -> None:
        self._starting = None
        self._listen_failure = failure
        message = failure.getErrorMessage()
        if failure.check(P2PError, CannotListenError):
            # Known causes (database unreachable, schema too new, port in
            # use): the message says it all, a traceback would only hide it.
            self.log.critical("the tracker cannot start: {reason}", reason=message)
        else:
            self.log.failure("the tracker cannot start: {reason}", failure, LogLevel.critical, reason=message)
        self._on_fatal(message)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(failure)

    def _exit_nonzero(self, message: str) -> None:
        """
        Stop the reactor and leave the process with status 1, saying why
        in one line on the process's real stderr (twistd sends
        C{sys.stderr} to its log, which may be a file).
        """
        exit_nonzero(self.reactor, f"p2ptracker: cannot start: {message}")

    def whenListening(self) -> Deferred:
        """
        @return: Deferred firing the C{IListeningPort} once the tracker
            listens (failing if it cannot start).
        """
        if self._port is not None:
            return succeed(self._port)
        if self._listen_failure is not None:
            return fail(self._listen_failure)
        d: Deferred = Deferred()
        self._waiters.append(d)
        return d

    # -- stop ----------------------------------------------------------------

    def stopService(self) -> Deferred:
        """
        Close the listener, then every session, then the store.
        """
        Service.stopService(self)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self.gc_freezer is not None:
            self.gc_freezer.stop()
        announcer, self.announcer = self.announcer, None
        if announcer is not None:
            announcer.stopService()
        return self._stop_chain()

    def _stop_chain(self) -> Deferred:
        d: Deferred = succeed(None)
        if self._starting is not None:
            # Let the start finish (or fail) first: _listening sees that the
            # service is no longer running and closes the port itself.
            d = Deferred()
            self._starting.addBoth(_fire_and_pass, d)
        d.addCallback(lambda _: self._stop_listening())
        d.addCallback(lambda _: self._stop_web())
        d.addCallback(lambda _: self.registry.shutdown())
        d.addCallback(lambda _: self.factory.disconnect_all())
        d.addBoth(self._log_stop_error, "closing sessions")
        d.addCallback(lambda _: self.store.stop())
        d.addBoth(self._log_stop_error, "stopping the store")
        return d

    def _stop_web(self) -> Any:
        if self.web is None or not self.web.running:
            return None
        return self.web.stopService()

    def _stop_listening(self) -> Any:
        port, self._port = self._port, None
        if port is None:
            return None
        return port.stopListening()

    def _log_stop_error(self, result: Any, what: str) -> None:
        if isinstance(result, Failure):
            self.log.failure("while stopping the tracker: " + what, result)
        return None


def _fire_and_pass(result: Any, d: Deferred) -> Any:
    d.callback(None)
    return result


def _isatty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def history_path(db: str | None) -> str:
    """
    Where the admin shell keeps its history: beside a SQLite database, else
    in the current directory.
    """
    if db and db != "memory" and "://" not in db:
        path = db[len("sqlite:"):] if db.startswith("sqlite:") else db
        return os.path.join(os.path.dirname(os.path.abspath(path)), HISTORY_FILE)
    return os.path.abspath(HISTORY_FILE)


#: The admin shell's history file name (docs/shell.md).
HISTORY_FILE = ".p2ptracker_history"


def makeService(config: Options, reactor: Any = None) -> TrackerService:
    """
    Build the tracker from parsed L{Options}.
    """
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    tracker_gate.level = config["log-level"]
    store = store_from_url(
        config["db"],
        clock=reactor,
        tracker_id=config["tracker-id"],
        lease=config["lease"],
        pool_size=config["db-pool-size"],
    )
    service = TrackerService(
        reactor,
        store,
        listen=config["listen"],
        tracker_id=config["tracker-id"],
        heartbeat=config["heartbeat"],
        misses=config["heartbeat-misses"],
        ping_timeout=config["ping-timeout"],
        shell=not config["no-shell"],
        web=config["web"],
        web_token=config["web-token"],
        gc_freezer=None if config["no-gc-freeze"] else GCFreezer(),
        max_files=config["max-files-per-peer"],
        announce=None if config["no-announce"] else {
            "interval": config["announce-interval"],
            "port": config["discovery-port"],
            "interface": config["discovery-interface"],
        },
    )
    service.shell_history = history_path(config["db"])
    return service
