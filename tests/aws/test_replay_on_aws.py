"""A replay and a processor run on the AWS adapter (moto), through the services, with every API call counted
by botocore hooks: SQS calls per replayed event (budget 0.11: one SendMessageBatch per 10 messages), the
audit trail, the messages the processor turns into versions, and the queue left empty."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from backend.adapters.aws.ports import AwsPorts, aws_ports
from backend.adapters.aws.store import AwsStore
from backend.model import ReplayOutcome, ReplayRequest
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService
from backend.services.replay import ReplayService
from backend.times import FixedClock, fmt
from tests.aws_env import moto_backend
from tests.conftest import make_event

DAY = datetime(2025, 12, 28, tzinfo=UTC)
EVENTS = 123


class Calls:
    """API operations by service, counted at ``before-call`` (once per operation, retries included)."""

    def __init__(self, store: AwsStore) -> None:
        self.ops: Counter[str] = Counter()
        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", self._call)

    def _call(self, event_name: str, **_: Any) -> None:
        _, service, op = event_name.split(".", 2)
        self.ops[f"{service}.{op}"] += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops


@pytest.fixture
def aws() -> Iterator[tuple[AwsStore, AwsPorts]]:
    store, settings, close = moto_backend()
    try:
        yield store, aws_ports(store, settings)
    finally:
        close()


def test_a_replay_costs_a_tenth_of_an_sqs_call_per_event(aws: tuple[AwsStore, AwsPorts]) -> None:
    store, ports = aws
    ingest = IngestService(store, store, FixedClock(DAY + timedelta(days=1)))
    bodies = [
        make_event(entity_id="user_1", event_time=fmt(DAY + timedelta(minutes=i)), payload={"steps": i})
        for i in range(EVENTS)
    ]
    ingest.ingest_batch([Received(b) for b in bodies + bodies[:5]])  # 5 duplicate receipts: not replayed
    calls = Calls(store)
    service = ReplayService(
        ports.investigate, ports.catalog, ports.audit, ports.queue, ports.aggregates, bucket=store.location
    )
    request = ReplayRequest(entity_id="user_1", start_time="2025-12-28", end_time="2025-12-29")
    plan = service.plan(request, actor="alice")
    assert plan.would_send == EVENTS and plan.skipped.duplicate == 5
    assert not any(op.startswith("sqs.") for op in calls.take()), "a dry run sends nothing"

    record = service.execute(request, actor="alice", expected_fingerprint=plan.fingerprint)
    ops = calls.take()
    assert (record.outcome, record.sent, record.failed) == (ReplayOutcome.SENT, EVENTS, 0)
    sqs = {op: n for op, n in ops.items() if op.startswith("sqs.")}
    assert sqs == {"sqs.SendMessageBatch": (EVENTS + 9) // 10}
    per_event = sum(sqs.values()) / record.sent
    assert per_event <= 0.11, per_event
    # The audit record: begun RUNNING and finished, one transaction each.
    assert ops["dynamodb.TransactWriteItems"] == 2
    assert ports.audit.get(record.replay_id) == record
    assert [r.replay_id for r in ports.audit.query().items] == [record.replay_id, plan.replay_id]

    # The processor turns the messages into one version of the window; the queue ends empty.
    processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates)
    bodies_seen: list[dict[str, Any]] = []
    while batch := ports.queue.receive(10, 60):
        result = processor.process([m.body for m in batch])
        assert not result.failed
        bodies_seen += [json.loads(m.body) for m in batch]
        ports.queue.delete([m.receipt_handle for m in batch])
    assert len(bodies_seen) == EVENTS and {b["replay_id"] for b in bodies_seen} == {record.replay_id}
    depth = ports.queue.depth()
    assert (depth.visible, depth.in_flight, depth.dead) == (0, 0, 0)
    [version] = ports.aggregates.versions("user_1", "2025-12-28").items
    assert (version.version, version.value, version.input_count) == (1, EVENTS, EVENTS)
    assert version.replay_ids == [record.replay_id]
    assert len(ports.aggregates.manifest(version.inputs_hash)) == EVENTS
    # The next plan knows the window has versions now.
    assert service.plan(request, actor="alice").windows_with_versions == 1
