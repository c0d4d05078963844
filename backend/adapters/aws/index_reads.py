"""Reads of the event index in DynamoDB (:class:`backend.ports.EventIndex`).

A window of an entity, a partition in lag order, the receipts of one event and the rejections are each
one key range of the events table or one of its indexes, read a page at a time by key: a cursor holds the
last key returned, so no listing is ever loaded whole. Partitions whose lag keys the original kit wrote
cannot be paged by key and are read by ``backend.adapters.aws.legacy``; a partition of a sharded lag index
is a merge of its shards' queries (``backend.adapters.aws.shard_merge``). The keys and items are in
``backend.adapters.aws.event_items``; the writes in ``backend.adapters.aws.index_writes``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.connection import AwsConnection
from backend.adapters.aws.dynamo import query, str_attr, value_of
from backend.adapters.aws.errors import aws, error_code, store_error
from backend.adapters.aws.event_items import (
    ACCEPTED_RECEIPT,
    PADDED_LAG_RANGE,
    REJECTED_PK,
    entity_pk,
    entity_pks,
    is_receipt_pk,
    is_rejection_pk,
    lag_pk,
    lag_pks,
    record_from,
    rejection_from,
    rejection_pks,
    rejection_shard_pk,
    status_matches,
    stored_time,
)
from backend.adapters.aws.legacy import (
    LegacyKind,
    LegacyRows,
    first_seen_from,
    has_legacy_lag_keys,
    is_legacy,
    legacy_partition,
)
from backend.adapters.aws.resources import RECEIPTS_INDEX
from backend.adapters.aws.shard_merge import TABLE_KEYS, merged
from backend.errors import InvalidRequest
from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.paging import decode_cursor, encode_cursor
from backend.ports import IndexStats, PartitionCount
from backend.times import TimeFormatError, fmt, parse_iso

_EVENT_ID = re.compile(r"^[0-9a-f]{64}$")
_REJECTION_ID = re.compile(r"^[0-9T:.Z+-]{10,40}#\d{19}[0-9a-f]{4}$")


def _arity(kind: str) -> int:
    """How many keys a cursor of ``kind`` holds: a partition's (PK, SK, GSI1SK), else the sort key."""
    return 3 if kind.startswith("aws-partition") else 1


def _check_time(value: str, what: str) -> str:
    try:
        return fmt(parse_iso(value, what=what))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None


