"""What an event costs on AWS, in API calls, counted with botocore event hooks (issue budget: an accepted
event at most 2 calls, a duplicate at most 3). The figures here are the ones docs/aws.md states."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from backend.adapters.aws.store import AwsStore
from backend.ports import RawObject
from backend.services.ingest import IngestService, Received, prepare
from backend.times import FixedClock
from tests.aws_env import moto_store
from tests.conftest import make_event

NOW = FixedClock(datetime(2025, 12, 29, 0, 0, 1, tzinfo=UTC))


class Calls:
    """Counts every API operation the store's clients make (``before-call`` fires once per operation,
    retries included in it; ``before-send`` once per HTTP attempt)."""

    def __init__(self, store: AwsStore) -> None:
        self.ops: Counter[str] = Counter()
        self.sends = 0
        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", self._call)
            client.meta.events.register("before-send.*.*", self._send)

    def _call(self, event_name: str, **_: object) -> None:
        self.ops[event_name.split(".", 2)[2]] += 1

    def _send(self, **_: object) -> None:
        self.sends += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops


@pytest.fixture
def aws() -> Iterator[tuple[IngestService, AwsStore, Calls]]:
    store, close = moto_store()
    try:
        yield IngestService(store, store, NOW), store, Calls(store)
    finally:
        close()


def test_an_accepted_event_costs_one_put_and_one_transaction(
    aws: tuple[IngestService, AwsStore, Calls],
) -> None:
    service, _, calls = aws
    assert service.ingest(make_event()).status == "ACCEPTED"
    assert calls.take() == {"PutObject": 1, "TransactWriteItems": 1}


def test_a_duplicate_costs_two_calls(aws: tuple[IngestService, AwsStore, Calls]) -> None:
    service, _, calls = aws
    service.ingest(make_event())
    calls.take()
    for _ in range(3):
        assert service.ingest(make_event()).status == "DUPLICATE"
        assert calls.take() == {"PutObject": 1, "TransactWriteItems": 1}


def test_an_idempotency_duplicate_on_another_day_costs_three_calls(
    aws: tuple[IngestService, AwsStore, Calls],
) -> None:
    service, _, calls = aws
    service.ingest(make_event(idempotency_key="k"))
    calls.take()
    later = make_event(idempotency_key="k", event_time="2025-12-30T08:00:00Z")
    assert service.ingest(later).status == "DUPLICATE"
    assert calls.take() == {"PutObject": 1, "TransactWriteItems": 1, "PutItem": 1}


def test_a_duplicate_with_other_bytes_costs_four_calls(aws: tuple[IngestService, AwsStore, Calls]) -> None:
    # Over the budget of 3, and why: both byte strings are kept, and S3's refusal of the first put does not
    # say what the key holds, so the second put (under receipts/) waits for the index's answer.
    service, _, calls = aws
    service.ingest(make_event(idempotency_key="k", payload={"v": 1}))
    calls.take()
    result = service.ingest(make_event(idempotency_key="k", payload={"v": 2}))
    assert result.status == "DUPLICATE" and result.s3_key.startswith("receipts/")  # type: ignore[union-attr]
    assert calls.take() == {"PutObject": 2, "TransactWriteItems": 2}


def test_the_retry_of_a_half_done_ingest_costs_four_calls(aws: tuple[IngestService, AwsStore, Calls]) -> None:
    service, store, calls = aws
    body = make_event()
    p = prepare(body)
    store.put_new([RawObject(p.raw_key, body, p.raw_sha)])  # stored, then the attempt failed
    calls.take()
    assert service.ingest(body).status == "ACCEPTED"
    assert calls.take() == {"PutObject": 1, "TransactWriteItems": 2, "HeadObject": 1}


def test_a_batch_costs_two_calls_per_event(aws: tuple[IngestService, AwsStore, Calls]) -> None:
    service, _, calls = aws
    bodies = [make_event(entity_id=f"user_{i}") for i in range(50)]
    service.ingest_batch([Received(b) for b in bodies])
    assert sum(calls.take().values()) == 100
    results = service.ingest_batch([Received(b) for b in bodies])
    assert {r.status for r in results} == {"DUPLICATE"}
    assert sum(calls.take().values()) == 100


def test_rejections_cost_one_transaction_per_100(aws: tuple[IngestService, AwsStore, Calls]) -> None:
    service, _, calls = aws
    service.ingest_batch([Received(b"not json %d" % i) for i in range(30)])
    assert calls.take() == {"TransactWriteItems": 1}


def test_a_file_run_costs_two_calls_per_event_and_one_ledger_read_per_100_lines(
    aws: tuple[IngestService, AwsStore, Calls],
) -> None:
    """Resuming a file reads the ingest ledger (BatchGetItem, 100 lines a call) once per batch; each line's
    ledger item rides in the receipt's transaction (no extra call)."""
    service, store, calls = aws
    lines = [Received(make_event(entity_id=f"user_{i}"), "file:in.jsonl", i + 1) for i in range(150)]
    results = [r for b in service.resume_stream(lines, store, batch_size=150) for r in b.results]
    assert [r.status for r in results] == ["ACCEPTED"] * 150
    assert calls.take() == {"PutObject": 150, "TransactWriteItems": 150, "BatchGetItem": 2}
    # Run again: everything is skipped, only the ledger is read.
    assert sum(b.skipped for b in service.resume_stream(lines, store, batch_size=150)) == 150
    assert calls.take() == {"BatchGetItem": 2}
