"""Partitions of a stack the original kit populated: its lag keys are not padded, so they sort as text.

The original kit wrote ``GSI1SK=LAG#<ms>#...``, in which ``LAG#100`` sorts before ``LAG#20``; ours pad the
lag to 14 digits (``backend.adapters.aws.event_items``). A partition that holds any of its keys cannot be
paged by the index's order, so it is read whole and sorted by number here, read-only: the kit never writes
these shapes. Its other items (no receipts, second-precision times) read through
:func:`backend.adapters.aws.event_items.record_from` like ours.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any

from backend.adapters.aws.dynamo import query, str_attr, value_of
from backend.adapters.aws.errors import aws
from backend.adapters.aws.event_items import (
    ACCEPTED_RECEIPT,
    PADDED_LAG_RANGE,
    record_from,
    status_matches,
)
from backend.adapters.aws.resources import LAG_INDEX
from backend.model import EventRecord, IngestStatus, Page
from backend.paging import decode_cursor, encode_cursor
from backend.times import fmt, parse_iso

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
    rows: LegacyRows,
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
    kept = [i for i in items if status_matches(i, status)]
    resolution = rows.resolve(kept)
    records = [r for i in kept for r in resolution.records(i) if status is None or r.status is status]

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


# -- what the original kit's rows stand for ----------------------------------------------------------------
#
# Its ingest wrote one row per request, keyed by (entity, event time, event id), with the status its dedupe
# gate gave: ACCEPTED the first time, DUPLICATE after. So a duplicate sent with another event_time (same
# idempotency key) is a second row of the same event id under another key, and a duplicate with the same
# event_time OVERWROTE the accepted row: that row is the event's acceptance and a duplicate in one, left
# with the duplicate's ingest time, lag, raw key and status. Raw bytes were stored for the first receipt
# only, under ``.../ingest_date=<first ingest day>/hour=<event hour>/...``. The dedupe item (while its TTL
# keeps it) says which event time and ingest time were first.

LEGACY_RECEIPT_PREFIX = "legacy:"


class LegacyKind(Enum):
    """What one row the original kit wrote stands for."""

    ACCEPTED = "accepted"  # the event's acceptance, as written
    DUPLICATE = "duplicate"  # a duplicate receipt only (another event time than the accepted one)
    OVERWRITTEN = "overwritten"  # the acceptance and one duplicate receipt, folded into one row


@dataclass(frozen=True)
class FirstSeen:
    """The dedupe item of an event id: its accepted event time and first ingest time (fixed precision)."""

    event_time: str
    ingest_time: str | None


def is_legacy(item: dict[str, Any]) -> bool:
    """Whether the original kit wrote this events-table item (ours always carry a receipt)."""
    return "receipt" not in item


def first_seen_from(item: dict[str, Any]) -> FirstSeen | None:
    """The :class:`FirstSeen` of a dedupe item (None if it has no event time)."""
    event_time = value_of(item, "event_time")
    if not event_time:
        return None
    first = value_of(item, "first_seen_ingest_time")
    return FirstSeen(fmt(parse_iso(event_time)), fmt(parse_iso(first)) if first else None)


class LegacyRows:
    """Resolves rows the original kit wrote into the receipts they stand for; reads only.

    A row left ACCEPTED is the acceptance. A DUPLICATE row is resolved with its event's dedupe item: at
    the accepted event time it is an overwritten acceptance, else a duplicate receipt. When the dedupe item
    has expired (the original kit set a 30-day TTL), a DUPLICATE row is a duplicate receipt if an ACCEPTED
    row of its event was read with it, else it is taken as the overwritten acceptance: the event is
    counted, never dropped (docs/aws.md).
    """

    def __init__(self, ddb: DynamoDBClient, dedupe_table: str) -> None:
        self.ddb = ddb
        self.dedupe_table = dedupe_table

    def first_seen(self, event_ids: Iterable[str]) -> dict[str, FirstSeen]:
        """The dedupe items of ``event_ids`` (those that exist), 100 per BatchGetItem."""
        wanted = sorted(set(event_ids))
        out: dict[str, FirstSeen] = {}
        for i in range(0, len(wanted), 100):
            keys: list[dict[str, Any]] = [{"event_id": str_attr(e)} for e in wanted[i : i + 100]]
            request: dict[str, Any] = {self.dedupe_table: {"Keys": keys}}
            while request:
                with aws("read the dedupe items of the original kit's duplicate rows"):
                    answer = self.ddb.batch_get_item(RequestItems=request)
                for item in answer.get("Responses", {}).get(self.dedupe_table, []):
                    seen = first_seen_from(item)
                    if seen is not None:
                        out[str(value_of(item, "event_id"))] = seen
                request = dict(answer.get("UnprocessedKeys") or {})
        return out

    def resolve(self, items: Sequence[dict[str, Any]]) -> Resolution:
        """The kinds of the original kit's rows among ``items`` (one dedupe read for the DUPLICATE ones)."""
        legacy_dups = [i for i in items if is_legacy(i) and value_of(i, "status") == "DUPLICATE"]
        accepted_ids = {
            str(value_of(i, "event_id"))
            for i in items
            if is_legacy(i) and value_of(i, "status") != "DUPLICATE"
        }
        seen = self.first_seen(str(value_of(i, "event_id")) for i in legacy_dups) if legacy_dups else {}
        return Resolution(seen, accepted_ids)


