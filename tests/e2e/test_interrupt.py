"""
Ctrl-C (SIGINT) during a fetch, with real ``twistd`` processes and piped
stdin: one ``interrupted: ...`` line, a clean stop (the conventional SIGINT exit status), no error
line and nothing CRITICAL in the log; the next fetch resumes.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.e2e.harness import Cluster
from tests.peer.test_swarm_processes import recorded_pieces

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024



def test_sigint_during_fetch_prints_one_line_and_exits_cleanly(cluster: Cluster) -> None:
    cluster.start_tracker(db="memory")
    data = os.urandom(8 * MiB)
    alice = cluster.start_peer("alice", "--upload-rate", "1M")
    (cluster.root / "alice" / "data.bin").write_bytes(data)
    alice.command("publish data.bin data.bin", r"published data\.bin: created")

    carol = cluster.start_peer("carol")
    carol.send("fetch data.bin")
    recorded_pieces(cluster.root / "carol" / ".data.bin.part.json", at_least=2)
    carol.signal(signal.SIGINT)
    m = carol.expect(r"^interrupted: data\.bin, (\d+) of (\d+) pieces kept; the next fetch resumes it$")
    assert 0 < int(m.group(1)) < int(m.group(2))
    # twistd stops cleanly, then ends by the signal, as is conventional (130 in a shell).
    assert carol.wait(20) == -signal.SIGINT
    carol.kill()
    assert not [line for line in carol.seen if line.startswith("error:")], carol.seen
    log = (cluster.root / "carol.log").read_text()
    assert "CRITICAL" not in log and "Unhandled" not in log and "CancelledError" not in log, log[-3000:]

    carol = cluster.start_peer("carol")
    carol.expect(r"^resuming data\.bin: \d+ of \d+ pieces on disk$")
    carol.expect(r"^fetched data\.bin from alice: \d+ bytes \(\d+ resumed from disk\)", timeout=60)
