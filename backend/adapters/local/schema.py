"""Schema of the local workspace database and its migrations.

The schema version is SQLite's ``user_version``. Migrations run in order, each in its own transaction, so a
workspace made by any earlier version of the kit opens without losing anything. A workspace from a newer
kit is refused rather than guessed at.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Sequence

from backend.adapters.local.schema_v6 import migrate_v6
from backend.errors import WorkspaceError

# "PIK1" in ASCII: marks the file as a kit workspace (PRAGMA application_id).
APPLICATION_ID = 0x50494B31

_V1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Raw bytes exactly as received. Immutable: the triggers refuse UPDATE and DELETE (and, with
-- recursive_triggers on, the delete inside INSERT OR REPLACE); the primary key refuses a second insert.
-- Rows are appended in rowid order (the bytes go in sequentially); only the key index is random.
CREATE TABLE raw (
    id        INTEGER PRIMARY KEY,
    key       TEXT NOT NULL UNIQUE,
    sha256    BLOB NOT NULL,
    size      INTEGER NOT NULL,
    stored_at TEXT NOT NULL,
    data      BLOB NOT NULL
);
-- A write of a taken key (or id) is skipped, row by row, before any conflict policy runs: INSERT OR
-- REPLACE from any SQLite client, with or without recursive_triggers, cannot replace stored bytes.
CREATE TRIGGER raw_no_overwrite BEFORE INSERT ON raw
WHEN EXISTS (SELECT 1 FROM raw WHERE key = NEW.key) OR EXISTS (SELECT 1 FROM raw WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER raw_no_update BEFORE UPDATE ON raw
BEGIN SELECT RAISE(ABORT, 'raw events are immutable: update refused'); END;
CREATE TRIGGER raw_no_delete BEFORE DELETE ON raw
BEGIN SELECT RAISE(ABORT, 'raw events are immutable: delete refused'); END;

-- Entity ids and (source, event_type, day) partitions are stored once and referred to by number: the
-- two event indexes then hold small integers, which roughly halves the cost of indexing an event.
CREATE TABLE entities (
    id        INTEGER PRIMARY KEY,
    entity_id TEXT NOT NULL UNIQUE
);
CREATE TABLE partitions (
    id         INTEGER PRIMARY KEY,
    source     TEXT NOT NULL,
    event_type TEXT NOT NULL,
    day        TEXT NOT NULL,
    UNIQUE (source, event_type, day)
);
CREATE TRIGGER entities_no_overwrite BEFORE INSERT ON entities
WHEN EXISTS (SELECT 1 FROM entities WHERE entity_id = NEW.entity_id)
  OR EXISTS (SELECT 1 FROM entities WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER partitions_no_overwrite BEFORE INSERT ON partitions
WHEN EXISTS (SELECT 1 FROM partitions WHERE source = NEW.source AND event_type = NEW.event_type
             AND day = NEW.day)
  OR EXISTS (SELECT 1 FROM partitions WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER entities_no_update BEFORE UPDATE ON entities
BEGIN SELECT RAISE(ABORT, 'entities are append-only: update refused'); END;
CREATE TRIGGER entities_no_delete BEFORE DELETE ON entities
BEGIN SELECT RAISE(ABORT, 'entities are append-only: delete refused'); END;
CREATE TRIGGER partitions_no_update BEFORE UPDATE ON partitions
BEGIN SELECT RAISE(ABORT, 'partitions are append-only: update refused'); END;
CREATE TRIGGER partitions_no_delete BEFORE DELETE ON partitions
BEGIN SELECT RAISE(ABORT, 'partitions are append-only: delete refused'); END;

-- One row per receipt of an event id: receipt 0 is the single ACCEPTED one, receipts 1, 2, 3... are the
-- DUPLICATE receipts in arrival order. The unique key (event_id, receipt) is what makes acceptance
-- unique (invariant 2) and lists an event's receipts. Times are integer milliseconds since the Unix epoch
-- (UTC), shown as fixed-precision strings; hashes are 32-byte blobs; s3_key is NULL when it is the
-- event's identity key (derived on read).
CREATE TABLE events (
    seq             INTEGER PRIMARY KEY,
    event_id        BLOB NOT NULL,
    receipt         INTEGER NOT NULL CHECK (receipt >= 0),
    entity          INTEGER NOT NULL REFERENCES entities (id),
    part            INTEGER NOT NULL REFERENCES partitions (id),
    event_ms        INTEGER NOT NULL,
    ingest_ms       INTEGER NOT NULL,
    ingest_lag_ms   INTEGER NOT NULL CHECK (ingest_lag_ms >= 0),
    clock_skew      INTEGER NOT NULL,
    payload_sha     BLOB NOT NULL,
    s3_key          TEXT,
    raw_sha         BLOB NOT NULL,
    raw_size        INTEGER NOT NULL,
    idempotency_key TEXT,
    UNIQUE (event_id, receipt)
);
CREATE INDEX events_by_entity ON events (entity, event_ms, event_id, receipt);
-- Lag is an INTEGER column, so the order is numeric (invariant 9).
CREATE INDEX events_by_lag ON events (part, ingest_lag_ms, seq);
CREATE TRIGGER events_no_overwrite BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE event_id = NEW.event_id AND receipt = NEW.receipt)
  OR EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event index is append-only: update refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event index is append-only: delete refused'); END;

-- Quarantine: what could not be accepted, with a bounded prefix of its bytes and the reason.
CREATE TABLE rejections (
    id          INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    reason      TEXT NOT NULL,
    origin      TEXT NOT NULL,
    line        INTEGER,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    data        BLOB NOT NULL,
    truncated   INTEGER NOT NULL,
    source      TEXT,
    event_type  TEXT,
    entity_id   TEXT
);
CREATE INDEX rejections_by_time ON rejections (received_at, id);
CREATE TRIGGER rejections_no_overwrite BEFORE INSERT ON rejections
WHEN EXISTS (SELECT 1 FROM rejections WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER rejections_no_update BEFORE UPDATE ON rejections
BEGIN SELECT RAISE(ABORT, 'the quarantine is append-only: update refused'); END;
CREATE TRIGGER rejections_no_delete BEFORE DELETE ON rejections
BEGIN SELECT RAISE(ABORT, 'the quarantine is append-only: delete refused'); END;
"""

