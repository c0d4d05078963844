"""Sharded entity keys and a sharded quarantine on moto: where receipts and rejections are written, the
merge that reads an entity window (and the rejections) back in key order a page at a time, and stacks
written before the keys were sharded (by an earlier release, or the original kit) read as before."""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.adapters.aws.dynamo import value_of
from backend.adapters.aws.event_items import (
    entity_pk,
    is_receipt_pk,
    is_rejection_pk,
    lag_shard,
    rejection_pk,
    rejection_shard_pk,
)
from backend.adapters.aws.investigate import AwsInvestigation
from backend.adapters.aws.lag_shards import (
    DEFAULT_ENTITY_SHARDS,
    DEFAULT_REJECTION_SHARDS,
    ENTITY,
    REJECTION,
    recorded_shards,
)
from backend.adapters.aws.rollup_items import contribution
from backend.adapters.aws.store import AwsStore, _shards
from backend.errors import StoreError
from backend.model import EventRecord, IngestStatus
from backend.services.ingest import IngestService, Received
from backend.times import FixedClock
from tests.aws_env import moto_backend

DAY = "2025-12-28"
WINDOW = ("2025-12-27T00:00:00.000Z", "2025-12-30T00:00:00.000Z")
INGESTED = datetime(2025, 12, 29, 6, 0, tzinfo=UTC)
ENTITY_N, REJECTION_N = 4, 3


def _events(n: int, seed: int = 11, first: int = 0) -> list[bytes]:
    """``n`` events, most of them from one entity (``hot``), many at the same event time (ties ordered by
    event id across shards as within one key)."""
    rng = random.Random(seed)
    out = []
    for i in range(first, first + n):
        second = rng.choice([0, 0, 59, 3600, rng.randrange(2 * 86_400)])
        t = datetime.fromisoformat(f"{DAY}T00:00:00+00:00") + timedelta(seconds=second)
        entity = "hot" if rng.random() < 0.8 else f"u{i % 5}"
        body = {"source": "web", "event_type": "click", "entity_id": entity,
                "event_time": t.isoformat().replace("+00:00", "Z"), "payload": {"i": i}}  # fmt: skip
        out.append(json.dumps(body).encode())
    return out


def _bad(n: int, first: int = 0) -> list[bytes]:
    return [
        json.dumps({"source": "web app", "entity_id": "hot", "n": i}).encode()
        for i in range(first, first + n)
    ]


def _fill(
    store: AwsStore, bodies: list[bytes], duplicates: int = 0, rejected: list[bytes] | None = None
) -> None:
    clock = FixedClock(INGESTED)
    service = IngestService(store, store, clock)
    for start in range(0, len(bodies), 50):
        service.ingest_batch(
            [Received(b, "test", start + k) for k, b in enumerate(bodies[start : start + 50])]
        )
        clock.advance(timedelta(seconds=1))
    if duplicates:
        service.ingest_batch([Received(b, "again", k) for k, b in enumerate(bodies[:duplicates])])
    for k, body in enumerate(rejected or []):
        clock.advance(timedelta(milliseconds=7 * (k % 3)))  # some rejections share a receive time
        service.ingest_batch([Received(body, "bad", k)])


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[AwsStore, AwsStore]]:
    """The same 120 events, 8 duplicates and 12 rejections in an unsharded stack and in one with 4 entity
    shards and 3 rejection shards."""
    bodies, bad = _events(120), _bad(12)
    flat, _, close_flat = moto_backend(lag_shards=None)
    try:
        _fill(flat, bodies, duplicates=8, rejected=bad)
        sharded, _, close_sharded = moto_backend(entity_shards=ENTITY_N, rejection_shards=REJECTION_N)
        try:
            _fill(sharded, bodies, duplicates=8, rejected=bad)
            yield flat, sharded
        finally:
            close_sharded()
    finally:
        close_flat()


