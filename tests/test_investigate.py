"""Investigation queries (`backend/services/lag.py`, `gaps.py`, the duration and day helpers of
`backend/times.py`) and `pik lag` / `pik gaps` end to end."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backend.adapters.local.investigate import LocalInvestigation, iso_ms
from backend.adapters.local.store import LocalStore
from backend.errors import InvalidRequest
from backend.services.gaps import DayStatus, GapService
from backend.services.ingest import IngestService, Received
from backend.services.lag import LagService, percentile
from backend.times import day_range, fmt, human_ms, parse_duration
from pik_console.cli import main
from tests.conftest import make_event
from tests.contract.test_event_index import rec

H = 3_600_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalStore]:
    s = LocalStore(tmp_path / "ws")
    yield s
    s.close()


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


# -- helpers -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [("90s", 90_000), ("15m", 900_000), ("1h30m", 5_400_000), ("2d", 172_800_000), ("250ms", 250),
     ("45", 45_000), ("1.5h", 5_400_000), (" 2 h ", 7_200_000)],
)  # fmt: skip
def test_durations(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "h", "1x", "-5m", "1h foo", "1e3s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_duration(text)


def test_human_durations() -> None:
    assert [human_ms(v) for v in (850, 4200, 42_000, 185_000, 2 * H + 14 * 60_000, 51 * H)] == [
        "850 ms", "4.2 s", "42 s", "3m 05s", "2h 14m", "2d 03h",
    ]  # fmt: skip


def test_nearest_rank_percentiles() -> None:
    assert percentile([], 50) is None
    assert percentile([1, 2, 3, 4], 50) == 2
    assert percentile(list(range(1, 101)), 90) == 90
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([7], 99) == 7


def test_day_ranges_are_half_open_and_checked() -> None:
    assert day_range("2025-12-30", "2026-01-02") == ["2025-12-30", "2025-12-31", "2026-01-01"]
    for first, end in (("2025-12-02", "2025-12-01"), ("2025-12-01", "2025-12-01"), ("x", "2025-12-01")):
        with pytest.raises(InvalidRequest):
            day_range(first, end)
    with pytest.raises(InvalidRequest):
        day_range("2000-01-01", "2025-01-01")


def test_fast_time_formatting_matches_the_stored_form() -> None:
    for when in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2025, 12, 28, 23, 59, 59, 999_000, tzinfo=UTC),
        datetime(2024, 2, 29, 0, 0, 0, 1000, tzinfo=UTC),
        datetime(2099, 12, 31, 12, 0, tzinfo=UTC),
    ):
        ms = (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
        assert iso_ms(ms) == fmt(when)


# -- lag ------------------------------------------------------------------------------------------------


def test_lag_report(store: LocalStore) -> None:
    records = [rec(event_time=f"2025-12-28T{h:02d}:00:00.000Z", lag=lag, tag=f"t{h}") for h, lag in
               [(1, 1000), (1, 2000), (2, 3000), (3, 2 * H), (4, 5 * H)]]  # fmt: skip
    # Distinct events in the same hour need distinct ids.
    records[1] = rec(event_time="2025-12-28T01:00:00.000Z", event_id="f" * 64, lag=2000, tag="t1b")
    records.append(rec(event_time="2025-12-28T01:00:00.000Z", lag=99 * H, tag="dup"))  # duplicate receipt
    records.append(rec(event_time="2025-12-28T06:00:00.000Z", lag=0, clock_skew=True, tag="skew"))
    store.record(records)
    report = LagService(store, LocalInvestigation(store)).lag("demo", "heartbeat", "2025-12-28", top=2)
    assert report.count == 6 and report.duplicates == 1 and report.clock_skew == 1
    assert (report.p50_ms, report.p90_ms, report.p99_ms, report.max_ms) == (2000, 5 * H, 5 * H, 5 * H)
    assert report.late == 2  # lag >= 1 h
    assert [(h.hour, h.count, h.late, h.max_ms) for h in report.hours] == [
        ("01", 2, 0, 2000), ("02", 1, 0, 3000), ("03", 1, 1, 2 * H), ("04", 1, 1, 5 * H), ("06", 1, 0, 0),
    ]  # fmt: skip
    assert [e.ingest_lag_ms for e in report.largest] == [5 * H, 2 * H]
    assert all(e.status.value == "ACCEPTED" for e in report.largest)
    empty = LagService(store, LocalInvestigation(store)).lag("demo", "heartbeat", "2025-12-01")
    assert empty.count == 0 and empty.p50_ms is None and empty.largest == []


# -- gaps -----------------------------------------------------------------------------------------------


def _ingest_days(store: LocalStore, days: dict[str, tuple[int, int]], entity: str = "user_1") -> None:
    """For each day, ``(on_time, late)`` events; the late ones arrive two days after the day."""
    clock_times: list[datetime] = []
    bodies: list[bytes] = []
    for day, (on_time, late) in days.items():
        base = datetime.fromisoformat(day).replace(tzinfo=UTC)
        for i in range(on_time + late):
            t = base + timedelta(hours=8, minutes=i)
            bodies.append(make_event(entity_id=entity, event_time=fmt(t), payload={"i": i}))
            clock_times.append(t + timedelta(seconds=5) if i < on_time else base + timedelta(days=2, hours=9))

    class Script:
        def now(self) -> datetime:
            return clock_times.pop(0)

    IngestService(store, store, Script()).ingest_batch([Received(b) for b in bodies])


def test_gaps_classify_short_days(store: LocalStore) -> None:
    _ingest_days(
        store,
        {
            "2025-12-01": (10, 0),
            "2025-12-02": (10, 0),
            "2025-12-03": (1, 9),  # arrived late
            "2025-12-04": (10, 0),
            "2025-12-05": (2, 1),  # short even with its late arrivals: never arrived
            # 2025-12-06: nothing at all
            "2025-12-07": (9, 1),
        },
    )
    service = GapService(store, LocalInvestigation(store))
    report = service.gaps("2025-12-01", "2025-12-08", entity_id="user_1")
    assert report.expected == 10
    by_day = {g.day: g for g in report.days}
    assert [g.status for g in report.days] == [
        DayStatus.OK, DayStatus.OK, DayStatus.ARRIVED_LATE, DayStatus.OK, DayStatus.NEVER_ARRIVED,
        DayStatus.NEVER_ARRIVED, DayStatus.OK,
    ]  # fmt: skip
    assert (by_day["2025-12-03"].on_time, by_day["2025-12-03"].late) == (1, 9)
    assert by_day["2025-12-03"].first_late_ingest == "2025-12-05T09:00:00.000Z"
    assert report.missing_days == ["2025-12-06"]
    assert report.never_arrived == ["2025-12-05", "2025-12-06"]
    assert report.arrived_late == ["2025-12-03"]
    # A partition scope sees the same events; an expected count overrides the median.
    same = service.gaps("2025-12-01", "2025-12-08", source="demo", event_type="heartbeat", expected=30)
    assert same.expected_given and same.arrived_late == []
    assert len(same.never_arrived) == 7
    # A grace period of three days makes every late arrival on time.
    relaxed = service.gaps("2025-12-01", "2025-12-08", entity_id="user_1", grace_ms=72 * H)
    assert relaxed.arrived_late == [] and all(g.late == 0 for g in relaxed.days)


def test_gaps_need_one_scope(store: LocalStore) -> None:
    service = GapService(store, LocalInvestigation(store))
    with pytest.raises(InvalidRequest):
        service.gaps("2025-12-01", "2025-12-08")
    with pytest.raises(InvalidRequest):
        service.gaps("2025-12-01", "2025-12-08", entity_id="e", source="demo", event_type="heartbeat")
    with pytest.raises(InvalidRequest):
        service.gaps("2025-12-01", "2025-12-08", source="demo")
    with pytest.raises(InvalidRequest):
        service.gaps("2025-12-01", "2025-12-08", entity_id="e", min_ratio=0)


# -- CLI --------------------------------------------------------------------------------------------------


@pytest.fixture
def ws(store: LocalStore) -> str:
    _ingest_days(store, {"2025-12-01": (5, 0), "2025-12-02": (0, 5), "2025-12-03": (5, 0)})
    _ingest_days(store, {"2025-12-02": (1, 0)}, entity="[bold red]x[/bold red]")
    return str(store.path)


def test_pik_lag(ws: str) -> None:
    code, out, err = call(
        "lag", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-02", "--workspace", ws
    )
    assert code == 0, err
    assert "6 accepted events" in out and "late (lag >= 1h 00m): 5 of 6" in out
    assert "Largest lag first (6 of 6)" in out
    assert "[bold red]x[/bold red]" in out  # shown literally
    code, out, _ = call(
        "lag", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-02", "--json", "--top", "2",
        "--late", "2d", "--workspace", ws,
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and data["count"] == 6 and data["late"] == 5 and len(data["largest"]) == 2
    assert data["largest"][0]["ingest_lag_ms"] == data["max_ms"]
    code, out, _ = call("lag", "--source", "demo", "--type", "nope", "--day", "2025-12-02", "--workspace", ws)
    assert code == 0 and "No accepted events" in out


def test_pik_gaps(ws: str) -> None:
    code, out, err = call(
        "gaps", "--entity", "user_1", "--start", "2025-12-01", "--end", "2025-12-05", "--workspace", ws
    )
    assert code == 0, err
    assert "arrived late (late ones ingested 2025-12-04T09:00 .. 2025-12-04T09:00)" in out
    assert "Never arrived: 1 day(s) (1 without a single event): 2025-12-04" in out
    assert "Arrived late: 1 day(s): 2025-12-02" in out
    assert "pik replay --entity user_1 --start 2025-12-02 --end 2025-12-03" in out
    code, out, _ = call(
        "gaps", "--source", "demo", "--type", "heartbeat", "--start", "2025-12-01", "--end", "2025-12-04",
        "--json", "--workspace", ws,
    )  # fmt: skip
    data = json.loads(out)
    assert code == 0 and [d["events"] for d in data["days"]] == [5, 6, 5]
    assert data["arrived_late"] == ["2025-12-02"] and data["never_arrived"] == []


@pytest.mark.parametrize(
    "argv",
    [
        ["gaps", "--start", "2025-12-01", "--end", "2025-12-05"],
        ["gaps", "--entity", "e", "--source", "s", "--start", "2025-12-01", "--end", "2025-12-05"],
        ["gaps", "--entity", "e", "--start", "2025-12-05", "--end", "2025-12-01"],
        ["gaps", "--entity", "e", "--start", "2025-12-01", "--end", "2025-12-05", "--grace", "soon"],
        ["lag", "--source", "s", "--type", "t", "--day", "2025-02-30"],
        ["lag", "--source", "s", "--type", "t", "--day", "2025-02-01", "--late", "x"],
    ],
)
def test_usage_errors_exit_2(ws: str, argv: list[str]) -> None:
    code, _, err = call(*argv, "--workspace", ws)
    assert code == 2 and "error:" in err


def test_a_missing_workspace_is_a_failure(tmp_path: Path) -> None:
    code, _, err = call(
        "lag", "--source", "s", "--type", "t", "--day", "2025-12-01", "--workspace", str(tmp_path / "none")
    )
    assert code == 1 and "no workspace" in err
    assert not (tmp_path / "none").exists()
