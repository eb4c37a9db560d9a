"""
End to end: several real ``twistd p2ptracker`` processes over one real
PostgreSQL index (a throwaway database, dropped afterwards), with real
``twistd p2ppeer`` processes spread over them.

  - a peer on one tracker fetches what a peer on another published;
    ``discover`` and ``ping`` answer from any tracker;
  - a SIGKILLed tracker: its peers fail over to the next tracker of their
    ``--tracker`` list, and its stale records leave the survivors' answers
    once its lease passes;
  - a database outage (a TCP proxy between the trackers and PostgreSQL is
    cut): the trackers keep their sessions and answer writes with
    ``index unavailable``; once it is restored they resync and nothing live
    is lost.

Skipped when PostgreSQL cannot be reached (unless P2P_REQUIRE_POSTGRES=1).
Every wait is bounded and waits for an output or log line, except
L{until} (see there why).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.e2e.harness import LogWatcher, ShellProcess, free_port
from tests.pgutil import postgres_skip_reason, throwaway_database

pytestmark = pytest.mark.timeout(240)

HEARTBEAT = 0.5
LEASE = 2.0


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def with_port(url: str, port: int) -> str:
    """
    The same PostgreSQL URL on 127.0.0.1:C{port} (through the proxy).
    """
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{port}" if auth else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class CuttableProxy:
    """
    A TCP forwarder on 127.0.0.1 (threads, blocking sockets: test code, no
    reactor) that can be cut, as if the database went away, and restored.
    While cut, open connections are closed and new ones are closed at once.
    """

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open = True
        self._closed = False
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refuse = not self._open or self._closed
            if refuse:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=2)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(client, upstream, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, pair), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, pair: tuple[socket.socket, socket.socket]) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        self._drop(pair)

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self._lock:
            self._pairs.discard(pair)
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def cut(self) -> int:
        """
        Close every forwarded connection and refuse new ones.

        @return: how many connections were cut.
        """
        with self._lock:
            self._open = False
            pairs = list(self._pairs)
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def restore(self) -> None:
        with self._lock:
            self._open = True

    def connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.cut()
        self._listener.close()


@pytest.fixture
def pg_url() -> Iterator[str]:
    reason = postgres_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    url, drop = throwaway_database()
    try:
        yield url
    finally:
        drop()


class Cluster:
    """
    Trackers (by id) and peers (by hostname) in one temporary directory;
    every process is killed by PID at the end.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.procs: list[ShellProcess] = []
        self.ports: dict[str, int] = {}
        self.trackers: dict[str, ShellProcess] = {}

    def endpoint(self, tracker_id: str) -> str:
        return f"tcp:127.0.0.1:{self.ports[tracker_id]}"

    def start_tracker(self, tracker_id: str, db: str, *extra: str) -> ShellProcess:
        port = self.ports.setdefault(tracker_id, free_port())
        args = [
            "p2ptracker",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--db", db,
            "--tracker-id", tracker_id,
            "--heartbeat", str(HEARTBEAT),
            "--heartbeat-misses", "2",
            "--lease", str(LEASE),
            "--db-pool-size", "2",
            *extra,
        ]
        tracker = ShellProcess(f"tracker {tracker_id}", args, self.root, self.root / f"tracker-{tracker_id}.log")
        self.procs.append(tracker)
        m = tracker.expect(rf"p2ptracker {tracker_id} listening on 127\.0\.0\.1:{port} \(index: (.+?)\)", timeout=30)
        assert m.group(1).startswith("PostgreSQL "), m.group(0)
        self.trackers[tracker_id] = tracker
        return tracker

    def start_peer(self, name: str, *tracker_ids: str, connected: bool = True) -> ShellProcess:
        repo = self.root / name
        repo.mkdir(exist_ok=True)
        args = ["p2ppeer", "--hostname", name, "--repo", str(repo), "--listen", "tcp:0:interface=127.0.0.1"]
        for tracker_id in tracker_ids:
            args += ["--tracker", self.endpoint(tracker_id)]
        peer = ShellProcess(name, args, self.root, self.root / f"{name}.log")
        self.procs.append(peer)
        peer.expect(rf"p2ppeer {name} serving on port \d+", timeout=30)
        if connected:
            peer.expect(rf"tracker link: connected to {self.endpoint(tracker_ids[0])}", timeout=30)
        return peer

    def log(self, tracker_id: str) -> LogWatcher:
        return LogWatcher(self.root / f"tracker-{tracker_id}.log")

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def until(ask: Callable[[], bool], timeout: float, what: str) -> float:
    """
    Ask again (each question waits for its answer line) until C{ask()} is
    true; a short pause between questions keeps the shells unflooded.

    This stays a (bounded) poll on purpose: what it waits for has no event
    to await.  A dead tracker's records leave the others' answers when its
    lease passes *by their clocks*, a filter applied at read time that
    nothing announces; and the end of a resync or of a re-announce through
    another tracker is a database write that no process prints or logs.
    Every other wait in this module awaits an output or log line.

    @return: the seconds it took.
    """
    started = time.monotonic()
    while True:
        if ask():
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.1)


