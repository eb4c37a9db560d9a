"""
Tests for L{twistedp2p.peer.slots}: separate upload and download slots,
and the minimum-rate rule of a transfer holding one.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.slots import DOWN, UP, RateFloor, Slots


class SlotsTests(SynchronousTestCase):
    def test_uploads_never_hold_download_slots(self) -> None:
        """
        Readers holding every upload slot (the slow-reader attack) leave
        this peer's downloads their own slots, and the other way round.
        """
        slots = Slots(uploads=4, downloads=2)
        ups = [slots.try_acquire(UP) for _ in range(4)]
        self.assertTrue(all(ups))
        self.assertIsNone(slots.try_acquire(UP))
        self.assertEqual(slots.refused, 1)
        down = self.successResultOf(slots.acquire(DOWN))
        self.assertIsNotNone(slots.take_if_free(DOWN))
        self.assertIsNone(slots.take_if_free(DOWN))
        waiting = slots.acquire(DOWN)
        self.assertNoResult(waiting)
        # A freed upload slot goes to an upload, not to the waiting download.
        ups[0].release()
        self.assertNoResult(waiting)
        self.assertIsNotNone(slots.try_acquire(UP))
        down.release()
        self.successResultOf(waiting)
        self.assertEqual((slots.in_use, slots.limit, slots.peak[UP], slots.peak[DOWN]), (6, 6, 4, 2))

    def test_max_sessions_sets_both(self) -> None:
        self.assertEqual(Slots(3).limits, {UP: 3, DOWN: 3})
        self.assertEqual(Slots(3, uploads=1).limits, {UP: 1, DOWN: 3})
        self.assertRaises(ValueError, Slots, 0)


class RateFloorTests(SynchronousTestCase):
    def test_grace_then_windows(self) -> None:
        clock = Clock()
        floor = RateFloor(100, clock, grace=10, window=20)
        floor.moved(10_000)  # during the grace: not counted
        self.assertEqual(floor.due_in(), 30)
        clock.advance(29)
        floor.moved(1000)
        self.assertIsNone(floor.check())
        clock.advance(1)
        self.assertEqual(floor.check(), 50.0)
        # The next window starts then.
        self.assertEqual(floor.due_in(), 20)
        floor.moved(2000)
        clock.advance(20)
        self.assertIsNone(floor.check())

    def test_paused_time_does_not_count(self) -> None:
        clock = Clock()
        floor = RateFloor(100, clock, grace=0, window=20)
        clock.advance(10)
        floor.pause()
        clock.advance(1000)
        self.assertIsNone(floor.check())
        self.assertEqual(floor.due_in(), 10)
        floor.resume()
        floor.moved(500)
        clock.advance(10)
        self.assertEqual(floor.check(), 25.0)

    def test_disabled(self) -> None:
        clock = Clock()
        floor = RateFloor(0, clock, grace=0, window=1)
        clock.advance(100)
        self.assertIsNone(floor.check())
