"""
Fuzz the tracker's and the peer's line shells (see
L{tests.fuzz.shell_cases}): every line gets exactly one answer.
"""

from __future__ import annotations

from hypothesis import given
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.peer.shell import PeerShell
from twistedp2p.tracker.shell import TrackerShell

from tests.fuzz import shell_cases as C
from tests.fuzz.profile import suite_settings


class TrackerShellFuzz(SynchronousTestCase):
    @suite_settings()
    @given(C.shell_inputs(C.TRACKER_COMMANDS, TrackerShell.MAX_LENGTH))
    def test_lines(self, case):
        C.run_tracker_shell(case)


class PeerShellFuzz(SynchronousTestCase):
    @suite_settings()
    @given(C.shell_inputs(C.PEER_COMMANDS, PeerShell.MAX_LENGTH))
    def test_lines(self, case):
        C.run_peer_shell(case)

    def tearDown(self):
        # The fake node's deliberate unexpected failures (names "boom...")
        # are logged by the shell, as they must be.
        self.flushLoggedErrors(RuntimeError)
