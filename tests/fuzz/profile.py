"""
How much the fuzzers run, and a count of what they ran.

The normal suite runs each fuzzer C{P2P_FUZZ_EXAMPLES} times (default
L{DEFAULT_EXAMPLES}), derandomized so a run is repeatable and a failure
reproduces; C{python -m tests.fuzz.long_run} runs them with fresh random
seeds and far more examples (see ``docs/hardening.md``).
"""

from __future__ import annotations

import os
from hypothesis import HealthCheck, settings

#: Examples per fuzzer in the normal suite.
DEFAULT_EXAMPLES = 600

#: Health checks that only say "this strategy makes big or slow cases",
#: which these fuzzers do on purpose.
SUPPRESSED = [
    HealthCheck.too_slow,
    HealthCheck.data_too_large,
    HealthCheck.large_base_example,
    HealthCheck.filter_too_much,
]


def examples() -> int:
    """
    The number of examples per fuzzer: C{$P2P_FUZZ_EXAMPLES} or the default.
    """
    raw = os.environ.get("P2P_FUZZ_EXAMPLES", "")
    if not raw:
        return DEFAULT_EXAMPLES
    try:
        n = int(raw)
    except ValueError:
        raise ValueError(f"P2P_FUZZ_EXAMPLES must be an integer, not {raw!r}")
    if n < 1:
        raise ValueError("P2P_FUZZ_EXAMPLES must be at least 1")
    return n


def suite_settings(weight: float = 1.0) -> settings:
    """
    Settings for one fuzzer of the normal suite: repeatable, no example
    database (nothing written outside temp dirs), no deadline (a slow CI
    machine is not a bug).  C{weight} scales the example count for
    fuzzers whose cases are much cheaper or dearer than the others.
    """
    return settings(
        max_examples=max(1, int(examples() * weight)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=SUPPRESSED,
        print_blob=True,
    )
