"""Contract of :class:`backend.ports.InvestigationIndex`: lean scans that list exactly what the index
queries list, in the same order, and per-day counts split by arrival time with an exact grace boundary."""

from __future__ import annotations

from typing import Any

import pytest

from backend.errors import InvalidRequest
from backend.ports import DayCount, ManifestEntry, Receipt, WindowInputsIndex
from tests.conftest import Adapter
from tests.contract.test_event_index import WINDOW, collect, rec


@pytest.fixture
def inv(adapter: Adapter) -> Any:
    if adapter.investigate is None:
        pytest.skip(f"the {adapter.name} adapter has no InvestigationIndex yet")
    return adapter.investigate


def _same(r: Receipt, e: Any) -> None:
    assert (r.event_id, r.accepted, r.source, r.event_type, r.entity_id) == (
        e.event_id,
        e.status.value == "ACCEPTED",
        e.source,
        e.event_type,
        e.entity_id,
    )
    assert (r.event_time, r.ingest_time, r.ingest_lag_ms, r.clock_skew) == (
        e.event_time,
        e.ingest_time,
        e.ingest_lag_ms,
        e.clock_skew,
    )
    assert (r.payload_sha, r.s3_key, r.receipt, r.day) == (e.payload_sha, e.s3_key, e.receipt, e.day)


def _fill(adapter: Adapter) -> None:
    records = []
    for i in range(12):
        t = f"2025-12-28T{i:02d}:30:00.000Z"
        records.append(rec(event_time=t, lag=1000 * (12 - i), tag=f"a{i}"))
        if i % 3 == 0:
            records.append(rec(event_time=t, lag=50_000 + i, tag=f"d{i}"))  # a duplicate receipt
    records.append(rec(event_time="2025-12-28T05:00:00.000Z", tag="x", clock_skew=True, lag=0))
    records.append(rec(entity="other", event_time="2025-12-28T05:00:00.000Z", tag="o"))
    records.append(rec(event_time="2025-12-29T00:00:00.000Z", tag="next-day"))  # outside the window
    adapter.index.record(records)


@pytest.mark.parametrize("limit", [1, 4, 1000])
def test_scan_entity_lists_what_query_entity_lists(adapter: Adapter, inv: Any, limit: int) -> None:
    _fill(adapter)
    expected = collect(adapter.index.query_entity, 1000, entity_id="user_1", start=WINDOW[0], end=WINDOW[1])
    got = collect(inv.scan_entity, limit, entity_id="user_1", start=WINDOW[0], end=WINDOW[1])
    assert len(got) == len(expected) == 17
    for r, e in zip(got, expected, strict=True):
        _same(r, e)
    accepted = collect(
        inv.scan_entity, limit, entity_id="user_1", start=WINDOW[0], end=WINDOW[1], accepted_only=True
    )
    assert [r.event_id for r in accepted] == [e.event_id for e in expected if e.status.value == "ACCEPTED"]
    assert all(r.accepted for r in accepted)


def test_window_inputs_are_the_accepted_scan_sorted_by_event_id(adapter: Adapter, inv: Any) -> None:
    if not isinstance(inv, WindowInputsIndex):
        pytest.skip(f"the {adapter.name} adapter reads windows by scan_entity pages only")
    _fill(adapter)
    adapter.index.record(
        [
            rec(event_time=f"2025-12-28T{i:02d}:45:00.000Z", source="ios", event_type="tap", tag=f"t{i}")
            for i in range(5)
        ]
    )
    scanned = collect(
        inv.scan_entity, 1000, entity_id="user_1", start=WINDOW[0], end=WINDOW[1], accepted_only=True
    )
    scanned.sort(key=lambda r: r.event_id)
    got = inv.window_inputs("user_1", *WINDOW)
    assert len(got.entries) == len(scanned) == 18
    assert got.entries == [
        ManifestEntry(r.event_id, r.payload_sha, r.ingest_time, r.ingest_lag_ms) for r in scanned
    ]
    assert got.streams == [(r.source, r.event_type) for r in scanned]
    assert {("ios", "tap"), ("demo", "heartbeat")} == set(got.streams)
    # Half-open, as the scan: the next day's event is not in the day's window, and is the next day's only.
    assert [
        e.ingest_time
        for e in inv.window_inputs("user_1", "2025-12-29T00:00:00.000Z", "2025-12-30T00:00:00.000Z").entries
    ] == ["2025-12-29T00:00:01.000Z"]
    assert inv.window_inputs("nobody", *WINDOW).entries == []
    with pytest.raises(InvalidRequest, match="not a pair of ISO date-times"):
        inv.window_inputs("user_1", "yesterday", WINDOW[1])


def test_scan_entity_windows_are_half_open(adapter: Adapter, inv: Any) -> None:
    adapter.index.record(
        [rec(event_time="2025-12-28T10:00:00.000Z", tag="in"), rec(event_time="2025-12-28T11:00:00.000Z")]
    )
    page = inv.scan_entity("user_1", "2025-12-28T10:00:00.000Z", "2025-12-28T11:00:00.000Z")
    assert [r.event_time for r in page.items] == ["2025-12-28T10:00:00.000Z"]
    assert inv.scan_entity("nobody", *WINDOW).items == []
    with pytest.raises(InvalidRequest):
        inv.scan_entity("user_1", "yesterday", WINDOW[1])


