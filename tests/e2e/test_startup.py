"""
End to end: what real ``twistd`` processes print on their terminal at
start (the dashboard's address, with its token) and for ``--version``,
while twistd logs to a file.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import twistedp2p
from tests.e2e.harness import Cluster, twistd

pytestmark = pytest.mark.timeout(90)

TOKEN = "e2e-token-0123456789"



def test_version_of_both_plugins(tmp_path: Path) -> None:
    for plugin in ("p2ptracker", "p2ppeer"):
        done = subprocess.run(
            [twistd(), plugin, "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"twistedp2p {twistedp2p.__version__} (Twisted "), done.stdout


def test_dashboard_address_is_printed_before_the_shell(cluster: Cluster) -> None:
    tracker = cluster.start(
        "tracker",
        ["p2ptracker", "--listen", f"127.0.0.1:{cluster.port}", "--db", "memory",
         "--web", "127.0.0.1:0", "--web-token", TOKEN],
        r"^tracker dashboard: http://127\.0\.0\.1:(\d+)/#token=" + re.escape(TOKEN) + "$",
    )
    # the shell's banner only comes after it
    tracker.expect(r"p2ptracker \S+ listening on 127\.0\.0\.1:%d" % cluster.port)
    assert not any("dashboard" in line for line in tracker.seen[:-2])

    repo = cluster.root / "alice"
    peer = cluster.start(
        "alice",
        ["p2ppeer", "--tracker", f"127.0.0.1:{cluster.port}", "--hostname", "alice", "--repo", str(repo),
         "--listen", "127.0.0.1:0", "--web", "127.0.0.1:0"],
        r"^peer dashboard: http://127\.0\.0\.1:\d+/$",
    )
    peer.expect(r"p2ppeer alice serving on port \d+")
    peer.expect(r"tracker link: connected")
    peer.command("status", r"tracker")
    assert sum("dashboard:" in line for line in peer.seen) == 1


def test_console_command_runs_the_tracker_like_p2p(tmp_path: Path) -> None:
    """
    C{twistedp2p tracker} (the console command) runs twistd with the log in
    ./tracker.log, and the shell on the terminal.
    """
    from tests.e2e.harness import free_port

    command = Path(twistd()).with_name("twistedp2p")
    if not command.exists():
        pytest.skip("the twistedp2p command is not installed in this venv yet: run ./p2p setup")
    port = free_port()
    done = subprocess.run(
        [str(command), "tracker", "--listen", f"127.0.0.1:{port}", "--db", "memory"],
        cwd=tmp_path, input="quit\n", capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert re.search(r"p2ptracker \S+ listening on 127\.0\.0\.1:%d" % port, done.stdout), done.stdout
    assert "listening on" in (tmp_path / "tracker.log").read_text()
