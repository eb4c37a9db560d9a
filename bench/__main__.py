"""
``python -m bench [SCENARIO ...] [options]``: run the benchmark and print
the results table (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.procs import ROOT, raise_nofile
from bench.scenarios import SCENARIOS, Context


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the twistedp2p tracker and peers against baselines run on the same machine.",
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO",
                        help=f"any of {', '.join(SCENARIOS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="shrink every scenario (tens of seconds in total; CI smoke)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure (default 3; the table shows median [min-max])")
    parser.add_argument("--store", choices=["sqlite", "memory", "postgres", "all"], default="sqlite",
                        help="tracker store (default sqlite, a file); 'all' runs lookups on sqlite, postgres and 2 trackers on postgres")
    parser.add_argument("--trackers", type=int, default=1, help="lookups: trackers sharing the store (needs postgres)")
    parser.add_argument("--sessions", type=int, help="sessions: sessions held (default 19,000; quick 1,000)")
    parser.add_argument("--size", type=int, help="transfer: file size in bytes (default 1 GiB; quick 64 MiB)")
    parser.add_argument("--gen-procs", type=int, default=1, help="lookups: load-generator processes (default 1)")
    parser.add_argument("--gen", choices=["c", "python"], default="c",
                        help="lookups and ttfb: the C clients (bench/fastgen.c, bench/firstbyte.c, compiled with cc; "
                             "default) or the Python ones")
    parser.add_argument("--out", type=Path, help="write the Markdown results here (default bench/results/latest.md)")
    parser.add_argument("--write-docs", action="store_true", help="also write the results into docs/benchmarks.md")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs) for inspection")
    args = parser.parse_args(argv)
    for name in args.scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.trackers > 1 and args.store not in ("postgres", "all"):
        parser.error("--trackers > 1 needs --store postgres (trackers share only a PostgreSQL index)")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    raise_nofile()
    # SIGTERM unwinds like Ctrl-C: every scenario stops its processes.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    names = args.scenarios or list(SCENARIOS)
    started = time.time()
    host = report.machine()
    workdir = Path(tempfile.mkdtemp(prefix="p2pbench-"))
    log = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    ctx = Context(workdir=workdir, quick=args.quick, runs=args.runs, store=args.store, trackers=args.trackers,
                  sessions=args.sessions, size=args.size, gen_procs=args.gen_procs, gen=args.gen, log=log)
    log(f"bench: work directory {workdir}")
    try:
        for name in names:
            t = time.monotonic()
            SCENARIOS[name](ctx)
            log(f"bench: {name} took {time.monotonic() - t:.1f} s")
    finally:
        if args.keep:
            log(f"bench: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    command = "./p2p bench " + " ".join(shlex.quote(a) for a in argv) if argv else "./p2p bench"
    text = report.render(ctx.rows, ctx.skipped, command.strip(), "quick" if args.quick else "full", args.runs,
                         started, host, time.time() - started, ctx.notes)
    print(text)
    path = report.write_latest(text, args.out or ROOT / "bench" / "results" / "latest.md")
    log(f"bench: wrote {path}")
    if args.write_docs:
        log(f"bench: wrote {report.write_docs(text, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
