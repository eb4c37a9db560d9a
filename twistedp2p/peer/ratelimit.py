"""
Bandwidth caps: one token bucket per direction for the whole peer.

A L{TokenBucket} refills at C{rate} bytes per second up to C{burst}; a
transfer takes tokens for what it moved and may run into debt, and whoever
must wait registers with L{TokenBucket.when_available}.  Uploads wrap the
transport in a L{ThrottledConsumer}, which holds the L{FileSender}'s next
chunk while the bucket is in debt; downloads pause their transports
(L{PauseReasons}).  Time comes from an injected C{IReactorTime}.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from twisted.internet.interfaces import IConsumer, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

#: The smallest burst: one upload chunk must fit.
MIN_BURST = 64 * 1024
#: Seconds of traffic the bucket holds at most (bounds the initial burst).
BURST_SECONDS = 0.05

_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """
    A byte count with an optional binary suffix: ``K`` = KiB, ``M`` = MiB,
    ``G`` = GiB, ``T`` = TiB (``KiB``, ``KB`` and a trailing ``/s`` are
    accepted too).  Fractions are allowed before a suffix (``1.5M``).

    @raise ValueError: for anything else, or a negative value.
    """
    raw = text.strip()
    t = raw.upper()
    if t.endswith("/S"):
        t = t[:-2]
    for tail in ("IB", "B"):
        if len(t) > len(tail) and t.endswith(tail) and t[-len(tail) - 1] in "KMGT":
            t = t[: -len(tail)]
            break
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] != "" else ""
    number = t[: -1] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"{raw!r} is not a size (a number with an optional K, M or G suffix)")
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{raw!r}: a size must be 0 or more")
    return int(value * _UNITS[unit])


class TokenBucket:
    """
    A byte budget refilled at C{rate} per second, holding at most
    C{burst}.  C{rate} 0 means unlimited (every call is a no-op).

    Waiters registered with L{when_available} are called in order, from one
    timer, once the bucket is out of debt.
    """

    log = Logger()

    def __init__(self, rate: float, clock: Any, burst: float | None = None) -> None:
        if rate < 0:
            raise ValueError("the rate must be 0 or more")
        self.rate = float(rate)
        self._clock = clock
        if burst is None:
            burst = max(MIN_BURST, self.rate * BURST_SECONDS)
        self.burst = float(burst)
        self._tokens = self.burst
        self._last = clock.seconds()
        self._waiters: deque[Callable[[], Any]] = deque()
        self._timer: Any = None
        #: Bytes taken so far (for tests and status).
        self.taken = 0

    @property
    def limited(self) -> bool:
        return self.rate > 0

    def _refill(self) -> None:
        now = self._clock.seconds()
        if now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def take(self, n: int) -> None:
        """
        Account for C{n} bytes moved (the bucket may go into debt).
        """
        self.taken += n
        if not self.limited:
            return
        self._refill()
        self._tokens -= n

    def available(self) -> bool:
        """
        True when a transfer may move bytes now (not in debt, and nobody
        waiting ahead).
        """
        if not self.limited:
            return True
        return not self._waiters and self.tokens > 0

    def when_available(self, callback: Callable[[], Any]) -> None:
        """
        Call C{callback} once the bucket is out of debt, after the callbacks
        registered before it.
        """
        if not self.limited:
            callback()
            return
        self._waiters.append(callback)
        self._schedule()

    def cancel(self, callback: Callable[[], Any]) -> None:
        """
        Forget a waiting C{callback} (its transfer ended).
        """
        try:
            self._waiters.remove(callback)
        except ValueError:
            return
        if not self._waiters and self._timer is not None and self._timer.active():
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        if self._timer is not None and self._timer.active():
            return
        debt = -self.tokens
        delay = debt / self.rate if debt > 0 else 0.0
        # Wake with a little credit, so each wake-up lets a chunk through.
        self._timer = self._clock.callLater(delay + 1e-4, self._wake)

    def _wake(self) -> None:
        self._timer = None
        while self._waiters and self.tokens > 0:
            callback = self._waiters.popleft()
            try:
                callback()
            except Exception:
                self.log.failure("a rate-limit waiter failed")
        if self._waiters:
            self._schedule()

    def stop(self) -> None:
        """
        Drop the timer and the waiters (the peer is stopping).
        """
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._waiters.clear()


@implementer(IConsumer, IPushProducer)
class ThrottledConsumer:
    """
    An C{IConsumer} between a pull producer (a L{FileSender}) and a
    transport: every chunk written takes tokens, and while the bucket is in
    debt the producer's next chunk is held until it refills.

    The transport sees this object as a pull producer: it asks for more
    (C{resumeProducing}) when its buffer drains, and we pass the request on
    at once or when the bucket allows.
    """

    def __init__(self, transport: Any, bucket: TokenBucket) -> None:
        self._transport = transport
        self._bucket = bucket
        self._producer: Any = None
        self._waiting = False
        self._stopped = False

    # -- IConsumer, towards the FileSender -----------------------------------

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        if streaming:
            raise ValueError("ThrottledConsumer serves pull producers only")
        self._producer = producer
        self._stopped = False
        self._transport.registerProducer(self, False)

    def unregisterProducer(self) -> None:
        self._producer = None
        self._bucket.cancel(self._release)
        self._waiting = False
        self._transport.unregisterProducer()

    def write(self, data: bytes) -> None:
        self._bucket.take(len(data))
        self._transport.write(data)

    # -- pull producer, towards the transport ------------------------------

    def resumeProducing(self) -> None:
        if self._producer is None or self._waiting or self._stopped:
            return
        if self._bucket.available():
            self._producer.resumeProducing()
        else:
            self._waiting = True
            self._bucket.when_available(self._release)

    def _release(self) -> None:
        self._waiting = False
        if self._producer is not None and not self._stopped:
            self._producer.resumeProducing()

    def pauseProducing(self) -> None:
        """
        Pull producers are not paused: the transport simply stops asking.
        """

    def stopProducing(self) -> None:
        self._stopped = True
        self._bucket.cancel(self._release)
        self._waiting = False
        if self._producer is not None:
            self._producer.stopProducing()


class PauseReasons:
    """
    Pause a transport while any reason holds (rate limit, disk backlog):
    it is paused on the first reason and resumed when the last one clears.
    """

    def __init__(self, on_pause: Callable[[], None], on_resume: Callable[[], None]) -> None:
        self._reasons: set[str] = set()
        self._on_pause = on_pause
        self._on_resume = on_resume

    @property
    def paused(self) -> bool:
        return bool(self._reasons)

    def __contains__(self, reason: str) -> bool:
        return reason in self._reasons

    def add(self, reason: str) -> None:
        if reason in self._reasons:
            return
        self._reasons.add(reason)
        if len(self._reasons) == 1:
            self._on_pause()

    def remove(self, reason: str) -> None:
        if reason not in self._reasons:
            return
        self._reasons.discard(reason)
        if not self._reasons:
            self._on_resume()

    def clear(self) -> None:
        self._reasons.clear()


def throttle_download(bucket: TokenBucket | None, n: int, reasons: PauseReasons) -> None:
    """
    Account C{n} received bytes; pause the receiving transport (reason
    ``rate``) while the bucket is in debt.
    """
    if bucket is None:
        return
    bucket.take(n)
    if bucket.limited and "rate" not in reasons and not bucket.available():
        reasons.add("rate")
        bucket.when_available(lambda: reasons.remove("rate"))
