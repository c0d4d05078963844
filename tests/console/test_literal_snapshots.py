"""Invariant 10 on screen: event data that holds Rich markup, ANSI escape sequences (colours, cursor moves,
OSC 8 hyperlinks, OSC 52 clipboard writes), bidi overrides and control characters is shown as literal,
escaped text in the Events pane and its detail, never obeyed.

The snapshots (pytest-textual-snapshot; regenerate with ``--snapshot-update`` and look at them) show what a
user sees; the text checks beside them fail on their own if a sequence ever reaches the terminal, whatever a
regenerated snapshot holds.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from backend.adapters.local.store import LocalStore
from backend.kit import open_local
from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received
from backend.times import FixedClock
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.events_pane import EventsPane
from pik_console.console.listings import EventFilter
from tests.console.conftest import plain, settle

SIZE = (160, 48)
TALL = (160, 72)  # the whole raw JSON of the hostile event in view
DAY = "2025-12-01"

# Identifiers may hold markup and format characters (bidi), not control characters (invariant 8).
ENTITY = "[bold red]ALERT[/bold red] [link=https://evil.example]click[/link] \u202eevil\u202c"
IDEMPOTENCY_KEY = "[link=https://evil.example]key[/link]"
# Where a request came from is data too (a file name, for `pik ingest`).
ORIGIN = "file:[red]x[/red]\x1b[2J.jsonl"
PAYLOAD: dict[str, Any] = {
    "rich": "[bold red]ALERT[/bold red][link=https://evil.example]click me[/link]",
    "csi": "\x1b[31mRED\x1b[0m \x1b[2J\x1b[H",  # colour, clear the screen, cursor home
    "cursor": "\x1b[10A\x1b[5Cmoved",  # up ten lines, right five
    "osc8": "\x1b]8;;https://evil.example\x07hyperlink\x1b]8;;\x07",
    "osc52": "\x1b]52;c;ZWNobyBwd25lZA==\x07",  # write to the clipboard
    "c1": "\x9b31mC1-CSI \x9d0;title\x9c",  # the 8-bit forms: CSI, OSC, ST
    "bidi": "\u202etxt.exe\u202c \u2066isolated\u2069 zero\u200bwidth",
    "controls": "bell\x07 bs\x08 cr\r lf\n nul\x00 del\x7f",
    "[bold]key[/bold]": "\x1b[5mblink",
}
# A request that is not JSON, quarantined byte for byte: raw escapes (no JSON string escaping them).
REJECTED = (
    b"\x1b[2J\x1b[H\x1b[31m[bold red]not json[/bold red] \x1b]8;;https://evil.example\x07link\x1b]8;;\x07 "
    b"\x1b]52;c;ZWNobyBwd25lZA==\x07 \xe2\x80\xaebidi\xe2\x80\xac \xc2\x9b\x00end"
)
# Sequences that must never reach the terminal, whichever field they came from.
RAW = ["\x1b", "\x9b", "\x9d", "\x9c", "\x07", "\x08", "\x00", "\x7f", "\u202e", "\u2066", "\u200b"]


def _event(minute: int, payload: dict[str, Any]) -> bytes:
    body = {
        "source": "web",
        "event_type": "click",
        "entity_id": ENTITY,
        "event_time": f"{DAY}T10:{minute:02d}:00Z",
        "payload": payload,
        "idempotency_key": IDEMPOTENCY_KEY if minute == 0 else None,
    }
    return json.dumps({k: v for k, v in body.items() if v is not None}, ensure_ascii=False).encode()


@pytest.fixture(scope="module")
def hostile_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One entity whose id holds markup: the hostile event (and a second receipt of it with other bytes),
    a plain one, and the rejected request; at fixed times so that the snapshots are stable."""
    ws = tmp_path_factory.mktemp("hostile") / "ws"
    clock = FixedClock(datetime(2025, 12, 1, 10, 5, tzinfo=UTC))
    store = LocalStore(ws, clock=clock)
    service = IngestService(store, store, clock)
    try:
        for body, origin in [
            (_event(0, PAYLOAD), ORIGIN),
            (_event(0, {**PAYLOAD, "retry": "[blink]2[/blink]"}), "api"),  # same key, other bytes
            (_event(1, {"plain": 1}), "api"),
            (REJECTED, ORIGIN),
        ]:
            clock.advance(timedelta(seconds=7))
            service.ingest_batch([Received(body, origin, 1)])
    finally:
        store.close()
    return ws


