"""The events table's items: their keys, and receipts and rejections to and from items.

Keys (``backend.adapters.aws.resources``), in the original kit's shapes where it had them:

* receipt: ``PK=ENTITY#<entity>``, or on a stack with M > 1 entity shards ``PK=ENTITY:<m>#<entity>``
  with ``m = lag_shard(event_id, M)`` (every receipt of an event in one shard; the shard goes before the
  entity, which may hold any ``#``, so no entity id can forge another's shard key); the accepted one
  ``SK=TS#<event_time>#EID#<id>``, duplicates ``...#R#<receipt>``, so a window is one key range per shard,
  in event-time order, the accepted receipt first, and the shards merge by ``SK``;
* lag index ``GSI1``: ``GSI1PK=SRC#<source>#TYPE#<type>#DAY#<day>``, or on a stack with N > 1 lag shards
  ``...#DAY#<day>#S#<n>`` with ``n = lag_shard(event_id, N)`` (every receipt of an event in one shard);
  ``GSI1SK=LAG#<14-digit lag>#TS#<ingest_time>#EID#<id>#R#<receipt>`` (numeric order, ties by arrival);
* receipts of one event ``GSI2``: ``GSI2PK=EID#<id>``, ``GSI2SK=R#<receipt>``;
* the stack's own description: ``PK=STACK``, ``SK=LAG_SHARDS`` holds N (``shards``), so a reader knows
  which lag keys exist (a stack without it is unsharded, as the original kit's are); ``SK=ENTITY_SHARDS``
  and ``SK=REJECTION_SHARDS`` the same for the entity keys and the quarantine;
* rejections: ``PK=REJECTED``, or on a stack with R > 1 rejection shards ``PK=REJECTED#S#<r>`` with ``r``
  a stable hash of the rejection id; ``SK=RJ#<received_at>#<n>`` (bytes bounded, in the item);
* dedupe table: one item per accepted event id, with the accepted receipt's key and bytes' sha256 (and
  its delivery's identity); and the ingest ledger, one item per line of an input that was ever stored,
  ``event_id=LINE#<origin>#<line>`` with the set of the sha256s stored from it (``shas``): an event id is
  64 hex digits, so the two cannot meet.

The accepted receipt carries ``payload``, the payload's canonical JSON, when the receipt came with one
(``EventRecord.payload``: at most 512 bytes); the indexes do not project it (``resources.INDEX_ATTRIBUTES``),
and a reader trusts it only if its sha256 is ``payload_sha`` (docs/aws.md, "Payloads in the index").

Every receipt and the dedupe item carry ``delivery``, the identity of the delivery that wrote them
(``EventRecord.delivery``): a write tried again after an ambiguous failure recognises its own items by it.

Items the original kit wrote (second-precision times, unpadded lag, no receipts) are read here as well as
ours; they are never written (``backend.adapters.aws.legacy`` reads its partitions).
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from backend.adapters.aws.dynamo import num_attr, str_attr, value_of
from backend.model import EventRecord, IngestStatus, Rejection
from backend.times import fmt, parse_iso

LAG_DIGITS = 14  # 10^14 ms is 3,000 years: every lag the 1970..2099 time range allows fits
# Our lag keys start "LAG#0" and a digit; the original kit's start "LAG#0#" (lag 0) or "LAG#1".."LAG#9".
# Every lag key we write sorts between these two; every key the original kit wrote sorts outside them.
PADDED_LAG_RANGE = ("LAG#00", "LAG#0:")
REJECTED_PK = "REJECTED"
ACCEPTED_RECEIPT = "0"
STACK_PK = "STACK"
LAG_SHARDS_SK = "LAG_SHARDS"
MAX_LAG_SHARDS = 1000
# The accepted receipt's payload as canonical JSON, when small (EventRecord.payload); never in an index.
PAYLOAD = "payload"


ENTITY_PREFIX = "ENTITY"  # every receipt's partition key starts with it: ENTITY#... or ENTITY:<m>#...


def entity_pk(entity_id: str, shard: int | None = None) -> str:
    """The events-table partition key of ``entity_id``'s receipts: unsharded (the original kit's shape)
    when ``shard`` is None, else that shard's."""
    return f"ENTITY#{entity_id}" if shard is None else f"ENTITY:{shard}#{entity_id}"


