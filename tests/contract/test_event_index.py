"""Contract of :class:`backend.ports.EventIndex`: one acceptance per event id, every receipt kept,
half-open windows, numeric lag order, keyset paging, the quarantine and the totals."""

from __future__ import annotations

import base64
import hashlib
import json
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from backend.errors import InvalidRequest
from backend.identity import raw_key, receipt_key
from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.ports import Claim, Recorded
from backend.times import fmt, parse_stored
from tests.conftest import Adapter

ACCEPTED, DUPLICATE = IngestStatus.ACCEPTED, IngestStatus.DUPLICATE
DAY = "2025-12-28"
WINDOW = ("2025-12-28T00:00:00.000Z", "2025-12-29T00:00:00.000Z")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def rec(
    entity: str = "user_1",
    event_time: str = "2025-12-28T10:00:00.000Z",
    *,
    event_id: str | None = None,
    source: str = "demo",
    event_type: str = "heartbeat",
    lag: int = 1000,
    tag: str = "r",
    s3_key: str | None = None,
    clock_skew: bool = False,
    idempotency_key: str | None = None,
    status: IngestStatus = ACCEPTED,
    receipt: str | None = None,
) -> EventRecord:
    """An index record; ``tag`` names this receipt (it becomes its raw_sha) so arrival order can be seen."""
    eid = event_id or sha(f"{source}|{event_type}|{entity}|{event_time}")
    day = event_time[:10]
    return EventRecord(
        event_id=eid,
        status=status,
        source=source,
        event_type=event_type,
        entity_id=entity,
        event_time=event_time,
        ingest_time=fmt(parse_stored(event_time) + timedelta(milliseconds=lag)),
        ingest_lag_ms=lag,
        clock_skew=clock_skew,
        payload_sha=sha("payload of " + eid),
        day=day,
        hour=event_time[11:13],
        s3_key=s3_key or raw_key(source, event_type, day, eid),
        raw_sha=sha(tag),
        raw_size=len(tag),
        idempotency_key=idempotency_key,
        receipt=receipt,
    )


def content(r: EventRecord) -> dict[str, Any]:
    """What a record says about a receipt, without the fields the store assigns."""
    return r.model_dump(exclude={"status", "receipt", "s3_bucket"})


def tags(records: list[EventRecord]) -> list[str]:
    return [r.raw_sha for r in records]


def collect(query: Callable[..., Page[Any]], limit: int, **kw: Any) -> list[Any]:
    """Every item of a paged listing, following next_cursor; checks each page's size on the way."""
    items: list[Any] = []
    after = None
    for _ in range(10_000):
        page = query(limit=limit, after=after, **kw)
        assert len(page.items) <= limit
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        assert page.items, "a page with a next_cursor must hold items"
        after = page.next_cursor
    raise AssertionError("paging did not end")


def entity_pages(adapter: Adapter, limit: int, entity: str = "user_1", **kw: Any) -> list[EventRecord]:
    return collect(adapter.index.query_entity, limit, entity_id=entity, start=WINDOW[0], end=WINDOW[1], **kw)


def entity_all(adapter: Adapter, entity: str = "user_1", **kw: Any) -> list[EventRecord]:
    return entity_pages(adapter, 1000, entity, **kw)


# -- record: one acceptance, every receipt kept ----------------------------------------------------------


def test_first_receipt_is_accepted_and_later_ones_are_duplicates(adapter: Adapter) -> None:
    a = rec(tag="a0")
    assert adapter.index.record([a]) == [ACCEPTED]
    assert adapter.index.record([rec(tag="a1", lag=5000)]) == [DUPLICATE]
    assert adapter.index.record([rec(tag="a2", lag=9000)]) == [DUPLICATE]

    accepted = adapter.index.get_accepted(a.event_id)
    assert accepted is not None
    assert accepted.status is ACCEPTED
    # The accepted receipt is never overwritten by a later duplicate (the original kit's bug).
    assert content(accepted) == content(a)


