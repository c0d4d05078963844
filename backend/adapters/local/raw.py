"""The raw table of a workspace (:class:`backend.ports.RawStore`): every event's bytes exactly as received.

A key is written once. The schema's insert guard skips a write of a taken key (so nothing stored is ever
overwritten, from this kit or any other SQLite client) and its triggers refuse updates and deletes: raw data
is immutable (DESIGN invariant 3). ``put_new`` stores a batch in one write transaction and says, per
object, whether this call created it or found it there, with the digest of what is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

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
        stored_at = fmt(self._clock.now())
        rows = [(o.key, bytes.fromhex(o.sha256), len(o.data), stored_at, o.data) for o in objects]
        with self._db.write("store raw events") as conn:
            # The schema's insert guard skips a taken key (nothing overwritten, no error). Rows are appended
            # in rowid order and nobody else writes while we hold the lock, so the rows above the old
            # maximum are exactly the ones this call created. (Cheaper than INSERT ... RETURNING.)
            before = conn.execute("SELECT coalesce(max(id), 0) FROM raw").fetchone()[0]
            conn.executemany("INSERT INTO raw (key, sha256, size, stored_at, data) VALUES (?,?,?,?,?)", rows)
            keys = {o.key for o in objects}
            if conn.execute("SELECT count(*) FROM raw WHERE id > ?", (before,)).fetchone()[0] == len(keys):
                created = keys  # as many new rows as distinct keys: every key was created (the usual case)
            else:
                created = {k for (k,) in conn.execute("SELECT key FROM raw WHERE id > ?", (before,))}
            taken = list({o.key for o in objects if o.key not in created})
            stored: dict[str, str] = {}
            for part in chunks(taken):
                marks = ",".join("?" * len(part))
                for key, sha in conn.execute(f"SELECT key, sha256 FROM raw WHERE key IN ({marks})", part):
                    stored[key] = sha.hex()
        results: list[RawPut] = []
        for obj in objects:
            if obj.key in created:
                created.discard(obj.key)  # a later object with the same key in this call found it taken
                results.append(RawPut(obj.key, RawPutStatus.CREATED, obj.sha256))
                stored[obj.key] = obj.sha256
            else:
                results.append(RawPut(obj.key, RawPutStatus.EXISTS, stored[obj.key]))
        return results

    def get(self, key: str) -> bytes | None:
        rows = self._db.read("SELECT data FROM raw WHERE key = ?", (key,))
        return bytes(rows[0][0]) if rows else None

    def sha256(self, key: str) -> str | None:
        rows = self._db.read("SELECT sha256 FROM raw WHERE key = ?", (key,))
        return bytes(rows[0][0]).hex() if rows else None
