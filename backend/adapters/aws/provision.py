"""Creates the template's resources on an AWS-compatible endpoint (moto server, LocalStack): ``pik aws init``.

On AWS itself the stack is deployed with SAM (``backend/template.yaml``); this is for endpoints that have no
CloudFormation worth the name. It creates what the adapter and the CLI use, from the same definitions
(``resources.py``): the raw bucket, the four tables, the replay queue and its dead-letter queue.

Idempotent: what exists already is checked and reused (a resource of the same name but another shape is an
error, not something to change), what is missing is created. Every failure is a :class:`StoreError` whose
text is one sentence for the terminal.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError, NoCredentialsError

from backend.adapters.aws.clients import CLIENT_CONFIG
from backend.adapters.aws.lag_shards import (
    ENTITY,
    KINDS,
    LAG,
    REJECTION,
    ShardKind,
    record_shards,
    recorded_shards,
)
from backend.adapters.aws.resources import (
    AGGREGATES,
    EVENTS,
    MAX_RECEIVE_COUNT,
    RAW_BUCKET,
    REPLAY_DLQ,
    REPLAY_QUEUE,
    SETTINGS,
    TABLES,
    VISIBILITY_TIMEOUT,
    TableSpec,
)
from backend.adapters.aws.window_heads import WindowHeads, backfill_heads
from backend.errors import InvalidRequest, StoreError
from backend.settings import AwsSettings

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sqs.literals import QueueAttributeNameType

    QueueAttributes = dict[QueueAttributeNameType, str]

DEFAULT_PREFIX = "pik"
# Bucket names are the strictest of the three (lowercase, digits, hyphens); 40 characters leave room for
# the longest suffix ("-replay-dlq") within every service's limit.
PREFIX_PATTERN = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?")
# SQS keeps a message at most 14 days; the dead-letter queue should keep failures as long as it can.
RETENTION_SECONDS = 14 * 24 * 3600

# A local endpoint answers at once or not at all: fail fast instead of retrying for a minute.
PROVISION_CONFIG = CLIENT_CONFIG.merge(
    Config(retries={"mode": "standard", "max_attempts": 2}, connect_timeout=3, read_timeout=30)
)

# Error codes an endpoint gives for an API it does not implement (moto and LocalStack lack a few).
_UNSUPPORTED = {"NotImplemented", "NotImplementedError", "UnsupportedOperation", "MethodNotAllowed"}


@dataclass(frozen=True)
class Step:
    """One resource that ``provision`` made sure of: created now, or found and reused."""

    kind: str  # "bucket", "table" or "queue"
    name: str
    setting: str  # the environment name that holds its name (or URL)
    value: str  # that name or URL
    created: bool
    notes: tuple[str, ...] = field(default_factory=tuple)
    """What could not be applied because the endpoint does not support it (e.g. a public access block)."""


def validate_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise InvalidRequest(
            f"--prefix {prefix!r} cannot name a bucket: use 1-40 lowercase letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )
    return prefix


def resource_names(prefix: str) -> dict[str, str]:
    """Setting -> the name ``provision`` gives that resource under ``prefix``, in ``SETTINGS`` order."""
    validate_prefix(prefix)
    named = {RAW_BUCKET.setting: RAW_BUCKET.default_name, REPLAY_QUEUE.setting: REPLAY_QUEUE.default_name}
    named[REPLAY_DLQ.setting] = REPLAY_DLQ.default_name
    named.update({t.setting: t.default_name for t in TABLES})
    return {setting: f"{prefix}-{named[setting]}" for setting in SETTINGS if setting in named}


def provision(
    settings: AwsSettings,
    prefix: str = DEFAULT_PREFIX,
    *,
    session: boto3.session.Session | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> dict[str, str]:
    """Make sure the kit's resources exist on ``settings.endpoint_url``; returns setting -> value (bucket and
    table names, queue URLs) in ``SETTINGS`` order, ready to be exported.

    Refuses to run without an endpoint: on AWS, deploy ``backend/template.yaml`` with SAM instead.
    ``on_step`` is called once per resource as soon as it is done.
    """
    url = settings.endpoint_url
    if not url:
        raise InvalidRequest(
            "provisioning is for an AWS-compatible endpoint (moto server, LocalStack); "
            "on AWS deploy backend/template.yaml with `sam deploy`"
        )
    names = resource_names(prefix)
    session = session or boto3.session.Session(profile_name=settings.profile, region_name=settings.region)
    region = settings.region or session.region_name or "us-east-1"

    where: dict[str, Any] = {"endpoint_url": url, "region_name": region, "config": PROVISION_CONFIG}
    report = on_step or (lambda step: None)
    with _aws("open clients", url):
        s3 = session.client("s3", **where)
        ddb = session.client("dynamodb", **where)
        sqs = session.client("sqs", **where)

    steps = [_bucket(s3, names[RAW_BUCKET.setting], region, url)]
    report(steps[-1])
    for spec in TABLES:
        steps.append(_table(ddb, spec, names[spec.setting], url))
        report(steps[-1])
    dlq = _queue(sqs, REPLAY_DLQ.setting, names[REPLAY_DLQ.setting], _dlq_attributes(), url)
    report(dlq)
    dlq_arn = _queue_arn(sqs, dlq.value, url)
    queue = _queue(sqs, REPLAY_QUEUE.setting, names[REPLAY_QUEUE.setting], _queue_attributes(dlq_arn), url)
    report(queue)
    steps += [dlq, queue]
    values = {step.setting: step.value for step in steps}
    wanted = {
        LAG.setting: settings.lag_shards,
        ENTITY.setting: settings.entity_shards,
        REJECTION.setting: settings.rejection_shards,
    }
    for kind in KINDS:
        values[kind.setting] = str(_shards(ddb, names[EVENTS.setting], kind, wanted[kind.setting], url))
    # The aggregates table keeps a head item per window with versions (backend.adapters.aws.window_heads):
    # a new table is marked at once; one with versions gets their heads (a Scan, once).
    heads = WindowHeads(ddb, names[AGGREGATES.setting])
    with _aws("mark the aggregates table's window heads", url):
        if not heads.kept():
            backfill_heads(ddb, names[AGGREGATES.setting])
    return {setting: values[setting] for setting in SETTINGS}


def _shards(ddb: DynamoDBClient, events_table: str, kind: ShardKind, wanted: int | None, url: str) -> int:
    """The stack's shards of ``kind``: its setting (``LAG_SHARDS``...) if set (recorded in the events table;
    a stack that records another count refuses it), else what the stack records, else 1 (an endpoint for
    development takes no production rate; the template's defaults are sized for one, docs/aws.md "Scale")."""
    with _aws(f"read the stack's {kind.noun}", url):
        recorded = recorded_shards(ddb, events_table, kind)
    shards = wanted or recorded or 1
    if shards > 1:
        with _aws(f"record the stack's {kind.noun}", url):
            record_shards(ddb, events_table, shards, kind)
    return shards


# -- errors -------------------------------------------------------------------------------------------------


@contextmanager
def _aws(what: str, url: str) -> Iterator[None]:
    """Turns botocore's errors into one-line StoreErrors that say what was being done, and where."""
    try:
        yield
    except EndpointConnectionError:
        raise StoreError(f"cannot reach {url} (to {what}): is the server running there?") from None
    except NoCredentialsError:
        raise StoreError(
            f"no AWS credentials to {what} on {url}; an endpoint such as moto accepts any: "
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "error")
        message = " ".join(str(error.get("Message") or "").split())
        raise StoreError(f"cannot {what} on {url}: {code}{': ' + message if message else ''}") from None
    except BotoCoreError as exc:
        raise StoreError(f"cannot {what} on {url}: {' '.join(str(exc).split())}") from None


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _unsupported(exc: ClientError) -> bool:
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return _code(exc) in _UNSUPPORTED or status == 501


# -- bucket -------------------------------------------------------------------------------------------------


def _bucket(s3: S3Client, name: str, region: str, url: str) -> Step:
    created = False
    with _aws(f"look up bucket {name}", url):
        try:
            s3.head_bucket(Bucket=name)
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise
            created = True
    if created:
        kwargs: dict[str, Any] = {"Bucket": name}
        if region != "us-east-1":  # the one region that refuses a location constraint
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
        with _aws(f"create bucket {name}", url):
            try:
                s3.create_bucket(**kwargs)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":  # created meanwhile by another init
                    raise
                created = False
    # Applied to a reused bucket too: each call states the whole setting, so repeating it changes nothing.
    # No TLS-only bucket policy here, unlike the template: local endpoints are usually plain HTTP.
    hardening: list[tuple[str, Callable[[], Any]]] = [
        (
            "default encryption (SSE-S3)",
            lambda: s3.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={
                    "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
            ),
        ),
        (
            "public access block",
            lambda: s3.put_public_access_block(
                Bucket=name,
                PublicAccessBlockConfiguration={
                    "BlockPublicAcls": True,
                    "IgnorePublicAcls": True,
                    "BlockPublicPolicy": True,
                    "RestrictPublicBuckets": True,
                },
            ),
        ),
        (
            "versioning",
            lambda: s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"}),
        ),
    ]
    notes: list[str] = []
    for label, call in hardening:
        with _aws(f"set the {label} of bucket {name}", url):
            try:
                call()
            except ClientError as exc:
                if not _unsupported(exc):
                    raise
                notes.append(f"{label} not supported by the endpoint")
    return Step("bucket", name, RAW_BUCKET.setting, name, created, tuple(notes))


# -- tables -------------------------------------------------------------------------------------------------


def _shape(description: dict[str, Any]) -> tuple[Any, ...]:
    """What must match for an existing table to be reused: its keys and its indexes' keys."""
    indexes = sorted(
        (g["IndexName"], tuple((k["AttributeName"], k["KeyType"]) for k in g["KeySchema"]))
        for g in description.get("GlobalSecondaryIndexes", [])
    )
    keys = tuple((k["AttributeName"], k["KeyType"]) for k in description["KeySchema"])
    return keys, tuple(indexes)


def _describe(shape: tuple[Any, ...]) -> str:
    keys, indexes = shape
    text = ", ".join(f"{name} ({kind})" for name, kind in keys)
    for index, index_keys in indexes:
        text += f"; {index}: " + ", ".join(f"{name} ({kind})" for name, kind in index_keys)
    return text


def _table(ddb: DynamoDBClient, spec: TableSpec, name: str, url: str) -> Step:
    wanted = spec.create_table_kwargs(name)
    created = False
    with _aws(f"look up table {name}", url):
        try:
            found: dict[str, Any] = dict(ddb.describe_table(TableName=name)["Table"])
        except ClientError as exc:
            if _code(exc) != "ResourceNotFoundException":
                raise
            created = True
    if created:
        with _aws(f"create table {name}", url):
            try:
                ddb.create_table(**wanted)
            except ClientError as exc:
                if _code(exc) != "ResourceInUseException":  # created meanwhile by another init
                    raise
                created = False
            ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
            found = dict(ddb.describe_table(TableName=name)["Table"])
    if _shape(found) != _shape(wanted):
        raise StoreError(
            f"table {name} on {url} exists with other keys ({_describe(_shape(found))}) than the kit's "
            f"{spec.setting} table needs ({_describe(_shape(wanted))}); choose another --prefix"
        )
    notes: list[str] = []
    with _aws(f"turn on point-in-time recovery of table {name}", url):
        try:
            ddb.update_continuous_backups(
                TableName=name, PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True}
            )
        except ClientError as exc:
            if not _unsupported(exc):
                raise
            notes.append("point-in-time recovery not supported by the endpoint")
    return Step("table", name, spec.setting, name, created, tuple(notes))


