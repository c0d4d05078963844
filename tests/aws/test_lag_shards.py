"""The sharded lag index on moto: where receipts are written, the k-way merge that reads them back in lag
order a page at a time, per-day counts over the shards, and the stack's record of its shard count."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.adapters.aws.dynamo import value_of
from backend.adapters.aws.event_items import lag_pk, lag_shard
from backend.adapters.aws.investigate import AwsInvestigation
from backend.adapters.aws.lag_shards import DEFAULT_LAG_SHARDS, recorded_shards, shards_for
from backend.adapters.aws.resources import LAG_INDEX
from backend.adapters.aws.store import AwsStore, _shards
from backend.errors import StoreError
from backend.model import EventRecord, IngestStatus
from backend.services.ingest import IngestService, Received
from backend.times import FixedClock
from tests.aws_env import moto_backend

DAY = "2025-12-28"
INGESTED = datetime(2025, 12, 29, 6, 0, tzinfo=UTC)


def _events(n: int, seed: int = 7) -> list[bytes]:
    """``n`` events of one (source, type, day) with lags of every size, many of them tied (same event
    time): ties are ordered by ingest time and id across shards as within one key."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        second = rng.choice([0, 0, 59, 3600, rng.randrange(86_400)])
        t = datetime.fromisoformat(f"{DAY}T00:00:00+00:00") + timedelta(seconds=second)
        body = {"source": "web", "event_type": "click", "entity_id": f"u{i % 17}",
                "event_time": t.isoformat().replace("+00:00", "Z"), "payload": {"i": i}}  # fmt: skip
        out.append(json.dumps(body).encode())
    return out


def _fill(store: AwsStore, bodies: list[bytes], duplicates: int = 0) -> None:
    clock = FixedClock(INGESTED)
    service = IngestService(store, store, clock)
    for start in range(0, len(bodies), 100):
        service.ingest_batch(
            [Received(b, "test", start + k) for k, b in enumerate(bodies[start : start + 100])]
        )
        clock.advance(timedelta(seconds=1))  # ingest times differ between batches, tie within one
    if duplicates:
        service.ingest_batch([Received(b, "again", k) for k, b in enumerate(bodies[:duplicates])])


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[AwsStore, AwsStore]]:
    """The same 200 events (and 10 duplicates) in an unsharded stack and in one with 5 lag shards."""
    bodies = _events(200)
    flat, _, close_flat = moto_backend(lag_shards=None)
    try:
        _fill(flat, bodies, duplicates=10)
        sharded, _, close_sharded = moto_backend(lag_shards=5)
        try:
            _fill(sharded, bodies, duplicates=10)
            yield flat, sharded
        finally:
            close_sharded()
    finally:
        close_flat()


def _keys(records: list[EventRecord]) -> list[tuple[Any, ...]]:
    return [(r.ingest_lag_ms, r.ingest_time, r.event_id, r.status, r.receipt is not None) for r in records]


def _all(read: Callable[..., Any], limit: int, **kwargs: Any) -> list[EventRecord]:
    out: list[EventRecord] = []
    after = None
    while True:
        page = read(limit=limit, after=after, **kwargs)
        assert len(page.items) <= limit
        out += page.items
        if page.next_cursor is None:
            return out
        assert page.items
        after = page.next_cursor


def _gsi_items(store: AwsStore) -> list[dict[str, Any]]:
    return store.ddb.scan(TableName=store.t.events, IndexName=LAG_INDEX.name)["Items"]


def test_receipts_are_written_under_their_event_ids_shard(pair: tuple[AwsStore, AwsStore]) -> None:
    flat, sharded = pair
    items = _gsi_items(sharded)
    assert len(items) == 210
    for item in items:
        shard = lag_shard(value_of(item, "event_id"), 5)
        assert (
            value_of(item, "GSI1PK")
            == lag_pk("web", "click", DAY, shard)
            == f"SRC#web#TYPE#click#DAY#{DAY}#S#{shard}"
        )
    per_shard = Counter(value_of(i, "GSI1PK") for i in items)
    assert len(per_shard) == 5 and min(per_shard.values()) > 20  # every shard takes a share
    assert {value_of(i, "GSI1PK") for i in _gsi_items(flat)} == {lag_pk("web", "click", DAY)}
    assert recorded_shards(sharded.ddb, sharded.t.events) == 5
    assert recorded_shards(flat.ddb, flat.t.events) is None  # an unsharded stack records nothing


