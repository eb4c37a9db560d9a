"""
A small observer list: the node tells the shell (and later the web
dashboard) what happens without knowing who listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from twisted.logger import Logger


@dataclass(frozen=True)
class Event:
    """
    Something observers may show.

    ``kind`` is a stable word (``link``, ``published``, ``unpublished``,
    ``transfer_started``, ``transfer_finished``, ``notice``); ``message`` is
    one line for people; ``fields`` carries the details.
    """

    kind: str
    message: str
    time: float
    fields: dict[str, Any] = field(default_factory=dict)


Observer = Callable[[Event], None]


class Events:
    """
    Fan events out to observers.  An observer that raises is logged and
    does not stop the others.
    """

    log = Logger()

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._observers: list[Observer] = []

    def subscribe(self, observer: Observer) -> None:
        self._observers.append(observer)

    def unsubscribe(self, observer: Observer) -> None:
        if observer in self._observers:
            self._observers.remove(observer)

    def emit(self, kind: str, message: str, **fields: Any) -> Event:
        event = Event(kind, message, float(self._clock.seconds()), fields)
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.log.failure("event observer {observer} failed", observer=observer)
        return event
