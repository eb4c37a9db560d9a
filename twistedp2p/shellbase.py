"""
What the tracker's admin shell and the peer's command shell share: line
input on stdin where a too-long line is one error, not several.
"""

from __future__ import annotations

from twisted.protocols.basic import LineReceiver


class ShellLineReceiver(LineReceiver):
    """
    Newline-delimited input for a stdio shell.

    L{LineReceiver} drops the lines that follow a too-long line in the same
    read, and parses the rest of a too-long line as a line of its own.
    Here a too-long line calls L{lineTooLong} once and is skipped up to its
    end, and the lines after it still run.
    """

    delimiter = b"\n"

    #: Skipping the rest of a too-long line, up to its end.
    _skipping = False
    #: What followed a too-long line in the same read, still to be parsed.
    _after_long = b""

    def dataReceived(self, data: bytes) -> None:
        while data:
            if self._skipping:
                _, end, data = data.partition(self.delimiter)
                if not end:
                    return
                self._skipping = False
            LineReceiver.dataReceived(self, data)
            data, self._after_long = self._after_long, b""

    def lineLengthExceeded(self, line: bytes) -> None:
        self.lineTooLong()
        _, end, self._after_long = line.partition(self.delimiter)
        self._skipping = not end

    def lineTooLong(self) -> None:
        """
        A line longer than C{MAX_LENGTH} came in: say so (once per line).
        """
        raise NotImplementedError
