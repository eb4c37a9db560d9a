"""
The wire format shared by the tracker and the peers.

Every control message is one Int32 frame (4-byte big-endian length) holding a
UTF-8 JSON object.  Requests carry ``"action"``, responses carry ``"status"``.
A native (versioned) client puts an integer ``"id"`` on each request and the
answer echoes it; a seed-protocol client (a ``hello`` without ``version``)
sends no ids and gets its answers in request order.

This module is pure: no reactor, no I/O.  ``docs/protocol.md`` is its prose.
"""

from __future__ import annotations

import json
import math
import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Mapping

PROTOCOL_VERSION = 1

#: Largest frame a server accepts from a client (requests are small).
MAX_REQUEST_FRAME = 64 * 1024
#: Largest frame a client accepts from a server (catalogues, peer lists).
MAX_REPLY_FRAME = 16 * 1024 * 1024

#: Longest shared name, in bytes of UTF-8.
MAX_FNAME_BYTES = 255
MAX_HOSTNAME_CHARS = 255
MAX_LNAME_CHARS = 4096
MAX_PATTERN_CHARS = 255
#: Longest catalogue cursor (the ``next`` of a page, given back as is).
MAX_CURSOR_CHARS = 2048
#: Default and largest number of entries in a peer list or a catalogue.
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000

# Status values.
SUCCESS = "success"
ERROR = "error"
BUSY = "busy"
CREATED = "created"
UPDATED = "updated"
UNCHANGED = "unchanged"
CONFLICT = "conflict"


