"""
Fuzz cases for the tracker port: a case is a list of ops run against a
fresh L{TrackerWorld}.

Two mixes of the same ops:

  - L{stream_cases}: one or two connections fed byte streams (frames,
    mutated frames, garbage bodies, raw bytes that break the framing,
    oversized length prefixes) in random splits, next to a registered
    bystander with publications;
  - L{session_cases}: up to six connections saying hello, publishing,
    fetching, searching and disconnecting, interleaved byte by byte, with
    heartbeats, time passing, held store writes and store outages.
"""

from __future__ import annotations

import json
from typing import Any, Callable

from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.tracker_world import TrackerWorld

IPS = ["10.0.0.1", "10.0.0.2", "192.168.7.9"]
TICKS = [0, 0.5, 1, 5.0, 6, 29, 31, 61]

conn_index = st.integers(0, 7)


def _op(name: str, *parts: st.SearchStrategy) -> st.SearchStrategy[tuple]:
    return st.tuples(st.just(name), *parts)


def weighted(*pairs: tuple[int, st.SearchStrategy]) -> st.SearchStrategy:
    """
    Choose among strategies with integer weights (C{one_of} would merge
    repeated strategies, losing the weights).
    """
    expanded = [s for w, s in pairs for _ in range(w)]
    return st.sampled_from(expanded).flatmap(lambda s: s)



send = _op("send", conn_index, S.request_bodies())
send_valid = _op("send", conn_index, st.builds(S.body_of, S.tracker_requests))
deliver = _op("deliver", conn_index, st.one_of(st.none(), st.integers(1, 4), st.integers(1, 300)))
deliver_all = _op("deliver", conn_index, st.none())
raw = _op("raw", conn_index, st.binary(min_size=1, max_size=40))
oversize = _op("oversize", conn_index, S.oversized_lengths)
connect = _op("connect", st.sampled_from(IPS), st.booleans())
close = _op("close", conn_index)
tick = _op("tick", st.sampled_from(TICKS))
heartbeat = _op("heartbeat")
heartbeat_tick = _op("heartbeat_tick")
hold = _op("hold", st.booleans())
release_newest = _op("release_newest")
outage = _op("outage", st.booleans())
pong = _op("pong", conn_index, st.integers(-1, 2**31))
flood = _op("flood", conn_index, st.integers(120, 140))



#: What a registered peer mostly does.
session_requests = weighted(
    (6, S.publishes),
    (4, S.fetches),
    (1, S.unpublishes),
    (1, S.catalogue_requests),
    (1, S.discovers),
    (1, S.tracker_requests),
    (1, S.mutated(S.tracker_requests)),
)

#: A hello (usually) and a few requests, queued at once, then delivered
#: (all, some or none of the bytes).
script = _op(
    "script",
    conn_index,
    st.one_of(st.none(), S.hellos(), S.hellos(), S.hellos(), S.hellos()),
    st.lists(session_requests, min_size=1, max_size=8),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 200)),
)

stream_ops = st.lists(
    weighted((8, send), (6, deliver), (3, raw), (2, script), (1, oversize), (1, tick), (1, close), (1, connect)),
    min_size=6,
    max_size=40,
)

session_ops = st.lists(
    weighted(
        (8, script),
        (2, send_valid),
        (1, send),
        (3, deliver),
        (4, deliver_all),
        (2, connect),
        (1, close),
        (2, tick),
        (1, heartbeat),
        (1, heartbeat_tick),
        (1, hold),
        (1, release_newest),
        (1, outage),
        (1, pong),
    ),
    min_size=8,
    max_size=40,
)

#: Rare: a burst of requests behind a pending one fills the queue.
flood_ops = st.lists(
    weighted((6, script), (3, deliver_all), (2, hold), (1, flood), (1, tick), (1, close)),
    min_size=1,
    max_size=15,
)


