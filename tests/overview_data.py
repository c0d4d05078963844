"""A seeded dataset for ``pik overview``: six weeks of three source/types with weekly seasonality, small
background noise (a few duplicates, late events, rejections), and, on request, one planted incident of
every kind in the last two weeks. :data:`PLANTED` says what each incident is and where.

The records go in through the ports (``EventIndex.record``, ``quarantine``, ``AggregateStore.append``) with
the ingest times the scenario needs; the same dataset without incidents has the same shape.
"""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, date, datetime, timedelta
from typing import Any

from backend.identity import raw_key
from backend.model import AggregateVersion, EventRecord, IngestStatus, MetricKind, MetricSpec, Rejection
from backend.ports import ManifestEntry
from backend.times import fmt

FIRST_DAY = date(2025, 11, 3)
DAYS = 42  # 2025-11-03 .. 2025-12-14
LAST_DAY = FIRST_DAY + timedelta(days=DAYS - 1)
SERIES = (("web", "click"), ("app", "heartbeat"), ("billing", "payment"))
ENTITIES = 12
PER_ENTITY_DAY = 30

# (kind, source/type or entity, day): what the incident dataset plants, one of every kind.
PLANTED = {
    ("missing_day", "web/click", "2025-12-03"),
    ("late_day", "app/heartbeat", "2025-12-05"),
    ("missing_day", "app-u05", "2025-12-06"),
    ("lag_spike", "billing/payment", "2025-12-08"),
    ("duplicate_storm", "web/click", "2025-12-09"),
    ("rejection_spike", "app/heartbeat", "2025-12-10"),
    ("clock_skew", "billing-u07", "2025-12-11"),
    ("aggregate_churn", "web-u03", "2025-12-12"),
}


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _record(
    source: str, event_type: str, entity: str, event_time: datetime, ingest_time: datetime, n: int
) -> EventRecord:
    et = fmt(event_time)
    eid = _sha(f"{source}|{event_type}|{entity}|{et}|{n}")
    lag = int((ingest_time - event_time) / timedelta(milliseconds=1))
    day = et[:10]
    return EventRecord(
        event_id=eid,
        status=IngestStatus.ACCEPTED,
        source=source,
        event_type=event_type,
        entity_id=entity,
        event_time=et,
        ingest_time=fmt(ingest_time),
        ingest_lag_ms=max(lag, 0),
        clock_skew=lag < 0,
        payload_sha=_sha("payload " + eid),
        day=day,
        hour=et[11:13],
        s3_key=raw_key(source, event_type, day, eid),
        raw_sha=_sha("raw " + eid),
        raw_size=10,
    )


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def _day_records(
    rng: random.Random, source: str, event_type: str, d: date, incidents: bool
) -> list[EventRecord]:
    day = d.isoformat()
    weekend = d.weekday() >= 5
    out: list[EventRecord] = []
    for u in range(1, ENTITIES + 1):
        entity = f"{source}-u{u:02d}"
        n = round(PER_ENTITY_DAY * (0.6 if weekend else 1.0) * rng.uniform(0.9, 1.1))
        if incidents and (source, day) == ("web", "2025-12-03"):
            n = n // 5  # missing_day: four in five events never arrive
        if incidents and (entity, day) == ("app-u05", "2025-12-06"):
            n = 0  # missing_day of one entity
        for i in range(n):
            t = _midnight(d) + timedelta(seconds=rng.randrange(86_400))
            lag = timedelta(milliseconds=rng.randrange(1_000, 30_000))
            if rng.random() < 0.002:
                lag = timedelta(hours=24 + rng.randrange(2, 8))  # background: a rare late event
            if incidents and (source, day) == ("app", "2025-12-05") and rng.random() < 0.8:
                lag = _midnight(d) + timedelta(days=1, hours=3 + rng.random()) - t  # late_day
            if incidents and (source, day) == ("billing", "2025-12-08") and 10 <= t.hour <= 12:
                lag = timedelta(minutes=45 + rng.randrange(10))  # lag_spike at 10:00-12:59
            if incidents and (entity, day) == ("billing-u07", "2025-12-11"):
                lag = -timedelta(minutes=5)  # clock_skew: the producer's clock runs 5 minutes ahead
            rec = _record(source, event_type, entity, t, t + lag, i)
            out.append(rec)
            copies = 1 if rng.random() < 0.005 else 0  # background: a rare retried delivery
            if incidents and (source, day) == ("web", "2025-12-09") and 14 <= t.hour <= 15:
                copies = 4  # duplicate_storm at 14:00-15:59
            for c in range(copies):
                out.append(
                    rec.model_copy(
                        update={
                            "status": IngestStatus.DUPLICATE,
                            "ingest_time": fmt(t + lag + timedelta(seconds=30 + c)),
                            "raw_sha": _sha(f"dup {c} {rec.event_id}"),
                        }
                    )
                )
    return out


