"""
Fault test: the tracker is SIGKILLed under 1,000 registered peers and
started again on the same port.

A real ``twistd p2ptracker`` (SQLite index, JSON log, loopback web API for
the checks); 1,000 peers' tracker sessions in four helper processes
(L{tests.e2e.manypeers}: the real L{TrackerLink} per peer, each with its
own hostname, P2P port number and one published file); and two real
``twistd p2ppeer`` processes, so that a real fetch and transfer is checked
after the restart.  Nobody republishes anything by hand: every link must
reconnect (backoff with jitter), say hello and re-announce on its own.

Checked after the restart: every one of the 1,000 (and the real peers)
re-registered and re-announced; the tracker holds exactly those sessions
and their files, and nothing else (no ghost records, in its answers and in
its database); no hello was refused and no announce failed; the reconnect
attempts were spread out (the spread is printed: run with ``-s``); the
tracker logged no error and no traceback; the real fetch is sha256-verified
and leaves no partial file under a final name.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import sqlite3
import statistics
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from bench.procs import Process
from tests.e2e.harness import Cluster, FileWatch, free_port

pytestmark = pytest.mark.timeout(240)

HELPERS = 4
PER_HELPER = 250
MANY = HELPERS * PER_HELPER
REAL = ("alice", "bob")
SIZE = 3 * 1024 * 1024 + 17

#: Heartbeats run throughout (every 2 s), tolerant of a busy machine.
TRACKER_ARGS = ("--heartbeat", "2", "--heartbeat-misses", "5")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path, TRACKER_ARGS)
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def helpers() -> Iterator[list[Process]]:
    """
    The helper processes a test starts; stopped (by PID) at its end.
    """
    started: list[Process] = []
    try:
        yield started
    finally:
        for h in started:
            h.stop()


def get_json(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as answer:
        return json.load(answer)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def check_index(web: int, alice_file: tuple[str, str]) -> None:
    """
    The tracker's answers hold exactly the 1,000 + real sessions and their
    files: one source each, the right one.
    """
    peers = get_json(web, "/api/peers")["peers"]
    hostnames = sorted(p["hostname"] for p in peers)
    expected = sorted([f"many-{i:04d}" for i in range(MANY)] + list(REAL))
    assert len(peers) == len(expected), f"{len(peers)} sessions, expected {len(expected)}"
    assert hostnames == expected
    files = get_json(web, "/api/catalogue?limit=10000")["files"]
    by_name = {f["fname"]: f for f in files}
    assert len(files) == MANY + 1, f"{len(files)} files in the catalogue, expected {MANY + 1}"
    for i in range(MANY):
        f = by_name[f"many-{i:04d}.bin"]
        assert (f["sources"], f["hostnames"], f["sha256"]) == (1, [f"many-{i:04d}"], f"{i:064x}"), f
    fname, digest = alice_file
    assert (by_name[fname]["sources"], by_name[fname]["hostnames"], by_name[fname]["sha256"]) == (1, ["alice"], digest)


def database_counts(path: Path) -> tuple[int, int]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        sessions = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
        publications = db.execute("SELECT count(*) FROM publications").fetchone()[0]
    finally:
        db.close()
    return sessions, publications


def check_database(path: Path, timeout: float = 20.0) -> None:
    """
    The SQLite file holds exactly as many sessions and publications.  The
    index answers above only after their writes committed; should that ever
    change (writes behind), each commit to the WAL wakes us to look again.
    """
    want = (MANY + len(REAL), MANY + 1)
    deadline = time.monotonic() + timeout
    with FileWatch(path.parent) as watch:
        while True:
            got = database_counts(path)
            if got == want:
                return
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"database holds {got} (sessions, publications), expected {want}")
            watch.wait(left)


def check_log(root: Path) -> None:
    """
    The tracker's JSON log (both runs, every rotated piece): no error or
    critical event, no failure, no traceback.
    """
    problems = []
    pieces = sorted(root.glob("tracker.log*"))
    assert pieces
    for piece in pieces:
        for line in piece.read_text(errors="replace").splitlines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("level") in ("error", "critical") or "failure" in event or "Traceback" in line:
                problems.append(line[:300])
    assert not problems, "tracker log:\n" + "\n".join(problems[:10])


def test_tracker_restart_with_1000_peers(cluster: Cluster, helpers: list[Process]) -> None:
    web = free_port()
    tracker_args = ("--web", f"tcp:{web}:interface=127.0.0.1")
    twistd_args = ("--logger=twistedp2p.logs.json_logger",)
    cluster.start_tracker(*tracker_args, twistd_args=twistd_args)

    for n in range(HELPERS):
        helpers.append(
            Process(
                f"manypeers-{n}",
                [sys.executable, "-m", "tests.e2e.manypeers", "--tracker", cluster.endpoint,
                 "--first", str(n * PER_HELPER), "--count", str(PER_HELPER)],
                stderr_path=cluster.root / f"manypeers-{n}.stderr",
            )
        )
    for h in helpers:
        ready = h.event("ready", timeout=90)
        assert ready["connected"] == PER_HELPER and ready["refused_hellos"] == 0, ready

    alice = cluster.start_peer("alice")
    bob = cluster.start_peer("bob")
    original = cluster.root / "alice" / "real.bin"
    original.write_bytes(os.urandom(SIZE))
    digest = hashlib.sha256(original.read_bytes()).hexdigest()
    alice.command("publish real.bin real.bin", rf"published real\.bin: created \(\d+ bytes, sha256 {digest}\)")
    check_index(web, ("real.bin", digest))

    # SIGKILL: no goodbye to anyone.
    assert cluster.tracker is not None
    cluster.tracker.proc.kill()
    cluster.tracker.wait(10)
    killed = time.monotonic()
    for h in helpers:
        h.event("lost", timeout=30)
    for peer in (alice, bob):
        peer.expect(r"^tracker link: lost .*reconnecting", timeout=30)

    # Down long enough that every link's backoff is under way (each has
    # failed to reconnect twice), then started again on the same port, with
    # the same database file.
    for h in helpers:
        h.event("retrying", timeout=30)
    cluster.start_tracker(*tracker_args, twistd_args=twistd_args)
    listening = time.monotonic()
    rows: list[dict[str, Any]] = []
    for h in helpers:
        back = h.event("back", timeout=90)
        assert back["connected"] == PER_HELPER, back
        assert back["refused_hellos"] == 0 and back["announce_failures"] == 0, back
        assert back["log_problems"] == [], back["log_problems"]
        rows += back["rows"]
    all_back = time.monotonic()
    for peer in (alice, bob):
        peer.expect(r"^tracker link: connected", timeout=30)

    # Exactly the live sessions and their files, nothing left over.
    assert len(rows) == MANY
    check_index(web, ("real.bin", digest))
    check_database(cluster.root / "tracker.sqlite3")

    # A real transfer after the restart: verified, complete, no partial file.
    m = bob.command("fetch real.bin", r"fetched real\.bin from alice: (\d+) bytes, sha256 verified -> (.+)$", timeout=60)
    fetched = Path(m.group(2))
    assert fetched == cluster.root / "bob" / "real.bin"
    assert hashlib.sha256(fetched.read_bytes()).hexdigest() == digest
    for repo in (cluster.root / "alice", cluster.root / "bob"):
        leftovers = [p.name for p in repo.iterdir() if ".part" in p.name]
        assert leftovers == [], leftovers
    check_log(cluster.root)

    # The reconnects were spread out by the jitter, not one herd.
    first = [r["attempts"][0] - killed for r in rows]
    attempts = [len(r["attempts"]) for r in rows]
    refused = [sum(1 for t in r["attempts"] if t < listening) for r in rows]
    done = [r["announced"] - listening for r in rows]
    after = sorted(t for r in rows for t in r["attempts"] if t >= listening)
    busiest = max((bisect.bisect_left(after, t + 0.1) - i for i, t in enumerate(after)), default=0)
    print(
        f"\n{MANY} peers: tracker down {listening - killed:.2f} s (SIGKILL to listening again); "
        f"first reconnect attempt after the kill p10/p50/p90/max "
        f"{percentile(first, .1):.2f}/{percentile(first, .5):.2f}/{percentile(first, .9):.2f}/{max(first):.2f} s; "
        f"attempts per peer {min(attempts)}-{max(attempts)} (mean {statistics.mean(attempts):.1f}, "
        f"{min(refused)}-{max(refused)} refused while down); "
        f"re-announced after listening p10/p50/p90/max "
        f"{percentile(done, .1):.2f}/{percentile(done, .5):.2f}/{percentile(done, .9):.2f}/{max(done):.2f} s; "
        f"busiest 100 ms after listening: {busiest} connection attempts; "
        f"all {MANY} back {all_back - listening:.2f} s after listening"
    )
    assert percentile(first, 0.9) - percentile(first, 0.1) > 0.3, "reconnects not spread by the jitter"
    assert busiest < MANY
