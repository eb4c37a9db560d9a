"""
The ``twistedp2p`` console command (installed by ``pip install .`` or
``pipx install .``): what ``./p2p`` does in a clone, without the venv set-up.

  twistedp2p tracker [p2ptracker options]   the tracker (log: ./tracker.log)
  twistedp2p peer [p2ppeer options]         a peer (log: REPO/.p2p/peer.log)
  twistedp2p bench [bench options]          the benchmark (needs a clone)
  twistedp2p test [pytest options]          the test suite (needs a clone)
  twistedp2p --version                      twistedp2p's version

``tracker`` and ``peer`` run ``twistd -n --pidfile= --logfile=...`` in this
process, exactly like ``./p2p``; ``--log-format json`` (first option) sends
one JSON object per log event, and C{P2P_LOGFILE} overrides the log file.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

USAGE = """\
usage: twistedp2p COMMAND [options]

  twistedp2p tracker [p2ptracker options]   the tracker on the embedded SQLite store
  twistedp2p peer [p2ppeer options]         a peer with its command shell
  twistedp2p bench [bench options]          the benchmark (from a clone; see docs/benchmarks.md)
  twistedp2p test [pytest options]          the test suite (from a clone)
  twistedp2p tracker|peer --log-format json ...   JSON log lines (first option)
  twistedp2p --version                      print the version

'twistedp2p tracker --help' and 'twistedp2p peer --help' list the options.
"""

DEFAULT_REPO = "./p2p-repo"


def twistd_argv(command: str, args: Sequence[str], environ: dict[str, str] | None = None) -> list[str]:
    """
    The twistd command line (without the program name) that C{./p2p
    COMMAND ARGS} runs, for C{tracker} or C{peer}.

    @raise SystemExit: with a message, for a bad C{--log-format}.
    """
    environ = dict(os.environ) if environ is None else environ
    args = list(args)
    logger: list[str] = []
    if args[:1] == ["--log-format"] or (args and args[0].startswith("--log-format=")):
        if args[0] == "--log-format":
            value = args[1] if len(args) > 1 else ""
            args = args[2:]
        else:
            value = args[0].partition("=")[2]
            args = args[1:]
        if value == "json":
            logger = ["--logger=twistedp2p.logs.json_logger"]
        elif value != "text":
            raise SystemExit("twistedp2p: --log-format takes json or text")
    if command == "tracker":
        logfile = environ.get("P2P_LOGFILE") or "tracker.log"
        return ["-n", "--pidfile=", f"--logfile={logfile}", *logger, "p2ptracker", *args]
    repo = peer_repo(args)
    logfile = environ.get("P2P_LOGFILE") or str(Path(repo) / ".p2p" / "peer.log")
    return ["-n", "--pidfile=", f"--logfile={logfile}", *logger, "p2ppeer", *args]


def peer_repo(args: Sequence[str]) -> str:
    """
    The C{--repo} among a peer's options (the last one wins, as in
    C{./p2p}), else the default.
    """
    repo = DEFAULT_REPO
    for i, arg in enumerate(args):
        if arg == "--repo" and i + 1 < len(args):
            repo = args[i + 1]
        elif arg.startswith("--repo="):
            repo = arg[len("--repo="):]
    return repo


def source_tree() -> Path | None:
    """
    The clone this package runs from (an editable install or a checkout
    on C{sys.path}), if any: the directory holding C{bench/} and C{tests/}
    next to C{twistedp2p/}.
    """
    root = Path(__file__).resolve().parent.parent
    if (root / "bench" / "__main__.py").is_file() and (root / "tests").is_dir():
        return root
    return None


def _run_twistd(argv: list[str]) -> int:
    from twisted.scripts.twistd import run

    sys.argv = ["twistd", *argv]
    run()
    return 0


def _run_in_clone(what: str, module_args: list[str]) -> int:
    root = source_tree()
    if root is None:
        sys.stderr.write(
            f"twistedp2p: '{what}' needs a clone of the repository (the {what} is not installed "
            f"with the package); in a clone run ./p2p {what}\n"
        )
        return 2
    return subprocess.call([sys.executable, "-m", *module_args], cwd=root)


def main(argv: Sequence[str] | None = None, run_twistd: Callable[[list[str]], int] = _run_twistd) -> int:
    """
    Entry point of the C{twistedp2p} command.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args else "help"
    if command in ("--version", "version"):
        from twistedp2p import version_text

        print(version_text())
        return 0
    if command in ("help", "-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if command in ("tracker", "peer"):
        twistd_args = twistd_argv(command, args)
        if command == "peer" and not {"--help", "--version"} & set(args):
            # twistd opens the log file before the peer makes its repository
            Path(peer_repo(args), ".p2p").mkdir(parents=True, exist_ok=True)
        return run_twistd(twistd_args)
    if command == "bench":
        return _run_in_clone("bench", ["bench", *args])
    if command == "test":
        return _run_in_clone("test", ["pytest", *args])
    sys.stderr.write(f"twistedp2p: unknown command {command!r} (try: twistedp2p help)\n")
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
