"""
The load generator: many native sessions in one process on one epoll loop.

Run as ``python -m bench.loadgen MODE ...`` by the benchmark; it speaks
JSON lines (see L{bench.procs}).  Modes:

  - ``lookups``: register C{--sessions} sessions (and, with C{--publish},
    one more that publishes the looked-up file), print ``ready``, then for
    each ``go T0 T1`` line on stdin run a closed loop (each session sends
    its next ``fetch`` as soon as the previous answer arrives) and print a
    ``result`` for the replies received between the monotonic instants T0
    and T1.
  - ``hold``: register C{--sessions} sessions that each publish the same
    file, print ``ready``, answer heartbeat pings, and on ``close`` close
    every connection at once and exit.
  - ``burst``: open C{--sessions} connections at once, say hello on each,
    count the failures, exit.

Every session answers the tracker's heartbeat pings.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time
from array import array
from typing import Any

from bench import frames
from bench.procs import cpu_seconds, raise_nofile

SPIN = bool(os.environ.get("BENCH_SPIN"))
CONNECTING, HELLO, PUBLISH, READY, FETCH, FAILED, CLOSED = range(7)

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_ERR = select.EPOLLERR | select.EPOLLHUP
_SUCCESS = b'"status":"success"'
_PUBLISHED = (b'"status":"created"', b'"status":"unchanged"', b'"status":"updated"')
_HAS_SOURCE = b'"peer_list":[{'


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


class Conn:
    __slots__ = ("sock", "fd", "buf", "out", "state", "ids", "sent", "index", "fetcher", "publish", "hostname")

    def __init__(self, sock: socket.socket, index: int, hostname: str, publish: str | None, fetcher: bool) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.out = b""
        self.state = CONNECTING
        self.ids = 0
        self.sent = 0.0
        self.index = index
        self.hostname = hostname
        self.publish = publish
        self.fetcher = fetcher


class Engine:
    """
    Sessions on one epoll loop.  The hot path (a fetch answer, the next
    fetch) is kept short: answers are recognised by a byte search, only
    tracker pings are parsed as JSON.
    """

    def __init__(self, targets: list[tuple[str, int]], fname: str) -> None:
        self.targets = targets
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.fetch_prefix = frames.fetch_prefix(fname)
        self.in_progress = 0
        self.ready = 0
        self.failed = 0
        self.failures: dict[str, int] = {}
        self.examples: list[str] = []
        self.pings = 0
        # closed-loop state
        self.looping = False
        self.window = (0.0, 0.0)
        self.latencies = array("d")
        self.answers = 0
        self.errors = 0
        self.in_flight = 0
        self.stdin_lines: list[str] = []
        self._stdin_buf = b""
        self.stdin_closed = False

    # -- connections ---------------------------------------------------------

    def open(self, index: int, hostname: str, publish: str | None = None, fetcher: bool = False, target: int = 0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Conn(sock, index, hostname, publish, fetcher)
        self.conns[conn.fd] = conn
        self.in_progress += 1
        err = sock.connect_ex(self.targets[target % len(self.targets)])
        if err not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
            return
        self.ep.register(conn.fd, _OUT | _ERR)

    def fail(self, conn: Conn, reason: str) -> None:
        if conn.state in (FAILED, CLOSED):
            return
        if conn.state in (CONNECTING, HELLO, PUBLISH):
            self.in_progress -= 1
        elif conn.state in (READY, FETCH):
            self.ready -= 1
        if conn.state == FETCH:
            self.in_flight -= 1
        conn.state = FAILED
        self.failed += 1
        self.failures[reason] = self.failures.get(reason, 0) + 1
        try:
            self.ep.unregister(conn.fd)
        except (OSError, ValueError):
            pass
        conn.sock.close()

    def send(self, conn: Conn, data: bytes) -> None:
        if conn.out:
            conn.out += data
            return
        try:
            n = conn.sock.send(data)
        except OSError as e:
            self.fail(conn, f"send: {errno.errorcode.get(e.errno, e.errno)}")
            return
        if n < len(data):
            conn.out = data[n:]
            self.ep.modify(conn.fd, _IN | _OUT | _ERR)

    def close_all(self) -> int:
        n = 0
        for conn in self.conns.values():
            if conn.state not in (FAILED, CLOSED):
                conn.sock.close()
                conn.state = CLOSED
                n += 1
        return n

    # -- the loop ------------------------------------------------------------

    def watch_stdin(self) -> None:
        os.set_blocking(0, False)
        self.ep.register(0, _IN | _ERR)

    def _read_stdin(self) -> None:
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return
        if not data:
            self.stdin_closed = True
            self.ep.unregister(0)
            return
        self._stdin_buf += data
        *lines, self._stdin_buf = self._stdin_buf.split(b"\n")
        self.stdin_lines += [l.decode().strip() for l in lines if l.strip()]

    def poll(self, timeout: float) -> None:
        monotonic = time.monotonic
        conns = self.conns
        for fd, ev in self.ep.poll(timeout, 4096):
            if fd == 0:
                self._read_stdin()
                continue
            conn = conns[fd]
            if conn.state == CONNECTING:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.fail(conn, f"connect: {errno.errorcode.get(err, err)}")
                    continue
                conn.state = HELLO
                self.ep.modify(fd, _IN | _ERR)
                conn.ids += 1
                self.send(conn, frames.hello(conn.hostname, 1 + conn.index % 65535, conn.ids))
                continue
            if ev & _OUT and conn.out:
                try:
                    n = conn.sock.send(conn.out)
                except OSError as e:
                    self.fail(conn, f"send: {errno.errorcode.get(e.errno, e.errno)}")
                    continue
                conn.out = conn.out[n:]
                if not conn.out:
                    self.ep.modify(fd, _IN | _ERR)
            if not ev & (_IN | _ERR):
                continue
            try:
                data = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                self.fail(conn, f"recv: {errno.errorcode.get(e.errno, e.errno)}")
                continue
            if not data:
                self.fail(conn, "closed by the server")
                continue
            buf = conn.buf
            buf += data
            now = monotonic()
            for body in frames.split_frames(buf):
                if conn.state == FETCH and _SUCCESS in body[:40]:
                    self._fetched(conn, body, now)
                elif frames.is_request(body):
                    reply = frames.answer_request(body)
                    self.pings += 1
                    if reply:
                        self.send(conn, reply)
                else:
                    self._answer(conn, body, now)

    def _fetched(self, conn: Conn, body: bytes, now: float) -> None:
        self.in_flight -= 1
        conn.state = READY
        t0, t1 = self.window
        if t0 <= now <= t1:
            if _HAS_SOURCE in body:
                self.answers += 1
                self.latencies.append(now - conn.sent)
            else:
                self._error(body)
        if self.looping and now < t1:
            self._fetch(conn, now)

    def _fetch(self, conn: Conn, now: float) -> None:
        conn.ids += 1
        conn.state = FETCH
        conn.sent = now
        self.in_flight += 1
        self.send(conn, frames.fetch_frame(self.fetch_prefix, conn.ids))

    def _error(self, body: bytes) -> None:
        self.errors += 1
        if len(self.examples) < 3:
            self.examples.append(body[:300].decode("utf-8", "replace"))

    def _answer(self, conn: Conn, body: bytes, now: float) -> None:
        if conn.state == HELLO:
            if _SUCCESS not in body:
                self._example(body)
                self.fail(conn, "hello refused")
                return
            if conn.publish:
                conn.state = PUBLISH
                conn.ids += 1
                self.send(conn, frames.publish(conn.publish, conn.ids))
                return
            self._became_ready(conn)
        elif conn.state == PUBLISH:
            if not any(p in body for p in _PUBLISHED):
                self._example(body)
                self.fail(conn, "publish refused")
                return
            self._became_ready(conn)
        elif conn.state == FETCH:
            # Not a success: an error answer to a fetch.
            self.in_flight -= 1
            conn.state = READY
            t0, t1 = self.window
            if t0 <= now <= t1:
                self._error(body)
            if self.looping and now < t1:
                self._fetch(conn, now)
        else:
            self._example(body)

    def _example(self, body: bytes) -> None:
        if len(self.examples) < 3:
            self.examples.append(body[:300].decode("utf-8", "replace"))

    def _became_ready(self, conn: Conn) -> None:
        conn.state = READY
        self.in_progress -= 1
        self.ready += 1

    # -- closed loop -----------------------------------------------------------

    def closed_loop(self, t0: float, t1: float, watch: list[int]) -> dict[str, Any]:
        """
        Fetch in a closed loop until C{t1}; count answers received in
        [C{t0}, C{t1}].
        """
        self.window = (t0, t1)
        self.latencies = array("d")
        self.answers = 0
        self.errors = 0
        self.looping = True
        now = time.monotonic()
        for conn in list(self.conns.values()):
            if conn.fetcher and conn.state == READY:
                self._fetch(conn, now)
        started = False
        usage0 = cpu0 = None
        while True:
            now = time.monotonic()
            if not started and now >= t0:
                started = True
                usage0 = _self_cpu()
                cpu0 = _cpu(watch)
                wall0 = now
            if now >= t1:
                break
            self.poll(0 if SPIN else min(0.05, max(0.0, t1 - now)))
        usage1 = _self_cpu()
        cpu1 = _cpu(watch)
        wall = time.monotonic() - wall0 if started else float("nan")
        self.looping = False
        deadline = time.monotonic() + 3.0
        while self.in_flight > 0 and time.monotonic() < deadline:
            self.poll(0.05)
        span = t1 - t0
        return {
            "answers": self.answers,
            "rate": self.answers / span,
            "hist_us": histogram(self.latencies),
            "errors": self.errors,
            "examples": self.examples[:3],
            "gen_cpu": 100.0 * (usage1 - usage0) / wall if started else None,
            "sut_cpu": 100.0 * (cpu1 - cpu0) / wall if started and watch else None,
            "lost": self.failed,
            "failures": self.failures,
            "still_in_flight": self.in_flight,
        }


def histogram(seconds: array) -> dict[str, int]:
    """
    Latencies as a sparse histogram: whole microseconds -> count (JSON keys
    are strings), so several generators' samples can be merged exactly.
    """
    counts: dict[int, int] = {}
    for s in seconds:
        us = int(s * 1e6)
        counts[us] = counts.get(us, 0) + 1
    return {str(k): v for k, v in counts.items()}


def _self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def _targets(values: list[str]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        host, _, port = v.rpartition(":")
        out.append((host, int(port)))
    return out


def register(engine: Engine, count: int, prefix: str, publish: str | None, fetcher: bool, concurrency: int, timeout: float, offset: int = 0) -> float:
    """
    Open and register C{count} sessions, at most C{concurrency} at a time.
    @return: seconds it took.
    """
    started = time.monotonic()
    deadline = started + timeout
    opened = 0
    while True:
        while opened < count and engine.in_progress < concurrency:
            i = offset + opened
            engine.open(i, f"{prefix}-{i}", publish=publish, fetcher=fetcher, target=i)
            opened += 1
        if opened >= count and engine.in_progress == 0:
            break
        if time.monotonic() > deadline:
            break
        engine.poll(0.05)
    return time.monotonic() - started


def run_lookups(args: argparse.Namespace, engine: Engine) -> None:
    if args.publish:
        # One publisher session, on the first target.
        register(engine, 1, f"{args.prefix}-src", args.fname, False, 1, args.timeout)
        if engine.ready != 1:
            emit("error", message=f"the publisher could not register: {engine.failures} {engine.examples}")
            return
    took = register(engine, args.sessions, args.prefix, None, True, args.concurrency, args.timeout)
    emit("ready", sessions=engine.ready, failed=engine.failed, failures=engine.failures, seconds=took, examples=engine.examples)
    engine.watch_stdin()
    watch = [int(p) for p in args.watch_pid]
    while not engine.stdin_closed:
        while engine.stdin_lines:
            line = engine.stdin_lines.pop(0)
            words = line.split()
            if words[0] == "go":
                result = engine.closed_loop(float(words[1]), float(words[2]), watch)
                emit("result", **result)
            elif words[0] == "quit":
                return
        engine.poll(0.2)


def run_hold(args: argparse.Namespace, engine: Engine) -> None:
    took = register(engine, args.sessions, args.prefix, args.fname, False, args.concurrency, args.timeout)
    emit("ready", sessions=engine.ready, failed=engine.failed, failures=engine.failures, seconds=took, examples=engine.examples)
    engine.watch_stdin()
    while not engine.stdin_closed:
        while engine.stdin_lines:
            line = engine.stdin_lines.pop(0)
            if line == "status":
                emit("status", sessions=engine.ready, failed=engine.failed, failures=engine.failures, pings=engine.pings)
            elif line == "close":
                t = time.monotonic()
                n = engine.close_all()
                emit("closed", closed=n, seconds=time.monotonic() - t, at=t, pings=engine.pings, lost_before=engine.failed, failures=engine.failures)
                return
        engine.poll(0.2)


def run_burst(args: argparse.Namespace, engine: Engine) -> None:
    started = time.monotonic()
    for i in range(args.sessions):
        engine.open(i, f"{args.prefix}-{i}", target=i)
    opened = time.monotonic() - started
    deadline = started + args.timeout
    while engine.in_progress > 0 and time.monotonic() < deadline:
        engine.poll(0.05)
    took = time.monotonic() - started
    timed_out = engine.in_progress
    failures = dict(engine.failures)
    if timed_out:
        failures["no welcome in time"] = timed_out
    emit(
        "result",
        clients=args.sessions,
        welcomed=engine.ready,
        failed=engine.failed + timed_out,
        failures=failures,
        seconds=took,
        open_seconds=opened,
        examples=engine.examples,
    )
    engine.close_all()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("mode", choices=["lookups", "hold", "burst"])
    parser.add_argument("--target", action="append", required=True, help="HOST:PORT (repeat: sessions spread over them)")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--fname", default=frames.FNAME)
    parser.add_argument("--publish", action="store_true", help="lookups: one extra session publishes --fname")
    parser.add_argument("--concurrency", type=int, default=200, help="registrations in progress at once")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--watch-pid", action="append", default=[], help="report this process's CPU over each window")
    args = parser.parse_args(argv)
    raise_nofile()
    engine = Engine(_targets(args.target), args.fname)
    try:
        {"lookups": run_lookups, "hold": run_hold, "burst": run_burst}[args.mode](args, engine)
    except Exception as e:  # report, then fail: the benchmark shows the message
        emit("error", message=f"{type(e).__name__}: {e}")
        raise


if __name__ == "__main__":
    main()
