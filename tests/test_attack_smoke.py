"""
Smoke test of C{bench.attack}'s catalogue and impostor attacks (issue 15
items 3 and 4, docs/hardening.md) in their smallest form, against real
processes: what they check holds, whatever the figures.  No thresholds.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.benchrun import run_bench


def test_catalogue_attack_pages_under_the_frame_limit(tmp_path: Path) -> None:
    # 101 hosts: one host name past the cap of 100 per entry.
    proc = run_bench(
        tmp_path, "bench.attack", "--mode", "catalogue", "--hosts", "101", "--shared", "3", "--solo", "0",
        "--pagers", "1", "--seconds", "1", timeout=120,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["walks"] >= 1 and r["walks_complete"] == r["walks"], r
    assert r["frames_over_limit"] == 0 and r["failures"] == [], r
    assert r["sources_per_walk"] == r["hostnames_counted_per_walk"] == 303, r
    assert r["peer_search_counts"] == [3] and r["peer_session_kept"], r
    assert r["seed_list_entries"] == 3, r


def test_impostor_attack_is_refused(tmp_path: Path) -> None:
    proc = run_bench(
        tmp_path, "bench.attack", "--mode", "impostors", "--attackers", "1", "--seconds", "1", timeout=120,
    )
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    assert r["hellos"] > 0 and r["impostors_accepted"] == 0, r
    assert set(r["outcomes"]) <= {
        "signed: key_mismatch", "signed-other-port: key_mismatch", "unsigned: duplicate_session",
        "seed: duplicate_session",
    }, r
    assert r["owner_checks_wrong"] == 0 and r["owner_session_kept"], r
