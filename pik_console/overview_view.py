"""The overview's findings as rows a person reads, and where each one leads: what ``pik overview`` prints
and what the console's Overview pane shows (no Textual here: both call these pure functions).

```python
rows = finding_rows(overview.findings)        # [(severity, kind, where, when, summary), ...], text made safe
target = finding_target(overview.findings[0])  # the pane to open and the context to set on Enter
```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.services.findings import Finding, FindingKind
from pik_console.text import safe

COLUMNS = ("severity", "kind", "where", "when", "summary")

# The pane that shows a finding's window, by kind.
_PANE = {
    FindingKind.MISSING_DAY: "gaps",
    FindingKind.LATE_DAY: "gaps",
    FindingKind.LAG_SPIKE: "lag",
    FindingKind.DUPLICATE_STORM: "events",
    FindingKind.REJECTION_SPIKE: "events",
    FindingKind.CLOCK_SKEW: "events",
    FindingKind.AGGREGATE_CHURN: "aggregates",
}


@dataclass(frozen=True, slots=True)
class FindingTarget:
    """Where Enter on a finding goes: a pane and the context it opens with (None: leave as it is)."""

    pane: str  # events, lag, gaps or aggregates
    day: str
    source: str | None = None
    event_type: str | None = None
    entity_id: str | None = None
    metric: str | None = None
    status: str | None = None  # the events pane's status filter (DUPLICATE, REJECTED)


def where(f: Finding) -> str:
    """The finding's subject as text: ``source/type``, ``entity E``, or ``E · metric``."""
    if f.entity_id is not None:
        return safe(f.entity_id) + (f" · {safe(f.metric)}" if f.metric else "")
    if f.source is not None:
        return safe(f.source) + (f"/{safe(f.event_type)}" if f.event_type else "")
    return "unreadable input"


def finding_rows(findings: Sequence[Finding]) -> list[tuple[str, str, str, str, str]]:
    """One row of :data:`COLUMNS` per finding, in the given order; every field from the data made safe to
    print (markup and escape sequences in ids stay text)."""
    return [
        (
            f"{f.severity:.0f}",
            f.kind.value,
            where(f),
            f.day + (f" {f.hour:02d}h" if f.hour is not None else ""),
            safe(f.summary),
        )
        for f in findings
    ]


def finding_target(f: Finding) -> FindingTarget:
    """The pane and context that show ``f``'s window (what ``f.next`` runs on the command line)."""
    status = {FindingKind.DUPLICATE_STORM: "DUPLICATE", FindingKind.REJECTION_SPIKE: "REJECTED"}.get(f.kind)
    pane = _PANE[f.kind]
    if f.kind is FindingKind.CLOCK_SKEW and f.entity_id is None:
        pane = "lag"
    if f.kind in (FindingKind.MISSING_DAY, FindingKind.LATE_DAY) and f.entity_id is not None:
        pane = "gaps"
    return FindingTarget(
        pane=pane,
        day=f.day,
        source=f.source,
        event_type=f.event_type,
        entity_id=f.entity_id,
        metric=f.metric,
        status=status,
    )