def test_every_receipt_is_its_own_record_accepted_first_then_arrival_order(adapter: Adapter) -> None:
    sent = [rec(tag=f"r{i}", lag=1000 + i) for i in range(5)]
    for r in sent:
        adapter.index.record([r])
    got = adapter.index.receipts(sent[0].event_id)
    assert [r.status for r in got] == [ACCEPTED] + [DUPLICATE] * 4
    assert [content(r) for r in got] == [content(r) for r in sent]
    assert len({r.receipt for r in got}) == 5, "each receipt has its own receipt id"
    stats = adapter.index.stats()
    assert (stats.accepted, stats.duplicate) == (1, 4)


def test_more_than_nine_receipts_stay_in_arrival_order(adapter: Adapter) -> None:
    # Receipt numbers past 9 must not sort as text ("10" < "2").
    sent = [rec(tag=f"r{i}") for i in range(12)]
    for r in sent:
        adapter.index.record([r])
    assert tags(adapter.index.receipts(sent[0].event_id)) == tags(sent)
    assert tags(entity_all(adapter)) == tags(sent)


def test_input_status_and_receipt_are_ignored(adapter: Adapter) -> None:
    r = rec(status=DUPLICATE, receipt="7")
    assert adapter.index.record([r]) == [ACCEPTED]
    assert adapter.index.record([rec(tag="again", status=ACCEPTED, receipt="0")]) == [DUPLICATE]
    got = adapter.index.receipts(r.event_id)
    assert [g.status for g in got] == [ACCEPTED, DUPLICATE]


def test_the_same_id_twice_in_one_batch_is_accepted_once(adapter: Adapter) -> None:
    first, second = rec(tag="first"), rec(tag="second")
    assert adapter.index.record([first, second]) == [ACCEPTED, DUPLICATE]
    assert tags(adapter.index.receipts(first.event_id)) == [first.raw_sha, second.raw_sha]


def test_a_mixed_batch_gets_one_status_per_record_in_order(adapter: Adapter) -> None:
    y0 = rec("y", tag="y0")
    adapter.index.record([y0])
    x0, y1, x1, z0, y2 = (
        rec("x", tag="x0"),
        rec("y", tag="y1"),
        rec("x", tag="x1"),
        rec("z"),
        rec("y", tag="y2"),
    )
    assert adapter.index.record([x0, y1, x1, z0, y2]) == [ACCEPTED, DUPLICATE, DUPLICATE, ACCEPTED, DUPLICATE]
    assert tags(adapter.index.receipts(y0.event_id)) == tags([y0, y1, y2])
    assert tags(adapter.index.receipts(x0.event_id)) == tags([x0, x1])
    assert adapter.index.record([]) == []


def test_a_record_reads_back_with_every_field(adapter: Adapter) -> None:
    eid = sha("custom")
    r = rec(
        "user_9",
        "2025-12-28T23:59:59.123Z",
        event_id=eid,
        source="src.a:b-c_d",
        event_type="type-1",
        lag=0,
        clock_skew=True,
        idempotency_key="key 1 / é",
        tag="full",
    )
    adapter.index.record([r])
    dup = rec(
        "user_9",
        "2025-12-28T23:59:59.123Z",
        event_id=eid,
        source="src.a:b-c_d",
        event_type="type-1",
        lag=77,
        tag="divergent",
        s3_key=receipt_key("src.a:b-c_d", "type-1", DAY, eid, sha("divergent")),
    )
    adapter.index.record([dup])
    accepted = adapter.index.get_accepted(eid)
    assert accepted is not None and content(accepted) == content(r)
    receipts = adapter.index.receipts(eid)
    assert [content(x) for x in receipts] == [content(r), content(dup)]
    # Each receipt keeps the key of its own bytes.
    assert receipts[0].s3_key.startswith("raw/")
    assert receipts[1].s3_key.startswith("receipts/")


# -- claims: receipts whose bytes the caller could not check -------------------------------------------


