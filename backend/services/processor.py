"""The processor: replay messages in, versioned aggregates out (DESIGN invariants 5 and 6).

For every (entity, day) window that a batch of messages touches, each metric is recomputed from the
**whole window in the index** (accepted receipts only, so a duplicate never counts twice), not from the
messages that happen to share the batch. A new version is written only when the input set (or the metric's
definition) changed; otherwise the recompute is counted as unchanged.

Versions are appended with a conditional write. The order of reads is what keeps concurrent processors
honest: the latest version is read *before* the window, so a processor that sees version n saw at least
the inputs of version n (the index only grows). If the write loses the race for the next number, the
window is read again and the decision made again: nothing is overwritten, no number is skipped, and a
newer version never has fewer inputs than an older one.

A message that cannot be read, or whose window cannot be recomputed, is a failed record (never a crash);
the caller returns it to the queue (an SQS partial batch response), and after repeated failures the queue
moves it to its dead-letter queue.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple

import orjson

from backend.errors import InvalidRequest, ReadOnlyError, StoreError
from backend.identity import canonical_json, carried_payload
from backend.model import AggregateVersion, MetricKind, MetricSpec
from backend.ports import (
    AggregateStore,
    DayCount,
    InvestigationIndex,
    LatestVersions,
    ManifestEntry,
    RawCatalog,
    Receipt,
    WindowInputs,
    WindowInputsIndex,
)
from backend.times import Clock, TimeFormatError, fmt, parse_iso

DAILY_EVENT_COUNT = MetricSpec(name="daily_event_count", kind=MetricKind.COUNT)
"""The seed's metric: accepted events of the entity that day."""
SCAN_PAGE = 5000
SAMPLE_IDS = 5
HASH_LINES = 4096
# Lost races for the next version number before a window is given up (its messages then fail and retry).
MAX_ATTEMPTS = 5

_MISSING = object()


def metrics_with_default(defined: Sequence[MetricSpec]) -> list[MetricSpec]:
    """``daily_event_count`` followed by ``defined``; InvalidRequest for a repeated name or a metric that
    needs a payload field and has none (or has one it cannot use)."""
    out = [DAILY_EVENT_COUNT]
    for m in defined:
        if any(o.name == m.name for o in out):
            raise InvalidRequest(f"metric {m.name!r} is defined twice (daily_event_count is built in)")
        if m.kind is MetricKind.COUNT and m.field is not None:
            raise InvalidRequest(f"metric {m.name!r}: a count takes no field")
        if m.kind is not MetricKind.COUNT and not m.field:
            raise InvalidRequest(f"metric {m.name!r}: a {m.kind.value} needs a payload field")
        out.append(m)
    return out


def definition_hash(metric: MetricSpec) -> str:
    return hashlib.sha256(canonical_json(metric.model_dump(mode="json"))).hexdigest()


def inputs_hash(entries: Sequence[ManifestEntry]) -> str:
    """sha256 of the sorted ``event_id:payload_sha`` lines of a manifest (sorted by event id)."""
    digest = hashlib.sha256()
    for i in range(0, len(entries), HASH_LINES):
        # Lines joined a few thousand at a time: an update per line made a 300k-event window's hash 3x slower.
        part = entries[i : i + HASH_LINES]
        digest.update("".join([f"{e.event_id}:{e.payload_sha}\n" for e in part]).encode("ascii"))
    return digest.hexdigest()


def field_value(payload: Any, path: str) -> Any:
    """The value at a dotted ``path`` in a payload, or a private marker when it is not there."""
    value = payload
    for part in path.split("."):
        if isinstance(value, dict) and part in value:
            value = value[part]
        else:
            return _MISSING
    return value


def _number(value: Any) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _distinct_key(value: Any) -> bytes:
    # 1 and 1.0 are one JSON number.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return canonical_json(value)


