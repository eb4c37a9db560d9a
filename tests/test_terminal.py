"""
The line editor (twistedp2p.terminal) under an insults ServerProtocol over
a StringTransport: keys, history (and its file), Tab completion, output
printed above the progress bars and the edited line.
"""

from __future__ import annotations

import fcntl
import os
import struct
import termios
from pathlib import Path
from typing import Any

from twisted.conch.insults import insults
from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.progress import FetchProgress
from twistedp2p.peer.shell import _columns
from twistedp2p.terminal import (
    HistoryFile,
    LineEditor,
    common_prefix,
    complete,
    split_for_completion,
    terminal_columns,
)

LEFT, RIGHT, UP, DOWN = b"\x1b[D", b"\x1b[C", b"\x1b[A", b"\x1b[B"


def sync_run(f: Any, *args: Any) -> Any:
    return succeed(f(*args))


class FakeShell:
    MAX_LENGTH = 100

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.eof = 0
        self.transport: Any = None

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line)

    def readConnectionLost(self) -> None:
        self.eof += 1

    def connectionLost(self, reason: Any = None) -> None:
        pass


class EditorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.shell = FakeShell()
        self.interrupts = 0
        self.eofs = 0
        self.history_path = Path(self.mktemp())
        self.history_path.parent.mkdir(parents=True, exist_ok=True)
        self.history_path.write_text("old one\nold two\n")
        words = ["search", "status", "fetch", "my notes.pdf", "my nose.txt", "data.bin"]

        def completer(before: Any, prefix: str) -> list[str]:
            return words

        self.server = insults.ServerProtocol(
            LineEditor,
            self.shell,
            "p2p> ",
            completer=completer,
            history=HistoryFile(self.history_path, sync_run),
            on_interrupt=self.interrupted,
            on_eof=self.ended,
            columns=lambda: 60,
        )
        self.transport = StringTransport()
        self.server.makeConnection(self.transport)
        self.editor: LineEditor = self.server.terminalProtocol

    def interrupted(self) -> None:
        self.interrupts += 1

    def ended(self) -> None:
        self.eofs += 1

    def keys(self, data: bytes) -> None:
        self.server.dataReceived(data)

    def buffer(self) -> str:
        return b"".join(self.editor.lineBuffer).decode()

    def test_insert_in_the_middle(self) -> None:
        self.keys(b"serch" + LEFT * 3 + b"a\r")
        self.assertEqual(self.shell.lines, [b"search"])

    def test_emacs_keys(self) -> None:
        self.keys(b"fetch my file")
        self.keys(b"\x17")  # Ctrl-W: the word before the cursor
        self.assertEqual(self.buffer(), "fetch my ")
        self.keys(b"\x01x")  # Ctrl-A, then insert
        self.assertEqual(self.buffer(), "xfetch my ")
        self.keys(b"\x05y")  # Ctrl-E
        self.assertEqual(self.buffer(), "xfetch my y")
        self.keys(b"\x01" + RIGHT + b"\x0b")  # Ctrl-K after one char
        self.assertEqual(self.buffer(), "x")
        self.keys(b"abc" + LEFT + b"\x15")  # Ctrl-U: up to the cursor
        self.assertEqual(self.buffer(), "c")
        self.keys(b"\x1b[H" + b"\x04")  # Home, Ctrl-D deletes under the cursor
        self.assertEqual(self.buffer(), "")
        self.keys(b"ab\x7f\x08")  # Backspace twice
        self.assertEqual(self.buffer(), "")

    def test_wide_characters(self) -> None:
        self.keys("日本".encode() + LEFT + "語".encode() + b"\r")
        self.assertEqual(self.shell.lines, ["日語本".encode()])

    def test_history_from_the_file_and_appended(self) -> None:
        self.keys(UP)
        self.assertEqual(self.buffer(), "old two")
        self.keys(UP + UP)
        self.assertEqual(self.buffer(), "old one")
        self.keys(DOWN)
        self.assertEqual(self.buffer(), "old two")
        self.keys(b"\x15status \r")
        self.assertEqual(self.shell.lines, [b"status "])
        self.keys(UP)
        self.assertEqual(self.buffer(), "status ")
        self.assertEqual(self.history_path.read_text().splitlines(), ["old one", "old two", "status"])

    def test_tab_completion(self) -> None:
        self.keys(b"fe\t")
        self.assertEqual(self.buffer(), "fetch ")
        self.keys(b"my\t")
        self.assertEqual(self.buffer(), "fetch 'my no")
        self.keys(b"t\t")
        self.assertEqual(self.buffer(), "fetch 'my notes.pdf' ")
        self.keys(b"\r")
        self.assertEqual(self.shell.lines, [b"fetch 'my notes.pdf' "])

    def test_ambiguous_tab_lists_on_the_second_press(self) -> None:
        self.keys(b"s\t")
        self.assertEqual(self.buffer(), "s")
        self.transport.clear()
        self.keys(b"\t")
        self.assertIn(b"search  status", self.transport.value())
        self.assertTrue(self.transport.value().endswith(b"p2p> s\x1b[K"))

    def test_ctrl_c_and_ctrl_d(self) -> None:
        self.keys(b"\x03")
        self.assertEqual(self.interrupts, 1)
        self.keys(b"x\x04")  # not empty: Ctrl-D is not the end
        self.assertEqual(self.shell.eof, 0)
        self.keys(b"\x15\x04")
        self.assertEqual((self.shell.eof, self.eofs), (1, 1))

    def test_output_above_bars_and_line(self) -> None:
        self.keys(b"sta")
        self.transport.clear()
        self.editor.show_status(["bar one", "bar two"])
        self.assertEqual(self.transport.value(), b"\r\x1b[Jbar one\r\nbar two\r\n\rp2p> sta\x1b[K")
        self.transport.clear()
        self.shell.transport.write(b"a line\n")
        self.assertEqual(
            self.transport.value(), b"\r\x1b[2A\x1b[Ja line\r\nbar one\r\nbar two\r\n\rp2p> sta\x1b[K"
        )
        self.transport.clear()
        self.editor.show_status([])
        self.assertEqual(self.transport.value(), b"\r\x1b[2A\x1b[J\rp2p> sta\x1b[K")

    def test_long_line_scrolls(self) -> None:
        self.keys(b"x" * 80)
        line = self.transport.value().split(b"\r")[-1]
        self.assertLess(len(line.replace(b"\x1b[K", b"")), 60)
        self.keys(b"\r")
        self.assertEqual(self.shell.lines, [b"x" * 80])


