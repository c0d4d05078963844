"""The console under real hands (issue: keys at start-up, Escape, refusals, long work, the shared context,
picking instead of typing): each test drives the keys that showed a defect."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.widgets import DataTable, Input, Select, Static

from backend.adapters.local.workspace import local_ports
from backend.kit import open_local
from backend.model import EventRecord, ReplayOutcome, ReplayRequest
from backend.ports import QueueDepth
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.event_list import EventList
from pik_console.console.picker import PickScreen
from pik_console.console.widgets import FormSelect
from tests.console.conftest import BIG_DAY, BIG_ENTITY, plain, settle

pytestmark = pytest.mark.asyncio
SIZE = (120, 32)
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")

# Every pane: its key, a field of its form, and the widget Escape must return to.
PANES = [
    ("1", "events", "#f-entity", "event-list"),
    ("2", "lag", "#lag-source", "lag-partitions"),
    ("3", "gaps", "#gaps-entity", "gaps-table"),
    ("4", "replay", "#rp-entity", "replay-history"),
    ("5", "aggregates", "#agg-entity", "agg-versions"),
]


def _app(ws: Path, context: Context = OUTAGE, **kw: Any) -> PikConsole:
    return PikConsole(open_local(ws, create=False, **kw), context=context)


async def _until(pilot: Any, condition: Any, seconds: float = 5.0) -> None:
    """Wait (on a loaded machine) until ``condition()``; the test's own assertion says what failed."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await pilot.pause(0.05)


def _late_event_replayed(kit: Any, time_of_day: str) -> None:
    """A late heartbeat for user_001 on 2025-12-22 (the demo's outage day), and a replay of that window: the
    processor's next run writes a newer version of its aggregates."""
    from backend.services.ingest import Received

    late = json.dumps(
        {"source": "mobile", "event_type": "heartbeat", "entity_id": "user_001",
         "event_time": f"2025-12-22T{time_of_day}Z", "payload": {"steps": 5}}
    ).encode()  # fmt: skip
    list(kit.ingest().ingest_stream(iter([Received(late, "test", 1)])))
    request = ReplayRequest(
        entity_id="user_001", start_time="2025-12-22T00:00:00.000Z", end_time="2025-12-23T00:00:00.000Z"
    )
    kit.replay().execute(request, actor="test")


def _said(app: PikConsole) -> list[str]:
    return [n.message for n in app._notifications]


async def test_keys_typed_in_a_burst_at_start_up_reach_the_list_and_the_filter(demo_ws: Path) -> None:
    """The first focus is the event list (not the tab bar, which dropped typed keys): a burst typed before
    the first read finishes lands where it was aimed."""
    app = _app(demo_ws, Context())
    async with app.run_test(size=SIZE) as pilot:
        # Nothing chosen: the console opens on the Overview; 1 then the filter, typed before anything is read.
        await pilot.press("1", "slash", *"user_007", "enter")
        await settle(pilot)
        assert app.query_one("#f-entity", Input).value == "user_007"
        assert isinstance(app.focused, EventList)
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord) and item.entity_id == "user_007"


async def _typed_into_the_form(pilot: Any, app: PikConsole, key: str, field: str) -> tuple[Input, str]:
    """Pane ``key`` shown, ``/`` into its form, a ``z`` typed at the end of ``field``: the field, its text."""
    await settle(pilot)
    await pilot.press(key)
    await settle(pilot)
    await pilot.press("slash")
    await pilot.pause()
    widget = app.query_one(field, Input)
    assert app.focused is widget
    await pilot.press("end", "z")
    assert widget.value.endswith("z")
    return widget, widget.value


@pytest.mark.parametrize(("key", "name", "field", "main"), PANES, ids=[p[1] for p in PANES])
async def test_escape_leaves_every_form_and_a_command_key_then_never_types(
    demo_copy: Path, key: str, name: str, field: str, main: str
) -> None:
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        widget, typed = await _typed_into_the_form(pilot, app, key, field)
        # In the Replay pane x and p act (the confirmation, the processor): there only the pane key.
        commands = ("x", "p") if name != "replay" else ()
        await pilot.press("escape", *commands, "1" if name != "events" else "2")
        await settle(pilot)
        assert widget.value == typed  # x, p and the pane key typed nothing
        assert app.active_pane == ("events" if name != "events" else "lag")
    # Nothing was sent or processed by the x and p pressed after Escape outside the Replay pane.
    ports = local_ports(open_local(demo_copy, create=False).index)
    assert ports.queue.depth().visible == 0


