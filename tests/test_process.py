"""
How the tracker and the peer leave their process (L{twistedp2p.process}),
on a L{MemoryReactor}: nothing really stops or exits.
"""

import io
import sys

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import process


class ExitNonzeroTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.real = io.StringIO()
        self.patch(sys, "__stderr__", self.real)
        self.patch(sys, "stderr", io.StringIO())
        self.reactor = MemoryReactor()

    def test_running_reactor_stops_then_exits_1(self) -> None:
        """
        The line goes to the process's real stderr (not twistd's log), the
        reactor stops, and status 1 is set for after the shutdown.
        """
        self.reactor.running = True
        process.exit_nonzero(self.reactor, "p2ppeer: cannot listen on tcp:1: in use")
        self.assertEqual(self.real.getvalue(), "p2ppeer: cannot listen on tcp:1: in use\n")
        self.assertEqual(sys.stderr.getvalue(), "")
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.reactor.triggers, {"after": {"shutdown": [(process.hard_exit, (1,), {})]}})

    def test_waits_for_the_reactor(self) -> None:
        """
        twistd starts services before the reactor runs: the stop (and the
        exit) wait for it to run.
        """
        process.exit_nonzero(self.reactor, "p2ptracker: cannot start: the index is down")
        self.assertEqual(self.real.getvalue(), "p2ptracker: cannot start: the index is down\n")
        self.assertFalse(self.reactor.hasStopped)
        self.assertEqual(self.reactor.triggers, {})
        self.reactor.run()
        self.assertTrue(self.reactor.hasStopped)
        self.assertEqual(self.reactor.triggers, {"after": {"shutdown": [(process.hard_exit, (1,), {})]}})


class StopReactorTests(SynchronousTestCase):
    def test_stops_a_running_reactor(self) -> None:
        reactor = MemoryReactor()
        reactor.running = True
        process.stop_reactor(reactor)
        self.assertTrue(reactor.hasStopped)

    def test_leaves_a_stopped_reactor_alone(self) -> None:
        """
        (Stopping a reactor that does not run raises ReactorNotRunning.)
        """
        reactor = MemoryReactor()
        reactor.stop = lambda: self.fail("stopped a reactor that was not running")
        process.stop_reactor(reactor)
