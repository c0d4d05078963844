"""Faults: ingest, replay and the processor with a fraction of their store calls failing, on both adapters
(the local workspace, and AWS on moto with failures injected by botocore event hooks).

Each check drives the kit as its callers do (API clients retrying on a 5xx, an operator re-running a
replay, the SQS event source mapping redelivering failed records) and then checks, with the faults off,
that nothing was lost, nothing was done twice beyond what was reported, and nothing was overwritten.
See ``tests/reliability/faults.py`` for where each fault is injected.
"""

from __future__ import annotations

import base64
import io
import json
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.errors import StoreError
from backend.handlers import common
from backend.handlers import ingest as ingest_handler
from backend.identity import sha256_hex
from backend.kit import Kit
from backend.model import IngestStatus, Rejection
from backend.services.ingest import Invalid, prepare
from backend.settings import Settings
from backend.times import fmt
from tests.conftest import DROP, make_event
from tests.handlers.test_ingest_handler import FakeLambdaContext, rest_v1_event
from tests.reliability.conftest import soak, soaking
from tests.reliability.faults import AFTER, BEFORE, AwsFaults, Faults, Scripted, flaky_commits

ADAPTERS = ["local", "aws"]
DAY = datetime(2025, 12, 27, tzinfo=UTC)
# Each seed is another mix of requests and another sequence of faults.
SEEDS = [11, 12, 13, 14, 15] if soaking() else [11]


# -- the adapters under faults -------------------------------------------------------------------------------


@dataclass
class Stack:
    """A backend (local workspace or moto stack) with its ports, for the handlers and the services."""

    name: str
    backend: Kit
    store: Any  # LocalStore or AwsStore
    settings: Any = None  # AwsSettings on AWS
    close: Callable[[], None] = lambda: None


def open_stack(name: str, root: Path) -> Stack:
    if name == "local":
        from backend.kit import open_local

        backend = open_local(root / "ws")
        return Stack("local", backend, backend.index, close=backend.close)
    from tests.aws_env import moto_backend, moto_kit

    store, settings, close = moto_backend()
    return Stack("aws", moto_kit(store, settings, close), store, settings, close)


def serve(stack: Stack) -> None:
    """Run the Lambda handlers on ``stack`` (whatever the environment says)."""
    common.configure(stack.backend, Settings(backend=stack.name, dry_run=False, read_only=False))


@pytest.fixture(params=ADAPTERS)
def stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stack]:
    opened = open_stack(request.param, tmp_path)
    serve(opened)
    try:
        yield opened
    finally:
        common.configure(None)
        opened.close()


def all_rejections(index: Any) -> list[Rejection]:
    out: list[Rejection] = []
    after = None
    while True:
        page = index.query_rejections(limit=500, after=after)
        out += page.items
        if page.next_cursor is None:
            return out
        after = page.next_cursor


# -- 1. ingest -----------------------------------------------------------------------------------------------


@dataclass
class Request:
    """One producer request: its exact bytes, its event id (None: invalid), and what it is in the mix."""

    n: int
    body: bytes
    event_id: str | None
    kind: str  # new, resend, key-reuse, invalid


def _event_id(body: bytes) -> str | None:
    try:
        return prepare(body).event_id
    except Invalid:
        return None


def ingest_workload(rng: random.Random, size: int) -> list[Request]:
    """Distinct events (some with idempotency keys), resends of earlier bytes, idempotency keys reused
    with other bytes, and invalid requests, in a seeded order."""
    entities = [f"user_{i}" for i in range(6)]
    sent: list[bytes] = []
    keyed: list[tuple[str, str]] = []
    out: list[Request] = []
    for n in range(size):
        roll = rng.random()
        if roll < 0.15 and sent:
            body, kind = rng.choice(sent), "resend"
        elif roll < 0.25 and keyed:
            entity, key = rng.choice(keyed)
            at = DAY + timedelta(minutes=rng.randrange(2 * 1440))
            body = make_event(entity_id=entity, idempotency_key=key, event_time=fmt(at), payload={"v": n})
            kind = "key-reuse"
        elif roll < 0.35:
            body = rng.choice(
                [
                    b'{"source":"demo","event_type":"heartbeat", broken %d' % n,
                    make_event(entity_id=f"user_{n}", event_time="not a time"),
                    make_event(source="bad source!", payload={"n": n}),
                    make_event(payload=DROP, entity_id=f"user_{n}"),
                    b"\xff\xfe not utf-8 %d" % n,
                    b"[%d]" % n,
                ]
            )
            kind = "invalid"
        else:
            entity = rng.choice(entities)
            at = DAY + timedelta(minutes=rng.randrange(2 * 1440))
            fields: dict[str, Any] = {}
            if rng.random() < 0.3:
                fields["idempotency_key"] = f"k-{n}"
                keyed.append((entity, f"k-{n}"))
            body = make_event(entity_id=entity, event_time=fmt(at), payload={"v": n}, **fields)
            kind = "new"
        event_id = _event_id(body)
        if event_id is not None:
            sent.append(body)
        out.append(Request(n, body, event_id, kind))
    return out


