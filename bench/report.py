"""
The results table: Markdown for the terminal, ``bench/results/latest.md``
and (with ``--write-docs``) the results section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path
from typing import Sequence

from bench.stats import Row, Skipped, Spread

RESULTS_START = "<!-- bench-results -->"
RESULTS_END = "<!-- /bench-results -->"


def _num(x: float, unit: str) -> str:
    if x != x:
        return "n/a"
    if unit in ("/s", "MiB/s") or abs(x) >= 100:
        return f"{x:,.0f}"
    if unit == "ms":
        return f"{x:.3f}" if x < 10 else f"{x:.1f}"
    if x == int(x):
        return f"{int(x)}"
    return f"{x:.2f}"


def spread_text(s: Spread | None, unit: str) -> str:
    if s is None or not s.valid:
        return "n/a"
    if s.runs == 1 or s.low == s.high:
        return _num(s.median, unit)
    return f"{_num(s.median, unit)} [{_num(s.low, unit)}–{_num(s.high, unit)}]"


def _cpu(s: Spread | None) -> str:
    if s is None or not s.valid:
        return ""
    return f"{s.median:.0f}%"


def _met(row: Row) -> str:
    if row.met is None:
        return ""
    return "yes" if row.met else "**no**"


def table(rows: Sequence[Row]) -> str:
    head = (
        "| Scenario | Figure | Unit | Measured: median [min–max] | Baseline | Baseline: median [min–max] "
        "| Ratio | Target | Met | Load-gen CPU | SUT CPU |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        ratio = "" if r.ratio is None or r.ratio != r.ratio else f"{r.ratio:.2f}x"
        lines.append(
            f"| {r.scenario} | {r.figure} | {r.unit} | {spread_text(r.value, r.unit)} | {r.baseline_name} | "
            f"{spread_text(r.baseline, r.unit)} | {ratio} | {r.target} | {_met(r)} | {_cpu(r.gen_cpu)} | {_cpu(r.sut_cpu)} |"
        )
    return head + "\n".join(lines) + "\n"


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import twisted

        tw = twisted.__version__
    except ImportError:
        tw = "?"
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} cores ({model}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Twisted {tw}; load average at start {load}"
    )


def render(rows: Sequence[Row], skipped: Sequence[Skipped], command: str, mode: str, runs: int, started: float,
           host: str, elapsed: float, general: Sequence[str] = ()) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started))
    out = [
        f"Command: `{command}`  ",
        f"Mode: **{mode}**, {runs} runs per figure (median [min–max]); run {when}, {elapsed:.0f} s in total.  ",
        f"Machine: {host}",
        "",
        table(rows),
    ]
    notes = [(r.scenario, r.figure, n) for r in rows for n in r.notes]
    if notes or general:
        out.append("Notes:\n")
        for note in general:
            out.append(f"- {note}")
        for scenario, figure, note in notes:
            out.append(f"- {scenario}, {figure}: {note}")
        out.append("")
    if skipped:
        out.append("Skipped:\n")
        for s in skipped:
            out.append(f"- {s.scenario}: {s.reason}")
        out.append("")
    return "\n".join(out)


def write_latest(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# twistedp2p benchmark: latest results\n\n" + text)
    return path


def write_docs(text: str, root: Path) -> Path:
    """
    Replace the results section of docs/benchmarks.md (between the
    markers), keeping the rest of the document.
    """
    path = root / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else f"# Benchmarks\n\n{RESULTS_START}\n{RESULTS_END}\n"
    if RESULTS_START not in doc or RESULTS_END not in doc:
        doc = doc.rstrip("\n") + f"\n\n## Results\n\n{RESULTS_START}\n{RESULTS_END}\n"
    pattern = re.compile(re.escape(RESULTS_START) + r".*?" + re.escape(RESULTS_END), re.S)
    doc = pattern.sub(lambda _: f"{RESULTS_START}\n{text.rstrip()}\n{RESULTS_END}", doc, count=1)
    path.write_text(doc)
    return path
