"""
Baselines made of plain sockets, each run in its own process:

  - ``serve-file FILE``: a loopback server that sends FILE with
    C{socket.sendfile} to every connection, then closes it;
  - ``recv PORT DEST``: connect, copy every byte into DEST, report the time
    from connect to the closed file;
  - ``first-byte SIZE``: a trivial server that answers any request with
    SIZE bytes (the time-to-first-byte floor).

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


def first_byte(size: int) -> None:
    server = _listen()
    payload = b"\0" * size
    emit("ready", port=server.getsockname()[1])
    while True:
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if conn.recv(65536):
                conn.sendall(payload)


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
    args = parser.parse_args()
    if args.mode == "serve-file":
        serve_file(args.file)
    elif args.mode == "recv":
        receive(args.port, args.dest)
    else:
        first_byte(args.size)


if __name__ == "__main__":
    main()
