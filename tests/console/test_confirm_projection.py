"""The replay confirmation shows, beside the blast radius, the aggregate versions a processor run would
write (the dry run's projection): a late arrival in the window appears as a new version with its delta."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Static

from backend.kit import open_local
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.modals import ConfirmReplay
from tests.console.conftest import plain, settle

pytestmark = pytest.mark.asyncio
SIZE = (120, 40)
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")


def _late_heartbeats(ws: Path) -> None:
    kit = open_local(ws, create=False)
    try:
        bodies = [
            json.dumps({"source": "mobile", "event_type": "heartbeat", "entity_id": "user_001",
                        "event_time": f"2025-12-22T1{i}:00:00Z", "payload": {"steps": 100 + i}}).encode()
            for i in range(2)
        ]  # fmt: skip
        assert [r.status.value for r in map(kit.ingest().ingest, bodies)] == ["ACCEPTED", "ACCEPTED"]
    finally:
        kit.close()


async def test_the_confirmation_shows_the_projected_versions_beside_the_blast_radius(
    demo_copy: Path,
) -> None:
    _late_heartbeats(demo_copy)
    app = PikConsole(open_local(demo_copy, create=False), context=OUTAGE)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        pane = app.query_one("#replay-pane")
        assert pane.plan is not None and pane.plan.windows_projected == 1
        await pilot.press("x")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ConfirmReplay)
        shown = plain(modal.query_one("#confirm-projection", Static).content)
        assert "Once processed: 2 new versions (1 of 1 windows projected)" in shown
        count = next(p for p in pane.plan.projected if p.metric == "daily_event_count")
        assert count.delta == 2
        row = next(line for line in shown.splitlines() if "daily_event_count" in line)
        assert f"v{count.current_version} = {count.current_value}" in row
        assert f"v{count.current_version + 1} = {count.projected_value}" in row and "+2" in row
        assert "steps_total" in shown
        await pilot.press("escape")
        await settle(pilot)
