"""Bulk reads on AWS beyond the contract: how the raw catalog checks many keys (a listing of each
event-day key range, HEAD for a few) and what it costs in calls; per-day counts of a legacy stack."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator

import pytest

from backend.adapters.aws.investigate import LIST_THRESHOLD, AwsCatalog, AwsInvestigation
from backend.adapters.aws.store import AwsStore
from backend.ports import RawObject
from tests.aws_env import moto_store


@pytest.fixture
def store() -> Iterator[AwsStore]:
    s, close = moto_store()
    yield s
    close()


def count_calls(store: AwsStore) -> Counter[str]:
    calls: Counter[str] = Counter()

    def hook(event_name: str, **_: object) -> None:
        calls[event_name.split(".", 2)[2]] += 1

    store.s3.meta.events.register("before-call.s3.*", hook)
    return calls


def key(day: str, n: int) -> str:
    eid = hashlib.sha256(f"{day}-{n}".encode()).hexdigest()
    return f"raw/source=web/event_type=click/event_date={day}/event_id={eid}.json"


def test_many_keys_of_one_day_are_checked_by_listing_their_range(store: AwsStore) -> None:
    present = [key("2025-12-24", n) for n in range(60)]
    absent = [key("2025-12-24", n) for n in range(60, 90)]
    neighbours = [key("2025-12-23", n) for n in range(5)] + [key("2025-12-25", n) for n in range(5)]
    store.put_new([RawObject(k, b"{}", hashlib.sha256(b"{}").hexdigest()) for k in present + neighbours])
    calls = count_calls(store)
    catalog = AwsCatalog(store)
    assert catalog.missing(present + absent) == set(absent)
    assert calls == {"ListObjectsV2": 1}, "90 keys of one day: one listing, no HEAD"


def test_a_few_keys_are_checked_one_by_one(store: AwsStore) -> None:
    keys = [key("2025-12-24", n) for n in range(3)]
    store.put_new([RawObject(keys[0], b"x", hashlib.sha256(b"x").hexdigest())])
    calls = count_calls(store)
    assert AwsCatalog(store).missing(keys + keys) == set(keys[1:])
    assert calls == {"HeadObject": 3}
    assert LIST_THRESHOLD > 3


def test_a_listing_over_1000_keys_follows_the_continuation(store: AwsStore) -> None:
    keys = [key("2025-12-24", n) for n in range(1100)]
    store.put_new([RawObject(k, b"{}", hashlib.sha256(b"{}").hexdigest()) for k in keys[::2]])
    calls = count_calls(store)
    assert AwsCatalog(store).missing(keys) == set(keys[1::2])
    assert calls["ListObjectsV2"] == 1 and calls["HeadObject"] == 0  # 550 objects: one page


def test_get_many_reads_each_key_once_and_leaves_out_the_missing(store: AwsStore) -> None:
    keys = [key("2025-12-24", n) for n in range(4)]
    store.put_new([RawObject(k, k.encode(), hashlib.sha256(k.encode()).hexdigest()) for k in keys[:3]])
    got = AwsCatalog(store).get_many(keys + keys[:1])
    assert got == {k: k.encode() for k in keys[:3]}


def test_day_counts_refuse_a_negative_grace(store: AwsStore) -> None:
    from backend.errors import InvalidRequest

    with pytest.raises(InvalidRequest):
        AwsInvestigation(store).day_counts_entity("u", "2025-12-01", "2025-12-02", grace_ms=-1)


def test_a_listing_that_would_cost_more_than_heads_hands_the_rest_to_heads(
    store: AwsStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A day prefix much larger than the keys asked of it (an entity's few events among a busy day's):
    # listing their whole range would cost 5 pages; after one page the listing sees that and HEADs the rest.
    import backend.adapters.aws.investigate as investigate

    monkeypatch.setattr(investigate, "LIST_PAGE", 100)
    monkeypatch.setattr(investigate, "LIST_THRESHOLD", 3)
    day = sorted(key("2025-12-24", n) for n in range(500))
    store.put_new([RawObject(k, b"{}", hashlib.sha256(b"{}").hexdigest()) for k in day])
    absent = "raw/source=web/event_type=click/event_date=2025-12-24/event_id=" + "f" * 64 + ".json"
    asked = [day[2], day[250], day[497], absent]
    calls = count_calls(store)
    assert AwsCatalog(store).missing(asked) == {absent}
    assert calls == {"ListObjectsV2": 1, "HeadObject": 3}


def test_a_dense_range_is_listed_to_its_end(store: AwsStore, monkeypatch: pytest.MonkeyPatch) -> None:
    import backend.adapters.aws.investigate as investigate

    monkeypatch.setattr(investigate, "LIST_PAGE", 100)
    day = sorted(key("2025-12-24", n) for n in range(300))
    store.put_new([RawObject(k, b"{}", hashlib.sha256(b"{}").hexdigest()) for k in day[::2]])
    calls = count_calls(store)
    assert AwsCatalog(store).missing(day) == set(day[1::2])
    assert calls == {"ListObjectsV2": 2}  # 150 objects, 100 a page: fewer calls than 300 HEADs