@pytest.mark.parametrize("descending", [True, False])
def test_the_merge_lists_what_one_unsharded_query_lists(
    pair: tuple[AwsStore, AwsStore], descending: bool
) -> None:
    flat, sharded = pair
    want = flat.query_partition("web", "click", DAY, limit=1000, descending=descending).items
    got = sharded.query_partition("web", "click", DAY, limit=1000, descending=descending).items
    assert len(want) == 210
    assert _keys(got) == _keys(want)
    lags = [r.ingest_lag_ms for r in got]
    assert lags == sorted(lags, reverse=descending)  # largest lag first when descending
    assert len(set(lags)) < len(lags)  # ties were there to order


@pytest.mark.parametrize("descending", [True, False])
@pytest.mark.parametrize("limit", [1, 13, 100])
def test_paging_through_the_shards_gives_the_same_rows_once(
    pair: tuple[AwsStore, AwsStore], descending: bool, limit: int
) -> None:
    flat, sharded = pair
    want = flat.query_partition("web", "click", DAY, limit=1000, descending=descending).items
    if limit == 1:
        want = want[:30]  # a page of one per call: the first 30 are enough to show the order holds
        got = []
        after = None
        for _ in range(30):
            page = sharded.query_partition("web", "click", DAY, limit=1, after=after, descending=descending)
            got += page.items
            after = page.next_cursor
    else:
        got = _all(
            sharded.query_partition, limit, source="web", event_type="click", day=DAY, descending=descending
        )
    assert _keys(got) == _keys(want)


@pytest.mark.parametrize("status", [IngestStatus.ACCEPTED, IngestStatus.DUPLICATE])
def test_a_status_filter_holds_across_shards(pair: tuple[AwsStore, AwsStore], status: IngestStatus) -> None:
    flat, sharded = pair
    want = _all(
        flat.query_partition, 9, source="web", event_type="click", day=DAY, status=status, descending=True
    )
    got = _all(
        sharded.query_partition, 9, source="web", event_type="click", day=DAY, status=status, descending=True
    )
    assert _keys(got) == _keys(want) and len(got) == (200 if status is IngestStatus.ACCEPTED else 10)


def test_a_page_costs_one_query_per_shard_not_a_read_of_the_day(pair: tuple[AwsStore, AwsStore]) -> None:
    _, sharded = pair
    calls: Counter[str] = Counter()
    items_read = [0]

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.split(".", 2)[2]] += 1

    def read(parsed: Any = None, **_: Any) -> None:
        items_read[0] += len((parsed or {}).get("Items", []))

    sharded.ddb.meta.events.register("before-call.dynamodb.Query", count)
    sharded.ddb.meta.events.register("after-call.dynamodb.Query", read)
    try:
        page = sharded.query_partition("web", "click", DAY, limit=10, descending=True)
    finally:
        sharded.ddb.meta.events.unregister("before-call.dynamodb.Query", count)
        sharded.ddb.meta.events.unregister("after-call.dynamodb.Query", read)
    assert len(page.items) == 10 and page.next_cursor
    # 2 probes for the original kit's keys, the unsharded key and 5 shards: 8 queries, 8 items at most each.
    assert calls["Query"] == 8
    assert items_read[0] <= 6 * 8 < 210


def test_day_counts_add_up_every_shard(pair: tuple[AwsStore, AwsStore]) -> None:
    flat, sharded = pair
    want = AwsInvestigation(flat).day_counts_partition("web", "click", DAY, "2025-12-30")
    got = AwsInvestigation(sharded).day_counts_partition("web", "click", DAY, "2025-12-30")
    assert got == want and got[0].accepted == 200 and got[0].duplicate == 10


def test_a_reader_without_the_setting_takes_the_stacks_record() -> None:
    writer, _, close = moto_backend(lag_shards=3)
    try:
        _fill(writer, _events(60))
        reader = AwsStore(writer.clients, writer.t.bucket, writer.t.events, writer.t.dedupe, workers=1)
        assert reader.read_lag_shards() == 3
        assert len(reader.query_partition("web", "click", DAY, limit=100).items) == 60
    finally:
        close()


