"""The processor (invariants 5 and 6): whole-window recomputes, metrics, versions only when inputs change,
failed records instead of crashes; `pik process`, `pik aggregates` and `pik diff` end to end."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import LocalPorts, local_ports
from backend.errors import InvalidRequest, StoreError
from backend.model import MetricKind, MetricSpec
from backend.ports import QueueDepth, WindowInputsIndex
from backend.services.drain import DrainService
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService, compute, metrics_with_default, parse_message
from backend.services.versions import VersionService
from backend.times import FixedClock, TimeFormatError, fmt, parse_iso
from pik_console.cli import main
from tests.conftest import make_event

DAY = datetime(2025, 12, 28, tzinfo=UTC)
STEPS = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps", event_type="heartbeat")


class Env:
    def __init__(self, path: Path) -> None:
        self.store = LocalStore(path)
        self.ports: LocalPorts = local_ports(self.store)
        self.clock = FixedClock(DAY + timedelta(days=1))
        self.ingest = IngestService(self.store, self.store, self.clock)

    def processor(self, *metrics: MetricSpec, **kw: Any) -> ProcessorService:
        return ProcessorService(
            self.ports.investigate, self.ports.catalog, self.ports.aggregates, metrics, clock=self.clock, **kw
        )

    def add(self, entity: str = "user_1", minute: int = 0, **fields: Any) -> bytes:
        fields.setdefault("payload", {"steps": minute})
        body = make_event(entity_id=entity, event_time=fmt(DAY + timedelta(minutes=minute)), **fields)
        self.ingest.ingest_batch([Received(body)])
        return body

    def message(self, entity: str = "user_1", replay_id: str | None = "rp-1", minute: int = 0) -> str:
        return json.dumps(
            {
                "event_id": "0" * 64,
                "entity_id": entity,
                "event_time": fmt(DAY + timedelta(minutes=minute)),
                "s3_bucket": "b",
                "s3_key": "k",
                "replay_id": replay_id,
            }
        )


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "ws")
    yield e
    e.store.close()


# -- metrics ---------------------------------------------------------------------------------------------


def spec(kind: str, field: str | None = "v") -> MetricSpec:
    return MetricSpec(name="m", kind=MetricKind(kind), field=None if kind == "count" else field)


@pytest.mark.parametrize(
    ("kind", "payloads", "expected"),
    [
        ("count", [{}, {}, {}], (3, 3)),
        ("sum", [{"v": 1}, {"v": 2}, {"x": 5}, {"v": "3"}, {"v": True}], (3, 2)),
        ("sum", [{"v": 0.1}, {"v": 0.2}, {"v": 0.3}], (0.6, 3)),
        ("sum", [], (0, 0)),
        ("min", [{"v": 4}, {"v": -2.5}, {"v": None}], (-2.5, 2)),
        ("max", [{"v": 4}, {"v": -2.5}], (4, 2)),
        ("avg", [{"v": 1}, {"v": 2}], (1.5, 2)),
        ("avg", [{"x": 1}], (None, 0)),
        ("distinct", [{"v": "a"}, {"v": "a"}, {"v": {"k": 1}}, {"v": 1}, {"v": 1.0}, {}], (3, 5)),
        ("distinct", [{"v": 1.5}, {"v": None}, {"v": False}, {"v": 0}], (4, 4)),
    ],
)
def test_metric_values(kind: str, payloads: list[Any], expected: tuple[Any, int]) -> None:
    value, used = compute(spec(kind), payloads)
    assert (value, used) == expected and type(value) is type(expected[0])


def test_nested_fields_and_non_object_payloads() -> None:
    metric = MetricSpec(name="m", kind=MetricKind.MAX, field="device.battery")
    assert compute(metric, [{"device": {"battery": 40}}, {"device": 3}, [1, 2], None]) == (40, 1)


def test_metric_definitions_are_checked() -> None:
    assert [m.name for m in metrics_with_default([STEPS])] == ["daily_event_count", "steps"]
    for bad in (
        [MetricSpec(name="daily_event_count", kind=MetricKind.COUNT)],
        [STEPS, STEPS],
        [MetricSpec(name="x", kind=MetricKind.SUM)],
        [MetricSpec(name="x", kind=MetricKind.COUNT, field="v")],
    ):
        with pytest.raises(InvalidRequest):
            metrics_with_default(bad)


@pytest.mark.parametrize(
    "body",
    ["", "nope", "[1]", "{}", '{"entity_id": "e"}', '{"entity_id": "", "event_time": "2025-12-28T00:00:00Z"}',
     '{"entity_id": "e", "event_time": "yesterday"}',
     '{"entity_id": 5, "event_time": "2025-12-28T00:00:00Z"}',
     '{"entity_id": "e", "event_time": "2025-12-28T00:00:00Z", "replay_id": 7}'],
)  # fmt: skip
def test_malformed_messages_are_refused(body: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_message(body)


def test_a_message_names_its_window_in_utc() -> None:
    m = parse_message('{"entity_id": "e", "event_time": "2025-12-28T23:30:00-02:00"}')
    assert (m.entity_id, m.day, m.replay_id) == ("e", "2025-12-29", None)


# -- recompute -------------------------------------------------------------------------------------------


def test_a_window_is_recomputed_whole_and_duplicates_count_once(env: Env) -> None:
    for minute in range(5):
        env.add(minute=minute)
    env.add(minute=1)  # a duplicate receipt
    env.add(minute=10, event_type="click", payload={"target": "buy"})
    env.add(entity="other", minute=3)
    env.add(minute=24 * 60 + 1)  # the next day
    # One message for one event: the whole day of user_1 is recomputed.
    result = env.processor(STEPS).process([env.message(minute=2)])
    assert result.failed == {} and result.written == 2
    [window] = result.windows
    assert (window.entity_id, window.day, window.inputs) == ("user_1", "2025-12-28", 6)
    count, steps = (m.version for m in window.metrics)
    assert (count.value, count.input_count) == (6, 6)
    assert (steps.value, steps.input_count) == (0 + 1 + 2 + 3 + 4, 5)
    assert count.replay_ids == ["rp-1"] and count.version == 1 and count.previous_version is None
    manifest = env.ports.aggregates.manifest(count.inputs_hash)
    assert manifest is not None and len(manifest) == 6
    assert [e.event_id for e in manifest] == sorted(e.event_id for e in manifest)
    assert all(e.ingest_time == fmt(env.clock.now()) for e in manifest)


class _PagesOnly:
    """The workspace's index without its one-read window (as the DynamoDB index is): scan_entity pages."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "window_inputs":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_window_read_in_one_read_gives_what_its_pages_give(env: Env) -> None:
    """Count metrics (filtered or not) take the index's one-read window; a field metric, the pages with
    their receipts. Both ways give the same values, hashes, samples and manifests."""
    for minute in range(0, 600, 7):
        env.add(minute=minute, source="ios" if minute % 3 else "android")
    env.add(minute=7, source="ios")  # a duplicate receipt
    for minute in range(5, 300, 11):
        env.add(minute=minute, event_type="click", payload={"target": "buy"})
    clicks = MetricSpec(name="clicks", kind=MetricKind.COUNT, event_type="click")
    ios = MetricSpec(name="ios_beats", kind=MetricKind.COUNT, event_type="heartbeat", source="ios")
    metrics = (clicks, ios)
    assert isinstance(env.ports.investigate, WindowInputsIndex)
    assert not isinstance(_PagesOnly(env.ports.investigate), WindowInputsIndex)
    one_read = env.processor(*metrics, dry_run=True).recompute("user_1", "2025-12-28")
    paged = ProcessorService(
        _PagesOnly(env.ports.investigate), env.ports.catalog, env.ports.aggregates, metrics, clock=env.clock,
        dry_run=True,
    ).recompute("user_1", "2025-12-28")  # fmt: skip
    assert one_read == paged
    assert [(m.version.value, m.version.input_count) for m in one_read.metrics] == [
        (113, 113),
        (27, 27),
        (57, 57),
    ]
    assert [e.event_id for e in one_read.metrics[0].manifest] == sorted(
        e.event_id for e in paged.metrics[0].manifest
    )