def compute(metric: MetricSpec, payloads: Sequence[Any]) -> tuple[int | float | None, int]:
    """The metric's value over the payloads of its inputs (in manifest order), and how many inputs gave
    it a value. Sums of integers stay integers; a min, max or avg of nothing is None."""
    if metric.kind is MetricKind.COUNT:
        return len(payloads), len(payloads)
    assert metric.field is not None
    raw = [field_value(p, metric.field) for p in payloads]
    if metric.kind is MetricKind.DISTINCT:
        present = [v for v in raw if v is not _MISSING]
        return len({_distinct_key(v) for v in present}), len(present)
    numbers = [n for n in (_number(v) for v in raw) if n is not None]
    if metric.kind is MetricKind.SUM:
        if all(isinstance(n, int) for n in numbers):
            return sum(numbers), len(numbers)
        return math.fsum(numbers), len(numbers)
    if not numbers:
        return None, 0
    if metric.kind is MetricKind.MIN:
        return min(numbers), len(numbers)
    if metric.kind is MetricKind.MAX:
        return max(numbers), len(numbers)
    return math.fsum(numbers) / len(numbers), len(numbers)


def _current(latest: AggregateVersion, metric: MetricSpec, window_events: int) -> bool:
    """Whether ``latest`` is still the metric's value: same definition, and the window holds as many
    accepted events as when it was computed (the window only grows, so it holds the same ones)."""
    return latest.window_events == window_events and latest.definition_hash == definition_hash(metric)


def _matches(metric: MetricSpec, source: str, event_type: str) -> bool:
    """Whether an event of ``source`` and ``event_type`` passes the metric's filters."""
    return (metric.event_type is None or event_type == metric.event_type) and (
        metric.source is None or source == metric.source
    )


# -- results -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricResult:
    """What a recompute did for one metric of one window."""

    metric: str
    written: bool  # a new version was written (or would be, in a dry run)
    version: AggregateVersion  # the new version, or the latest one when unchanged
    manifest: Sequence[ManifestEntry] = ()  # the new version's inputs (empty when unchanged)


@dataclass(slots=True)
class WindowResult:
    entity_id: str
    day: str
    inputs: int  # accepted events in the window
    metrics: list[MetricResult] = field(default_factory=list)


@dataclass(slots=True)
class BatchResult:
    """A batch of messages processed: which ones failed (by position) and why, and what was recomputed."""

    received: int = 0
    failed: dict[int, str] = field(default_factory=dict)
    windows: list[WindowResult] = field(default_factory=list)
    dry_run: bool = False

    @property
    def processed(self) -> int:
        return self.received - len(self.failed)

    @property
    def written(self) -> int:
        return sum(m.written for w in self.windows for m in w.metrics)

    @property
    def unchanged(self) -> int:
        return sum(not m.written for w in self.windows for m in w.metrics)

    def batch_item_failures(self, message_ids: Sequence[str]) -> dict[str, Any]:
        """The SQS partial batch response for the batch whose messages had ``message_ids``."""
        return {"batchItemFailures": [{"itemIdentifier": message_ids[i]} for i in sorted(self.failed)]}


class MessageWindow(NamedTuple):
    """What a replay message asks for: its (entity, day) window, and the replay that sent it."""

    entity_id: str
    day: str
    replay_id: str | None


# The stored time form (``YYYY-MM-DDTHH:MM:SS.mmmZ``) with a clock time in range: such a time's UTC day is
# its date, if the date exists (_is_day, asked once per date).
_STORED_TIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z", re.ASCII
)


@functools.lru_cache(maxsize=4096)
def _is_day(day: str) -> bool:
    try:
        return fmt(parse_iso(f"{day}T00:00:00.000Z"))[:10] == day
    except TimeFormatError:
        return False


