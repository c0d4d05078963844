"""The overview's rollups on a local workspace (:class:`backend.ports.OverviewIndex`).

The per-hour, per-entity-day and per-rejection-reason counts are read from the workspace's rollup tables
(:mod:`backend.adapters.local.overview_rollups`: O(partitions x hours + entities x days) rows, whatever
the number of events), brought up to date first unless the workspace is read-only (a read adds the rows
not counted yet either way, so the answer is exact). When a grace period splits an arrival bucket that
holds events, the counts come from the events instead: one SQL aggregate reached through the partitions of
the asked days (the ``events_by_lag`` index), as :class:`ScanOverview` does for every count; the property
tests hold the two to the same answers.
"""

from __future__ import annotations

from typing import Any

from backend.adapters.local.investigate import _day_ms, _day_text, _grace
from backend.adapters.local.overview_rollups import OverviewRollups
from backend.adapters.local.store import LocalStore
from backend.errors import StoreError, WorkspaceError
from backend.ports import (
    LAG_BUCKETS_MS,
    EntityDayCount,
    HourRollup,
    PartitionCount,
    RejectionCount,
    WindowChurn,
)

_DAY_MS = 86_400_000
# The lag bucket of a receipt, as LAG_BUCKETS_MS numbers them.
_BUCKET = (
    "CASE "
    + " ".join(f"WHEN e.ingest_lag_ms < {bound} THEN {i}" for i, bound in enumerate(LAG_BUCKETS_MS))
    + f" ELSE {len(LAG_BUCKETS_MS)} END"
)
# Late: ingested at or after the end of the event day plus the grace period.
_LATE = "e.ingest_ms >= (e.event_ms / 86400000 + 1) * 86400000 + ?"


def _days(first_day: str, end_day: str) -> tuple[str, str]:
    _day_ms(first_day, "first day")
    _day_ms(end_day, "end day")
    return first_day, end_day


class ScanOverview:
    """:class:`backend.ports.OverviewIndex` counted from the events themselves (no rollup): the definition
    the rollups must equal, and what answers when they cannot settle a late count."""

    def __init__(self, store: LocalStore) -> None:
        self._db = store.db

    def event_day_span(self) -> tuple[str, str] | None:
        # Every partition row was made for an accepted receipt (a duplicate's event was accepted first).
        [(low, high)] = self._db.read("SELECT min(day), max(day) FROM partitions")
        return None if low is None else (str(low), str(high))

    def hour_rollups(self, first_day: str, end_day: str, *, grace_ms: int = 0) -> list[HourRollup]:
        lo, hi = _days(first_day, end_day)
        rows = self._db.read(
            "SELECT p.source, p.event_type, p.day, (e.event_ms % 86400000) / 3600000 AS h, "
            f"e.receipt = 0 AS acc, {_BUCKET} AS b, count(*), sum({_LATE}), sum(e.clock_skew), "
            "max(e.ingest_lag_ms) "
            "FROM partitions p JOIN events e ON e.part = p.id "
            "WHERE p.day >= ? AND p.day < ? GROUP BY p.id, h, acc, b",
            (_grace(grace_ms), lo, hi),
        )
        return _fold_hours(rows)

    def entity_day_counts(
        self, first_day: str, end_day: str, *, grace_ms: int = 0, min_accepted: int = 0, min_skewed: int = 0
    ) -> list[EntityDayCount]:
        lo, hi = _days(first_day, end_day)
        # Grouped on the events table alone (a plain scan), then named: joining the entities table row by
        # row, or reading through the entity index, costs several times as much. Entities without a day
        # that reaches a threshold stay in SQLite.
        rows = self._db.read(
            "WITH g AS (SELECT e.entity AS ent, e.event_ms / 86400000 AS d, "
            f"count(*) AS c, sum({_LATE}) AS l, sum(e.clock_skew) AS s FROM events e "
            "WHERE e.part IN (SELECT id FROM partitions WHERE day >= ? AND day < ?) AND e.receipt = 0 "
            "GROUP BY 1, 2), "
            "kept AS (SELECT ent FROM g GROUP BY ent HAVING max(c) >= ? OR max(s) >= ?) "
            "SELECT n.entity_id, g.d, g.c, g.l, g.s FROM g JOIN kept USING (ent) "
            "JOIN entities n ON n.id = g.ent",
            (_grace(grace_ms), lo, hi, min_accepted, min_skewed),
        )
        out = [
            EntityDayCount(str(entity), _day_text(d), int(n), int(late), int(skew))
            for entity, d, n, late, skew in rows
        ]
        return sorted(out, key=lambda c: (c.entity_id, c.day))

    def rejection_counts(self, first_day: str, end_day: str) -> list[RejectionCount]:
        lo, hi = _days(first_day, end_day)
        rows = self._db.read(
            "SELECT substr(received_at, 1, 10) AS d, source, event_type, reason, count(*) FROM rejections "
            "WHERE received_at >= ? AND received_at < ? GROUP BY d, source, event_type, reason "
            "ORDER BY d, coalesce(source, ''), coalesce(event_type, ''), reason",
            (lo, hi),
        )
        return [RejectionCount(d, s, t, r, int(n)) for d, s, t, r, n in rows]

    def churned_windows(self, first_day: str, end_day: str) -> list[WindowChurn]:
        lo, hi = _days(first_day, end_day)
        rows = self._db.read(
            "SELECT a.entity_id, a.day, a.metric, a.version, json_extract(f.record, '$.value'), "
            "json_extract(a.record, '$.value'), json_extract(a.record, '$.computed_at') "
            "FROM aggregate_versions a JOIN aggregate_versions f ON f.entity_id = a.entity_id "
            "AND f.day = a.day AND f.metric = a.metric AND f.version = 1 "
            "WHERE a.day >= ? AND a.day < ? AND a.version > 1 AND NOT EXISTS (SELECT 1 FROM "
            "aggregate_versions b WHERE b.entity_id = a.entity_id AND b.day = a.day AND b.metric = a.metric "
            "AND b.version = a.version + 1) ORDER BY a.entity_id, a.day, a.metric",
            (lo, hi),
        )
        return [WindowChurn(e, d, m, int(v), first, last, str(at)) for e, d, m, v, first, last, at in rows]

    def partition_totals(self) -> list[PartitionCount] | None:
        return None  # counted from the events: no rollups to read

    def day_entities(self, day: str) -> list[EntityDayCount] | None:
        return None