def test_a_new_version_only_when_the_inputs_change(env: Env) -> None:
    env.add(minute=1)
    processor = env.processor(STEPS)
    processor.process([env.message(replay_id="rp-1")])
    again = processor.process([env.message(replay_id="rp-2"), env.message(replay_id="rp-3")])
    assert (again.written, again.unchanged) == (0, 2)
    env.add(minute=1)  # a duplicate: the input set is the same
    assert processor.process([env.message()]).written == 0
    env.clock.advance(timedelta(days=2))
    env.add(minute=7)  # a late arrival
    later = processor.process([env.message(replay_id="rp-4"), env.message(replay_id="rp-5", minute=3)])
    assert later.written == 2
    count = env.ports.aggregates.latest("user_1", "2025-12-28", "daily_event_count")
    assert (count.version, count.value, count.previous_version, count.previous_value) == (2, 2, 1, 1)
    assert count.replay_ids == ["rp-4", "rp-5"]
    # A changed definition is a new version even on the same inputs.
    changed = MetricSpec(name="steps", kind=MetricKind.MAX, field="steps", event_type="heartbeat")
    assert env.processor(changed).process([env.message()]).written == 1
    assert env.ports.aggregates.latest("user_1", "2025-12-28", "steps").value == 7


def test_a_dry_run_computes_and_writes_nothing(env: Env) -> None:
    env.add(minute=1)
    result = env.processor(dry_run=True).process([env.message()])
    assert result.dry_run and result.written == 1
    assert env.ports.aggregates.latest("user_1", "2025-12-28", "daily_event_count") is None


