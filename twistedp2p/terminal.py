"""
Line editing for the shells when stdin is a terminal (docs/shell.md).

L{LineEditor} is a L{HistoricRecvLine} (Twisted's line editor) under an
insults L{ServerProtocol}: arrows, Home/End, Ctrl-A/E/B/F/K/U/W/L, history
with Up/Down kept in a file (L{HistoryFile}), and Tab completion.  Lines it
reads go to a line shell (the same object that reads a pipe); what the
shell prints goes through L{EditorOutput}, which prints it above the
progress bars and the line being edited, then redraws both.  The terminal
is in raw mode while the shell runs (L{RawMode}) and restored when the
process stops.  Ctrl-C arrives as a byte and is turned into a SIGINT, so it
does exactly what Ctrl-C does without line editing.

Nothing here blocks the reactor: the history file is read and appended in
a thread, and completion only reads data the shells already hold.
"""

from __future__ import annotations

import codecs
import os
import shlex
from pathlib import Path
from typing import Any, Callable, Sequence

from twisted.conch.insults import insults
from twisted.conch.recvline import HistoricRecvLine
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from twistedp2p.textfmt import quote_name, width

#: Lines of history kept in the file (older ones are dropped at start-up).
HISTORY_LINES = 1000
#: Candidates listed at most when a Tab is ambiguous.
MAX_LISTED = 60

#: A completer: (the words before the one being completed, the prefix of
#: that word) -> the candidate words.
Completer = Callable[[Sequence[str], str], Sequence[str]]


# -- history file -----------------------------------------------------------------------


def _read_history(path: Path) -> list[str]:
    """
    (In a thread.)  The last L{HISTORY_LINES} lines of the history file;
    the file is trimmed when it grew to twice that.
    """
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return []
    if len(lines) > 2 * HISTORY_LINES:
        lines = lines[-HISTORY_LINES:]
        try:
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in lines), "utf-8")
            os.replace(tmp, path)
        except OSError:
            pass
    return lines[-HISTORY_LINES:]