def test_an_unverified_receipt_of_an_event_never_accepted_is_unseen_and_not_written(adapter: Adapter) -> None:
    r = rec(tag="unsure")
    assert adapter.index.record([r], [Claim.UNVERIFIED]) == [Recorded.UNSEEN]
    assert adapter.index.receipts(r.event_id) == []
    assert adapter.index.stats().accepted == 0
    # Once the caller has checked the bytes, the same record is accepted.
    assert adapter.index.record([r], [Claim.STORED]) == [Recorded.ACCEPTED]


def test_an_unverified_receipt_with_the_accepted_bytes_is_a_duplicate(adapter: Adapter) -> None:
    a = rec(tag="same")
    adapter.index.record([a])
    assert adapter.index.record([rec(tag="same", lag=3000)], [Claim.UNVERIFIED]) == [Recorded.DUPLICATE]
    assert tags(adapter.index.receipts(a.event_id)) == [a.raw_sha, a.raw_sha]


def test_an_unverified_receipt_with_other_bytes_at_the_accepted_key_is_misplaced(adapter: Adapter) -> None:
    a = rec(tag="mine")
    adapter.index.record([a])
    other = rec(tag="theirs", lag=3000)
    assert adapter.index.record([other], [Claim.UNVERIFIED]) == [Recorded.MISPLACED]
    assert tags(adapter.index.receipts(a.event_id)) == [a.raw_sha], "nothing written for it"
    # Stored elsewhere, it is recorded as a duplicate pointing at its own bytes.
    moved = other.model_copy(
        update={"s3_key": receipt_key("demo", "heartbeat", DAY, a.event_id, other.raw_sha)}
    )
    assert adapter.index.record([moved], [Claim.SEEN]) == [Recorded.DUPLICATE]
    assert [r.s3_key for r in adapter.index.receipts(a.event_id)] == [a.s3_key, moved.s3_key]


def test_an_unverified_receipt_is_unseen_when_the_accepted_one_points_elsewhere(adapter: Adapter) -> None:
    # The acceptance points at a receipts/ key; whatever sits under the identity key is unknown to the
    # index, so it cannot vouch for it.
    a = rec(tag="mine")
    moved = a.model_copy(update={"s3_key": receipt_key("demo", "heartbeat", DAY, a.event_id, a.raw_sha)})
    adapter.index.record([moved])
    assert adapter.index.record([rec(tag="mine", lag=5)], [Claim.UNVERIFIED]) == [Recorded.UNSEEN]
    assert adapter.index.record([rec(tag="x", lag=5)], [Claim.UNVERIFIED]) == [Recorded.UNSEEN]
    assert len(adapter.index.receipts(a.event_id)) == 1


def test_claims_mixed_in_one_batch_answer_in_order(adapter: Adapter) -> None:
    known = rec("known", tag="k")
    adapter.index.record([known])
    batch = [
        rec("fresh", tag="f"),
        rec("known", tag="k", lag=2000),
        rec("known", tag="x", lag=2000),
        rec("ghost", tag="g"),
        rec("fresh", tag="f", lag=2000),
    ]
    claims = [Claim.STORED, Claim.UNVERIFIED, Claim.UNVERIFIED, Claim.UNVERIFIED, Claim.UNVERIFIED]
    assert adapter.index.record(batch, claims) == [
        Recorded.ACCEPTED,
        Recorded.DUPLICATE,
        Recorded.MISPLACED,
        Recorded.UNSEEN,
        Recorded.DUPLICATE,
    ]
    assert Recorded.ACCEPTED == ACCEPTED and Recorded.DUPLICATE == DUPLICATE


def test_unknown_or_malformed_ids_have_no_records(adapter: Adapter) -> None:
    adapter.index.record([rec()])
    for eid in (sha("never"), "", "not-hex", "zz" * 32, "../" * 10):
        assert adapter.index.get_accepted(eid) is None
        assert adapter.index.receipts(eid) == []


# -- query_entity -------------------------------------------------------------------------------------


