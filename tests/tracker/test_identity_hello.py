"""
Hostnames bound to keys (trust on first use): the registry's rules on a
L{task.Clock}, and the signed hello over L{StringTransport}.
"""

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import identity, wire
from twistedp2p.tracker.protocol import TrackerFactory
from twistedp2p.tracker.registry import Registry
from twistedp2p.tracker.store.memory import MemoryStore

from tests.tracker.helpers import ControlledStore, FakeLink, frame, frames

ALICE = identity.Identity.generate()
MALLORY = identity.Identity.generate()


class RegistryBindingTests(SynchronousTestCase):
    """
    L{Registry.hello} with keys (the signature is the protocol's job).
    """

    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = ControlledStore()
        self.registry = self.make_registry(self.store)

    def make_registry(self, store):
        return Registry(store, self.clock, "trk", heartbeat=30.0, misses=3, ping_timeout=5.0)

    def hello(self, hostname="alice", port=4000, ip="10.0.0.1", key=None, version=1, registry=None):
        link = FakeLink()
        registry = registry if registry is not None else self.registry
        return registry.hello(link, hostname, ip, port, version, key), link

    def test_first_key_binds_and_same_key_comes_back(self):
        d, _ = self.hello(key=ALICE.public_key)
        session = self.successResultOf(d)
        self.assertEqual(session.fingerprint, ALICE.fingerprint)
        self.assertTrue(session.authenticated)
        self.assertEqual(self.successResultOf(self.store.host_key("alice")), ALICE.public_key)
        # The owner again, on another port: fine.
        d, _ = self.hello(port=4001, key=ALICE.public_key)
        self.assertEqual(self.successResultOf(d).fingerprint, ALICE.fingerprint)

    def test_impostor_from_another_address_refused(self):
        """
        A second session from another address saying hello as alice with
        a different key is refused, whatever its port, and names both keys.
        """
        self.successResultOf(self.hello(key=ALICE.public_key)[0])
        for port in (4000, 4999):
            d, _ = self.hello(port=port, ip="10.6.6.6", key=MALLORY.public_key)
            failure = self.failureResultOf(d, wire.WireError)
            self.assertEqual(failure.value.code, "key_mismatch")
            self.assertIn(ALICE.fingerprint, failure.value.message)
            self.assertIn(MALLORY.fingerprint, failure.value.message)
            self.assertIn("forget alice", failure.value.message)
        self.assertEqual([p.session.ip for p in self.registry.peers()], ["10.0.0.1"])

    def test_impostor_refused_after_tracker_restart(self):
        """
        The binding lives in the store: a new registry over it (a restarted
        tracker) still refuses the impostor, though alice is not online.
        """
        store = MemoryStore("t")
        first = self.make_registry(store)
        self.successResultOf(self.hello(key=ALICE.public_key, registry=first)[0])
        restarted = self.make_registry(store)
        self.successResultOf(store.start())
        d, _ = self.hello(ip="10.6.6.6", key=MALLORY.public_key, registry=restarted)
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "key_mismatch")
        self.assertEqual(len(restarted), 0)
        self.assertEqual(self.successResultOf(self.hello(key=ALICE.public_key, registry=restarted)[0]).fingerprint,
                         ALICE.fingerprint)

    def test_forget_lets_a_new_key_bind(self):
        self.successResultOf(self.hello(key=ALICE.public_key)[0])
        self.assertTrue(self.successResultOf(self.registry.forget_key("alice")))
        self.assertFalse(self.successResultOf(self.registry.forget_key("alice")))
        d, _ = self.hello(port=4001, key=MALLORY.public_key)
        self.assertEqual(self.successResultOf(d).fingerprint, MALLORY.fingerprint)

    def test_seed_cannot_displace_an_authenticated_holder(self):
        """
        Not even by the holder's silence: an unauthenticated hello never
        evicts an authenticated session.
        """
        _, holder = self.hello(key=ALICE.public_key)
        for version in (None, 1):
            d, _ = self.hello(ip="10.0.0.1", version=version)
            failure = self.failureResultOf(d, wire.WireError)
            self.assertEqual(failure.value.code, "duplicate_session")
            self.assertIn("authenticated", failure.value.message)
        self.assertEqual(holder.pings, [])
        self.assertFalse(holder.closed)
        self.assertEqual(self.registry.peers()[0].session.fingerprint, ALICE.fingerprint)

    def test_authenticated_owner_replaces_an_unauthenticated_squatter(self):
        """
        A seed session squatting alice's hostname and port (say, after a
        tracker restart) is replaced at once by alice's signed hello.
        """
        _, squatter = self.hello(ip="10.6.6.6", version=None)
        self.successResultOf(self.registry.hello(FakeLink(), "alice", "10.6.6.6", 4001, 1, None))
        d, _ = self.hello(key=ALICE.public_key)
        self.assertEqual(self.successResultOf(d).fingerprint, ALICE.fingerprint)
        self.assertTrue(squatter.closed)

    def test_seed_holder_kept_against_another_address(self):
        """
        An unauthenticated hello from another address cannot evict a seed
        session; from the seed's own address (a reconnect) it replaces it.
        """
        _, holder = self.hello(version=None)
        d, _ = self.hello(ip="10.6.6.6", version=None)
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "duplicate_session")
        self.assertFalse(holder.closed)
        d, _ = self.hello(ip="10.0.0.1", version=None)
        self.successResultOf(d)
        self.assertTrue(holder.closed)


def _frame_answers(transport):
    out = frames(transport.value())
    transport.clear()
    return out


