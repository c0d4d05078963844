"""The investigation context shared by the panes: the entity, the day, the window, the partition.

Picking an event in the Events pane sets it; the Lag, Gaps, Replay and Aggregates panes preselect their
forms from it the next time they are shown (a pane's own edits stay until the context changes again).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta


def next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def add_days(day: str, days: int) -> str:
    return (date.fromisoformat(day) + timedelta(days=days)).isoformat()


def day_start(day: str) -> str:
    return f"{day}T00:00:00.000Z"


@dataclass(frozen=True)
class Context:
    entity: str | None = None
    day: str | None = None  # YYYY-MM-DD, UTC
    source: str | None = None
    event_type: str | None = None
    # The window, when it is not the whole day.
    start: str | None = None
    end: str | None = None
    # The days the workspace holds (for default ranges).
    first_day: str | None = None
    last_day: str | None = None

    @property
    def window(self) -> tuple[str, str] | None:
        if self.start and self.end:
            return self.start, self.end
        if self.day:
            return day_start(self.day), day_start(next_day(self.day))
        return None

    def with_event(self, entity: str, day: str, source: str, event_type: str) -> Context:
        return replace(
            self, entity=entity, day=day, source=source, event_type=event_type, start=None, end=None
        )

    def describe(self) -> str:
        parts = []
        if self.entity:
            parts.append(f"entity {self.entity}")
        if self.day:
            parts.append(f"day {self.day}")
        if self.source and self.event_type:
            parts.append(f"{self.source}/{self.event_type}")
        return " · ".join(parts) or "no entity or day chosen yet"
