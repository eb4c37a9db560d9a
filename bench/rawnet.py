"""
Baselines made of plain sockets, each run in its own process:

  - ``serve-file FILE``: a loopback server that sends FILE with
    C{socket.sendfile} to every connection, then closes it;
  - ``recv PORT DEST``: connect, copy every byte into DEST, report the time
    from connect to the closed file;
  - ``first-byte SIZE [--framed]``: a trivial server that answers any
    request with SIZE bytes (the time-to-first-byte floor); framed, behind
    a ``get`` header as a source peer sends them;
  - ``fake-tracker SOURCE_PORT``: a stand-in tracker that answers every
    ``fetch`` with the framed first-byte server on SOURCE_PORT, so the
    TTFB client's whole round (lookup, connect, request) can be timed
    against plain blocking servers doing no work.

Servers print ``{"event": "ready", "port": N}``; ``recv`` prints one
``result`` event.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import time


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _listen() -> socket.socket:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    return server


def serve_file(path: str) -> None:
    server = _listen()
    emit("ready", port=server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        with conn, open(path, "rb") as f:
            conn.sendfile(f)


def receive(port: int, dest: str, chunk: int = 1 << 20) -> None:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    buf = bytearray(chunk)
    view = memoryview(buf)
    total = 0
    with socket.create_connection(("127.0.0.1", port)) as s, open(dest, "wb") as out:
        while True:
            n = s.recv_into(buf)
            if not n:
                break
            out.write(view[:n])
            total += n
    seconds = time.monotonic() - started
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    emit("result", bytes=total, seconds=seconds, cpu=100.0 * cpu / seconds)


def _frame(message: dict) -> bytes:
    body = json.dumps(message).encode()
    return len(body).to_bytes(4, "big") + body


def first_byte(size: int, framed: bool = False) -> None:
    """
    Answer any request with C{size} bytes; with C{framed}, behind a ``get``
    header frame, as a source peer answers.
    """
    server = _listen()
    payload = b"\0" * size
    if framed:
        payload = _frame({"status": "success", "offset": 0, "length": size, "file_size": size}) + payload
    emit("ready", port=server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if conn.recv(65536):
                conn.sendall(payload)


def fake_tracker(source_port: int) -> None:
    """
    A stand-in tracker with nothing behind it: one connection at a time,
    C{hello} welcomed, any other request answered with one source, the
    C{first-byte --framed} server on C{source_port}.
    """
    server = _listen()
    emit("ready", port=server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = bytearray()
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                buf += data
                while len(buf) >= 4 and len(buf) >= 4 + int.from_bytes(buf[:4], "big"):
                    n = int.from_bytes(buf[:4], "big")
                    request = json.loads(bytes(buf[4 : 4 + n]))
                    del buf[: 4 + n]
                    answer = {"status": "success", "id": request.get("id")}
                    if request.get("action") != "hello":
                        fname = request.get("fname")
                        answer["peer_list"] = [
                            {"hostname": "raw", "ip": "127.0.0.1", "port": source_port, "fname": fname, "lname": fname}
                        ]
                    conn.sendall(_frame(answer))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rawnet")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("serve-file")
    p.add_argument("file")
    p = sub.add_parser("recv")
    p.add_argument("port", type=int)
    p.add_argument("dest")
    p = sub.add_parser("first-byte")
    p.add_argument("size", type=int)
    p.add_argument("--framed", action="store_true", help="send a get header frame first")
    p = sub.add_parser("fake-tracker")
    p.add_argument("source_port", type=int)
    args = parser.parse_args()
    if args.mode == "serve-file":
        serve_file(args.file)
    elif args.mode == "recv":
        receive(args.port, args.dest)
    elif args.mode == "fake-tracker":
        fake_tracker(args.source_port)
    else:
        first_byte(args.size, args.framed)


if __name__ == "__main__":
    main()
