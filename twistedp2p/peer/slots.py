"""
Session slots: at most ``--max-uploads`` uploads and, separately, at most
``--max-downloads`` download connections at once (``--max-sessions K``
sets both to K).

Uploads that find no free upload slot are refused (``busy``); downloads
wait for a download slot, first come first served.  The two kinds never
take each other's slots, so slow readers holding every upload slot cannot
stall this peer's own downloads, and downloads cannot lock out uploads.

L{RateFloor} is the other half of that bound: a transfer that holds a slot
must move at least a minimum rate once its grace period is over, or give
the slot back (``--min-upload-rate``; download sources: ``docs/swarm.md``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred, succeed

UP = "up"
DOWN = "down"


class Slot:
    """
    One held session slot; release it exactly once (extra calls are no-ops).
    """

    def __init__(self, slots: "Slots", kind: str) -> None:
        self._slots = slots
        self.kind = kind
        self.released = False

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._slots._release(self)


class Slots:
    """
    At most C{limits[UP]} uploads and C{limits[DOWN]} downloads at once.

    @param limit: both limits (``--max-sessions``), unless C{uploads} or
        C{downloads} is given.

    Counters for status and tests: C{in_use} and C{limit} (both kinds
    together), C{active[kind]}, C{limits[kind]}, C{peak_in_use},
    C{peak[kind]} (high-water marks), C{refused} (uploads answered busy)
    and C{waiting} (downloads waiting for a slot).
    """

    def __init__(self, limit: int = 4, *, uploads: int | None = None, downloads: int | None = None) -> None:
        self.limits = {
            UP: limit if uploads is None else uploads,
            DOWN: limit if downloads is None else downloads,
        }
        if min(self.limits.values()) < 1:
            raise ValueError("the session limits must be at least 1")
        self.in_use = 0
        self.active = {UP: 0, DOWN: 0}
        self.peak = {UP: 0, DOWN: 0}
        self.peak_in_use = 0
        self.refused = 0
        self._waiting: deque[tuple[Deferred, str]] = deque()

    @property
    def limit(self) -> int:
        """Both kinds together: the most slots ever in use at once."""
        return self.limits[UP] + self.limits[DOWN]

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def free(self, kind: str) -> bool:
        return self.active[kind] < self.limits[kind]

    def _queued(self, kind: str) -> bool:
        return any(k == kind for _, k in self._waiting)

    def try_acquire(self, kind: str = UP) -> Slot | None:
        """
        Take a free slot now, or return None (and count a refusal).
        """
        if not self.free(kind) or self._queued(kind):
            self.refused += 1
            return None
        return self._take(kind)

    def take_if_free(self, kind: str = DOWN) -> Slot | None:
        """
        Take a free slot now, or return None without counting a refusal
        and without queueing (a download's extra source connections: they
        never make another download wait).
        """
        if not self.free(kind) or self._queued(kind):
            return None
        return self._take(kind)

    def acquire(self, kind: str = DOWN) -> Deferred:
        """
        @return: Deferred firing a L{Slot} when one is free; cancelling it
            leaves the queue.
        """
        if self.free(kind) and not self._queued(kind):
            return succeed(self._take(kind))

        def cancel(d: Deferred) -> None:
            self._waiting = deque(w for w in self._waiting if w[0] is not d)

        d: Deferred = Deferred(cancel)
        self._waiting.append((d, kind))
        return d

    def _take(self, kind: str) -> Slot:
        self.in_use += 1
        self.active[kind] += 1
        self.peak_in_use = max(self.peak_in_use, self.in_use)
        self.peak[kind] = max(self.peak[kind], self.active[kind])
        return Slot(self, kind)

    def _release(self, slot: Slot) -> None:
        self.in_use -= 1
        self.active[slot.kind] -= 1
        for waiter in list(self._waiting):
            d, kind = waiter
            if kind == slot.kind and self.free(kind):
                self._waiting.remove(waiter)
                d.callback(self._take(kind))
                break


class RateFloor:
    """
    The minimum-progress rule of one transfer holding a slot: once C{grace}
    seconds have passed, each C{window} seconds of its life in which this
    peer did not hold it back itself (L{pause}: its own rate cap, its disk)
    must move at least C{rate * window} bytes.  A plain object: the owner
    reports bytes (L{moved}) and pauses, and calls L{check} now and then
    (every C{window} seconds) to learn whether it is too slow.

    @param rate: bytes per second; 0 disables the rule.
    """

    def __init__(self, rate: float, clock: Any, grace: float, window: float) -> None:
        self.rate = rate
        self.window = window
        self._clock = clock
        #: Judged from then on.
        self._from = clock.seconds() + grace
        #: Unpaused seconds and bytes of the current window.
        self._elapsed = 0.0
        self._bytes = 0
        #: Start of the current unpaused stretch (in the future during the grace).
        self._since = self._from
        self._paused = 0

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def moved(self, n: int) -> None:
        if self._clock.seconds() >= self._from:
            self._bytes += n

    def pause(self) -> None:
        """This peer holds the transfer back: that time does not count."""
        if not self._paused:
            self._elapsed += max(0.0, self._clock.seconds() - self._since)
        self._paused += 1

    def resume(self) -> None:
        if self._paused:
            self._paused -= 1
            if not self._paused:
                self._since = max(self._clock.seconds(), self._from)

    def due_in(self) -> float:
        """
        Seconds until the current window can end (when to L{check} next).
        """
        now = self._clock.seconds()
        if self._paused:
            return self.window - self._elapsed
        return max(0.0, self._since - now) + self.window - self._elapsed - max(0.0, now - self._since)

    def check(self) -> float | None:
        """
        @return: the rate (bytes per second) of a window that ended below
            the floor, else None.  A window ends once C{window} unpaused
            seconds have passed; the next starts then.
        """
        if not self.enabled:
            return None
        now = self._clock.seconds()
        elapsed = self._elapsed + (0.0 if self._paused else max(0.0, now - self._since))
        if elapsed < self.window:
            return None
        rate = self._bytes / elapsed
        self._elapsed, self._bytes = 0.0, 0
        if not self._paused:
            self._since = now
        return rate if rate < self.rate else None
