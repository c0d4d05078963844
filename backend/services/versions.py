"""Aggregate versions and why they differ: the versions of a window, and a diff of two of them explained.

Holds :class:`VersionService` (read-only over the aggregate store, the index scans and the audit trail), its
answer :class:`VersionDiff` (with :class:`InputChange`, :class:`LagSummary` and :class:`ReplaySummary`),
:func:`explain` (the diff in sentences for an incident channel) and :func:`value_text` (a metric value for
people).
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel

from backend.errors import InvalidRequest
from backend.model import AggregateVersion, ReplayAudit
from backend.ports import AggregateStore, InvestigationIndex, ManifestEntry
from backend.services.lag import percentile
from backend.services.scope import describe_scope
from backend.times import human_ms

# Scans read this many receipts per call.
SCAN_PAGE = 5000


class LagSummary(BaseModel):
    min_ms: int
    p50_ms: int
    max_ms: int


class InputChange(BaseModel):
    """An input added to (or removed from) an aggregate between two versions."""

    event_id: str
    ingest_time: str
    ingest_lag_ms: int
    after_older: bool  # ingested after the older version was computed


class ReplaySummary(BaseModel):
    replay_id: str
    known: bool  # found in the audit trail
    actor: str | None = None
    started_at: str | None = None
    outcome: str | None = None
    sent: int | None = None
    scope: str | None = None


class VersionDiff(BaseModel):
    """Two versions of one (entity, day, metric), what changed between their inputs, and why."""

    entity_id: str
    day: str
    metric: str
    older: AggregateVersion
    newer: AggregateVersion
    delta: int | float | None
    added: int
    removed: int
    changed: int  # same event id, another payload hash
    added_after_older: int  # late arrivals: ingested after the older version was computed
    added_before_older: int  # in the index when the older version was computed, yet not among its inputs
    late_lag: LagSummary | None
    duplicates_excluded: int  # duplicate receipts of the newer version's inputs in the window
    duplicates_after_older: int
    definition_changed: bool
    replays: list[ReplaySummary]
    added_sample: list[InputChange]
    removed_sample: list[InputChange]
    explanation: list[str]
    # False when a version has no input manifest (the original kit's): added/removed/changed are then 0
    # and unknown, and what can be said comes from the inputs hashes and the sample event ids.
    manifests: bool = True
    inputs_hash_changed: bool | None = None
    sample_ids_added: list[str] = []
    sample_ids_removed: list[str] = []

    @property
    def text(self) -> str:
        return "\n".join(self.explanation)


class _Audit(Protocol):
    def get(self, replay_id: str) -> ReplayAudit | None: ...


def value_text(value: int | float | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.6g}" if abs(value) < 1e15 else f"{value:.6g}"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


class VersionService:
    """Reads aggregate versions and explains the difference between two of them."""

    def __init__(
        self, aggregates: AggregateStore, scans: InvestigationIndex, audit: _Audit | None = None
    ) -> None:
        self.aggregates = aggregates
        self.scans = scans
        self.audit = audit

    def versions(self, entity_id: str, day: str, metric: str | None = None) -> list[AggregateVersion]:
        """Every version of the window (of one metric, or all), by metric then version."""
        out: list[AggregateVersion] = []
        after: str | None = None
        while True:
            page = self.aggregates.versions(entity_id, day, metric=metric, limit=500, after=after)
            out.extend(page.items)
            if page.next_cursor is None:
                return out
            after = page.next_cursor

    def diff(
        self,
        entity_id: str,
        day: str,
        metric: str,
        from_version: int | None = None,
        to_version: int | None = None,
    ) -> VersionDiff:
        """The difference between two versions (by default the last two) and its explanation."""
        older, newer = self._pair(entity_id, day, metric, from_version, to_version)
        old_manifest = self.aggregates.manifest(older.inputs_hash)
        new_manifest = self.aggregates.manifest(newer.inputs_hash)
        if old_manifest is None or new_manifest is None:
            return self._diff_without_manifest(older, newer, old_manifest is None, new_manifest is None)
        old_ids = {e.event_id: e for e in old_manifest}
        new_ids = {e.event_id: e for e in new_manifest}
        cutoff = older.computed_at

        def change(e: ManifestEntry) -> InputChange:
            return InputChange(
                event_id=e.event_id,
                ingest_time=e.ingest_time,
                ingest_lag_ms=e.ingest_lag_ms,
                after_older=e.ingest_time > cutoff,
            )

        added = sorted(
            (change(e) for i, e in new_ids.items() if i not in old_ids), key=lambda c: c.ingest_time
        )
        removed = sorted(
            (change(e) for i, e in old_ids.items() if i not in new_ids), key=lambda c: c.ingest_time
        )
        changed = sum(
            1 for i, e in new_ids.items() if i in old_ids and old_ids[i].payload_sha != e.payload_sha
        )
        late = sorted(c.ingest_lag_ms for c in added if c.after_older)
        dups, dups_after = self._duplicates(entity_id, newer, set(new_ids), cutoff)
        delta: int | float | None = None
        if isinstance(older.value, int | float) and isinstance(newer.value, int | float):
            delta = newer.value - older.value
        diff = VersionDiff(
            entity_id=entity_id,
            day=day,
            metric=metric,
            older=older,
            newer=newer,
            delta=delta,
            added=len(added),
            removed=len(removed),
            changed=changed,
            added_after_older=len(late),
            added_before_older=len(added) - len(late),
            late_lag=LagSummary(min_ms=late[0], p50_ms=percentile(late, 50) or 0, max_ms=late[-1])
            if late
            else None,
            duplicates_excluded=dups,
            duplicates_after_older=dups_after,
            definition_changed=older.definition_hash != newer.definition_hash,
            replays=[self._replay(r) for r in newer.replay_ids],
            added_sample=added[:10],
            removed_sample=removed[:10],
            explanation=[],
        )
        diff.explanation.extend(explain(diff))
        return diff

    def _pair(
        self, entity_id: str, day: str, metric: str, from_version: int | None, to_version: int | None
    ) -> tuple[AggregateVersion, AggregateVersion]:
        """The two versions to compare (by default the last two); InvalidRequest says why there are none."""
        latest = self.aggregates.latest(entity_id, day, metric)
        if latest is None:
            raise InvalidRequest(f"{metric} has no versions for {entity_id!r} on {day}")
        to_v = to_version if to_version is not None else latest.version
        from_v = from_version if from_version is not None else to_v - 1
        if from_v < 1 or to_v <= from_v:
            if latest.version == 1 and from_version is None and to_version is None:
                raise InvalidRequest(
                    f"{metric} has a single version for {entity_id!r} on {day}: nothing to diff"
                )
            raise InvalidRequest(f"choose two versions with 1 <= from < to (got from {from_v}, to {to_v})")
        older = self.aggregates.get(entity_id, day, metric, from_v)
        newer = self.aggregates.get(entity_id, day, metric, to_v)
        if older is None or newer is None:
            raise InvalidRequest(f"{metric} of {entity_id!r} on {day} has versions 1 to {latest.version}")
        return older, newer

    def _duplicates(
        self, entity_id: str, newer: AggregateVersion, inputs: set[str], cutoff: str
    ) -> tuple[int, int]:
        """Duplicate receipts of ``inputs`` in the newer version's window: all, and those after ``cutoff``."""
        dups = dups_after = 0
        after: str | None = None
        while True:
            page = self.scans.scan_entity(
                entity_id, newer.window_start, newer.window_end, limit=SCAN_PAGE, after=after
            )
            for r in page.items:
                if not r.accepted and r.event_id in inputs:
                    dups += 1
                    dups_after += r.ingest_time > cutoff
            if page.next_cursor is None:
                return dups, dups_after
            after = page.next_cursor

    def _diff_without_manifest(
        self, older: AggregateVersion, newer: AggregateVersion, old_missing: bool, new_missing: bool
    ) -> VersionDiff:
        """What can be said of two versions when one has no input manifest (the original kit kept none):
        the values, the input counts, whether the inputs hash changed, and the sample event ids."""
        delta: int | float | None = None
        if isinstance(older.value, int | float) and isinstance(newer.value, int | float):
            delta = newer.value - older.value
        old_sample, new_sample = older.sample_event_ids, newer.sample_event_ids
        diff = VersionDiff(
            entity_id=older.entity_id,
            day=older.day,
            metric=older.metric,
            older=older,
            newer=newer,
            delta=delta,
            added=0,
            removed=0,
            changed=0,
            added_after_older=0,
            added_before_older=0,
            late_lag=None,
            duplicates_excluded=0,
            duplicates_after_older=0,
            definition_changed=older.definition_hash != newer.definition_hash,
            replays=[self._replay(r) for r in newer.replay_ids],
            added_sample=[],
            removed_sample=[],
            explanation=[],
            manifests=False,
            inputs_hash_changed=older.inputs_hash != newer.inputs_hash,
            sample_ids_added=[i for i in new_sample if i not in set(old_sample)],
            sample_ids_removed=[i for i in old_sample if i not in set(new_sample)],
        )
        missing = [v.version for v, gone in ((older, old_missing), (newer, new_missing)) if gone]
        diff.explanation.extend(explain_without_manifest(diff, missing))
        return diff

    def _replay(self, replay_id: str) -> ReplaySummary:
        record = self.audit.get(replay_id) if self.audit is not None else None
        if record is None:
            return ReplaySummary(replay_id=replay_id, known=False)
        return ReplaySummary(
            replay_id=replay_id,
            known=True,
            actor=record.actor,
            started_at=record.started_at,
            outcome=record.outcome.value,
            sent=record.sent,
            scope=describe_scope(record.request),
        )