class CompletionTests(SynchronousTestCase):
    def test_split(self) -> None:
        self.assertEqual(split_for_completion("fetch da"), (["fetch"], "da", "da"))
        self.assertEqual(split_for_completion("fetch "), (["fetch"], "", ""))
        self.assertEqual(split_for_completion("fetch 'my n"), (["fetch"], "my n", "'my n"))
        self.assertEqual(split_for_completion(""), ([], "", ""))

    def test_complete(self) -> None:
        names = lambda words, prefix: ["a b.txt", "a c.txt", "zz"]
        self.assertEqual(complete("fetch z", names), ("fetch zz ", []))
        self.assertEqual(complete("fetch a", names), ("fetch 'a ", []))
        self.assertEqual(complete("fetch 'a ", names), ("fetch 'a ", ["a b.txt", "a c.txt"]))
        self.assertEqual(complete("fetch q", names), ("fetch q", []))
        self.assertEqual(common_prefix(["abc", "abd"]), "ab")

    def test_a_folder_is_completed_without_a_space(self) -> None:
        paths = lambda words, prefix: ["docs/", "my dir/", "notes.txt"]
        # A path goes on below a folder: no space after it.
        self.assertEqual(complete("publish do", paths), ("publish docs/", []))
        self.assertEqual(complete("publish my", paths), ("publish 'my dir/", []))
        self.assertEqual(complete("publish no", paths), ("publish notes.txt ", []))


class WindowSizeTests(SynchronousTestCase):
    """
    A pseudo-terminal whose window size is 0x0 (some test harnesses and
    serial consoles) still gets progress bars: its width counts as 80.
    """

    def setUp(self) -> None:
        master, self.slave = os.openpty()
        self.addCleanup(os.close, master)
        self.addCleanup(os.close, self.slave)
        self.resize(0, 0)

    def resize(self, rows: int, columns: int) -> None:
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))

    def test_terminal_columns(self) -> None:
        self.assertEqual(os.get_terminal_size(self.slave).columns, 0)
        self.assertEqual(terminal_columns(self.slave), 80)
        self.resize(30, 100)
        self.assertEqual(terminal_columns(self.slave), 100)
        self.assertEqual(terminal_columns(-1), 80)

    def test_bar_drawn_on_a_0x0_terminal(self) -> None:
        shell = FakeShell()
        server = insults.ServerProtocol(LineEditor, shell, "p2p> ", columns=lambda: terminal_columns(self.slave))
        transport = StringTransport()
        server.makeConnection(transport)
        progress = FetchProgress("notes.pdf", Clock())
        progress(10, 100)
        bar = progress.bar(_columns(shell.transport))
        transport.clear()
        shell.transport.show_status([bar])
        self.assertIn(bar.encode() + b"\r\n", transport.value())
        self.assertIn(b"[", transport.value())
