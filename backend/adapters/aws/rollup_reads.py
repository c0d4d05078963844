"""Answers from the rollups (``backend.adapters.aws.rollup_items``): per-day counts for ``pik gaps`` and a
partition-day's lag for ``pik lag``, in O(days x hours) items whatever the number of events.

Counts are exact. A late count is exact from the buckets when the threshold is a bucket boundary, or when
no event falls in the one bucket that straddles it; otherwise the caller reads the events of that bucket
(lag: one key range of the lag index) or of that day (arrival: :meth:`day_counts` names the days). The
first and last late arrival of a day are given to their bucket's precision: the start of the earliest late
bucket and the end of the latest (the true times lie between them).

A stack has rollups when its state item says ``ready`` (``pik aws rollup-backfill``, or a stack created
with the rollup function from the start); every other stack, the original kit's among them, is read by
scans as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.event_items import ACCEPTED_RECEIPT, LAG_DIGITS, lag_pks, rejection_pks, stored_time
from backend.adapters.aws.resources import LAG_INDEX
from backend.adapters.aws.rollup_items import (
    META_KEY,
    buckets,
    day_end_ms,
    day_sk,
    entity_pk,
    gate_pk,
    hour_sk,
    partition_pk,
)
from backend.adapters.aws.rollups import rollup_items
from backend.adapters.aws.store import AwsStore
from backend.lag_buckets import arrival_width, count_from, lag_width, merge
from backend.model import IngestStatus
from backend.ports import DayCount, HourLagRollup, LagRollup
from backend.times import fmt

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


@dataclass
class DaySum:
    """A day's rollup items added up."""

    accepted: int = 0
    duplicate: int = 0
    skew: int = 0
    arrivals: dict[int, int] | None = None

    def add(self, item: dict[str, Any]) -> None:
        self.accepted += int(value_of(item, "n") or 0)
        self.duplicate += int(value_of(item, "dup") or 0)
        self.skew += int(value_of(item, "skew") or 0)
        self.arrivals = merge([self.arrivals or {}, buckets(item, "A")])


def _at(day: str, offset_ms: int) -> str:
    return fmt(datetime.fromtimestamp(0, UTC) + timedelta(milliseconds=day_end_ms(day) + offset_ms))


def day_count(day: str, total: DaySum, grace_ms: int) -> DayCount | None:
    """The day's count for ``grace_ms``; None when an arrival bucket straddles the grace (read the day)."""
    arrivals = total.arrivals or {}
    late, straddling, _ = count_from(arrivals, grace_ms, arrival=True)
    if straddling:
        return None
    late_los = sorted(lo for lo in arrivals if lo >= grace_ms and arrivals[lo])
    first = _at(day, late_los[0]) if late_los else None
    last = _at(day, late_los[-1] + arrival_width(late_los[-1]) - 1) if late_los else None
    return DayCount(day, total.accepted, late, total.duplicate, first, last)


class RollupReader:
    """Reads the rollup items of one events table."""

    def __init__(self, ddb: DynamoDBClient, table: str) -> None:
        self.ddb = ddb
        self.table = table
        self._ready: bool | None = None
        self._days: bool | None = None

    def ready(self) -> bool:
        """Whether this stack's rollups count every receipt (read once)."""
        if self._ready is None:
            with aws("read the rollup state"):
                item = self.ddb.get_item(
                    TableName=self.table,
                    Key={"PK": str_attr(META_KEY[0]), "SK": str_attr(META_KEY[1])},
                ).get("Item")
            self._ready = bool(item and value_of(item, "ready"))
            self._days = bool(self._ready and item and value_of(item, "days"))
        return self._ready

    def days_ready(self) -> bool:
        """Whether the rollups are ready and also hold the directory of the days (every partition and
        entity of each event day): rollups backfilled before the directory was kept do not."""
        return self.ready() and bool(self._days)

    def partition_days(self, source: str, event_type: str, first_day: str, end_day: str) -> dict[str, DaySum]:
        """Per event day in ``[first_day, end_day)``: the partition's hours added up (days without items
        left out). One Query (a page per 1 MB)."""
        items = rollup_items(
            self.ddb, self.table, partition_pk(source, event_type), day_sk(first_day), day_sk(end_day)
        )
        out: dict[str, DaySum] = {}
        for item in items:
            day = str(value_of(item, "SK"))[4:14]
            if first_day <= day < end_day:
                out.setdefault(day, DaySum()).add(item)
        return out

    def entity_days(self, entity_id: str, first_day: str, end_day: str, shards: int = 1) -> dict[str, DaySum]:
        """As :meth:`partition_days`, for one entity on a stack with ``shards`` entity shards: one Query per
        shard and one of the unsharded key."""
        pks = [entity_pk(entity_id)] + (
            [entity_pk(entity_id, m) for m in range(shards)] if shards > 1 else []
        )
        items = [
            i
            for pk in pks
            for i in rollup_items(self.ddb, self.table, pk, day_sk(first_day), day_sk(end_day))
        ]
        out: dict[str, DaySum] = {}
        for item in items:
            day = str(value_of(item, "SK"))[4:14]
            if first_day <= day < end_day:
                out.setdefault(day, DaySum()).add(item)
        return out

    def partition_hours(self, source: str, event_type: str, day: str) -> list[dict[str, Any]]:
        """The hour items of one partition-day, in hour order."""
        return rollup_items(
            self.ddb, self.table, partition_pk(source, event_type), hour_sk(day, "00"), hour_sk(day, "23")
        )

    def rejections(self, first_day: str, end_day: str, shards: int = 1) -> dict[str, int]:
        """Rejections received per day in ``[first_day, end_day)`` on a stack with ``shards`` rejection
        shards (one Query per shard and one of the unsharded key)."""
        out: dict[str, int] = {}
        for pk in rejection_pks(shards):
            for i in rollup_items(self.ddb, self.table, gate_pk(pk), day_sk(first_day), day_sk(end_day)):
                day = str(value_of(i, "SK"))[4:]
                out[day] = out.get(day, 0) + int(value_of(i, "n") or 0)
        return {d: n for d, n in out.items() if first_day <= d < end_day}


