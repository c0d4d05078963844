"""What-if for a replay: the aggregate versions a processor run would produce, computed without writing.

A replay changes no event: its messages make the processor recompute whole (entity, day) windows from the
index. So what a replay *would* change is exactly what the processor's recompute answers now, for each
window the replay touches. :class:`Projector` asks the processor itself, in dry-run mode
(:meth:`ProcessorService.recompute` with ``dry_run``: the same reads, the same metric functions, the same
decision whether a version is written; only the append is skipped). There is no second implementation of
the metrics, so the projection cannot drift from what the processor will write: a property test
(``tests/test_projection_properties.py``) executes and processes the replay and compares, on both
adapters.

The projection is bounded: the first ``limit`` windows (in the plan's order: by entity, then day) are
projected exactly, every metric of each; the rest are counted, not read. Each projected metric comes
with one sentence saying why it moves (or not): events added late, events the last version missed,
duplicates excluded, a changed definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from backend.model import AggregateVersion, MetricKind, MetricSpec, ProjectedVersion
from backend.ports import AggregateStore, DayCount, InvestigationIndex, ManifestEntry, RawCatalog
from backend.services.processor import (
    MetricResult,
    Prefetched,
    ProcessorService,
    WindowResult,
    window_counts,
)
from backend.services.versions import value_text
from backend.times import human_ms

DEFAULT_PROJECT_WINDOWS = 20
"""Windows a dry run projects exactly by default (``settings.toml [replay] project_windows``)."""
DEFAULT_PROJECT_EVENTS = 50_000
"""Events the projected windows may hold in all (``settings.toml [replay] project_events``)."""


@dataclass(slots=True)
class Projection:
    """The projected versions of the first ``windows_projected`` windows (every metric of each), and how
    many windows were left out: over the bound, or failed (with why: the processor may fail on them too)."""

    projected: list[ProjectedVersion] = field(default_factory=list)
    windows_projected: int = 0
    windows_not_projected: int = 0
    limit: int = DEFAULT_PROJECT_WINDOWS
    failed: dict[tuple[str, str], str] = field(default_factory=dict)
    # Windows within the bound left out because recomputing them would take the events read past
    # ``max_events``; ``budget_events``: the events they hold.
    over_budget: int = 0
    budget_events: int = 0  # the events those windows hold
    max_events: int = DEFAULT_PROJECT_EVENTS

    def summary(self) -> list[str]:
        """Sentences for the dry run's notes: how many versions would change, and what was not projected."""
        lines: list[str] = []
        if self.windows_projected:
            changing = [p for p in self.projected if p.new_version]
            projected = _plural(self.windows_projected, "window")
            if not changing:
                lines.append(
                    f"a processor run would add no new version: nothing changed in the {projected} projected "
                    "since their versions were computed"
                )
            else:
                moved = sum(1 for p in changing if p.delta not in (0, None) or p.current_version is None)
                windows = len({(p.entity_id, p.day) for p in changing})
                lines.append(
                    f"a processor run would add {_plural(len(changing), 'new version')} in "
                    f"{_plural(windows, 'window')} of the {projected} projected ({moved:,} with a new or "
                    f"different value); the other {_plural(len(self.projected) - len(changing), 'metric')} "
                    "stay as they are"
                )
        if self.over_budget:
            lines.append(
                f"{_plural(self.over_budget, 'window')} not projected: recomputing "
                f"{'it' if self.over_budget == 1 else 'them'} reads {self.budget_events:,} events, over the "
                f"projection's budget of {self.max_events:,} (settings.toml [replay] project_events)"
            )
        over = self.windows_not_projected - len(self.failed) - self.over_budget
        if over:
            lines.append(
                f"{_plural(over, 'more window')} not projected (the bound is {self.limit:,} windows: "
                "settings.toml [replay] project_windows)"
            )
        for (entity_id, day), why in list(self.failed.items())[:3]:
            lines.append(
                f"window {entity_id!r} {day} could not be projected (the processor may fail on it too): {why}"
            )
        if len(self.failed) > 3:
            lines.append(f"{len(self.failed) - 3:,} more windows could not be projected")
        return lines