def discover_rows(tracker: ShellProcess, hostname: str) -> list[str]:
    """
    Run C{discover HOSTNAME} on a tracker shell: its rows (names first).
    """
    tracker.send(f"discover {hostname}")
    first = tracker.expect(rf"^(name\s+size\s+sha256\s+source|{hostname}: no published files)").group(0)
    if not first.startswith("name"):
        return []
    # The rows end where the next command's answer starts: ask a marker.
    tracker.send("ping end-of-rows")
    rows = []
    while True:
        line = tracker.expect(r".").string
        if line == "end-of-rows: offline":
            return rows
        rows.append(line)


def test_unreachable_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """
    No database at the address: the tracker exits 1 and says why in one
    line (no traceback), without the password.
    """
    port = free_port()
    args = [
        "p2ptracker", "--listen", "tcp:0:interface=127.0.0.1", "--no-shell",
        "--db", f"postgresql://p2p:s3cret@127.0.0.1:{port}/p2p",
    ]
    tracker = ShellProcess("tracker", args, tmp_path, tmp_path / "tracker.log")
    try:
        m = tracker.expect(r"^p2ptracker: cannot start: (.+)$", timeout=30)
        assert m.group(1).startswith(f"cannot use the PostgreSQL index at postgresql://p2p:***@127.0.0.1:{port}/p2p: ")
        assert tracker.wait(20) == 1
        log = (tmp_path / "tracker.log").read_text()
        assert "Traceback" not in log and "s3cret" not in log
        assert "s3cret" not in "\n".join(tracker.seen)
    finally:
        tracker.kill()


def test_cross_tracker_and_failover(pg_url: str, cluster: Cluster) -> None:
    a = cluster.start_tracker("A", pg_url)
    b = cluster.start_tracker("B", pg_url)
    c = cluster.start_tracker("C", pg_url)
    alice = cluster.start_peer("alice", "A", "B")
    carol = cluster.start_peer("carol", "A")
    bob = cluster.start_peer("bob", "B", "C")
    dave = cluster.start_peer("dave", "C")

    original = cluster.root / "alice" / "a.bin"
    original.write_bytes(os.urandom(1024 * 1024 + 7))
    digest = sha256_of(original)
    alice.command("publish a.bin a.bin", rf"published a\.bin: created \(\d+ bytes, sha256 {digest}\)")
    (cluster.root / "carol" / "c.txt").write_bytes(b"carol's notes\n" * 100)
    carol.command("publish c.txt c.txt", r"published c\.txt: created")

    # Across trackers: bob (on B) fetches alice's file (on A), verified.
    m = bob.command("fetch a.bin", r"fetched a\.bin from (\S+): (\d+) bytes, sha256 verified -> (.+)$", timeout=60)
    assert m.group(1) == "alice"
    assert Path(m.group(3)).read_bytes() == original.read_bytes()
    # dave (on C) fetches carol's (on A).
    dave.command("fetch c.txt", r"fetched c\.txt from carol: 1400 bytes, sha256 verified", timeout=60)

    # discover and ping from trackers that do not hold the session.
    rows = discover_rows(c, "alice")
    assert len(rows) == 1 and rows[0].split()[:4] == ["a.bin", "1.0", "MiB", digest[:12]], rows
    m = b.command("ping alice", r"^alice \(127\.0\.0\.1:\d+\): (.+)$")
    assert m.group(1).startswith("online (via tracker A), p2p port open, connect rtt "), m.group(1)
    m = a.command("ping alice", r"^alice \(127\.0\.0\.1:\d+\): (.+)$")
    assert m.group(1).startswith("online, rtt "), m.group(1)
    b.command("ping nobody", r"^nobody: offline$")

    # SIGKILL tracker A: alice fails over to B (one line), carol (A only)
    # keeps retrying.
    a.proc.send_signal(signal.SIGKILL)
    a.wait(10)
    killed = time.monotonic()
    alice.expect(rf"^tracker link: lost {cluster.endpoint('A')}, trying {cluster.endpoint('B')}$", timeout=20)
    alice.expect(rf"^tracker link: connected to {cluster.endpoint('B')}$", timeout=30)
    carol.expect(r"^tracker link: lost .*reconnecting", timeout=20)

    # A's records leave the survivors' answers once its lease passes.
    until(lambda: discover_rows(b, "carol") == [], LEASE + 10 - (time.monotonic() - killed), "carol's records on B")
    until(lambda: discover_rows(c, "carol") == [], 5, "carol's records on C")
    c.command("ping carol", r"^carol: offline$")
    # alice re-announced through B: one row, held by B.
    until(lambda: len(discover_rows(c, "alice")) == 1, LEASE + 10, "alice's single record")
    m = c.command("ping alice", r"^alice \(127\.0\.0\.1:\d+\): (.+)$")
    assert m.group(1).startswith("online (via tracker B)"), m.group(1)
    m = b.command("ping alice", r"^alice \(127\.0\.0\.1:\d+\): (.+)$")
    assert m.group(1).startswith("online, rtt "), m.group(1)

    # The survivors still serve transfers: dave (on C) gets a.bin from a
    # live source (alice via B, or bob).
    m = dave.command("fetch a.bin", r"fetched a\.bin from (.+?): (\d+) bytes, sha256 verified", timeout=60)
    assert m.group(1) in ("alice", "bob", "2 sources (alice, bob)", "2 sources (bob, alice)"), m.group(0)
    assert sha256_of(cluster.root / "dave" / "a.bin") == digest
    dave.command("fetch c.txt --force", r"^error: .*(no live source|no source)", timeout=20)


