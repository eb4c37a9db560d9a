"""
The behaviour every L{IIndexStore} must have, as one test mixin.

Each store's test module pairs L{StoreContract} with a trial C{TestCase} and
a fixture::

    class SQLiteStoreTests(StoreContract, unittest.TestCase):
        def make_store(self):
            store = SQLiteStore(path, clock=reactor, tracker_id=self.tracker_id)
            self.addCleanup(store.stop)
            return store.start().addCallback(lambda _: store)
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks, maybeDeferred
from twisted.trial.unittest import SkipTest
from zope.interface.verify import verifyObject

from twistedp2p.tracker.model import CatalogueEntry, Publication, Session, Source
from twistedp2p.tracker.store.interface import IIndexStore

SHA_A = "a" * 64
SHA_B = "b" * 64


class StoreContract:
    """
    Tests of L{IIndexStore} through its Deferreds.

    Fixture contract, provided by the class this is mixed into (a trial
    C{TestCase}):

      - C{self.make_store()} returns a Deferred firing a B{started} store
        that is empty and owned by tracker C{self.tracker_id}.  The fixture
        registers the store's cleanup (C{stop}, deleting databases) itself
        with C{addCleanup}.
      - C{self.reopen_store(store)} stops C{store} and returns a Deferred
        firing a new started store for the same tracker id over the same
        file or database, as a restarted tracker would have.  A store with
        nothing that outlives it (memory) leaves C{reopen_store} as is: the
        test that needs it is skipped.

    Stores may keep records of other trackers (a shared database); these
    tests only create records of C{self.tracker_id}.
    """

    tracker_id = "c0ffee00"

    def reopen_store(self, store):
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------

    def session(self, hostname="lab-pc-01", port=40001, version=1, at=None, ip="10.0.0.1", fingerprint=None):
        """
        A new session of this tracker with a unique id.
        """
        n = self._sessions_made = getattr(self, "_sessions_made", 0) + 1
        return Session(
            session_id=f"{self.tracker_id}:{n}",
            hostname=hostname,
            ip=ip,
            p2p_port=port,
            version=version,
            connected_at=1_700_000_000.0 + n if at is None else at,
            tracker_id=self.tracker_id,
            fingerprint=fingerprint,
        )

    @staticmethod
    def pub(fname="notes.pdf", size=1024, sha=SHA_A, lname=None, mtime=1_764_000_000.5):
        return Publication(fname, lname or fname, size, mtime, sha)

    @inlineCallbacks
    def store_with(self, *sessions):
        store = yield self.make_store()
        for s in sessions:
            yield store.add_session(s)
        return store

    def hosts(self, sources):
        return [s.session.hostname for s in sources]

    # -- tests ---------------------------------------------------------------

    @inlineCallbacks
    def test_provides_interface(self):
        store = yield self.make_store()
        self.assertTrue(verifyObject(IIndexStore, store))
        self.assertIsInstance(store.schema_version, int)

    @inlineCallbacks
    def test_empty(self):
        store = yield self.make_store()
        self.assertEqual((yield store.sessions()), [])
        self.assertEqual((yield store.sources("notes.pdf", 10)), [])
        self.assertEqual((yield store.host_files("lab-pc-01")), [])
        self.assertEqual((yield store.catalogue("", 10)), [])
        self.assertFalse((yield store.delete("nobody", "notes.pdf")))

    @inlineCallbacks
    def test_sessions_oldest_first(self):
        late = self.session("b", at=2000.0)
        early = self.session("a", at=1000.0, version=None)
        store = yield self.store_with(late, early)
        self.assertEqual((yield store.sessions()), [early, late])

    @inlineCallbacks
    def test_add_session_replaces_same_id(self):
        s = self.session("a")
        store = yield self.store_with(s)
        changed = Session(s.session_id, "a", "10.9.9.9", 5000, 1, s.connected_at, s.tracker_id)
        yield store.add_session(changed)
        self.assertEqual((yield store.sessions()), [changed])

    @inlineCallbacks
    def test_remove_session(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        result = yield store.remove_session(a.session_id)
        self.assertIsNone(result)
        self.assertEqual((yield store.sessions()), [b])
        # Unknown: not an error.
        yield store.remove_session("no-such-session")
        yield store.remove_session(a.session_id)
        self.assertEqual((yield store.sessions()), [b])

    @inlineCallbacks
    def test_put_and_sources(self):
        a = self.session("a", version=1)
        store = yield self.store_with(a)
        p = self.pub()
        result = yield store.put(a.session_id, p)
        self.assertIsNone(result)
        sources = yield store.sources("notes.pdf", 10)
        self.assertEqual(len(sources), 1)
        self.assertIsInstance(sources[0], Source)
        self.assertEqual(sources[0].session, a)
        self.assertEqual(sources[0].publication, p)
        self.assertIsInstance(sources[0].seq, int)
        self.assertEqual((yield store.sources("other.pdf", 10)), [])

    @inlineCallbacks
    def test_fields_round_trip(self):
        """
        Every field of a publication comes back as it went in: None values,
        a big size, an ISO-8601 mtime (seed), a float mtime (native).
        """
        seed = self.session("seed-host", version=None)
        native = self.session("native-host")
        store = yield self.store_with(seed, native)
        seed_pub = Publication("a.bin", "C:/shared/a.bin", None, "2025-11-06T13:45:00Z", None)
        bare = Publication("b.bin", "b.bin")
        big = Publication("c.bin", "c.bin", 2**40 + 7, 1764000000.25, SHA_B)
        yield store.put(seed.session_id, seed_pub)
        yield store.put(seed.session_id, bare)
        yield store.put(native.session_id, big)
        for p, s in [(seed_pub, seed), (bare, seed), (big, native)]:
            [found] = yield store.sources(p.fname, 10)
            self.assertEqual(found.publication, p)
            self.assertEqual(found.session, s)

    @inlineCallbacks
    def test_sources_oldest_first_and_limit(self):
        a, b, c = self.session("a"), self.session("b"), self.session("c")
        store = yield self.store_with(a, b, c)
        for s in (b, c, a):
            yield store.put(s.session_id, self.pub())
        sources = yield store.sources("notes.pdf", 10)
        self.assertEqual(self.hosts(sources), ["b", "c", "a"])
        seqs = [s.seq for s in sources]
        self.assertEqual(seqs, sorted(seqs))
        self.assertEqual(len(set(seqs)), 3)
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 2))), ["b", "c"])
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 1))), ["b"])

    @inlineCallbacks
    def test_replace_takes_new_seq(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub(sha=SHA_A))
        yield store.put(b.session_id, self.pub(sha=SHA_A))
        before = yield store.sources("notes.pdf", 10)
        newer = self.pub(sha=SHA_B, size=99)
        yield store.put(a.session_id, newer)
        sources = yield store.sources("notes.pdf", 10)
        self.assertEqual(self.hosts(sources), ["b", "a"])
        self.assertEqual(sources[1].publication, newer)
        self.assertGreater(sources[1].seq, before[1].seq)

    @inlineCallbacks
    def test_one_publication_per_session_and_name(self):
        a = self.session("a")
        store = yield self.store_with(a)
        yield store.put(a.session_id, self.pub(size=1))
        yield store.put(a.session_id, self.pub(size=2))
        sources = yield store.sources("notes.pdf", 10)
        self.assertEqual([s.publication.file_size for s in sources], [2])

    @inlineCallbacks
    def test_delete(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub())
        yield store.put(b.session_id, self.pub())
        self.assertIs((yield store.delete(a.session_id, "notes.pdf")), True)
        self.assertIs((yield store.delete(a.session_id, "notes.pdf")), False)
        self.assertIs((yield store.delete(a.session_id, "other.pdf")), False)
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])
        yield store.delete(b.session_id, "notes.pdf")
        self.assertEqual((yield store.sources("notes.pdf", 10)), [])
        self.assertEqual((yield store.catalogue("", 10)), [])

    @inlineCallbacks
    def test_remove_session_drops_publications(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub())
        yield store.put(a.session_id, self.pub("other.txt"))
        yield store.put(b.session_id, self.pub())
        yield store.remove_session(a.session_id)
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])
        self.assertEqual((yield store.sources("other.txt", 10)), [])
        self.assertEqual((yield store.host_files("a")), [])
        # Coming back under the same id does not bring its records back.
        yield store.add_session(a)
        self.assertEqual((yield store.sources("other.txt", 10)), [])

    @inlineCallbacks
    def test_host_files(self):
        a1 = self.session("a", port=1)
        a2 = self.session("a", port=2)
        b = self.session("b")
        store = yield self.store_with(a1, a2, b)
        yield store.put(a2.session_id, self.pub("x"))
        yield store.put(b.session_id, self.pub("y"))
        yield store.put(a1.session_id, self.pub("z"))
        yield store.put(a2.session_id, self.pub("w"))
        files = yield store.host_files("a")
        self.assertEqual(
            [(f.session.p2p_port, f.publication.fname) for f in files],
            [(2, "x"), (1, "z"), (2, "w")],
        )
        self.assertEqual([f.publication.fname for f in (yield store.host_files("b"))], ["y"])
        self.assertEqual((yield store.host_files("nobody")), [])
        self.assertEqual((yield store.host_files("A")), [])

    @inlineCallbacks
    def test_catalogue_groups_contents(self):
        a, b, c = self.session("a"), self.session("b"), self.session("c")
        store = yield self.store_with(a, b, c)
        yield store.put(a.session_id, self.pub("notes.pdf", 10, SHA_A))
        yield store.put(b.session_id, self.pub("notes.pdf", 10, SHA_A))
        yield store.put(c.session_id, self.pub("notes.pdf", 20, SHA_B))
        yield store.put(c.session_id, self.pub("b.txt", 5, None))
        entries = yield store.catalogue("", 100)
        self.assertEqual(
            entries,
            [
                CatalogueEntry("b.txt", 5, None, 1, ("c",)),
                CatalogueEntry("notes.pdf", 10, SHA_A, 2, ("a", "b")),
                CatalogueEntry("notes.pdf", 20, SHA_B, 1, ("c",)),
            ],
        )
        self.assertEqual((yield store.catalogue(None, 100)), entries)
        self.assertEqual((yield store.catalogue("", 2)), entries[:2])
        self.assertEqual((yield store.catalogue("", 1)), entries[:1])
        yield store.remove_session(a.session_id)
        entries = yield store.catalogue("notes", 100)
        self.assertEqual(entries[0], CatalogueEntry("notes.pdf", 10, SHA_A, 1, ("b",)))

    @inlineCallbacks
    def test_catalogue_pages(self):
        """
        C{after}: the entries after a key (a page's cursor), in the same
        order, whatever the page size; a change between pages is seen.
        """
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        for i in range(7):
            yield store.put(a.session_id, self.pub(f"f{i}", 10, SHA_A))
        yield store.put(b.session_id, self.pub("f3", 20, SHA_B))
        whole = yield store.catalogue("", 100)
        self.assertEqual(len(whole), 8)
        for size in (1, 2, 3, 8):
            pages, after = [], None
            while True:
                page = yield store.catalogue("", size, after)
                pages += page
                if len(page) < size:
                    break
                after = page[-1].key
            self.assertEqual(pages, whole)
        self.assertEqual((yield store.catalogue("f", 100, whole[3].key)), whole[4:])
        yield store.put(b.session_id, self.pub("f9", 1, SHA_A))
        self.assertEqual([e.fname for e in (yield store.catalogue("", 100, whole[-1].key))], ["f9"])

    @inlineCallbacks
    def test_catalogue_patterns(self):
        a = self.session("a")
        store = yield self.store_with(a)
        for name in ["Report.PDF", "notes.pdf", "photo.jpg", "a_b%c.txt", "x[1].txt"]:
            yield store.put(a.session_id, self.pub(name))

        @inlineCallbacks
        def names(pattern):
            entries = yield store.catalogue(pattern, 100)
            return [e.fname for e in entries]

        self.assertEqual((yield names("*.pdf")), ["Report.PDF", "notes.pdf"])
        self.assertEqual((yield names("*.PDF")), ["Report.PDF", "notes.pdf"])
        self.assertEqual((yield names("report")), ["Report.PDF"])
        self.assertEqual((yield names("PHOTO")), ["photo.jpg"])
        self.assertEqual((yield names("?otes*")), ["notes.pdf"])
        self.assertEqual((yield names("pdf")), ["Report.PDF", "notes.pdf"])
        # Substring matching is literal: no SQL wildcards leak through.
        self.assertEqual((yield names("_b%")), ["a_b%c.txt"])
        self.assertEqual((yield names("%")), ["a_b%c.txt"])
        self.assertEqual((yield names("_")), ["a_b%c.txt"])
        self.assertEqual((yield names("x[[]1]*")), ["x[1].txt"])
        self.assertEqual((yield names("nothing")), [])

    @inlineCallbacks
    def test_catalogue_folder(self):
        """
        A pattern ending with "/" lists a folder: the names starting with
        it, exactly (case counts; wildcards are themselves).
        """
        a = self.session("a")
        store = yield self.store_with(a)
        for name in ["docs/a.txt", "docs/sub/my notes.txt", "Docs/b.txt", "mydocs/c.txt", "docs",
                     "d_cs/x", "d%cs/y", "a*b/z"]:
            yield store.put(a.session_id, self.pub(name))

        @inlineCallbacks
        def names(pattern):
            entries = yield store.catalogue(pattern, 100)
            found = [e.fname for e in entries]
            if hasattr(store, "direct"):
                direct = yield store.direct().catalogue(pattern, 100)
                self.assertEqual([e.fname for e in direct], found, pattern)
            return found

        self.assertEqual((yield names("docs/")), ["docs/a.txt", "docs/sub/my notes.txt"])
        self.assertEqual((yield names("docs/sub/")), ["docs/sub/my notes.txt"])
        self.assertEqual((yield names("Docs/")), ["Docs/b.txt"])
        self.assertEqual((yield names("d_cs/")), ["d_cs/x"])
        self.assertEqual((yield names("d%cs/")), ["d%cs/y"])
        self.assertEqual((yield names("a*b/")), ["a*b/z"])
        self.assertEqual((yield names("none/")), [])
        self.assertEqual((yield store.catalogue("docs/", 1))[0].fname, "docs/a.txt")

    @inlineCallbacks
    def test_unicode_names(self):
        s = self.session("máy-tính-07 日本")
        store = yield self.store_with(s)
        p = Publication("Bài giảng 日本語 ñ.pdf", "C:/tài liệu/Bài giảng.pdf", 7, None, None)
        yield store.put(s.session_id, p)
        [found] = yield store.sources("Bài giảng 日本語 ñ.pdf", 10)
        self.assertEqual(found.publication, p)
        self.assertEqual(found.session, s)
        [entry] = yield store.catalogue("日本", 10)
        self.assertEqual(entry.hostnames, ("máy-tính-07 日本",))
        [entry] = yield store.catalogue("BÀI*", 10)
        self.assertEqual(entry.fname, p.fname)
        self.assertEqual(len((yield store.host_files("máy-tính-07 日本"))), 1)

    @inlineCallbacks
    def test_renew(self):
        store = yield self.make_store()
        result = yield store.renew()
        self.assertIn(result, (True, False))

    @inlineCallbacks
    def test_resync_replaces_this_trackers_records(self):
        a, b, c = self.session("a"), self.session("b"), self.session("c")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub("keep"))
        yield store.put(a.session_id, self.pub("drop"))
        yield store.put(b.session_id, self.pub("gone-with-b"))
        snapshot = [(a, [self.pub("keep"), self.pub("new")]), (c, [self.pub("from-c")])]
        result = yield store.resync(snapshot)
        self.assertIsNone(result)
        self.assertEqual((yield store.sessions()), [a, c])
        self.assertEqual(self.hosts((yield store.sources("keep", 10))), ["a"])
        self.assertEqual(self.hosts((yield store.sources("new", 10))), ["a"])
        self.assertEqual(self.hosts((yield store.sources("from-c", 10))), ["c"])
        self.assertEqual((yield store.sources("drop", 10)), [])
        self.assertEqual((yield store.sources("gone-with-b", 10)), [])
        # Writes keep working after a resync, with fresh seqs.
        yield store.put(c.session_id, self.pub("keep"))
        sources = yield store.sources("keep", 10)
        self.assertEqual(self.hosts(sources), ["a", "c"])
        self.assertLess(sources[0].seq, sources[1].seq)
        yield store.resync([])
        self.assertEqual((yield store.sessions()), [])
        self.assertEqual((yield store.catalogue("", 10)), [])

    @inlineCallbacks
    def test_start_drops_previous_run(self):
        """
        A tracker that starts again over the same database finds none of the
        sessions or publications its previous run left behind.
        """
        store = yield self.make_store()
        a = self.session("a")
        yield store.add_session(a)
        yield store.put(a.session_id, self.pub())
        try:
            again = yield maybeDeferred(self.reopen_store, store)
        except NotImplementedError:
            raise SkipTest("this store keeps nothing across runs")
        self.assertEqual((yield again.sessions()), [])
        self.assertEqual((yield again.sources("notes.pdf", 10)), [])
        self.assertEqual((yield again.catalogue("", 10)), [])
        # And it works normally afterwards.
        b = self.session("b")
        yield again.add_session(b)
        yield again.put(b.session_id, self.pub())
        self.assertEqual(self.hosts((yield again.sources("notes.pdf", 10))), ["b"])


class KeyBindingContract:
    """
    Stores that keep hostname -> public key bindings (trust on first use,
    schema version 3) and each session's key fingerprint.  Mixed in with
    L{StoreContract}.
    """

    KEY_A = "a" * 64
    KEY_B = "b" * 64

    @inlineCallbacks
    def test_first_key_is_bound(self):
        store = yield self.make_store()
        self.assertIsNone((yield store.host_key("alice")))
        self.assertEqual((yield store.bind_key("alice", self.KEY_A)), self.KEY_A)
        # A second key under the same name gets the first one back.
        self.assertEqual((yield store.bind_key("alice", self.KEY_B)), self.KEY_A)
        self.assertEqual((yield store.bind_key("alice", self.KEY_A)), self.KEY_A)
        self.assertEqual((yield store.host_key("alice")), self.KEY_A)
        # Other names are independent.
        self.assertEqual((yield store.bind_key("bob", self.KEY_B)), self.KEY_B)

    @inlineCallbacks
    def test_forget_key(self):
        store = yield self.make_store()
        yield store.bind_key("alice", self.KEY_A)
        self.assertTrue((yield store.forget_key("alice")))
        self.assertFalse((yield store.forget_key("alice")))
        self.assertIsNone((yield store.host_key("alice")))
        self.assertEqual((yield store.bind_key("alice", self.KEY_B)), self.KEY_B)

    @inlineCallbacks
    def test_bindings_outlive_a_restart(self):
        """
        Unlike sessions, key bindings survive the tracker's restart: an
        impostor cannot take a name while its owner is away.
        """
        store = yield self.make_store()
        yield store.bind_key("alice", self.KEY_A)
        try:
            again = yield maybeDeferred(self.reopen_store, store)
        except NotImplementedError:
            raise SkipTest("this store keeps nothing across runs")
        self.assertEqual((yield again.bind_key("alice", self.KEY_B)), self.KEY_A)

    @inlineCallbacks
    def test_session_fingerprint_kept(self):
        store = yield self.make_store()
        a = self.session("alice", fingerprint="0123456789abcdef")
        b = self.session("bob")
        yield store.add_session(a)
        yield store.add_session(b)
        yield store.put(a.session_id, self.pub())
        yield store.put(b.session_id, self.pub())
        sources = yield store.sources("notes.pdf", 10)
        self.assertEqual([s.session.fingerprint for s in sources], ["0123456789abcdef", None])
        self.assertEqual(sources[0].to_wire()["fingerprint"], "0123456789abcdef")
        self.assertNotIn("fingerprint", sources[1].to_wire())
        self.assertEqual([s.fingerprint for s in (yield store.sessions())], ["0123456789abcdef", None])


class RootContract:
    """
    Stores that keep a publication's content root and piece size (schema
    version 2, docs/swarm.md).  Mixed in with L{StoreContract}; a store that
    does not keep them yet does not mix this in.
    """

    ROOT_A = "1" * 64
    ROOT_B = "2" * 64

    @inlineCallbacks
    def test_root_kept(self):
        a, b, c = self.session("a"), self.session("b"), self.session("c")
        store = yield self.store_with(a, b, c)
        with_root = Publication("f", "f", 1024, 1.0, SHA_A, self.ROOT_A, 262144)
        yield store.put(a.session_id, with_root)
        yield store.put(b.session_id, Publication("f", "f", 1024, 1.0, SHA_A))
        yield store.put(c.session_id, Publication("f", "f", 1024, 1.0, SHA_A, self.ROOT_A, 262144))
        sources = yield store.sources("f", 10)
        self.assertEqual(
            [(s.publication.root, s.publication.piece_size) for s in sources],
            [(self.ROOT_A, 262144), (None, None), (self.ROOT_A, 262144)],
        )
        self.assertEqual(sources[0].to_wire()["root"], self.ROOT_A)
        self.assertEqual(sources[0].to_wire()["piece_size"], 262144)
        self.assertNotIn("root", sources[1].to_wire())
        self.assertEqual((yield store.host_files("a"))[0].publication, with_root)

    @inlineCallbacks
    def test_catalogue_groups_by_root(self):
        a, b, c = self.session("a"), self.session("b"), self.session("c")
        store = yield self.store_with(a, b, c)
        yield store.put(a.session_id, Publication("f", "f", 1024, 1.0, SHA_A, self.ROOT_A, 262144))
        yield store.put(b.session_id, Publication("f", "f", 1024, 1.0, SHA_A, self.ROOT_A, 262144))
        yield store.put(c.session_id, Publication("f", "f", 1024, 1.0, SHA_A, self.ROOT_B, 524288))
        entries = yield store.catalogue("", 10)
        self.assertEqual(
            [(e.root, e.sources, e.hostnames) for e in entries],
            [(self.ROOT_A, 2, ("a", "b")), (self.ROOT_B, 1, ("c",))],
        )
        # The limit counts distinct contents.
        self.assertEqual(len((yield store.catalogue("", 1))), 1)


class RemovalContract:
    """
    Stores whose removals leave every answer at once, before their write
    completes (the spec: a disconnected or evicted peer's records leave
    every answer at once).  Mixed in with L{StoreContract}.
    """

    @inlineCallbacks
    def test_removed_session_leaves_answers_at_once(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub())
        yield store.put(a.session_id, self.pub("only-a.txt"))
        yield store.put(b.session_id, self.pub())
        removed = store.remove_session(a.session_id)
        # Whether or not the write is done yet, the answers no longer list a.
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])
        self.assertEqual((yield store.sources("only-a.txt", 10)), [])
        self.assertEqual((yield store.host_files("a")), [])
        self.assertEqual((yield store.sessions()), [b])
        self.assertEqual([e.fname for e in (yield store.catalogue("", 10))], ["notes.pdf"])
        self.assertIsNone((yield removed))
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])

    @inlineCallbacks
    def test_deleted_publication_leaves_answers_at_once(self):
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(a, b)
        yield store.put(a.session_id, self.pub())
        yield store.put(b.session_id, self.pub())
        deleted = store.delete(a.session_id, "notes.pdf")
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])
        self.assertEqual((yield store.host_files("a")), [])
        self.assertIs((yield deleted), True)

    @inlineCallbacks
    def test_addition_then_removal_issued_together(self):
        """
        A session (or publication) removed before its addition was written
        never shows up, neither in between nor afterwards.
        """
        a, b = self.session("a"), self.session("b")
        store = yield self.store_with(b)
        writes = [store.add_session(a), store.put(b.session_id, self.pub())]
        writes.append(store.remove_session(a.session_id))
        writes.append(store.delete(b.session_id, "notes.pdf"))
        self.assertEqual((yield store.sources("notes.pdf", 10)), [])
        for d in writes:
            yield d
        self.assertEqual((yield store.sessions()), [b])
        self.assertEqual((yield store.sources("notes.pdf", 10)), [])
        # Added again afterwards: back, as a new record.
        yield store.put(b.session_id, self.pub())
        self.assertEqual(self.hosts((yield store.sources("notes.pdf", 10))), ["b"])
