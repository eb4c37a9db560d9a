"""
Test doubles that speak the real peer protocol (``pieces`` and pipelined
``get``) for one file, with faults on demand.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver

from twistedp2p import wire
from twistedp2p.peer.pieces import PieceList, pieces_of


class FakeSource(Int32StringReceiver):
    """
    Serves C{factory.data} as C{factory.fname}.  Faults, from the factory:
    C{corrupt} (piece indexes whose bytes are damaged), C{silent} (never
    answer), C{drop_after} (close after sending this many body bytes),
    C{busy} (answer every get with busy), C{silent_gets} (answer
    ``pieces`` only).
    """

    MAX_LENGTH = wire.MAX_REQUEST_FRAME
    factory: "FakeSourceFactory"

    def connectionMade(self) -> None:
        self.sent = 0
        self.factory.connections.append(self)

    def stringReceived(self, frame: bytes) -> None:
        f = self.factory
        message = wire.decode(frame)
        f.requests.append(message)
        if f.silent or self.transport.disconnecting:
            return
        action = message.get("action")
        if action == "pieces":
            self.sendString(wire.encode({"status": "success", "fname": f.fname, **f.pieces.to_wire()}))
            return
        if action != "get":
            self.transport.loseConnection()
            return
        if f.silent_gets:
            return
        if f.busy:
            self.sendString(wire.encode({"status": "busy", "message": "full"}))
            self.transport.loseConnection()
            return
        offset, length = message["offset"], message["length"]
        if length is None:
            # (A whole-file get: the rest of the file.)
            length = len(f.data) - offset
        body = f.data[offset : offset + length]
        index = offset // f.pieces.piece_size
        if index in f.corrupt:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
        header = {"status": "success", "fname": f.fname, "offset": offset, "length": length,
                  "file_size": len(f.data), "sha256": f.pieces.sha256}
        self.sendString(wire.encode(header))
        if f.drop_after is not None and self.sent + len(body) > f.drop_after:
            self.transport.write(body[: f.drop_after - self.sent])
            self.transport.loseConnection()
            f.dropped = True
            return
        self.sent += len(body)
        self.transport.write(body)
        f.served.append(index)


class FakeSourceFactory(Factory):
    protocol = FakeSource
    noisy = False

    def __init__(self, data: bytes, fname: str = "f", pieces: PieceList | None = None, **faults: Any) -> None:
        self.data = data
        self.fname = fname
        self.pieces = pieces or pieces_of(data)
        self.corrupt = set(faults.pop("corrupt", ()))
        self.silent = faults.pop("silent", False)
        self.busy = faults.pop("busy", False)
        self.silent_gets = faults.pop("silent_gets", False)
        self.drop_after = faults.pop("drop_after", None)
        assert not faults, faults
        self.requests: list[dict[str, Any]] = []
        self.served: list[int] = []
        self.connections: list[FakeSource] = []
        self.dropped = False
