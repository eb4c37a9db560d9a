"""
Keep Python's cyclic garbage collector away from the tracker's long-lived
objects.

A tracker holding 19,000 sessions has some 300,000 objects the collector
tracks (protocols, transports, sockets, sessions, index entries), nearly all
of them living as long as their session.  CPython's full (oldest-generation)
collection traverses every one of them: about 170 ms here, during which the
reactor answers nothing, and a busy tracker ran one every few seconds.

L{GCFreezer} moves what survives a full collection into the permanent
generation (C{gc.freeze()}), which later collections skip: the next full
collection only looks at objects that reached the oldest generation since,
and CPython's own rule (a full collection once those outnumber a quarter of
the survivors of the previous one) then keeps each of them small.

Frozen objects are still freed by reference counting as usual; only a
reference cycle formed among frozen objects would stay until C{stop()}
unfreezes them.  The tracker's per-session objects are freed without the
collector (tests/tracker/test_gcfreeze.py checks it).
"""

from __future__ import annotations

import gc as _gc
from typing import Any


class GCFreezer:
    """
    Freeze the survivors of every full collection (see the module docstring).

    @param gc: the C{gc} module (or a stand-in, for tests).
    @ivar freezes: how many times survivors were frozen since L{start}.
    """

    def __init__(self, gc: Any = _gc) -> None:
        self._gc = gc
        self._oldest = len(gc.get_threshold()) - 1
        self.freezes = 0
        self.running = False

    def start(self) -> None:
        """
        Freeze the survivors of each full collection from now on.  (No
        collection is forced here: CPython runs the first one soon enough,
        and a process embedding the tracker, such as a test run, may hold
        far more objects than the tracker.)
        """
        if self.running:
            return
        self.running = True
        self._gc.callbacks.append(self._collected)

    def stop(self) -> None:
        """
        Leave the collector as it was: no more freezing, and the frozen
        objects back in the oldest generation.
        """
        if not self.running:
            return
        self.running = False
        if self._collected in self._gc.callbacks:
            self._gc.callbacks.remove(self._collected)
        self._gc.unfreeze()

    def _collected(self, phase: str, info: dict[str, Any]) -> None:
        # Called by CPython around each collection; must never raise.
        if phase == "stop" and info.get("generation") == self._oldest:
            self._freeze()

    def _freeze(self) -> None:
        self._gc.freeze()
        self.freezes += 1
