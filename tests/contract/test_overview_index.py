"""Contract of :class:`backend.ports.OverviewIndex`: per-hour counts and lag histograms, per entity-day
counts, rejections by day and reason, and the windows with several aggregate versions, over a half-open
range of days, the same on both adapters."""

from __future__ import annotations

from typing import Any

import pytest

from backend.errors import InvalidRequest
from backend.ports import LAG_BUCKETS_MS, EntityDayCount, HourRollup, RejectionCount, WindowChurn
from tests.conftest import Adapter
from tests.contract.test_aggregate_store import manifest, version
from tests.contract.test_event_index import rec, rejection

TWO_DAYS = 172_800_000
RANGE = ("2025-12-28", "2025-12-30")


@pytest.fixture
def ov(adapter: Adapter) -> Any:
    if adapter.overview is None:
        pytest.skip(f"the {adapter.name} adapter has no OverviewIndex yet")
    return adapter.overview


def _buckets(**at: int) -> tuple[int, ...]:
    out = [0] * (len(LAG_BUCKETS_MS) + 1)
    for index, n in at.items():
        out[int(index[1:])] = n
    return tuple(out)


def _fill(adapter: Adapter) -> None:
    adapter.index.record(
        [
            rec(event_time="2025-12-28T10:15:00.000Z", lag=500, tag="a"),
            rec(event_time="2025-12-28T10:45:00.000Z", lag=20_000, tag="b"),
            rec(event_time="2025-12-28T11:00:00.000Z", lag=TWO_DAYS, tag="late"),
            rec(entity="user_2", event_time="2025-12-28T11:30:00.000Z", lag=0, clock_skew=True, tag="skew"),
            rec(source="web", event_type="click", event_time="2025-12-29T00:00:00.000Z", lag=1000, tag="w"),
            rec(event_time="2025-12-27T23:00:00.000Z", lag=1000, tag="before"),
        ]
    )
    # A second receipt of the first event: a duplicate in hour 10.
    adapter.index.record([rec(event_time="2025-12-28T10:15:00.000Z", lag=90_000, tag="a-again")])


def test_hour_rollups_count_each_hour_with_its_lag_histogram(adapter: Adapter, ov: Any) -> None:
    _fill(adapter)
    assert ov.hour_rollups(*RANGE) == [
        HourRollup("demo", "heartbeat", "2025-12-28", 10, 2, 0, 1, 0, _buckets(b0=1, b2=1), 20_000),
        HourRollup("demo", "heartbeat", "2025-12-28", 11, 2, 1, 0, 1, _buckets(b0=1, b9=1), TWO_DAYS),
        HourRollup("web", "click", "2025-12-29", 0, 1, 0, 0, 0, _buckets(b1=1), 1000),
    ]


def test_late_counts_take_the_grace_period(adapter: Adapter, ov: Any) -> None:
    _fill(adapter)
    rows = ov.hour_rollups(*RANGE, grace_ms=TWO_DAYS)
    assert [r.late for r in rows] == [0, 0, 0]
    assert ov.hour_rollups("2025-12-27", "2025-12-28") == [
        HourRollup("demo", "heartbeat", "2025-12-27", 23, 1, 0, 0, 0, _buckets(b1=1), 1000)
    ]


def test_entity_day_counts_count_accepted_events_late_and_skewed(adapter: Adapter, ov: Any) -> None:
    _fill(adapter)
    assert ov.entity_day_counts(*RANGE) == [
        EntityDayCount("user_1", "2025-12-28", 3, 1, 0),
        EntityDayCount("user_1", "2025-12-29", 1, 0, 0),
        EntityDayCount("user_2", "2025-12-28", 1, 0, 1),
    ]


def test_the_event_day_span(adapter: Adapter, ov: Any) -> None:
    assert ov.event_day_span() is None
    _fill(adapter)
    assert ov.event_day_span() == ("2025-12-27", "2025-12-29")


def test_rejections_are_counted_by_receive_day_source_type_and_reason(adapter: Adapter, ov: Any) -> None:
    adapter.index.quarantine(
        [
            rejection("2025-12-28T01:00:00.000Z", reason="bad time", source="demo", event_type="heartbeat"),
            rejection("2025-12-28T02:00:00.000Z", reason="bad time", source="demo", event_type="heartbeat"),
            rejection("2025-12-29T23:59:59.999Z", reason="not JSON"),
            rejection("2025-12-30T00:00:00.000Z", reason="not JSON"),  # the end is exclusive
        ]
    )
    assert ov.rejection_counts(*RANGE) == [
        RejectionCount("2025-12-28", "demo", "heartbeat", "bad time", 2),
        RejectionCount("2025-12-29", None, None, "not JSON", 1),
    ]


def test_churned_windows_are_those_with_two_versions_or_more(adapter: Adapter, ov: Any) -> None:
    if adapter.aggregates is None:
        pytest.skip("no aggregate store")
    m1, m2, m3 = manifest("a", "b"), manifest("a", "b", "c"), manifest("a", "b", "c", "d", "e")
    for n, m in enumerate((m1, m2, m3), start=1):
        adapter.aggregates.append(version(n, m), m)
    adapter.aggregates.append(version(1, m1, entity_id="user_2"), m1)  # one version: no churn
    for n, m in enumerate((m1, m2), start=1):
        adapter.aggregates.append(version(n, m, day="2025-12-31"), m)  # outside the range
    assert ov.churned_windows(*RANGE) == [
        WindowChurn("user_1", "2025-12-28", "daily_event_count", 3, 2, 5, "2025-12-29T03:00:00.000Z")
    ]


@pytest.mark.parametrize("bad", ["2025-12-32", "28/12/2025", ""])
def test_days_that_are_not_days_are_refused(adapter: Adapter, ov: Any, bad: str) -> None:
    for call in (ov.hour_rollups, ov.entity_day_counts, ov.rejection_counts, ov.churned_windows):
        with pytest.raises(InvalidRequest):
            call(bad, "2025-12-30")
        with pytest.raises(InvalidRequest):
            call("2025-12-28", bad)


def test_entity_day_counts_can_leave_out_entities_below_both_floors(adapter: Adapter, ov: Any) -> None:
    _fill(adapter)
    assert [c.entity_id for c in ov.entity_day_counts(*RANGE, min_accepted=3, min_skewed=5)] == ["user_1"] * 2
    assert [c.entity_id for c in ov.entity_day_counts(*RANGE, min_accepted=4, min_skewed=1)] == ["user_2"]
    assert ov.entity_day_counts(*RANGE, min_accepted=4, min_skewed=2) == []


def test_the_pickers_totals_are_the_index_totals_where_the_store_has_rollups(
    adapter: Adapter, ov: Any
) -> None:
    """Where the store keeps rollups (a workspace always; a stack once backfilled, tests/aws/
    test_picker_rollups.py) the source/type totals and a day's entities are read from them, with the
    counts of a full read; elsewhere the port says it has none (None), never a partial list."""
    _fill(adapter)
    totals, entities = ov.partition_totals(), ov.day_entities("2025-12-28")
    if adapter.name == "local":
        assert totals is not None and entities is not None
    if totals is not None:
        assert totals == adapter.index.stats().partitions
    if entities is not None:
        assert [(e.entity_id, e.accepted, e.late, e.skewed) for e in entities] == [
            ("user_1", 3, 1, 0),
            ("user_2", 1, 0, 1),
        ]
    with pytest.raises(InvalidRequest):
        ov.day_entities("2025-12-32")