def _scan(store: AwsStore) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": store.t.events}
    while True:
        page = store.ddb.scan(**kwargs)
        items += page["Items"]
        if not page.get("LastEvaluatedKey"):
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _keys(records: list[EventRecord]) -> list[tuple[Any, ...]]:
    return [(r.event_time, r.event_id, r.status, r.receipt == "0") for r in records]


def _all(read: Callable[..., Any], limit: int, **kwargs: Any) -> list[Any]:
    out: list[Any] = []
    after = None
    while True:
        page = read(limit=limit, after=after, **kwargs)
        assert len(page.items) <= limit
        out += page.items
        if page.next_cursor is None:
            return out
        assert page.items
        after = page.next_cursor


def test_receipts_are_written_under_their_event_ids_entity_shard(pair: tuple[AwsStore, AwsStore]) -> None:
    flat, sharded = pair
    receipts = [i for i in _scan(sharded) if is_receipt_pk(value_of(i, "PK"))]
    assert len(receipts) == 128
    for item in receipts:
        shard = lag_shard(value_of(item, "event_id"), ENTITY_N)
        assert value_of(item, "PK") == entity_pk(value_of(item, "entity_id"), shard)
    hot = Counter(value_of(i, "PK") for i in receipts if value_of(i, "entity_id") == "hot")
    assert len(hot) == ENTITY_N and min(hot.values()) > 10  # the hot entity's writes spread over 4 keys
    assert entity_pk("hot", 2) == "ENTITY:2#hot"
    flat_pks = {value_of(i, "PK") for i in _scan(flat) if is_receipt_pk(value_of(i, "PK"))}
    assert "ENTITY#hot" in flat_pks and all(pk.startswith("ENTITY#") for pk in flat_pks)
    assert recorded_shards(sharded.ddb, sharded.t.events, ENTITY) == ENTITY_N
    assert recorded_shards(sharded.ddb, sharded.t.events, REJECTION) == REJECTION_N
    assert recorded_shards(flat.ddb, flat.t.events, ENTITY) is None
    # The dedupe item names the accepted receipt's key, so get_accepted is one GetItem of each table.
    dedupe = sharded.ddb.scan(TableName=sharded.t.dedupe)["Items"]
    by_id = {value_of(i, "event_id"): value_of(i, "PK") for i in receipts if value_of(i, "receipt") == "0"}
    assert sum(1 for d in dedupe if value_of(d, "event_id") in by_id) == 120
    assert all(
        value_of(d, "pk") == by_id[value_of(d, "event_id")]
        for d in dedupe
        if value_of(d, "event_id") in by_id
    )


def test_no_entity_id_reaches_another_entitys_shard_key() -> None:
    # The shard goes before the entity id, which may hold any "#" or ":": an unsharded key starts
    # "ENTITY#", a sharded one "ENTITY:<digits>#".
    assert entity_pk("2#hot") == "ENTITY#2#hot" != entity_pk("hot", 2)
    assert entity_pk(":2#hot") == "ENTITY#:2#hot" != entity_pk("hot", 2)
    assert is_receipt_pk("ENTITY#x") and is_receipt_pk("ENTITY:3#x") and not is_receipt_pk("ENTITYx")
    assert (
        is_rejection_pk("REJECTED") and is_rejection_pk(rejection_pk(2)) and not is_rejection_pk("REJECTEDx")
    )


