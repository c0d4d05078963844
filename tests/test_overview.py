"""``pik overview``'s service: one planted incident of every kind is found with its kind and window, and
nothing at all on the same dataset without them; the robust baselines and the range rules beneath."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from backend.errors import InvalidRequest
from backend.kit import Kit, open_local
from backend.ports import LAG_BUCKETS_MS
from backend.services.baseline import day_baseline, robust
from backend.services.findings import Finding, FindingKind, lag_percentile
from backend.services.overview import Overview, OverviewService
from backend.settings import OverviewSettings
from backend.times import FixedClock
from pik_console.overview_view import finding_rows, finding_target
from tests import overview_data


def _key(f: Finding) -> tuple[str, str, str]:
    subject = f.entity_id if f.entity_id is not None else f"{f.source}/{f.event_type}"
    return (f.kind.value, subject, f.day)


@pytest.fixture(scope="module")
def incident_kit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kit]:
    with open_local(tmp_path_factory.mktemp("incidents")) as kit:
        overview_data.build(kit.index, kit.aggregates, incidents=True)
        yield kit


@pytest.fixture(scope="module")
def incidents(incident_kit: Kit) -> Overview:
    return incident_kit.overview().overview()


def test_every_planted_incident_is_found_with_its_kind_and_window_and_nothing_else(
    incidents: Overview,
) -> None:
    assert {_key(f) for f in incidents.findings} == overview_data.PLANTED
    assert {f.kind for f in incidents.findings} == set(FindingKind)


def test_the_default_range_is_the_last_14_event_days(incidents: Overview) -> None:
    assert (incidents.first_day, incidents.end_day) == ("2025-12-01", "2025-12-15")
    assert incidents.history_from == "2025-11-03"


def test_findings_are_ranked_most_severe_first(incidents: Overview) -> None:
    severities = [f.severity for f in incidents.findings]
    assert severities == sorted(severities, reverse=True)
    assert all(0 < s <= 100 for s in severities)


def test_the_hour_and_the_evidence_point_at_the_planted_window(incidents: Overview) -> None:
    by_kind = {
        f.kind: f for f in incidents.findings if f.entity_id is None or f.kind is not FindingKind.MISSING_DAY
    }
    lag = by_kind[FindingKind.LAG_SPIKE]
    assert set(lag.evidence["hours"]) == {10, 11, 12} and lag.hour in (10, 11, 12)
    assert lag.evidence["p90_ms"] >= 45 * 60_000 and lag.evidence["baseline_p90_ms"] < 60_000
    storm = by_kind[FindingKind.DUPLICATE_STORM]
    assert set(storm.evidence["hours"]) == {"14", "15"} and storm.evidence["duplicates"] >= 40
    rejected = by_kind[FindingKind.REJECTION_SPIKE]
    assert rejected.evidence["rejected"] >= 60
    reasons = [r["reason"] for r in rejected.evidence["top_reasons"]]
    assert reasons[0] == "event_time: must be ISO-8601 with a clock time"  # grouped without the quoted value
    late = by_kind[FindingKind.LATE_DAY]
    assert late.evidence["late"] > late.evidence["on_time"] and late.evidence["same_weekday"] is True
    churn = by_kind[FindingKind.AGGREGATE_CHURN]
    assert (
        churn.metric,
        churn.evidence["versions"],
        churn.evidence["first_value"],
        churn.evidence["last_value"],
    ) == (
        "daily_event_count",
        4,
        10,
        18,
    )
    skew = by_kind[FindingKind.CLOCK_SKEW]
    assert skew.evidence["skewed"] == skew.evidence["events"] > 0


def test_a_missing_day_says_whether_anything_arrived_late(incidents: Overview) -> None:
    [web] = [f for f in incidents.findings if f.kind is FindingKind.MISSING_DAY and f.source == "web"]
    assert web.evidence["late"] == 0 and web.evidence["events"] < web.evidence["baseline_per_day"] / 2
    assert "none arrived late" in web.summary and web.day in web.summary


@pytest.mark.parametrize("seed", [18, 5])
def test_the_same_shape_without_incidents_has_no_finding(tmp_path: Path, seed: int) -> None:
    with open_local(tmp_path / "clean") as kit:
        overview_data.build(kit.index, kit.aggregates, incidents=False, seed=seed)
        report = kit.overview().overview()
    assert report.findings == [] and report.omitted == 0


def test_thresholds_come_from_settings_toml(incident_kit: Kit) -> None:
    (Path(incident_kit.location) / "settings.toml").write_text("[overview]\nmin_rejections = 500\n")
    try:
        kinds = {f.kind for f in incident_kit.overview().overview().findings}
    finally:
        (Path(incident_kit.location) / "settings.toml").unlink()
    assert FindingKind.REJECTION_SPIKE not in kinds and FindingKind.MISSING_DAY in kinds


def test_max_findings_keeps_the_most_severe_and_counts_the_rest(incident_kit: Kit) -> None:
    assert incident_kit.overview_index is not None
    full = OverviewService(incident_kit.overview_index).overview()
    cut = OverviewService(incident_kit.overview_index, OverviewSettings(max_findings=3)).overview()
    assert cut.findings == full.findings[:3] and cut.omitted == len(full.findings) - 3


def test_an_explicit_range_limits_the_findings_to_its_days(incident_kit: Kit) -> None:
    report = incident_kit.overview().overview("2025-12-08", "2025-12-09")
    assert {_key(f) for f in report.findings} == {
        ("lag_spike", "billing/payment", "2025-12-08"),
        ("duplicate_storm", "web/click", "2025-12-09"),
    }
    assert (report.first_day, report.end_day) == ("2025-12-08", "2025-12-10")


def test_since_alone_runs_to_the_last_event_day_and_until_alone_covers_the_days_before(
    incident_kit: Kit,
) -> None:
    service = incident_kit.overview()
    assert service.range("2025-12-10", None) == ("2025-12-10", "2025-12-15")
    assert service.range(None, "2025-11-20") == ("2025-11-07", "2025-11-21")


@pytest.mark.parametrize(
    ("since", "until", "message"),
    [
        ("2025-13-01", None, "--since '2025-13-01' is not a day"),
        ("yesterday", None, "--since 'yesterday' is not a day"),
        (None, "2025-02-30", "--until '2025-02-30' is not a day"),
        ("2025-12-10", "2025-12-01", "--until 2025-12-01 is before --since 2025-12-10"),
        ("2020-01-01", "2025-01-01", "longer than 366 days"),
    ],
)
def test_a_bad_range_is_refused_with_what_is_wrong(
    incident_kit: Kit, since: str, until: str, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(")):
        incident_kit.overview().overview(since, until)


def test_an_empty_workspace_has_nothing_to_report(tmp_path: Path) -> None:
    with open_local(tmp_path / "empty") as kit:
        report = kit.overview().overview()
    assert report.findings == []


# -- the robust baseline ------------------------------------------------------------------------------------


def test_the_baseline_is_median_and_mad_so_one_outlier_does_not_move_it() -> None:
    base = robust([100, 101, 99, 100, 0, 102, 98])
    assert base.median == 100 and base.spread == pytest.approx(1.4826)
    assert base.below(90, 4) and not base.below(97, 4)


def test_with_three_weeks_the_baseline_is_the_same_weekday() -> None:
    # Mondays carry 300, every other day 100: a Monday of 300 is usual, a Tuesday of 300 is not.
    series = {}
    for k in range(28):
        day = f"2025-11-{3 + k:02d}"
        series[day] = 300.0 if k % 7 == 0 else 100.0
    monday = day_baseline(series, "2025-11-24")
    assert monday.weekday and monday.median == 300
    short = {d: v for d, v in list(series.items())[:14]}
    assert not day_baseline(short, "2025-11-10").weekday and day_baseline(short, "2025-11-10").median == 100


def test_lag_percentile_reads_bucket_bounds_capped_by_the_largest_lag() -> None:
    buckets = [0] * (len(LAG_BUCKETS_MS) + 1)
    buckets[1] = 9  # 1-10 s
    buckets[4] = 1  # 5-15 min
    assert lag_percentile(buckets, 600_000, 50) == 10_000
    assert lag_percentile(buckets, 600_000, 99) == 600_000
    assert lag_percentile([0] * len(buckets), 0, 90) is None


# -- what the console pane shows ----------------------------------------------------------------


def test_rows_keep_markup_in_ids_as_text_and_targets_open_the_right_pane(incidents: Overview) -> None:
    hostile = Finding(
        kind=FindingKind.CLOCK_SKEW,
        severity=40,
        entity_id="[bold red]x\x1b[2J",
        day="2025-12-11",
        summary="entity [bold red]x\x1b[2J on 2025-12-11: ...",
        next="pik events",
    )
    [row] = finding_rows([hostile])
    assert "\x1b" not in "".join(row) and row[1] == "clock_skew" and row[3] == "2025-12-11"
    panes = {f.kind: finding_target(f).pane for f in incidents.findings if f.entity_id is None}
    assert panes[FindingKind.LAG_SPIKE] == "lag" and panes[FindingKind.MISSING_DAY] == "gaps"
    target = finding_target(next(f for f in incidents.findings if f.kind is FindingKind.DUPLICATE_STORM))
    assert (target.pane, target.status, target.source, target.day) == (
        "events",
        "DUPLICATE",
        "web",
        "2025-12-09",
    )


def test_a_day_not_over_yet_is_not_called_short(incident_kit: Kit) -> None:
    # On a live stack today is always below its usual count: a day is judged once it ended plus the grace.
    assert incident_kit.overview_index is not None
    index = incident_kit.overview_index

    def short_days(now: str) -> set[tuple[str, str, str]]:
        clock = FixedClock(datetime.fromisoformat(now))
        report = OverviewService(index, clock=clock).overview("2025-12-01", "2025-12-03")
        return {_key(f) for f in report.findings if f.kind is FindingKind.MISSING_DAY}

    assert short_days("2025-12-03T23:30:00+00:00") == set()
    assert short_days("2025-12-04T00:30:00+00:00") == set()  # within the hour of grace
    assert short_days("2025-12-04T01:00:00+00:00") == {("missing_day", "web/click", "2025-12-03")}
