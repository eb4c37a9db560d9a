"""
The long fuzz run: every fuzzer of the suite with fresh random seeds and
far more examples, counted.

    .venv/bin/python -m tests.fuzz.long_run --cases 100000 --jobs 2

C{--cases} is the total number of generated cases (frame streams, session
scripts, request streams, shell inputs), shared among the fuzzers by
weight; C{--seed} makes a run repeatable; C{--only NAME} runs one fuzzer.
It prints, per fuzzer, the cases run, what they fed the code (frames,
answers, bytes, lines) and the time, then the totals.  On a failure it
prints hypothesis's minimal failing example (and how to reproduce it) and
exits 1.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from hypothesis import given, seed, settings

from tests.fuzz import shell_cases, tracker_cases, upload_cases
from tests.fuzz.profile import SUPPRESSED

# name -> (weight, strategy, runner(case) -> units).  Built lazily in each
# worker process (the upload fuzzer needs its fixture on disk).
WEIGHTS = {
    "tracker-streams": 3,
    "tracker-sessions": 3,
    "upload": 2,
    "tracker-shell": 1,
    "peer-shell": 1,
}


def _fuzzer(name: str, scratch: Path) -> tuple[Any, Callable[[Any], dict[str, int]]]:
    from twistedp2p.peer.shell import PeerShell
    from twistedp2p.tracker.shell import TrackerShell

    if name == "tracker-streams":
        return tracker_cases.stream_ops, lambda ops: tracker_cases.run_ops(ops, connections=1, bystander=True)
    if name == "tracker-sessions":
        return tracker_cases.session_ops, lambda ops: tracker_cases.run_ops(ops, connections=2)
    if name == "upload":
        from tests.fuzz.upload_world import UploadFixture

        fixture = UploadFixture(scratch / "upload")
        return upload_cases.upload_ops(), lambda ops: upload_cases.run_ops(fixture, ops)
    if name == "tracker-shell":
        return shell_cases.shell_inputs(shell_cases.TRACKER_COMMANDS, TrackerShell.MAX_LENGTH), shell_cases.run_tracker_shell
    if name == "peer-shell":
        return shell_cases.shell_inputs(shell_cases.PEER_COMMANDS, PeerShell.MAX_LENGTH), shell_cases.run_peer_shell
    raise KeyError(name)


def run_chunk(name: str, cases: int, chunk_seed: int) -> dict[str, Any]:
    """
    Run C{cases} examples of one fuzzer (in a worker process).

    @return: C{name}, C{cases} run, C{units} fed, C{seconds}, and
        C{failure} (the report text) or None.
    """
    from twisted.logger import globalLogBeginner

    # Nothing to show: each case checks its own log.  (Without this the
    # log beginner would buffer every event of the run.)
    globalLogBeginner.beginLoggingTo([], discardBuffer=True, redirectStandardIO=False)
    scratch = Path(tempfile.mkdtemp(prefix="twistedp2p-fuzz-long-"))
    units: Counter[str] = Counter()
    count = [0]
    started = time.monotonic()
    failure = None
    try:
        strategy, runner = _fuzzer(name, scratch)

        @seed(chunk_seed)
        @settings(
            max_examples=cases,
            deadline=None,
            database=None,
            derandomize=False,
            suppress_health_check=SUPPRESSED,
            print_blob=True,
        )
        @given(strategy)
        def fuzz(case: Any) -> None:
            count[0] += 1
            units.update(runner(case))

        fuzz()
    except Exception:
        failure = traceback.format_exc()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "name": name,
        "cases": count[0],
        "units": dict(units),
        "seconds": time.monotonic() - started,
        "failure": failure,
        "seed": chunk_seed,
    }


def plan(total: int, only: list[str], chunk: int) -> list[tuple[str, int]]:
    """
    Share C{total} cases among the fuzzers by weight, in chunks of at most
    C{chunk} (one seed each).
    """
    names = only or list(WEIGHTS)
    weight = sum(WEIGHTS[n] for n in names)
    work = []
    for i, name in enumerate(names):
        share = total * WEIGHTS[name] // weight + (1 if i < total * WEIGHTS[name] % weight else 0)
        share = max(share, 1)
        while share > 0:
            n = min(chunk, share)
            work.append((name, n))
            share -= n
    return work


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.long_run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="total generated cases (default 100000)")
    parser.add_argument("--seed", type=int, default=None, help="base seed (default: random, printed)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    parser.add_argument("--only", action="append", default=[], choices=sorted(WEIGHTS), help="run only this fuzzer")
    parser.add_argument("--chunk", type=int, default=2500, help="cases per worker task (one seed each)")
    args = parser.parse_args(argv)
    base_seed = args.seed if args.seed is not None else random.randrange(2**32)
    work = plan(args.cases, args.only, args.chunk)
    print(f"long fuzz run: {args.cases} cases, seed {base_seed}, {args.jobs} jobs, {len(work)} tasks", flush=True)
    per: dict[str, dict[str, Any]] = {}
    failures = []
    started = time.monotonic()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = [pool.submit(run_chunk, name, n, base_seed + i) for i, (name, n) in enumerate(work)]
        for future in as_completed(futures):
            r = future.result()
            row = per.setdefault(r["name"], {"cases": 0, "units": Counter(), "seconds": 0.0})
            row["cases"] += r["cases"]
            row["units"].update(r["units"])
            row["seconds"] += r["seconds"]
            status = "FAILED" if r["failure"] else "ok"
            print(f"  {r['name']:<17} {r['cases']:>6} cases  seed {r['seed']}  {r['seconds']:6.1f} s  {status}", flush=True)
            if r["failure"]:
                failures.append(r)
    wall = time.monotonic() - started
    print()
    # frames: request frames the ports received; answers: answers checked;
    # lines: shell input lines; MB in: shell input; MB served: file bytes
    # the peer port sent and the model checked.
    print(
        f"{'fuzzer':<17} {'cases':>8} {'frames':>9} {'answers':>9} {'lines':>7}"
        f" {'MB in':>7} {'MB served':>9} {'cpu s':>7}"
    )
    totals: Counter[str] = Counter()
    total_cases = 0
    for name in WEIGHTS:
        if name not in per:
            continue
        row = per[name]
        u = row["units"]
        totals.update(u)
        total_cases += row["cases"]
        print(
            f"{name:<17} {row['cases']:>8} {u.get('frames', 0):>9} {u.get('answers', 0):>9}"
            f" {u.get('lines', 0):>7} {u.get('bytes', 0) / 1e6:>7.1f} {u.get('served_bytes', 0) / 1e6:>9.1f}"
            f" {row['seconds']:>7.1f}"
        )
    print(
        f"{'total':<17} {total_cases:>8} {totals.get('frames', 0):>9} {totals.get('answers', 0):>9}"
        f" {totals.get('lines', 0):>7} {totals.get('bytes', 0) / 1e6:>7.1f}"
        f" {totals.get('served_bytes', 0) / 1e6:>9.1f}"
    )
    print(f"wall time {wall:.0f} s; {len(failures)} failing tasks")
    for r in failures:
        print(f"\n=== {r['name']} (seed {r['seed']}) failed:\n{r['failure']}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
