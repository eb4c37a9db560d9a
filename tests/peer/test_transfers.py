"""
Tests for L{twistedp2p.peer.transfers}: when observers hear that a
transfer started and ended.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial import unittest

from twistedp2p.peer.events import Event, Events
from twistedp2p.peer.transfers import Transfers


class AnnounceTests(unittest.SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        events = Events(self.clock)
        self.seen: list[Event] = []
        events.subscribe(self.seen.append)
        self.table = Transfers(self.clock, events)

    def kinds(self) -> list[str]:
        return [e.kind for e in self.seen]

    def test_start_announces(self) -> None:
        t = self.table.start("up", "f", "p", 10)
        self.assertEqual(self.kinds(), ["transfer_started"])
        self.table.announce(t)
        t.finish("done")
        self.assertEqual(self.kinds(), ["transfer_started", "transfer_finished"])

    def test_quiet_start_announced_later_once(self) -> None:
        """
        A transfer entered with C{announce=False} is in the table at once
        and announced when asked, once, with what it has done by then.
        """
        t = self.table.start("up", "f", "p", 10, announce=False)
        self.assertEqual(self.table.active(), [t])
        self.assertEqual(self.seen, [])
        t.add(4)
        self.table.announce(t)
        self.table.announce(t)
        self.assertEqual(self.kinds(), ["transfer_started"])
        self.assertEqual(self.seen[0].fields["transfer"]["done"], 4)

    def test_finished_before_announced(self) -> None:
        """
        A quiet transfer that ends before it was announced is announced
        first: observers never see an end without its start, nor a start
        after its end.
        """
        t = self.table.start("up", "f", "p", 10, announce=False)
        t.finish("done")
        self.table.announce(t)
        self.assertEqual(self.kinds(), ["transfer_started", "transfer_finished"])
        self.assertEqual(self.table.completed["up"], 1)