def entity_pks(entity_id: str, shards: int) -> list[str]:
    """Every partition key that may hold receipts of ``entity_id`` on a stack with ``shards`` entity shards:
    the unsharded key (receipts written before the stack was sharded, and the original kit's) and, when
    ``shards`` > 1, each shard's."""
    keys = [entity_pk(entity_id)]
    if shards > 1:
        keys += [entity_pk(entity_id, m) for m in range(shards)]
    return keys


def event_entity_pk(r: EventRecord, shards: int) -> str:
    """The partition key that receipts of ``r`` are written under on a stack with ``shards`` entity shards."""
    return entity_pk(r.entity_id, lag_shard(r.event_id, shards) if shards > 1 else None)


def is_receipt_pk(pk: str) -> bool:
    """Whether ``pk`` is a receipt's partition key (an entity's, sharded or not)."""
    return pk.startswith("ENTITY#") or (pk.startswith("ENTITY:") and "#" in pk)


def rejection_pk(shard: int | None = None) -> str:
    """The quarantine's partition key: unsharded when ``shard`` is None, else that shard's."""
    return REJECTED_PK if shard is None else f"{REJECTED_PK}#S#{shard}"


def rejection_pks(shards: int) -> list[str]:
    """Every partition key that may hold rejections on a stack with ``shards`` rejection shards."""
    return [rejection_pk()] + ([rejection_pk(n) for n in range(shards)] if shards > 1 else [])


def rejection_shard_pk(rejection_id: str, shards: int) -> str:
    """The partition key of rejection ``rejection_id`` on a stack with ``shards`` rejection shards."""
    return rejection_pk(lag_shard(rejection_id, shards) if shards > 1 else None)


def is_rejection_pk(pk: str) -> bool:
    """Whether ``pk`` is a partition key of the quarantine."""
    return pk == REJECTED_PK or pk.startswith(f"{REJECTED_PK}#S#")


def receipts_pk(event_id: str) -> str:
    """The receipts index's partition key of ``event_id`` (every receipt of one event)."""
    return f"EID#{event_id}"


