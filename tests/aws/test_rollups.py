"""Rollups on moto: the stream's records (read back from moto's DynamoDB Streams, in the shape Lambda hands
them over) applied to the rollup items give the same counts as a full scan, a replayed batch counts once,
lag percentiles stay within the stated bound, and stacks without rollups are read by scans as before."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.aws.event_items import is_receipt_pk
from backend.handlers import common
from backend.handlers.rollup import handler
from backend.lag_buckets import LAG_ERROR
from backend.services.lag import LagService
from tests.aws.rollup_env import StreamStack, chunks, event, ingest_at, stream_stack, times
from tests.aws_env import moto_kit

DAYS = ["2025-12-27", "2025-12-28", "2025-12-29"]
GRACES = [0, 90_000, 3_600_000, 86_400_000, 1_234_567, 250]
LATES = [0, 1_000, 60_000, 3_600_000, 1_234_567, 777]


@pytest.fixture(
    scope="module",
    params=[(1, 1), (4, 1), (1, 3)],
    ids=["unsharded", "4-lag-shards", "3-entity-shards"],
)
def stack(request: pytest.FixtureRequest) -> Iterator[StreamStack]:
    """An unsharded stack, one whose lag index has 4 shards (the late counts a rollup bucket cannot
    answer alone are read from every shard of the day) and one whose entities' receipts have 3 (each
    shard's receipts gated by their own rollup items: stream order holds within one partition key only)."""
    lag, entity = request.param
    s = stream_stack(lag_shards=lag, entity_shards=entity)
    s.rollups().backfill(settle_s=0)  # an empty table: the rollups are ready, the stream counts from here
    try:
        yield s
    finally:
        s.close()


def _lag(rng: random.Random) -> int:
    """Lags from milliseconds to days, log-spread, with some exactly on the thresholds tested."""
    if rng.random() < 0.1:
        return rng.choice([0, 3_600_000, 86_400_000, 1_234_567])
    return int(10 ** rng.uniform(0, 8.5))


def _ingest(stack: StreamStack, source: str, seed: int, n: int) -> None:
    rng = random.Random(seed)
    sent: list[bytes] = []
    for i in range(n):
        day = rng.choice(DAYS)
        if sent and rng.random() < 0.15:  # a duplicate, arriving later
            ingest_at(stack.store, rng.choice(sent), datetime(2026, 1, 5, tzinfo=UTC))
            continue
        event_time, ingested = times(day, rng.randrange(24), rng.randrange(60), _lag(rng))
        if rng.random() < 0.05:  # the producer's clock ahead: negative lag, stored as 0 with clock skew
            ingested -= timedelta(minutes=5)
        body = event(source, f"{source}-e{rng.randrange(3)}", event_time, i)
        ingest_at(stack.store, body, ingested)
        sent.append(body)


def _same_day_counts(stack: StreamStack, source: str) -> None:
    fast, slow = stack.investigation(rollups=True), stack.investigation(rollups=False)
    for grace in GRACES:
        a = fast.day_counts_partition(source, "heartbeat", "2025-12-26", "2025-12-31", grace_ms=grace)
        b = slow.day_counts_partition(source, "heartbeat", "2025-12-26", "2025-12-31", grace_ms=grace)
        assert [(c.day, c.accepted, c.late, c.duplicate) for c in a] == [
            (c.day, c.accepted, c.late, c.duplicate) for c in b
        ], grace
        for x, y in zip(a, b, strict=True):  # first/last late arrival: bounds around the exact times
            assert (x.first_late_ingest is None) == (y.first_late_ingest is None)
            if x.first_late_ingest and y.first_late_ingest and x.last_late_ingest and y.last_late_ingest:
                assert x.first_late_ingest <= y.first_late_ingest
                assert x.last_late_ingest >= y.last_late_ingest
        for e in range(3):
            entity = f"{source}-e{e}"
            a = fast.day_counts_entity(entity, "2025-12-26", "2025-12-31", grace_ms=grace)
            b = slow.day_counts_entity(entity, "2025-12-26", "2025-12-31", grace_ms=grace)
            assert [(c.day, c.accepted, c.late, c.duplicate) for c in a] == [
                (c.day, c.accepted, c.late, c.duplicate) for c in b
            ], (entity, grace)


def _same_lag(stack: StreamStack, source: str) -> None:
    store = stack.store
    fast = LagService(store, stack.investigation(rollups=True))
    slow = LagService(store, stack.investigation(rollups=False))
    for day in DAYS:
        for late in LATES:
            a, b = (
                fast.lag(source, "heartbeat", day, late_ms=late),
                slow.lag(source, "heartbeat", day, late_ms=late),
            )
            assert a.percentile_error == LAG_ERROR and b.percentile_error == 0
            exact = ("count", "duplicates", "clock_skew", "late", "max_ms", "late_threshold_ms")
            assert {k: getattr(a, k) for k in exact} == {k: getattr(b, k) for k in exact}, (day, late)
            assert [(h.hour, h.count, h.late) for h in a.hours] == [
                (h.hour, h.count, h.late) for h in b.hours
            ]
            pairs = [(a.p50_ms, b.p50_ms), (a.p90_ms, b.p90_ms), (a.p99_ms, b.p99_ms)]
            pairs += [(x.p50_ms, y.p50_ms) for x, y in zip(a.hours, b.hours, strict=True)]
            pairs += [(x.max_ms, y.max_ms) for x, y in zip(a.hours, b.hours, strict=True)]
            for got, want in pairs:
                assert (got is None) == (want is None)
                if got is not None and want is not None:
                    assert abs(got - want) <= LAG_ERROR * want, (got, want)
            assert [r.event_id for r in a.largest] == [r.event_id for r in b.largest]