def test_bad_messages_and_failed_windows_are_failed_records(env: Env) -> None:
    env.add(minute=1)
    env.add(entity="broken", minute=1)

    class Failing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def scan_entity(self, entity_id: str, *a: Any, **kw: Any) -> Any:
            if entity_id == "broken":
                raise StoreError("injected: the index is unreachable")
            return self.inner.scan_entity(entity_id, *a, **kw)

        def day_counts_entity(self, entity_id: str, *a: Any, **kw: Any) -> Any:
            if entity_id == "broken":
                raise StoreError("injected: the index is unreachable")
            return self.inner.day_counts_entity(entity_id, *a, **kw)

    processor = ProcessorService(Failing(env.ports.investigate), env.ports.catalog, env.ports.aggregates)
    result = processor.process(
        ["{bad", env.message(entity="broken"), env.message(), env.message(entity="broken")]
    )
    assert sorted(result.failed) == [0, 1, 3]
    assert "malformed" in result.failed[0] and "unreachable" in result.failed[1]
    assert result.processed == 1 and result.written == 1
    assert result.batch_item_failures(["m0", "m1", "m2", "m3"]) == {
        "batchItemFailures": [{"itemIdentifier": "m0"}, {"itemIdentifier": "m1"}, {"itemIdentifier": "m3"}]
    }


