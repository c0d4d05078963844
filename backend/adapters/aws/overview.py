"""The overview's rollups on AWS (:class:`backend.ports.OverviewIndex`).

DynamoDB has no GROUP BY. When the stack's rollups are ready and hold the directory of the days
(:meth:`backend.adapters.aws.rollup_reads.RollupReader.days_ready`), the first and last event day, the
per-hour rows and the per-entity-day rows are read from them (``backend.adapters.aws.overview_rollups``:
O(partitions x days x hours + entities x days) items, whatever the number of events).

Otherwise (no rollups, rollups backfilled before the directory was kept, the original kit's stack), or when
the arrival buckets cannot settle a late count (a grace period that is not whole seconds, minutes, hours or
days, with an event in the bucket it splits), the counts of a range of days are read with one filtered,
projected Scan of the events table (only the attributes the counts need, only the items of those days leave
DynamoDB) and added up here into per-hour and per-entity-day rows; that one read is shared by
:meth:`AwsOverview.hour_rollups` and :meth:`AwsOverview.entity_day_counts` of the same range.

Rejections are one key-range query of the rejections either way (the rollups count them per day only,
without the source, type and reason the overview groups by); churned windows one filtered Scan of the
aggregates table (no events are read).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any, ClassVar

from backend.adapters.aws.aggregates import DynamoAggregates, _version_from
from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.event_items import ACCEPTED_RECEIPT, ENTITY_PREFIX
from backend.adapters.aws.investigate import _day, _grace, _late_from
from backend.adapters.aws.overview_rollups import (
    day_span,
    entity_rows,
    histogram_bucket,
    hour_rows,
    partition_totals,
)
from backend.adapters.aws.rollup_reads import RollupReader
from backend.adapters.aws.store import AwsStore
from backend.ports import (
    LAG_BUCKETS_MS,
    EntityDayCount,
    HourRollup,
    PartitionCount,
    RejectionCount,
    WindowChurn,
)
from backend.times import fmt, parse_iso

_Key = tuple[str, str, int]  # first day, end day, grace


class AwsOverview:
    """:class:`backend.ports.OverviewIndex` on a stack's events (and aggregates) tables."""

    _NAMES: ClassVar[dict[str, str]] = {
        "#r": "receipt",
        "#s": "status",
        "#src": "source",
        "#typ": "event_type",
        "#ent": "entity_id",
        "#d": "day",
        "#t": "event_time",
        "#i": "ingest_time",
        "#l": "ingest_lag_ms",
        "#k": "clock_skew",
    }

    def __init__(self, store: AwsStore, aggregates: DynamoAggregates | None) -> None:
        self._store = store
        self._aggregates = aggregates
        self._cache: dict[_Key, tuple[list[HourRollup], list[EntityDayCount]]] = {}
        self.rollups = RollupReader(store.ddb, store.t.events)

    def _scan(self, table: str, action: str, **kwargs: Any) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        kwargs["TableName"] = table
        while True:
            with aws(action):
                page = self._store.ddb.scan(**kwargs)
            items += page.get("Items", [])
            if not page.get("LastEvaluatedKey"):
                return items
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def event_day_span(self) -> tuple[str, str] | None:
        if self.rollups.days_ready():
            return day_span(self._store.ddb, self._store.t.events)
        items = self._scan(
            self._store.t.events,
            "find the event days",
            ProjectionExpression="#d",
            FilterExpression="begins_with(PK, :e)",
            ExpressionAttributeNames={"#d": "day"},
            ExpressionAttributeValues={":e": str_attr(ENTITY_PREFIX)},
        )
        days = sorted({str(value_of(i, "day")) for i in items if value_of(i, "day")})
        return (days[0], days[-1]) if days else None

    def _counts(
        self, first_day: str, end_day: str, grace_ms: int
    ) -> tuple[list[HourRollup], list[EntityDayCount]]:
        lo, hi = _day(first_day, "first day"), _day(end_day, "end day")
        key = (first_day, end_day, _grace(grace_ms))
        if key in self._cache:
            return self._cache[key]
        if self.rollups.days_ready():
            from_rollups = self._from_rollups(lo, hi, key[2])
            if from_rollups is not None:
                self._cache = {key: from_rollups}
                return from_rollups
        items = (
            self._scan(
                self._store.t.events,
                "count the events of the overview",
                ProjectionExpression="#r, #s, #src, #typ, #ent, #d, #t, #i, #l, #k",
                FilterExpression="begins_with(PK, :e) AND #d >= :lo AND #d < :hi",
                ExpressionAttributeNames=self._NAMES,
                ExpressionAttributeValues={
                    ":e": str_attr(ENTITY_PREFIX),
                    ":lo": str_attr(lo.date().isoformat()),
                    ":hi": str_attr(hi.date().isoformat()),
                },
            )
            if lo < hi
            else []
        )
        width = len(LAG_BUCKETS_MS) + 1
        hours: dict[tuple[str, str, str, int], list[Any]] = {}
        entities: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
        for item in items:
            event_time = fmt(parse_iso(value_of(item, "event_time")))
            day = event_time[:10]
            receipt = value_of(item, "receipt")
            # The original kit's rows have no receipt: its DUPLICATE rows count as duplicates.
            accepted = (
                receipt == ACCEPTED_RECEIPT
                if receipt is not None
                else value_of(item, "status") != "DUPLICATE"
            )
            row = hours.setdefault(
                (
                    str(value_of(item, "source")),
                    str(value_of(item, "event_type")),
                    day,
                    int(event_time[11:13]),
                ),
                [0, 0, 0, 0, [0] * width, 0],
            )
            if not accepted:
                row[2] += 1
                continue
            lag = int(value_of(item, "ingest_lag_ms") or 0)
            skewed = bool(value_of(item, "clock_skew")) or lag < 0
            late = fmt(parse_iso(value_of(item, "ingest_time"))) >= _late_from(day, key[2])
            lag = max(lag, 0)
            row[0] += 1
            row[1] += late
            row[3] += skewed
            row[4][histogram_bucket(lag)] += 1
            row[5] = max(row[5], lag)
            counts = entities[(str(value_of(item, "entity_id")), day)]
            counts[0] += 1
            counts[1] += late
            counts[2] += skewed
        result = (
            [
                HourRollup(s, t, d, h, a, late, dup, skew, tuple(b), mx)
                for (s, t, d, h), (a, late, dup, skew, b, mx) in sorted(hours.items())
            ],
            [EntityDayCount(e, d, n, late, skew) for (e, d), (n, late, skew) in sorted(entities.items())],
        )
        self._cache = {key: result}  # one range at a time: the service asks for both lists of one range
        return result

    def _from_rollups(
        self, lo: datetime, hi: datetime, grace_ms: int
    ) -> tuple[list[HourRollup], list[EntityDayCount]] | None:
        if lo >= hi:
            return [], []
        first_day, end_day = lo.date().isoformat(), hi.date().isoformat()
        ddb, table = self._store.ddb, self._store.t.events
        hours = hour_rows(ddb, table, first_day, end_day, grace_ms)
        entities = entity_rows(ddb, table, first_day, end_day, grace_ms) if hours is not None else None
        return None if hours is None or entities is None else (hours, entities)

    def hour_rollups(self, first_day: str, end_day: str, *, grace_ms: int = 0) -> list[HourRollup]:
        return self._counts(first_day, end_day, grace_ms)[0]

    def entity_day_counts(
        self, first_day: str, end_day: str, *, grace_ms: int = 0, min_accepted: int = 0, min_skewed: int = 0
    ) -> list[EntityDayCount]:
        rows = self._counts(first_day, end_day, grace_ms)[1]
        kept = {r.entity_id for r in rows if r.accepted >= min_accepted or r.skewed >= min_skewed}
        return [r for r in rows if r.entity_id in kept]

    def rejection_counts(self, first_day: str, end_day: str) -> list[RejectionCount]:
        lo, hi = fmt(_day(first_day, "first day")), fmt(_day(end_day, "end day"))
        counts: dict[tuple[str, str | None, str | None, str], int] = defaultdict(int)
        after: str | None = None
        while lo < hi:
            page = self._store.query_rejections(start=lo, end=hi, limit=1000, after=after)
            for r in page.items:
                if lo <= r.received_at < hi:
                    counts[(r.received_at[:10], r.source, r.event_type, r.reason)] += 1
            after = page.next_cursor
            if after is None:
                break
        return [
            RejectionCount(d, s, t, reason, n)
            for (d, s, t, reason), n in sorted(
                counts.items(), key=lambda kv: (kv[0][0], kv[0][1] or "", kv[0][2] or "", kv[0][3])
            )
        ]

    def churned_windows(self, first_day: str, end_day: str) -> list[WindowChurn]:
        lo, hi = _day(first_day, "first day").date().isoformat(), _day(end_day, "end day").date().isoformat()
        if self._aggregates is None or lo >= hi:
            return []
        items = self._scan(
            self._aggregates.table,
            "find the windows with several versions",
            FilterExpression="SK >= :lo AND SK < :hi AND attribute_exists(#rec)",
            ExpressionAttributeNames={"#rec": "record"},
            ExpressionAttributeValues={":lo": str_attr(f"DAY#{lo}"), ":hi": str_attr(f"DAY#{hi}")},
        )
        windows: dict[tuple[str, str, str], dict[int, Any]] = defaultdict(dict)
        for item in items:
            v = _version_from(item)
            windows[(v.entity_id, v.day, v.metric)][v.version] = v
        out = []
        for (entity, day, metric), versions in sorted(windows.items()):
            if len(versions) < 2 or 1 not in versions:
                continue
            last = versions[max(versions)]
            out.append(
                WindowChurn(
                    entity, day, metric, last.version, versions[1].value, last.value, last.computed_at
                )
            )
        return out

    def partition_totals(self) -> list[PartitionCount] | None:
        if not self.rollups.days_ready():
            return None
        return partition_totals(self._store.ddb, self._store.t.events)

    def day_entities(self, day: str) -> list[EntityDayCount] | None:
        lo = _day(day, "day")
        if not self.rollups.days_ready():
            return None
        end = (lo + timedelta(days=1)).date().isoformat()
        # Grace 0 is a bucket boundary: the late count is always settled from the buckets.
        return entity_rows(self._store.ddb, self._store.t.events, lo.date().isoformat(), end, 0)
