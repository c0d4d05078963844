"""AWS API calls per event: the benchmark dataset ingested through the AWS adapter on moto (in-process),
every call counted with botocore event hooks. Calls are what AWS bills and throttles; moto's speed says
nothing about AWS's, so no time is reported here.

    .venv/bin/python bench/aws_calls.py [--lines N]

Prints the calls per accepted event, per duplicate and per line, by API operation; then replays the
busiest (source, event_type) of the dataset over all its days through the replay service (a dry run, then
the execution) and prints the calls per replayed event by operation, SQS's apart (budget: 0.11, one
SendMessageBatch per 10 messages). Writes them all to bench/out/aws_calls.json.
"""

from __future__ import annotations

import argparse
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


if __name__ == "__main__":
    sys.exit(main())
