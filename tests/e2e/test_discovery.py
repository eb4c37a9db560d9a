"""
End to end: a real tracker announces itself on loopback multicast and a
real peer started without --tracker finds it, connects, publishes, and
remembers it for its next start.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.e2e.harness import Cluster

pytestmark = pytest.mark.timeout(120)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]



def start_peer(cluster: Cluster, name: str, udp: int, *extra: str) -> Any:
    repo = cluster.root / name
    repo.mkdir(exist_ok=True)
    return cluster.start(
        name,
        ["p2ppeer", "--hostname", name, "--repo", str(repo), "--listen", "127.0.0.1:0", "--discovery-port", str(udp),
         *extra],
        rf"p2ppeer {name} serving on port \d+",
    )


def test_peer_without_tracker_finds_it_on_the_lan_and_remembers_it(cluster: Cluster) -> None:
    udp = free_udp_port()
    cluster.start(
        "tracker",
        ["p2ptracker", "--listen", f"127.0.0.1:{cluster.port}", "--db", "memory", "--discovery-port", str(udp)],
        r"p2ptracker \S+ listening",
    )
    alice = start_peer(cluster, "alice", udp)
    alice.expect(rf"tracker link: connected to 127\.0\.0\.1:{cluster.port}\b", timeout=30)
    (cluster.root / "alice" / "notes.txt").write_text("hello from alice\n")
    alice.command("publish notes.txt notes.txt", r"published notes\.txt")
    remembered = json.loads((cluster.root / "alice" / ".p2p" / "tracker.json").read_text())
    assert (remembered["host"], remembered["port"]) == ("127.0.0.1", cluster.port)
    alice.kill()

    # Next start: the remembered tracker first, even where no announcement comes.
    silent = free_udp_port()
    alice = start_peer(cluster, "alice", silent)
    alice.expect(rf"tracker link: connected to 127\.0\.0\.1:{cluster.port}\b", timeout=30)


def test_no_announce_and_no_discover(cluster: Cluster) -> None:
    """
    A tracker with --no-announce is not found; a peer with --no-discover
    does not look (both fall back to 127.0.0.1:9999 only, where another
    tracker may or may not run on this host).
    """
    udp = free_udp_port()
    cluster.start(
        "tracker",
        ["p2ptracker", "--listen", f"127.0.0.1:{cluster.port}", "--db", "memory", "--discovery-port", str(udp),
         "--no-announce"],
        r"p2ptracker \S+ listening",
    )
    bob = start_peer(cluster, "bob", udp)
    m = bob.expect(r"tracker link: (cannot reach .*|connected to \S+)", timeout=30)
    assert str(cluster.port) not in m.group(1)
    if m.group(1).startswith("cannot reach"):
        assert f"no tracker announced itself on the LAN within 3 s (UDP port {udp})" in m.group(1)
    assert not (cluster.root / "bob" / ".p2p" / "tracker.json").exists()
    bob.kill()

    announcing = Cluster(cluster.root / "second")
    (cluster.root / "second").mkdir()
    try:
        announcing.start(
            "tracker",
            ["p2ptracker", "--listen", f"127.0.0.1:{announcing.port}", "--db", "memory",
             "--discovery-port", str(udp)],
            r"p2ptracker \S+ listening",
        )
        carol = start_peer(announcing, "carol", udp, "--no-discover")
        m = carol.expect(r"tracker link: (cannot reach .*|connected to \S+)", timeout=30)
        assert str(announcing.port) not in m.group(1)
        assert "LAN" not in m.group(1)
    finally:
        announcing.stop()
