"""
Smoke test of the cluster benchmark (``python -m bench.cluster --quick``):
two real trackers on a throwaway PostgreSQL database hold 1,000 sessions,
every tracker's fetch lists every one, and after all disconnect at once no
ghost record is left at the lease deadline.  No timing thresholds: the
figures are for docs/benchmarks.md, not for CI.

Skipped without a PostgreSQL server (see tests/pgutil.py), unless
P2P_REQUIRE_POSTGRES=1: then it runs, and fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.benchrun import run_bench
from tests.pgutil import postgres_skip_reason

SKIP = postgres_skip_reason()


def _row(text: str, start: str) -> list[str]:
    for line in text.splitlines():
        if line.startswith(start):
            return [cell.strip() for cell in line.strip().strip("|").split("|")]
    raise AssertionError(f"no row starting with {start!r} in:\n{text}")


@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_quick_cluster_run_leaves_no_ghost(tmp_path: Path) -> None:
    out = tmp_path / "cluster.md"
    run_bench(tmp_path, "bench.cluster", "--quick", "--out", str(out), timeout=240)
    text = out.read_text()
    assert "| figure | measured |" in text
    # Every tracker's fetch listed every live source ...
    assert _row(text, "| sources each tracker's `fetch` lists")[-1] == "yes", text
    # ... and the storm left no ghost at the lease deadline.
    ghosts = _row(text, "| storm: ghost records at the lease deadline")
    assert ghosts[1] == "0" and ghosts[-1] == "yes", text
    assert _row(text, "| sessions that failed to register")[1] == "0", text