def _read_by_the_terminal(data: str) -> list[Any]:
    """The key events the console's terminal parser makes of ``data`` arriving in one read."""
    from pik_console.console.terminal_keys import EscapeThenKey

    parser = EscapeThenKey()
    return [e for e in [*parser.feed(data), *parser.feed("")] if isinstance(e, events.Key)]


async def _typed_in_one_read(pilot: Any, app: PikConsole, data: str) -> None:
    """``data`` typed as a fast hand types it: all its keys reach the console before it handles the first."""
    for event in _read_by_the_terminal(data):
        app.post_message(event)
    await settle(pilot)


@pytest.mark.parametrize(("key", "name", "field", "main"), PANES, ids=[p[1] for p in PANES])
async def test_escape_and_a_key_in_one_read_are_escape_then_the_key(
    demo_copy: Path, key: str, name: str, field: str, main: str
) -> None:
    # A fast hand, or a remote session that joins the two bytes: Textual's parser read ESC 2 as "™" and ESC z
    # as alt+z, which typed into the field Escape was meant to leave, and the pane key was lost.
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        widget, typed = await _typed_into_the_form(pilot, app, key, field)
        other = "1" if name != "events" else "2"
        await _typed_in_one_read(pilot, app, "\x1b" + other)
        assert widget.value == typed
        assert app.active_pane == ("events" if name != "events" else "lag")
        widget.focus()
        await pilot.pause()
        await _typed_in_one_read(pilot, app, "\x1bz")
        assert widget.value == typed
        assert app.focused is not None and app.focused.id == main


@pytest.mark.parametrize(("key", "name", "field", "main"), PANES, ids=[p[1] for p in PANES])
async def test_tab_and_the_keys_after_it_in_one_read_go_to_the_next_field(
    demo_copy: Path, key: str, name: str, field: str, main: str
) -> None:
    # Typed fast ("device-1", Tab, "2025-12-01..."), part of the date went into the field Tab was leaving:
    # Tab moved the focus only after the keys read with it had been handed to that field.
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        widget, typed = await _typed_into_the_form(pilot, app, key, field)
        await _typed_in_one_read(pilot, app, "\tQ")
        assert widget.value == typed
        assert app.focused is not None and app.focused is not widget
        if isinstance(app.focused, Input):
            assert app.focused.value.endswith("Q")
        nxt = app.focused
        await _typed_in_one_read(pilot, app, "\x1b[ZR")  # shift+tab, then a key
        # Back in the field (its text selected on focus, as after any Tab): the R went there.
        assert app.focused is widget and widget.value.endswith("R")
        if isinstance(nxt, Input):
            assert not nxt.value.endswith("R")


