"""
Zero-configuration tracker discovery on the LAN: a UDP multicast beacon
with query and answer, on Twisted's own L{DatagramProtocol}.

A tracker (L{Announcer}) joins the group L{GROUP} on a UDP port (9999 by
default) and sends an announcement there every C{interval} seconds, and at
once (at most every L{MIN_ANSWER_GAP} seconds) when a peer's query arrives.
A peer started without C{--tracker} (L{Finder}) joins the same group, sends
a query, and keeps what it hears; L{DiscoveringEndpoint} connects to the
tracker the peer last used (remembered in C{REPO/.p2p/tracker.json}) first,
then to the one the LAN announces, then to the default address.

A datagram is one UTF-8 JSON object of at most L{MAX_DATAGRAM} bytes:

  - announcement: C{{"kind": "twistedp2p-tracker", "v": 1, "tracker_id":
    ID, "port": TCP_PORT, "protocol": WIRE_VERSION}}; the peer connects to
    the sender's address and C{port};
  - query: C{{"kind": "twistedp2p-query", "v": 1}}.

Anything else is ignored and logged at debug level.  No threads: the
sockets are the reactor's, the timers come from an injected C{IReactorTime}.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from twistedp2p import wire
from twistedp2p.endpoints import Address, client_endpoint

#: The multicast group (administratively scoped, RFC 2365).
GROUP = "239.255.42.99"
LOOPBACK = "127.0.0.1"
#: Environment variable naming the interface (an IPv4 address) that
#: discovery uses when none is given: the test suite sets it to loopback, so
#: that no test sends a datagram beyond this machine.
INTERFACE_ENV = "P2P_DISCOVERY_INTERFACE"
#: The UDP port of the group (the tracker's own TCP port number, by default).
DEFAULT_PORT = 9999
#: Seconds between two announcements of a tracker.
DEFAULT_INTERVAL = 10.0
#: A tracker answers queries at most this often (seconds).
MIN_ANSWER_GAP = 0.5
#: Datagrams longer than this are not ours.
MAX_DATAGRAM = 512
#: Seconds a peer waits for an announcement before it gives up one attempt.
DEFAULT_WAIT = 3.0
#: Seconds between two queries while a peer waits.
QUERY_GAP = 1.0
#: Seconds to connect to the remembered tracker before asking the LAN.
REMEMBERED_TIMEOUT = 3.0
#: An announcement older than this many announcement intervals is stale.
STALE_INTERVALS = 3

DISCOVERY_VERSION = 1
ANNOUNCE = "twistedp2p-tracker"
QUERY = "twistedp2p-query"
_TRACKER_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class NotOurs(ValueError):
    """
    A datagram that is not a valid announcement or query; the message says
    why.
    """


@dataclass(frozen=True)
class Announcement:
    """
    A tracker heard on the LAN.
    """

    tracker_id: str
    host: str
    port: int
    protocol: int
    seen_at: float

    @property
    def address(self) -> Address:
        return Address(self.host, self.port)


def announcement(tracker_id: str, port: int, protocol: int = wire.PROTOCOL_VERSION) -> bytes:
    return _encode({"kind": ANNOUNCE, "v": DISCOVERY_VERSION, "tracker_id": tracker_id, "port": port,
                    "protocol": protocol})


def query() -> bytes:
    return _encode({"kind": QUERY, "v": DISCOVERY_VERSION})


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode("utf-8")


def parse(data: bytes) -> dict[str, Any]:
    """
    Check a datagram: an announcement or a query.

    @return: the message (C{kind} is L{ANNOUNCE} or L{QUERY}).
    @raise NotOurs: with the reason, for anything else.
    """
    if len(data) > MAX_DATAGRAM:
        raise NotOurs(f"{len(data)} bytes, more than {MAX_DATAGRAM}")
    try:
        message = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise NotOurs("not a UTF-8 JSON document")
    if not isinstance(message, dict):
        raise NotOurs("not a JSON object")
    kind = message.get("kind")
    if kind not in (ANNOUNCE, QUERY):
        raise NotOurs(f"unknown kind {kind!r}")
    if message.get("v") != DISCOVERY_VERSION or type(message.get("v")) is not int:
        raise NotOurs(f"discovery version {message.get('v')!r}, not {DISCOVERY_VERSION}")
    if kind == QUERY:
        return message
    tracker_id, port, protocol = message.get("tracker_id"), message.get("port"), message.get("protocol")
    if not isinstance(tracker_id, str) or not _TRACKER_ID.match(tracker_id):
        raise NotOurs("bad tracker_id")
    if type(port) is not int or not 1 <= port <= 65535:
        raise NotOurs("bad port")
    if type(protocol) is not int:
        raise NotOurs("bad protocol")
    return message


class _Multicast(DatagramProtocol):
    """
    Joins the group on start: the outgoing interface is C{interface} when
    given (else the system's choice), and our own datagrams loop back, so
    a tracker and peers on one host find each other.
    """

    log = Logger()

    def __init__(self, group: str, port: int, interface: str | None) -> None:
        self.group = group
        self.port = port
        self.interface = interface or os.environ.get(INTERFACE_ENV) or None
        #: Whether the group was joined (False: discovery is off the air).
        self.joined = False

    def startProtocol(self) -> None:
        if self.interface:
            self.transport.setOutgoingInterface(self.interface)
        self.transport.setLoopbackMode(1)
        d = self.transport.joinGroup(self.group, self.interface or "")
        d.addCallbacks(self._joined, self._join_failed)
        if not self.interface:
            # Also on loopback: a tracker that only listens on loopback
            # announces there (see twistedp2p.tracker.service).
            self.transport.joinGroup(self.group, LOOPBACK).addErrback(lambda _: None)

    def _joined(self, _: Any) -> None:
        self.joined = True
        self.joined_group()

    def joined_group(self) -> None:
        """
        Called once the group is joined.
        """

    def _join_failed(self, failure: Failure) -> None:
        self.log.warn(
            "LAN discovery unavailable: cannot join {group} on UDP port {port}: {reason}",
            group=self.group, port=self.port, reason=failure.getErrorMessage(),
        )

    def send(self, data: bytes) -> None:
        try:
            self.transport.write(data, (self.group, self.port))
        except Exception as e:
            self.log.debug("discovery: cannot send to {group}: {reason}", group=self.group, reason=str(e))

    def datagramReceived(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            message = parse(data)
        except NotOurs as e:
            self.log.debug("discovery: ignored a datagram from {host}: {why}", host=addr[0], why=str(e))
            return
        self.message(message, addr[0])

    def message(self, message: dict[str, Any], host: str) -> None:
        raise NotImplementedError


class Announcer(_Multicast):
    """
    The tracker's side: announce every C{interval} seconds, and answer
    queries (to the group, so every waiting peer hears it).

    @param tcp_port: returns the TCP port peers connect to.
    """

    def __init__(
        self, tracker_id: str, tcp_port: Callable[[], int], clock: Any, *,
        interval: float = DEFAULT_INTERVAL, group: str = GROUP, port: int = DEFAULT_PORT,
        interface: str | None = None,
    ) -> None:
        super().__init__(group, port, interface)
        self.tracker_id = tracker_id
        self.tcp_port = tcp_port
        self.clock = clock
        self.interval = interval
        self._loop: LoopingCall | None = None
        self._last_sent: float | None = None

    def joined_group(self) -> None:
        self._loop = LoopingCall(self.announce)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stopProtocol(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def announce(self) -> None:
        self._last_sent = self.clock.seconds()
        self.send(announcement(self.tracker_id, self.tcp_port()))

    def message(self, message: dict[str, Any], host: str) -> None:
        if message["kind"] != QUERY or not self.joined:
            return
        now = self.clock.seconds()
        if self._last_sent is not None and now - self._last_sent < MIN_ANSWER_GAP:
            return
        self.log.debug("discovery: query from {host}", host=host)
        self.announce()


class Finder(_Multicast):
    """
    The peer's side: hears announcements and, while someone L{wait}s,
    queries every L{QUERY_GAP} seconds.

    @ivar heard: (host, port) -> the latest L{Announcement}.
    """

    def __init__(
        self, clock: Any, *, group: str = GROUP, port: int = DEFAULT_PORT, interface: str | None = None,
        stale_after: float = STALE_INTERVALS * DEFAULT_INTERVAL, protocol: int = wire.PROTOCOL_VERSION,
    ) -> None:
        super().__init__(group, port, interface)
        self.clock = clock
        self.stale_after = stale_after
        self.protocol = protocol
        self.heard: dict[tuple[str, int], Announcement] = {}
        self._waiters: list[Deferred] = []
        self._querying: LoopingCall | None = None

    def joined_group(self) -> None:
        self.send(query())

    def stopProtocol(self) -> None:
        self._stop_querying()
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.cancel()

    def message(self, message: dict[str, Any], host: str) -> None:
        if message["kind"] != ANNOUNCE:
            return
        if message["protocol"] != self.protocol:
            self.log.debug(
                "discovery: tracker {id} at {host} speaks protocol {theirs}, not {ours}",
                id=message["tracker_id"], host=host, theirs=message["protocol"], ours=self.protocol,
            )
            return
        heard = Announcement(message["tracker_id"], host, message["port"], message["protocol"],
                             self.clock.seconds())
        if (host, heard.port) not in self.heard:
            self.log.info("discovery: tracker {id} at {address}", id=heard.tracker_id, address=str(heard.address))
        self.heard[(host, heard.port)] = heard
        waiters, self._waiters = self._waiters, []
        if waiters:
            self._stop_querying()
        for d in waiters:
            d.callback(heard)

    def best(self) -> Announcement | None:
        """
        The most recently heard tracker that is not stale, if any.
        """
        now = self.clock.seconds()
        fresh = [a for a in self.heard.values() if now - a.seen_at <= self.stale_after]
        return max(fresh, key=lambda a: a.seen_at, default=None)

    def wait(self, timeout: float) -> Deferred:
        """
        @return: Deferred firing the best L{Announcement}: at once if one is
            fresh, else the next one heard, querying meanwhile; fails with
            L{NoTrackerFound} after C{timeout} seconds.
        """
        known = self.best()
        if known is not None:
            return succeed(known)
        calls: list[Any] = []

        def forget(d: Deferred) -> None:
            if d in self._waiters:
                self._waiters.remove(d)
            if not self._waiters:
                self._stop_querying()
            for call in calls:
                if call.active():
                    call.cancel()

        def expire() -> None:
            if d in self._waiters:
                self._waiters.remove(d)
            if not self._waiters:
                self._stop_querying()
            d.errback(NoTrackerFound(self.why_none(timeout)))

        d: Deferred = Deferred(forget)
        self._waiters.append(d)
        calls.append(self.clock.callLater(timeout, expire))
        d.addBoth(self._cancel_calls, calls)
        if self._querying is None and self.joined:
            self._querying = LoopingCall(self.send, query())
            self._querying.clock = self.clock
            self._querying.start(QUERY_GAP, now=True)
        return d

    @staticmethod
    def _cancel_calls(result: Any, calls: list[Any]) -> Any:
        for call in calls:
            if call.active():
                call.cancel()
        return result

    def why_none(self, timeout: float) -> str:
        if not self.joined:
            return f"LAN discovery is unavailable (cannot join {self.group} on UDP port {self.port})"
        return f"no tracker announced itself on the LAN within {timeout:g} s (UDP port {self.port})"

    def _stop_querying(self) -> None:
        if self._querying is not None and self._querying.running:
            self._querying.stop()
        self._querying = None


class NoTrackerFound(ConnectError):
    """
    No tracker to connect to: discovery heard none in time, or none of the
    candidates took the connection.  C{str()} is the reason alone.
    """

    def __init__(self, why: str) -> None:
        ConnectError.__init__(self, string=why)
        self.why = why

    def __str__(self) -> str:
        return self.why


class MulticastService(Service):
    """
    Listen on the group's UDP port with one L{_Multicast} protocol while
    running (the port is shared: several peers and a tracker on one host
    each bind it).
    """

    log = Logger()

    def __init__(self, reactor: Any, protocol: _Multicast) -> None:
        self.reactor = reactor
        self.protocol = protocol
        self._port: Any = None

    def startService(self) -> None:
        super().startService()
        try:
            self._port = self.reactor.listenMulticast(self.protocol.port, self.protocol, listenMultiple=True)
        except Exception as e:
            self.log.warn("LAN discovery unavailable: cannot listen on UDP port {port}: {reason}",
                          port=self.protocol.port, reason=str(e))

    def stopService(self) -> Any:
        super().stopService()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


# -- remembering the last tracker ---------------------------------------------------


def read_remembered(path: Path) -> Address | None:
    """
    The tracker remembered in C{path} (C{{"host": ..., "port": ...}}), or
    None when there is none or it is unreadable.
    """
    try:
        data = json.loads(path.read_text("utf-8"))
        host, port = data["host"], data["port"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(host, str) or not host or type(port) is not int or not 1 <= port <= 65535:
        return None
    return Address(host, port)


def write_remembered(path: Path, address: Address, tracker_id: str | None) -> None:
    """
    Remember C{address} in C{path}, atomically (a temporary file renamed
    over it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(
        json.dumps({"host": address.host, "port": address.port, "tracker_id": tracker_id}) + "\n", "utf-8"
    )
    os.replace(temporary, path)


@implementer(IStreamClientEndpoint)
class DiscoveringEndpoint:
    """
    The tracker endpoint of a peer started without C{--tracker}: the
    remembered tracker first, then the one announced on the LAN, then
    C{fallback} (the default address).  Each successful connection's
    address is remembered (C{remember(address, tracker_id)}).

    C{str()} is the address connected to (or being tried), else "a tracker
    on the LAN".
    """

    log = Logger()

    def __init__(
        self, reactor: Any, finder: Finder, *, remembered: Address | None,
        remember: Callable[[Address, str | None], Any], fallback: str | None,
        wait: float = DEFAULT_WAIT, remembered_timeout: float = REMEMBERED_TIMEOUT,
    ) -> None:
        self.reactor = reactor
        self.finder = finder
        self.remembered = remembered
        self._remember = remember
        self.fallback = fallback
        self.wait = wait
        self.remembered_timeout = remembered_timeout
        self.current: str | None = str(remembered) if remembered else None

    def __str__(self) -> str:
        return self.current or "a tracker on the LAN"

    def connect(self, factory: Any) -> Deferred:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        reasons: list[str] = []
        tried: set[str] = set()
        if self.remembered is not None:
            self.current = str(self.remembered)
            tried.add(self.current)
            try:
                return await HostnameEndpoint(
                    self.reactor, self.remembered.host, self.remembered.port, timeout=self.remembered_timeout
                ).connect(factory)
            except CancelledError:
                raise
            except Exception as e:
                reasons.append(f"{self.remembered} (remembered): {_reason(e)}")
        try:
            heard = await self.finder.wait(self.wait)
        except NoTrackerFound as e:
            reasons.append(str(e))
        else:
            address = heard.address
            if str(address) not in tried:
                self.current = str(address)
                tried.add(self.current)
                try:
                    protocol = await HostnameEndpoint(self.reactor, address.host, address.port).connect(factory)
                except CancelledError:
                    raise
                except Exception as e:
                    reasons.append(f"{address} (tracker {heard.tracker_id}, found on the LAN): {_reason(e)}")
                else:
                    self.remembered = address
                    self._remember(address, heard.tracker_id)
                    return protocol
        if self.fallback is not None and self.fallback not in tried:
            self.current = self.fallback
            try:
                return await client_endpoint(self.reactor, self.fallback).connect(factory)
            except CancelledError:
                raise
            except Exception as e:
                reasons.append(f"{self.fallback}: {_reason(e)}")
        self.current = None
        raise NoTrackerFound("; ".join(reasons))


def _reason(e: BaseException) -> str:
    return (str(e).strip() or type(e).__name__).splitlines()[0]
