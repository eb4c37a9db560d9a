"""
Transfers in progress, both directions, for ``status`` and the dashboard.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from twistedp2p.peer.events import Events

#: Seconds of history behind the current rate.
RATE_WINDOW = 5.0


class Transfer:
    """
    One upload or download: bytes moved so far, out of C{total} (None when
    unknown, e.g. from a seed source).

    A multi-source download sets C{sources} (connections active now) and
    C{resumed} (bytes already on disk when it started, not counted in its
    rates).
    """

    def __init__(
        self,
        table: "Transfers",
        transfer_id: int,
        direction: str,
        fname: str,
        peer: str,
        total: int | None,
        started: float,
    ) -> None:
        self._table = table
        self.id = transfer_id
        self.direction = direction
        self.fname = fname
        self.peer = peer
        self.total = total
        self.done = 0
        self.started = started
        self.finished = False
        #: The observers were told it started (L{Transfers.announce}).
        self.announced = False
        self.sources: int | None = None
        self.resumed = 0
        #: (time, done) samples for the current rate.
        self._samples: deque[tuple[float, int]] = deque([(started, 0)])

    def add(self, n: int) -> None:
        self.done += n
        self._sample()

    def resume_from(self, done: int) -> None:
        """
        Start counting from C{done} bytes already on disk.
        """
        self.resumed = self.done = done
        self._samples = deque([(self._table._clock.seconds(), done)])

    def set_done(self, done: int) -> None:
        self.done = done
        self._sample()

    def _sample(self) -> None:
        now = self._table._clock.seconds()
        samples = self._samples
        if samples and samples[-1][0] == now:
            samples[-1] = (now, self.done)
        else:
            samples.append((now, self.done))
        while len(samples) > 2 and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()

    def finish(self, outcome: str = "done") -> None:
        """
        Leave the table (once); C{outcome} is ``done`` or why it stopped.
        """
        if not self.finished:
            self.finished = True
            self._table._finish(self, outcome)

    def percent(self) -> float | None:
        if not self.total:
            return None if self.total is None else 100.0
        return min(100.0, 100.0 * self.done / self.total)

    def rate(self, now: float) -> float:
        """
        Average bytes per second since the transfer started.
        """
        elapsed = now - self.started
        return max(0, self.done - self.resumed) / elapsed if elapsed > 0 else 0.0

    def current_rate(self, now: float) -> float:
        """
        Bytes per second over about the last L{RATE_WINDOW} seconds.
        """
        samples = self._samples
        while len(samples) > 1 and samples[0][0] < now - RATE_WINDOW and samples[1][0] <= now - RATE_WINDOW:
            samples.popleft()
        first_time, first_done = samples[0]
        elapsed = now - first_time
        if elapsed <= 0:
            return 0.0
        return max(0, self.done - first_done) / elapsed

    def eta(self, now: float) -> float | None:
        """
        Seconds left at the current rate, or None when unknown.
        """
        if self.total is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.current_rate(now)
        return left / rate if rate > 0 else None

    def to_dict(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "direction": self.direction,
            "fname": self.fname,
            "peer": self.peer,
            "done": self.done,
            "total": self.total,
            "percent": self.percent(),
            "rate": self.rate(now),
            "current_rate": self.current_rate(now),
            "eta": self.eta(now),
            "sources": self.sources,
            "started": self.started,
        }


class Transfers:
    """
    The table of live transfers; tells C{events} when one starts or ends.
    """

    def __init__(self, clock: Any, events: Events | None = None) -> None:
        #: Read by each L{Transfer} for its rate samples.
        self._clock = clock
        self._events = events
        self._ids = itertools.count(1)
        self._active: dict[int, Transfer] = {}
        #: Completed transfers by direction, for status.
        self.completed = {"up": 0, "down": 0}

    def start(self, direction: str, fname: str, peer: str, total: int | None, announce: bool = True) -> Transfer:
        """
        Enter a transfer in the table.

        @param announce: tell the observers now; with False, the caller
            calls L{announce} once the latency-critical part is done (an
            upload's first bytes).  A transfer that finishes first is
            announced then, so observers always see it start before it ends.
        """
        t = Transfer(self, next(self._ids), direction, fname, peer, total, self._clock.seconds())
        self._active[t.id] = t
        if announce:
            self.announce(t)
        return t

    def announce(self, t: Transfer) -> None:
        """
        Tell the observers that C{t} started (once).
        """
        if t.announced:
            return
        t.announced = True
        if self._events is not None:
            arrow = "to" if t.direction == "up" else "from"
            self._events.emit(
                "transfer_started",
                f"{'upload' if t.direction == 'up' else 'download'} of {t.fname} {arrow} {t.peer} started",
                transfer=t.to_dict(self._clock.seconds()),
            )

    def _finish(self, t: Transfer, outcome: str) -> None:
        self.announce(t)
        self._active.pop(t.id, None)
        if outcome == "done":
            self.completed[t.direction] += 1
        if self._events is not None:
            self._events.emit(
                "transfer_finished",
                f"{'upload' if t.direction == 'up' else 'download'} of {t.fname}: {outcome}",
                transfer=t.to_dict(self._clock.seconds()),
                outcome=outcome,
            )

    def active(self) -> list[Transfer]:
        return [self._active[k] for k in sorted(self._active)]

    def snapshot(self) -> list[dict[str, Any]]:
        now = self._clock.seconds()
        return [t.to_dict(now) for t in self.active()]
