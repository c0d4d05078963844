"""Replay and processor figures on the local backend (issue 4), run by ``bench/run.py`` or alone:

* **dry run of a 100k-event window**: ``ReplayService.plan`` over one entity's window holding 100,000
  accepted events and 10,000 duplicate receipts (every page read), with the default limit (500) and with a
  limit that plans all 100,000 messages (every raw key checked); and ``pik replay --json`` of the same as a
  child process (interpreter start and imports included);
* **replay execution**: ``ReplayService.execute`` of 10,000 messages into the local queue, and the queue
  calls per replayed event counted at the ``ReplayQueue`` port (SendMessageBatch of 10: 0.1);
* **recompute of a 10k-event day**: ``ProcessorService.recompute`` of one (entity, day) with 10,000
  accepted events and four metrics (a count, a sum and an average of a payload field, a distinct count), so
  every payload is read from the raw store: the first version, an unchanged recompute, and a recompute
  after one late event (a new version, manifest included).

The 100k workspace is built once through the real ingest path and kept in ``bench/out/`` (about 15 s the
first time); the rest is built fresh each run. Times are medians of several runs, in-process unless said.

    .venv/bin/python bench/investigate_bench.py
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

from backend.adapters.local.store import LocalStore  # noqa: E402
from backend.adapters.local.workspace import local_ports  # noqa: E402
from backend.model import MetricKind, MetricSpec, ReplayRequest  # noqa: E402
from backend.services.ingest import IngestService, Received  # noqa: E402
from backend.services.processor import ProcessorService  # noqa: E402
from backend.services.replay import ReplayService  # noqa: E402
from backend.times import FixedClock, fmt  # noqa: E402

WINDOW_EVENTS = 100_000
DAY_EVENTS = 10_000
START = datetime(2025, 12, 1, tzinfo=UTC)
ENTITY = "device-00042"
# Bump when the window workspace's contents change, so an older one is rebuilt.
WINDOW_VERSION = "1"

TARGET_RECOMPUTE_S = 0.5
TARGET_CALLS_PER_EVENT = 0.11


def _body(entity: str, when: datetime, i: int) -> bytes:
    event = {
        "source": "iot.gateway",
        "event_type": "sensor.reading",
        "entity_id": entity,
        "event_time": fmt(when),
        "payload": {"temp_c": round(15 + (i % 200) / 10, 1), "steps": i % 97, "sensor": f"s{i % 13}"},
    }
    return json.dumps(event, separators=(",", ":")).encode()


def _ingest(store: LocalStore, bodies: Iterator[tuple[datetime, bytes]]) -> None:
    clock = FixedClock(START)
    service = IngestService(store, store, clock)

    def feed() -> Iterator[Received]:
        for at, body in bodies:
            clock.set(at)
            yield Received(body, "bench")

    for _ in service.ingest_stream(feed(), batch_size=10_000):
        pass


def window_days(events: int) -> int:
    """Days of a window of ``events`` events: 25,000 a day."""
    return max(1, events // 25_000)


def window_workspace(events: int = WINDOW_EVENTS) -> Path:
    """One entity, ``events`` events over ``events / 25,000`` days (four for 100,000), 10 % of them
    received twice. Built once and kept; built again when this generator or the adapter's schema changes."""
    ws = OUT / f"ws-replay-{events}"
    marker = ws / "bench-window.json"
    want = {"version": WINDOW_VERSION, "events": events, "schema": _schema_version()}
    if marker.exists() and json.loads(marker.read_text()) == want:
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    store = LocalStore(ws)
    step = timedelta(days=window_days(events)) / events

    def bodies() -> Iterator[tuple[datetime, bytes]]:
        for i in range(events):
            when = START + i * step
            body = _body(ENTITY, when, i)
            yield when + timedelta(seconds=2), body
            if i % 10 == 0:
                yield when + timedelta(minutes=5), body  # a retry: a duplicate receipt

    try:
        _ingest(store, bodies())
    finally:
        store.close()
    marker.write_text(json.dumps(want))
    return ws


