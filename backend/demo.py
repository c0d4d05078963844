"""The demo workspace: a deterministic incident, built through the real ingest path with a scripted clock.

Two weeks of events from three sources for 50 users, with the incidents a data engineer meets:

* **missing day, late arrival** — mobile events of 2025-12-22 never arrived that day (an SDK outage); they
  were backfilled two days late, on 2025-12-24 between 09:00 and 11:00 UTC;
* **duplicate storm** — on 2025-12-26 18:00-19:00 the billing client retried every purchase 3-8 times (some
  retries changed an extra field, so their bytes differ; the idempotency key makes them one event);
* **proxy replay** — a proxy re-sent a batch of web clicks of 2025-12-25 byte for byte an hour later;
* **clock skew** — user_007's phone ran three minutes fast on 2025-12-26;
* **rejections** — malformed and invalid events, quarantined with their reasons;
* **hostile text** — an entity id and payload holding Rich markup and ANSI escapes, which every view must
  show literally.

The pipeline downstream runs as well, through the real replay and processor services on the same scripted
clock: a nightly job computes every (entity, day) at 00:30 the next day (version 1, so 2025-12-22 is
computed without its mobile events); after the backfill the on-call engineer previews and replays the
mobile heartbeats of 2025-12-22 and runs the processor (version 2 of those windows: the late arrivals);
and a replay of the storm's purchases with their duplicate receipts shows that duplicates never count twice
(the processor finds the inputs unchanged and writes no version).
"""

from __future__ import annotations

import json
import random
from collections import deque
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from backend.model import ReplayRequest
from backend.ports import EventIndex, RawStore
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService
from backend.services.replay import ReplayService
from backend.times import Clock, FixedClock, fmt

DEMO_VERSION = "2"
SEED = 20251228
FIRST_DAY = datetime(2025, 12, 15, tzinfo=UTC)
DAYS = 14
ENTITIES = [f"user_{n:03d}" for n in range(1, 51)]
OUTAGE_DAY = datetime(2025, 12, 22, tzinfo=UTC)
BACKFILL_AT = datetime(2025, 12, 24, 9, tzinfo=UTC)
STORM_START = datetime(2025, 12, 26, 18, tzinfo=UTC)
SKEWED_ENTITY = "user_007"
SKEW_DAY = datetime(2025, 12, 26, tzinfo=UTC)
HOSTILE_ENTITY = "[bold red]pwned[/bold red]"
NIGHTLY_AT = timedelta(minutes=30)  # after midnight: the nightly job computes the day before
ONCALL = "oncall@demo"
# The on-call replays after the backfill, and the storm replay the next morning.
BACKFILL_REPLAY_AT = datetime(2025, 12, 24, 12, 0, tzinfo=UTC)
STORM_REPLAY_AT = datetime(2025, 12, 27, 10, 0, tzinfo=UTC)
DEMO_SETTINGS = """# The demo's metrics (see backend/settings.py); daily_event_count is built in.
[replay]
confirm_above = 1000

[[metrics]]
name = "steps_total"
kind = "sum"
field = "steps"
event_type = "heartbeat"

[[metrics]]
name = "purchases_eur_cents"
kind = "sum"
field = "amount_cents"
event_type = "purchase"
"""

STORY = """What happened in this workspace (the demo incident):
  - mobile events of 2025-12-22 never arrived that day (an SDK outage) and were backfilled
    two days late, on 2025-12-24 09:00-11:00 UTC. Largest lag first:
      pik events --source mobile --type heartbeat --day 2025-12-22 --desc{ws}
  - a duplicate storm: the billing client retried each purchase 3-8 times on 2025-12-26 18:00-19:00.
      pik events --source billing --type purchase --day 2025-12-26 --status DUPLICATE{ws}
  - a proxy re-sent web clicks of 2025-12-25 byte for byte an hour later.
  - user_007's phone clock ran three minutes fast on 2025-12-26 (lag stored as 0, flagged as skew).
      pik events --entity user_007 --start 2025-12-26 --end 2025-12-27{ws}
  - producers sent invalid events; each is quarantined with its reason and bytes.
      pik events --status REJECTED{ws}
  - the nightly job computed 2025-12-22 before the backfill; a replay after it made version 2.
      pik aggregates --entity user_001 --day 2025-12-22{ws}
      pik diff --entity user_001 --day 2025-12-22 --metric steps_total{ws}"""


