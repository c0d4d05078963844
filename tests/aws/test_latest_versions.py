"""The latest versions of many windows at once on moto (backend/adapters/aws/latest_versions.py): the same
answer as ``latest`` per window and metric, in calls that grow with the entities and pages, not with the
windows x metrics; the window heads spare the windows without versions; the original kit's windows are
read through its chain."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import boto3
import pytest

from backend.adapters.aws.aggregates import DynamoAggregates
from backend.adapters.aws.ports import aws_ports
from backend.model import MetricKind, MetricSpec
from backend.ports import LatestVersions
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService, WindowResult
from backend.times import FixedClock
from tests.aws.test_window_heads import Env
from tests.aws_env import REGION, moto_backend
from tests.conftest import make_event
from tests.contract.test_aggregate_store import manifest, version

START = date(2025, 11, 1)
METRICS = ["daily_event_count", "steps"]
STEPS = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")


@pytest.fixture
def env() -> Iterator[Env]:
    store, settings, close = moto_backend()
    try:
        yield Env(store, settings.agg_table or "", settings.raw_bucket or "")
    finally:
        close()


def _day(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


def _versions(agg: DynamoAggregates, window: tuple[str, str], metric: str, count: int) -> None:
    for n in range(1, count + 1):
        m = manifest(*(f"{window}{metric}{k}" for k in range(n)))
        v = version(n, m, metric=metric).model_copy(update={"entity_id": window[0], "day": window[1]})
        assert agg.append(v, m)


def _by_latest(agg: DynamoAggregates, windows: list[tuple[str, str]]) -> dict[tuple[str, str, str], object]:
    return {(e, d, m): agg.latest(e, d, m) for e, d in windows for m in METRICS}


def test_the_same_answer_as_latest_in_a_query_per_entity(env: Env) -> None:
    # 3 entities x 30 days = 90 windows; a third have versions (1 to 3 of one or both metrics).
    windows = [(f"user #{e}", _day(d)) for e in range(3) for d in range(30)]
    writer = env.aggregates()
    for i, w in enumerate(windows[::3]):
        _versions(writer, w, "daily_event_count", 1 + i % 3)
        if i % 2:
            _versions(writer, w, "steps", 1 + i % 2)
    reader = env.aggregates()
    assert isinstance(reader, LatestVersions)
    env.take()
    got = reader.latest_many(windows + windows[:5], METRICS)  # repeats are asked once
    ops = env.take()
    assert got == _by_latest(env.aggregates(), windows)
    assert sum(v is not None for v in got.values()) == 30 + 15
    # the heads record, 90 heads in 1 BatchGetItem, then one Query per entity (each under 1 MB)
    assert ops == {"GetItem": 1, "BatchGetItem": 1, "Query": 3}


def test_windows_without_versions_cost_no_query_and_far_days_are_asked_apart(env: Env) -> None:
    writer = env.aggregates()
    _versions(writer, ("far", _day(0)), "steps", 2)
    _versions(writer, ("far", _day(300)), "steps", 1)
    windows = [("far", _day(0)), ("far", _day(300)), ("never", _day(1)), ("never", _day(2))]
    reader = env.aggregates()
    env.take()
    got = reader.latest_many(windows, METRICS)
    assert env.take() == {"GetItem": 1, "BatchGetItem": 1, "Query": 2}  # two days 300 apart: two ranges
    assert got == _by_latest(env.aggregates(), windows)
    assert got[("far", _day(0), "steps")].version == 2  # type: ignore[union-attr]


def test_a_table_without_heads_and_the_original_kits_versions(env: Env) -> None:
    table = boto3.resource("dynamodb", region_name=REGION).Table(env.table)
    earlier = version(1, manifest("x")).model_copy(update={"entity_id": "early", "day": _day(0)})
    env.store.clients.dynamodb.put_item(TableName=env.table, Item=env.aggregates()._item(earlier))
    for seconds, value in ((1762000000, 3), (1762000100, 5)):
        sk = f"DAY#{_day(1)}#VER#{seconds}"
        table.put_item(
            Item={"PK": "ENTITY#legacy", "SK": sk, "metric_name": "daily_event_count", "value": value,
                  "computed_at": "2025-11-02T00:00:00Z"}
        )  # fmt: skip
    windows = [("early", _day(0)), ("legacy", _day(1)), ("none", _day(0))]
    reader = env.aggregates()
    got = reader.latest_many(windows, METRICS)
    assert got == _by_latest(env.aggregates(), windows)
    legacy = got[("legacy", _day(1), "daily_event_count")]
    assert legacy is not None and (legacy.version, legacy.value) == (2, 5)
    assert got[("early", _day(0), "daily_event_count")] == earlier
    assert got[("none", _day(0), "steps")] is None


def test_a_processor_run_reads_the_versions_once_per_entity() -> None:
    """12 windows of 2 entities, versions current: the second run asks the aggregates table for its
    windows' versions with one BatchGetItem and a Query per entity (it took a Query per window and metric),
    and writes nothing."""
    store, settings, close = moto_backend()
    try:
        ports = aws_ports(store, settings)
        assert ports.aggregates is not None
        ingest = IngestService(store, store, FixedClock(datetime(2025, 12, 1, tzinfo=UTC)))
        bodies = [
            make_event(entity_id=e, event_time=f"{_day(d)}T0{k}:00:00Z", payload={"steps": d + k})
            for e in ("a", "b") for d in range(6) for k in range(2)
        ]  # fmt: skip
        ingest.ingest_batch([Received(b) for b in bodies])
        windows = {(e, _day(d)): () for e in ("a", "b") for d in range(6)}
        processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, [STEPS])
        first = processor.recompute_windows(windows)
        assert all(isinstance(w, WindowResult) and all(m.written for m in w.metrics) for w in first.values())
        asked: Counter[str] = Counter()

        def count(event_name: str, params: Any = None, **_: Any) -> None:
            params = params or {}
            if settings.agg_table in (params.get("TableName"), *params.get("RequestItems", {})):
                asked[event_name.split(".", 2)[2]] += 1

        store.ddb.meta.events.register("before-parameter-build.dynamodb.*", count)
        again = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, [STEPS])
        second = again.recompute_windows(windows)
        assert all(
            isinstance(w, WindowResult) and not any(m.written for m in w.metrics) for w in second.values()
        )
        assert asked == {"BatchGetItem": 1, "Query": 2}
    finally:
        close()