def _schema_version() -> int:
    """The local adapter's schema version (its number of migrations): built again for another one."""
    from backend.adapters.local import schema

    return len(schema.MIGRATIONS)


def _median_time(fn: Callable[[], Any], runs: int) -> tuple[float, list[float], Any]:
    """Median wall time of ``runs`` calls (after one untimed warm-up call), all times, the last result."""
    fn()
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), times, result


def dry_run_figures(runs: int = 5) -> dict[str, Any]:
    ws = window_workspace()
    store = LocalStore(ws, create=False)
    try:
        ports = local_ports(store)
        service = ReplayService(
            ports.investigate,
            ports.catalog,
            ports.audit,
            ports.queue,
            ports.aggregates,
            bucket=store.location,
        )
        window = {"entity_id": ENTITY, "start_time": "2025-12-01", "end_time": "2025-12-05"}
        default_s, default_all, plan = _median_time(
            lambda: service.plan(ReplayRequest(**window), actor="bench"), runs
        )
        assert plan.scanned == WINDOW_EVENTS * 11 // 10 and plan.would_send == 500, plan
        full_s, full_all, plan = _median_time(
            lambda: service.plan(ReplayRequest(**window, limit=WINDOW_EVENTS), actor="bench"), runs
        )
        assert plan.would_send == WINDOW_EVENTS and plan.skipped.duplicate == WINDOW_EVENTS // 10, plan
    finally:
        store.close()
    cli_times = []
    for _ in range(runs):
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable, "-m", "pik_console.cli", "replay", "--entity", ENTITY,
                "--start", "2025-12-01", "--end", "2025-12-05", "--limit", str(WINDOW_EVENTS), "--json",
                "--workspace", str(ws),
            ],
            cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        cli_times.append(time.perf_counter() - started)
        if done.returncode != 0 or json.loads(done.stdout)["would_send"] != WINDOW_EVENTS:
            raise RuntimeError(f"pik replay failed: {done.stderr[-500:]}")
    return {
        "receipts_scanned": WINDOW_EVENTS * 11 // 10,
        "plan_default_limit_s": default_s,
        "plan_default_limit_runs_s": default_all,
        "plan_all_s": full_s,
        "plan_all_runs_s": full_all,
        "cli_all_s": statistics.median(cli_times),
        "cli_all_runs_s": cli_times,
    }


class _CountingQueue:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls = 0
        self.max_receives = inner.max_receives

    def send_batch(self, bodies: Any) -> Any:
        self.calls += 1
        return self.inner.send_batch(bodies)


def _day_workspace(root: Path) -> LocalStore:
    store = LocalStore(root)
    step = timedelta(days=1) / DAY_EVENTS
    _ingest(
        store,
        (
            (START + i * step + timedelta(seconds=1), _body(ENTITY, START + i * step, i))
            for i in range(DAY_EVENTS)
        ),
    )
    return store


def execute_figures(root: Path) -> dict[str, Any]:
    store = _day_workspace(root / "execute")
    try:
        ports = local_ports(store)
        queue = _CountingQueue(ports.queue)
        service = ReplayService(ports.investigate, ports.catalog, ports.audit, queue, bucket=store.location)
        started = time.perf_counter()
        result = service.execute(
            ReplayRequest(entity_id=ENTITY, start_time="2025-12-01", end_time="2025-12-02", limit=DAY_EVENTS),
            actor="bench",
            force=True,
        )
        seconds = time.perf_counter() - started
        assert result.sent == DAY_EVENTS and ports.queue.depth().visible == DAY_EVENTS, result
        return {
            "messages": DAY_EVENTS,
            "execute_s": seconds,
            "queue_calls": queue.calls,
            "queue_calls_per_event": queue.calls / DAY_EVENTS,
        }
    finally:
        store.close()


