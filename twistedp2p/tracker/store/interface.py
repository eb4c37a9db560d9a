"""
The index a tracker keeps: which sessions are live and what each published.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class IIndexStore(Interface):
    """
    The tracker's index.  Every method returns a Deferred; none blocks the
    reactor thread.  Reads may be answered from memory (``fetch`` is the hot
    path), but every write reaches the backing database before its Deferred
    fires.

    A store fails with L{twistedp2p.errors.IndexUnavailable} when its
    database cannot be reached; it never fails with anything else for
    well-formed calls.

    Ordering: C{sources} and C{host_files} list publications oldest first,
    by a sequence number that every C{put} (insert or replace) takes anew.
    Only publications of sessions present in the store are ever returned.
    """

    schema_version = Attribute("The integer schema version this store writes.")

    def start():
        """
        Open the database, create or migrate the schema (idempotently), and
        drop records a previous run of this tracker left behind.

        @return: Deferred firing with None.
        """

    def stop():
        """
        Close the database.  @return: Deferred firing with None.
        """

    def add_session(session):
        """
        Record a live session (L{twistedp2p.tracker.model.Session}).
        Replaces a record with the same session_id.
        """

    def remove_session(session_id):
        """
        Forget a session and every publication it holds.  Removing an
        unknown session is not an error.  @return: Deferred firing None.
        """

    def put(session_id, publication):
        """
        Insert or replace the publication (L{Publication}) that session
        C{session_id} holds under C{publication.fname}.  The session must
        have been added.  @return: Deferred firing None.
        """

    def delete(session_id, fname):
        """
        Remove one publication.  @return: Deferred firing True if there was
        one, False otherwise.
        """

    def sources(fname, limit):
        """
        @return: Deferred firing a list of L{Source} for C{fname}, oldest
            publication first, at most C{limit}.
        """

    def host_files(hostname):
        """
        @return: Deferred firing a list of L{Source}, every publication of
            every live session whose hostname is C{hostname}, oldest first.
        """

    def catalogue(pattern, limit, after=None):
        """
        @param after: a L{twistedp2p.tracker.model.CatalogueKey}: only
            entries after it (the next page), or None.
        @return: Deferred firing a list of L{CatalogueEntry}: distinct
            (fname, file_size, sha256, root) whose fname matches C{pattern}
            (see L{twistedp2p.tracker.model.pattern_matcher}), in catalogue
            order (L{twistedp2p.tracker.model.catalogue_key}), at most
            C{limit}.
        """

    def sessions():
        """
        @return: Deferred firing a list of every live L{Session}, oldest
            first.
        """

    def renew():
        """
        Called by the tracker on every heartbeat round.  A store shared by
        several trackers renews this tracker's lease and forgets sessions of
        trackers whose lease expired; an embedded store does nothing.

        @return: Deferred firing True when the store lost (or may have lost)
            this tracker's records, e.g. after a database outage or a lapsed
            lease, so the tracker must call C{resync}; False otherwise.
        """

    def resync(snapshot):
        """
        Make the store hold exactly this tracker's live state: C{snapshot}
        is a list of C{(Session, [Publication, ...])} for every live
        session this tracker owns.  Records of this tracker not in the
        snapshot are removed.  @return: Deferred firing None.
        """

    def bind_key(hostname, key):
        """
        Trust on first use: bind C{hostname} to the public key C{key} (64
        hex digits, L{twistedp2p.identity}) unless it is bound already.
        Atomic, also between trackers sharing the database; bindings
        outlive sessions and tracker restarts.

        @return: Deferred firing the key the hostname is bound to now
            (C{key} if it was free, else the earlier one).
        """

    def host_key(hostname):
        """
        @return: Deferred firing the key C{hostname} is bound to, or None.
        """

    def forget_key(hostname):
        """
        Drop C{hostname}'s binding (the admin's C{forget}): the next key
        that says hello under it is bound.

        @return: Deferred firing True if there was one.
        """
