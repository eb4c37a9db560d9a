"""
Bugs the fuzzers found, each pinned down as a plain scenario.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.tracker.registry import Registry

from tests.fuzz.invariants import check_registry_invariants, result_now
from tests.fuzz.tracker_world import OrderedStore
from tests.tracker.helpers import FakeLink


class ZombieSessionTests(SynchronousTestCase):
    """
    A session that ends while its own C{add_session} is still being
    written must not stay in the store, even when the store completes the
    removal before the add (a pool of PostgreSQL connections may).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.store = OrderedStore()
        self.registry = Registry(self.store, self.clock, "t", heartbeat=30.0, misses=2, ping_timeout=5.0)

    def test_replaced_while_adding(self) -> None:
        self.store.hold = True
        first = self.registry.hello(FakeLink(), "h", "10.0.0.1", 1, None)
        # A second seed hello for the same host and port replaces the first
        # session while the first add is still held.
        second = self.registry.hello(FakeLink(), "h", "10.0.0.1", 1, None)
        # The removal of the first session completes before its add.
        self.store.release_newest()
        self.store.release()
        self.failureResultOf(first)
        session = self.successResultOf(second)
        self.assertEqual([s.session_id for s in result_now(self.store.sessions())], [session.session_id])
        check_registry_invariants(self.registry, self.store)

    def test_disconnected_while_adding(self) -> None:
        self.store.hold = True
        d = self.registry.hello(FakeLink(), "h", "10.0.0.1", 1, 1)
        [live] = self.registry.peers()
        self.registry.disconnected(live.session.session_id)
        self.store.release_newest()
        self.store.release()
        self.failureResultOf(d)
        self.assertEqual(result_now(self.store.sessions()), [])
        check_registry_invariants(self.registry, self.store)


class LongLineTestsMixin:
    """
    A shell line longer than the limit gets one error and is dropped up to
    its end; the lines after it still run, and its tail never runs as a
    command of its own.  C{make_shell()} returns (shell, transport); a
    marker command's answer is C{self.answer(name)}.
    """

    def output(self, transport) -> list[str]:
        return transport.value().decode("utf-8").splitlines()

    def test_next_line_in_same_chunk_runs(self) -> None:
        shell, transport = self.make_shell()
        limit = shell.MAX_LENGTH
        shell.dataReceived(b"x" * (limit + 10) + b"\n" + self.marker("m1") + b"\n")
        [error, answer] = self.output(transport)
        self.assertTrue(error.startswith("error: "), error)
        self.assertEqual(answer, self.answer("m1"))

    def test_tail_of_long_line_is_not_a_command(self) -> None:
        shell, transport = self.make_shell()
        limit = shell.MAX_LENGTH
        line = b"x" * (2 * limit + 5) + b" " + self.marker("m0")
        for i in range(0, len(line), 1000):
            shell.dataReceived(line[i : i + 1000])
        shell.dataReceived(b"\n" + self.marker("m1") + b"\n")
        [error, answer] = self.output(transport)
        self.assertTrue(error.startswith("error: "), error)
        self.assertEqual(answer, self.answer("m1"))

    def test_tail_quit_does_not_quit(self) -> None:
        """
        A long line cut by the pipe just before a trailing C{quit} does not
        quit.
        """
        shell, transport = self.make_shell()
        shell.dataReceived(b"x" * (shell.MAX_LENGTH + 1))
        shell.dataReceived(b"quit\n" + self.marker("m1") + b"\n")
        [error, answer] = self.output(transport)
        self.assertTrue(error.startswith("error: "), error)
        self.assertEqual(answer, self.answer("m1"))
        self.assertEqual(self.quits, [])

    def test_line_at_limit_runs(self) -> None:
        shell, transport = self.make_shell()
        limit = shell.MAX_LENGTH
        filler = b" " * (limit - len(self.marker("m0")))
        shell.dataReceived(self.marker("m0") + filler + b"\n")
        self.assertEqual(self.output(transport), [self.answer("m0")])


class TrackerShellLongLineTests(LongLineTestsMixin, SynchronousTestCase):
    def make_shell(self):
        from twisted.internet.testing import StringTransport

        from twistedp2p.tracker.shell import TrackerShell
        from twistedp2p.tracker.store.memory import MemoryStore

        self.quits = []
        shell = TrackerShell(Registry(MemoryStore(), Clock(), "t"), lambda: self.quits.append(1))
        transport = StringTransport()
        shell.makeConnection(transport)
        return shell, transport

    def marker(self, name: str) -> bytes:
        return b"discover " + name.encode()

    def answer(self, name: str) -> str:
        return f"{name}: no published files (or not online)"


class PeerShellLongLineTests(LongLineTestsMixin, SynchronousTestCase):
    def make_shell(self):
        from twisted.internet.testing import StringTransport

        from twistedp2p.peer.shell import PeerShell

        from tests.fuzz.shell_cases import FakeNode

        self.quits = []
        shell = PeerShell(FakeNode(), on_exit=lambda: self.quits.append(1))
        transport = StringTransport()
        shell.makeConnection(transport)
        transport.clear()
        return shell, transport

    def marker(self, name: str) -> bytes:
        return b"unpublish ~mark-" + name.encode() + b"~"

    def answer(self, name: str) -> str:
        return f"unpublished ~mark-{name}~"

    def test_long_line_after_quit_is_ignored(self) -> None:
        shell, transport = self.make_shell()
        shell.dataReceived(b"quit\n" + b"x" * (shell.MAX_LENGTH + 1) + b"\n")
        self.assertEqual(self.output(transport), ["bye"])


class UploadWorldBufferBoundTests(SynchronousTestCase):
    """
    The upload world's transport double holds what a reader does not take
    and pauses the protocol over its bound (issue 15 item 2): pipelined
    answers made from memory stop at the bound plus one answer, nothing more
    is read meanwhile, and draining answers the rest.
    """

    def setUp(self) -> None:
        import shutil
        import tempfile
        from pathlib import Path

        from tests.fuzz.upload_world import UploadFixture, UploadWorld

        base = Path(tempfile.mkdtemp(prefix="twistedp2p-fuzz-bound-"))
        self.addCleanup(shutil.rmtree, base, True)
        self.world = UploadWorld(UploadFixture(base))
        self.addCleanup(self.world.close)

    def test_pipelined_piece_lists_pause_at_the_bound(self) -> None:
        from tests.fuzz import strategies as S
        from tests.fuzz.upload_world import BUFFER_BOUND

        conn = self.world.connect()
        request = S.frame(S.body_of({"action": "pieces", "fname": "a.bin"}))
        for _ in range(20):
            conn.queue(request)
        conn.deliver(None)
        self.world.after_op()
        t = conn.transport
        self.assertEqual(t.producerState, "paused")
        self.assertTrue(t.producer_paused)
        answered = self.world.units["answers"]
        self.assertLess(answered, 20)
        one = len(conn.out) // answered
        self.assertLessEqual(t.held, BUFFER_BOUND + one)
        # Nothing is read while paused.
        conn.queue(S.frame(S.body_of({"action": "ping"})))
        conn.deliver(None)
        self.assertEqual(self.world.units["answers"], answered)
        for _ in range(40):
            conn.pump(1)
            conn.deliver(None)
            self.world.after_op()
        self.assertEqual(self.world.units["answers"], 21)
        self.world.finish()
