"""Issue 17's figures ("local speed at volume"), each beside its floor measured in the same run.

Everything is measured through the public surface, so that a faster ingest, planner, processor or a smaller
schema shows here without a change to this file:

* **dry run** of one entity's window of 100k events (and 1M, not in ``--quick``): ``Kit.replay().plan`` with
  a limit that plans every event (the service ``pik replay`` calls; in-process, so no interpreter start),
  with the default settings (the what-if projection included) and without the projection, run alternately,
  beside plain SQL reading every row of the same workspace once (any schema: ``SELECT *`` of each table);
* **processor**: one entity-day of M events (5k; 5k and 300k without ``--quick``) ingested with ``pik ingest``
  (timed: the ingest rate of the same events), replayed with ``pik replay --execute``, then drained with
  ``pik process`` (timed: messages/s), beside one recompute of the whole window (a dry run, through the kit);
* **workspace size**: the bytes of a workspace after ``pik ingest`` of the main dataset (``bench/run.py``
  passes them in) per line ingested, against the bytes of JSON per line.

Targets (issue 17): 100k dry run <= 0.4 s, 1M <= 10x the 100k figure; ``pik process`` messages/s >= the
``pik ingest`` events/s of the same events, and 300k messages in <= 60x the 5k time (linear); workspace
<= 2.5x the JSON. Timing never fails the run; a command that fails or miscounts does (RuntimeError).

    .venv/bin/python bench/volume_bench.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import investigate_bench  # noqa: E402
from investigate_bench import ENTITY, START, _body, _median_time  # noqa: E402

from backend.adapters.local import store as local_store  # noqa: E402
from backend.kit import open_kit  # noqa: E402
from backend.model import ReplayRequest  # noqa: E402
from backend.settings import load_settings  # noqa: E402

TARGET_DRY_RUN_100K_S = 0.4
TARGET_DRY_RUN_GROWTH = 10.0  # the 1M-event dry run takes at most 10x the 100k one: linear
TARGET_WORKSPACE_RATIO = 2.5
PROCESS_TIMEOUT_S = 1200  # a drain still running then is stopped with SIGINT (Ctrl-C) and reported as such
DAY = START.date().isoformat()
NEXT_DAY = (START.date() + timedelta(days=1)).isoformat()


def _cli(*argv: str, workspace: Path, timeout: float | None = None) -> tuple[float, dict[str, Any]]:
    """``pik ARGV --workspace W --json`` as a child process: its wall time and its JSON answer."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pik_console.cli", *argv, "--workspace", str(workspace), "--json"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pik {argv[0]} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return seconds, json.loads(done.stdout)


def sql_floor(workspace: Path) -> float:
    """Seconds for plain SQL to read every row of every table of ``workspace`` once (a read-only connection;
    the schema is whatever the adapter's is)."""
    conn = sqlite3.connect(f"file:{workspace / local_store.DB_NAME}?mode=ro", uri=True)
    try:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%'"
            )
        ]

        def scan() -> int:
            return sum(sum(1 for _ in conn.execute(f'SELECT * FROM "{t}"')) for t in tables)

        seconds, _, _ = _median_time(scan, 3)
        return seconds
    finally:
        conn.close()


def _window(events: int) -> dict[str, str]:
    """The whole window of ``events`` events (investigate_bench spreads them over 25,000 a day)."""
    end = START.date() + timedelta(days=investigate_bench.window_days(events))
    return {"entity_id": ENTITY, "start_time": START.date().isoformat(), "end_time": end.isoformat()}