class SignedHelloProtocolTests(SynchronousTestCase):
    """
    The challenge and the signed hello on the wire.
    """

    def setUp(self):
        self.clock = Clock()
        self.store = MemoryStore("t")
        self.registry = Registry(self.store, self.clock, "trk", heartbeat=30.0, misses=2, ping_timeout=5.0)
        self.factory = TrackerFactory(self.registry, self.clock)

    def connect(self, ip="10.0.0.1"):
        proto = self.factory.buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", ip, 50000))
        proto.makeConnection(transport)
        return proto, transport

    def ask(self, conn, message):
        proto, transport = conn
        proto.dataReceived(frame(message))
        [answer] = _frame_answers(transport)
        return answer

    def signed_hello(self, conn, who, hostname="alice", port=4000, challenge=None):
        challenge = challenge or self.ask(conn, {"action": "challenge", "id": 1})
        signature = who.sign_hello(challenge["nonce"], challenge["tracker"], challenge["address"], hostname, port)
        return self.ask(conn, {"action": "hello", "hostname": hostname, "p2p_port": port, "version": 1, "id": 2,
                               "key": who.public_key, "signature": signature})

    def test_challenge_answer(self):
        answer = self.ask(self.connect(ip="10.1.2.3"), {"action": "challenge", "id": 7})
        self.assertEqual((answer["status"], answer["id"], answer["tracker"], answer["address"]),
                         ("success", 7, "trk", "10.1.2.3"))
        self.assertEqual(len(answer["nonce"]), 64)

    def test_signed_hello_welcomed_with_fingerprint(self):
        answer = self.signed_hello(self.connect(), ALICE)
        self.assertEqual((answer["status"], answer["fingerprint"]), ("success", ALICE.fingerprint))
        [row] = self.registry.peers()
        self.assertEqual(row.session.fingerprint, ALICE.fingerprint)

    def test_impostor_with_another_key_refused_on_the_wire(self):
        self.signed_hello(self.connect(), ALICE)
        answer = self.signed_hello(self.connect(ip="10.6.6.6"), MALLORY, port=4001)
        self.assertEqual((answer["status"], answer["code"], answer["id"]), ("error", "key_mismatch", 2))
        self.assertIn(ALICE.fingerprint, answer["message"])
        self.assertIn(MALLORY.fingerprint, answer["message"])

    def test_signature_without_challenge_refused(self):
        conn = self.connect()
        sig = ALICE.sign_hello("00" * 32, "trk", "10.0.0.1", "alice", 4000)
        answer = self.ask(conn, {"action": "hello", "hostname": "alice", "p2p_port": 4000, "version": 1,
                                 "key": ALICE.public_key, "signature": sig})
        self.assertEqual(answer["code"], "bad_signature")
        self.assertEqual(len(self.registry), 0)

    def test_replayed_signature_refused(self):
        """
        A signature copied from one connection is worthless on another
        (another nonce), and a nonce is good for one hello only.
        """
        first = self.connect()
        challenge = self.ask(first, {"action": "challenge", "id": 1})
        sig = ALICE.sign_hello(challenge["nonce"], challenge["tracker"], challenge["address"], "alice", 4000)
        hello = {"action": "hello", "hostname": "alice", "p2p_port": 4000, "version": 1, "id": 2,
                 "key": ALICE.public_key, "signature": sig}
        other = self.connect()
        self.ask(other, {"action": "challenge", "id": 1})
        self.assertEqual(self.ask(other, hello)["code"], "bad_signature")
        # Signed for another hostname, port, tracker or address: refused.
        for changed in ({"hostname": "bob"}, {"p2p_port": 4001}):
            third = self.connect()
            c = self.ask(third, {"action": "challenge", "id": 1})
            sig = ALICE.sign_hello(c["nonce"], c["tracker"], c["address"], "alice", 4000)
            self.assertEqual(self.ask(third, dict(hello, signature=sig, **changed))["code"], "bad_signature")
        fourth = self.connect()
        c = self.ask(fourth, {"action": "challenge", "id": 1})
        for tracker, address in (("other-tracker", c["address"]), (c["tracker"], "10.9.9.9")):
            sig = ALICE.sign_hello(c["nonce"], tracker, address, "alice", 4000)
            self.assertEqual(self.ask(fourth, dict(hello, signature=sig))["code"], "bad_signature")
        # The genuine one works once; the same frame again is already_registered.
        self.assertEqual(self.ask(first, hello)["status"], "success")

    def test_seed_hello_unchanged(self):
        conn = self.connect()
        answer = self.ask(conn, {"action": "hello", "hostname": "alice", "p2p_port": 4000})
        self.assertEqual(answer, {"status": "success", "message": "welcome alice"})
        self.assertIsNone(self.registry.peers()[0].session.fingerprint)

    def test_fetch_lists_fingerprint_of_authenticated_sources_only(self):
        alice = self.connect()
        self.signed_hello(alice, ALICE)
        seed = self.connect(ip="10.0.0.2")
        self.ask(seed, {"action": "hello", "hostname": "alice", "p2p_port": 4001})
        for conn in (alice, seed):
            self.ask(conn, {"action": "publish", "fname": "a.txt", "file_size": 1, "sha256": "a" * 64, "id": 3})
        asker = self.connect(ip="10.0.0.3")
        self.signed_hello(asker, MALLORY, hostname="mallory")
        answer = self.ask(asker, {"action": "fetch", "fname": "a.txt", "id": 4})
        entries = answer["peer_list"]
        self.assertEqual([e.get("fingerprint") for e in entries], [ALICE.fingerprint, None])
        self.assertNotIn("fingerprint", entries[1])
