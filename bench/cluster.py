"""
Many sessions over several trackers sharing one PostgreSQL index (issue 7:
"5 trackers on one database hold 90,000 sessions together ... every
tracker's fetch sees every live source, and a storm of all 90,000 leaves 0
ghosts within one lease").

``python -m bench.cluster`` (full: 5 trackers, 90,000 sessions) or
``python -m bench.cluster --quick`` (2 trackers, 1,000 sessions, well under
a minute).  One run:

  1. a throwaway PostgreSQL database (``P2P_PG_DSN``, default
     ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped afterwards;
  2. ``--trackers`` real ``twistd p2ptracker`` processes on it, each with
     its own ``--tracker-id``;
  3. generator processes (``python -m bench.cluster gen``, the session code
     of L{bench.loadgen}), each under 15,000 sessions and bound to its own
     loopback source address (127.0.0.2, .3, ...) so that the ephemeral
     port range is not the limit; session ``i`` goes to tracker ``i mod
     T``, says ``hello``, publishes ``cluster-K.bin`` for its group ``K =
     i div 10,000`` (a group fits in one ``fetch``: at most 10,000 sources)
     and answers every heartbeat ping;
  4. visibility: a fresh client on each tracker searches ``cluster-`` until
     every tracker counts every live source, then ``fetch``es every group
     name on every tracker and checks that the answer lists exactly the
     group's hostnames (every live source, none else);
  5. after one more heartbeat: each tracker's RSS growth per session it
     holds (and per session in the cluster: every tracker's view holds all);
  6. the storm: every generator closes all its sessions at once; a fresh
     client per tracker searches every 100 ms until the tracker counts 0
     sources; ghosts are what each tracker still counted at the lease
     deadline (``--lease`` seconds after the storm).

Baseline, measured in the same run by the same generators: as many Twisted
echo servers (``bench.echo``: the same framing and JSON, nothing else)
holding the same sessions: registration rate and RSS per connection.

The Markdown table goes to stdout; ``--write-docs`` puts it, with the
command, into the cluster section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import errno
import os
import select
import shlex
import shutil
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import frames
from bench.loadgen import Conn, Engine, emit, register
from bench.procs import BenchError, Children, Process, cpu_seconds, raise_nofile, rss_bytes

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- cluster-results -->", "<!-- /cluster-results -->"

#: The largest fetch answer (wire.MAX_LIMIT): a group's sources fit in one.
GROUP = 10_000
#: Sessions per generator process (each needs a descriptor; the hard
#: limit here is 20,000).
PER_GEN = 15_000
NAME_PREFIX = "cluster-"
HOST_PREFIX = "cl"


def group_name(i: int) -> str:
    return f"{NAME_PREFIX}{i // GROUP:03d}.bin"


# -- the generator process ------------------------------------------------------------


class BoundEngine(Engine):
    """
    L{Engine} whose connections leave from one loopback source address.
    C{IP_BIND_ADDRESS_NO_PORT}: the port is chosen at C{connect}, per
    destination, so each (source address, tracker) pair has the whole
    ephemeral range.
    """

    def __init__(self, targets: list[tuple[str, int]], fname: str, source: str) -> None:
        Engine.__init__(self, targets, fname)
        self.source = source

    def open(self, index: int, hostname: str, publish: str | None = None, fetcher: bool = False, target: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_IP, getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24), 1)
        conn = Conn(sock, index, hostname, publish, fetcher)
        self.conns[conn.fd] = conn
        self.in_progress += 1
        try:
            sock.bind((self.source, 0))
        except OSError as e:
            self.fail(conn, f"bind: {errno.errorcode.get(e.errno, e.errno)}")
            return
        err = sock.connect_ex(self.targets[target % len(self.targets)])
        if err not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.ep.register(conn.fd, select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP)


def gen_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cluster gen")
    parser.add_argument("--target", action="append", required=True, help="HOST:PORT, in tracker order")
    parser.add_argument("--source", required=True, help="local address to connect from")
    parser.add_argument("--offset", type=int, required=True, help="global index of the first session")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args(argv)
    raise_nofile()
    targets = []
    for value in args.target:
        host, _, port = value.rpartition(":")
        targets.append((host, int(port)))
    engine = BoundEngine(targets, frames.FNAME, args.source)
    try:
        started = time.monotonic()
        deadline = started + args.timeout
        i, end = args.offset, args.offset + args.count
        while i < end:
            # One register() per group: every session of it publishes its name.
            stop = min(end, (i // GROUP + 1) * GROUP)
            left = max(1.0, deadline - time.monotonic())
            register(engine, stop - i, HOST_PREFIX, group_name(i), False, args.concurrency, left, offset=i)
            i = stop
        emit("ready", sessions=engine.ready, failed=engine.failed, failures=engine.failures,
             seconds=time.monotonic() - started, at=time.monotonic(), examples=engine.examples)
        engine.watch_stdin()
        while not engine.stdin_closed:
            while engine.stdin_lines:
                line = engine.stdin_lines.pop(0)
                if line == "status":
                    emit("status", sessions=engine.ready, failed=engine.failed, failures=engine.failures,
                         pings=engine.pings)
                elif line == "close":
                    t = time.monotonic()
                    n = engine.close_all()
                    emit("closed", closed=n, at=t, seconds=time.monotonic() - t, pings=engine.pings,
                         lost_before=engine.failed, failures=engine.failures)
                    return
            engine.poll(0.2)
    except Exception as e:
        emit("error", message=f"{type(e).__name__}: {e}")
        raise


# -- the orchestrator ---------------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Probe:
    """
    A fresh registered client of one tracker, asking it what it sees.
    """

    def __init__(self, port: int, name: str) -> None:
        self.client = frames.BlockingClient("127.0.0.1", port, name, timeout=60.0)

    def counts(self) -> dict[str, int]:
        """
        Live sources per cluster file name (a ``search``).
        """
        reply = self.client.request("search", pattern=NAME_PREFIX, limit=10_000)
        if reply.get("status") != "success":
            raise BenchError(f"search failed: {reply}")
        found: dict[str, int] = {}
        for entry in reply.get("files", []):
            found[entry["fname"]] = found.get(entry["fname"], 0) + int(entry.get("sources") or 0)
        return found

    def fetch(self, fname: str, limit: int = 10_000) -> list[dict[str, Any]]:
        reply = self.client.request("fetch", fname=fname, limit=limit)
        if reply.get("status") != "success":
            raise BenchError(f"fetch {fname} failed: {reply}")
        return reply.get("peer_list", [])

    def close(self) -> None:
        self.client.close()


def postgres_pids() -> list[int]:
    """
    The PostgreSQL server's processes on this machine (read from /proc,
    for their CPU time only).
    """
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in ("postgres", "postmaster"):
                        pids.append(int(entry))
            except OSError:
                pass
    return pids


def _cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def _generators(kids: Children, ports: list[int], sessions: int, concurrency: int, tag: str) -> list[Process]:
    gens = []
    count = -(-sessions // PER_GEN)
    per = -(-sessions // count)
    for g in range(count):
        offset = g * per
        n = min(per, sessions - offset)
        args = ["gen", "--source", f"127.0.0.{2 + g}", "--offset", str(offset), "--count", str(n),
                "--concurrency", str(concurrency)]
        for port in ports:
            args += ["--target", f"127.0.0.1:{port}"]
        gens.append(kids.helper(f"{tag}-gen{g}", "cluster", args))
    return gens


def _register(gens: list[Process], sessions: int, timeout: float) -> dict[str, Any]:
    """
    Wait for every generator's ``ready``.  @return: sessions registered,
    failures, and the span from the generators' start to the last ready.
    """
    t0 = time.monotonic()
    readies = [g.event("ready", timeout=timeout) for g in gens]
    ok = sum(r["sessions"] for r in readies)
    failures: dict[str, int] = {}
    for r in readies:
        for k, v in r["failures"].items():
            failures[k] = failures.get(k, 0) + v
    last = max(r["at"] for r in readies)
    # Each generator's clock starts when its process does: take the longest.
    span = max(r["seconds"] for r in readies)
    return {"ok": ok, "failed": sessions - ok, "failures": failures, "seconds": span, "last_ready": last,
            "examples": [e for r in readies for e in r.get("examples", [])][:3], "waited": time.monotonic() - t0}


def _close(gens: list[Process]) -> float:
    """
    Tell every generator to close all its sessions.  @return: the earliest
    close instant (monotonic, shared by the processes of this machine).
    """
    for g in gens:
        g.send("close")
    closed = [g.event("closed", timeout=60) for g in gens]
    return min(c["at"] for c in closed)


def baseline(workdir: Path, trackers: int, sessions: int, concurrency: int) -> dict[str, Any]:
    """
    The same generators against as many Twisted echo servers.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    with Children(workdir) as kids:
        servers = [kids.helper(f"echo{i}", "echo", []) for i in range(trackers)]
        ports = [s.event("ready")["port"] for s in servers]
        rss0 = [rss_bytes(s.pid) for s in servers]
        gens = _generators(kids, ports, sessions, concurrency, "echo")
        reg = _register(gens, sessions, timeout=600)
        if reg["failed"]:
            raise BenchError(f"echo baseline: {reg['failed']} sessions failed: {reg['failures']} {reg['examples']}")
        rss1 = [rss_bytes(s.pid) for s in servers]
        per = [(b - a) / 1024 / (sessions / trackers) for a, b in zip(rss0, rss1)]
        return {"rate": reg["ok"] / reg["seconds"], "rss_kib": statistics.median(per)}