def test_entity_window_is_half_open(adapter: Adapter) -> None:
    start, end = "2025-12-28T10:00:00.000Z", "2025-12-28T11:00:00.000Z"
    times = [
        "2025-12-28T09:59:59.999Z",
        start,
        "2025-12-28T10:30:00.000Z",
        "2025-12-28T10:59:59.999Z",
        end,
    ]
    adapter.index.record([rec(event_time=t) for t in times])
    got = adapter.index.query_entity("user_1", start, end).items
    assert [r.event_time for r in got] == times[1:4]
    # An empty or inverted window holds nothing.
    assert adapter.index.query_entity("user_1", start, start).items == []
    assert adapter.index.query_entity("user_1", end, start).items == []


def test_entity_order_is_event_time_then_event_id_then_receipt(adapter: Adapter) -> None:
    t1, t2, t3 = "2025-12-28T01:00:00.000Z", "2025-12-28T02:00:00.000Z", "2025-12-28T03:00:00.000Z"
    ids = sorted(sha(f"id{i}") for i in range(3))
    # Arrival order deliberately differs from the listing order.
    arrivals = [
        rec(event_time=t3, event_id=ids[0], tag="t3-a"),
        rec(event_time=t2, event_id=ids[2], tag="t2-z-0"),
        rec(event_time=t2, event_id=ids[1], tag="t2-m-0"),
        rec(event_time=t1, tag="t1"),
        rec(event_time=t2, event_id=ids[2], tag="t2-z-1"),
        rec(event_time=t2, event_id=ids[1], tag="t2-m-1"),
    ]
    for r in arrivals:
        adapter.index.record([r])
    expected = ["t1", "t2-m-0", "t2-m-1", "t2-z-0", "t2-z-1", "t3-a"]
    got = entity_all(adapter)
    assert tags(got) == [sha(t) for t in expected]
    assert tags(entity_pages(adapter, 1000, descending=True)) == [sha(t) for t in reversed(expected)]


def test_entity_status_filter(adapter: Adapter) -> None:
    for i in range(3):
        t = f"2025-12-28T0{i}:00:00.000Z"
        adapter.index.record([rec(event_time=t, tag=f"{i}-a")])
        adapter.index.record([rec(event_time=t, tag=f"{i}-d{j}") for j in range(i)])
    accepted = entity_all(adapter, status=ACCEPTED)
    duplicates = entity_all(adapter, status=DUPLICATE)
    assert tags(accepted) == [sha(f"{i}-a") for i in range(3)]
    assert all(r.status is ACCEPTED for r in accepted)
    assert tags(duplicates) == [sha("1-d0"), sha("2-d0"), sha("2-d1")]
    assert all(r.status is DUPLICATE for r in duplicates)
    assert len(entity_all(adapter)) == 6


def _populate_for_paging(adapter: Adapter) -> list[EventRecord]:
    rng = random.Random(7)
    records = []
    for i in range(23):
        t = f"2025-12-28T{rng.randrange(3):02d}:{rng.randrange(2) * 30:02d}:00.000Z"  # many equal times
        records.append(rec(event_time=t, event_id=sha(f"p{i}"), tag=f"p{i}"))
        for j in range(rng.randrange(3)):
            records.append(rec(event_time=t, event_id=sha(f"p{i}"), tag=f"p{i}-d{j}"))
    rng.shuffle(records)
    adapter.index.record(records)
    # Records of another entity and outside the window must never leak into the listing.
    adapter.index.record([rec("user_2", tag="other"), rec(event_time="2025-12-29T00:00:00.000Z", tag="late")])
    return records


@pytest.mark.parametrize("limit", [1, 2, 3, 7, 100])
@pytest.mark.parametrize("descending", [False, True])
def test_entity_paging_returns_every_record_once_in_order(
    adapter: Adapter, limit: int, descending: bool
) -> None:
    records = _populate_for_paging(adapter)
    full = adapter.index.query_entity("user_1", *WINDOW, limit=1000, descending=descending)
    assert full.next_cursor is None
    paged = entity_pages(adapter, limit, descending=descending)
    assert [(r.event_id, r.receipt) for r in paged] == [(r.event_id, r.receipt) for r in full.items]
    assert sorted(tags(paged)) == sorted(tags(records))
    keys = [(r.event_time, r.event_id) for r in paged]
    assert keys == sorted(keys, reverse=descending)


