"""Payloads carried in the index (docs/aws.md, "Payloads in the index"): a payload of at most 512 bytes of
canonical JSON rides in its accepted receipt, so a recompute of a field metric reads it from the index pages
it already reads, with no S3 GET; larger payloads, receipts written before (no attribute), a carried copy
that does not match its payload_sha, and the original kit's stacks all recompute through S3, to the same
value. The indexes do not copy the attribute, and ingest stays at 2 calls per accepted event."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from boto3.dynamodb.types import TypeSerializer

from backend.adapters.aws.dynamo import item_size, str_attr
from backend.adapters.aws.event_items import PAYLOAD, event_item
from backend.adapters.aws.ports import AwsPorts, aws_ports
from backend.adapters.aws.resources import INDEX_ATTRIBUTES, LAG_INDEX, RECEIPTS_INDEX
from backend.adapters.aws.store import AwsStore
from backend.identity import INLINE_PAYLOAD_MAX, canonical_json, inline_payload
from backend.model import MetricKind, MetricSpec
from backend.services.ingest import IngestService, Received, prepare_requests
from backend.services.processor import ProcessorService
from backend.times import FixedClock, fmt
from tests.aws.test_legacy_stack import legacy_item
from tests.aws_env import moto_backend
from tests.conftest import make_event

DAY = datetime(2025, 12, 28, tzinfo=UTC)
NOW = FixedClock(datetime(2025, 12, 29, 0, 0, 1, tzinfo=UTC))
STEPS = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")
BIG = "x" * INLINE_PAYLOAD_MAX  # a payload holding it is over the limit


class Calls:
    def __init__(self, store: AwsStore) -> None:
        self.ops: Counter[str] = Counter()
        for client in store.clients.all():
            client.meta.events.register("before-call.*.*", self._call)

    def _call(self, event_name: str, **_: Any) -> None:
        self.ops[event_name.split(".", 2)[2]] += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops


@pytest.fixture
def aws() -> Iterator[tuple[AwsStore, AwsPorts, Calls]]:
    store, settings, close = moto_backend()
    try:
        yield store, aws_ports(store, settings), Calls(store)
    finally:
        close()


def _payload(i: int) -> dict[str, Any]:
    return {"steps": i, "note": BIG} if i % 10 == 0 else {"steps": i, "zone": "é/#"}


def _ingest(store: AwsStore, n: int, entity: str = "user_1") -> int:
    """Ingest ``n`` events of ``entity`` on DAY (every tenth with a payload over the limit), each also sent
    a second time (a duplicate receipt); their steps' sum."""
    service = IngestService(store, store, FixedClock(DAY + timedelta(days=1)))
    bodies = [
        make_event(entity_id=entity, event_time=fmt(DAY + timedelta(minutes=i)), payload=_payload(i))
        for i in range(n)
    ]
    results = service.ingest_batch([Received(b, "api") for b in bodies + bodies[:3]])
    assert [r.status for r in results].count("ACCEPTED") == n
    return sum(range(n))


def _items(store: AwsStore, entity: str = "user_1") -> list[dict[str, Any]]:
    return store.ddb.query(
        TableName=store.t.events,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": str_attr(f"ENTITY#{entity}")},
    )["Items"]


def test_a_small_payload_rides_in_its_accepted_receipt_only(aws: tuple[AwsStore, AwsPorts, Calls]) -> None:
    store, _, _ = aws
    _ingest(store, 12)
    items = _items(store)
    accepted = [i for i in items if i["receipt"]["S"] == "0"]
    duplicates = [i for i in items if i["receipt"]["S"] != "0"]
    assert len(accepted) == 12 and len(duplicates) == 3
    assert all(PAYLOAD not in i for i in duplicates)
    for item in accepted:
        t = item["event_time"]["S"]
        steps = int(t[11:13]) * 60 + int(t[14:16])
        if steps % 10 == 0:
            assert PAYLOAD not in item  # over the limit: S3 only
        else:
            text = item[PAYLOAD]["S"]
            assert text == canonical_json(_payload(steps)).decode()
            assert hashlib.sha256(text.encode()).hexdigest() == item["payload_sha"]["S"]


def test_the_indexes_do_not_copy_the_payload(aws: tuple[AwsStore, AwsPorts, Calls]) -> None:
    store, _, _ = aws
    _ingest(store, 3)
    accepted = next(i for i in _items(store) if PAYLOAD in i)
    for index, key, value in (
        (LAG_INDEX, "GSI1PK", accepted["GSI1PK"]),
        (RECEIPTS_INDEX, "GSI2PK", accepted["GSI2PK"]),
    ):
        rows = store.ddb.query(
            TableName=store.t.events,
            IndexName=index.name,
            KeyConditionExpression=f"{key} = :pk",
            ExpressionAttributeValues={":pk": value},
        )["Items"]
        assert rows and all(PAYLOAD not in r for r in rows)
        assert all("s3_key" in r and "payload_sha" in r and "delivery" in r for r in rows)


def test_ingest_of_a_carried_payload_stays_at_two_calls(aws: tuple[AwsStore, AwsPorts, Calls]) -> None:
    store, _, calls = aws
    service = IngestService(store, store, FixedClock(DAY + timedelta(days=1)))
    assert service.ingest(make_event(entity_id="user_1", payload={"steps": 3})).status == "ACCEPTED"
    assert calls.take() == {"PutObject": 1, "TransactWriteItems": 1}
    assert PAYLOAD in _items(store)[0]