def _append_history(path: Path, line: str) -> None:
    """
    (In a thread.)
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8") + b"\n")
        finally:
            os.close(fd)
    except OSError:
        pass


class HistoryFile:
    """
    The shell's history on disk: loaded once, appended line by line, both
    in a thread (C{run_in_thread}), the appends in order.
    """

    log = Logger()

    def __init__(self, path: Path | str, run_in_thread: Callable[..., Deferred]) -> None:
        self.path = Path(path)
        self._run = run_in_thread
        self._last: Deferred = succeed(None)

    def load(self) -> Deferred:
        """
        @return: Deferred firing the lines (oldest first).
        """
        return self._run(_read_history, self.path).addErrback(lambda _: [])

    def append(self, line: str) -> None:
        def write(_: Any) -> Deferred:
            return self._run(_append_history, self.path, line)

        self._last = self._last.addBoth(write).addErrback(
            lambda f: self.log.failure("writing the shell history {path}", f, path=str(self.path))
        )


# -- completion --------------------------------------------------------------------------


def split_for_completion(before: str) -> tuple[list[str], str, str]:
    """
    Split the text before the cursor into the complete words and the word
    being typed.

    @return: C{(words, prefix, raw)}: C{prefix} is the word being typed,
        unquoted; C{raw} is how it is written (to be replaced).
    """
    lexer = shlex.shlex(before, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    words: list[str] = []
    try:
        words = list(lexer)
    except ValueError:
        # An open quote: the word being typed starts at it.
        quote = max(before.rfind("'"), before.rfind('"'))
        head = before[:quote]
        try:
            words = shlex.split(head)
        except ValueError:
            words = head.split()
        return words, before[quote + 1 :], before[quote:]
    if not before or before[-1].isspace():
        return words, "", ""
    # The last word is the one being typed: find where it starts.
    raw_start = len(before)
    for start in range(len(before) - 1, -1, -1):
        if before[start].isspace():
            try:
                if shlex.split(before[start + 1 :]) == words[-1:]:
                    raw_start = start + 1
                    break
            except ValueError:
                continue
    else:
        raw_start = 0
    return words[:-1], words[-1] if words else "", before[raw_start:]


def common_prefix(words: Sequence[str]) -> str:
    if not words:
        return ""
    first, last = min(words), max(words)
    n = 0
    while n < len(first) and n < len(last) and first[n] == last[n]:
        n += 1
    return first[:n]


def complete(before: str, completer: Completer) -> tuple[str, list[str]]:
    """
    Complete the word before the cursor.

    @return: C{(new text before the cursor, candidates to list)}: the text
        is extended (a unique match gets a space after it, quoted when it
        needs to be); the list is non-empty when several candidates remain
        and nothing more could be added.
    """
    words, prefix, raw = split_for_completion(before)
    candidates = sorted({c for c in completer(words, prefix) if c.startswith(prefix)})
    if not candidates:
        return before, []
    head = before[: len(before) - len(raw)]
    if len(candidates) == 1:
        if candidates[0].endswith("/"):
            # A folder: more may follow (a path goes on below it).
            return head + _open_quote(quote_name(candidates[0]), candidates[0]), []
        return head + quote_name(candidates[0]) + " ", []
    common = common_prefix(candidates)
    if len(common) > len(prefix):
        return head + _open_quote(quote_name(common), common), []
    return before, candidates


def _open_quote(quoted: str, word: str) -> str:
    """
    C{quoted} (L{quote_name} of C{word}) with its closing quote left off,
    if it has one: more is to be typed.
    """
    if quoted != word and quoted.endswith("'") and not word.endswith("'"):
        return quoted[:-1]
    return quoted


# -- the editor -----------------------------------------------------------------------------


class LineEditor(HistoricRecvLine):
    """
    Twisted's line editor, redrawing its line itself (so wide and
    multi-byte characters, the progress bars and the output lines printed
    above all stay in place), with Emacs keys, a history file and Tab
    completion.

    @param shell: the line shell: C{makeConnection(EditorOutput)},
        C{lineReceived(bytes)}, C{readConnectionLost()},
        C{connectionLost(reason)}.
    @param prompt: the prompt, as text.
    @param completer: a L{Completer}, or None.
    @param history: a L{HistoryFile}, or None.
    @param on_interrupt: called for Ctrl-C.
    @param on_eof: called for Ctrl-D on an empty line (after the shell's
        C{readConnectionLost}).
    @param columns: returns the terminal's width.
    """

    log = Logger()

    def __init__(
        self,
        shell: Any,
        prompt: str,
        completer: Completer | None = None,
        history: HistoryFile | None = None,
        on_interrupt: Callable[[], None] = lambda: None,
        on_eof: Callable[[], None] = lambda: None,
        columns: Callable[[], int] = lambda: 80,
    ) -> None:
        self.shell = shell
        self.prompt = prompt
        self.completer = completer
        self.history = history
        self._on_interrupt = on_interrupt
        self._on_eof = on_eof
        self._columns = columns
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._status: list[str] = []
        self._drawn_status = 0
        self._listed_for: str | None = None
        self._closed = False
        self.output = EditorOutput(self)

    # -- connection -------------------------------------------------------------------

    def connectionMade(self) -> None:
        HistoricRecvLine.connectionMade(self)
        ctrl = {
            b"\x01": self.handle_HOME,
            b"\x05": self.handle_END,
            b"\x02": self.handle_LEFT,
            b"\x06": self.handle_RIGHT,
            b"\x0b": self.handle_KILL_END,
            b"\x15": self.handle_KILL_START,
            b"\x17": self.handle_KILL_WORD,
            b"\x0c": self.handle_REDRAW,
            b"\x08": self.handle_BACKSPACE,
            b"\x04": self.handle_CTRL_D,
            b"\x03": self.handle_CTRL_C,
            b"\x10": self.handle_UP,
            b"\x0e": self.handle_DOWN,
        }
        self.keyHandlers.update(ctrl)
        self.shell.makeConnection(self.output)
        if self.history is not None:
            self.history.load().addCallback(self._history_loaded)

    def _history_loaded(self, lines: list[str]) -> None:
        typed = self.historyLines
        self.historyLines = [line.encode("utf-8") for line in lines] + typed
        self.historyPosition = len(self.historyLines)

    def initializeScreen(self) -> None:
        # Unlike RecvLine, never reset the terminal: output above stays.
        self.mode = "insert"
        self._redraw_line()

    def terminalSize(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._redraw_line()

    def connectionLost(self, reason: Any = None) -> None:
        self._closed = True
        self.shell.connectionLost(reason)

    # -- the screen -------------------------------------------------------------------

    def _text(self) -> tuple[str, str]:
        before, after = self.currentLineBuffer()
        return before.decode("utf-8", "replace"), after.decode("utf-8", "replace")

    def _line_bytes(self) -> bytes:
        """
        The prompt and the buffer, cut to the terminal's width around the
        cursor, then the cursor moved back into place.
        """
        before, after = self._text()
        columns = max(20, self._columns()) - 1
        room = columns - width(self.prompt)
        if width(before) > room - 1:
            # Scroll: keep the end of what is before the cursor.
            kept = ""
            for c in reversed(before):
                if width(kept) + width(c) > room - 2:
                    break
                kept = c + kept
            before = "<" + kept
        tail = ""
        for c in after:
            if width(before) + width(tail) + width(c) > room:
                break
            tail += c
        back = width(tail)
        text = f"\r{self.prompt}{before}{tail}\x1b[K"
        if back:
            text += f"\x1b[{back}D"
        return text.encode("utf-8")

    def _redraw_line(self) -> None:
        if not self._closed and self.terminal is not None:
            self.terminal.write(self._line_bytes())

    def _clear(self) -> bytes:
        """
        Bytes that erase the bars and the edited line (the cursor ends at
        the start of the first bar's line).
        """
        up = f"\x1b[{self._drawn_status}A" if self._drawn_status else ""
        return f"\r{up}\x1b[J".encode("ascii")

    def _draw(self) -> bytes:
        columns = max(20, self._columns())
        out = b"".join(
            line.encode("utf-8", "replace") + b"\n" for line in self._status if width(line) < columns
        )
        self._drawn_status = sum(1 for line in self._status if width(line) < columns)
        return out + self._line_bytes()

    def print_lines(self, lines: Sequence[str]) -> None:
        """
        Print output lines above the bars and the line being edited.
        """
        if self._closed or self.terminal is None:
            return
        # (The terminal turns each "\n" into "\r\n".)
        body = b"".join(line.encode("utf-8", "replace") + b"\n" for line in lines)
        self.terminal.write(self._clear() + body + self._draw())

    def show_status(self, lines: Sequence[str]) -> None:
        """
        Replace the status lines (progress bars) shown above the prompt.
        """
        if self._closed or self.terminal is None:
            return
        clear = self._clear()
        self._status = list(lines)
        self.terminal.write(clear + self._draw())

    # -- keys ------------------------------------------------------------------------------

    def keystrokeReceived(self, keyID: Any, modifier: Any) -> None:
        if self._closed:
            return
        if keyID != self.terminal.TAB:
            self._listed_for = None
        handler = self.keyHandlers.get(keyID)
        if handler is not None:
            handler()
        elif isinstance(keyID, bytes) and (keyID in self._printableChars or keyID >= b"\x80"):
            self.characterReceived(keyID, False)

    def unhandledControlSequence(self, seq: bytes) -> None:
        # ESC O H / ESC O F (Home and End in "application" mode).
        if seq == b"\x1b[OH":
            self.handle_HOME()
        elif seq == b"\x1b[OF":
            self.handle_END()

    def characterReceived(self, ch: bytes, moreCharactersComing: bool) -> None:
        text = self._decoder.decode(ch)
        if not text or ch in (b"\r", b"\n"):
            return
        if sum(len(c) for c in self.lineBuffer) >= getattr(self.shell, "MAX_LENGTH", 65536):
            return
        for c in text:
            if c.isprintable():
                self.lineBuffer.insert(self.lineBufferIndex, c.encode("utf-8"))
                self.lineBufferIndex += 1
        if not moreCharactersComing:
            self._redraw_line()

    def handle_LEFT(self) -> None:
        if self.lineBufferIndex > 0:
            self.lineBufferIndex -= 1
            self._redraw_line()

    def handle_RIGHT(self) -> None:
        if self.lineBufferIndex < len(self.lineBuffer):
            self.lineBufferIndex += 1
            self._redraw_line()

    def handle_HOME(self) -> None:
        self.lineBufferIndex = 0
        self._redraw_line()

    def handle_END(self) -> None:
        self.lineBufferIndex = len(self.lineBuffer)
        self._redraw_line()

    def handle_BACKSPACE(self) -> None:
        if self.lineBufferIndex > 0:
            self.lineBufferIndex -= 1
            del self.lineBuffer[self.lineBufferIndex]
            self._redraw_line()

    def handle_DELETE(self) -> None:
        if self.lineBufferIndex < len(self.lineBuffer):
            del self.lineBuffer[self.lineBufferIndex]
            self._redraw_line()

    def handle_INSERT(self) -> None:
        pass

    def handle_KILL_END(self) -> None:
        del self.lineBuffer[self.lineBufferIndex :]
        self._redraw_line()

    def handle_KILL_START(self) -> None:
        del self.lineBuffer[: self.lineBufferIndex]
        self.lineBufferIndex = 0
        self._redraw_line()

    def handle_KILL_WORD(self) -> None:
        i = self.lineBufferIndex
        while i > 0 and self.lineBuffer[i - 1].isspace():
            i -= 1
        while i > 0 and not self.lineBuffer[i - 1].isspace():
            i -= 1
        del self.lineBuffer[i : self.lineBufferIndex]
        self.lineBufferIndex = i
        self._redraw_line()

    def handle_REDRAW(self) -> None:
        self.terminal.write(b"\x1b[H\x1b[2J")
        self._drawn_status = 0
        self.terminal.write(self._draw())

    def _set_buffer(self, line: bytes) -> None:
        text = line.decode("utf-8", "replace")
        self.lineBuffer = [c.encode("utf-8") for c in text]
        self.lineBufferIndex = len(self.lineBuffer)
        self._redraw_line()

    def handle_UP(self) -> None:
        if self.lineBuffer and self.historyPosition == len(self.historyLines):
            self.historyLines.append(b"".join(self.lineBuffer))
        if self.historyPosition > 0:
            self.historyPosition -= 1
            self._set_buffer(self.historyLines[self.historyPosition])

    def handle_DOWN(self) -> None:
        if self.historyPosition < len(self.historyLines) - 1:
            self.historyPosition += 1
            self._set_buffer(self.historyLines[self.historyPosition])
        else:
            self.historyPosition = len(self.historyLines)
            self._set_buffer(b"")

    def handle_TAB(self) -> None:
        if self.completer is None:
            return
        before, after = self._text()
        try:
            new, listed = complete(before, self.completer)
        except Exception:
            self.log.failure("completing {text!r}", text=before)
            return
        if new != before:
            self.lineBuffer = [c.encode("utf-8") for c in new + after]
            self.lineBufferIndex = len(new)
            self._redraw_line()
            return
        if listed:
            if self._listed_for == before:
                shown = listed[:MAX_LISTED]
                more = f"  (and {len(listed) - len(shown)} more)" if len(listed) > len(shown) else ""
                self.print_lines(_columns_of([quote_name(c) for c in shown], self._columns()) + ([more] if more else []))
            self._listed_for = before
        else:
            self.terminal.write(b"\x07")

    def handle_RETURN(self) -> None:
        line = b"".join(self.lineBuffer)
        text = line.decode("utf-8", "replace")
        if line and (not self.historyLines or self.historyLines[-1] != line):
            self.historyLines.append(line)
            if self.history is not None and text.strip():
                self.history.append(text.strip())
        self.historyPosition = len(self.historyLines)
        self.lineBuffer = []
        self.lineBufferIndex = 0
        # The line stays on the screen as typed, then the answers follow.
        self.print_lines([self.prompt + text])
        self.shell.lineReceived(line)

    def handle_CTRL_D(self) -> None:
        if self.lineBuffer:
            self.handle_DELETE()
            return
        self.print_lines([self.prompt])
        # No more input: no prompt under the bars from now on.
        self.prompt = ""
        self._closed_input()

    def _closed_input(self) -> None:
        self.shell.readConnectionLost()
        self._on_eof()

    def handle_CTRL_C(self) -> None:
        self._on_interrupt()


def _columns_of(words: Sequence[str], columns: int) -> list[str]:
    """
    C{words} in columns, like a shell lists completions.
    """
    if not words:
        return []
    cell = max(width(w) for w in words) + 2
    per_line = max(1, (columns - 1) // cell)
    lines = []
    for i in range(0, len(words), per_line):
        row = words[i : i + per_line]
        lines.append("".join(w + " " * (cell - width(w)) for w in row).rstrip())
    return lines


class EditorOutput:
    """
    The transport a line shell writes to under a L{LineEditor}: each line
    is printed above the bars and the line being edited; C{show_status}
    sets the bars.
    """

    def __init__(self, editor: LineEditor) -> None:
        self._editor = editor
        self._partial = b""
        self.disconnecting = False

    @property
    def columns(self) -> int:
        return self._editor._columns()

    def write(self, data: bytes) -> None:
        data = self._partial + data
        *lines, self._partial = data.split(b"\n")
        if lines:
            self._editor.print_lines([line.decode("utf-8", "replace") for line in lines])

    def writeSequence(self, seq: Sequence[bytes]) -> None:
        self.write(b"".join(seq))

    def show_status(self, lines: Sequence[str]) -> None:
        self._editor.show_status(lines)

    def loseConnection(self) -> None:
        self.disconnecting = True

    def getPeer(self) -> Any:
        return None

    def getHost(self) -> Any:
        return None


# -- the real terminal ----------------------------------------------------------------------


class RawMode:
    """
    Put the terminal on C{fd} in raw mode (keys arrive one by one, Ctrl-C
    as a byte), keeping output post-processing so that a newline still
    starts a new line (log lines written to the terminal stay readable);
    L{restore} puts back the settings it found.
    """

    def __init__(self, fd: int) -> None:
        import termios

        self.fd = fd
        self._saved = termios.tcgetattr(fd)

    def enter(self) -> None:
        import termios
        import tty

        tty.setraw(self.fd, termios.TCSANOW)
        attrs = termios.tcgetattr(self.fd)
        attrs[1] |= termios.OPOST | termios.ONLCR
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)

    def restore(self) -> None:
        import termios

        try:
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        except termios.error:
            pass


#: The width assumed when the terminal does not say (not a terminal, or a
#: window size of 0x0, as some test harnesses and serial consoles report).
DEFAULT_COLUMNS = 80


def terminal_columns(fd: int = 1) -> int:
    """
    The width of the terminal on C{fd}, or L{DEFAULT_COLUMNS} when it is
    unknown or 0.
    """
    try:
        columns = os.get_terminal_size(fd).columns
    except (OSError, ValueError):
        return DEFAULT_COLUMNS
    return columns if columns > 0 else DEFAULT_COLUMNS


def start_editing_shell(
    shell: Any,
    reactor: Any,
    prompt: str,
    completer: Completer | None,
    history: HistoryFile | None,
    on_eof: Callable[[], None] = lambda: None,
) -> Any:
    """
    Run C{shell} on stdin/stdout (a terminal) through a L{LineEditor}:
    raw mode now, the old settings back when the reactor stops (or on
    Ctrl-D, when C{on_eof} stops reading).

    @return: the C{StandardIO}.
    """
    import atexit
    import signal

    from twisted.internet import stdio

    raw = RawMode(0)
    raw.enter()
    atexit.register(raw.restore)

    def finish() -> None:
        # Erase the prompt line, so the next prompt starts on a clean line.
        try:
            os.write(1, b"\r\x1b[K")
        except OSError:
            pass
        raw.restore()

    reactor.addSystemEventTrigger("after", "shutdown", finish)
    size = {"columns": terminal_columns(1)}

    def resized(*_: Any) -> None:
        size["columns"] = terminal_columns(1)

    try:
        signal.signal(signal.SIGWINCH, lambda *a: reactor.callFromThread(resized))
    except (ValueError, AttributeError):
        pass

    def interrupt() -> None:
        # Exactly what Ctrl-C does without line editing.
        os.kill(os.getpid(), signal.SIGINT)

    def eof() -> None:
        raw.restore()
        io.stopReading()
        on_eof()

    protocol = insults.ServerProtocol(
        LineEditor,
        shell,
        prompt,
        completer=completer,
        history=history,
        on_interrupt=interrupt,
        on_eof=eof,
        columns=lambda: size["columns"],
    )
    io = stdio.StandardIO(protocol, reactor=reactor)
    return io