# -- queues -------------------------------------------------------------------------------------------------


def _dlq_attributes() -> QueueAttributes:
    return {"MessageRetentionPeriod": str(RETENTION_SECONDS), "SqsManagedSseEnabled": "true"}


def _queue_attributes(dlq_arn: str) -> QueueAttributes:
    return {
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT),
        "MessageRetentionPeriod": str(RETENTION_SECONDS),
        "SqsManagedSseEnabled": "true",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": MAX_RECEIVE_COUNT}),
    }


def _queue_arn(sqs: SQSClient, queue_url: str, url: str) -> str:
    with _aws(f"read the attributes of queue {queue_url}", url):
        attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]
    return attributes["QueueArn"]


def _queue(sqs: SQSClient, setting: str, name: str, attributes: QueueAttributes, url: str) -> Step:
    with _aws(f"look up queue {name}", url):
        try:
            queue_url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except ClientError as exc:
            if _code(exc) not in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise
        else:
            _check_queue(sqs, name, queue_url, attributes, url)
            return Step("queue", name, setting, queue_url, created=False)
    with _aws(f"create queue {name}", url):
        queue_url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    return Step("queue", name, setting, queue_url, created=True)


def _check_queue(sqs: SQSClient, name: str, queue_url: str, attributes: QueueAttributes, url: str) -> None:
    """An existing queue is reused only if it sends failures where the kit expects them, as often."""
    with _aws(f"read the attributes of queue {name}", url):
        found = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    wanted_redrive = json.loads(attributes.get("RedrivePolicy", "null"))
    found_redrive = json.loads(found.get("RedrivePolicy", "null"))
    if wanted_redrive is not None:
        same = found_redrive is not None and (
            found_redrive.get("deadLetterTargetArn") == wanted_redrive["deadLetterTargetArn"]
            and int(found_redrive.get("maxReceiveCount", 0)) == wanted_redrive["maxReceiveCount"]
        )
        if not same:
            raise StoreError(
                f"queue {name} on {url} exists without the kit's redrive policy (to "
                f"{wanted_redrive['deadLetterTargetArn']} after {wanted_redrive['maxReceiveCount']} "
                "receives); choose another --prefix"
            )
    if (
        "VisibilityTimeout" in attributes
        and found.get("VisibilityTimeout") != attributes["VisibilityTimeout"]
    ):
        raise StoreError(
            f"queue {name} on {url} exists with a visibility timeout of {found.get('VisibilityTimeout')} s, "
            f"not {attributes['VisibilityTimeout']} s; choose another --prefix"
        )
