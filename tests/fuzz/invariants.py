"""
What must hold between a tracker's L{Registry} and its L{IIndexStore}
whenever no store write is in flight.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from twistedp2p import wire
from twistedp2p.tracker import model
from twistedp2p.tracker.model import Publication, Source, pattern_matcher

#: Larger than any fuzz case's number of publications.
_ALL = 10**9


class InvariantError(AssertionError):
    """
    The registry and the store disagree, or the registry contradicts itself.
    """


def result_now(d: Deferred) -> Any:
    """
    The result of a Deferred that has already fired (the stores the fuzzers
    use answer synchronously once no write is held).

    @raise InvariantError: if it has not fired, or failed.
    """
    box: list[Any] = []
    d.addBoth(box.append)
    if not box:
        raise InvariantError("a store read did not answer at once (a write still held?)")
    value = box[0]
    if isinstance(value, Failure):
        raise InvariantError(f"a store read failed: {value.getErrorMessage()}")
    return value


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise InvariantError(message)


def check_registry_invariants(registry: Any, store: Any, closed: Iterable[str] = ()) -> None:
    """
    Check a quiescent tracker.

      - every live session in the store is in the registry and vice versa,
        with the same record;
      - no two live sessions hold the same (hostname, P2P port);
      - every publication in the store belongs to a live session and is the
        one the registry holds for that session and name, and every one the
        registry holds is in the store exactly once;
      - C{peers()}, C{snapshot()} and C{len()} agree on sessions and counts,
        and the catalogue counts every publication once;
      - C{discover} lists exactly each host's publications;
      - C{fetch} never returns the requester, and returns every other
        source up to its limit;
      - no session id in C{closed} (sessions whose connection closed) is
        left anywhere.

    @raise InvariantError: naming the first thing that does not hold.
    """
    snapshot = registry.snapshot()
    peers = registry.peers()
    live = {session.session_id: (session, pubs) for session, pubs in snapshot}
    _expect(len(live) == len(snapshot), "snapshot() lists a session twice")
    _expect(len(registry) == len(live), f"len(registry) {len(registry)} != {len(live)} sessions in snapshot()")
    _expect(
        sorted(p.session.session_id for p in peers) == sorted(live),
        "peers() and snapshot() list different sessions",
    )
    _expect(
        [p.session.connected_at for p in peers] == sorted(p.session.connected_at for p in peers),
        "peers() is not oldest first",
    )
    for p in peers:
        _expect(
            p.files == len(live[p.session.session_id][1]),
            f"peers() counts {p.files} files for {p.session.session_id}, snapshot() has "
            f"{len(live[p.session.session_id][1])}",
        )
        _expect(registry.session(p.session.session_id) == p.session, "session() disagrees with peers()")
    keys = [(s.hostname, s.p2p_port) for s, _ in snapshot]
    _expect(len(set(keys)) == len(keys), f"two live sessions share a hostname and port: {sorted(keys)}")

    stored = {s.session_id: s for s in result_now(store.sessions())}
    _expect(
        set(stored) == set(live),
        f"store sessions {sorted(stored)} != registry sessions {sorted(live)}",
    )
    for sid, (session, _) in live.items():
        _expect(stored[sid] == session, f"store and registry records of {sid} differ")

    # Every publication, both ways.
    expected: dict[tuple[str, str], Publication] = {}
    for sid, (session, pubs) in live.items():
        for pub in pubs:
            _expect((sid, pub.fname) not in expected, f"{sid} holds {pub.fname!r} twice")
            expected[(sid, pub.fname)] = pub
    catalogue = result_now(store.catalogue("", wire.MAX_LIMIT))
    names = {e.fname for e in catalogue} | {fname for _, fname in expected}
    found: dict[tuple[str, str], Source] = {}
    for fname in names:
        for source in result_now(store.sources(fname, _ALL)):
            key = (source.session.session_id, source.publication.fname)
            _expect(source.publication.fname == fname, f"sources({fname!r}) returned {key}")
            _expect(key not in found, f"the store lists {key} twice")
            _expect(source.session.session_id in live, f"the store has a publication of dead session {key}")
            found[key] = source
    _expect(
        set(found) == set(expected),
        f"store publications {sorted(found)} != registry publications {sorted(expected)}",
    )
    for key, source in found.items():
        _expect(source.publication == expected[key], f"store and registry publications {key} differ")
        _expect(source.session == live[key[0]][0], f"the store's source {key} carries a stale session")
    _expect(
        sum(e.sources for e in catalogue) == len(expected),
        f"catalogue counts {sum(e.sources for e in catalogue)} sources, there are {len(expected)}",
    )
    _expect(
        [e.fname for e in catalogue] == sorted(e.fname for e in catalogue),
        "the catalogue is not sorted by name",
    )

    # discover: per host, every publication of its live sessions.
    for hostname in {s.hostname for s, _ in snapshot}:
        listed = result_now(registry.discover(hostname))
        want = {k for k in expected if live[k[0]][0].hostname == hostname}
        got = [(s.session.session_id, s.publication.fname) for s in listed]
        _expect(len(got) == len(set(got)) and set(got) == want, f"discover({hostname!r}) lists {got}, want {sorted(want)}")

    # fetch: never the requester, every other live source up to the limit.
    for sid in live:
        for fname in {f for _, f in expected}:
            others = sum(1 for (s, f) in expected if f == fname and s != sid)
            for limit in (1, wire.DEFAULT_LIMIT):
                got = result_now(registry.fetch(sid, fname, limit))
                ids = [s.session.session_id for s in got]
                _expect(sid not in ids, f"fetch({fname!r}) by {sid} returned the requester")
                _expect(
                    len(ids) == min(limit, others),
                    f"fetch({fname!r}, limit={limit}) by {sid} returned {len(ids)} sources, want {min(limit, others)}",
                )

    for sid in closed:
        _expect(sid not in live, f"session {sid} of a closed connection is still live")
        _expect(sid not in stored, f"session {sid} of a closed connection is still in the store")
        _expect(not any(k[0] == sid for k in found), f"a publication of closed session {sid} remains")


def _content_key(p: Publication) -> tuple:
    """
    What makes two publications of one name one catalogue entry.
    """
    key = getattr(model, "content_key", None)
    return key(p) if key is not None else (p.file_size, p.sha256)


def expected_catalogue(registry: Any, pattern: str) -> list[dict[str, Any]]:
    """
    Every catalogue entry a quiescent tracker may answer for C{pattern},
    computed from the registry's own records (not from the store), sorted
    by name; host names as a sorted list.
    """
    matches = pattern_matcher(pattern)
    groups: dict[tuple, tuple[Publication, list[str]]] = {}
    for session, pubs in registry.snapshot():
        for p in pubs:
            if matches(p.fname):
                entry = groups.setdefault((p.fname,) + _content_key(p), (p, []))
                entry[1].append(session.hostname)
    entries = []
    for p, hosts in groups.values():
        entries.append(
            {
                "fname": p.fname,
                "file_size": p.file_size,
                "sha256": p.sha256,
                "sources": len(hosts),
                "hostnames": sorted(set(hosts)),
            }
        )
    return sorted(entries, key=lambda e: e["fname"])


def check_catalogue_answer(files: list[dict[str, Any]], expected: list[dict[str, Any]], limit: int) -> str | None:
    """
    Compare a catalogue answer with L{expected_catalogue}: the first
    C{limit} entries in name order (entries of one name in any order, and
    a limit that falls among them may keep any of them), each one live.

    @return: what is wrong, or None.
    """
    keys = ("fname", "file_size", "sha256", "sources", "hostnames")
    got = [{k: (sorted(e[k]) if k == "hostnames" else e[k]) for k in keys} for e in files]
    if len(got) != min(limit, len(expected)):
        return f"{len(got)} entries, want {min(limit, len(expected))}"
    names = [e["fname"] for e in got]
    if names != [e["fname"] for e in expected][: len(got)]:
        return f"names out of order or not the first {limit}: {names}"
    # (Entries that differ only in fields the answer does not show, such
    # as a content root, look alike: compare as multisets.)
    want = Counter(repr(e) for e in expected)
    for e, n in Counter(repr(e) for e in got).items():
        if n > want[e]:
            return f"entry {e} is not live, or listed too often"
    return None


def check_output_held(own_before: int, write: int, bound: int) -> str | None:
    """
    The bytes a source holds for one connection (written to its transport,
    not yet taken by the reader) never exceed the transport's bound plus
    one answer: the source starts writing an answer of its own only while
    what it wrote itself since the buffer last drained is within C{bound}
    (once over it, the transport pauses the source until it drains).
    Chunks that the transport pulls from a registered file producer are not
    the source's own writes: a pull producer is only asked for one when the
    buffer has drained (and once when it registers).

    @param own_before: the source's own bytes written since the last drain,
        before this write.
    @param write: the size of this write.
    @return: what is wrong, or None.
    """
    if own_before > bound:
        return (
            f"wrote {write} more bytes while holding {own_before} bytes of its own answers"
            f" (bound {bound}): held {own_before + write} > bound + one answer"
        )
    return None
