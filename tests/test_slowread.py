"""
The quick slow-reader measurement (``python -m bench.slowread --quick``,
docs/benchmarks.md): a real source peer serves a 64 MiB file to a client
that reads it a few MiB at a time with pauses.  The source's RSS must stay
within a generous bound of its idle RSS (32 MiB, half the file): it holds a
bounded amount of file data per transfer, not the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.timeout(180)


def test_slow_reader_source_memory_bounded(tmp_path: Path) -> None:
    out = tmp_path / "slowread.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.slowread", "--quick", "--seconds", "4", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["verified"], result
    assert result["size"] == 64 * 2**20
    # The read was slow: several samples were taken while it went on.
    assert result["samples"] >= 4, result
    assert result["delta_kib"] * 1024 < 32 * 2**20, result