class LocalOverview(ScanOverview):
    """:class:`backend.ports.OverviewIndex` over a :class:`LocalStore`'s database, from its rollups."""

    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self.rollups = OverviewRollups(store.db)
        self._writable = not store.db.read_only

    def _fresh(self) -> OverviewRollups:
        # Counted once here, the rows past the watermark need not be added up again by every read; a
        # read-only workspace adds them in each read instead, writing nothing. So does one whose file
        # cannot be written after all (a read-only mount) or whose write lock stays taken: the answer is
        # the same, only slower, so a failed catch-up is no reason to fail the read.
        if self._writable and self.rollups.behind():
            try:
                self.rollups.catch_up()
            except WorkspaceError:
                self._writable = False  # the file cannot be written: do not try again on every read
            except StoreError:
                pass  # the lock stayed taken (a long write elsewhere): the next read tries again
        return self.rollups

    def hour_rollups(self, first_day: str, end_day: str, *, grace_ms: int = 0) -> list[HourRollup]:
        lo, hi = _days(first_day, end_day)
        rows = self._fresh().hour_rows(lo, hi, _grace(grace_ms))
        return super().hour_rollups(lo, hi, grace_ms=grace_ms) if rows is None else _fold_hours(rows)

    def entity_day_counts(
        self, first_day: str, end_day: str, *, grace_ms: int = 0, min_accepted: int = 0, min_skewed: int = 0
    ) -> list[EntityDayCount]:
        lo, hi = _days(first_day, end_day)
        rows = self._fresh().entity_days(
            _day_ms(lo, "first day") // _DAY_MS,
            _day_ms(hi, "end day") // _DAY_MS,
            _grace(grace_ms),
            min_accepted,
            min_skewed,
        )
        if rows is None:
            return super().entity_day_counts(
                lo, hi, grace_ms=grace_ms, min_accepted=min_accepted, min_skewed=min_skewed
            )
        out = [EntityDayCount(entity, _day_text(d), n, late, skew) for entity, d, n, late, skew in rows]
        return sorted(out, key=lambda c: (c.entity_id, c.day))

    def rejection_counts(self, first_day: str, end_day: str) -> list[RejectionCount]:
        lo, hi = _days(first_day, end_day)
        return self._fresh().rejections(lo, hi)

    def partition_totals(self) -> list[PartitionCount] | None:
        return self._fresh().partition_totals()

    def day_entities(self, day: str) -> list[EntityDayCount] | None:
        return self.entity_day_counts(day, _day_text(_day_ms(day, "day") // _DAY_MS + 1))


def _fold_hours(rows: list[Any]) -> list[HourRollup]:
    """Rows of (source, type, day, hour, accepted?, bucket, count, late, skewed, max lag) as rollups."""
    acc: dict[tuple[str, str, str, int], list[Any]] = {}
    width = len(LAG_BUCKETS_MS) + 1
    for source, event_type, day, hour, accepted, bucket, n, late, skewed, max_lag in rows:
        row = acc.setdefault((source, event_type, day, int(hour)), [0, 0, 0, 0, [0] * width, 0])
        if accepted:
            row[0] += n
            row[1] += int(late or 0)
            row[3] += int(skewed or 0)
            row[4][int(bucket)] += n
            row[5] = max(row[5], int(max_lag or 0))
        else:
            row[2] += n
    return [
        HourRollup(s, t, d, h, a, late, dup, skew, tuple(buckets), max_lag)
        for (s, t, d, h), (a, late, dup, skew, buckets, max_lag) in sorted(acc.items())
    ]
