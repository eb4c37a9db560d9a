"""
Test doubles shared by the tracker tests.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionLost
from zope.interface import implementer

from twistedp2p import wire
from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.registry import ILink
from twistedp2p.tracker.store.interface import IIndexStore
from twistedp2p.tracker.store.memory import MemoryStore

SHA_A = "a" * 64
SHA_B = "b" * 64

#: The file a seed-protocol client publishes in the compatibility tests:
#: the fields its publish sends and its rows in a fetch's peer list repeat.
SEED_SAMPLE = {
    "lname": "/tmp/sample.txt",
    "fname": "sample.txt",
    "file_size": 10,
    "last_modified": "2024-11-04T09:00:00Z",
}


def seed_source_row(hostname: str, ip: str, port: int) -> dict[str, Any]:
    """
    The row of C{SEED_SAMPLE} in a fetch's peer list, published by the
    seed client C{hostname} at C{ip}:C{port} (no sha256, no version).
    """
    return {"hostname": hostname, "ip": ip, "port": port, **SEED_SAMPLE, "sha256": None, "version": None}


@implementer(ILink)
class FakeLink:
    """
    A connection as the registry sees it: pings wait until the test answers
    them.
    """

    def __init__(self) -> None:
        self.pings: list[Deferred] = []
        #: Ids of the heartbeat pings sent and not answered yet.
        self.heartbeats: list[int] = []
        self.closed = False
        self._answered: Any = None
        self._token: Any = None
        self._next_id = 0

    def ping(self) -> Deferred:
        if self.closed:
            return fail(ConnectionLost())
        d: Deferred = Deferred(lambda d: self.pings.remove(d) if d in self.pings else None)
        self.pings.append(d)
        return d

    def send_heartbeat(self, answered: Any, token: Any) -> int | None:
        if self.closed:
            return None
        self._next_id += 1
        self._answered = answered
        self._token = token
        self.heartbeats.append(self._next_id)
        return self._next_id

    def answer_heartbeat(self, ping_id: int) -> bool:
        """
        Answer one heartbeat ping (it may be an old one); return what the
        registry said about it.
        """
        if ping_id in self.heartbeats:
            self.heartbeats.remove(ping_id)
        return self._answered(self._token, ping_id)

    def answer_all(self) -> int:
        """
        Answer every waiting ping and heartbeat ping, oldest first.
        """
        pending, self.pings = self.pings, []
        for d in pending:
            d.callback({"status": "success", "message": "pong"})
        beats, self.heartbeats = self.heartbeats, []
        for ping_id in beats:
            self._answered(self._token, ping_id)
        return len(pending) + len(beats)

    def close(self) -> None:
        self.closed = True
        pending, self.pings = self.pings, []
        for d in pending:
            d.errback(ConnectionLost())


@implementer(IIndexStore)
class ControlledStore:
    """
    A L{MemoryStore} whose writes can be made to fail or to wait, and whose
    C{renew} answer the test chooses.  Counts the writes it accepts.
    """

    schema_version = 1

    def __init__(self, view: bool = False) -> None:
        self.inner = MemoryStore("t")
        if view:
            # Offer the synchronous read view (the registry's fast path).
            self.read_view = self.inner.index
        self.failing = False
        self.hold = False
        self.held: list[tuple[Deferred, Any]] = []
        self.writes: list[tuple[str, Any]] = []
        self.renew_result: Any = False
        self.resyncs: list[Any] = []

    def _write(self, name: str, *args: Any) -> Deferred:
        if self.failing:
            return fail(IndexUnavailable("the test database is down"))
        self.writes.append((name, args))
        if self.hold:
            d: Deferred = Deferred()
            self.held.append((d, lambda: getattr(self.inner, name)(*args)))
            return d
        return getattr(self.inner, name)(*args)

    def release(self) -> None:
        """
        Apply and fire every held write, in order.
        """
        held, self.held = self.held, []
        for d, apply in held:
            apply().chainDeferred(d)

    def start(self):
        return self.inner.start()

    def stop(self):
        return self.inner.stop()

    def add_session(self, session):
        return self._write("add_session", session)

    def remove_session(self, session_id):
        return self._write("remove_session", session_id)

    def put(self, session_id, publication):
        return self._write("put", session_id, publication)

    def delete(self, session_id, fname):
        return self._write("delete", session_id, fname)

    def sources(self, fname, limit):
        if self.failing:
            return fail(IndexUnavailable("the test database is down"))
        return self.inner.sources(fname, limit)

    def host_files(self, hostname):
        return self.inner.host_files(hostname)

    def catalogue(self, pattern, limit, after=None):
        return self.inner.catalogue(pattern, limit, after)

    def sessions(self):
        return self.inner.sessions()

    def renew(self):
        result = self.renew_result
        if isinstance(result, Deferred):
            return result
        if isinstance(result, Exception):
            return fail(result)
        return succeed(result)

    def resync(self, snapshot):
        self.resyncs.append(snapshot)
        return self.inner.resync(snapshot)

    def bind_key(self, hostname, key):
        return self._write("bind_key", hostname, key)

    def host_key(self, hostname):
        return self.inner.host_key(hostname)

    def forget_key(self, hostname):
        return self._write("forget_key", hostname)


def frame(message: Any) -> bytes:
    """
    One Int32 frame holding C{message} (a dict, or raw bytes as is).
    """
    data = message if isinstance(message, bytes) else wire.encode(message)
    return struct.pack("!I", len(data)) + data


def frames(data: bytes) -> list[dict]:
    """
    Split bytes written by a protocol into decoded messages.
    """
    out = []
    while data:
        (n,) = struct.unpack("!I", data[:4])
        out.append(wire.decode(data[4 : 4 + n]))
        data = data[4 + n :]
    return out


def temp_dir(case: Any) -> str:
    """
    A fresh directory under the system temp dir, removed after the test
    (trial's C{mktemp} would put it under the current directory, which under
    pytest is the source tree).
    """
    path = tempfile.mkdtemp(prefix="twistedp2p-test-")
    case.addCleanup(shutil.rmtree, path, True)
    return path


def temp_path(case: Any, name: str = "index.sqlite3") -> str:
    """
    A path that does not exist yet, in a directory removed after the test.
    """
    return os.path.join(temp_dir(case), name)