# Version 2: where each receipt came from (the request's origin, e.g. ``file:events.jsonl``, and its line),
# so an investigator can tell which input delivered a duplicate. Receipts stored before have NULL here.
_V2 = """
ALTER TABLE events ADD COLUMN origin TEXT;
ALTER TABLE events ADD COLUMN line INTEGER;
"""

# Version 3: replay and aggregates (DESIGN invariants 4, 5, 6).
_V3 = """
-- The replay queue, with SQS semantics. A message is visible when visible_ms <= now; a receive hides it
-- for the visibility timeout, counts the receive and gives it a new receipt handle; a delete with the
-- current handle removes it. A visible message already received max_receives times moves to dead_letters
-- instead of being delivered. (A queue is consumed, so this table is not append-only.)
CREATE TABLE queue_messages (
    id             INTEGER PRIMARY KEY,
    message_id     TEXT NOT NULL UNIQUE,
    body           TEXT NOT NULL,
    sent_ms        INTEGER NOT NULL,
    visible_ms     INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    receipt_handle TEXT
);
CREATE INDEX queue_messages_by_visibility ON queue_messages (visible_ms, id);
CREATE TABLE dead_letters (
    id            INTEGER PRIMARY KEY,
    message_id    TEXT NOT NULL UNIQUE,
    body          TEXT NOT NULL,
    sent_ms       INTEGER NOT NULL,
    receive_count INTEGER NOT NULL,
    dead_ms       INTEGER NOT NULL
);
CREATE TRIGGER dead_letters_no_update BEFORE UPDATE ON dead_letters
BEGIN SELECT RAISE(ABORT, 'dead letters are kept as they died: update refused'); END;

-- The replay audit trail: one record per replay (the JSON of backend.model.ReplayAudit). Written once;
-- a RUNNING record may be finished once; nothing is deleted.
CREATE TABLE replay_audit (
    replay_id  TEXT NOT NULL UNIQUE,
    started_ms INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    record     TEXT NOT NULL
);
CREATE INDEX replay_audit_by_time ON replay_audit (started_ms, replay_id);
CREATE TRIGGER replay_audit_finish_once BEFORE UPDATE ON replay_audit
WHEN OLD.outcome <> 'RUNNING' OR NEW.replay_id <> OLD.replay_id OR NEW.started_ms <> OLD.started_ms
BEGIN SELECT RAISE(ABORT, 'a finished replay audit record is final: update refused'); END;
CREATE TRIGGER replay_audit_no_delete BEFORE DELETE ON replay_audit
BEGIN SELECT RAISE(ABORT, 'the replay audit trail is append-only: delete refused'); END;

-- Aggregate versions 1, 2, 3... per (entity, day, metric) (the JSON of backend.model.AggregateVersion).
-- Append-only, no overwrite and no gap: the database refuses version n unless n - 1 exists.
CREATE TABLE aggregate_versions (
    entity_id   TEXT NOT NULL,
    day         TEXT NOT NULL,
    metric      TEXT NOT NULL,
    version     INTEGER NOT NULL CHECK (version >= 1),
    inputs_hash TEXT NOT NULL,
    computed_ms INTEGER NOT NULL,
    record      TEXT NOT NULL,
    UNIQUE (entity_id, day, metric, version)
);
CREATE TRIGGER aggregate_versions_no_overwrite BEFORE INSERT ON aggregate_versions
WHEN EXISTS (SELECT 1 FROM aggregate_versions WHERE entity_id = NEW.entity_id AND day = NEW.day
             AND metric = NEW.metric AND version = NEW.version)
BEGIN SELECT RAISE(ABORT, 'aggregate versions are append-only: that version exists'); END;
CREATE TRIGGER aggregate_versions_no_gap BEFORE INSERT ON aggregate_versions
WHEN NEW.version > 1 AND NOT EXISTS (SELECT 1 FROM aggregate_versions WHERE entity_id = NEW.entity_id
             AND day = NEW.day AND metric = NEW.metric AND version = NEW.version - 1)
BEGIN SELECT RAISE(ABORT, 'aggregate versions are contiguous: the previous version is missing'); END;
CREATE TRIGGER aggregate_versions_no_update BEFORE UPDATE ON aggregate_versions
BEGIN SELECT RAISE(ABORT, 'aggregate versions are append-only: update refused'); END;
CREATE TRIGGER aggregate_versions_no_delete BEFORE DELETE ON aggregate_versions
BEGIN SELECT RAISE(ABORT, 'aggregate versions are append-only: delete refused'); END;

-- Input manifests, content-addressed by the inputs hash (zlib-compressed JSON); shared by every version
-- computed from the same input set.
CREATE TABLE aggregate_manifests (
    inputs_hash TEXT NOT NULL UNIQUE,
    entries     INTEGER NOT NULL,
    data        BLOB NOT NULL
);
CREATE TRIGGER aggregate_manifests_no_overwrite BEFORE INSERT ON aggregate_manifests
WHEN EXISTS (SELECT 1 FROM aggregate_manifests WHERE inputs_hash = NEW.inputs_hash)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER aggregate_manifests_no_update BEFORE UPDATE ON aggregate_manifests
BEGIN SELECT RAISE(ABORT, 'manifests are immutable: update refused'); END;
CREATE TRIGGER aggregate_manifests_no_delete BEFORE DELETE ON aggregate_manifests
BEGIN SELECT RAISE(ABORT, 'manifests are immutable: delete refused'); END;
"""

