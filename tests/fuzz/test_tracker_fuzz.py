"""
Fuzz the tracker port (see L{tests.fuzz.tracker_cases}): generated frame
streams and session scripts over StringTransports and a task.Clock.
"""

from __future__ import annotations

from hypothesis import given
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.errors import IndexUnavailable

from tests.fuzz import tracker_cases as C
from tests.fuzz.profile import suite_settings


class TrackerStreamFuzz(SynchronousTestCase):
    @suite_settings()
    @given(C.stream_ops)
    def test_streams(self, ops):
        """
        Garbage, mutated and valid frames in random splits, on one
        connection next to a registered bystander.
        """
        C.run_ops(ops, connections=1, bystander=True)


class TrackerSessionFuzz(SynchronousTestCase):
    @suite_settings()
    @given(C.session_ops)
    def test_sessions(self, ops):
        """
        Several connections interleaved, with heartbeats, timeouts, held
        and reordered writes and store outages.
        """
        C.run_ops(ops, connections=2)

    def tearDown(self):
        # The store outages the fuzzer injects are logged as failures by
        # the registry (the world's log rule allows exactly those).
        self.flushLoggedErrors(IndexUnavailable)
