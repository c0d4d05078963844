"""The Events pane: pages read by key as you move (never the whole window), first/last/jump, filters,
the detail (raw JSON, receipts, rejections), untrusted text shown literally, slow and failing reads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Input, Static

from backend.demo import HOSTILE_ENTITY
from backend.errors import StoreError
from backend.kit import open_local
from backend.model import EventRecord, IngestStatus, Page, Rejection
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.event_list import EventList
from pik_console.console.listings import PAGE_SIZE, EventFilter
from pik_console.console.paging import Chain, PagedRows, PageRequest
from tests.console.conftest import BIG_DAY, BIG_ENTITY, BIG_EVENTS, plain, settle

pytestmark = pytest.mark.asyncio
SIZE = (120, 32)


def _app(ws: Path, context: Context, **kw: Any) -> PikConsole:
    return PikConsole(open_local(ws, create=False, **kw), context=context)


def _list(app: PikConsole) -> EventList:
    return app.query_one("#event-list", EventList)


# -- the paging model (no I/O) ------------------------------------------------------------------------------


def _page(items: list[int], more: bool) -> tuple[list[int], str | None]:
    return items, (f"after:{items[-1]}" if more and items else None)


async def test_rows_around_an_anchor_are_read_a_page_at_a_time_and_evicted_pages_read_again() -> None:
    rows = PagedRows(generation=1, forward=True, backward=True, cache_pages=2)
    first = rows.wanted(0, 9)
    assert {r.chain for r in first} == {Chain.FORWARD, Chain.BACKWARD}
    fwd0 = next(r for r in first if r.chain is Chain.FORWARD)
    assert rows.add(fwd0, *_page([10, 11, 12], more=True)) == 0
    back0 = next(r for r in first if r.chain is Chain.BACKWARD)
    # Backward pages are read newest first and shown above the anchor: the caller shifts by their size.
    assert rows.add(back0, *_page([9, 8, 7], more=True)) == 3
    assert [rows.row(i) for i in range(rows.total)] == [7, 8, 9, 10, 11, 12]
    fwd1 = rows.wanted(0, 5, margin=1)[-1]
    assert fwd1 == PageRequest(1, Chain.FORWARD, 1, "after:12")
    rows.add(fwd1, *_page([13, 14], more=False))
    assert rows.at_end and not rows.at_start and rows.total == 8
    # Three pages read, two kept: the oldest read (backward page 0) is evicted and read again by its cursor.
    assert rows.cached_pages() == 2
    assert rows.row(0) is None
    again = rows.wanted(0, 0)
    assert PageRequest(1, Chain.BACKWARD, 0, None) in again
    # A stale answer (another listing) changes nothing.
    assert rows.add(PageRequest(0, Chain.FORWARD, 2, None), [99], None) == 0
    assert rows.total == 8


# -- the list over a window bigger than a page ------------------------------------------------------------


async def test_a_window_is_read_page_by_page_end_is_one_descending_query_and_colon_jumps(
    big_ws: Path,
) -> None:
    app = _app(big_ws, Context(entity=BIG_ENTITY, day=BIG_DAY))
    calls: list[tuple[bool, str | None]] = []
    real = app.kit.index.query_entity

    def counting(*args: Any, **kw: Any) -> Page[EventRecord]:
        calls.append((kw.get("descending", False), kw.get("after")))
        return real(*args, **kw)

    app.kit.index.query_entity = counting  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = _list(app)
        assert rows_shown(lst) == PAGE_SIZE and not lst.rows.complete  # one page, not the window
        assert isinstance(lst.item, EventRecord) and lst.item.event_time.startswith(f"{BIG_DAY}T00:00")
        await pilot.press(*["pagedown"] * 12)
        await settle(pilot)
        assert PAGE_SIZE < lst.rows.total < BIG_EVENTS  # read ahead of the cursor, not to the end
        # Every press counted, even those past the rows read at the time (finished when they arrived).
        assert lst.cursor == 12 * (lst.size.height - 1) > PAGE_SIZE
        calls.clear()
        await pilot.press("end")
        await settle(pilot)
        assert calls[0] == (True, None)  # the last rows: one descending query from the end
        last = app.kit.index.query_entity(BIG_ENTITY, "2025-12-01", "2025-12-02", limit=1, descending=True)
        assert lst.item == last.items[0]
        assert lst.rows.total <= 2 * PAGE_SIZE
        status = plain(app.query_one("#events-status", Static).content)
        assert "the last row" in status and "row 200" not in status  # not "row 200" of a 1,000-event window
        await pilot.press("up", "up")
        assert lst.item is not None and lst.item.event_time < last.items[0].event_time
        await pilot.pause()
        assert "2 rows before the last" in plain(app.query_one("#events-status", Static).content)
        await pilot.press("home")
        await settle(pilot)
        assert isinstance(lst.item, EventRecord) and lst.item.event_time == "2025-12-01T00:00:00.000Z"
        status = plain(app.query_one("#events-status", Static).content)
        assert "200+ rows read" in status
        # ":" jumps to a time: the list is anchored there, the earlier rows above it.
        await pilot.press("colon")
        await pilot.pause()
        app.screen.query_one("#jump-input", Input).value = "2025-12-01T10:00"
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(lst.item, EventRecord) and lst.item.event_time == "2025-12-01T10:00:00.000Z"
        before = lst.rows.row(lst.cursor - 1)
        assert isinstance(before, EventRecord) and before.event_time == "2025-12-01T09:59:00.000Z"


def rows_shown(lst: EventList) -> int:
    return lst.rows.total


async def test_filter_bar_lists_duplicates_and_rejections_and_the_detail_shows_receipts_and_bytes(
    demo_ws: Path,
) -> None:
    app = _app(demo_ws, Context(entity="user_005", day="2025-12-20"))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash")
        assert app.focused is app.query_one("#f-entity", Input)
        app.query_one("#f-entity", Input).value = "user_001"
        app.query_one("#f-start", Input).value = "2025-12-26"
        app.query_one("#f-end", Input).value = "2025-12-27"
        await pilot.press("enter")
        await settle(pilot)
        lst = _list(app)
        assert isinstance(lst.item, EventRecord) and lst.item.entity_id == "user_001"
        app.query_one("#events-pane").set_filter(
            EventFilter(
                entity="user_001", start="2025-12-26", end="2025-12-27", status=IngestStatus.DUPLICATE
            )
        )
        await settle(pilot)
        items = [lst.rows.row(i) for i in range(lst.rows.total)]
        assert items and all(isinstance(r, EventRecord) and r.status is IngestStatus.DUPLICATE for r in items)
        await pilot.pause(0.2)
        await settle(pilot)
        detail = plain(app.query_one("#event-detail", Static).content)
        assert "Receipts (" in detail and "DUPLICATE" in detail and "idempotency key" in detail
        assert '"amount_cents"' in detail  # the raw JSON of this receipt
        await pilot.press("enter")
        assert app.focused is app.query_one("#events-detail-scroll")
        # REJECTED lists the quarantine: each request with its reason and bytes.
        app.query_one("#events-pane").set_filter(EventFilter(status=IngestStatus.REJECTED))
        await settle(pilot)
        assert lst.rows.total == 11 and all(isinstance(lst.rows.row(i), Rejection) for i in range(11))
        await pilot.pause(0.2)
        detail = plain(app.query_one("#event-detail", Static).content)
        assert "Rejected request" in detail and "reason" in detail and "Bytes" in detail


async def test_markup_and_escape_sequences_in_data_are_shown_literally(demo_ws: Path) -> None:
    """Invariant 10: the demo's hostile entity id is Rich markup; its payload has ANSI escapes and a link."""
    app = _app(demo_ws, Context(entity=HOSTILE_ENTITY, day="2025-12-27"))
    async with app.run_test(size=(170, 32)) as pilot:
        await settle(pilot)
        await pilot.pause(0.2)
        await settle(pilot)
        lst = _list(app)
        assert isinstance(lst.item, EventRecord) and lst.item.entity_id == HOSTILE_ENTITY
        line = lst.render_line(0)
        text = "".join(s.text for s in line)
        assert "[bold red]pwned" in text
        # The entity is drawn in the same style as the plain text beside it: its markup did nothing.
        entity = next(s for s in line if "pwned" in s.text)
        plain_style = next(s for s in line if "web/page_view" in s.text).style
        assert entity.style == plain_style
        assert entity.style is not None and not entity.style.link
        assert entity.style.color is None or entity.style.color.name != "red"
        detail = plain(app.query_one("#event-detail", Static).content)
        assert "\\x1b[2J\\x1b[31mred\\x1b[0m" in detail or "\\u001b[2J" in detail
        assert "[link=https://example.invalid]x[/link]" in detail
        screen = app.export_screenshot()
        assert "\x1b" not in screen
        assert "[bold&#160;red]pwned[/bold&#160;red]" in screen or "[bold red]pwned[/bold red]" in screen
        header = plain(app.query_one("#header-context", Static).content)
        assert "[bold red]pwned[/bold red]" in header


