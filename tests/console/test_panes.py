"""Lag, Gaps, Replay and Aggregates: Pilot flows a user would run, and read-only refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Button, DataTable, Input, Static

from backend.adapters.local.workspace import local_ports
from backend.errors import ReadOnlyError
from backend.kit import open_local
from backend.model import EventRecord, ReplayOutcome
from pik_console.console.aggregates_pane import AggregatesPane
from pik_console.console.app import PikConsole, palette_entries
from pik_console.console.context import Context
from pik_console.console.event_list import EventList
from pik_console.console.events_pane import EventsPane
from pik_console.console.lag_pane import LagPane
from pik_console.console.modals import ConfirmReplay, HelpScreen, JumpScreen
from pik_console.console.replay_pane import ReplayPane
from tests.console.conftest import plain, settle

pytestmark = pytest.mark.asyncio
SIZE = (120, 32)
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")


def _app(ws: Path, context: Context = OUTAGE, **kw: Any) -> PikConsole:
    return PikConsole(open_local(ws, create=False, **kw), context=context)


async def test_lag_of_the_outage_day_and_an_adjustable_late_threshold(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("2")
        await settle(pilot)
        pane = app.query_one("#lag-pane")
        report = pane.report
        assert report is not None and report.count == 194 and report.late == report.count  # all two days late
        assert "2d 04h" in plain(app.query_one("#lag-summary", Static).content)
        histogram = plain(app.query_one("#lag-histogram", Static).content)
        assert "█" in histogram and "06 07 08" in histogram
        assert app.query_one("#lag-partitions", DataTable).row_count == 5
        largest = app.query_one("#lag-largest", DataTable)
        assert largest.row_count == 20
        await pilot.press("minus")
        await settle(pilot)
        assert app.query_one("#lag-late", Input).value == "30m"
        assert pane.report.late_threshold_ms == 1_800_000
        # enter on a largest-lag event opens it in Events, on that very event
        largest.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.active_pane == "events"
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord) and item.event_id == pane.report.largest[0].event_id


async def test_gaps_tell_a_day_that_arrived_late_and_open_it_in_events(demo_ws: Path) -> None:
    app = _app(demo_ws, Context(source="mobile", event_type="heartbeat", day="2025-12-22"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("3")
        await settle(pilot)
        report = app.query_one("#gaps-pane").report
        assert report is not None
        assert report.arrived_late == ["2025-12-22"] and not report.never_arrived
        assert "arrived late" in plain(app.query_one("#gaps-verdict", Static).content)
        table = app.query_one("#gaps-table", DataTable)
        table.move_cursor(row=7)
        await pilot.press("enter")
        await settle(pilot)
        assert app.active_pane == "events"
        f = app.query_one("#events-pane").current
        assert (f.source, f.event_type, f.day) == ("mobile", "heartbeat", "2025-12-22")


async def _replay_pane(app: PikConsole, pilot: Any) -> Any:
    await settle(pilot)
    await pilot.press("4")
    await settle(pilot)
    return app.query_one("#replay-pane")


async def test_build_a_replay_preview_it_cancel_it_and_a_stale_plan_is_refused(demo_copy: Path) -> None:
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        pane = await _replay_pane(app, pilot)
        assert (
            pane.plan is not None and pane.plan.would_send == 10 and pane.plan.request.entity_id == "user_001"
        )
        assert "10 messages would be sent" in plain(app.query_one("#replay-plan", Static).content)
        history = app.query_one("#replay-history", DataTable).row_count
        assert history == 4  # the demo's dry runs and replays; the live preview adds none
        # Changing the form refreshes the preview.
        app.query_one("#rp-limit", Input).value = "3"
        await pilot.pause(0.6)
        await settle(pilot)
        assert pane.plan.would_send == 3 and pane.plan.skipped.over_limit == 7
        await pilot.press("x")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmReplay) and not app.screen.typed
        await pilot.press("escape")
        await settle(pilot)
        assert not isinstance(app.screen, ConfirmReplay)
        assert pane.last_result is None
        # The events in scope changed since the preview (its fingerprint no longer matches): the service
        # refuses, nothing is sent, and the console says so.
        stale = pane.plan.model_copy(update={"fingerprint": "0" * 64})
        pane._start_execute(stale)
        await settle(pilot)
        assert any("not sent" in n.message for n in app._notifications)
        assert pane.last_result is not None and pane.last_result.outcome is ReplayOutcome.REFUSED
    ports = local_ports(open_local(demo_copy, create=False).index)
    assert ports.queue.depth().visible == 0
    assert [a.outcome for a in ports.audit.query(limit=50).items].count(ReplayOutcome.SENT) == 2  # the demo's


async def test_a_large_replay_needs_the_entity_typed_then_runs_and_the_processor_recomputes(
    demo_copy: Path,
) -> None:
    settings = demo_copy / "settings.toml"
    settings.write_text(settings.read_text().replace("confirm_above = 1000", "confirm_above = 5"))
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        pane = await _replay_pane(app, pilot)
        assert pane.plan is not None and pane.plan.needs_force
        await pilot.press("x")
        await pilot.pause()
        modal = app.screen
        assert isinstance(modal, ConfirmReplay) and modal.typed
        execute = modal.query_one("#confirm-execute", Button)
        assert execute.disabled
        await pilot.press(*"user_00")
        assert execute.disabled
        await pilot.press("1")
        assert not execute.disabled
        await pilot.press("enter")
        await settle(pilot)
        assert pane.last_result is not None
        assert pane.last_result.outcome is ReplayOutcome.SENT and pane.last_result.sent == 10
        assert pane.last_result.forced
        assert app.query_one("#replay-history", DataTable).row_count == 5
        await pilot.press("p")
        await settle(pilot)
        result = plain(app.query_one("#replay-result", Static).content)
        assert "Processor: 10 messages, 1 windows" in result
    ports = local_ports(open_local(demo_copy, create=False).index)
    assert ports.queue.depth().visible == 0 and ports.queue.depth().in_flight == 0


async def test_read_only_disables_every_mutating_action_and_the_services_refuse_them(demo_copy: Path) -> None:
    app = _app(demo_copy, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        assert app.query_one("#header-badge", Static).display
        pane = await _replay_pane(app, pilot)
        assert pane.plan is not None and pane.plan.would_send == 10  # previews still work
        assert app.query_one("#replay-execute", Button).disabled
        assert app.query_one("#replay-process", Button).disabled
        # Hidden from the footer (not offered), and pressed anyway each says why.
        assert pane.check_action("execute", ()) is False and pane.check_action("process", ()) is False
        assert app.check_action("replay_execute", ()) is None
        offered = {b.binding.action for b in app.screen.active_bindings.values()}
        assert offered and not offered & {"execute", "process"}, offered
        await pilot.press("x")
        await pilot.press("p")
        await settle(pilot)
        said = [n.message for n in app._notifications]
        assert any("Read-only console: replays cannot be executed" in m for m in said), said
        assert any("Read-only console: the processor writes versions" in m for m in said), said
        assert not isinstance(app.screen, ConfirmReplay)
        assert pane.last_result is None
        titles = [t for t, _, _ in palette_entries(read_only=True)]
        assert not any("execute" in t.lower() or "processor" in t.lower() for t in titles)
        with pytest.raises(ReadOnlyError):
            app.kit.replay().execute(pane.plan.request, actor="test")
        with pytest.raises(ReadOnlyError):
            app.kit.processor()
    ports = local_ports(open_local(demo_copy, create=False).index)
    assert ports.queue.depth().visible == 0
    assert all(r.outcome is not ReplayOutcome.RUNNING for r in ports.audit.query(limit=50).items)
    assert len(ports.audit.query(limit=50).items) == 4


async def test_step_through_versions_and_jump_from_an_added_event_to_events(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        pane = app.query_one("#aggregates-pane")
        assert app.query_one("#agg-versions", DataTable).row_count == 5
        assert pane.diff is not None and (pane.diff.older.version, pane.diff.newer.version) == (1, 2)
        view = plain(app.query_one("#agg-diff", Static).content)
        assert "late arrivals" in view and "replay rp-20251224T120000" in view
        assert "version 1" in view and "version 2" in view
        await pilot.press("left_square_bracket")
        await settle(pilot)
        assert pane.to_version == 1 and "A single version" in plain(
            app.query_one("#agg-diff", Static).content
        )
        await pilot.press("right_square_bracket")
        await settle(pilot)
        assert pane.diff is not None and pane.diff.newer.version == 2
        added = app.query_one("#agg-added", DataTable)
        assert added.row_count == pane.diff.added
        wanted = pane.diff.added_sample[0].event_id
        added.focus()
        await pilot.press("enter")
        await settle(pilot)
        assert app.active_pane == "events"
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord) and item.event_id == wanted


async def test_help_and_the_palette_cover_every_action(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        for _, _, actions in palette_entries(read_only=False):
            for action in actions.split(";"):
                name = action.split("(")[0]
                assert hasattr(app, f"action_{name}"), action
        # Every key has an id (keymaps can override it) and a tooltip (the footer explains it).
        from textual.binding import Binding

        widgets = (PikConsole, EventList, EventsPane, LagPane, ReplayPane, AggregatesPane, HelpScreen,
                   JumpScreen, ConfirmReplay)  # fmt: skip
        bindings = [b for cls in widgets for b in cls.BINDINGS if isinstance(b, Binding)]
        assert len(bindings) > 25
        assert all(b.id and b.tooltip for b in bindings), [
            b.key for b in bindings if not (b.id and b.tooltip)
        ]
        assert len({b.id for b in bindings}) == len(bindings)
        await app.run_actions("pane('aggregates')")
        await settle(pilot)
        await app.run_actions("pane('aggregates');versions_step(-1)")
        await settle(pilot)
        assert app.active_pane == "aggregates"
        pane = app.pane("aggregates")
        assert pane.to_version is not None and pane.to_version < max(v.version for v in pane.versions)


@pytest.mark.parametrize("key", ["2", "3", "4", "5"])
async def test_a_pane_key_pressed_before_its_pane_is_mounted_switches_to_it(
    demo_copy: Path, key: str
) -> None:
    """The panes other than Events mount after the first frame (Lazy); a key pressed before that must not
    crash the console (it did: NoMatches for '#aggregates-pane')."""
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(key)  # at once: the Lazy panes are not mounted yet
        await settle(pilot)
        assert app.is_running
        names = {"2": "lag", "3": "gaps", "4": "replay", "5": "aggregates"}
        assert app.active_pane == names[key]
        assert app.pane(names[key]).is_mounted
