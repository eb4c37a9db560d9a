"""
The SQL the PostgreSQL store runs: schema, migrations, writes, snapshots and
direct reads.  Constants only, no I/O.

Every statement takes its values as psycopg2 parameters (C{%(name)s}); the
only text ever pasted into SQL is the constant notification channel.

Each write is a single statement (or a single multi-statement string, which
PostgreSQL runs as one implicit transaction), so a write needs one round
trip and no client-side BEGIN/COMMIT, and a connection lost mid-write leaves
nothing half done.  The store sends the writes issued while a batch is in
flight together, as one multi-statement query (one round trip, one commit).  Each write also sends exactly one notification on
L{CHANNEL} carrying the writer's token, committed atomically with it; see
L{twistedp2p.tracker.store.postgres} for the payloads.
"""

from __future__ import annotations

from twistedp2p.tracker.store.schema import LATEST_SCHEMA_VERSION as LATEST

#: The LISTEN/NOTIFY channel every tracker sharing the database uses.
CHANNEL = "twistedp2p_index"

#: Largest notification payload we send (PostgreSQL's limit is 8000 bytes).
MAX_PAYLOAD = 7900

#: Key of the transaction-level advisory lock serialising schema changes
#: between trackers starting at the same time ("p2pschem" in ASCII).
SCHEMA_LOCK = 0x7032707363686D

# -- schema --------------------------------------------------------------------

#: Creates the version table (if missing) and reads the version, under the
#: schema lock: 0 means an empty database.
READ_VERSION = f"""
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
SELECT coalesce(max(version), 0) FROM schema_version;
"""

#: The latest schema, idempotent: creates what is missing (tables, indexes,
#: the version row) and leaves the rest.  Run without parameters (so a % is
#: a plain character).  Run on empty databases and, to restore an index
#: dropped by hand, on every start at the latest version.
#:
#: Version 1 is the schema brief's; version 2 adds C{publications.root} and
#: C{publications.piece_size} (as the SQLite store does).
#:
#: The trigram index serves catalogue searches (LIKE and regular
#: expressions on the lower-cased fname).  It needs the pg_trgm extension;
#: where that cannot be created the schema is complete without it and
#: searches scan.
CREATE = f"""
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS trackers (
    tracker_id TEXT PRIMARY KEY,
    started_at DOUBLE PRECISION,
    lease_expires DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    tracker_id TEXT NOT NULL,
    hostname TEXT NOT NULL,
    ip TEXT NOT NULL,
    p2p_port INTEGER NOT NULL,
    version INTEGER NULL,
    connected_at DOUBLE PRECISION NOT NULL,
    fingerprint TEXT NULL);
CREATE TABLE IF NOT EXISTS host_keys (
    hostname TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    bound_at DOUBLE PRECISION NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_hostname ON sessions (hostname);
CREATE INDEX IF NOT EXISTS sessions_tracker ON sessions (tracker_id);
CREATE TABLE IF NOT EXISTS publications (
    seq BIGSERIAL PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    fname TEXT NOT NULL,
    lname TEXT NOT NULL,
    file_size BIGINT NULL,
    last_modified TEXT NULL,
    sha256 TEXT NULL,
    root TEXT NULL,
    piece_size INTEGER NULL,
    UNIQUE (session_id, fname));
CREATE INDEX IF NOT EXISTS publications_fname ON publications (fname, seq);
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION pg_trgm;
        EXCEPTION WHEN insufficient_privilege OR undefined_file OR feature_not_supported THEN
            RAISE NOTICE 'pg_trgm unavailable (%): catalogue searches will scan', SQLERRM;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX IF NOT EXISTS publications_fname_trgm
            ON publications USING gin (lower(fname) gin_trgm_ops);
    END IF;
END
$$;
INSERT INTO schema_version (version)
SELECT {LATEST} WHERE NOT EXISTS (SELECT 1 FROM schema_version);
"""