def test_database_outage(pg_url: str, cluster: Cluster) -> None:
    parts = urlsplit(pg_url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    try:
        _outage(cluster, with_port(pg_url, proxy.port), proxy)
    finally:
        # The processes first: trackers that lose the database while they
        # stop only log noise.
        cluster.stop()
        proxy.close()


def _outage(cluster: Cluster, db: str, proxy: CuttableProxy) -> None:
    a = cluster.start_tracker("A", db)
    b = cluster.start_tracker("B", db)
    alice = cluster.start_peer("alice", "A")
    bob = cluster.start_peer("bob", "B")
    carol = cluster.start_peer("carol", "B")
    for name, peer in (("alice", alice), ("carol", carol)):
        for fname in ("before1.bin", "before2.bin"):
            (cluster.root / name / fname).write_bytes(f"{name} {fname}\n".encode() * 5000)
            peer.command(f"publish {fname} {fname}", rf"published {fname.replace('.', '[.]')}: created")
    bob.command("fetch before1.bin --from alice", r"fetched before1\.bin from alice: \d+ bytes, sha256 verified", timeout=60)

    # Cut the database off while the peers are busy.
    log_a, log_b = cluster.log("A"), cluster.log("B")
    assert proxy.cut() > 0
    (cluster.root / "alice" / "during.txt").write_bytes(b"written during the outage\n")
    m = alice.command("publish during.txt during.txt", r"^(error: .*|published during\.txt.*)$", timeout=30)
    assert m.group(0).startswith("error: index unavailable: "), m.group(0)
    # A new session needs the index too: its hello is refused, clearly.
    erin = cluster.start_peer("erin", "B", connected=False)
    erin.expect(rf"^tracker link: {cluster.endpoint('B')} refused hello \(index unavailable: ", timeout=30)
    log_a.expect("index unavailable during heartbeat", timeout=20)
    log_b.expect("index unavailable during heartbeat", timeout=20)
    # A tracker answers from what it has: bob gets carol's file (same
    # tracker) during the outage.
    bob.command("fetch before2.bin --from carol", r"fetched before2\.bin from carol: \d+ bytes, sha256 verified", timeout=60)
    # Once A's lease passes by B's clock, B no longer vouches for A's peers.
    until(lambda: discover_rows(b, "alice") == [], LEASE + 10, "alice's records hidden on B")
    # More heartbeats than evict a silent peer have passed: sessions stay.
    a.command("peers", r"^alice\s")
    b.command("peers", r"^(bob|carol)\s")
    # Writes keep failing with a clear error, nothing hangs.
    m = carol.command("publish before1.bin again.bin", r"^(error: .*|published again\.bin.*)$", timeout=30)
    assert m.group(0).startswith("error: index unavailable: "), m.group(0)

    # Restore: the trackers reconnect and resync their sessions.
    proxy.restore()
    log_a.expect("resyncing", timeout=40)
    log_b.expect("resyncing", timeout=40)
    erin.expect(rf"^tracker link: connected to {cluster.endpoint('B')}$", timeout=60)
    until(lambda: len(discover_rows(b, "alice")) == 2, 20, "alice's records back on B")
    alice.command("publish during.txt during.txt", r"published during\.txt: created", timeout=30)
    # Published before the cut, fetched from another tracker after it.
    m = bob.command(
        "fetch before2.bin --from alice --force",
        r"fetched before2\.bin from alice: (\d+) bytes, sha256 verified -> (.+)$",
        timeout=60,
    )
    assert Path(m.group(2)).read_bytes() == (cluster.root / "alice" / "before2.bin").read_bytes()
    # And a peer joining now sees everything, and nothing of what failed.
    dave = cluster.start_peer("dave", "A")
    dave.command("fetch during.txt", r"fetched during\.txt from alice", timeout=60)
    dave.command("fetch again.bin", r"^error: .*(no live source|no source)", timeout=20)
    for tracker in (a, b):
        assert tracker.proc.poll() is None
