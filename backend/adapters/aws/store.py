"""The AWS adapter: raw bytes in S3, receipts, rejections and the lag index in DynamoDB.

What an event costs in API calls (``docs/aws.md``, counted by ``tests/aws/test_call_budget.py``):

* accepted, first time: one S3 ``PutObject`` (``IfNoneMatch='*'``) and one ``TransactWriteItems`` (the
  dedupe item and the receipt, both conditional) — 2 calls;
* duplicate with the accepted bytes: the refused ``PutObject`` and one ``TransactWriteItems`` (a condition
  on the dedupe item that also checks the bytes, and the receipt) — 2 calls;
* duplicate under an idempotency key whose event day differs (its raw key is new): 3 calls;
* duplicate whose bytes differ from the accepted ones: 4 calls (both byte strings are kept; S3's refusal
  does not say what the key holds, so the bytes go under a ``receipts/`` key once the index says so);
* the retry of an event whose earlier attempt stored its bytes and failed before the index: 4 calls.

Keys (``backend.adapters.aws.resources``), in the original kit's shapes where it had them:

* receipt: ``PK=ENTITY#<entity>``; the accepted one ``SK=TS#<event_time>#EID#<id>``, duplicates
  ``...#R#<receipt>``, so a window is one key range, in event-time order, the accepted receipt first;
* lag index ``GSI1``: ``GSI1PK=SRC#<source>#TYPE#<type>#DAY#<day>``,
  ``GSI1SK=LAG#<14-digit lag>#TS#<ingest_time>#EID#<id>#R#<receipt>`` (numeric order, ties by arrival);
* receipts of one event ``GSI2``: ``GSI2PK=EID#<id>``, ``GSI2SK=R#<receipt>``;
* rejections: ``PK=REJECTED``, ``SK=RJ#<received_at>#<n>`` (bytes bounded, in the item);
* dedupe table: one item per accepted event id, with the accepted receipt's key and bytes' sha256.

Records the original kit wrote (second-precision times, unpadded lag, no receipts) are read, not written.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.clients import AwsClients, make_clients
from backend.adapters.aws.dynamo import num_attr, query, str_attr, value_of
from backend.adapters.aws.errors import NOT_FOUND_CODES, aws, error_code, store_error
from backend.adapters.aws.resources import LAG_INDEX, RECEIPTS_INDEX
from backend.config import AwsSettings
from backend.errors import InvalidRequest, StoreError
from backend.identity import sha256_hex
from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.paging import decode_cursor, encode_cursor
from backend.ports import (
    Claim,
    IndexStats,
    PartitionCount,
    RawObject,
    RawPut,
    RawPutStatus,
    Recorded,
)
from backend.times import TimeFormatError, fmt, parse_iso

T = TypeVar("T")

LAG_DIGITS = 14  # 10^14 ms is 3,000 years: every lag the 1970..2099 time range allows fits
REJECTED_PK = "REJECTED"
ACCEPTED_RECEIPT = "0"
_EVENT_ID = re.compile(r"^[0-9a-f]{64}$")
_REJECTION_ID = re.compile(r"^[0-9T:.Z+-]{10,40}#\d{19}[0-9a-f]{4}$")
# Our lag keys start "LAG#0" and a digit; the original kit's start "LAG#0#" (lag 0) or "LAG#1".."LAG#9".
_PADDED_LAG = ("LAG#00", "LAG#0:")


class _Receipts:
    """Receipt ids that sort in arrival order: ``1`` + 19-digit epoch nanoseconds + 4 hex digits, strictly
    increasing within a process (the accepted receipt is ``0``)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def next(self) -> str:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            ns = self._last
        return f"1{ns:019d}{threading.get_ident() & 0xFFFF:04x}"


def _check_time(value: str, what: str) -> str:
    try:
        return fmt(parse_iso(value, what=what))
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None


@dataclass
class _Tables:
    bucket: str
    events: str
    dedupe: str