def test_entity_paging_with_a_status_filter(adapter: Adapter) -> None:
    records = _populate_for_paging(adapter)
    for status in (ACCEPTED, DUPLICATE):
        paged = entity_pages(adapter, 2, status=status)
        assert all(r.status is status for r in paged)
        assert [r.receipt for r in paged] == [r.receipt for r in entity_all(adapter, status=status)]
    n_ids = len({r.event_id for r in records})
    assert len(entity_all(adapter, status=ACCEPTED)) == n_ids
    assert len(entity_all(adapter, status=DUPLICATE)) == len(records) - n_ids


def test_entity_paging_sees_later_arrivals_without_repeating_or_skipping(adapter: Adapter) -> None:
    adapter.index.record([rec(event_time=f"2025-12-28T0{i}:00:00.000Z", tag=f"e{i}") for i in range(6)])
    page1 = adapter.index.query_entity("user_1", *WINDOW, limit=3)
    assert page1.next_cursor is not None
    # Arrivals between two page reads: one before the cursor (not shown), one after it (shown).
    adapter.index.record([rec(event_time="2025-12-28T00:30:00.000Z", tag="before")])
    adapter.index.record([rec(event_time="2025-12-28T08:00:00.000Z", tag="after")])
    rest = entity_pages(adapter, 3)
    page2 = adapter.index.query_entity("user_1", *WINDOW, limit=100, after=page1.next_cursor)
    assert tags(page1.items) == [sha(f"e{i}") for i in range(3)]
    assert tags(page2.items) == [sha("e3"), sha("e4"), sha("e5"), sha("after")]
    assert len(rest) == 8


def _cursors(adapter: Adapter) -> dict[str, str]:
    adapter.index.record([rec(event_time=f"2025-12-28T0{i}:00:00.000Z", tag=f"c{i}") for i in range(3)])
    adapter.index.quarantine([rejection(f"2025-12-28T0{i}:00:00.000Z") for i in range(3)])
    cursors = {
        "entity": adapter.index.query_entity("user_1", *WINDOW, limit=1).next_cursor,
        "entity-desc": adapter.index.query_entity("user_1", *WINDOW, limit=1, descending=True).next_cursor,
        "partition": adapter.index.query_partition("demo", "heartbeat", DAY, limit=1).next_cursor,
        "rejections": adapter.index.query_rejections(limit=1).next_cursor,
    }
    assert all(cursors.values())
    return cursors  # type: ignore[return-value]


def test_a_cursor_of_another_listing_is_refused(adapter: Adapter) -> None:
    c = _cursors(adapter)
    with pytest.raises(InvalidRequest):
        adapter.index.query_partition("demo", "heartbeat", DAY, after=c["entity"])
    with pytest.raises(InvalidRequest):
        adapter.index.query_entity("user_1", *WINDOW, after=c["partition"])
    with pytest.raises(InvalidRequest):
        adapter.index.query_rejections(after=c["entity"])
    with pytest.raises(InvalidRequest):
        adapter.index.query_entity("user_1", *WINDOW, after=c["rejections"])
    # A cursor is for one direction: replaying it the other way would list a different set of rows.
    with pytest.raises(InvalidRequest):
        adapter.index.query_entity("user_1", *WINDOW, after=c["entity-desc"])
    with pytest.raises(InvalidRequest):
        adapter.index.query_entity("user_1", *WINDOW, after=c["entity"], descending=True)


GARBAGE_CURSORS = [
    "garbage",
    "",
    "!!!!",
    "é",
    base64.urlsafe_b64encode(b"not json").decode(),
    base64.urlsafe_b64encode(json.dumps({"a": 1}).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["entity:asc"]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["entity:asc", [1, 2, 3, 4, 5]]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["entity:asc", ["x", "nothex", 0]]).encode()).decode(),
    base64.urlsafe_b64encode(json.dumps(["partition:asc", ["x", "y"]]).encode()).decode(),
]


