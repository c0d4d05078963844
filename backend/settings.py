"""Workspace settings: ``settings.toml`` in the workspace folder (optional; every value has a default).

```toml
[replay]
confirm_above = 1000      # a replay of more messages needs --force (a typed confirmation in the console)

[queue]
max_receives = 5          # receives before a replay message moves to the dead-letter queue
visibility_timeout_s = 30 # how long a received message stays hidden from other processors

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

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.errors import WorkspaceError
from backend.model import MetricSpec

SETTINGS_FILE = "settings.toml"


class ReplaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    confirm_above: int = Field(1000, ge=0)
    """A replay of more messages than this needs force (the console asks for a typed confirmation)."""


class QueueSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    max_receives: int = Field(5, ge=1, le=1000)
    """Receives before a replay message moves to the dead-letter queue (SQS maxReceiveCount)."""
    visibility_timeout_s: int = Field(30, ge=0, le=43_200)
    """How long a received message stays hidden from other processors."""


class WorkspaceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    metrics: list[MetricSpec] = Field(default_factory=list)
    """The processor's metrics besides ``daily_event_count``."""


def load_settings(workspace: str | Path) -> WorkspaceSettings:
    """The settings of a workspace folder; the defaults when it has no ``settings.toml``. A file that
    cannot be read or holds unknown or invalid values raises WorkspaceError naming the problem."""
    path = Path(workspace) / SETTINGS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return WorkspaceSettings()
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkspaceError(f"cannot read {path}: {exc}") from None
    return parse_settings(text, str(path))


def parse_settings(text: str, where: str = SETTINGS_FILE) -> WorkspaceSettings:
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
