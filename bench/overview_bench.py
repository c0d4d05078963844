"""``pik overview`` on the 2M-event benchmark workspace (issue 18): from the rollup tables, beside the scan
it replaces and the floor, all measured in the same run.

The workspace: 2,000,000 events (200,000 with ``--quick``) over six weeks, 14 source/types, 5,000 entities
(a fifth of them send 80 % of the events), lags of 1-30 s with 2 % up to two days late, 3 % of the events
received twice; built once through the real ingest path (``IngestService`` with the clock set to each
event's arrival, as ``investigate_bench`` builds its windows) and kept in ``bench/out/`` (a workspace of an
older schema is upgraded in place, not built again: the upgrade only adds tables).

Measured, medians of 5 runs after a warm-up unless said:

* before: the same service over :class:`backend.adapters.local.overview.ScanOverview` (every count read
  from the events, as ``pik overview`` did before the rollups);
* the rollups emptied, then the overview of a read-only kit (it adds every uncounted event in each read and
  writes nothing: the worst case of a stale rollup), 1 run; then ``catch_up`` (the one-time cost, paid by
  the first overview after an upgrade), 1 run;
* after: ``Kit.overview().overview()`` in-process on a read-only kit, the rollups up to date (the service
  ``pik overview`` and ``GET /overview`` call), the default range (the last 14 event days; baselines over
  the 28 days before);
* ``pik overview --json`` as a child process (interpreter start and imports included), 3 runs;
* the floor: plain SQL reading every row of every table of the same workspace once
  (``volume_bench.sql_floor``).

Timing never fails the run; a command that fails does (RuntimeError), and so does a rollup answer that
differs from the scan's.

    .venv/bin/python bench/overview_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from investigate_bench import _median_time, _schema_version  # noqa: E402
from volume_bench import _cli, sql_floor  # noqa: E402

from backend.adapters.local.overview import LocalOverview, ScanOverview  # noqa: E402
from backend.adapters.local.store import LocalStore  # noqa: E402
from backend.kit import open_local  # noqa: E402
from backend.services.ingest import IngestService, Received  # noqa: E402
from backend.services.overview import OverviewService  # noqa: E402
from backend.times import Clock, fmt  # noqa: E402

EVENTS = 2_000_000
QUICK_EVENTS = 200_000
DAYS = 42
FIRST = datetime(2025, 11, 3, tzinfo=UTC)
SERIES = [(f"src{s}", f"type{t}") for s in range(5) for t in range(3)][:14]
ENTITIES = 5_000
VERSION = "2"
TARGET_FLOOR_RATIO = 1.0  # no slower than reading every row of the workspace once


def _events(n: int, seed: int = 18) -> Iterator[tuple[datetime, bytes]]:
    rng = random.Random(seed)
    heavy = ENTITIES // 5
    span = DAYS * 86_400
    # Arrival order is roughly event order: the events are generated in time order.
    for i in range(n):
        when = FIRST + timedelta(seconds=span * i / n + rng.random())
        entity = rng.randrange(heavy) if rng.random() < 0.8 else rng.randrange(heavy, ENTITIES)
        source, event_type = SERIES[rng.randrange(len(SERIES))]
        lag = timedelta(milliseconds=rng.randrange(1_000, 30_000))
        if rng.random() < 0.02:
            lag = timedelta(hours=rng.randrange(1, 48))
        body = json.dumps(
            {
                "source": source,
                "event_type": event_type,
                "entity_id": f"entity-{entity:05d}",
                "event_time": fmt(when),
                "payload": {"v": i % 97},
            },
            separators=(",", ":"),
        ).encode()
        yield when + lag, body
        if rng.random() < 0.03:
            yield when + lag + timedelta(minutes=5), body  # a retry: a duplicate receipt


class ArrivalClock(Clock):
    """Each request's own arrival time: ingest reads the clock once per request, in order, so the times
    queued as the requests are fed come back to them one by one."""

    def __init__(self) -> None:
        self.times: deque[datetime] = deque()

    def now(self) -> datetime:
        return self.times.popleft()


def _ingest(store: LocalStore, events: Iterator[tuple[datetime, bytes]]) -> None:
    clock = ArrivalClock()
    service = IngestService(store, store, clock)

    def feed() -> Iterator[Received]:
        for at, body in events:
            clock.times.append(at)
            yield Received(body, "bench")

    for _ in service.ingest_stream(feed(), batch_size=10_000):
        pass


def workspace(events: int) -> Path:
    """The benchmark workspace of ``events`` events, built once and kept (rebuilt when this generator or
    the adapter's schema changes)."""
    ws = OUT / f"ws-overview-{events}"
    marker = ws / "bench-overview.json"
    want = {"version": VERSION, "events": events, "schema": _schema_version()}
    if marker.exists():
        found = json.loads(marker.read_text())
        if found == want:
            return ws
        if {**found, "schema": want["schema"]} == want and found["schema"] < want["schema"]:
            LocalStore(ws, create=False).close()  # the upgrade adds tables; no stored row changes
            marker.write_text(json.dumps(want))
            return ws
    shutil.rmtree(ws, ignore_errors=True)
    store = LocalStore(ws)
    try:
        _ingest(store, _events(events))
    finally:
        store.close()
    marker.write_text(json.dumps(want))
    return ws


def _reset_rollups(ws: Path) -> None:
    """Empty the rollup tables (derived data: the next catch-up counts every event again)."""
    store = LocalStore(ws, create=False)
    try:
        with store.db.write("empty the rollups for the benchmark") as conn:
            for table in ("rollup_watermarks", "rollup_hours", "rollup_entity_days", "rollup_rejections"):
                conn.execute(f"DELETE FROM {table}")
    finally:
        store.close()


def _catch_up(ws: Path) -> tuple[float, int]:
    store = LocalStore(ws, create=False)
    try:
        started = time.perf_counter()
        transactions = LocalOverview(store).rollups.catch_up()
        return time.perf_counter() - started, transactions
    finally:
        store.close()


def run_figures(quick: bool, log: Callable[[str], None] = print) -> dict[str, Any]:
    events = QUICK_EVENTS if quick else EVENTS
    log(f"\n== pik overview on a {events:,}-event workspace (issue 18)")
    started = time.perf_counter()
    ws = workspace(events)
    log(f"  workspace ready in {time.perf_counter() - started:.1f} s: {ws}")
    with open_local(ws, read_only=True) as kit:
        settings = kit.workspace_settings().overview
        store: Any = kit.raw  # the workspace's LocalStore
        scan_s, scan_runs, scan_report = _median_time(
            lambda: OverviewService(ScanOverview(store), settings).overview(), 5
        )
    _reset_rollups(ws)
    with open_local(ws, read_only=True) as kit:
        stale_s, _, stale_report = _median_time(lambda: kit.overview().overview(), 1)
    catch_up_s, transactions = _catch_up(ws)
    with open_local(ws, read_only=True) as kit:
        service_s, service_runs, report = _median_time(lambda: kit.overview().overview(), 5)
    if report != scan_report or stale_report != scan_report:
        raise RuntimeError("the overview from the rollups differs from the scan's")
    cli_runs = [_cli("overview", workspace=ws)[0] for _ in range(3)]
    cli_s = statistics.median(cli_runs)
    floor_s = sql_floor(ws)
    ratio = service_s / floor_s
    log(f"  before, scan of the events:     median {scan_s:.3f} s  runs {[round(t, 3) for t in scan_runs]}")
    log(f"  read-only, rollups empty:       {stale_s:.3f} s (every event added in the read; writes nothing)")
    log(f"  catch-up of the empty rollups:  {catch_up_s:.3f} s in {transactions} write transactions (once)")
    log(
        f"  after, from the rollups:        median {service_s:.3f} s  "
        f"runs {[round(t, 3) for t in service_runs]}  ({scan_s / service_s:.0f}x faster than the scan)"
    )
    log(f"  pik overview --json (child):    median {cli_s:.3f} s  runs {[round(t, 3) for t in cli_runs]}")
    log(f"  floor, plain SQL of every row:  median {floor_s:.3f} s")
    log(f"  ratio service / floor: {ratio:.3f}x; {len(report.findings)} findings over {report.first_day}..")
    return {
        "events": events,
        "scan_s": scan_s,
        "scan_runs_s": scan_runs,
        "read_only_empty_rollups_s": stale_s,
        "catch_up_s": catch_up_s,
        "catch_up_transactions": transactions,
        "service_s": service_s,
        "service_runs_s": service_runs,
        "ratio_service_over_scan": service_s / scan_s,
        "cli_s": cli_s,
        "cli_runs_s": cli_runs,
        "sql_floor_s": floor_s,
        "ratio_service_over_floor": ratio,
        "findings": len(report.findings),
        "targets": [
            {
                "figure": f"overview of {events:,} events",
                "measured": f"{service_s:.2f} s",
                "target": f"<= {TARGET_FLOOR_RATIO:g}x floor",
                "floor": f"SQL of every row {floor_s:.2f} s",
                "pass": ratio <= TARGET_FLOOR_RATIO,
            }
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events instead of {EVENTS:,}")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    figures = run_figures(args.quick)
    (OUT / "overview.json").write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