class WireError(Exception):
    """
    A frame or message that does not follow the protocol.

    ``code`` is a stable machine-readable word that goes into the error
    response; ``message`` is for people.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# -- framing payload ---------------------------------------------------------


def encode(message: Mapping[str, Any]) -> bytes:
    """
    Serialise one message to the bytes that go inside a frame.
    """
    return _encode_text(message).encode("utf-8")


# One encoder for every message: json.dumps(..., separators=...) would build
# a new one per call (on every answer of the tracker and every get header).
_encode_text = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def decode(frame: bytes) -> dict[str, Any]:
    """
    Parse the bytes of one frame into a JSON object.

    @raise WireError: for invalid UTF-8, invalid JSON or a non-object.
    """
    try:
        text = frame.decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("bad_utf8", "frame is not valid UTF-8")
    try:
        # The scanner alone, for a frame that is exactly one JSON value (as
        # every client sends); anything else (white space around it, extra
        # data, an error) goes through the full decoder for its verdict.
        message, end = _scan_once(text, 0)
        if end != len(text):
            message = _decoder.decode(text)
    except StopIteration:
        try:
            message = _decoder.decode(text)
        except (ValueError, RecursionError):
            raise WireError("bad_json", "frame is not valid JSON")
    except (ValueError, RecursionError):
        raise WireError("bad_json", "frame is not valid JSON")
    if not isinstance(message, dict):
        raise WireError("not_object", "a message must be a JSON object")
    return message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# One decoder for every frame: json.loads(..., parse_constant=...) would
# build a new one per call, on the tracker's hot path.
_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_scan_once = _decoder.scan_once


# -- responses ---------------------------------------------------------------


def reply(status: str, request_id: Any = None, **fields: Any) -> dict[str, Any]:
    """
    Build a response, echoing C{request_id} when the request had one.
    """
    message: dict[str, Any] = {"status": status}
    if request_id is not None:
        message["id"] = request_id
    message.update(fields)
    return message


def error(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    """
    Build an error response.
    """
    return reply(ERROR, request_id, code=code, message=message)


# -- field checks ------------------------------------------------------------


def _has_control(text: str) -> bool:
    if text.isprintable():
        # printable text has no Cc or Cs characters: skip the slow scan
        return False
    return any(unicodedata.category(c) in ("Cc", "Cs") for c in text)


def fname_problem(fname: object) -> str | None:
    """
    Say what is wrong with a shared name, or return None when it is fine.

    A shared name is a relative path of one or more components separated
    by ``/`` (a published folder's files are ``DIR/relative/path``): 1 to
    255 bytes of UTF-8 in all, no ``\\``, no ``..`` anywhere, no control
    characters; no empty component (so no leading, trailing or doubled
    ``/``), and no component starting with ``.`` (hidden names are the
    peer's own: state, ``.part`` files) or starting or ending with white
    space.
    """
    if not isinstance(fname, str):
        return "a shared name must be a string"
    if not fname:
        return "a shared name must not be empty"
    if len(fname.encode("utf-8", "surrogatepass")) > MAX_FNAME_BYTES:
        return f"a shared name is at most {MAX_FNAME_BYTES} bytes of UTF-8"
    if "\\" in fname:
        return "a shared name must not contain '\\'"
    if ".." in fname:
        return "a shared name must not contain '..'"
    if _has_control(fname):
        return "a shared name must not contain control characters"
    if "/" not in fname:
        return _component_problem(fname, "a shared name")
    for part in fname.split("/"):
        if not part:
            return "a shared name must not start or end with '/' or contain '//'"
        problem = _component_problem(part, "a folder or file name in a shared name")
        if problem is not None:
            return problem
    return None


def _component_problem(part: str, what: str) -> str | None:
    if part.startswith("."):
        return f"{what} must not start with '.'"
    if part != part.strip():
        return f"{what} must not start or end with white space"
    return None


def folder_problem(folder: object) -> str | None:
    """
    Say what is wrong with a folder prefix (``DIR/``, as ``fetch DIR/``
    and folder listings take it), or return None when it is fine: a valid
    shared name followed by one ``/``.
    """
    if not isinstance(folder, str) or not folder.endswith("/"):
        return "a folder must end with '/'"
    problem = fname_problem(folder[:-1])
    if problem is not None:
        return problem.replace("a shared name", "a folder name", 1)
    return None


def is_sha256(value: object) -> bool:
    return (
        isinstance(value, str)
        and len(value) == 64
        and all(c in "0123456789abcdef" for c in value)
    )


Check = Callable[[str, Any], Any]


def _text(max_chars: int, allow_empty: bool = False) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str):
            raise WireError("bad_field", f"{name} must be a string")
        if not value and not allow_empty:
            raise WireError("bad_field", f"{name} must not be empty")
        if len(value) > max_chars:
            raise WireError("bad_field", f"{name} is longer than {max_chars}")
        if _has_control(value):
            raise WireError("bad_field", f"{name} contains control characters")
        return value

    return check


def _int(low: int, high: int) -> Check:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise WireError("bad_field", f"{name} must be an integer")
        if not low <= value <= high:
            raise WireError("bad_field", f"{name} must be between {low} and {high}")
        return value

    return check


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise WireError("bad_field", f"{name} must be true or false")
    return value


def _fname(name: str, value: Any) -> str:
    if type(value) is str and value in _good_fnames:
        return value
    problem = fname_problem(value)
    if problem is not None:
        raise WireError("bad_field", f"{name}: {problem}")
    if len(_good_fnames) >= _GOOD_FNAMES:
        _good_fnames.clear()
    _good_fnames[value] = None
    return value


#: Shared names that passed L{fname_problem} lately: the same few names are
#: looked up over and over.
_good_fnames: dict[str, None] = {}
_GOOD_FNAMES = 4096


def _sha256(name: str, value: Any) -> str:
    if not is_sha256(value):
        raise WireError("bad_field", f"{name} must be 64 lowercase hex digits")
    return value


def _hex(digits: int) -> Check:
    def check(name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) != digits or value.strip("0123456789abcdef"):
            raise WireError("bad_field", f"{name} must be {digits} lowercase hex digits")
        return value

    return check


def _timestamp(name: str, value: Any) -> float | str:
    """
    A modification time: seconds since the epoch (native peers) or an
    ISO-8601 string (the seed client).
    """
    if isinstance(value, bool):
        raise WireError("bad_field", f"{name} must be a number or a string")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise WireError("bad_field", f"{name} must be a finite time")
        return value
    if isinstance(value, str) and len(value) <= 64 and not _has_control(value):
        return value
    raise WireError("bad_field", f"{name} must be a number or a short string")


hostname = _text(MAX_HOSTNAME_CHARS)
port = _int(1, 65535)
size = _int(0, 2**63 - 1)
lname = _text(MAX_LNAME_CHARS)
pattern = _text(MAX_PATTERN_CHARS, allow_empty=True)
cursor = _text(MAX_CURSOR_CHARS)
limit = _int(1, MAX_LIMIT)
request_id_check = _int(0, 2**53)
#: A piece size (bytes): hashed into a root as 4 bytes, and kept by every
#: store in a signed 32-bit column.
piece_size = _int(1, 2**31 - 1)


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = True
    default: Any = None


def _opt(check: Check, default: Any = None) -> Field:
    return Field(check, required=False, default=default)


#: Requests a tracker accepts: action -> field specs.
TRACKER_REQUESTS: dict[str, dict[str, Field]] = {
    "hello": {
        "hostname": Field(hostname),
        "p2p_port": Field(port),
        "version": _opt(_int(1, 1000)),
        # A signed hello (twistedp2p.identity): the Ed25519 public key and
        # its signature over the challenge; the two come together.
        "key": _opt(_hex(64)),
        "signature": _opt(_hex(128)),
    },
    # The nonce a signed hello answers (twistedp2p.identity).
    "challenge": {},
    "publish": {
        "fname": Field(_fname),
        "lname": _opt(lname),
        "file_size": _opt(size),
        "last_modified": _opt(_timestamp),
        "allow_overwrite": _opt(_bool, False),
        "sha256": _opt(_sha256),
        # Content identity for multi-source downloads (docs/swarm.md); the
        # two come together or not at all.
        "root": _opt(_sha256),
        "piece_size": _opt(piece_size),
    },
    "unpublish": {"fname": Field(_fname)},
    "fetch": {"fname": Field(_fname), "limit": _opt(limit, DEFAULT_LIMIT)},
    # The same catalogue as search (the seed client sends no pattern).
    "list_shared_files": {"pattern": _opt(pattern, ""), "limit": _opt(limit, DEFAULT_LIMIT), "cursor": _opt(cursor)},
    "search": {"pattern": _opt(pattern, ""), "limit": _opt(limit, DEFAULT_LIMIT), "cursor": _opt(cursor)},
    "discover": {"hostname": Field(hostname)},
    "ping": {},
}

#: Requests a peer's P2P port accepts.
PEER_REQUESTS: dict[str, dict[str, Field]] = {
    # Native download: a byte range of a published file; length None = to EOF.
    "get": {
        "fname": Field(_fname),
        "offset": _opt(size, 0),
        "length": _opt(size),
    },
    # The piece list of a published file (docs/swarm.md).
    "pieces": {"fname": Field(_fname)},
    # Seed-protocol download: raw bytes of the published file until close.
    "get_file": {"lname": Field(lname)},
    "download": {"fname": Field(lname)},
    "ping": {},
}

#: Requests the tracker sends to a versioned peer on its tracker connection.
PEER_CONTROL_REQUESTS: dict[str, dict[str, Field]] = {"ping": {}}


@dataclass(slots=True)
class Request:
    action: str
    fields: dict[str, Any]
    #: The client's request id, or None (seed protocol).
    id: int | None


def parse_request(
    message: Mapping[str, Any], table: Mapping[str, Mapping[str, Field]]
) -> Request:
    """
    Check a decoded message against a table of requests.

    Unknown extra fields are ignored (forward compatibility); missing or
    mistyped ones are errors.

    @raise WireError: with code ``no_action``, ``unknown_action``,
        ``bad_field`` or ``bad_id``.
    """
    request_id = message.get("id")
    if request_id is not None:
        try:
            request_id_check("id", request_id)
        except WireError:
            raise WireError("bad_id", "id must be a non-negative integer")
    action = message.get("action")
    if not isinstance(action, str):
        raise WireError("no_action", "a request must have a string 'action'")
    spec = table.get(action)
    if spec is None:
        raise WireError("unknown_action", f"unknown action {action[:40]!r}")
    fields: dict[str, Any] = {}
    for name, field in spec.items():
        if name in message and message[name] is not None:
            fields[name] = field.check(name, message[name])
        elif field.required:
            raise WireError("bad_field", f"{action} needs {name!r}")
        else:
            fields[name] = field.default
    return Request(action, fields, request_id)


def safe_id(message: Mapping[str, Any]) -> int | None:
    """
    The request id of a message that failed validation, if it is usable.
    """
    value = message.get("id")
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 2**53:
        return value
    return None
