"""AWS API calls of a dry run's what-if projection: the benchmark dataset ingested through the AWS adapter on
moto (in-process), every call counted with botocore event hooks (calls are what AWS bills and throttles;
moto's speed says nothing about AWS's, so no time is reported).

    .venv/bin/python bench/projection_calls.py [--lines N] [--windows N] [--local]

The same dry run (the busiest (source, event_type) over all its days) is planned side by side without a
projection and with one of the first ``--windows`` windows, with the metrics ``daily_event_count`` and a
payload-field sum: first before any version exists (every metric new: the window and the payloads are
read), then after a processor run (nothing arrived since: one count per window answers). Prints the calls
by operation and the extra calls per projected window. Writes bench/out/projection_calls.json.

``--local`` times instead, on the local adapter, the dry run of investigate_bench's 100k-event entity
window (4 days, 110k receipts, all planned) without and with the projection, alternated, medians of 5.
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
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--windows", type=int, default=20, help="the projection bound (default 20)")
    parser.add_argument("--local", action="store_true", help="time the local 100k-event dry run instead")
    args = parser.parse_args(argv)
    if args.local:
        return local_figures(args.windows)
    for k, v in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}.items():
        os.environ[k] = v
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)

    from backend.adapters.aws.ports import aws_ports
    from backend.model import MetricKind, MetricSpec
    from backend.services.ingest import IngestService, Received
    from tests.aws_env import moto_backend

    info = machine()
    print_machine(info)
    path, _, _ = datagen.ensure(OUT / "data", args.lines)
    lines = path.read_bytes().splitlines()
    metrics = [MetricSpec(name="steps_total", kind=MetricKind.SUM, field="steps", event_type="heartbeat")]
    store, settings, close = moto_backend()
    report: dict[str, Any] = {"machine": info, "lines": len(lines), "windows_bound": args.windows}
    try:
        ops: Counter[str] = Counter()

        def count(event_name: str, **_: Any) -> None:
            ops[event_name.split(".", 2)[2]] += 1

        ingest = IngestService(store, store)
        for i in range(0, len(lines), 100):
            ingest.ingest_batch([Received(b, "file:bench", i + n) for n, b in enumerate(lines[i : i + 100])])
        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", count)
        ports = aws_ports(store, settings)
        request = _busiest(lines)
        for phase in ("no versions yet", "after a processor run"):
            if phase == "after a processor run":
                _process_all(ports, store, request, metrics)
            figures = {}
            for bound in (0, args.windows):
                ops.clear()
                plan = _service(ports, store, metrics, bound).plan(request, actor="bench")
                figures[bound] = (dict(ops), plan)
            base, with_projection = figures[0][0], figures[args.windows][0]
            plan = figures[args.windows][1]
            projected = plan.windows_projected or 0
            extra = sum(with_projection.values()) - sum(base.values())
            print(f"\nDry run of {plan.would_send:,} messages, {plan.windows:,} windows ({phase}):")
            print(f"  without projection  {sum(base.values()):>5} calls  {_ops(base)}")
            total = sum(with_projection.values())
            print(f"  projecting {projected:>3}     {total:>5} calls  {_ops(with_projection)}")
            per = extra / projected if projected else 0.0
            print(f"  extra: {extra:,} calls, {per:.1f} per projected window")
            report[phase] = {
                "windows": plan.windows,
                "windows_projected": projected,
                "new_versions": sum(p.new_version for p in plan.projected),
                "calls_without": base,
                "calls_with": with_projection,
                "extra_calls_per_window": round(per, 2),
            }
    finally:
        close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "projection_calls.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _ops(calls: dict[str, int]) -> str:
    return "(" + ", ".join(f"{op} {n}" for op, n in sorted(calls.items())) + ")"


def _busiest(lines: list[bytes]) -> Any:
    from datetime import date, timedelta

    from backend.model import ReplayRequest

    pairs: Counter[tuple[str, str]] = Counter()
    days: dict[tuple[str, str], set[str]] = {}
    for line in lines:
        try:
            event = json.loads(line)
            pair = (event["source"], event["event_type"])
            day = date.fromisoformat(str(event["event_time"])[:10]).isoformat()
        except (ValueError, KeyError, TypeError):
            continue
        pairs[pair] += 1
        days.setdefault(pair, set()).add(day)
    (source, event_type), _ = pairs.most_common(1)[0]
    end = (date.fromisoformat(max(days[source, event_type])) + timedelta(days=1)).isoformat()
    return ReplayRequest(
        source=source, event_type=event_type, start_day=min(days[source, event_type]), end_day=end,
        limit=len(lines),
    )  # fmt: skip


def _service(ports: Any, store: Any, metrics: Any, bound: int) -> Any:
    from backend.services.projection import Projector
    from backend.services.replay import ReplayService

    projector = (
        Projector(ports.investigate, ports.catalog, ports.aggregates, metrics, limit=bound) if bound else None
    )
    return ReplayService(
        ports.investigate, ports.catalog, ports.audit, ports.queue, ports.aggregates,
        projector=projector, bucket=store.location, confirm_above=10**9, read_only=True,
    )  # fmt: skip


def _process_all(ports: Any, store: Any, request: Any, metrics: Any) -> None:
    """Versions for every window of the scope (the processor over the plan's windows)."""
    from backend.services.processor import ProcessorService

    plan = _service(ports, store, metrics, 10**6).plan(request, actor="bench")
    windows = sorted({(p.entity_id, p.day) for p in plan.projected})
    ProcessorService(ports.investigate, ports.catalog, ports.aggregates, metrics).recompute_windows(
        dict.fromkeys(windows, ())
    )


def local_figures(bound: int, runs: int = 5) -> int:
    """Median wall time of the same dry run without and with the projection, alternated (local adapter)."""
    import statistics
    import time

    from backend.adapters.local.store import LocalStore
    from backend.adapters.local.workspace import local_ports
    from backend.model import ReplayRequest
    from bench.investigate_bench import ENTITY, WINDOW_EVENTS, window_workspace

    info = machine()
    print_machine(info)
    ws = window_workspace()
    store = LocalStore(ws, create=False)
    request = ReplayRequest(
        entity_id=ENTITY, start_time="2025-12-01", end_time="2025-12-05", limit=WINDOW_EVENTS
    )
    times: dict[int, list[float]] = {0: [], bound: []}
    try:
        ports = local_ports(store)
        services = {b: _service(ports, store, [], b) for b in (0, bound)}
        for b in (0, bound):
            services[b].plan(request, actor="bench")  # warm-up
        for _ in range(runs):
            for b in (0, bound):
                started = time.perf_counter()
                plan = services[b].plan(request, actor="bench")
                times[b].append(time.perf_counter() - started)
    finally:
        store.close()
    base, proj = statistics.median(times[0]), statistics.median(times[bound])
    print(
        f"\nDry run of {plan.would_send:,} messages over {plan.windows} windows (local, medians of {runs}):"
    )
    print(f"  without projection  {base:.2f} s  {[round(t, 2) for t in times[0]]}")
    print(
        f"  with projection     {proj:.2f} s  {[round(t, 2) for t in times[bound]]}  ratio {proj / base:.2f}"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "projection_local.json").write_text(
        json.dumps({"machine": info, "without_s": times[0], "with_s": times[bound]}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
