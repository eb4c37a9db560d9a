"""
Fixtures shared by the end-to-end tests (real twistd processes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.harness import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """
    A L{Cluster} in the test's directory, every process it started stopped
    afterwards.  A module with other tracker options, or its own cluster class
    (test_multi_tracker), defines its own.
    """
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()
