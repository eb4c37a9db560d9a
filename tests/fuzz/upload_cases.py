"""
Fuzz cases for a peer's upload port: ops against a fresh L{UploadWorld}
over a shared L{UploadFixture}.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from tests.fuzz import strategies as S
from tests.fuzz.tracker_cases import play, weighted
from tests.fuzz.upload_world import IDLE_TIMEOUT, UploadFixture, UploadWorld

#: Offsets and lengths around the fixture's file sizes (0, 10, 3000,
#: 700000) and far outside them.
RANGE_NUMBERS = st.one_of(
    st.none(),
    st.sampled_from([0, 1, 9, 10, 11, 2999, 3000, 3001, 65536, 699_999, 700_000, 700_001, 2**63 - 1]),
    st.integers(0, 800_000),
)


def peer_requests() -> st.SearchStrategy[dict]:
    """
    Requests for the peer port over the fixture's names: published ones
    most (so transfers overlap and slots run out), unsafe ones often.
    """
    name = weighted(
        (5, st.sampled_from(UploadFixture.PUBLISHED)),
        (3, st.sampled_from(UploadFixture.UNSAFE)),
        (1, st.sampled_from(UploadFixture.NEAR)),
        (1, S.edge_text),
    )
    ids = S.request_ids
    return st.one_of(
        st.builds(
            lambda f, o, n, i: S._msg("get", i, fname=f, offset=o, length=n), name, RANGE_NUMBERS, RANGE_NUMBERS, ids
        ),
        st.builds(
            lambda f, o, n, i: S._msg("get", i, fname=f, offset=o, length=n), name, RANGE_NUMBERS, RANGE_NUMBERS, ids
        ),
        st.builds(lambda f: {"action": "get_file", "lname": f}, name),
        st.builds(lambda f: {"action": "download", "fname": f}, name),
        st.builds(lambda f, i: S._msg("pieces", i, fname=f), name, ids),
        st.builds(lambda i: S._msg("ping", i), ids),
    )


def upload_ops() -> st.SearchStrategy[list[tuple]]:
    requests = peer_requests()
    conn = st.integers(0, 5)
    send = st.tuples(
        st.just("send"),
        conn,
        # Requests stay dicts until sent, so their paths can be placed.
        st.one_of(requests, requests, S.mutated(requests), S.garbage_bodies),
        st.one_of(st.none(), st.none(), st.integers(0, 40)),
    )
    return st.lists(
        weighted(
            (8, send),
            (3, st.tuples(st.just("deliver"), conn, st.one_of(st.none(), st.integers(1, 30)))),
            (5, st.tuples(st.just("pump"), conn, st.integers(1, 4))),
            (1, st.tuples(st.just("raw"), conn, st.binary(min_size=1, max_size=20))),
            (1, st.tuples(st.just("oversize"), conn, S.oversized_lengths)),
            (2, st.tuples(st.just("connect"))),
            (1, st.tuples(st.just("keepalive"), conn)),
            (1, st.tuples(st.just("burst"), st.integers(1, 4), st.sampled_from(["get", "get_file", "download"]))),
            (1, st.tuples(st.just("close"), conn)),
            (4, st.tuples(st.just("tick"), st.sampled_from([0, 1, 20, 45, IDLE_TIMEOUT - 1, IDLE_TIMEOUT, IDLE_TIMEOUT + 1]))),
        ),
        min_size=5,
        max_size=30,
    )


def run_ops(
    fixture: UploadFixture, ops: list[tuple], connections: int = 3, outcomes: dict | None = None
) -> dict[str, int]:
    """
    Run one case against a fresh upload port; @return: what was fed and
    checked.  @raise AssertionError: on the first rule broken.
    """
    world = UploadWorld(fixture)
    try:
        for _ in range(connections):
            world.connect()
        world.after_op()
        return play(world, ops, _apply, outcomes)
    finally:
        world.close()


def _apply(world: UploadWorld, op: tuple[Any, ...]) -> None:
    name = op[0]
    if name == "connect":
        if sum(c.open for c in world.conns) < 8:
            world.connect()
        return
    if name == "tick":
        world.tick(op[1])
        return
    if name == "burst":
        # Several clients ask for the big file at once: slots run out.
        for _ in range(op[1]):
            conn = world.connect()
            field = {"get": "fname", "get_file": "lname", "download": "fname"}[op[2]]
            conn.queue(S.frame(S.body_of({"action": op[2], field: "a.bin"})))
            conn.deliver(None)
        return
    conn = world.pick(op[1], closing=name == "pump")
    if conn is None and name == "send":
        # Every connection was closed: the client comes back.
        conn = world.connect()
    if conn is None:
        return
    if name == "send":
        payload = op[2]
        if isinstance(payload, dict):
            payload = S.body_of(world.fixture.place(payload))
        conn.queue(S.frame(payload))
        conn.deliver(op[3])
    elif name == "deliver":
        conn.deliver(op[2])
    elif name == "pump":
        conn.pump(op[2])
    elif name == "keepalive":
        # A request in the middle of an idle period restarts the timeout.
        world.tick(IDLE_TIMEOUT * 2 / 3)
        conn.queue(S.frame(S.body_of({"action": "ping"})))
        conn.deliver(None)
        world.after_op()
        world.tick(IDLE_TIMEOUT / 2)
    elif name == "raw":
        conn.queue(op[2])
    elif name == "oversize":
        conn.queue(op[2].to_bytes(4, "big"))
        conn.deliver(None)
    elif name == "close":
        conn.owed = None
        conn.lose()
    else:
        raise ValueError(f"unknown op {name!r}")