def _rejections(rng: random.Random, d: date, incidents: bool) -> list[Rejection]:
    day = d.isoformat()
    n = rng.randrange(0, 3)
    if incidents and day == "2025-12-10":
        n += 60
    out = []
    for i in range(n):
        reason = (
            "event_time: must be ISO-8601 with a clock time, got 'yesterday'"
            if i % 4
            else "payload: must be an object or an array, got 42"
        )
        body = f"bad request {day} {i}".encode()
        out.append(
            Rejection(
                received_at=fmt(_midnight(d) + timedelta(seconds=rng.randrange(86_400))),
                reason=reason,
                origin="generator",
                line=i + 1,
                size=len(body),
                sha256=hashlib.sha256(body).hexdigest(),
                data=body,
                truncated=False,
                source="app",
                event_type="heartbeat",
            )
        )
    return out


def _version(entity: str, day: str, n: int, value: int) -> tuple[AggregateVersion, list[ManifestEntry]]:
    manifest = [
        ManifestEntry(_sha(f"{entity}{day}{i}"), _sha(str(i)), f"{day}T12:00:00.000Z", 1000)
        for i in range(value)
    ]
    metric = "daily_event_count"
    version = AggregateVersion(
        entity_id=entity,
        day=day,
        metric=metric,
        version=n,
        value=value,
        input_count=value,
        values_used=value,
        inputs_hash=_sha("|".join(sorted(e.event_id for e in manifest))),
        definition=MetricSpec(name=metric, kind=MetricKind.COUNT),
        definition_hash=_sha(metric),
        computed_at=f"{day}T23:0{n}:00.000Z",
        window_start=f"{day}T00:00:00.000Z",
        window_end=fmt(_midnight(date.fromisoformat(day)) + timedelta(days=1)),
        previous_version=n - 1 or None,
    )
    return version, manifest


def build(index: Any, aggregates: Any, *, incidents: bool, seed: int = 18) -> int:
    """Write the dataset (with the planted incidents when ``incidents``); returns how many receipts."""
    rng = random.Random(seed)
    receipts = 0
    for k in range(DAYS):
        d = FIRST_DAY + timedelta(days=k)
        batch: list[EventRecord] = []
        for source, event_type in SERIES:
            batch += _day_records(rng, source, event_type, d, incidents)
        index.record(batch)
        receipts += len(batch)
        rejected = _rejections(rng, d, incidents)
        if rejected:
            index.quarantine(rejected)
    # Aggregates: one version of a few windows, a second with a small correction, and (planted) a window
    # recomputed four times whose value grew by 80%.
    windows = [("web-u01", "2025-12-12", [20]), ("app-u02", "2025-12-10", [21, 22])]
    windows.append(("web-u03", "2025-12-12", [10, 11, 14, 18] if incidents else [10]))
    for entity, day, values in windows:
        for n, value in enumerate(values, start=1):
            aggregates.append(*_version(entity, day, n, value))
    return receipts