def lag_shard(event_id: str, shards: int) -> int:
    """The shard (0..shards-1) of ``event_id`` (the lag index's and the entity keys'): a stable hash, the
    same in every process and release, so every receipt of an event lands in the same shard."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def lag_pk(source: str, event_type: str, day: str, shard: int | None = None) -> str:
    """The lag-index partition key of (source, type, day): unsharded (the original kit's shape) when
    ``shard`` is None, else that shard's."""
    base = f"SRC#{source}#TYPE#{event_type}#DAY#{day}"
    return base if shard is None else f"{base}#S#{shard}"


def lag_pks(source: str, event_type: str, day: str, shards: int) -> list[str]:
    """Every lag-index partition key that may hold receipts of (source, type, day) on a stack with
    ``shards`` shards: the unsharded key (days written before the stack was sharded, and the original
    kit's) and, when ``shards`` > 1, each shard's."""
    keys = [lag_pk(source, event_type, day)]
    if shards > 1:
        keys += [lag_pk(source, event_type, day, n) for n in range(shards)]
    return keys


def event_lag_pk(r: EventRecord, shards: int) -> str:
    """The lag-index partition key that receipts of ``r`` are written under on a stack with ``shards``."""
    shard = lag_shard(r.event_id, shards) if shards > 1 else None
    return lag_pk(r.source, r.event_type, r.day, shard)


def event_sk(r: EventRecord, receipt: str) -> str:
    """The sort key of receipt ``receipt`` of ``r`` (the accepted one has no ``#R#`` suffix)."""
    base = f"TS#{r.event_time}#EID#{r.event_id}"
    return base if receipt == ACCEPTED_RECEIPT else f"{base}#R#{receipt}"


def dedupe_item(r: EventRecord, entity_shards: int = 1) -> dict[str, Any]:
    """The dedupe-table item that marks ``r`` as its event id's accepted receipt; on a stack with entity
    shards it names the receipt's partition key too (``pk``; without it the key is the unsharded one)."""
    dedupe = {
        "event_id": str_attr(r.event_id),
        "first_seen_ingest_time": str_attr(r.ingest_time),
        "entity_id": str_attr(r.entity_id),
        "source": str_attr(r.source),
        "event_type": str_attr(r.event_type),
        "event_time": str_attr(r.event_time),
        "sk": str_attr(event_sk(r, ACCEPTED_RECEIPT)),
        "s3_key": str_attr(r.s3_key),
    }
    if entity_shards > 1:
        dedupe["pk"] = str_attr(event_entity_pk(r, entity_shards))
    if r.raw_sha is not None:
        dedupe["raw_sha"] = str_attr(r.raw_sha)
    if r.delivery is not None:
        dedupe["delivery"] = str_attr(r.delivery)
    return dedupe


LINE_PREFIX = "LINE#"


def line_key(origin: str, line: int) -> dict[str, Any]:
    """The dedupe-table key of the ledger's item for ``line`` of ``origin`` (the line is last, and has no
    ``#``: no origin can forge another's key)."""
    return {"event_id": str_attr(f"{LINE_PREFIX}{origin}#{line}")}


def line_update(dedupe_table: str, origin: str, line: int, sha256: str) -> dict[str, Any]:
    """The transaction item adding ``sha256`` to what the ledger holds for ``line`` of ``origin``."""
    return {
        "Update": {
            "TableName": dedupe_table,
            "Key": line_key(origin, line),
            "UpdateExpression": "ADD shas :sha SET origin = :origin, line = :line",
            "ExpressionAttributeValues": {
                ":sha": {"SS": [sha256]},
                ":origin": str_attr(origin),
                ":line": num_attr(line),
            },
        }
    }


def event_item(
    r: EventRecord, receipt: str, bucket: str, shards: int = 1, entity_shards: int = 1
) -> dict[str, Any]:
    """The events-table item of receipt ``receipt`` of ``r`` (whose bytes are in ``bucket``), on a stack
    whose lag index has ``shards`` shards and whose entity keys ``entity_shards``."""
    status = IngestStatus.ACCEPTED if receipt == ACCEPTED_RECEIPT else IngestStatus.DUPLICATE
    item: dict[str, Any] = {
        "PK": str_attr(event_entity_pk(r, entity_shards)),
        "SK": str_attr(event_sk(r, receipt)),
        "GSI1PK": str_attr(event_lag_pk(r, shards)),
        "GSI1SK": str_attr(
            f"LAG#{r.ingest_lag_ms:0{LAG_DIGITS}d}#TS#{r.ingest_time}#EID#{r.event_id}#R#{receipt}"
        ),
        "GSI2PK": str_attr(receipts_pk(r.event_id)),
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
        "s3_bucket": str_attr(bucket),
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
    if r.delivery is not None:
        item["delivery"] = str_attr(r.delivery)
    if r.payload is not None and receipt == ACCEPTED_RECEIPT:
        # Only the accepted receipt: a recompute reads accepted receipts alone. The lag and receipts
        # indexes do not project it (resources.INDEX_ATTRIBUTES), so it costs write units once.
        item[PAYLOAD] = str_attr(r.payload)
    return item


def record_from(item: dict[str, Any]) -> EventRecord:
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
        payload=value_of(item, PAYLOAD),
    )


def status_matches(item: dict[str, Any], status: IngestStatus | None) -> bool:
    """Whether ``item`` may hold a receipt with ``status`` (any status when None). Exact for this kit's
    items; a DUPLICATE row the original kit wrote may be an overwritten acceptance too, so it is kept for
    either status and ``backend.adapters.aws.legacy.Resolution`` decides."""
    if status is None:
        return True
    receipt = value_of(item, "receipt")
    if receipt is None:
        return value_of(item, "status") == "DUPLICATE" or status is IngestStatus.ACCEPTED
    return bool((receipt == ACCEPTED_RECEIPT) == (status is IngestStatus.ACCEPTED))


def stored_time(item: dict[str, Any]) -> str:
    """The event time of ``item`` at fixed millisecond precision, whoever wrote it."""
    value = str(value_of(item, "event_time"))
    if len(value) == 24 and value.endswith("Z"):  # ours, already fixed precision
        return value
    return fmt(parse_iso(value))


def rejection_item(rejection_id: str, r: Rejection, shards: int = 1) -> dict[str, Any]:
    """The events-table item that quarantines ``r`` under ``rejection_id``, on a stack with ``shards``
    rejection shards."""
    item: dict[str, Any] = {
        "PK": str_attr(rejection_shard_pk(rejection_id, shards)),
        "SK": str_attr(f"RJ#{rejection_id}"),
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
    return item


def rejection_from(item: dict[str, Any]) -> Rejection:
    """A quarantined rejection from its item."""
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