@dataclass
class IngestLedger:
    """What the producer saw, and which writes happened although their caller got an error."""

    current: Request | None = None
    answers: dict[int, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    attempts: int = 0
    retries: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    # Bodies of receipts / rejections written by an attempt that was answered with an error.
    lost_receipts: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    lost_rejections: list[bytes] = field(default_factory=list)
    # Writes of the current attempt whose answer the kit never heard (it may have retried them itself).
    lost_now: set[str] = field(default_factory=set)
    absorbed: int = 0  # such writes of attempts answered 200/400: the kit's own retry recognised them

    def lost_receipt(self) -> None:
        assert self.current is not None and self.current.event_id is not None
        self.lost_now.add("receipt")

    def lost_rejection(self) -> None:
        assert self.current is not None and self.current.event_id is None
        self.lost_now.add("rejection")

    def attempt_done(self, failed: bool) -> None:
        """An attempt is one delivery, however often the kit retried its writes: it left at most one receipt
        (or rejection). If it was answered with an error, the producer's resend is another delivery, so a
        write of it that happened counts as a delivery of its own."""
        assert self.current is not None
        if failed:
            if "receipt" in self.lost_now:
                assert self.current.event_id is not None
                self.lost_receipts[self.current.event_id].append(self.current.body)
            if "rejection" in self.lost_now:
                self.lost_rejections.append(self.current.body)
        else:
            self.absorbed += len(self.lost_now)
        self.lost_now = set()


def inject_ingest_faults(stack: Stack, faults: Faults, ledger: IngestLedger) -> None:
    """Every store call of an ingest can fail: on AWS every S3 and DynamoDB call (writes before or after,
    reads before); locally every SQLite commit (before or after)."""
    if stack.name == "aws":

        def on_write(op: str, params: dict[str, Any]) -> None:
            items = [t["Put"]["Item"] for t in params.get("TransactItems", []) if "Put" in t]
            if op == "PutItem":
                items.append(params["Item"])
            for item in items:
                if item.get("PK", {}).get("S") == "REJECTED":
                    ledger.lost_rejection()
                elif "receipt" in item:
                    ledger.lost_receipt()

        AwsFaults([stack.store.s3, stack.store.ddb], faults, on_write=on_write)
        return

    def target(statements: Sequence[str]) -> str:
        for table in ("events", "rejections", "raw"):
            if any(s.startswith(f"INSERT INTO {table} ") for s in statements):
                return f"commit {table}"
        return "commit other"

    def on_commit(target: str, statements: Sequence[str]) -> None:
        if target == "commit events":
            ledger.lost_receipt()
        elif target == "commit rejections":
            ledger.lost_rejection()

    flaky_commits(stack.store, faults, target, on_commit)


def produce(requests: Sequence[Request], rng: random.Random, ledger: IngestLedger) -> None:
    """Send every request through the ingest handler as an API client does: on a 5xx the same bytes are
    sent again, after a few other requests (backoff), until the answer is a 200 or a 400."""
    todo = list(requests)
    waiting: list[tuple[int, Request]] = []  # (step at which to retry, request)
    step = 0
    context = FakeLambdaContext()
    while todo or waiting:
        due = [w for w in waiting if w[0] <= step]
        if due and (not todo or rng.random() < 0.5):
            waiting.remove(due[0])
            request = due[0][1]
        elif todo:
            request = todo.pop(0)
        else:
            waiting.sort(key=lambda w: w[0])
            request = waiting.pop(0)[1]
        step += 1
        ledger.current = request
        ledger.attempts += 1
        event = rest_v1_event(base64.b64encode(request.body).decode("ascii"), base64_encoded=True)
        response = ingest_handler.handler(event, context)
        status = response["statusCode"]
        ledger.attempt_done(failed=status >= 500)
        ledger.current = None
        ledger.statuses[status] += 1
        if status in (500, 502, 503, 504):
            ledger.retries += 1
            waiting.append((step + rng.randrange(4), request))
            continue
        assert status in (200, 400), f"request {request.n} answered {status}: {response['body']}"
        ledger.answers[request.n] = (status, json.loads(response["body"]))


@pytest.mark.parametrize("seed", SEEDS)
def test_ingest_under_store_faults_loses_nothing_and_accepts_once(
    stack: Stack, seed: int, figures: Callable[..., None]
) -> None:
    """20% of the store calls of ingest fail, half before the write (nothing stored) and half after it
    (stored, the answer lost); producers resend the same bytes until they get a 200 or a 400.

    What "exact" means here. A request whose write happened but whose answer was lost left a receipt: the
    store cannot tell its resend from a second delivery of the same bytes, and both did arrive. So, for
    each event id, with *delivered* = the requests answered 200 plus the attempts whose index write
    happened although their answer was an error:

    * exactly one ACCEPTED receipt (DESIGN invariant 1: the retry ends with the event accepted once; the
      retry itself is answered DUPLICATE when its first attempt was the one accepted);
    * receipts == delivered, so duplicate receipts == delivered - 1 (none lost, none invented). A write
      that the kit itself tried again after losing its answer (on AWS) is one delivery: the retry finds its
      own earlier receipt and adds none (``writes_recognised_by_kit_retry`` in the figures);
    * the raw bytes behind the receipts are, as a multiset, exactly the bodies delivered, byte for byte;
    * at most one client was ever answered ACCEPTED for it.

    Rejections: every invalid request is answered 400 and its bytes are in the quarantine, once per attempt
    that wrote them (the same rule)."""
    rng = random.Random(seed)
    requests = ingest_workload(rng, soak(70, 600) if stack.name == "aws" else soak(250, 5000))
    faults = Faults(seed, rate=0.2)
    ledger = IngestLedger()
    inject_ingest_faults(stack, faults, ledger)
    produce(requests, rng, ledger)
    faults.enabled = False

    index, raw = stack.backend.index, stack.backend.raw
    delivered: dict[str, list[bytes]] = defaultdict(list)
    accepted_answers: Counter[str] = Counter()
    for request in requests:
        status, answer = ledger.answers[request.n]
        if request.event_id is None:
            assert status == 400 and answer["status"] == "REJECTED", answer
            continue
        assert status == 200 and answer["event_id"] == request.event_id, answer
        assert raw.get(answer["s3_key"]) == request.body
        delivered[request.event_id].append(request.body)
        accepted_answers[request.event_id] += answer["status"] == "ACCEPTED"
    for event_id, bodies in ledger.lost_receipts.items():
        delivered[event_id] += bodies

    lost = accepted_twice = inexact = unreadable = 0
    for event_id, bodies in delivered.items():
        receipts = index.receipts(event_id)
        accepted = [r for r in receipts if r.status is IngestStatus.ACCEPTED]
        lost += not accepted
        accepted_twice += len(accepted) > 1 or accepted_answers[event_id] > 1
        stored = [raw.get(r.s3_key) for r in receipts]
        unreadable += sum(
            data is None or sha256_hex(data) != r.raw_sha for data, r in zip(stored, receipts, strict=True)
        )
        inexact += Counter(stored) != Counter(bodies)
    invalid = [r.body for r in requests if r.event_id is None]
    quarantined = Counter(r.data for r in all_rejections(index))
    stats = index.stats()
    figures(
        f"ingest with 20% of store calls failing ({stack.name})",
        adapter=stack.name,
        requests=len(requests),
        distinct_events=len(delivered),
        resends=sum(r.kind == "resend" for r in requests),
        key_reuses=sum(r.kind == "key-reuse" for r in requests),
        invalid=len(invalid),
        attempts=ledger.attempts,
        retries=ledger.retries,
        store_calls=sum(faults.eligible.values()),
        faults_injected=faults.total(),
        faults_before=faults.total("before"),
        faults_after=faults.total("after"),
        **{f"faults_{k}": v for k, v in faults.by_kind().items()},
        writes_with_lost_answer=sum(len(b) for b in ledger.lost_receipts.values())
        + len(ledger.lost_rejections),
        writes_recognised_by_kit_retry=ledger.absorbed,
        lost=lost,
        accepted_twice=accepted_twice,
        inexact_duplicate_counts=inexact,
        unreadable_or_changed_raw=unreadable,
        quarantined=sum(quarantined.values()),
    )
    assert faults.total("before") > 0 and faults.total("after") > 0
    assert ledger.lost_receipts or ledger.absorbed
    assert (lost, accepted_twice, inexact, unreadable) == (0, 0, 0, 0)
    assert quarantined == Counter(invalid + ledger.lost_rejections)
    assert stats.accepted == len(delivered)
    assert stats.duplicate == sum(len(b) - 1 for b in delivered.values())
    assert stats.rejected == len(invalid) + len(ledger.lost_rejections)


# -- 2. replay -----------------------------------------------------------------------------------------------


def fill(stack: Stack, rng: random.Random, events: int, resends: int, days: int = 2) -> list[bytes]:
    """Ingest ``events`` distinct events of a few entities over ``days`` days, then ``resends`` of them
    again (duplicate receipts); no faults. Returns the bodies in the order sent."""
    from backend.services.ingest import IngestService, Received

    bodies = [
        make_event(
            entity_id=f"user_{rng.randrange(4)}",
            event_time=fmt(DAY + timedelta(minutes=rng.randrange(days * 1440))),
            payload={"v": n, "w": rng.randrange(100)},
        )
        for n in range(events)
    ]
    bodies += [rng.choice(bodies[:events]) for _ in range(resends)]
    service = IngestService(stack.backend.raw, stack.backend.index)
    results = service.ingest_batch([Received(b) for b in bodies])
    assert {r.status.value for r in results} <= {"ACCEPTED", "DUPLICATE"}
    return bodies


def replay_service(stack: Stack, queue: Any) -> Any:
    from backend.services.replay import ReplayService

    b = stack.backend
    return ReplayService(
        b.investigate, b.catalog, b.audit, queue, b.aggregates, bucket=b.raw.location, sleep=lambda s: None
    )


def drain_bodies(queue: Any) -> list[dict[str, Any]]:
    """Every message on the queue (received and deleted), as JSON."""
    out: list[dict[str, Any]] = []
    while batch := queue.receive(10, 60):
        out += [json.loads(m.body) for m in batch]
        queue.delete([m.receipt_handle for m in batch])
    return out


def _message_key(body: dict[str, Any] | str) -> tuple[str, str | None]:
    data = json.loads(body) if isinstance(body, str) else body
    return data["event_id"], data.get("receipt")


def test_replay_with_failing_batch_entries_sends_the_plan_and_audits_it(
    stack: Stack, figures: Callable[..., None]
) -> None:
    """SendMessageBatch entries fail at 20% (SQS lists them under ``Failed`` and does not enqueue them),
    whole batch calls and audit writes fail at 10% (before the store took them, or after: taken, the
    answer lost), and the messages of three events are refused every time during the first run.

    The first run ends PARTIAL with ``sent + failed == planned``; the operator runs the same scope again
    (the cause of the refusals gone, the transient faults still on) until every planned message has been
    delivered. Every run that sent anything has a finished audit record (never left RUNNING) that says what
    it put on the queue: ``sent`` messages, plus at most ``unconfirmed`` more from batch calls that failed as
    a whole (the queue may have taken such a call before the error); every planned message a run did not
    deliver is among its ``failed``."""
    from backend.errors import StoreError
    from backend.model import ReplayOutcome, ReplayRequest

    rng = random.Random(23)
    size = soak(40, 400) if stack.name == "aws" else soak(200, 3000)
    fill(stack, rng, size, size // 8)
    request = ReplayRequest(
        source="demo", event_type="heartbeat", start_day="2025-12-27", end_day="2025-12-29",
        include_duplicates=True, limit=100_000,
    )  # fmt: skip
    faults = Faults(23, rate=0.2)
    calls = Faults(24, rate=0.1)
    queue = stack.backend.queue
    if stack.name == "aws":
        from tests.reliability.faults import SqsEntryFaults

        queue.wait_time_s = 0  # moto answers a short poll from the whole queue
        entries = SqsEntryFaults(queue.sqs, faults)
        AwsFaults([queue.sqs], calls, operations={"SendMessageBatch"})
        AwsFaults([stack.store.ddb], calls, operations={"TransactWriteItems"})  # the audit trail's writes
        sender = queue
    else:
        from tests.reliability.faults import FlakyEntries

        def target(sql: Sequence[str]) -> str | None:
            if any("queue_messages" in s for s in sql):
                return "SendMessageBatch"
            return "audit write" if any("replay_audit" in s for s in sql) else None

        entries = FlakyEntries(queue, faults)  # type: ignore[assignment]
        flaky_commits(stack.store, calls, target)
        sender = entries
    service = replay_service(stack, sender)
    faults.enabled = calls.enabled = False
    plan = service.plan(request, actor="oncall")
    # What the plan lists: every receipt in scope, once.
    scope = {(r.event_id, None if r.accepted else r.receipt) for r in _receipts_in_scope(stack)}
    stuck = set(rng.sample(sorted({event_id for event_id, _ in scope}), 3))
    entries.persistent = lambda body: any(e in body for e in stuck)

    answered: dict[str, Any] = {}  # replay id -> the audit record execute returned
    errors = 0
    on_queue: dict[str, Counter[tuple[str, str | None]]] = defaultdict(Counter)
    for run in range(8):
        if run == 1:
            entries.persistent = lambda body: False
        faults.enabled = calls.enabled = True
        try:
            audit = service.execute(
                request, actor="oncall", expected_fingerprint=plan.fingerprint, force=True
            )
            answered[audit.replay_id] = audit
        except StoreError:
            errors += 1
        faults.enabled = calls.enabled = False
        for m in drain_bodies(queue):
            on_queue[m["replay_id"]][_message_key(m)] += 1
        if set().union(*on_queue.values()) >= scope:
            break

    trail = [a for a in stack.backend.audit.query(limit=100).items if not a.dry_run]
    trail.sort(key=lambda a: a.started_at)
    mismatched = 0
    for audit in trail:
        got = on_queue.get(audit.replay_id, Counter())
        mismatched += audit.replay_id in answered and answered[audit.replay_id] != audit
        mismatched += audit.outcome is ReplayOutcome.RUNNING
        mismatched += audit.sent + audit.failed != audit.would_send
        mismatched += not audit.sent <= sum(got.values()) <= audit.sent + audit.unconfirmed
        mismatched += not set(got) <= scope
        mismatched += len(scope) - len(got) > audit.failed  # every planned message not delivered is failed
    unaudited = set(on_queue) - {a.replay_id for a in trail}
    first = trail[0]
    delivered = set().union(*on_queue.values())
    figures(
        f"replay with failing SendMessageBatch entries ({stack.name})",
        adapter=stack.name,
        planned=plan.would_send,
        runs=len(trail) + errors,
        runs_failed_with_store_error=errors,
        first_run_sent=first.sent,
        first_run_failed=first.failed,
        first_run_outcome=first.outcome.value,
        entry_faults=faults.total(),
        entries_refused_persistently=sum(1 for b in entries.refused if any(e in b for e in stuck)),
        call_faults=calls.total(),
        **{f"call_faults_{k}": v for k, v in calls.by_kind().items()},
        messages_on_queue=sum(sum(c.values()) for c in on_queue.values()),
        audited_sent=sum(a.sent for a in trail),
        audited_unconfirmed=sum(a.unconfirmed for a in trail),
        never_delivered=len(scope - delivered),
        audit_mismatches=mismatched,
        replays_on_queue_without_audit=len(unaudited),
    )
    assert plan.would_send == len(scope) and faults.total() > 0 and calls.total() > 0
    assert first.outcome is ReplayOutcome.PARTIAL and first.failed >= 3 and first.error
    assert not {k for k in on_queue[first.replay_id] if k[0] in stuck}
    assert delivered == scope
    assert (mismatched, len(unaudited)) == (0, 0)


def _receipts_in_scope(stack: Stack) -> list[Any]:
    out = []
    for day in ("2025-12-27", "2025-12-28"):
        after = None
        while True:
            page = stack.backend.investigate.scan_partition("demo", "heartbeat", day, limit=1000, after=after)
            out += page.items
            if page.next_cursor is None:
                break
            after = page.next_cursor
    return out


def test_a_batch_call_that_fails_after_the_queue_took_it_is_audited_as_unconfirmed(tmp_path: Path) -> None:
    """Regression: a SendMessageBatch that SQS took but whose answer was lost is sent again, so its
    messages are on the queue twice; the audit record said ``sent`` only, fewer than the queue held."""
    from backend.errors import StoreError
    from backend.model import ReplayOutcome, ReplayRequest

    stack = open_stack("local", tmp_path)
    try:
        fill(stack, random.Random(5), 12, 0, days=1)
        queue = stack.backend.queue
        calls = 0

        class TakenThenLost:
            max_receives = 5

            def send_batch(self, bodies: Sequence[str]) -> Any:
                nonlocal calls
                calls += 1
                failures = queue.send_batch(bodies)
                if calls == 1:
                    raise StoreError("injected: the answer was lost")
                return failures

        request = ReplayRequest(entity_id="user_0", start_time="2025-12-27", end_time="2025-12-28")
        audit = replay_service(stack, TakenThenLost()).execute(request, actor="oncall")
        on_queue = len(drain_bodies(queue))
        assert audit.outcome is ReplayOutcome.SENT and audit.sent == audit.would_send
        assert audit.unconfirmed == min(10, audit.would_send)
        assert on_queue == audit.sent + audit.unconfirmed
        assert stack.backend.audit.get(audit.replay_id) == audit
        # ... and the audit trail says so to whoever reads it.
        from pik_console.cli import main

        out = io.StringIO()
        assert (
            main(["replays", audit.replay_id, "--workspace", str(tmp_path / "ws")], out, io.StringIO()) == 0
        )
        unconfirmed = audit.unconfirmed
        assert f"{unconfirmed} sends unconfirmed" in out.getvalue()
        assert f"holds {audit.sent} to {audit.sent + unconfirmed} messages" in out.getvalue()
    finally:
        stack.close()


AUDIT_WRITE_FAULTS = [
    pytest.param([BEFORE], id="begin-before"),
    pytest.param([AFTER], id="begin-after"),
    pytest.param([None, BEFORE], id="finish-before"),
    pytest.param([None, AFTER], id="finish-after"),
    pytest.param([None, BEFORE, BEFORE, BEFORE], id="finish-before-three-times"),
]


@pytest.mark.parametrize("script", AUDIT_WRITE_FAULTS)
def test_a_failed_audit_write_neither_hides_a_sent_replay_nor_fails_it(
    stack: Stack, script: list[str | None], figures: Callable[..., None]
) -> None:
    """Regression: when the write that finishes a replay's audit record failed, the replay had been sent
    but its record stayed RUNNING with nothing sent, and the caller was told that a store failed (the API:
    "nothing more was sent"). When the write that begins it failed after the store took it, a RUNNING
    record of a replay that never sent anything stayed in the trail. The audit writes are retried now,
    and a retry that finds its own earlier write in place goes on."""
    from backend.model import ReplayOutcome, ReplayRequest

    fill(stack, random.Random(5), 12, 0, days=1)
    faults = Scripted(**{"audit write": script, "TransactWriteItems": script})
    if stack.name == "aws":
        AwsFaults([stack.store.ddb], faults, operations={"TransactWriteItems"})
    else:
        flaky_commits(
            stack.store, faults, lambda sql: "audit write" if any("replay_audit" in s for s in sql) else None
        )
    if stack.name == "aws":
        stack.backend.queue.wait_time_s = 0
    request = ReplayRequest(entity_id="user_0", start_time="2025-12-27", end_time="2025-12-28")
    audit = replay_service(stack, stack.backend.queue).execute(request, actor="oncall")
    faults.enabled = False
    trail = stack.backend.audit.query(limit=10).items
    on_queue = len(drain_bodies(stack.backend.queue))
    figures(
        f"replay whose audit writes fail ({stack.name}, {'/'.join(str(k) for k in script)})",
        adapter=stack.name,
        faults_injected=faults.total(),
        **{f"faults_{k}": v for k, v in faults.by_kind().items()},
        outcome=audit.outcome.value,
        audited_sent=audit.sent,
        messages_on_queue=on_queue,
        records_in_trail=len(trail),
        records_running=sum(a.outcome is ReplayOutcome.RUNNING for a in trail),
    )
    assert faults.total() == sum(k is not None for k in script)
    assert trail == [audit]
    assert audit.outcome is ReplayOutcome.SENT and audit.sent == audit.would_send > 0
    assert on_queue == audit.sent


def test_a_replay_whose_audit_cannot_be_finished_is_answered_as_sent(tmp_path: Path) -> None:
    """Regression: the API answered 503 "nothing more was sent" for a replay that had been sent when its
    audit record could not be finished; a client retrying on that 503 sends it all again."""
    from backend.handlers.replay import api_reply
    from backend.model import ReplayOutcome, ReplayRequest
    from backend.services.replay import AuditNotFinished

    stack = open_stack("local", tmp_path)
    try:
        fill(stack, random.Random(5), 12, 0, days=1)
        faults = Scripted(**{"audit write": [None] + [BEFORE] * 4 + [None] + [BEFORE] * 4})
        flaky_commits(
            stack.store, faults, lambda sql: "audit write" if any("replay_audit" in s for s in sql) else None
        )
        service = replay_service(stack, stack.backend.queue)
        body = {"entity_id": "user_0", "start_time": "2025-12-27", "end_time": "2025-12-28"}
        with pytest.raises(AuditNotFinished) as raised:
            service.execute(ReplayRequest(**body), actor="oncall")
        assert "messages sent" in str(raised.value) and "reads RUNNING" in str(raised.value)
        assert raised.value.audit.outcome is ReplayOutcome.SENT
        status, answer = api_reply(service, body, actor="oncall")
        assert status == 200 and answer["sent"] == answer["would_send"] > 0
        assert "reads RUNNING" in answer["warning"]
        assert len(drain_bodies(stack.backend.queue)) == 2 * answer["sent"]
    finally:
        stack.close()


# -- 3. processor -------------------------------------------------------------------------------------------

POISON = ["not json at all", '{"entity_id": "", "event_time": "2025-12-27T00:00:00Z"}', '{"entity_id": "x"}']
PROCESSOR_VISIBILITY_S = 30


def processor_rounds(rng: random.Random, size: int) -> list[list[bytes]]:
    """Two rounds of ingest: events of 4 entities over 2 days, then late events into the same windows and
    resends of round one's (duplicates, which must not count)."""
    first = [
        make_event(
            entity_id=f"user_{rng.randrange(4)}",
            event_time=fmt(DAY + timedelta(minutes=rng.randrange(2 * 1440))),
            payload={"v": n, "w": rng.randrange(100)},
        )
        for n in range(size)
    ]
    late = [
        make_event(
            entity_id=f"user_{rng.randrange(3)}",
            event_time=fmt(DAY + timedelta(minutes=rng.randrange(2 * 1440))),
            payload={"v": size + n, "w": rng.randrange(100)},
        )
        for n in range(size // 3)
    ]
    return [first, late + rng.sample(first, size // 6)]


@dataclass
class Consumer:
    """What the consumer of the replay queue saw: every message id received, the ids the processor
    answered as processed (not failed) at least once, how often a consumer run had to be started again."""

    received: set[str] = field(default_factory=set)
    processed: set[str] = field(default_factory=set)
    failed_attempts: int = 0
    reruns: int = 0
    redriven: int = 0
    redriven_ids: set[str] = field(default_factory=set)  # dead letters sent back (SQS moves them)


class _SpyQueue:
    """The local queue, noting which messages were received and which were deleted as processed."""

    def __init__(self, inner: Any, consumer: Consumer) -> None:
        self._inner = inner
        self._consumer = consumer
        self._ids: dict[str, str] = {}

    def receive(self, *args: Any, **kwargs: Any) -> Any:
        return self._note(self._inner.receive(*args, **kwargs))

    def receive_many(self, *args: Any, **kwargs: Any) -> Any:
        return self._note(self._inner.receive_many(*args, **kwargs))

    def _note(self, got: Any) -> Any:
        for m in got:
            self._ids[m.receipt_handle] = m.message_id
            self._consumer.received.add(m.message_id)
        return got

    def delete(self, handles: Sequence[str]) -> None:
        self._consumer.processed.update(self._ids[h] for h in handles)
        self._inner.delete(handles)

    def release(self, handles: Sequence[str]) -> None:
        self._consumer.failed_attempts += len(handles)
        self._inner.release(handles)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class Pipeline:
    """Ingest, replay and process on one stack, with or without processor faults. Locally the consumer
    is ``pik process``'s drain loop over the workspace queue (its clock moved past the visibility
    timeout between runs); on AWS it is the processor Lambda handler, fed by an event source mapping
    emulated on SQS (delete what the partial batch response does not list, return the rest)."""

    def __init__(self, stack: Stack, faults: Faults | None, metrics: Sequence[Any] = ()) -> None:
        from backend.adapters.local.queue import LocalQueue
        from backend.times import FixedClock

        self.stack = stack
        self.faults = faults
        self.consumer = Consumer()
        self.sent = 0  # messages put on the queue (replays' audited sent, and the poison ones)
        if stack.name == "local":
            from backend.services.processor import ProcessorService

            self.clock = FixedClock(datetime(2026, 1, 1, tzinfo=UTC))
            self.queue: Any = LocalQueue(stack.store, max_receives=4, clock=self.clock)
            b = stack.backend
            investigate, catalog, aggregates = b.investigate, b.catalog, b.aggregates
            if faults is not None:
                from tests.reliability.faults import FlakyReads

                investigate = FlakyReads(
                    investigate, faults, {"scan_entity", "window_inputs", "day_counts_entity"}
                )
                catalog = FlakyReads(catalog, faults, {"get_many"})
                aggregates = FlakyReads(aggregates, faults, {"latest"})

                def target(sql: Sequence[str]) -> str | None:
                    if any("aggregate_versions" in s for s in sql):
                        return "commit aggregate version"
                    return "commit queue" if any("queue_messages" in s for s in sql) else None

                flaky_commits(stack.store, faults, target)
                faults.enabled = False
            self.service = ProcessorService(investigate, catalog, aggregates, metrics)
        else:
            from tests.aws_env import session

            self.queue = stack.backend.queue
            self.queue.wait_time_s = 0
            self.sqs = session().client("sqs")  # the event source mapping's own client: no faults
            self.url = stack.settings.replay_queue_url
            self.dlq_url = stack.settings.replay_dlq_url
            self.arn = self.sqs.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])[
                "Attributes"
            ]["QueueArn"]
            if faults is not None:
                AwsFaults([stack.store.s3, stack.store.ddb], faults)
                faults.enabled = False

    def ingest_and_replay(self, bodies: Sequence[bytes], *, poison: Sequence[str] = ()) -> None:
        from backend.model import ReplayOutcome, ReplayRequest
        from backend.services.ingest import IngestService, Received

        IngestService(self.stack.backend.raw, self.stack.backend.index).ingest_batch(
            [Received(b) for b in bodies]
        )
        request = ReplayRequest(
            source="demo", event_type="heartbeat", start_day="2025-12-27", end_day="2025-12-29", limit=100_000
        )
        audit = replay_service(self.stack, self.queue).execute(request, actor="oncall", force=True)
        assert audit.outcome is ReplayOutcome.SENT
        self.sent += audit.sent
        if poison:
            assert self.queue.send_batch(list(poison)) == []
            self.sent += len(poison)

    def process(self) -> None:
        """Consume the queue until it is empty (faults on, if any), then redrive the dead letters that
        are replay messages (the operator, once the faults are gone) and consume those."""
        if self.faults is not None:
            self.faults.enabled = True
        self._consume()
        if self.faults is not None:
            self.faults.enabled = False
        self._redrive()
        self._consume()

    def _consume(self) -> None:
        if self.stack.name == "local":
            from pik_console.cli.process import drain

            queue = _SpyQueue(self.queue, self.consumer)
            while True:
                try:
                    drain(queue, self.service, PROCESSOR_VISIBILITY_S, None, io.StringIO(), True)
                except StoreError:
                    self.consumer.reruns += 1  # the operator runs `pik process` again
                self.clock.advance(timedelta(seconds=PROCESSOR_VISIBILITY_S + 1))
                depth = self.queue.depth()
                if depth.visible == depth.in_flight == 0:
                    return
        from backend.handlers import processor as processor_handler
        from tests.handlers.support import sqs_records_from

        context = FakeLambdaContext(function_name="pik-processor")
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=PROCESSOR_VISIBILITY_S,
                MessageSystemAttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return
            self.consumer.received.update(m["MessageId"] for m in got)
            event = {"Records": sqs_records_from(got, self.arn, "us-east-1")}
            response = processor_handler.handler(event, context)
            failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
            done = [m for m in got if m["MessageId"] not in failed]
            back = [m for m in got if m["MessageId"] in failed]
            self.consumer.processed.update(m["MessageId"] for m in done)
            self.consumer.failed_attempts += len(back)
            if done:
                self.sqs.delete_message_batch(
                    QueueUrl=self.url,
                    Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)],
                )
            if back:  # the visibility timeout, passed at once
                self.sqs.change_message_visibility_batch(
                    QueueUrl=self.url,
                    Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
                        for i, m in enumerate(back)
                    ],
                )

    def dead_letters(self) -> list[Any]:
        out: list[Any] = []
        after = None
        while True:
            page = self.queue.dead_letters(limit=100, after=after)
            out += page.items
            if page.next_cursor is None:
                return out
            after = page.next_cursor

    def _redrive(self) -> None:
        """What an operator does once the cause is gone: send the dead replay messages back to the queue
        (the malformed ones stay dead). Locally the dead-letter table keeps its rows; on SQS they move."""
        if self.stack.name == "local":
            seen = getattr(self, "_redriven_ids", set())
            bodies = [
                d.body for d in self.dead_letters() if d.body not in POISON and d.message_id not in seen
            ]
            seen |= {d.message_id for d in self.dead_letters()}
            self._redriven_ids = seen
            for i in range(0, len(bodies), 10):
                assert self.queue.send_batch(bodies[i : i + 10]) == []
            self.consumer.redriven += len(bodies)
            return
        kept: list[str] = []  # receipt handles of the malformed ones, made visible again at the end
        while got := self.sqs.receive_message(QueueUrl=self.dlq_url, MaxNumberOfMessages=10).get("Messages"):
            for m in got:
                if m["Body"] in POISON:
                    kept.append(m["ReceiptHandle"])
                    continue
                self.sqs.send_message(QueueUrl=self.url, MessageBody=m["Body"])
                self.sqs.delete_message(QueueUrl=self.dlq_url, ReceiptHandle=m["ReceiptHandle"])
                self.consumer.redriven += 1
                self.consumer.redriven_ids.add(m["MessageId"])
        for handle in kept:
            self.sqs.change_message_visibility(
                QueueUrl=self.dlq_url, ReceiptHandle=handle, VisibilityTimeout=0
            )

    def chains(self) -> dict[tuple[str, str, str], list[tuple[Any, ...]]]:
        """Every version of every window, by (entity, day, metric): what a fault-free run must equal."""
        out: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
        for entity in (f"user_{i}" for i in range(4)):
            for day in ("2025-12-27", "2025-12-28"):
                for v in self.stack.backend.aggregates.versions(entity, day, limit=1000).items:
                    out.setdefault((entity, day, v.metric), []).append(
                        (v.version, v.previous_version, v.value, v.inputs_hash, v.input_count, v.values_used)
                    )
        return out


