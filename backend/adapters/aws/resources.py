"""The AWS resources the kit uses, defined once: table key schemas and indexes, the queue pair, and the
names by which settings, environment variables and CloudFormation outputs refer to them.

``backend/template.yaml`` (SAM), ``pik aws init`` and the adapter all follow these definitions, and a test
checks that the template creates exactly them. Attribute names and key shapes are the original kit's where
it had them (``PK``/``SK``, ``GSI1``, the dedupe table's ``event_id``), so the kit reads a stack the original
kit populated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Gsi:
    name: str
    hash_key: str
    range_key: str
    # The non-key attributes the index copies (INCLUDE); None: every attribute (ALL).
    attributes: tuple[str, ...] | None = None

    def projection(self) -> dict[str, Any]:
        if self.attributes is None:
            return {"ProjectionType": "ALL"}
        return {"ProjectionType": "INCLUDE", "NonKeyAttributes": list(self.attributes)}


@dataclass(frozen=True)
class TableSpec:
    """One DynamoDB table: its logical id in the template, its setting, its keys and indexes."""

    logical_id: str  # resource id in template.yaml
    setting: str  # environment variable that names it (the seed's names)
    output: str  # CloudFormation output holding its name
    default_name: str  # name used by `pik aws init` (prefixed) when creating it on an endpoint
    hash_key: str
    range_key: str | None = None
    gsis: tuple[Gsi, ...] = field(default_factory=tuple)

    def key_schema(self) -> list[dict[str, str]]:
        schema = [{"AttributeName": self.hash_key, "KeyType": "HASH"}]
        if self.range_key:
            schema.append({"AttributeName": self.range_key, "KeyType": "RANGE"})
        return schema

    def attribute_definitions(self) -> list[dict[str, str]]:
        names = [self.hash_key] + ([self.range_key] if self.range_key else [])
        for gsi in self.gsis:
            names += [gsi.hash_key, gsi.range_key]
        seen: list[str] = []
        for name in names:
            if name not in seen:
                seen.append(name)
        return [{"AttributeName": n, "AttributeType": "S"} for n in seen]

    def create_table_kwargs(self, name: str) -> dict[str, Any]:
        """Arguments for DynamoDB ``CreateTable`` (on-demand billing, as the template declares)."""
        kwargs: dict[str, Any] = {
            "TableName": name,
            "KeySchema": self.key_schema(),
            "AttributeDefinitions": self.attribute_definitions(),
            "BillingMode": "PAY_PER_REQUEST",
        }
        if self.gsis:
            kwargs["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": g.name,
                    "KeySchema": [
                        {"AttributeName": g.hash_key, "KeyType": "HASH"},
                        {"AttributeName": g.range_key, "KeyType": "RANGE"},
                    ],
                    "Projection": g.projection(),
                }
                for g in self.gsis
            ]
        return kwargs


# Every attribute a receipt item holds (ours and the original kit's) but its keys and its carried
# ``payload`` (backend.adapters.aws.event_items.PAYLOAD): what the two indexes copy. Leaving the payload out
# keeps an index item the size it was, so a carried payload costs write units in the base table only
# (docs/aws.md, "Payloads in the index"). A stack deployed with ALL (the template's IndexProjection=ALL)
# reads the same.
INDEX_ATTRIBUTES: tuple[str, ...] = (
    "event_id", "receipt", "status", "source", "event_type", "entity_id", "event_time", "ingest_time",
    "ingest_lag_ms", "clock_skew", "payload_sha", "day", "hour", "s3_key", "s3_bucket", "raw_sha",
    "raw_size", "idempotency_key", "origin", "line", "delivery",
)  # fmt: skip

# The lag index (the original kit's GSI1, with the lag zero-padded) and the receipts of one event id.
LAG_INDEX = Gsi("GSI1", "GSI1PK", "GSI1SK", INDEX_ATTRIBUTES)
RECEIPTS_INDEX = Gsi("GSI2", "GSI2PK", "GSI2SK", INDEX_ATTRIBUTES)

EVENTS = TableSpec(
    logical_id="EventsTable",
    setting="EVENTS_TABLE",
    output="EventsTableName",
    default_name="events",
    hash_key="PK",
    range_key="SK",
    gsis=(LAG_INDEX, RECEIPTS_INDEX),
)
DEDUPE = TableSpec(
    logical_id="DedupeTable",
    setting="DEDUPE_TABLE",
    output="DedupeTableName",
    default_name="dedupe",
    hash_key="event_id",
)
AGGREGATES = TableSpec(
    logical_id="AggregatesTable",
    setting="AGG_TABLE",
    output="AggregatesTableName",
    default_name="aggregates",
    hash_key="PK",
    range_key="SK",
)
AUDIT = TableSpec(
    logical_id="AuditTable",
    setting="AUDIT_TABLE",
    output="AuditTableName",
    default_name="audit",
    hash_key="PK",
    range_key="SK",
)
TABLES: tuple[TableSpec, ...] = (EVENTS, DEDUPE, AGGREGATES, AUDIT)


@dataclass(frozen=True)
class NamedResource:
    logical_id: str
    setting: str
    output: str
    default_name: str


RAW_BUCKET = NamedResource("RawBucket", "RAW_BUCKET", "RawBucketName", "raw")
REPLAY_QUEUE = NamedResource("ReplayQueue", "REPLAY_QUEUE_URL", "ReplayQueueUrl", "replay")
REPLAY_DLQ = NamedResource(
    "ReplayDeadLetterQueue", "REPLAY_DLQ_URL", "ReplayDeadLetterQueueUrl", "replay-dlq"
)

# After this many failed receives a replay message moves to the dead-letter queue.
MAX_RECEIVE_COUNT = 5
# Seconds a received message stays invisible to other processors (>= 6x the processor's timeout).
VISIBILITY_TIMEOUT = 180

# The lag index's shard count per (source, type, day): a template parameter, passed to every function and
# given back as an output (backend.adapters.aws.lag_shards).
LAG_SHARDS = "LAG_SHARDS"
LAG_SHARDS_OUTPUT = "LagShards"
# The same for the entity keys and the quarantine of the events table.
ENTITY_SHARDS = "ENTITY_SHARDS"
ENTITY_SHARDS_OUTPUT = "EntityShards"
REJECTION_SHARDS = "REJECTION_SHARDS"
REJECTION_SHARDS_OUTPUT = "RejectionShards"

# Every setting the functions and the CLI read, in the order `pik aws init` prints them.
SETTINGS: tuple[str, ...] = (
    RAW_BUCKET.setting,
    EVENTS.setting,
    DEDUPE.setting,
    AGGREGATES.setting,
    AUDIT.setting,
    REPLAY_QUEUE.setting,
    REPLAY_DLQ.setting,
    LAG_SHARDS,
    ENTITY_SHARDS,
    REJECTION_SHARDS,
)
# CloudFormation output name -> setting, for `--stack NAME`.
OUTPUT_TO_SETTING: dict[str, str] = {
    RAW_BUCKET.output: RAW_BUCKET.setting,
    **{t.output: t.setting for t in TABLES},
    REPLAY_QUEUE.output: REPLAY_QUEUE.setting,
    REPLAY_DLQ.output: REPLAY_DLQ.setting,
    LAG_SHARDS_OUTPUT: LAG_SHARDS,
    ENTITY_SHARDS_OUTPUT: ENTITY_SHARDS,
    REJECTION_SHARDS_OUTPUT: REJECTION_SHARDS,
}