async def test_escape_returns_focus_to_the_panes_list(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, name, field, main in PANES:
            await pilot.press(key)
            await settle(pilot)
            await _until(pilot, lambda main=main: app.focused is not None and app.focused.id == main)
            app.query_one(field, Input).focus()
            await pilot.pause()
            await pilot.press("escape")
            await pilot.pause()
            assert app.focused is not None and app.focused.id == main, (name, app.focused)


async def test_a_command_key_where_it_cannot_act_says_why(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("x")  # in Events
        await pilot.press("left_square_bracket")
        await settle(pilot)
        said = _said(app)
        assert any("x (execute a replay) works in the Replay pane: press 4" in m for m in said), said
        assert any("[ (step to older versions) works in the Aggregates pane: press 5" in m for m in said)
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("c")
        await settle(pilot)
        assert "Nothing is running to cancel" in _said(app)[-1]


async def test_a_wrong_scope_typed_in_the_size_guard_says_what_to_type(demo_copy: Path) -> None:
    settings = demo_copy / "settings.toml"
    settings.write_text(settings.read_text().replace("confirm_above = 1000", "confirm_above = 5"))
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("x")
        await pilot.pause()
        await pilot.press(*"user_002", "enter")
        await pilot.pause()
        assert any("Type user_001 exactly" in m and "you typed user_002" in m for m in _said(app))
    assert local_ports(open_local(demo_copy, create=False).index).queue.depth().visible == 0


async def test_a_status_chosen_then_down_does_not_reopen_the_choice(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        select = app.query_one("#f-status", Select)
        assert isinstance(select, FormSelect)
        select.focus()
        await pilot.press("down")
        await pilot.pause()
        assert not select.expanded
        await pilot.press("enter")
        await pilot.pause()
        assert select.expanded  # enter still opens it


async def test_the_context_typed_in_the_replay_form_is_the_whole_consoles(demo_copy: Path) -> None:
    """A replay of user_007, then p: the header and the Aggregates pane are about user_007, at its newest
    pair of versions (before: the pane opened user_001)."""
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("slash", "ctrl+a", "ctrl+k", *"user_007")
        await pilot.pause(0.6)  # the debounced dry run
        await settle(pilot)
        header = plain(app.query_one("#header-context", Static).content)
        assert "user_007" in header and "2025-12-22" in header
        await pilot.press("escape", "x")
        await pilot.pause()
        app.screen.dismiss(True)  # the confirmation: Execute
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        pane = app.pane("aggregates")
        assert app.query_one("#agg-entity", Input).value == "user_007"
        latest = max(v.version for v in pane.versions if v.metric == pane.metric)
        assert pane.to_version == latest
        if latest > 1:
            assert pane.diff is not None and pane.diff.newer.version == latest


async def test_the_aggregates_pane_follows_new_versions_as_they_are_written(demo_copy: Path) -> None:
    """Open at the newest pair; a processor run that writes a newer version moves the pane to it."""
    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        pane = app.pane("aggregates")
        assert pane.metric is not None
        latest = max(v.version for v in pane.versions if v.metric == pane.metric)
        assert pane.to_version == latest
        ctx = app.context
        assert ctx.metric == pane.metric and ctx.compare == (latest - 1, latest)
        # A late event for the window, a replay of it and the processor: a newer version.
        _late_event_replayed(app.kit, "23:59:00.000")
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        newest = max(v.version for v in pane.versions if v.metric == pane.metric)
        assert newest > latest and pane.to_version == newest
        assert pane.diff is not None and (pane.diff.older.version, pane.diff.newer.version) == (
            newest - 1,
            newest,
        )


async def test_the_footer_offers_the_version_steps_that_exist(demo_ws: Path) -> None:
    # At the newest pair "] Newer" was drawn enabled in 1 of 2 screenshots: the footer was not told when the
    # versions came in, only when the focus moved.
    from textual.widgets._footer import FooterKey

    def enabled(key: str) -> bool:
        found = [k for k in app.query(FooterKey) if k.key == key]
        assert found, key
        return not found[0].has_class("-disabled")

    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        await pilot.pause(0.1)
        pane = app.pane("aggregates")
        assert pane.to_version == max(v.version for v in pane.versions if v.metric == pane.metric) > 1
        assert not enabled("right_square_bracket") and enabled("left_square_bracket")
        await pilot.press("left_square_bracket")
        await settle(pilot)
        await pilot.pause(0.1)
        assert enabled("right_square_bracket")


async def test_y_copies_the_event_id_and_shift_y_its_json(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord)
        await pilot.press("y")
        assert app.clipboard == item.event_id
        await pilot.press("Y")
        await settle(pilot)
        raw = app.kit.raw.get(item.s3_key)
        assert raw is not None and app.clipboard == raw.decode()


async def test_pick_a_source_type_a_day_and_an_entity_with_a_few_keys(demo_ws: Path) -> None:
    app = _app(demo_ws, Context())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        assert isinstance(app.screen, PickScreen)
        await pilot.press(*"web/cl", "enter")
        await settle(pilot)
        assert (app.context.source, app.context.event_type) == ("web", "click")
        await pilot.press("d")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, PickScreen) and picker.choices
        assert [c.value for c in picker.choices] == sorted((c.value for c in picker.choices), reverse=True)
        await pilot.press(*"12-22", "enter")
        await settle(pilot)
        assert app.context.day == "2025-12-22"
        await pilot.press("e")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, PickScreen)
        first = picker.choices[0].value
        await pilot.press("enter")  # the busiest entity
        await settle(pilot)
        assert app.context.entity == first
        await pilot.press("1")
        await settle(pilot)
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord) and item.entity_id == first
        # 12 keys from nothing to an entity's day (the forms took 15-37).