async def test_keys_are_handled_while_a_slow_page_is_read(big_ws: Path) -> None:
    app = _app(big_ws, Context(entity=BIG_ENTITY, day=BIG_DAY))
    release = threading.Event()
    real = app.kit.index.query_entity

    def slow(*args: Any, **kw: Any) -> Page[EventRecord]:
        release.wait(5)
        return real(*args, **kw)

    app.kit.index.query_entity = slow  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert _list(app).reading
        # The page read is blocked until release: the key is handled while it runs (no wall clock here;
        # bench/console.py measures how fast).
        await pilot.press("2")
        await pilot.pause()
        assert app.active_pane == "lag"
        assert _list(app).reading  # still reading
        release.set()
        await pilot.press("1")
        await settle(pilot)
        assert _list(app).rows.total == PAGE_SIZE


async def test_the_list_itself_takes_keys_while_its_next_page_is_read(big_ws: Path) -> None:
    # Found by bench/console.py: a list that told Textual it was `loading` had its keys ignored.
    app = _app(big_ws, Context(entity=BIG_ENTITY, day=BIG_DAY))
    release = threading.Event()
    real = app.kit.index.query_entity
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        lst = _list(app)

        def slow(*args: Any, **kw: Any) -> Page[EventRecord]:
            release.wait(5)
            return real(*args, **kw)

        app.kit.index.query_entity = slow  # type: ignore[method-assign]
        for _ in range(10):  # down until the next page is wanted
            await pilot.press("pagedown")
            if lst.reading:
                break
        assert lst.reading
        at = lst.cursor
        await pilot.press("up", "up")
        assert lst.reading and lst.cursor == at - 2
        release.set()
        await settle(pilot)
        assert lst.rows.total == 2 * PAGE_SIZE


async def test_a_failed_read_becomes_a_notification_not_a_crash(big_ws: Path) -> None:
    app = _app(big_ws, Context(entity=BIG_ENTITY, day=BIG_DAY))

    def broken(*args: Any, **kw: Any) -> Page[EventRecord]:
        raise StoreError("workspace: read failed: disk I/O error")

    app.kit.index.query_entity = broken  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert any("disk I/O error" in n.message for n in app._notifications)
        assert "disk I/O error" in plain(app.query_one("#events-status", Static).content)
        await pilot.press("2")
        assert app.active_pane == "lag" and app.is_running