def test_the_processor_under_faults_and_redeliveries_computes_what_a_fault_free_run_does(
    stack: Stack, tmp_path: Path, figures: Callable[..., None]
) -> None:
    """The processor's index, raw and aggregate reads and its aggregate writes fail at 15% (AWS: 25%;
    writes before or after; locally the queue's commits too), over two rounds of ingest, replay and
    processing, with malformed messages among the second round's.

    Failed messages go back to the queue (partial batch response / release) and are redelivered; after
    their maximum receives they are dead letters. Then, once the faults are gone, the operator redrives
    the dead replay messages. In the end: every message sent was processed or is a dead letter (the
    malformed ones are), the queue is empty, and every (entity, day, metric) has exactly the versions of a
    fault-free run over the same events: numbered 1..n, each from the same inputs with the same value."""
    from backend.model import MetricKind, MetricSpec

    rng = random.Random(31)
    rounds = processor_rounds(rng, soak(20, 300) if stack.name == "aws" else soak(150, 2000))
    # The processor Lambda computes a stack's metric (daily_event_count); locally a payload sum as well,
    # so that raw reads are part of each recompute. The fault-free run is on a local workspace: the
    # adapters answer the same (the contract suite), and it keeps the moto stack small.
    metrics = [MetricSpec(name="w_sum", kind=MetricKind.SUM, field="w")] if stack.name == "local" else []
    reference_stack = open_stack("local", tmp_path / "reference")
    try:
        reference = Pipeline(reference_stack, None, metrics)
        for bodies in rounds:
            reference.ingest_and_replay(bodies)
            reference.process()
        expected = reference.chains()
    finally:
        reference_stack.close()
    # On AWS a message is retried 5 times before it is dead (locally 4, in chunks of 50): fail more calls
    # there, so that dead letters and their redrive happen on both.
    faults = Faults(31, rate=0.15 if stack.name == "local" else 0.25)
    pipeline = Pipeline(stack, faults, metrics)
    for n, bodies in enumerate(rounds):
        pipeline.ingest_and_replay(bodies, poison=POISON if n == 1 else ())
        pipeline.process()
    chains = pipeline.chains()
    dead = pipeline.dead_letters()
    consumer = pipeline.consumer
    dead_ids = {d.message_id for d in dead}
    depth = pipeline.queue.depth()
    lost = consumer.received - consumer.processed - dead_ids - consumer.redriven_ids
    gaps = sum(
        [v[0] for v in chain] != list(range(1, len(chain) + 1))
        or [v[1] for v in chain] != [None, *range(1, len(chain))]
        for chain in chains.values()
    )
    figures(
        f"processor with failures and redeliveries ({stack.name})",
        adapter=stack.name,
        events=sum(len(r) for r in rounds),
        messages_sent=pipeline.sent,
        messages_received=len(consumer.received),
        failed_attempts=consumer.failed_attempts,
        consumer_reruns=consumer.reruns,
        dead_lettered=len(dead_ids | consumer.redriven_ids),
        malformed_dead=sum(d.body in POISON for d in dead),
        redriven=consumer.redriven,
        store_calls=sum(faults.eligible.values()),
        faults_injected=faults.total(),
        faults_before=faults.total("before"),
        faults_after=faults.total("after"),
        windows=len({k[:2] for k in chains}),
        versions=sum(len(c) for c in chains.values()),
        versions_expected=sum(len(c) for c in expected.values()),
        lost=len(lost),
        version_gaps=gaps,
        differ_from_fault_free=sum(chains.get(k) != v for k, v in expected.items())
        + len(set(chains) - set(expected)),
    )
    assert faults.total("before") > 0 and faults.total("after") > 0 and consumer.failed_attempts > 0
    assert sorted(d.body for d in dead if d.body in POISON) == sorted(POISON)
    assert (depth.visible, depth.in_flight) == (0, 0)
    assert lost == set() and len(consumer.received | dead_ids) == pipeline.sent + consumer.redriven
    assert gaps == 0
    assert chains == expected
    assert any(len(c) > 1 for c in expected.values())  # the second round added versions
