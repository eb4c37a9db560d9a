"""
End to end, folders: a real tracker and two real ``twistd p2ppeer``
processes driven through their shells over pipes.  alice ``publish docs``
(nested folders, a name with a space), bob ``fetch docs/``; then alice
changes a published file and the peer publishes it again on its own.
"""

from __future__ import annotations

import hashlib
import os

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.timeout(120)

FILES = {
    "readme.txt": b"read me\n",
    "notes/my notes.txt": b"with a space in the name\n" * 100,
    "notes/deeper/data.bin": os.urandom(1_200_000),
    "empty.txt": b"",
}



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


def test_fetch_folder_bar_on_a_terminal(cluster: Cluster) -> None:
    """
    bob runs on a real pseudo-terminal: ``fetch docs/`` draws one bar for
    the whole folder (bytes of all files against their total), then its
    summary line.
    """
    import fcntl
    import pty
    import select
    import signal
    import struct
    import termios
    import time

    from tests.e2e.harness import twistd

    cluster.start_tracker()
    alice = cluster.start_peer("alice", "--upload-rate", "4M")
    docs = cluster.root / "alice" / "docs"
    for i in range(4):
        path = docs / f"sub{i % 2}" / f"file {i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(1_500_000))
    alice.command("publish docs", r"^published docs: 4 files")
    (cluster.root / "bob").mkdir()
    args = [twistd(), "-n", "--logfile", str(cluster.root / "bob.log"), "p2ppeer",
            "--tracker", cluster.endpoint, "--hostname", "bob", "--repo", str(cluster.root / "bob"),
            "--listen", "tcp:0:interface=127.0.0.1"]
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execv(args[0], args)
    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        seen = b""

        def expect(needle: bytes, timeout: float = 30.0) -> None:
            nonlocal seen
            end = time.monotonic() + timeout
            while needle not in seen:
                left = end - time.monotonic()
                assert left > 0, f"no {needle!r} on the terminal; got {seen[-2000:]!r}"
                ready, _, _ = select.select([fd], [], [], min(left, 0.5))
                if ready:
                    seen += os.read(fd, 65536)

        expect(b"tracker link: connected")
        os.write(fd, b"fetch docs/\r")
        expect(b"fetched docs/: 4 files, 5.7 MiB, verified")
        text = seen.decode("utf-8", "replace").replace("\r", "\n")
        bars = [line for line in text.split("\n") if "docs/ [" in line]
        assert any(" of 5.7 MiB" in line and "%" in line for line in bars), bars
        for i in range(4):
            assert (cluster.root / "bob" / "docs" / f"sub{i % 2}" / f"file {i}.bin").stat().st_size == 1_500_000
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(fd)
