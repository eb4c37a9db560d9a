"""
Soak: a tracker and two peers under continuous load for a long time; do
their memory and open descriptors stay flat?

``python -m bench.soak`` (default: 10 minutes, 10,000 sessions) starts, as
real processes in a fresh work directory:

  - a tracker (``twistd p2ptracker``, SQLite file, heartbeat every 5 s);
  - C{--sessions} registered sessions held by load generators
    (``python -m bench.loadgen hold``: hello, publish, pongs), 5,000 per
    generator process;
  - C{--clients} churn clients (native sessions, L{bench.frames}) that
    each, in a loop, publish a file of their own, ``fetch`` an anchor file
    (exactly one source expected), ``search`` it, and unpublish their file
    again; every 50 rounds a client closes its session and registers a new
    one;
  - two real peers (``twistd p2ppeer``): bob fetches alice's file
    (C{--file-size}, sha256-verified by the peer) with ``--force``, over and
    over (one transfer every C{--transfer-pace} seconds at most).

Every C{--interval} seconds it samples the RSS (``VmRSS`` of
``/proc/PID/status``) and the open descriptors (``/proc/PID/fd``) of the
tracker and both peers.  At the end it stops the churn, waits for the
descriptors to settle, and prints a Markdown table: per process the first
and last samples and the least-squares slope (KiB/min, fds/min), then the
operation and error totals.  ``--write-docs`` puts it into the "Soak"
section of docs/benchmarks.md with the command; ``--json PATH`` writes the
figures for a test.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import frames
from bench.peers import Peer
from bench.procs import BenchError, Children, Tracker, raise_nofile

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- soak-results -->", "<!-- /soak-results -->"
ANCHOR = "soak-anchor.bin"
HELD = "soak-held.bin"
PER_GENERATOR = 5000


def log(text: str, prog: str = "soak") -> None:
    sys.stderr.write(f"{prog}: {text}\n")
    sys.stderr.flush()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise BenchError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope(points: list[tuple[float, float]]) -> float:
    """
    Least-squares slope of (x, y) points (0 for fewer than two x values).
    """
    n = len(points)
    if n < 2:
        return 0.0
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ops: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.examples: list[str] = []

    def op(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + n

    def error(self, kind: str, detail: str) -> None:
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1
            if len(self.examples) < 10:
                self.examples.append(f"{kind}: {detail[:300]}")


def churn(index: int, port: int, stop: threading.Event, counters: Counters, pace: float) -> None:
    """
    One churn client: publish, fetch, search, unpublish, and a new session
    every 50 rounds, until C{stop}.  C{pace}: seconds per round at least.
    """
    generation = 0
    while not stop.is_set():
        generation += 1
        hostname = f"churn-{index}-{generation}"
        try:
            client = frames.BlockingClient("127.0.0.1", port, hostname, p2p_port=30000 + index)
        except Exception as e:
            counters.error("hello", f"{hostname}: {e}")
            stop.wait(1.0)
            continue
        counters.op("sessions")
        try:
            for round_ in range(50):
                if stop.is_set():
                    break
                started = time.monotonic()
                fname = f"churn-{index}-{generation}-{round_}.bin"
                answer = client.request_raw(lambda i: frames.publish(fname, i))
                if answer.get("status") != "created":
                    counters.error("publish", json.dumps(answer))
                counters.op("publish")
                answer = client.request("fetch", fname=ANCHOR)
                if answer.get("status") != "success" or len(answer.get("peer_list", [])) != 1:
                    counters.error("fetch", json.dumps(answer)[:300])
                counters.op("fetch")
                answer = client.request("search", pattern="soak-anchor")
                if answer.get("status") != "success":
                    counters.error("search", json.dumps(answer)[:300])
                counters.op("search")
                answer = client.request("unpublish", fname=fname)
                if answer.get("status") != "success":
                    counters.error("unpublish", json.dumps(answer))
                counters.op("unpublish")
                left = pace - (time.monotonic() - started)
                if left > 0:
                    stop.wait(left)
        except Exception as e:
            counters.error("session", f"{hostname}: {type(e).__name__}: {e}")
        finally:
            client.close()


def pong_forever(client: frames.BlockingClient) -> None:
    """
    Answer the tracker's pings on an otherwise idle session until it closes.
    """
    try:
        while True:
            client.read_answer()
    except (OSError, ConnectionError):
        pass


def transfers(bob: Peer, stop: threading.Event, counters: Counters, size: int, pace: float) -> None:
    while not stop.is_set():
        started = time.monotonic()
        try:
            m = bob.command(
                "fetch soak.bin --from alice --force",
                r"^fetched soak\.bin from alice: (\d+) bytes, sha256 verified",
                timeout=120,
            )
            if int(m.group(1)) != size:
                counters.error("transfer", m.group(0))
            counters.op("transfers")
            counters.op("transfer_bytes", size)
        except BenchError as e:
            counters.error("transfer", str(e))
        left = pace - (time.monotonic() - started)
        if left > 0:
            stop.wait(left)


def settle(pids: dict[str, int], want: dict[str, int], timeout: float) -> dict[str, int]:
    """
    Wait (bounded) for each process's descriptors to come back to C{want}.
    A poll: closing a socket signals nothing we could await from outside.
    """
    deadline = time.monotonic() + timeout
    while True:
        now = {name: open_fds(pid) for name, pid in pids.items()}
        if all(now[n] <= want[n] for n in pids) or time.monotonic() > deadline:
            return now
        time.sleep(0.2)


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    raise_nofile()
    counters = Counters()
    with Children(workdir) as kids:
        tracker = kids.tracker("tracker", str(workdir / "tracker.sqlite3"), ["--heartbeat", str(args.heartbeat)])
        log(f"tracker on port {tracker.port}; registering {args.sessions:,} sessions")
        generators = []
        left, n = args.sessions, 0
        while left > 0:
            count = min(PER_GENERATOR, left)
            generators.append(
                kids.helper(
                    f"hold-{n}", "loadgen",
                    ["hold", "--target", f"127.0.0.1:{tracker.port}", "--sessions", str(count), "--fname", HELD,
                     "--prefix", f"held{n}", "--timeout", "600", "--concurrency", "256"],
                )
            )
            left -= count
            n += 1
        for g in generators:
            ready = g.event("ready", timeout=660)
            if ready["failed"]:
                raise BenchError(f"{ready['failed']} sessions failed to register: {ready['failures']}")
        anchor = frames.BlockingClient("127.0.0.1", tracker.port, "soak-anchor", p2p_port=29999)
        answer = anchor.request_raw(lambda i: frames.publish(ANCHOR, i))
        if answer.get("status") != "created":
            raise BenchError(f"anchor publish: {answer}")
        # The anchor sends nothing more: a thread reads its connection so
        # that the tracker's heartbeat pings are answered.
        threading.Thread(target=pong_forever, args=(anchor,), daemon=True).start()

        alice = Peer(kids, "alice", tracker.port, workdir / "alice")
        bob = Peer(kids, "bob", tracker.port, workdir / "bob")
        with open(workdir / "alice" / "soak.bin", "wb") as f:
            f.write(os.urandom(args.file_size))
        alice.publish("soak.bin", "soak.bin")
        pids = {"tracker": tracker.pid, "alice": alice.pid, "bob": bob.pid}
        start_fds = {name: open_fds(pid) for name, pid in pids.items()}
        log(f"{args.sessions:,} sessions held; churn for {args.duration:g} s, samples every {args.interval:g} s")

        stop = threading.Event()
        threads = [
            threading.Thread(target=churn, args=(i, tracker.port, stop, counters, args.pace), daemon=True)
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(target=transfers, args=(bob, stop, counters, args.file_size, args.transfer_pace), daemon=True))
        t0 = time.monotonic()
        for t in threads:
            t.start()
        samples: dict[str, list[tuple[float, int, int]]] = {name: [] for name in pids}
        end = t0 + args.duration
        next_sample = t0
        while True:
            now = time.monotonic()
            if now >= next_sample:
                for name, pid in pids.items():
                    samples[name].append((now - t0, rss_kib(pid), open_fds(pid)))
                next_sample += args.interval
            if now >= end:
                break
            for name, pid in pids.items():
                if not os.path.exists(f"/proc/{pid}"):
                    raise BenchError(f"{name} died during the soak")
            time.sleep(max(0.0, min(next_sample, end) - time.monotonic()))
        stop.set()
        for t in threads:
            t.join(180)
        churned = time.monotonic() - t0
        settled = settle(pids, start_fds, 30.0)
        for g in generators:
            g.send("status")
            status = g.event("status", timeout=60)
            if status["failed"]:
                counters.error("held sessions lost", json.dumps(status["failures"]))
        anchor.close()
        result: dict[str, Any] = {
            "sessions": args.sessions,
            "clients": args.clients,
            "duration": churned,
            "interval": args.interval,
            "ops": dict(counters.ops),
            "errors": dict(counters.errors),
            "error_examples": counters.examples,
            "processes": {},
        }
        for name in pids:
            points = samples[name]
            result["processes"][name] = {
                "samples": len(points),
                "rss_first_kib": points[0][1],
                "rss_last_kib": points[-1][1],
                "rss_max_kib": max(p[1] for p in points),
                "rss_slope_kib_min": slope([(t / 60, r) for t, r, _ in points]),
                # A warm-up (caches, allocator arenas) shows in the first
                # half; a leak keeps its slope in the second.
                "rss_slope_2nd_half_kib_min": slope([(t / 60, r) for t, r, _ in points if t >= churned / 2]),
                "series": points,
                "fds_start": start_fds[name],
                "fds_first": points[0][2],
                "fds_last": points[-1][2],
                "fds_slope_min": slope([(t / 60, f) for t, _, f in points]),
                "fds_after": settled[name],
            }
        return result


def markdown(result: dict[str, Any], command: str) -> str:
    ops = result["ops"]
    errors = result["errors"]
    lines = [
        f"Command: `{command}`  ",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {result['sessions']:,} held sessions, "
        f"{result['clients']} churn clients, {result['duration']:.0f} s of churn, samples every "
        f"{result['interval']:g} s; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        "| process | samples | RSS first (MiB) | RSS last (MiB) | RSS max (MiB) | RSS slope (KiB/min) "
        "| RSS slope, 2nd half (KiB/min) | fds at start | fds first/last sample | fds slope (/min) | fds after the churn |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, p in result["processes"].items():
        lines.append(
            f"| {name} | {p['samples']} | {p['rss_first_kib'] / 1024:.1f} | {p['rss_last_kib'] / 1024:.1f} "
            f"| {p['rss_max_kib'] / 1024:.1f} | {p['rss_slope_kib_min']:+.1f} | {p['rss_slope_2nd_half_kib_min']:+.1f} "
            f"| {p['fds_start']} "
            f"| {p['fds_first']}/{p['fds_last']} | {p['fds_slope_min']:+.2f} | {p['fds_after']} |"
        )
    total_ops = sum(v for k, v in ops.items() if k != "transfer_bytes")
    lines += [
        "",
        f"Operations: {total_ops:,} in total: "
        + ", ".join(f"{k} {v:,}" for k, v in sorted(ops.items()) if k != "transfer_bytes")
        + f" ({ops.get('transfer_bytes', 0) / 2**20:,.0f} MiB transferred, each sha256-verified).  ",
        f"Errors: {sum(errors.values())}" + (" (" + ", ".join(f"{k} {v}" for k, v in errors.items()) + ")" if errors else "") + ".",
    ]
    return "\n".join(lines) + "\n"


def replace_docs_section(text: str, begin: str, end: str, heading: str) -> None:
    """
    Put C{text} between the markers C{begin} and C{end} of
    docs/benchmarks.md, or at its end under C{## heading} if they are not
    there yet.
    """
    doc = DOCS.read_text()
    block = f"{begin}\n{text}{end}"
    if begin in doc and end in doc:
        doc = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip("\n") + f"\n\n## {heading}\n\n" + block + "\n"
    DOCS.write_text(doc)


def write_docs(text: str) -> None:
    replace_docs_section(text, BEGIN, END, "Soak")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of churn (default 600)")
    parser.add_argument("--sessions", type=int, default=10000, help="held sessions (default 10,000)")
    parser.add_argument("--clients", type=int, default=4, help="churn clients (default 4)")
    parser.add_argument("--pace", type=float, default=0.02, help="seconds per churn round and client, at least (default 0.02)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    parser.add_argument("--heartbeat", type=float, default=5.0, help="the tracker's --heartbeat (default 5)")
    parser.add_argument("--file-size", type=int, default=8 * 2**20, help="bytes per transfer (default 8 MiB)")
    parser.add_argument("--transfer-pace", type=float, default=2.0, help="seconds per transfer, at least (default 2)")
    parser.add_argument("--json", help="also write the figures as JSON to this path")
    parser.add_argument("--write-docs", action="store_true", help="replace the Soak results in docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    result = run_and_report("soak", args, argv, run, markdown, write_docs)
    if result["errors"]:
        log("errors: " + "; ".join(result["error_examples"]))


def run_and_report(
    prog: str,
    args: argparse.Namespace,
    argv: list[str] | None,
    run: Any,
    markdown: Any,
    write_docs: Any,
) -> dict[str, Any]:
    """
    What the standalone benchmarks (C{bench.soak}, C{bench.slowread}) do
    around their measurement: C{run(args, workdir)} in a fresh work
    directory (removed unless C{--keep}), the Markdown table on stdout with
    the command that produced it, and the C{--json} and C{--write-docs}
    outputs.

    @return: what C{run} returned.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"p2p-{prog}-"))
    given = argv if argv is not None else sys.argv[1:]
    command = f"python -m bench.{prog}" + "".join(" " + shlex.quote(a) for a in given)
    try:
        result = run(args, workdir)
    finally:
        if args.keep:
            log(f"work directory kept: {workdir}", prog)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = markdown(result, command)
    sys.stdout.write(text)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if args.write_docs:
        write_docs(text)
        log(f"wrote the results into {DOCS}", prog)
    return result


if __name__ == "__main__":
    main()
