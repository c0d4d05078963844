"""The plan's blast radius from window heads on moto: which (entity, day) windows already have versions,
100 windows per BatchGetItem, the same answer as a Query per window; tables written before heads existed
(an earlier release, the original kit) read window by window until a backfill marks them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from backend.adapters.aws.aggregates import DynamoAggregates
from backend.adapters.aws.window_heads import RECORD_KEY, WindowHeads, backfill_heads, head_key
from tests.aws_env import REGION, moto_backend
from tests.contract.test_aggregate_store import manifest, version

DAYS = ["2025-12-26", "2025-12-27", "2025-12-28"]


class Env:
    def __init__(self, store: Any, table: str, bucket: str) -> None:
        self.store = store
        self.table = table
        self.bucket = bucket
        self.ops: Counter[str] = Counter()
        store.clients.dynamodb.meta.events.register("before-call.dynamodb.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.ops[event_name.split(".", 2)[2]] += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops

    def aggregates(self) -> DynamoAggregates:
        """A fresh store, as another process opens it."""
        return DynamoAggregates(self.store.clients, self.table, self.bucket)


@pytest.fixture
def env() -> Iterator[Env]:
    store, settings, close = moto_backend()
    try:
        yield Env(store, settings.agg_table or "", settings.raw_bucket or "")
    finally:
        close()


def _windows(n: int) -> list[tuple[str, str]]:
    return [(f"user #{i}", DAYS[i % 3]) for i in range(n)]


def _append(agg: DynamoAggregates, window: tuple[str, str], metric: str = "daily_event_count") -> None:
    m = manifest(f"{window}")
    assert agg.append(
        version(1, m, metric=metric).model_copy(update={"entity_id": window[0], "day": window[1]}), m
    )


def _by_queries(env: Env, windows: list[tuple[str, str]]) -> set[tuple[str, str]]:
    """The answer of the per-window path (a table that keeps no heads)."""
    agg = env.aggregates()
    agg.heads._asked_at = 1e18  # taken as "asked just now, no record": the per-window Query path
    return agg.windows_with_versions(windows)


def test_the_blast_radius_is_one_batch_get_per_100_windows(env: Env) -> None:
    windows = _windows(250)
    versioned = windows[::7]
    writer = env.aggregates()
    for w in versioned:
        _append(writer, w)
    _append(writer, versioned[0], metric="steps")  # a second metric's first version: the same head
    reader = env.aggregates()
    env.take()
    got = reader.windows_with_versions(windows + windows[:10])  # repeats are asked once
    assert got == set(versioned)
    assert env.take() == {"GetItem": 1, "BatchGetItem": 3}  # the record once, then 250 keys in 3 calls
    assert reader.windows_with_versions(windows[:100]) == set(versioned[:15])
    assert env.take() == {"BatchGetItem": 1}
    assert _by_queries(env, windows) == got
    assert env.take() == {"Query": 250}  # what the plan paid before: a call per window


def test_the_first_version_writes_its_head_in_the_same_transaction(env: Env) -> None:
    ddb = env.store.clients.dynamodb
    agg = env.aggregates()
    _append(agg, ("user_1", DAYS[0]))
    head = ddb.get_item(TableName=env.table, Key=head_key("user_1", DAYS[0]))["Item"]
    assert head["entity_id"] == {"S": "user_1"} and head["day"] == {"S": DAYS[0]} and "record" not in head
    assert ddb.get_item(TableName=env.table, Key=RECORD_KEY).get("Item")  # the empty table was marked
    # A version 1 another processor wrote first: refused, and nothing else written.
    m = manifest("other inputs")
    taken = version(1, m).model_copy(update={"entity_id": "user_1", "day": DAYS[0], "value": 99})
    before = ddb.scan(TableName=env.table)["Count"]
    assert not agg.append(taken, m)
    assert ddb.scan(TableName=env.table)["Count"] == before
    assert agg.latest("user_1", DAYS[0], "daily_event_count").value != 99  # type: ignore[union-attr]


def test_versions_written_before_heads_are_found_window_by_window_then_by_heads_after_a_backfill(
    env: Env,
) -> None:
    """An earlier release's versions (no heads) and the original kit's (``SK=DAY#<d>#VER#<seconds>``): a
    table that has them is not marked by a new version, so the plan asks window by window, correctly;
    the backfill writes their heads and marks the table."""
    table = boto3.resource("dynamodb", region_name=REGION).Table(env.table)
    earlier = version(1, manifest("x")).model_copy(update={"entity_id": "early", "day": DAYS[0]})
    item = env.aggregates()._item(earlier)
    env.store.clients.dynamodb.put_item(TableName=env.table, Item=item)  # as an earlier release wrote it
    table.put_item(Item={"PK": "ENTITY#legacy", "SK": f"DAY#{DAYS[1]}#VER#1766900000", "metric_name": "m",
                         "value": 3, "computed_at": "2025-12-29T00:00:00Z"})  # fmt: skip
    agg = env.aggregates()
    _append(agg, ("new", DAYS[2]))  # a version of this release: with its head, but the table stays unmarked
    windows = [("early", DAYS[0]), ("legacy", DAYS[1]), ("new", DAYS[2]), ("none", DAYS[0])]
    want = {("early", DAYS[0]), ("legacy", DAYS[1]), ("new", DAYS[2])}
    reader = env.aggregates()
    env.take()
    assert reader.windows_with_versions(windows) == want
    assert env.take() == {"GetItem": 1, "Query": 4}
    assert backfill_heads(env.store.clients.dynamodb, env.table) == 3
    fresh = env.aggregates()
    env.take()
    assert fresh.windows_with_versions(windows) == want
    assert env.take() == {"GetItem": 1, "BatchGetItem": 1}
    assert backfill_heads(env.store.clients.dynamodb, env.table) == 3  # again: the same items
    assert fresh.windows_with_versions(windows) == want


def test_a_record_is_taken_once_seen_and_asked_again_only_after_a_while(env: Env) -> None:
    heads = WindowHeads(env.store.clients.dynamodb, env.table)
    env.take()
    assert not heads.kept() and not heads.kept()
    assert env.take() == {"GetItem": 1}  # absence is not asked again within a minute
    _append(env.aggregates(), ("a", DAYS[0]))
    heads._asked_at = 0.0  # a minute later
    assert heads.kept() and heads.kept()
    env.take()
    assert heads.kept()
    assert env.take() == {}
