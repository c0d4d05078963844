"""Console figures (issue 5), run by ``make bench`` or alone:

* **first frame**: ``pik console`` as a child process (headless, 160x50) on a workspace holding one entity
  with 1,000,000 events: from the process start (interpreter and the imports of ``pik console`` included)
  to the first screen drawn (the header, the tab bar, the footer, the pane saying what is being opened),
  and from the app's construction to it; then the backend opened (imported and opened in a thread after
  that frame) and the first page, which is the screen a user waits for;
* **first page**: from the start to the first rows of that entity's whole window on screen (one keyset
  query of a page);
* **jump to the end**: End pressed to the last event shown (one descending query);
* **scrolling**: 400 PageDown presses through the window (pages read as the cursor goes, an LRU of
  pages kept), then Home; the slowest key-to-screen time among them;
* **keys during a slow query**: a page read that takes 2 s (a sleep around the port), and a pane switch
  pressed meanwhile: how long the switch took;
* **peak RSS** of the child after all of that.

The workspace is built once into ``bench/out/`` through the store's record API in batches of 50,000
(about half a minute; it has no raw bytes, which the list does not read). Timings are medians of
``--runs`` children.

    .venv/bin/python bench/console.py [--runs 3] [--events 1000000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))

ENTITY = "device-1m"
START = datetime(2025, 1, 1, tzinfo=UTC)
DAYS = 100
BATCH = 50_000
VERSION = "1"

TARGET_FIRST_FRAME_S = 0.5
TARGET_RATIO = 1.5  # the first frame against a bare Textual app of the same tabs, in the same run
TARGET_FIRST_PAGE_S = 0.3
TARGET_JUMP_END_S = 0.3
TARGET_RSS_MB = 150


# -- the workspace -------------------------------------------------------------------------------------


def workspace(events: int) -> Path:
    """One entity with ``events`` accepted events evenly over DAYS days (built once, reused)."""
    ws = OUT / f"ws-console-{events}"
    marker = ws / "bench-console.json"
    want = {"version": VERSION, "events": events}
    if marker.exists() and json.loads(marker.read_text()) == want:
        # The console opens it read-only, which never upgrades an older schema: upgrade it here, in a
        # process of its own (a child's peak RSS starts at the RSS of the process it is forked from).
        upgrade = (
            f"from backend.adapters.local.store import LocalStore as S; S({str(ws)!r}, create=False).close()"
        )
        subprocess.run([sys.executable, "-c", upgrade], cwd=ROOT, check=True)
        return ws
    shutil.rmtree(ws, ignore_errors=True)
    from backend.adapters.local.store import LocalStore
    from backend.identity import raw_key
    from backend.model import EventRecord, IngestStatus
    from backend.times import fmt

    store = LocalStore(ws)
    step = timedelta(days=DAYS) / events
    started = time.perf_counter()
    try:
        for first in range(0, events, BATCH):
            batch = []
            for i in range(first, min(first + BATCH, events)):
                when = START + i * step
                event_time = fmt(when)
                event_id = f"{i:064x}"
                lag = 1500 + (i % 7) * 1000 + (3_600_000 * 30 if i % 1000 == 0 else 0)
                day = event_time[:10]
                batch.append(
                    EventRecord.model_construct(
                        event_id=event_id,
                        status=IngestStatus.ACCEPTED,
                        source="iot",
                        event_type="reading",
                        entity_id=ENTITY,
                        event_time=event_time,
                        ingest_time=fmt(when + timedelta(milliseconds=lag)),
                        ingest_lag_ms=lag,
                        clock_skew=False,
                        payload_sha=f"{i:064x}",
                        day=day,
                        hour=event_time[11:13],
                        s3_key=raw_key("iot", "reading", day, event_id),
                        s3_bucket=None,
                        raw_sha=f"{i:064x}",
                        raw_size=120,
                        idempotency_key=None,
                        origin="bench",
                        line=i + 1,
                        receipt=None,
                    )
                )
            store.record(batch)
            print(
                f"\r  building {events:,} events: {first + len(batch):,}", end="", file=sys.stderr, flush=True
            )
    finally:
        store.close()
    print(f"\r  built {events:,} events in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    marker.write_text(json.dumps(want))
    return ws


def rss_mb() -> float:
    """The resident set now (Linux), in MB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