def test_days_written_before_the_stack_was_sharded_stay_readable() -> None:
    before, _, close = moto_backend(lag_shards=None)
    try:
        bodies = _events(80)
        _fill(before, bodies[:40])
        after = AwsStore(
            before.clients, before.t.bucket, before.t.events, before.t.dedupe, workers=1, lag_shards=4
        )
        _fill(after, bodies[40:])
        keys = {value_of(i, "GSI1PK") for i in _gsi_items(after)}
        assert lag_pk("web", "click", DAY) in keys and len(keys) == 5
        listed = after.query_partition("web", "click", DAY, limit=1000, descending=True).items
        assert len(listed) == 80
        assert [r.ingest_lag_ms for r in listed] == sorted((r.ingest_lag_ms for r in listed), reverse=True)
    finally:
        close()


def test_a_writer_with_another_shard_count_is_refused() -> None:
    store, _, close = moto_backend(lag_shards=4)
    try:
        _fill(store, _events(5))
        other = AwsStore(
            store.clients, store.t.bucket, store.t.events, store.t.dedupe, workers=1, lag_shards=8
        )
        with pytest.raises(
            StoreError, match=r"LAG_SHARDS is 8 but the stack's events table records 4 lag shards"
        ):
            IngestService(other, other).ingest_batch([Received(_events(6)[5], "test", 1)])
        assert len(store.query_partition("web", "click", DAY, limit=100).items) == 5  # nothing written
    finally:
        close()


def test_the_shard_of_an_event_id_is_stable_and_even() -> None:
    # A fixed vector: the shard must never change between releases (readers would miss written items).
    eid = "7f83b1657ff1fc53b92dc18148a1d65dfc2d4b1fa3d677284addd200126d9069"
    assert [lag_shard(eid, n) for n in (1, 2, 60, 256)] == [
        0,
        lag_shard(eid, 2),
        lag_shard(eid, 60),
        lag_shard(eid, 256),
    ]
    assert lag_shard(eid, 60) == _blake_shard(eid, 60)
    counts = Counter(lag_shard(f"{i:064x}", 16) for i in range(16_000))
    assert set(counts) == set(range(16)) and max(counts.values()) < 1.15 * 1000


def _blake_shard(event_id: str, n: int) -> int:
    import hashlib

    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "big") % n


def test_the_default_shard_count_follows_the_rate() -> None:
    assert shards_for(10_000) == DEFAULT_LAG_SHARDS == 60  # 30,000 writes/s at peak / 500 per key
    assert shards_for(40_000) == 240 and shards_for(1) == 1 and shards_for(0) == 1
    assert 10_000 * 3 / DEFAULT_LAG_SHARDS <= 500


@pytest.mark.parametrize("value", ["0", "1001", "many", -3])
def test_a_bad_shard_count_is_one_clear_error(value: object) -> None:
    with pytest.raises(StoreError, match=r"^LAG_SHARDS must be a whole number from 1 to 1000, got"):
        _shards(value)
    assert _shards("60") == 60 and _shards(None) is None


def test_a_stack_output_sets_the_shard_count_as_text() -> None:
    from backend.settings import AwsSettings

    base = AwsSettings(raw_bucket="b", events_table="e", dedupe_table="d", region="us-east-1")
    store = AwsStore.from_settings(base.model_copy(update={"lag_shards": "4"}))  # as --stack NAME gives it
    try:
        assert store.lag_shards_setting == 4
    finally:
        store.close()
    with pytest.raises(StoreError, match="LAG_SHARDS must be"):
        AwsStore.from_settings(base.model_copy(update={"lag_shards": "four"}))


def test_a_partition_read_inside_a_batch_does_not_wait_on_its_own_pool(
    pair: tuple[AwsStore, AwsStore],
) -> None:
    # The store's pool has one thread here: a merge that queued its shard reads on it from a task already
    # running there would wait for itself forever.
    import threading

    _, sharded = pair
    out: list[Any] = []

    def batch() -> None:
        out.extend(
            sharded.map_concurrently(lambda _: sharded.query_partition("web", "click", DAY, limit=5), [0])
        )

    worker = threading.Thread(target=batch, daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the read waited on its own pool"
    assert len(out[0].items) == 5