def cluster_run(workdir: Path, url: str, trackers: int, sessions: int, heartbeat: float, lease: float,
                pool: int, concurrency: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with Children(workdir) as kids:
        ts = [kids.tracker(f"tracker{i}", url, ["--tracker-id", f"t{i}", "--heartbeat", f"{heartbeat:g}",
                                                "--lease", f"{lease:g}", "--db-pool-size", str(pool)])
              for i in range(trackers)]
        ports = [t.port for t in ts]
        time.sleep(0.5)
        rss0 = [rss_bytes(t.pid) for t in ts]
        log(f"cluster: {trackers} trackers up (ports {ports}); registering {sessions:,} sessions")
        pg = postgres_pids()
        cpu0 = [_cpu([t.pid]) for t in ts] + [_cpu(pg)]
        wall0 = time.monotonic()
        gens = _generators(kids, ports, sessions, concurrency, "cl")
        reg = _register(gens, sessions, timeout=1800)
        wall = time.monotonic() - wall0
        cpu1 = [_cpu([t.pid]) for t in ts] + [_cpu(pg)]
        out["reg_cpu"] = [100 * (b - a) / wall for a, b in zip(cpu0, cpu1)]
        out["registered"] = reg["ok"]
        out["reg_failed"] = reg["failed"]
        out["reg_failures"] = reg["failures"]
        out["reg_rate"] = reg["ok"] / reg["seconds"]
        out["reg_seconds"] = reg["seconds"]
        log(f"cluster: {reg['ok']:,} registered in {reg['seconds']:.1f} s ({out['reg_rate']:,.0f}/s), "
            f"{reg['failed']} failed {reg['failures']} {reg['examples']}; CPU % trackers "
            f"{[round(c) for c in out['reg_cpu'][:-1]]}, PostgreSQL {out['reg_cpu'][-1]:.0f}")
        if reg["ok"] == 0:
            raise BenchError(f"no session registered: {reg['failures']} {reg['examples']}")
        # Which sessions are live: every one whose generator reported it ready.
        # (A failed one never published, so it is in no answer either way.)
        expected = reg["ok"]

        # -- visibility: every tracker counts every live source ------------------------
        probes = [Probe(p, f"cluster-probe-{i}") for i, p in enumerate(ports)]
        seen_full: list[float | None] = [None] * trackers
        last_counts = [0] * trackers
        deadline = time.monotonic() + max(60.0, 4 * lease)
        while time.monotonic() < deadline and None in seen_full:
            for i, probe in enumerate(probes):
                if seen_full[i] is None:
                    n = sum(probe.counts().values())
                    last_counts[i] = n
                    if n >= expected:
                        seen_full[i] = time.monotonic()
            if None in seen_full:
                time.sleep(0.1)
        out["visible_counts"] = last_counts
        out["visible_after"] = max((t - reg["last_ready"]) for t in seen_full) if None not in seen_full else None
        log(f"cluster: sources counted per tracker {last_counts}, full visibility "
            f"{'never' if out['visible_after'] is None else format(out['visible_after'], '.2f') + ' s'} after the last registration")
        # fetch of every group on every tracker: exactly the live sources.
        fetched = []
        wrong = []
        for i, probe in enumerate(probes):
            total = 0
            bad = 0
            for name in sorted(probe.counts()):
                peers = probe.fetch(name)
                hosts = [p["hostname"] for p in peers]
                total += len(hosts)
                k = int(name[len(NAME_PREFIX):-4])
                for h in hosts:
                    j = int(h[len(HOST_PREFIX) + 1:])
                    if j // GROUP != k:
                        bad += 1
                if len(set(hosts)) != len(hosts):
                    bad += len(hosts) - len(set(hosts))
            fetched.append(total)
            wrong.append(bad)
        out["fetched"] = fetched
        out["fetch_wrong"] = wrong
        log(f"cluster: fetch sources per tracker {fetched} (expected {expected:,} each), wrong {wrong}")
        for probe in probes:
            probe.close()

        # -- memory, with heartbeats running ------------------------------------------
        time.sleep(heartbeat * 1.5)
        rss1 = [rss_bytes(t.pid) for t in ts]
        held = expected / trackers
        out["rss_kib_held"] = [(b - a) / 1024 / held for a, b in zip(rss0, rss1)]
        out["rss_kib_all"] = [(b - a) / 1024 / expected for a, b in zip(rss0, rss1)]
        out["rss_mib"] = [b / 2**20 for b in rss1]
        for g in gens:
            g.send("status")
        statuses = [g.event("status", timeout=60) for g in gens]
        out["pings"] = sum(s["pings"] for s in statuses)
        out["lost_while_held"] = sum(s["failed"] for s in statuses) - reg["failed"]

        # -- the storm -----------------------------------------------------------------
        probes = [Probe(p, f"cluster-storm-probe-{i}") for i, p in enumerate(ports)]
        before = [sum(p.counts().values()) for p in probes]
        out["before_storm"] = before
        log(f"cluster: storm: {expected:,} sessions disconnect at once; sources before {before}")
        t_close = _close(gens)
        lease_deadline = t_close + lease
        zero_at: list[float | None] = [None] * trackers
        at_deadline: list[int | None] = [None] * trackers
        errors: list[str] = []

        names = sorted({group_name(i) for i in range(0, sessions, GROUP)})

        def watch(i: int) -> None:
            # One thread per tracker: a slow answer of one does not delay
            # the others' polls.  Polls are cheap (is any source left?
            # fetch with limit 1) so as not to load the trackers; the count
            # is taken once, by the first poll after the lease deadline.
            probe = probes[i]
            try:
                while True:
                    if time.monotonic() >= lease_deadline:
                        at_deadline[i] = sum(len(probe.fetch(name)) for name in names)
                        if at_deadline[i] == 0 and zero_at[i] is None:
                            zero_at[i] = time.monotonic()
                        return
                    if not any(probe.fetch(name, 1) for name in names):
                        zero_at[i] = time.monotonic()
                        # Nothing can come back: no session reconnects.
                        at_deadline[i] = 0
                        return
                    time.sleep(0.05)
            except Exception as e:  # reported below
                errors.append(f"tracker {i}: {type(e).__name__}: {e}")

        threads = [threading.Thread(target=watch, args=(i,), daemon=True) for i in range(trackers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(lease + 120)
        if errors:
            raise BenchError("storm: " + "; ".join(errors))
        if any(t.is_alive() for t in threads):
            raise BenchError("storm: a tracker did not answer its searches")
        for i in range(trackers):
            if at_deadline[i] is None:
                # Empty before the deadline: nothing can come back.
                at_deadline[i] = 0 if zero_at[i] is not None else None
        out["empty_after"] = [None if z is None else z - t_close for z in zero_at]
        out["ghosts"] = at_deadline
        log(f"cluster: storm: empty after {out['empty_after']} s, ghosts at the lease deadline "
            f"({lease:g} s) {at_deadline}")
        for probe in probes:
            try:
                probe.close()
            except OSError:
                pass
        out["alive"] = [t.proc.alive() for t in ts]
    return out


def postgres_database() -> Any:
    from bench.scenarios import postgres_database as make

    return make(log)


# -- reporting ---------------------------------------------------------------------------------


def _med(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def _fmt(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def _spread(values: list[float], digits: int = 0) -> str:
    m, lo, hi = _med(values)
    if len(values) == 1:
        return _fmt(m, digits)
    return f"{_fmt(m, digits)} [{_fmt(lo, digits)}-{_fmt(hi, digits)}]"


def table(runs: list[dict[str, Any]], bases: list[dict[str, Any]], opts: argparse.Namespace) -> str:
    T, N = opts.trackers, opts.sessions
    rows = []
    reg = [r["reg_rate"] for r in runs]
    base_reg = [b["rate"] for b in bases]
    rows.append(("hello+publish registrations/s (all trackers)", _spread(reg),
                 f"{T} Twisted echo servers: {_spread(base_reg)}",
                 f"{statistics.median(reg) / statistics.median(base_reg):.2f}x", "", ""))
    failed = [r["reg_failed"] for r in runs]
    rows.append(("sessions that failed to register", _spread(failed), "", "", "0", "yes" if max(failed) == 0 else "**no**"))
    rss_held = [statistics.median(r["rss_kib_held"]) for r in runs]
    base_rss = [b["rss_kib"] for b in bases]
    per_tracker = ", ".join(_fmt(v, 2) for v in runs[0]["rss_kib_held"])
    rows.append((f"tracker RSS growth per session it holds, KiB (median tracker; run 1 per tracker: {per_tracker})",
                 _spread(rss_held, 2), f"echo server per connection: {_spread(base_rss, 2)}",
                 f"{statistics.median(rss_held) / statistics.median(base_rss):.2f}x", "", ""))
    rss_all = [statistics.median(r["rss_kib_all"]) for r in runs]
    rows.append(("the same per session in the cluster (each view holds all), KiB", _spread(rss_all, 2), "", "", "", ""))
    vis_ok = all(r["visible_after"] is not None for r in runs)
    if vis_ok:
        rows.append(("time to full visibility after the last registration, s",
                     _spread([r["visible_after"] for r in runs], 2), "", "", "", ""))
    fetched_ok = all(min(r["fetched"]) == r["registered"] and max(r["fetched"]) == r["registered"]
                     and max(r["fetch_wrong"]) == 0 for r in runs)
    rows.append(("sources each tracker's `fetch` lists (all groups), of live sources",
                 "; ".join(f"{min(r['fetched']):,}-{max(r['fetched']):,} of {r['registered']:,}" for r in runs),
                 "", "", "all, on every tracker", "yes" if fetched_ok and vis_ok else "**no**"))
    empty = [max(e for e in r["empty_after"] if e is not None) if None not in r["empty_after"] else float("nan")
             for r in runs]
    rows.append(("storm: time until every tracker counts 0 sources, s", _spread(empty, 2), "", "",
                 f"<= one lease ({opts.lease:g} s)",
                 "yes" if all(e == e and e <= opts.lease for e in empty) else "**no**"))
    ghosts = [sum(r["ghosts"]) for r in runs]
    rows.append((f"storm: ghost records at the lease deadline ({opts.lease:g} s), all trackers", _spread(ghosts),
                 "", "", "0", "yes" if max(ghosts) == 0 else "**no**"))
    lines = [
        "| figure | measured | baseline (same run) | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def notes(runs: list[dict[str, Any]], opts: argparse.Namespace) -> list[str]:
    out = []
    for n, r in enumerate(runs, 1):
        out.append(
            f"run {n}: {r['registered']:,} sessions registered in {r['reg_seconds']:.1f} s (CPU meanwhile, % of one "
            f"core: trackers {', '.join(format(c, '.0f') for c in r['reg_cpu'][:-1])}, PostgreSQL server "
            f"{r['reg_cpu'][-1]:.0f}); sources counted by "
            f"`search` per tracker {r['visible_counts']}; tracker RSS after {', '.join(_fmt(v) for v in r['rss_mib'])} MiB; "
            f"{r['pings']:,} heartbeat pings answered; {r['lost_while_held']} sessions lost while held; storm: "
            f"each tracker empty after {', '.join('never' if e is None else format(e, '.2f') for e in r['empty_after'])} s, "
            f"ghosts at the deadline {r['ghosts']}; trackers alive at the end {r['alive']}"
        )
    return out


def write_docs(block: str) -> None:
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise BenchError(f"{DOCS} has no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOCS.write_text(head + BEGIN + "\n" + block + "\n" + END + tail)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["gen"]:
        gen_main(argv[1:])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 trackers x 1,000 sessions, heartbeat 1 s")
    parser.add_argument("--trackers", type=int)
    parser.add_argument("--sessions", type=int)
    parser.add_argument("--heartbeat", type=float, help="tracker --heartbeat (default 5 s, quick 1 s)")
    parser.add_argument("--lease", type=float, help="tracker --lease (default 3 x heartbeat)")
    parser.add_argument("--pool-size", type=int, default=3, help="tracker --db-pool-size")
    parser.add_argument("--concurrency", type=int, default=256, help="registrations in flight per generator")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true", help="skip the echo-server baseline")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--out", help="also write the Markdown here")
    parser.add_argument("--write-docs", action="store_true", help="replace the cluster results in docs/benchmarks.md")
    opts = parser.parse_args(argv)
    opts.trackers = opts.trackers or (2 if opts.quick else 5)
    opts.sessions = opts.sessions or (1_000 if opts.quick else 90_000)
    opts.heartbeat = opts.heartbeat or (1.0 if opts.quick else 5.0)
    opts.lease = opts.lease or 3 * opts.heartbeat
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="p2p-cluster-"))
    started = time.time()
    load = os.getloadavg()
    runs, bases = [], []
    try:
        for n in range(opts.runs):
            if not opts.no_baseline:
                log(f"cluster: run {n + 1}: baseline, {opts.trackers} echo servers")
                bases.append(baseline(workdir / f"echo{n}", opts.trackers, opts.sessions, opts.concurrency))
                log(f"cluster: baseline {bases[-1]}")
            with postgres_database() as url:
                (workdir / f"run{n}").mkdir(parents=True, exist_ok=True)
                runs.append(cluster_run(workdir / f"run{n}", url, opts.trackers, opts.sessions, opts.heartbeat,
                                        opts.lease, opts.pool_size, opts.concurrency))
    except BenchError as e:
        log(f"cluster: failed: {e}")
        if opts.keep:
            log(f"cluster: work directory kept: {workdir}")
        return 1
    finally:
        if not opts.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if not bases:
        bases = [{"rate": float("nan"), "rss_kib": float("nan")}]
    command = "python -m bench.cluster " + " ".join(shlex.quote(a) for a in argv if a != "--write-docs")
    when = datetime.fromtimestamp(started, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    block = "\n".join([
        f"Command: `{command.strip()}`  ",
        f"{opts.trackers} trackers on one PostgreSQL database, {opts.sessions:,} sessions from "
        f"{-(-opts.sessions // PER_GEN)} generator processes, heartbeat {opts.heartbeat:g} s, lease "
        f"{opts.lease:g} s, pool {opts.pool_size} per tracker; {opts.runs} run(s) (median [min-max]); run {when}, "
        f"{time.time() - started:.0f} s in total; load average at start {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        table(runs, bases, opts),
        "",
        *[f"- {n}" for n in notes(runs, opts)],
    ])
    print(block)
    if opts.out:
        Path(opts.out).write_text(block + "\n")
    if opts.write_docs:
        write_docs(block)
    if opts.keep:
        log(f"cluster: work directory kept: {workdir}")
    bad = any(max(r["ghosts"]) for r in runs) or any(r["reg_failed"] for r in runs)
    return 0 if not bad else 2


if __name__ == "__main__":
    sys.exit(main())
