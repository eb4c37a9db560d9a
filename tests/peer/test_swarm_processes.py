"""
Resume across a kill, with real processes: a ``twistd p2ptracker``, two
``twistd p2ppeer`` sources (upload-capped, so the transfer lasts a few
seconds) and a downloading ``twistd p2ppeer`` that is SIGKILLed (or
SIGTERMed) mid-way and started again.  It resumes on its own at start-up and fetches only the
pieces its state file did not record.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster, FileWatch, ShellProcess
from twistedp2p.peer.pieces import bitmap_decode

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def served(peer: ShellProcess) -> int:
    return int(peer.command("status", r"^served: (\d+) ranges").group(1))


def recorded_pieces(state: Path, timeout: float = 30.0, at_least: int = 1) -> tuple[int, int]:
    """
    Wait until the state file records C{at_least} pieces.  The downloader
    replaces it by a rename after each batch of pieces: each rename in its
    directory wakes us (L{FileWatch}), no polling.  @return: (recorded,
    total).
    """
    deadline = time.monotonic() + timeout
    with FileWatch(state.parent) as watch:
        while True:
            try:
                data = json.loads(state.read_text())
            except (OSError, ValueError):
                data = None
            if data is not None:
                have = len(bitmap_decode(data["have"], data["pieces"]))
                if have >= at_least:
                    return have, data["pieces"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{state} never recorded {at_least} pieces")
            watch.wait(left)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killed_mid_download_resumes_at_start(cluster: Cluster, signum: int) -> None:
    cluster.start_tracker(db="memory")
    data = os.urandom(12 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    sources = []
    for name in ("alice", "bob"):
        peer = cluster.start_peer(name, "--upload-rate", "2M")
        (cluster.root / name / "data.bin").write_bytes(data)
        peer.command("publish data.bin data.bin", r"published data\.bin: created")
        sources.append(peer)

    carol = cluster.start_peer("carol")
    carol.send("fetch data.bin")
    state = cluster.root / "carol" / ".data.bin.part.json"
    have, total = recorded_pieces(state, at_least=12)
    assert have < total
    carol.signal(signum)
    # (twistd stops cleanly on SIGTERM, then exits with the signal's status.)
    assert carol.wait(20) == -signum
    if signum == signal.SIGTERM:
        # Stopped cleanly: the state was written on the way out.
        assert "stopped fetching data.bin" in (cluster.root / "carol.log").read_text()
        have, _ = recorded_pieces(state, timeout=1)
    assert (cluster.root / "carol" / ".data.bin.part").exists()
    assert not (cluster.root / "carol" / "data.bin").exists()
    before = sum(served(s) for s in sources)

    # Started again, it resumes on its own.
    carol = cluster.start_peer("carol")
    m = carol.expect(r"^resuming data\.bin: (\d+) of (\d+) pieces on disk$")
    assert int(m.group(1)) >= have and int(m.group(2)) == total
    m = carol.expect(
        r"^fetched data\.bin from (.+): (\d+) bytes \((\d+) resumed from disk\), sha256 verified -> (.+)$",
        timeout=60,
    )
    assert int(m.group(2)) == len(data)
    assert int(m.group(3)) >= have * 256 * 1024
    assert Path(m.group(4)) == cluster.root / "carol" / "data.bin"
    assert hashlib.sha256((cluster.root / "carol" / "data.bin").read_bytes()).hexdigest() == digest
    assert not state.exists()
    assert not (cluster.root / "carol" / ".data.bin.part").exists()

    after = sum(served(s) for s in sources) - before
    assert 0 < after < total


def test_source_killed_mid_download(cluster: Cluster) -> None:
    """
    A source SIGKILLed mid-transfer: the downloader finishes from the other
    source, the file is verified and in place, no partial file is left, and
    the tracker lists only the live source (no ghost record).
    """
    cluster.start_tracker(db="memory")
    data = os.urandom(12 * MiB)
    digest = hashlib.sha256(data).hexdigest()
    sources = {}
    for name in ("alice", "bob"):
        peer = cluster.start_peer(name, "--upload-rate", "2M")
        (cluster.root / name / "data.bin").write_bytes(data)
        peer.command("publish data.bin data.bin", r"published data\.bin: created")
        sources[name] = peer

    carol = cluster.start_peer("carol")
    carol.send("fetch data.bin")
    # Both sources are serving: the state file records pieces on the way.
    have, total = recorded_pieces(cluster.root / "carol" / ".data.bin.part.json", at_least=8)
    assert have < total
    sources["alice"].signal(signal.SIGKILL)
    assert sources["alice"].wait(20) == -signal.SIGKILL

    m = carol.expect(r"^fetched data\.bin from (.+): (\d+) bytes.*sha256 verified -> (.+)$", timeout=60)
    assert "bob" in m.group(1)
    assert int(m.group(2)) == len(data)
    final = cluster.root / "carol" / "data.bin"
    assert Path(m.group(3)) == final
    assert hashlib.sha256(final.read_bytes()).hexdigest() == digest
    assert not (cluster.root / "carol" / ".data.bin.part").exists()
    assert not (cluster.root / "carol" / ".data.bin.part.json").exists()
    # The killed source is gone from the index (no ghost record); the
    # sources are bob and carol, who publishes what she fetched.
    cluster.tracker.command("discover alice", r"^alice: no published files \(or not online\)$")
    carol.command("search data.bin", r"^\s*12.0 MiB\s+2\s+[0-9a-f]{12}\s+data\.bin$")