def _bystander(world: TrackerWorld) -> None:
    """
    A registered native peer with two publications, so garbage has
    something to damage.
    """
    c = world.connect("10.9.9.9", auto_pong=True)
    for message in (
        {"action": "hello", "hostname": "bystander", "p2p_port": 7000, "version": 1, "id": 1},
        {"action": "publish", "fname": "a", "file_size": 3, "sha256": S.SHA_A, "id": 2},
        {"action": "publish", "fname": "notes.pdf", "file_size": 5, "sha256": S.SHA_B, "id": 3},
    ):
        c.queue_body(S.body_of(message))
    c.deliver()
    world.after_op()


def run_ops(
    ops: list[tuple], connections: int = 1, bystander: bool = False, outcomes: dict | None = None
) -> dict[str, int]:
    """
    Run one case: C{connections} fresh connections (plus the bystander),
    then C{ops}, then L{TrackerWorld.finish}.

    @return: what was fed and checked (C{frames}, C{answers}, C{ops}...).
    @raise AssertionError: on the first rule broken.
    """
    world = TrackerWorld()
    try:
        if bystander:
            _bystander(world)
        for i in range(connections):
            world.connect(IPS[i % len(IPS)], auto_pong=i % 2 == 0)
        return play(world, ops, _apply, outcomes)
    finally:
        world.close()


def play(
    world: Any, ops: list[tuple], apply: Callable[[Any, tuple[Any, ...]], None], outcomes: dict | None
) -> dict[str, int]:
    """
    The part of a case every world shares: C{apply} each op and check the
    world after it, then C{world.finish()}; add the world's outcomes to
    C{outcomes}.  (The caller sets the world up and closes it.)

    @return: what was fed and checked.
    """
    for op in ops:
        apply(world, op)
        world.after_op()
    world.finish()
    if outcomes is not None:
        for k, v in world.outcomes.items():
            outcomes[k] = outcomes.get(k, 0) + v
    return dict(world.units)


def _apply(world: TrackerWorld, op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "connect":
        if sum(c.open for c in world.conns) < 6:
            world.connect(op[1], op[2])
        return
    if name == "tick":
        world.tick(op[1])
        return
    if name == "heartbeat":
        world.heartbeat()
        return
    if name == "heartbeat_tick":
        world.heartbeat_tick()
        return
    if name == "hold":
        world.hold(op[1])
        return
    if name == "release_newest":
        world.release_newest()
        return
    if name == "outage":
        world.outage(op[1])
        return
    conn = world.pick(op[1])
    if name == "script" and op[2] is not None and (conn is None or conn.said_hello):
        # A script with a hello goes to a connection that has not said one,
        # a new one if need be: cases then have several sessions.
        fresh = [c for c in world.conns if c.open and not c.said_hello]
        if fresh:
            conn = fresh[0]
        elif sum(c.open for c in world.conns) < 6:
            conn = world.connect(IPS[len(world.conns) % len(IPS)], len(world.conns) % 2 == 0)
    if conn is None:
        return
    if name == "send":
        conn.queue_body(op[2])
    elif name == "raw":
        conn.queue(op[2])
    elif name == "oversize":
        conn.queue(op[2].to_bytes(4, "big") + b"x" * 16)
    elif name == "deliver":
        conn.deliver(op[2])
    elif name == "close":
        conn.lose()
    elif name == "pong":
        if conn.native:
            conn.queue_body(json.dumps({"status": "success", "message": "pong", "id": op[2]}).encode())
    elif name == "script":
        if op[2] is not None and not conn.said_hello:
            # One hello per connection here; send_valid adds the others.
            conn.said_hello = True
            conn.queue_body(S.body_of(op[2]))
        for message in op[3]:
            conn.queue_body(S.body_of(message))
        conn.deliver(op[4])
    elif name == "flood":
        for i in range(op[2]):
            conn.queue_body(S.body_of({"action": "ping", "id": i}))
    else:
        raise ValueError(f"unknown op {name!r}")