@pytest.mark.parametrize("descending", [False, True])
def test_the_merge_lists_an_entity_window_as_one_unsharded_query_does(
    pair: tuple[AwsStore, AwsStore], descending: bool
) -> None:
    flat, sharded = pair
    want = flat.query_entity("hot", *WINDOW, limit=1000, descending=descending).items
    got = sharded.query_entity("hot", *WINDOW, limit=1000, descending=descending).items
    assert len(want) > 90
    assert _keys(got) == _keys(want)
    times = [r.event_time for r in got]
    assert times == sorted(times, reverse=descending)
    assert len(set(times)) < len(times)  # ties were there to order


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("limit", [1, 7, 100])
def test_paging_an_entity_window_through_the_shards_gives_the_same_rows_once(
    pair: tuple[AwsStore, AwsStore], descending: bool, limit: int
) -> None:
    flat, sharded = pair
    want = flat.query_entity("hot", *WINDOW, limit=1000, descending=descending).items
    if limit == 1:
        want, got, after = want[:25], [], None
        for _ in range(25):
            page = sharded.query_entity("hot", *WINDOW, limit=1, after=after, descending=descending)
            got += page.items
            after = page.next_cursor
    else:
        got = _all(
            sharded.query_entity,
            limit,
            entity_id="hot",
            start=WINDOW[0],
            end=WINDOW[1],
            descending=descending,
        )
    assert _keys(got) == _keys(want)


@pytest.mark.parametrize("status", [IngestStatus.ACCEPTED, IngestStatus.DUPLICATE])
def test_a_status_filter_and_a_narrow_window_hold_across_entity_shards(
    pair: tuple[AwsStore, AwsStore], status: IngestStatus
) -> None:
    flat, sharded = pair
    narrow = (f"{DAY}T00:00:00.000Z", f"{DAY}T01:00:00.000Z")
    for window in (WINDOW, narrow):
        want = _all(flat.query_entity, 6, entity_id="hot", start=window[0], end=window[1], status=status)
        got = _all(sharded.query_entity, 6, entity_id="hot", start=window[0], end=window[1], status=status)
        assert _keys(got) == _keys(want) and want
        assert all(r.status is status for r in got)


def test_a_page_of_an_entity_costs_one_query_per_shard(pair: tuple[AwsStore, AwsStore]) -> None:
    _, sharded = pair
    sharded.read_entity_shards()  # the stack's record is read once per store
    calls: Counter[str] = Counter()
    items_read = [0]

    def count(event_name: str, **_: Any) -> None:
        calls[event_name.split(".", 2)[2]] += 1

    def read(parsed: Any = None, **_: Any) -> None:
        items_read[0] += len((parsed or {}).get("Items", []))

    sharded.ddb.meta.events.register("before-call.dynamodb.*", count)
    sharded.ddb.meta.events.register("after-call.dynamodb.Query", read)
    try:
        page = sharded.query_entity("hot", *WINDOW, limit=10)
    finally:
        sharded.ddb.meta.events.unregister("before-call.dynamodb.*", count)
        sharded.ddb.meta.events.unregister("after-call.dynamodb.Query", read)
    assert len(page.items) == 10 and page.next_cursor
    assert calls == {"Query": 1 + ENTITY_N}  # the unsharded key and each shard's, a small page each
    assert items_read[0] <= 8 * (1 + ENTITY_N) < 100


def test_lookups_and_counts_find_receipts_in_their_shards(pair: tuple[AwsStore, AwsStore]) -> None:
    flat, sharded = pair
    events = flat.query_entity("hot", *WINDOW, limit=1000).items
    duplicated = [r.event_id for r in events if r.status is IngestStatus.DUPLICATE]
    assert duplicated
    for event_id in [r.event_id for r in events[:10]] + duplicated[:3]:
        a, b = flat.get_accepted(event_id), sharded.get_accepted(event_id)
        assert a is not None and b is not None and _keys([a]) == _keys([b])
        assert len(flat.receipts(event_id)) == len(sharded.receipts(event_id))
    for entity in ("hot", "u1"):
        want = AwsInvestigation(flat).day_counts_entity(entity, "2025-12-27", "2025-12-31")
        got = AwsInvestigation(sharded).day_counts_entity(entity, "2025-12-27", "2025-12-31")
        assert got == want and sum(c.accepted for c in got) > 0
    a, b = flat.stats(), sharded.stats()
    assert (a.accepted, a.duplicate, a.rejected, a.entities) == (
        b.accepted,
        b.duplicate,
        b.rejected,
        b.entities,
    )
    assert (b.accepted, b.duplicate, b.rejected) == (120, 8, 12)


