"""The rollup items of the events table: their keys, and what one stream record adds to them.

Rollups live in the events table beside the receipts (``docs/aws.md``, "Rollups", argues why), under
partition keys that no receipt can have (receipts start ``ENTITY#`` or ``ENTITY:``, rejections are
``REJECTED`` or ``REJECTED#S#<r>``):

* per (source, type, event hour): ``PK=ROLLUP#SRC#<source>#TYPE#<type>``, ``SK=DAY#<day>#HOUR#<hh>`` with
  ``n`` accepted events, ``dup`` duplicate receipts, ``skew`` events with clock skew, ``L<lo>`` lag buckets
  and ``A<lo>`` arrival buckets (:mod:`backend.lag_buckets`) of the accepted events. Fourteen days of a
  partition are one Query of at most 336 items;
* per (entity, event day): ``PK=ROLLUP#ENTITY#<entity>`` (``ROLLUP#`` and the receipts' own partition key:
  ``ROLLUP#ENTITY:<m>#<entity>`` for entity shard ``m``), ``SK=DAY#<day>`` with ``n``, ``dup`` and ``A<lo>``,
  and ``wm``, the stream sequence number of the last receipt of that entity and day it counts (the
  watermark that makes a replayed stream batch count once: ``backend.adapters.aws.rollups``);
* rejections per day they were received: ``PK=ROLLUP#REJECTED`` (``ROLLUP#REJECTED#S#<r>`` for rejection
  shard ``r``), ``SK=DAY#<day>``, ``n`` and ``wm``;
* the directory of the days, for ``pik overview``, which must find every partition and entity of a range
  of days without a scan: per (event day, source, type) ``PK=ROLLUP#DAYS``, ``SK=DAY#<day>#SRC#<source>#TYPE#
  <type>`` with ``n`` and ``dup``; per (event day, entity) ``PK=ROLLUP#ENTITIES#<k>`` (``k`` one of
  :data:`DAY_ENTITY_SHARDS`, from a CRC of the entity, so that the writes spread over that many keys),
  ``SK=DAY#<day>#ENTITY#<entity>`` with ``n``, ``dup``, ``skew`` and ``A<lo>``: a range of days is one
  Query per shard;
* the state of the stack's rollups: ``PK=ROLLUP#META``, ``SK=STATE`` (``ready``, ``cutoff``, and ``days``
  once a backfill has written the directory of the days too).

Source and type cannot hold ``#`` and the entity is last in its key, so no value forges another key.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.adapters.aws.dynamo import value_of
from backend.adapters.aws.event_items import ACCEPTED_RECEIPT, is_receipt_pk, is_rejection_pk
from backend.adapters.aws.event_items import entity_pk as receipt_entity_pk
from backend.lag_buckets import arrival_bucket, lag_bucket
from backend.times import fmt, parse_iso

ROLLUP_PREFIX = "ROLLUP#"
META_KEY = ("ROLLUP#META", "STATE")
SEQ_DIGITS = 40  # stream sequence numbers are 21 to 40 digits: zero-padded, string order is number order


def partition_pk(source: str, event_type: str) -> str:
    return f"ROLLUP#SRC#{source}#TYPE#{event_type}"


def hour_sk(day: str, hour: str) -> str:
    return f"DAY#{day}#HOUR#{hour}"


def gate_pk(receipt_pk: str) -> str:
    """The rollup partition key of the receipts (or rejections) under ``receipt_pk``: ``ROLLUP#`` before
    it, so each shard of an entity (or of the quarantine) has its own gated items. It must: the watermark
    compares stream sequence numbers, which are ordered within one partition key only."""
    return f"{ROLLUP_PREFIX}{receipt_pk}"


def entity_pk(entity_id: str, shard: int | None = None) -> str:
    """The rollup partition key of ``entity_id``'s receipts under its unsharded key, or shard ``shard``."""
    return gate_pk(receipt_entity_pk(entity_id, shard))


def day_sk(day: str) -> str:
    return f"DAY#{day}"


DAYS_PK = "ROLLUP#DAYS"
DAY_ENTITY_SHARDS = 32  # at 10,000 receipts/s of distinct entities, ~300 updates/s per key


def days_sk(day: str, source: str, event_type: str) -> str:
    return f"DAY#{day}#SRC#{source}#TYPE#{event_type}"


def day_entity_pk(shard: int) -> str:
    return f"ROLLUP#ENTITIES#{shard}"