class AwsStore:
    """:class:`backend.ports.RawStore` and :class:`backend.ports.EventIndex` on S3 and DynamoDB."""

    def __init__(
        self, clients: AwsClients, bucket: str, events_table: str, dedupe_table: str, *, workers: int = 16
    ) -> None:
        self.clients = clients
        self.s3 = clients.s3
        self.ddb = clients.dynamodb
        self.t = _Tables(bucket, events_table, dedupe_table)
        self.location = bucket
        self.region = clients.s3.meta.region_name
        self._receipts = _Receipts()
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._workers = workers

    @classmethod
    def from_settings(cls, settings: AwsSettings) -> AwsStore:
        missing = settings.missing("raw_bucket", "events_table", "dedupe_table")
        if missing:
            raise StoreError("the AWS backend needs " + ", ".join(missing) + " (or --stack NAME)")
        assert settings.raw_bucket and settings.events_table and settings.dedupe_table
        try:
            clients = make_clients(settings)
        except (BotoCoreError, ClientError) as exc:
            raise store_error("connect to AWS", exc) from None
        return cls(clients, settings.raw_bucket, settings.events_table, settings.dedupe_table)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map_concurrently(self, fn: Callable[[Any], T], groups: Sequence[Any]) -> list[T]:
        """``fn`` over ``groups``, concurrently when there are several (boto3 clients are thread-safe)."""
        if len(groups) <= 1 or self._workers <= 1:
            return [fn(g) for g in groups]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="pik-aws")
            pool = self._pool
        return list(pool.map(fn, groups))

    # -- RawStore ----------------------------------------------------------------------------------------

    def put_new(self, objects: Sequence[RawObject]) -> list[RawPut]:
        # Objects with the same key go in order (the earlier wins); different keys go concurrently.
        by_key: dict[str, list[int]] = {}
        for i, obj in enumerate(objects):
            by_key.setdefault(obj.key, []).append(i)
        results: list[RawPut | None] = [None] * len(objects)

        def put_group(indices: list[int]) -> None:
            first = objects[indices[0]]
            put = self._put_one(first)
            results[indices[0]] = put
            for i in indices[1:]:
                stored = put.stored_sha256 if put.status is RawPutStatus.CREATED else None
                results[i] = RawPut(objects[i].key, RawPutStatus.EXISTS, stored)

        self.map_concurrently(put_group, list(by_key.values()))
        return [r for r in results if r is not None]

    def _put_one(self, obj: RawObject) -> RawPut:
        for attempt in range(5):
            try:
                self.s3.put_object(
                    Bucket=self.t.bucket,
                    Key=obj.key,
                    Body=obj.data,
                    IfNoneMatch="*",
                    ServerSideEncryption="AES256",
                    ContentType="application/json",
                    Metadata={"sha256": obj.sha256},
                )
                return RawPut(obj.key, RawPutStatus.CREATED, obj.sha256)
            except ClientError as exc:
                code = error_code(exc)
                if code in ("PreconditionFailed", "412"):
                    return RawPut(obj.key, RawPutStatus.EXISTS, None)
                if code == "ConditionalRequestConflict" and attempt < 4:  # a concurrent put of the key
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise store_error(f"store raw event {obj.key}", exc) from None
            except BotoCoreError as exc:
                raise store_error(f"store raw event {obj.key}", exc) from None
        raise StoreError(f"cannot store raw event {obj.key}: concurrent writes kept conflicting")

    def get(self, key: str) -> bytes | None:
        try:
            body = self.s3.get_object(Bucket=self.t.bucket, Key=key)["Body"]
            return bytes(body.read())
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            raise store_error(f"read raw event {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read raw event {key}", exc) from None

    def sha256(self, key: str) -> str | None:
        try:
            head = self.s3.head_object(Bucket=self.t.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES:
                return None
            raise store_error(f"read raw event {key}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"read raw event {key}", exc) from None
        stored = head.get("Metadata", {}).get("sha256")
        if stored:
            return str(stored)
        data = self.get(key)  # written by another tool: hash the bytes
        return None if data is None else sha256_hex(data)

    # -- EventIndex: writes ------------------------------------------------------------------------------

    def record(self, records: Sequence[EventRecord], claims: Sequence[Claim] | None = None) -> list[Recorded]:
        if claims is not None and len(claims) != len(records):
            raise ValueError("record: one claim per record")
        # Receipts of one event id go in order; different ids go concurrently.
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(records):
            groups.setdefault(r.event_id, []).append(i)
        outcomes: list[Recorded | None] = [None] * len(records)

        def run(indices: list[int]) -> None:
            for i in indices:
                outcomes[i] = self._record_one(records[i], claims[i] if claims else Claim.STORED)

        self.map_concurrently(run, list(groups.values()))
        return [o for o in outcomes if o is not None]

    def _record_one(self, r: EventRecord, claim: Claim) -> Recorded:
        for _ in range(8):  # a transaction conflict with a concurrent writer of the same id: try again
            try:
                if claim is Claim.STORED:
                    accepted = self._try_accept(r)
                    if accepted is not None:
                        return accepted
                    self._put_duplicate(r)
                    return Recorded.DUPLICATE
                outcome = self._try_duplicate(r, verify=claim is Claim.UNVERIFIED)
                if outcome is not Recorded.UNSEEN or claim is Claim.UNVERIFIED:
                    return outcome
                accepted = self._try_accept(r)
                if accepted is not None:
                    return accepted
                claim = Claim.SEEN  # accepted meanwhile by someone else: a duplicate after all
            except _Conflict:
                time.sleep(0.02)
        raise StoreError(f"cannot record event {r.event_id}: concurrent writes kept conflicting")

    def _try_accept(self, r: EventRecord) -> Recorded | None:
        """ACCEPTED if this receipt became the acceptance; None if the event id was accepted before."""
        dedupe = {
            "event_id": str_attr(r.event_id),
            "first_seen_ingest_time": str_attr(r.ingest_time),
            "entity_id": str_attr(r.entity_id),
            "source": str_attr(r.source),
            "event_type": str_attr(r.event_type),
            "event_time": str_attr(r.event_time),
            "sk": str_attr(self._sk(r, ACCEPTED_RECEIPT)),
            "s3_key": str_attr(r.s3_key),
        }
        if r.raw_sha is not None:
            dedupe["raw_sha"] = str_attr(r.raw_sha)
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {
                        "Put": {
                            "TableName": self.t.dedupe,
                            "Item": dedupe,
                            "ConditionExpression": "attribute_not_exists(event_id)",
                        }
                    },
                    {
                        "Put": {
                            "TableName": self.t.events,
                            "Item": self._item(r, ACCEPTED_RECEIPT),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                ]
            )
            return Recorded.ACCEPTED
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                return None
            raise store_error(f"record event {r.event_id}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"record event {r.event_id}", exc) from None

    def _try_duplicate(self, r: EventRecord, *, verify: bool) -> Recorded:
        """Write ``r`` as a duplicate receipt if the event id is accepted (and, with ``verify``, if the
        accepted receipt points at the same key with the same sha256); else write nothing."""
        condition = "attribute_exists(event_id)"
        values: dict[str, Any] = {}
        if verify:
            condition += " AND s3_key = :key AND raw_sha = :sha"
            values = {":key": str_attr(r.s3_key), ":sha": str_attr(r.raw_sha or "")}
        check: Any = {
            "TableName": self.t.dedupe,
            "Key": {"event_id": str_attr(r.event_id)},
            "ConditionExpression": condition,
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if values:
            check["ExpressionAttributeValues"] = values
        receipt = self._receipts.next()
        try:
            self.ddb.transact_write_items(
                TransactItems=[
                    {"ConditionCheck": check},
                    {
                        "Put": {
                            "TableName": self.t.events,
                            "Item": self._item(r, receipt),
                            "ConditionExpression": "attribute_not_exists(PK)",
                        }
                    },
                ]
            )
            return Recorded.DUPLICATE
        except ClientError as exc:
            reasons = self._cancellation(exc, f"record event {r.event_id}")
            if reasons and reasons[0] == "ConditionalCheckFailed":
                cancelled: Any = exc.response.get("CancellationReasons") or [{}]
                old = cancelled[0].get("Item")
                if old and value_of(old, "s3_key") == r.s3_key:
                    return Recorded.MISPLACED  # the accepted bytes under this very key are other bytes
                return Recorded.UNSEEN
            raise store_error(f"record event {r.event_id}", exc) from None
        except BotoCoreError as exc:
            raise store_error(f"record event {r.event_id}", exc) from None

    def _put_duplicate(self, r: EventRecord) -> None:
        with aws(f"record duplicate of event {r.event_id}"):
            self.ddb.put_item(
                TableName=self.t.events,
                Item=self._item(r, self._receipts.next()),
                ConditionExpression="attribute_not_exists(PK)",
            )

    @staticmethod
    def _cancellation(exc: ClientError, action: str) -> list[str]:
        """The cancellation reason codes of a cancelled transaction (raises _Conflict on a conflict)."""
        if error_code(exc) != "TransactionCanceledException":
            return []
        reasons = [str(x.get("Code", "None")) for x in exc.response.get("CancellationReasons", [])]
        if "TransactionConflict" in reasons:
            raise _Conflict(action)
        return reasons

    @staticmethod
    def _sk(r: EventRecord, receipt: str) -> str:
        base = f"TS#{r.event_time}#EID#{r.event_id}"
        return base if receipt == ACCEPTED_RECEIPT else f"{base}#R#{receipt}"

    def _item(self, r: EventRecord, receipt: str) -> dict[str, Any]:
        status = IngestStatus.ACCEPTED if receipt == ACCEPTED_RECEIPT else IngestStatus.DUPLICATE
        item: dict[str, Any] = {
            "PK": str_attr(f"ENTITY#{r.entity_id}"),
            "SK": str_attr(self._sk(r, receipt)),
            "GSI1PK": str_attr(f"SRC#{r.source}#TYPE#{r.event_type}#DAY#{r.day}"),
            "GSI1SK": str_attr(
                f"LAG#{r.ingest_lag_ms:0{LAG_DIGITS}d}#TS#{r.ingest_time}#EID#{r.event_id}#R#{receipt}"
            ),
            "GSI2PK": str_attr(f"EID#{r.event_id}"),
            "GSI2SK": str_attr(f"R#{receipt}"),
            "event_id": str_attr(r.event_id),
            "receipt": str_attr(receipt),
            "status": str_attr(status.value),
            "source": str_attr(r.source),
            "event_type": str_attr(r.event_type),
            "entity_id": str_attr(r.entity_id),
            "event_time": str_attr(r.event_time),
            "ingest_time": str_attr(r.ingest_time),
            "ingest_lag_ms": num_attr(r.ingest_lag_ms),
            "clock_skew": {"BOOL": r.clock_skew},
            "payload_sha": str_attr(r.payload_sha),
            "day": str_attr(r.day),
            "hour": str_attr(r.hour),
            "s3_key": str_attr(r.s3_key),
            "s3_bucket": str_attr(self.t.bucket),
        }
        if r.raw_sha is not None:
            item["raw_sha"] = str_attr(r.raw_sha)
        if r.raw_size is not None:
            item["raw_size"] = num_attr(r.raw_size)
        if r.idempotency_key is not None:
            item["idempotency_key"] = str_attr(r.idempotency_key)
        if r.origin is not None:
            item["origin"] = str_attr(r.origin)
        if r.line is not None:
            item["line"] = num_attr(r.line)
        return item

    def quarantine(self, rejections: Sequence[Rejection]) -> list[str]:
        ids = [f"{r.received_at}#{self._receipts.next()[1:]}" for r in rejections]
        requests = []
        for rid, r in zip(ids, rejections, strict=True):
            item: dict[str, Any] = {
                "PK": str_attr(REJECTED_PK),
                "SK": str_attr(f"RJ#{rid}"),
                "status": str_attr("REJECTED"),
                "received_at": str_attr(r.received_at),
                "reason": str_attr(r.reason),
                "origin": str_attr(r.origin),
                "size": num_attr(r.size),
                "sha256": str_attr(r.sha256),
                "data": {"B": r.data},
                "truncated": {"BOOL": r.truncated},
            }
            if r.line is not None:
                item["line"] = num_attr(r.line)
            for name in ("source", "event_type", "entity_id"):
                value = getattr(r, name)
                if value is not None:
                    item[name] = str_attr(value)
            requests.append({"Put": {"TableName": self.t.events, "Item": item}})
        # Puts in transactions (up to 100 items and 4 MB each): the role needs PutItem only, never the
        # BatchWriteItem right that would also allow deletes.
        chunk: list[Any] = []
        size = 0
        for request, r in zip(requests, rejections, strict=True):
            item_size = len(r.data) + len(r.reason) + 1024
            if chunk and (len(chunk) == 100 or size + item_size > 3_500_000):
                self._transact_puts(chunk)
                chunk, size = [], 0
            chunk.append(request)
            size += item_size
        if chunk:
            self._transact_puts(chunk)
        return ids

    def _transact_puts(self, puts: list[Any]) -> None:
        for _ in range(8):
            try:
                self.ddb.transact_write_items(TransactItems=puts)
                return
            except ClientError as exc:
                try:
                    self._cancellation(exc, "quarantine rejected events")
                except _Conflict:
                    time.sleep(0.02)
                    continue
                raise store_error("quarantine rejected events", exc) from None
            except BotoCoreError as exc:
                raise store_error("quarantine rejected events", exc) from None
        raise StoreError("cannot quarantine rejected events: concurrent writes kept conflicting")

    # -- EventIndex: reads -------------------------------------------------------------------------------

    def _record_from(self, item: dict[str, Any]) -> EventRecord:
        """An index record from an item: ours, or one the original kit wrote (times to fixed precision,
        its ``status`` kept as it was stored; it overwrote an accepted row with a duplicate's)."""
        event_time = fmt(parse_iso(value_of(item, "event_time")))
        ingest_time = fmt(parse_iso(value_of(item, "ingest_time")))
        receipt = value_of(item, "receipt") or ACCEPTED_RECEIPT
        stored_status = value_of(item, "status")
        if value_of(item, "receipt") is not None:
            status = IngestStatus.ACCEPTED if receipt == ACCEPTED_RECEIPT else IngestStatus.DUPLICATE
        else:
            status = (
                IngestStatus(stored_status)
                if stored_status in ("ACCEPTED", "DUPLICATE")
                else (IngestStatus.ACCEPTED)
            )
        lag = int(value_of(item, "ingest_lag_ms") or 0)
        return EventRecord(
            event_id=value_of(item, "event_id"),
            status=status,
            source=value_of(item, "source"),
            event_type=value_of(item, "event_type"),
            entity_id=value_of(item, "entity_id"),
            event_time=event_time,
            ingest_time=ingest_time,
            ingest_lag_ms=max(lag, 0),
            clock_skew=bool(value_of(item, "clock_skew")) or lag < 0,
            payload_sha=value_of(item, "payload_sha") or "",
            day=value_of(item, "day") or event_time[:10],
            hour=str(value_of(item, "hour") or event_time[11:13]).zfill(2),
            s3_key=value_of(item, "s3_key") or "",
            s3_bucket=value_of(item, "s3_bucket"),
            raw_sha=value_of(item, "raw_sha"),
            raw_size=value_of(item, "raw_size"),
            idempotency_key=value_of(item, "idempotency_key"),
            origin=value_of(item, "origin"),
            line=value_of(item, "line"),
            receipt=receipt,
        )

    def get_accepted(self, event_id: str) -> EventRecord | None:
        if not _EVENT_ID.match(event_id):
            return None
        with aws(f"read event {event_id}"):
            seen = self.ddb.get_item(
                TableName=self.t.dedupe, Key={"event_id": str_attr(event_id)}, ConsistentRead=True
            ).get("Item")
        if not seen:
            return None
        sk = value_of(seen, "sk") or f"TS#{value_of(seen, 'event_time')}#EID#{event_id}"
        with aws(f"read event {event_id}"):
            item = self.ddb.get_item(
                TableName=self.t.events,
                Key={"PK": str_attr(f"ENTITY#{value_of(seen, 'entity_id')}"), "SK": str_attr(sk)},
                ConsistentRead=True,
            ).get("Item")
        if not item:
            return None
        record = self._record_from(item)
        return record.model_copy(update={"status": IngestStatus.ACCEPTED, "receipt": ACCEPTED_RECEIPT})

    def receipts(self, event_id: str) -> list[EventRecord]:
        if not _EVENT_ID.match(event_id):
            return []
        items = list(
            self.query_items(
                f"read the receipts of event {event_id}",
                IndexName=RECEIPTS_INDEX.name,
                KeyConditionExpression="GSI2PK = :pk",
                ExpressionAttributeValues={":pk": str_attr(f"EID#{event_id}")},
            )
        )
        if not items:  # written by the original kit: no receipts index, one row per event
            accepted = self.get_accepted(event_id)
            return [accepted] if accepted else []
        return [self._record_from(i) for i in items]

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
        **query: Any,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a keyset-paged query: up to ``limit`` kept items after the cursor, and the cursor
        of the next page (None when nothing is left)."""
        if limit < 1:
            raise InvalidRequest("limit must be at least 1")
        kind = f"{kind}:{'desc' if descending else 'asc'}"
        query["ScanIndexForward"] = not descending
        query["Limit"] = min(limit + 1, 1000)
        if after is not None:
            key = decode_cursor(kind, after, _arity(kind))
            try:
                query["ExclusiveStartKey"] = start_key(key)
            except (TypeError, ValueError, KeyError):
                raise InvalidRequest(f"cursor {after[:40]!r} is not a cursor of this listing") from None
        items: list[dict[str, Any]] = []
        for item in self.query_items(action, **query):
            if keep(item):
                items.append(item)
                if len(items) > limit:
                    break
        more = len(items) > limit
        items = items[:limit]
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
        pk = f"ENTITY#{entity_id}"
        if lo >= hi:
            return Page[EventRecord](items=[])

        def start_key(key: list[Any]) -> dict[str, Any]:
            (sk,) = key
            if not isinstance(sk, str) or not sk.startswith("TS#"):
                raise ValueError
            return {"PK": str_attr(pk), "SK": str_attr(sk)}

        # BETWEEN is inclusive; no key equals "TS#<end>" itself (keys go on with "#EID#..."), and every
        # key of an event at ``end`` sorts after it, ours and the original kit's ("...00Z" > "...00.000Z").
        items, cursor = self._paged(
            f"read the events of entity {entity_id!r}",
            "aws-entity",
            after,
            limit,
            descending,
            start_key,
            lambda item: [value_of(item, "SK")],
            lambda item: _status_matches(item, status) and lo <= _stored_time(item) < hi,
            KeyConditionExpression="PK = :pk AND SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": str_attr(pk),
                ":lo": str_attr(f"TS#{lo}"),
                ":hi": str_attr(f"TS#{hi}"),
            },
        )
        return Page[EventRecord](items=[self._record_from(i) for i in items], next_cursor=cursor)

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
        pk = f"SRC#{source}#TYPE#{event_type}#DAY#{day}"
        action = f"read partition {source}/{event_type}/{day}"
        if self._has_legacy_lag_keys(pk, action):
            return self._legacy_partition(pk, action, status, limit, after, descending)

        def start_key(key: list[Any]) -> dict[str, Any]:
            entity_pk, sk, gsk = key
            if not all(isinstance(k, str) for k in key) or not gsk.startswith("LAG#"):
                raise ValueError
            return {
                "PK": str_attr(entity_pk),
                "SK": str_attr(sk),
                "GSI1PK": str_attr(pk),
                "GSI1SK": str_attr(gsk),
            }

        items, cursor = self._paged(
            action,
            "aws-partition",
            after,
            limit,
            descending,
            start_key,
            lambda item: [value_of(item, "PK"), value_of(item, "SK"), value_of(item, "GSI1SK")],
            lambda item: _status_matches(item, status),
            IndexName=LAG_INDEX.name,
            KeyConditionExpression="GSI1PK = :pk AND GSI1SK BETWEEN :lo AND :hi",
            ExpressionAttributeValues={
                ":pk": str_attr(pk),
                ":lo": str_attr(_PADDED_LAG[0]),
                ":hi": str_attr(_PADDED_LAG[1]),
            },
        )
        return Page[EventRecord](items=[self._record_from(i) for i in items], next_cursor=cursor)

    def _has_legacy_lag_keys(self, pk: str, action: str) -> bool:
        """Whether the partition holds lag keys the original kit wrote (unpadded: "LAG#100" < "LAG#20")."""
        for condition, value in (("GSI1SK < :v", _PADDED_LAG[0]), ("GSI1SK > :v", _PADDED_LAG[1])):
            with aws(action):
                page = self.ddb.query(
                    TableName=self.t.events,
                    IndexName=LAG_INDEX.name,
                    KeyConditionExpression=f"GSI1PK = :pk AND {condition}",
                    ExpressionAttributeValues={":pk": str_attr(pk), ":v": str_attr(value)},
                    Limit=1,
                )
            if page.get("Items"):
                return True
        return False

    def _legacy_partition(
        self,
        pk: str,
        action: str,
        status: IngestStatus | None,
        limit: int,
        after: str | None,
        descending: bool,
    ) -> Page[EventRecord]:
        """A partition with the original kit's unpadded lag keys: read whole, sorted by number here."""
        items = self.query_items(
            action,
            IndexName=LAG_INDEX.name,
            KeyConditionExpression="GSI1PK = :pk",
            ExpressionAttributeValues={":pk": str_attr(pk)},
        )
        records = [self._record_from(i) for i in items if _status_matches(i, status)]

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
        return Page[Rejection](items=[_rejection_from(i) for i in items], next_cursor=cursor)

    def get_rejection(self, rejection_id: str) -> Rejection | None:
        if not _REJECTION_ID.match(rejection_id):
            return None
        with aws("read rejection"):
            item = self.ddb.get_item(
                TableName=self.t.events,
                Key={"PK": str_attr(REJECTED_PK), "SK": str_attr(f"RJ#{rejection_id}")},
                ConsistentRead=True,
            ).get("Item")
        return _rejection_from(item) if item else None

    def stats(self) -> IndexStats:
        accepted = duplicate = rejected = 0
        entities: set[str] = set()
        first: str | None = None
        last: str | None = None
        parts: dict[tuple[str, str], list[int]] = {}
        kwargs: dict[str, Any] = {
            "TableName": self.t.events,
            "ProjectionExpression": "PK, #s, #r, #src, #typ, #ent, #t",
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
                pk = value_of(item, "PK")
                if pk == REJECTED_PK:
                    rejected += 1
                    continue
                if not str(pk).startswith("ENTITY#"):
                    continue
                receipt = value_of(item, "receipt")
                is_dup = receipt != ACCEPTED_RECEIPT if receipt is not None else False
                counts = parts.setdefault((value_of(item, "source"), value_of(item, "event_type")), [0, 0])
                counts[is_dup] += 1
                if is_dup:
                    duplicate += 1
                else:
                    accepted += 1
                entities.add(value_of(item, "entity_id"))
                t = fmt(parse_iso(value_of(item, "event_time")))
                first = t if first is None or t < first else first
                last = t if last is None or t > last else last
            if not page.get("LastEvaluatedKey"):
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return IndexStats(
            accepted=accepted,
            duplicate=duplicate,
            rejected=rejected,
            entities=len(entities),
            first_event_time=first,
            last_event_time=last,
            partitions=[PartitionCount(s, t, a, d) for (s, t), (a, d) in sorted(parts.items())],
        )


class _Conflict(Exception):
    """A transaction lost to a concurrent one on the same item; the caller tries again."""


def _arity(kind: str) -> int:
    return 3 if kind.startswith("aws-partition") else 1


def _status_matches(item: dict[str, Any], status: IngestStatus | None) -> bool:
    if status is None:
        return True
    receipt = value_of(item, "receipt")
    if receipt is None:
        # The original kit's row is its event's only record (a duplicate overwrote the acceptance): it
        # stands for the accepted event, and for a duplicate too if that is the status it was left with.
        return status is IngestStatus.ACCEPTED or bool(value_of(item, "status") == status.value)
    return bool((receipt == ACCEPTED_RECEIPT) == (status is IngestStatus.ACCEPTED))


def _stored_time(item: dict[str, Any]) -> str:
    value = str(value_of(item, "event_time"))
    if len(value) == 24 and value.endswith("Z"):  # ours, already fixed precision
        return value
    return fmt(parse_iso(value))


def _rejection_from(item: dict[str, Any]) -> Rejection:
    sk = str(value_of(item, "SK"))
    data = item.get("data", {}).get("B", b"")
    if isinstance(data, str):  # some endpoints hand binary back base64-encoded
        data = base64.b64decode(data)
    return Rejection(
        received_at=value_of(item, "received_at"),
        reason=value_of(item, "reason"),
        origin=value_of(item, "origin") or "api",
        line=value_of(item, "line"),
        size=value_of(item, "size"),
        sha256=value_of(item, "sha256"),
        data=bytes(data),
        truncated=bool(value_of(item, "truncated")),
        source=value_of(item, "source"),
        event_type=value_of(item, "event_type"),
        entity_id=value_of(item, "entity_id"),
        rejection_id=sk[3:],
    )
