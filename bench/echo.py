"""
The baseline server for the tracker figures: the same framing (Int32 +
JSON) on the same reactor, and nothing else.

It decodes each request, and answers with a frame of the tracker's shape:
``hello`` gets a welcome, ``publish`` gets ``created``, ``fetch`` gets a
one-source ``peer_list`` like the tracker's.  No validation, no registry,
no store, no logging per request, no heartbeat: what is left is the cost
floor of a Twisted server speaking this wire format.  Run as
``python -m bench.echo``; prints ``{"event": "ready", "port": N}``.

``python -m bench.echo --raw`` is the same answers from a bare epoll loop
without Twisted (each answer sent at once from the read handler): the
floor of framing plus JSON alone, in Python.
"""

from __future__ import annotations

import json
import select
import socket
import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import Int32StringReceiver

from bench import frames
from bench.procs import raise_nofile

_SOURCE = {
    "hostname": "bench-src",
    "ip": "127.0.0.1",
    "port": 1,
    "lname": frames.FNAME,
    "fname": frames.FNAME,
    "file_size": frames.FILE_SIZE,
    "last_modified": 1764000000.0,
    "sha256": frames.FILE_SHA256,
    "version": 1,
}


def answer(frame: bytes) -> bytes | None:
    """
    The answer to one request frame, or None (answers need none).
    """
    message = json.loads(frame)
    action = message.get("action")
    if action == "fetch":
        reply = {"status": "success", "id": message.get("id"), "fname": message.get("fname"), "peer_list": [_SOURCE]}
    elif action == "publish":
        reply = {"status": "created", "id": message.get("id"), "fname": message.get("fname"), "message": "created"}
    elif action == "hello":
        reply = {"status": "success", "id": message.get("id"), "message": "welcome", "version": 1}
    elif action is None:
        return None
    else:
        reply = {"status": "success", "id": message.get("id")}
    return json.dumps(reply, separators=(",", ":")).encode("utf-8")


class Echo(Int32StringReceiver):
    MAX_LENGTH = 64 * 1024

    def stringReceived(self, frame: bytes) -> None:
        reply = answer(frame)
        if reply is not None:
            self.sendString(reply)


def raw_main() -> None:
    """
    The same answers from a bare epoll loop (no Twisted, no write buffering
    beyond what a full socket needs).
    """
    raise_nofile()
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    server.setblocking(False)
    ep = select.epoll()
    ep.register(server.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytearray] = {}
    pending: dict[int, bytes] = {}
    sys.stdout.write(json.dumps({"event": "ready", "port": server.getsockname()[1]}) + "\n")
    sys.stdout.flush()

    def close(fd: int) -> None:
        ep.unregister(fd)
        socks.pop(fd).close()
        bufs.pop(fd, None)
        pending.pop(fd, None)

    while True:
        for fd, ev in ep.poll(1.0, 4096):
            if fd == server.fileno():
                while True:
                    try:
                        s, _ = server.accept()
                    except BlockingIOError:
                        break
                    s.setblocking(False)
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[s.fileno()] = s
                    bufs[s.fileno()] = bytearray()
                    ep.register(s.fileno(), select.EPOLLIN)
                continue
            s = socks[fd]
            if ev & select.EPOLLOUT:
                data = pending.pop(fd)
                n = s.send(data)
                if n < len(data):
                    pending[fd] = data[n:]
                else:
                    ep.modify(fd, select.EPOLLIN)
                continue
            try:
                data = s.recv(65536)
            except ConnectionError:
                data = b""
            if not data:
                close(fd)
                continue
            buf = bufs[fd]
            buf += data
            out = [frames.frame_bytes(a) for a in map(answer, frames.split_frames(buf)) if a is not None]
            if not out:
                continue
            data = pending.pop(fd, b"") + b"".join(out)
            try:
                n = s.send(data)
            except ConnectionError:
                close(fd)
                continue
            if n < len(data):
                pending[fd] = data[n:]
                ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)


def main() -> None:
    if "--raw" in sys.argv[1:]:
        return raw_main()
    raise_nofile()
    factory = Factory.forProtocol(Echo)
    port = reactor.listenTCP(0, factory, backlog=1024, interface="127.0.0.1")
    sys.stdout.write(json.dumps({"event": "ready", "port": port.getHost().port}) + "\n")
    sys.stdout.flush()
    reactor.run()


if __name__ == "__main__":
    main()
