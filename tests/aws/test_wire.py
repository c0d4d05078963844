"""The AWS adapter through moto's HTTP server on 127.0.0.1: the real wire protocol (signing, XML and JSON
bodies, binary attributes, 412 answers) for a subset of the contract suite, and concurrent ingest with the
adapter's default worker threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from backend.services.ingest import IngestService, Received
from backend.times import FixedClock
from tests.aws_env import moto_store
from tests.conftest import Adapter, make_event
from tests.contract import test_event_index as index_contract
from tests.contract import test_provenance as provenance_contract
from tests.contract import test_raw_store as raw_contract

CASES: list[Callable[[Adapter], Any]] = [
    raw_contract.test_a_new_key_is_created_and_reads_back_identical,
    raw_contract.test_a_taken_key_is_refused_with_the_stored_sha_and_keeps_its_bytes,
    raw_contract.test_results_are_in_input_order_for_a_mix_of_new_and_taken_keys,
    raw_contract.test_arbitrary_bytes_round_trip_exactly,
    raw_contract.test_a_missing_key_reads_as_none,
    index_contract.test_every_receipt_is_its_own_record_accepted_first_then_arrival_order,
    index_contract.test_a_mixed_batch_gets_one_status_per_record_in_order,
    index_contract.test_a_record_reads_back_with_every_field,
    index_contract.test_claims_mixed_in_one_batch_answer_in_order,
    index_contract.test_entity_window_is_half_open,
    index_contract.test_entity_paging_with_a_status_filter,
    index_contract.test_partition_is_in_numeric_lag_order,
    index_contract.test_entity_ids_that_look_alike_stay_distinct,
    index_contract.test_quarantine_keeps_each_rejection_with_its_bytes_and_reason,
    index_contract.test_rejections_filter_by_readable_fields_and_receive_window,
    index_contract.test_stats_count_receipts_entities_partitions_and_rejections,
    provenance_contract.test_receipts_keep_their_origin_and_line,
]


@pytest.fixture
def wire(moto_url: str) -> Iterator[Adapter]:
    store, close = moto_store(endpoint_url=moto_url)
    try:
        yield Adapter("aws-http", store, store, close, atomic_batches=False)
    finally:
        close()


@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__.removeprefix("test_"))
def test_contract_over_http(case: Callable[[Adapter], Any], wire: Adapter) -> None:
    case(wire)


class _OneAtATime:
    """A client whose calls run one at a time: moto's DynamoDB is not thread-safe (a failed transaction
    restores a snapshot of every table, undoing concurrent writes), so the server must see calls in
    sequence while the adapter's threads still interleave everything around them."""

    _lock = threading.Lock()

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attr(*args, **kwargs)

        return call


def test_concurrent_ingest_over_http_accepts_each_event_once(moto_url: str) -> None:
    # 120 events, each sent 1-3 times in one batch: the adapter's 16 worker threads handle different event
    # ids at once and the receipts of one id in order.
    store, close = moto_store(endpoint_url=moto_url, workers=16)
    store.s3, store.ddb = _OneAtATime(store.s3), _OneAtATime(store.ddb)  # type: ignore[assignment]
    wire = Adapter("aws-http", store, store, close, atomic_batches=False)
    service = IngestService(wire.raw, wire.index, FixedClock(datetime(2025, 12, 29, tzinfo=UTC)))
    bodies = []
    for i in range(120):
        bodies += [make_event(entity_id=f"user_{i % 7}", payload={"n": i})] * (1 + i % 3)
    results = service.ingest_batch([Received(b) for b in bodies])
    accepted = [r for r in results if r.status == "ACCEPTED"]
    assert len(accepted) == 120 and len({r.event_id for r in accepted}) == 120
    assert len(results) - len(accepted) == sum(i % 3 for i in range(120))
    # The first copy of each event in the batch is the accepted one.
    first: dict[str, int] = {}
    for n, r in enumerate(results):
        first.setdefault(r.event_id or "", n)
    assert all(results[n].status == "ACCEPTED" for n in first.values())
    stats = wire.index.stats()
    assert (stats.accepted, stats.duplicate, stats.entities) == (120, len(bodies) - 120, 7)
    for r in accepted[:10]:
        assert wire.raw.get(r.s3_key) is not None  # type: ignore[arg-type]
    close()
