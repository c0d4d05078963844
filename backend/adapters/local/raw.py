"""The raw table of a workspace (:class:`backend.ports.RawStore`): every event's bytes exactly as received.

A key is written once. The schema's insert guard skips a write of a taken key (so nothing stored is ever
overwritten, from this kit or any other SQLite client) and its triggers refuse updates and deletes: raw data
is immutable (DESIGN invariant 3). ``put_new`` stores a batch in one write transaction and says, per
object, whether this call created it or found it there, with the digest of what is stored.

An identity key is stored as its partition number and event id (:mod:`backend.adapters.local.raw_keys`),
any other key as text; the bytes as received or compressed with one of the workspace's dictionaries
(:mod:`backend.adapters.local.raw_codec`). Reads give back the bytes exactly as received.
"""

from __future__ import annotations

import hashlib
import itertools
import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from backend.adapters.local import raw_codec
from backend.adapters.local.database import Database, chunks
from backend.adapters.local.raw_keys import parse_identity_key
from backend.ports import RawObject, RawPut, RawPutStatus
from backend.times import Clock

if TYPE_CHECKING:
    from backend.adapters.local.index import LocalIndex


Ident = tuple[
    int | None, bytes | None, str | None
]  # a raw key as stored: (part, event_id, None) or (None, None, key)


