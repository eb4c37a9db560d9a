"""
``python -m bench.attack [--mode MODE] [--quick] [--code DIR]``: attacks on a
real tracker (docs/hardening.md, issue 15 items 1 to 4).  Modes:

  - ``search`` (default): the non-reading client attack (item 1), below.
  - ``catalogue``: a catalogue whose whole answer is far over the client's
    16 MiB frame limit (item 3); clients page through it while the
    tracker's and a real peer's RSS are sampled (L{run_catalogue}).
  - ``impostors``: hellos as a real peer's hostname with other keys, and
    unsigned and seed hellos contesting its session (item 4), while RSS is
    sampled (L{run_impostors}).
  - ``all``: ``search``, ``bench.pipeline`` (item 2: the peer port),
    ``catalogue`` and ``impostors`` one after the other, one JSON line
    each.

A tracker (``twistd p2ptracker --db memory``) gets a catalogue of a few
thousand files from one seed client.  Then attacker connections each
pipeline many ``search`` requests for the whole catalogue (``limit`` 10,000)
and never read an answer, while a bystander pings the tracker.  The
tracker's RSS is sampled throughout; the bystander's slowest ping is kept.

``--code DIR`` runs the tracker from another checkout of the project (for
a before/after comparison: ``git archive main | tar -x -C DIR``).  Loopback
only; every process started here is stopped here by its PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.procs import ROOT, Process, rss_bytes, twistd

_LISTENING = re.compile(r"listening on IPv4Address\(type='TCP', host='([^']+)', port=(\d+)\)")


def _frame(message: dict) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return struct.pack("!I", len(data)) + data


class Client:
    """
    A blocking client of the tracker port (seed or native): answers the
    tracker's heartbeat pings while it waits for an answer.
    """

    def __init__(self, port: int, rcvbuf: int | None = None, source: str | None = None) -> None:
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source:
            # Another loopback address: another host, as the tracker sees it.
            self.sock.bind((source, 0))
        self.sock.settimeout(120)
        self.sock.connect(("127.0.0.1", port))
        #: The length of the last frame received (bytes after the prefix).
        self.last_length = 0

    def _exactly(self, n: int) -> bytes:
        parts = []
        while n:
            chunk = self.sock.recv(min(n, 1 << 20))
            if not chunk:
                raise ConnectionError("the tracker closed the connection")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def receive(self) -> dict:
        while True:
            (length,) = struct.unpack("!I", self._exactly(4))
            self.last_length = length
            message = json.loads(self._exactly(length))
            if isinstance(message, dict) and message.get("action") == "ping":
                self.sock.sendall(_frame({"status": "success", "id": message.get("id"), "message": "pong"}))
                continue
            return message

    def ask(self, message: dict) -> dict:
        self.sock.sendall(_frame(message))
        return self.receive()

    def close(self) -> None:
        self.sock.close()


def start_tracker(workdir: Path, code: Path | None) -> tuple[Process, int]:
    logfile = workdir / "tracker.log"
    env = {"PYTHONPATH": str(code)} if code else None
    proc = Process(
        "tracker",
        [twistd(), "-n", "--pidfile=", f"--logfile={logfile}", "p2ptracker", "--no-shell",
         "--listen", "tcp:0:interface=127.0.0.1", "--db", "memory"],
        cwd=workdir, stdin=False, stderr_path=workdir / "tracker.stderr", env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if logfile.exists():
            match = _LISTENING.search(logfile.read_text(errors="replace"))
            if match:
                return proc, int(match.group(2))
        if not proc.alive():
            raise SystemExit(f"the tracker exited: {(workdir / 'tracker.stderr').read_text()[-600:]}")
        time.sleep(0.05)
    proc.stop()
    raise SystemExit("the tracker did not listen within 30 s")


def run(args: argparse.Namespace) -> dict:
    with tempfile.TemporaryDirectory(prefix="p2p-attack-") as tmp:
        proc, port = start_tracker(Path(tmp), args.code)
        clients: list[Client] = []
        try:
            publisher = Client(port)
            clients.append(publisher)
            publisher.ask({"action": "hello", "hostname": "library", "p2p_port": 5000})
            batch = b"".join(
                _frame({"action": "publish", "fname": f"{i:05d}-{'n' * 60}.pdf", "file_size": i, "lname": f"f{i}"})
                for i in range(args.files)
            )
            publisher.sock.sendall(batch)
            for _ in range(args.files):
                publisher.receive()
            sample = publisher.ask({"action": "list_shared_files", "limit": 10000})
            answer_bytes = len(json.dumps(sample, separators=(",", ":")))
            baseline = rss_bytes(proc.pid)

            attackers = []
            for i in range(args.attackers):
                a = Client(port, rcvbuf=4096)
                clients.append(a)
                a.ask({"action": "hello", "hostname": f"greedy{i}", "p2p_port": 6000 + i})
                attackers.append(a)
            bystander = Client(port)
            clients.append(bystander)
            bystander.ask({"action": "hello", "hostname": "bystander", "p2p_port": 7000})

            request = _frame({"action": "search", "pattern": "", "limit": 10000})
            stop = threading.Event()

            def flood(a: Client) -> None:
                # Pipeline without reading; the send blocks once the
                # tracker stops reading (that is the defence working).
                a.sock.settimeout(0.5)
                sent = 0
                while sent < args.searches and not stop.is_set():
                    try:
                        a.sock.sendall(request)
                        sent += 1
                    except socket.timeout:
                        continue
                    except OSError:
                        return

            peaks = [baseline]

            def sample() -> None:
                # RSS every 0.2 s, whether or not the bystander is answered.
                while not stop.wait(0.2):
                    peaks.append(rss_bytes(proc.pid))

            threads = [threading.Thread(target=flood, args=(a,), daemon=True) for a in attackers]
            threads.append(threading.Thread(target=sample, daemon=True))
            for t in threads:
                t.start()
            pings: list[float] = []
            failed = 0
            started = time.monotonic()
            bystander.sock.settimeout(args.seconds)
            while time.monotonic() - started < args.seconds:
                t0 = time.monotonic()
                try:
                    bystander.ask({"action": "ping"})
                    pings.append(time.monotonic() - t0)
                except (OSError, ConnectionError):
                    # Not answered within the whole attack's duration.
                    failed += 1
                    break
                time.sleep(0.2)
            stop.set()
            end = rss_bytes(proc.pid)
            peak = max(peaks + [end])
        finally:
            for c in clients:
                c.close()
            proc.stop()
    pings.sort()
    return {
        "code": str(args.code or ROOT),
        "files": args.files,
        "answer_bytes": answer_bytes,
        "attackers": args.attackers,
        "searches_each": args.searches,
        "seconds": args.seconds,
        "rss_before_mib": round(baseline / 2**20, 1),
        "rss_peak_mib": round(peak / 2**20, 1),
        "rss_end_mib": round(end / 2**20, 1),
        "pings": len(pings),
        "ping_p50_ms": round(1000 * pings[len(pings) // 2], 1) if pings else None,
        "ping_max_ms": round(1000 * pings[-1], 1) if pings else None,
        "pings_unanswered_within_the_attack": failed,
    }


MiB = 2**20
#: The frame limit of the reference client (docs/protocol.md).
CLIENT_FRAME_LIMIT = 16 * MiB
_PUBLISHED = ("created", "unchanged", "updated")


class RSS:
    """
    The RSS of some processes, sampled every 0.2 s on a thread: the first
    sample, the peak, the last, and the peak of each C{WINDOW} seconds (a
    bound shows as peaks that stop rising).
    """

    WINDOW = 10.0

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.t0 = time.monotonic()
        self.start = {name: rss_bytes(pid) for name, pid in pids.items()}
        self.peak = dict(self.start)
        self.end = dict(self.start)
        self.windows: dict[str, list[int]] = {name: [value] for name, value in self.start.items()}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self._once()

    def _once(self) -> None:
        for name, pid in self.pids.items():
            try:
                value = rss_bytes(pid)
            except OSError:
                continue
            self.end[name] = value
            self.peak[name] = max(self.peak[name], value)
            windows = self.windows[name]
            at = int((time.monotonic() - self.t0) // self.WINDOW)
            while len(windows) <= at:
                windows.append(0)
            windows[at] = max(windows[at], value)

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self._once()
        return {
            f"{name}_rss_mib": {
                "start": round(self.start[name] / MiB, 1),
                "peak": round(self.peak[name] / MiB, 1),
                "end": round(self.end[name] / MiB, 1),
                f"peak_per_{self.WINDOW:g}s": [round(v / MiB) for v in self.windows[name]],
            }
            for name in self.pids
        }


def _publish_many(client: Client, frames: list[bytes], batch: int = 500) -> None:
    """
    Pipeline C{frames} (publish requests) C{batch} at a time; every answer
    must be a success.
    """
    for at in range(0, len(frames), batch):
        chunk = frames[at : at + batch]
        client.sock.sendall(b"".join(chunk))
        for _ in chunk:
            answer = client.receive()
            if answer.get("status") not in _PUBLISHED:
                raise SystemExit(f"publish refused: {answer}")


def _native(port: int, hostname: str, p2p_port: int, source: str | None = None) -> Client:
    client = Client(port, source=source)
    answer = client.ask({"action": "hello", "hostname": hostname, "p2p_port": p2p_port, "version": 1, "id": 1})
    if answer.get("status") != "success":
        raise SystemExit(f"hello {hostname!r} refused: {answer}")
    return client


def _page_through(client: Client, limit: int) -> dict:
    """
    One native walk of the whole catalogue, following C{next}: the pages,
    the largest frame, and what the entries add up to.
    """
    pages = entries = hostnames = sources = 0
    largest = 0
    names: set = set()
    fields: dict = {"action": "search", "pattern": "", "limit": limit}
    while True:
        fields["id"] = pages + 2
        answer = client.ask(fields)
        if answer.get("status") != "success":
            raise SystemExit(f"search refused: {answer}")
        pages += 1
        largest = max(largest, client.last_length)
        for f in answer["files"]:
            entries += 1
            names.add((f["fname"], f["file_size"], f["sha256"]))
            sources += f["sources"]
            hostnames += len(f["hostnames"]) + f.get("more_hostnames", 0)
        if "next" not in answer:
            break
        fields = {"action": "search", "pattern": "", "limit": limit, "cursor": answer["next"]}
    return {"pages": pages, "largest_frame": largest, "entries": entries, "distinct": len(names),
            "sources": sources, "hostnames": hostnames}


def run_catalogue(args: argparse.Namespace) -> dict:
    """
    Issue 15 item 3 at scale.  A memory tracker gets a catalogue whose
    whole answer is far over 16 MiB: C{--hosts} seed sessions with long
    host names (246 characters) all publish the same C{--shared} long
    names (so each entry has C{--hosts} sources, 100 host names listed;
    these sort first, so the first 1,000 entries are far over 16 MiB), and
    C{--solo} more sessions publish 10,000 long names each.  Then a
    real peer runs C{search} (which follows the cursors), C{--pagers}
    native clients walk the catalogue with C{limit} 10,000 again and again
    for C{--seconds}, and a seed client asks C{list_shared_files}; every
    frame is checked against the client's limit; the tracker's and the
    peer's RSS are sampled.
    """
    from bench.peers import Peer
    from bench.procs import Children, raise_nofile

    raise_nofile()
    pad = "x" * 230
    with tempfile.TemporaryDirectory(prefix="p2p-catalogue-") as tmp, Children(Path(tmp)) as kids:
        workdir = Path(tmp)
        tracker = kids.tracker("tracker", "memory")
        t0 = time.monotonic()
        sessions: list[Client] = []
        shared = [
            _frame({"action": "publish", "fname": f"a{i:05d}-shared-{pad}.bin", "file_size": 1000 + i, "lname": f"s{i}"})
            for i in range(args.shared)
        ]
        for h in range(args.hosts):
            c = Client(tracker.port)
            sessions.append(c)
            answer = c.ask({"action": "hello", "hostname": f"h{h:04d}-" + "z" * 240, "p2p_port": 10000 + h})
            if answer.get("status") != "success":
                raise SystemExit(f"hello refused: {answer}")
            _publish_many(c, shared)
        for u in range(args.solo):
            c = Client(tracker.port)
            sessions.append(c)
            c.ask({"action": "hello", "hostname": f"solo{u}-" + "z" * 240, "p2p_port": 20000 + u})
            _publish_many(c, [
                _frame({"action": "publish", "fname": f"b{i:05d}-solo{u}-{pad}.pdf", "file_size": i, "lname": f"u{i}"})
                for i in range(10000)
            ])
        build_seconds = time.monotonic() - t0
        publications = args.hosts * args.shared + args.solo * 10000
        expected = args.shared + args.solo * 10000
        # The whole catalogue as one answer would be (one entry each).
        one_shared = len(json.dumps({
            "fname": f"a{0:05d}-shared-{pad}.bin", "file_size": 1000, "sha256": None, "sources": args.hosts,
            "hostnames": [f"h{h:04d}-" + "z" * 240 for h in range(min(args.hosts, 100))],
            "more_hostnames": max(args.hosts - 100, 0)}, separators=(",", ":"))) + 1
        one_solo = len(json.dumps({
            "fname": f"b{0:05d}-solo0-{pad}.pdf", "file_size": 5000, "sha256": None, "sources": 1,
            "hostnames": ["solo0-" + "z" * 240]}, separators=(",", ":"))) + 1
        whole_bytes = args.shared * one_shared + args.solo * 10000 * one_solo

        peer = Peer(kids, "reader", tracker.port, workdir / "reader")
        session_before = peer.command("status", r"session (\S+?)\)").group(1)
        rss = RSS({"tracker": tracker.pid, "peer": peer.pid})

        # The seed answer: the first page only, under the limit.
        seed = Client(tracker.port)
        sessions.append(seed)
        seed.ask({"action": "hello", "hostname": "seedreader", "p2p_port": 30000})
        listing = seed.ask({"action": "list_shared_files"})
        seed_frame, seed_entries = seed.last_length, len(listing["files"])

        stop = threading.Event()
        walks: list[dict] = []
        failures: list[str] = []

        def pager(i: int) -> None:
            try:
                c = _native(tracker.port, f"pager{i}", 31000 + i)
                sessions.append(c)
                while not stop.is_set():
                    walks.append(_page_through(c, 10000))
            except (OSError, ConnectionError, SystemExit) as e:
                failures.append(f"pager{i}: {e}")

        threads = [threading.Thread(target=pager, args=(i,), daemon=True) for i in range(args.pagers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        peer_counts = []
        peer_seconds = []
        while time.monotonic() - started < args.seconds:
            s0 = time.monotonic()
            m = peer.command("search", r"^(\d+) files?$", timeout=max(args.seconds, 120))
            peer_seconds.append(time.monotonic() - s0)
            peer_counts.append(int(m.group(1)))
        stop.set()
        for t in threads:
            t.join(120)
        session_after = peer.command("status", r"session (\S+?)\)").group(1)
        figures = rss.stop()
        for c in sessions:
            c.close()
    largest = max([w["largest_frame"] for w in walks] + [seed_frame])
    complete = [w for w in walks if w["distinct"] == expected and w["entries"] == expected]
    return {
        "mode": "catalogue",
        "hosts": args.hosts,
        "shared_names": args.shared,
        "solo_sessions": args.solo,
        "publications": publications,
        "build_seconds": round(build_seconds, 1),
        "entries": expected,
        "whole_answer_mib": round(whole_bytes / MiB, 1),
        "seed_list_frame_mib": round(seed_frame / MiB, 2),
        "seed_list_entries": seed_entries,
        "walks": len(walks),
        "walks_complete": len(complete),
        "pages_per_walk": walks[0]["pages"] if walks else None,
        "sources_per_walk": walks[0]["sources"] if walks else None,
        "hostnames_counted_per_walk": walks[0]["hostnames"] if walks else None,
        "largest_frame_mib": round(largest / MiB, 2),
        "frames_over_limit": sum(1 for w in walks if w["largest_frame"] > CLIENT_FRAME_LIMIT)
        + (seed_frame > CLIENT_FRAME_LIMIT),
        "peer_searches": len(peer_counts),
        "peer_search_counts": sorted(set(peer_counts)),
        "peer_search_seconds_max": round(max(peer_seconds), 1) if peer_seconds else None,
        "peer_session_kept": session_before == session_after,
        "failures": failures,
        "seconds": args.seconds,
        **figures,
    }


def run_impostors(args: argparse.Namespace) -> dict:
    """
    Issue 15 item 4 under load.  A real peer "alice" (signed hello) holds
    its hostname on a memory tracker and publishes a file.  C{--attackers}
    threads, from another address (127.0.0.2), loop for C{--seconds}: a
    new connection, then hellos as alice: signed with a fresh key on her
    port and on another port, unsigned native and seed on her port.
    Every answer must be a refusal.  A bystander checks every second that
    alice's file has exactly one source, alice's, with her fingerprint;
    at the end alice's session id must be the one she started with.
    """
    from bench.peers import Peer
    from bench.procs import Children, raise_nofile
    from twistedp2p import identity

    raise_nofile()
    with tempfile.TemporaryDirectory(prefix="p2p-impostors-") as tmp, Children(Path(tmp)) as kids:
        workdir = Path(tmp)
        tracker = kids.tracker("tracker", "memory")
        alice = Peer(kids, "alice", tracker.port, workdir / "alice")
        (workdir / "alice" / "mine.txt").write_bytes(b"alice's own bytes\n" * 100)
        alice.publish("mine.txt", "mine.txt")
        status = alice.command("status", r"key (\w+)")
        fingerprint = status.group(1)
        session_before = alice.command("status", r"session (\S+?)\)").group(1)
        bystander = _native(tracker.port, "bystander", 40000)
        rss = RSS({"tracker": tracker.pid, "peer": alice.pid})

        stop = threading.Event()
        lock = threading.Lock()
        outcomes: dict[str, int] = {}
        breaches: list[dict] = []

        def count(kind: str, answer: dict) -> None:
            code = answer.get("code") if answer.get("status") == "error" else answer.get("status")
            with lock:
                key = f"{kind}: {code}"
                outcomes[key] = outcomes.get(key, 0) + 1
                if answer.get("status") == "success":
                    breaches.append({"kind": kind, "answer": answer})

        def attacker() -> None:
            while not stop.is_set():
                try:
                    c = Client(tracker.port, source="127.0.0.2")
                except OSError:
                    continue
                try:
                    for n in range(args.hellos_per_connection):
                        kind = ("signed", "signed-other-port", "unsigned", "seed")[n % 4]
                        if kind.startswith("signed"):
                            ch = c.ask({"action": "challenge", "id": 1})
                            key = identity.Identity.generate()
                            port = alice.p2p_port if kind == "signed" else alice.p2p_port + 1 + n
                            sig = key.sign_hello(ch["nonce"], ch["tracker"], ch["address"], "alice", port)
                            answer = c.ask({"action": "hello", "hostname": "alice", "p2p_port": port, "version": 1,
                                            "id": 2, "key": key.public_key, "signature": sig})
                        elif kind == "unsigned":
                            answer = c.ask({"action": "hello", "hostname": "alice", "p2p_port": alice.p2p_port,
                                            "version": 1, "id": 3})
                        else:
                            answer = c.ask({"action": "hello", "hostname": "alice", "p2p_port": alice.p2p_port})
                        count(kind, answer)
                        if answer.get("status") == "success":
                            break
                except (OSError, ConnectionError) as e:
                    count("connection", {"status": "error", "code": type(e).__name__})
                finally:
                    c.close()

        threads = [threading.Thread(target=attacker, daemon=True) for _ in range(args.attackers)]
        started = time.monotonic()
        for t in threads:
            t.start()
        checks = bad_checks = 0
        while time.monotonic() - started < args.seconds:
            answer = bystander.ask({"action": "fetch", "fname": "mine.txt", "id": 9})
            peers = answer.get("peer_list", [])
            checks += 1
            if not (len(peers) == 1 and peers[0].get("hostname") == "alice"
                    and peers[0].get("fingerprint") == fingerprint and peers[0].get("port") == alice.p2p_port):
                bad_checks += 1
            time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(30)
        seconds = time.monotonic() - started
        session_after = alice.command("status", r"session (\S+?)\)").group(1)
        figures = rss.stop()
        bystander.close()
    hellos = sum(v for k, v in outcomes.items() if not k.startswith("connection"))
    return {
        "mode": "impostors",
        "attackers": args.attackers,
        "seconds": round(seconds, 1),
        "hellos": hellos,
        "hellos_per_second": round(hellos / seconds),
        "outcomes": dict(sorted(outcomes.items())),
        "impostors_accepted": len(breaches),
        "breaches": breaches[:5],
        "owner_checks": checks,
        "owner_checks_wrong": bad_checks,
        "owner_session_kept": session_before == session_after,
        **figures,
    }


def run_pipeline(args: argparse.Namespace) -> dict:
    """
    Item 2 (the peer port), through L{bench.pipeline}: 100,000 pipelined
    C{pieces} and C{ping} requests never read.
    """
    from bench import pipeline

    with tempfile.TemporaryDirectory(prefix="p2p-pipeline-") as tmp:
        r = pipeline.run(argparse.Namespace(requests=100_000, seconds=args.seconds, kind="pieces", after=2.0), Path(tmp))
    return {"mode": "pipeline", **r}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.attack", description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("search", "catalogue", "impostors", "all"), default="search",
                        help="which attack (default search; all: search, pipeline, catalogue, impostors)")
    parser.add_argument("--quick", action="store_true", help="search: 2,000 files, 2 attackers, 10 s")
    parser.add_argument("--files", type=int, help="search: catalogue size (default 5,000; quick 2,000)")
    parser.add_argument("--attackers", type=int,
                        help="search: non-reading connections (default 4; quick 2); impostors: threads (default 2)")
    parser.add_argument("--searches", type=int, default=5000, help="search: searches each attacker pipelines (default 5,000)")
    parser.add_argument("--seconds", type=float, help="how long each attack runs (default 30; quick 10)")
    parser.add_argument("--code", type=Path, help="search: run the tracker from this checkout (before/after)")
    parser.add_argument("--hosts", type=int, default=110, help="catalogue: sessions publishing the shared names (default 110)")
    parser.add_argument("--shared", type=int, default=900, help="catalogue: names every host publishes (default 900)")
    parser.add_argument("--solo", type=int, default=2, help="catalogue: sessions publishing 10,000 names each (default 2)")
    parser.add_argument("--pagers", type=int, default=3, help="catalogue: native clients paging meanwhile (default 3)")
    parser.add_argument("--hellos-per-connection", type=int, default=8, help="impostors: hellos on one connection (default 8)")
    args = parser.parse_args(argv)
    args.seconds = args.seconds or (10.0 if args.quick else 30.0)
    if args.code:
        args.code = args.code.resolve()
    modes = ("search", "pipeline", "catalogue", "impostors") if args.mode == "all" else (args.mode,)
    for mode in modes:
        if mode == "search":
            search = argparse.Namespace(**vars(args))
            search.files = args.files or (2000 if args.quick else 5000)
            search.attackers = args.attackers or (2 if args.quick else 4)
            result = run(search)
        elif mode == "pipeline":
            result = run_pipeline(args)
        elif mode == "catalogue":
            result = run_catalogue(args)
        else:
            impostors = argparse.Namespace(**vars(args))
            impostors.attackers = args.attackers or 2
            result = run_impostors(impostors)
        print(json.dumps(result))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
