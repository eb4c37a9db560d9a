"""
Processes the benchmark starts: the systems under test (``twistd``), the
baselines and the load generators.  Every process is started here and
ended here by its PID, never by name.

Helpers (load generators, baseline servers) are ``python -m bench.NAME``
processes that speak JSON lines: one event per stdout line, commands as
lines on stdin.
"""

from __future__ import annotations

import json
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """A process of the benchmark failed; the message says which and why."""


def raise_nofile() -> int:
    """
    Raise this process's soft limit on open files to the hard limit.
    @return: the new soft limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def twistd() -> str:
    candidate = Path(sys.executable).with_name("twistd")
    if not candidate.exists():
        raise BenchError(f"twistd not found next to {sys.executable}")
    return str(candidate)


def cpu_seconds(pid: int) -> float:
    """
    User plus system CPU seconds a process has used so far.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    # The command name may hold spaces: fields start after the last ')'.
    fields = stat[stat.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """
    Resident set size of a process, in bytes.
    """
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * PAGE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0, what: str = "server") -> None:
    """
    Wait until 127.0.0.1:C{port} accepts connections (or the process died).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"{what} exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise BenchError(f"{what} is not listening on port {port} after {timeout:g} s")


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """
    Ask Linux to send SIGTERM to this (child) process if the benchmark dies
    without stopping it (killed, timed out): nothing is left running.
    """
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _child_setup() -> None:
    raise_nofile()
    # Our own process group, so a Ctrl-C of the benchmark does not hit the
    # children before we stop them in order ...
    os.setpgid(0, 0)
    # ... and no child outlives a benchmark that was killed.
    _die_with_parent()


class Process:
    """
    One child process with its stdout read line by line on a thread.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path | str | None = None,
        stdin: bool = True,
        stderr_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        full_env = dict(os.environ)
        full_env["PYTHONUNBUFFERED"] = "1"
        extra = os.environ.get("PYTHONPATH")
        full_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + extra if extra else "")
        if env:
            full_env.update(env)
        self._stderr_path = stderr_path
        self._stderr_file = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.argv,
            cwd=str(cwd or ROOT),
            env=full_env,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            bufsize=0,
            preexec_fn=_child_setup,
        )
        self.lines: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        out = self.proc.stdout
        assert out is not None
        pending = b""
        while True:
            chunk = os.read(out.fileno(), 65536)
            if not chunk:
                break
            now = time.monotonic()
            pending += chunk
            parts = re.split(rb"\r\n|\n|\r", pending)
            pending = parts.pop()
            for part in parts:
                self.lines.put((now, part.decode("utf-8", "replace")))
        if pending:
            self.lines.put((time.monotonic(), pending.decode("utf-8", "replace")))
        self.lines.put((time.monotonic(), None))

    def send(self, line: str) -> float:
        """
        Write one line to the process's stdin. @return: the time it was sent.
        """
        assert self.proc.stdin is not None
        now = time.monotonic()
        self.proc.stdin.write(line.encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        return now

    def expect(self, pattern: str, timeout: float = 30.0) -> tuple[float, re.Match[str]]:
        """
        Wait for a stdout line matching C{pattern}.
        @return: (monotonic time the line arrived, match).
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(
                    f"{self.name}: no output line matching {pattern!r} within {timeout:g} s"
                    + self.tail()
                )
            try:
                when, line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                self.lines.put((when, None))
                self.proc.poll()
                raise BenchError(
                    f"{self.name} ended (status {self.proc.returncode}) before a line matching {pattern!r}"
                    + self.tail()
                )
            self.seen.append(line)
            match = regex.search(line)
            if match:
                return when, match

    def event(self, name: str, timeout: float = 60.0) -> dict[str, Any]:
        """
        Wait for a JSON event line C{{"event": name, ...}} from a helper.
        An C{"error"} event raises L{BenchError}.
        """
        deadline = time.monotonic() + timeout
        while True:
            _, match = self.expect(r"^\{", max(0.001, deadline - time.monotonic()))
            message = json.loads(self.seen[-1])
            if message.get("event") == "error":
                raise BenchError(f"{self.name}: {message.get('message')}")
            if message.get("event") == name:
                return message

    def tail(self, n: int = 20) -> str:
        text = "\n  ".join(self.seen[-n:])
        out = f"\n  output: {text}" if text else ""
        if self._stderr_path and self._stderr_path.exists():
            err = self._stderr_path.read_text(errors="replace").strip().splitlines()[-n:]
            if err:
                out += "\n  stderr: " + "\n  ".join(err)
        return out

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """
        SIGTERM, then SIGKILL after C{timeout}; by PID only.
        """
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        if self._stderr_file is not subprocess.DEVNULL:
            self._stderr_file.close()
        return self.proc.returncode


def helper(name: str, module: str, args: Sequence[str], workdir: Path) -> Process:
    """
    Start C{python -m bench.MODULE ARGS} (stderr into C{workdir}).
    """
    return Process(
        name,
        [sys.executable, "-m", f"bench.{module}", *args],
        stderr_path=workdir / f"{name}.stderr",
    )


class Children:
    """
    The processes one scenario started; all stopped (newest first, by PID)
    when the C{with} block ends, whatever happened in it.
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._all: list[Any] = []

    def __enter__(self) -> "Children":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_all()

    def stop_all(self) -> None:
        while self._all:
            child = self._all.pop()
            try:
                child.stop()
            except Exception as e:  # keep stopping the others
                sys.stderr.write(f"bench: stopping {child.name}: {e}\n")

    def add(self, child: Any) -> Any:
        self._all.append(child)
        return child

    def forget(self, child: Any) -> None:
        if child in self._all:
            self._all.remove(child)

    def helper(self, name: str, module: str, args: Sequence[str]) -> Process:
        return self.add(helper(name, module, args, self.workdir))

    def process(self, name: str, argv: Sequence[str], **kw: Any) -> Process:
        kw.setdefault("stderr_path", self.workdir / f"{name}.stderr")
        return self.add(Process(name, argv, **kw))

    def tracker(self, name: str, db: str, extra: Sequence[str] = ()) -> "Tracker":
        # Tracker() waits for the port; register the process before that
        # so a tracker that fails to start is still stopped.
        return Tracker(self.workdir, name, db, extra, children=self)


_LISTENING = re.compile(r"listening on IPv4Address\(type='TCP', host='([^']+)', port=(\d+)\)")


class Tracker:
    """
    A real tracker: C{twistd -n --pidfile= --logfile=... p2ptracker --no-shell}.
    """

    def __init__(
        self, workdir: Path, name: str, db: str, extra: Sequence[str] = (), children: "Children | None" = None
    ) -> None:
        self.name = name
        self.logfile = workdir / f"{name}.log"
        # A log left by an earlier run would name its port.
        for old in (self.logfile, workdir / f"{name}.stderr"):
            if old.exists():
                old.unlink()
        self.proc = Process(
            name,
            [
                twistd(),
                "-n",
                "--pidfile=",
                f"--logfile={self.logfile}",
                "p2ptracker",
                "--no-shell",
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--db",
                db,
                *extra,
            ],
            cwd=workdir,
            stdin=False,
            stderr_path=workdir / f"{name}.stderr",
        )
        if children is not None:
            children.add(self)
        self.port = self._wait_listening()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_listening(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.logfile.exists():
                match = _LISTENING.search(self.logfile.read_text(errors="replace"))
                if match:
                    return int(match.group(2))
            if not self.proc.alive():
                raise BenchError(f"{self.name} exited with status {self.proc.proc.returncode}: {self.why()}")
            time.sleep(0.02)
        raise BenchError(f"{self.name} did not listen within {timeout:g} s: {self.why()}")

    def why(self) -> str:
        """
        The last meaningful lines of the tracker's stderr and log.
        """
        lines: list[str] = []
        for path in (self.proc._stderr_path, self.logfile):
            if path and path.exists():
                text = path.read_text(errors="replace").strip().splitlines()
                lines += [l for l in text if "cannot start" in l or "Error" in l or "error" in l][-3:]
        return " | ".join(lines)[-600:] or "(no message)"

    def stop(self) -> None:
        self.proc.stop()


class Sampler:
    """
    CPU seconds and RSS of a set of processes between two instants.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.cpu0 = sum(cpu_seconds(p) for p in self.pids)

    def cpu_percent(self) -> float:
        """
        CPU used since construction, in percent of one core.
        """
        wall = time.monotonic() - self.t0
        cpu = sum(cpu_seconds(p) for p in self.pids) - self.cpu0
        return 100.0 * cpu / wall if wall > 0 else float("nan")
