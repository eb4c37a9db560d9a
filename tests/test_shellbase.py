"""
The stdio shells' line input (L{twistedp2p.shellbase}), on a
L{StringTransport}.
"""

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p.shellbase import ShellLineReceiver


class Recorder(ShellLineReceiver):
    MAX_LENGTH = 8

    def __init__(self) -> None:
        self.seen: list[object] = []

    def lineReceived(self, line: bytes) -> None:
        self.seen.append(line)

    def lineTooLong(self) -> None:
        self.seen.append("too long")


class ShellLineReceiverTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.shell = Recorder()
        self.shell.makeConnection(StringTransport())

    def test_lines(self) -> None:
        self.shell.dataReceived(b"a\nbc\n")
        self.assertEqual(self.shell.seen, [b"a", b"bc"])

    def test_long_line_then_more_in_the_same_read(self) -> None:
        """
        One complaint per too-long line; what follows it in the same read
        still runs.
        """
        self.shell.dataReceived(b"x" * 20 + b"\nok\n")
        self.assertEqual(self.shell.seen, ["too long", b"ok"])

    def test_long_line_over_several_reads(self) -> None:
        """
        The rest of a too-long line, however many reads it takes, is
        skipped, not parsed as lines of its own.
        """
        for chunk in (b"y" * 12, b"y" * 12, b"y" * 12 + b"\nnext\n"):
            self.shell.dataReceived(chunk)
        self.assertEqual(self.shell.seen, ["too long", b"next"])
        self.assertFalse(self.shell.transport.disconnecting)
