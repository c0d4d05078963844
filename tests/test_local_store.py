"""The local adapter's own promises: the database itself keeps raw data, the index and the quarantine
immutable; WAL; a versioned schema with migrations; refusal of anything that is not a workspace;
persistence across close and reopen."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.adapters.local.schema import APPLICATION_ID, MIGRATIONS, inspect, migrate
from backend.adapters.local.store import DB_NAME, LocalStore
from backend.errors import InvalidRequest, WorkspaceError
from backend.model import IngestStatus
from backend.services.ingest import IngestService
from backend.times import FixedClock, fmt
from tests.conftest import make_event

NOW = datetime(2025, 12, 29, 0, 0, 1, tzinfo=UTC)


@dataclass
class Populated:
    """A workspace with accepted events, a duplicate receipt and a rejection; what was put in."""

    ws: Path
    raw_key: str
    raw_bytes: bytes
    event_id: str
    lag: int
    rejection_id: str
    reason: str


def populate(ws: Path) -> Populated:
    store = LocalStore(ws)
    try:
        service = IngestService(store, store, FixedClock(NOW))
        body = make_event()
        first = service.ingest(body)
        service.ingest(body)  # a duplicate receipt
        service.ingest(make_event(entity_id="user_2"))
        bad = service.ingest(b"{not json")
        assert first.status is IngestStatus.ACCEPTED and bad.rejection_id is not None
        assert first.s3_key is not None and first.event_id is not None and first.ingest_lag_ms is not None
        assert bad.reason is not None
        return Populated(
            ws, first.s3_key, body, first.event_id, first.ingest_lag_ms, bad.rejection_id, bad.reason
        )
    finally:
        store.close()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    return tmp_path / "ws"


@pytest.fixture
def populated(tmp_path: Path) -> Populated:
    return populate(tmp_path / "ws")


@contextlib.contextmanager
def plain_connection(ws: Path, *, recursive_triggers: bool) -> Iterator[sqlite3.Connection]:
    """A connection as any SQLite tool would open it, not through the adapter."""
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    try:
        if recursive_triggers:
            conn.execute("PRAGMA recursive_triggers = ON")
        yield conn
    finally:
        conn.close()


@contextlib.contextmanager
def reopened(ws: Path) -> Iterator[LocalStore]:
    store = LocalStore(ws, create=False)
    try:
        yield store
    finally:
        store.close()


def table_rows(ws: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the kit's tables, for before/after comparisons that do not go through the adapter."""
    with plain_connection(ws, recursive_triggers=False) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema "
                "WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        # In a stable order that needs no rowid (the overview's rollup tables are WITHOUT ROWID).
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in tables}


# -- the database itself refuses to rewrite history ----------------------------------------------------


@dataclass(frozen=True)
class Tamper:
    """A way to try to rewrite a table, and how a user would see whether it worked."""

    table: str
    where: str  # selects the row to attack
    change: str  # SET clause applied to the copy used by INSERT OR REPLACE
    seen: Callable[[LocalStore, Populated], Any]


TAMPERS = {
    "raw": Tamper("raw", "1 = 1", "data = x'666f72676564'", lambda s, p: s.get(p.raw_key)),
    "events": Tamper(
        "events", "receipt = 0", "ingest_lag_ms = 424242", lambda s, p: s.get_accepted(p.event_id)
    ),
    "rejections": Tamper(
        "rejections", "1 = 1", "reason = 'forged'", lambda s, p: s.get_rejection(p.rejection_id)
    ),
    # Receipts name their origin by number (schema v6): renaming the origin would rewrite every receipt's.
    "origins": Tamper(
        "origins", "1 = 1", "origin = 'forged'", lambda s, p: [r.origin for r in s.receipts(p.event_id)]
    ),
}


def _replace_with_modified_copy(conn: sqlite3.Connection, t: Tamper) -> None:
    conn.execute(f"CREATE TEMP TABLE forged AS SELECT * FROM {t.table} WHERE {t.where} LIMIT 1")
    conn.execute(f"UPDATE forged SET {t.change}")
    conn.execute(f"INSERT OR REPLACE INTO {t.table} SELECT * FROM forged")


@pytest.mark.parametrize("table", list(TAMPERS))
@pytest.mark.parametrize("recursive_triggers", [True, False], ids=["recursive", "plain"])
def test_update_and_delete_are_refused_by_the_database(
    populated: Populated, table: str, recursive_triggers: bool
) -> None:
    t = TAMPERS[table]
    with reopened(populated.ws) as store:
        before = t.seen(store, populated)
    assert before is not None
    with plain_connection(populated.ws, recursive_triggers=recursive_triggers) as conn:
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"UPDATE {t.table} SET {t.change} WHERE {t.where}")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"DELETE FROM {t.table} WHERE {t.where}")
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(f"DELETE FROM {t.table}")
    with reopened(populated.ws) as store:
        assert t.seen(store, populated) == before


