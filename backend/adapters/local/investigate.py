"""Bulk reads over the local event index (:class:`backend.ports.InvestigationIndex`).

The rows come straight from the two event indexes of the workspace (``events_by_entity``,
``events_by_lag``) and are turned into lean :class:`Receipt` tuples with arithmetic time formatting: a
replay plan over 100,000 receipts costs a fraction of a second, where building an ``EventRecord`` per row
would cost several. Per-day counts are one ``GROUP BY`` in SQLite.
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from backend.adapters.local.database import chunks
from backend.adapters.local.encoding import cursor_event_id, to_ms
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.identity import raw_key
from backend.model import IngestStatus, Page, ReplayRequest
from backend.paging import decode_cursor
from backend.ports import DayCount, LagRollup, Receipt, ReplaySelection
from backend.times import TimeFormatError, day_range, parse_day

_DAY_MS = 86_400_000
_EPOCH_DAY = date(1970, 1, 1)

# The entity id is a parameter of scan_entity (``?``), so that scan joins only the small partitions table.
_SCAN_COLUMNS = (
    "e.seq, e.event_id, e.receipt, p.source, p.event_type, {entity}, e.event_ms, e.ingest_ms, "
    "e.ingest_lag_ms, e.clock_skew, e.payload_sha, p.day, e.s3_key"
)
_SCAN_FROM = "events e JOIN partitions p ON p.id = e.part"
# Whether a receipt's raw bytes exist: its key (stored, or derived as backend.identity.raw_key does) looked
# up in the raw table's key index, inside the scan: no key list goes through Python.
_RAW_PRESENT = (
    "EXISTS (SELECT 1 FROM raw WHERE key = coalesce(e.s3_key, 'raw/source=' || p.source || "
    "'/event_type=' || p.event_type || '/event_date=' || p.day || '/event_id=' || lower(hex(e.event_id)) "
    "|| '.json'))"
)
_FETCH = 4096


@functools.lru_cache(maxsize=16384)
def _day_text(day_number: int) -> str:
    return (_EPOCH_DAY + timedelta(days=day_number)).isoformat()


@functools.lru_cache(maxsize=16384)
def _day_prefix(day_number: int) -> str:
    return _day_text(day_number) + "T"


@functools.cache
def _clock_texts() -> tuple[list[str], list[str]]:
    """``HH:MM:SS`` for every second of a day and ``.mmmZ`` for every millisecond (built once, ~5 MB):
    formatting a time is then two divisions and three lookups."""
    seconds = [f"{h:02d}:{m:02d}:{s:02d}" for h in range(24) for m in range(60) for s in range(60)]
    millis = [f".{n:03d}Z" for n in range(1000)]
    return seconds, millis


def iso_ms(ms: int) -> str:
    """Milliseconds since the epoch as the stored time form, ``YYYY-MM-DDTHH:MM:SS.mmmZ`` (no datetime)."""
    seconds, millis = _clock_texts()
    day, rest = divmod(ms, _DAY_MS)
    second, milli = divmod(rest, 1000)
    return _day_prefix(day) + seconds[second] + millis[milli]


def _day_ms(day: str, what: str) -> int:
    try:
        parse_day(day, what=what)
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    return (datetime.fromisoformat(day).replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


def _row(row: Any) -> Any:
    return row


def _receipts(page: Page[Any]) -> Page[Receipt]:
    """A page of rows as receipts: one tight loop, as this runs once per row of every bulk scan."""
    seconds, millis = _clock_texts()
    prefix = _day_prefix
    out: list[Receipt] = []
    append = out.append
    for (
        _,
        eid,
        receipt,
        source,
        event_type,
        entity,
        event_ms,
        ingest_ms,
        lag,
        skew,
        psha,
        day,
        key,
    ) in page.items:
        event_id = eid.hex()
        d, rest = divmod(event_ms, _DAY_MS)
        s, ms = divmod(rest, 1000)
        event_time = prefix(d) + seconds[s] + millis[ms]
        d, rest = divmod(ingest_ms, _DAY_MS)
        s, ms = divmod(rest, 1000)
        append(
            Receipt(
                event_id,
                receipt == 0,
                source,
                event_type,
                entity,
                event_time,
                prefix(d) + seconds[s] + millis[ms],
                lag,
                skew == 1,
                psha.hex(),
                key if key is not None else raw_key(source, event_type, day, event_id),
                None,
                str(receipt),
            )
        )
    return Page(items=out, next_cursor=page.next_cursor)


class LocalInvestigation:
    """:class:`backend.ports.InvestigationIndex` over a :class:`LocalStore`'s database."""

    def __init__(self, store: LocalStore) -> None:
        self._db = store.db

    def scan_entity(
        self,
        entity_id: str,
        start: str,
        end: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        try:
            window = [to_ms(start), to_ms(end)]
        except (ValueError, OverflowError):
            raise InvalidRequest(f"window [{start!r}, {end!r}) is not a pair of ISO date-times") from None
        where = [
            "e.entity = (SELECT id FROM entities WHERE entity_id = ?)",
            "e.event_ms >= ?",
            "e.event_ms < ?",
        ]
        if accepted_only:
            where.append("e.receipt = 0")
        if after is not None:
            # The row-value comparison of the cursor does not bound the index range by itself: without
            # this, every page would start reading at the window's start (a 1M window, quadratic).
            try:
                where.append("e.event_ms >= ?")
                window.append(int(decode_cursor("scan-entity:asc", after, 3)[0]))
            except (InvalidRequest, ValueError, TypeError, IndexError):
                raise InvalidRequest("the cursor is damaged: use the next_cursor of the same query") from None
        page: Page[Any] = self._db.page(
            "scan-entity",
            f"SELECT {_SCAN_COLUMNS.format(entity='?')} FROM {_SCAN_FROM}",
            where,
            [entity_id, entity_id, *window],
            ["e.event_ms", "e.event_id", "e.receipt"],
            lambda r: [r[6], r[1].hex(), r[2]],
            lambda key: [int(key[0]), cursor_event_id(key[1]), int(key[2])],
            limit,
            after,
            False,
            _row,
        )
        return _receipts(page)

    def scan_partition(
        self,
        source: str,
        event_type: str,
        day: str,
        *,
        accepted_only: bool = False,
        limit: int = 1000,
        after: str | None = None,
    ) -> Page[Receipt]:
        where = ["e.part = (SELECT id FROM partitions WHERE source = ? AND event_type = ? AND day = ?)"]
        if accepted_only:
            where.append("e.receipt = 0")
        page: Page[Any] = self._db.page(
            "scan-partition",
            f"SELECT {_SCAN_COLUMNS.format(entity='n.entity_id')} FROM {_SCAN_FROM} "
            "JOIN entities n ON n.id = e.entity",
            where,
            [source, event_type, day],
            ["e.ingest_lag_ms", "e.seq"],
            lambda r: [r[8], r[0]],
            lambda key: [int(key[0]), int(key[1])],
            limit,
            after,
            False,
            _row,
        )
        return _receipts(page)

    def select_replay(self, request: ReplayRequest, *, sample: int) -> ReplaySelection:
        """In SQL: the counts are one aggregate, the planned receipts one ordered scan that checks raw
        keys as it goes and stops when the limit is filled; receipts are built for the sample only. One
        read transaction, so the counts and the list see the same index."""
        conn = self._db.connection()
        own = not conn.in_transaction
        try:
            if own:
                conn.execute("BEGIN")
            try:
                return self._select(conn, request, sample)
            finally:
                if own:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._db.error("read", exc) from None

    def _select(self, conn: sqlite3.Connection, request: ReplayRequest, sample: int) -> ReplaySelection:
        passes: list[str] = []
        passes_params: list[Any] = []
        if request.status is IngestStatus.ACCEPTED:
            passes.append("e.receipt = 0")
        elif request.status is IngestStatus.DUPLICATE:
            passes.append("e.receipt > 0")
        # (scope, its parameters, its order)
        scopes: list[tuple[str, list[Any], str]] = []
        if request.entity_id is not None:
            assert request.start_time is not None and request.end_time is not None
            if request.source is not None:
                passes.append("p.source = ?")
                passes_params.append(request.source)
            if request.event_type is not None:
                passes.append("p.event_type = ?")
                passes_params.append(request.event_type)
            entity = conn.execute(
                "SELECT id FROM entities WHERE entity_id = ?", (request.entity_id,)
            ).fetchone()
            if entity is not None:
                scopes.append(
                    (
                        "e.entity = ? AND e.event_ms >= ? AND e.event_ms < ?",
                        [entity[0], to_ms(request.start_time), to_ms(request.end_time)],
                        "e.event_ms, e.event_id, e.receipt",
                    )
                )
        else:
            assert request.source and request.event_type and request.start_day and request.end_day
            for day in day_range(request.start_day, request.end_day):
                part = conn.execute(
                    "SELECT id FROM partitions WHERE source = ? AND event_type = ? AND day = ?",
                    (request.source, request.event_type, day),
                ).fetchone()
                if part is not None:
                    scopes.append(("e.part = ?", [part[0]], "e.ingest_lag_ms, e.seq"))
        passing = " AND ".join(passes) or "1"
        eligible = passing if request.include_duplicates else f"{passing} AND e.receipt = 0"
        scanned = filtered = duplicate = 0
        # Without a source/type filter the counts need no partition: read from the index alone.
        counted_from = _SCAN_FROM if passes_params else "events e"
        for where, params, _ in scopes:
            n, out, dup = conn.execute(
                f"SELECT count(*), coalesce(sum(NOT ({passing})), 0), "
                f"coalesce(sum(({passing}) AND e.receipt > 0), 0) "
                f"FROM {counted_from} WHERE {where}",
                [*passes_params, *passes_params, *params],
            ).fetchone()
            scanned += n
            filtered += out
            duplicate += 0 if request.include_duplicates else dup
        remaining = request.limit
        used = missing = 0
        digest = hashlib.sha256()
        windows: Counter[tuple[int, int]] = Counter()
        first: int | None = None
        last: int | None = None
        sample_keys: list[tuple[bytes, int]] = []
        for where, params, order in scopes:
            if remaining == 0:
                break
            cursor = conn.execute(
                f"SELECT e.event_id, e.receipt, e.event_ms, e.entity, {_RAW_PRESENT} FROM {_SCAN_FROM} "
                f"WHERE {where} AND {eligible} ORDER BY {order}",
                [*params, *passes_params],
            )
            try:
                while remaining:
                    rows = cursor.fetchmany(_FETCH)
                    if not rows:
                        break
                    present = [r for r in rows if r[4]]
                    if len(present) >= remaining:
                        # Raw keys are checked in order until the limit is filled: cut after the row
                        # that fills it.
                        seen = cut = 0
                        for cut, r in enumerate(rows):  # noqa: B007
                            seen += r[4]
                            if seen == remaining:
                                break
                        rows = rows[: cut + 1]
                        present = present[:remaining]
                    used += len(rows)
                    missing += len(rows) - len(present)
                    remaining -= len(present)
                    if not present:
                        continue
                    digest.update("".join([f"{r[0].hex()}:{r[1]}\n" for r in present]).encode())
                    windows.update([(r[3], r[2] // _DAY_MS) for r in present])
                    low = min([r[2] for r in present])
                    high = max([r[2] for r in present])
                    first = low if first is None else min(first, low)
                    last = high if last is None else max(last, high)
                    if len(sample_keys) < sample:
                        sample_keys += [(r[0], r[1]) for r in present[: sample - len(sample_keys)]]
            finally:
                cursor.close()
        names: dict[int, str] = {}
        for part in chunks(sorted({e for e, _ in windows})):
            marks = ",".join("?" * len(part))
            names.update(conn.execute(f"SELECT id, entity_id FROM entities WHERE id IN ({marks})", part))
        by_day: Counter[str] = Counter()
        for (_, day_number), count in windows.items():
            by_day[_day_text(day_number)] += count
        return ReplaySelection(
            scanned=scanned,
            filtered=filtered,
            duplicate=duplicate,
            missing_raw=missing,
            over_limit=scanned - filtered - duplicate - used,
            planned=request.limit - remaining,
            by_day=dict(sorted(by_day.items())),
            windows=sorted((names[e], _day_text(d)) for e, d in windows),
            entities=len(names),
            first_event_time=None if first is None else iso_ms(first),
            last_event_time=None if last is None else iso_ms(last),
            sample=self._receipts_of(conn, sample_keys),
            fingerprint=digest.hexdigest(),
        )

    def _receipts_of(self, conn: sqlite3.Connection, keys: list[tuple[bytes, int]]) -> list[Receipt]:
        """The receipts of (event id, receipt number) pairs, in the order given."""
        rows = [
            conn.execute(
                f"SELECT {_SCAN_COLUMNS.format(entity='n.entity_id')} FROM {_SCAN_FROM} "
                "JOIN entities n ON n.id = e.entity WHERE e.event_id = ? AND e.receipt = ?",
                key,
            ).fetchone()
            for key in keys
        ]
        return _receipts(Page(items=rows, next_cursor=None)).items

    def day_counts_entity(
        self, entity_id: str, first_day: str, end_day: str, *, grace_ms: int = 0, late: bool = True
    ) -> list[DayCount]:
        start, end = _day_ms(first_day, "first day"), _day_ms(end_day, "end day")
        grace = _grace(grace_ms)
        if not late:
            # Every column in the entity index: no row of the table is read.
            rows = self._db.read(
                "SELECT e.event_ms / 86400000 AS d, sum(e.receipt = 0), 0, sum(e.receipt > 0), NULL, NULL "
                "FROM events e WHERE e.entity = (SELECT id FROM entities WHERE entity_id = ?) "
                "AND e.event_ms >= ? AND e.event_ms < ? GROUP BY d ORDER BY d",
                (entity_id, start, end),
            )
            return [_day_count(_day_text(r[0]), r[1:]) for r in rows]
        # A receipt is late when it arrived at or after the end of its event day plus the grace.
        rows = self._db.read(
            "SELECT e.event_ms / 86400000 AS d, "
            "sum(e.receipt = 0), "
            "sum(e.receipt = 0 AND e.ingest_ms >= (e.event_ms / 86400000 + 1) * 86400000 + ?), "
            "sum(e.receipt > 0), "
            "min(CASE WHEN e.receipt = 0 AND e.ingest_ms >= (e.event_ms / 86400000 + 1) * 86400000 + ? "
            "    THEN e.ingest_ms END), "
            "max(CASE WHEN e.receipt = 0 AND e.ingest_ms >= (e.event_ms / 86400000 + 1) * 86400000 + ? "
            "    THEN e.ingest_ms END) "
            "FROM events e WHERE e.entity = (SELECT id FROM entities WHERE entity_id = ?) "
            "AND e.event_ms >= ? AND e.event_ms < ? GROUP BY d ORDER BY d",
            (grace, grace, grace, entity_id, start, end),
        )
        return [_day_count(_day_text(r[0]), r[1:]) for r in rows]

    def lag_rollup(self, source: str, event_type: str, day: str, *, late_ms: int) -> LagRollup | None:
        """None: a workspace keeps no rollups; a partition's scan is one pass of its lag index."""
        return None

    def day_counts_partition(
        self, source: str, event_type: str, first_day: str, end_day: str, *, grace_ms: int = 0
    ) -> list[DayCount]:
        _day_ms(first_day, "first day")
        _day_ms(end_day, "end day")
        grace = _grace(grace_ms)
        days = self._db.read(
            "SELECT id, day FROM partitions WHERE source = ? AND event_type = ? AND day >= ? AND day < ? "
            "ORDER BY day",
            (source, event_type, first_day, end_day),
        )
        out: list[DayCount] = []
        for part, day in days:
            boundary = _day_ms(day, "day") + _DAY_MS + grace
            [row] = self._db.read(
                "SELECT sum(receipt = 0), sum(receipt = 0 AND ingest_ms >= ?), sum(receipt > 0), "
                "min(CASE WHEN receipt = 0 AND ingest_ms >= ? THEN ingest_ms END), "
                "max(CASE WHEN receipt = 0 AND ingest_ms >= ? THEN ingest_ms END) "
                "FROM events WHERE part = ?",
                (boundary, boundary, boundary, part),
            )
            if row[0] is not None:
                out.append(_day_count(day, row))
        return out


def _grace(grace_ms: int) -> int:
    if not isinstance(grace_ms, int) or grace_ms < 0:
        raise InvalidRequest(
            f"the grace period must be a whole number of milliseconds >= 0, got {grace_ms!r}"
        )
    return grace_ms


def _day_count(day: str, row: Sequence[Any]) -> DayCount:
    accepted, late, duplicate, first_late, last_late = row
    return DayCount(
        day=day,
        accepted=int(accepted or 0),
        late=int(late or 0),
        duplicate=int(duplicate or 0),
        first_late_ingest=None if first_late is None else iso_ms(first_late),
        last_late_ingest=None if last_late is None else iso_ms(last_late),
    )