@pytest.mark.parametrize("cursor", GARBAGE_CURSORS)
def test_a_garbage_cursor_is_an_invalid_request(adapter: Adapter, cursor: str) -> None:
    adapter.index.record([rec()])
    with pytest.raises(InvalidRequest):
        adapter.index.query_entity("user_1", *WINDOW, after=cursor)
    with pytest.raises(InvalidRequest):
        adapter.index.query_partition("demo", "heartbeat", DAY, after=cursor)
    with pytest.raises(InvalidRequest):
        adapter.index.query_rejections(after=cursor)


# -- query_partition ----------------------------------------------------------------------------------

LAGS = [5, 20, 100, 1000, 99999, 0, 3, 12_345_678]


def test_partition_is_in_numeric_lag_order(adapter: Adapter) -> None:
    shuffled = LAGS[:]
    random.Random(3).shuffle(shuffled)
    adapter.index.record(
        [rec(event_time=f"2025-12-28T10:00:{i:02d}.000Z", lag=lag) for i, lag in enumerate(shuffled)]
    )
    asc = adapter.index.query_partition("demo", "heartbeat", DAY).items
    desc = adapter.index.query_partition("demo", "heartbeat", DAY, descending=True).items
    assert [r.ingest_lag_ms for r in asc] == sorted(LAGS)
    assert [r.ingest_lag_ms for r in desc] == sorted(LAGS, reverse=True)
    # "Largest lag first" is one small query.
    assert (
        adapter.index.query_partition("demo", "heartbeat", DAY, limit=1, descending=True)
        .items[0]
        .ingest_lag_ms
        == 12_345_678
    )


def test_partition_holds_only_its_source_type_and_event_day(adapter: Adapter) -> None:
    mine = [
        rec(event_time="2025-12-28T00:00:00.000Z", tag="m1"),
        rec("u2", "2025-12-28T23:59:59.999Z", tag="m2"),
    ]
    others = [
        rec(event_time="2025-12-27T23:59:59.999Z", tag="o1"),
        rec(event_time="2025-12-29T00:00:00.000Z", tag="o2"),
        rec(source="demo2", tag="o3"),
        rec(event_type="heartbeat2", tag="o4"),
        rec(source="dem", event_type="oheartbeat", tag="o5"),
    ]
    adapter.index.record(mine + others)
    got = adapter.index.query_partition("demo", "heartbeat", DAY).items
    assert sorted(tags(got)) == sorted(tags(mine))
    assert adapter.index.query_partition("demo", "heartbeat", "2025-12-30").items == []
    assert tags(adapter.index.query_partition("demo2", "heartbeat", DAY).items) == [sha("o3")]


def test_partition_status_filter_and_duplicates_are_listed(adapter: Adapter) -> None:
    a = rec(lag=10, tag="a")
    adapter.index.record([a, rec(lag=10_000, tag="a-dup"), rec("u2", lag=50, tag="b")])
    assert tags(adapter.index.query_partition("demo", "heartbeat", DAY, status=DUPLICATE).items) == [
        sha("a-dup")
    ]
    assert tags(adapter.index.query_partition("demo", "heartbeat", DAY, status=ACCEPTED).items) == [
        sha("a"),
        sha("b"),
    ]
    assert [r.ingest_lag_ms for r in adapter.index.query_partition("demo", "heartbeat", DAY).items] == [
        10,
        50,
        10_000,
    ]


@pytest.mark.parametrize("descending", [False, True])
def test_partition_paging_returns_every_record_once(adapter: Adapter, descending: bool) -> None:
    rng = random.Random(11)
    records = [rec(f"u{i}", lag=rng.choice([1, 7, 7, 7, 300, 300, 20_000]), tag=f"q{i}") for i in range(25)]
    adapter.index.record(records)
    full = adapter.index.query_partition("demo", "heartbeat", DAY, limit=1000, descending=descending).items
    for limit in (1, 4, 9):
        paged = collect(
            adapter.index.query_partition,
            limit,
            source="demo",
            event_type="heartbeat",
            day=DAY,
            descending=descending,
        )
        assert tags(paged) == tags(full)
    assert sorted(tags(full)) == sorted(tags(records))
    lags = [r.ingest_lag_ms for r in full]
    assert lags == sorted(lags, reverse=descending)
    other_way = adapter.index.query_partition("demo", "heartbeat", DAY, limit=1000, descending=not descending)
    assert tags(other_way.items) == list(reversed(tags(full)))


