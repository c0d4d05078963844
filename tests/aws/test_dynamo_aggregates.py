"""Versioned aggregates on DynamoDB and S3 beyond the contract (tests/contract/test_aggregate_store.py):
the item and manifest shapes, what an append costs, a manifest over DynamoDB's item limit, and the
original kit's aggregate items (``SK=DAY#<day>#VER#<unix_seconds>``) read as versions 1..L, continued by
this kit's L+1..."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import boto3
import pytest

from backend.adapters.aws.aggregates import LEGACY_DEFINITION_HASH, DynamoAggregates
from backend.adapters.aws.store import AwsStore
from backend.errors import InvalidRequest
from backend.model import MetricKind
from backend.settings import AwsSettings
from tests.aws_env import REGION, moto_backend
from tests.contract.test_aggregate_store import manifest, version
from tests.contract.test_event_index import collect, sha


class Env:
    def __init__(self, store: AwsStore, settings: AwsSettings) -> None:
        assert settings.agg_table and settings.raw_bucket
        self.store = store
        self.settings = settings
        self.agg = DynamoAggregates(store.clients, settings.agg_table, settings.raw_bucket)
        self.ops: Counter[str] = Counter()
        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.ops[event_name.split(".", 2)[2]] += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops

    def table(self) -> Any:
        """The aggregates table as the original kit used it: boto3's resource layer (Python values)."""
        ddb = boto3.resource("dynamodb", region_name=REGION)
        return ddb.Table(self.settings.agg_table)


@pytest.fixture
def env() -> Iterator[Env]:
    store, settings, close = moto_backend()
    try:
        yield Env(store, settings)
    finally:
        close()


def test_a_version_is_an_item_with_the_original_kits_attribute_names(env: Env) -> None:
    m = manifest("a", "b")
    v = version(1, m, value=2)
    assert env.agg.append(v, m)
    item = env.table().get_item(
        Key={"PK": "ENTITY#user_1", "SK": "DAY#2025-12-28#MET#daily_event_count#VER#0000000001"}
    )["Item"]
    assert item["metric_name"] == "daily_event_count" and item["value"] == 2 and item["version"] == 1
    assert item["inputs_hash"] == v.inputs_hash and item["input_count"] == 2
    assert item["sample_event_ids"] == v.sample_event_ids and item["replay_ids"] == ["rp-1"]
    assert (item["computed_at"], item["window_start"]) == (v.computed_at, v.window_start)


def test_a_manifest_is_a_content_addressed_gzip_object_stored_once(env: Env) -> None:
    m = manifest("a", "b", "c")
    v = version(1, m)
    env.take()
    assert env.agg.append(v, list(reversed(m)))
    # Query: the original kit's versions; the version and its window's head in one transaction; the first
    # version of a process on a table without the heads' record: GetItem of it, Scan (empty?), PutItem.
    assert env.take() == {
        "PutObject": 1,
        "Query": 1,
        "GetItem": 1,
        "Scan": 1,
        "PutItem": 1,
        "TransactWriteItems": 1,
    }
    assert env.agg.append(version(1, m, metric="other"), m)
    assert env.take() == {"Query": 1, "TransactWriteItems": 1}  # the record known: no more calls for it
    key = f"manifests/{v.inputs_hash}.json.gz"
    obj = env.store.clients.s3.get_object(Bucket=env.settings.raw_bucket or "", Key=key)
    doc = json.loads(gzip.decompress(obj["Body"].read()))
    assert doc["inputs_hash"] == v.inputs_hash
    assert doc["columns"] == ["event_id", "payload_sha", "ingest_time", "ingest_lag_ms"]
    assert doc["rows"] == [[e.event_id, e.payload_sha, e.ingest_time, e.ingest_lag_ms] for e in m]
    env.take()
    # Version 2 of the same inputs, and another metric over them: no second PutObject from this process.
    assert env.agg.append(version(2, m), m)
    assert env.take() == {"TransactWriteItems": 1}
    assert env.agg.append(version(1, m, metric="steps"), m)
    assert env.take() == {"Query": 1, "TransactWriteItems": 1}
    # Another process (a fresh store) puts it again: S3 refuses, harmlessly.
    other = DynamoAggregates(env.store.clients, env.settings.agg_table or "", env.settings.raw_bucket or "")
    assert other.append(version(3, m), m)
    assert env.take() == {"PutObject": 1, "TransactWriteItems": 1}
    assert other.manifest(v.inputs_hash) == m


def test_reads_cost_one_call(env: Env) -> None:
    m = manifest("a")
    for n in (1, 2, 3):
        env.agg.append(version(n, m), m)
    env.take()
    assert env.agg.latest("user_1", "2025-12-28", "daily_event_count").version == 3
    assert env.take() == {"Query": 1}
    assert env.agg.get("user_1", "2025-12-28", "daily_event_count", 2).version == 2
    assert env.take() == {"GetItem": 1}


def test_a_manifest_over_the_item_limit(env: Env) -> None:
    big = manifest(*[f"e{i}" for i in range(6000)])  # ~480 KB as JSON: over DynamoDB's 400 KB
    v = version(1, big)
    assert env.agg.append(v, big)
    assert env.agg.manifest(v.inputs_hash) == big
    assert env.agg.latest("user_1", "2025-12-28", "daily_event_count") == v


