"""
The progress of one fetch, as the shell shows it: a live bar on a terminal
(bytes, percentage, rate, ETA, sources), or a plain line now and then when
stdout is a pipe or a file (docs/shell.md).

A L{FetchProgress} is a plain object fed by the download's progress
callback C{(bytes done, total or None)}; it reads the time from an
injected C{IReactorTime} and draws nothing itself.  A folder fetch reports
its aggregate progress through the same callback.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twistedp2p.textfmt import human_size, quote_name, truncate, width

#: Seconds of samples the current rate is measured over.
RATE_WINDOW = 5.0
#: Seconds between two redraws of a bar (the last update always draws).
REDRAW_INTERVAL = 0.1
#: Seconds before the first plain progress line, and between two of them.
PLAIN_INTERVAL = 10.0


def human_seconds(seconds: float | None) -> str:
    """
    C{45s}, C{3m05s}, C{1h02m}, or C{?} when unknown.
    """
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class FetchProgress:
    """
    The progress of one fetch.

    @param fname: the name being fetched.
    @param clock: an C{IReactorTime}.
    @param transfer: returns the download's L{Transfer} (for the sources
        sending now and the bytes resumed from disk), or None (a folder
        fetch, or before the download starts).
    @param on_update: called (with no argument) when the bar should be
        redrawn; at most every L{REDRAW_INTERVAL} seconds, and for the last
        update.
    """

    def __init__(
        self,
        fname: str,
        clock: Any,
        transfer: Callable[[], Any] = lambda: None,
        on_update: Callable[[], None] = lambda: None,
    ) -> None:
        self.fname = fname
        self._clock = clock
        self._transfer = transfer
        self._first = True
        self._on_update = on_update
        self.started = clock.seconds()
        self.done = 0
        self.total: int | None = None
        self._samples: deque[tuple[float, int]] = deque([(self.started, 0)])
        self._drawn_at: float | None = None
        self._plain_at = self.started

    # -- fed by the download --------------------------------------------------------

    def __call__(self, done: int, total: int | None) -> None:
        """
        The download's progress callback.
        """
        now = self._clock.seconds()
        if self._first:
            self._first = False
            t = self._transfer()
            resumed = getattr(t, "resumed", 0) if t is not None else 0
            if resumed:
                # What was on disk already is not part of the rate.
                self._samples[0] = (self._samples[0][0], resumed)
        self.done = done
        self.total = total
        self._samples.append((now, done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - RATE_WINDOW:
            self._samples.popleft()
        finished = total is not None and done >= total
        if finished or self._drawn_at is None or now - self._drawn_at >= REDRAW_INTERVAL:
            self._drawn_at = now
            self._on_update()

    # -- what it shows ------------------------------------------------------------------

    def rate(self) -> float:
        """
        Bytes per second over about the last L{RATE_WINDOW} seconds.
        """
        now = self._clock.seconds()
        first_time, first_done = self._samples[0]
        if now <= first_time:
            return 0.0
        return max(0, self.done - first_done) / (now - first_time)

    def eta(self) -> float | None:
        if self.total is None:
            return None
        left = self.total - self.done
        if left <= 0:
            return 0.0
        rate = self.rate()
        return left / rate if rate > 0 else None

    def percent(self) -> float | None:
        if self.total is None:
            return None
        return 100.0 if self.total == 0 else min(100.0, 100.0 * self.done / self.total)

    def _details(self) -> str:
        if self.total is not None:
            amount = f"{human_size(self.done)} of {human_size(self.total)}"
        else:
            amount = human_size(self.done)
        text = f"{amount}  {human_size(self.rate())}/s"
        if self.total is not None:
            text += f"  eta {human_seconds(self.eta())}"
        t = self._transfer()
        sources = getattr(t, "sources", None) if t is not None else None
        if sources is not None:
            text += f"  {sources} source{'' if sources == 1 else 's'}"
        return text

    def bar(self, columns: int = 80) -> str:
        """
        One line of at most C{columns - 1} screen columns::

            notes.pdf [##########..........]  50%  1.0 MiB of 2.0 MiB  512.0 KiB/s  eta 2s  2 sources

        A width of 0 or less (unknown) counts as 80.
        """
        if columns <= 0:
            columns = 80
        name = quote_name(self.fname)
        percent = self.percent()
        details = self._details()
        if percent is None:
            text = f"{name}  {details}"
            return truncate(text, columns - 1)
        tail = f" {percent:3.0f}%  {details}"
        bar_width = max(10, min(30, columns - 1 - width(tail) - 3 - min(width(name), 24) - 1))
        filled = int(bar_width * percent / 100)
        bar = "[" + "#" * filled + "." * (bar_width - filled) + "]"
        room = columns - 1 - width(tail) - width(bar) - 1
        return truncate(f"{truncate(name, max(8, room))} {bar}{tail}", columns - 1)

    def plain_line(self) -> str | None:
        """
        The line to print when stdout is not a terminal: one every
        L{PLAIN_INTERVAL} seconds of a fetch (so a short fetch prints
        none), else None::

            progress notes.pdf: 50% (1.0 MiB of 2.0 MiB), 512.0 KiB/s, eta 2s
        """
        now = self._clock.seconds()
        if now - self._plain_at < PLAIN_INTERVAL or (self.total is not None and self.done >= self.total):
            return None
        self._plain_at = now
        percent = self.percent()
        name = quote_name(self.fname)
        if percent is None:
            return f"progress {name}: {human_size(self.done)}, {human_size(self.rate())}/s"
        return (
            f"progress {name}: {percent:.0f}% ({human_size(self.done)} of {human_size(self.total)}),"
            f" {human_size(self.rate())}/s, eta {human_seconds(self.eta())}"
        )
