"""The raw table of a workspace (:class:`backend.ports.RawStore`): every event's bytes exactly as received.

A key is written once. The schema's insert guard skips a write of a taken key (so nothing stored is ever
overwritten, from this kit or any other SQLite client) and its triggers refuse updates and deletes: raw data
is immutable (DESIGN invariant 3). ``put_new`` stores a batch in one write transaction and says, per
object, whether this call created it or found it there, with the digest of what is stored.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from backend.adapters.local.database import Database, chunks
from backend.ports import RawObject, RawPut, RawPutStatus
from backend.times import Clock, fmt


class LocalRaw:
    """The ``raw`` table of ``db``; ``clock`` stamps when each object was stored."""

    def __init__(self, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        if not objects:
            return []
        stored_at = self.stamp()
        rows = [(o.key, bytes.fromhex(o.sha256), len(o.data), stored_at, o.data) for o in objects]
        with self._db.write("store raw events") as conn:
            created, stored = self.insert(conn, rows)
        results: list[RawPut] = []
        for obj in objects:
            if obj.key in created:
                created.discard(obj.key)  # a later object with the same key in this call found it taken
                results.append(RawPut(obj.key, RawPutStatus.CREATED, obj.sha256))
                stored[obj.key] = obj.sha256
            else:
                results.append(RawPut(obj.key, RawPutStatus.EXISTS, stored[obj.key]))
        return results

    def stamp(self) -> str:
        """The ``stored_at`` of objects stored now."""
        return fmt(self._clock.now())

    @staticmethod
    def insert(conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> tuple[set[str], dict[str, str]]:
        """Insert ``(key, sha256 bytes, size, stored_at, data)`` rows in ``conn``'s open write transaction.
        Returns the keys this call created and, for the keys it found taken, the sha256 (hex) stored there.
        """
        # The schema's insert guard skips a taken key (nothing overwritten, no error). Rows are appended
        # in rowid order and nobody else writes while we hold the lock, so the rows above the old
        # maximum are exactly the ones this call created. (Cheaper than INSERT ... RETURNING.)
        before = conn.execute("SELECT coalesce(max(id), 0) FROM raw").fetchone()[0]
        conn.executemany("INSERT INTO raw (key, sha256, size, stored_at, data) VALUES (?,?,?,?,?)", rows)
        keys = {row[0] for row in rows}
        if conn.execute("SELECT count(*) FROM raw WHERE id > ?", (before,)).fetchone()[0] == len(keys):
            return keys, {}  # as many new rows as distinct keys: every key was created (the usual case)
        created = {k for (k,) in conn.execute("SELECT key FROM raw WHERE id > ?", (before,))}
        taken = list(keys - created)
        stored: dict[str, str] = {}
        for part in chunks(taken):
            marks = ",".join("?" * len(part))
            for key, sha in conn.execute(f"SELECT key, sha256 FROM raw WHERE key IN ({marks})", part):
                stored[key] = sha.hex()
        return created, stored

    def get(self, key: str) -> bytes | None:
        rows = self._db.read("SELECT data FROM raw WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def sha256(self, key: str) -> str | None:
        rows = self._db.read("SELECT sha256 FROM raw WHERE key = ?", (key,))
        return bytes(rows[0][0]).hex() if rows else None
