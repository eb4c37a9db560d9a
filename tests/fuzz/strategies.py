"""
Hypothesis strategies for frames and byte streams.

Valid requests are drawn from small pools of names, so that connections
collide (same hostname and port, same shared name) often; mutations and
garbage are drawn from everything JSON and bytes can hold.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from hypothesis import strategies as st

from twistedp2p import wire

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4

# -- pools -------------------------------------------------------------------

HOSTNAMES = ["alpha", "beta", "Ünïcødé-höst", "h" * wire.MAX_HOSTNAME_CHARS]
PORTS = [1, 4000, 65535]
#: Shared names, the longest exactly MAX_FNAME_BYTES of UTF-8.
FNAMES = ["a", "notes.pdf", "é ü", "日本語.txt", "x" * 253 + "é"]
#: Drawn from for requests: the first names often, so sessions collide.
_fnames = st.sampled_from(FNAMES[:2] * 3 + FNAMES)
PATTERNS = ["", "a", "*", "*.PDF", "?", "[a-z]*", "[", "[!a]*", "]", "\\", "É", "*" * 40]
LNAMES = [None, "a", "/home/u/notes.pdf", "C:\\docs\\n.pdf", "ü" * 40]
SIZES = [None, 0, 10, 2**63 - 1]
MTIMES = [None, 0, 1764000000.5, "2024-05-01T10:00:00"]
SHAS = [None, SHA_A, SHA_B]
LIMITS = [None, 1, 2, wire.DEFAULT_LIMIT, wire.MAX_LIMIT]

request_ids = st.one_of(st.none(), st.integers(0, 2**53))


def _msg(action: str, request_id: int | None, **fields: Any) -> dict[str, Any]:
    message: dict[str, Any] = {"action": action}
    for name, value in fields.items():
        if value is not None:
            message[name] = value
    if request_id is not None:
        message["id"] = request_id
    return message


# -- valid tracker requests --------------------------------------------------


def hellos(versions=st.sampled_from([None, 1])) -> st.SearchStrategy[dict]:
    return st.builds(
        lambda h, p, v, i: _msg("hello", i, hostname=h, p2p_port=p, version=v),
        st.sampled_from(HOSTNAMES),
        st.sampled_from(PORTS),
        versions,
        request_ids,
    )


#: Content roots and piece sizes (docs/swarm.md): mostly both or neither.
ROOTS = st.sampled_from([(None, None), (None, None), (SHA_A, 1 << 20), (SHA_B, 1), (SHA_A, None)])

publishes = st.builds(
    lambda f, l, n, t, s, o, r, i: _msg(
        "publish", i, fname=f, lname=l, file_size=n, last_modified=t, sha256=s, allow_overwrite=o,
        root=r[0], piece_size=r[1],
    ),
    _fnames,
    st.sampled_from(LNAMES),
    st.sampled_from(SIZES),
    st.sampled_from(MTIMES),
    st.sampled_from(SHAS),
    st.sampled_from([None, False, True]),
    ROOTS,
    request_ids,
)

unpublishes = st.builds(lambda f, i: _msg("unpublish", i, fname=f), _fnames, request_ids)
fetches = st.builds(
    lambda f, n, i: _msg("fetch", i, fname=f, limit=n),
    _fnames,
    st.sampled_from(LIMITS),
    request_ids,
)
catalogue_requests = st.one_of(
    st.builds(lambda n, i: _msg("list_shared_files", i, limit=n), st.sampled_from(LIMITS), request_ids),
    st.builds(
        lambda p, n, i: _msg("search", i, pattern=p, limit=n),
        st.sampled_from(PATTERNS),
        st.sampled_from(LIMITS),
        request_ids,
    ),
)
discovers = st.builds(lambda h, i: _msg("discover", i, hostname=h), st.sampled_from(HOSTNAMES), request_ids)
pings = st.builds(lambda i: _msg("ping", i), request_ids)

tracker_requests: st.SearchStrategy[dict] = st.one_of(
    hellos(), publishes, publishes, unpublishes, fetches, catalogue_requests, discovers, pings
)

# -- mutation ----------------------------------------------------------------

#: Text that stresses validators: controls, surrogates, separators, RTL
#: marks, combining characters, very long strings.
edge_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            " ",
            "a/b",
            "a\\b",
            "..",
            "../../etc/passwd",
            ".hidden",
            " lead",
            "trail ",
            "nul\x00byte",
            "tab\there",
            "\u202eevil",
            "e\u0301",
            "\ud800",
            "\udfff",
            "\U0001f600",
            "\x7f",
            "\u2028",
            "x" * 256,
            "é" * 128,
            "h" * 70000,
        ]
    ),
)

edge_numbers = st.one_of(
    st.integers(),
    st.sampled_from(
        [-1, 0, 1, 65535, 65536, 2**31, 2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63), 10**30]
    ),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, -0.0, 1e308, 1.0, 5e-324]),
)

json_scalars = st.one_of(st.none(), st.booleans(), edge_numbers, edge_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.text(max_size=8).filter(lambda k: k != "status"), inner, max_size=4),
    ),
    max_leaves=12,
)

FIELD_NAMES = sorted(
    {"id", "action", "version"}
    | {name for spec in wire.TRACKER_REQUESTS.values() for name in spec}
    | {name for spec in wire.PEER_REQUESTS.values() for name in spec}
)


@st.composite
def mutated(draw: Any, base: st.SearchStrategy[dict]) -> dict:
    """
    A valid request with one to three fields replaced, removed or added.
    """
    message = dict(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "set", "drop", "extra", "action"]))
        if how == "set":
            message[draw(st.sampled_from(FIELD_NAMES))] = draw(json_values)
        elif how == "drop" and message:
            message.pop(draw(st.sampled_from(sorted(message))), None)
        elif how == "extra":
            message[draw(st.text(max_size=10).filter(lambda k: k != "status"))] = draw(json_values)
        else:
            message["action"] = draw(
                st.one_of(edge_text, st.sampled_from(sorted(wire.TRACKER_REQUESTS) + ["get", "get_file"]))
            )
    return message


# -- bodies and streams ------------------------------------------------------


def body_of(message: Any) -> bytes:
    """
    A frame body holding C{message} as JSON.  Python's encoder writes lone
    surrogates as escapes, which is what a hostile client would send.
    """
    return json.dumps(message).encode("ascii")


def frame(body: bytes) -> bytes:
    return struct.pack("!I", len(body)) + body


garbage_bodies = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"\xff\xfe",
            b"\xed\xa0\x80",  # an encoded surrogate: invalid UTF-8
            b"{",
            b"null",
            b"[]",
            b"[1, 2]",
            b'"text"',
            b"NaN",
            b'{"action": NaN}',
            b'{"action": "ping", "id": Infinity}',
            b'{"action": "hello", "hostname": "a", "p2p_port": 1e999}',
            b'{"action": "ping", "id": 1' + b"0" * 5000 + b"}",
            b"[" * 5000 + b"]" * 5000,
            b'{"a":' * 3000 + b"1" + b"}" * 3000,
            b'{"action": "ping"} trailing',
            b'{"action": "ping", "action": "hello"}',
            b"\xef\xbb\xbf{}",
            b'{"\\u0000": 1}',
            b'{"action": "pi\\u006eg"}',
        ]
    ),
    st.builds(body_of, json_values),
)


def request_bodies(requests: st.SearchStrategy[dict] = tracker_requests) -> st.SearchStrategy[bytes]:
    """
    Frame bodies: mostly valid requests, often mutated ones, some garbage.
    """
    return st.one_of(
        st.builds(body_of, requests),
        st.builds(body_of, requests),
        st.builds(body_of, mutated(requests)),
        garbage_bodies,
    )


#: Length prefixes a server must refuse (it closes the connection).
oversized_lengths = st.one_of(
    st.just(wire.MAX_REQUEST_FRAME + 1), st.integers(wire.MAX_REQUEST_FRAME + 1, 2**32 - 1)
)