def lag_rollup(
    reader: RollupReader, store: AwsStore, source: str, event_type: str, day: str, late_ms: int
) -> LagRollup | None:
    """The lag of one partition-day from its hour items (one Query), its exact largest lag (one page of
    the lag index, largest first) and, when a lag bucket straddles ``late_ms`` and holds events, the
    events of that bucket above ``late_ms`` (one key range of the lag index). None without rollups."""
    if not reader.ready():
        return None
    items = reader.partition_hours(source, event_type, day)
    hours: list[tuple[str, int, dict[int, int]]] = []
    duplicates = skew = 0
    straddle: tuple[int, int] | None = None
    for item in items:
        count = int(value_of(item, "n") or 0)
        duplicates += int(value_of(item, "dup") or 0)
        skew += int(value_of(item, "skew") or 0)
        if count:
            lags = buckets(item, "L")
            hours.append((str(value_of(item, "SK"))[-2:], count, lags))
            _, straddling, lo = count_from(lags, late_ms, arrival=False)
            if straddling:
                straddle = (late_ms, lo + lag_width(lo))
    extra = _late_in(store, source, event_type, day, *straddle) if straddle else {}
    out = []
    for hour, count, lags in hours:
        late, _, _ = count_from(lags, late_ms, arrival=False)
        out.append(HourLagRollup(hour, count, late + extra.get(hour, 0), lags))
    total = sum(h.count for h in out)
    largest = None
    if total:
        top = store.query_partition(
            source, event_type, day, status=IngestStatus.ACCEPTED, limit=1, descending=True
        )
        largest = top.items[0].ingest_lag_ms if top.items else None
    return LagRollup(total, duplicates, skew, sum(h.late for h in out), largest, out)


def _late_in(store: AwsStore, source: str, event_type: str, day: str, lo: int, hi: int) -> dict[str, int]:
    """Accepted events per event hour with ``lo <= lag < hi`` (one key range of the lag index, in every
    shard of the day: the unsharded key and each ``#S#<n>``)."""
    counts: dict[str, int] = {}
    items = (
        item
        for pk in lag_pks(source, event_type, day, store.read_lag_shards())
        for item in store.query_items(
            f"count late events of {source}/{event_type}/{day}",
            IndexName=LAG_INDEX.name,
            KeyConditionExpression="GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": str_attr(pk),
                ":lo": str_attr(f"LAG#{lo:0{LAG_DIGITS}d}"),
                ":hi": str_attr(f"LAG#{hi:0{LAG_DIGITS}d}"),  # every key of lag ``hi`` sorts after this one
            },
            ProjectionExpression="#r, event_time",
            ExpressionAttributeNames={"#r": "receipt"},
        )
    )
    for item in items:
        if value_of(item, "receipt") == ACCEPTED_RECEIPT:
            hour = stored_time(item)[11:13]
            counts[hour] = counts.get(hour, 0) + 1
    return counts
