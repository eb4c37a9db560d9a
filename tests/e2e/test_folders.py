"""
End to end, folders: a real tracker and two real ``twistd p2ppeer``
processes driven through their shells over pipes.  alice ``publish docs``
(nested folders, a name with a space), bob ``fetch docs/``; then alice
changes a published file and the peer publishes it again on its own.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.timeout(120)

FILES = {
    "readme.txt": b"read me\n",
    "notes/my notes.txt": b"with a space in the name\n" * 100,
    "notes/deeper/data.bin": os.urandom(1_200_000),
    "empty.txt": b"",
}


@pytest.fixture
def cluster(tmp_path: Path):
    c = Cluster(tmp_path)
    try:
        yield c
    finally:
        c.stop()


def test_publish_folder_fetch_folder(cluster: Cluster) -> None:
    tracker = cluster.start_tracker()
    alice = cluster.start_peer("alice", "--watch-interval", "0.2")
    bob = cluster.start_peer("bob")
    docs = cluster.root / "alice" / "docs"
    for rel, data in FILES.items():
        (docs / rel).parent.mkdir(parents=True, exist_ok=True)
        (docs / rel).write_bytes(data)
    (docs / ".secret").write_bytes(b"hidden files are never published")

    total = sum(len(d) for d in FILES.values())
    m = alice.command("publish docs", r"^published docs: (\d+) files, (.+)$")
    assert m.group(1) == str(len(FILES))

    # The tracker lists the folder, in its admin shell too.
    tracker.send("files docs/notes/")
    tracker.expect(r"docs/notes/deeper/data\.bin")
    tracker.expect(r"'docs/notes/my notes\.txt'")

    m = bob.command("fetch docs/", r"^fetched docs/: (\d+) files, (.+), verified$", timeout=60)
    assert m.group(1) == str(len(FILES))
    for rel, data in FILES.items():
        got = cluster.root / "bob" / "docs" / rel
        assert got.read_bytes() == data, rel
    assert not (cluster.root / "bob" / "docs" / ".secret").exists()
    leftovers = [n for _, _, names in os.walk(cluster.root / "bob" / "docs") for n in names if n.startswith(".")]
    assert leftovers == []
    assert total == sum((cluster.root / "bob" / "docs" / rel).stat().st_size for rel in FILES)

    # bob shares them now: a second source for each.
    bob.send("search docs/notes/deeper/")
    row = bob.expect(r"^\s*(\S+ \S+)\s+(\d+)\s+([0-9a-f]{12})\s+docs/notes/deeper/data\.bin$")
    assert row.group(2) == "2"

    # A published file changed on disk is hashed and published again on its own.
    changed = docs / "readme.txt"
    changed.write_bytes(b"version two\n")
    alice.expect(r"^republished docs/readme\.txt \(changed on disk\)$", timeout=20)
    digest = hashlib.sha256(b"version two\n").hexdigest()
    bob.send("search readme")
    bob.expect(rf"^\s*12 B\s+1\s+{digest[:12]}\s+docs/readme\.txt$")

    # A deleted one is unpublished at once.
    (docs / "empty.txt").unlink()
    alice.expect(r"^notice: unpublished docs/empty\.txt: ", timeout=20)
