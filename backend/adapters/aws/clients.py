"""boto3 clients, made once per process and reused (Lambda keeps them warm between invocations).

Adaptive retry mode: throttling and transient errors are retried with backoff by botocore itself, and a
throttled client also slows its own request rate (a token bucket shared by the client's threads), so the
adapter's own code only sees errors that outlived the retries. The worker pool backs off on 5xx too
(``backend.adapters.aws.connection``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config

from backend.settings import AwsSettings

if TYPE_CHECKING:
    from mypy_boto3_cloudformation import CloudFormationClient
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_sqs import SQSClient
    from mypy_boto3_sts import STSClient

CLIENT_CONFIG = Config(
    retries={"mode": "adaptive", "max_attempts": 5},
    connect_timeout=5,
    read_timeout=30,
    max_pool_connections=32,
)


@dataclass
class AwsClients:
    """The clients of one session; ``session`` is kept to make more (events hooks are per client)."""

    session: boto3.session.Session
    endpoint_url: str | None
    s3: S3Client
    dynamodb: DynamoDBClient
    sqs: SQSClient

    def sts(self) -> STSClient:
        return self.session.client("sts", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def cloudformation(self) -> CloudFormationClient:
        return self.session.client("cloudformation", endpoint_url=self.endpoint_url, config=CLIENT_CONFIG)

    def all(self) -> list[Any]:
        return [self.s3, self.dynamodb, self.sqs]


def make_session(settings: AwsSettings) -> boto3.session.Session:
    return boto3.session.Session(profile_name=settings.profile, region_name=settings.region)


def make_clients(settings: AwsSettings, session: boto3.session.Session | None = None) -> AwsClients:
    session = session or make_session(settings)
    url = settings.endpoint_url
    return AwsClients(
        session=session,
        endpoint_url=url,
        s3=session.client("s3", endpoint_url=url, config=CLIENT_CONFIG),
        dynamodb=session.client("dynamodb", endpoint_url=url, config=CLIENT_CONFIG),
        sqs=session.client("sqs", endpoint_url=url, config=CLIENT_CONFIG),
    )
