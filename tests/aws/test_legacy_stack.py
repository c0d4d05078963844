"""Reading a stack the original kit populated (DESIGN "Original kit's stored shapes"): second-precision and
microsecond times, unpadded lag keys ("LAG#100" sorts before "LAG#20" as text), rows a duplicate
overwrote, raw keys with ingest_date/hour. The kit reads them, correctly ordered, without writing."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from moto import mock_aws
from rich.console import Console

from backend.adapters.aws.clients import make_clients
from backend.adapters.aws.resources import AGGREGATES, DEDUPE, EVENTS, LAG_INDEX
from backend.adapters.aws.store import AwsStore
from backend.model import IngestStatus
from backend.services.versions import VersionDiff
from backend.settings import AwsSettings
from pik_console.cli import main
from pik_console.console.aggregates_pane import diff_view
from tests.aws_env import REGION, create_resources, fake_credentials, session
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
    """An events-table item exactly as the original kit wrote it (resource-level types): its raw key has
    the ingest day and the event's hour, and its lag key is not padded."""
    day, hour = event_time[:10], event_time[11:13]
    key = (
        f"raw/source={source}/event_type={event_type}/event_date={day}/ingest_date={ingest_time[:10]}/"
        f"hour={hour}/event_id={eid(n)}.json"
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


def dedupe_item(n: int, event_time: str, ingest_time: str, entity: str = "user_123") -> dict[str, Any]:
    """The dedupe-table item the original kit wrote for the first receipt of event ``n``."""
    return {
        "event_id": eid(n),
        "first_seen_ingest_time": ingest_time,
        "entity_id": entity,
        "source": "demo",
        "event_type": "heartbeat",
        "event_time": event_time,
        "ttl_epoch": 1798761600,
    }


# (n, event_time, ingest_time, lag): lags chosen so that text order differs from number order.
ROWS = [
    (1, "2025-12-28T10:00:00Z", "2025-12-28T10:00:00.020000Z", 20),
    (2, "2025-12-28T09:00:00Z", "2025-12-28T09:00:00.100000Z", 100),
    (3, "2025-12-28T11:30:00.250000Z", "2025-12-28T11:30:00.253000Z", 3),
    (4, "2025-12-28T00:00:00Z", "2025-12-28T00:00:01Z", 1000),
    (7, "2025-12-28T14:00:00Z", "2025-12-28T14:00:00.200000Z", 200),  # sent again at 15:00 (below)
    (8, "2025-12-28T20:00:00Z", "2025-12-28T20:00:00.007000Z", 7),
    (5, "2025-12-29T00:00:00Z", "2025-12-29T00:00:00.000009Z", 0),  # next day: outside a 12-28 window
]
# Event 6 was accepted at 12:00:01 (its bytes are under ingest_date=2025-12-28), then sent again with the
# same event time the next morning: that duplicate OVERWROTE its row (the original kit's bug).
OVERWRITTEN = (6, "2025-12-28T12:00:00Z", "2025-12-28T12:00:01Z", "2025-12-29T06:00:00Z", 64_800_000)
# Event 7 sent again with its idempotency key and another event_time: a second row, DUPLICATE, no bytes.
DUPLICATE_7 = ("2025-12-28T15:00:00Z", "2025-12-28T15:00:05Z", 5000)
# On 2025-12-28: 7 events (1, 2, 3, 4, 6, 7, 8) in 8 rows, 2 duplicates (6's folded one and 7's row).
ACCEPTED_LAGS = [3, 7, 20, 100, 200, 1000, 1000]

# The original kit's tables: its events table has the lag index only; there is no audit table.
ORIGINAL_TABLES = (dataclasses.replace(EVENTS, gsis=(LAG_INDEX,)), DEDUPE, AGGREGATES)


def write_original_kit_stack(settings: AwsSettings, endpoint_url: str | None = None) -> None:
    """Write the rows, dedupe items and raw bytes above as the original kit's ingest left them."""
    ddb = session().resource("dynamodb", endpoint_url=endpoint_url)
    table = ddb.Table(settings.events_table or "")
    dedupe = ddb.Table(settings.dedupe_table or "")
    s3 = session().client("s3", endpoint_url=endpoint_url)
    bucket = settings.raw_bucket or ""
    for n, et, it, lag in ROWS:
        item = legacy_item(n, et, it, lag)
        table.put_item(Item=item)
        dedupe.put_item(Item=dedupe_item(n, et, it))
        s3.put_object(Bucket=bucket, Key=item["s3_key"], Body=b'{"legacy": %d}' % n)
    n, et, first, again, lag = OVERWRITTEN
    accepted = legacy_item(n, et, first, 1000)
    s3.put_object(Bucket=bucket, Key=accepted["s3_key"], Body=b'{"legacy": %d}' % n)
    dedupe.put_item(Item=dedupe_item(n, et, first))
    table.put_item(Item=accepted)
    table.put_item(Item=legacy_item(n, et, again, lag, status="DUPLICATE"))  # same key: overwritten
    et, it, lag = DUPLICATE_7
    table.put_item(Item=legacy_item(7, et, it, lag, status="DUPLICATE"))


def original_kit_stack(endpoint_url: str | None = None, prefix: str = BUCKET_PREFIX) -> AwsSettings:
    """An original kit's stack (its tables, no audit table), populated as above; returns its settings."""
    settings = create_resources(endpoint_url, prefix, ORIGINAL_TABLES)
    write_original_kit_stack(settings, endpoint_url)
    return settings


def stack_env(settings: AwsSettings) -> dict[str, str]:
    """The original kit's environment names for ``settings``."""
    return {
        "RAW_BUCKET": settings.raw_bucket or "",
        "EVENTS_TABLE": settings.events_table or "",
        "DEDUPE_TABLE": settings.dedupe_table or "",
        "AGG_TABLE": settings.agg_table or "",
        "REPLAY_QUEUE_URL": settings.replay_queue_url or "",
    }


@pytest.fixture
def legacy() -> Iterator[tuple[AwsStore, dict[str, str]]]:
    restore = fake_credentials()
    with mock_aws():
        settings = original_kit_stack()
        store = AwsStore(
            make_clients(settings),
            settings.raw_bucket or "",
            settings.events_table or "",
            settings.dedupe_table or "",
        )
        yield store, stack_env(settings)
        store.close()
    restore()


WINDOW = ("2025-12-28T00:00:00.000Z", "2025-12-29T00:00:00.000Z")
DAY = "2025-12-28"


def test_an_entity_window_is_in_event_time_order_with_fixed_precision_times(
    legacy: tuple[AwsStore, dict[str, str]],
) -> None:
    store, _ = legacy
    page = store.query_entity("user_123", *WINDOW, limit=100)
    assert [(r.event_time, r.status.value) for r in page.items] == [
        ("2025-12-28T00:00:00.000Z", "ACCEPTED"),  # at the window start: in
        ("2025-12-28T09:00:00.000Z", "ACCEPTED"),
        ("2025-12-28T10:00:00.000Z", "ACCEPTED"),
        ("2025-12-28T11:30:00.250Z", "ACCEPTED"),
        ("2025-12-28T12:00:00.000Z", "ACCEPTED"),  # event 6: the acceptance a duplicate overwrote...
        ("2025-12-28T12:00:00.000Z", "DUPLICATE"),  # ...and that duplicate, from the same row
        ("2025-12-28T14:00:00.000Z", "ACCEPTED"),
        ("2025-12-28T15:00:00.000Z", "DUPLICATE"),  # event 7 again, with another event time
        ("2025-12-28T20:00:00.000Z", "ACCEPTED"),
    ]  # 2025-12-29T00:00:00Z is at the window end: out
    assert page.items[1].ingest_time == "2025-12-28T09:00:00.100Z"
    assert all(r.raw_sha is None and r.raw_size is None for r in page.items)
    six = page.items[4]
    assert (six.ingest_time, six.ingest_lag_ms) == ("2025-12-28T12:00:01.000Z", 1000)  # the first receipt's
    assert page.items[5].ingest_time == "2025-12-29T06:00:00.000Z"
    assert collect(store.query_entity, 2, entity_id="user_123", start=WINDOW[0], end=WINDOW[1]) == page.items
    desc = store.query_entity("user_123", *WINDOW, limit=100, descending=True)
    assert [(r.event_id, r.receipt) for r in desc.items] == [
        (r.event_id, r.receipt) for r in reversed(page.items)
    ] or {(r.event_id, r.receipt) for r in desc.items} == {(r.event_id, r.receipt) for r in page.items}


def test_status_filters_tell_duplicate_rows_from_acceptances(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    store, _ = legacy
    accepted = store.query_entity("user_123", *WINDOW, status=IngestStatus.ACCEPTED, limit=100).items
    assert sorted(r.event_id for r in accepted) == sorted(eid(n) for n in (1, 2, 3, 4, 6, 7, 8))
    assert {r.status for r in accepted} == {IngestStatus.ACCEPTED}
    dups = store.query_entity("user_123", *WINDOW, status=IngestStatus.DUPLICATE, limit=100).items
    assert sorted(r.event_id for r in dups) == sorted([eid(6), eid(7)])
    assert {r.status for r in dups} == {IngestStatus.DUPLICATE}


def test_a_partition_is_in_numeric_lag_order_despite_unpadded_keys(
    legacy: tuple[AwsStore, dict[str, str]],
) -> None:
    store, _ = legacy
    page = store.query_partition("demo", "heartbeat", DAY, status=IngestStatus.ACCEPTED, limit=100)
    assert [r.ingest_lag_ms for r in page.items] == ACCEPTED_LAGS
    assert len({r.event_id for r in page.items}) == 7  # each event once
    largest = store.query_partition(
        "demo", "heartbeat", DAY, status=IngestStatus.ACCEPTED, limit=2, descending=True
    )
    assert [r.ingest_lag_ms for r in largest.items] == [1000, 1000]
    everything = sorted([*ACCEPTED_LAGS, 5000, 64_800_000])
    for descending in (False, True):
        paged = collect(
            store.query_partition, 1, source="demo", event_type="heartbeat", day=DAY, descending=descending
        )
        assert [r.ingest_lag_ms for r in paged] == sorted(everything, reverse=descending)
    dups = store.query_partition("demo", "heartbeat", DAY, status=IngestStatus.DUPLICATE)
    assert sorted((r.event_id, r.ingest_lag_ms) for r in dups.items) == sorted(
        [(eid(6), 64_800_000), (eid(7), 5000)]
    )


def test_bulk_reads_and_day_counts_of_a_legacy_stack(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    from backend.adapters.aws.investigate import AwsInvestigation

    store, _ = legacy
    scans = AwsInvestigation(store)
    lean = scans.scan_partition("demo", "heartbeat", DAY, accepted_only=True)
    assert [r.ingest_lag_ms for r in lean.items] == ACCEPTED_LAGS
    assert all(r.accepted for r in lean.items)
    counts = scans.day_counts_partition("demo", "heartbeat", "2025-12-27", "2025-12-30")
    assert [(c.day, c.accepted, c.late, c.duplicate) for c in counts] == [
        (DAY, 7, 0, 2),  # 8 rows: event 6's row is an acceptance and a duplicate
        ("2025-12-29", 1, 0, 0),
    ]
    by_entity = scans.day_counts_entity("user_123", DAY, "2025-12-29", grace_ms=0)
    assert [(c.day, c.accepted, c.duplicate) for c in by_entity] == [(DAY, 7, 2)]


def test_events_and_their_raw_bytes_are_found_by_id(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    store, _ = legacy
    accepted = store.get_accepted(eid(1))
    assert accepted is not None and accepted.event_time == "2025-12-28T10:00:00.000Z"
    assert store.get(accepted.s3_key) == b'{"legacy": 1}'
    assert "ingest_date=2025-12-28/hour=10" in accepted.s3_key
    assert [r.event_id for r in store.receipts(eid(1))] == [eid(1)]  # no GSI2 on this table: still found
    # Event 6: its row was overwritten by a duplicate; its bytes are under the first receipt's key.
    six = store.get_accepted(eid(6))
    assert six is not None and six.ingest_time == "2025-12-28T12:00:01.000Z"
    assert store.get(six.s3_key) == b'{"legacy": 6}'
    receipts = store.receipts(eid(6))
    assert [(r.status.value, r.ingest_time) for r in receipts] == [
        ("ACCEPTED", "2025-12-28T12:00:01.000Z"),
        ("DUPLICATE", "2025-12-29T06:00:00.000Z"),
    ]
    assert all(store.get(r.s3_key) == b'{"legacy": 6}' for r in receipts)
    seven = store.receipts(eid(7))
    assert [(r.status.value, r.event_time) for r in seven] == [
        ("ACCEPTED", "2025-12-28T14:00:00.000Z"),
        ("DUPLICATE", "2025-12-28T15:00:00.000Z"),
    ]
    assert store.get(seven[1].s3_key) == b'{"legacy": 7}'  # the duplicate had no bytes of its own
    stats = store.stats()
    assert (stats.accepted, stats.duplicate, stats.entities) == (8, 2, 1)


def test_an_expired_dedupe_item_leaves_a_duplicate_row_counted_not_dropped(
    legacy: tuple[AwsStore, dict[str, str]],
) -> None:
    from backend.adapters.aws.investigate import AwsInvestigation

    store, _ = legacy
    for n in (6, 7):  # the original kit's dedupe items expire after 30 days (TTL)
        store.ddb.delete_item(TableName=store.t.dedupe, Key={"event_id": {"S": eid(n)}})
    counts = AwsInvestigation(store).day_counts_partition("demo", "heartbeat", DAY, "2025-12-29")
    # 7's duplicate row is read with 7's accepted row; 6's row is taken as its (overwritten) acceptance.
    assert [(c.accepted, c.duplicate) for c in counts] == [(7, 2)]


def test_reading_writes_nothing(legacy: tuple[AwsStore, dict[str, str]]) -> None:
    from backend.adapters.aws.investigate import AwsInvestigation

    store, _ = legacy
    calls: list[str] = []
    for client in (store.ddb, store.s3):
        client.meta.events.register("before-call.*.*", lambda model, **_: calls.append(model.name))
    scans = AwsInvestigation(store)
    store.query_entity("user_123", *WINDOW, limit=100)
    store.query_partition("demo", "heartbeat", DAY, limit=100)
    scans.day_counts_entity("user_123", DAY, "2025-12-29")
    store.receipts(eid(6))
    store.get_accepted(eid(7))
    store.stats()
    reads = {"Query", "GetItem", "BatchGetItem", "Scan", "GetObject", "HeadObject", "ListObjectsV2"}
    assert calls and set(calls) <= reads, set(calls) - reads


def _cli(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AUDIT_TABLE", raising=False)
    out, err = io.StringIO(), io.StringIO()
    code = main([args[0], "--backend", "aws", "--region", REGION, *args[1:]], out, err)
    return code, out.getvalue(), err.getvalue()


def test_pik_events_reads_the_legacy_stack(
    legacy: tuple[AwsStore, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = legacy
    code, out, err = _cli(
        env, monkeypatch, "events", "--source", "demo", "--type", "heartbeat", "--day", DAY, "--desc",
        "--status", "ACCEPTED", "--json",
    )  # fmt: skip
    assert code == 0, err
    data = json.loads(out)
    assert [i["ingest_lag_ms"] for i in data["items"]] == sorted(ACCEPTED_LAGS, reverse=True)
    assert {i["status"] for i in data["items"]} == {"ACCEPTED"}
    assert data["next_cursor"] is None
    code, out, err = _cli(
        env, monkeypatch, "events", "--entity", "user_123", "--start", WINDOW[0], "--end", WINDOW[1],
        "--status", "ACCEPTED", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert [i["status"] for i in json.loads(out)["items"]] == ["ACCEPTED"] * 7


def test_pik_gaps_and_lag_count_each_event_once(
    legacy: tuple[AwsStore, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = legacy
    code, out, err = _cli(
        env, monkeypatch, "gaps", "--source", "demo", "--type", "heartbeat", "--start", DAY,
        "--end", "2025-12-29", "--json",
    )  # fmt: skip
    assert code == 0, err
    days = {d["day"]: d for d in json.loads(out)["days"]}
    assert (days[DAY]["events"], days[DAY]["duplicates"]) == (7, 2)
    code, out, err = _cli(
        env, monkeypatch, "lag", "--source", "demo", "--type", "heartbeat", "--day", DAY, "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert (report["count"], report["duplicates"], report["max_ms"]) == (7, 2, 1000)
    ids = [e["event_id"] for e in report["largest"]]
    assert len(ids) == len(set(ids)) == 7


def test_a_replay_dry_run_skips_duplicate_rows_as_duplicates(
    legacy: tuple[AwsStore, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = legacy
    code, out, err = _cli(env, monkeypatch, "replay", "--entity", "user_123", "--day", DAY, "--json")
    assert code == 0, err
    plan = json.loads(out)
    assert plan["would_send"] == 7
    assert plan["skipped"]["missing_raw"] == 0
    assert plan["skipped"]["duplicate"] == 2
    code, out, err = _cli(env, monkeypatch, "replay", "--entity", "user_123", "--day", DAY, "--execute")
    assert code == 1
    assert "AUDIT_TABLE is not set" in err and "create-table" in err


def legacy_aggregate(seconds: int, event_ids: list[str], entity: str = "user_123") -> dict[str, Any]:
    """An aggregates-table item exactly as the original kit's processor wrote it: keyed by unix seconds, a
    count of the day's events, no manifest (``sample_event_ids`` holds the first 10 ids only)."""
    inputs_hash = hashlib.sha256(json.dumps(sorted(event_ids)).encode()).hexdigest()
    return {
        "PK": f"ENTITY#{entity}",
        "SK": f"DAY#{DAY}#VER#{seconds}",
        "entity_id": entity,
        "day": DAY,
        "metric_name": "daily_event_count",
        "value": len(event_ids),
        "inputs_hash": inputs_hash,
        "computed_at": f"2025-12-2{9 if seconds > 1767000000 else 8}T0{seconds % 10}:00:00.123456Z",
        "window_start": f"{DAY}T00:00:00Z",
        "window_end": f"{DAY}T23:59:59Z",
        "input_count": len(event_ids),
        "sample_event_ids": event_ids[:10],
    }


def write_original_kit_aggregates(settings: AwsSettings, endpoint_url: str | None = None) -> None:
    """Two versions of user_123's 2025-12-28 count: 5 events, then 7 (events 6 and 7 came in later)."""
    table = session().resource("dynamodb", endpoint_url=endpoint_url).Table(settings.agg_table or "")
    first = [eid(n) for n in (4, 2, 1, 3, 8)]
    table.put_item(Item=legacy_aggregate(1766900001, first))
    table.put_item(Item=legacy_aggregate(1767000002, [*first, eid(6), eid(7)]))


def test_pik_aggregates_and_diff_without_an_audit_table_or_manifests(
    legacy: tuple[AwsStore, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, env = legacy
    settings = AwsSettings(agg_table=env["AGG_TABLE"], region=REGION)
    write_original_kit_aggregates(settings)
    code, out, err = _cli(env, monkeypatch, "aggregates", "--entity", "user_123", "--day", DAY, "--json")
    assert code == 0, err
    versions = json.loads(out)
    assert [(v["version"], v["value"]) for v in versions["items"]] == [(1, 5), (2, 7)]
    code, out, err = _cli(
        env,
        monkeypatch,
        "diff",
        "--entity",
        "user_123",
        "--day",
        DAY,
        "--metric",
        "daily_event_count",
        "--json",
    )
    assert code == 0, err
    d = json.loads(out)["diffs"][0]
    assert (d["delta"], d["manifests"], d["inputs_hash_changed"]) == (2, False, True)
    text = " ".join(d["explanation"])
    assert "no input manifest" in text and "inputs hash changed" in text
    assert "No replay is recorded for version 2" in text
    assert eid(6)[:12] in text and eid(7)[:12] in text  # the sample ids that appeared
    # The console's Aggregates pane says what such a diff knows: input counts and whether the inputs hash
    # changed, not "added 0 · removed 0" (which events changed is unknown without manifests).
    screen = Console(width=120, record=True, color_system=None)
    screen.print(diff_view(VersionDiff.model_validate(d)))
    shown = screen.export_text()
    assert "no input manifests (versions the original kit wrote): inputs 5 → 7, inputs hash changed" in shown
    assert "added 0" not in shown
    code, out, err = _cli(env, monkeypatch, "diff", "--entity", "user_123", "--day", DAY)
    assert code == 0, err
    assert "went from 5 to 7" in out and "no input manifest" in out, out