def test_rejections_are_spread_over_their_shards_and_listed_in_order(pair: tuple[AwsStore, AwsStore]) -> None:
    flat, sharded = pair
    items = [i for i in _scan(sharded) if is_rejection_pk(value_of(i, "PK"))]
    assert len(items) == 12
    for item in items:
        rejection_id = value_of(item, "SK")[3:]
        assert value_of(item, "PK") == rejection_shard_pk(rejection_id, REJECTION_N)
    assert len({value_of(i, "PK") for i in items}) > 1
    for descending in (False, True):
        want = _all(flat.query_rejections, 5, descending=descending)
        got = _all(sharded.query_rejections, 5, descending=descending)
        assert [(r.received_at, r.sha256, r.line) for r in got] == [
            (r.received_at, r.sha256, r.line) for r in want
        ]
        ids = [r.rejection_id for r in got]
        assert ids == sorted(ids, reverse=descending) and len(set(ids)) == 12
    for r in got:
        found = sharded.get_rejection(str(r.rejection_id))
        assert found is not None and found.sha256 == r.sha256
    assert _all(sharded.query_rejections, 4, entity_id="hot") == got[::-1]


def test_a_stack_written_before_its_keys_were_sharded_keeps_reading() -> None:
    """An earlier release wrote ENTITY#<id> and REJECTED; the stack is then written with shards (and
    duplicates of the early events land in the shards): every read sees both, in order, and a cursor
    handed out before the change still continues the listing."""
    before, _, close = moto_backend()
    try:
        first, second = _events(40, seed=3), _events(40, seed=4, first=40)
        _fill(before, first, rejected=_bad(4))
        old_page = before.query_entity("hot", *WINDOW, limit=5)
        old_rejections = before.query_rejections(limit=2)
        after = AwsStore(
            before.clients, before.t.bucket, before.t.events, before.t.dedupe, workers=1,
            entity_shards=ENTITY_N, rejection_shards=REJECTION_N,
        )  # fmt: skip
        _fill(after, second, rejected=_bad(4, first=4))
        IngestService(after, after, FixedClock(INGESTED)).ingest_batch(
            [Received(b, "again", k) for k, b in enumerate(first[:6])]
        )
        pks = {value_of(i, "PK") for i in _scan(after) if is_receipt_pk(value_of(i, "PK"))}
        assert "ENTITY#hot" in pks and {entity_pk("hot", m) for m in range(ENTITY_N)} <= pks
        listed = after.query_entity("hot", *WINDOW, limit=1000).items
        hot_bodies = [b for b in first + second if json.loads(b)["entity_id"] == "hot"]
        hot_dups = [b for b in first[:6] if json.loads(b)["entity_id"] == "hot"]
        assert len(listed) == len(hot_bodies) + len(hot_dups)
        keys = [(r.event_time, r.event_id) for r in listed]
        assert keys == sorted(keys)
        rest = _all(after.query_entity, 7, entity_id="hot", start=WINDOW[0], end=WINDOW[1])
        assert _keys(rest) == _keys(listed)
        # The cursor of a page read before sharding continues after its last row, whatever key holds it.
        page = after.query_entity("hot", *WINDOW, limit=1000, after=old_page.next_cursor)
        cut = _keys(listed).index(_keys(old_page.items)[-1]) + 1
        assert _keys(page.items) == _keys(listed)[cut:] and cut >= 5
        for r in listed:
            if r.status is IngestStatus.ACCEPTED:
                got = after.get_accepted(r.event_id)
                assert got is not None and got.event_id == r.event_id
        rejections = _all(after.query_rejections, 3)
        assert len(rejections) == 8
        assert [r.rejection_id for r in rejections] == sorted(str(r.rejection_id) for r in rejections)
        rest_rejections = after.query_rejections(limit=100, after=old_rejections.next_cursor).items
        cut = _keys_r(rejections).index(_keys_r(old_rejections.items)[-1]) + 1
        assert _keys_r(rest_rejections) == _keys_r(rejections)[cut:] and cut >= 2
        assert all(after.get_rejection(str(r.rejection_id)) is not None for r in rejections)
        a = AwsInvestigation(after).day_counts_entity("hot", "2025-12-27", "2025-12-31")
        assert sum(c.accepted for c in a) == len(hot_bodies) and sum(c.duplicate for c in a) == len(hot_dups)
    finally:
        close()