# -- keys cannot collide -------------------------------------------------------------------------------

TRICKY_ENTITIES = [
    "a",
    "a#",
    "a#b",
    "#",
    "/",
    "=",
    "..",
    "a/b",
    "a=b",
    "a%",
    "a_",
    "A",
    "a ",
    "ENTITY#a",
    "é",
]


def test_entity_ids_that_look_alike_stay_distinct(adapter: Adapter) -> None:
    adapter.index.record([rec(e, tag=f"entity {e}") for e in TRICKY_ENTITIES])
    for e in TRICKY_ENTITIES:
        got = adapter.index.query_entity(e, *WINDOW).items
        assert [r.entity_id for r in got] == [e], f"query for {e!r} returned {[r.entity_id for r in got]}"
    assert adapter.index.query_entity("a#b#", *WINDOW).items == []
    assert adapter.index.query_entity("", *WINDOW).items == []
    assert adapter.index.stats().entities == len(TRICKY_ENTITIES)


# -- quarantine ---------------------------------------------------------------------------------------


def rejection(received_at: str, **kw: Any) -> Rejection:
    data = kw.pop("data", b'{"bad": ' + received_at.encode() + b"}")
    fields: dict[str, Any] = {
        "received_at": received_at,
        "reason": "invalid JSON: Expecting value (line 1, column 1)",
        "origin": "api",
        "line": None,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "data": data,
        "truncated": False,
    }
    fields.update(kw)
    return Rejection(**fields)


def test_quarantine_keeps_each_rejection_with_its_bytes_and_reason(adapter: Adapter) -> None:
    rejections = [
        rejection("2025-12-28T10:00:00.000Z", data=b"\xff\xfe not utf-8 \x00", reason="not UTF-8 text"),
        rejection(
            "2025-12-28T10:00:01.000Z",
            origin="file:events.jsonl",
            line=42,
            size=2_000_000,
            sha256=sha("the full body"),
            data=b"x" * 100,
            truncated=True,
            source="demo",
            event_type="heartbeat",
            entity_id="user_1",
        ),
    ]
    ids = adapter.index.quarantine(rejections)
    assert len(ids) == 2 and len(set(ids)) == 2
    for rid, sent in zip(ids, rejections, strict=True):
        got = adapter.index.get_rejection(rid)
        assert got is not None
        assert got.rejection_id == rid
        assert got.model_dump(exclude={"rejection_id"}) == sent.model_dump(exclude={"rejection_id"})
    assert adapter.index.quarantine([]) == []


def test_an_unknown_rejection_id_is_none(adapter: Adapter) -> None:
    [rid] = adapter.index.quarantine([rejection("2025-12-28T10:00:00.000Z")])
    for other in ("999999", "nope", "", "-1", rid + "0"):
        assert adapter.index.get_rejection(other) is None


def test_rejections_are_listed_in_the_order_they_were_received(adapter: Adapter) -> None:
    times = [f"2025-12-28T10:00:0{i}.000Z" for i in range(6)]
    order = [3, 0, 5, 1, 4, 2]
    adapter.index.quarantine([rejection(times[i]) for i in order])
    got = collect(adapter.index.query_rejections, 1000)
    assert [r.received_at for r in got] == times
    desc = collect(adapter.index.query_rejections, 1000, descending=True)
    assert [r.received_at for r in desc] == times[::-1]