async def test_enter_on_an_audit_row_puts_that_replays_scope_in_the_form(demo_ws: Path) -> None:
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        table = app.query_one("#replay-history", DataTable)
        assert table.row_count
        table.focus()
        table.move_cursor(row=0)
        await pilot.press("enter")
        await settle(pilot)
        record = app.kit.audit.query(limit=1).items[0]
        pane = app.pane("replay")
        assert pane.request is not None and pane.request.entity_id == record.request.entity_id
        assert pane.request.source == record.request.source
        assert any(record.replay_id in m for m in _said(app))
        widths = {str(c.label): c.width for c in table.columns.values()}
        assert widths["REPLAY"] >= len(record.replay_id)


async def test_q_during_a_long_processor_run_stops_it_cleanly_and_exits(big_ws: Path, tmp_path: Path) -> None:
    """q while the processor drains: the console asks it to stop, the drain releases the messages of the
    windows it has not recomputed (none left in flight, nothing half-written), and the console exits (it
    hung on a blank screen before)."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(big_ws, ws)
    kit = open_local(ws, create=False)
    request = ReplayRequest(
        entity_id=BIG_ENTITY,
        start_time=f"{BIG_DAY}T00:00:00.000Z",
        end_time="2025-12-02T00:00:00.000Z",
        limit=5000,
    )
    audit = kit.replay().execute(request, actor="test", force=True)
    assert audit.sent == 1000
    app = PikConsole(open_local(ws, create=False), context=Context(entity=BIG_ENTITY, day=BIG_DAY))
    slow = app.kit.queue
    real_receive = slow.receive_many

    def receive_slowly(max_messages: int, visibility_timeout_s: int = 30) -> Any:
        time.sleep(0.05)  # a slow queue, ten at a time: the drain of 1,000 messages takes seconds
        return real_receive(min(max_messages, 10), visibility_timeout_s)

    slow.receive_many = receive_slowly  # type: ignore[method-assign]
    started = time.monotonic()
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        await pilot.press("p")
        await pilot.pause(0.3)
        assert app.pane("replay").running_work() == "running the processor"
        await pilot.press("q")
        for _ in range(100):
            if not app.is_running:
                break
            await pilot.pause(0.05)
        assert not app.is_running
    assert time.monotonic() - started < 30
    depth = local_ports(open_local(ws, create=False).index).queue.depth()
    # Stopped while receiving: the one window was not recomputed, so all its messages are queued again.
    assert depth == QueueDepth(1000, 0, 0)
    assert open_local(ws, create=False).aggregates.latest(BIG_ENTITY, BIG_DAY, "daily_event_count") is None


async def test_long_work_shows_count_rate_and_eta_and_c_cancels_a_send(big_ws: Path, tmp_path: Path) -> None:
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(big_ws, ws)
    app = PikConsole(open_local(ws, create=False), context=Context(entity=BIG_ENTITY, day=BIG_DAY))
    queue = app.kit.queue
    real_send = queue.send_batch

    def send_slowly(bodies: Any) -> Any:
        time.sleep(0.02)
        return real_send(bodies)

    queue.send_batch = send_slowly  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("4")
        await settle(pilot)
        pane = app.pane("replay")
        app.query_one("#rp-limit", Input).value = "5000"
        await pilot.pause(0.6)
        await settle(pilot)
        assert pane.plan is not None and pane.plan.would_send == 1000
        pane._start_execute(pane.plan)
        # The first progress report comes after the plan is checked again and a batch is sent: on a loaded
        # machine, later than any fixed pause.
        await _until(pilot, lambda: "sending:" in plain(app.query_one("#replay-result", Static).content))
        line = plain(app.query_one("#replay-result", Static).content)
        assert "sending:" in line and "of 1,000 messages" in line and "/s" in line and "ETA" in line, line
        await pilot.press("c")
        await settle(pilot)
        assert pane.running_work() is None
        assert any("Replay interrupted" in m for m in _said(app))
    records = local_ports(open_local(ws, create=False).index).audit.query(limit=5).items
    interrupted = [r for r in records if r.outcome is ReplayOutcome.INTERRUPTED]
    assert interrupted and 0 < interrupted[0].sent < 1000
    depth = local_ports(open_local(ws, create=False).index).queue.depth()
    assert depth.visible == interrupted[0].sent  # what the audit says was sent is what is queued


async def test_a_console_with_nothing_chosen_says_how_to_choose(tmp_path: Path) -> None:
    """An AWS stack (no totals read at start) or an empty workspace: the console says which keys pick a
    source/type, a day and an entity, instead of an empty screen."""
    app = PikConsole(open_local(tmp_path / "empty", create=True), context=Context())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.active_pane == "overview"  # nothing chosen: what is wrong here, ranked (nothing, empty)
        assert "nothing found" in plain(app.query_one("#overview-head", Static).content)
        await pilot.press("1")
        await settle(pilot)
        status = plain(app.query_one("#events-status", Static).content)
        assert "s picks a source/type, d a day, e an entity" in status
        assert "nothing chosen yet" in plain(app.query_one("#header-context", Static).content)
        await pilot.press("e")
        await settle(pilot)
        assert any("Choose a source/type (s) and a day (d) first" in m for m in _said(app))


async def test_a_command_key_pressed_before_its_pane_is_ready_waits_for_it(demo_ws: Path) -> None:
    """5 then [ at once: the Aggregates pane is still being mounted when [ arrives; the key is kept for it
    and acted on (or refused with the pane's own reason), never lost or sent elsewhere."""
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("5", "left_square_bracket")
        await settle(pilot)
        await _until(pilot, lambda: bool(app._notifications) or "aggregates" in app._panes_ready())
        await settle(pilot)
        pane = app.pane("aggregates")
        said = _said(app)
        assert not any("press 5 first" in m for m in said), said
        assert pane.to_version == 1 or any("No versions listed" in m for m in said), (pane.to_version, said)


async def test_keys_and_q_pressed_while_panes_are_still_being_mounted_quit_cleanly(demo_ws: Path) -> None:
    """4 then q at once: q waits for the panes being mounted and the console exits without an error (it
    raised NoMatches from a half-mounted pane, and MountError before its tab was mounted)."""
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # The moment the defect needs, made exact: the Replay pane mounted into its tab (4 pressed), its
        # children not composed yet, and q in the same instant.
        app.mount_pane("replay")
        await app.action_quit()
        await _until(pilot, lambda: not app.is_running)
        assert not app.is_running, (app.screen, app.focused, _said(app), app._mounting, app._panes_ready())
    assert app.return_code in (0, None)


async def test_with_nothing_chosen_the_console_opens_on_the_overview_and_enter_opens_a_finding(
    demo_ws: Path,
) -> None:
    app = _app(demo_ws, Context())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.active_pane == "overview"
        pane = app.pane("overview")
        assert pane.overview is not None and pane.overview.findings
        table = app.query_one("#overview-findings", DataTable)
        assert table.row_count == len(pane.overview.findings)
        assert app.focused is table
        first = pane.overview.findings[0]
        assert first.kind.value == "duplicate_storm" and first.source == "billing"  # the demo's retry storm
        assert "--workspace" in first.next
        await pilot.press("enter")
        await settle(pilot)
        assert app.active_pane == "events"
        events = app.pane("events")
        assert events.current is not None and events.current.status is not None
        assert events.current.status.value == "DUPLICATE" and events.current.day == first.day
        assert (app.context.source, app.context.day) == ("billing", first.day)
        item = app.query_one(EventList).item
        assert isinstance(item, EventRecord) and item.status.value == "DUPLICATE"
        # 0 goes back to the list; enter on an aggregate change opens the Aggregates pane at that metric.
        await pilot.press("0")
        await settle(pilot)
        churn = next(n for n, f in enumerate(pane.overview.findings) if f.kind.value == "aggregate_churn")
        table.move_cursor(row=churn)
        await pilot.press("enter")
        await settle(pilot)
        finding = pane.overview.findings[churn]
        assert app.active_pane == "aggregates"
        agg = app.pane("aggregates")
        assert app.query_one("#agg-entity", Input).value == finding.entity_id and agg.metric == finding.metric


async def test_keys_typed_right_after_s_go_into_the_list_filter_not_to_the_console(demo_ws: Path) -> None:
    """s then "web/cl" and enter typed in one burst (a terminal delivers them together): the list was not
    open when "w" arrived (it wrote a report) and "e" (it opened a second list); now they filter the list."""
    from textual import events

    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for key, char in [("s", "s"), *((c, c) for c in "web"), ("slash", "/"), *((c, c) for c in "cl")]:
            app.post_message(events.Key(key, char))  # all queued before any is handled
        app.post_message(events.Key("enter", "\r"))
        await settle(pilot)
        await _until(pilot, lambda: app.context.source == "web")
        assert (app.context.source, app.context.event_type) == ("web", "click")
        assert not isinstance(app.screen, PickScreen)
        assert app.reports == []  # "w" wrote no report


async def test_a_whole_pick_typed_in_one_burst_lands_source_type_day_and_entity(demo_ws: Path) -> None:
    """s web/cl enter d enter e enter, all queued before the first is handled (a fast typist, or keys typed
    while the console starts): each key waits for the list it belongs to; the context ends on the busiest
    entity of web/click on the newest day, with no key lost to another list or to the console's keys."""
    from textual import events

    app = _app(demo_ws, Context())
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        burst = [("s", "s"), *((c, c) for c in "web"), ("slash", "/"), ("c", "c"), ("l", "l"),
                 ("enter", "\r"), ("d", "d"), ("enter", "\r"), ("e", "e"), ("enter", "\r")]  # fmt: skip
        for key, char in burst:
            app.post_message(events.Key(key, char))
        await _until(
            pilot, lambda: app.context.entity is not None and app.context.source == "web", seconds=10
        )
        await settle(pilot)
        assert (app.context.source, app.context.event_type, app.context.day) == ("web", "click", "2025-12-28")
        entities = app.kit.investigate.scan_partition("web", "click", "2025-12-28", limit=5000).items
        busiest = max(sorted({r.entity_id for r in entities}), key=[r.entity_id for r in entities].count)
        assert app.context.entity == busiest
        assert not isinstance(app.screen, PickScreen) and app.reports == []


async def test_the_aggregates_pane_shows_versions_another_processor_writes(demo_copy: Path) -> None:
    """A version written outside the console (pik process in another terminal, the Lambda): the pane,
    while shown and at the newest pair, moves to it within a poll."""
    from pik_console.console import aggregates_pane

    app = _app(demo_copy)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("5")
        await settle(pilot)
        pane = app.pane("aggregates")
        before = max(v.version for v in pane.versions if v.metric == pane.metric)
        other = open_local(demo_copy, create=False)  # another process's kit
        _late_event_replayed(other, "23:58:00.000")
        other.drain().run()
        await _until(pilot, lambda: pane.to_version is not None and pane.to_version > before,
                     seconds=aggregates_pane.POLL_S * 3)  # fmt: skip
        await settle(pilot)
        assert pane.to_version == before + 1
        assert pane.diff is not None and pane.diff.newer.version == before + 1


async def test_the_palettes_screenshot_is_saved_where_it_says(
    demo_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Palette -> Screenshot said "Failed to save screenshot" (Textual's own saves to a downloads folder).
    from textual.command import CommandList, CommandPalette

    monkeypatch.chdir(tmp_path)
    app = _app(demo_ws)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        assert isinstance(app.screen, CommandPalette)
        await pilot.press(*"Screenshot")
        await _until(pilot, lambda: app.screen.query_one(CommandList).option_count > 0)
        await pilot.press("enter")
        await _until(pilot, lambda: any("Screenshot" in n.message for n in app._notifications))
        said = [n.message for n in app._notifications if "Screenshot" in n.message]
        saved = list(tmp_path.glob("*.svg"))
        assert len(saved) == 1 and said == [f"Screenshot saved to {saved[0]}"], said
        assert "<svg" in saved[0].read_text(encoding="utf-8")[:2000]