@pytest.mark.parametrize("limit", [1, 5, 1000])
def test_scan_partition_lists_what_query_partition_lists(adapter: Adapter, inv: Any, limit: int) -> None:
    _fill(adapter)
    expected = collect(
        adapter.index.query_partition, 1000, source="demo", event_type="heartbeat", day="2025-12-28"
    )
    got = collect(inv.scan_partition, limit, source="demo", event_type="heartbeat", day="2025-12-28")
    assert len(got) == len(expected) == 18
    for r, e in zip(got, expected, strict=True):
        _same(r, e)
    lags = [r.ingest_lag_ms for r in got]
    assert lags == sorted(lags)
    accepted = collect(
        inv.scan_partition, limit, source="demo", event_type="heartbeat", day="2025-12-28", accepted_only=True
    )
    assert len(accepted) == 14 and all(r.accepted for r in accepted)


def test_a_cursor_of_one_scan_is_refused_by_another(adapter: Adapter, inv: Any) -> None:
    _fill(adapter)
    page = inv.scan_entity("user_1", *WINDOW, limit=2)
    assert page.next_cursor
    with pytest.raises(InvalidRequest):
        inv.scan_partition("demo", "heartbeat", "2025-12-28", after=page.next_cursor)


def _counting_records() -> list[Any]:
    grace = 3_600_000
    return [
        # 2025-12-27: two on time, one exactly at the boundary (late), one a millisecond before (on time)
        rec(event_time="2025-12-27T08:00:00.000Z", lag=1000, tag="a"),
        rec(event_time="2025-12-27T09:00:00.000Z", lag=1000, tag="b"),
        rec(event_time="2025-12-27T23:00:00.000Z", lag=3_600_000 + grace, tag="boundary"),
        rec(event_time="2025-12-27T23:00:00.001Z", lag=3_600_000 + grace - 2, tag="just-before"),
        rec(event_time="2025-12-27T08:00:00.000Z", lag=9000, tag="a-dup"),  # duplicate of "a"
        # 2025-12-29: everything two days late
        rec(event_time="2025-12-29T01:00:00.000Z", lag=47 * 3_600_000, tag="c"),
        rec(event_time="2025-12-29T02:00:00.000Z", lag=48 * 3_600_000, tag="d"),
        # outside the range, and another entity / partition
        rec(event_time="2025-12-30T01:00:00.000Z", tag="outside"),
        rec(entity="other", event_time="2025-12-27T01:00:00.000Z", source="web", tag="other"),
    ]


def test_day_counts_of_an_entity_split_late_arrivals_at_the_exact_boundary(
    adapter: Adapter, inv: Any
) -> None:
    adapter.index.record(_counting_records())
    got = inv.day_counts_entity("user_1", "2025-12-26", "2025-12-30", grace_ms=3_600_000)
    assert got == [
        DayCount(
            "2025-12-27", accepted=4, late=1, duplicate=1,
            first_late_ingest="2025-12-28T01:00:00.000Z", last_late_ingest="2025-12-28T01:00:00.000Z",
        ),
        DayCount(
            "2025-12-29", accepted=2, late=2, duplicate=0,
            first_late_ingest="2025-12-31T00:00:00.000Z", last_late_ingest="2025-12-31T02:00:00.000Z",
        ),
    ]  # fmt: skip
    no_grace = inv.day_counts_entity("user_1", "2025-12-27", "2025-12-28")
    assert [(c.accepted, c.late) for c in no_grace] == [(4, 2)]
    assert inv.day_counts_entity("nobody", "2025-12-26", "2025-12-30") == []
    # Without the late figures, the same days and counts (a store may leave lateness out).
    lean = inv.day_counts_entity("user_1", "2025-12-26", "2025-12-30", grace_ms=3_600_000, late=False)
    assert [(c.day, c.accepted, c.duplicate) for c in lean] == [("2025-12-27", 4, 1), ("2025-12-29", 2, 0)]


def test_day_counts_of_a_partition(adapter: Adapter, inv: Any) -> None:
    adapter.index.record(_counting_records())
    got = inv.day_counts_partition("demo", "heartbeat", "2025-12-27", "2025-12-30", grace_ms=3_600_000)
    assert [(c.day, c.accepted, c.late, c.duplicate) for c in got] == [
        ("2025-12-27", 4, 1, 1),
        ("2025-12-29", 2, 2, 0),
    ]
    web = inv.day_counts_partition("web", "heartbeat", "2025-12-01", "2026-01-01")
    assert [(c.day, c.accepted) for c in web] == [("2025-12-27", 1)]
    assert inv.day_counts_partition("demo", "heartbeat", "2025-12-28", "2025-12-29") == []


@pytest.mark.parametrize("bad", ["2025-13-01", "yesterday", "2025-12-01T00:00:00Z"])
def test_day_counts_refuse_malformed_days(adapter: Adapter, inv: Any, bad: str) -> None:
    with pytest.raises(InvalidRequest):
        inv.day_counts_entity("user_1", bad, "2025-12-30")
    with pytest.raises(InvalidRequest):
        inv.day_counts_partition("demo", "heartbeat", "2025-12-01", bad)
    with pytest.raises(InvalidRequest):
        inv.day_counts_entity("user_1", "2025-12-01", "2025-12-30", grace_ms=-1)


def test_a_carried_payload_comes_back_as_recorded_or_not_at_all(adapter: Adapter, inv: Any) -> None:
    """A store may keep a record's small payload (EventRecord.payload) and hand it back in scans, or keep
    none (the reader then reads the raw bytes); it never hands back another text."""
    text = '{"steps":7,"zone":"é"}'
    carried = rec(event_time="2025-12-28T10:00:00.000Z", tag="p").model_copy(update={"payload": text})
    plain = rec(event_time="2025-12-28T11:00:00.000Z", tag="q")
    adapter.index.record([carried, plain])
    got = {
        r.event_id: r.payload
        for r in collect(inv.scan_entity, 10, entity_id="user_1", start=WINDOW[0], end=WINDOW[1])
    }
    assert got[carried.event_id] in (text, None)
    assert got[plain.event_id] is None
    assert adapter.name != "aws" or got[carried.event_id] == text
