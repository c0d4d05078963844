"""How many shards a stack's lag index has, and where a reader finds out.

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
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.dynamo import num_attr, str_attr, value_of
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


def _key() -> dict[str, dict[str, str]]:
    return {"PK": str_attr(STACK_PK), "SK": str_attr(LAG_SHARDS_SK)}


def recorded_shards(ddb: DynamoDBClient, events_table: str) -> int | None:
    """N as the stack records it (None: no record, an unsharded stack)."""
    with aws("read the stack's lag shards"):
        item = ddb.get_item(TableName=events_table, Key=_key(), ConsistentRead=True).get("Item")
    if not item:
        return None
    return int(value_of(item, "shards"))


def record_shards(ddb: DynamoDBClient, events_table: str, shards: int) -> None:
    """Record N in the stack, unless it records another N (then StoreError: the stack's shards cannot
    change under its readers)."""
    try:
        ddb.put_item(
            TableName=events_table,
            Item={**_key(), "shards": num_attr(shards)},
            ConditionExpression="attribute_not_exists(PK) OR shards = :n",
            ExpressionAttributeValues={":n": num_attr(shards)},
        )
    except ClientError as exc:
        if error_code(exc) == "ConditionalCheckFailedException":
            recorded = recorded_shards(ddb, events_table)
            raise StoreError(
                f"LAG_SHARDS is {shards} but the stack's events table records {recorded} lag shards; "
                f"set LAG_SHARDS={recorded}"
            ) from None
        raise store_error("record the stack's lag shards", exc) from None
    except BotoCoreError as exc:
        raise store_error("record the stack's lag shards", exc) from None
