"""
Running a benchmark module (``python -m bench...``) from a test: in the
repository root, its work directories under the test's own tmp_path, and
a failure that shows the end of what it printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_bench(tmp_path: Path, module: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """
    Run C{python -m MODULE ARGS...} to completion and require exit status 0.

    @return: the completed process (C{stdout} and C{stderr} as text).
    """
    env = dict(os.environ, TMPDIR=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc
