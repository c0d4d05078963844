"""The overview's counts from the rollups (``backend.adapters.aws.rollup_items``), for stacks whose rollups
are ready and hold the directory of the days: O(partitions x days x hours + entities x days) items in
O(partitions + shards) Queries, whatever the number of events.

* the partitions of a range of days: one Query of ``ROLLUP#DAYS``; their hours: one Query per partition;
* the entities of the days: one Query per shard of ``ROLLUP#ENTITIES#<k>``;
* the totals of each source/type (the ``s`` picker): the same Query of ``ROLLUP#DAYS``, every day;
* the first and last event day: a Query of ``ROLLUP#DAYS`` from each end, stopped at the first day with an
  accepted event.

Counts (accepted, duplicates, clock skew) are exact. The late counts are exact when no arrival bucket
straddles the grace period (any grace of whole seconds, minutes, hours or days); otherwise these functions
return None and the caller counts by the scan. The lag histogram and the largest lag are coarsened as
:meth:`backend.ports.OverviewIndex.hour_rollups` states.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import query, str_attr, value_of
from backend.adapters.aws.rollup_items import (
    DAY_ENTITY_SHARDS,
    DAYS_PK,
    buckets,
    day_entity_pk,
    day_sk,
    partition_pk,
)
from backend.adapters.aws.rollups import rollup_items
from backend.lag_buckets import count_from, lag_width
from backend.ports import LAG_BUCKETS_MS, EntityDayCount, HourRollup, PartitionCount

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def histogram_bucket(lag: int) -> int:
    """The index of the :data:`backend.ports.LAG_BUCKETS_MS` bucket that holds ``lag``."""
    for i, bound in enumerate(LAG_BUCKETS_MS):
        if lag < bound:
            return i
    return len(LAG_BUCKETS_MS)


def _accepted(item: dict[str, Any]) -> int:
    return int(value_of(item, "n") or 0)


def day_span(ddb: DynamoDBClient, table: str) -> tuple[str, str] | None:
    """The first and the last event day with an accepted event."""
    ends = []
    for forward in (True, False):
        found = next(
            query(
                ddb,
                "find the event days",
                TableName=table,
                KeyConditionExpression="PK = :pk",
                FilterExpression="n > :z",
                ExpressionAttributeValues={":pk": str_attr(DAYS_PK), ":z": {"N": "0"}},
                ScanIndexForward=forward,
            ),
            None,
        )
        if found is None:
            return None
        ends.append(str(value_of(found, "SK"))[4:14])
    return ends[0], ends[1]


def _late(item: dict[str, Any], grace_ms: int) -> int | None:
    """Accepted events of the item that arrived at least ``grace_ms`` after the end of their event day;
    None when an arrival bucket straddles ``grace_ms`` and holds events."""
    late, straddling, _ = count_from(buckets(item, "A"), grace_ms, arrival=True)
    return None if straddling else late


def hour_rows(
    ddb: DynamoDBClient, table: str, first_day: str, end_day: str, grace_ms: int
) -> list[HourRollup] | None:
    """:meth:`backend.ports.OverviewIndex.hour_rollups` from the partition-hour items; None when a late
    count cannot be settled from the buckets."""
    listed = rollup_items(ddb, table, DAYS_PK, day_sk(first_day), day_sk(end_day))
    # SK = DAY#<day>#SRC#<source>#TYPE#<type>; neither source nor type can hold "#"
    partitions = sorted({tuple(str(value_of(i, "SK")).split("#")[3:6:2]) for i in listed})
    rows: list[HourRollup] = []
    width = len(LAG_BUCKETS_MS) + 1
    for source, event_type in partitions:
        for item in rollup_items(
            ddb, table, partition_pk(source, event_type), day_sk(first_day), day_sk(end_day)
        ):
            sk = str(value_of(item, "SK"))  # DAY#<day>#HOUR#<hh>
            day, hour = sk[4:14], int(sk[-2:])
            if not first_day <= day < end_day:
                continue
            late = _late(item, grace_ms)
            if late is None:
                return None
            histogram = [0] * width
            top = 0
            for lo, n in buckets(item, "L").items():
                if n:
                    histogram[histogram_bucket(lo)] += n
                    top = max(top, lo + lag_width(lo) - 1)
            rows.append(
                HourRollup(
                    source,
                    event_type,
                    day,
                    hour,
                    _accepted(item),
                    late,
                    int(value_of(item, "dup") or 0),
                    int(value_of(item, "skew") or 0),
                    tuple(histogram),
                    top,
                )
            )
    return sorted(rows, key=lambda r: (r.source, r.event_type, r.day, r.hour))


def entity_rows(
    ddb: DynamoDBClient, table: str, first_day: str, end_day: str, grace_ms: int
) -> list[EntityDayCount] | None:
    """One row per (entity, day) with an accepted event, from the directory of the days; None when a late
    count cannot be settled from the buckets."""
    rows: list[EntityDayCount] = []
    for shard in range(DAY_ENTITY_SHARDS):
        for item in rollup_items(ddb, table, day_entity_pk(shard), day_sk(first_day), day_sk(end_day)):
            sk = str(value_of(item, "SK"))  # DAY#<day>#ENTITY#<entity>
            day, entity = sk[4:14], sk[len("DAY#yyyy-mm-dd#ENTITY#") :]
            accepted = _accepted(item)
            if not accepted or not first_day <= day < end_day:
                continue  # only duplicate receipts: no accepted event of that entity that day
            late = _late(item, grace_ms)
            if late is None:
                return None
            rows.append(EntityDayCount(entity, day, accepted, late, int(value_of(item, "skew") or 0)))
    return sorted(rows, key=lambda r: (r.entity_id, r.day))


def partition_totals(ddb: DynamoDBClient, table: str) -> list[PartitionCount]:
    """Accepted events and duplicate receipts per (source, type) over every day: one Query of the
    directory of the days (one item per partition-day)."""
    totals: dict[tuple[str, str], list[int]] = {}
    for item in rollup_items(ddb, table, DAYS_PK, "DAY#", "DAY#~"):
        # SK = DAY#<day>#SRC#<source>#TYPE#<type>; neither source nor type can hold "#"
        source, event_type = str(value_of(item, "SK")).split("#")[3:6:2]
        row = totals.setdefault((source, event_type), [0, 0])
        row[0] += _accepted(item)
        row[1] += int(value_of(item, "dup") or 0)
    return [
        PartitionCount(source=s, event_type=t, accepted=a, duplicate=d)
        for (s, t), (a, d) in sorted(totals.items())
    ]
