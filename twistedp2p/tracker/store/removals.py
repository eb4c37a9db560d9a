"""
What the stores that write behind their in-memory view share about
removals: a session or publication being removed is hidden from the view
at once, and stays hidden until its write is settled, even if a reload
or resync of the view brought it back meanwhile.
"""

from __future__ import annotations

from typing import Any, Callable


def settle_removal(result: Any, pending: dict[Any, int], key: Any, hide: Callable[..., Any], *args: Any) -> Any:
    """
    A removal was written (or failed: the view still hides the record): it
    no longer holds additions back.  Hide the record again with
    C{hide(*args)}, in case a reload brought it back meanwhile.

    @param pending: removals in flight by key (a count per key).
    @return: C{result}, unchanged (use with C{addBoth}).
    """
    left = pending[key] - 1
    if left:
        pending[key] = left
    else:
        del pending[key]
    hide(*args)
    return result
