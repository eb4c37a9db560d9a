"""
Smoke test of the benchmark (``python -m bench``): every scenario in its
smallest form completes and prints a results table.  No thresholds: the
figures themselves are for docs/benchmarks.md, not for CI.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.benchrun import run_bench


def test_quick_benchmark_produces_a_table(tmp_path: Path) -> None:
    out = tmp_path / "latest.md"
    proc = run_bench(
        tmp_path,
        "bench",
        "--quick",
        "--runs",
        "1",
        "--sessions",
        "200",
        "--size",
        str(8 * 1024 * 1024),
        "--out",
        str(out),
        timeout=150,
    )
    assert "| Scenario | Figure |" in proc.stdout
    text = out.read_text()
    assert "| Scenario | Figure |" in text
    # Scenarios that need only the tracker always produce rows.
    for scenario in ("| lookups (sqlite) | fetch round trips/s", "| sessions (200 held", "| backlog (1,000 at once) |"):
        assert scenario in text, proc.stdout[-3000:] + proc.stderr[-3000:]
    # Lookups while sessions are held: with the default heartbeat and the short one.
    for figure in ("fetch latency p99 while held, default --heartbeat 30 ", "fetch latency p99 while held, --heartbeat 1 "):
        assert figure in text, proc.stdout[-3000:] + proc.stderr[-3000:]
    # TTFB against its three baselines.  nginx comes from .ci/debian-packages
    # in CI; elsewhere the benchmark installs it when it can (root), and
    # otherwise says why that baseline was skipped.
    assert "| ttfb (4 KiB, fetch -> first byte) | time to first byte p50 | ms |" in text
    for baseline in ("raw connect + first byte", "blocking stand-in tracker + source (floor)"):
        assert baseline in text, proc.stdout[-3000:] + proc.stderr[-3000:]
    if os.environ.get("CI") or "ttfb: nginx + curl baseline" not in text:
        assert "nginx + curl, static file" in text, proc.stdout[-3000:] + proc.stderr[-3000:]