@pytest.mark.parametrize("table", list(TAMPERS))
@pytest.mark.parametrize("recursive_triggers", [True, False], ids=["recursive", "plain"])
def test_insert_or_replace_cannot_rewrite_data_from_any_connection(
    populated: Populated, table: str, recursive_triggers: bool
) -> None:
    """The schema's insert guards skip a write of a taken key or id before any conflict policy runs, so
    INSERT OR REPLACE from any SQLite client (recursive_triggers on or off) changes nothing."""
    t = TAMPERS[table]
    with reopened(populated.ws) as store:
        before = t.seen(store, populated)
    with plain_connection(populated.ws, recursive_triggers=recursive_triggers) as conn:
        rows = conn.execute(f"SELECT count(*) FROM {t.table}").fetchone()[0]
        _replace_with_modified_copy(conn, t)
        assert conn.execute(f"SELECT count(*) FROM {t.table}").fetchone()[0] == rows
    with reopened(populated.ws) as store:
        assert t.seen(store, populated) == before


def test_a_taken_raw_key_cannot_be_inserted_again(populated: Populated) -> None:
    with plain_connection(populated.ws, recursive_triggers=False) as conn:
        rows = conn.execute("SELECT count(*) FROM raw").fetchone()[0]
        conn.execute(
            "INSERT INTO raw (part, event_id, key, stored_ms, codec, data) "
            "SELECT part, event_id, key, 0, 0, x'00' FROM raw"
        )
        conn.execute("INSERT INTO raw SELECT * FROM raw")
        assert conn.execute("SELECT count(*) FROM raw").fetchone()[0] == rows
    with reopened(populated.ws) as store:
        assert store.get(populated.raw_key) == populated.raw_bytes


# -- the file ----------------------------------------------------------------------------------------


def test_the_database_is_in_wal_mode_and_marked_as_a_workspace(populated: Populated) -> None:
    with plain_connection(populated.ws, recursive_triggers=False) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_data_persists_across_close_and_reopen(populated: Populated) -> None:
    with reopened(populated.ws) as store:
        assert store.get(populated.raw_key) == populated.raw_bytes
        accepted = store.get_accepted(populated.event_id)
        assert accepted is not None and accepted.ingest_lag_ms == populated.lag
        assert len(store.receipts(populated.event_id)) == 2
        stats = store.stats()
        assert (stats.accepted, stats.duplicate, stats.rejected, stats.entities) == (2, 1, 1, 2)
        # After reopening, the same event is still known: a resend is a duplicate, not a second acceptance.
        result = IngestService(store, store, FixedClock(NOW)).ingest(populated.raw_bytes)
        assert result.status is IngestStatus.DUPLICATE
    with reopened(populated.ws) as store:
        assert len(store.receipts(populated.event_id)) == 3


def test_two_stores_on_one_workspace_see_each_others_writes(ws: Path) -> None:
    a, b = LocalStore(ws), LocalStore(ws)
    try:
        result = IngestService(a, a, FixedClock(NOW)).ingest(make_event())
        assert result.event_id is not None
        assert b.get_accepted(result.event_id) is not None
        assert IngestService(b, b, FixedClock(NOW)).ingest(make_event()).status is IngestStatus.DUPLICATE
    finally:
        a.close()
        b.close()


# -- schema versions and migrations ------------------------------------------------------------------


def _add_notes_table(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL)")
    conn.execute("INSERT INTO notes (text) VALUES ('migrated')")


def test_a_new_migration_upgrades_a_populated_workspace_without_losing_rows(populated: Populated) -> None:
    before = table_rows(populated.ws)
    assert before["raw"] and before["events"] and before["rejections"]
    with plain_connection(populated.ws, recursive_triggers=True) as conn:
        assert migrate(conn, [*MIGRATIONS, _add_notes_table]) == len(MIGRATIONS) + 1
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) + 1
        # Migrating again is a no-op.
        assert migrate(conn, [*MIGRATIONS, _add_notes_table]) == len(MIGRATIONS) + 1
    after = table_rows(populated.ws)
    assert after.pop("notes") == [(1, "migrated")]
    assert after == before


def test_a_failed_migration_changes_nothing_and_can_be_retried(populated: Populated) -> None:
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration interrupted")

    before = table_rows(populated.ws)
    with plain_connection(populated.ws, recursive_triggers=True) as conn:
        with pytest.raises(RuntimeError):
            migrate(conn, [*MIGRATIONS, broken])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert table_rows(populated.ws) == before
    with reopened(populated.ws) as store:
        assert store.get(populated.raw_key) == populated.raw_bytes


