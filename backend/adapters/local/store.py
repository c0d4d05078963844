"""The embedded default store: one SQLite database (WAL) in a workspace folder.

:class:`LocalStore` implements :class:`backend.ports.RawStore`, :class:`backend.ports.EventIndex` and
:class:`backend.ports.IngestLedger` for one workspace. It is not a mock: it is persistent, safe for several
processes at once (every write takes the database's write lock with ``BEGIN IMMEDIATE``), and each batch is
one durable transaction (``synchronous=FULL``). It composes three pieces, each in a module of its own:
:mod:`~backend.adapters.local.database` (the file, its connections and transactions),
:mod:`~backend.adapters.local.raw` (the raw bytes) and :mod:`~backend.adapters.local.index` (the event
index and the quarantine). The other local ports reach the same database through :attr:`LocalStore.db`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from itertools import repeat
from typing import cast

from backend.adapters.local.database import DB_NAME, Database
from backend.adapters.local.index import LocalIndex
from backend.adapters.local.raw import LocalRaw
from backend.adapters.local.raw_codec import PLAIN
from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.ports import Claim, IndexStats, RawObject, RawPacker, RawPut, ReceiptColumns, Recorded
from backend.times import Clock

__all__ = ["DB_NAME", "LocalStore"]


class LocalStore:
    """A workspace folder holding ``pik.sqlite3``. Thread-safe: one connection per thread.

    ``create``: make the folder and the database if there are none (else WorkspaceError). ``upgrade``: bring
    an older schema up to date; without it (read-only) nothing is written, and an older schema is refused.
    ``clock``: when raw objects are stored."""

    def __init__(
        self,
        workspace: str | os.PathLike[str],
        *,
        create: bool = True,
        clock: Clock | None = None,
        upgrade: bool = True,
        on_upgrade: Callable[[int, int], None] | None = None,
    ):
        self.db = Database(workspace, create=create, upgrade=upgrade, on_upgrade=on_upgrade)
        self.path = self.db.path
        self.location = str(self.path)
        self.db_path = self.db.db_path
        self.schema_version = self.db.schema_version
        self.index = LocalIndex(self.db)
        self.raw = LocalRaw(self.db, clock or Clock(), self.index)

    def close(self) -> None:
        self.db.close()

    # -- workspace metadata (local only) -------------------------------------------------------------

    def meta_get(self, key: str) -> str | None:
        rows = self.db.read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def meta_put(self, key: str, value: str) -> None:
        with self.db.write("write workspace metadata") as conn:
            conn.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = ?",
                (key, value, value),
            )

    # -- RawStore: see LocalRaw -----------------------------------------------------------------------

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        return self.raw.put_new(objects)

    def get(self, key: str) -> bytes | None:
        return self.raw.get(key)

    def sha256(self, key: str) -> str | None:
        return self.raw.sha256(key)

    # -- EventIndex and IngestLedger: see LocalIndex --------------------------------------------------

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        return self.index.record(records, claims)

    def raw_packer(self) -> RawPacker | None:
        """:class:`backend.ports.ReceiptStore`: how to compress bodies for :meth:`store_columns`."""
        return self.raw.packer()

    def store_columns(
        self,
        receipts: ReceiptColumns,
        bodies: Sequence[bytes],
        packed: tuple[Sequence[int], Sequence[bytes]] | None = None,
    ) -> list[int] | None:
        """:class:`backend.ports.ReceiptStore`: raw bytes and index rows in one transaction; the positions
        of the DUPLICATE receipts.

        The rows are built column by column (names to numbers, then one ``zip``): per request, this
        process does little more than the ``executemany`` calls themselves.

        If any key holds other bytes than its receipt's (an idempotency-key retry with a new payload, say),
        the bytes are stored but no receipt is recorded, and the answer is None: the caller then records
        the whole batch through :meth:`put_new` and :meth:`record` (which find these bytes already stored),
        so that receipts keep their arrival order.

        ``packed``: each body's codec and stored form, as this store's :meth:`raw_packer` made them (in
        the prepare workers); without it, bodies are compressed here if the workspace has a dictionary.
        """
        n = len(receipts.event_id)
        if not n:
            return []
        with self.index.writing("store events") as conn:
            if packed is None:
                packer = self.raw.ensure_packer(conn, bodies)
                packed = packer.pack_many(bodies) if packer else ([PLAIN] * n, bodies)
            codecs, datas = packed
            entity_ids, part_ids, origin_ids = self.index.numbers(
                conn,
                dict.fromkeys(receipts.entity_id),
                dict.fromkeys(receipts.partition),
                dict.fromkeys(receipts.origin),
            )
            parts = list(map(part_ids.__getitem__, receipts.partition))
            eids, shas = receipts.event_id, receipts.raw_sha
            # Each key's first request of the batch is offered to the raw table; a later one with the same
            # key would find it taken by the first, so it is not offered at all, only checked to carry the
            # same bytes (else: None, as below).
            keys = list(zip(parts, eids, strict=True))
            first = dict(zip(reversed(keys), range(n - 1, -1, -1), strict=True))
            if len(first) == n:
                _, stored = self.raw.insert(conn, parts, eids, None, codecs, datas, distinct=True)
            else:
                if any(shas[first[key]] != sha for key, sha in zip(keys, shas, strict=True)):
                    return None
                which = sorted(first.values())
                _, stored = self.raw.insert(
                    conn,
                    [parts[i] for i in which],
                    [eids[i] for i in which],
                    None,
                    [codecs[i] for i in which],
                    [datas[i] for i in which],
                    distinct=True,
                )
            # Keys taken before this batch must hold the bytes of this batch's requests with that key.
            for (part, eid, _), sha in stored.items():
                if bytes.fromhex(sha) != shas[first[(cast(int, part), cast(bytes, eid))]]:
                    return None
            rows = list(
                zip(
                    eids, repeat(0, n), map(entity_ids.__getitem__, receipts.entity_id), parts,
                    receipts.event_ms, receipts.ingest_ms, receipts.ingest_lag_ms,
                    map(int, receipts.clock_skew),
                    receipts.payload_sha, repeat(None, n), shas, receipts.raw_size,
                    receipts.idempotency_key, map(origin_ids.__getitem__, receipts.origin), receipts.line,
                    strict=True,
                )
            )  # fmt: skip
            return self.index.insert_new(rows)

    def quarantine(self, rejections: Sequence[Rejection]) -> list[str]:
        return self.index.quarantine(rejections)

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        return self.index.delivered(origin, first_line, last_line)

    def get_accepted(self, event_id: str) -> EventRecord | None:
        return self.index.get_accepted(event_id)

    def receipts(self, event_id: str) -> list[EventRecord]:
        return self.index.receipts(event_id)

    def query_entity(
        self,
        entity_id: str,
        start: str,
        end: str,
        *,
        status: IngestStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[EventRecord]:
        return self.index.query_entity(
            entity_id, start, end, status=status, limit=limit, after=after, descending=descending
        )

    def query_partition(
        self,
        source: str,
        event_type: str,
        day: str,
        *,
        status: IngestStatus | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[EventRecord]:
        return self.index.query_partition(
            source, event_type, day, status=status, limit=limit, after=after, descending=descending
        )

    def query_rejections(
        self,
        *,
        entity_id: str | None = None,
        source: str | None = None,
        event_type: str | None = None,
        start: str | None = None,
        end: str | None = None,
        limit: int = 100,
        after: str | None = None,
        descending: bool = False,
    ) -> Page[Rejection]:
        return self.index.query_rejections(
            entity_id=entity_id,
            source=source,
            event_type=event_type,
            start=start,
            end=end,
            limit=limit,
            after=after,
            descending=descending,
        )

    def get_rejection(self, rejection_id: str) -> Rejection | None:
        return self.index.get_rejection(rejection_id)

    def stats(self) -> IndexStats:
        return self.index.stats()
