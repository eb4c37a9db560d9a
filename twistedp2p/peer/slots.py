"""
The K cap shared by uploads and downloads (``--max-sessions K``).

Uploads that find no free slot are refused (``busy``); downloads wait for
one, first come first served.  A released slot goes straight to the oldest
waiting download, so uploads cannot starve downloads.
"""

from __future__ import annotations

from collections import deque

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
    At most C{limit} sessions at once, uploads and downloads together.

    Counters for status and tests: C{in_use}, C{active[kind]},
    C{peak_in_use}, C{peak[kind]} (high-water marks) and C{refused}
    (uploads answered busy).
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the session limit must be at least 1")
        self.limit = limit
        self.in_use = 0
        self.active = {UP: 0, DOWN: 0}
        self.peak = {UP: 0, DOWN: 0}
        self.peak_in_use = 0
        self.refused = 0
        self._waiting: deque[tuple[Deferred, str]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def try_acquire(self, kind: str = UP) -> Slot | None:
        """
        Take a free slot now, or return None (and count a refusal).
        """
        if self.in_use >= self.limit or self._waiting:
            self.refused += 1
            return None
        return self._take(kind)

    def take_if_free(self, kind: str = DOWN) -> Slot | None:
        """
        Take a free slot now, or return None without counting a refusal
        and without queueing (a download's extra source connections: they
        never make uploads wait).
        """
        if self.in_use >= self.limit or self._waiting:
            return None
        return self._take(kind)

    def acquire(self, kind: str = DOWN) -> Deferred:
        """
        @return: Deferred firing a L{Slot} when one is free; cancelling it
            leaves the queue.
        """
        if self.in_use < self.limit and not self._waiting:
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
        if self._waiting and self.in_use < self.limit:
            d, kind = self._waiting.popleft()
            d.callback(self._take(kind))
