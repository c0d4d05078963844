"""A dry run in the Replay pane shows its progress as sending does (count, rate, ETA) and ``c`` cancels it
(issue 14: a dry run of a big window was blind and could not be stopped)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from backend.kit import open_local
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from tests.console.conftest import BIG_DAY, BIG_ENTITY, plain, settle

pytestmark = pytest.mark.asyncio
SIZE = (120, 32)


def _slow_selection(app: PikConsole, pages: int = 200) -> dict[str, Any]:
    """The kit's selection, made slow: ``pages`` pages of 10 receipts 0.05 s apart, reporting progress and
    asking whether to stop between them as the stores do, then the real answer. Returns what it saw."""
    seen: dict[str, Any] = {"stopped": False, "calls": 0}
    real = app.kit.investigate.select_replay

    def select_replay(request: Any, *, sample: int, progress: Any = None, should_stop: Any = None) -> Any:
        from backend.errors import Cancelled

        seen["calls"] += 1
        for page in range(pages):
            if should_stop is not None and should_stop():
                seen["stopped"] = True
                raise Cancelled(f"stopped after {page * 10:,} receipts read")
            time.sleep(0.05)
            if progress is not None:
                progress((page + 1) * 10, pages * 10)
        return real(request, sample=sample)

    app.kit.investigate.select_replay = select_replay  # type: ignore[method-assign]
    return seen


async def _until(pilot: Any, condition: Any, seconds: float = 8.0) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)


async def test_a_long_dry_run_shows_count_rate_and_eta_and_c_cancels_it(big_ws: Path) -> None:
    app = PikConsole(open_local(big_ws, create=False), context=Context(entity=BIG_ENTITY, day=BIG_DAY))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seen = _slow_selection(app)
        await pilot.press("4")
        await pilot.pause(0.2)
        pane = app.pane("replay")
        pane.reload()  # a dry run of the window, now slow
        box = app.query_one("#replay-plan", Static)
        await _until(pilot, lambda: "planning:" in plain(box.content))
        line = plain(box.content)
        assert "planning:" in line and "of 2,000 receipts read" in line and "/s" in line and "ETA" in line, (
            line
        )
        assert pane.running_work() == "the dry run"
        await pilot.press("c")
        await _until(pilot, lambda: pane.running_work() is None)
        assert seen["stopped"] and pane.plan is None and pane.running_work() is None
        assert "Dry run cancelled" in plain(box.content)
        assert any("Dry run cancelled: nothing was sent" in n.message for n in app._notifications)
        # Nothing audited for the cancelled dry run; a new one (the form changed) plans again, in full.
        assert app.kit.audit.query(limit=5).items == []
        app.kit.investigate.select_replay = type(app.kit.investigate).select_replay.__get__(
            app.kit.investigate
        )
        app.query_one("#rp-limit", Input).value = "5000"
        await _until(pilot, lambda: pane.plan is not None)
        assert pane.plan is not None and pane.plan.would_send == 1000


async def test_a_newer_dry_run_stops_the_one_it_replaces(big_ws: Path) -> None:
    app = PikConsole(open_local(big_ws, create=False), context=Context(entity=BIG_ENTITY, day=BIG_DAY))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seen = _slow_selection(app, pages=40)
        await pilot.press("4")
        await pilot.pause(0.2)
        pane = app.pane("replay")
        pane.reload()
        await pilot.pause(0.3)
        app.query_one("#rp-limit", Input).value = "700"  # the form changes: a newer dry run
        await _until(pilot, lambda: pane.plan is not None, seconds=15)
        assert seen["stopped"] and seen["calls"] >= 2
        assert pane.plan is not None and pane.plan.would_send == 700


async def test_q_during_a_dry_run_stops_it_and_exits(big_ws: Path) -> None:
    app = PikConsole(open_local(big_ws, create=False), context=Context(entity=BIG_ENTITY, day=BIG_DAY))
    started = time.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        seen = _slow_selection(app, pages=400)
        await pilot.press("4")
        await pilot.pause(0.2)
        app.pane("replay").reload()
        await pilot.pause(0.4)
        await pilot.press("q")
        await _until(pilot, lambda: not app.is_running)
        assert not app.is_running and seen["stopped"]
    assert time.monotonic() - started < 15  # 400 pages would take 20 s
