"""The kit's one settings tree, read in one place.

Every setting has a default; four layers override it, the later one winning:

1. the defaults below;
2. the workspace's ``settings.toml`` (local backend only: ``[replay]``, ``[queue]``, ``[overview]``,
   ``[[metrics]]``);
3. the environment: ``PIK_BACKEND``, ``PIK_WORKSPACE``, ``PIK_READ_ONLY``, the original kit's ``DRY_RUN``,
   ``LOG_LEVEL``, ``RAW_BUCKET``, ``EVENTS_TABLE``, ``DEDUPE_TABLE``, ``AGG_TABLE``, ``REPLAY_QUEUE_URL``
   (and ``AUDIT_TABLE``, ``REPLAY_DLQ_URL``, ``AWS_REGION``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``), and the
   workspace sections as ``PIK_REPLAY__CONFIRM_ABOVE``, ``PIK_QUEUE__MAX_RECEIVES``...;
4. the command line (``pik --backend aws --read-only ...``), handed to :func:`load_settings` as overrides.

An invalid value raises :class:`SettingsError`, one line naming the variable (or the file and key, or the
option) and what is allowed. A ``settings.toml`` that cannot be read or parsed raises WorkspaceError.

```toml
[replay]
confirm_above = 1000      # a replay of more messages needs --force (a typed confirmation in the console)
project_windows = 20      # a dry run projects the new aggregate versions of this many windows exactly
project_events = 50000    # ... as long as recomputing them reads at most this many events in all

[queue]
max_receives = 5          # receives before a replay message moves to the dead-letter queue
visibility_timeout_s = 30 # how long a received message stays hidden from other processors

[overview]
days = 14                 # pik overview's default range: the last 14 event days
grace_ms = 3600000        # an event ingested an hour or more after its day ended arrived late

# Metrics the processor computes per (entity, day), besides the built-in daily_event_count.
# kind: count, sum, min, max, avg, distinct; field: a payload field (dotted for nested objects);
# event_type / source: only those events.
[[metrics]]
name = "steps_total"
kind = "sum"
field = "steps"
event_type = "heartbeat"
```
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from backend.errors import KitError, WorkspaceError
from backend.model import MetricSpec

SETTINGS_FILE = "settings.toml"
DEFAULT_WORKSPACE = ".pik"
WORKSPACE_SECTIONS = ("replay", "queue", "overview", "metrics")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


class SettingsError(KitError):
    """A setting has a value the kit cannot use; the message names the variable and what is allowed."""


def _flag(value: Any) -> Any:
    """1/true/yes/on and 0/false/no/off (or empty) as a bool; anything else is left for the error."""
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    return value


class AwsSettings(BaseSettings):
    """Where the kit's AWS resources are and how to reach them (the original kit's environment names)."""

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
    lag_shards: int | None = Field(
        None, ge=1, le=1000, validation_alias=AliasChoices("LAG_SHARDS", "lag_shards")
    )
    """Shards of the lag index per (source, type, day): each takes 1/N of its writes. Writers use it
    (recorded in the stack on first use); readers take what the stack records, else this, else 1. The
    template's default, 60, keeps a key at <= 500 writes/s at 10,000 events/s per source/type with a 3x
    diurnal peak (docs/aws.md, "Scale")."""
    entity_shards: int | None = Field(
        None, ge=1, le=1000, validation_alias=AliasChoices("ENTITY_SHARDS", "entity_shards")
    )
    """Shards of each entity's receipts in the events table (``ENTITY#<id>`` becomes ``ENTITY:<m>#<id>``),
    recorded in the stack like ``LAG_SHARDS``. The template's default, 30, keeps an entity sending 5,000
    events/s (5% of 100,000) with a 3x peak at <= 500 writes/s a key; an entity window costs one query per
    shard, so size it for the busiest entity (docs/aws.md, "Scale")."""
    rejection_shards: int | None = Field(
        None, ge=1, le=1000, validation_alias=AliasChoices("REJECTION_SHARDS", "rejection_shards")
    )
    """Shards of the quarantine (``REJECTED`` becomes ``REJECTED#S#<r>``), recorded in the stack like
    ``LAG_SHARDS``. The template's default, 6, holds 1,000 rejections/s with a 3x peak at <= 500 writes/s
    a key (docs/aws.md, "Scale")."""
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
        return [ENV_NAMES[n] for n in names if not getattr(self, n)]


ENV_NAMES = {
    "raw_bucket": "RAW_BUCKET",
    "events_table": "EVENTS_TABLE",
    "dedupe_table": "DEDUPE_TABLE",
    "agg_table": "AGG_TABLE",
    "audit_table": "AUDIT_TABLE",
    "replay_queue_url": "REPLAY_QUEUE_URL",
    "replay_dlq_url": "REPLAY_DLQ_URL",
}
"""The environment name of each AWS resource setting (the original kit's names)."""


class ReplaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    confirm_above: int = Field(1000, ge=0)
    """A replay of more messages than this needs force (the console asks for a typed confirmation)."""
    project_windows: int = Field(20, ge=0, le=10_000)
    """A dry run projects the aggregate versions a processor run would write for the first this many
    (entity, day) windows it touches, exactly (each costs a recompute's reads); the rest are counted.
    0 turns the projection off."""
    project_events: int = Field(50_000, ge=0)
    """The projection recomputes whole windows: it stops before the windows projected would hold more than
    this many events in all (the console's live dry run stays quick on a window of a million events); the
    windows left out are counted and the dry run says why."""


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_receives: int = Field(5, ge=1, le=1000)
    """Receives before a replay message moves to the dead-letter queue (SQS maxReceiveCount)."""
    visibility_timeout_s: int = Field(30, ge=0, le=43_200)
    """How long a received message stays hidden from other processors."""


class OverviewSettings(BaseModel):
    """Thresholds of ``pik overview``. A day or hour is compared with the baseline of its series: the
    median of the other days (of the same weekday once there are 3+ weeks), with the MAD as its spread."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    days: int = Field(14, ge=1, le=366)
    """The default range: this many event days, ending with the last event day in the store."""
    grace_ms: int = Field(3_600_000, ge=0)
    """An event ingested this long after the end of its event day, or later, arrived late."""
    min_ratio: float = Field(0.5, gt=0, lt=1)
    """A day with fewer events than this share of its baseline is short (missing or late)."""
    mad_k: float = Field(4.0, gt=0)
    """A count or lag is unusual when it is this many MADs (scaled as a standard deviation) from its
    median."""
    min_baseline: int = Field(20, ge=1)
    """A series whose baseline day has fewer events than this is not judged for short days (too noisy)."""
    entity_min_baseline: int = Field(10, ge=1)
    """As ``min_baseline``, for the daily count of one entity."""
    lag_p90_ratio: float = Field(3.0, gt=1)
    """An hour (or day) whose p90 lag is this many times its baseline's, and past ``lag_min_ms``, spikes."""
    lag_min_ms: int = Field(300_000, ge=0)
    """A lag spike must reach at least this p90 lag (a jump from 1 s to 4 s is no incident)."""
    lag_min_events: int = Field(5, ge=1)
    """A lag spike holds at least this many events of the hour at ``lag_min_ms`` or more (two stragglers
    in a quiet hour are not one)."""
    duplicate_share: float = Field(0.05, gt=0, le=1)
    """An hour whose duplicate receipts reach this share of its events, and are unusual, is a storm."""
    min_duplicates: int = Field(20, ge=1)
    """A duplicate storm holds at least this many duplicate receipts."""
    min_rejections: int = Field(10, ge=1)
    """A rejection spike holds at least this many rejections on one day (and is unusual for the source)."""
    skew_min: int = Field(5, ge=1)
    """Clock skew is reported for a source/type or entity with at least this many skewed events a day."""
    churn_min_versions: int = Field(3, ge=2)
    """Aggregate churn: a window with at least this many versions (or any change of more than
    ``churn_min_change`` of its first value)."""
    churn_min_change: float = Field(0.1, ge=0)
    """Aggregate churn: a relative change of the value between the first and the last version."""
    max_findings: int = Field(100, ge=1)
    """At most this many findings, the most severe first."""


class WorkspaceSettings(BaseModel):
    """The sections a workspace's ``settings.toml`` may hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    overview: OverviewSettings = Field(default_factory=OverviewSettings)
    metrics: list[MetricSpec] = Field(default_factory=list)
    """The processor's metrics besides ``daily_event_count``."""


# The settings.toml that the source below reads while load_settings runs (the file's place depends on the
# workspace, which the other layers choose).
_toml_path: ContextVar[Path | None] = ContextVar("_toml_path", default=None)


class _WorkspaceFile(PydanticBaseSettingsSource):
    """Layer 2: the workspace's ``settings.toml``, if there is one."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ returns the whole file

    def __call__(self) -> dict[str, Any]:
        path = _toml_path.get()
        return read_workspace_file(path).model_dump() if path is not None else {}


class Settings(BaseSettings):
    """Everything the kit reads: which backend, how it runs, and the workspace's sections."""

    model_config = SettingsConfigDict(
        env_prefix="PIK_",
        env_nested_delimiter="__",
        extra="forbid",
        populate_by_name=True,
        frozen=True,
    )

    backend: Literal["local", "aws"] | None = None
    """``PIK_BACKEND``: ``local`` (a workspace folder) or ``aws`` (a stack). Unset: the caller's default
    (``local`` for ``pik``, ``aws`` in Lambda)."""
    workspace: Path = Path(DEFAULT_WORKSPACE)
    """``PIK_WORKSPACE``: the local workspace folder."""
    read_only: bool = False
    """``PIK_READ_ONLY``: refuse every write, in the services themselves."""
    dry_run: bool = Field(False, validation_alias=AliasChoices("DRY_RUN", "dry_run"))
    """``DRY_RUN`` (the original kit's): the handlers validate and answer without writing anything."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", validation_alias=AliasChoices("LOG_LEVEL", "log_level")
    )
    """``LOG_LEVEL`` of the handlers' JSON logs."""
    aws: AwsSettings = Field(default_factory=AwsSettings)
    """The AWS resources (``RAW_BUCKET``...), used with ``backend = "aws"``."""
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    overview: OverviewSettings = Field(default_factory=OverviewSettings)
    metrics: list[MetricSpec] = Field(default_factory=list)
    """The processor's metrics besides ``daily_event_count``."""

    @field_validator("read_only", "dry_run", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        return _flag(value)

    @field_validator("log_level", mode="before")
    @classmethod
    def _level(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().upper() or "INFO"
            return "WARNING" if value == "WARN" else value
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _WorkspaceFile(settings_cls)

    @property
    def workspace_sections(self) -> WorkspaceSettings:
        return WorkspaceSettings(
            replay=self.replay, queue=self.queue, overview=self.overview, metrics=self.metrics
        )


# -- reading ------------------------------------------------------------------------------------------------

# How each setting is named where a person sets it: the environment first (what the message names when the
# variable is set), then the command line.
_ENV = {
    "backend": "PIK_BACKEND",
    "workspace": "PIK_WORKSPACE",
    "read_only": "PIK_READ_ONLY",
    "dry_run": "DRY_RUN",
    "log_level": "LOG_LEVEL",
}
_ALLOWED = {
    "backend": "local or aws",
    "read_only": "true or false (1/0, yes/no, on/off)",
    "dry_run": "true or false (1/0, yes/no, on/off)",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
}


def load_settings(
    overrides: Mapping[str, Any] | None = None, *, default_backend: Literal["local", "aws"] = "local"
) -> Settings:
    """The settings tree: ``overrides`` (the command line; None values are ignored) over the environment
    over the workspace's ``settings.toml`` over the defaults. ``backend`` is never None in the result.

    Raises :class:`SettingsError` for an invalid value, WorkspaceError for an unreadable settings file.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        # The first pass chooses the backend and workspace, which say whether and where settings.toml is.
        first = Settings.model_validate(given)
        backend = first.backend or default_backend
        token = _toml_path.set(first.workspace / SETTINGS_FILE if backend == "local" else None)
        try:
            full = Settings.model_validate(given)
        finally:
            _toml_path.reset(token)
    except ValidationError as exc:
        raise SettingsError(_explain(exc, os.environ, given)) from None
    return full.model_copy(update={"backend": backend})


def _explain(exc: ValidationError, env: Mapping[str, str], given: Mapping[str, Any]) -> str:
    """One line for the first problem: where the value came from, what it was, what is allowed."""
    error = exc.errors(include_url=False)[0]
    loc = [str(p) for p in error["loc"]]
    by_alias = {alias: name for name, alias in _ENV.items()}
    field = by_alias.get(loc[0], loc[0]) if loc else ""
    value = error.get("input")
    got = f", got {repr(value)[:60]}" if isinstance(value, str | int | float | bool) else ""
    rule = f"must be {_ALLOWED[field]}" if field in _ALLOWED else error["msg"].lower()
    if field in given:
        return f"--{field.replace('_', '-')}: {rule}{got}"
    name = _ENV.get(field) or "PIK_" + "__".join(p.upper() for p in loc)
    if name in env:
        return f"{name} {rule}{got}" if field in _ALLOWED else f"{name}: {rule}{got}"
    return f"{'.'.join(loc)}: {rule}{got}"


def read_workspace_file(path: str | Path) -> WorkspaceSettings:
    """The sections of one ``settings.toml``; the defaults when the file does not exist. A file that
    cannot be read, or holds unknown or invalid values, raises WorkspaceError naming the problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):  # no workspace (yet): opening it says why
        return WorkspaceSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"cannot read {path}: {exc}") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, where: str = SETTINGS_FILE) -> WorkspaceSettings:
    """The sections of ``settings.toml`` text; WorkspaceError (naming ``where``) if it is not valid."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise WorkspaceError(f"{where} is not valid TOML: {exc}") from None
    try:
        return WorkspaceSettings.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise WorkspaceError(f"{where}: {problems}") from None
