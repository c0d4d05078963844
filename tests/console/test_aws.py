"""The console on the AWS backend (moto): the header names the region and table, events page by key
through DynamoDB, the replay preview runs on the stack's ports, and read-only holds there too."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from textual.widgets import Button, Static

from backend.kit import open_aws
from backend.services.ingest import IngestService, Received
from backend.times import FixedClock
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.event_list import EventList
from tests.console.conftest import plain, settle

pytestmark = pytest.mark.asyncio


@pytest.fixture
def aws_backend() -> Iterator[Any]:
    from datetime import UTC, datetime

    from tests.aws_env import moto_backend

    store, settings, close = moto_backend()
    clock = FixedClock(datetime(2025, 12, 23, 1, tzinfo=UTC))
    bodies = [
        {"source": "mobile", "event_type": "heartbeat", "entity_id": "user_9",
         "event_time": f"2025-12-22T{h:02d}:00:00Z", "payload": {"steps": h}}
        for h in range(6, 18)
    ]  # fmt: skip
    requests = [Received(json.dumps(b).encode(), "test", n) for n, b in enumerate(bodies, 1)]
    list(IngestService(store, store, clock).ingest_stream(requests))
    backend = open_aws(settings, read_only=True)
    try:
        yield backend
    finally:
        backend.close()
        close()


async def test_the_console_reads_a_stack(aws_backend: Any) -> None:
    app = PikConsole(aws_backend, context=Context(entity="user_9", day="2025-12-22"))
    async with app.run_test(size=(130, 34)) as pilot:
        await settle(pilot)
        title = plain(app.query_one("#header-title", Static).content)
        assert "aws" in title and "us-east-1" in title
        assert app.query_one("#header-badge", Static).display
        lst = app.query_one(EventList)
        assert lst.rows.total == 12 and lst.rows.complete
        await pilot.press("end")
        await settle(pilot)
        assert lst.item is not None and lst.item.event_time == "2025-12-22T17:00:00.000Z"
        await pilot.press("4")
        await settle(pilot)
        pane = app.query_one("#replay-pane")
        assert pane.plan is not None and pane.plan.would_send == 12
        assert app.query_one("#replay-execute", Button).disabled


@pytest.fixture
def original_kit_stack() -> Iterator[Any]:
    """A stack the original kit populated (no GSI2, no audit table; duplicate and overwritten rows)."""
    from moto import mock_aws

    from tests.aws.test_legacy_stack import original_kit_stack as populate
    from tests.aws_env import fake_credentials

    restore = fake_credentials()
    with mock_aws():
        backend = open_aws(populate(), read_only=True)
        try:
            yield backend
        finally:
            backend.close()
    restore()


async def test_the_lag_and_events_panes_read_an_original_kit_stack(original_kit_stack: Any) -> None:
    from textual.widgets import DataTable

    from tests.aws.test_legacy_stack import eid

    ctx = Context(entity="user_123", day="2025-12-28", source="demo", event_type="heartbeat")
    app = PikConsole(original_kit_stack, context=ctx)
    async with app.run_test(size=(130, 34)) as pilot:
        await settle(pilot)
        lst = app.query_one(EventList)
        assert lst.rows.total == 9 and lst.rows.complete  # 8 rows: event 6's holds two receipts
        lst.focus()
        for _ in range(5):  # to event 6's duplicate receipt (the row a duplicate overwrote)
            await pilot.press("down")
        await settle(pilot)
        await pilot.pause(0.3)
        await settle(pilot)
        assert lst.item is not None and (lst.item.event_id, lst.item.status.value) == (eid(6), "DUPLICATE")
        detail = plain(app.query_one("#event-detail", Static).content)
        assert "failed" not in detail and "Invalid index" not in detail, detail
        assert '"legacy": 6' in detail and "no bytes stored" not in detail, detail
        assert "Receipts (2)" in detail
        await pilot.press("2")
        await settle(pilot)
        largest = app.query_one("#lag-largest", DataTable)
        assert largest.row_count == 7  # each event once: no DuplicateKey


async def test_s_on_a_stack_without_rollups_lists_the_source_types_and_says_how_they_were_read(
    aws_backend: Any,
) -> None:
    from pik_console.console.picker import PickScreen

    app = PikConsole(aws_backend, context=Context())
    async with app.run_test(size=(130, 34)) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await settle(pilot)
        picker = app.screen
        assert isinstance(picker, PickScreen)
        assert [c.value for c in picker.choices] == ["mobile/heartbeat"]
        note = plain(picker.query_one("#pick-note", Static).content)
        assert "no rollup directory" in note and "pik aws rollup-backfill" in note