def parse_message(body: str) -> MessageWindow:
    """A replay message's window; InvalidRequest says what is wrong with a malformed one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses and json reads (NaN, a lone surrogate) is read as before
            data = json.loads(body)
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"the message is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("the message is not a JSON object")
    entity, event_time, replay_id = data.get("entity_id"), data.get("event_time"), data.get("replay_id")
    if not isinstance(entity, str) or not entity:
        raise InvalidRequest("the message has no entity_id")
    if not isinstance(event_time, str):
        raise InvalidRequest("the message has no event_time")
    stored = _STORED_TIME.fullmatch(event_time)
    if stored is not None and _is_day(stored[1]):
        day = stored[1]  # the form a replay writes, in UTC: its day is its first ten characters
    else:
        try:
            day = fmt(parse_iso(event_time, what="event_time"))[:10]
        except TimeFormatError as exc:
            raise InvalidRequest(str(exc)) from None
    if replay_id is not None and not isinstance(replay_id, str):
        raise InvalidRequest("the message's replay_id is not a string")
    return MessageWindow(entity, day, replay_id)


# -- the service ---------------------------------------------------------------------------------------------


class ProcessorService:
    """Recompute aggregate windows from the index and append versions.

    ``metrics`` are the workspace's metrics (``daily_event_count`` is always first). With ``dry_run``
    (the seed's DRY_RUN) everything is computed and reported, nothing is written. With ``read_only`` only a
    dry run is allowed: a real one is refused with :class:`ReadOnlyError` before anything is read.
    """

    def __init__(
        self,
        scans: InvestigationIndex,
        catalog: RawCatalog,
        aggregates: AggregateStore,
        metrics: Sequence[MetricSpec] = (),
        *,
        clock: Clock | None = None,
        dry_run: bool = False,
        read_only: bool = False,
    ) -> None:
        self.scans = scans
        self.catalog = catalog
        self.aggregates = aggregates
        self.metrics = metrics_with_default(metrics)
        self.clock = clock or Clock()
        self.dry_run = dry_run
        self.read_only = read_only

    def _check_writable(self) -> None:
        if self.read_only and not self.dry_run:
            raise ReadOnlyError(
                "the processor writes aggregate versions: not in read-only mode (a dry run is allowed)"
            )

    def process(self, bodies: Sequence[str]) -> BatchResult:
        """Process a batch of message bodies. Never raises for a bad message or a failed window: those
        messages are in ``failed``, for the caller to return to the queue. ReadOnlyError (nothing read or
        written) when read-only and not a dry run."""
        self._check_writable()
        result = BatchResult(received=len(bodies), dry_run=self.dry_run)
        windows: dict[tuple[str, str], list[int]] = {}
        replays: dict[tuple[str, str], set[str]] = {}
        for i, body in enumerate(bodies):
            try:
                message = parse_message(body)
            except InvalidRequest as exc:
                result.failed[i] = f"malformed message: {exc}"
                continue
            key = (message.entity_id, message.day)
            windows.setdefault(key, []).append(i)
            if message.replay_id:
                replays.setdefault(key, set()).add(message.replay_id)
        outcomes = self.recompute_windows({key: sorted(replays.get(key, ())) for key in windows})
        for key, outcome in outcomes.items():
            if isinstance(outcome, WindowResult):
                result.windows.append(outcome)
            else:
                for i in windows[key]:
                    result.failed[i] = outcome
        return result

    def prefetch(self, windows: Sequence[tuple[str, str]]) -> Prefetched | None:
        """The latest versions of every metric of ``windows`` and then their counts, read in bulk when the
        aggregate store can (:class:`LatestVersions`: O(pages), not a read per window and metric); None
        when it cannot (each window then reads its own)."""
        if not windows or not isinstance(self.aggregates, LatestVersions):
            return None
        try:
            latest = self.aggregates.latest_many(windows, [m.name for m in self.metrics])
            # After the versions (see the module docstring): the window only grows.
            return Prefetched(latest, window_counts(self.scans, windows))
        except StoreError:
            return None  # each window reads its own, and fails (or not) on its own

    def recompute_windows(
        self, windows: Mapping[tuple[str, str], Sequence[str]], prefetched: Prefetched | None = None
    ) -> dict[tuple[str, str], WindowResult | str]:
        """Recompute each (entity, day) window of ``windows`` once, with the replay ids given for it (in
        that order), in the order given. Each window maps to its result, or to why it failed: one window's
        failure does not fail the others. ``prefetched`` (default: :meth:`prefetch` of the windows) is what
        the first attempt at each window starts from. ReadOnlyError (nothing read or written) when read-only
        and not a dry run."""
        self._check_writable()
        if prefetched is None:
            prefetched = self.prefetch(list(windows))
        out: dict[tuple[str, str], WindowResult | str] = {}
        for (entity_id, day), replay_ids in windows.items():
            try:
                out[(entity_id, day)] = (
                    self.recompute(entity_id, day, replay_ids)
                    if prefetched is None
                    else self.recompute(entity_id, day, replay_ids, prefetched)
                )
            except Exception as exc:  # one window's failure must not fail the others' messages
                out[(entity_id, day)] = (
                    f"recomputing {entity_id!r} on {day} failed: {type(exc).__name__}: {exc}"
                )
        return out

    def recompute(
        self, entity_id: str, day: str, replay_ids: Sequence[str] = (), prefetched: Prefetched | None = None
    ) -> WindowResult:
        """Recompute every metric of one window and append the versions whose inputs changed; the first
        attempt starts from ``prefetched`` when it holds the window (a lost race reads again).
        ReadOnlyError (nothing read or written) when read-only and not a dry run."""
        self._check_writable()
        start = f"{day}T00:00:00.000Z"
        end = f"{(date.fromisoformat(day) + timedelta(days=1)).isoformat()}T00:00:00.000Z"
        pending = list(self.metrics)
        done: dict[str, MetricResult] = {}
        inputs = 0
        known = prefetched.of(entity_id, day, pending) if prefetched is not None else None
        for _ in range(MAX_ATTEMPTS):
            # The latest versions first, then the window: see the module docstring.
            if known is not None:
                latest, count = known
                known = None
            else:
                latest = {m.name: self.aggregates.latest(entity_id, day, m.name) for m in pending}
                count = self._window_count(entity_id, day, end[:10])
            current = {m.name: v for m in pending if (v := latest[m.name]) and _current(v, m, count)}
            if len(current) == len(pending):
                # Nothing arrived since these versions were computed: no need to read the window.
                done.update((name, MetricResult(name, False, v)) for name, v in current.items())
                inputs = count
                break
            window, payloads = self._read_window(entity_id, start, end, pending)
            inputs = len(window.entries)
            # Metrics with the same filters share their input set, manifest and hash.
            groups: dict[tuple[str | None, str | None], _Inputs] = {}
            lost: list[MetricSpec] = []
            for metric in pending:
                key = (metric.event_type, metric.source)
                if key not in groups:
                    groups[key] = _Inputs.of(window, metric)
                outcome = self._one(
                    metric, entity_id, day, (start, end), groups[key], payloads, latest[metric.name],
                    replay_ids, inputs,
                )  # fmt: skip
                if outcome is None:
                    lost.append(metric)
                else:
                    done[metric.name] = outcome
            pending = lost
            if not pending:
                break
        else:
            raise StoreError(
                f"{len(pending)} metrics of {entity_id!r} on {day} lost the race for their next version "
                f"{MAX_ATTEMPTS} times; the message will be retried"
            )
        return WindowResult(entity_id, day, inputs, [done[m.name] for m in self.metrics])

    def _window_count(self, entity_id: str, day: str, end_day: str) -> int:
        """Accepted events of the window now (one count, no rows)."""
        return sum(c.accepted for c in self.scans.day_counts_entity(entity_id, day, end_day))

    def _read_window(
        self, entity_id: str, start: str, end: str, metrics: Sequence[MetricSpec]
    ) -> tuple[WindowInputs, dict[str, Any]]:
        """The window's inputs, and the payloads by event id that the field metrics among ``metrics`` need.
        Without field metrics, one read of the index when it can (:class:`WindowInputsIndex`)."""
        if not any(m.field for m in metrics) and isinstance(self.scans, WindowInputsIndex):
            return self.scans.window_inputs(entity_id, start, end), {}
        receipts = self._window(entity_id, start, end)
        window = WindowInputs(
            [ManifestEntry(r.event_id, r.payload_sha, r.ingest_time, r.ingest_lag_ms) for r in receipts],
            [(r.source, r.event_type) for r in receipts],
        )
        return window, self._payloads(receipts, metrics)

    def _window(self, entity_id: str, start: str, end: str) -> list[Receipt]:
        receipts: list[Receipt] = []
        after: str | None = None
        while True:
            page = self.scans.scan_entity(
                entity_id, start, end, accepted_only=True, limit=SCAN_PAGE, after=after
            )
            receipts.extend(page.items)
            if page.next_cursor is None:
                break
            after = page.next_cursor
        receipts.sort(key=lambda r: r.event_id)
        return receipts

    def _payloads(self, receipts: Sequence[Receipt], metrics: Sequence[MetricSpec]) -> dict[str, Any]:
        """Payloads by event id, for the events a field metric needs: the ones the index carries (checked
        against their payload_sha) from the receipts already read, the others from the raw store in bulk."""
        out: dict[str, Any] = {}
        needed: list[Receipt] = []
        for r in receipts:
            if not any(m.field and _matches(m, r.source, r.event_type) for m in metrics):
                continue
            carried, payload = carried_payload(r.payload, r.payload_sha)
            if carried:
                out[r.event_id] = payload
            else:
                needed.append(r)
        if not needed:
            return out
        stored = self.catalog.get_many([r.s3_key for r in needed])
        for r in needed:
            data = stored.get(r.s3_key)
            if data is None:
                raise StoreError(f"the raw bytes of event {r.event_id} are missing at {r.s3_key}")
            try:
                out[r.event_id] = json.loads(data).get("payload")
            except (ValueError, AttributeError):
                raise StoreError(
                    f"the raw bytes of event {r.event_id} at {r.s3_key} are not an event"
                ) from None
        return out

    def _one(
        self,
        metric: MetricSpec,
        entity_id: str,
        day: str,
        window: tuple[str, str],
        inputs: _Inputs,
        payloads: dict[str, Any],
        latest: AggregateVersion | None,
        replay_ids: Sequence[str],
        window_events: int,
    ) -> MetricResult | None:
        """One metric of one window; None when another processor took the version number first."""
        definition = definition_hash(metric)
        if (
            latest is not None
            and latest.inputs_hash == inputs.digest
            and latest.definition_hash == definition
        ):
            return MetricResult(metric.name, False, latest)
        entries = inputs.manifest
        value, used = compute(
            metric, [payloads.get(e.event_id) for e in entries] if metric.field else entries
        )
        version = AggregateVersion(
            entity_id=entity_id,
            day=day,
            metric=metric.name,
            version=latest.version + 1 if latest else 1,
            value=value,
            input_count=len(entries),
            values_used=used,
            inputs_hash=inputs.digest,
            definition=metric,
            definition_hash=definition,
            computed_at=fmt(self.clock.now()),
            window_start=window[0],
            window_end=window[1],
            replay_ids=list(replay_ids),
            previous_version=latest.version if latest else None,
            previous_value=latest.value if latest else None,
            sample_event_ids=[e.event_id for e in entries[:SAMPLE_IDS]],
            window_events=window_events,
        )
        if self.dry_run or self.aggregates.append(version, inputs.manifest):
            return MetricResult(metric.name, True, version, inputs.manifest)
        return None


@dataclass(frozen=True, slots=True)
class Prefetched:
    """What was read for many windows before any of them: the latest version of each (entity, day,
    metric), then each window's receipt counts (a window without receipts is left out)."""

    latest: Mapping[tuple[str, str, str], AggregateVersion | None]
    counts: Mapping[tuple[str, str], DayCount]

    def of(
        self, entity_id: str, day: str, metrics: Sequence[MetricSpec]
    ) -> tuple[dict[str, AggregateVersion | None], int] | None:
        """The latest versions of ``metrics`` and the accepted events of one window; None if not read."""
        keys = [(entity_id, day, m.name) for m in metrics]
        if any(k not in self.latest for k in keys):
            return None
        count = self.counts.get((entity_id, day))
        return {k[2]: self.latest[k] for k in keys}, count.accepted if count is not None else 0


def window_counts(
    scans: InvestigationIndex, windows: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], DayCount]:
    """The receipt counts of each window (no rows): one count per entity over the span of its days, so
    that many days of one entity are asked once (unless they are so far apart that the span would count
    mostly others). A window without receipts is left out."""
    days: dict[str, list[str]] = {}
    for entity_id, day in windows:
        days.setdefault(entity_id, []).append(day)
    wanted = set(windows)
    out: dict[tuple[str, str], DayCount] = {}
    for entity_id, some in days.items():
        first, last = date.fromisoformat(min(some)), date.fromisoformat(max(some))
        spans = (
            [(first, last)]
            if (last - first).days < 2 * len(some)
            else [(date.fromisoformat(d), date.fromisoformat(d)) for d in some]
        )
        for a, b in spans:
            end = (b + timedelta(days=1)).isoformat()
            for c in scans.day_counts_entity(entity_id, a.isoformat(), end, late=False):
                if (entity_id, c.day) in wanted:
                    out[(entity_id, c.day)] = c
    return out


@dataclass(frozen=True, slots=True)
class _Inputs:
    """The inputs of a metric in one window: its manifest (sorted by event id) and the manifest's hash."""

    manifest: list[ManifestEntry]
    digest: str

    @staticmethod
    def of(window: WindowInputs, metric: MetricSpec) -> _Inputs:
        """The inputs among ``window``'s that pass ``metric``'s event type and source filters."""
        if metric.event_type is None and metric.source is None:
            manifest = window.entries
        else:
            manifest = [
                e
                for e, (source, event_type) in zip(window.entries, window.streams, strict=True)
                if _matches(metric, source, event_type)
            ]
        return _Inputs(manifest, inputs_hash(manifest))
