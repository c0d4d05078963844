"""Partitions of a stack the original kit populated: its lag keys are not padded, so they sort as text.

The original kit wrote ``GSI1SK=LAG#<ms>#...``, in which ``LAG#100`` sorts before ``LAG#20``; ours pad the
lag to 14 digits (``backend.adapters.aws.event_items``). A partition that holds any of its keys cannot be
paged by the index's order, so it is read whole and sorted by number here, read-only: the kit never writes
these shapes. Its other items (no receipts, second-precision times) read through
:func:`backend.adapters.aws.event_items.record_from` like ours.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import query, str_attr
from backend.adapters.aws.errors import aws
from backend.adapters.aws.event_items import PADDED_LAG_RANGE, record_from, status_matches
from backend.adapters.aws.resources import LAG_INDEX
from backend.model import EventRecord, IngestStatus, Page
from backend.paging import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient


def has_legacy_lag_keys(ddb: DynamoDBClient, events_table: str, pk: str, action: str) -> bool:
    """Whether the partition holds lag keys the original kit wrote (unpadded: "LAG#100" < "LAG#20")."""
    lo, hi = PADDED_LAG_RANGE
    for condition, value in (("GSI1SK < :v", lo), ("GSI1SK > :v", hi)):
        with aws(action):
            page = ddb.query(
                TableName=events_table,
                IndexName=LAG_INDEX.name,
                KeyConditionExpression=f"GSI1PK = :pk AND {condition}",
                ExpressionAttributeValues={":pk": str_attr(pk), ":v": str_attr(value)},
                Limit=1,
            )
        if page.get("Items"):
            return True
    return False


def legacy_partition(
    ddb: DynamoDBClient,
    events_table: str,
    pk: str,
    action: str,
    status: IngestStatus | None,
    limit: int,
    after: str | None,
    descending: bool,
) -> Page[EventRecord]:
    """One page of a partition with the original kit's unpadded lag keys: read whole, sorted by number
    here, paged by a cursor of its own (lag, ingest time, event id, receipt)."""
    items = query(
        ddb,
        action,
        TableName=events_table,
        IndexName=LAG_INDEX.name,
        KeyConditionExpression="GSI1PK = :pk",
        ExpressionAttributeValues={":pk": str_attr(pk)},
    )
    records = [record_from(i) for i in items if status_matches(i, status)]

    def key(r: EventRecord) -> list[Any]:
        return [r.ingest_lag_ms, r.ingest_time, r.event_id, r.receipt or ""]

    records.sort(key=key, reverse=descending)
    kind = f"aws-legacy-partition:{'desc' if descending else 'asc'}"
    if after is not None:
        last = decode_cursor(kind, after, 4)
        records = [r for r in records if (key(r) < last if descending else key(r) > last)]
    page = records[:limit]
    cursor = encode_cursor(kind, key(page[-1])) if len(records) > limit else None
    return Page[EventRecord](items=page, next_cursor=cursor)