class Projector:
    """Projects the versions a processor run would write for replayed windows. Reads only: the processor
    it uses is a dry-run one, which writes nothing (and is allowed in read-only mode)."""

    def __init__(
        self,
        scans: InvestigationIndex,
        catalog: RawCatalog,
        aggregates: AggregateStore,
        metrics: Sequence[MetricSpec] = (),
        *,
        limit: int = DEFAULT_PROJECT_WINDOWS,
        max_events: int = DEFAULT_PROJECT_EVENTS,
    ) -> None:
        self.scans = scans
        self.aggregates = aggregates
        self.limit = limit
        self.max_events = max_events
        self.processor = ProcessorService(scans, catalog, aggregates, metrics, dry_run=True, read_only=True)
        self.metrics = self.processor.metrics

    def project(self, windows: Sequence[tuple[str, str]]) -> Projection:
        """The projection of ``windows`` ((entity, day) pairs, in the order given): the first ``limit``
        exactly, the rest counted. A window whose recompute fails is counted as not projected, with why."""
        bounded = list(windows[: self.limit])
        out = Projection(
            limit=self.limit, windows_not_projected=len(windows) - len(bounded), max_events=self.max_events
        )
        # Each window is recomputed whole: one that would take the events read past the budget is left out
        # (counted, and said), the smaller ones after it still projected (one count each to know).
        chosen: list[tuple[str, str]] = []
        events = 0
        # The latest versions and counts of every bounded window in bulk where the store can (O(pages));
        # else the counts per entity, and each window its own versions.
        prefetched = self.processor.prefetch(bounded)
        counts = prefetched.counts if prefetched is not None else window_counts(self.scans, bounded)
        # Windows whose first versions follow from their counts alone are projected without reading them
        # (and so do not use the budget); the others are recomputed by the processor, within the budget.
        counted: dict[tuple[str, str], list[ProjectedVersion]] = {}
        for window in bounded:
            first = self._first_versions(window, counts.get(window), prefetched)
            if first is not None:
                counted[window] = first
                chosen.append(window)
                continue
            size = counts[window].accepted + counts[window].duplicate if window in counts else 0
            if events + size > self.max_events:
                out.over_budget += 1
                out.budget_events += size
                out.windows_not_projected += 1
                continue
            events += size
            chosen.append(window)
        outcomes = self.processor.recompute_windows({w: () for w in chosen if w not in counted}, prefetched)
        manifests: dict[str, list[ManifestEntry] | None] = {}
        for window in chosen:
            if window in counted:
                out.windows_projected += 1
                out.projected.extend(counted[window])
                continue
            outcome = outcomes[window]
            if isinstance(outcome, str):
                out.failed[window] = outcome
                out.windows_not_projected += 1
                continue
            out.windows_projected += 1
            duplicates = counts[window].duplicate if window in counts else 0
            out.projected.extend(self._metric(outcome, m, duplicates, manifests) for m in outcome.metrics)
        return out

    def _first_versions(
        self, window: tuple[str, str], count: DayCount | None, prefetched: Prefetched | None = None
    ) -> list[ProjectedVersion] | None:
        """The projection of a window none of whose metrics has a version yet, when every metric is a
        count of all the window's events (no field, no filter): version 1 of each, valued at the window's
        accepted events, exactly what the processor's recompute answers (``tests/test_projection.py``
        compares them), read from the counts instead of the events. None when that is not the case."""
        if any(m.kind is not MetricKind.COUNT or m.field or m.source or m.event_type for m in self.metrics):
            return None
        entity_id, day = window
        known = prefetched.of(entity_id, day, self.metrics) if prefetched is not None else None
        if known is not None:
            if any(v is not None for v in known[0].values()):
                return None
        elif any(self.aggregates.latest(entity_id, day, m.name) is not None for m in self.metrics):
            return None
        accepted = count.accepted if count is not None else 0
        events = _plural(accepted, "event")
        reason = f"the window has no version yet: version 1 would be computed from {events}"
        if count is not None and count.duplicate:
            duplicates = _plural(count.duplicate, "duplicate receipt")
            reason += f"; {duplicates} excluded (each event counts once)"
        return [
            ProjectedVersion(
                entity_id=entity_id,
                day=day,
                metric=m.name,
                current_version=None,
                current_value=None,
                projected_version=1,
                projected_value=accepted,
                delta=None,
                new_version=True,
                current_inputs=None,
                projected_inputs=accepted,
                reason=reason + ".",
            )
            for m in self.metrics
        ]

    def _metric(
        self,
        window: WindowResult,
        result: MetricResult,
        duplicates: int,
        manifests: dict[str, list[ManifestEntry] | None],
    ) -> ProjectedVersion:
        new = result.version
        if not result.written:
            current: AggregateVersion | None = new
            reason = f"unchanged: no event arrived in the window since version {new.version} was computed"
        elif new.previous_version is None:
            current = None
            reason = (
                f"the window has no version yet: version 1 would be computed from "
                f"{_plural(new.input_count, 'event')}"
            )
        else:
            # The version the processor compared against (read by number, so it is that one).
            current = self.aggregates.get(new.entity_id, new.day, new.metric, new.previous_version)
            reason = self._why_changed(current, result, manifests)
        if duplicates:
            reason += f"; {_plural(duplicates, 'duplicate receipt')} excluded (each event counts once)"
        current_value = current.value if current is not None else None
        delta: int | float | None = None
        if isinstance(current_value, int | float) and isinstance(new.value, int | float):
            delta = new.value - current_value
        return ProjectedVersion(
            entity_id=window.entity_id,
            day=window.day,
            metric=result.metric,
            current_version=current.version if current is not None else None,
            current_value=current_value,
            projected_version=new.version,
            projected_value=new.value,
            delta=delta,
            new_version=result.written,
            current_inputs=current.input_count if current is not None else None,
            projected_inputs=new.input_count,
            reason=reason + ".",
        )

    def _why_changed(
        self,
        current: AggregateVersion | None,
        result: MetricResult,
        manifests: dict[str, list[ManifestEntry] | None],
    ) -> str:
        """Why the new version differs from ``current``: its inputs compared with the current manifest."""
        new = result.version
        if current is None:  # it was there when the processor read it: the store lost it meanwhile
            return f"recomputed from {_plural(new.input_count, 'event')}"
        parts: list[str] = []
        if current.inputs_hash not in manifests:
            manifests[current.inputs_hash] = self.aggregates.manifest(current.inputs_hash)
        old = manifests[current.inputs_hash]
        v = current.version
        if old is None:
            parts.append(
                f"the inputs changed from {current.input_count:,} to {new.input_count:,} events "
                f"(version {v} has no input manifest)"
            )
        else:
            before = {e.event_id: e for e in old}
            now = {e.event_id: e for e in result.manifest}
            added = [e for i, e in now.items() if i not in before]
            # Times are stored to the millisecond, and a version reads its window before it is stamped:
            # an input it lacks that was ingested in the millisecond of its stamp came after the read.
            late = [e for e in added if e.ingest_time >= current.computed_at]
            missed = len(added) - len(late)
            removed = sum(1 for i in before if i not in now)
            changed = sum(1 for i, e in now.items() if i in before and before[i].payload_sha != e.payload_sha)
            if late:
                lag = max(e.ingest_lag_ms for e in late)
                parts.append(
                    f"{_plural(len(late), 'event')} added late (ingested after version {v} was computed, "
                    f"lag up to {human_ms(lag)})"
                )
            if missed:
                parts.append(
                    f"{_plural(missed, 'event')} already ingested when version {v} was computed but not "
                    "among its inputs"
                )
            if removed:
                parts.append(f"{_plural(removed, 'input')} of version {v} no longer among the inputs")
            if changed:
                parts.append(f"{_plural(changed, 'input')} with another payload hash")
        if current.definition_hash != new.definition_hash:
            parts.append("the metric's definition changed")
        return "; ".join(parts) or f"recomputed from the same {_plural(new.input_count, 'event')}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


def version_text(version: int | None, value: int | float | None) -> str:
    """A version and its value for people: ``v2 = 1,204``, or ``none`` for no version."""
    return "none" if version is None else f"v{version} = {value_text(value)}"


def delta_text(p: ProjectedVersion) -> str:
    """The projected change for people: ``+3``, ``-1.5``, ``0``, or ``new`` for a first version."""
    if p.current_version is None:
        return "new"
    if p.delta is None:
        return "-" if p.current_value == p.projected_value else "changed"
    if p.delta == 0:
        return "0"
    return ("+" if p.delta > 0 else "-") + value_text(abs(p.delta))
