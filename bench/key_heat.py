"""Key heat: the writes/s that the hottest DynamoDB partition key of each table and index takes at the
peak of a synthetic day, against the 1,000 writes/s that one partition serves (target: every key <= 50%).

    .venv/bin/python bench/key_heat.py [--sample N] [--lag-shards N ...] [--entity-shards M]
                                       [--rejection-shards R]

The day: 100,000 events/s for the stack on average, 10,000 events/s per ordinary source/type, one
source/type sending 40% of everything, one entity 5%, a diurnal curve whose peak hour is 3x the mean, and
small shares of duplicates and rejections. A stratified sample of the peak hour's events is pushed through
the adapter's REAL key functions (``backend.adapters.aws.event_items``; nothing is copied here), the
sampled share of each key is scaled to the peak rate, and each write is weighed by the write units of the
item the adapter writes (``event_item``, sized as DynamoDB sizes items). Arithmetic and hashing only: no
AWS, no moto; a few seconds. Writes bench/out/key_heat.json.

A key's writes/s is the expected one: each class of events (a source/type, from the hot entity or not)
spread evenly over the keys its events reached, which is what a hash does over a day of billions of
events. The sampled figure is printed beside it: a shard's count in a sample is binomial, so the largest
of N sampled shards reads a few percent high, and shows how even the real hash is.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from backend.adapters.aws.event_items import (  # noqa: E402
    entity_pk,
    event_item,
    is_rejection_pk,
    lag_pk,
    lag_shard,
    receipts_pk,
    rejection_shard_pk,
)
from backend.adapters.aws.lag_shards import (  # noqa: E402
    DEFAULT_ENTITY_SHARDS,
    DEFAULT_LAG_SHARDS,
    DEFAULT_REJECTION_SHARDS,
    KEY_BUDGET,
    PARTITION_WRITES_PER_S,
    shards_for,
)
from backend.model import EventRecord, IngestStatus  # noqa: E402

OUT = ROOT / "bench" / "out"
DAY = "2025-12-28"


@dataclass(frozen=True)
class Workload:
    """The synthetic day (rates are daily means; the peak hour is ``peak_factor`` times them)."""

    stack_rate: float = 100_000.0
    type_rate: float = 10_000.0  # every source/type but the hot one
    hot_type_share: float = 0.40
    hot_entity_share: float = 0.05
    peak_factor: float = 3.0
    duplicate_share: float = 0.01  # receipts beyond the first, of all requests
    rejected_share: float = 0.001
    entities: int = 1_000_000

    def types(self) -> list[tuple[str, float]]:
        """(source/type, share of the stack's events): the hot one, then as many ordinary ones at
        ``type_rate`` as the rest of the stack's rate makes (the last one takes the remainder)."""
        out = [("hot:type", self.hot_type_share)]
        rest = 1.0 - self.hot_type_share
        ordinary = self.type_rate / self.stack_rate
        n = 0
        while rest > 1e-12:
            share = min(ordinary, rest)
            out.append((f"type{n}:t", share))
            rest -= share
            n += 1
        return out


def diurnal(peak_factor: float, hours: int = 24) -> list[float]:
    """Hourly rate multipliers with mean 1 and maximum ``peak_factor``: ``exp(k cos θ)`` normalised,
    ``k`` found by bisection (a smooth day with one peak in the afternoon)."""
    if peak_factor < 1:
        raise ValueError("the peak factor must be >= 1")
    angles = [2 * math.pi * (h - 15) / hours for h in range(hours)]

    def shape(k: float) -> list[float]:
        w = [math.exp(k * math.cos(a)) for a in angles]
        mean = sum(w) / hours
        return [x / mean for x in w]

    lo, hi = 0.0, 50.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if max(shape(mid)) < peak_factor:
            lo = mid
        else:
            hi = mid
    return shape((lo + hi) / 2)


def item_size(item: dict[str, Any]) -> int:
    """Bytes of a DynamoDB item as DynamoDB counts them for write units: each attribute's name plus its
    value (a string's UTF-8 bytes, a number's ~1 byte per 2 digits + 1, a boolean 1, binary its bytes)."""
    size = 0
    for name, value in item.items():
        size += len(name.encode())
        (kind, v), *_ = value.items()
        if kind == "S":
            size += len(v.encode())
        elif kind == "N":
            size += (len(str(v).lstrip("-").replace(".", "")) + 1) // 2 + 1
        elif kind == "B":
            size += len(v)
        else:
            size += 1
    return size


def write_units(item: dict[str, Any]) -> int:
    """Write units of one write of ``item`` (1 per KB, rounded up)."""
    return max(1, math.ceil(item_size(item) / 1024))


def _record(event_id: str, source: str, event_type: str, entity: str) -> EventRecord:
    return EventRecord(
        event_id=event_id, status=IngestStatus.ACCEPTED, source=source, event_type=event_type,
        entity_id=entity, event_time=f"{DAY}T15:04:05.123Z", ingest_time=f"{DAY}T15:04:06.456Z",
        ingest_lag_ms=1333, clock_skew=False, payload_sha="f" * 64, day=DAY, hour="15",
        s3_key=f"raw/source={source}/event_type={event_type}/event_date={DAY}/event_id={event_id}.json",
        raw_sha="e" * 64, raw_size=180, origin="api", line=None, receipt="0",
    )  # fmt: skip


@dataclass
class KeyHeat:
    """One hot key of a table or index at the peak hour."""

    table: str
    key: str
    writes_per_s: float  # expected: each class of events spread evenly over the keys it maps to
    sampled_per_s: float  # as sampled (a shard key's count is binomial: noisy, biased up for the maximum)
    share_of_partition: float  # expected writes/s of PARTITION_WRITES_PER_S

    @property
    def ok(self) -> bool:
        return self.share_of_partition <= KEY_BUDGET


TABLES = ("events", "GSI1", "GSI2", "dedupe")


def simulate(
    work: Workload,
    lag_shards: int,
    sample: int = 400_000,
    top: int = 3,
    entity_shards: int = 1,
    rejection_shards: int = 1,
) -> dict[str, Any]:
    """The ``top`` hottest keys of the events table, its lag index (GSI1), its receipts index (GSI2) and
    the dedupe table at the peak hour of ``work`` with ``lag_shards`` lag shards, ``entity_shards``
    entity shards and ``rejection_shards`` rejection shards, from ``sample`` events.

    Each class of events (a source/type, from the hot entity or not; the rejections) gets its share of
    the sample; each event's keys come from the real key functions. A key's expected writes/s is, over the
    classes that reach it, the class's rate divided by the number of distinct keys the class reached (a
    hash spreads evenly; for the many ordinary entities this over-states, as the sample reaches fewer of
    them than there are)."""
    curve = diurnal(work.peak_factor)
    peak_rate = work.stack_rate * max(curve)  # events/s in the peak hour
    size_item = event_item(
        _record("a" * 64, "hot", "type", "hot-entity"), "0", "bucket", lag_shards, entity_shards
    )
    units = {"events": write_units(size_item), "GSI1": write_units(size_item), "GSI2": write_units(size_item)}
    units["dedupe"] = 1  # the dedupe item is small (< 1 KB)
    sampled: dict[str, Counter[str]] = {t: Counter() for t in TABLES}
    expected: dict[str, Counter[str]] = {t: Counter() for t in TABLES}
    classes: list[tuple[str, str, bool, float]] = []
    for type_name, type_share in work.types():
        source, event_type = type_name.split(":")
        classes.append((source, event_type, True, type_share * work.hot_entity_share))
        classes.append((source, event_type, False, type_share * (1.0 - work.hot_entity_share)))
    accepted = 1.0 - work.rejected_share
    first_receipts = (1.0 - work.rejected_share - work.duplicate_share) / accepted
    n = 0
    for source, event_type, hot, share in classes:
        rate = peak_rate * share * accepted
        count = max(1, round(sample * share * accepted))
        keys: dict[str, Counter[str]] = {t: Counter() for t in TABLES}
        for i in range(count):
            event_id = hashlib.sha256(f"{source}|{event_type}|{hot}|{i}".encode()).hexdigest()
            entity = "hot-entity" if hot else f"user_{i * 7919 % work.entities}"
            shard = lag_shard(event_id, lag_shards) if lag_shards > 1 else None
            keys["events"][
                entity_pk(entity, lag_shard(event_id, entity_shards) if entity_shards > 1 else None)
            ] += 1
            keys["GSI1"][lag_pk(source, event_type, DAY, shard)] += 1
            keys["GSI2"][receipts_pk(event_id)] += 1
            if i < count * first_receipts:
                keys["dedupe"][event_id] += 1  # a duplicate writes a receipt, not a dedupe item
        n += count
        for table in TABLES:
            per_key = rate * units[table] / len(keys[table]) if keys[table] else 0.0
            for key, c in keys[table].items():
                expected[table][key] += per_key
                sampled[table][key] += c
    rejected = peak_rate * work.rejected_share
    count = round(sample * work.rejected_share)
    if rejected > 0:
        # Rejection ids as the adapter makes them (receive time and a receipt counter), through its key.
        reached = Counter(
            rejection_shard_pk(f"{DAY}T15:04:05.123Z#{i:019d}0000", rejection_shards)
            for i in range(max(1, count))
        )
        for key, c in reached.items():
            expected["events"][key] += rejected * units["events"] / len(reached)
            sampled["events"][key] += c if count else 0
    scale = peak_rate / sample

    def heat(table: str, key: str, rate: float) -> KeyHeat:
        return KeyHeat(
            table, key, rate, sampled[table][key] * scale * units[table], rate / PARTITION_WRITES_PER_S
        )

    hottest = [heat(table, key, rate) for table in TABLES for key, rate in expected[table].most_common(top)]
    quarantine = [(k, r) for k, r in expected["events"].most_common() if is_rejection_pk(k)]
    rejections = heat("events", *quarantine[0]) if quarantine else None
    return {
        "lag_shards": lag_shards,
        "entity_shards": entity_shards,
        "rejection_shards": rejection_shards,
        "peak_events_per_s": peak_rate,
        "item_bytes": item_size(size_item),
        "write_units_per_item": units["events"],
        "sampled_events": n,
        "hottest": hottest,
        "hottest_rejection_key": rejections,
        # The rejection rate at which the hottest rejection key reaches the budget (evenly spread).
        "rejection_share_at_budget": (
            KEY_BUDGET * PARTITION_WRITES_PER_S * rejection_shards / (peak_rate * units["events"])
        ),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=400_000, help="sampled events (default 400,000)")
    parser.add_argument(
        "--lag-shards",
        type=int,
        nargs="*",
        help="lag shard counts to compare (default: unsharded, the template's default, the count sized for "
        "the hot source/type)",
    )
    parser.add_argument(
        "--entity-shards",
        type=int,
        default=DEFAULT_ENTITY_SHARDS,
        help=f"entity shards of the sharded runs (default {DEFAULT_ENTITY_SHARDS})",
    )
    parser.add_argument(
        "--rejection-shards",
        type=int,
        default=DEFAULT_REJECTION_SHARDS,
        help=f"rejection shards of the sharded runs (default {DEFAULT_REJECTION_SHARDS})",
    )
    args = parser.parse_args(argv)
    work = Workload()
    hot_rate = work.stack_rate * work.hot_type_share
    counts = args.lag_shards or [1, DEFAULT_LAG_SHARDS, shards_for(hot_rate, work.peak_factor)]
    # The unsharded run (LAG_SHARDS=1) shards nothing: the stack as it was before any key was sharded.
    configs = [(n, 1, 1) if n == 1 else (n, args.entity_shards, args.rejection_shards) for n in counts]
    curve = diurnal(work.peak_factor)
    print(f"Workload: {work.stack_rate:,.0f} events/s for the stack (mean), "
          f"{work.type_rate:,.0f} per ordinary source/type, hot source/type {work.hot_type_share:.0%}, "
          f"hot entity {work.hot_entity_share:.0%}, "
          f"peak hour {max(curve):.2f}x the mean; duplicates {work.duplicate_share:.1%}, "
          f"rejections {work.rejected_share:.1%}")  # fmt: skip
    print(f"Budget per key: {KEY_BUDGET:.0%} of {PARTITION_WRITES_PER_S:,} writes/s")
    report: dict[str, Any] = {"workload": asdict(work), "diurnal": curve, "runs": []}
    for shards, entity, rejection in configs:
        run = simulate(work, shards, args.sample, entity_shards=entity, rejection_shards=rejection)
        print(f"\nLAG_SHARDS={shards} ENTITY_SHARDS={entity} REJECTION_SHARDS={rejection}: "
              f"peak {run['peak_events_per_s']:,.0f} events/s, items of "
              f"{run['item_bytes']} bytes = {run['write_units_per_item']} WCU, "
              f"{run['sampled_events']:,} sampled")  # fmt: skip
        print(f"  {'table':<7} {'WCU/s':>10}  {'of 1,000':>8}       {'sampled':>9}  key")
        for h in run["hottest"]:
            verdict = "ok" if h.ok else "OVER"
            print(f"  {h.table:<7} {h.writes_per_s:>10,.0f}  {h.share_of_partition:>8.1%}  {verdict:<4} "
                  f"{h.sampled_per_s:>9,.0f}  {h.key[:64]}")  # fmt: skip
        r = run["hottest_rejection_key"]
        if r is not None:
            at_budget = run["rejection_share_at_budget"]
            print(f"  {'quarant':<7} {r.writes_per_s:>10,.0f}  {r.share_of_partition:>8.1%}  "
                  f"{'ok' if r.ok else 'OVER':<4} {r.sampled_per_s:>9,.0f}  {r.key}  (the hottest rejection "
                  f"key; over budget above a {at_budget:.2%} rejection rate)")  # fmt: skip
            run["hottest_rejection_key"] = {**asdict(r), "ok": r.ok}
        run["hottest"] = [{**asdict(h), "ok": h.ok} for h in run["hottest"]]
        report["runs"].append(run)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "key_heat.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
