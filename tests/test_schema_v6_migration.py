"""The upgrade from schema 5 to 6 rebuilds the raw table and renumbers origins in one transaction: every
byte, key, time and origin is kept, and an interrupted upgrade leaves the workspace as it was."""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.schema import MIGRATIONS, migrate
from backend.adapters.local.store import DB_NAME, LocalStore
from backend.identity import raw_key, receipt_key
from backend.model import IngestStatus
from backend.services.ingest import IngestService, prepare
from tests.conftest import make_event
from tests.raw_rows import raw_keys

ORIGIN = "file:/data/old events.jsonl"
STORED_AT = "2025-12-29T01:02:03.456Z"
STORED_MS = 1766970123456


def _v5_workspace(ws: Path, events: int) -> dict[str, bytes]:
    """A version-5 workspace as that kit wrote it (raw keys as text, origins in every receipt), with
    ``events`` accepted events from ORIGIN and one receipt under a content-addressed key."""
    ws.mkdir(parents=True)
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        assert migrate(conn, MIGRATIONS[:5]) == 5
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO partitions (id, source, event_type, day) "
            "VALUES (1, 'demo', 'heartbeat', '2025-12-28')"
        )
        objects: dict[str, bytes] = {}
        for n in range(1, events + 1):
            body = make_event(entity_id=f"user_{n % 40}", payload={"steps": n})
            p = prepare(body)
            eid = bytes.fromhex(p.event_id)
            sha = hashlib.sha256(body).digest()
            key = raw_key("demo", "heartbeat", "2025-12-28", p.event_id)
            assert key == p.raw_key
            objects[key] = body
            conn.execute(
                "INSERT INTO raw (key, sha256, size, stored_at, data) VALUES (?, ?, ?, ?, ?)",
                (key, sha, len(body), STORED_AT, body),
            )
            conn.execute("INSERT OR IGNORE INTO entities (entity_id) VALUES (?)", (f"user_{n % 40}",))
            conn.execute(
                "INSERT INTO events (event_id, receipt, entity, part, event_ms, ingest_ms, ingest_lag_ms, "
                "clock_skew, payload_sha, s3_key, raw_sha, raw_size, idempotency_key, origin, line) "
                "VALUES (?, 0, (SELECT id FROM entities WHERE entity_id = ?), 1, ?, ?, 5, 0, ?, NULL, ?, ?, "
                "NULL, ?, ?)",
                (eid, f"user_{n % 40}", STORED_MS - 5, STORED_MS, sha, sha, len(body), ORIGIN, n),
            )
        other = b'{"a receipt":"with other bytes"}'
        alt = receipt_key("demo", "heartbeat", "2025-12-28", "ab" * 32, hashlib.sha256(other).hexdigest())
        objects[alt] = other
        conn.execute(
            "INSERT INTO raw (key, sha256, size, stored_at, data) VALUES (?, ?, ?, ?, ?)",
            (alt, hashlib.sha256(other).digest(), len(other), STORED_AT, other),
        )
        conn.execute("COMMIT")
    finally:
        conn.close()
    return objects


def _everything(ws: Path) -> dict[str, list[Any]]:
    conn = sqlite3.connect(ws / DB_NAME)
    try:
        names = [
            n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
        ]
        out = {n: sorted(conn.execute(f"SELECT * FROM {n}").fetchall(), key=repr) for n in names}
        out["schema"] = conn.execute("SELECT type, name, sql FROM sqlite_schema ORDER BY name").fetchall()
        out["version"] = conn.execute("PRAGMA user_version").fetchall()
        return out
    finally:
        conn.close()


@pytest.mark.parametrize("events", [30, 1100], ids=["few", "enough-to-compress"])
def test_a_version_5_workspace_keeps_every_byte_key_time_and_origin(tmp_path: Path, events: int) -> None:
    ws = tmp_path / "ws"
    objects = _v5_workspace(ws, events)
    store = LocalStore(ws, create=False)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.raw.get_many(list(objects)) == objects
        assert raw_keys(store.db.connection()) == sorted(objects)
        assert store.db.read("SELECT DISTINCT stored_ms FROM raw") == [(STORED_MS,)]
        # The rebuilt tables' old pages went back to the file system (VACUUM after the upgrade).
        assert store.db.read("PRAGMA freelist_count") == [(0,)]
        compressed = store.db.read("SELECT count(*) FROM raw WHERE codec > 0")[0][0]
        # Enough rows to train a dictionary on: the upgrade compresses them all (kept as received below that).
        assert compressed > events * 0.9 if events >= 1000 else compressed == 0
        delivered = store.delivered(ORIGIN, 1, events)
        assert len(delivered) == events
        first_key = next(iter(objects))
        assert delivered[1] == {hashlib.sha256(objects[first_key]).hexdigest()}
        eid = first_key.rsplit("=", 1)[1].removesuffix(".json")
        accepted = store.get_accepted(eid)
        assert accepted is not None and accepted.origin == ORIGIN and accepted.s3_key == first_key
        # The upgraded workspace takes new events and still knows the old ones.
        service = IngestService(store, store)
        assert service.ingest(objects[first_key], origin="api").status is IngestStatus.DUPLICATE
        assert service.ingest(make_event(entity_id="new")).status is IngestStatus.ACCEPTED
        assert [r.origin for r in store.receipts(eid)] == [ORIGIN, "api"]
    finally:
        store.close()


def test_an_interrupted_upgrade_leaves_version_5_as_it_was_and_runs_again(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    objects = _v5_workspace(ws, 1100)
    before = _everything(ws)

    def interrupted(step: Callable[[sqlite3.Connection], None]) -> Callable[[sqlite3.Connection], None]:
        def run(conn: sqlite3.Connection) -> None:
            step(conn)  # the whole rebuild, then a crash before its commit
            raise KeyboardInterrupt

        return run

    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    try:
        with pytest.raises(KeyboardInterrupt):
            migrate(conn, [*MIGRATIONS[:5], interrupted(MIGRATIONS[5])])
    finally:
        conn.close()
    assert _everything(ws) == before
    store = LocalStore(ws, create=False)
    try:
        assert store.schema_version == len(MIGRATIONS)
        assert store.raw.get_many(list(objects)) == objects
    finally:
        store.close()
