"""Items read and API calls per `pik gaps` (14 days), `pik lag` (one day) and `pik overview` (14 days and
their history), with and without rollups, at several event counts: the events go through the real ingest
service into moto (in-process), the events table's stream (moto's DynamoDB Streams) into the rollup writer,
and the answers through GapService, LagService and OverviewService. Calls are counted with botocore event
hooks and items read from the answers' ScannedCount (what
DynamoDB bills reads on); moto's speed says nothing about AWS's, so no time is reported.

    .venv/bin/python bench/aws_rollups.py [--events 1000 10000]

Writes bench/out/aws_rollups.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
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


def _bodies(n: int, seed: int = 1) -> list[tuple[bytes, datetime]]:
    """``n`` events of one source/type over 14 days, 200 entities, lags log-spread from 1 s to 2 days."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        event_time = FIRST_DAY + timedelta(seconds=rng.randrange(DAYS * 86400))
        lag = timedelta(milliseconds=int(10 ** rng.uniform(3, 8.2)))
        body = {
            "source": "bench",
            "event_type": "click",
            "entity_id": f"user_{rng.randrange(200)}",
            "event_time": event_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "payload": {"n": i},
        }
        out.append((json.dumps(body).encode(), event_time + lag))
    return out


def run(n: int) -> dict[str, Any]:
    from backend.adapters.aws.overview import AwsOverview
    from backend.services.gaps import GapService
    from backend.services.ingest import IngestService, Received
    from backend.services.lag import LagService
    from backend.services.overview import OverviewService
    from backend.times import FixedClock
    from tests.aws.rollup_env import StreamStack
    from tests.aws_env import moto_backend

    # No stream on moto here: moto copies a table's stream with every transaction's snapshot, which makes a
    # stream of thousands of records quadratic. The records are built from the items instead, in the shape
    # DynamoDB Streams gives them (tests/aws/test_rollups.py reads them from moto's stream).
    store, _, close = moto_backend(full=False)
    stack = StreamStack(store, close, "")
    try:
        stack.rollups().backfill(settle_s=0)
        for body, ingested in _bodies(n):
            IngestService(store, store, FixedClock(ingested)).ingest_batch([Received(body, "bench")])
        writer = stack.rollups()
        records = _records(store)
        calls: Counter[str] = Counter()
        items = [0]

        def before(event_name: str, **_: Any) -> None:
            calls[event_name.split(".", 2)[2]] += 1

        def after(http_response: Any, parsed: Any, **_: Any) -> None:
            if isinstance(parsed, dict):
                items[0] += int(parsed.get("ScannedCount", 0) or 0) + len(
                    parsed.get("Responses", {}).get(store.t.events, []) or []
                )
                if "Item" in parsed:
                    items[0] += 1

        store.ddb.meta.events.register("before-call.*.*", before)
        store.ddb.meta.events.register("after-call.*.*", after)
        batches = transactions = 0
        calls.clear()
        for start in range(0, len(records), 100):
            transactions += writer.apply_stream(records[start : start + 100]).transactions
            batches += 1
        rollup_calls = dict(calls)
        out: dict[str, Any] = {"events": n, "stream_batches": batches, "rollup_calls": rollup_calls}
        last = (FIRST_DAY + timedelta(days=DAYS)).date().isoformat()
        busiest = FIRST_DAY.date().isoformat()
        first = FIRST_DAY.date().isoformat()
        later = FixedClock(FIRST_DAY + timedelta(days=DAYS + 30))
        for label, rollups in (("scan", False), ("rollups", True)):
            scans = stack.investigation(rollups=rollups)
            overview = AwsOverview(store, None)
            if not rollups:
                overview.rollups._ready = False
            for what, ask in (
                ("gaps_14_days", lambda s=scans: GapService(store, s).gaps(first, last, source="bench",
                                                                           event_type="click")),
                ("lag_one_day", lambda s=scans: LagService(store, s).lag("bench", "click", busiest)),
                ("overview_14_days", lambda o=overview: OverviewService(o, clock=later).overview()),
            ):  # fmt: skip
                calls.clear()
                items[0] = 0
                ask()
                out[f"{what}_{label}"] = {
                    "calls": sum(calls.values()),
                    "items_read": items[0],
                    "by_op": dict(calls),
                }
        return out
    finally:
        stack.close()


def _records(store: Any) -> list[dict[str, Any]]:
    """INSERT records of every receipt, in ingest order, as a NEW_IMAGE stream would carry them."""
    from backend.adapters.aws.event_items import is_receipt_pk

    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": store.t.events}
    while True:
        page = store.ddb.scan(**kwargs)
        items += [i for i in page["Items"] if is_receipt_pk(i["PK"]["S"])]
        if not page.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda i: (i["ingest_time"]["S"], i["SK"]["S"]))
    return [
        {
            "eventID": f"{n:032x}",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": {"PK": i["PK"], "SK": i["SK"]},
                "NewImage": i,
                "SequenceNumber": str(10**21 + n),
                "StreamViewType": "NEW_IMAGE",
            },
        }
        for n, i in enumerate(items)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="+", default=[1000, 10000])
    args = parser.parse_args(argv)
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[k] = v
    info = machine()
    print_machine(info)
    results = []
    for n in args.events:
        results.append(run(n))
        print(json.dumps(results[-1]), flush=True)
    head = ["events", "query", "scan calls", "scan items", "rollup calls", "rollup items"]
    print("\n" + " ".join(f"{h:>12}" for h in head))
    for r in results:
        for what in ("gaps_14_days", "lag_one_day", "overview_14_days"):
            a, b = r[f"{what}_scan"], r[f"{what}_rollups"]
            row = [r["events"], what, a["calls"], a["items_read"], b["calls"], b["items_read"]]
            print(" ".join(f"{v:>12}" for v in row))
        batches = r["stream_batches"]
        print(f"{r['events']:>12} stream: {batches} batches of <=100 records, calls {r['rollup_calls']}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "aws_rollups.json").write_text(json.dumps({"machine": info, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