# Version 4: the lines of each origin, so that an interrupted ``pik ingest FILE`` resumes after what it
# stored (backend.ports.IngestLedger). Lines of a file arrive in order, so these indexes grow at their end.
_V4 = """
CREATE INDEX events_by_origin ON events (origin, line) WHERE origin IS NOT NULL;
CREATE INDEX rejections_by_origin ON rejections (origin, line);
"""

# Version 5: the overview's rollups (backend.adapters.local.overview_rollups). They are kept from the event
# index and the quarantine, which are append-only with growing row numbers: a watermark per table says how
# far they count, and they are brought up to date when read, never by ingest. Derived data: nothing here is
# a record of its own, so these tables are not guarded like the ones above.
_V5 = """
CREATE TABLE rollup_watermarks (
    name TEXT PRIMARY KEY,  -- 'events' (counted up to events.seq) or 'rejections' (rejections.id)
    last INTEGER NOT NULL
);
-- Receipts per (partition, event hour, arrival bucket, LAG_BUCKETS_MS bucket). arrival: -1 when ingested
-- before the event day ended, else how long after it, rounded down to its arrival bucket's lower bound.
CREATE TABLE rollup_hours (
    part      INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    arrival   INTEGER NOT NULL,
    lag       INTEGER NOT NULL,
    accepted  INTEGER NOT NULL,
    duplicate INTEGER NOT NULL,
    skewed    INTEGER NOT NULL,
    max_lag   INTEGER NOT NULL,  -- the largest lag of the accepted events (0 without one)
    PRIMARY KEY (part, hour, arrival, lag)
) WITHOUT ROWID;
-- Accepted events per (event day number, entity, arrival bucket).
CREATE TABLE rollup_entity_days (
    day      INTEGER NOT NULL,
    entity   INTEGER NOT NULL,
    arrival  INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    skewed   INTEGER NOT NULL,
    PRIMARY KEY (day, entity, arrival)
) WITHOUT ROWID;
-- Quarantined requests per (receive day, source, type, reason); source and type may be unknown (NULL).
CREATE TABLE rollup_rejections (
    day        TEXT NOT NULL,
    source     TEXT,
    event_type TEXT,
    reason     TEXT NOT NULL,
    count      INTEGER NOT NULL
);
CREATE UNIQUE INDEX rollup_rejections_key ON rollup_rejections (
    day, source IS NULL, ifnull(source, ''), event_type IS NULL, ifnull(event_type, ''), reason
);
"""