def _keys_r(rejections: list[Any]) -> list[tuple[Any, ...]]:
    return [(r.rejection_id, r.sha256) for r in rejections]


def test_a_writer_with_another_entity_shard_count_is_refused() -> None:
    store, _, close = moto_backend(entity_shards=4)
    try:
        _fill(store, _events(5))
        other = AwsStore(
            store.clients, store.t.bucket, store.t.events, store.t.dedupe, workers=1, entity_shards=8
        )
        with pytest.raises(
            StoreError,
            match=r"^ENTITY_SHARDS is 8 but the stack's events table records 4 entity shards; set "
            r"ENTITY_SHARDS=4$",
        ):
            IngestService(other, other).ingest_batch([Received(_events(6, first=5)[5], "test", 1)])
        assert (
            len(store.query_entity("hot", *WINDOW, limit=100).items)
            + len([r for u in range(5) for r in store.query_entity(f"u{u}", *WINDOW, limit=100).items])
            == 5
        )  # nothing written
    finally:
        close()


def test_a_rollup_gate_follows_the_receipts_partition_key() -> None:
    # DynamoDB Streams orders records within one partition key only: each shard of an entity is gated by
    # its own watermark item, or a record of one shard could be taken as counted by another's.
    base = {
        "SK": {"S": "TS#2025-12-28T00:00:00.000Z#EID#x"},
        "receipt": {"S": "0"},
        "entity_id": {"S": "hot"},
        "source": {"S": "web"},
        "event_type": {"S": "click"},
        "event_time": {"S": "2025-12-28T00:00:00.000Z"},
        "ingest_time": {"S": "2025-12-28T00:00:01.000Z"},
        "ingest_lag_ms": {"N": "1000"},
    }
    gates = {
        pk: contribution({**base, "PK": {"S": pk}}, "1", "")
        for pk in ("ENTITY#hot", "ENTITY:0#hot", "ENTITY:1#hot")
    }
    assert {pk: c.gate for pk, c in gates.items() if c} == {
        "ENTITY#hot": ("ROLLUP#ENTITY#hot", "DAY#2025-12-28"),
        "ENTITY:0#hot": ("ROLLUP#ENTITY:0#hot", "DAY#2025-12-28"),
        "ENTITY:1#hot": ("ROLLUP#ENTITY:1#hot", "DAY#2025-12-28"),
    }
    rejected = {"SK": {"S": "RJ#x"}, "received_at": {"S": "2025-12-28T00:00:00.000Z"}}
    c = contribution({**rejected, "PK": {"S": rejection_pk(2)}}, "1", "")
    assert c is not None and c.gate == ("ROLLUP#REJECTED#S#2", "DAY#2025-12-28")


def test_the_default_entity_and_rejection_shards_hold_the_target() -> None:
    assert DEFAULT_ENTITY_SHARDS == 30 and 5_000 * 3 / DEFAULT_ENTITY_SHARDS <= 500  # a 5% entity of 100k/s
    assert DEFAULT_REJECTION_SHARDS == 6 and 1_000 * 3 / DEFAULT_REJECTION_SHARDS <= 500  # 1% rejected
    with pytest.raises(StoreError, match=r"^ENTITY_SHARDS must be a whole number from 1 to 1000, got 'x'"):
        _shards("x", "ENTITY_SHARDS")