def test_an_up_to_date_workspace_is_not_migrated_again(populated: Populated) -> None:
    before = table_rows(populated.ws)
    with plain_connection(populated.ws, recursive_triggers=True) as conn:
        assert migrate(conn) == len(MIGRATIONS)
    assert table_rows(populated.ws) == before


def test_a_workspace_from_a_newer_kit_is_refused_naming_both_versions(populated: Populated) -> None:
    with plain_connection(populated.ws, recursive_triggers=False) as conn:
        conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 41}")
    before = table_rows(populated.ws)
    with pytest.raises(WorkspaceError) as err:
        LocalStore(populated.ws)
    assert f"schema version {len(MIGRATIONS) + 41}" in str(err.value)
    assert f"({len(MIGRATIONS)})" in str(err.value)
    assert "upgrade" in str(err.value)
    assert table_rows(populated.ws) == before


def test_a_workspace_migrated_by_a_newer_kit_is_refused(populated: Populated) -> None:
    with plain_connection(populated.ws, recursive_triggers=True) as conn:
        migrate(conn, [*MIGRATIONS, _add_notes_table])
    with pytest.raises(WorkspaceError, match=f"schema version {len(MIGRATIONS) + 1}"):
        LocalStore(populated.ws)


# -- what is not a workspace -------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_refused_and_left_alone(ws: Path) -> None:
    ws.mkdir()
    junk = b"these are somebody's notes, not a database\n" * 100
    (ws / DB_NAME).write_bytes(junk)
    with pytest.raises(WorkspaceError, match="not a Pipeline Investigation Kit workspace"):
        LocalStore(ws)
    assert (ws / DB_NAME).read_bytes() == junk


def _foreign_database(ws: Path, *, application_id: int = 0) -> Path:
    ws.mkdir()
    db = ws / DB_NAME
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers (name) VALUES ('ada')")
    if application_id:
        conn.execute(f"PRAGMA application_id = {application_id}")
    conn.close()
    return db


@pytest.mark.parametrize("application_id", [0, 0x12345678], ids=["unmarked", "other-application"])
def test_a_foreign_sqlite_database_is_refused_and_keeps_its_data(ws: Path, application_id: int) -> None:
    db = _foreign_database(ws, application_id=application_id)
    with pytest.raises(WorkspaceError, match="not a Pipeline Investigation Kit workspace"):
        LocalStore(ws)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("SELECT name FROM customers").fetchall() == [("ada",)]
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 0
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert names == {"customers"}
    finally:
        conn.close()


def test_refusing_a_foreign_database_does_not_change_its_journal_mode(ws: Path) -> None:
    db = _foreign_database(ws)
    with pytest.raises(WorkspaceError):
        LocalStore(ws)
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "delete"
    finally:
        conn.close()


def test_an_empty_database_file_becomes_a_workspace(ws: Path) -> None:
    ws.mkdir()
    (ws / DB_NAME).write_bytes(b"")
    store = LocalStore(ws)
    try:
        assert store.stats().accepted == 0
    finally:
        store.close()


def test_opening_a_missing_workspace_without_create_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "ws"
    with pytest.raises(WorkspaceError, match="no workspace"):
        LocalStore(missing, create=False)
    assert not missing.exists() and not missing.parent.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WorkspaceError):
        LocalStore(empty, create=False)
    assert list(empty.iterdir()) == []


def test_a_workspace_path_that_is_a_file_is_refused(tmp_path: Path) -> None:
    f = tmp_path / "ws"
    f.write_text("a file, not a folder")
    with pytest.raises(WorkspaceError, match="not a folder"):
        LocalStore(f)
    assert f.read_text() == "a file, not a folder"


def test_create_makes_missing_parent_folders(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "a" / "b" / "ws")
    try:
        assert (tmp_path / "a" / "b" / "ws" / DB_NAME).is_file()
    finally:
        store.close()


# -- opening a new workspace from several processes at once ----------------------------------------


class _InterleavingConnection:
    """Runs ``interleave`` once, just before the statement containing ``before`` (to force a race)."""

    def __init__(self, conn: sqlite3.Connection, before: str, interleave: Callable[[], None]) -> None:
        self._conn, self._before, self._interleave = conn, before, interleave

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if self._before in sql and self._interleave is not None:
            step, self._interleave = self._interleave, None  # type: ignore[assignment]
            step()
        return self._conn.execute(sql, *args)


