"""
The registry's rules, on a L{task.Clock} with fake links and stores.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.internet.task import Clock, LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from twistedp2p import wire
from twistedp2p.errors import IndexUnavailable
from twistedp2p.tracker.model import Publication
from twistedp2p.tracker.registry import Registry

from tests.tracker.helpers import SHA_A, SHA_B, ControlledStore, FakeLink


class RegistryTestBase(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1000)
        self.store = ControlledStore()
        self.probed = []
        self.port_open = True
        self.registry = Registry(
            self.store,
            self.clock,
            "trk",
            heartbeat=30.0,
            misses=3,
            ping_timeout=5.0,
            probe=self.probe,
        )
        self.events = []
        self.registry.subscribe(lambda kind, fields: self.events.append((kind, fields)))

    def probe(self, ip, port):
        self.probed.append((ip, port))
        if isinstance(self.port_open, Exception):
            return _failed(self.port_open)
        return succeed(self.port_open)

    def hello(self, hostname="h", port=4000, version=1, ip="10.0.0.1", link=None):
        link = link or FakeLink()
        self.clock.advance(1)
        session = self.successResultOf(self.registry.hello(link, hostname, ip, port, version))
        return session, link

    def kinds(self):
        return [k for k, _ in self.events]

    def sources(self, fname):
        return self.successResultOf(self.store.sources(fname, 100))

    def publish(self, sid, fname="notes.pdf", size=10, sha=SHA_A, lname=None, mtime=5.0, overwrite=False):
        return self.successResultOf(
            self.registry.publish(sid, fname, lname, size, mtime, sha, overwrite)
        )


def _failed(exc):
    d = Deferred()
    d.errback(exc)
    return d


class HelloTests(RegistryTestBase):
    def test_hello_registers(self):
        session, _ = self.hello("lab-pc", 4000, version=1, ip="10.1.2.3")
        self.assertEqual(session.session_id, "trk:1")
        self.assertEqual(
            (session.hostname, session.ip, session.p2p_port, session.version, session.tracker_id),
            ("lab-pc", "10.1.2.3", 4000, 1, "trk"),
        )
        self.assertEqual(session.connected_at, 1001.0)
        self.assertEqual(self.successResultOf(self.store.sessions()), [session])
        self.assertEqual(self.registry.session("trk:1"), session)
        self.assertEqual(len(self.registry), 1)
        self.assertEqual(self.events, [("session_up", {"session": session})])

    def test_session_ids_unique(self):
        a, _ = self.hello("a")
        b, _ = self.hello("b")
        self.assertNotEqual(a.session_id, b.session_id)
        self.assertTrue(b.session_id.startswith("trk:"))

    def test_same_hostname_other_port_coexists(self):
        a, _ = self.hello("h", 1)
        b, _ = self.hello("h", 2)
        self.assertEqual(len(self.registry), 2)

    def test_seed_holder_replaced_at_once(self):
        old, old_link = self.hello("h", 4000, version=None)
        self.publish(old.session_id, "a.txt", sha=None)
        new, _ = self.hello("h", 4000, version=None)
        self.assertTrue(old_link.closed)
        self.assertEqual(old_link.pings, [])
        self.assertIsNone(self.registry.session(old.session_id))
        self.assertEqual(self.successResultOf(self.store.sessions()), [new])
        self.assertEqual(self.sources("a.txt"), [])
        self.assertIn("evicted", self.kinds())
        down = [f for k, f in self.events if k == "session_down"]
        self.assertEqual(down[0]["session"], old)

    def test_native_holder_answering_refuses_new(self):
        old, old_link = self.hello("h", 4000)
        d = self.registry.hello(FakeLink(), "h", "10.0.0.2", 4000, 1)
        self.assertNoResult(d)
        self.assertEqual(len(old_link.pings), 1)
        self.clock.advance(1)
        old_link.answer_all()
        failure = self.failureResultOf(d, wire.WireError)
        self.assertEqual(failure.value.code, "duplicate_session")
        self.assertFalse(old_link.closed)
        self.assertEqual(self.successResultOf(self.store.sessions()), [old])
        self.assertEqual(len(self.registry), 1)

    def test_native_holder_silent_is_evicted(self):
        old, old_link = self.hello("h", 4000)
        self.publish(old.session_id)
        d = self.registry.hello(FakeLink(), "h", "10.0.0.2", 4000, 1)
        self.clock.advance(4.9)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        new = self.successResultOf(d)
        self.assertTrue(old_link.closed)
        self.assertEqual(new.ip, "10.0.0.2")
        self.assertEqual(self.successResultOf(self.store.sessions()), [new])
        self.assertEqual(self.sources("notes.pdf"), [])
        evicted = [f for k, f in self.events if k == "evicted"]
        self.assertEqual(evicted[0]["session"], old)
        self.assertIn("ping", evicted[0]["reason"])

    def test_native_holder_leaving_during_ping(self):
        old, old_link = self.hello("h", 4000)
        d = self.registry.hello(FakeLink(), "h", "10.0.0.2", 4000, 1)
        self.registry.disconnected(old.session_id)
        old_link.close()
        new = self.successResultOf(d)
        self.assertEqual([s.session_id for s in self.successResultOf(self.store.sessions())], [new.session_id])

    def test_two_contenders(self):
        """
        Two new hellos for a silent holder: the first takes over, the second
        then finds a live (answering) holder and is refused.
        """
        old, old_link = self.hello("h", 4000)
        link1, link2 = FakeLink(), FakeLink()
        d1 = self.registry.hello(link1, "h", "10.0.0.2", 4000, 1)
        d2 = self.registry.hello(link2, "h", "10.0.0.3", 4000, 1)
        self.clock.advance(5.1)
        done = [d for d in (d1, d2) if d.called]
        self.assertEqual(len(done), 1)
        winner = self.successResultOf(done[0])
        loser = d2 if done[0] is d1 else d1
        self.assertNoResult(loser)
        link1.answer_all()
        link2.answer_all()
        self.assertEqual(self.failureResultOf(loser, wire.WireError).value.code, "duplicate_session")
        self.assertEqual(self.successResultOf(self.store.sessions()), [winner])
        self.assertTrue(old_link.closed)

    def test_store_failure_leaves_nothing(self):
        self.store.failing = True
        d = self.registry.hello(FakeLink(), "h", "10.0.0.1", 4000, 1)
        self.failureResultOf(d, IndexUnavailable)
        self.assertEqual(len(self.registry), 0)
        self.store.failing = False
        self.hello("h", 4000)
        self.assertEqual(len(self.registry), 1)

    def test_disconnected_during_store_write(self):
        self.store.hold = True
        d = self.registry.hello(FakeLink(), "h", "10.0.0.1", 4000, 1)
        self.assertNoResult(d)
        self.registry.disconnected("trk:1")
        self.store.release()
        self.store.release()
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "not_registered")
        self.assertEqual(self.successResultOf(self.store.sessions()), [])

    def test_disconnected(self):
        s, _ = self.hello()
        self.publish(s.session_id)
        self.registry.disconnected(s.session_id)
        self.assertIsNone(self.registry.session(s.session_id))
        self.assertEqual(self.sources("notes.pdf"), [])
        self.assertEqual(self.events[-1], ("session_down", {"session": s, "reason": "connection closed"}))
        # Twice, or unknown: ignored.
        self.registry.disconnected(s.session_id)
        self.registry.disconnected("nope")
        self.assertEqual(self.kinds().count("session_down"), 1)


class PublishTests(RegistryTestBase):
    def setUp(self):
        super().setUp()
        self.native, _ = self.hello("n", 1, version=1)
        self.seed, _ = self.hello("s", 2, version=None)
        self.store.writes.clear()

    def test_created(self):
        self.assertEqual(self.publish(self.native.session_id), "created")
        [source] = self.sources("notes.pdf")
        self.assertEqual(source.publication, Publication("notes.pdf", "notes.pdf", 10, 5.0, SHA_A))
        self.assertEqual(self.registry.publications_of(self.native.session_id), [source.publication])
        self.assertEqual(self.events[-1][0], "publish")
        self.assertEqual(self.events[-1][1]["status"], "created")

    def test_unchanged_writes_nothing(self):
        self.publish(self.native.session_id)
        self.store.writes.clear()
        self.assertEqual(self.publish(self.native.session_id), "unchanged")
        self.assertEqual(self.publish(self.native.session_id, overwrite=True), "unchanged")
        self.assertEqual(self.store.writes, [])

    def test_conflict_changes_nothing(self):
        self.publish(self.native.session_id)
        self.store.writes.clear()
        self.assertEqual(self.publish(self.native.session_id, sha=SHA_B), "conflict")
        self.assertEqual(self.publish(self.native.session_id, size=11), "conflict")
        self.assertEqual(self.publish(self.native.session_id, mtime=6.0), "conflict")
        self.assertEqual(self.store.writes, [])
        [source] = self.sources("notes.pdf")
        self.assertEqual(source.publication.sha256, SHA_A)

    def test_updated_with_overwrite(self):
        self.publish(self.native.session_id)
        self.assertEqual(self.publish(self.native.session_id, sha=SHA_B, overwrite=True), "updated")
        [source] = self.sources("notes.pdf")
        self.assertEqual(source.publication.sha256, SHA_B)
        self.assertEqual(self.publish(self.native.session_id, sha=SHA_B), "unchanged")

    def test_native_lname_is_fname(self):
        self.publish(self.native.session_id, lname="/home/me/secret/notes.pdf")
        [source] = self.sources("notes.pdf")
        self.assertEqual(source.publication.lname, "notes.pdf")
        # A different lname alone is not a change for a native peer.
        self.assertEqual(self.publish(self.native.session_id, lname="other"), "unchanged")

    def test_seed_lname_kept(self):
        self.publish(self.seed.session_id, lname="C:/shared/notes.pdf", sha=None, mtime="2025-11-06T13:45:00Z")
        [source] = self.sources("notes.pdf")
        self.assertEqual(source.publication.lname, "C:/shared/notes.pdf")
        self.assertEqual(source.publication.last_modified, "2025-11-06T13:45:00Z")
        # Another local path is a different publication.
        self.assertEqual(
            self.publish(self.seed.session_id, lname="D:/notes.pdf", sha=None, mtime="2025-11-06T13:45:00Z"),
            "conflict",
        )

    def test_seed_without_lname(self):
        self.publish(self.seed.session_id, lname=None, sha=None)
        self.assertEqual(self.sources("notes.pdf")[0].publication.lname, "notes.pdf")

    def test_sessions_never_conflict_with_each_other(self):
        self.assertEqual(self.publish(self.native.session_id, sha=SHA_A), "created")
        self.assertEqual(self.publish(self.seed.session_id, sha=SHA_B), "created")
        self.assertEqual(len(self.sources("notes.pdf")), 2)

    def test_store_failure(self):
        self.store.failing = True
        self.failureResultOf(self.registry.publish(self.native.session_id, "a", None, 1, 1.0, SHA_A, False), IndexUnavailable)
        self.store.failing = False
        self.assertEqual(self.registry.publications_of(self.native.session_id), [])
        self.assertEqual(self.publish(self.native.session_id, "a"), "created")

    def test_not_registered(self):
        d = self.registry.publish("nope", "a", None, 1, 1.0, SHA_A, False)
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "not_registered")

    def test_unpublish(self):
        self.publish(self.native.session_id)
        self.assertIsNone(self.successResultOf(self.registry.unpublish(self.native.session_id, "notes.pdf")))
        self.assertEqual(self.sources("notes.pdf"), [])
        self.assertEqual(self.events[-1][0], "unpublish")
        d = self.registry.unpublish(self.native.session_id, "notes.pdf")
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "not_published")
        # Created again afterwards.
        self.assertEqual(self.publish(self.native.session_id), "created")

    def test_publication_removed_by_session_end_not_written_back(self):
        """
        A store write that completes after the session ended does not
        resurrect the publication in the registry.
        """
        self.store.hold = True
        d = self.registry.publish(self.native.session_id, "a", None, 1, 1.0, SHA_A, False)
        self.registry.disconnected(self.native.session_id)
        self.store.release()
        self.store.release()
        self.assertEqual(self.successResultOf(d), "created")
        self.assertEqual(self.registry.publications_of(self.native.session_id), [])
        self.assertEqual(self.sources("a"), [])


class FetchTests(RegistryTestBase):
    def setUp(self):
        super().setUp()
        self.a, _ = self.hello("a")
        self.b, _ = self.hello("b")
        self.c, _ = self.hello("c")

    def hosts(self, d):
        return [s.session.hostname for s in self.successResultOf(d)]

    def test_excludes_requester(self):
        for s in (self.a, self.b, self.c):
            self.publish(s.session_id)
        self.assertEqual(self.hosts(self.registry.fetch(self.a.session_id, "notes.pdf", 10)), ["b", "c"])
        self.assertEqual(self.hosts(self.registry.fetch(self.b.session_id, "notes.pdf", 10)), ["a", "c"])
        self.assertEqual(self.hosts(self.registry.fetch(self.a.session_id, "notes.pdf", 1)), ["b"])
        self.assertEqual(self.hosts(self.registry.fetch(self.b.session_id, "notes.pdf", 1)), ["a"])
        self.assertEqual(self.hosts(self.registry.fetch(self.b.session_id, "notes.pdf", 2)), ["a", "c"])

    def test_no_sources(self):
        self.assertEqual(self.successResultOf(self.registry.fetch(self.a.session_id, "x", 10)), [])
        self.publish(self.a.session_id, "x")
        self.assertEqual(self.successResultOf(self.registry.fetch(self.a.session_id, "x", 10)), [])

    def test_fetch_event(self):
        self.publish(self.b.session_id)
        self.registry.fetch(self.a.session_id, "notes.pdf", 10)
        self.assertEqual(self.events[-1][0], "fetch")
        self.assertEqual(self.events[-1][1]["sources"], 1)

    def test_fetch_event_elapsed(self):
        """
        The event says how long the lookup took, by the registry's clock.
        """
        self.publish(self.b.session_id)
        slow = Deferred()
        self.patch(self.store, "sources", lambda fname, limit: slow)
        d = self.registry.fetch(self.a.session_id, "notes.pdf", 10)
        self.clock.advance(0.25)
        slow.callback([])
        self.successResultOf(d)
        self.assertEqual(self.events[-1][0], "fetch")
        self.assertEqual(self.events[-1][1]["elapsed"], 0.25)

    def test_not_registered(self):
        d = self.registry.fetch("nope", "x", 10)
        self.assertEqual(self.failureResultOf(d, wire.WireError).value.code, "not_registered")

    def test_catalogue_and_discover(self):
        self.publish(self.a.session_id, "one.pdf")
        self.publish(self.b.session_id, "one.pdf")
        self.publish(self.b.session_id, "two.txt")
        entries = self.successResultOf(self.registry.catalogue("*.pdf", 10))
        self.assertEqual([(e.fname, e.sources) for e in entries], [("one.pdf", 2)])
        files = self.successResultOf(self.registry.discover("b"))
        self.assertEqual([f.publication.fname for f in files], ["one.pdf", "two.txt"])
        self.assertEqual(self.successResultOf(self.registry.discover("zz")), [])

    def test_peers(self):
        self.publish(self.b.session_id, "one")
        self.publish(self.b.session_id, "two")
        peers = self.registry.peers()
        self.assertEqual([p.session.hostname for p in peers], ["a", "b", "c"])
        self.assertEqual([p.files for p in peers], [0, 2, 0])
        self.assertEqual([p.missed for p in peers], [0, 0, 0])


class FetchNowTests(RegistryTestBase):
    """
    The synchronous fetch answers exactly what fetch does.
    """

    def setUp(self):
        super().setUp()
        self.store = ControlledStore(view=True)
        self.registry = Registry(self.store, self.clock, "trk")
        self.events = []
        self.registry.subscribe(lambda kind, fields: self.events.append((kind, fields)))
        self.a, _ = self.hello("a")
        self.b, _ = self.hello("b")
        self.c, _ = self.hello("c")
        for s in (self.a, self.b, self.c):
            self.publish(s.session_id)

    def test_same_as_fetch(self):
        for s in (self.a, self.b, self.c):
            for limit in (1, 2, 3, 10):
                for name in ("notes.pdf", "nothing"):
                    self.assertEqual(
                        self.registry.fetch_now(s.session_id, name, limit),
                        self.successResultOf(self.registry.fetch(s.session_id, name, limit)),
                    )
        self.assertEqual(
            [x.session.hostname for x in self.registry.fetch_now(self.b.session_id, "notes.pdf", 1)], ["a"]
        )

    def test_fetch_event(self):
        self.registry.fetch_now(self.a.session_id, "notes.pdf", 10)
        self.assertEqual(self.events[-1][0], "fetch")
        self.assertEqual(self.events[-1][1]["sources"], 2)

    def test_fetch_event_elapsed(self):
        view = self.store.read_view
        real = view.sources

        def slow(fname, limit):
            self.clock.advance(0.125)
            return real(fname, limit)

        self.patch(view, "sources", slow)
        self.registry.fetch_now(self.a.session_id, "notes.pdf", 10)
        self.assertEqual(self.events[-1][1]["elapsed"], 0.125)

    def test_not_registered(self):
        e = self.assertRaises(wire.WireError, self.registry.fetch_now, "nope", "x", 1)
        self.assertEqual(e.code, "not_registered")

    def test_no_view(self):
        registry = Registry(ControlledStore(), self.clock, "trk")
        self.assertIsNone(registry.fetch_now("any", "x", 1))


class HeartbeatTests(RegistryTestBase):
    """
    Heartbeats as the service runs them: L{Registry.heartbeat_tick} every
    tick, three ticks (slices) a round, so a tick is 10 s of a 30 s round.
    """

    def setUp(self):
        super().setUp()
        self.registry = Registry(self.store, self.clock, "trk", heartbeat=30.0, misses=3, heartbeat_slices=3)
        self.events = []
        self.registry.subscribe(lambda kind, fields: self.events.append((kind, fields)))

    def start_loop(self):
        self.assertEqual(self.registry.heartbeat_tick_interval, 10.0)
        loop = LoopingCall(self.registry.heartbeat_tick)
        loop.clock = self.clock
        loop.start(self.registry.heartbeat_tick_interval, now=False)
        self.addCleanup(loop.stop)

    def rounds(self, n=1):
        """
        Let C{n} heartbeat intervals pass, tick by tick.
        """
        self.clock.pump([10.0] * (3 * n))

    def test_answering_session_stays(self):
        s, link = self.hello("n")
        self.start_loop()
        for _ in range(10):
            self.rounds()
            self.assertEqual(link.answer_all(), 1)
        self.assertFalse(link.closed)
        self.assertEqual(self.registry.peers()[0].missed, 0)

    def test_silent_session_evicted_after_misses(self):
        s, link = self.hello("n")
        self.publish(s.session_id)
        self.start_loop()
        # Round 1 sends a ping; rounds 2 and 3 count misses 1 and 2.
        self.rounds(3)
        self.assertFalse(link.closed)
        self.assertEqual(self.registry.peers()[0].missed, 2)
        self.assertEqual(len(link.heartbeats), 3)
        self.rounds()
        self.assertTrue(link.closed)
        self.assertIsNone(self.registry.session(s.session_id))
        self.assertEqual(self.sources("notes.pdf"), [])
        [evicted] = [f for k, f in self.events if k == "evicted"]
        self.assertEqual(evicted["reason"], "missed 3 heartbeat pings")
        self.assertEqual(self.kinds()[-1], "session_down")

    def test_eviction_comes_misses_intervals_after_first_ping(self):
        """
        Each session is visited once per interval, at its own tick: the
        eviction comes exactly C{misses} intervals after its first ping.
        """
        s, link = self.hello("n")
        self.start_loop()
        while not link.heartbeats:
            self.clock.advance(10.0)
        first_ping = self.clock.seconds()
        while not link.closed:
            self.clock.advance(10.0)
        self.assertEqual(self.clock.seconds() - first_ping, 3 * 30.0)

    def test_late_answer_resets_misses(self):
        s, link = self.hello("n")
        self.start_loop()
        self.rounds(3)
        self.assertEqual(self.registry.peers()[0].missed, 2)
        self.assertTrue(link.answer_heartbeat(link.heartbeats[0]))
        self.assertEqual(self.registry.peers()[0].missed, 0)
        # Answering the others now tells nothing new.
        self.assertFalse(link.answer_heartbeat(link.heartbeats[0]))
        self.rounds(2)
        self.assertFalse(link.closed)

    def test_unknown_answers_ignored(self):
        s, link = self.hello("n")
        self.registry.heartbeat()
        [ping_id] = link.heartbeats
        self.assertFalse(link.answer_heartbeat(ping_id + 1))
        self.assertFalse(link.answer_heartbeat(ping_id - 1))
        self.assertTrue(link.answer_heartbeat(ping_id))
        self.assertFalse(link.answer_heartbeat(ping_id))
        self.registry.heartbeat()
        [again] = link.heartbeats
        self.registry.disconnected(s.session_id)
        self.assertFalse(link.answer_heartbeat(again))

    def test_link_that_cannot_send_counts_misses(self):
        s, link = self.hello("n")
        link.closed = True
        self.start_loop()
        self.rounds(3)
        self.assertIsNotNone(self.registry.session(s.session_id))
        self.rounds()
        self.assertIsNone(self.registry.session(s.session_id))

    def test_seed_sessions_not_pinged(self):
        s, link = self.hello("seed", version=None)
        self.start_loop()
        self.rounds(5)
        self.assertEqual(link.pings, [])
        self.assertEqual(link.heartbeats, [])
        self.assertFalse(link.closed)
        self.assertIsNotNone(self.registry.session(s.session_id))

    def test_pings_spread_over_the_round(self):
        """
        Each tick pings one slice of the sessions: a third of them here,
        and every session once a round.
        """
        links = [self.hello(f"n{i}")[1] for i in range(30)]
        self.start_loop()
        per_tick = []
        for _ in range(3):
            self.clock.advance(10.0)
            per_tick.append(sum(link.answer_all() for link in links))
        self.assertEqual(per_tick, [10, 10, 10])
        self.rounds()
        self.assertEqual([link.answer_all() for link in links], [1] * 30)

    def test_renew_once_per_round(self):
        renewals = []
        self.patch(self.store, "renew", lambda: renewals.append(self.clock.seconds()) or succeed(False))
        self.start_loop()
        start = self.clock.seconds()
        self.rounds(3)
        self.assertEqual([t - start for t in renewals], [30.0, 60.0, 90.0])

    def test_default_slices(self):
        """
        By default a tick comes every 0.02 s, at most 1000 a round.
        """
        for heartbeat, slices in [(60.0, 1000), (2.0, 100), (0.2, 10), (0.05, 2), (0.01, 1)]:
            registry = Registry(self.store, self.clock, "trk", heartbeat=heartbeat)
            self.assertEqual(registry.heartbeat_slices, slices)
            self.assertAlmostEqual(registry.heartbeat_tick_interval * slices, heartbeat)

    def test_rtt_and_last_seen(self):
        s, link = self.hello("n")
        self.registry.heartbeat()
        self.clock.advance(0.25)
        link.answer_all()
        [peer] = self.registry.peers()
        self.assertEqual(peer.rtt, 0.25)
        self.assertEqual(peer.last_seen, self.clock.seconds())

    def test_renew_false_no_resync(self):
        self.hello("n")
        self.successResultOf(self.registry.heartbeat())
        self.assertEqual(self.store.resyncs, [])

    def test_renew_true_resyncs_snapshot(self):
        a, _ = self.hello("a")
        b, _ = self.hello("b", version=None)
        self.publish(a.session_id, "x")
        self.publish(b.session_id, "y", sha=None)
        self.store.renew_result = True
        self.successResultOf(self.registry.heartbeat())
        [snapshot] = self.store.resyncs
        self.assertEqual(
            sorted((s.hostname, [p.fname for p in pubs]) for s, pubs in snapshot),
            [("a", ["x"]), ("b", ["y"])],
        )

    def test_renew_failure_logged_and_loop_survives(self):
        self.store.renew_result = IndexUnavailable("down")
        self.start_loop()
        self.rounds(2)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(
            [f for k, f in self.events if k == "store_error"],
            [{"what": "renewing the index", "error": "down"}] * 2,
        )

    def test_unexpected_renew_failure_logged(self):
        self.store.renew_result = RuntimeError("bug")
        self.successResultOf(self.registry.heartbeat())
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_renew_not_overlapping(self):
        slow = Deferred()
        self.store.renew_result = slow
        first = self.registry.heartbeat()
        self.store.renew_result = True
        self.successResultOf(self.registry.heartbeat())
        self.assertEqual(self.store.resyncs, [])
        slow.callback(False)
        self.successResultOf(first)


class EvictAndObserverTests(RegistryTestBase):
    def test_evict(self):
        s, link = self.hello()
        self.publish(s.session_id)
        self.successResultOf(self.registry.evict(s.session_id, "admin said so"))
        self.assertTrue(link.closed)
        self.assertEqual(self.sources("notes.pdf"), [])
        self.assertIsNone(self.successResultOf(self.registry.evict(s.session_id, "again")))

    def test_evict_store_failure_logged(self):
        """
        An unavailable index (a database outage) is one warning line, not
        an error with a traceback.
        """
        logged = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        s, link = self.hello()
        self.store.failing = True
        self.successResultOf(self.registry.evict(s.session_id, "x"))
        self.assertTrue(link.closed)
        self.assertEqual(self.flushLoggedErrors(IndexUnavailable), [])
        [warning] = [e for e in logged if e["log_format"].startswith("store failed")]
        self.assertEqual(warning["log_level"], LogLevel.warn)
        self.assertNotIn("log_failure", warning)
        self.assertEqual(
            formatEvent(warning), f"store failed removing session {s.session_id}: the test database is down"
        )
        [error] = [f for k, f in self.events if k == "store_error"]
        self.assertEqual(error, {"what": f"removing session {s.session_id}", "error": "the test database is down"})

    def test_evict_store_bug_logged_as_error(self):
        """
        Any other store failure is still an error, with its traceback.
        """
        s, link = self.hello()
        self.store.remove_session = lambda session_id: fail(RuntimeError("store bug"))
        self.successResultOf(self.registry.evict(s.session_id, "x"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        [error] = [f for k, f in self.events if k == "store_error"]
        self.assertEqual(error["error"], "store bug")

    def test_shutdown(self):
        links = [self.hello(h)[1] for h in "abc"]
        self.successResultOf(self.registry.shutdown())
        self.assertTrue(all(l.closed for l in links))
        self.assertEqual(len(self.registry), 0)
        self.assertEqual(self.successResultOf(self.store.sessions()), [])

    def test_broken_observer_does_not_break(self):
        def broken(kind, fields):
            raise ValueError("observer bug")

        self.registry.subscribe(broken)
        s, _ = self.hello()
        self.assertEqual(self.publish(s.session_id), "created")
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 2)
        self.registry.unsubscribe(broken)
        self.registry.unsubscribe(broken)
        self.publish(s.session_id, "b")
        self.assertEqual(self.flushLoggedErrors(ValueError), [])

    def test_rejected_event(self):
        self.registry.rejected("bad_json", "frame is not valid JSON", None, "1.2.3.4:5")
        self.assertEqual(
            self.events[-1],
            ("rejected", {"code": "bad_json", "message": "frame is not valid JSON", "session_id": None, "address": "1.2.3.4:5"}),
        )


class PingHostTests(RegistryTestBase):
    def test_unknown_host(self):
        self.assertEqual(self.successResultOf(self.registry.ping_host("nobody")), [])

    def test_native_answers(self):
        s, link = self.hello("h", 4000, ip="10.0.0.7")
        d = self.registry.ping_host("h")
        self.clock.advance(0.002)
        link.answer_all()
        [result] = self.successResultOf(d)
        self.assertEqual(result.session, s)
        self.assertAlmostEqual(result.rtt, 0.002)
        self.assertTrue(result.port_open)
        self.assertFalse(result.seed)
        self.assertEqual(self.probed, [("10.0.0.7", 4000)])

    def test_native_silent_port_closed(self):
        self.hello("h")
        self.port_open = False
        d = self.registry.ping_host("h")
        self.clock.advance(5.1)
        [result] = self.successResultOf(d)
        self.assertIsNone(result.rtt)
        self.assertFalse(result.port_open)

    def test_seed_and_probe_error(self):
        s, link = self.hello("h", version=None)
        self.port_open = OSError("boom")
        [result] = self.successResultOf(self.registry.ping_host("h"))
        self.assertTrue(result.seed)
        self.assertIsNone(result.rtt)
        self.assertFalse(result.port_open)
        self.assertEqual(link.pings, [])
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)

    def test_several_sessions_and_no_probe(self):
        self.registry.probe = None
        self.hello("h", 1, version=None)
        self.hello("h", 2, version=None)
        results = self.successResultOf(self.registry.ping_host("h"))
        self.assertEqual([r.session.p2p_port for r in results], [1, 2])
        self.assertEqual([r.port_open for r in results], [None, None])


class MetricsHookTests(RegistryTestBase):
    """
    The dashboard's metrics, fed by a real registry: the names they read
    (C{elapsed} on C{fetch}, C{store_error}) are the ones it emits.
    """

    def test_fetch_latency_and_store_errors(self):
        from twistedp2p.web.metrics import TrackerMetrics

        metrics = TrackerMetrics(self.registry)
        metrics.open()
        self.addCleanup(metrics.close)
        a, _ = self.hello("a")
        b, _ = self.hello("b")
        self.publish(b.session_id)
        self.successResultOf(self.registry.fetch(a.session_id, "notes.pdf", 10))
        sample = metrics.registry.get_sample_value
        self.assertEqual(sample("p2p_tracker_fetch_latency_seconds_count", {}), 1)
        self.store.failing = True
        self.registry.disconnected(a.session_id)
        self.assertEqual(self.flushLoggedErrors(IndexUnavailable), [])
        self.assertEqual(sample("p2p_tracker_store_errors_total", {}), 1)


class QuotaTests(SynchronousTestCase):
    """
    One session may hold at most C{max_files} publications (issue 15,
    item 10): a new name past the cap is refused with C{quota}; replacing
    or republishing one it holds is not, nor is another session.
    """

    def test_cap(self):
        from twistedp2p.tracker.store.memory import MemoryStore

        clock = Clock()
        store = MemoryStore()
        registry = Registry(store, clock, "trk", max_files=3)
        a = self.successResultOf(registry.hello(object(), "a", "10.0.0.1", 4000, 1))
        b = self.successResultOf(registry.hello(object(), "b", "10.0.0.2", 4000, 1))
        for i in range(3):
            self.assertEqual(self.successResultOf(registry.publish(a.session_id, f"f{i}", sha256=SHA_A)), "created")
        failure = self.failureResultOf(registry.publish(a.session_id, "f3", sha256=SHA_A), wire.WireError)
        self.assertEqual(failure.value.code, "quota")
        self.assertIn("3", failure.value.message)
        self.assertEqual(self.successResultOf(registry.publish(a.session_id, "f0", sha256=SHA_A)), "unchanged")
        self.assertEqual(
            self.successResultOf(registry.publish(a.session_id, "f0", sha256=SHA_B, allow_overwrite=True)), "updated"
        )
        self.assertEqual(self.successResultOf(registry.publish(b.session_id, "f3", sha256=SHA_A)), "created")
        self.assertEqual(len(registry.publications_of(a.session_id)), 3)
        self.assertEqual(len(store.index.publications_of(a.session_id)), 3)
        self.successResultOf(registry.unpublish(a.session_id, "f1"))
        self.assertEqual(self.successResultOf(registry.publish(a.session_id, "f3", sha256=SHA_A)), "created")

    def test_default(self):
        from twistedp2p.tracker.store.memory import MemoryStore

        self.assertEqual(Registry(MemoryStore(), Clock(), "trk").max_files, 10000)
