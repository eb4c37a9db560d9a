"""
Sizes, hashes, quoting and wide-character alignment (twistedp2p.textfmt).
"""

from __future__ import annotations

import shlex

from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.textfmt import human_size, pad, quote_name, short_hash, table, truncate, width


class TextTests(SynchronousTestCase):
    def test_human_size(self) -> None:
        self.assertEqual(
            [human_size(n) for n in (None, 0, 1023, 1024, 1536, 5 * 1024**2, 3 * 1024**3, 2 * 1024**4)],
            ["?", "0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB", "2.0 TiB"],
        )

    def test_short_hash(self) -> None:
        self.assertEqual(short_hash("ab" * 32), "abababababab")
        self.assertEqual(short_hash(None, "unverified"), "unverified")

    def test_quote_name_round_trips(self) -> None:
        for name in ["a.pdf", "dir/a b.txt", "it's", 'say "hi"', "*.pdf", "#x", "日本 語", "back\\slash"]:
            quoted = quote_name(name)
            self.assertEqual(shlex.split(quoted), [name])
        self.assertEqual(quote_name("a.pdf"), "a.pdf")
        self.assertEqual(quote_name("日本語.txt"), "日本語.txt")
        self.assertEqual(quote_name("my notes.pdf"), "'my notes.pdf'")

    def test_width(self) -> None:
        self.assertEqual(width("abc"), 3)
        self.assertEqual(width("日本語"), 6)
        self.assertEqual(width("e\u0301"), 1)
        self.assertEqual(pad("日本", 6), "日本  ")
        self.assertEqual(pad("ab", 4, right=True), "  ab")
        self.assertEqual(truncate("日本語日本語", 7), "日本語…")
        self.assertEqual(truncate("short", 10), "short")

    def test_table_aligns_wide_names(self) -> None:
        lines = table(["NAME", "SIZE", "HOST"], [["日本語.txt", "1.0 KiB", "a"], ["x", "12 B", "bb"]], right=[1])
        self.assertEqual(lines, ["NAME           SIZE  HOST", "日本語.txt  1.0 KiB  a", "x              12 B  bb"])
        # Every column starts at the same screen column.
        self.assertEqual({width(line[: line.rindex(" ")]) for line in lines}, {20})