# Version 7: the replay queue's bodies in a table of their own. A receive rewrites each message's row (its
# visibility, count and token), and a delete drops it: with the body beside them, a 300k-message drain
# rewrote 130 MB of rows, twice. The rows left are small; a message's body goes with its row (the trigger).
# message_id is 128 random bits drawn at send, unique by construction: its unique index cost a third of a
# drain's deletes (random inserts and deletes in a b-tree), so the rebuilt table has none.
_V7 = """
CREATE TABLE queue_bodies (
    id   INTEGER PRIMARY KEY,  -- the message's queue_messages.id
    body TEXT NOT NULL
);
INSERT INTO queue_bodies (id, body) SELECT id, body FROM queue_messages;
CREATE TABLE queue_messages_v7 (
    id             INTEGER PRIMARY KEY,
    message_id     TEXT NOT NULL,
    sent_ms        INTEGER NOT NULL,
    visible_ms     INTEGER NOT NULL,
    receive_count  INTEGER NOT NULL DEFAULT 0,
    receipt_handle TEXT  -- the latest receive's token (a whole handle if received before version 7)
);
INSERT INTO queue_messages_v7 (id, message_id, sent_ms, visible_ms, receive_count, receipt_handle)
    SELECT id, message_id, sent_ms, visible_ms, receive_count, receipt_handle FROM queue_messages;
DROP TABLE queue_messages;
ALTER TABLE queue_messages_v7 RENAME TO queue_messages;
CREATE INDEX queue_messages_by_visibility ON queue_messages (visible_ms, id);
CREATE TRIGGER queue_messages_take_their_bodies AFTER DELETE ON queue_messages
BEGIN DELETE FROM queue_bodies WHERE id = OLD.id; END;
"""

Migration = Callable[[sqlite3.Connection], None]


def _script(sql: str) -> Migration:
    def run(conn: sqlite3.Connection) -> None:
        for statement in _statements(sql):
            conn.execute(statement)

    return run