def explain(d: VersionDiff) -> list[str]:
    """The diff in sentences a user can paste into an incident channel."""
    o, n = d.older, d.newer
    lines = [_headline(d)]
    lines.append(
        f"- Version {o.version} was computed at {o.computed_at} from {_plural(o.input_count, 'event')}; "
        f"version {n.version} at {n.computed_at} from {_plural(n.input_count, 'event')}."
    )
    lines += _input_lines(d)
    if d.definition_changed:
        lines.append(
            f"- The metric's definition changed: {o.definition.model_dump(exclude_none=True)} -> "
            f"{n.definition.model_dump(exclude_none=True)}."
        )
    lines += _replay_lines(d)
    if d.duplicates_excluded:
        since = (
            f" ({d.duplicates_after_older:,} of them arrived after version {o.version} was computed)"
            if d.duplicates_after_older
            else ""
        )
        lines.append(
            f"- {_plural(d.duplicates_excluded, 'duplicate receipt')} of these events "
            f"{'was' if d.duplicates_excluded == 1 else 'were'} excluded: each event counts once{since}."
        )
    else:
        lines.append("- No duplicate receipts: every input was received once.")
    return lines


def explain_without_manifest(d: VersionDiff, missing: list[int]) -> list[str]:
    """The diff in sentences when a version has no input manifest: what the versions themselves hold."""
    o, n = d.older, d.newer
    which = " and ".join(f"version {v}" for v in missing)
    lines = [
        _headline(d),
        f"- Version {o.version} was computed at {o.computed_at} from {_plural(o.input_count, 'event')}; "
        f"version {n.version} at {n.computed_at} from {_plural(n.input_count, 'event')} "
        f"({n.input_count - o.input_count:+,}).",
        f"- There is no input manifest for {which} (the original kit's processor kept only up to 10 "
        "sample event ids), so the events added or removed cannot all be listed.",
        "- The inputs hash changed: the input set (or a payload) is different."
        if d.inputs_hash_changed
        else "- The inputs hash is the same: the same events, with the same payloads.",
    ]
    if d.sample_ids_added or d.sample_ids_removed:
        parts = []
        if d.sample_ids_added:
            parts.append(f"new in version {n.version}: " + ", ".join(i[:12] for i in d.sample_ids_added))
        if d.sample_ids_removed:
            parts.append("gone: " + ", ".join(i[:12] for i in d.sample_ids_removed))
        lines.append("- Among the sample event ids, " + "; ".join(parts) + ".")
    elif o.sample_event_ids or n.sample_event_ids:
        lines.append("- The sample event ids are the same in both versions.")
    if d.definition_changed:
        lines.append("- The two versions were computed by different processors (definitions differ).")
    if n.replay_ids:
        lines += _replay_lines(d)
    else:  # the original kit recorded no replay: not knowing is not "no replay"
        lines.append(f"- No replay is recorded for version {n.version} (the original kit recorded none).")
    return lines


