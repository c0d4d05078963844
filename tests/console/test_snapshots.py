"""Snapshots of every pane on the demo workspace (pytest-textual-snapshot; update with --snapshot-update).

The workspace is opened by a relative path so the header is the same on every machine, and the demo's
replay ids are fixed (see conftest), so a snapshot changes only when what the user sees changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from backend.kit import open_local
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from tests.console.conftest import settle

SIZE = (140, 40)
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")


@pytest.fixture
def demo_app(demo_ws: Path, monkeypatch: pytest.MonkeyPatch) -> PikConsole:
    monkeypatch.chdir(demo_ws.parent)
    return PikConsole(open_local(demo_ws.name, create=False), context=OUTAGE)


def _on(key: str | None) -> Any:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        if key is not None:
            await pilot.press(key)
            await settle(pilot)
        await pilot.pause(0.2)  # the detail pane waits a moment after the cursor stops
        await settle(pilot)

    return run_before


@pytest.mark.parametrize(
    "pane", [None, "2", "3", "4", "5"], ids=["events", "lag", "gaps", "replay", "aggregates"]
)
def test_pane_snapshot(pane: str | None, demo_app: PikConsole, snap_compare: Any) -> None:
    assert snap_compare(demo_app, terminal_size=SIZE, run_before=_on(pane))


@pytest.mark.parametrize(
    "pane", [None, "2", "3", "4", "5"], ids=["events", "lag", "gaps", "replay", "aggregates"]
)
def test_pane_snapshot_on_an_80x24_terminal(
    pane: str | None, demo_app: PikConsole, snap_compare: Any
) -> None:
    """Stacked and compact: every form field shows what is typed, the list keeps its LAG column, the
    footer and the header fit."""
    assert snap_compare(demo_app, terminal_size=(80, 24), run_before=_on(pane))