class ScriptedClock(Clock):
    """Returns the given times one call at a time: ingest reads the clock once per request, in order."""

    def __init__(self) -> None:
        self._times: deque[datetime] = deque()
        self._last = FIRST_DAY

    def push(self, when: datetime) -> None:
        self._times.append(when)

    def now(self) -> datetime:
        if self._times:
            self._last = self._times.popleft()
        return self._last


def _body(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _iso(when: datetime) -> str:
    return fmt(when)


def deliveries(rng: random.Random) -> list[tuple[datetime, bytes]]:
    """Every request of the demo with the time it reaches ingest, in arrival order."""
    # Long on purpose: this is the incident's script, one paragraph per thing that goes wrong, in the order
    # README and STORY tell it; split into functions it would no longer read as one story.
    out: list[tuple[datetime, bytes]] = []

    def send(event: dict[str, Any], at: datetime) -> None:
        out.append((at, _body(event)))

    for d in range(DAYS):
        day = FIRST_DAY + timedelta(days=d)
        for n, entity in enumerate(ENTITIES):
            for _ in range(rng.randint(2, 4)):
                t = day + timedelta(
                    seconds=rng.randint(6 * 3600, 23 * 3600), milliseconds=rng.randint(0, 999)
                )
                ev = {
                    "source": "web",
                    "event_type": "page_view",
                    "entity_id": entity,
                    "event_time": _iso(t),
                    "payload": {
                        "path": rng.choice(["/", "/pricing", "/docs", "/account"]),
                        "ms": rng.randint(20, 900),
                    },
                }
                send(ev, t + timedelta(milliseconds=rng.randint(150, 5000)))
            for _ in range(rng.randint(1, 3)):
                t = day + timedelta(
                    seconds=rng.randint(6 * 3600, 23 * 3600), milliseconds=rng.randint(0, 999)
                )
                ev = {
                    "source": "web",
                    "event_type": "click",
                    "entity_id": entity,
                    "event_time": _iso(t),
                    "payload": {"target": rng.choice(["buy", "signup", "share", "help"])},
                }
                at = t + timedelta(milliseconds=rng.randint(150, 5000))
                send(ev, at)
                if day.day == 25 and n % 3 == 0:  # the proxy replay, an hour later, same bytes
                    send(ev, at + timedelta(hours=1))
            for h in range(rng.randint(3, 5)):
                t = day + timedelta(
                    hours=6 + 4 * h, seconds=rng.randint(0, 3599), milliseconds=rng.randint(0, 999)
                )
                ev = {
                    "source": "mobile",
                    "event_type": "heartbeat",
                    "entity_id": entity,
                    "event_time": _iso(t),
                    "payload": {"steps": rng.randint(0, 2500), "battery": rng.randint(5, 100)},
                }
                at = t + timedelta(seconds=rng.randint(1, 120))
                if rng.random() < 0.03:
                    at += timedelta(minutes=rng.randint(5, 40))  # the ordinary long tail
                if day == OUTAGE_DAY:
                    at = BACKFILL_AT + timedelta(seconds=rng.randint(0, 7200))
                if entity == SKEWED_ENTITY and day == SKEW_DAY:
                    t += timedelta(minutes=3)  # the phone's clock is ahead: the event claims a later time
                    ev["event_time"] = _iso(t)
                    at = t - timedelta(minutes=3) + timedelta(seconds=rng.randint(1, 20))
                send(ev, at)
            t = day + timedelta(hours=rng.randint(6, 10), seconds=rng.randint(0, 3599))
            ev = {
                "source": "mobile",
                "event_type": "session_start",
                "entity_id": entity,
                "event_time": _iso(t),
                "payload": {"app_version": "4.2.1" if d < 10 else "4.3.0"},
            }
            send(
                ev,
                BACKFILL_AT + timedelta(seconds=rng.randint(0, 7200))
                if day == OUTAGE_DAY
                else t + timedelta(seconds=3),
            )
            if rng.random() < 0.35 or (d == 11 and n % 2 == 0):
                storm = d == 11 and n % 2 == 0
                t = (
                    (STORM_START + timedelta(seconds=rng.randint(0, 3000)))
                    if storm
                    else (day + timedelta(seconds=rng.randint(8 * 3600, 22 * 3600)))
                )
                order = f"ord-{d:02d}{n:03d}"
                ev = {
                    "source": "billing",
                    "event_type": "purchase",
                    "entity_id": entity,
                    "event_time": _iso(t),
                    "payload": {
                        "amount_cents": rng.randint(499, 19999),
                        "currency": "EUR",
                        "order_id": order,
                    },
                    "idempotency_key": order,
                }
                at = t + timedelta(milliseconds=rng.randint(300, 8000))
                send(ev, at)
                if storm:
                    for attempt in range(2, rng.randint(3, 8) + 1):
                        at += timedelta(seconds=rng.randint(2, 40))
                        retry: dict[str, Any] = dict(ev)
                        if attempt % 3 == 0:
                            retry["attempt"] = attempt  # an extra field: other bytes, same event
                        send(retry, at)

    hostile_t = datetime(2025, 12, 27, 12, 0, tzinfo=UTC)
    send(
        {
            "source": "web",
            "event_type": "page_view",
            "entity_id": HOSTILE_ENTITY,
            "event_time": _iso(hostile_t),
            "payload": {
                "path": "/\x1b[2J\x1b[31mred\x1b[0m",
                "note": "[link=https://example.invalid]x[/link]",
            },
        },
        hostile_t + timedelta(seconds=2),
    )
    bad_at = datetime(2025, 12, 20, 14, tzinfo=UTC)
    ok = '"event_time":"2025-12-20T13:59:00Z"'
    bad = [
        '{"source":"web","event_type":"click","entity_id":"user_010",' + ok + ",",  # cut off mid-line
        '{"source":"web app","event_type":"click","entity_id":"user_011",' + ok + ',"payload":{}}',
        '{"source":"web","event_type":"click","entity_id":"user_012",' + ok + ',"payload":"clicked"}',
        '{"source":"mobile","event_type":"heartbeat","entity_id":"user_013","event_time":"yesterday","payload":{}}',
        '{"source":"mobile","event_type":"heartbeat","entity_id":"user_014",'
        '"event_time":"2025-12-31T23:59:60Z","payload":{}}',
        '{"source":"mobile","event_type":"heartbeat",' + ok + ',"payload":{}}',
        '{"source":"billing","event_type":"purchase","entity_id":"user_015",'
        + ok
        + ',"payload":{"amount":NaN}}',
        '{"source":"mobile","event_type":"heartbeat","entity_id":"user_016",'
        '"event_time":"0001-01-01T00:00:00Z","payload":{}}',
        '{"source":"web","event_type":"click","entity_id":"user\\u0007bell",' + ok + ',"payload":{}}',
        "",
    ]
    for i, body in enumerate([b.encode() for b in bad] + [b'\xff\xfe{"source":"web"}']):
        out.append((bad_at + timedelta(minutes=7 * i), body))
    out.sort(key=lambda item: item[0])
    return out


def demo_state(store: Any) -> str:
    """``ready``, ``missing`` (empty workspace), ``incomplete`` or ``foreign`` (not a demo)."""
    version = store.meta_get("demo_version")
    if version == DEMO_VERSION:
        return "ready"
    if version is not None or store.meta_get("demo_build") is not None:
        return "incomplete"
    stats = store.stats()
    if stats.accepted or stats.duplicate or stats.rejected:
        return "foreign"
    return "missing"


def build_demo(store: Any, raw: RawStore | None = None, index: EventIndex | None = None) -> None:
    """Build the whole demo into ``store`` (a local workspace): every request through
    :class:`IngestService`, and at their times the nightly processor runs and the on-call's replays
    through :class:`ReplayService` and :class:`ProcessorService`."""
    from backend.adapters.local.workspace import local_ports
    from backend.settings import SETTINGS_FILE, parse_settings

    store.meta_put("demo_build", "started")
    settings_path = Path(store.path) / SETTINGS_FILE
    if not settings_path.exists():
        settings_path.write_text(DEMO_SETTINGS, encoding="utf-8")
    settings = parse_settings(settings_path.read_text(encoding="utf-8"), str(settings_path))
    clock = ScriptedClock()
    service = IngestService(raw or store, index or store, clock)
    jobs_clock = FixedClock(FIRST_DAY)
    ports = local_ports(store, max_receives=settings.queue.max_receives, clock=jobs_clock)
    processor = ProcessorService(
        ports.investigate, ports.catalog, ports.aggregates, settings.metrics, clock=jobs_clock
    )
    replays = ReplayService(
        ports.investigate, ports.catalog, ports.audit, queue=ports.queue, aggregates=ports.aggregates,
        clock=jobs_clock, bucket=store.location, confirm_above=settings.replay.confirm_above,
    )  # fmt: skip
    items = deliveries(random.Random(SEED))
    jobs = _jobs(processor, replays, ports.queue)
    position = 0
    for when, job in sorted(jobs, key=lambda j: j[0]):
        end = position
        while end < len(items) and items[end][0] < when:
            end += 1
        _ingest(service, clock, items, position, end)
        position = end
        jobs_clock.set(when)
        job()
    _ingest(service, clock, items, position, len(items))
    store.meta_put("demo_version", DEMO_VERSION)


def _ingest(
    service: IngestService, clock: ScriptedClock, items: list[tuple[datetime, bytes]], a: int, b: int
) -> None:
    def feed() -> Iterator[Received]:
        for n in range(a, b):
            at, body = items[n]
            clock.push(at)
            yield Received(body, "demo", n + 1)

    for _ in service.ingest_stream(feed(), batch_size=2000):
        pass


def _jobs(processor: ProcessorService, replays: ReplayService, queue: Any) -> list[tuple[datetime, Any]]:
    """The demo's downstream pipeline: (when, what) pairs, run between the ingests at their times."""
    jobs: list[tuple[datetime, Any]] = []
    for d in range(DAYS):
        day = (FIRST_DAY + timedelta(days=d)).date().isoformat()
        entities = [*ENTITIES, HOSTILE_ENTITY] if day == "2025-12-27" else ENTITIES

        def nightly(day: str = day, entities: list[str] = entities) -> None:
            for entity in entities:
                processor.recompute(entity, day)

        jobs.append((FIRST_DAY + timedelta(days=d + 1) + NIGHTLY_AT, nightly))

    def replay(request: ReplayRequest) -> None:
        # As the on-call does it: preview (a DRY_RUN in the audit trail), then send exactly that plan.
        plan = replays.plan(request, actor=ONCALL)
        replays.execute(request, actor=ONCALL, expected_fingerprint=plan.fingerprint)
        while True:
            messages = queue.receive(10, 30)
            if not messages:
                return
            result = processor.process([m.body for m in messages])
            queue.delete([m.receipt_handle for i, m in enumerate(messages) if i not in result.failed])
            queue.release([m.receipt_handle for i, m in enumerate(messages) if i in result.failed])

    outage = OUTAGE_DAY.date()
    jobs.append((
        BACKFILL_REPLAY_AT,
        lambda: replay(ReplayRequest(
            source="mobile", event_type="heartbeat", start_day=outage.isoformat(),
            end_day=(outage + timedelta(days=1)).isoformat(),
        )),
    ))  # fmt: skip
    storm = STORM_START.date()
    jobs.append((
        STORM_REPLAY_AT,
        lambda: replay(ReplayRequest(
            source="billing", event_type="purchase", start_day=storm.isoformat(),
            end_day=(storm + timedelta(days=1)).isoformat(), include_duplicates=True,
        )),
    ))  # fmt: skip
    return jobs
