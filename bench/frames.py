"""
A minimal native client of the wire protocol (docs/protocol.md), written
for speed rather than generality: Int32 length-prefixed JSON frames,
``hello`` with ``version: 1``, integer request ids, and pongs for the
tracker's heartbeat pings.  The benchmark's load generators build on it.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")
_pack = _HEADER.pack

#: What the benchmark publishes and looks up.
FNAME = "bench-lookup.bin"
FILE_SIZE = 4096
FILE_SHA256 = hashlib.sha256(b"\0" * FILE_SIZE).hexdigest()
GHOST_FNAME = "bench-ghost.bin"


def frame(message: dict[str, Any]) -> bytes:
    """
    One encoded frame (header plus compact JSON).
    """
    body = json.dumps(message, separators=(",", ":")).encode("utf-8")
    return _pack(len(body)) + body


def frame_bytes(body: bytes) -> bytes:
    """
    Frame an already encoded body.
    """
    return _pack(len(body)) + body


def hello(hostname: str, p2p_port: int, request_id: int) -> bytes:
    return frame({"action": "hello", "hostname": hostname, "p2p_port": p2p_port, "version": 1, "id": request_id})


def publish(fname: str, request_id: int, size: int = FILE_SIZE, sha256: str = FILE_SHA256) -> bytes:
    return frame(
        {
            "action": "publish",
            "fname": fname,
            "lname": fname,
            "file_size": size,
            "last_modified": 1764000000.0,
            "sha256": sha256,
            "id": request_id,
        }
    )


def fetch_prefix(fname: str) -> bytes:
    """
    The constant start of a fetch request body; L{fetch_frame} appends the id.
    """
    return json.dumps({"action": "fetch", "fname": fname}, separators=(",", ":"))[:-1].encode() + b',"id":'


def fetch_frame(prefix: bytes, request_id: int) -> bytes:
    body = prefix + str(request_id).encode() + b"}"
    return _pack(len(body)) + body


def pong(request_id: Any) -> bytes:
    return frame({"status": "success", "message": "pong", "id": request_id})


def split_frames(buf: bytearray) -> list[bytes]:
    """
    Remove and return every complete frame at the start of C{buf}.
    """
    out = []
    offset = 0
    size = len(buf)
    while size - offset >= 4:
        n = int.from_bytes(buf[offset : offset + 4], "big")
        end = offset + 4 + n
        if end > size:
            break
        out.append(bytes(buf[offset + 4 : end]))
        offset = end
    if offset:
        del buf[:offset]
    return out


def is_request(body: bytes) -> bool:
    """
    A frame from the tracker that is a request to us (a heartbeat ping).
    """
    return b'"action"' in body


def answer_request(body: bytes) -> bytes | None:
    """
    The pong for a tracker ping (None for anything else).
    """
    message = json.loads(body)
    if message.get("action") == "ping":
        return pong(message.get("id"))
    return None


class BlockingClient:
    """
    A registered native session over a blocking socket: for sequential
    measurements (time to first byte) and for asking the tracker things.
    """

    def __init__(self, host: str, port: int, hostname: str, p2p_port: int = 1, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self._ids = 0
        self.welcome = self.request_raw(lambda i: hello(hostname, p2p_port, i))
        if self.welcome.get("status") != "success":
            raise RuntimeError(f"hello refused: {self.welcome}")

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_answer(self) -> bytes:
        """
        The next answer frame's body; tracker pings met meanwhile are answered.
        """
        while True:
            body = self.next_frame()
            if not is_request(body):
                return body
            reply = answer_request(body)
            if reply:
                self.sock.sendall(reply)

    def next_frame(self) -> bytes:
        buf = self._buf
        while True:
            if len(buf) >= 4:
                n = int.from_bytes(buf[:4], "big")
                if len(buf) >= 4 + n:
                    body = bytes(buf[4 : 4 + n])
                    del buf[: 4 + n]
                    return body
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("the tracker closed the connection")
            buf += data

    def request_raw(self, build) -> dict[str, Any]:
        self.sock.sendall(build(self._next_id()))
        return json.loads(self.read_answer())

    def request(self, action: str, **fields: Any) -> dict[str, Any]:
        message = {"action": action, **fields}
        return self.request_raw(lambda i: frame({**message, "id": i}))

    def close(self) -> None:
        self.sock.close()
