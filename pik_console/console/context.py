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
    # The aggregate metric and the versions compared (older, newer), as the Aggregates pane shows them.
    metric: str | None = None
    compare: tuple[int, int] | None = None

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

    def with_window(self, entity: str, start: str, end: str) -> Context:
        """``entity``'s window [start, end): a whole UTC day is kept as the day alone."""
        day = start[:10]
        if (start, end) == (day_start(day), day_start(next_day(day))):
            return replace(self, entity=entity, day=day, start=None, end=None)
        return replace(self, entity=entity, day=day, start=start, end=end)

    def describe(self, short: bool = False) -> str:
        """The context in one line; ``short`` leaves out the labels (a small terminal's header)."""
        parts = []
        if self.entity:
            parts.append(self.entity if short else f"entity {self.entity}")
        if self.day:
            parts.append(self.day if short else f"day {self.day}")
        if self.start and self.end and self.entity:
            same_day = self.end[:10] == self.start[:10]
            end = self.end[11:16] if same_day else self.end[:16]
            parts.append(f"{self.start[11:16]}..{end}")
        if self.source and self.event_type:
            parts.append(f"{self.source}/{self.event_type}")
        if self.metric:
            pair = f" v{self.compare[0]}→v{self.compare[1]}" if self.compare else ""
            parts.append(f"{self.metric}{pair}")
        return " · ".join(parts) or "nothing chosen yet (s, d, e pick)"
