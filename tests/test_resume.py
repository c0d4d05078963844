"""Resuming a bulk ingest (IngestService.resume_stream over the local workspace's ledger): a run stopped
anywhere and started again on the same input ends as one uninterrupted run, and nothing else is skipped."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from backend.adapters.local.store import LocalStore
from backend.errors import StoreError
from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received
from tests.conftest import Flaky, make_event
from tests.raw_rows import raw_objects

ACCEPTED, DUPLICATE, REJECTED = IngestStatus.ACCEPTED, IngestStatus.DUPLICATE, IngestStatus.REJECTED


def lines() -> list[bytes]:
    """An input with what a real file holds: distinct events, a resend of the same bytes, an idempotency key
    reused with another payload, and invalid lines."""
    out = [make_event(payload={"i": i}, event_time=f"2025-12-28T10:{i:02d}:00Z") for i in range(12)]
    out.insert(5, b"{not json")
    out.append(out[2])  # the same bytes again: a DUPLICATE receipt in any run
    out.append(make_event(idempotency_key="k", payload={"v": 1}))
    out.append(make_event(idempotency_key="k", payload={"v": 2}))
    out.append(b'{"source": "demo"}')
    return out


def feed(bodies: list[bytes], origin: str = "file:events.jsonl") -> list[Received]:
    return [Received(body, origin, n) for n, body in enumerate(bodies, start=1)]


def receipts(store: LocalStore) -> list[tuple[object, ...]]:
    """What a run leaves, less the ingest times (which differ between any two runs)."""
    events = store.db.read(
        "SELECT hex(e.event_id), e.receipt, coalesce(e.s3_key, ''), hex(e.raw_sha), o.origin, e.line "
        "FROM events e LEFT JOIN origins o ON o.id = e.origin_id ORDER BY 1, 2"
    )
    rejected = store.db.read("SELECT reason, origin, line, sha256, data FROM rejections ORDER BY line")
    raw = [(key, hashlib.sha256(data).hexdigest().upper()) for key, data in raw_objects(store)]
    return (
        [("event", *r) for r in events] + [("rejection", *r) for r in rejected] + [("raw", *r) for r in raw]
    )


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = LocalStore(tmp_path / "ws")
    yield s
    s.close()


@pytest.fixture
def reference(tmp_path: Path) -> list[tuple[object, ...]]:
    s = LocalStore(tmp_path / "reference")
    list(IngestService(s, s).ingest_stream(feed(lines()), batch_size=4))
    try:
        return receipts(s)
    finally:
        s.close()


@pytest.mark.parametrize("stored", [0, 1, 4, 6, 12, len(lines())])
def test_a_rerun_after_any_prefix_equals_one_uninterrupted_run(
    store: LocalStore, reference: list[tuple[object, ...]], stored: int
) -> None:
    service = IngestService(store, store)
    list(service.ingest_stream(feed(lines())[:stored], batch_size=4))
    resumed = list(service.resume_stream(feed(lines()), store, batch_size=4))
    assert sum(b.skipped for b in resumed) == stored
    assert sum(len(b.results) for b in resumed) == len(lines()) - stored
    assert receipts(store) == reference


def test_a_batch_that_failed_after_its_raw_bytes_is_redone_whole(
    store: LocalStore, reference: list[tuple[object, ...]]
) -> None:
    index = Flaky(store)
    index.fail("record", None, "before")  # the second batch stores its bytes and rejections, not receipts
    with pytest.raises(StoreError):
        list(IngestService(store, index).resume_stream(feed(lines()), index, batch_size=4))
    again = list(IngestService(store, store).resume_stream(feed(lines()), store, batch_size=4))
    assert sum(b.skipped for b in again) == 4 + 1  # the first batch, and the second's quarantined line
    assert receipts(store) == reference


def test_a_finished_input_is_skipped_whole_and_ingest_stream_records_it_again(store: LocalStore) -> None:
    service = IngestService(store, store)
    first = [r.status for b in service.resume_stream(feed(lines()), store) for r in b.results]
    assert first.count(ACCEPTED) == 13 and first.count(DUPLICATE) == 2 and first.count(REJECTED) == 2
    second = list(service.resume_stream(feed(lines()), store))
    assert [b.results for b in second] == [[]] and second[0].skipped == len(lines())
    assert store.stats().duplicate == 2  # nothing added by the resumed run
    again = [r.status for b in service.ingest_stream(feed(lines())) for r in b]  # `pik ingest --again`
    assert again.count(DUPLICATE) == 15 and again.count(REJECTED) == 2


def test_a_line_whose_bytes_changed_is_ingested(store: LocalStore) -> None:
    service = IngestService(store, store)
    list(service.resume_stream(feed(lines()), store))
    edited = lines()
    edited[0] = make_event(payload={"i": "edited"}, event_time="2025-12-28T10:00:00Z")
    edited[5] = b"[still not an event]"
    results = [r for b in service.resume_stream(feed(edited), store) for r in b.results]
    assert [(r.line, r.status) for r in results] == [(1, ACCEPTED), (6, REJECTED)]


def test_only_the_same_origin_and_numbered_requests_are_skipped(store: LocalStore) -> None:
    service = IngestService(store, store)
    list(service.resume_stream(feed(lines()), store))
    other = [
        r.status for b in service.resume_stream(feed(lines(), "file:other.jsonl"), store) for r in b.results
    ]
    assert len(other) == len(lines()) and ACCEPTED not in other  # another file: every line a new delivery
    unnumbered = [Received(body, "file:events.jsonl") for body in lines()]
    assert sum(len(b.results) for b in service.resume_stream(unnumbered, store)) == len(lines())


def test_the_ledger_names_each_line_with_its_bytes(store: LocalStore) -> None:
    list(IngestService(store, store).resume_stream(feed(lines()), store))
    ledger = store.delivered("file:events.jsonl", 5, 7)
    assert set(ledger) == {5, 6, 7}
    assert ledger[6] == {hashlib.sha256(b"{not json").hexdigest()}
    assert ledger[5] == {hashlib.sha256(lines()[4]).hexdigest()}
    assert store.delivered("file:events.jsonl", 100, 200) == {}
    assert store.delivered("file:other.jsonl", 1, 100) == {}
    assert json.loads(lines()[4])["payload"] == {"i": 4}
