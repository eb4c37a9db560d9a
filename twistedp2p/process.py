"""
How the tracker and the peer leave their process: the shell's C{quit}
stops the reactor (exit status 0); a fatal start-up error says why in one
line on the process's real stderr and exits with status 1.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def stop_reactor(reactor: Any) -> None:
    """
    Stop C{reactor} if it runs (twistd then stops the services and the
    process exits 0).
    """
    if reactor.running:
        reactor.stop()


def exit_nonzero(reactor: Any, line: str) -> None:
    """
    Write C{line} on the process's real stderr (twistd sends C{sys.stderr}
    to its log, which may be a file), stop C{reactor} and leave the process
    with status 1 once it has shut down.  twistd starts services before the
    reactor runs, so the stop may have to wait for it.
    """
    stderr = sys.__stderr__ or sys.stderr
    stderr.write(line + "\n")
    stderr.flush()

    def stop() -> None:
        reactor.addSystemEventTrigger("after", "shutdown", hard_exit, 1)
        reactor.stop()

    if reactor.running:
        stop()
    else:
        reactor.callWhenRunning(stop)


def say_on_terminal(line: str) -> None:
    """
    Write C{line} on the process's real stdout, fd 1 as the process got it
    (twistd sends C{sys.stdout} to its log, which may be a file); a closed
    or broken stdout is ignored.
    """
    stdout = sys.__stdout__
    if stdout is None:
        return
    try:
        stdout.write(line + "\n")
        stdout.flush()
    except (OSError, ValueError):
        pass


def hard_exit(status: int) -> None:
    """
    Flush what is buffered and leave the process with C{status} at once.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