#: Version 1 to 2: the content root and its piece size.  Idempotent, and a
#: no-op on a database another tracker migrated meanwhile.
MIGRATE_1_2 = f"""
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
ALTER TABLE publications
    ADD COLUMN IF NOT EXISTS root TEXT NULL,
    ADD COLUMN IF NOT EXISTS piece_size INTEGER NULL;
UPDATE schema_version SET version = 2 WHERE version = 1;
"""

#: version -> script bringing a database from that version to a later one
#: (each takes the schema lock and is idempotent).  Version 0 is an empty
#: database, which gets the latest schema at once.
#: Version 2 to 3: hostname -> public key bindings (trust on first use)
#: and the fingerprint of each session's key.
MIGRATE_2_3 = f"""
SELECT pg_advisory_xact_lock({SCHEMA_LOCK});
CREATE TABLE IF NOT EXISTS host_keys (
    hostname TEXT PRIMARY KEY,
    public_key TEXT NOT NULL,
    bound_at DOUBLE PRECISION NOT NULL);
ALTER TABLE sessions ADD COLUMN IF NOT EXISTS fingerprint TEXT NULL;
UPDATE schema_version SET version = 3 WHERE version = 2;
"""

MIGRATIONS: dict[int, str] = {0: CREATE, 1: MIGRATE_1_2, 2: MIGRATE_2_3}

# -- tracker life cycle ----------------------------------------------------------

#: start(): (re)register this tracker with a fresh lease and drop the rows a
#: previous run of it left.  Other trackers' rows are untouched.
REGISTER = """
WITH up AS (
    INSERT INTO trackers (tracker_id, started_at, lease_expires)
    VALUES (%(me)s, %(now)s, %(expires)s)
    ON CONFLICT (tracker_id) DO UPDATE
        SET started_at = EXCLUDED.started_at, lease_expires = EXCLUDED.lease_expires
    RETURNING 1
), wipe AS (
    DELETE FROM sessions WHERE tracker_id = %(me)s RETURNING 1
)
SELECT (SELECT count(*) FROM wipe), pg_notify(%(channel)s, %(payload)s)
"""

#: stop(): sign off, so that other trackers forget this one at once instead
#: of when its lease passes.
SIGN_OFF = """
WITH gone AS (
    DELETE FROM trackers WHERE tracker_id = %(me)s RETURNING 1
), wipe AS (
    DELETE FROM sessions WHERE tracker_id = %(me)s RETURNING 1
)
SELECT pg_notify(%(channel)s, %(payload)s)
"""

#: renew(): extend this tracker's lease, delete trackers whose lease passed
#: and every session no live tracker owns.  Answers this tracker's previous
#: lease (NULL when its row was gone) and sends one C{t} notification
#: listing the trackers whose sessions went.
RENEW = """
WITH previous AS (
    SELECT lease_expires FROM trackers WHERE tracker_id = %(me)s
), up AS (
    INSERT INTO trackers (tracker_id, started_at, lease_expires)
    VALUES (%(me)s, %(now)s, %(expires)s)
    ON CONFLICT (tracker_id) DO UPDATE SET lease_expires = EXCLUDED.lease_expires
    RETURNING 1
), gone AS (
    DELETE FROM trackers
    WHERE tracker_id <> %(me)s AND (lease_expires IS NULL OR lease_expires < %(now)s)
    RETURNING tracker_id
), orphans AS (
    DELETE FROM sessions s
    WHERE s.tracker_id <> %(me)s AND NOT EXISTS (
        SELECT 1 FROM trackers t
        WHERE t.tracker_id = s.tracker_id AND t.lease_expires >= %(now)s)
    RETURNING s.tracker_id
), dead AS (
    SELECT tracker_id FROM gone UNION SELECT tracker_id FROM orphans
)
SELECT (SELECT lease_expires FROM previous),
       pg_notify(%(channel)s, 't ' || json_build_array(
           %(token)s::text, %(me)s::text, %(expires)s::float8,
           (SELECT coalesce(json_agg(tracker_id ORDER BY tracker_id), '[]'::json) FROM dead))::text)
"""