def test_a_workspace_created_concurrently_during_the_first_open_is_accepted(ws: Path) -> None:
    ws.mkdir()
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    # Both openers are past the switch to WAL (see the next test for a race there).
    conn.execute("PRAGMA journal_mode = WAL")
    errors: list[BaseException] = []

    def open_elsewhere() -> None:
        try:
            LocalStore(ws).close()
        except BaseException as exc:  # reported by the test below
            errors.append(exc)

    other = threading.Thread(target=open_elsewhere)

    def another_process_opens_it() -> None:
        # Let the other opener run to completion (or until a lock we hold makes it wait).
        other.start()
        other.join(timeout=2)

    try:
        racing = _InterleavingConnection(conn, "sqlite_schema", another_process_opens_it)
        assert migrate(racing) == len(MIGRATIONS)  # type: ignore[arg-type]
    finally:
        conn.close()
        if other.is_alive():
            other.join(timeout=70)
    assert errors == []


def test_a_workspace_created_while_it_is_inspected_is_not_taken_for_a_foreign_database(ws: Path) -> None:
    # Several `pik ingest` processes creating one workspace: between reading the (still empty) application id
    # and counting the tables, another process commits the first migration. Read apart, the two looked like
    # a foreign database with tables; one snapshot sees either the empty file or the workspace.
    ws.mkdir()
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")  # as the first opener leaves it
    try:
        racing = _InterleavingConnection(conn, "sqlite_schema", lambda: LocalStore(ws).close())
        assert inspect(racing) == "ours"  # type: ignore[arg-type]
    finally:
        conn.close()


def test_opening_waits_for_another_writer_on_a_new_workspace(ws: Path) -> None:
    ws.mkdir()
    other = sqlite3.connect(ws / DB_NAME, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        LocalStore(ws).close()
    finally:
        release.join()
        other.close()


# -- cursors -----------------------------------------------------------------------------------------


def _tamper_cursor(cursor: str, value: Any) -> str:
    """The same kind of cursor with every key value replaced: as a user could paste a damaged one."""
    kind, key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    raw = json.dumps([kind, [value] * len(key)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _listings(store: LocalStore) -> dict[str, Callable[[str | None], Any]]:
    start, end = "2025-12-28T00:00:00.000Z", "2025-12-29T00:00:00.000Z"
    return {
        "entity": lambda after: store.query_entity("user_123", start, end, limit=1, after=after),
        "partition": lambda after: store.query_partition(
            "demo", "heartbeat", "2025-12-28", limit=1, after=after
        ),
        "rejections": lambda after: store.query_rejections(limit=1, after=after),
    }


@pytest.mark.parametrize(
    "listing",
    [
        "entity",
        "partition",
        "rejections",
    ],
)
@pytest.mark.parametrize("value", [{"x": 1}, [1, 2]], ids=["object", "array"])
def test_a_damaged_cursor_of_the_right_kind_is_an_invalid_request(ws: Path, listing: str, value: Any) -> None:
    store = LocalStore(ws)
    try:
        service = IngestService(store, store, FixedClock(NOW))
        for i in range(3):
            service.ingest(make_event(payload={"i": i}))
            service.ingest(b"bad " + bytes([48 + i]))
        query = _listings(store)[listing]
        cursor = query(None).next_cursor
        assert cursor is not None
        with pytest.raises(InvalidRequest):
            query(_tamper_cursor(cursor, value))
    finally:
        store.close()


# -- time storage --------------------------------------------------------------------------------------


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1), max_value=datetime(2099, 12, 31, 23, 59, 59), timezones=st.just(UTC)
    )
)
@settings(max_examples=200, deadline=None)
def test_stored_times_round_trip_through_integer_milliseconds(value: datetime) -> None:
    """The ingest fast path (stored_ms) and the general parser agree, and reading back gives fmt()."""
    from backend.adapters.local.encoding import from_ms, stored_ms, to_ms

    text = fmt(value)
    assert stored_ms(text) == to_ms(text)
    assert from_ms(stored_ms(text)) == text


def test_a_reading_connection_keeps_a_small_page_cache_and_ingest_a_large_one(tmp_path: Path) -> None:
    # One connection per thread: with ingest's 128 MiB cache on every one, the console's readers (the
    # workspace totals, the overview, a big plan: each on a worker thread) held 384 MB; a reader keeps 8 MiB.
    from backend.adapters.local.database import READER_CACHE_KIB, WRITER_CACHE_KIB

    store = LocalStore(tmp_path / "ws")
    try:

        def cache_kib() -> int:
            return -int(store.db.connection().execute("PRAGMA cache_size").fetchone()[0])

        assert cache_kib() == READER_CACHE_KIB
        answers: dict[str, int] = {}

        def reader() -> None:
            store.index.stats()
            answers["reader"] = cache_kib()

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join()
        assert answers["reader"] == READER_CACHE_KIB
        result = IngestService(store, store, FixedClock(NOW)).ingest(make_event())
        assert result.status == IngestStatus.ACCEPTED
        assert cache_kib() == WRITER_CACHE_KIB  # the thread that ingested keeps the writer's cache
    finally:
        store.close()
