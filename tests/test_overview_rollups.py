"""The local overview from its rollup tables (schema version 5) gives the same answer as counting every event
(:class:`backend.adapters.local.overview.ScanOverview`), after any sequence of ingests, whether the rollups
were brought up to date in between or not, and on a read-only workspace, which writes nothing."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.local.overview import LocalOverview, ScanOverview
from backend.adapters.local.store import LocalStore
from backend.lag_buckets import arrival_bucket
from backend.times import fmt
from tests.contract.test_event_index import rec, rejection

DAY0 = datetime(2025, 12, 27, tzinfo=UTC)
RANGE = ("2025-12-26", "2025-12-31")
HOUR, DAY = 3_600_000, 86_400_000
# Whole hours and days are bucket boundaries (read from the rollups); 1,234,567 ms splits a minute bucket
# (the late count then comes from the events).
GRACES = (0, HOUR, 2 * DAY, 1_234_567)

_event = st.tuples(
    st.sampled_from([("web", "click"), ("app", "beat")]),
    st.sampled_from(["u1", "u2", "u3", "u#4"]),
    st.integers(0, 2),  # event day
    st.integers(0, DAY - 1),  # time of day
    st.one_of(
        st.integers(0, 40_000),
        st.integers(0, 3 * DAY),
        st.sampled_from([HOUR - 1, HOUR, 2 * DAY, 1_234_566, 1_234_567]),
    ),
    st.booleans(),  # clock skew
)
_rejection = st.tuples(
    st.integers(0, 2),
    st.sampled_from([None, "web", "app", ""]),
    st.sampled_from([None, "click"]),
    st.sampled_from(["invalid JSON", "source: bad, got 'x y'", "too large"]),
)
_step = st.tuples(
    st.lists(_event, max_size=12),
    st.lists(st.integers(0, 30), max_size=4),  # receive again an earlier event (a duplicate receipt)
    st.lists(_rejection, max_size=4),
    st.sampled_from(["catch up", "chunks of 3", "leave"]),
)


def _record(event: Any, n: int) -> Any:
    (source, event_type), entity, day, at, lag, skew = event
    when = fmt(DAY0 + timedelta(days=day, milliseconds=at))
    return rec(entity, when, source=source, event_type=event_type, lag=lag, clock_skew=skew, tag=f"t{n}")


def _answers(ov: Any) -> list[Any]:
    out: list[Any] = [ov.rejection_counts(*RANGE), ov.rejection_counts("2025-12-28", "2025-12-29")]
    for grace in GRACES:
        out.append(ov.hour_rollups(*RANGE, grace_ms=grace))
        out.append(ov.hour_rollups("2025-12-28", "2025-12-29", grace_ms=grace))
        out.append(ov.entity_day_counts(*RANGE, grace_ms=grace))
        out.append(ov.entity_day_counts(*RANGE, grace_ms=grace, min_accepted=3, min_skewed=2))
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_step, min_size=1, max_size=4))
def test_the_rollups_answer_as_the_scan_after_any_ingests(steps: list[Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp))
        reader = LocalStore(Path(tmp), upgrade=False)  # read-only: its overview adds the tail, writes nothing
        try:
            rollup, scan, read_only = LocalOverview(store), ScanOverview(store), LocalOverview(reader)
            sent: list[Any] = []
            for events, again, rejections, keep in steps:
                records = [_record(e, len(sent) + i) for i, e in enumerate(events)]
                records += [_record(sent[i], 1000 + i) for i in again if i < len(sent)]
                sent += events
                if records:
                    store.record(records)
                store.quarantine(
                    [
                        rejection(fmt(DAY0 + timedelta(days=d, hours=5)), source=s, event_type=t, reason=r)
                        for d, s, t, r in rejections
                    ]
                )
                if keep == "catch up":
                    rollup.rollups.catch_up()
                elif keep == "chunks of 3":
                    rollup.rollups.catch_up(chunk=3)
                expected = _answers(scan)
                assert _answers(read_only) == expected
                assert read_only.partition_totals() == store.stats().partitions
                assert _answers(rollup) == expected  # brings the rollups up to date first
                assert rollup.rollups.behind() == 0
        finally:
            reader.close()
            store.close()


def _tables(path: Path) -> list[Any]:
    conn = sqlite3.connect(path / "pik.sqlite3")
    try:
        return [
            conn.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("rollup_watermarks", "rollup_hours", "rollup_entity_days", "rollup_rejections")
        ]
    finally:
        conn.close()


def test_a_read_only_workspace_answers_without_writing(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.record([rec("u1", "2025-12-28T10:00:00.000Z", lag=2 * HOUR, tag="a")])
    LocalOverview(store).rollups.catch_up()
    store.record([rec("u2", "2025-12-28T23:30:00.000Z", lag=2 * HOUR, tag="b")])  # not counted yet
    store.quarantine([rejection("2025-12-28T05:00:00.000Z", source="web")])
    before = _tables(tmp_path)
    reader = LocalStore(tmp_path, upgrade=False)
    try:
        ov = LocalOverview(reader)
        rows = ov.hour_rollups(*RANGE, grace_ms=HOUR)
        assert [(r.hour, r.accepted, r.late) for r in rows] == [(10, 1, 0), (23, 1, 1)]
        assert [r.count for r in ov.rejection_counts(*RANGE)] == [1]
        assert ov.rollups.behind() == 2
    finally:
        reader.close()
    assert _tables(tmp_path) == before
    store.close()


def test_round_grace_periods_are_read_from_the_rollups_and_a_split_bucket_from_the_events(
    tmp_path: Path,
) -> None:
    store = LocalStore(tmp_path)
    try:
        # Arrived 20 min 34.5 s after its day ended: in the minute bucket [20 min, 21 min).
        store.record([rec("u1", "2025-12-28T12:00:00.000Z", lag=12 * HOUR + 1_234_500, tag="a")])
        ov = LocalOverview(store)
        ov.rollups.catch_up()
        assert ov.rollups.hour_rows(*RANGE, HOUR) is not None
        assert ov.rollups.hour_rows(*RANGE, 1_234_567) is None  # the grace splits that bucket
        assert [r.late for r in ov.hour_rollups(*RANGE, grace_ms=1_234_567)] == [0]
        assert [r.late for r in ov.hour_rollups(*RANGE, grace_ms=1_234_000)] == [1]
        assert [r.late for r in ov.entity_day_counts(*RANGE, grace_ms=1_234_567)] == [0]
    finally:
        store.close()


@pytest.mark.parametrize(
    "offset",
    [0, 1, 999, 1000, 59_999, 60_000, 7_199_999, 7_200_000, 172_799_999, 172_800_000, 5 * DAY + 7],
)
def test_the_arrival_buckets_in_sql_are_the_aws_rollups_buckets(tmp_path: Path, offset: int) -> None:
    store = LocalStore(tmp_path)
    try:
        # An event at 10:00 of 2025-12-28 arriving ``offset`` ms after that day ended.
        store.record([rec("u1", "2025-12-28T10:00:00.000Z", lag=14 * HOUR + offset, tag="a")])
        LocalOverview(store).rollups.catch_up()
        [(arrival,)] = store.db.read("SELECT arrival FROM rollup_entity_days")
        assert arrival == arrival_bucket(offset)
    finally:
        store.close()


def test_catching_up_while_another_process_ingests_counts_every_receipt_once(tmp_path: Path) -> None:
    """Two connections, as two processes would have: one records batches (a duplicate receipt in each)
    while the other catches up in small chunks and reads; in the end the rollups hold exactly the scan."""
    import threading

    writer, keeper = LocalStore(tmp_path), LocalStore(tmp_path)
    try:
        overview = LocalOverview(keeper)
        errors: list[BaseException] = []

        def ingest() -> None:
            try:
                for b in range(40):
                    batch = [
                        rec(
                            f"u{i % 5}",
                            fmt(DAY0 + timedelta(minutes=7 * (b * 10 + i))),
                            lag=i * HOUR,
                            tag="x",
                        )
                        for i in range(10)
                    ]
                    writer.record([*batch, batch[0]])
            except BaseException as exc:  # reported below, in the test's thread
                errors.append(exc)

        thread = threading.Thread(target=ingest)
        thread.start()
        while thread.is_alive():
            overview.rollups.catch_up(chunk=7)
            overview.hour_rollups(*RANGE, grace_ms=HOUR)
        thread.join()
        assert not errors
        assert _answers(overview) == _answers(ScanOverview(writer))
        assert overview.rollups.behind() == 0
        assert sum(r.duplicate for r in overview.hour_rollups(*RANGE)) == 40
    finally:
        keeper.close()
        writer.close()


def test_a_workspace_that_cannot_be_written_still_answers_exactly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Opened for writing, but the file refuses writes (a read-only mount): the catch-up fails, the read
    adds the uncounted events itself, and it stops trying."""
    from backend.adapters.local.overview_rollups import OverviewRollups
    from backend.errors import WorkspaceError

    store = LocalStore(tmp_path)
    try:
        store.record([rec("u1", "2025-12-28T10:00:00.000Z", lag=2 * HOUR, tag="a")])
        tries: list[int] = []

        def refused(*_: Any) -> bool:
            tries.append(1)
            raise WorkspaceError("cannot bring the overview's rollups up to date: readonly database")

        monkeypatch.setattr(OverviewRollups, "_step", refused)
        ov = LocalOverview(store)
        assert _answers(ov) == _answers(ScanOverview(store))
        assert len(tries) == 1 and ov.rollups.behind() == 1
    finally:
        store.close()