#: resync(): make this tracker's rows exactly the snapshot, in one
#: transaction, keeping the seq of every publication that did not change.
#: The arrays are parallel: one element per session, one per publication.
RESYNC = """
INSERT INTO trackers (tracker_id, started_at, lease_expires)
VALUES (%(me)s, %(now)s, %(expires)s)
ON CONFLICT (tracker_id) DO UPDATE SET lease_expires = EXCLUDED.lease_expires;
DELETE FROM sessions
WHERE tracker_id = %(me)s AND NOT (session_id = ANY (%(sids)s::text[]));
INSERT INTO sessions AS s (session_id, tracker_id, hostname, ip, p2p_port, version, connected_at,
                           fingerprint)
SELECT * FROM unnest(%(sids)s::text[], %(tids)s::text[], %(hostnames)s::text[], %(ips)s::text[],
                     %(ports)s::int[], %(versions)s::int[], %(connected)s::float8[],
                     %(fingerprints)s::text[])
ON CONFLICT (session_id) DO UPDATE SET
    tracker_id = EXCLUDED.tracker_id, hostname = EXCLUDED.hostname, ip = EXCLUDED.ip,
    p2p_port = EXCLUDED.p2p_port, version = EXCLUDED.version, connected_at = EXCLUDED.connected_at,
    fingerprint = EXCLUDED.fingerprint
WHERE (s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at, s.fingerprint)
    IS DISTINCT FROM (EXCLUDED.tracker_id, EXCLUDED.hostname, EXCLUDED.ip,
                      EXCLUDED.p2p_port, EXCLUDED.version, EXCLUDED.connected_at,
                      EXCLUDED.fingerprint);
DELETE FROM publications p
USING sessions s
WHERE s.session_id = p.session_id AND s.tracker_id = %(me)s
  AND NOT EXISTS (
      SELECT 1 FROM unnest(%(psids)s::text[], %(fnames)s::text[]) AS k (session_id, fname)
      WHERE k.session_id = p.session_id AND k.fname = p.fname);
INSERT INTO publications AS p
    (session_id, fname, lname, file_size, last_modified, sha256, root, piece_size)
SELECT u.session_id, u.fname, u.lname, u.file_size, u.last_modified, u.sha256, u.root, u.piece_size
FROM unnest(%(psids)s::text[], %(fnames)s::text[], %(lnames)s::text[], %(sizes)s::bigint[],
            %(mtimes)s::text[], %(shas)s::text[], %(roots)s::text[], %(pieces)s::int[])
     WITH ORDINALITY AS u (session_id, fname, lname, file_size, last_modified, sha256, root,
                           piece_size, n)
ORDER BY u.n
ON CONFLICT (session_id, fname) DO UPDATE SET
    seq = nextval('publications_seq_seq'), lname = EXCLUDED.lname,
    file_size = EXCLUDED.file_size, last_modified = EXCLUDED.last_modified,
    sha256 = EXCLUDED.sha256, root = EXCLUDED.root, piece_size = EXCLUDED.piece_size
WHERE (p.lname, p.file_size, p.last_modified, p.sha256, p.root, p.piece_size)
    IS DISTINCT FROM (EXCLUDED.lname, EXCLUDED.file_size, EXCLUDED.last_modified,
                      EXCLUDED.sha256, EXCLUDED.root, EXCLUDED.piece_size);
SELECT pg_notify(%(channel)s, %(payload)s);
"""

# -- writes ------------------------------------------------------------------------

