"""The AWS adapter's event store: raw bytes in S3, receipts, rejections and the lag index in DynamoDB.

:class:`AwsStore` is the one object the composition root (``backend.kit``) opens for a stack: the S3
raw store (``s3raw``) and the DynamoDB event index (``index_writes``, ``index_reads``) on one shared
connection (``connection``). The keys and items are described in ``event_items``; reading a stack the
original kit populated, in ``legacy``.

What an event costs in API calls (``docs/aws.md``, counted by ``tests/aws/test_call_budget.py``):

* accepted, first time: one S3 ``PutObject`` (``IfNoneMatch='*'``) and one ``TransactWriteItems`` (the
  dedupe item and the receipt, both conditional) — 2 calls;
* duplicate with the accepted bytes: the refused ``PutObject`` and one ``TransactWriteItems`` (a condition
  on the dedupe item that also checks the bytes, and the receipt) — 2 calls;
* duplicate under an idempotency key whose event day differs (its raw key is new): 3 calls;
* duplicate whose bytes differ from the accepted ones: 4 calls (both byte strings are kept; S3's refusal
  does not say what the key holds, so the bytes go under a ``receipts/`` key once the index says so);
* the retry of an event whose earlier attempt stored its bytes and failed before the index: 4 calls.
"""

from __future__ import annotations

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.clients import make_clients
from backend.adapters.aws.errors import store_error
from backend.adapters.aws.event_items import MAX_LAG_SHARDS
from backend.adapters.aws.index_reads import EventIndexReads
from backend.adapters.aws.index_writes import EventIndexWrites
from backend.adapters.aws.ledger import IngestLedgerReads
from backend.adapters.aws.s3raw import S3RawStore
from backend.errors import StoreError
from backend.settings import AwsSettings

AWS_WRITERS = 16
ENDPOINT_WRITERS = 1


class AwsStore(S3RawStore, EventIndexWrites, EventIndexReads, IngestLedgerReads):
    """:class:`backend.ports.RawStore`, :class:`backend.ports.EventIndex` and
    :class:`backend.ports.IngestLedger` on S3 and DynamoDB.

    Built as ``AwsStore(clients, bucket, events_table, dedupe_table, workers=16)`` or from settings; one
    set of clients and one worker pool serve both stores (``close`` stops the pool)."""

    @classmethod
    def from_settings(cls, settings: AwsSettings) -> AwsStore:
        missing = settings.missing("raw_bucket", "events_table", "dedupe_table")
        if missing:
            raise StoreError("the AWS backend needs " + ", ".join(missing) + " (or --stack NAME)")
        assert settings.raw_bucket and settings.events_table and settings.dedupe_table
        try:
            clients = make_clients(settings)
        except (BotoCoreError, ClientError) as exc:
            raise store_error("connect to AWS", exc) from None
        # On AWS, 16 writers (backing off when the service does). On another endpoint, one: moto's
        # DynamoDB transactions are not thread-safe (a cancelled one restores a snapshot of every table,
        # undoing writes other threads made meanwhile, and a snapshot taken during a write fails with 500).
        workers = AWS_WRITERS if settings.endpoint_url is None else ENDPOINT_WRITERS
        # A stack output arrives as text (``--stack``): the setting's bounds are checked here too.
        return cls(
            clients,
            settings.raw_bucket,
            settings.events_table,
            settings.dedupe_table,
            workers=workers,
            lag_shards=_shards(settings.lag_shards),
            entity_shards=_shards(settings.entity_shards, "ENTITY_SHARDS"),
            rejection_shards=_shards(settings.rejection_shards, "REJECTION_SHARDS"),
        )


def _shards(value: object, name: str = "LAG_SHARDS") -> int | None:
    if value is None or value == "":
        return None
    try:
        shards = int(str(value))
    except ValueError:
        shards = 0
    if not 1 <= shards <= MAX_LAG_SHARDS:
        raise StoreError(f"{name} must be a whole number from 1 to {MAX_LAG_SHARDS}, got {value!r}")
    return shards