class LocalRaw:
    """The ``raw`` table of ``db``; ``clock`` stamps when each object was stored; ``index`` numbers the
    partitions of identity keys."""

    def __init__(self, db: Database, clock: Clock, index: LocalIndex) -> None:
        self._db = db
        self._clock = clock
        self._index = index
        self._dictionaries: dict[int, bytes] = {}  # immutable once stored, so cached
        self._packer: raw_codec.Packer | None = None

    # -- writes -----------------------------------------------------------------------------------------

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        if not objects:
            return []
        with self._index.writing("store raw events") as conn:
            packer = self.ensure_packer(conn, [o.data for o in objects])
            codecs, stored = (
                packer.pack_many([o.data for o in objects])
                if packer
                else ([raw_codec.PLAIN] * len(objects), [o.data for o in objects])
            )
            identities = [parse_identity_key(o.key) for o in objects]
            parts = self._index.partition_ids(conn, dict.fromkeys(i[0] for i in identities if i is not None))
            idents: list[Ident] = [
                (parts[i[0]], i[1], None) if i else (None, None, o.key)
                for o, i in zip(objects, identities, strict=True)
            ]
            made, stored_sha = self.insert(
                conn, [i[0] for i in idents], [i[1] for i in idents], [i[2] for i in idents], codecs, stored
            )
            created = set(idents) if made is None else made
        results: list[RawPut] = []
        for obj, ident in zip(objects, idents, strict=True):
            if ident in created:
                created.discard(ident)  # a later object with the same key in this call found it taken
                results.append(RawPut(obj.key, RawPutStatus.CREATED, obj.sha256))
                stored_sha[ident] = obj.sha256
            else:
                results.append(RawPut(obj.key, RawPutStatus.EXISTS, stored_sha[ident]))
        return results

    def stamp_ms(self) -> int:
        """The ``stored_ms`` of objects stored now."""
        return int(self._clock.now().timestamp() * 1000)

    def insert(
        self,
        conn: sqlite3.Connection,
        parts: Sequence[int | None],
        eids: Sequence[bytes | None],
        keys: Sequence[str | None] | None,
        codecs: Sequence[int],
        datas: Sequence[bytes],
        *,
        distinct: bool = False,
    ) -> tuple[set[Ident] | None, dict[Ident, str]]:
        """Insert a row per key, given as columns: an identity key's partition and event id or another
        key's text (``keys``; None: identity keys only), and its bytes as stored (``codecs``, ``datas``), in
        ``conn``'s open write transaction. Returns the keys (:data:`Ident`) this call created and, for the
        keys it found taken, the sha256 (hex) of the bytes stored there. With ``distinct`` (the caller
        knows no key is given twice), the keys created are not collected (answered as None), and nothing
        is looked at per key unless some were taken."""
        stored_ms = self.stamp_ms()
        n = len(parts)
        texts: Iterable[str | None] = keys if keys is not None else itertools.repeat(None, n)
        # The schema's insert guard skips a taken key (nothing overwritten, no error). Rows are appended
        # in rowid order and nobody else writes while we hold the lock, so the rows above the old
        # maximum are exactly the ones this call created. (Cheaper than INSERT ... RETURNING.)
        before = conn.execute("SELECT coalesce(max(id), 0) FROM raw").fetchone()[0]
        conn.executemany(
            "INSERT INTO raw (part, event_id, key, stored_ms, codec, data) VALUES (?,?,?,?,?,?)",
            zip(parts, eids, texts, itertools.repeat(stored_ms, n), codecs, datas, strict=True),
        )
        new_rows = conn.execute("SELECT count(*) FROM raw WHERE id > ?", (before,)).fetchone()[0]
        if distinct and new_rows == n:
            return None, {}  # every key was created (the usual case)
        idents = zip(parts, eids, keys if keys is not None else itertools.repeat(None, n), strict=True)
        taken: list[Ident]
        if distinct:
            # The rows created are the keys not taken, in the order given: walk both.
            new = conn.execute("SELECT part, event_id, key FROM raw WHERE id > ? ORDER BY id", (before,))
            created: set[Ident] | None = None
            taken, upcoming = [], next(new, None)
            for ident in idents:
                if ident == upcoming:
                    upcoming = next(new, None)
                else:
                    taken.append(ident)
        else:
            wanted: set[Ident] = set(idents)
            if new_rows == len(wanted):
                return wanted, {}  # as many new rows as distinct keys: every key was created
            created = set(conn.execute("SELECT part, event_id, key FROM raw WHERE id > ?", (before,)))
            taken = list(wanted - created)
        stored: dict[Ident, str] = {}
        for ident, codec, data in self._by_ident(conn, taken, "r.codec, r.data"):
            body = raw_codec.unpack(codec, data, self._dictionary(conn, codec))
            stored[ident] = hashlib.sha256(body).hexdigest()
        return created, stored

    # -- compression --------------------------------------------------------------------------------------

    def packer(self) -> raw_codec.Packer | None:
        """How new raw bytes are compressed: the workspace's newest dictionary (None before it has one)."""
        if self._packer is None:
            rows = self._db.read("SELECT id, data FROM raw_dictionaries ORDER BY id DESC LIMIT 1")
            if rows:
                self._packer = raw_codec.Packer(int(rows[0][0]), bytes(rows[0][1]))
        return self._packer

    def ensure_packer(self, conn: sqlite3.Connection, bodies: Sequence[bytes]) -> raw_codec.Packer | None:
        """:meth:`packer`, training the workspace's first dictionary (in ``conn``'s write transaction)
        once the raw table and ``bodies`` hold enough rows to train one on."""
        packer = self.packer()
        if packer is not None:
            return packer
        (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM raw").fetchone()
        if top + len(bodies) < raw_codec.TRAIN_ROWS:
            return None
        samples = [
            bytes(d)
            for (d,) in conn.execute(
                "SELECT data FROM raw WHERE codec = 0 ORDER BY id LIMIT ?", (raw_codec.TRAIN_SAMPLES,)
            )
        ]
        trained = raw_codec.train([*samples, *bodies[: max(raw_codec.TRAIN_SAMPLES - len(samples), 0)]])
        if trained is None:
            return None
        cur = conn.execute(
            "INSERT INTO raw_dictionaries (id, created_ms, data) "
            "SELECT coalesce(max(id), 0) + 1, ?, ? FROM raw_dictionaries",
            (self.stamp_ms(), trained),
        )
        # Not cached here: the transaction may yet roll back; packer() finds it once committed.
        return raw_codec.Packer(int(cur.lastrowid or 0), trained)

    def _dictionary(self, conn: sqlite3.Connection, codec: int) -> dict[int, bytes]:
        if codec != raw_codec.PLAIN and codec not in self._dictionaries:
            for n, data in conn.execute("SELECT id, data FROM raw_dictionaries"):
                self._dictionaries[int(n)] = bytes(data)
        return self._dictionaries

    # -- reads ------------------------------------------------------------------------------------------

    def _by_ident(
        self,
        conn: sqlite3.Connection,
        idents: Sequence[tuple[int | None, bytes | None, str | None]],
        columns: str,
    ) -> list[tuple[Any, ...]]:
        """``(ident, *columns)`` of the rows at ``idents`` (``_ident``; ``r`` is the raw table), a few
        hundred keys per statement."""
        out: list[tuple[Any, ...]] = []
        texts = [key for _, _, key in idents if key is not None]
        for chunk in chunks(texts):
            marks = ",".join("?" * len(chunk))
            for key, *rest in conn.execute(
                f"SELECT r.key, {columns} FROM raw r WHERE r.key IN ({marks})", chunk
            ):
                out.append(((None, None, key), *rest))
        pairs = [(part, eid) for part, eid, key in idents if key is None]
        for chunk in chunks(pairs):
            values = ",".join(["(?,?)"] * len(chunk))
            for part, eid, *rest in conn.execute(
                f"WITH w (part, eid) AS (VALUES {values}) SELECT r.part, r.event_id, {columns} FROM w "
                "JOIN raw r ON r.part = w.part AND substr(r.event_id, 1, 8) = substr(w.eid, 1, 8) "
                "AND r.event_id = w.eid",
                [v for pair in chunk for v in pair],
            ):
                out.append(((part, bytes(eid), None), *rest))
        return out

    def get(self, key: str) -> bytes | None:
        return self.get_many([key]).get(key)

    def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The bytes as received at each of ``keys`` that holds some."""
        out: dict[str, bytes] = {}
        conn = self._db.connection()
        try:
            for key, codec, data in self._rows(conn, keys, "r.codec, r.data"):
                out[key] = raw_codec.unpack(codec, data, self._dictionary(conn, codec))
        except sqlite3.Error as exc:
            raise self._db.error("read", exc) from None
        return out

    def present(self, keys: Sequence[str]) -> set[str]:
        """Which of ``keys`` hold bytes."""
        conn = self._db.connection()
        try:
            return {key for key, _ in self._rows(conn, keys, "1")}
        except sqlite3.Error as exc:
            raise self._db.error("read", exc) from None

    def _rows(self, conn: sqlite3.Connection, keys: Sequence[str], columns: str) -> list[tuple[Any, ...]]:
        """``(key, *columns)`` of the rows at ``keys`` (``r`` is the raw table)."""
        wanted = list(dict.fromkeys(keys))
        by_identity: dict[tuple[str, str, str, bytes], str] = {}
        texts: list[str] = []
        for key in wanted:
            identity = parse_identity_key(key)
            if identity is None:
                texts.append(key)
            else:
                by_identity[(*identity[0], identity[1])] = key
        names = list({ident[:3] for ident in by_identity})
        parts: dict[tuple[str, str, str], int] = {}
        for chunk in chunks(names, 300):
            values = ",".join(["(?,?,?)"] * len(chunk))
            for pid, source, event_type, day in conn.execute(
                "SELECT id, source, event_type, day FROM partitions "
                f"WHERE (source, event_type, day) IN (VALUES {values})",
                [v for name in chunk for v in name],
            ):
                parts[(source, event_type, day)] = pid
        at: dict[Ident, str] = {(None, None, k): k for k in texts}
        at.update({(parts[i[:3]], i[3], None): key for i, key in by_identity.items() if i[:3] in parts})
        return [(at[ident], *rest) for ident, *rest in self._by_ident(conn, list(at), columns)]

    def sha256(self, key: str) -> str | None:
        data = self.get(key)
        return hashlib.sha256(data).hexdigest() if data is not None else None