def day_entity_key(day: str, entity_id: str) -> Key:
    shard = zlib.crc32(entity_id.encode()) % DAY_ENTITY_SHARDS
    return day_entity_pk(shard), f"DAY#{day}#ENTITY#{entity_id}"


def day_end_ms(day: str) -> int:
    """Epoch milliseconds of the end of ``day`` (``YYYY-MM-DD``)."""
    end = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=1)
    return (end - _EPOCH) // timedelta(milliseconds=1)


def epoch_ms(text: str) -> int:
    """Epoch milliseconds of a stored time (ours or the original kit's), in exact integer arithmetic."""
    return (parse_iso(text) - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def padded_seq(seq: str) -> str:
    return seq.zfill(SEQ_DIGITS)


@dataclass
class Delta:
    """What to add to one rollup item: counter name -> amount; and for a gated item (one that holds a
    watermark) the first and last sequence number of the receipts it adds."""

    counters: dict[str, int] = field(default_factory=dict)
    first_seq: str | None = None
    last_seq: str | None = None

    def add(self, name: str, amount: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + amount

    def gate(self, seq: str) -> None:
        self.first_seq = seq if self.first_seq is None else min(self.first_seq, seq)
        self.last_seq = seq if self.last_seq is None else max(self.last_seq, seq)


Key = tuple[str, str]


@dataclass(frozen=True)
class Contribution:
    """What one stream record adds: the gated item whose watermark decides whether it is counted, and the
    counters it adds to each item (the gated one among them)."""

    seq: str
    gate: Key
    adds: dict[Key, dict[str, int]]


def contribution(image: dict[str, Any], seq: str, cutoff: str = "") -> Contribution | None:
    """What the item ``image`` (a NEW_IMAGE of an INSERT, or an item read by a backfill) adds to the
    rollups; None for items that are not counted: rollups themselves, other items, the original kit's rows
    (no ``receipt``), and receipts ingested (rejections received) before ``cutoff``, which a backfill
    counts."""
    pk = str(value_of(image, "PK") or "")
    seq = padded_seq(seq)
    if is_rejection_pk(pk):
        received = fmt(parse_iso(str(value_of(image, "received_at"))))
        if received < cutoff:
            return None
        key = (gate_pk(pk), day_sk(received[:10]))
        return Contribution(seq, key, {key: {"n": 1, f"H{received[11:13]}": 1}})
    receipt = value_of(image, "receipt")
    if not is_receipt_pk(pk) or receipt is None:
        return None
    ingest_time = fmt(parse_iso(str(value_of(image, "ingest_time"))))
    if ingest_time < cutoff:
        return None
    event_time = fmt(parse_iso(str(value_of(image, "event_time"))))
    day, hour = event_time[:10], event_time[11:13]
    source, event_type = str(value_of(image, "source")), str(value_of(image, "event_type"))
    entity_id = str(value_of(image, "entity_id"))
    part = (partition_pk(source, event_type), hour_sk(day, hour))
    entity = (gate_pk(pk), day_sk(day))
    listed = (DAYS_PK, days_sk(day, source, event_type))
    day_entity = day_entity_key(day, entity_id)
    if receipt != ACCEPTED_RECEIPT:
        dup = {"dup": 1}
        return Contribution(seq, entity, {part: dup, entity: dup, listed: dup, day_entity: dup})
    lag = max(int(value_of(image, "ingest_lag_ms") or 0), 0)
    part_adds = {"n": 1, f"L{lag_bucket(lag)}": 1}
    entity_adds = {"n": 1}
    day_entity_adds = {"n": 1}
    if value_of(image, "clock_skew"):
        part_adds["skew"] = 1
        day_entity_adds["skew"] = 1
    offset = epoch_ms(ingest_time) - day_end_ms(day)
    if offset >= 0:
        arrival = f"A{arrival_bucket(offset)}"
        part_adds[arrival] = 1
        entity_adds[arrival] = 1
        day_entity_adds[arrival] = 1
    return Contribution(
        seq,
        entity,
        {part: part_adds, entity: entity_adds, listed: {"n": 1}, day_entity: day_entity_adds},
    )


def buckets(item: dict[str, Any], letter: str) -> dict[int, int]:
    """The buckets (``L`` lag, ``A`` arrival) of a rollup item: lower bound -> count."""
    out: dict[int, int] = {}
    for name, cell in item.items():
        if name[:1] == letter and name[1:].isdigit():
            out[int(name[1:])] = int(cell["N"])
    return out
