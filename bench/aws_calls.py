"""AWS API calls per event: the benchmark dataset ingested through the AWS adapter on moto (in-process),
every call counted with botocore event hooks. Calls are what AWS bills and throttles; moto's speed says
nothing about AWS's, so no time is reported here.

    .venv/bin/python bench/aws_calls.py [--lines N]

Prints the calls per accepted event, per duplicate and per line, by API operation, and writes them to
bench/out/aws_calls.json.
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

    from moto import mock_aws

    from backend.services.ingest import IngestService, Received
    from tests.aws_env import moto_store

    info = machine()
    print_machine(info)
    path, expected, _ = datagen.ensure(OUT / "data", args.lines)
    lines = path.read_bytes().splitlines()
    with mock_aws():
        store, close = moto_store()
        ops: Counter[str] = Counter()
        current: list[Counter[str]] = [ops]

        def count(event_name: str, **_: Any) -> None:
            current[0][event_name.split(".", 2)[2]] += 1

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
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "aws_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
