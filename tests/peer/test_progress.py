"""
The fetch progress display (twistedp2p.peer.progress), on a Clock.
"""

from __future__ import annotations

from types import SimpleNamespace

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.progress import FetchProgress, human_seconds
from twistedp2p.textfmt import width


class FetchProgressTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(100)
        self.updates = 0
        self.transfer = None

    def make(self, fname: str = "notes.pdf") -> FetchProgress:
        def update() -> None:
            self.updates += 1

        return FetchProgress(fname, self.clock, transfer=lambda: self.transfer, on_update=update)

    def test_bar(self) -> None:
        p = self.make()
        self.clock.advance(2)
        p(1024 * 1024, 2 * 1024 * 1024)
        self.assertEqual(
            p.bar(100),
            "notes.pdf [###############...............]  50%  1.0 MiB of 2.0 MiB  512.0 KiB/s  eta 2s",
        )
        self.transfer = SimpleNamespace(sources=3, resumed=0)
        self.assertTrue(p.bar(100).endswith("eta 2s  3 sources"))

    def test_bar_fits_the_width(self) -> None:
        p = self.make("日本語の名前" * 10)
        p(10, 100)
        for columns in (40, 60, 80, 120):
            self.assertLessEqual(width(p.bar(columns)), columns - 1)
        self.assertIn("[", p.bar(80))

    def test_unknown_width_counts_as_80(self) -> None:
        p = self.make()
        p(10, 100)
        self.assertEqual(p.bar(0), p.bar(80))
        self.assertIn("[", p.bar(0))

    def test_unknown_total(self) -> None:
        p = self.make("seed file")
        self.clock.advance(1)
        p(2048, None)
        self.assertEqual(p.bar(80), "'seed file'  2.0 KiB  2.0 KiB/s")
        self.assertIsNone(p.eta())

    def test_rate_over_the_last_seconds(self) -> None:
        p = self.make()
        for _ in range(10):
            self.clock.advance(1)
            p(p.done + 1000, 100_000)
        self.assertEqual(round(p.rate()), 1000)
        # Stalled: the rate falls as time passes without progress.
        self.clock.advance(5)
        self.assertLess(p.rate(), 1000)

    def test_resumed_bytes_are_not_rate(self) -> None:
        self.transfer = SimpleNamespace(sources=1, resumed=50_000)
        p = self.make()
        self.clock.advance(1)
        p(51_000, 100_000)
        self.assertEqual(round(p.rate()), 1000)

    def test_redraws_are_limited(self) -> None:
        p = self.make()
        p(1, 100)
        p(2, 100)
        p(3, 100)
        self.assertEqual(self.updates, 1)
        self.clock.advance(0.2)
        p(4, 100)
        self.assertEqual(self.updates, 2)
        # The last update always draws.
        p(100, 100)
        self.assertEqual(self.updates, 3)

    def test_plain_lines_are_rare(self) -> None:
        p = self.make()
        self.clock.advance(5)
        p(10, 100)
        self.assertIsNone(p.plain_line())
        self.clock.advance(5)
        p(50, 100)
        self.assertEqual(p.plain_line(), "progress notes.pdf: 50% (50 B of 100 B), 8 B/s, eta 6s")
        self.assertIsNone(p.plain_line())
        self.clock.advance(10)
        p(100, 100)
        self.assertIsNone(p.plain_line())

    def test_human_seconds(self) -> None:
        self.assertEqual([human_seconds(x) for x in (None, 0.4, 59, 61, 7265)], ["?", "0s", "59s", "1m01s", "2h01m"])