def _recompute(ports: AwsPorts) -> tuple[Any, Counter[str]]:
    assert ports.aggregates is not None
    processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates, [STEPS])
    calls = Calls(ports.investigate._store)
    result = processor.recompute("user_1", DAY.date().isoformat())
    steps = next(m for m in result.metrics if m.metric == "steps")
    assert steps.written
    return steps.version.value, calls.take()


def test_a_recompute_gets_only_the_large_payloads_from_s3(aws: tuple[AwsStore, AwsPorts, Calls]) -> None:
    store, ports, _ = aws
    total = _ingest(store, 30)
    value, ops = _recompute(ports)
    assert value == total
    assert ops["GetObject"] == 3  # events 0, 10 and 20: over the limit


def test_receipts_without_a_carried_payload_or_with_a_wrong_one_read_s3(
    aws: tuple[AwsStore, AwsPorts, Calls],
) -> None:
    store, ports, _ = aws
    total = _ingest(store, 20)
    carried = [i for i in _items(store) if PAYLOAD in i]
    # Written before payloads were carried: no attribute.
    for item in carried[:5]:
        store.ddb.update_item(
            TableName=store.t.events,
            Key={"PK": item["PK"], "SK": item["SK"]},
            UpdateExpression="REMOVE #p",
            ExpressionAttributeNames={"#p": PAYLOAD},
        )
    # A copy that is not the payload its sha256 names: never trusted.
    store.ddb.update_item(
        TableName=store.t.events,
        Key={"PK": carried[5]["PK"], "SK": carried[5]["SK"]},
        UpdateExpression="SET #p = :p",
        ExpressionAttributeNames={"#p": PAYLOAD},
        ExpressionAttributeValues={":p": str_attr(json.dumps({"steps": 10**6}))},
    )
    value, ops = _recompute(ports)
    assert value == total
    assert ops["GetObject"] == 2 + 5 + 1


def test_a_window_of_receipts_written_before_recomputes_through_s3(
    aws: tuple[AwsStore, AwsPorts, Calls],
) -> None:
    store, ports, _ = aws
    total = _ingest(store, 15)
    for item in _items(store):
        if PAYLOAD in item:
            store.ddb.update_item(
                TableName=store.t.events,
                Key={"PK": item["PK"], "SK": item["SK"]},
                UpdateExpression="REMOVE #p",
                ExpressionAttributeNames={"#p": PAYLOAD},
            )
    value, ops = _recompute(ports)
    assert value == total
    assert ops["GetObject"] == 15


def test_an_original_kit_stack_recomputes_through_s3(aws: tuple[AwsStore, AwsPorts, Calls]) -> None:
    store, ports, _ = aws
    serialize = TypeSerializer().serialize
    for n in range(8):
        event_time = f"2025-12-28T0{n}:00:00Z"
        payload = {"steps": n * 3}
        item = legacy_item(n, event_time, "2025-12-28T09:00:00Z", 1000, entity="user_1")
        item["payload_sha"] = hashlib.sha256(canonical_json(payload)).hexdigest()
        item["s3_bucket"] = store.t.bucket
        body = {"source": "demo", "event_type": "heartbeat", "entity_id": "user_1"}
        store.s3.put_object(
            Bucket=store.t.bucket,
            Key=item["s3_key"],
            Body=json.dumps({**body, "event_time": event_time, "payload": payload}).encode(),
        )
        store.ddb.put_item(TableName=store.t.events, Item={k: serialize(v) for k, v in item.items()})
    value, ops = _recompute(ports)
    assert value == sum(n * 3 for n in range(8))
    assert ops["GetObject"] == 8


def test_item_size_counts_names_and_values() -> None:
    assert item_size({"ab": {"S": "é"}, "n": {"N": "12345"}, "b": {"BOOL": True}, "d": {"B": b"xyz"}}) == (
        2 + 2 + 1 + 4 + 1 + 1 + 1 + 3
    )


def test_a_carried_payload_at_the_limit_adds_no_write_unit_to_the_seed_event() -> None:
    """The seed's event is already over 1 KB (2 write units) without its payload; 512 bytes more stay in
    the same 2 KB, and the index items (INCLUDE) do not grow at all."""
    keys = {"PK", "SK", "GSI1PK", "GSI1SK", "GSI2PK", "GSI2SK"}
    for payload in ({"steps": 10}, {"k": "x" * (INLINE_PAYLOAD_MAX - 8)}):
        body = make_event(payload=payload)
        receipt = prepare_requests([Received(body, "file:events.jsonl", 12)], NOW).valid[0][2]
        carried = inline_payload(body, receipt.payload_sha.hex())
        assert carried is not None and len(carried.encode()) <= INLINE_PAYLOAD_MAX
        with_payload = event_item(receipt.record(payload=carried), "0", "pik-prod-raw", 60, 30)
        without = event_item(receipt.record(), "0", "pik-prod-raw", 60, 30)
        assert 1024 < item_size(without) < item_size(with_payload) <= 2048
        projected = {k: v for k, v in with_payload.items() if k in keys or k in INDEX_ATTRIBUTES}
        assert item_size(projected) == item_size(without)
    too_big = make_event(payload={"k": "x" * INLINE_PAYLOAD_MAX})
    receipt = prepare_requests([Received(too_big, "api")], NOW).valid[0][2]
    assert inline_payload(too_big, receipt.payload_sha.hex()) is None
    assert inline_payload(make_event(payload={"steps": 1}), "0" * 64) is None  # not its payload_sha
