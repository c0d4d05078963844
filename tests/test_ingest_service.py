"""IngestService over each adapter: what a producer is answered, what is stored where, and that a failed
store call never leaves an event acknowledged, half-seen, or accepted twice."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from backend.errors import ReadOnlyError, StoreError
from backend.identity import raw_key
from backend.model import IngestResult, IngestStatus
from backend.ports import RawObject
from backend.services.ingest import QUARANTINE_MAX_BYTES, IngestService, Received, prepare
from backend.times import Clock, FixedClock
from tests.conftest import Adapter, Blind, Flaky, event_dict, make_event

ACCEPTED, DUPLICATE, REJECTED = IngestStatus.ACCEPTED, IngestStatus.DUPLICATE, IngestStatus.REJECTED
NOW = datetime(2025, 12, 29, 0, 0, 1, tzinfo=UTC)  # 2 s after the seed event
VECTOR_ID = "bd10f9014e165b6d52271772b19788bb4a54b0f28cac6990d0d91bf2c9d643c0"
VECTOR_KEY = f"raw/source=demo/event_type=heartbeat/event_date=2025-12-28/event_id={VECTOR_ID}.json"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def service(adapter: Adapter, clock: FixedClock) -> IngestService:
    return IngestService(adapter.raw, adapter.index, clock)


@pytest.fixture
def flaky(adapter: Adapter, clock: FixedClock) -> Iterator[tuple[IngestService, Flaky, Flaky]]:
    raw, index = Flaky(adapter.raw), Flaky(adapter.index)
    yield IngestService(raw, index, clock), raw, index


def accepted_count(adapter: Adapter, event_id: str) -> int:
    return sum(r.status is ACCEPTED for r in adapter.index.receipts(event_id))


# -- answers -------------------------------------------------------------------------------------------


def test_a_new_event_is_accepted_with_the_seed_fields(adapter: Adapter, service: IngestService) -> None:
    body = make_event()
    result = service.ingest(body)
    assert result.status is ACCEPTED
    assert result.event_id == VECTOR_ID
    assert result.ingest_lag_ms == 2000
    assert result.s3_key == VECTOR_KEY
    assert (result.event_time, result.ingest_time) == ("2025-12-28T23:59:59.000Z", "2025-12-29T00:00:01.000Z")
    assert result.clock_skew is False and result.reason is None
    # The seed's response names are all there.
    assert {"event_id", "status", "ingest_lag_ms", "s3_key"} <= set(result.model_dump())

    assert adapter.raw.get(VECTOR_KEY) == body
    rec = adapter.index.get_accepted(VECTOR_ID)
    assert rec is not None
    assert (rec.entity_id, rec.source, rec.event_type) == ("user_123", "demo", "heartbeat")
    assert (rec.event_time, rec.ingest_time, rec.ingest_lag_ms) == (
        result.event_time,
        result.ingest_time,
        2000,
    )
    assert (rec.day, rec.hour, rec.s3_key) == ("2025-12-28", "23", VECTOR_KEY)
    assert (rec.raw_sha, rec.raw_size) == (sha(body), len(body))
    assert rec.payload_sha == "2c789a8611e9a36b1e8e5ee714886ab3e7efa24325c1f7cac0b5c75b56e6d881"


def test_a_resend_is_a_duplicate_kept_as_its_own_receipt(
    adapter: Adapter, service: IngestService, clock: FixedClock
) -> None:
    body = make_event()
    first = service.ingest(body)
    clock.advance(timedelta(hours=1))
    second = service.ingest(body)
    assert second.status is DUPLICATE
    assert second.event_id == first.event_id
    assert second.s3_key == first.s3_key == VECTOR_KEY
    assert second.ingest_lag_ms == 2000 + 3_600_000
    receipts = adapter.index.receipts(VECTOR_ID)
    assert [(r.status, r.ingest_lag_ms) for r in receipts] == [(ACCEPTED, 2000), (DUPLICATE, 3_602_000)]
    assert adapter.index.stats().duplicate == 1


def test_an_invalid_request_is_rejected_and_quarantined(adapter: Adapter, service: IngestService) -> None:
    body = make_event(event_time="yesterday", entity_id="user_9")
    result = service.ingest(body, origin="api")
    assert result.status is REJECTED
    assert result.event_id is None and result.s3_key is None
    assert result.reason is not None and "event_time 'yesterday'" in result.reason
    assert result.rejection_id is not None
    rej = adapter.index.get_rejection(result.rejection_id)
    assert rej is not None
    assert (rej.reason, rej.origin, rej.received_at) == (result.reason, "api", "2025-12-29T00:00:01.000Z")
    assert (rej.data, rej.size, rej.sha256, rej.truncated) == (body, len(body), sha(body), False)
    assert (rej.source, rej.event_type, rej.entity_id) == ("demo", "heartbeat", "user_9")
    stats = adapter.index.stats()
    assert (stats.accepted, stats.duplicate, stats.rejected) == (0, 0, 1)
    assert [r.rejection_id for r in adapter.index.query_rejections(entity_id="user_9").items] == [
        result.rejection_id
    ]


def test_a_batch_answers_each_request_in_order_with_its_line(
    adapter: Adapter, service: IngestService
) -> None:
    bodies = [make_event(), b"{oops", make_event(), make_event(entity_id="user_2"), b""]
    batch = [Received(b, origin="file:events.jsonl", line=n) for n, b in enumerate(bodies, start=1)]
    results = service.ingest_batch(batch)
    assert [r.status for r in results] == [ACCEPTED, REJECTED, DUPLICATE, ACCEPTED, REJECTED]
    assert [r.line for r in results] == [1, 2, 3, 4, 5]
    for result, item in zip(results, batch, strict=True):
        if result.status is REJECTED:
            assert result.rejection_id is not None
            rej = adapter.index.get_rejection(result.rejection_id)
            assert rej is not None and (rej.origin, rej.line, rej.data) == (
                "file:events.jsonl",
                item.line,
                item.body,
            )
    assert service.ingest_batch([]) == []


# -- lag and clock skew -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event_time", "now", "lag"),
    [
        ("2025-12-28T23:59:59Z", NOW, 2000),
        ("2025-12-29T00:00:01Z", NOW, 0),
        ("2025-12-29T00:00:00.999Z", NOW, 1),
        ("2025-12-26T00:00:01+02:00", NOW, 3 * 86_400_000 + 2 * 3_600_000),
        ("2025-12-28T23:59:59.250Z", datetime(2025, 12, 29, 0, 0, 0, 750_000, tzinfo=UTC), 1500),
    ],
)
def test_lag_is_ingest_time_minus_event_time_in_ms(
    adapter: Adapter, event_time: str, now: datetime, lag: int
) -> None:
    result = IngestService(adapter.raw, adapter.index, FixedClock(now)).ingest(
        make_event(event_time=event_time)
    )
    assert (result.status, result.ingest_lag_ms, result.clock_skew) == (ACCEPTED, lag, False)
    assert result.event_id is not None
    rec = adapter.index.get_accepted(result.event_id)
    assert rec is not None and rec.ingest_lag_ms == lag and rec.clock_skew is False


def test_an_event_from_the_future_is_stored_with_lag_zero_and_flagged(
    adapter: Adapter, service: IngestService
) -> None:
    result = service.ingest(make_event(event_time="2025-12-29T00:05:00Z"))  # producer clock 5 min ahead
    assert (result.status, result.ingest_lag_ms, result.clock_skew) == (ACCEPTED, 0, True)
    assert result.event_id is not None
    rec = adapter.index.get_accepted(result.event_id)
    assert rec is not None and (rec.ingest_lag_ms, rec.clock_skew) == (0, True)
    [listed] = adapter.index.query_partition("demo", "heartbeat", "2025-12-29").items
    assert (listed.ingest_lag_ms, listed.clock_skew) == (0, True)


class _TickingClock(Clock):
    def __init__(self) -> None:
        self.t = NOW

    def now(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def test_each_request_of_a_batch_gets_its_own_ingest_time(adapter: Adapter) -> None:
    service = IngestService(adapter.raw, adapter.index, _TickingClock())
    results = service.ingest_batch([Received(make_event(payload={"i": i})) for i in range(3)])
    assert [r.ingest_lag_ms for r in results] == [3000, 4000, 5000]


# -- raw keys and bytes --------------------------------------------------------------------------------


def test_the_raw_key_depends_on_identity_not_on_ingest_time(adapter: Adapter, clock: FixedClock) -> None:
    body = make_event(event_time="2025-12-28T23:59:59+02:00")  # 21:59:59 UTC, same day
    first = IngestService(adapter.raw, adapter.index, clock).ingest(body)
    clock.set(datetime(2026, 3, 1, 12, tzinfo=UTC))
    later = IngestService(adapter.raw, adapter.index, clock).ingest(body)
    assert first.s3_key == later.s3_key == prepare(body).raw_key
    assert first.event_id is not None
    assert first.s3_key == raw_key("demo", "heartbeat", "2025-12-28", first.event_id)
    assert "2026" not in first.s3_key and "ingest" not in first.s3_key


def test_the_raw_key_is_partitioned_by_the_utc_event_day(service: IngestService) -> None:
    result = service.ingest(make_event(event_time="2025-12-28T23:30:00-01:00"))
    assert result.s3_key is not None and "/event_date=2025-12-29/" in result.s3_key


@pytest.mark.parametrize(
    "variant",
    ["idempotency-key-new-payload", "changed-extra-field", "reordered-keys", "whitespace"],
)
def test_a_duplicate_with_other_bytes_is_kept_under_a_receipt_key(
    adapter: Adapter, service: IngestService, variant: str
) -> None:
    first_body, second_body = {
        "idempotency-key-new-payload": (
            make_event(idempotency_key="k-1", payload={"steps": 10}),
            make_event(idempotency_key="k-1", payload={"steps": 11}),
        ),
        "changed-extra-field": (make_event(trace="a"), make_event(trace="b")),
        "reordered-keys": (make_event(), json.dumps(dict(reversed(event_dict().items()))).encode()),
        "whitespace": (make_event(), make_event() + b"\n"),
    }[variant]
    assert first_body != second_body
    first, second = service.ingest(first_body), service.ingest(second_body)
    assert (first.status, second.status) == (ACCEPTED, DUPLICATE)
    assert first.event_id == second.event_id
    assert first.s3_key is not None and second.s3_key is not None
    assert first.s3_key.startswith("raw/")
    assert second.s3_key.startswith("receipts/") and first.event_id in second.s3_key
    assert sha(second_body) in second.s3_key
    # Both byte strings are kept, each exactly as received.
    assert adapter.raw.get(first.s3_key) == first_body
    assert adapter.raw.get(second.s3_key) == second_body
    receipts = adapter.index.receipts(first.event_id)  # type: ignore[arg-type]
    assert [(r.s3_key, r.raw_sha, r.raw_size) for r in receipts] == [
        (first.s3_key, sha(first_body), len(first_body)),
        (second.s3_key, sha(second_body), len(second_body)),
    ]


def test_repeated_divergent_bytes_share_their_receipt_key(adapter: Adapter, service: IngestService) -> None:
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    results = [service.ingest(x) for x in (a, b, b, a)]
    assert [r.status for r in results] == [ACCEPTED, DUPLICATE, DUPLICATE, DUPLICATE]
    keys = [r.s3_key for r in results]
    assert keys[0] == keys[3] and keys[1] == keys[2] and keys[0] != keys[1]
    assert adapter.raw.get(keys[0]) == a and adapter.raw.get(keys[1]) == b  # type: ignore[arg-type]


def test_divergent_bytes_within_one_batch(adapter: Adapter, service: IngestService) -> None:
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    ra, rb = service.ingest_batch([Received(a), Received(b)])
    assert (ra.status, rb.status) == (ACCEPTED, DUPLICATE)
    assert adapter.raw.get(ra.s3_key) == a and adapter.raw.get(rb.s3_key) == b  # type: ignore[arg-type]


def test_one_unreadable_number_does_not_take_the_batch_down(adapter: Adapter, service: IngestService) -> None:
    hostile = make_event(payload={"n": "HERE"}).replace(b'"HERE"', b"9" * 5000)
    results = service.ingest_batch(
        [Received(make_event()), Received(hostile), Received(make_event(entity_id="b"))]
    )
    assert [r.status for r in results] == [ACCEPTED, REJECTED, ACCEPTED]
    rej = adapter.index.get_rejection(results[1].rejection_id)  # type: ignore[arg-type]
    assert rej is not None and rej.data == hostile


# -- quarantine bounds -----------------------------------------------------------------------------------


def test_a_large_rejected_request_is_quarantined_as_a_bounded_prefix(
    adapter: Adapter, service: IngestService
) -> None:
    body = b'{"source": "demo", "junk": "' + b"z" * (200 * 1024)  # unterminated: invalid JSON
    result = service.ingest(body)
    assert result.status is REJECTED and result.rejection_id is not None
    rej = adapter.index.get_rejection(result.rejection_id)
    assert rej is not None
    assert rej.data == body[:QUARANTINE_MAX_BYTES]
    assert (rej.truncated, rej.size, rej.sha256) == (True, len(body), sha(body))


def test_a_rejected_request_at_the_quarantine_bound_is_kept_whole(
    adapter: Adapter, service: IngestService
) -> None:
    body = b"x" * QUARANTINE_MAX_BYTES
    result = service.ingest(body)
    rej = adapter.index.get_rejection(result.rejection_id)  # type: ignore[arg-type]
    assert rej is not None and (rej.data, rej.truncated, rej.size) == (body, False, QUARANTINE_MAX_BYTES)


def test_a_request_over_one_mib_is_rejected_for_its_size(adapter: Adapter, service: IngestService) -> None:
    body = make_event(padding="p" * (1024 * 1024))
    result = service.ingest(body)
    assert (
        result.status is REJECTED
        and result.reason is not None
        and "the limit is 1,048,576 bytes" in result.reason
    )
    rej = adapter.index.get_rejection(result.rejection_id)  # type: ignore[arg-type]
    assert rej is not None and (rej.size, rej.sha256, rej.truncated) == (len(body), sha(body), True)
    assert adapter.raw.get(prepare(make_event()).raw_key) is None


def test_a_request_read_only_as_a_prefix_is_rejected_with_its_full_size(
    adapter: Adapter, service: IngestService
) -> None:
    prefix = make_event()[:100]
    [result] = service.ingest_batch(
        [Received(prefix, origin="stdin", line=7, size=5_000_000, sha256="ab" * 32)]
    )
    assert result.status is REJECTED and "5,000,000 bytes" in (result.reason or "")
    rej = adapter.index.get_rejection(result.rejection_id)  # type: ignore[arg-type]
    assert rej is not None
    assert (rej.data, rej.size, rej.sha256, rej.truncated, rej.line) == (
        prefix,
        5_000_000,
        "ab" * 32,
        True,
        7,
    )


# -- read-only -------------------------------------------------------------------------------------------


def test_read_only_refuses_every_ingest_and_writes_nothing(adapter: Adapter, clock: FixedClock) -> None:
    ro = IngestService(adapter.raw, adapter.index, clock, read_only=True)
    body = make_event()
    with pytest.raises(ReadOnlyError):
        ro.ingest(body)
    with pytest.raises(ReadOnlyError):
        ro.ingest(b"{bad")
    with pytest.raises(ReadOnlyError):
        ro.ingest_batch([Received(body), Received(b"{bad")])
    with pytest.raises(ReadOnlyError):
        list(ro.ingest_stream(iter([Received(body)])))
    prepared = IngestService(adapter.raw, adapter.index, clock).prepare_batch([Received(body)])
    with pytest.raises(ReadOnlyError):
        ro.commit(prepared)
    stats = adapter.index.stats()
    assert (stats.accepted, stats.duplicate, stats.rejected) == (0, 0, 0)
    assert adapter.raw.get(VECTOR_KEY) is None


# -- streams -------------------------------------------------------------------------------------------


def test_a_stream_is_committed_batch_by_batch(adapter: Adapter, service: IngestService) -> None:
    items = [Received(make_event(payload={"i": i % 7}), line=i) for i in range(20)]
    batches = list(service.ingest_stream(iter(items), batch_size=6))
    assert [len(b) for b in batches] == [6, 6, 6, 2]
    results = [r for b in batches for r in b]
    assert [r.line for r in results] == list(range(20))
    assert [r.status for r in results] == [ACCEPTED] * 7 + [DUPLICATE] * 13
    with pytest.raises(ValueError):
        list(service.ingest_stream(iter(items), batch_size=0))


def test_a_stream_stops_at_a_failed_commit_and_earlier_batches_are_durable(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, _, index = flaky
    index.fail("record", None, "before")  # the second batch fails
    items = [Received(make_event(payload={"i": i})) for i in range(9)]
    done: list[list[IngestResult]] = []
    with pytest.raises(StoreError):
        for batch in service.ingest_stream(iter(items), batch_size=3):
            done.append(batch)
    assert len(done) == 1 and all(r.status is ACCEPTED for r in done[0])
    for r in done[0]:
        assert adapter.index.get_accepted(r.event_id) is not None  # type: ignore[arg-type]
    retried = [r for b in service.ingest_stream(iter(items), batch_size=3) for r in b]
    assert [r.status for r in retried] == [DUPLICATE] * 3 + [ACCEPTED] * 6
    assert all(accepted_count(adapter, r.event_id) == 1 for r in retried)  # type: ignore[arg-type]


# -- failures: nothing acknowledged, retry ends accepted exactly once ----------------------------------


def test_a_failed_raw_write_acknowledges_nothing_and_a_retry_is_accepted(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, raw, index = flaky
    raw.fail("put_new", "before")
    with pytest.raises(StoreError):
        service.ingest(make_event())
    assert index.calls.get("record", 0) == 0, "the index must not hear of an event whose bytes are not stored"
    assert adapter.raw.get(VECTOR_KEY) is None
    assert adapter.index.get_accepted(VECTOR_ID) is None
    assert service.ingest(make_event()).status is ACCEPTED
    assert accepted_count(adapter, VECTOR_ID) == 1 and len(adapter.index.receipts(VECTOR_ID)) == 1


def test_raw_stored_but_its_answer_lost_then_a_retry_is_accepted_once(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, raw, _ = flaky
    raw.fail("put_new", "after")
    with pytest.raises(StoreError):
        service.ingest(make_event())
    assert adapter.raw.get(VECTOR_KEY) == make_event()
    assert adapter.index.get_accepted(VECTOR_ID) is None
    result = service.ingest(make_event())
    assert (result.status, result.s3_key) == (ACCEPTED, VECTOR_KEY)
    assert len(adapter.index.receipts(VECTOR_ID)) == 1


def test_a_failed_index_write_leaves_the_event_unseen_and_a_retry_is_accepted(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, _, index = flaky
    index.fail("record", "before")
    body = make_event()
    with pytest.raises(StoreError):
        service.ingest(body)
    # The raw bytes are safe, and the event is not marked as seen: a retry is not a "duplicate".
    assert adapter.raw.get(VECTOR_KEY) == body
    assert adapter.index.get_accepted(VECTOR_ID) is None
    assert adapter.index.receipts(VECTOR_ID) == []
    result = service.ingest(body)
    assert (result.status, result.s3_key) == (ACCEPTED, VECTOR_KEY)
    assert [r.status for r in adapter.index.receipts(VECTOR_ID)] == [ACCEPTED]


def test_an_index_write_whose_answer_was_lost_is_not_accepted_twice(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, _, index = flaky
    index.fail("record", "after")
    with pytest.raises(StoreError):
        service.ingest(make_event())
    assert service.ingest(make_event()).status is DUPLICATE
    assert [r.status for r in adapter.index.receipts(VECTOR_ID)] == [ACCEPTED, DUPLICATE]


def test_a_failed_receipt_key_write_is_retried_into_a_duplicate(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, raw, _ = flaky
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    first = service.ingest(a)
    raw.fail("put_new", None, "before")  # the identity key is found taken, then the receipt key write fails
    with pytest.raises(StoreError):
        service.ingest(b)
    assert len(adapter.index.receipts(first.event_id)) == 1  # type: ignore[arg-type]
    second = service.ingest(b)
    assert second.status is DUPLICATE and second.s3_key is not None
    assert adapter.raw.get(second.s3_key) == b and adapter.raw.get(first.s3_key) == a  # type: ignore[arg-type]


def test_a_failed_batch_acknowledges_none_of_its_events(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, _, index = flaky
    batch = [Received(make_event(payload={"i": i})) for i in range(5)] + [Received(b"{bad")]
    index.fail("record", "before")
    with pytest.raises(StoreError):
        service.ingest_batch(batch)
    ids = [prepare(item.body).event_id for item in batch[:5]]
    assert all(adapter.index.get_accepted(i) is None for i in ids)
    results = service.ingest_batch(batch)
    assert [r.status for r in results] == [ACCEPTED] * 5 + [REJECTED]
    assert all(accepted_count(adapter, i) == 1 for i in ids)


def test_a_failed_quarantine_stores_nothing_of_the_batch(
    adapter: Adapter, flaky: tuple[IngestService, Flaky, Flaky]
) -> None:
    service, raw, index = flaky
    index.fail("quarantine", "before")
    with pytest.raises(StoreError):
        service.ingest_batch([Received(b"{bad"), Received(make_event())])
    assert raw.calls.get("put_new", 0) == 0
    assert adapter.raw.get(VECTOR_KEY) is None
    assert adapter.index.stats().rejected == 0
    results = service.ingest_batch([Received(b"{bad"), Received(make_event())])
    assert [r.status for r in results] == [REJECTED, ACCEPTED]


# -- a raw store that cannot say what a taken key holds (S3) -------------------------------------------


@pytest.fixture
def blind(adapter: Adapter, clock: FixedClock) -> IngestService:
    return IngestService(Blind(adapter.raw), adapter.index, clock)


def test_blind_store_duplicates_point_at_the_accepted_bytes(adapter: Adapter, blind: IngestService) -> None:
    body = make_event()
    results = [blind.ingest(body) for _ in range(3)]
    assert [r.status for r in results] == [ACCEPTED, DUPLICATE, DUPLICATE]
    assert {r.s3_key for r in results} == {VECTOR_KEY}


def test_blind_store_divergent_duplicate_is_kept_under_a_receipt_key(
    adapter: Adapter, blind: IngestService
) -> None:
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    ra, rb, rb2 = blind.ingest(a), blind.ingest(b), blind.ingest(b)
    assert (ra.status, rb.status, rb2.status) == (ACCEPTED, DUPLICATE, DUPLICATE)
    assert rb.s3_key == rb2.s3_key and rb.s3_key.startswith("receipts/")  # type: ignore[union-attr]
    assert adapter.raw.get(ra.s3_key) == a and adapter.raw.get(rb.s3_key) == b  # type: ignore[arg-type]


def test_blind_store_retry_after_raw_stored_but_not_indexed(adapter: Adapter, blind: IngestService) -> None:
    # An earlier attempt stored these bytes and failed before the index: the retry is accepted, once.
    body = make_event()
    prepared = prepare(body)
    adapter.raw.put_new([RawObject(prepared.raw_key, body, prepared.raw_sha)])
    first, again = blind.ingest(body), blind.ingest(body)
    assert (first.status, again.status) == (ACCEPTED, DUPLICATE)
    assert first.s3_key == VECTOR_KEY
    assert accepted_count(adapter, first.event_id) == 1  # type: ignore[arg-type]


def test_blind_store_retry_finds_other_bytes_left_by_a_failed_attempt(
    adapter: Adapter, blind: IngestService
) -> None:
    # Attempt A stored its bytes and failed before the index; B (same idempotency key, other payload) comes
    # next. B is accepted, and its receipt points at B's bytes, not at A's left under the identity key.
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    pa = prepare(a)
    adapter.raw.put_new([RawObject(pa.raw_key, a, pa.raw_sha)])
    rb = blind.ingest(b)
    assert rb.status is ACCEPTED
    assert rb.s3_key != pa.raw_key and adapter.raw.get(rb.s3_key) == b  # type: ignore[arg-type]
    accepted = adapter.index.get_accepted(rb.event_id)  # type: ignore[arg-type]
    assert accepted is not None and accepted.raw_sha == sha(b)
    ra = blind.ingest(a)
    assert ra.status is DUPLICATE and adapter.raw.get(ra.s3_key) == a  # type: ignore[arg-type]
    # B again: the identity key holds A's bytes, so B's receipt must not point there (found by hypothesis).
    rb2 = blind.ingest(b)
    assert rb2.status is DUPLICATE and adapter.raw.get(rb2.s3_key) == b  # type: ignore[arg-type]
    for r in adapter.index.receipts(rb.event_id):  # type: ignore[arg-type]
        assert sha(adapter.raw.get(r.s3_key) or b"") == r.raw_sha


def test_blind_store_batch_mixing_every_case(adapter: Adapter, blind: IngestService) -> None:
    a, b = (
        make_event(idempotency_key="k", payload={"v": 1}),
        make_event(idempotency_key="k", payload={"v": 2}),
    )
    fresh = make_event(entity_id="fresh")
    blind.ingest(a)
    results = blind.ingest_batch([Received(x) for x in (fresh, a, b, fresh, b)])
    assert [r.status for r in results] == [ACCEPTED, DUPLICATE, DUPLICATE, DUPLICATE, DUPLICATE]
    for body, r in zip((fresh, a, b, fresh, b), results, strict=True):
        assert adapter.raw.get(r.s3_key) == body  # type: ignore[arg-type]
