"""Bulk reads over the local event index (:class:`backend.ports.InvestigationIndex`).

The rows come straight from the two event indexes of the workspace (``events_by_entity``,
``events_by_lag``) and are turned into lean :class:`Receipt` tuples with arithmetic time formatting: a
replay plan over 100,000 receipts costs a fraction of a second, where building an ``EventRecord`` per row
would cost several. Per-day counts are one ``GROUP BY`` in SQLite.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from typing import Any

from backend.adapters.local import replay_plan
from backend.adapters.local.database import chunks
from backend.adapters.local.encoding import cursor_event_id, to_ms
from backend.adapters.local.receipt_rows import (
    DAY_MS,
    SCAN_COLUMNS,
    SCAN_FROM,
    day_text,
    iso_ms,
    manifest_entries,
    receipts,
)
from backend.adapters.local.schema_v6 import EVENT_ID_MATCH
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.model import Page, ReplayRequest
from backend.paging import decode_cursor
from backend.ports import DayCount, LagRollup, Receipt, ReplaySelection, WindowInputs
from backend.times import TimeFormatError, parse_day


def _day_ms(day: str, what: str) -> int:
    try:
        parse_day(day, what=what)
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    return (datetime.fromisoformat(day).replace(tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(
        milliseconds=1
    )


_day_text = day_text  # as the overview imports it
__all__ = ["LocalInvestigation", "iso_ms"]


def _same(row: Any) -> Any:
    return row


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
            f"SELECT {SCAN_COLUMNS.format(entity='?')} FROM {SCAN_FROM}",
            where,
            [entity_id, entity_id, *window],
            ["e.event_ms", "e.event_id", "e.receipt"],
            lambda r: [r[6], r[1].hex(), r[2]],
            lambda key: [int(key[0]), cursor_event_id(key[1]), int(key[2])],
            limit,
            after,
            False,
            _same,
        )
        return receipts(page)

    def window_inputs(self, entity_id: str, start: str, end: str) -> WindowInputs:
        """One read of the window's accepted receipts (the entity index's range, as :meth:`scan_entity`
        pages it), sorted by event id here: the bytes of the ids sort as their hex texts do."""
        try:
            window = [to_ms(start), to_ms(end)]
        except (ValueError, OverflowError):
            raise InvalidRequest(f"window [{start!r}, {end!r}) is not a pair of ISO date-times") from None
        rows = self._db.read(
            "SELECT e.event_id, e.payload_sha, e.ingest_ms, e.ingest_lag_ms, e.part FROM events e "
            "WHERE e.entity = (SELECT id FROM entities WHERE entity_id = ?) "
            "AND e.event_ms >= ? AND e.event_ms < ? AND e.receipt = 0",
            [entity_id, *window],
        )
        rows.sort(key=itemgetter(0))  # by event id, unique among accepted receipts
        parts = {r[4] for r in rows}
        names: dict[int, tuple[str, str]] = {}
        for some in chunks(sorted(parts)):
            marks = ",".join("?" * len(some))
            for part, source, event_type in self._db.read(
                f"SELECT id, source, event_type FROM partitions WHERE id IN ({marks})", some
            ):
                names[part] = (source, event_type)
        return WindowInputs(manifest_entries(rows), [names[r[4]] for r in rows])

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
            f"SELECT {SCAN_COLUMNS.format(entity='n.entity_id')} FROM {SCAN_FROM} "
            "JOIN entities n ON n.id = e.entity",
            where,
            [source, event_type, day],
            ["e.ingest_lag_ms", "e.seq"],
            lambda r: [r[8], r[0]],
            lambda key: [int(key[0]), int(key[1])],
            limit,
            after,
            False,
            _same,
        )
        return receipts(page)

    def select_replay(
        self,
        request: ReplayRequest,
        *,
        sample: int,
        progress: Callable[[int, int | None], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        keep: int = 0,
    ) -> ReplaySelection:
        """In SQL (:mod:`backend.adapters.local.replay_plan`): the counts are one aggregate, the planned
        receipts one ordered scan that checks raw keys as it goes and stops when the limit is filled;
        receipts are built for the sample only (``keep`` is not taken: reading the list again is one cheap
        scan here). One read transaction, so the counts and the list see the same index."""
        conn = self._db.connection()
        own = not conn.in_transaction
        try:
            if own:
                conn.execute("BEGIN")
            try:
                return replay_plan.select(
                    conn, request, sample, lambda keys: self._receipts_of(conn, keys), progress, should_stop
                )
            finally:
                if own:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise self._db.error("read", exc) from None

    def replay_receipts(
        self, request: ReplayRequest, *, missing: frozenset[str] | None = None
    ) -> Iterator[Receipt]:
        # The raw check is part of the SQL (an index lookup a row): ``missing`` saves nothing here.
        return replay_plan.planned(self._db, request)

    def _receipts_of(self, conn: sqlite3.Connection, keys: list[tuple[bytes, int]]) -> list[Receipt]:
        """The receipts of (event id, receipt number) pairs, in the order given."""
        rows = [
            conn.execute(
                f"SELECT {SCAN_COLUMNS.format(entity='n.entity_id')} FROM {SCAN_FROM} "
                f"JOIN entities n ON n.id = e.entity WHERE {EVENT_ID_MATCH} AND e.receipt = ?",
                (key[0], key[0], key[1]),
            ).fetchone()
            for key in keys
        ]
        return receipts(Page(items=rows, next_cursor=None)).items

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
            return [_day_count(day_text(r[0]), r[1:]) for r in rows]
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
        return [_day_count(day_text(r[0]), r[1:]) for r in rows]

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
            boundary = _day_ms(day, "day") + DAY_MS + grace
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
