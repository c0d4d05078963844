"""How many shards a stack's write-heavy keys have, and where a reader finds out.

The lag index ``GSI1`` is keyed by (source, type, day); at 10,000 events/s per source/type one key would
take every write of a day, and DynamoDB gives one partition about 1,000 writes/s. So a stack spreads each
day over N keys (``...#DAY#<day>#S#<n>``, ``n`` a stable hash of the event id, see
:func:`backend.adapters.aws.event_items.lag_shard`) and an ordered read merges the N queries.

N is a per-stack setting, ``LAG_SHARDS`` (the template's ``LagShards`` parameter, passed to the functions
and given back as a stack output). The stack also records it in its events table, the item
``PK=STACK, SK=LAG_SHARDS``, written by ``pik aws init`` and by the first write of a process that has
``LAG_SHARDS`` > 1; a writer whose N differs from the recorded one is refused, since readers would miss
the shards beyond the smaller N. A reader takes the recorded N, else the setting, else 1: a stack the
original kit populated has no record and is read exactly as before. Readers always include the unsharded
key as well, so days written before a stack was sharded stay readable.

The same mechanism shards the events table's other write-heavy keys (:data:`ENTITY`, :data:`REJECTION`):
an entity's receipts (``ENTITY_SHARDS``, one hot entity would otherwise take every write it sends on one
key) and the quarantine (``REJECTION_SHARDS``). Each kind has its setting, its record
(``PK=STACK, SK=<setting>``) and its refusal; all records are one item collection, read by one Query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.dynamo import num_attr, query, str_attr, value_of
from backend.adapters.aws.errors import aws, error_code, store_error
from backend.adapters.aws.event_items import LAG_SHARDS_SK, MAX_LAG_SHARDS, STACK_PK
from backend.errors import StoreError

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

# One partition takes about 1,000 writes/s; the design keeps every key at half of it.
PARTITION_WRITES_PER_S = 1000
KEY_BUDGET = 0.5
# The rate the template's default is sized for: 10,000 events/s per source/type, with a diurnal peak 3x.
DEFAULT_RATE_PER_S = 10_000
DEFAULT_PEAK_FACTOR = 3.0


def shards_for(rate_per_s: float, peak_factor: float = DEFAULT_PEAK_FACTOR) -> int:
    """The lag shards that keep one (source, type, day) key at or under half a partition's writes when
    the source/type sends ``rate_per_s`` events/s on average and ``peak_factor`` times that at its peak."""
    if rate_per_s < 0 or peak_factor < 1:
        raise ValueError("the rate must be >= 0 and the peak factor >= 1")
    need = math.ceil(rate_per_s * peak_factor / (PARTITION_WRITES_PER_S * KEY_BUDGET))
    return min(MAX_LAG_SHARDS, max(1, need))


DEFAULT_LAG_SHARDS = shards_for(DEFAULT_RATE_PER_S)  # 60


@dataclass(frozen=True)
class ShardKind:
    """One sharded key of the events table: its setting (also the SK of its record) and its name."""

    setting: str
    noun: str


LAG = ShardKind(LAG_SHARDS_SK, "lag shards")
ENTITY = ShardKind("ENTITY_SHARDS", "entity shards")
REJECTION = ShardKind("REJECTION_SHARDS", "rejection shards")
KINDS = (LAG, ENTITY, REJECTION)

# What the template sizes the entity and rejection keys for (docs/aws.md, "Scale"): an entity sending 5%
# of 100,000 events/s, and rejections of up to 1% of it, each with a 3x peak.
DEFAULT_ENTITY_SHARDS = shards_for(5_000)  # 30
DEFAULT_REJECTION_SHARDS = shards_for(1_000)  # 6


def _key(kind: ShardKind) -> dict[str, dict[str, str]]:
    return {"PK": str_attr(STACK_PK), "SK": str_attr(kind.setting)}


def recorded_all(ddb: DynamoDBClient, events_table: str) -> dict[str, int]:
    """Every shard count the stack records, by setting (one Query of the ``STACK`` items; none recorded:
    an unsharded stack, as the original kit's and earlier ones are)."""
    items = query(
        ddb,
        "read the stack's shard counts",
        TableName=events_table,
        KeyConditionExpression="PK = :pk",
        ExpressionAttributeValues={":pk": str_attr(STACK_PK)},
        ConsistentRead=True,
    )
    return {str(value_of(i, "SK")): int(value_of(i, "shards")) for i in items if value_of(i, "shards")}


def recorded_shards(ddb: DynamoDBClient, events_table: str, kind: ShardKind = LAG) -> int | None:
    """N of ``kind`` as the stack records it (None: no record, that key is unsharded)."""
    with aws(f"read the stack's {kind.noun}"):
        item = ddb.get_item(TableName=events_table, Key=_key(kind), ConsistentRead=True).get("Item")
    if not item:
        return None
    return int(value_of(item, "shards"))


def record_shards(ddb: DynamoDBClient, events_table: str, shards: int, kind: ShardKind = LAG) -> None:
    """Record N of ``kind`` in the stack, unless it records another N (then StoreError: the stack's shards
    cannot change under its readers)."""
    try:
        ddb.put_item(
            TableName=events_table,
            Item={**_key(kind), "shards": num_attr(shards)},
            ConditionExpression="attribute_not_exists(PK) OR shards = :n",
            ExpressionAttributeValues={":n": num_attr(shards)},
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            recorded = recorded_shards(ddb, events_table, kind)
            raise StoreError(
                f"{kind.setting} is {shards} but the stack's events table records {recorded} "
                f"{kind.noun}; set {kind.setting}={recorded}"
            ) from None
        raise store_error(f"record the stack's {kind.noun}", exc) from None
    except BotoCoreError as exc:
        raise store_error(f"record the stack's {kind.noun}", exc) from None
