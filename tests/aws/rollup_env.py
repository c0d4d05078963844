"""A moto stack whose events table has a stream, and the stream's records read back as Lambda gets them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from backend.adapters.aws.event_items import is_receipt_pk
from backend.adapters.aws.investigate import AwsInvestigation
from backend.adapters.aws.rollup_backfill import AwsRollups
from backend.adapters.aws.store import AwsStore
from backend.services.ingest import IngestService
from backend.times import FixedClock
from tests.aws_env import moto_backend, session

STREAMS_ENDPOINT = "https://streams.dynamodb.us-east-1.amazonaws.com"
EARLY = datetime(2020, 1, 1, tzinfo=UTC)


@dataclass
class StreamStack:
    """A moto stack (in-process) with the stream on; ``stream()`` returns the records not read before."""

    store: AwsStore
    close: Any
    arn: str
    read: dict[str, str] = field(default_factory=dict)  # shard -> next iterator

    @property
    def table(self) -> str:
        return self.store.t.events

    def rollups(self, clock_at: datetime = EARLY) -> AwsRollups:
        return AwsRollups(self.store.ddb, self.table, clock=FixedClock(clock_at))

    def investigation(self, *, rollups: bool) -> AwsInvestigation:
        scans = AwsInvestigation(self.store)
        if not rollups:
            scans._rollups._ready = False
        return scans

    def stream(self) -> list[dict[str, Any]]:
        # A fresh iterator each time, skipping what was read: moto replaces a table's shard when a cancelled
        # transaction restores its snapshot, and an old iterator would go on reading the replaced one.
        client = session().client("dynamodbstreams", endpoint_url=STREAMS_ENDPOINT)
        shards = client.describe_stream(StreamArn=self.arn)["StreamDescription"]["Shards"]
        out: list[dict[str, Any]] = []
        for shard in shards:
            sid = shard["ShardId"]
            last = int(self.read.get(sid, "0"))
            it = client.get_shard_iterator(StreamArn=self.arn, ShardId=sid, ShardIteratorType="TRIM_HORIZON")[
                "ShardIterator"
            ]
            while it:
                records = client.get_records(ShardIterator=it, Limit=1000)
                page = records.get("Records", [])
                out += [
                    {**r, "eventSourceARN": self.arn}
                    for r in page
                    if int(r["dynamodb"]["SequenceNumber"]) > last
                ]
                if not page:
                    break
                it = records.get("NextShardIterator")
            if out:
                self.read[sid] = str(max(int(r["dynamodb"]["SequenceNumber"]) for r in out))
        for r in out:  # as Lambda hands them over: JSON, not boto3's datetimes
            body = r["dynamodb"]
            if isinstance(body.get("ApproximateCreationDateTime"), datetime):
                body["ApproximateCreationDateTime"] = body["ApproximateCreationDateTime"].timestamp()
        return json.loads(json.dumps(out, default=str))


def stream_stack(lag_shards: int = 1, entity_shards: int = 1, rejection_shards: int = 1) -> StreamStack:
    store, _settings, close = moto_backend(
        full=False, lag_shards=lag_shards, entity_shards=entity_shards, rejection_shards=rejection_shards
    )
    ddb = store.ddb
    answer = ddb.update_table(
        TableName=store.t.events, StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_IMAGE"}
    )
    arn = answer["TableDescription"]["LatestStreamArn"]
    return StreamStack(store, close, arn)


def event(source: str, entity: str, event_time: str, n: int, etype: str = "heartbeat") -> bytes:
    return json.dumps(
        {
            "source": source,
            "event_type": etype,
            "entity_id": entity,
            "event_time": event_time,
            "payload": {"n": n},
        }
    ).encode()


def ingest_at(store: AwsStore, body: bytes, ingest_time: datetime) -> str:
    """Ingest ``body`` as if it arrived at ``ingest_time``; its status."""
    service = IngestService(store, store, FixedClock(ingest_time))
    return str(service.ingest(body).status)


def times(day: str, hour: int, minute: int, lag_ms: int) -> tuple[str, datetime]:
    """An event time in ``day`` and the ingest time ``lag_ms`` later."""
    start = datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(hours=hour, minutes=minute)
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), start + timedelta(milliseconds=lag_ms)


def chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def records_of(store: AwsStore) -> list[dict[str, Any]]:
    """INSERT records of every receipt in the table, in ingest order, as a NEW_IMAGE stream carries them
    (for a stack without a stream; ``bench/aws_rollups.py`` does the same)."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": store.t.events}
    while True:
        page = store.ddb.scan(**kwargs)
        items += [i for i in page["Items"] if is_receipt_pk(i["PK"]["S"])]
        if not page.get("LastEvaluatedKey"):
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    items.sort(key=lambda i: (i["ingest_time"]["S"], i["SK"]["S"]))
    return [
        {
            "eventID": f"{n:032x}",
            "eventName": "INSERT",
            "eventSource": "aws:dynamodb",
            "dynamodb": {
                "Keys": {"PK": i["PK"], "SK": i["SK"]},
                "NewImage": i,
                "SequenceNumber": str(10**21 + n),
                "StreamViewType": "NEW_IMAGE",
            },
        }
        for n, i in enumerate(items)
    ]