def test_the_original_kits_stack_reads_the_same_with_shard_settings() -> None:
    """A stack the original kit populated records no shards; a reader whose environment sets
    ENTITY_SHARDS and REJECTION_SHARDS (the template's functions do) reads its unsharded rows, duplicates
    resolved as before, and writes nothing."""
    from moto import mock_aws

    from backend.adapters.aws.clients import make_clients
    from tests.aws.test_legacy_stack import WINDOW as LEGACY_WINDOW
    from tests.aws.test_legacy_stack import eid, original_kit_stack
    from tests.aws_env import fake_credentials

    restore = fake_credentials()
    try:
        with mock_aws():
            settings = original_kit_stack()
            names = (settings.raw_bucket or "", settings.events_table or "", settings.dedupe_table or "")
            flat = AwsStore(make_clients(settings), *names, workers=1)
            sharded = AwsStore(
                make_clients(settings),
                *names,
                workers=1,
                entity_shards=ENTITY_N,
                rejection_shards=REJECTION_N,
            )
            calls: list[str] = []
            sharded.ddb.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
            want = flat.query_entity("user_123", *LEGACY_WINDOW, limit=100).items
            got = sharded.query_entity("user_123", *LEGACY_WINDOW, limit=100).items
            assert len(want) == 9 and _keys(got) == _keys(want)  # 8 rows, an overwritten one read as two
            for status in IngestStatus.ACCEPTED, IngestStatus.DUPLICATE:
                a = _all(
                    flat.query_entity,
                    3,
                    entity_id="user_123",
                    start=LEGACY_WINDOW[0],
                    end=LEGACY_WINDOW[1],
                    status=status,
                )
                b = _all(
                    sharded.query_entity,
                    3,
                    entity_id="user_123",
                    start=LEGACY_WINDOW[0],
                    end=LEGACY_WINDOW[1],
                    status=status,
                )
                assert _keys(a) == _keys(b) and a
            for n in (1, 6, 7):
                a1, b1 = flat.get_accepted(eid(n)), sharded.get_accepted(eid(n))
                assert a1 is not None and b1 is not None and _keys([a1]) == _keys([b1])
            counts = AwsInvestigation(sharded).day_counts_entity("user_123", DAY, "2025-12-29")
            assert counts == AwsInvestigation(flat).day_counts_entity("user_123", DAY, "2025-12-29")
            assert sharded.query_rejections(limit=10).items == []
            assert set(calls) <= {"Query", "GetItem", "BatchGetItem", "Scan"}
            flat.close()
            sharded.close()
    finally:
        restore()


def _matches(rule: Any, pk: str) -> bool:
    return pk == rule if isinstance(rule, str) else pk.startswith(rule["prefix"])


def test_the_rollup_functions_stream_filter_lets_every_receipt_and_rejection_key_through() -> None:
    from tests.aws.test_template import load_template

    template = load_template()
    [function] = [
        r for r in template["Resources"].values() if "FilterCriteria" in json.dumps(r.get("Properties", {}))
    ]
    patterns = [
        json.loads(f["Pattern"])
        for event in function["Properties"]["Events"].values()
        for f in event["Properties"]["FilterCriteria"]["Filters"]
    ]
    rules = [rule for p in patterns for rule in p["dynamodb"]["Keys"]["PK"]["S"]]
    counted = ["ENTITY#hot", entity_pk("hot", 7), entity_pk("a#b:c", 0), "REJECTED", rejection_pk(5)]
    assert all(any(_matches(r, pk) for r in rules) for pk in counted)
    for pk in ("ROLLUP#ENTITY#hot", "ROLLUP#ENTITY:7#hot", "ROLLUP#REJECTED", "STACK"):
        assert not any(_matches(r, pk) for r in rules), pk  # the rollups' own writes never come back