class EventIndexReads(AwsConnection):
    """The reading half of :class:`backend.ports.EventIndex`: lookups, paged queries and counts."""

    def get_accepted(self, event_id: str) -> EventRecord | None:
        if not _EVENT_ID.match(event_id):
            return None
        with aws(f"read event {event_id}"):
            seen = self.ddb.get_item(
                TableName=self.t.dedupe, Key={"event_id": str_attr(event_id)}, ConsistentRead=True
            ).get("Item")
        if not seen:
            return None
        # The original kit's dedupe item has no "sk": its one row per event is keyed by time and id. One
        # without "pk" was written unsharded.
        sk = value_of(seen, "sk") or f"TS#{value_of(seen, 'event_time')}#EID#{event_id}"
        pk = value_of(seen, "pk") or entity_pk(str(value_of(seen, "entity_id")))
        with aws(f"read event {event_id}"):
            item = self.ddb.get_item(
                TableName=self.t.events,
                Key={"PK": str_attr(pk), "SK": str_attr(sk)},
                ConsistentRead=True,
            ).get("Item")
        if not item:
            return None
        first = first_seen_from(seen)
        resolution = self.legacy_rows.resolve([])
        if first is not None:
            resolution.seen[event_id] = first
        record = resolution.records(item)[0]  # the original kit's row: its acceptance first
        return record.model_copy(update={"status": IngestStatus.ACCEPTED, "receipt": ACCEPTED_RECEIPT})

    @property
    def legacy_rows(self) -> LegacyRows:
        """Resolves the rows the original kit wrote (:mod:`backend.adapters.aws.legacy`)."""
        return LegacyRows(self.ddb, self.t.dedupe)

    def records(self, items: list[dict[str, Any]], status: IngestStatus | None = None) -> list[EventRecord]:
        """The receipts ``items`` hold (a row the original kit wrote may hold two), of ``status`` if given."""
        resolution = self.legacy_rows.resolve(items)
        return [r for i in items for r in resolution.records(i) if status is None or r.status is status]

    def receipts(self, event_id: str) -> list[EventRecord]:
        if not _EVENT_ID.match(event_id):
            return []
        request: dict[str, Any] = {
            "TableName": self.t.events,
            "IndexName": RECEIPTS_INDEX.name,
            "KeyConditionExpression": "GSI2PK = :pk",
            "ExpressionAttributeValues": {":pk": str_attr(f"EID#{event_id}")},
        }
        action = f"read the receipts of event {event_id}"
        try:
            first = self.ddb.query(**request)
        except ClientError as exc:
            # The original kit's events table has no receipts index: AWS answers ValidationException
            # ("does not have the specified index"), moto ResourceNotFoundException ("Invalid index").
            missing = error_code(exc) in ("ValidationException", "ResourceNotFoundException")
            if not missing or "index" not in str(exc).lower():
                raise store_error(action, exc) from None
            return self._legacy_receipts(event_id)
        except BotoCoreError as exc:
            raise store_error(action, exc) from None
        items = list(first.get("Items", []))
        if first.get("LastEvaluatedKey"):
            request["ExclusiveStartKey"] = first["LastEvaluatedKey"]
            items += list(query(self.ddb, action, **request))
        if items:
            return [record_from(i) for i in items]
        return self._legacy_receipts(event_id)

    def _legacy_receipts(self, event_id: str) -> list[EventRecord]:
        """The receipts of an event the original kit wrote: its rows are in its entity's partition, under
        any event time (one Query of the partition, filtered by id). Its dedupe item names the entity;
        without one (expired) nothing is found."""
        with aws(f"read event {event_id}"):
            seen = self.ddb.get_item(
                TableName=self.t.dedupe, Key={"event_id": str_attr(event_id)}, ConsistentRead=True
            ).get("Item")
        if not seen or not value_of(seen, "entity_id"):
            return []
        items = list(
            self.query_items(
                f"read the receipts of event {event_id}",
                KeyConditionExpression="PK = :pk",
                FilterExpression="event_id = :id",
                ExpressionAttributeValues={
                    ":pk": str_attr(entity_pk(str(value_of(seen, "entity_id")))),
                    ":id": str_attr(event_id),
                },
            )
        )
        resolution = self.legacy_rows.resolve(items)
        first = first_seen_from(seen)
        if first is not None:
            resolution.seen[event_id] = first
        records = [r for i in items for r in resolution.records(i)]
        return sorted(records, key=lambda r: (r.receipt != ACCEPTED_RECEIPT, r.ingest_time))

    def query_items(self, action: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every item of a query on the events table, page by page (each page fetched only when needed)."""
        return query(self.ddb, action, **{"TableName": self.t.events, **kwargs})

    def _paged(
        self,
        action: str,
        kind: str,
        after: str | None,
        limit: int,
        descending: bool,
        start_key: Callable[[list[Any]], dict[str, Any]],
        key_of: Callable[[dict[str, Any]], list[Any]],
        keep: Callable[[dict[str, Any]], bool],
        *,
        both: bool = False,
        **request: Any,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a keyset-paged query: up to ``limit`` kept items after the cursor, and the cursor
        of the next page (None when nothing is left)."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        kind = f"{kind}:{'desc' if descending else 'asc'}"
        request["ScanIndexForward"] = not descending
        request["Limit"] = min(limit + 1, 1000)
        if after is not None:
            key = decode_cursor(kind, after, _arity(kind))
            try:
                request["ExclusiveStartKey"] = start_key(key)
            except (TypeError, ValueError, KeyError):
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing") from None
        # A DUPLICATE row the original kit wrote may stand for two receipts: it counts twice toward the
        # limit when both may be listed (the first item of a page is always taken, so paging progresses).
        items: list[dict[str, Any]] = []
        size = 0
        more = False
        for item in self.query_items(action, **request):
            if keep(item):
                weight = 2 if both and is_legacy(item) and value_of(item, "status") == "DUPLICATE" else 1
                if items and size + weight > limit:
                    more = True
                    break
                items.append(item)
                size += weight
        cursor = encode_cursor(kind, key_of(items[-1])) if more else None
        return items, cursor

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
        lo, hi = _check_time(start, "start"), _check_time(end, "end")
        pk = entity_pk(entity_id)
        if lo >= hi:
            return Page[EventRecord](items=[])
        action = f"read the events of entity {entity_id!r}"
        bounds = (f"TS#{lo}", f"TS#{hi}")

        def keep(item: dict[str, Any]) -> bool:
            return status_matches(item, status) and lo <= stored_time(item) < hi

        shards = self.read_entity_shards()
        if shards > 1:
            items, cursor = self._merged_page(
                action,
                "aws-entity",
                entity_pks(entity_id, shards),
                bounds,
                "TS#",
                after,
                limit,
                descending,
                keep,
            )
            return Page[EventRecord](items=self.records(items, status), next_cursor=cursor)

        def start_key(key: list[Any]) -> dict[str, Any]:
            (sk,) = key
            if not isinstance(sk, str) or not sk.startswith("TS#"):
                raise ValueError
            return {"PK": str_attr(pk), "SK": str_attr(sk)}

        # BETWEEN is inclusive; no key equals "TS#<end>" itself (keys go on with "#EID#..."), and every
        # key of an event at ``end`` sorts after it, ours and the original kit's ("...00Z" > "...00.000Z").
        items, cursor = self._paged(
            action,
            "aws-entity",
            after,
            limit,
            descending,
            start_key,
            lambda item: [value_of(item, "SK")],
            keep,
            both=status is None,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": str_attr(pk),
                ":lo": str_attr(bounds[0]),
                ":hi": str_attr(bounds[1]),
            },
        )
        return Page[EventRecord](items=self.records(items, status), next_cursor=cursor)

    def _merged_page(
        self,
        action: str,
        kind: str,
        pks: list[str],
        bounds: tuple[str, str],
        prefix: str,
        after: str | None,
        limit: int,
        descending: bool,
        keep: Callable[[dict[str, Any]], bool],
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a listing of the table's ``SK`` order over the sharded keys ``pks``, a merge of their
        queries (``backend.adapters.aws.shard_merge``). Its cursor has the unsharded listing's shape, the
        last ``SK``: one key places every shard, so a cursor handed out before the stack was sharded works."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        kind = f"{kind}:{'desc' if descending else 'asc'}"
        last: str | None = None
        if after is not None:
            (last,) = decode_cursor(kind, after, _arity(kind))
            if not isinstance(last, str) or not last.startswith(prefix):
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing")
        items, more = merged(
            self,
            pks,
            bounds,
            descending=descending,
            after=last,
            limit=limit,
            keep=keep,
            action=action,
            keys=TABLE_KEYS,
        )
        cursor = encode_cursor(kind, [value_of(items[-1], "SK")]) if more else None
        return items, cursor

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
        pk = lag_pk(source, event_type, day)
        action = f"read partition {source}/{event_type}/{day}"
        if has_legacy_lag_keys(self.ddb, self.t.events, pk, action):
            return legacy_partition(
                self.ddb, self.t.events, pk, action, self.legacy_rows, status, limit, after, descending
            )
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        # The cursor keeps the shape it had before the lag index was sharded, (PK, SK, GSI1SK): its lag
        # key alone places every shard (backend.adapters.aws.shard_merge).
        kind = f"aws-partition:{'desc' if descending else 'asc'}"
        last: str | None = None
        if after is not None:
            key = decode_cursor(kind, after, _arity(kind))
            last = key[2]
            lo, hi = PADDED_LAG_RANGE
            if not all(isinstance(k, str) for k in key) or not lo <= last <= hi:
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing")
        items, more = merged(
            self,
            lag_pks(source, event_type, day, self.read_lag_shards()),
            PADDED_LAG_RANGE,
            descending=descending,
            after=last,
            limit=limit,
            keep=lambda item: status_matches(item, status),
            action=action,
        )
        cursor = None
        if more:
            tail = items[-1]
            cursor = encode_cursor(kind, [value_of(tail, k) for k in ("PK", "SK", "GSI1SK")])
        return Page[EventRecord](items=[record_from(i) for i in items], next_cursor=cursor)

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
        lo = f"RJ#{_check_time(start, 'start')}" if start else "RJ#"
        hi = f"RJ#{_check_time(end, 'end')}" if end else "RJ$"
        wanted = {"entity_id": entity_id, "source": source, "event_type": event_type}

        def keep(item: dict[str, Any]) -> bool:
            return all(v is None or value_of(item, k) == v for k, v in wanted.items())

        def start_key(key: list[Any]) -> dict[str, Any]:
            (sk,) = key
            if not isinstance(sk, str) or not sk.startswith("RJ#"):
                raise ValueError
            return {"PK": str_attr(REJECTED_PK), "SK": str_attr(sk)}

        shards = self.read_rejection_shards()
        if shards > 1:
            items, cursor = self._merged_page(
                "read rejections", "aws-rejections", rejection_pks(shards), (lo, hi), "RJ#", after, limit,
                descending, keep,
            )  # fmt: skip
            return Page[Rejection](items=[rejection_from(i) for i in items], next_cursor=cursor)
        items, cursor = self._paged(
            "read rejections",
            "aws-rejections",
            after,
            limit,
            descending,
            start_key,
            lambda item: [value_of(item, "SK")],
            keep,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": str_attr(REJECTED_PK),
                ":lo": str_attr(lo),
                ":hi": str_attr(hi),
            },
        )
        return Page[Rejection](items=[rejection_from(i) for i in items], next_cursor=cursor)

    def get_rejection(self, rejection_id: str) -> Rejection | None:
        if not _REJECTION_ID.match(rejection_id):
            return None
        shards = self.read_rejection_shards()
        # Its shard's key, then (quarantined before the stack was sharded) the unsharded one.
        pks = list(dict.fromkeys([rejection_shard_pk(rejection_id, shards), REJECTED_PK]))
        for pk in pks:
            with aws("read rejection"):
                item = self.ddb.get_item(
                    TableName=self.t.events,
                    Key={"PK": str_attr(pk), "SK": str_attr(f"RJ#{rejection_id}")},
                    ConsistentRead=True,
                ).get("Item")
            if item:
                return rejection_from(item)
        return None

    def stats(self) -> IndexStats:
        accepted = duplicate = rejected = 0
        entities: set[str] = set()
        first: str | None = None
        last: str | None = None
        parts: dict[tuple[str, str], list[int]] = {}
        legacy_dups: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {
            "TableName": self.t.events,
            "ProjectionExpression": "PK, #s, #r, #src, #typ, #ent, #t, event_id",
            "ExpressionAttributeNames": {
                "#s": "status",
                "#r": "receipt",
                "#src": "source",
                "#typ": "event_type",
                "#ent": "entity_id",
                "#t": "event_time",
            },
        }
        while True:
            with aws("count the index"):
                page = self.ddb.scan(**kwargs)
            for item in page.get("Items", []):
                pk = str(value_of(item, "PK"))
                if is_rejection_pk(pk):
                    rejected += 1
                    continue
                if not is_receipt_pk(pk):
                    continue
                receipt = value_of(item, "receipt")
                counts = parts.setdefault((value_of(item, "source"), value_of(item, "event_type")), [0, 0])
                if receipt is None and value_of(item, "status") == "DUPLICATE":
                    legacy_dups.append(item)  # the original kit's: resolved below
                else:
                    is_dup = receipt is not None and receipt != ACCEPTED_RECEIPT
                    counts[is_dup] += 1
                    duplicate += is_dup
                    accepted += not is_dup
                entities.add(value_of(item, "entity_id"))
                t = fmt(parse_iso(value_of(item, "event_time")))
                first = t if first is None or t < first else first
                last = t if last is None or t > last else last
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        # Without the accepted rows at hand, an expired dedupe item leaves such a row an acceptance.
        resolution = self.legacy_rows.resolve(legacy_dups)
        for item in legacy_dups:
            counts = parts[(value_of(item, "source"), value_of(item, "event_type"))]
            duplicate += 1
            counts[1] += 1
            if resolution.kind(item) is LegacyKind.OVERWRITTEN:
                accepted += 1
                counts[0] += 1
        return IndexStats(
            accepted=accepted,
            duplicate=duplicate,
            rejected=rejected,
            entities=len(entities),
            first_event_time=first,
            last_event_time=last,
            partitions=[PartitionCount(s, t, a, d) for (s, t), (a, d) in sorted(parts.items())],
        )
