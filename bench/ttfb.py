"""
Time to first byte, measured by one registered native client in its own
process (``python -m bench.ttfb``).

A round of the system under test: ``fetch`` on the client's tracker
connection, read the peer list, connect to the first source's P2P port,
send ``get``, and stop the clock at the first raw data byte after the
header frame.  A baseline round: connect to a trivial loopback server,
send a small request, stop at its first byte.  A floor round (with
``--floor-tracker``): the system-under-test round, same client code,
against plain blocking stand-ins for the tracker and the source
(``bench.rawnet fake-tracker`` and ``first-byte --framed``), which do no
work: what this client and machine take for the two exchanges alone.
Rounds alternate, so all see the same machine.  Prints one ``result``
event with every sample.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time

from bench import frames


def emit(event: str, **fields: object) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _recv_until_data(s: socket.socket) -> tuple[dict, int]:
    """
    Read the header frame of a ``get`` answer and at least one data byte.
    @return: (header, data bytes received so far).
    """
    buf = bytearray()
    while True:
        data = s.recv(65536)
        if not data:
            raise ConnectionError(f"the source closed the connection (received {bytes(buf[:200])!r})")
        buf += data
        if len(buf) >= 4:
            n = int.from_bytes(buf[:4], "big")
            if len(buf) >= 4 + n:
                header = json.loads(bytes(buf[4 : 4 + n]))
                if header.get("status") != "success":
                    raise RuntimeError(f"the source refused: {header}")
                got = len(buf) - 4 - n
                if got > 0 or header.get("length") == 0:
                    return header, got


def sut_round(client: frames.BlockingClient, prefix: bytes, request_id: int, fname: str) -> tuple[float, float]:
    """
    @return: (seconds to the tracker's answer, seconds to the first byte).
    """
    t0 = time.perf_counter()
    client.send(frames.fetch_frame(prefix, request_id))
    answer = json.loads(client.read_answer())
    t_lookup = time.perf_counter()
    sources = answer.get("peer_list") or []
    if not sources:
        raise RuntimeError(f"no source for {fname}: {answer}")
    src = sources[0]
    with socket.create_connection((src["ip"], src["port"])) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(frames.frame({"action": "get", "fname": fname, "offset": 0}))
        header, got = _recv_until_data(s)
        t1 = time.perf_counter()
        left = header["length"] - got
        while left > 0:
            data = s.recv(65536)
            if not data:
                break
            left -= len(data)
    return t_lookup - t0, t1 - t0


def baseline_round(port: int) -> float:
    t0 = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(frames.frame({"action": "get", "fname": "x", "offset": 0}))
        first = s.recv(65536)
        t1 = time.perf_counter()
        if not first:
            raise ConnectionError("the baseline server closed without data")
        while s.recv(65536):
            pass
    return t1 - t0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ttfb")
    parser.add_argument("--tracker", required=True, help="HOST:PORT")
    parser.add_argument("--baseline-port", type=int, required=True)
    parser.add_argument("--floor-tracker", help="HOST:PORT of a bench.rawnet fake-tracker")
    parser.add_argument("--fname", required=True)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    host, _, port = args.tracker.rpartition(":")
    client = frames.BlockingClient(host, int(port), "bench-ttfb")
    floor_client = None
    if args.floor_tracker:
        floor_host, _, floor_port = args.floor_tracker.rpartition(":")
        floor_client = frames.BlockingClient(floor_host, int(floor_port), "bench-ttfb-floor")
    prefix = frames.fetch_prefix(args.fname)
    lookup, sut, base, floor = [], [], [], []
    request_id = 100
    for i in range(args.warmup + args.rounds):
        request_id += 1
        t_lookup, t_sut = sut_round(client, prefix, request_id, args.fname)
        t_base = baseline_round(args.baseline_port)
        t_floor = sut_round(floor_client, prefix, request_id, args.fname)[1] if floor_client else None
        if i >= args.warmup:
            lookup.append(t_lookup)
            sut.append(t_sut)
            base.append(t_base)
            if t_floor is not None:
                floor.append(t_floor)
    client.close()
    if floor_client is not None:
        floor_client.close()
    emit("result", lookup=lookup, sut=sut, baseline=base, floor=floor)


if __name__ == "__main__":
    main()
