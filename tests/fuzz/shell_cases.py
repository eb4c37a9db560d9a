"""
Fuzz cases for the two line shells: the tracker's L{TrackerShell} over a
real registry, and the peer's L{PeerShell} over a fake node.

A case is a list of input lines (commands with random arguments, quotes,
unicode, control characters, invalid UTF-8, lines around and far beyond
the shell's line limit), sent as one byte stream cut at random points.
After each generated line the case adds a marker command whose answer is
one known line, so every answer can be attributed to its line.  Between
two markers the shell must have written exactly one answer to the line
before:

  - nothing, for an empty line (or a comment, in the peer shell);
  - exactly one line starting ``error: `` and nothing else, for a line it
    refuses (too long, not UTF-8, unknown command, bad arguments, a
    failure of the command);
  - one or more lines, none starting ``error: ``, for a command that
    succeeded.

Every marker must come back, once and in order (no line swallowed), and
the log must hold no failure and no error (except the one an unexpected
exception of the fake node causes on purpose).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher

from twistedp2p import errors
from twistedp2p.peer.download import FetchResult, SourceInfo
from twistedp2p.peer.events import Events
from twistedp2p.peer.node import FolderFetchResult, PublishResult, UnpublishResult
from twistedp2p.peer.shell import PeerShell
from twistedp2p.tracker.registry import Registry
from twistedp2p.tracker.shell import TrackerShell
from twistedp2p.tracker.store.memory import MemoryStore

from tests.fuzz import strategies as S
from tests.fuzz.tracker_cases import weighted
from tests.peer.helpers import NODE_STATUS as STATUS, SHA_AB as SHA
from tests.tracker.helpers import FakeLink

MARK = "~mark-{}~"


class ShellFailure(AssertionError):
    """
    A shell answered a line in a way the rules forbid.
    """


# -- input -------------------------------------------------------------------

_words = st.one_of(
    st.sampled_from(["a", "notes.pdf", "--force", "--from", "--from=x", "--bogus", "-", "--", "*", "*.pdf", "[", "x y"]),
    S.edge_text.filter(lambda t: "\n" not in t and "\r" not in t),
)


def _quoted(word: str, how: int) -> str:
    return [word, f'"{word}"', f"'{word}'", f'"{word}', f"'{word}", word + "\\"][how]


def command_lines(commands: list[str]) -> st.SearchStrategy[bytes]:
    """
    One line's bytes (without its end): a command and arguments, quoted
    or not, or anything at all.
    """
    argument = st.builds(_quoted, _words, st.integers(0, 5))
    command = st.one_of(st.sampled_from(commands), st.sampled_from([c.upper() for c in commands]), _words)
    typed = st.builds(
        lambda c, args, sep: sep.join([c] + args).encode("utf-8", "surrogatepass"),
        command,
        st.lists(argument, max_size=4),
        st.sampled_from([" ", "  ", "\t", " \x0b "]),
    )
    return weighted(
        (6, typed),
        (1, st.sampled_from([b"", b" ", b"\t", b"#", b"# comment", b"\x00", b"\x1b[A", b"\xff\xfe", b"\xed\xa0\x80"])),
        (1, st.binary(max_size=40).map(lambda b: b.replace(b"\n", b""))),
    )


def long_lines(limit: int) -> st.SearchStrategy[bytes]:
    """
    Lines at, just past and far past a shell's line limit, some ending in
    a real command (which must not run).
    """
    return st.builds(
        lambda n, tail: b"x" * n + tail,
        st.sampled_from([limit - 1, limit, limit + 1, limit + 2, 2 * limit + 5, 5 * limit]),
        st.sampled_from([b"", b" help", b"\nquit"[1:]]),
    )


def shell_inputs(commands: list[str], limit: int) -> st.SearchStrategy[tuple[list[bytes], list[int], bytes]]:
    """
    (lines, cut points, line end) for one case.
    """
    return st.tuples(
        st.lists(weighted((12, command_lines(commands)), (1, long_lines(limit))), min_size=1, max_size=12),
        st.lists(st.integers(0, 10**6), max_size=8),
        st.sampled_from([b"\n", b"\r\n"]),
    )


def _stream(lines: list[bytes], marker: Any, end: bytes) -> tuple[bytes, int]:
    out = []
    for i, line in enumerate(lines):
        out.append(line + end)
        out.append(marker(i).encode() + end)
    return b"".join(out), len(lines)


def _feed(proto: Any, data: bytes, cuts: list[int]) -> None:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for a, b in zip(points, points[1:]):
        proto.dataReceived(data[a:b])


def _check_answers(text: str, lines: list[bytes], marker_answer: Any, stopped: int | None = None) -> int:
    """
    Cut the output at the markers' answers and check each line's answer.

    @param marker_answer: C{marker_answer(i)} is the one line marker C{i}
        is answered with.
    @param stopped: the index of a line after which the shell takes no
        more input (the peer shell's quit): its marker and everything after
        it go unanswered.
    @return: the number of answers checked.
    """
    out = text.split("\n")
    if out and out[-1] == "":
        out.pop()
    pos = 0
    marked = len(lines) if stopped is None else stopped
    for i in range(marked):
        want = marker_answer(i)
        try:
            end = out.index(want, pos)
        except ValueError:
            raise ShellFailure(f"line {i} ({lines[i][:60]!r}): the next line was never answered; output {out[pos:][:6]}")
        _check_one(out[pos:end], i, lines[i])
        pos = end + 1
    if stopped is not None:
        _check_one(out[pos:], stopped, lines[stopped])
        if not out[pos:]:
            raise ShellFailure(f"quit (line {stopped}) was not answered")
        pos = len(out)
    if pos != len(out):
        raise ShellFailure(f"output nobody asked for: {out[pos:][:6]}")
    return marked + (stopped is not None)


def _check_one(answer: list[str], i: int, line: bytes) -> None:
    if any(a.startswith("error: ") for a in answer) and len(answer) != 1:
        raise ShellFailure(f"line {i} ({line[:60]!r}): an error among other lines: {answer[:6]}")
    if any("Traceback" in a or "~mark-" in a for a in answer):
        raise ShellFailure(f"line {i} ({line[:60]!r}): answered with {answer[:6]}")


class _Log:
    def __init__(self) -> None:
        self.events: list[dict] = []
        globalLogPublisher.addObserver(self.events.append)

    def close(self) -> None:
        globalLogPublisher.removeObserver(self.events.append)

    def check(self, allowed_failures: int = 0) -> None:
        failures = [e for e in self.events if e.get("log_failure") is not None]
        for e in failures[allowed_failures:]:
            raise ShellFailure(f"logged failure: {e.get('log_format')!r}\n{e['log_failure'].getTraceback()}")
        for e in self.events:
            level = e.get("log_level")
            if e.get("log_failure") is None and level is not None and level.name in ("error", "critical"):
                raise ShellFailure(f"logged {level.name}: {e.get('log_format')!r}")


# -- tracker shell -------------------------------------------------------------

TRACKER_COMMANDS = ["peers", "files", "discover", "ping", "forget", "help", "quit"]


class _AnsweringLink(FakeLink):
    def ping(self):
        d = FakeLink.ping(self)
        self.answer_all()
        return d


def run_tracker_shell(case: tuple[list[bytes], list[int], bytes]) -> dict[str, int]:
    """
    Feed one case to a L{TrackerShell} over a registry with two live
    sessions and a few publications.
    """
    lines, cuts, end = case
    clock = Clock()
    clock.advance(1_700_000_000)
    store = MemoryStore("t")
    registry = Registry(store, clock, "t")
    for host, port, version in (("alpha", 1, 1), ("Ünïcødé", 2, None)):
        d = registry.hello(_AnsweringLink(), host, "10.0.0.1", port, version)
        sid = d.result.session_id
        registry.publish(sid, "notes.pdf", None, 5, 1.0, S.SHA_A)
        registry.publish(sid, "é ü", None, None, None, None)
    quits = []
    shell = TrackerShell(registry, lambda: quits.append(1))
    transport = StringTransport()
    log = _Log()
    try:
        shell.makeConnection(transport)
        data, _ = _stream(lines, lambda i: f"discover {MARK.format(i)}", end)
        _feed(shell, data, cuts)
        shell.connectionLost(None)
        text = transport.value().decode("utf-8")
        answers = _check_answers(
            text, lines, lambda i: f"{MARK.format(i)}: no published files (or not online)"
        )
        log.check()
    finally:
        log.close()
    return {"lines": 2 * len(lines), "answers": answers, "bytes": len(data)}


# -- peer shell ----------------------------------------------------------------

PEER_COMMANDS = ["publish", "unpublish", "fetch", "search", "status", "help", "quit", "exit"]


class _Library:
    repo = "/repo"


class FakeNode:
    """
    What the peer shell needs from a L{PeerNode}.  Each call answers at
    once: a result, a user error (L{errors.P2PError}), or, for names
    starting with C{boom}, an unexpected exception.
    """

    hostname = "me"
    p2p_port = 4242
    library = _Library()

    def __init__(self) -> None:
        self.clock = Clock()
        self.events = Events(self.clock)
        self.unexpected = 0

    def _answer(self, name: str, result: Any) -> Any:
        if name.startswith("~mark-"):
            return succeed(result)
        if name.startswith("boom"):
            self.unexpected += 1
            return fail(RuntimeError("the fake node broke"))
        if len(name) % 3 == 0:
            return fail(errors.NotPublished(f"{name}: not published here"))
        return succeed(result)

    def publish(self, lname: str, fname: str, force: bool = False) -> Any:
        return self._answer(fname, PublishResult(fname, "created", 7, SHA, "/repo/" + lname))

    def publish_any(self, lname: str, fname: str | None = None, force: bool = False) -> Any:
        name = lname if fname is None else fname
        return self._answer(name, [PublishResult(name, "created", 7, SHA, "/repo/" + lname)])

    def fetch_folder(self, folder: str, source: str | None = None, force: bool = False, progress: Any = None) -> Any:
        return self._answer(folder, FolderFetchResult(folder, (), (), ()))

    def unpublish(self, fname: str) -> Any:
        return self._answer(fname, UnpublishResult(fname, True))

    def fetch(self, fname: str, source: str | None = None, force: bool = False, progress: Any = None) -> Any:
        src = SourceInfo("lab-3", "10.0.0.3", 4000, fname, fname, 12, SHA, 1)
        return self._answer(fname, FetchResult(fname, "/repo/" + fname, 12, SHA, True, src, published=True))

    def search(self, pattern: str = "") -> Any:
        files = [{"fname": "notes.pdf", "file_size": 5, "sha256": SHA, "sources": 2}] if pattern != "none" else []
        return self._answer(pattern, files)

    def status(self) -> dict:
        return STATUS


def run_peer_shell(case: tuple[list[bytes], list[int], bytes]) -> dict[str, int]:
    """
    Feed one case to a L{PeerShell} over a L{FakeNode}.
    """
    lines, cuts, end = case
    node = FakeNode()
    exits = []
    shell = PeerShell(node, on_exit=lambda: exits.append(1), is_tty=False)
    transport = StringTransport()
    log = _Log()
    try:
        shell.makeConnection(transport)
        transport.clear()  # the greeting
        data, _ = _stream(lines, lambda i: f"unpublish {MARK.format(i)}", end)
        _feed(shell, data, cuts)
        shell.readConnectionLost()
        text = transport.value().decode("utf-8")
        stopped = _quit_line(lines)
        answers = _check_answers(text, lines, lambda i: f"unpublished {MARK.format(i)}", stopped)
        if exits != [1]:
            raise ShellFailure(f"on_exit called {len(exits)} times")
        log.check(allowed_failures=node.unexpected)
    finally:
        log.close()
    return {"lines": 2 * len(lines), "answers": answers, "bytes": len(data)}


def _quit_line(lines: list[bytes]) -> int | None:
    """
    The index of the first line that quits the peer shell, if any.
    """
    import shlex

    for i, line in enumerate(lines):
        if len(line) > 64:
            continue  # not a quit (and shlex is slow on long lines)
        try:
            argv = shlex.split(line.decode("utf-8", "replace").strip())
        except ValueError:
            continue
        if len(argv) == 1 and argv[0].lower() in ("quit", "exit"):
            return i
    return None