@dataclass
class Resolution:
    """What :meth:`LegacyRows.resolve` learnt about one read's rows."""

    seen: dict[str, FirstSeen]
    accepted_ids: set[str]

    def kind(self, item: dict[str, Any]) -> LegacyKind | None:
        """What ``item`` stands for (None: this kit wrote it)."""
        if not is_legacy(item):
            return None
        if value_of(item, "status") != "DUPLICATE":
            return LegacyKind.ACCEPTED
        event_id = str(value_of(item, "event_id"))
        seen = self.seen.get(event_id)
        if seen is not None:
            at_accepted_time = fmt(parse_iso(value_of(item, "event_time"))) == seen.event_time
            return LegacyKind.OVERWRITTEN if at_accepted_time else LegacyKind.DUPLICATE
        return LegacyKind.DUPLICATE if event_id in self.accepted_ids else LegacyKind.OVERWRITTEN

    def first_ingest(self, item: dict[str, Any]) -> str:
        """The ingest time of the acceptance that ``item`` (ACCEPTED or OVERWRITTEN) stands for."""
        stored = fmt(parse_iso(value_of(item, "ingest_time")))
        if value_of(item, "status") != "DUPLICATE":
            return stored
        seen = self.seen.get(str(value_of(item, "event_id")))
        return seen.ingest_time if seen is not None and seen.ingest_time else stored

    def records(self, item: dict[str, Any]) -> list[EventRecord]:
        """The receipts ``item`` stands for: one, or two for an overwritten acceptance (accepted first)."""
        record = record_from(item)
        kind = self.kind(item)
        if kind is None or kind is LegacyKind.ACCEPTED:
            return [record]
        seen = self.seen.get(record.event_id)
        raw_key = _raw_key(record, seen) or record.s3_key
        duplicate = record.model_copy(
            update={
                "status": IngestStatus.DUPLICATE,
                "receipt": f"{LEGACY_RECEIPT_PREFIX}{record.ingest_time}",
                "s3_key": raw_key,  # it stored no bytes of a duplicate: the event's bytes are these
            }
        )
        if kind is LegacyKind.DUPLICATE:
            return [duplicate]
        first = self.first_ingest(item)
        lag = _lag_ms(record.event_time, first)
        accepted = record.model_copy(
            update={
                "status": IngestStatus.ACCEPTED,
                "receipt": ACCEPTED_RECEIPT,
                "ingest_time": first,
                "ingest_lag_ms": max(lag, 0),
                "clock_skew": lag < 0,
                "s3_key": raw_key,
            }
        )
        return [accepted, duplicate]


def _lag_ms(event_time: str, ingest_time: str) -> int:
    return int((parse_iso(ingest_time) - parse_iso(event_time)).total_seconds() * 1000)


def _raw_key(r: EventRecord, seen: FirstSeen | None) -> str | None:
    """Where the original kit stored the bytes of ``r``'s event: its first receipt's key (None if unknown)."""
    if seen is None or seen.ingest_time is None or "/ingest_date=" not in r.s3_key:
        return None
    day, hour = seen.event_time[:10], seen.event_time[11:13]
    return (
        f"raw/source={r.source}/event_type={r.event_type}/event_date={day}/"
        f"ingest_date={seen.ingest_time[:10]}/hour={hour}/event_id={r.event_id}.json"
    )
