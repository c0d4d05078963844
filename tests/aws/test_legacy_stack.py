"""Reading a stack the original kit populated (DESIGN "Original kit's stored shapes"): second-precision and
microsecond times, unpadded lag keys ("LAG#100" sorts before "LAG#20" as text), rows a duplicate
overwrote, raw keys with ingest_date/hour. The kit reads them, correctly ordered, without writing."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from backend.adapters.aws.clients import make_clients
from backend.adapters.aws.store import AwsStore
from backend.model import IngestStatus
from pik_console.cli import main
from tests.aws_env import REGION, create_resources, fake_credentials
from tests.contract.test_event_index import collect

BUCKET_PREFIX = "legacy"


def eid(n: int) -> str:
    return hashlib.sha256(f"legacy-{n}".encode()).hexdigest()


def legacy_item(
    n: int,
    event_time: str,
    ingest_time: str,
    lag: int,
    *,
    entity: str = "user_123",
    status: str = "ACCEPTED",
    source: str = "demo",
    event_type: str = "heartbeat",
) -> dict[str, Any]:
    """An events-table item exactly as the original kit wrote it (resource-level types)."""
    day, hour = event_time[:10], event_time[11:13]
    key = (
        f"raw/source={source}/event_type={event_type}/event_date={day}/ingest_date={ingest_time[:10]}/"
        f"hour={ingest_time[11:13]}/event_id={eid(n)}.json"
    )
    return {
        "PK": f"ENTITY#{entity}",
        "SK": f"TS#{event_time}#EID#{eid(n)}",
        "GSI1PK": f"SRC#{source}#TYPE#{event_type}#DAY#{day}",
        "GSI1SK": f"LAG#{lag}#TS#{ingest_time}#EID#{eid(n)}",
        "event_id": eid(n),
        "source": source,
        "event_type": event_type,
        "entity_id": entity,
        "event_time": event_time,
        "ingest_time": ingest_time,
        "ingest_lag_ms": lag,
        "payload_sha": hashlib.sha256(b"{}").hexdigest(),
        "day": day,
        "hour": hour,
        "s3_key": key,
        "s3_bucket": "legacy-raw",
        "status": status,
    }


# (n, event_time, ingest_time, lag): lags chosen so that text order differs from number order.
ROWS = [
    (1, "2025-12-28T10:00:00Z", "2025-12-28T10:00:00.020000Z", 20),
    (2, "2025-12-28T09:00:00Z", "2025-12-28T09:00:00.100000Z", 100),
    (3, "2025-12-28T11:30:00.250000Z", "2025-12-28T11:30:00.253000Z", 3),
    (4, "2025-12-28T00:00:00Z", "2025-12-28T00:00:01Z", 1000),
    (5, "2025-12-29T00:00:00Z", "2025-12-29T00:00:00.000009Z", 0),  # next day: outside a 12-28 window
]


@pytest.fixture
def legacy() -> Iterator[tuple[AwsStore, dict[str, str]]]:
    restore = fake_credentials()
    with mock_aws():
        settings = create_resources(prefix=BUCKET_PREFIX)
        table = boto3.resource("dynamodb", region_name=REGION).Table(settings.events_table or "")
        dedupe = boto3.resource("dynamodb", region_name=REGION).Table(settings.dedupe_table or "")
        s3 = boto3.client("s3", region_name=REGION)
        for n, et, it, lag in ROWS:
            item = legacy_item(n, et, it, lag)
            table.put_item(Item=item)
            dedupe.put_item(
                Item={
                    "event_id": eid(n),
                    "first_seen_ingest_time": it,
                    "entity_id": "user_123",
                    "source": "demo",
                    "event_type": "heartbeat",
                    "event_time": et,
                    "ttl_epoch": 1798761600,
                }
            )
            s3.put_object(Bucket=settings.raw_bucket or "", Key=item["s3_key"], Body=b'{"legacy": %d}' % n)
        # A duplicate overwrote its accepted row (the original kit's bug): only this row is left.
        overwritten = legacy_item(6, "2025-12-28T12:00:00Z", "2025-12-28T18:00:00.5Z", 21_600_000)
        overwritten["status"] = "DUPLICATE"
        table.put_item(Item=overwritten)
        dedupe.put_item(
            Item={"event_id": eid(6), "entity_id": "user_123", "event_time": "2025-12-28T12:00:00Z"}
        )
        store = AwsStore(
            make_clients(settings),
            settings.raw_bucket or "",
            settings.events_table or "",
            settings.dedupe_table or "",
        )
        env = {
            "RAW_BUCKET": settings.raw_bucket or "",
            "EVENTS_TABLE": settings.events_table or "",
            "DEDUPE_TABLE": settings.dedupe_table or "",
        }
        yield store, env
        store.close()
    restore()


WINDOW = ("2025-12-28T00:00:00.000Z", "2025-12-29T00:00:00.000Z")


def test_an_entity_window_is_in_event_time_order_with_fixed_precision_times(
    legacy: tuple[AwsStore, dict[str, str]],
) -> None:
    store, _ = legacy
    page = store.query_entity("user_123", *WINDOW, limit=100)
    assert [r.event_time for r in page.items] == [
        "2025-12-28T00:00:00.000Z",  # at the window start: in
        "2025-12-28T09:00:00.000Z",
        "2025-12-28T10:00:00.000Z",
        "2025-12-28T11:30:00.250Z",
        "2025-12-28T12:00:00.000Z",
    ]  # 2025-12-29T00:00:00Z is at the window end: out
    assert page.items[1].ingest_time == "2025-12-28T09:00:00.100Z"
    assert all(r.raw_sha is None and r.raw_size is None for r in page.items)
    assert [r.status for r in page.items][-1] is IngestStatus.DUPLICATE  # as the original kit left it
    assert collect(store.query_entity, 2, entity_id="user_123", start=WINDOW[0], end=WINDOW[1]) == page.items
    desc = store.query_entity("user_123", *WINDOW, limit=100, descending=True)
    assert desc.items == list(reversed(page.items))


def test_a_partition_is_in_numeric_lag_order_despite_unpadded_keys(
    legacy: tuple[AwsStore, dict[str, str]],
) -> None:
    store, _ = legacy
    page = store.query_partition("demo", "heartbeat", "2025-12-28", limit=100)
    assert [r.ingest_lag_ms for r in page.items] == [3, 20, 100, 1000, 21_600_000]
    largest = store.query_partition("demo", "heartbeat", "2025-12-28", limit=2, descending=True)
    assert [r.ingest_lag_ms for r in largest.items] == [21_600_000, 1000]
    for descending in (False, True):
        paged = collect(
            store.query_partition,
            1,
            source="demo",
            event_type="heartbeat",
            day="2025-12-28",
            descending=descending,
        )
        assert [r.ingest_lag_ms for r in paged] == sorted([3, 20, 100, 1000, 21_600_000], reverse=descending)
    dups = store.query_partition("demo", "heartbeat", "2025-12-28", status=IngestStatus.DUPLICATE)
    assert [r.event_id for r in dups.items] == [eid(6)]
    # Each row is its event's only record: all of them stand for accepted events (a replay sends event 6).
    accepted = store.query_partition("demo", "heartbeat", "2025-12-28", status=IngestStatus.ACCEPTED)
    assert len(accepted.items) == 5


def test_bulk_reads_and_day_counts_of_a_legacy_stack(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    from backend.adapters.aws.investigate import AwsInvestigation

    store, _ = legacy
    scans = AwsInvestigation(store)
    lean = scans.scan_partition("demo", "heartbeat", "2025-12-28", accepted_only=True)
    assert [r.ingest_lag_ms for r in lean.items] == [3, 20, 100, 1000, 21_600_000]
    assert all(r.accepted for r in lean.items)
    counts = scans.day_counts_partition("demo", "heartbeat", "2025-12-27", "2025-12-30")
    assert [(c.day, c.accepted, c.late, c.duplicate) for c in counts] == [
        ("2025-12-28", 5, 0, 0),
        ("2025-12-29", 1, 0, 0),
    ]
    by_entity = scans.day_counts_entity("user_123", "2025-12-28", "2025-12-29", grace_ms=0)
    assert [(c.day, c.accepted) for c in by_entity] == [("2025-12-28", 5)]


def test_events_and_their_raw_bytes_are_found_by_id(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    store, _ = legacy
    accepted = store.get_accepted(eid(1))
    assert accepted is not None and accepted.event_time == "2025-12-28T10:00:00.000Z"
    assert store.get(accepted.s3_key) == b'{"legacy": 1}'
    assert "ingest_date=2025-12-28/hour=10" in accepted.s3_key
    assert [r.event_id for r in store.receipts(eid(1))] == [eid(1)]
    # The overwritten row is all that is left of event 6: it is what the kit can show.
    assert [r.ingest_time for r in store.receipts(eid(6))] == ["2025-12-28T18:00:00.500Z"]
    stats = store.stats()
    assert (stats.accepted + stats.duplicate, stats.entities) == (6, 1)


def test_pik_events_reads_the_legacy_stack(
    legacy: tuple[AwsStore, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = legacy
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out, err = io.StringIO(), io.StringIO()
    code = main(
        ["events", "--backend", "aws", "--region", REGION, "--source", "demo", "--type", "heartbeat",
         "--day", "2025-12-28", "--desc", "--json"],
        out,
        err,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    data = json.loads(out.getvalue())
    assert [i["ingest_lag_ms"] for i in data["items"]] == [21_600_000, 1000, 100, 20, 3]
    assert data["next_cursor"] is None
