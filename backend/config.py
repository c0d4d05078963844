"""Settings, read from the environment (the original kit's names) or given by the CLI.

The Lambda functions read only the environment; the CLI builds the same objects from its options, from a
CloudFormation stack's outputs (``--stack``), or from the environment, in that order of precedence.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AwsSettings(BaseSettings):
    """Where the kit's AWS resources are and how to reach them."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    raw_bucket: str | None = Field(None, validation_alias=AliasChoices("RAW_BUCKET", "raw_bucket"))
    """S3 bucket of raw events (immutable, SSE)."""
    events_table: str | None = Field(None, validation_alias=AliasChoices("EVENTS_TABLE", "events_table"))
    """DynamoDB table of receipts, rejections and the lag index."""
    dedupe_table: str | None = Field(None, validation_alias=AliasChoices("DEDUPE_TABLE", "dedupe_table"))
    """DynamoDB table holding one item per accepted event id."""
    agg_table: str | None = Field(None, validation_alias=AliasChoices("AGG_TABLE", "agg_table"))
    """DynamoDB table of versioned aggregates."""
    audit_table: str | None = Field(None, validation_alias=AliasChoices("AUDIT_TABLE", "audit_table"))
    """DynamoDB table of the replay audit trail."""
    replay_queue_url: str | None = Field(
        None, validation_alias=AliasChoices("REPLAY_QUEUE_URL", "replay_queue_url")
    )
    """SQS queue that replays are sent to and the processor reads."""
    replay_dlq_url: str | None = Field(
        None, validation_alias=AliasChoices("REPLAY_DLQ_URL", "replay_dlq_url")
    )
    """The replay queue's dead-letter queue."""
    region: str | None = Field(
        None, validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION", "region")
    )
    endpoint_url: str | None = Field(None, validation_alias=AliasChoices("AWS_ENDPOINT_URL", "endpoint_url"))
    """Any AWS-compatible endpoint (moto server, LocalStack); None for AWS itself."""
    profile: str | None = Field(None, validation_alias=AliasChoices("AWS_PROFILE", "profile"))
    stack: str | None = None
    """The CloudFormation stack the names were read from, if any (shown in the console header)."""

    def missing(self, *names: str) -> list[str]:
        """Environment names of the settings among ``names`` (field names) that are not set."""
        env = {
            "raw_bucket": "RAW_BUCKET",
            "events_table": "EVENTS_TABLE",
            "dedupe_table": "DEDUPE_TABLE",
            "agg_table": "AGG_TABLE",
            "audit_table": "AUDIT_TABLE",
            "replay_queue_url": "REPLAY_QUEUE_URL",
            "replay_dlq_url": "REPLAY_DLQ_URL",
        }
        return [env[n] for n in names if not getattr(self, n)]


class RuntimeSettings(BaseSettings):
    """How a Lambda function or ``pik serve`` runs: which backend, dry run, log level."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, frozen=True)

    backend: Literal["local", "aws"] = Field("aws", validation_alias=AliasChoices("PIK_BACKEND", "backend"))
    """``aws`` in Lambda; ``pik serve`` may run the handlers on a local workspace."""
    workspace: str = Field(".pik", validation_alias=AliasChoices("PIK_WORKSPACE", "workspace"))
    dry_run: bool = Field(False, validation_alias=AliasChoices("DRY_RUN", "dry_run"))
    """Validate and answer without writing anything (the seed's DRY_RUN)."""
    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level"))
    read_only: bool = Field(False, validation_alias=AliasChoices("PIK_READ_ONLY", "read_only"))