def _headline(d: VersionDiff) -> str:
    """The first sentence: how the value moved between the two versions."""
    o, n = d.older, d.newer
    if d.delta is None:
        change = f"went from {value_text(o.value)} to {value_text(n.value)}"
    elif d.delta == 0:
        change = f"stayed at {value_text(n.value)}"
    else:
        pct = f", {100 * d.delta / o.value:+.1f}%" if o.value else ""
        sign = "+" if d.delta > 0 else "-"
        step = f"{sign}{value_text(abs(d.delta))}{pct}"
        change = f"went from {value_text(o.value)} to {value_text(n.value)} ({step})"
    between = f"version {o.version} and version {n.version}"
    if n.version - o.version > 1:
        between += f" ({_plural(n.version - o.version - 1, 'version')} in between)"
    return f"{d.metric} of {d.entity_id} on {d.day} {change} between {between}."


def _input_lines(d: VersionDiff) -> list[str]:
    """What happened to the inputs: added (late or not), removed, changed, or the same events."""
    o, n = d.older, d.newer
    lines: list[str] = []
    if d.added:
        lines += _added_lines(d)
    if d.removed:
        reason = (
            "the metric's definition changed (its filters now leave them out)"
            if d.definition_changed
            else "the event index is append-only, so this is unexpected: check what wrote version "
            f"{o.version}"
        )
        lines.append(
            f"- {_plural(d.removed, 'input', 'inputs')} of version {o.version} "
            f"{'is' if d.removed == 1 else 'are'} not among the inputs of version {n.version}: {reason}."
        )
    if d.changed:
        lines.append(f"- {_plural(d.changed, 'input has', 'inputs have')} another payload hash than before.")
    if not (d.added or d.removed or d.changed):
        lines.append("- The inputs are the same events.")
    return lines


