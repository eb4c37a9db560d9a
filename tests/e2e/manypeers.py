"""
Many peers' tracker sessions in one process: the real L{TrackerLink}
(ClientService, the default backoff policy with jitter, hello and the
re-announce after every connect), one per simulated peer, each with its own
hostname, P2P port number and one published file.  Only the P2P side is
missing: nothing listens on those port numbers, so nobody can fetch from
them (a real C{twistd p2ppeer} does that part of the fault test).

Run as ``python -m tests.e2e.manypeers --tracker tcp:127.0.0.1:PORT
--first 0 --count 250``.  It speaks JSON lines on stdout, one event per
line (times are C{time.monotonic()}, which is system-wide on Linux, so the
test can compare them with its own):

  - ``ready``: every link connected and its file was announced;
  - ``lost``: every link lost its session (once per outage);
  - ``retrying``: every link has failed to reconnect at least twice since
    it lost its session (the tracker is still down: backoff under way);
  - ``back``: every link is connected again and re-announced its file,
    with each peer's connection attempts since its loss;
  - ``status`` (on a ``status`` line on stdin): counters so far.

Anything a link does wrong is counted and reported in these events:
refused hellos, failed announces, warnings and errors logged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import LogLevel, globalLogBeginner
from zope.interface import implementer

from twistedp2p.peer.events import Events
from twistedp2p.peer.tracker_link import CONNECTED, TrackerLink


#: Where events go: the StandardIO transport once the reactor runs (it
#: owns stdout then, non-blocking).
_write = sys.stdout.buffer.write


#: Failed attempts per link after a loss before ``retrying`` is said.
RETRYING = 2


def emit(event: str, **fields: Any) -> None:
    _write(json.dumps({"event": event, **fields}).encode() + b"\n")


def fake_sha256(i: int) -> str:
    return f"{i:064x}"


@implementer(IStreamClientEndpoint)
class CountingEndpoint:
    """
    Record the monotonic time of every connection attempt, then connect.
    """

    def __init__(self, endpoint: IStreamClientEndpoint, peer: "Peer") -> None:
        self._endpoint = endpoint
        self._peer = peer

    def connect(self, factory: Any) -> defer.Deferred:
        self._peer.attempts.append(time.monotonic())
        d = self._endpoint.connect(factory)

        def failed(failure: Any) -> Any:
            self._peer.failed.append(time.monotonic())
            self._peer.owner.changed()
            return failure

        return d.addErrback(failed)


class Peer:
    """
    One simulated peer: its link, and what happened to it.
    """

    def __init__(self, index: int, tracker: str, reactor: Any, owner: "Swarm") -> None:
        self.index = index
        self.hostname = f"many-{index:04d}"
        self.p2p_port = 20000 + index
        self.fname = f"many-{index:04d}.bin"
        self.owner = owner
        self.attempts: list[float] = []
        #: Monotonic times of the connection attempts that failed.
        self.failed: list[float] = []
        #: Monotonic times of each announce confirmed by the tracker.
        self.announced: list[float] = []
        self.lost_at: list[float] = []
        self.events = Events(reactor)
        self.events.subscribe(self._event)
        self.link = TrackerLink(
            [(tracker, CountingEndpoint(clientFromString(reactor, tracker), self))],
            hello_fields=lambda: {"hostname": self.hostname, "p2p_port": self.p2p_port},
            on_session=self._announce,
            clock=reactor,
            events=self.events,
        )

    def _event(self, event: Any) -> None:
        if "refused hello" in event.message:
            self.owner.refused += 1
        elif event.message.startswith("tracker link: lost"):
            self.lost_at.append(time.monotonic())
            self.owner.changed()

    async def _announce(self, protocol: Any) -> None:
        # The fields a real peer sends for one published file
        # (PeerNode.publish_fields without the piece list).
        try:
            await protocol.request(
                "publish",
                fname=self.fname,
                lname=self.fname,
                file_size=1000 + self.index,
                last_modified=1_700_000_000.0,
                sha256=fake_sha256(self.index),
                allow_overwrite=True,
            )
        except Exception as e:
            self.owner.announce_failures.append(f"{self.hostname}: {e}")
            # A session that could not announce would serve nothing: drop
            # it, the link reconnects and tries again.
            protocol.transport.loseConnection()
            return
        self.announced.append(time.monotonic())
        self.owner.changed()


class Swarm:
    def __init__(self, reactor: Any, tracker: str, first: int, count: int) -> None:
        self.reactor = reactor
        self.refused = 0
        self.announce_failures: list[str] = []
        self.log_problems: list[str] = []
        self.peers = [Peer(i, tracker, reactor, self) for i in range(first, first + count)]
        self.outages = 0
        self._said_ready = False
        self._said_lost = 0
        self._said_back = 0
        self._said_retrying = 0
        self._pending_check = False

    def observe_log(self, event: dict) -> None:
        level = event.get("log_level")
        if level in (LogLevel.warn, LogLevel.error, LogLevel.critical) or event.get("log_failure"):
            if len(self.log_problems) < 20:
                from twisted.logger import formatEvent

                text = f"{level.name if level else '?'}: {formatEvent(event)}"
                failure = event.get("log_failure")
                if failure is not None:
                    text += f" ({failure.type.__name__}: {failure.getErrorMessage()})"
                self.log_problems.append(text)
            else:
                self.log_problems.append("...")

    def start(self) -> None:
        for peer in self.peers:
            peer.link.startService()

    def stop(self) -> defer.Deferred:
        return defer.DeferredList([p.link.stopService() for p in self.peers])

    def changed(self) -> None:
        # Check once per reactor turn, not once per peer event.
        if not self._pending_check:
            self._pending_check = True
            self.reactor.callLater(0, self._check)

    def counters(self) -> dict[str, Any]:
        return {
            "peers": len(self.peers),
            "connected": sum(p.link.state == CONNECTED for p in self.peers),
            "refused_hellos": self.refused,
            "announce_failures": len(self.announce_failures),
            "announce_failure_examples": self.announce_failures[:5],
            "log_problems": self.log_problems[:20],
        }

    def _check(self) -> None:
        self._pending_check = False
        peers = self.peers
        if not self._said_ready and all(p.announced for p in peers):
            self._said_ready = True
            emit("ready", at=time.monotonic(), **self.counters())
        outages = min(len(p.lost_at) for p in peers)
        if outages > self._said_lost:
            self._said_lost = outages
            emit("lost", outage=outages, at=max(p.lost_at[outages - 1] for p in peers))
        if self._said_lost > self._said_retrying and all(
            sum(1 for t in p.failed if t > p.lost_at[self._said_lost - 1]) >= RETRYING for p in peers
        ):
            self._said_retrying = self._said_lost
            emit("retrying", outage=self._said_lost, at=time.monotonic())
        back = self._said_back + 1
        if self._said_lost >= back and all(
            p.announced and p.announced[-1] > p.lost_at[back - 1] and p.link.state == CONNECTED for p in peers
        ):
            self._said_back = back
            rows = []
            for p in peers:
                lost = p.lost_at[back - 1]
                rows.append(
                    {
                        "hostname": p.hostname,
                        "lost": lost,
                        "attempts": [t for t in p.attempts if t > lost],
                        "announced": next(t for t in p.announced if t > lost),
                    }
                )
            emit("back", outage=back, rows=rows, **self.counters())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.e2e.manypeers")
    parser.add_argument("--tracker", required=True, help="client endpoint, e.g. tcp:127.0.0.1:9999")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=250)
    args = parser.parse_args(argv)

    from twisted.internet import reactor

    swarm = Swarm(reactor, args.tracker, args.first, args.count)
    globalLogBeginner.beginLoggingTo([swarm.observe_log], redirectStandardIO=False)

    class Commands(Protocol):
        def dataReceived(self, data: bytes) -> None:
            for line in data.decode().split("\n"):
                if line.strip() == "status":
                    emit("status", **swarm.counters())

        def connectionLost(self, reason: Any = None) -> None:
            # stdin closed: the test is done with us.
            swarm.stop().addBoth(lambda _: reactor.stop())

    from twisted.internet.stdio import StandardIO

    global _write
    commands = Commands()
    StandardIO(commands)
    _write = commands.transport.write
    reactor.callWhenRunning(swarm.start)
    reactor.run()


if __name__ == "__main__":
    main()
