"""
Real peer processes (``twistd -n p2ppeer``) driven through their stdin
shell, as a person would (docs/shell.md).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from bench.procs import BenchError, Children, Process, twistd


def peer_available() -> str | None:
    """
    None when ``twistd p2ppeer`` can be built, else why not.
    """
    try:
        from twistedp2p.peer import service  # noqa: F401
    except ImportError as e:
        return f"the peer service is not available yet ({e})"
    if not hasattr(service, "makeService"):
        return "twistedp2p.peer.service has no makeService yet"
    return None


class Peer:
    """
    One peer process with its shell on our pipes.

    @ivar p2p_port: the port it serves files on.
    """

    def __init__(
        self,
        children: Children,
        name: str,
        tracker_port: int,
        repo: Path,
        extra: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.repo = repo
        repo.mkdir(parents=True, exist_ok=True)
        logfile = children.workdir / f"{name}.log"
        self.proc: Process = children.process(
            name,
            [
                twistd(),
                "-n",
                "--pidfile=",
                f"--logfile={logfile}",
                "p2ppeer",
                "--tracker",
                f"tcp:host=127.0.0.1:port={tracker_port}",
                "--repo",
                str(repo),
                "--listen",
                "tcp:0:interface=127.0.0.1",
                "--hostname",
                name,
                *extra,
            ],
            cwd=children.workdir,
        )
        self.proc.expect(r"^tracker link: connected", timeout=30)
        self.proc.send("status")
        _, match = self.proc.expect(r"p2p port (\d+)", timeout=30)
        self.p2p_port = int(match.group(1))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self, line: str, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """
        Run one shell command and wait for its result line; an ``error:``
        line fails at once.
        """
        self.proc.send(line)
        _, match = self.proc.expect(f"(?:{pattern})|^error: ", timeout)
        if match.group(0).startswith("error: "):
            raise BenchError(f"{self.name}: {line!r} failed: {self.proc.seen[-1]}")
        return match

    def publish(self, lname: str, fname: str, timeout: float = 300.0) -> None:
        self.command(f"publish {lname} {fname}", rf"^published {re.escape(fname)}: ", timeout)

    def unpublish(self, fname: str) -> None:
        self.command(f"unpublish {fname}", rf"^unpublished {re.escape(fname)}")
