"""What the Events pane lists, and how one page of it is read: an entity's window (event-time order), a
source/type/day partition (lag order) or the quarantine of rejections (arrival order).

A listing is anchored (see :mod:`pik_console.console.paging`): at its start, at its end, or - for an
entity window - at a time. Each chain is one keyset query of the index port, so a page costs one query
whatever the size of the window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.ports import EventIndex
from pik_console.console.paging import Chain

PAGE_SIZE = 200

ANCHOR_START = "start"
ANCHOR_END = "end"


@dataclass(frozen=True)
class EventFilter:
    """The Events pane's filter bar. With an entity: that entity's window ``[start, end)``, event-time
    order, ``source``/``event_type`` narrowing it; without: one ``source``/``event_type``/``day``
    partition, largest lag last. ``status`` REJECTED lists the quarantine (the other fields filter it,
    and the window bounds the receive time)."""

    entity: str | None = None
    start: str | None = None
    end: str | None = None
    source: str | None = None
    event_type: str | None = None
    day: str | None = None
    status: IngestStatus | None = None

    @property
    def rejections(self) -> bool:
        return self.status is IngestStatus.REJECTED

    @property
    def partition(self) -> bool:
        return not self.rejections and self.entity is None

    def problem(self) -> str | None:
        """Why this filter cannot be listed (for the status line), or None."""
        if self.rejections:
            return None
        if self.entity is not None:
            if not (self.start and self.end):
                return "an entity needs a window: a start and an end"
            return None
        if not (self.source and self.event_type and self.day):
            return (
                "nothing chosen yet: s picks a source/type, d a day, e an entity (or / to type an entity "
                "with a window, or a source, a type and a day)"
            )
        return None

    def describe(self) -> str:
        if self.rejections:
            parts = [f"{k}={v}" for k, v in self._named() if v]
            return "rejections" + (f" ({', '.join(parts)})" if parts else "")
        if self.entity is not None:
            narrow = "/".join(p for p in (self.source, self.event_type) if p)
            extra = f" · only {narrow}" if narrow else ""
            status = f" · {self.status.value}" if self.status else ""
            return f"entity {self.entity} · [{short(self.start)}, {short(self.end)}){extra}{status}"
        status = f" · {self.status.value}" if self.status else ""
        return f"{self.source}/{self.event_type} on {self.day} (smallest lag first; End: the largest){status}"

    def _named(self) -> list[tuple[str, str | None]]:
        return [
            ("entity", self.entity),
            ("source", self.source),
            ("type", self.event_type),
            ("from", self.start),
            ("to", self.end),
        ]


@dataclass(frozen=True)
class Listing:
    """One anchored listing: ``anchor`` is ``start``, ``end`` or (entity windows) a stored time."""

    filter: EventFilter
    anchor: str = ANCHOR_START
    select_event: str | None = None  # an event id to put the cursor on once its page is read

    @property
    def forward(self) -> bool:
        return self.anchor != ANCHOR_END

    @property
    def backward(self) -> bool:
        return self.anchor != ANCHOR_START

    def at(self, anchor: str, select_event: str | None = None) -> Listing:
        return replace(self, anchor=anchor, select_event=select_event)

    def read(self, index: EventIndex, chain: Chain, cursor: str | None, limit: int = PAGE_SIZE) -> Page[Any]:
        """One page of ``chain``: forward pages ascend from the anchor, backward pages descend from it."""
        f = self.filter
        descending = chain is Chain.BACKWARD
        if f.rejections:
            return index.query_rejections(
                entity_id=f.entity,
                source=f.source,
                event_type=f.event_type,
                start=f.start,
                end=f.end,
                limit=limit,
                after=cursor,
                descending=descending,
            )
        if f.entity is not None:
            assert f.start is not None and f.end is not None
            start, end = f.start, f.end
            if self.anchor not in (ANCHOR_START, ANCHOR_END):
                # Anchored at a time: forward is [anchor, end), backward is [start, anchor).
                if descending:
                    end = max(min(self.anchor, end), start)
                else:
                    start = min(max(self.anchor, start), end)
            if start >= end:
                return Page(items=[])
            page = index.query_entity(
                f.entity, start, end, status=f.status, limit=limit, after=cursor, descending=descending
            )
            if f.source or f.event_type:
                # The index orders an entity by time only: narrowing by source/type is done per page.
                kept = [r for r in page.items if _narrow(r, f)]
                return Page(items=kept, next_cursor=page.next_cursor)
            return page
        assert f.source and f.event_type and f.day
        return index.query_partition(
            f.source, f.event_type, f.day, status=f.status, limit=limit, after=cursor, descending=descending
        )


def short(when: str | None) -> str:
    """A stored time without the parts that say nothing: ``2025-12-22`` for midnight, no ``.000``."""
    if when is None:
        return "-"
    if when.endswith("T00:00:00.000Z"):
        return when[:10]
    return when.replace(".000Z", "Z")


def _narrow(r: EventRecord, f: EventFilter) -> bool:
    return (not f.source or r.source == f.source) and (not f.event_type or r.event_type == f.event_type)


def item_key(item: EventRecord | Rejection) -> str:
    """An id for the detail pane and for finding a row again."""
    if isinstance(item, Rejection):
        return f"rejection:{item.rejection_id}"
    return f"{item.event_id}:{item.receipt}"
