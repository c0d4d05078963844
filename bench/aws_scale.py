"""Items read and API calls per `pik gaps` (14 days), `pik lag` (one day) and a replay dry run (14 days,
every event planned, the what-if projection of 20 windows) at 1k, 10k and 100k events, on moto in-process.

moto's DynamoDB transactions copy every table for their snapshot, so ingest through the service stops
under a few thousand events. The tables are populated here *outside the counted section* with the kit's own
item functions instead, so that what is read is what the kit would have written:

* each event is validated and identified by the ingest service's ``prepare_requests`` (at its own ingest
  time), its receipt built by ``NewReceipt.record`` with its carried payload (``inline_payload``), its items
  by ``event_items.event_item`` / ``dedupe_item`` (LAG_SHARDS=8, recorded as ``pik aws init`` does), every
  50th event also has a duplicate receipt; all written with ``BatchWriteItem``, raw bytes with
  ``PutObject`` under the receipt's key;
* the rollups are the sums of ``rollup_items.contribution`` over those items (what the stream Lambda adds
  up, one record at a time), each item written once with its watermark, and the rollup state item marked
  ready, as after ``pik aws rollup-backfill``;
* the aggregates table keeps window heads (its record, as ``pik aws init`` writes it) and every 10th
  (entity, day) window has a version (``DynamoAggregates.append``, written before the events, while the
  tables are small).

Then GapService, LagService and ReplayService.plan (with the kit's Projector) run against the stack with
every call counted by botocore hooks, and the items each read from the answers (ScannedCount, BatchGetItem
responses, listed keys, a HEAD or GET each). moto's speed says nothing about AWS's: the populate and read
times are printed for the record only.

    .venv/bin/python bench/aws_scale.py [--events 1000 10000 100000] [--scan-up-to 10000]

Writes bench/out/aws_scale.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.run import machine, print_machine  # noqa: E402

OUT = ROOT / "bench" / "out"
FIRST_DAY = datetime(2025, 12, 1, tzinfo=UTC)
DAYS = 14
ENTITIES = 200
LAG_SHARDS = 8
SEED_EVERY = 10
DUPLICATE_EVERY = 50
SOURCE, TYPE = "bench", "click"


def _events(n: int, seed: int = 1) -> list[tuple[bytes, datetime]]:
    """``n`` events of one source/type over 14 days, 200 entities, lags log-spread from 1 s to 2 days."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event_time = FIRST_DAY + timedelta(seconds=rng.randrange(DAYS * 86400))
        lag = timedelta(milliseconds=int(10 ** rng.uniform(3, 8.2)))
        body = {
            "source": SOURCE,
            "event_type": TYPE,
            "entity_id": f"user_{rng.randrange(ENTITIES)}",
            "event_time": event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payload": {"steps": i % 97},
        }
        out.append((json.dumps(body).encode(), event_time + lag))
    return out