ADD_SESSION = """
WITH up AS (
    INSERT INTO sessions AS s (session_id, tracker_id, hostname, ip, p2p_port, version, connected_at,
                               fingerprint)
    VALUES (%(sid)s, %(tid)s, %(hostname)s, %(ip)s, %(port)s, %(version)s, %(connected)s,
            %(fingerprint)s)
    ON CONFLICT (session_id) DO UPDATE SET
        tracker_id = EXCLUDED.tracker_id, hostname = EXCLUDED.hostname, ip = EXCLUDED.ip,
        p2p_port = EXCLUDED.p2p_port, version = EXCLUDED.version,
        connected_at = EXCLUDED.connected_at, fingerprint = EXCLUDED.fingerprint
    RETURNING 1
)
SELECT pg_notify(%(channel)s, %(payload)s)
"""

REMOVE_SESSION = """
WITH gone AS (DELETE FROM sessions WHERE session_id = %(sid)s RETURNING 1)
SELECT (SELECT count(*) FROM gone), pg_notify(%(channel)s, %(payload)s)
"""

#: Several sessions at once: the removals that follow each other in one
#: batch.  The store builds the payload, C{S-} and a list of C{[token,
#: session_id]} pairs, one per removal (see postgres.py).
REMOVE_SESSIONS = """
WITH gone AS (DELETE FROM sessions WHERE session_id = ANY (%(sids)s::text[]) RETURNING 1)
SELECT (SELECT count(*) FROM gone), pg_notify(%(channel)s, %(payload)s)
"""

#: Insert or replace; a replace takes a new seq.  The payload is spliced
#: around the seq the database assigns: C{head || seq || tail}.
PUT = """
WITH row AS (
    INSERT INTO publications AS p
        (session_id, fname, lname, file_size, last_modified, sha256, root, piece_size)
    VALUES (%(sid)s, %(fname)s, %(lname)s, %(size)s, %(mtime)s, %(sha)s, %(root)s, %(pieces)s)
    ON CONFLICT (session_id, fname) DO UPDATE SET
        seq = nextval('publications_seq_seq'), lname = EXCLUDED.lname,
        file_size = EXCLUDED.file_size, last_modified = EXCLUDED.last_modified,
        sha256 = EXCLUDED.sha256, root = EXCLUDED.root, piece_size = EXCLUDED.piece_size
    RETURNING p.seq
)
SELECT seq, pg_notify(%(channel)s, %(head)s || seq || %(tail)s) FROM row
"""

#: The notification carries the number of rows deleted (0 or 1) after the
#: session id and name: the writer's answer, which in a batch (see
#: L{twistedp2p.tracker.store.postgres}) only the notification brings back.
DELETE = """
WITH gone AS (
    DELETE FROM publications WHERE session_id = %(sid)s AND fname = %(fname)s RETURNING 1
), n AS (SELECT count(*) AS n FROM gone)
SELECT n.n, pg_notify(%(channel)s, 'p- ' || json_build_array(
    %(token)s::text, %(sid)s::text, %(fname)s::text, n.n)::text) FROM n
"""

#: A notification and nothing else: a barrier (see C{whenSynced}).
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

# -- the view's reads (on the LISTEN connection) ------------------------------------

_TRACKER_ROWS = "json_build_array(t.tracker_id, t.lease_expires)"
_SESSION_ROWS = (
    "json_build_array(s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version,"
    " s.connected_at, s.fingerprint) ORDER BY s.connected_at, s.session_id"
)
_PUBLICATION_ROWS = (
    "json_build_array(p.seq, p.session_id, p.fname, p.lname, p.file_size, p.last_modified,"
    " p.sha256, p.root, p.piece_size) ORDER BY p.seq"
)

#: Everything, as one consistent snapshot: three JSON arrays of rows.
SNAPSHOT = f"""
SELECT
    (SELECT coalesce(json_agg({_TRACKER_ROWS}), '[]'::json) FROM trackers t),
    (SELECT coalesce(json_agg({_SESSION_ROWS}), '[]'::json) FROM sessions s),
    (SELECT coalesce(json_agg({_PUBLICATION_ROWS}), '[]'::json) FROM publications p)
"""

