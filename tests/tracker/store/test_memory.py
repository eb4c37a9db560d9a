"""
L{MemoryStore} against the store contract, and L{MemoryIndex} directly.
"""

from twisted.trial import unittest

from twistedp2p.tracker.model import Publication, Session
from twistedp2p.tracker.store.memory import MemoryIndex, MemoryStore
from tests.tracker.store.contract import KeyBindingContract, RemovalContract, RootContract, StoreContract


class MemoryStoreTests(KeyBindingContract, RemovalContract, RootContract, StoreContract, unittest.TestCase):
    """
    The contract for L{MemoryStore}; it keeps nothing across runs, so the
    restart test is skipped.
    """

    def make_store(self):
        store = MemoryStore(tracker_id=self.tracker_id)
        self.addCleanup(store.stop)
        return store.start().addCallback(lambda _: store)

    def test_deferreds_already_fired(self):
        store = MemoryStore()
        s = session("s1", "a")
        for d in [
            store.start(),
            store.add_session(s),
            store.put("s1", Publication("x", "x")),
            store.sources("x", 1),
            store.renew(),
        ]:
            self.assertTrue(d.called)
        self.assertFalse(self.successResultOf(store.renew()))


def session(sid, hostname, at=0.0, port=1):
    return Session(sid, hostname, "10.0.0.1", port, 1, at, "t")


class MemoryIndexTests(unittest.SynchronousTestCase):
    """
    The synchronous index the SQL stores use as their read view.
    """

    def setUp(self):
        self.index = MemoryIndex()
        self.index.add_session(session("s1", "a", 1.0))
        self.index.add_session(session("s2", "b", 2.0))

    def test_put_returns_counter_seqs(self):
        self.assertEqual(self.index.put("s1", Publication("x", "x")), 1)
        self.assertEqual(self.index.put("s2", Publication("x", "x")), 2)
        self.assertEqual(self.index.put("s1", Publication("x", "x", 5)), 3)
        self.assertEqual([s.session.hostname for s in self.index.sources("x", 10)], ["b", "a"])

    def test_given_seq_used_and_counter_advances(self):
        self.assertEqual(self.index.put("s1", Publication("x", "x"), seq=40), 40)
        self.assertEqual(self.index.put("s2", Publication("y", "y")), 41)

    def test_given_seqs_out_of_order_still_sorted(self):
        """
        A database may hand seqs to the view out of order (two trackers
        writing at once): sources stay sorted by seq.
        """
        self.index.add_session(session("s3", "c", 3.0))
        self.index.put("s1", Publication("x", "x"), seq=10)
        self.index.put("s2", Publication("x", "x"), seq=5)
        self.index.put("s3", Publication("x", "x"), seq=7)
        self.assertEqual([s.seq for s in self.index.sources("x", 10)], [5, 7, 10])
        self.assertEqual([s.session.hostname for s in self.index.sources("x", 2)], ["b", "c"])

    def test_put_unknown_session(self):
        self.assertRaises(KeyError, self.index.put, "nope", Publication("x", "x"))

    def test_sources_are_copies(self):
        self.index.put("s1", Publication("x", "x"))
        first = self.index.sources("x", 10)
        first.clear()
        self.assertEqual(len(self.index.sources("x", 10)), 1)

    def test_sources_see_changes(self):
        self.index.put("s1", Publication("x", "x"))
        self.assertEqual(len(self.index.sources("x", 10)), 1)
        self.index.put("s2", Publication("x", "x"))
        self.assertEqual(len(self.index.sources("x", 10)), 2)
        self.index.delete("s1", "x")
        self.assertEqual([s.session.session_id for s in self.index.sources("x", 10)], ["s2"])
        self.index.remove_session("s2")
        self.assertEqual(self.index.sources("x", 10), [])

    def test_re_adding_session_updates_sources(self):
        self.index.put("s1", Publication("x", "x"))
        moved = Session("s1", "a2", "10.0.0.9", 9, 1, 1.0, "t")
        self.index.add_session(moved)
        [source] = self.index.sources("x", 10)
        self.assertEqual(source.session, moved)
        self.assertEqual(self.index.host_files("a"), [])
        self.assertEqual(len(self.index.host_files("a2")), 1)

    def test_hostname_shared_then_left(self):
        """
        Sessions joining and leaving one hostname: its files are always
        those of the sessions that still have it.
        """
        for sid, port in (("s3", 3), ("s4", 4)):
            self.index.add_session(Session(sid, "a", "10.0.0.1", port, 1, 3.0, "t"))
        for sid in ("s1", "s3", "s4"):
            self.index.put(sid, Publication(f"f-{sid}", f"f-{sid}"))

        def files():
            return [s.publication.fname for s in self.index.host_files("a")]

        self.assertEqual(files(), ["f-s1", "f-s3", "f-s4"])
        self.index.remove_session("s3")
        self.assertEqual(files(), ["f-s1", "f-s4"])
        self.index.remove_session("s1")
        self.assertEqual(files(), ["f-s4"])
        # Re-adding the remaining one, then another, then leaving again.
        self.index.add_session(Session("s4", "a", "10.0.0.1", 4, 1, 3.0, "t"))
        self.assertEqual(files(), ["f-s4"])
        self.index.add_session(session("s5", "a", 5.0))
        self.index.put("s5", Publication("f-s5", "f-s5"))
        self.assertEqual(files(), ["f-s4", "f-s5"])
        self.index.remove_session("s4")
        self.index.remove_session("s5")
        self.assertEqual(files(), [])
        # A session moving to another hostname leaves the old one.
        self.index.add_session(session("s6", "a", 6.0))
        self.index.add_session(session("s6", "c", 6.0))
        self.assertEqual(files(), [])
        self.assertEqual(len(self.index.host_files("c")), 0)
        self.assertEqual(self.index.host_files("b"), [])

    def test_session_lookup(self):
        self.assertEqual(self.index.session("s1").hostname, "a")
        self.assertIsNone(self.index.session("zz"))
        self.assertTrue(self.index.remove_session("s1"))
        self.assertFalse(self.index.remove_session("s1"))
        self.assertIsNone(self.index.session("s1"))
        self.assertEqual(len(self.index), 1)

    def test_publications_of(self):
        self.index.put("s1", Publication("x", "x"))
        self.index.put("s1", Publication("y", "y"))
        self.index.put("s1", Publication("x", "x", 3))
        self.assertEqual(
            self.index.publications_of("s1"),
            [Publication("y", "y"), Publication("x", "x", 3)],
        )
        self.assertEqual(self.index.publications_of("s2"), [])
        self.assertEqual(self.index.publications_of("zz"), [])

    def test_clear(self):
        self.index.put("s1", Publication("x", "x"))
        self.index.clear()
        self.assertEqual(self.index.sessions(), [])
        self.assertEqual(self.index.sources("x", 1), [])
        self.assertEqual(self.index.catalogue("", 10), [])

    def test_catalogue_limit_over_many_names(self):
        for i in range(50):
            self.index.put("s1", Publication(f"f{i:02d}", "l", i))
        entries = self.index.catalogue("", 7)
        self.assertEqual([e.fname for e in entries], [f"f{i:02d}" for i in range(7)])
