"""The event index of a workspace (:class:`backend.ports.EventIndex`, :class:`backend.ports.IngestLedger`).

One row per receipt of an event id in ``events``: receipt 0 is the single ACCEPTED one, the others are its
DUPLICATE receipts in arrival order; the schema's unique key on (event_id, receipt) is what makes an
acceptance unique (DESIGN invariant 2). Entity ids and (source, event_type, day) partitions are numbered
once in their own tables and cached here, so the event indexes hold small integers. What could not be
accepted is kept in ``rejections`` (the quarantine), with the reason. The ingest ledger looks up which
lines of an input are already stored, so an interrupted ingest resumes. Reads come a page at a time, by key.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Iterator, Sequence
from typing import Any

from backend.adapters.local.database import Database, chunks
from backend.adapters.local.encoding import (
    cursor_event_id,
    cursor_text,
    event_id_blob,
    from_ms,
    stored_ms,
    to_ms,
)
from backend.adapters.local.schema_v6 import EVENT_ID_MATCH
from backend.errors import InvalidRequest
from backend.identity import raw_key
from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.ports import Claim, IndexStats, PartitionCount, Recorded

_EVENT_COLUMNS = (
    "e.seq, e.event_id, e.receipt, p.source, p.event_type, n.entity_id, e.event_ms, e.ingest_ms, "
    "e.ingest_lag_ms, e.clock_skew, e.payload_sha, p.day, e.s3_key, e.raw_sha, e.raw_size, "
    "e.idempotency_key, o.origin, e.line"
)
_EVENT_FROM = (
    "events e JOIN entities n ON n.id = e.entity JOIN partitions p ON p.id = e.part "
    "LEFT JOIN origins o ON o.id = e.origin_id"
)
_EVENT_TARGET = (
    "events (event_id, receipt, entity, part, event_ms, ingest_ms, ingest_lag_ms, clock_skew, payload_sha, "
    "s3_key, raw_sha, raw_size, idempotency_key, origin_id, line)"
)
_EVENT_ARITY = 15
_INSERT_EVENT = f"INSERT INTO {_EVENT_TARGET} VALUES ({','.join('?' * _EVENT_ARITY)})"
_REJECTION_COLUMNS = (
    "id, received_at, reason, origin, line, size, sha256, data, truncated, source, event_type, entity_id"
)
_STATUS_SQL = {IngestStatus.ACCEPTED: "e.receipt = 0", IngestStatus.DUPLICATE: "e.receipt > 0"}


def _status_sql(status: IngestStatus | str) -> str:
    try:
        sql = _STATUS_SQL.get(IngestStatus(status))
    except ValueError:
        raise InvalidRequest(f"unknown status {status!r} (ACCEPTED, DUPLICATE or REJECTED)") from None
    if sql is None:
        raise InvalidRequest("rejected requests are not in the event index: list them with query_rejections")
    return sql


class LocalIndex:
    """The event index and the quarantine in ``db``."""

    def __init__(self, db: Database) -> None:
        self._db = db
        # Entity and partition numbers never change once committed, so they are cached per index.
        self._entity_ids: dict[str, int] = {}
        self._part_ids: dict[tuple[str, str, str], int] = {}
        self._origin_ids: dict[str, int] = {}
        # Numbers assigned by writes not yet committed (see writing): (cache, numbers) pairs.
        self._pending: list[tuple[dict[Any, int], dict[Any, int]]] = []

    # -- EventIndex: writes ----------------------------------------------------------------------------

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        if not records:
            return []
        if claims is not None and len(claims) != len(records):
            raise ValueError("record: one claim per record")
        unverified = [i for i, c in enumerate(claims or ()) if c is Claim.UNVERIFIED]
        if not unverified:
            return self._record(records)
        # UNVERIFIED receipts are decided against what is stored once the others are in (one transaction).
        statuses: list[Recorded] = [Recorded.DUPLICATE] * len(records)
        with self.writing("record events"):
            rest = [i for i in range(len(records)) if i not in set(unverified)]
            for i, status in zip(rest, self._record([records[i] for i in rest]), strict=True):
                statuses[i] = status
            keep: list[int] = []
            for i in unverified:
                r = records[i]
                accepted = self._db.read(
                    "SELECT e.s3_key, e.raw_sha, p.source, p.event_type, p.day FROM events e "
                    f"JOIN partitions p ON p.id = e.part WHERE {EVENT_ID_MATCH} AND e.receipt = 0",
                    (bytes.fromhex(r.event_id),) * 2,
                )
                if not accepted and not any(records[j].event_id == r.event_id for j in keep):
                    statuses[i] = Recorded.UNSEEN
                    continue
                if accepted:
                    key, sha, source, event_type, day = accepted[0]
                    key = key or raw_key(source, event_type, day, r.event_id)
                    if key != r.s3_key:
                        statuses[i] = Recorded.UNSEEN
                        continue
                    if bytes(sha).hex() != r.raw_sha:
                        statuses[i] = Recorded.MISPLACED
                        continue
                keep.append(i)
            for i, status in zip(keep, self._record([records[i] for i in keep]), strict=True):
                statuses[i] = status
        return statuses

    def _record(self, records: Sequence[EventRecord]) -> list[Recorded]:
        if not records:
            return []
        return self.insert_rows([self._event_row(r) for r in records])

    def insert_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[Recorded]:
        """Record receipts given as rows of ``events`` with the entity id and the (source, event_type, day)
        partition in place of their numbers (:meth:`_event_row`); in the caller's transaction if one is open.
        ACCEPTED for each event id's first receipt ever, DUPLICATE (the next receipt number) for the rest."""
        if not rows:
            return []
        with self.writing("record events") as conn:
            entity_ids, part_ids, origin_ids = self.numbers(
                conn,
                dict.fromkeys(r[2] for r in rows),
                dict.fromkeys(r[3] for r in rows),
                dict.fromkeys(r[13] for r in rows),
            )
            return self.insert_numbered(
                [
                    (r[0], 0, entity_ids[r[2]], part_ids[r[3]], *r[4:13], origin_ids[r[13]], *r[14:])
                    for r in rows
                ]
            )

    def numbers(
        self,
        conn: sqlite3.Connection,
        entities: Collection[str],
        partitions: Collection[tuple[str, str, str]],
        origins: Collection[str | None],
    ) -> tuple[dict[str, int], dict[tuple[str, str, str], int], dict[str | None, int | None]]:
        """The numbers of these entity ids, partitions and origins (None: none), adding the new ones in the
        order given (first appearance: then a name's number does not depend on how the input was cut into
        batches), in ``conn``'s write transaction (opened with :meth:`writing`)."""
        entity_ids = self._intern(conn, self._entity_ids, entities, "entities", ("entity_id",))
        self._pending.append((self._entity_ids, entity_ids))
        named = [o for o in origins if o is not None]
        origin_ids: dict[str | None, int | None] = {}
        origin_ids.update(self._intern(conn, self._origin_ids, named, "origins", ("origin",)))
        self._pending.append((self._origin_ids, {k: v for k, v in origin_ids.items() if v is not None}))
        origin_ids[None] = None
        return entity_ids, self.partition_ids(conn, partitions), origin_ids

    def insert_numbered(self, rows: Sequence[tuple[Any, ...]]) -> list[Recorded]:
        """As :meth:`insert_rows`, the rows already holding entity, partition and origin numbers (in
        ``events`` column order), in the transaction that :meth:`numbers` numbered them in."""
        statuses = [Recorded.ACCEPTED] * len(rows)
        for i in self.insert_new(rows):
            statuses[i] = Recorded.DUPLICATE
        return statuses

    def insert_new(self, rows: Sequence[tuple[Any, ...]]) -> list[int]:
        """:meth:`insert_numbered`, answered as the positions of the DUPLICATE receipts, in order (every
        other row is its event id's ACCEPTED receipt): per row, nothing but the inserts themselves."""
        with self.writing("record events") as conn:
            # Try every event id's first appearance in the batch as receipt 0 (the acceptance). The insert
            # guard skips it if the id was accepted before; the rows above the old maximum seq are the
            # winners (we hold the write lock, and seq only grows).
            n = len(rows)
            eids = [row[0] for row in rows]
            first = dict(zip(reversed(eids), range(n - 1, -1, -1), strict=True))  # id -> first position
            order = range(n) if len(first) == n else sorted(first.values())  # first appearances, in order
            firsts = rows if len(first) == n else [rows[i] for i in order]
            before = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
            conn.executemany(_INSERT_EVENT, firsts)
            new_rows = conn.execute("SELECT count(*) FROM events WHERE seq > ?", (before,)).fetchone()[0]
            # Duplicate receipts take the next numbers; we hold the write lock, nobody interleaves. An id
            # this batch accepted has its receipt 0 alone so far; the numbers of the others are looked up.
            earlier: list[bytes] = []
            if new_rows == len(first):  # every first appearance went in (the usual case): no read-back
                if len(first) == n:
                    return []
                dups = [i for i, eid in enumerate(eids) if first[eid] != i]
            else:
                # The rows that went in are the first appearances of the ids not accepted before, in
                # order: walk both.
                new = conn.execute("SELECT event_id FROM events WHERE seq > ? ORDER BY seq", (before,))
                upcoming = next(new, (None,))[0]
                for eid in map(eids.__getitem__, order):
                    if eid == upcoming:
                        upcoming = next(new, (None,))[0]
                    else:
                        earlier.append(eid)
                before_batch = set(earlier)
                dups = [i for i, eid in enumerate(eids) if first[eid] != i or eid in before_batch]
            next_receipt: dict[bytes, int] = dict.fromkeys((eids[i] for i in dups), 1)
            for part in chunks(earlier):
                values = ",".join(["(?)"] * len(part))
                for eid, top in conn.execute(
                    f"WITH w (eid) AS (VALUES {values}) SELECT e.event_id, max(e.receipt) FROM w "
                    "JOIN events e ON substr(e.event_id, 1, 8) = substr(w.eid, 1, 8) "
                    "AND e.event_id = w.eid GROUP BY e.event_id",
                    part,
                ):
                    next_receipt[eid] = top + 1
            dup_rows = []
            for i in dups:
                eid = eids[i]
                number = next_receipt[eid]
                next_receipt[eid] = number + 1
                dup_rows.append((eid, number, *rows[i][2:]))
            conn.executemany(_INSERT_EVENT, dup_rows)
        return dups

    def partition_ids(
        self, conn: sqlite3.Connection, names: Collection[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], int]:
        """Numbers of the (source, event_type, day) partitions ``names``, adding the new ones, in ``conn``'s
        write transaction (opened with :meth:`writing`)."""
        found = self._intern(conn, self._part_ids, names, "partitions", ("source", "event_type", "day"))
        self._pending.append((self._part_ids, found))
        return found

    @contextlib.contextmanager
    def writing(self, action: str) -> Iterator[sqlite3.Connection]:
        """A write transaction, or the caller's if one is open. The entity and partition numbers it assigns
        are cached only once it commits: a rolled-back number may be given to another name later."""
        joined = self._db.connection().in_transaction
        try:
            with self._db.write(action, bulk=True) as conn:
                yield conn
        except BaseException:
            if not joined:
                self._pending.clear()
            raise
        if not joined:
            for cache, numbers in self._pending:
                cache.update(numbers)
            self._pending.clear()

    @staticmethod
    def _intern(
        conn: sqlite3.Connection,
        cache: dict[Any, int],
        names: Collection[Any],
        table: str,
        columns: tuple[str, ...],
    ) -> dict[Any, int]:
        """Numbers for ``names`` in ``table``, adding the new ones; the cache is left to the caller."""
        found = {name: cache[name] for name in names if name in cache}
        missing = [name for name in names if name not in found]
        if not missing:
            return found
        keyed = [name if isinstance(name, tuple) else (name,) for name in missing]
        cols = ", ".join(columns)
        one = "(" + ",".join("?" * len(columns)) + ")"
        # One row per statement, not many rows per INSERT: a statement writing hundreds of rows journals
        # enough pages to spill SQLite's statement journal to a temporary file, and every later statement
        # of the transaction (the batch's raw and index inserts) then pays for it: a quarter more time for
        # the same inserts (docs/benchmarks.md).
        conn.executemany(f"INSERT INTO {table} ({cols}) VALUES {one} ON CONFLICT DO NOTHING", keyed)
        for part in chunks(keyed, 200):
            match = " OR ".join([f"({' AND '.join(c + ' = ?' for c in columns)})"] * len(part))
            for row in conn.execute(
                f"SELECT id, {cols} FROM {table} WHERE {match}", [v for k in part for v in k]
            ):
                key = row[1] if len(columns) == 1 else tuple(row[1:])
                found[key] = row[0]
        return found

    @staticmethod
    def _event_row(r: EventRecord) -> tuple[Any, ...]:
        """``r`` as an ``events`` row for :meth:`insert_rows` (entity and partition by name)."""
        s3_key = None if r.s3_key == raw_key(r.source, r.event_type, r.day, r.event_id) else r.s3_key
        return (
            bytes.fromhex(r.event_id), 0, r.entity_id, (r.source, r.event_type, r.day),
            stored_ms(r.event_time), stored_ms(r.ingest_time), r.ingest_lag_ms, int(r.clock_skew),
            bytes.fromhex(r.payload_sha), s3_key, bytes.fromhex(r.raw_sha or ""), r.raw_size,
            r.idempotency_key, r.origin, r.line,
        )  # fmt: skip

    def quarantine(self, rejections: Sequence[Rejection]) -> list[str]:
        if not rejections:
            return []
        ids: list[str] = []
        with self._db.write("quarantine rejected events") as conn:
            for r in rejections:
                cur = conn.execute(
                    "INSERT INTO rejections (received_at, reason, origin, line, size, sha256, data, "
                    "truncated, source, event_type, entity_id) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        r.received_at, r.reason, r.origin, r.line, r.size, r.sha256, r.data,
                        int(r.truncated), r.source, r.event_type, r.entity_id,
                    ),
                )  # fmt: skip
                ids.append(str(cur.lastrowid))
        return ids

    # -- IngestLedger -----------------------------------------------------------------------------------

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        found: dict[int, set[str]] = {}
        rows = self._db.read(
            "SELECT line, raw_sha FROM events "
            "WHERE origin_id = (SELECT id FROM origins WHERE origin = ?) AND line BETWEEN ? AND ?",
            (origin, first_line, last_line),
        )
        for line, sha in rows:
            found.setdefault(int(line), set()).add(bytes(sha).hex())
        rows = self._db.read(
            "SELECT line, sha256 FROM rejections WHERE origin = ? AND line BETWEEN ? AND ?",
            (origin, first_line, last_line),
        )
        for line, sha in rows:
            found.setdefault(int(line), set()).add(str(sha))
        return found

    # -- EventIndex: reads -----------------------------------------------------------------------------

    @staticmethod
    def _event(row: Sequence[Any]) -> EventRecord:
        event_id = row[1].hex()
        event_time = from_ms(row[6])
        return EventRecord(
            receipt=str(row[2]),
            event_id=event_id,
            status=IngestStatus.DUPLICATE if row[2] else IngestStatus.ACCEPTED,
            source=row[3],
            event_type=row[4],
            entity_id=row[5],
            event_time=event_time,
            ingest_time=from_ms(row[7]),
            ingest_lag_ms=row[8],
            clock_skew=bool(row[9]),
            payload_sha=row[10].hex(),
            day=row[11],
            hour=event_time[11:13],
            s3_key=row[12] if row[12] is not None else raw_key(row[3], row[4], row[11], event_id),
            raw_sha=row[13].hex(),
            raw_size=row[14],
            idempotency_key=row[15],
            origin=row[16],
            line=row[17],
        )

    @staticmethod
    def _rejection(row: Sequence[Any]) -> Rejection:
        return Rejection(
            rejection_id=str(row[0]),
            received_at=row[1],
            reason=row[2],
            origin=row[3],
            line=row[4],
            size=row[5],
            sha256=row[6],
            data=bytes(row[7]),
            truncated=bool(row[8]),
            source=row[9],
            event_type=row[10],
            entity_id=row[11],
        )

    def get_accepted(self, event_id: str) -> EventRecord | None:
        eid = event_id_blob(event_id)
        if eid is None:
            return None
        rows = self._db.read(
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM} WHERE {EVENT_ID_MATCH} AND e.receipt = 0", (eid, eid)
        )
        return self._event(rows[0]) if rows else None

    def receipts(self, event_id: str) -> list[EventRecord]:
        eid = event_id_blob(event_id)
        if eid is None:
            return []
        rows = self._db.read(
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM} WHERE {EVENT_ID_MATCH} ORDER BY e.receipt",
            (eid, eid),
        )
        return [self._event(r) for r in rows]

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
        try:
            window = [to_ms(start), to_ms(end)]
        except (ValueError, OverflowError):
            raise InvalidRequest(f"window [{start!r}, {end!r}) is not a pair of ISO date-times") from None
        where = [
            "e.entity = (SELECT id FROM entities WHERE entity_id = ?)",
            "e.event_ms >= ?",
            "e.event_ms < ?",
        ]
        params: list[Any] = [entity_id, *window]
        if status is not None:
            where.append(_status_sql(status))
        return self._db.page(
            "entity",
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}",
            where,
            params,
            ["e.event_ms", "e.event_id", "e.receipt"],
            lambda r: [r[6], r[1].hex(), r[2]],
            lambda key: [int(key[0]), cursor_event_id(key[1]), int(key[2])],
            limit,
            after,
            descending,
            self._event,
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
        where = ["e.part = (SELECT id FROM partitions WHERE source = ? AND event_type = ? AND day = ?)"]
        params: list[Any] = [source, event_type, day]
        if status is not None:
            where.append(_status_sql(status))
        return self._db.page(
            "partition",
            f"SELECT {_EVENT_COLUMNS} FROM {_EVENT_FROM}",
            where,
            params,
            ["e.ingest_lag_ms", "e.seq"],
            lambda r: [r[8], r[0]],
            lambda key: [int(key[0]), int(key[1])],
            limit,
            after,
            descending,
            self._event,
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
        where = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("entity_id", entity_id), ("source", source), ("event_type", event_type)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if start is not None:
            where.append("received_at >= ?")
            params.append(start)
        if end is not None:
            where.append("received_at < ?")
            params.append(end)
        return self._db.page(
            "rejections",
            f"SELECT {_REJECTION_COLUMNS} FROM rejections",
            where,
            params,
            ["received_at", "id"],
            lambda r: [r[1], r[0]],
            lambda key: [cursor_text(key[0]), int(key[1])],
            limit,
            after,
            descending,
            self._rejection,
        )

    def get_rejection(self, rejection_id: str) -> Rejection | None:
        if not rejection_id.isdigit():
            return None
        rows = self._db.read(
            f"SELECT {_REJECTION_COLUMNS} FROM rejections WHERE id = ?", (int(rejection_id),)
        )
        return self._rejection(rows[0]) if rows else None

    def stats(self) -> IndexStats:
        partitions = [
            PartitionCount(source=s, event_type=t, accepted=a, duplicate=d)
            for s, t, a, d in self._db.read(
                "SELECT p.source, p.event_type, sum(e.receipt = 0), sum(e.receipt > 0) "
                "FROM events e JOIN partitions p ON p.id = e.part "
                "GROUP BY p.source, p.event_type ORDER BY p.source, p.event_type"
            )
        ]
        entities = self._db.read("SELECT count(DISTINCT entity) FROM events")[0][0]
        first, last = self._db.read("SELECT min(event_ms), max(event_ms) FROM events")[0]
        rejected = self._db.read("SELECT count(*) FROM rejections")[0][0]
        return IndexStats(
            accepted=sum(p.accepted for p in partitions),
            duplicate=sum(p.duplicate for p in partitions),
            rejected=rejected,
            entities=entities,
            first_event_time=None if first is None else from_ms(first),
            last_event_time=None if last is None else from_ms(last),
            partitions=partitions,
        )