#: One tracker's rows (after it resynced), as L{SNAPSHOT} does for all.
TRACKER_SNAPSHOT = f"""
SELECT
    (SELECT coalesce(json_agg({_TRACKER_ROWS}), '[]'::json)
     FROM trackers t WHERE t.tracker_id = %(tid)s),
    (SELECT coalesce(json_agg({_SESSION_ROWS}), '[]'::json)
     FROM sessions s WHERE s.tracker_id = %(tid)s),
    (SELECT coalesce(json_agg({_PUBLICATION_ROWS}), '[]'::json)
     FROM publications p JOIN sessions s ON s.session_id = p.session_id
     WHERE s.tracker_id = %(tid)s)
"""

#: One publication by seq (its notification was too long to carry it).
PUBLICATION_BY_SEQ = """
SELECT seq, session_id, fname, lname, file_size, last_modified, sha256, root, piece_size
FROM publications WHERE seq = %(seq)s
"""

# -- direct reads (bypassing the view: checks, tools) ------------------------------

_SOURCE_COLUMNS = """
SELECT s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at,
       s.fingerprint, p.seq, p.session_id, p.fname, p.lname, p.file_size, p.last_modified, p.sha256,
       p.root, p.piece_size
FROM publications p
JOIN sessions s ON s.session_id = p.session_id
LEFT JOIN trackers t ON t.tracker_id = s.tracker_id
WHERE (s.tracker_id = %(me)s OR t.lease_expires >= %(now)s)
"""

#: Served by the (fname, seq) index.
DB_SOURCES = _SOURCE_COLUMNS + " AND p.fname = %(fname)s ORDER BY p.seq LIMIT %(limit)s"

#: Served by the hostname index, then the (session_id, fname) unique index.
DB_HOST_FILES = _SOURCE_COLUMNS + " AND s.hostname = %(hostname)s ORDER BY p.seq"

#: Catalogue searches; served by the trigram index when there is one.
DB_CATALOGUE_ALL = _SOURCE_COLUMNS + " ORDER BY p.fname, p.seq"
DB_CATALOGUE_SUBSTRING = _SOURCE_COLUMNS + " AND lower(p.fname) LIKE %(like)s ORDER BY p.fname, p.seq"
DB_CATALOGUE_GLOB = _SOURCE_COLUMNS + " AND lower(p.fname) ~ %(regex)s ORDER BY p.fname, p.seq"
#: A folder listing (a pattern ending with "/"): the names starting with it, case counting.
DB_CATALOGUE_PREFIX = _SOURCE_COLUMNS + " AND p.fname LIKE %(like)s ORDER BY p.fname, p.seq"

DB_SESSIONS = """
SELECT s.session_id, s.tracker_id, s.hostname, s.ip, s.p2p_port, s.version, s.connected_at,
       s.fingerprint
FROM sessions s LEFT JOIN trackers t ON t.tracker_id = s.tracker_id
WHERE (s.tracker_id = %(me)s OR t.lease_expires >= %(now)s)
ORDER BY s.connected_at, s.session_id
"""

# -- key bindings (trust on first use) ------------------------------------------

#: Bind a hostname to a key unless it is bound; answers the key bound now
#: (none in the rare case that another tracker's binding committed while
#: this statement ran: run it again).
BIND_KEY = """
WITH ins AS (
    INSERT INTO host_keys (hostname, public_key, bound_at) VALUES (%(hostname)s, %(key)s, %(now)s)
    ON CONFLICT (hostname) DO NOTHING
    RETURNING public_key
)
SELECT public_key FROM ins
UNION ALL
SELECT public_key FROM host_keys WHERE hostname = %(hostname)s
LIMIT 1
"""

HOST_KEY = "SELECT public_key FROM host_keys WHERE hostname = %(hostname)s"

FORGET_KEY = "DELETE FROM host_keys WHERE hostname = %(hostname)s RETURNING 1"
