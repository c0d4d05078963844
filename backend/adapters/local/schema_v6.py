"""Schema version 6: smaller workspaces (issue 17). Each key and name is stored once.

* ``raw`` holds an identity key (``backend.identity.raw_key``) as its partition number and the event id's
  32 bytes, not as 140 characters of text stored twice (in the row and in its key index); any other key (a
  receipt's content-addressed key) stays text, in a partial index of its own. ``stored_ms`` is an integer.
  The bytes are stored as received or compressed (``codec``, see :mod:`backend.adapters.local.raw_codec`);
  their sha256 and size are in the event index (``events.raw_sha``, ``raw_size``) and computed from the
  bytes for a key that no receipt names.
* ``raw_dictionaries``: the compression dictionaries, immutable like the rows that need them.
* ``origins``: each input's origin (``file:...``, ``api``) numbered once; ``events.origin_id`` refers to it
  instead of repeating the text in every receipt and in the resume index.
* ``events`` finds an event id's receipts by 8 bytes of the id (``events_by_id``), not by a unique key that
  held all 32 bytes again; its insert guard keeps (event_id, receipt) unique.

The upgrade rebuilds ``raw`` and ``events`` in the one transaction that ``migrate`` gives each step:
interrupted, it leaves the workspace as it was (version 5), and the next open does it again.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

from backend.adapters.local import raw_codec
from backend.adapters.local.raw_keys import parse_identity_key

TABLES = """
CREATE TABLE raw_dictionaries (
    id         INTEGER PRIMARY KEY CHECK (id >= 1),
    created_ms INTEGER NOT NULL,
    data       BLOB NOT NULL
);
CREATE TRIGGER raw_dictionaries_no_overwrite BEFORE INSERT ON raw_dictionaries
WHEN EXISTS (SELECT 1 FROM raw_dictionaries WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER raw_dictionaries_no_update BEFORE UPDATE ON raw_dictionaries
BEGIN SELECT RAISE(ABORT, 'raw dictionaries are immutable: update refused'); END;
CREATE TRIGGER raw_dictionaries_no_delete BEFORE DELETE ON raw_dictionaries
BEGIN SELECT RAISE(ABORT, 'raw dictionaries are immutable: delete refused'); END;

CREATE TABLE origins (
    id     INTEGER PRIMARY KEY,
    origin TEXT NOT NULL UNIQUE
);
CREATE TRIGGER origins_no_overwrite BEFORE INSERT ON origins
WHEN EXISTS (SELECT 1 FROM origins WHERE origin = NEW.origin)
  OR EXISTS (SELECT 1 FROM origins WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER origins_no_update BEFORE UPDATE ON origins
BEGIN SELECT RAISE(ABORT, 'origins are append-only: update refused'); END;
CREATE TRIGGER origins_no_delete BEFORE DELETE ON origins
BEGIN SELECT RAISE(ABORT, 'origins are append-only: delete refused'); END;

-- Raw bytes exactly as received (codec 0) or compressed with dictionary n (codec n). Immutable: a write
-- of a taken key (or id) is skipped before any conflict policy runs, and triggers refuse UPDATE and DELETE.
-- Rows are appended in rowid order; only the key indexes are random.
CREATE TABLE raw_v6 (
    id        INTEGER PRIMARY KEY,
    part      INTEGER REFERENCES partitions (id),
    event_id  BLOB,
    key       TEXT,
    stored_ms INTEGER NOT NULL,
    codec     INTEGER NOT NULL CHECK (codec >= 0),
    data      BLOB NOT NULL,
    CHECK ((key IS NULL AND part IS NOT NULL AND length(event_id) = 32)
           OR (key IS NOT NULL AND part IS NULL AND event_id IS NULL))
);
"""

# An identity key is found by its partition and the first 8 bytes of its event id, then the whole id: the
# index holds 8 bytes of the 32 (a shared prefix costs one more row read, never a wrong answer). That index
# cannot be UNIQUE, so the insert guard is what refuses a second row for a key, from any connection: it runs
# before any conflict policy, with or without recursive_triggers. Other keys have a unique index of their own.
RAW_GUARDS = """
CREATE INDEX raw_by_identity ON raw (part, substr(event_id, 1, 8));
CREATE UNIQUE INDEX raw_by_key ON raw (key) WHERE key IS NOT NULL;
CREATE TRIGGER raw_no_overwrite BEFORE INSERT ON raw
WHEN EXISTS (SELECT 1 FROM raw WHERE part = NEW.part AND substr(event_id, 1, 8) = substr(NEW.event_id, 1, 8)
             AND event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM raw WHERE key = NEW.key)
  OR EXISTS (SELECT 1 FROM raw WHERE id = NEW.id)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER raw_no_update BEFORE UPDATE ON raw
BEGIN SELECT RAISE(ABORT, 'raw events are immutable: update refused'); END;
CREATE TRIGGER raw_no_delete BEFORE DELETE ON raw
BEGIN SELECT RAISE(ABORT, 'raw events are immutable: delete refused'); END;
"""

# The event index, rebuilt: the same columns, origin_id (a number in origins) in place of the origin's text.
# An event id's receipts are found by the first 8 bytes of the id (then the whole id), as raw keys are: the
# unique key (event_id, receipt) of version 5 held all 32 bytes a second time. The insert guard is what
# makes a receipt number unique for an event id (so acceptance unique, invariant 2), from any connection.
EVENTS = """
CREATE TABLE events_v6 (
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
    origin_id       INTEGER REFERENCES origins (id),
    line            INTEGER
);
"""

EVENTS_GUARDS = """
CREATE INDEX events_by_id ON events (substr(event_id, 1, 8), receipt);
CREATE INDEX events_by_entity ON events (entity, event_ms, event_id, receipt);
CREATE INDEX events_by_lag ON events (part, ingest_lag_ms, seq);
CREATE INDEX events_by_origin ON events (origin_id, line) WHERE origin_id IS NOT NULL;
CREATE TRIGGER events_no_overwrite BEFORE INSERT ON events
WHEN EXISTS (SELECT 1 FROM events WHERE substr(event_id, 1, 8) = substr(NEW.event_id, 1, 8)
             AND receipt = NEW.receipt AND event_id = NEW.event_id)
  OR EXISTS (SELECT 1 FROM events WHERE seq = NEW.seq)
BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'the event index is append-only: update refused'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'the event index is append-only: delete refused'); END;
"""

# One event id's receipts through events_by_id (``e`` is the events table; parameters: id, id).
EVENT_ID_MATCH = "substr(e.event_id, 1, 8) = substr(?, 1, 8) AND e.event_id = ?"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_ROWS = 20_000


def _stored_ms(text: str) -> int:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return int((value - _EPOCH).total_seconds() * 1000)


def _run(conn: sqlite3.Connection, sql: str, statements: object) -> None:
    for statement in statements(sql):  # type: ignore[operator]
        conn.execute(statement)


def migrate_v6(conn: sqlite3.Connection, statements: object) -> None:
    """Version 5 to 6 in ``conn``'s open transaction (``statements`` splits a script into statements)."""
    _run(conn, TABLES, statements)
    _copy_raw(conn)
    # DROP TABLE removes the old table's triggers and indexes with it, and fires none of them.
    conn.execute("DROP TABLE raw")
    conn.execute("ALTER TABLE raw_v6 RENAME TO raw")
    _run(conn, RAW_GUARDS, statements)
    # The event index, rebuilt with origins by number (same rows, same seq: the rollups' watermark holds).
    conn.execute("INSERT INTO origins (origin) SELECT DISTINCT origin FROM events WHERE origin IS NOT NULL")
    _run(conn, EVENTS, statements)
    conn.execute(
        "INSERT INTO events_v6 SELECT seq, event_id, receipt, entity, part, event_ms, ingest_ms, "
        "ingest_lag_ms, clock_skew, payload_sha, s3_key, raw_sha, raw_size, idempotency_key, "
        "(SELECT id FROM origins o WHERE o.origin = events.origin), line FROM events ORDER BY seq"
    )
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_v6 RENAME TO events")
    _run(conn, EVENTS_GUARDS, statements)


def _copy_raw(conn: sqlite3.Connection) -> None:
    """Every row of the old raw table into raw_v6, in rowid order, identity keys as numbers. Once the
    workspace holds enough rows, a dictionary is trained on the first ones and every row compressed."""
    (count,) = conn.execute("SELECT count(*) FROM raw").fetchone()
    packer: raw_codec.Packer | None = None
    if count >= raw_codec.TRAIN_ROWS:
        samples = [
            bytes(d)
            for (d,) in conn.execute("SELECT data FROM raw ORDER BY id LIMIT ?", (raw_codec.TRAIN_SAMPLES,))
        ]
        trained = raw_codec.train(samples)
        if trained is not None:
            now_ms = int((datetime.now(UTC) - _EPOCH).total_seconds() * 1000)
            conn.execute(
                "INSERT INTO raw_dictionaries (id, created_ms, data) VALUES (1, ?, ?)", (now_ms, trained)
            )
            packer = raw_codec.Packer(1, trained)
    parts: dict[tuple[str, str, str], int] = {
        (s, t, d): i for i, s, t, d in conn.execute("SELECT id, source, event_type, day FROM partitions")
    }
    last = 0
    while True:
        rows = conn.execute(
            "SELECT id, key, stored_at, data FROM raw WHERE id > ? ORDER BY id LIMIT ?", (last, _COPY_ROWS)
        ).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        bodies = [bytes(r[3]) for r in rows]
        codecs, stored = packer.pack_many(bodies) if packer else ([raw_codec.PLAIN] * len(rows), bodies)
        out = []
        for (rid, key, stored_at, _), codec, data in zip(rows, codecs, stored, strict=True):
            identity = parse_identity_key(key)
            part: int | None = None
            eid: bytes | None = None
            if identity is not None:
                partition, eid = identity
                part = parts.get(partition)
                if part is None:
                    part = conn.execute(
                        "INSERT INTO partitions (source, event_type, day) VALUES (?, ?, ?) RETURNING id",
                        partition,
                    ).fetchone()[0]
                    parts[partition] = part
                key = None
            out.append((rid, part, eid, key, _stored_ms(stored_at), codec, data))
        conn.executemany(
            "INSERT INTO raw_v6 (id, part, event_id, key, stored_ms, codec, data) VALUES (?,?,?,?,?,?,?)", out
        )
