"""
End to end: a real ``twistd p2ptracker`` and real ``twistd p2ppeer``
processes, each with its own repository, driven through their shells over
pipes.  Files are real, and so is the SQLite index.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, LogWatcher

pytestmark = pytest.mark.timeout(180)

SIZE = 5 * 1024 * 1024 + 123


#: Fast heartbeats, so a hung peer is evicted within a couple of seconds.
TRACKER_ARGS = ("--heartbeat", "0.5", "--heartbeat-misses", "2")


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path, TRACKER_ARGS)
    try:
        yield c
    finally:
        c.stop()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_fetch_discover_ping_evict(cluster: Cluster) -> None:
    tracker = cluster.start_tracker()
    alice = cluster.start_peer("alice")
    bob = cluster.start_peer("bob")
    carol = cluster.start_peer("carol")

    original = cluster.root / "alice" / "data.bin"
    original.write_bytes(os.urandom(SIZE))
    digest = sha256_of(original)

    # publish on alice: the announced hash is the file's
    m = alice.command("publish data.bin data.bin", r"published data\.bin: (\w+) \((\d+) bytes, sha256 ([0-9a-f]{64})\)")
    assert m.groups() == ("created", str(SIZE), digest)
    m = alice.command("publish data.bin data.bin", r"published data\.bin: (\w+)")
    assert m.group(1) == "unchanged"

    # the catalogue, from another peer
    bob.send("search data")
    row = bob.expect(r"^\s*(\S+ \S+)\s+(\d+)\s+([0-9a-f]{12})\s+data\.bin$")
    assert row.groups() == ("5.0 MiB", "1", digest[:12])
    bob.expect(r"^1 file$")

    # fetch on bob: byte for byte, verified, and bob becomes a source
    m = bob.command("fetch data.bin", r"fetched data\.bin from (\S+): (\d+) bytes, sha256 verified -> (.+)$", timeout=60)
    assert m.group(1) == "alice"
    assert int(m.group(2)) == SIZE
    fetched = Path(m.group(3))
    assert fetched == cluster.root / "bob" / "data.bin"
    assert fetched.read_bytes() == original.read_bytes()
    assert not list((cluster.root / "bob").glob(".*.part"))

    # fetching again: the same content is already here, and bob says so
    bob.command("fetch data.bin", r"^data\.bin: already here, same content \(sha256 %s\) -> " % digest[:12])

    # carol fetches from bob only
    m = carol.command("fetch data.bin --from bob", r"fetched data\.bin from (\S+): (\d+) bytes, sha256 verified", timeout=60)
    assert m.group(1) == "bob"
    assert sha256_of(cluster.root / "carol" / "data.bin") == digest

    # the tracker's admin shell
    tracker.send("discover alice")
    line = tracker.expect(r"data\.bin")
    assert digest[:12] in line.group(0) or digest[:12] in tracker.seen[-1]
    m = tracker.command("ping alice", r"^alice \(127\.0\.0\.1:\d+\): (.+)$")
    assert "online, rtt" in m.group(1) and "p2p port open" in m.group(1)
    tracker.command("ping nobody", r"^nobody: offline$")
    tracker.command("frobnicate", r"^error: unknown command")
    tracker.command("peers", r"carol")

    # a hung peer (stopped, its connection still open) is evicted by the heartbeat
    log = LogWatcher(cluster.root / "tracker.log")
    alice.signal(signal.SIGSTOP)
    log.expect("evicted session", timeout=15)
    log.close()
    tracker.command("ping alice", r"^alice: offline$")
    tracker.command("discover alice", r"^alice: no published files")

    # a killed peer leaves every answer at once
    bob.proc.kill()
    bob.wait(10)
    tracker.command("discover bob", r"^bob: no published files", timeout=10)

    # a new peer, driven by a script on a pipe: the only live source is carol;
    # at the end of input it finishes the fetch and exits 0
    dave = cluster.start_peer("dave")
    dave.send("fetch data.bin")
    dave.close_stdin()
    m = dave.expect(r"fetched data\.bin from (\S+): (\d+) bytes, sha256 verified", timeout=60)
    assert m.group(1) == "carol"
    assert dave.wait(20) == 0
    assert sha256_of(cluster.root / "dave" / "data.bin") == digest

    # closing the tracker's shell does not stop it; quit does
    tracker.command("quit", r"stopping the tracker")
    assert tracker.wait(20) == 0


def test_peer_restart_republishes_and_tracker_restart_reconnects(cluster: Cluster) -> None:
    cluster.start_tracker()
    alice = cluster.start_peer("alice")
    (cluster.root / "alice" / "a.txt").write_bytes(b"hello from alice\n" * 1000)
    alice.command("publish a.txt a.txt", r"published a\.txt: created")
    alice.close_stdin()
    assert alice.wait(20) == 0

    # a restarted peer still shares what it published
    alice = cluster.start_peer("alice")
    bob = cluster.start_peer("bob")
    bob.command("fetch a.txt", r"fetched a\.txt from alice", timeout=30)

    # the tracker goes away and comes back on the same port: peers reconnect
    # and re-announce without anyone republishing by hand
    assert cluster.tracker is not None
    cluster.tracker.proc.kill()
    cluster.tracker.wait(10)
    alice.expect(r"tracker link: (lost|not connected|disconnected|connecting)", timeout=20)
    cluster.start_tracker()
    alice.expect(r"tracker link: connected", timeout=30)
    carol = cluster.start_peer("carol")
    # bob re-announced too; ask for alice's copy explicitly
    carol.command("fetch a.txt --from alice", r"fetched a\.txt from alice", timeout=30)
