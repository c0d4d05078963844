"""Make the console's screenshots (``make screenshots``): build a fresh demo workspace, drive the console
with Textual's Pilot, and save an SVG of every pane into ``screenshots/``.

The demo's replay ids end in random hex; here they are fixed while the demo is built, so that the SVGs
change only when what the console shows changes.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--size 150x42]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

from textual.widgets import Input

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import backend.services.replay_messages as replay_module  # noqa: E402
from backend.adapters.local.store import LocalStore  # noqa: E402
from backend.demo import build_demo  # noqa: E402
from backend.kit import open_local  # noqa: E402
from backend.model import IngestStatus  # noqa: E402
from pik_console.console.app import PikConsole  # noqa: E402
from pik_console.console.context import Context  # noqa: E402
from pik_console.console.listings import EventFilter  # noqa: E402
from pik_console.console.modals import ConfirmReplay  # noqa: E402

WORKSPACE = ".pik-demo"  # opened by this relative path: the header shows no temporary folder
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")
SMALL = (80, 24)


async def settle(pilot: Any) -> None:
    """Until the console is at rest: no pane still mounting, no worker running, and what they posted
    handled and drawn (a table sizes its columns when idle: shot earlier, a column kept its label's width)."""
    app = pilot.app
    for _ in range(100):
        if not (app._mounting - app._panes_ready()):
            break
        await pilot.pause(0.02)
    for _ in range(8):
        await app.workers.wait_for_complete()
        await pilot.pause(0.1)
        if not any(w.is_running for w in app.workers):
            break
    for field in app.screen.query(Input):
        field.cursor_blink = False  # a blinking cursor is drawn or not depending on the moment of the shot
    await pilot.wait_for_scheduled_animations()
    await app.screen.wait_for_refresh()
    await pilot.pause(0.1)


async def _still(app: PikConsole, pilot: Any) -> None:
    """Settle until two pictures 0.2 s apart are the same: a table that had not yet sized its columns when
    the console looked at rest (a shot in 1 of 3 runs kept the DAY column at its label's width)."""
    previous = None
    for _ in range(20):
        await settle(pilot)
        picture = app.export_screenshot()
        if picture == previous:
            return
        previous = picture
        await pilot.pause(0.2)


Step = Callable[[PikConsole, Any], Awaitable[None]]


async def _keys(app: PikConsole, pilot: Any, *keys: str) -> None:
    await settle(pilot)
    for key in keys:
        await pilot.press(key)
        await settle(pilot)
    await pilot.pause(0.3)  # the detail pane waits for the cursor to rest
    await settle(pilot)


async def events(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "down")


async def duplicates(app: PikConsole, pilot: Any) -> None:
    await settle(pilot)
    app.query_one("#events-pane").set_filter(
        EventFilter(
            entity="user_001",
            start="2025-12-26T00:00:00.000Z",
            end="2025-12-27T00:00:00.000Z",
            status=IngestStatus.DUPLICATE,
        )
    )
    await _keys(app, pilot)


async def rejections(app: PikConsole, pilot: Any) -> None:
    await settle(pilot)
    app.query_one("#events-pane").set_filter(EventFilter(status=IngestStatus.REJECTED))
    await _keys(app, pilot, "down", "down")


async def hostile(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot)


async def lag(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "2")


async def gaps(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "3")


async def replay(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "4")


async def replay_confirm(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "4")
    pane = app.query_one("#replay-pane")
    values = {"rp-entity": "", "rp-start": "", "rp-end": "", "rp-source": "mobile", "rp-type": "heartbeat",
              "rp-first": "2025-12-15", "rp-endday": "2025-12-29", "rp-limit": "5000"}  # fmt: skip
    from textual.widgets import Input

    for widget_id, value in values.items():
        app.query_one(f"#{widget_id}", Input).value = value
    await pilot.pause(0.6)
    await settle(pilot)
    pane.query_one("#replay-history").focus()
    await pilot.press("x")
    await pilot.pause(0.2)
    assert isinstance(app.screen, ConfirmReplay)
    await pilot.press(*"mobile/heart")
    await pilot.pause(0.2)


async def aggregates(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "5")
    pane = app.query_one("#aggregates-pane")
    from textual.widgets import Select

    app.query_one("#agg-metric", Select).value = "steps_total"
    await settle(pilot)
    assert pane.diff is not None


async def help_screen(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "question_mark")


async def overview(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot)


async def pick_entity(app: PikConsole, pilot: Any) -> None:
    await _keys(app, pilot, "e")


def _small(step: Step) -> Step:
    """The same step on a small terminal (80x24)."""

    async def run(app: PikConsole, pilot: Any) -> None:
        await pilot.resize_terminal(*SMALL)
        await step(app, pilot)

    return run


# (file name, context, read-only, what to do before the screenshot)
SHOTS: list[tuple[str, Context, bool, Step]] = [
    ("overview", Context(), False, overview),
    ("events", OUTAGE, False, events),
    ("events-duplicates", Context(entity="user_001", day="2025-12-26"), False, duplicates),
    ("events-rejections", OUTAGE, False, rejections),
    ("events-hostile-text", Context(entity="[bold red]pwned[/bold red]", day="2025-12-27"), False, hostile),
    ("lag", OUTAGE, False, lag),
    ("gaps", Context(source="mobile", event_type="heartbeat", day="2025-12-22"), False, gaps),
    ("replay", OUTAGE, False, replay),
    ("replay-confirm", OUTAGE, False, replay_confirm),
    ("replay-read-only", OUTAGE, True, replay),
    ("aggregates", OUTAGE, False, aggregates),
    ("help", OUTAGE, False, help_screen),
    ("pick-entity", OUTAGE, False, pick_entity),
    # The same panes on an 80x24 terminal: stacked, compact forms.
    ("small-overview", Context(), False, _small(overview)),
    ("small-events", OUTAGE, False, _small(events)),
    ("small-lag", OUTAGE, False, _small(lag)),
    ("small-gaps", Context(source="mobile", event_type="heartbeat", day="2025-12-22"), False, _small(gaps)),
    ("small-replay", OUTAGE, False, _small(replay)),
    ("small-aggregates", OUTAGE, False, _small(aggregates)),
]


async def shoot(out: Path, size: tuple[int, int], only: set[str] | None) -> list[Path]:
    saved = []
    for name, context, read_only, step in SHOTS:
        if only and name not in only:
            continue
        app = PikConsole(open_local(WORKSPACE, create=False, read_only=read_only), context=context)
        async with app.run_test(size=size) as pilot:
            await step(app, pilot)
            await _still(app, pilot)
            path = app.save_screenshot(f"{name}.svg", str(out))
        saved.append(Path(path))
        print(f"  {Path(path).relative_to(ROOT) if Path(path).is_relative_to(ROOT) else path}")
    return saved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "screenshots"))
    parser.add_argument("--size", default="150x42", help="terminal size, COLUMNSxROWS")
    parser.add_argument("--only", nargs="*", help="just these screenshots (names without .svg)")
    args = parser.parse_args(argv)
    columns, rows = (int(n) for n in args.size.lower().split("x"))
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pik-screenshots-") as tmp:
        os.chdir(tmp)
        counter = itertools.count(1)
        print(f"Building the demo workspace in {tmp}/{WORKSPACE} …")
        # Replay ids end in random hex: the replay's own draws are counted instead (as the console tests do),
        # so the pictures do not change with how many tokens the queue draws.
        fixed = SimpleNamespace(token_hex=lambda n: f"{next(counter):0{2 * n}x}")
        with mock.patch.object(replay_module, "secrets", fixed):
            store = LocalStore(WORKSPACE)
            try:
                build_demo(store)
            finally:
                store.close()
        print(f"Saving screenshots ({columns}x{rows}) into {out}:")
        asyncio.run(shoot(out, (columns, rows), set(args.only) if args.only else None))
    return 0


if __name__ == "__main__":
    sys.exit(main())