async def key_to_screen(app: Any, key: str, done: Any) -> float:
    """Seconds from a key reaching the app to the screen drawn with what the key asked for (``done()``
    true, then one refresh): what the user waits for, without the test harness's own idle waits."""
    pressed = time.perf_counter()
    app.simulate_key(key)
    while not done():
        if time.perf_counter() - pressed > 30:
            raise SystemExit(f"{key!r} did not reach the screen in 30 s")
        await asyncio.sleep(0.001)
    drawn = asyncio.Event()
    app.call_after_refresh(drawn.set)
    await drawn.wait()
    return time.perf_counter() - pressed


# -- one child: the console, headless --------------------------------------------------------------------


def child(ws: str, spawned: float) -> dict[str, Any]:
    """Runs in a fresh interpreter: what a user of ``pik console`` waits for, measured from ``spawned``."""
    imports_started = time.time()
    # What `pik console` imports and builds: the command line of that one command, the console with its
    # opener. The backend is imported and opened by the console after its first frame, in a thread.
    from pik_console.cli.console import console_options
    from pik_console.cli.main import build_parser
    from pik_console.console.app import PikConsole
    from pik_console.console.context import Context

    argv = ["console", "--workspace", ws, "--read-only"]
    options = console_options(build_parser(argv).parse_args(argv))
    imported = time.time()
    end = (START + timedelta(days=DAYS)).date().isoformat()
    # The whole window of the entity (the command line opens on one day; the bench on all of them).
    options["context"] = Context(
        entity=ENTITY, start=f"{START.date()}T00:00:00.000Z", end=f"{end}T00:00:00.000Z"
    )
    context = options["context"]
    figures: dict[str, Any] = {
        "imports_and_open_s": imported - imports_started,
        "python_start_s": imports_started - spawned,
    }

    painted: list[float] = []

    class Console(PikConsole):
        def on_mount(self) -> None:
            # Runs once the screen has been drawn for the first time: the chrome, the panes saying what
            # is being opened (registered before the console starts opening the backend).
            self.call_after_refresh(lambda: painted.append(time.time()))
            super().on_mount()

    async def run() -> None:
        constructed = time.time()
        app = Console(**options)
        async with app.run_test(size=(160, 50)) as pilot:
            while not painted:
                await asyncio.sleep(0.001)
            first_frame = painted[0]
            figures["first_frame_from_start_s"] = first_frame - spawned
            figures["first_frame_from_app_s"] = first_frame - constructed
            figures["backend_imported_at_first_frame"] = "backend.model" in sys.modules
            while not (app.ready and app.query("#event-list")):
                if app.open_error is not None:
                    raise SystemExit(f"the console could not open the workspace: {app.open_error}")
                await asyncio.sleep(0.002)
            figures["backend_open_from_start_s"] = time.time() - spawned
            backend = app.kit
            from pik_console.console.event_list import EventList

            lst = app.query_one("#event-list", EventList)
            while lst.rows.total == 0:
                await asyncio.sleep(0.002)
            figures["first_page_from_start_s"] = time.time() - spawned
            figures["first_page_from_frame_s"] = max(time.time() - first_frame, 0.0)
            figures["first_page_query_ms"] = lst.last_read_ms
            figures["rss_after_first_page_mb"] = rss_mb()
            last = backend.index.query_entity(
                ENTITY, context.start, context.end, limit=1, descending=True
            ).items[0]
            figures["jump_to_end_s"] = await key_to_screen(app, "end", lambda: lst.item == last)
            figures["jump_to_end_query_ms"] = lst.last_read_ms
            figures["jump_to_end_in_app_ms"] = lst.first_page_ms
            figures["rss_after_end_mb"] = rss_mb()
            await pilot.press("home")
            while lst.rows.total == 0 or lst.cursor != 0 or not lst.rows.at_start:
                await asyncio.sleep(0.002)
            worst = 0.0
            for _ in range(400):
                before = lst.cursor
                elapsed = await key_to_screen(
                    app, "pagedown", lambda before=before: lst.cursor > before and lst.item is not None
                )
                worst = max(worst, elapsed)
            figures["scrolled_rows"] = lst.cursor
            figures["pages_read"] = lst.rows.pages_read
            figures["pages_in_memory"] = lst.rows.cached_pages()
            figures["slowest_pagedown_s"] = worst
            figures["rss_after_scrolling_mb"] = rss_mb()
            # Peak so far: the Events pane's own figure (the other panes' reads come next).
            figures["peak_rss_browsing_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            await pilot.press("home")
            await app.workers.wait_for_complete()
            # Every pane once (each reads what it shows for the entity's day), back to Events.
            for key in "23451":
                pressed = time.perf_counter()
                await pilot.press(key)
                await app.workers.wait_for_complete()
                figures[f"pane_{key}_with_its_reads_s"] = time.perf_counter() - pressed
                figures[f"rss_after_pane_{key}_mb"] = rss_mb()
            figures["rss_after_every_pane_mb"] = rss_mb()
            # A slow store: the next page read sleeps 2 s; keys must not wait for it.
            real = backend.index.query_entity

            def slow(*a: Any, **kw: Any) -> Any:
                time.sleep(2.0)
                return real(*a, **kw)

            backend.index.query_entity = slow
            await pilot.press("end")
            await pilot.pause(0.05)
            pressed = time.perf_counter()
            await pilot.press("2")
            figures["pane_switch_during_slow_query_s"] = time.perf_counter() - pressed
            pressed = time.perf_counter()
            await pilot.press("1")
            figures["pane_switch_back_during_slow_query_s"] = time.perf_counter() - pressed
            figures["slow_query_still_running"] = lst.reading
            backend.index.query_entity = real
            await app.workers.wait_for_complete()
        app.close_backend()

    asyncio.run(run())
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def bare_child(spawned: float) -> dict[str, Any]:
    """The floor: a bare Textual app of the same shape (a header line, five tabs, a form of six fields, a
    list, a footer), drawn headless at the same size, from the same process start."""
    imports_started = time.time()
    from textual.app import App, ComposeResult
    from textual.binding import Binding, BindingType
    from textual.containers import Horizontal
    from textual.widgets import Footer, Input, Static, TabbedContent, TabPane

    imported = time.time()
    painted: list[float] = []

    class Bare(App[None]):
        BINDINGS: ClassVar[list[BindingType]] = [Binding(str(n), "noop", f"Pane {n}") for n in range(1, 6)]

        def compose(self) -> ComposeResult:
            yield Static("header")
            with TabbedContent():
                for n in range(1, 6):
                    with TabPane(f"{n} Pane", id=f"p{n}"):
                        with Horizontal(classes="filter-bar"):
                            for f in range(6):
                                yield Input(placeholder=f"field {f}")
                        yield Static("rows")
            yield Footer()

        def on_mount(self) -> None:
            self.call_after_refresh(lambda: painted.append(time.time()))

    async def run() -> dict[str, Any]:
        constructed = time.time()
        app = Bare()
        async with app.run_test(size=(160, 50)):
            while not painted:
                await asyncio.sleep(0.001)
        return {
            "python_start_s": imports_started - spawned,
            "imports_and_open_s": imported - imports_started,
            "first_frame_from_app_s": painted[0] - constructed,
            "first_frame_from_start_s": painted[0] - spawned,
        }

    return asyncio.run(run())


def run_child(ws: Path | None) -> dict[str, Any]:
    """One child: the console on ``ws``, or the bare Textual app when ``ws`` is None."""
    spawned = time.time()
    which = ["--bare"] if ws is None else ["--child", str(ws)]
    done = subprocess.run(
        [sys.executable, __file__, *which, "--spawned", repr(spawned)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    if done.returncode != 0:
        raise SystemExit(f"console child failed:\n{done.stdout}\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--child", metavar="WS", help=argparse.SUPPRESS)
    parser.add_argument("--bare", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spawned", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.spawned)))
        return 0
    if args.bare:
        print(json.dumps(bare_child(args.spawned)))
        return 0
    ws = workspace(args.events)
    print(f"Console on one entity with {args.events:,} events (load average {os.getloadavg()[0]:.2f})")
    # The console and the bare Textual app alternate, so both see the same machine (2 noisy cores).
    runs, bares = [], []
    for _ in range(args.runs):
        runs.append(run_child(ws))
        bares.append(run_child(None))
    median = {
        k: statistics.median(r[k] for r in runs) for k in runs[0] if isinstance(runs[0][k], int | float)
    }
    bare = {k: statistics.median(r[k] for r in bares) for k in bares[0]}
    ratio = median["first_frame_from_start_s"] / bare["first_frame_from_start_s"]
    rows = [
        ("first frame from process start", median["first_frame_from_start_s"], TARGET_FIRST_FRAME_S, "s"),
        ("  of which python start", median["python_start_s"], None, "s"),
        ("  of which imports (pik console)", median["imports_and_open_s"], None, "s"),
        ("  of which app to first frame", median["first_frame_from_app_s"], None, "s"),
        ("bare Textual app, same tabs: first frame", bare["first_frame_from_start_s"], None, "s"),
        ("  of which imports", bare["imports_and_open_s"], None, "s"),
        ("  of which app to first frame", bare["first_frame_from_app_s"], None, "s"),
        ("first frame / the bare app's", ratio, TARGET_RATIO, "x"),
        ("backend open, from process start", median["backend_open_from_start_s"], None, "s"),
        ("first page from process start", median["first_page_from_start_s"], None, "s"),
        ("first page from first frame", median["first_page_from_frame_s"], TARGET_FIRST_PAGE_S, "s"),
        ("  first page query", median["first_page_query_ms"] / 1000, None, "s"),
        ("jump to end (key to last row shown)", median["jump_to_end_s"], TARGET_JUMP_END_S, "s"),
        ("  its descending query", median["jump_to_end_query_ms"] / 1000, None, "s"),
        ("slowest of 400 PageDown", median["slowest_pagedown_s"], None, "s"),
        ("pane switch during a 2 s page read", median["pane_switch_during_slow_query_s"], None, "s"),
        ("  and back", median["pane_switch_back_during_slow_query_s"], None, "s"),
        ("RSS after 16,000 rows scrolled", median["rss_after_scrolling_mb"], None, "MB"),
        ("RSS after every pane visited", median["rss_after_every_pane_mb"], None, "MB"),
        ("peak RSS", median["peak_rss_mb"], TARGET_RSS_MB, "MB"),
    ]
    for label, value, target, unit in rows:
        verdict = "" if target is None else ("  ok" if value <= target else "  OVER")
        goal = f"(target <= {target:g} {unit})" if target is not None else ""
        print(f"  {label:<40} {value:8.3f} {unit:<3} {goal}{verdict}")
    print(
        f"  rows scrolled {int(median['scrolled_rows']):,}, pages read {int(median['pages_read'])}, "
        f"pages in memory {int(median['pages_in_memory'])}"
    )
    results = {
        "events": args.events,
        "runs": runs,
        "median": median,
        "bare": {"runs": bares, "median": bare},
        "first_frame_ratio": ratio,
        "loadavg": os.getloadavg(),
    }
    (OUT / "console.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"  results written to {(OUT / 'console.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
