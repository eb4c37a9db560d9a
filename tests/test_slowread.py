"""
The quick slow-reader measurement (``python -m bench.slowread --quick``,
docs/benchmarks.md): a real source peer serves a 64 MiB file to a client
that reads it a few MiB at a time with pauses.  The source's RSS must stay
within a generous bound of its idle RSS (32 MiB, half the file): it holds a
bounded amount of file data per transfer, not the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchrun import run_bench

pytestmark = pytest.mark.timeout(180)


def test_slow_reader_source_memory_bounded(tmp_path: Path) -> None:
    out = tmp_path / "slowread.json"
    run_bench(tmp_path, "bench.slowread", "--quick", "--seconds", "4", "--json", str(out), timeout=170)
    result = json.loads(out.read_text())
    assert result["verified"], result
    assert result["size"] == 64 * 2**20
    # The read was slow: several samples were taken while it went on.
    assert result["samples"] >= 4, result
    assert result["delta_kib"] * 1024 < 32 * 2**20, result