def _statements(sql: str) -> list[str]:
    # executescript() would COMMIT behind our back; split on complete statements instead.
    out: list[str] = []
    buf = ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf[:80]!r}")
    return out


def _v6(conn: sqlite3.Connection) -> None:
    # Version 6 (backend.adapters.local.schema_v6): each key and name stored once, raw bytes compressed.
    migrate_v6(conn, _statements)


# Steps that rebuild tables: the pages they free are given back to the file system once the upgrade is done.
_COMPACT_AFTER = (_v6,)


def _compact(conn: sqlite3.Connection) -> None:
    """VACUUM after a rebuild, best effort: if another connection holds the database, the free pages stay in
    the file and later writes reuse them (nothing is lost either way; VACUUM is atomic)."""
    with contextlib.suppress(sqlite3.OperationalError):
        conn.execute("VACUUM")


# MIGRATIONS[i] takes a workspace from version i to version i + 1.
MIGRATIONS: list[Migration] = [
    _script(_V1), _script(_V2), _script(_V3), _script(_V4), _script(_V5), _v6, _script(_V7)
]  # fmt: skip


def inspect(conn: sqlite3.Connection) -> str:
    """``new`` (an empty database), ``ours`` (a workspace) or ``foreign`` (any other SQLite database).

    The application id and the tables are read in one statement, so from one snapshot: read apart, a
    workspace that another process creates in between looks like a foreign database (no id, some tables).
    """
    app_id, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id()), (SELECT count(*) FROM sqlite_schema)"
    ).fetchone()
    if int(app_id) == APPLICATION_ID:
        return "ours"
    if int(app_id) != 0:
        return "foreign"
    return "foreign" if int(tables) else "new"


def migrate(
    conn: sqlite3.Connection,
    migrations: Sequence[Migration] = MIGRATIONS,
    *,
    upgrade: bool = True,
    on_upgrade: Callable[[int, int], None] | None = None,
) -> int:
    """Bring the database to the newest schema; returns the version it is at. ``conn`` is in autocommit
    mode. Each step commits with its version number, so an interrupted upgrade resumes where it stopped.
    Every decision to change something is made under the write lock: several processes may open a new
    workspace at once.

    A workspace already at the newest schema is recognised without the write lock (application id and
    version only ever move forward, so a current one cannot be stale): opening it, for reading above all,
    never waits for a writer that holds the lock, which in WAL mode reads need not do.

    Without ``upgrade`` (a workspace opened read-only) nothing is written: an older workspace raises
    WorkspaceError saying how to upgrade it, rather than being upgraded behind the caller's back.

    ``on_upgrade(version, latest)`` is told once, before the first step, when an existing workspace is to be
    upgraded (which can take a while on a large one); not when a new one is created."""
    latest = len(migrations)
    if (
        int(conn.execute("PRAGMA application_id").fetchone()[0]) == APPLICATION_ID
        and int(conn.execute("PRAGMA user_version").fetchone()[0]) == latest
    ):
        return latest
    if not upgrade:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if inspect(conn) == "ours" and version < latest:
            raise WorkspaceError(
                f"this workspace has schema version {version} and this kit reads version {latest}; opened "
                "read-only, it is not upgraded. Open it once without --read-only (the upgrade keeps every "
                "stored byte; it adds tables and indexes and stores keys and names once), or open an "
                "upgraded copy read-only"
            )
    compact = False
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            kind = inspect(conn)
            if kind == "foreign":
                raise WorkspaceError("this database is not a Pipeline Investigation Kit workspace")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > latest:
                raise WorkspaceError(
                    f"this workspace has schema version {version}, newer than this kit understands "
                    f"({latest}); upgrade the kit to open it"
                )
            if version < latest:
                if on_upgrade is not None and kind == "ours":  # not a workspace being created
                    on_upgrade(version, latest)
                on_upgrade = None  # told at the first step, or never
                compact = compact or migrations[version] in _COMPACT_AFTER
                migrations[version](conn)
                version += 1
                conn.execute(f"PRAGMA user_version = {version}")
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if version >= latest:
            if compact:
                _compact(conn)
            return version
