"""AWS API calls per event: the benchmark dataset ingested through the AWS adapter on moto (in-process),
every call counted with botocore event hooks. Calls are what AWS bills and throttles; moto's speed says
nothing about AWS's, so no time is reported here.

    .venv/bin/python bench/aws_calls.py [--lines N]

Prints the calls per accepted event, per duplicate and per line, by API operation; then replays the
busiest (source, event_type) of the dataset over all its days through the replay service (a dry run, then
the execution) and prints the calls per replayed event by operation, SQS's apart (budget: 0.11, one
SendMessageBatch per 10 messages). Writes them all to bench/out/aws_calls.json.

    .venv/bin/python bench/aws_calls.py --plan-sizes 1000 10000 [--lag-shards 8]

adds how a dry run grows with its scope: for each size a fresh stack (lag index in ``--lag-shards``
shards) holds that many events of one source/type over 7 days, and the dry run of that scope is counted
in API calls and in items read (DynamoDB items returned, S3 keys listed or heads); the slope between sizes
is the cost per event of a plan. Written to bench/out/aws_plan_scaling.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import datagen  # noqa: E402
from bench.run import machine, print_machine  # noqa: E402

OUT = ROOT / "bench" / "out"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1000, help="dataset size (default 1000: moto slows down "
                        "as its tables grow, and the ratio does not depend on size)")  # fmt: skip
    parser.add_argument("--plan-sizes", type=int, nargs="*", help="measure only how a dry run grows with "
                        "its scope, at these event counts")  # fmt: skip
    parser.add_argument("--lag-shards", type=int, default=8, help="lag shards of the --plan-sizes stacks")
    args = parser.parse_args(argv)
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[k] = v
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)

    from backend.adapters.aws.ports import aws_ports
    from backend.services.ingest import IngestService, Received
    from tests.aws_env import moto_backend

    info = machine()
    print_machine(info)
    if args.plan_sizes:
        return _plan_scaling(info, args.plan_sizes, args.lag_shards)
    path, expected, _ = datagen.ensure(OUT / "data", args.lines)
    lines = path.read_bytes().splitlines()
    store, settings, close = moto_backend()  # moto in-process: the bucket, every table, the queue pair
    try:
        ops: Counter[str] = Counter()
        current: list[Counter[str]] = [ops]
        service_of: dict[str, str] = {}

        def count(event_name: str, **_: Any) -> None:
            _, service_name, op = event_name.split(".", 2)
            service_of[op] = service_name
            current[0][op] += 1

        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", count)
        service = IngestService(store, store)
        by_status: Counter[str] = Counter()
        calls_by_status: dict[str, Counter[str]] = {}
        for number, body in enumerate(lines, 1):
            current[0] = Counter()
            [result] = service.ingest_batch([Received(body, "file:bench", number)])
            by_status[result.status] += 1
            calls_by_status.setdefault(result.status, Counter()).update(current[0])
            ops.update(current[0])
        replay = _replay(store, aws_ports(store, settings), lines, current, service_of)
    finally:
        close()
    assert by_status["ACCEPTED"] == expected.accepted, (by_status, expected)
    total = sum(ops.values())
    report: dict[str, Any] = {"machine": info, "lines": len(lines), "by_status": dict(by_status)}
    print(f"\nAWS calls per event, {len(lines):,} lines ingested one request at a time (as the Lambda does):")
    for status in ("ACCEPTED", "DUPLICATE", "REJECTED"):
        calls = calls_by_status.get(status, Counter())
        n = by_status[status]
        per = sum(calls.values()) / n if n else 0.0
        ops_text = ", ".join(f"{op} {c / n:.2f}" for op, c in sorted(calls.items())) if n else "-"
        print(f"  {status:<9} {n:>6,} events  {per:.2f} calls each  ({ops_text})")
        report[status.lower()] = {"events": n, "calls_per_event": round(per, 3), "ops": dict(calls)}
    print(f"  all       {len(lines):>6,} lines   {total / len(lines):.2f} calls each")
    report["calls_per_line"] = round(total / len(lines), 3)
    report["replay"] = replay
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "aws_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _replay(
    store: Any, ports: Any, lines: list[bytes], current: list[Counter[str]], service_of: dict[str, str]
) -> dict[str, Any]:
    """A dry run and an execution of the replay of the busiest (source, event_type) over all its event
    days, through the replay service on the AWS ports; the calls of each, per replayed event."""
    from datetime import date, timedelta

    from backend.model import ReplayRequest
    from backend.services.replay import ReplayService

    pairs: Counter[tuple[str, str]] = Counter()
    days: dict[tuple[str, str], set[str]] = {}
    for line in lines:
        try:
            event = json.loads(line)
            pair = (event["source"], event["event_type"])
            day = date.fromisoformat(str(event["event_time"])[:10]).isoformat()
        except (ValueError, KeyError, TypeError):
            continue  # the dataset's invalid lines
        pairs[pair] += 1
        days.setdefault(pair, set()).add(day)
    (source, event_type), _ = pairs.most_common(1)[0]
    first = min(days[source, event_type])
    end = (date.fromisoformat(max(days[source, event_type])) + timedelta(days=1)).isoformat()
    request = ReplayRequest(
        source=source, event_type=event_type, start_day=first, end_day=end, limit=len(lines)
    )
    service = ReplayService(
        ports.investigate,
        ports.catalog,
        ports.audit,
        ports.queue,
        ports.aggregates,
        bucket=store.location,
        confirm_above=len(lines),
    )
    current[0] = Counter()
    plan = service.plan(request, actor="bench")
    plan_ops, current[0] = current[0], Counter()
    record = service.execute(request, actor="bench", expected_fingerprint=plan.fingerprint)
    exec_ops = current[0]
    assert record.sent == plan.would_send and record.failed == 0, record
    sent = record.sent
    sqs = sum(n for op, n in exec_ops.items() if service_of.get(op) == "sqs")
    scope = f"{source}/{event_type}, event days [{first}, {end})"
    print(f"\nAWS calls of a replay: {scope}, {sent:,} events sent")
    for name, calls in (("dry run", plan_ops), ("execution", exec_ops)):
        text = ", ".join(f"{service_of.get(op, '?')}.{op} {c}" for op, c in sorted(calls.items()))
        total = sum(calls.values())
        print(f"  {name:<9} {total:>4} calls  {total / sent:.3f} per event  ({text})")
    print(f"  SQS       {sqs:>4} calls  {sqs / sent:.3f} per event  (budget 0.11)")
    return {
        "scope": scope,
        "sent": sent,
        "sqs_calls": sqs,
        "sqs_calls_per_event": round(sqs / sent, 3),
        "dry_run_ops": dict(plan_ops),
        "execute_ops": dict(exec_ops),
    }


PLAN_DAYS = 7
SEED_EVERY = 10  # every 10th window of a dry run's scope has a version before it is planned


def _plan_scaling(info: dict[str, Any], sizes: list[int], lag_shards: int) -> int:
    """Calls and items read by the dry run of one source/type over PLAN_DAYS days holding ``size`` events,
    for each size; the slope (per event) between consecutive sizes."""
    from datetime import UTC, datetime, timedelta

    from backend.adapters.aws.aggregates import DynamoAggregates
    from backend.adapters.aws.ports import aws_ports
    from backend.model import ReplayRequest
    from backend.services.ingest import IngestService, Received
    from backend.services.replay import ReplayService
    from backend.times import FixedClock
    from tests.aws_env import moto_backend
    from tests.contract.test_aggregate_store import manifest, version

    runs: list[dict[str, Any]] = []
    first = datetime(2025, 12, 1, tzinfo=UTC)
    for size in sizes:
        store, settings, close = moto_backend(lag_shards=lag_shards)
        try:
            clock = FixedClock(first + timedelta(days=PLAN_DAYS, hours=1))
            ingest = IngestService(store, store, clock)
            bodies = []
            for i in range(size):
                t = first + timedelta(seconds=i * PLAN_DAYS * 86_400 // size)
                bodies.append(json.dumps({"source": "web", "event_type": "click", "entity_id": f"u{i % 997}",
                                          "event_time": t.isoformat().replace("+00:00", "Z"),
                                          "payload": {"i": i}}).encode())  # fmt: skip
            for start in range(0, size, 500):
                chunk = bodies[start : start + 500]
                ingest.ingest_batch([Received(b, "bench", start + k) for k, b in enumerate(chunk)])
            ports = aws_ports(store, settings)
            # Every 10th (entity, day) window of the scope already has a version: the blast radius has
            # something to find, and the aggregates table is not empty (as on a stack in use).
            windows = sorted({(f"u{i % 997}", (first + timedelta(seconds=i * PLAN_DAYS * 86_400 // size))
                               .date().isoformat()) for i in range(size)})  # fmt: skip
            seeded = windows[::SEED_EVERY]
            inputs = manifest("seed")
            # Written by another process (the processor): the plan's store learns what the table keeps itself.
            writer = DynamoAggregates(store.clients, settings.agg_table or "", store.location)
            for entity, day in seeded:
                v = version(1, inputs).model_copy(update={"entity_id": entity, "day": day})
                assert writer.append(v, inputs)
            service = ReplayService(ports.investigate, ports.catalog, ports.audit, ports.queue,
                                    ports.aggregates, bucket=store.location, confirm_above=size)  # fmt: skip
            calls: Counter[str] = Counter()
            items: Counter[str] = Counter()

            aggregates_table = settings.agg_table

            def before(
                event_name: str,
                params: Any = None,
                calls: Counter[str] = calls,
                aggregates_table: str | None = aggregates_table,
                **_: Any,
            ) -> None:
                op = event_name.split(".", 2)[2]
                # The blast radius (windows that already have versions) is asked of the aggregates table.
                params = params or {}
                on_aggregates = aggregates_table in (params.get("TableName"), *params.get("RequestItems", {}))
                calls[f"{op}(aggregates)" if on_aggregates else op] += 1

            def after(event_name: str, parsed: Any = None, items: Counter[str] = items, **_: Any) -> None:
                op = event_name.split(".", 2)[2]
                parsed = parsed or {}
                if op in ("Query", "Scan"):
                    items[op] += len(parsed.get("Items", []))
                elif op == "BatchGetItem":
                    items[op] += sum(len(v) for v in parsed.get("Responses", {}).values())
                elif op == "ListObjectsV2":
                    items[op] += int(parsed.get("KeyCount", len(parsed.get("Contents", []))))
                elif op in ("HeadObject", "GetObject", "GetItem"):
                    items[op] += 1

            for client in store.clients.all():
                # before-parameter-build: its params are the call's own (TableName included).
                client.meta.events.register("before-parameter-build.*.*", before)
                client.meta.events.register("after-call.*.*", after)
            end = (first + timedelta(days=PLAN_DAYS)).date().isoformat()
            request = ReplayRequest(source="web", event_type="click", start_day=first.date().isoformat(),
                                    end_day=end, limit=size)  # fmt: skip
            plan = service.plan(request, actor="bench")
            assert plan.would_send == size, (plan.would_send, size)
            assert (plan.windows, plan.windows_with_versions) == (len(windows), len(seeded)), plan
            # The execution of the previewed plan, counted apart (its SQS sends among them).
            plan_calls, plan_items = Counter(calls), Counter(items)
            calls.clear()
            items.clear()
            record = service.execute(request, actor="bench", expected_fingerprint=plan.fingerprint)
            assert record.sent == size and record.failed == 0, record
            exec_calls, exec_items = Counter(calls), Counter(items)
            calls.clear()
            items.clear()
            calls.update(plan_calls)
            items.update(plan_items)
        finally:
            close()
        non_sqs = {k: v for k, v in exec_calls.items() if k not in ("SendMessageBatch", "SendMessage")}
        run = {"events": size, "windows": len(windows), "windows_with_versions": len(seeded),
               "calls": dict(calls), "items_read": dict(items),
               "total_calls": sum(calls.values()), "total_items": sum(items.values()),
               "execute_calls": dict(exec_calls), "execute_items_read": dict(exec_items),
               "execute_non_sqs_calls": sum(non_sqs.values())}  # fmt: skip
        runs.append(run)
        print(f"\ndry run of {size:,} events (web/click, {PLAN_DAYS} days, LAG_SHARDS={lag_shards}):")
        for what, counts in (("calls", calls), ("items", items)):
            text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"  {what} {sum(counts.values()):>6,}  ({text})")
        print(f"execution of the previewed plan ({size:,} messages):")
        for what, counts in (("calls", exec_calls), ("items", exec_items)):
            text = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            print(f"  {what} {sum(counts.values()):>6,}  ({text})")
        other = run["execute_non_sqs_calls"]
        print(f"  non-SQS calls {other:,} ({other / size:.3f} per event)")
    slopes = []
    for a, b in itertools.pairwise(runs):
        de = b["events"] - a["events"]
        slope = {"from": a["events"], "to": b["events"],
                 "calls_per_event": (b["total_calls"] - a["total_calls"]) / de,
                 "items_per_event": (b["total_items"] - a["total_items"]) / de}  # fmt: skip
        slopes.append(slope)
        print(
            f"slope {a['events']:,} -> {b['events']:,}: {slope['calls_per_event']:.4f} calls and "
            f"{slope['items_per_event']:.3f} items read per event"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": info, "lag_shards": lag_shards, "days": PLAN_DAYS, "runs": runs, "slopes": slopes}
    (OUT / "aws_plan_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