@pytest.fixture
def hostile_app(hostile_ws: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PikConsole]:
    monkeypatch.chdir(hostile_ws.parent)  # a relative path in the header, the same on every machine
    backend = open_local(hostile_ws.name, create=False, read_only=True)
    try:
        yield PikConsole(backend, context=Context(entity=ENTITY, day=DAY))
    finally:
        backend.close()


async def _show_event(pilot: Any) -> None:
    await settle(pilot)
    await pilot.pause(0.2)  # the detail waits a moment after the cursor stops
    await settle(pilot)


async def _show_rejection(pilot: Any) -> None:
    await settle(pilot)
    pilot.app.query_one(EventsPane).set_filter(EventFilter(status=IngestStatus.REJECTED))
    await _show_event(pilot)


def test_hostile_event_snapshot(hostile_app: PikConsole, snap_compare: Any) -> None:
    assert snap_compare(hostile_app, terminal_size=TALL, run_before=_show_event)


def test_hostile_rejection_snapshot(hostile_app: PikConsole, snap_compare: Any) -> None:
    assert snap_compare(hostile_app, terminal_size=SIZE, run_before=_show_rejection)


def _screen_texts(app: PikConsole) -> dict[str, str]:
    """What the header, the status line and the detail show as plain text, and the whole screen's text (from
    a screenshot: every character Textual would send to the terminal, list rows included)."""
    out = {
        selector: plain(app.query_one(selector, Static).content, width=200)
        for selector in ("#header-context", "#events-status", "#event-detail")
    }
    svg = app.export_screenshot()
    out["screen"] = "".join(html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg, re.S))
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("which", ["event", "rejection"])
async def test_what_the_pane_shows_is_escaped_text(hostile_app: PikConsole, which: str) -> None:
    async with hostile_app.run_test(size=SIZE) as pilot:
        await (_show_event if which == "event" else _show_rejection)(pilot)
        texts = _screen_texts(hostile_app)
    shown = "\n".join(texts.values())
    for seq in RAW:
        assert seq not in shown, f"{seq!r} reached the screen"
    detail = texts["#event-detail"]
    if which == "event":
        assert "Raw JSON" in detail and "Receipts (2)" in detail
        # Markup stays characters; escapes stay escapes (JSON's own \\u001b for C0, \\x.. for the rest).
        assert ENTITY.replace("\u202e", "\\u202e").replace("\u202c", "\\u202c") in detail
        assert "[link=https://evil.example]key[/link]" in detail
        assert "[bold red]ALERT[/bold red][link=https://evil.example]click me[/link]" in detail
        assert "\\u001b[31mRED\\u001b[0m \\u001b[2J\\u001b[H" in detail
        assert "\\u001b]52;c;ZWNobyBwd25lZA==\\u0007" in detail
        assert "\\x9b31mC1-CSI" in detail and "\\u202etxt.exe\\u202c" in detail
        assert '"[bold]key[/bold]"' in detail
        assert "[bold red]ALERT[/bold red]" in texts["#header-context"]
    else:
        assert "Rejected request" in detail and "invalid JSON" in detail
        assert "\\x1b[2J\\x1b[H\\x1b[31m[bold red]not json[/bold red]" in detail
        assert "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in detail and "\\u202ebidi" in detail
        assert "file:[red]x[/red]\\x1b[2J.jsonl" in detail