def _batch_write(ddb: Any, table: str, items: list[dict[str, Any]]) -> None:
    for start in range(0, len(items), 25):
        requests = [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
        pending: Any = {table: requests}
        while pending:
            pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None


def populate(store: Any, settings: Any, n: int) -> dict[str, Any]:
    """The stack as the kit would have written ``n`` events (see the module docstring)."""
    from backend.adapters.aws.aggregates import DynamoAggregates
    from backend.adapters.aws.dynamo import num_attr, str_attr
    from backend.adapters.aws.event_items import dedupe_item, event_item
    from backend.adapters.aws.lag_shards import LAG, record_shards
    from backend.adapters.aws.rollup_items import META_KEY, contribution
    from backend.adapters.aws.window_heads import RECORD_KEY
    from backend.identity import inline_payload
    from backend.services.ingest import Received, prepare_requests
    from backend.times import FixedClock
    from tests.contract.test_aggregate_store import manifest, version

    started = time.perf_counter()
    events = _events(n)
    ddb, table = store.ddb, store.t.events
    # The aggregates first, while moto's transaction snapshots are small.
    ddb.put_item(
        TableName=settings.agg_table, Item={**RECORD_KEY, "since": str_attr("2025-11-30T00:00:00.000Z")}
    )
    windows = sorted({(json.loads(b)["entity_id"], json.loads(b)["event_time"][:10]) for b, _ in events})
    writer = DynamoAggregates(store.clients, settings.agg_table, store.location)
    inputs = manifest("seed")
    for entity, day in windows[::SEED_EVERY]:
        assert writer.append(version(1, inputs).model_copy(update={"entity_id": entity, "day": day}), inputs)
    record_shards(ddb, table, LAG_SHARDS, LAG)
    items: list[dict[str, Any]] = []
    dedupes: list[dict[str, Any]] = []
    sums: dict[tuple[str, str], dict[str, int]] = {}
    marks: dict[tuple[str, str], str] = {}
    for i, (body, ingested) in enumerate(events):
        prepared = prepare_requests([Received(body, "bench", i)], FixedClock(ingested), "bench")
        receipt = prepared.valid[0][2]
        record = receipt.record(payload=inline_payload(body, receipt.payload_sha.hex()))
        store.s3.put_object(Bucket=store.t.bucket, Key=record.s3_key, Body=body)
        receipts = ["0"] + ([f"1{i:023d}"] if i % DUPLICATE_EVERY == 0 else [])
        for r in receipts:
            item = event_item(record, r, store.t.bucket, LAG_SHARDS, 1)
            items.append(item)
            c = contribution(item, str(10**21 + len(items)))
            assert c is not None
            for key, adds in c.adds.items():
                into = sums.setdefault(key, {})
                for name, amount in adds.items():
                    into[name] = into.get(name, 0) + amount
            marks[c.gate] = max(marks.get(c.gate, ""), c.seq)
        dedupes.append(dedupe_item(record))
    rollups = []
    for (pk, sk), counters in sums.items():
        item = {"PK": str_attr(pk), "SK": str_attr(sk), **{k: num_attr(v) for k, v in counters.items()}}
        if (pk, sk) in marks:
            item["wm"] = str_attr(marks[(pk, sk)])
        rollups.append(item)
    state = {"PK": str_attr(META_KEY[0]), "SK": str_attr(META_KEY[1]), "ready": {"BOOL": True},
             "days": {"BOOL": True}, "cutoff": str_attr("")}  # fmt: skip
    _batch_write(ddb, table, items + rollups + [state])
    _batch_write(ddb, store.t.dedupe, dedupes)
    return {
        "receipts": len(items),
        "rollup_items": len(rollups),
        "windows": len(windows),
        "windows_with_versions": len(windows[::SEED_EVERY]),
        "populate_s": round(time.perf_counter() - started, 1),
    }


def run(n: int, scans_too: bool) -> dict[str, Any]:
    from backend.adapters.aws.investigate import AwsInvestigation
    from backend.adapters.aws.ports import aws_ports
    from backend.model import MetricKind, MetricSpec, ReplayRequest
    from backend.services.gaps import GapService
    from backend.services.lag import LagService
    from backend.services.projection import Projector
    from backend.services.replay import ReplayService
    from tests.aws_env import moto_backend

    store, settings, close = moto_backend(lag_shards=LAG_SHARDS)
    try:
        out: dict[str, Any] = {"events": n, **populate(store, settings, n)}
        print(f"populated {n:,} events in {out['populate_s']} s", flush=True)
        calls: Counter[str] = Counter()
        items: Counter[str] = Counter()

        def before(event_name: str, **_: Any) -> None:
            calls[event_name.split(".", 2)[2]] += 1

        def after(event_name: str, parsed: Any = None, **_: Any) -> None:
            op = event_name.split(".", 2)[2]
            parsed = parsed or {}
            if op in ("Query", "Scan"):
                items[op] += int(parsed.get("ScannedCount", len(parsed.get("Items", []))))
            elif op == "BatchGetItem":
                items[op] += sum(len(v) for v in parsed.get("Responses", {}).values())
            elif op == "ListObjectsV2":
                items[op] += int(parsed.get("KeyCount", len(parsed.get("Contents", []))))
            elif op in ("HeadObject", "GetObject") or (op == "GetItem" and "Item" in parsed):
                items[op] += 1

        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", before)
            client.meta.events.register("after-call.*.*", after)
        ports = aws_ports(store, settings)
        first, end = FIRST_DAY.date().isoformat(), (FIRST_DAY + timedelta(days=DAYS)).date().isoformat()
        busiest = first
        metrics = [MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")]

        def plan() -> Any:
            projector = Projector(ports.investigate, ports.catalog, ports.aggregates, metrics, limit=20)
            service = ReplayService(
                ports.investigate, ports.catalog, ports.audit, ports.queue, ports.aggregates,
                projector=projector, bucket=store.location, confirm_above=10**9, read_only=True,
            )  # fmt: skip
            request = ReplayRequest(source=SOURCE, event_type=TYPE, start_day=first, end_day=end, limit=n)
            result = service.plan(request, actor="bench")
            assert result.would_send == n, (result.would_send, n)
            return result

        asks: list[tuple[str, Any]] = []
        for label, rollups in (("rollups", True), ("scan", False)):
            if label == "scan" and not scans_too:
                continue
            scans = AwsInvestigation(store)
            if not rollups:
                scans._rollups._ready = False
            asks += [
                (f"gaps_14_days_{label}", lambda s=scans: GapService(store, s).gaps(first, end, source=SOURCE,
                                                                                    event_type=TYPE)),
                (f"lag_one_day_{label}", lambda s=scans: LagService(store, s).lag(SOURCE, TYPE, busiest)),
            ]  # fmt: skip
        asks.append(("dry_run_14_days", plan))
        for what, ask in asks:
            calls.clear()
            items.clear()
            started = time.perf_counter()
            ask()
            out[what] = {
                "calls": sum(calls.values()),
                "items_read": sum(items.values()),
                "calls_by_op": dict(calls),
                "items_by_op": dict(items),
                "moto_s": round(time.perf_counter() - started, 1),
            }
            print(f"  {what}: {json.dumps(out[what])}", flush=True)
        return out
    finally:
        close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--scan-up-to", type=int, default=10000, help="also answer by scan up to this size")
    args = parser.parse_args(argv)
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[k] = v
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)
    info = machine()
    print_machine(info)
    results = []
    for n in args.events:
        results.append(run(n, n <= args.scan_up_to))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'events':>8} {'answer':<22} {'calls':>7} {'items read':>11}  by operation")
    for r in results:
        for what in ("gaps_14_days_rollups", "lag_one_day_rollups", "gaps_14_days_scan", "lag_one_day_scan",
                     "dry_run_14_days"):  # fmt: skip
            if what in r:
                a = r[what]
                print(
                    f"{r['events']:>8} {what:<22} {a['calls']:>7,} {a['items_read']:>11,}  {a['calls_by_op']}"
                )
    slopes = []
    for a, b in itertools.pairwise(results):
        de = b["events"] - a["events"]
        x, y = a["dry_run_14_days"], b["dry_run_14_days"]
        slope = {"from": a["events"], "to": b["events"], "calls_per_event": (y["calls"] - x["calls"]) / de,
                 "items_per_event": (y["items_read"] - x["items_read"]) / de}  # fmt: skip
        slopes.append(slope)
        print(f"dry run slope {a['events']:,} -> {b['events']:,}: {slope['calls_per_event']:.4f} calls and "
              f"{slope['items_per_event']:.3f} items read per event")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "results": results, "dry_run_slopes": slopes}
    (OUT / "aws_scale.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
