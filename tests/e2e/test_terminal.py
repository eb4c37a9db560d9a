"""
The peer shell on a real pseudo-terminal (``os.openpty``), driving a real
``twistd -n p2ppeer``: line editing, history recall, Tab completion, the
live progress bar during a fetch, commands answered while it runs, and
Ctrl-C during the fetch printing the one ``interrupted`` line.  Every wait
is for an output pattern, with a deadline.
"""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, twistd

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024
ANSI = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")


class PtyPeer:
    """
    A twistd process whose stdin, stdout and stderr are a pseudo-terminal.
    """

    def __init__(self, argv: list[str], cwd: Path, rows: int = 30, columns: int = 120) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = dict(os.environ, PYTHONUNBUFFERED="1", TERM="xterm")
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True
        )
        os.close(slave)
        self.raw = b""
        self._pos = 0
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:
                chunk = b""
            with self._cond:
                if not chunk:
                    self.raw += b"\0EOF"
                    self._cond.notify_all()
                    return
                self.raw += chunk
                self._cond.notify_all()

    def text(self) -> str:
        return ANSI.sub(b"", self.raw).decode("utf-8", "replace")

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """
        Wait for C{pattern} in the output after the last match (escape
        sequences removed; carriage returns kept as line breaks).
        """
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                text = self.text().replace("\r", "\n")
                m = regex.search(text, self._pos)
                if m:
                    self._pos = m.end()
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.raw.endswith(b"\0EOF"):
                    raise AssertionError(f"no {pattern!r} within {timeout}s; output:\n{self.text()[-3000:]}")
                self._cond.wait(left)

    def type(self, data: str | bytes) -> None:
        os.write(self.master, data.encode("utf-8") if isinstance(data, str) else data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        try:
            os.close(self.master)
        except OSError:
            pass



def test_peer_shell_on_a_terminal(cluster: Cluster) -> None:
    cluster.start_tracker(db="memory")
    alice = cluster.start_peer("alice", "--upload-rate", "1M")
    (cluster.root / "alice" / "data.bin").write_bytes(os.urandom(8 * MiB))
    (cluster.root / "alice" / "日本語 notes.txt").write_bytes(b"x" * 3000)
    alice.command("publish data.bin data.bin", r"published data\.bin: created")
    alice.command("publish '日本語 notes.txt' '日本語 notes.txt'", r"published 日本語 notes\.txt: created")

    repo = cluster.root / "carol"
    repo.mkdir()
    argv = [
        twistd(), "-n", "--pidfile=", f"--logfile={cluster.root / 'carol.log'}",
        "p2ppeer", "--tracker", cluster.endpoint, "--hostname", "carol", "--repo", str(repo),
        "--listen", "tcp:0:interface=127.0.0.1",
    ]
    carol = PtyPeer(argv, cluster.root)
    try:
        carol.expect(r"p2ppeer carol serving on port \d+")
        carol.expect(r"tracker link: connected")

        # Editing: type "serch", go left three times, insert "a", Enter.
        carol.type("serch" + "\x1b[D" * 3 + "a\r")
        carol.expect(r"^p2p> search$")
        carol.expect(r"^(p2p> )?\s*2\.9 KiB\s+1\s+[0-9a-f]{12}\s+'日本語 notes\.txt'$")
        carol.expect(r"^(p2p> )?2 files$")

        # History: Up recalls it; Ctrl-A, Ctrl-K clear the line again.
        carol.type("\x1b[A")
        carol.expect(r"p2p> search")
        carol.type("\x01\x0b")

        # Tab completes the command and the shared name (from the catalogue).
        carol.type("fet\t")
        carol.expect(r"p2p> fetch $")
        carol.type("da\t")
        carol.expect(r"p2p> fetch data\.bin $")
        carol.type("\r")

        # The live bar, redrawn while the fetch runs in the background ...
        carol.expect(r"data\.bin \[[#.]+\]\s+\d+%\s+\S+ \S+ of 8\.0 MiB\s+\S+ \S+/s\s+eta \S+\s+\d+ sources?")
        # ... and a command typed meanwhile is answered at once.
        started = time.monotonic()
        carol.type("transfers\r")
        carol.expect(r"^(p2p> )?  down data\.bin from alice")
        assert time.monotonic() - started < 5

        # Pause keeps the pieces; resume continues with a bar again.
        carol.type("pause data.bin\r")
        carol.expect(r"^(p2p> )?paused: data\.bin, \d+ of \d+ pieces kept; resume data\.bin continues it$")
        carol.type("transfers\r")
        carol.expect(r"^(p2p> )?  paused data\.bin: \d+ of \d+ pieces kept")
        carol.type("resume data.bin\r")
        carol.expect(r"data\.bin \[[#.]+\]\s+\d+%")

        # Ctrl-C (a byte in raw mode): one line, and the peer stops.
        carol.type("\x03")
        carol.expect(r"^(p2p> )?interrupted: data\.bin, \d+ of \d+ pieces kept; the next fetch resumes it$")
        assert carol.proc.wait(20) == -signal.SIGINT
        output = carol.text()
        assert "error:" not in output and "Traceback" not in output, output[-2000:]
        history = (repo / ".p2p" / "history").read_text().splitlines()
        assert history == ["search", "fetch data.bin", "transfers", "pause data.bin", "transfers", "resume data.bin"]
    finally:
        carol.close()


def test_tracker_admin_shell_on_a_terminal(cluster: Cluster) -> None:
    db = cluster.root / "index" / "tracker.sqlite3"
    db.parent.mkdir()
    argv = [
        twistd(), "-n", "--pidfile=", f"--logfile={cluster.root / 'tracker.log'}",
        "p2ptracker", "--listen", f"tcp:{cluster.port}:interface=127.0.0.1", "--db", str(db),
    ]
    tracker = PtyPeer(argv, cluster.root)
    try:
        tracker.expect(r"p2ptracker \S+ listening on 127\.0\.0\.1:%d" % cluster.port)
        alice = cluster.start_peer("alice")
        # Tab completes the command, then the hostname (the tracker's sessions).
        tracker.type("pi\t")
        tracker.expect(r"tracker> ping $")
        tracker.type("al\t")
        tracker.expect(r"tracker> ping alice $")
        tracker.type("\r")
        tracker.expect(r"^(tracker> )?alice \(127\.0\.0\.1:\d+\): online, rtt")
        tracker.type("\x1b[A")
        tracker.expect(r"tracker> ping alice")
        # Ctrl-D: the shell says the tracker keeps running, and it does.
        tracker.type("\x15\x04")
        tracker.expect(r"shell closed; the tracker is still running \(stop it with Ctrl-C\)")
        alice.command("search", r"^0 files$")
        assert tracker.proc.poll() is None
        history = (db.parent / ".p2ptracker_history").read_text().splitlines()
        assert history == ["ping alice"]
        tracker.proc.send_signal(signal.SIGINT)
        assert tracker.proc.wait(20) == -signal.SIGINT
    finally:
        tracker.close()


def test_peer_shell_on_a_0x0_terminal(cluster: Cluster) -> None:
    """
    A pseudo-terminal that reports a window size of 0x0 still gets the
    progress bar (80 columns); Tab completes publish's local path.
    """
    cluster.start_tracker(db="memory")
    alice = cluster.start_peer("alice", "--upload-rate", "1M")
    (cluster.root / "alice" / "big.bin").write_bytes(os.urandom(3 * MiB))
    alice.command("publish big.bin", r"published big\.bin: created")

    repo = cluster.root / "dave"
    (repo / "lecture notes").mkdir(parents=True)
    (repo / "lecture notes" / "week1.txt").write_bytes(b"w" * 100)
    argv = [
        twistd(), "-n", "--pidfile=", f"--logfile={cluster.root / 'dave.log'}",
        "p2ppeer", "--tracker", cluster.endpoint, "--hostname", "dave", "--repo", str(repo),
        "--listen", "tcp:0:interface=127.0.0.1",
    ]
    dave = PtyPeer(argv, cluster.root, rows=0, columns=0)
    try:
        dave.expect(r"p2ppeer dave serving on port \d+")
        dave.expect(r"tracker link: connected")
        # A folder is completed with its / (quoted: a space), then the file in it.
        dave.type("publish le\t")
        dave.expect(r"p2p> publish 'lecture notes/$")
        dave.type("w\t")
        dave.expect(r"p2p> publish 'lecture notes/week1\.txt' $")
        dave.type("\r")
        dave.expect(r"^(p2p> )?published lecture notes/week1\.txt: created")

        dave.type("fetch big.bin\r")
        bar = dave.expect(r"big\.bin \[[#.]+\]\s+\d+%.*of 3\.0 MiB.*")
        assert len(bar.group(0).rstrip()) <= 79
        dave.expect(r"^(p2p> )?fetched big\.bin from alice")
        dave.type("\x04")
        assert dave.proc.wait(20) == 0
    finally:
        dave.close()
