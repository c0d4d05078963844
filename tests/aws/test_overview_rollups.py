"""``pik overview`` on a stack with rollups (moto): each :class:`backend.ports.OverviewIndex` method read from
the rollups gives the scan's answer (the lag histogram and largest lag to the precision the port states),
the overview finds the same incidents, a grace period the buckets cannot settle falls back to the scan, and
the reads do not grow with the number of events."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.adapters.aws.overview import AwsOverview
from backend.services.overview import OverviewService
from backend.settings import OverviewSettings
from backend.times import FixedClock
from tests.aws.rollup_env import StreamStack, event, ingest_at, records_of, times
from tests.aws_env import moto_backend

FIRST = datetime(2025, 12, 1, tzinfo=UTC)
DAYS = 15
SERIES = (("web", "click"), ("app", "heartbeat"))
ENTITIES = 4
HOURS = (9, 15)
LAGS = (400, 5_000, 30_000, 200)  # inside one histogram bucket of the port's each: no coarsening
LATE_DAY = "2025-12-12"  # app/heartbeat: every event arrives two days late
STORM_DAY = "2025-12-13"  # web/click: a burst of duplicate receipts
RANGE = ("2025-11-20", "2025-12-16")
SETTINGS = OverviewSettings(days=7, min_baseline=5, entity_min_baseline=3, min_duplicates=5, mad_k=2.0)


def _day(i: int) -> str:
    return (FIRST + timedelta(days=i)).date().isoformat()


def _fill(stack: StreamStack, per_day: int, *, incidents: bool) -> None:
    """``per_day`` events a day per series, round robin over entities and hours (every cell is filled);
    then the rollups are backfilled from them."""
    n = 0
    for d in range(DAYS):
        day = _day(d)
        for source, etype in SERIES:
            sent = []
            for i in range(per_day):
                lag = LAGS[i % len(LAGS)]
                if incidents and (source, day) == ("app", LATE_DAY):
                    lag = 2 * 86_400_000 + 60_000
                event_time, ingested = times(day, HOURS[i % len(HOURS)], i % 60, lag)
                if i % 7 == 3:  # a producer clock ahead now and then
                    ingested -= timedelta(minutes=5)
                body = event(source, f"{source}-u{i % ENTITIES}", event_time, n, etype)
                ingest_at(stack.store, body, ingested)
                sent.append((body, ingested))
                n += 1
            if incidents and (source, day) == ("web", STORM_DAY):
                for body, ingested in sent * 2:
                    ingest_at(stack.store, body, ingested + timedelta(minutes=3))
    rollups = stack.rollups(FIRST + timedelta(days=60))
    rollups.backfill(settle_s=0)


@pytest.fixture(scope="module")
def stack() -> Iterator[StreamStack]:
    store, _settings, close = moto_backend(full=False)
    s = StreamStack(store, close, "")
    _fill(s, 12, incidents=True)
    try:
        yield s
    finally:
        s.close()


def _pair(stack: StreamStack) -> tuple[AwsOverview, AwsOverview]:
    fast, slow = AwsOverview(stack.store, None), AwsOverview(stack.store, None)
    slow.rollups._ready = False
    assert fast.rollups.days_ready()
    return fast, slow


def test_each_method_from_the_rollups_equals_the_scan(stack: StreamStack) -> None:
    fast, slow = _pair(stack)
    assert fast.event_day_span() == slow.event_day_span() == (_day(0), _day(DAYS - 1))
    for grace in (0, 60_000, 3_600_000, 86_400_000):
        a, b = fast.hour_rollups(*RANGE, grace_ms=grace), slow.hour_rollups(*RANGE, grace_ms=grace)
        assert len(a) == len(b) == DAYS * len(SERIES) * len(HOURS)
        assert [replace(r, max_lag_ms=0) for r in a] == [replace(r, max_lag_ms=0) for r in b], grace
        for x, y in zip(a, b, strict=True):  # the documented coarsening: at or above, within 1/16
            assert y.max_lag_ms <= x.max_lag_ms <= y.max_lag_ms * 17 // 16 + 1
        for floors in ((0, 0), (10, 5), (1000, 1000)):
            kw = {"grace_ms": grace, "min_accepted": floors[0], "min_skewed": floors[1]}
            assert fast.entity_day_counts(*RANGE, **kw) == slow.entity_day_counts(*RANGE, **kw)
    assert sum(r.late for r in fast.hour_rollups(*RANGE, grace_ms=3_600_000)) == 12
    assert sum(r.duplicate for r in fast.hour_rollups(*RANGE)) == 24
    assert fast.rejection_counts(*RANGE) == slow.rejection_counts(*RANGE)


def test_the_overview_from_the_rollups_finds_what_the_scan_finds(stack: StreamStack) -> None:
    fast, slow = _pair(stack)
    clock = FixedClock(FIRST + timedelta(days=30))
    found = [
        [
            (f.kind, f.severity, f.source, f.event_type, f.entity_id, f.day, f.summary)
            for f in OverviewService(ov, SETTINGS, clock=clock).overview().findings
        ]
        for ov in (fast, slow)
    ]
    assert found[0] == found[1]
    kinds = {(k, s, d) for k, _, s, _, e, d, _ in found[0] if e is None}
    assert ("late_day", "app", LATE_DAY) in kinds
    assert ("duplicate_storm", "web", STORM_DAY) in kinds


def test_a_lag_just_above_a_histogram_bound_is_counted_below_it_as_documented() -> None:
    store, _settings, close = moto_backend(full=False)
    s = StreamStack(store, close, "")
    try:
        s.rollups().backfill(settle_s=0)
        event_time, ingested = times("2025-12-01", 10, 0, 1_010)  # rollup bucket [992, 1024)
        ingest_at(store, event(source="web", entity="u1", event_time=event_time, n=1), ingested)
        s.rollups().apply_stream(records_of(store))
        fast = AwsOverview(store, None)
        slow = AwsOverview(store, None)
        slow.rollups._ready = False
        (a,), (b,) = (
            fast.hour_rollups("2025-12-01", "2025-12-02"),
            slow.hour_rollups("2025-12-01", "2025-12-02"),
        )
        assert (b.lag_buckets[:2], b.max_lag_ms) == ((0, 1), 1_010)
        assert (a.lag_buckets[:2], a.max_lag_ms) == ((1, 0), 1_023)
    finally:
        s.close()


def test_a_grace_the_buckets_cannot_settle_is_counted_by_the_scan(stack: StreamStack) -> None:
    fast, slow = _pair(stack)
    calls = _count_calls(stack)
    # The late day's events of hour 9 arrived 33 h 1 min to 33 h 23 min after the end of their day: in
    # the hour-wide arrival bucket [33 h, 34 h), which this grace splits (the first one is not late).
    odd = 33 * 3_600_000 + 90_000
    rows = fast.hour_rollups(*RANGE, grace_ms=odd)
    assert calls["Scan"] == 1  # the fallback read the events
    assert rows == slow.hour_rollups(*RANGE, grace_ms=odd)
    assert sum(r.late for r in rows) == 11


def _count_calls(stack: StreamStack) -> Counter[str]:
    calls: Counter[str] = Counter()

    def before(event_name: str, **_: Any) -> None:
        calls[event_name.split(".", 2)[2]] += 1

    def after(parsed: Any, **_: Any) -> None:
        if isinstance(parsed, dict):
            calls["items"] += int(parsed.get("ScannedCount", 0) or 0) + ("Item" in parsed)

    stack.store.ddb.meta.events.register("before-call.*.*", before)
    stack.store.ddb.meta.events.register("after-call.*.*", after)
    return calls


def _cost(per_day: int) -> tuple[Counter[str], Counter[str]]:
    store, _settings, close = moto_backend(full=False)
    s = StreamStack(store, close, "")
    try:
        _fill(s, per_day, incidents=False)
        out = []
        for rollups in (True, False):
            ov = AwsOverview(store, None)
            if not rollups:
                ov.rollups._ready = False
            calls = _count_calls(s)
            OverviewService(ov, SETTINGS, clock=FixedClock(FIRST + timedelta(days=30))).overview()
            out.append(Counter(calls))
        return out[0], out[1]
    finally:
        s.close()


def test_reads_from_the_rollups_do_not_grow_with_the_events() -> None:
    small_fast, small_slow = _cost(4)  # 120 events
    big_fast, big_slow = _cost(12)  # 360 events
    assert small_fast == big_fast  # the same calls and items read, three times the events
    assert "Scan" not in big_fast
    assert big_slow["items"] > small_slow["items"]  # the scan reads every receipt
    assert big_fast["items"] < big_slow["items"]


def test_rollups_backfilled_before_the_directory_was_kept_are_not_read() -> None:
    store, _settings, close = moto_backend(full=False)
    s = StreamStack(store, close, "")
    try:
        s.rollups().backfill(settle_s=0)
        store.ddb.update_item(  # the state an earlier backfill left: ready, without ``days``
            TableName=store.t.events,
            Key={"PK": {"S": "ROLLUP#META"}, "SK": {"S": "STATE"}},
            UpdateExpression="REMOVE #d",
            ExpressionAttributeNames={"#d": "days"},
        )
        event_time, ingested = times("2025-12-01", 10, 0, 500)
        ingest_at(store, event(source="web", entity="u1", event_time=event_time, n=1), ingested)
        s.rollups().apply_stream(records_of(store))
        ov = AwsOverview(store, None)
        calls = _count_calls(s)
        assert ov.rollups.ready() and not ov.rollups.days_ready()
        assert ov.event_day_span() == ("2025-12-01", "2025-12-01")
        assert [r.accepted for r in ov.hour_rollups("2025-12-01", "2025-12-02")] == [1]
        assert calls["Scan"] == 2  # the day span and the counts, by the scan
    finally:
        s.close()
