"""The upgrade from schema 6 to 7 moves the replay queue's bodies to a table of their own: every message
keeps its body, visibility, receive count and handle, and the queue works on as before."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backend.adapters.local.queue import LocalQueue
from backend.adapters.local.schema import MIGRATIONS, migrate
from backend.adapters.local.store import DB_NAME, LocalStore
from backend.ports import QueueDepth
from backend.times import FixedClock

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)


def _v6_queue(ws: Path) -> None:
    """A version-6 workspace's queue as that kit left it: two visible messages (one received twice
    already), one in flight under a whole handle of that kit, and one dead letter."""
    ws.mkdir(parents=True)
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        assert migrate(conn, MIGRATIONS[:6]) == 6
        conn.executemany(
            "INSERT INTO queue_messages (id, message_id, body, sent_ms, visible_ms, receive_count, "
            "receipt_handle) VALUES (?,?,?,?,?,?,?)",
            [
                (1, "m-visible", "body one ✓", NOW_MS - 9000, NOW_MS - 5000, 0, None),
                (2, "m-retried", "body two", NOW_MS - 9000, NOW_MS - 1000, 2, "2." + "a" * 32),
                (3, "m-in-flight", "body three", NOW_MS - 9000, NOW_MS + 60_000, 1, "3." + "b" * 32),
            ],
        )
        conn.execute(
            "INSERT INTO dead_letters (message_id, body, sent_ms, receive_count, dead_ms) VALUES (?,?,?,?,?)",
            ("m-dead", "body dead", NOW_MS - 90_000, 3, NOW_MS - 80_000),
        )
    finally:
        conn.close()


def test_a_version_6_queue_keeps_every_message_and_works_on(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _v6_queue(ws)
    store = LocalStore(ws, create=False)
    try:
        assert store.schema_version == len(MIGRATIONS) == 7
        queue = LocalQueue(store, max_receives=3, clock=FixedClock(NOW))
        assert queue.depth() == QueueDepth(2, 1, 1)
        got = queue.receive(10, 60)
        assert [(m.message_id, m.body, m.receive_count) for m in got] == [
            ("m-visible", "body one ✓", 1),
            ("m-retried", "body two", 3),
        ]
        # The handle the version-6 kit gave out for the message in flight still deletes it.
        queue.delete(["3." + "b" * 32])
        assert queue.depth() == QueueDepth(0, 2, 1)
        queue.release([got[1].receipt_handle])  # received 3 times: dead at the next receive
        queue.delete([got[0].receipt_handle])
        assert queue.receive(10, 60) == []
        dead = queue.dead_letters().items
        assert [(d.message_id, d.body, d.receive_count) for d in dead] == [
            ("m-dead", "body dead", 3),
            ("m-retried", "body two", 3),
        ]
        # Nothing is left behind: each body went with its message.
        assert store.db.read("SELECT count(*) FROM queue_messages") == [(0,)]
        assert store.db.read("SELECT count(*) FROM queue_bodies") == [(0,)]
        # New messages are numbered after the last one and keep their bodies.
        assert queue.send_batch(["after the upgrade"]) == []
        [fresh] = queue.receive_many(10, 60)
        assert fresh.body == "after the upgrade"
    finally:
        store.close()


def test_an_interrupted_upgrade_leaves_version_6_as_it_was(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    _v6_queue(ws)

    def crashed(conn: sqlite3.Connection) -> None:
        MIGRATIONS[6](conn)
        raise KeyboardInterrupt  # after the whole step, before its commit

    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None)
    try:
        before = conn.execute("SELECT * FROM queue_messages ORDER BY id").fetchall()
        with pytest.raises(KeyboardInterrupt):
            migrate(conn, [*MIGRATIONS[:6], crashed])
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 6
        assert conn.execute("SELECT * FROM queue_messages ORDER BY id").fetchall() == before
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        assert "queue_bodies" not in tables
    finally:
        conn.close()
    store = LocalStore(ws, create=False)
    try:
        assert store.schema_version == 7
        assert [m.body for m in LocalQueue(store, clock=FixedClock(NOW)).receive(10, 60)] == [
            "body one ✓",
            "body two",
        ]
    finally:
        store.close()