_examples = iter(range(10_000))


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 30), batch=st.integers(1, 60))
def test_rollups_equal_a_full_scan(stack: StreamStack, seed: int, n: int, batch: int) -> None:
    source = f"h{next(_examples)}"
    _ingest(stack, source, seed, n)
    for part in chunks(stack.stream(), batch):
        stack.rollups().apply_stream(part)
    _same_day_counts(stack, source)
    _same_lag(stack, source)


def test_a_replayed_batch_counts_once(stack: StreamStack) -> None:
    _ingest(stack, "replay", 7, 60)
    # as the template's filter criteria deliver them: receipts and rejections, not the rollups' own writes
    records = [r for r in stack.stream() if is_receipt_pk(r["dynamodb"]["Keys"]["PK"]["S"])]
    writer = stack.rollups()
    first = writer.apply_stream(records[:40])
    assert first.counted > 0 and first.replayed == 0
    again = writer.apply_stream(records[:40])  # Lambda's retry of the same batch
    assert again.counted == 0 and again.replayed == first.counted
    # a bisected half of it, then a batch that overlaps what was counted and goes on past it
    assert writer.apply_stream(records[20:40]).counted == 0
    rest = writer.apply_stream(records[30:])
    assert rest.replayed == sum(1 for r in records[30:40] if r["eventName"] == "INSERT")
    _same_day_counts(stack, "replay")
    _same_lag(stack, "replay")


def test_the_lambda_handler_counts_stream_events_and_ignores_modify_and_remove(stack: StreamStack) -> None:
    _ingest(stack, "lambda", 11, 25)
    ddb, table = stack.store.ddb, stack.table
    key = {"PK": {"S": "OTHER#x"}, "SK": {"S": "y"}}
    ddb.put_item(TableName=table, Item={**key, "v": {"N": "1"}})
    ddb.update_item(
        TableName=table, Key=key, UpdateExpression="SET v = :v", ExpressionAttributeValues={":v": {"N": "2"}}
    )
    ddb.delete_item(TableName=table, Key=key)
    records = stack.stream()
    # moto writes no REMOVE record for a delete: one in the shape DynamoDB gives with NEW_IMAGE (keys, no
    # image), for a receipt, which must not be subtracted (events are append-only)
    receipt = next(r for r in records if is_receipt_pk(r["dynamodb"]["Keys"]["PK"]["S"]))
    body = {k: v for k, v in receipt["dynamodb"].items() if k != "NewImage"}
    body["SequenceNumber"] = str(int(records[-1]["dynamodb"]["SequenceNumber"]) + 1)
    records.append({**receipt, "eventName": "REMOVE", "dynamodb": body})
    assert {r["eventName"] for r in records} >= {"INSERT", "MODIFY", "REMOVE"}
    kit = moto_kit(stack.store, _settings(stack), lambda: None)
    common.configure(kit)
    try:
        answer = handler({"Records": records}, _Context())
        assert answer["counted"] == sum(
            1
            for r in records
            if r["eventName"] == "INSERT" and is_receipt_pk(r["dynamodb"]["Keys"]["PK"]["S"])
        )
        assert answer["ignored"] >= 3
        assert handler({"Records": records}, _Context())["counted"] == 0  # delivered again
    finally:
        common.configure(None)
    _same_day_counts(stack, "lambda")


def test_a_stack_without_rollups_is_read_by_scans() -> None:
    s = stream_stack()
    try:
        _ingest(s, "legacy", 3, 20)
        writer = s.rollups()
        assert writer.apply_stream(s.stream()).counted == 0  # no backfill yet: the stream counts nothing
        scans = s.investigation(rollups=True)
        assert scans.lag_rollup("legacy", "heartbeat", "2025-12-28", late_ms=0) is None
        days = scans.day_counts_partition("legacy", "heartbeat", "2025-12-26", "2025-12-31")
        assert sum(c.accepted for c in days) > 0  # from the scan
        # the backfill counts what is there; the stream then counts only what is ingested after its cutoff
        cutoff = datetime(2026, 6, 1, tzinfo=UTC)
        assert s.rollups(cutoff).backfill(settle_s=0) > 0
        assert s.rollups(cutoff).backfill(settle_s=0) == 0  # ready: a second run does nothing
        later = event("legacy", "legacy-e0", "2025-12-28T10:00:00Z", 999)
        ingest_at(s.store, later, datetime(2026, 7, 1, tzinfo=UTC))
        fresh = s.rollups()
        assert fresh.apply_stream(s.stream()).counted == 1
        _same_day_counts(s, "legacy")
        _same_lag(s, "legacy")
    finally:
        s.close()


def _settings(stack: StreamStack):  # type: ignore[no-untyped-def]
    from backend.settings import AwsSettings

    return AwsSettings(
        raw_bucket=stack.store.t.bucket,
        events_table=stack.store.t.events,
        dedupe_table=stack.store.t.dedupe,
        region="us-east-1",
    )


class _Context:
    function_name = "rollup"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:rollup"
    aws_request_id = "test"