def test_a_lost_race_is_decided_again_from_a_fresh_read(env: Env) -> None:
    env.add(minute=1)
    rival = env.processor()
    processor = env.processor()

    class RaceOnce:
        """The rival processor writes, after a new event arrived, just before our first append."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.raced = False

        def append(self, version: Any, manifest: Any) -> bool:
            if not self.raced:
                self.raced = True
                env.add(minute=2)
                rival.process([env.message(replay_id="rival")])
            return bool(self.inner.append(version, manifest))

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    processor.aggregates = RaceOnce(env.ports.aggregates)
    result = processor.process([env.message(replay_id="ours")])
    versions = env.ports.aggregates.versions("user_1", "2025-12-28").items
    # The rival's version 1 (two events) stands; ours found the same inputs on its second read.
    assert [(v.version, v.value, v.replay_ids) for v in versions] == [(1, 2, ["rival"])]
    assert result.written == 0 and result.unchanged == 1


def test_missing_raw_bytes_fail_a_field_metric_window(env: Env) -> None:
    from tests.contract.test_event_index import rec

    env.store.record([rec(entity="user_1", event_time="2025-12-28T05:00:00.000Z", tag="lost")])
    assert env.processor().process([env.message()]).failed == {}  # a count needs no payload
    result = env.processor(MetricSpec(name="s", kind=MetricKind.SUM, field="steps")).process([env.message()])
    assert "missing" in result.failed[0]


# -- diff ------------------------------------------------------------------------------------------------


def test_the_diff_explains_late_arrivals_duplicates_and_the_replay(env: Env) -> None:
    from backend.services.replay import ReplayService

    for minute in range(3):
        env.add(minute=minute)
    replays = ReplayService(
        env.ports.investigate, env.ports.catalog, env.ports.audit, env.ports.queue, clock=env.clock
    )
    request = {"entity_id": "user_1", "start_time": "2025-12-28", "end_time": "2025-12-29"}
    from backend.model import ReplayRequest

    first = replays.execute(ReplayRequest(**request), actor="alice")
    processor = env.processor(STEPS)
    processor.process([m.body for m in env.ports.queue.receive(10, 60)])
    env.clock.advance(timedelta(days=2))
    env.add(minute=30)  # arrives two days late
    env.add(minute=40)
    env.add(minute=0)  # a duplicate receipt of an input
    second = replays.execute(ReplayRequest(**request), actor="bob")
    processor.process([m.body for m in env.ports.queue.receive(10, 60)])
    inspector = VersionService(env.ports.aggregates, env.ports.investigate, env.ports.audit)
    diff = inspector.diff("user_1", "2025-12-28", "daily_event_count")
    assert (diff.older.version, diff.newer.version, diff.delta) == (1, 2, 2)
    assert (diff.added, diff.removed, diff.added_after_older, diff.added_before_older) == (2, 0, 2, 0)
    assert diff.duplicates_excluded == 1 and diff.duplicates_after_older == 1
    assert diff.late_lag is not None and diff.late_lag.min_ms >= 2 * 86_400_000
    assert [r.replay_id for r in diff.replays] == [second.replay_id] and diff.replays[0].actor == "bob"
    text = diff.text
    assert "daily_event_count of user_1 on 2025-12-28 went from 3 to 5 (+2, +66.7%)" in text
    assert (
        "2 events were added: all of them were ingested after version 1 was computed (late arrivals)" in text
    )
    assert f"after replay {second.replay_id}, run by bob" in text
    assert "1 duplicate receipt of these events was excluded" in text
    assert first.replay_id not in text
    with pytest.raises(InvalidRequest):
        inspector.diff("user_1", "2025-12-28", "daily_event_count", 2, 1)
    with pytest.raises(InvalidRequest):
        inspector.diff("user_1", "2025-12-27", "daily_event_count")


# -- CLI --------------------------------------------------------------------------------------------------


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_replay_process_aggregates_and_diff_end_to_end(env: Env) -> None:
    ws = env.store.location
    Path(ws, "settings.toml").write_text('[[metrics]]\nname = "steps"\nkind = "sum"\nfield = "steps"\n')
    for minute in range(4):
        env.add(minute=minute)
    code, _, err = call("replay", "--entity", "user_1", "--day", "2025-12-28", "--execute", "--workspace", ws)
    assert code == 0, err
    code, out, err = call("process", "--workspace", ws)
    assert code == 0, err
    assert "4 messages received" in out and "2 new versions written" in out
    assert "Queue now: 0 visible, 0 in flight, 0 dead letters" in out
    # The CLI runs on the real clock: the late event arrives after version 1 was computed.
    env.clock.set(datetime.now(UTC) + timedelta(days=3))
    env.add(minute=50, payload={"steps": 100})
    call("replay", "--entity", "user_1", "--day", "2025-12-28", "--execute", "--workspace", ws)
    code, out, _ = call("process", "--json", "--workspace", ws)
    report = json.loads(out)
    assert code == 0 and (report["received"], report["versions_written"], report["windows"]) == (5, 2, 1)
    code, out, _ = call("aggregates", "--entity", "user_1", "--day", "2025-12-28", "--workspace", ws)
    assert code == 0 and out.count("daily_event_count") == 2 and "steps" in out
    code, out, _ = call(
        "aggregates",
        "--entity",
        "user_1",
        "--day",
        "2025-12-28",
        "--metric",
        "steps",
        "--json",
        "--workspace",
        ws,
    )
    assert [v["value"] for v in json.loads(out)["items"]] == [6, 106]
    code, out, err = call("diff", "--entity", "user_1", "--day", "2025-12-28", "--workspace", ws)
    assert code == 0, err
    assert "daily_event_count of user_1 on 2025-12-28 went from 4 to 5" in out
    assert "steps of user_1 on 2025-12-28 went from 6 to 106 (+100" in out
    assert "it was ingested after version 1 was computed (a late arrival), with an ingest lag of " in out
    code, out, _ = call(
        "diff",
        "--entity",
        "user_1",
        "--day",
        "2025-12-28",
        "--metric",
        "steps",
        "--from",
        "1",
        "--to",
        "2",
        "--json",
        "--workspace",
        ws,
    )
    [d] = json.loads(out)["diffs"]
    assert (d["older"]["version"], d["newer"]["version"], d["added"]) == (1, 2, 1)
    code, _, err = call(
        "diff",
        "--entity",
        "user_1",
        "--day",
        "2025-12-28",
        "--metric",
        "steps",
        "--from",
        "2",
        "--to",
        "5",
        "--workspace",
        ws,
    )
    assert code == 1 and "versions 1 to 2" in err
    code, _, err = call("diff", "--entity", "user_1", "--day", "2025-12-28", "--from", "1", "--workspace", ws)
    assert code == 2
    code, out, _ = call("aggregates", "--entity", "nobody", "--day", "2025-12-28", "--workspace", ws)
    assert code == 0 and "No aggregate versions" in out


def test_pik_process_dead_letters_a_poison_message(env: Env) -> None:
    ws = env.store.location
    Path(ws, "settings.toml").write_text("[queue]\nmax_receives = 3\n")
    env.add(minute=1)
    env.ports.queue.send_batch(["not json at all", env.message()])
    code, out, _ = call("process", "--json", "--workspace", ws)
    report = json.loads(out)
    assert code == 1
    assert (report["received"], report["processed"], report["failed_attempts"]) == (4, 1, 3)
    assert (report["failed_messages"], report["dead_lettered"]) == (1, 1)
    assert "malformed" in report["failures"][0]["reason"]
    assert report["queue"] == {"visible": 0, "in_flight": 0, "dead": 1}
    [dead] = env.ports.queue.dead_letters().items
    assert dead.body == "not json at all" and dead.receive_count == 3
    code, out, _ = call("process", "--workspace", ws)
    assert code == 0 and "no visible messages" in out and "1 dead letters" in out


def test_pik_process_dry_run_consumes_nothing(env: Env) -> None:
    ws = env.store.location
    env.add(minute=1)
    env.ports.queue.send_batch([env.message()])
    code, out, _ = call("process", "--dry-run", "--workspace", ws)
    assert (
        code == 0 and out.startswith("DRY RUN (nothing written)") and "1 new versions would be written" in out
    )
    assert env.ports.queue.depth().visible == 1
    assert env.ports.aggregates.latest("user_1", "2025-12-28", "daily_event_count") is None


def test_pik_process_refuses_bad_metric_settings(env: Env) -> None:
    Path(env.store.location, "settings.toml").write_text('[[metrics]]\nname = "x"\nkind = "sum"\n')
    code, _, err = call("process", "--workspace", env.store.location)
    assert code == 1 and "needs a payload field" in err


def test_an_unchanged_window_is_confirmed_by_a_count_without_reading_it(env: Env) -> None:
    env.add(minute=1)
    env.add(minute=2)

    class Counting:
        def __init__(self, inner: Any) -> None:
            self.inner = inner
            self.scans = 0

        def scan_entity(self, *a: Any, **kw: Any) -> Any:
            self.scans += 1
            return self.inner.scan_entity(*a, **kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    scans = Counting(env.ports.investigate)
    processor = ProcessorService(scans, env.ports.catalog, env.ports.aggregates, [STEPS], clock=env.clock)
    first = processor.process([env.message()])
    assert first.written == 2 and scans.scans == 1
    assert env.ports.aggregates.latest("user_1", "2025-12-28", "steps").window_events == 2
    again = processor.process([env.message(), env.message(minute=5)])
    assert (again.written, again.unchanged, scans.scans) == (0, 2, 1)
    assert again.windows[0].inputs == 2
    env.add(minute=1)  # a duplicate receipt: the window's accepted events are the same
    assert processor.process([env.message()]).written == 0 and scans.scans == 1
    env.add(minute=3)  # a new event: the count differs, the window is read again
    assert processor.process([env.message()]).written == 2 and scans.scans == 2
    # A changed definition is never confirmed by a count.
    wider = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")
    other = ProcessorService(scans, env.ports.catalog, env.ports.aggregates, [wider], clock=env.clock)
    assert other.process([env.message()]).written == 1 and scans.scans == 3


def test_pik_process_recomputes_a_window_once_per_drain(env: Env) -> None:
    ws = env.store.location
    for minute in range(3):
        env.add(minute=minute)
    for _ in range(12):  # 120 messages for one window
        env.ports.queue.send_batch([env.message()] * 10)
    code, out, _ = call("process", "--json", "--workspace", ws)
    report = json.loads(out)
    assert code == 0 and (report["received"], report["windows"], report["recomputes"]) == (120, 1, 1)
    assert (report["versions_written"], report["unchanged"]) == (1, 0)
    code, out, _ = call("process", "--max-messages", "5", "--workspace", ws)
    assert code == 0 and "no visible messages" in out
    env.ports.queue.send_batch([env.message()] * 10)
    code, out, _ = call("process", "--max-messages", "4", "--json", "--workspace", ws)
    assert json.loads(out)["received"] == 4 and env.ports.queue.depth().visible == 6


def test_the_drain_service_reports_progress_and_stops_when_asked(env: Env) -> None:
    env.add(minute=0)
    env.add(entity="user_2", minute=0)
    for _ in range(12):  # 120 messages of two windows, received (and held) in one bulk receive
        env.ports.queue.send_batch([env.message(), env.message("user_2")] * 5)
    progress: list[tuple[int, int, int]] = []
    drainer = DrainService(env.ports.queue, env.processor())
    result = drainer.run(on_progress=lambda at: progress.append(tuple(at)),
                         should_stop=lambda: len(progress) >= 1)  # fmt: skip
    # Stopped after the first receive, before any recompute: what it held is back in the queue.
    assert progress == [(120, 0, 0)] and result.interrupted
    assert (result.received, result.processed, result.versions_written, result.recomputes) == (120, 0, 0, 0)
    assert env.ports.queue.depth() == QueueDepth(120, 0, 0)
    progress.clear()
    result = drainer.run(on_progress=lambda at: progress.append(tuple(at)))
    # Not stopped: both windows recomputed once, in one chunk, their messages deleted.
    assert progress == [(120, 0, 0), (120, 120, 2)] and not result.interrupted
    assert (result.received, result.processed, result.versions_written, result.recomputes) == (120, 120, 2, 2)
    assert env.ports.queue.depth() == QueueDepth(0, 0, 0)
    env.ports.queue.send_batch([env.message()] * 10)
    rest = drainer.run(max_messages=4)
    assert (rest.received, rest.versions_written, rest.unchanged, rest.interrupted) == (4, 0, 1, False)
    assert env.ports.queue.depth().visible == 6


@settings(max_examples=300, deadline=None)
@given(
    st.from_regex(
        r"[0-9]{4}-[0-2][0-9]-[0-3][0-9]T[0-2][0-9]:[0-6][0-9]:[0-6][0-9]\.[0-9]{3}Z", fullmatch=True
    )
    | st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)).map(
        fmt
    )
)
def test_a_messages_day_is_the_day_of_its_time_in_utc_however_it_is_read(event_time: str) -> None:
    """The stored time form is read by its first ten characters (once its date is checked): the same day,
    or the same refusal, as parsing the time in full."""
    body = json.dumps({"entity_id": "e", "event_time": event_time})
    try:
        expected: str = fmt(parse_iso(event_time, what="event_time"))[:10]
    except TimeFormatError as exc:
        with pytest.raises(InvalidRequest) as refused:
            parse_message(body)
        assert str(refused.value) == str(exc)
    else:
        assert parse_message(body).day == expected