def _added_lines(d: VersionDiff) -> list[str]:
    """The added inputs: how many, which of them arrived late (and how late), and why the others were not
    among the older version's inputs."""
    o = d.older
    lines: list[str] = []
    text = f"- {_plural(d.added, 'event was', 'events were')} added"
    if d.added_after_older and d.late_lag is not None:
        lag = d.late_lag
        spread = (
            human_ms(lag.min_ms)
            if lag.min_ms == lag.max_ms
            else f"{human_ms(lag.min_ms)} to {human_ms(lag.max_ms)}, median {human_ms(lag.p50_ms)}"
        )
        if d.added == 1:
            who = "it was"
        elif d.added_after_older == d.added:
            who = "all of them were"
        else:
            who = f"{d.added_after_older:,} of them were"
        text += (
            f": {who} ingested after version {o.version} was computed "
            f"({'a late arrival' if d.added_after_older == 1 else 'late arrivals'}), with an ingest lag "
            f"of {spread}"
        )
    lines.append(text + ".")
    if d.added_before_older:
        reason = (
            "the metric's definition changed"
            if d.definition_changed
            else f"version {o.version} was computed from an earlier read of the index"
        )
        lines.append(
            f"- {_plural(d.added_before_older, 'added event was', 'added events were')} already "
            f"ingested when version {o.version} was computed but not among its inputs: {reason}."
        )
    return lines


def _replay_lines(d: VersionDiff) -> list[str]:
    """The replays the newer version was computed after, as the audit trail knows them."""
    n = d.newer
    if not d.replays:
        return [f"- Version {n.version} was not caused by a replay (a direct recompute)."]
    lines = []
    for r in d.replays:
        if r.known:
            lines.append(
                f"- Version {n.version} was computed after replay {r.replay_id}, run by {r.actor} at "
                f"{r.started_at} ({r.outcome}, {_plural(r.sent or 0, 'message')} sent; scope: {r.scope})."
            )
        else:
            lines.append(
                f"- Version {n.version} was computed after replay {r.replay_id} (not in this audit trail)."
            )
    return lines