def dry_run_figures(sizes: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    """The dry run of one entity's window of each size, all of it planned, and the SQL floor beside it."""
    figures: dict[str, Any] = {}
    for n in sizes:
        started = time.perf_counter()
        ws = investigate_bench.window_workspace(n)
        log(f"  window workspace of {n:,} events ready in {time.perf_counter() - started:.1f} s")
        kit = open_kit(load_settings({"workspace": str(ws)}))
        try:
            service = kit.replay()  # the default settings: the what-if projection included
            bare = kit.replay()
            bare.projector = None  # the plan alone, beside it
            request = ReplayRequest(**_window(n), limit=n)
            repeats = 5 if n <= 100_000 else 2
            # Alternating runs, so that both see the same machine.
            with_runs: list[float] = []
            bare_runs: list[float] = []
            service.plan(request, actor="bench")  # warm-up: the page cache, the imports
            for _ in range(repeats):
                for runs, planner in ((with_runs, service), (bare_runs, bare)):
                    started = time.perf_counter()
                    result = planner.plan(request, actor="bench")
                    runs.append(time.perf_counter() - started)
                    if planner is service:
                        plan = result
        finally:
            kit.close()
        if plan.would_send != n or plan.scanned != n * 11 // 10:
            raise RuntimeError(f"the {n:,}-event dry run planned {plan.would_send:,} of {plan.scanned:,}")
        seconds, bare_s = statistics.median(with_runs), statistics.median(bare_runs)
        floor = sql_floor(ws)
        figures[str(n)] = {"events": n, "receipts": n * 11 // 10, "plan_s": seconds, "plan_runs_s": with_runs,
                           "plan_without_projection_s": bare_s, "plan_without_projection_runs_s": bare_runs,
                           "windows_projected": plan.windows_projected, "sql_floor_s": floor}  # fmt: skip
        with_text = ", ".join(f"{r:.2f}" for r in with_runs)
        bare_text = ", ".join(f"{r:.2f}" for r in bare_runs)
        log(
            f"  dry run, {n:,} events ({n * 11 // 10:,} receipts), all planned: {seconds:.2f} s with the "
            f"projection ({plan.windows_projected} windows projected; runs {with_text}), {bare_s:.2f} s "
            f"without (runs {bare_text}); plain SQL reading every row once {floor:.2f} s"
        )
    return figures


def _day_file(m: int) -> Path:
    """One entity-day of ``m`` distinct events as JSON Lines (made once, kept in bench/out/)."""
    path = OUT / f"day-{m}.jsonl"
    if not path.exists() or sum(1 for _ in path.open("rb")) != m:
        step = timedelta(days=1) / m
        tmp = path.with_suffix(".tmp")
        with tmp.open("wb") as f:
            for i in range(m):
                f.write(_body(ENTITY, START + i * step, i) + b"\n")
        tmp.replace(path)
    return path


def _drain(ws: Path, m: int) -> dict[str, Any]:
    """``pik process --json`` until the queue is empty or PROCESS_TIMEOUT_S, then Ctrl-C (SIGINT)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pik_console.cli", "process", "--workspace", str(ws), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
        timed_out = False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        timed_out = True
    seconds = time.perf_counter() - started
    if timed_out:
        kit = open_kit(load_settings({"workspace": str(ws)}))
        try:
            assert kit.queue is not None
            depth = kit.queue.depth()
        finally:
            kit.close()
        processed = m - depth.visible - depth.in_flight
        return {
            "seconds": seconds,
            "processed": processed,
            "finished": False,
            "messages_per_s": processed / seconds,
        }
    if proc.returncode != 0:
        raise RuntimeError(f"pik process failed ({proc.returncode}): {err.strip()[-500:]}")
    report = json.loads(out)
    if report["received"] != m or report["failed_messages"]:
        raise RuntimeError(f"pik process received {report['received']:,} of {m:,} messages: {report}")
    return {
        "seconds": seconds,
        "processed": m,
        "finished": True,
        "messages_per_s": m / seconds,
        "recomputes": report.get("recomputes"),
        "versions_written": report.get("versions_written"),
    }


def processor_figures(sizes: list[int], log: Callable[[str], None]) -> dict[str, Any]:
    """For each size: ``pik ingest`` of one entity-day, one recompute of the window through the kit (a dry
    run), ``pik replay --execute`` of all of it and ``pik process`` of the queue."""
    figures: dict[str, Any] = {}
    for m in sizes:
        src = _day_file(m)
        ws = OUT / "ws" / f"process-{m}"
        shutil.rmtree(ws, ignore_errors=True)
        try:
            ingest_s, summary = _cli("ingest", str(src), workspace=ws)
            if summary["accepted"] != m:
                raise RuntimeError(f"pik ingest accepted {summary['accepted']:,} of {m:,} events")
            # The floor: one recompute of the whole window, as a dry run (nothing written), before the drain:
            # afterwards the versions are current and a recompute would not read the window.
            kit = open_kit(load_settings({"workspace": str(ws)}))
            try:
                processor = kit.processor(dry_run=True)
                recompute_s, _, window = _median_time(
                    lambda processor=processor: processor.recompute(ENTITY, DAY), 1
                )
            finally:
                kit.close()
            if window.inputs != m:
                raise RuntimeError(f"the recompute read {window.inputs:,} of the window's {m:,} events")
            replay_s, sent = _cli(
                "replay", "--entity", ENTITY, "--start", DAY, "--end", NEXT_DAY, "--limit", str(m),
                "--execute", "--force", workspace=ws,
            )  # fmt: skip
            if sent.get("sent") != m:
                raise RuntimeError(f"pik replay --execute sent {sent.get('sent')} of {m:,} messages")
            drained = _drain(ws, m)
        finally:
            shutil.rmtree(ws, ignore_errors=True)
        row = {
            "messages": m,
            "ingest_s": ingest_s,
            "ingest_events_per_s": m / ingest_s,
            "replay_execute_s": replay_s,
            "process": drained,
            "recompute_window_s": recompute_s,
        }
        figures[str(m)] = row
        state = (
            ""
            if drained["finished"]
            else f" (stopped after {PROCESS_TIMEOUT_S} s: {drained['processed']:,} done)"
        )
        log(
            f"  {m:,} messages of one entity-day: pik process {drained['seconds']:.1f} s, "
            f"{drained['messages_per_s']:,.0f} messages/s{state}; pik ingest of the same events "
            f"{ingest_s:.1f} s, {row['ingest_events_per_s']:,.0f} events/s; one recompute of the window "
            f"{recompute_s:.3f} s; pik replay --execute {replay_s:.1f} s"
        )
    return figures


def workspace_figures(workspace_bytes: int, json_bytes: int, lines: int) -> dict[str, Any]:
    return {
        "lines": lines,
        "workspace_bytes": workspace_bytes,
        "json_bytes": json_bytes,
        "workspace_bytes_per_line": workspace_bytes / lines,
        "json_bytes_per_line": json_bytes / lines,
        "ratio": workspace_bytes / json_bytes,
    }


def targets(
    dry: dict[str, Any], process: dict[str, Any], size: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The Targets rows of these figures, each with its floor."""
    rows: list[dict[str, Any]] = []
    small = dry.get("100000")
    if small:
        rows.append(
            {
                "figure": "dry run, one entity, 100,000-event window (all planned, projected)",
                "measured": f"{small['plan_s']:.2f} s",
                "target": f"<= {TARGET_DRY_RUN_100K_S:g} s",
                "floor": f"no projection {small['plan_without_projection_s']:.2f} s; "
                f"SQL reads all rows {small['sql_floor_s']:.2f} s",
                "pass": small["plan_s"] <= TARGET_DRY_RUN_100K_S,
            }
        )
    big = dry.get("1000000")
    if small and big:
        growth = big["plan_s"] / small["plan_s"]
        rows.append(
            {
                "figure": f"dry run, 1,000,000-event window ({big['plan_s']:.1f} s) / 100,000",
                "measured": f"{growth:.1f}x",
                "target": f"<= {TARGET_DRY_RUN_GROWTH:g}x (linear)",
                "floor": f"SQL {big['sql_floor_s'] / small['sql_floor_s']:.1f}x ({big['sql_floor_s']:.2f} s)",
                "pass": growth <= TARGET_DRY_RUN_GROWTH,
            }
        )
    for m, row in process.items():
        drained = row["process"]
        rows.append(
            {
                "figure": f"pik process, {int(m):,} messages of one entity-day: messages/s"
                + ("" if drained["finished"] else " (did not finish)"),
                "measured": f"{drained['messages_per_s']:,.0f}",
                "target": f">= {row['ingest_events_per_s']:,.0f} (ingest)",
                "floor": f"one recompute {row['recompute_window_s']:.2f} s",
                "pass": drained["finished"] and drained["messages_per_s"] >= row["ingest_events_per_s"],
            }
        )
    sizes = sorted(int(m) for m in process)
    if len(sizes) >= 2:
        lo, hi = process[str(sizes[0])]["process"], process[str(sizes[-1])]["process"]
        scale = sizes[-1] / sizes[0]
        growth = hi["seconds"] / lo["seconds"]
        rows.append(
            {
                "figure": f"pik process time, {sizes[-1]:,} / {sizes[0]:,} messages",
                "measured": f"{growth:.1f}x" + ("" if hi["finished"] else "+"),
                "target": f"<= {scale:g}x (linear)",
                "floor": "",
                "pass": hi["finished"] and growth <= scale,
            }
        )
    if size is not None:
        rows.append(
            {
                "figure": f"workspace bytes per line ({size['workspace_bytes_per_line']:,.0f} B) / JSON",
                "measured": f"{size['ratio']:.2f}x",
                "target": f"<= {TARGET_WORKSPACE_RATIO:g}x",
                "floor": f"JSON {size['json_bytes_per_line']:,.0f} B per line",
                "pass": size["ratio"] <= TARGET_WORKSPACE_RATIO,
            }
        )
    return rows


def run_figures(
    quick: bool, log: Callable[[str], None] = print, size: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Every figure of this module, printed as it is measured; returns them with their Targets rows."""
    log("\n== Local speed at volume (issue 17): dry runs, the processor, workspace size")
    log(f"  load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min)")
    dry = dry_run_figures([100_000] if quick else [100_000, 1_000_000], log)
    process = processor_figures([5_000] if quick else [5_000, 300_000], log)
    if size is not None:
        log(
            f"  workspace after pik ingest of {size['lines']:,} lines: "
            f"{size['workspace_bytes'] / 2**20:,.1f} MiB, "
            f"{size['workspace_bytes_per_line']:,.0f} B per line; "
            f"the JSON {size['json_bytes'] / 2**20:,.1f} MiB, {size['json_bytes_per_line']:,.0f} B per line: "
            f"{size['ratio']:.2f}x"
        )
    return {"dry_run": dry, "processor": process, "workspace": size, "targets": targets(dry, process, size)}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k dry run and 5k messages only")
    figures = run_figures(parser.parse_args().quick)
    print()
    for t in figures["targets"]:
        result = "PASS" if t["pass"] else "MISS"
        print(f"  {t['figure']:<62} {t['measured']:>9}  {t['target']:<22} {t['floor']:<36} {result}")