def test_rejections_filter_by_readable_fields_and_receive_window(adapter: Adapter) -> None:
    adapter.index.quarantine(
        [
            rejection(
                "2025-12-28T10:00:00.000Z", source="demo", event_type="heartbeat", entity_id="a", reason="r1"
            ),
            rejection(
                "2025-12-28T10:00:01.000Z", source="demo", event_type="click", entity_id="a#b", reason="r2"
            ),
            rejection(
                "2025-12-28T10:00:02.000Z", source="other", event_type="heartbeat", entity_id="a", reason="r3"
            ),
            rejection("2025-12-28T10:00:03.000Z", reason="r4"),  # nothing readable
        ]
    )

    def reasons(**kw: Any) -> list[str]:
        return [r.reason for r in collect(adapter.index.query_rejections, 1000, **kw)]

    assert reasons() == ["r1", "r2", "r3", "r4"]
    assert reasons(entity_id="a") == ["r1", "r3"]
    assert reasons(entity_id="a#b") == ["r2"]
    assert reasons(entity_id="a#") == []
    assert reasons(source="demo") == ["r1", "r2"]
    assert reasons(event_type="heartbeat") == ["r1", "r3"]
    assert reasons(source="demo", event_type="heartbeat", entity_id="a") == ["r1"]
    assert reasons(start="2025-12-28T10:00:01.000Z", end="2025-12-28T10:00:03.000Z") == ["r2", "r3"]
    assert reasons(start="2025-12-28T10:00:02.000Z") == ["r3", "r4"]
    assert reasons(end="2025-12-28T10:00:01.000Z") == ["r1"]
    assert reasons(entity_id="a", start="2025-12-28T10:00:01.000Z") == ["r3"]


@pytest.mark.parametrize("descending", [False, True])
def test_rejections_paging_returns_every_rejection_once(adapter: Adapter, descending: bool) -> None:
    adapter.index.quarantine(
        [
            rejection(f"2025-12-28T10:{i // 3:02d}:00.000Z", reason=f"r{i}", source="demo" if i % 2 else None)
            for i in range(17)
        ]
    )
    full = collect(adapter.index.query_rejections, 1000, descending=descending)
    assert sorted(r.reason for r in full) == sorted(f"r{i}" for i in range(17))
    times = [r.received_at for r in full]
    assert times == sorted(times, reverse=descending)
    for limit in (1, 4):
        paged = collect(adapter.index.query_rejections, limit, descending=descending)
        assert [r.rejection_id for r in paged] == [r.rejection_id for r in full]
        filtered = collect(adapter.index.query_rejections, limit, descending=descending, source="demo")
        assert [r.reason for r in filtered] == [r.reason for r in full if r.source == "demo"]


# -- stats --------------------------------------------------------------------------------------------


def test_stats_of_an_empty_index(adapter: Adapter) -> None:
    stats = adapter.index.stats()
    assert (stats.accepted, stats.duplicate, stats.rejected, stats.entities) == (0, 0, 0, 0)
    assert stats.first_event_time is None and stats.last_event_time is None
    assert stats.partitions == []


def test_stats_count_receipts_entities_partitions_and_rejections(adapter: Adapter) -> None:
    adapter.index.record(
        [
            rec("u1", "2025-12-28T05:00:00.000Z", tag="1"),
            rec("u1", "2025-12-28T05:00:00.000Z", tag="1-dup"),
            rec("u1", "2025-12-28T05:00:00.000Z", tag="1-dup2"),
            rec("u2", "2025-12-27T01:02:03.004Z", source="zeta", tag="2"),
            rec("u3", "2025-12-30T23:59:59.999Z", event_type="click", tag="3"),
            rec("u3", "2025-12-30T23:59:59.999Z", event_type="click", tag="3-dup"),
        ]
    )
    adapter.index.quarantine([rejection("2025-12-28T10:00:00.000Z"), rejection("2025-12-28T10:00:01.000Z")])
    stats = adapter.index.stats()
    assert (stats.accepted, stats.duplicate, stats.rejected, stats.entities) == (3, 3, 2, 3)
    assert stats.first_event_time == "2025-12-27T01:02:03.004Z"
    assert stats.last_event_time == "2025-12-30T23:59:59.999Z"
    assert [(p.source, p.event_type, p.accepted, p.duplicate) for p in stats.partitions] == [
        ("demo", "click", 1, 1),
        ("demo", "heartbeat", 1, 2),
        ("zeta", "heartbeat", 1, 0),
    ]
