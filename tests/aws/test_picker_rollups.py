"""The console's pickers on a stack (moto): the source/types (``s``) and a day's entities (``e``) are read
from the rollups' directory of the days when the stack keeps it, with the same counts as the scan, without a
Scan; a stack without the directory is read the old way and the list says so."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from backend.adapters.aws.overview import AwsOverview
from backend.kit import Kit, aws_kit
from backend.settings import Settings
from pik_console.console.context import Context
from pik_console.console.picker import NO_ROLLUPS, entity_choices, partition_choices
from tests.aws.rollup_env import StreamStack
from tests.aws.test_overview_rollups import DAYS, SERIES, _count_calls, _day, _fill
from tests.aws_env import moto_backend

DAY = _day(3)


@pytest.fixture(scope="module")
def stack() -> Iterator[tuple[StreamStack, Kit, Any]]:
    store, settings, close = moto_backend(full=False)
    s = StreamStack(store, close, "")
    _fill(s, 4, incidents=True)  # 15 days x 2 series x 4 events, a late day and a duplicate storm
    kit = aws_kit(store, settings, settings=Settings(backend="aws"), read_only=True)
    try:
        yield s, kit, settings
    finally:
        kit.close()
        s.close()


def _without_directory(kit: Kit) -> Any:
    ov: Any = kit.overview_index
    assert isinstance(ov, AwsOverview)
    ov.rollups._ready, ov.rollups._days = True, False
    return ov


def test_the_source_types_come_from_the_directory_with_the_scans_counts(stack: Any) -> None:
    s, _, _ = stack
    ov = AwsOverview(s.store, None)
    calls = _count_calls(s)
    totals = ov.partition_totals()
    assert calls["Query"] == 1 and "Scan" not in calls
    assert totals == s.store.stats().partitions  # the full scan's counts, to the receipt
    assert {(p.source, p.event_type) for p in totals} == set(SERIES)
    assert sum(p.duplicate for p in totals) == 8  # the storm: each of a day's 4 web events twice more
    assert sum(p.accepted for p in totals) == DAYS * len(SERIES) * 4


def test_a_days_entities_come_from_the_directory_with_the_scans_counts(stack: Any) -> None:
    s, _, _ = stack
    fast, slow = AwsOverview(s.store, None), AwsOverview(s.store, None)
    slow.rollups._ready = False
    calls = _count_calls(s)
    rows = fast.day_entities(DAY)
    assert "Scan" not in calls
    assert rows == slow.entity_day_counts(DAY, _day(4))  # grace 0: late means after the day ended
    assert rows is not None and [r.entity_id for r in rows] == sorted(r.entity_id for r in rows)
    assert {r.entity_id for r in rows} == {f"{src}-u{i}" for src, _ in SERIES for i in range(4)}


def test_the_pickers_read_the_directory_and_say_nothing_more(stack: Any) -> None:
    s, kit, _ = stack
    calls = _count_calls(s)
    listing = partition_choices(kit)
    assert listing.note == ""
    assert [c.value for c in listing.choices] == ["web/click", "app/heartbeat"]  # the busiest first
    assert listing.choices[0].label == "60 events · 8 duplicates"
    day = entity_choices(kit, Context(day=DAY))
    assert len(day.choices) == 8 and day.note == ""
    assert "Scan" not in calls


def test_without_the_directory_the_source_types_are_scanned_and_the_list_says_so(stack: Any) -> None:
    s, _, settings = stack
    opened = aws_kit(s.store, settings, settings=Settings(backend="aws"), read_only=True)
    try:
        ov = _without_directory(opened)
        assert ov.partition_totals() is None and ov.day_entities(DAY) is None
        calls = _count_calls(s)
        listing = partition_choices(opened)
        assert calls["Scan"] >= 1 and NO_ROLLUPS in listing.note and "every receipt" in listing.note
        assert [c.value for c in listing.choices] == ["web/click", "app/heartbeat"]
        with pytest.raises(LookupError, match="choose a source/type"):
            entity_choices(opened, Context(day=DAY))
        # With a source/type, its day's receipts are read as before (one key range, not the table).
        scanned = entity_choices(opened, Context(source="web", event_type="click", day=DAY))
        assert [c.value for c in scanned.choices] == [f"web-u{i}" for i in range(4)]
    finally:
        opened.close()
