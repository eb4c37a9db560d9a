"""
The short variant of the soak (``python -m bench.soak``, docs/benchmarks.md):
40 s of publish/unpublish/fetch/search churn and real transfers against a
tracker holding 500 sessions, sampled every 2 s.  No timing thresholds: it
checks that nothing failed, that every process is back to the descriptors
it had before the churn, and that memory grew by much less than what went
through the processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchrun import run_bench

pytestmark = pytest.mark.timeout(240)

FILE_SIZE = 4 * 2**20


def test_short_soak(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    run = run_bench(
        tmp_path,
        "bench.soak",
        *("--duration", "40", "--sessions", "500", "--interval", "2", "--heartbeat", "2"),
        *("--transfer-pace", "1", "--file-size", str(FILE_SIZE), "--json", str(out)),
        timeout=220,
    )
    result = json.loads(out.read_text())
    assert result["errors"] == {}, result["error_examples"]
    ops = result["ops"]
    for kind in ("publish", "fetch", "search", "unpublish", "sessions", "transfers"):
        assert ops.get(kind, 0) > 0, ops
    # Session churn happened (every 50 rounds a client registers again).
    assert ops["sessions"] > result["clients"], ops
    moved = ops["transfer_bytes"]
    for name, p in result["processes"].items():
        assert p["samples"] >= 10, (name, p)
        # Descriptors: back where they were once the churn stopped.
        assert p["fds_after"] <= p["fds_start"], (name, p)
        # Memory: bounded, far below what went through (generous: 64 MiB).
        grown = (p["rss_max_kib"] - p["rss_first_kib"]) * 1024
        assert grown < 64 * 2**20, (name, p)
    assert moved >= 10 * FILE_SIZE, ops
    assert "| tracker |" in run.stdout and "Errors: 0." in run.stdout
