"""
Numbers: percentiles of samples and the median/min/max of repeated runs.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Iterable, Sequence


def percentile(samples: Sequence[float], q: float) -> float:
    """
    The C{q}-th percentile (0..100) of C{samples}, nearest rank; NaN for
    no samples.
    """
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, int(round(q / 100.0 * len(ordered) + 0.5 - 1e-9)))
    return ordered[min(rank, len(ordered)) - 1]


def merge_histograms(hists: Iterable[dict]) -> dict[int, int]:
    """
    Add up sparse latency histograms (microseconds -> count).
    """
    total: dict[int, int] = {}
    for h in hists:
        for k, v in h.items():
            total[int(k)] = total.get(int(k), 0) + v
    return total


def hist_percentile(hist: dict[int, int], q: float) -> float:
    """
    The C{q}-th percentile of a histogram, in the histogram's unit; NaN
    when it is empty.
    """
    n = sum(hist.values())
    if not n:
        return float("nan")
    rank = max(1, int(round(q / 100.0 * n + 0.5 - 1e-9)))
    seen = 0
    for k in sorted(hist):
        seen += hist[k]
        if seen >= rank:
            return float(k)
    return float(max(hist))


@dataclass(frozen=True)
class Spread:
    """
    The median of several runs with its min and max.
    """

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Spread":
        values = [v for v in values if v == v]  # drop NaN
        if not values:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    @property
    def valid(self) -> bool:
        return self.runs > 0


def ratio(a: Spread, b: Spread) -> float:
    if not (a.valid and b.valid) or b.median == 0:
        return float("nan")
    return a.median / b.median


@dataclass
class Row:
    """
    One line of the results table.

    C{higher_is_better} says which way the ratio and the target read.
    C{target} is a human text (C{">= 1.0x http.server+curl"}), C{met} is
    None when there is no target or it could not be judged.
    """

    scenario: str
    figure: str
    unit: str
    value: Spread
    baseline_name: str = ""
    baseline: Spread | None = None
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    gen_cpu: Spread | None = None
    sut_cpu: Spread | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Skipped:
    """
    A scenario (or one variant) that could not run, and why.
    """

    scenario: str
    reason: str
