"""The replay audit trail on DynamoDB beyond the contract (tests/contract/test_replay_ports.py): the two
items of a record, the calls each method costs, and a finish that would move a record's start time."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from backend.adapters.aws.audit import DynamoAudit
from backend.adapters.aws.store import AwsStore
from backend.errors import InvalidRequest
from backend.model import ReplayOutcome
from backend.settings import AwsSettings
from tests.aws_env import moto_backend
from tests.contract.test_event_index import collect
from tests.contract.test_replay_ports import _record


@pytest.fixture
def env() -> Iterator[tuple[DynamoAudit, AwsStore, AwsSettings, Counter[str]]]:
    store, settings, close = moto_backend()
    ops: Counter[str] = Counter()

    def count(event_name: str, **_: Any) -> None:
        ops[event_name.split(".", 2)[2]] += 1

    store.clients.dynamodb.meta.events.register("before-call.*.*", count)
    try:
        assert settings.audit_table
        yield DynamoAudit(store.clients, settings.audit_table), store, settings, ops
    finally:
        close()


def _items(store: AwsStore, table: str) -> dict[tuple[str, str], dict[str, Any]]:
    items = store.clients.dynamodb.scan(TableName=table)["Items"]
    return {(i["PK"]["S"], i["SK"]["S"]): i for i in items}


def test_a_record_is_a_listing_item_and_a_lookup_item_written_together(env: Any) -> None:
    audit, store, settings, ops = env
    running = _record("rp-1", "2025-12-28T10:00:00Z")  # stored keys use the fixed-precision form
    audit.begin(running)
    assert ops == {"TransactWriteItems": 1}
    items = _items(store, settings.audit_table)
    assert set(items) == {("REPLAYS", "2025-12-28T10:00:00.000Z#rp-1"), ("REPLAY#rp-1", "REPLAY")}
    for item in items.values():
        assert item["outcome"]["S"] == "RUNNING" and item["actor"]["S"] == "alice"
    ops.clear()
    done = running.model_copy(
        update={"outcome": ReplayOutcome.SENT, "finished_at": "2025-12-28T10:00:05.000Z"}
    )
    audit.finish(done)
    assert ops == {"TransactWriteItems": 1}
    assert {i["outcome"]["S"] for i in _items(store, settings.audit_table).values()} == {"SENT"}
    ops.clear()
    assert audit.get("rp-1") == done and ops == {"GetItem": 1}
    ops.clear()
    assert audit.query().items == [done] and ops == {"Query": 1}


def test_a_finish_cannot_move_the_start_time(env: Any) -> None:
    audit, *_ = env
    running = _record("rp-1", "2025-12-28T10:00:00.000Z")
    audit.begin(running)
    moved = running.model_copy(
        update={"outcome": ReplayOutcome.SENT, "started_at": "2025-12-28T11:00:00.000Z"}
    )
    with pytest.raises(InvalidRequest, match="started at another time"):
        audit.finish(moved)
    assert audit.get("rp-1") == running
    assert [r.replay_id for r in audit.query().items] == ["rp-1"]


def test_the_listing_is_one_query_per_page(env: Any) -> None:
    audit, _, _, ops = env
    for i in range(7):
        audit.begin(_record(f"rp-{i}", f"2025-12-28T1{i}:00:00.000Z", ReplayOutcome.DRY_RUN))
    ops.clear()
    listed = collect(audit.query, 3)
    assert [r.replay_id for r in listed] == [f"rp-{i}" for i in reversed(range(7))]
    assert ops == {"Query": 3}
    with pytest.raises(InvalidRequest):
        audit.query(after="garbage")
