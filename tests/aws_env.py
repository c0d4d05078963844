"""AWS test environment: moto in-process (or a moto server), fake credentials, the kit's resources.

Nothing here can reach real AWS: credentials are fake and every client is either patched by moto or
pointed at a server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import boto3
from moto import mock_aws

from backend.adapters.aws.clients import make_clients
from backend.adapters.aws.resources import (
    DEDUPE,
    EVENTS,
    MAX_RECEIVE_COUNT,
    REPLAY_DLQ,
    REPLAY_QUEUE,
    TABLES,
    VISIBILITY_TIMEOUT,
    TableSpec,
)
from backend.adapters.aws.store import AwsStore
from backend.kit import Kit, aws_kit
from backend.settings import AwsSettings, Settings

REGION = "us-east-1"
BUCKET = "pik-test-raw"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


def fake_credentials() -> Callable[[], None]:
    """Set fake credentials (and no profile) in the environment; returns a function that restores it."""
    saved = {k: os.environ.get(k) for k in [*FAKE_CREDENTIALS, "AWS_PROFILE", "AWS_ENDPOINT_URL"]}
    os.environ.update(FAKE_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_ENDPOINT_URL", None)

    def restore() -> None:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    return restore


_SESSION: boto3.session.Session | None = None


def session() -> boto3.session.Session:
    """One session for every test: botocore caches the service models it loads per session (loading them
    again for each test would cost ~0.1 s a client)."""
    global _SESSION
    if _SESSION is None:
        _SESSION = boto3.session.Session(region_name=REGION)
    return _SESSION


def create_resources(
    endpoint_url: str | None = None,
    prefix: str = "pik-test",
    tables: tuple[TableSpec, ...] = TABLES,
    *,
    queues_too: bool = True,
) -> AwsSettings:
    """The bucket, ``tables`` and (``queues_too``) the replay queue pair, as the template declares them."""
    sess = session()
    s3 = sess.client("s3", endpoint_url=endpoint_url)
    ddb = sess.client("dynamodb", endpoint_url=endpoint_url)
    bucket = f"{prefix}-raw"
    s3.create_bucket(Bucket=bucket)
    names: dict[str, str] = {}
    for spec in tables:
        name = f"{prefix}-{spec.default_name}"
        ddb.create_table(**spec.create_table_kwargs(name))
        names[spec.setting] = name
    queues: dict[str, str] = {}
    if queues_too:
        sqs = sess.client("sqs", endpoint_url=endpoint_url)
        dlq = sqs.create_queue(QueueName=f"{prefix}-{REPLAY_DLQ.default_name}")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        redrive = json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(MAX_RECEIVE_COUNT)})
        queue = sqs.create_queue(
            QueueName=f"{prefix}-{REPLAY_QUEUE.default_name}",
            Attributes={"RedrivePolicy": redrive, "VisibilityTimeout": str(VISIBILITY_TIMEOUT)},
        )["QueueUrl"]
        queues = {"replay_queue_url": queue, "replay_dlq_url": dlq}
    return AwsSettings(
        raw_bucket=bucket,
        events_table=names[EVENTS.setting],
        dedupe_table=names[DEDUPE.setting],
        agg_table=names.get("AGG_TABLE"),
        audit_table=names.get("AUDIT_TABLE"),
        region=REGION,
        endpoint_url=endpoint_url,
        **queues,
    )


def moto_store(endpoint_url: str | None = None, workers: int = 1) -> tuple[AwsStore, Callable[[], None]]:
    """A fresh AwsStore (bucket, events and dedupe tables only) and its closer; see :func:`moto_backend`."""
    store, _, close = moto_backend(endpoint_url, workers, full=False)
    return store, close


def moto_backend(
    endpoint_url: str | None = None,
    workers: int = 1,
    *,
    full: bool = True,
    lag_shards: int | None = None,
    entity_shards: int | None = None,
    rejection_shards: int | None = None,
) -> tuple[AwsStore, AwsSettings, Callable[[], None]]:
    """A fresh AwsStore on moto (in-process unless ``endpoint_url`` names a moto server); and its closer.

    moto is not safe for concurrent DynamoDB transactions (a failed one restores a snapshot of every table,
    undoing writes made meanwhile), so the store makes its calls one at a time unless told otherwise."""
    restore = fake_credentials()
    mock: Any = None
    if endpoint_url is None:
        mock = mock_aws()
        mock.start()
    prefix = f"pik-{os.urandom(4).hex()}"
    settings = (
        create_resources(endpoint_url, prefix)
        if full
        else create_resources(endpoint_url, prefix, (EVENTS, DEDUPE), queues_too=False)
    )
    store = AwsStore(
        make_clients(settings, session()),
        settings.raw_bucket or "",
        settings.events_table or "",
        settings.dedupe_table or "",
        workers=workers,
        lag_shards=lag_shards,
        entity_shards=entity_shards,
        rejection_shards=rejection_shards,
    )

    def close() -> None:
        store.close()
        if mock is not None:
            mock.stop()
        restore()

    return store, settings, close


def moto_kit(store: AwsStore, settings: AwsSettings, close: Callable[[], None]) -> Kit:
    """The kit over a :func:`moto_backend` (its ports share the store's clients); closing calls ``close``."""
    return aws_kit(store, settings, settings=Settings(backend="aws"), close=close)
