"""
Multi-source download benchmark (``docs/swarm.md``), with real processes:
a ``twistd p2ptracker`` and ``twistd p2ppeer`` peers driven through their
shells.

Two figures, each against a baseline measured in the same run:

  - single source: one uncapped source to one downloader (pieces verified,
    written in place, whole-file SHA-256 checked, file moved into place)
    against a raw loopback ``socket.sendfile`` copy of the same file into a
    file (``bench.rawnet``);
  - aggregation: four sources each capped at 25 MiB/s (``--upload-rate``)
    against one such capped source; the ratio is the four-source rate over
    four times the one-source rate (aim: >= 0.95).

``run(quick)`` returns the rows (plain dicts with the fields of
L{bench.stats.Row}, values as floats: medians, with ``runs``, ``low`` and
``high``); ``python -m bench.swarm [--quick] [--runs N] [--size BYTES]``
prints them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from bench.peers import Peer
from bench.procs import BenchError, Children

MiB = 1024 * 1024
GiB = 1024 * MiB
#: The per-source cap of the aggregation figure.
CAP = 25 * MiB
SOURCES = 4


def make_file(path: Path, size: int) -> None:
    """
    C{size} bytes that neither compress nor dedupe, written quickly.
    """
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            head = hashlib.sha256(i.to_bytes(8, "big")).digest()
            chunk = head + block[32:]
            f.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
            i += 1


def _spread(values: list[float]) -> dict[str, float]:
    return {"value": statistics.median(values), "low": min(values), "high": max(values), "runs": len(values)}


def fetch_seconds(downloader: Peer, fname: str, extra: str = "", timeout: float = 1200.0) -> tuple[float, str]:
    """
    Fetch C{fname} on C{downloader}; @return: (seconds from the command to
    the ``fetched`` line, that line).  Then unpublish and delete it, so the
    downloader never serves the next run.
    """
    t0 = downloader.proc.send(f"fetch {fname}{extra}")
    t1, match = downloader.proc.expect(rf"^fetched {re.escape(fname)} |^error: ", timeout=timeout)
    line = downloader.proc.seen[-1]
    if line.startswith("error: "):
        raise BenchError(f"{downloader.name}: fetch failed: {line}")
    downloader.unpublish(fname)
    (downloader.repo / fname).unlink()
    return t1 - t0, line


def raw_copy_seconds(kids: Children, path: Path, out: Path, runs: int) -> list[float]:
    server = kids.helper("sendfile", "rawnet", ["serve-file", str(path)])
    port = server.event("ready")["port"]
    seconds = []
    for i in range(runs):
        dest = out / f"raw{i}.bin"
        r = kids.helper(f"recv{i}", "rawnet", ["recv", str(port), str(dest)])
        result = r.event("result", timeout=1200)
        r.stop()
        kids.forget(r)
        if result["bytes"] != path.stat().st_size:
            raise BenchError(f"the raw copy got {result['bytes']} bytes")
        seconds.append(result["seconds"])
        dest.unlink()
    return seconds


def run(
    quick: bool = False,
    runs: int | None = None,
    size: int | None = None,
    workdir: Path | None = None,
    log: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """
    Run both figures.  @return: the rows.
    """
    log = log or (lambda text: print(text, file=sys.stderr, flush=True))
    runs = runs or (1 if quick else 3)
    size = size or (128 * MiB if quick else GiB)
    agg_size = min(size, 64 * MiB if quick else 256 * MiB)
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="p2pswarm-")) if own else workdir
    fname, agg_name = "swarm-bench.bin", "swarm-agg.bin"
    rows: list[dict[str, Any]] = []
    try:
        src = work / "source"
        src.mkdir(parents=True, exist_ok=True)
        out = work / "out"
        out.mkdir(exist_ok=True)
        log(f"swarm: {size / MiB:,.0f} MiB single source, {agg_size / MiB:,.0f} MiB aggregation, {runs} run(s)")
        make_file(src / fname, size)
        make_file(src / agg_name, agg_size)
        with Children(work) as kids:
            tracker = kids.tracker("tracker", "memory")
            source = Peer(kids, "source", tracker.port, src)
            source.publish(fname, fname, timeout=1200)
            downloader = Peer(kids, "downloader", tracker.port, work / "downloader")

            # -- one uncapped source against a raw sendfile copy ----------------
            peer_s, lines = [], []
            for i in range(runs):
                seconds, line = fetch_seconds(downloader, fname)
                peer_s.append(seconds)
                lines.append(line)
                log(f"swarm:   run {i + 1}: one source {size / MiB / seconds:,.0f} MiB/s")
            raw_s = raw_copy_seconds(kids, src / fname, out, runs)
            for s in raw_s:
                log(f"swarm:   raw sendfile copy {size / MiB / s:,.0f} MiB/s")
            peer_rate = _spread([size / MiB / s for s in peer_s])
            raw_rate = _spread([size / MiB / s for s in raw_s])
            rows.append(
                {
                    "scenario": "swarm",
                    "figure": f"one source, {size / MiB:,.0f} MiB, verified and in place",
                    "unit": "MiB/s",
                    **peer_rate,
                    "baseline_name": "raw loopback socket.sendfile -> file",
                    "baseline": raw_rate["value"],
                    "ratio": peer_rate["value"] / raw_rate["value"],
                    "target": "",
                    "met": None,
                    "notes": [],
                }
            )
            source.proc.stop()
            kids.forget(source)

            # -- four capped sources against one ---------------------------------
            capped = []
            for n in range(SOURCES):
                repo = work / f"capped{n + 1}"
                repo.mkdir(exist_ok=True)
                os.link(src / agg_name, repo / agg_name)
                peer = Peer(kids, f"capped{n + 1}", tracker.port, repo, ["--upload-rate", str(CAP)])
                peer.publish(agg_name, agg_name, timeout=1200)
                capped.append(peer)
            one_s, four_s = [], []
            used = set()
            for i in range(runs):
                seconds, _ = fetch_seconds(downloader, agg_name, " --from capped1")
                one_s.append(seconds)
                seconds, line = fetch_seconds(downloader, agg_name)
                four_s.append(seconds)
                found = re.search(r"from (\d+) sources \(([^)]*)\)", line)
                used.add(int(found.group(1)) if found else 1)
                log(
                    f"swarm:   run {i + 1}: one capped source {agg_size / MiB / one_s[-1]:,.1f} MiB/s,"
                    f" four {agg_size / MiB / four_s[-1]:,.1f} MiB/s"
                )
            one_rate = _spread([agg_size / MiB / s for s in one_s])
            four_rate = _spread([agg_size / MiB / s for s in four_s])
            aggregation = four_rate["value"] / (SOURCES * one_rate["value"])
            rows.append(
                {
                    "scenario": "swarm",
                    "figure": f"four sources capped at {CAP // MiB} MiB/s, {agg_size / MiB:,.0f} MiB",
                    "unit": "MiB/s",
                    **four_rate,
                    "baseline_name": f"{SOURCES} x one capped source",
                    "baseline": SOURCES * one_rate["value"],
                    "ratio": aggregation,
                    "target": ">= 0.95",
                    "met": aggregation >= 0.95,
                    "notes": [
                        f"one capped source: {one_rate['value']:,.1f} MiB/s (cap {CAP / MiB:g} MiB/s)",
                        f"sources used per fetch: {sorted(used)}",
                    ],
                }
            )
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.swarm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="128 MiB and 64 MiB files, one run")
    parser.add_argument("--runs", type=int, help="runs per figure (default 3; quick 1)")
    parser.add_argument("--size", type=int, help="single-source file size in bytes (default 1 GiB; quick 128 MiB)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    try:
        rows = run(args.quick, args.runs, args.size)
    except BenchError as e:
        print(f"swarm: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("| Figure | Value | Baseline | Ratio | Target |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        spread = f"{r['value']:,.1f} [{r['low']:,.1f}-{r['high']:,.1f}] {r['unit']}"
        met = "" if r["met"] is None else (" (met)" if r["met"] else " (not met)")
        print(
            f"| {r['figure']} | {spread} | {r['baseline_name']}: {r['baseline']:,.1f} {r['unit']}"
            f" | {r['ratio']:.2f} | {r['target']}{met} |"
        )
        for note in r["notes"]:
            print(f"|   {note} | | | | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
