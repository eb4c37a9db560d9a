"""
End to end, with real ``twistd`` processes: hostnames are bound to the key
of the peer that first proved it (docs/protocol.md, "Signed hello").  An
impostor with another key cannot take a name, before or after the tracker
restarts; a seed client cannot displace the owner; ``fetch --from`` takes a
key fingerprint or ``IP:PORT``.
"""

from __future__ import annotations

import os
import stat

import pytest

from tests.e2e.harness import Cluster
from tests.tracker.test_integration import SeedClient

pytestmark = pytest.mark.timeout(180)



def test_impostor_refused_across_restart_and_from_forms(cluster: Cluster) -> None:
    tracker = cluster.start_tracker()
    alice = cluster.start_peer("alice")
    key_file = cluster.root / "alice" / ".p2p" / "identity.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    fingerprint = alice.command("status", r"^peer alice: p2p port (\d+), repo .*, key ([0-9a-f]{16})$")
    port, alice_key = int(fingerprint.group(1)), fingerprint.group(2)
    tracker.command("peers", rf"^alice\s.*\s{alice_key}$")
    (cluster.root / "alice" / "a.txt").write_bytes(b"from alice\n" * 1000)
    alice.command("publish a.txt a.txt", r"published a\.txt: created")

    # Another repository (another key) saying hello as alice is refused,
    # with both fingerprints and the remedy on an error line.
    (cluster.root / "mallory").mkdir()
    mallory = cluster.start(
        "mallory",
        ["p2ppeer", "--tracker", cluster.endpoint, "--hostname", "alice", "--repo", str(cluster.root / "mallory"),
         "--listen", "tcp:0:interface=127.0.0.1"],
        r"p2ppeer alice serving on port \d+",
    )
    line = mallory.expect(r"^error: tracker \S+ refused this peer's key: (.*)$").group(1)
    assert alice_key in line and "forget alice" in line
    mallory_key = mallory.command("status", r"key ([0-9a-f]{16})$").group(1)
    assert mallory_key in line and mallory_key != alice_key

    # A seed client on alice's port cannot displace her.
    seed = SeedClient(cluster.port)
    try:
        answer = seed.ask({"action": "hello", "hostname": "alice", "p2p_port": port})
        assert (answer["status"], answer["code"]) == ("error", "duplicate_session")
        # On another port it may join, marked unauthenticated.
        assert seed.ask({"action": "hello", "hostname": "alice", "p2p_port": 1})["status"] == "success"
        tracker.command("peers", r"^alice\s+127\.0\.0\.1:1\s.*unauthenticated$")
    finally:
        seed.close()

    # fetch --from by fingerprint and by IP:PORT.
    bob = cluster.start_peer("bob")
    bob.command(f"fetch a.txt --from {alice_key}", r"fetched a\.txt from alice: \d+ bytes, sha256 verified")
    os.unlink(cluster.root / "bob" / "a.txt")
    bob.command("unpublish a.txt", r"unpublished|not published")
    bob.command(f"fetch a.txt --from 127.0.0.1:{port}", r"fetched a\.txt from alice: \d+ bytes, sha256 verified")
    bob.command("fetch a.txt --from 127.0.0.1:1 --force", r"^error: 127\.0\.0\.1:1 does not share a\.txt")

    # The binding outlives the tracker: restart it while alice is away,
    # and the impostor still cannot take the name.
    mallory.kill()
    alice.kill()
    assert cluster.tracker is not None
    cluster.tracker.proc.kill()
    cluster.tracker.wait(10)
    tracker = cluster.start_tracker()
    mallory = cluster.start(
        "mallory2",
        ["p2ppeer", "--tracker", cluster.endpoint, "--hostname", "alice", "--repo", str(cluster.root / "mallory"),
         "--listen", "tcp:0:interface=127.0.0.1"],
        r"p2ppeer alice serving on port \d+",
    )
    line = mallory.expect(r"^error: tracker \S+ refused this peer's key: (.*)$").group(1)
    assert alice_key in line
    tracker.command("ping alice", r"^alice: offline$")

    # The admin forgets the binding: now the other key may bind the name.
    tracker.command("forget alice", rf"^alice: forgot key {alice_key};")
    mallory.expect(r"tracker link: connected", timeout=40)
    tracker.command("peers", rf"^alice\s.*\s{mallory_key}$")