def recompute_figures(root: Path, runs: int = 5) -> dict[str, Any]:
    store = _day_workspace(root / "recompute")
    try:
        ports = local_ports(store)
        metrics = [
            MetricSpec(name="steps", kind=MetricKind.SUM, field="steps"),
            MetricSpec(name="temp_avg", kind=MetricKind.AVG, field="temp_c"),
            MetricSpec(name="sensors", kind=MetricKind.DISTINCT, field="sensor"),
        ]
        processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, metrics)
        day = START.date().isoformat()
        started = time.perf_counter()
        first = processor.recompute(ENTITY, day)
        first_s = time.perf_counter() - started
        assert all(m.written for m in first.metrics) and first.inputs == DAY_EVENTS
        unchanged_s, _, again = _median_time(lambda: processor.recompute(ENTITY, day), runs)
        assert not any(m.written for m in again.metrics)
        service = IngestService(store, store)
        changed = []
        for i in range(runs):
            service.ingest(_body(ENTITY, START + timedelta(hours=23, seconds=i), DAY_EVENTS + i))
            started = time.perf_counter()
            result = processor.recompute(ENTITY, day)
            changed.append(time.perf_counter() - started)
            assert all(m.written for m in result.metrics)
        return {
            "events": DAY_EVENTS,
            "metrics": 1 + len(metrics),
            "first_version_s": first_s,
            "unchanged_s": unchanged_s,
            "new_version_s": statistics.median(changed),
            "new_version_runs_s": changed,
        }
    finally:
        store.close()


def run_figures(log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every figure of this module, printed as it is measured; returns them with their targets."""
    log(f"\n== Replay and processor (local backend; built once: {OUT.name}/ws-replay-{WINDOW_EVENTS})")
    log(f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    started = time.perf_counter()
    window_workspace()
    log(f"  window workspace ready in {time.perf_counter() - started:.1f} s")
    dry = dry_run_figures()
    log(
        f"  dry run, {dry['receipts_scanned']:,} receipts in the window: default limit (500) "
        f"{dry['plan_default_limit_s']:.2f} s; all {WINDOW_EVENTS:,} planned {dry['plan_all_s']:.2f} s; "
        f"`pik replay --json` {dry['cli_all_s']:.2f} s wall"
    )
    scratch = OUT / "ws-bench-scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        execute = execute_figures(scratch)
        log(
            f"  execute {execute['messages']:,} messages into the local queue: {execute['execute_s']:.2f} s, "
            f"{execute['queue_calls']:,} queue calls ({execute['queue_calls_per_event']:.2f} per event)"
        )
        recompute = recompute_figures(scratch)
        log(
            f"  recompute of a {recompute['events']:,}-event day, {recompute['metrics']} metrics: "
            f"first version {recompute['first_version_s']:.3f} s, "
            f"unchanged {recompute['unchanged_s']:.3f} s, new version {recompute['new_version_s']:.3f} s"
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    worst_recompute = max(recompute["first_version_s"], recompute["new_version_s"])
    # The dry run's target row is volume_bench.py's (issue 17: 100k and 1M, beside the SQL floor).
    targets = [
        {
            "figure": f"recompute of a {DAY_EVENTS:,}-event day (slowest of first/new version)",
            "measured": f"{worst_recompute:.3f} s",
            "target": f"<= {TARGET_RECOMPUTE_S:g} s",
            "pass": worst_recompute <= TARGET_RECOMPUTE_S,
        },
        {
            "figure": "queue calls per replayed event (local port; AWS counted by its adapter's tests)",
            "measured": f"{execute['queue_calls_per_event']:.2f}",
            "target": f"<= {TARGET_CALLS_PER_EVENT:g}",
            "pass": execute["queue_calls_per_event"] <= TARGET_CALLS_PER_EVENT,
        },
    ]
    return {
        "dry_run": dry,
        "execute": execute,
        "recompute": recompute,
        "loadavg_end": list(os.getloadavg()),
        "targets": targets,
    }


if __name__ == "__main__":
    figures = run_figures()
    print()
    for t in figures["targets"]:
        print(f"  {t['figure']:<72} {t['measured']:>9}  {t['target']:<9} {'PASS' if t['pass'] else 'MISS'}")
