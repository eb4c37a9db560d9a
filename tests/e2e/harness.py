"""
Drive real ``twistd`` processes through their shells over pipes.

A L{ShellProcess} starts one process with stdin and stdout as pipes, reads
its stdout on a thread into a queue, and lets a test send command lines and
wait for the line it expects (waiting on the queue, bounded in time: no
sleeps).  Every process is killed by PID when the test ends.
"""

from __future__ import annotations

import os
import queue
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def twistd() -> str:
    """
    The twistd of the interpreter running the tests.
    """
    candidate = Path(sys.executable).with_name("twistd")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("twistd")
    assert found, "twistd not found next to the test interpreter"
    return found


def free_port() -> int:
    """
    A TCP port on 127.0.0.1 that was free a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ShellProcess:
    """
    One running twistd process whose shell we talk to.
    """

    def __init__(self, name: str, args: list[str], cwd: Path, logfile: Path) -> None:
        self.name = name
        self.logfile = logfile
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.pop("PYTHONPATH", None)
        self.argv = [twistd(), "-n", "--pidfile=", f"--logfile={logfile}", *args]
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            bufsize=0,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        assert self.proc.stdout is not None
        buffered = b""
        while True:
            chunk = self.proc.stdout.read1(65536) if hasattr(self.proc.stdout, "read1") else os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buffered += chunk
            # progress bars use \r; treat it like a line end
            parts = re.split(rb"\r\n|\n|\r", buffered)
            buffered = parts.pop()
            for part in parts:
                self.lines.put(part.decode("utf-8", "replace"))
        if buffered:
            self.lines.put(buffered.decode("utf-8", "replace"))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def expect(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        """
        Wait for an output line matching C{pattern} (a regex searched in each
        line); lines before it are kept in C{seen}.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: no line matching {pattern!r} within {timeout}s; "
                    f"output so far:\n" + "\n".join(self.seen[-40:]) + self._log_tail()
                )
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put(None)
                raise AssertionError(
                    f"{self.name} ended (status {self.proc.poll()}) before a line "
                    f"matching {pattern!r}; output:\n" + "\n".join(self.seen[-40:])
                    + self._log_tail()
                )
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return match

    def command(self, line: str, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        self.send(line)
        return self.expect(pattern, timeout)

    def _log_tail(self) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return ""
        return "\n--- log tail ---\n" + "\n".join(text.splitlines()[-30:])

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.proc.kill()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass
        # the reader ends at EOF, once the process is gone
        self._reader.join(5)
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream:
                    stream.close()
            except OSError:
                pass


class FileWatch:
    """
    Wake up when something in a directory changes: Linux inotify (through
    C{ctypes}) on the directory, so a test waits for the kernel's event
    instead of polling the file.  Where inotify is missing, L{wait} sleeps
    50 ms instead (a poll, the only fallback there).
    """

    _MASK = 0x2 | 0x8 | 0x80 | 0x100  # IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE

    def __init__(self, directory: Path) -> None:
        self.fd = -1
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(directory).encode(), self._MASK) >= 0:
                self.fd = fd
            elif fd >= 0:
                os.close(fd)
        except (OSError, AttributeError):
            pass

    def wait(self, timeout: float) -> None:
        """
        Return after the next change in the directory, or C{timeout}.
        """
        if self.fd < 0:
            time.sleep(min(timeout, 0.05))
            return
        readable, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if readable:
            try:
                while os.read(self.fd, 65536):
                    pass
            except BlockingIOError:
                pass

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "FileWatch":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogWatcher:
    """
    Wait for a line in a process's log file (the file grows as it runs;
    each write wakes us through L{FileWatch}).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.text = ""
        # Watch from now on, so no write between two reads is missed.
        self.watch = FileWatch(path.parent)

    def _read(self) -> None:
        if self.path.exists():
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
            self.offset += len(chunk)
            self.text += chunk.decode("utf-8", "replace")

    def expect(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            self._read()
            for line in self.text.splitlines():
                if needle in line:
                    self.text = self.text[self.text.index(line) + len(line):]
                    return line
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.path.name}: no line with {needle!r} within {timeout}s")
            self.watch.wait(left)

    def close(self) -> None:
        self.watch.close()


class Cluster:
    """
    A real tracker (C{twistd p2ptracker}) on a fixed loopback port and real
    peers (C{twistd p2ppeer}), each with its repository under C{root}; every
    process is killed by PID in L{stop}.

    @ivar tracker_args: arguments every L{start_tracker} adds (heartbeat
        settings of a test module, say).
    """

    def __init__(self, root: Path, tracker_args: tuple[str, ...] = ()) -> None:
        self.root = root
        self.port = free_port()
        self.tracker_args = tracker_args
        self.procs: list[ShellProcess] = []
        self.tracker: ShellProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def start(self, name: str, args: list[str], ready: str, timeout: float = 30.0) -> ShellProcess:
        """
        Start one twistd process (log in C{root/NAME.log}) and wait for its
        C{ready} line.
        """
        proc = ShellProcess(name, args, self.root, self.root / f"{name}.log")
        self.procs.append(proc)
        proc.expect(ready, timeout)
        return proc

    def start_tracker(self, *extra: str, db: str | None = None, twistd_args: tuple[str, ...] = ()) -> ShellProcess:
        """
        Start (or start again, on the same port) the tracker; C{db} defaults
        to C{root/tracker.sqlite3}.
        """
        args = [
            *twistd_args,
            "p2ptracker",
            "--listen", f"tcp:{self.port}:interface=127.0.0.1",
            "--db", db or str(self.root / "tracker.sqlite3"),
            *self.tracker_args,
            *extra,
        ]
        self.tracker = self.start("tracker", args, r"p2ptracker \S+ listening on 127\.0\.0\.1:%d" % self.port)
        return self.tracker

    def start_peer(self, name: str, *extra: str, connected: bool = True) -> ShellProcess:
        """
        Start a peer on this cluster's tracker, serving on a free port; wait
        until it is connected to the tracker unless C{connected} is false.
        """
        repo = self.root / name
        repo.mkdir(exist_ok=True)
        args = [
            "p2ppeer",
            "--tracker", self.endpoint,
            "--hostname", name,
            "--repo", str(repo),
            "--listen", "tcp:0:interface=127.0.0.1",
            *extra,
        ]
        peer = self.start(name, args, rf"p2ppeer {name} serving on port \d+")
        if connected:
            peer.expect(r"tracker link: connected")
        return peer

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()