def test_a_taken_number_and_a_gap_leave_nothing_but_the_manifest(env: Env) -> None:
    m1, m2 = manifest("a"), manifest("a", "b")
    assert env.agg.append(version(1, m1), m1)
    assert env.agg.append(version(1, m2, value=99), m2) is False
    with pytest.raises(InvalidRequest, match="gap"):
        env.agg.append(version(3, m2), m2)
    listed = env.agg.versions("user_1", "2025-12-28").items
    assert [(v.version, v.value) for v in listed] == [(1, 1)]


@pytest.mark.parametrize(
    "field, value",
    [("day", "2025-12-28#MET#x"), ("metric", "a#VER#1"), ("inputs_hash", "../../raw/x")],
)
def test_values_that_would_reach_other_keys_are_refused(env: Env, field: str, value: str) -> None:
    m = manifest("a")
    with pytest.raises(InvalidRequest):
        env.agg.append(version(1, m).model_copy(update={field: value}), m)
    assert env.agg.latest("user_1", "2025-12-28#MET#x", "daily_event_count") is None
    assert env.agg.manifest("../../raw/x") is None


# -- the original kit's items -------------------------------------------------------------------------------

DAY = "2025-12-28"


def legacy_item(seconds: int, value: Any, count: int, *, metric: str = "daily_event_count") -> dict[str, Any]:
    """An aggregates item exactly as the original kit wrote it (resource-level types)."""
    return {
        "PK": "ENTITY#user_1",
        "SK": f"DAY#{DAY}#VER#{seconds}",
        "metric_name": metric,
        "value": value,
        "inputs_hash": f"legacy-hash-{seconds}",
        "computed_at": f"2025-12-29T0{seconds % 10}:00:00Z",
        "window_start": f"{DAY}T00:00:00Z",
        "window_end": "2025-12-29T00:00:00Z",
        "input_count": count,
        "sample_event_ids": [sha(f"s{seconds}-{i}") for i in range(min(count, 3))],
    }


@pytest.fixture
def legacy(env: Env) -> Env:
    # Unix seconds whose text order is not their number order: 999999990 (2001) is the oldest.
    table = env.table()
    table.put_item(Item=legacy_item(1766970002, 10, 10))
    table.put_item(Item=legacy_item(999999990, 7, 7))
    table.put_item(Item=legacy_item(1766970001, Decimal("8.5"), 8))
    table.put_item(Item=legacy_item(1766970003, 3, 3, metric="other_metric"))
    return env


def test_the_original_kits_versions_are_numbered_in_time_order(legacy: Env) -> None:
    agg = legacy.agg
    chain = collect(agg.versions, 2, entity_id="user_1", day=DAY)
    assert [(v.metric, v.version, v.value) for v in chain] == [
        ("daily_event_count", 1, 7), ("daily_event_count", 2, 8.5), ("daily_event_count", 3, 10),
        ("other_metric", 1, 3),
    ]  # fmt: skip
    first, second = chain[0], chain[1]
    assert first.previous_version is None and (second.previous_version, second.previous_value) == (1, 7)
    assert first.computed_at == "2025-12-29T00:00:00.000Z" and first.window_start == f"{DAY}T00:00:00.000Z"
    assert (first.input_count, first.values_used, first.inputs_hash) == (7, 7, "legacy-hash-999999990")
    assert first.definition.kind is MetricKind.COUNT and first.definition_hash == LEGACY_DEFINITION_HASH
    assert first.sample_event_ids == [sha(f"s999999990-{i}") for i in range(3)]
    assert first.replay_ids == [] and first.window_events is None
    assert agg.get("user_1", DAY, "daily_event_count", 2) == second
    assert agg.get("user_1", DAY, "daily_event_count", 4) is None
    assert agg.latest("user_1", DAY, "daily_event_count") == chain[2]
    assert agg.manifest(first.inputs_hash) is None, "the original kit stored no manifest"
    assert agg.windows_with_versions([("user_1", DAY), ("user_1", "2025-12-27")]) == {("user_1", DAY)}


def test_this_kits_versions_continue_the_original_kits(legacy: Env) -> None:
    agg = legacy.agg
    m = manifest("a", "b")
    assert agg.append(version(1, m), m) is False, "version 1 is the original kit's"
    assert agg.append(version(3, m), m) is False, "so is version 3"
    with pytest.raises(InvalidRequest, match="gap"):
        agg.append(version(5, m), m)
    v4 = version(4, m, previous_version=3, previous_value=10)
    legacy.take()
    assert agg.append(v4, m) is True
    ops = legacy.take()
    assert ops["TransactWriteItems"] == 2 and ops["Query"] == 1  # ours 3 is not there: the original kit's is
    v5 = version(5, m)
    assert agg.append(v5, m) is True
    assert legacy.take() == {"TransactWriteItems": 1}
    assert agg.latest("user_1", DAY, "daily_event_count") == v5
    listed = collect(agg.versions, 2, entity_id="user_1", day=DAY, metric="daily_event_count")
    assert [v.version for v in listed] == [1, 2, 3, 4, 5] and listed[3:] == [v4, v5]
    # The original kit's items are untouched.
    items = legacy.table().scan()["Items"]
    assert sum(1 for i in items if "#VER#" in i["SK"] and "#MET#" not in i["SK"]) == 4
    assert agg.append(version(1, m, metric="new_metric"), m) is True
