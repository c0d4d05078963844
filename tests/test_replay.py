"""The replay service (plan, execute, audit: invariant 4), the local queue's timing, and `pik replay` /
`pik replays` end to end."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.queue import LocalQueue
from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import LocalPorts, local_ports
from backend.errors import InvalidRequest, ReadOnlyError, StoreError
from backend.handlers.replay import api_reply
from backend.model import IngestStatus, ReplayOutcome, ReplayRequest
from backend.ports import SendFailure
from backend.services.ingest import IngestService, Received
from backend.services.replay import ReplayRefused, ReplayService
from backend.times import FixedClock, fmt
from pik_console.cli import main
from tests.conftest import make_event
from tests.contract.test_event_index import rec

DAY = datetime(2025, 12, 28, tzinfo=UTC)


class Env:
    """A workspace with its ports and a replay service over them."""

    def __init__(self, path: Path) -> None:
        self.store = LocalStore(path)
        self.ports: LocalPorts = local_ports(self.store)
        self.ingest = IngestService(self.store, self.store)

    def service(self, queue: Any = None, **kw: Any) -> ReplayService:
        kw.setdefault("sleep", lambda s: None)
        return ReplayService(
            self.ports.investigate,
            self.ports.catalog,
            self.ports.audit,
            queue=queue if queue is not None else self.ports.queue,
            bucket=self.store.location,
            **kw,
        )

    def add(self, n: int, entity: str = "user_1", day: datetime = DAY, **fields: Any) -> list[bytes]:
        bodies = [
            make_event(
                entity_id=entity, event_time=fmt(day + timedelta(minutes=i)), payload={"i": i}, **fields
            )
            for i in range(n)
        ]
        self.ingest.ingest_batch([Received(b) for b in bodies])
        return bodies

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while batch := self.ports.queue.receive(10, 60):
            out += [json.loads(m.body) for m in batch]
            self.ports.queue.delete([m.receipt_handle for m in batch])
        return out


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "ws")
    yield e
    e.store.close()


def entity_request(**kw: Any) -> ReplayRequest:
    base: dict[str, Any] = {"entity_id": "user_1", "start_time": "2025-12-28", "end_time": "2025-12-29"}
    return ReplayRequest(**{**base, **kw})


class SpyQueue:
    """A queue that records every batch call; ``plan`` says what each call does: None (all sent),
    ``"down"`` (StoreError, nothing sent), or a list of (index, sender_fault) entries refused."""

    max_receives = 5

    def __init__(self, inner: Any, plan: Sequence[Any] = ()) -> None:
        self.inner = inner
        self.plan = list(plan)
        self.calls: list[list[str]] = []

    def send_batch(self, bodies: Sequence[str]) -> list[SendFailure]:
        assert len(bodies) <= 10
        self.calls.append(list(bodies))
        what = self.plan.pop(0) if self.plan else None
        if what == "down":
            raise StoreError("injected: the queue is unreachable")
        refused = dict(what or [])
        taken = [b for i, b in enumerate(bodies) if i not in refused]
        assert self.inner.send_batch(taken) == []
        return [SendFailure(i, "Injected", "refused", fault) for i, fault in sorted(refused.items())]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


# -- plan ------------------------------------------------------------------------------------------------


def test_a_dry_run_plans_and_audits_but_sends_nothing(env: Env) -> None:
    bodies = env.add(12)
    env.ingest.ingest_batch([Received(b) for b in bodies[:3]])  # three duplicate receipts
    env.add(2, event_type="click")
    env.add(1, day=DAY + timedelta(days=1))  # outside the window
    plan = env.service().plan(entity_request(event_type="heartbeat"), actor="alice")
    assert (plan.scanned, plan.matched, plan.would_send) == (17, 15, 12)
    assert (plan.skipped.duplicate, plan.skipped.filtered, plan.skipped.missing_raw) == (3, 2, 0)
    assert plan.by_day == {"2025-12-28": 12}
    assert (plan.entities, plan.windows, plan.windows_with_versions) == (1, 1, None)
    assert len(plan.sample) == 10 and all(m.replay_id == plan.replay_id for m in plan.sample)
    assert plan.sample[0].s3_bucket == env.store.location
    assert plan.request.start_time == "2025-12-28T00:00:00.000Z"
    assert any("3 duplicate receipts are left out" in w for w in plan.why)
    assert env.ports.queue.depth().visible == 0
    record = env.ports.audit.get(plan.replay_id)
    assert record is not None and record.outcome is ReplayOutcome.DRY_RUN and record.actor == "alice"
    assert (record.would_send, record.sent, record.fingerprint) == (12, 0, plan.fingerprint)


def test_including_duplicates_sends_one_message_per_receipt(env: Env) -> None:
    bodies = env.add(3)
    env.ingest.ingest_batch([Received(bodies[0]), Received(bodies[0])])
    service = env.service()
    plan = service.plan(entity_request(include_duplicates=True), actor="a")
    assert (plan.would_send, plan.skipped.duplicate) == (5, 0)
    only_dups = service.plan(
        entity_request(include_duplicates=True, status=IngestStatus.DUPLICATE), actor="a"
    )
    assert (only_dups.would_send, only_dups.skipped.filtered) == (2, 3)
    assert all(m.receipt for m in only_dups.sample)
    nothing = service.plan(entity_request(status=IngestStatus.DUPLICATE), actor="a")
    assert nothing.would_send == 0
    assert any("include duplicates" in w for w in nothing.why)


def test_the_limit_and_missing_raw_bytes(env: Env) -> None:
    env.add(30)
    # Index records whose raw bytes were never stored (an incomplete restore).
    env.store.record([rec(event_time=f"2025-12-28T23:0{i}:00.000Z", tag=f"lost{i}") for i in range(3)])
    service = env.service()
    plan = service.plan(entity_request(limit=10), actor="a")
    assert (plan.would_send, plan.skipped.over_limit, plan.skipped.missing_raw) == (10, 23, 0)
    assert any("23 more receipts match beyond the limit of 10" in w for w in plan.why)
    full = service.plan(entity_request(), actor="a")
    assert (full.would_send, full.skipped.missing_raw, full.skipped.over_limit) == (30, 3, 0)
    assert any("no raw bytes" in w for w in full.why)


def test_a_source_type_replay_reads_every_day_of_its_range(env: Env) -> None:
    env.add(4, entity="a")
    env.add(3, entity="b", day=DAY + timedelta(days=1))
    env.add(5, entity="c", day=DAY + timedelta(days=3))
    plan = env.service().plan(
        ReplayRequest(source="demo", event_type="heartbeat", start_day="2025-12-28", end_day="2025-12-31"),
        actor="a",
    )
    assert plan.by_day == {"2025-12-28": 4, "2025-12-29": 3}
    assert (plan.entities, plan.windows) == (2, 2)


def test_an_empty_scope_says_why(env: Env) -> None:
    plan = env.service().plan(entity_request(entity_id="nobody"), actor="a")
    assert plan.would_send == 0 and plan.scanned == 0
    assert plan.why and "nothing is indexed for entity 'nobody'" in plan.why[0]
    env.add(2)
    filtered = env.service().plan(entity_request(event_type="other"), actor="a")
    assert "left out by the filters" in filtered.why[0]


@pytest.mark.parametrize(
    "fields",
    [
        {"entity_id": "e"},
        {"entity_id": "e", "start_time": "2025-12-02", "end_time": "2025-12-01"},
        {"entity_id": "e", "start_time": "yesterday", "end_time": "2025-12-01"},
        {"entity_id": "e", "start_time": "2025-12-01", "end_time": "2025-12-02", "start_day": "2025-12-01"},
        {"source": "s"},
        {"source": "s", "event_type": "t", "start_day": "2025-12-01"},
        {"source": "s", "event_type": "t", "start_time": "2025-12-01", "end_time": "2025-12-02"},
        {"source": "s", "event_type": "t", "start_day": "2025-12-02", "end_day": "2025-12-01"},
        {"entity_id": "e", "start_time": "2025-12-01", "end_time": "2025-12-02", "status": "REJECTED"},
        {"entity_id": "e", "start_time": "2025-12-01", "end_time": "2025-12-02", "limit": 2_000_000},
    ],
)
def test_malformed_scopes_are_refused(env: Env, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidRequest):
        env.service().plan(ReplayRequest(**fields), actor="a")


def test_unknown_request_fields_are_refused() -> None:
    with pytest.raises(ValueError):
        ReplayRequest.model_validate({"entity_id": "e", "event_typ": "click"})


# -- execute ---------------------------------------------------------------------------------------------


def test_execution_sends_exactly_the_plan_in_batches_of_ten(env: Env) -> None:
    env.add(25)
    spy = SpyQueue(env.ports.queue)
    service = env.service(spy)
    preview = service.plan(entity_request(), actor="a")
    result = service.execute(entity_request(), actor="bob", expected_fingerprint=preview.fingerprint[:16])
    assert result.outcome is ReplayOutcome.SENT and (result.sent, result.failed, result.would_send) == (
        25,
        0,
        25,
    )
    assert [len(c) for c in spy.calls] == [10, 10, 5]
    messages = env.drain()
    assert len(messages) == 25
    assert {m["replay_id"] for m in messages} == {result.replay_id}
    assert set(messages[0]) == {"event_id", "entity_id", "event_time", "s3_bucket", "s3_key", "replay_id"}
    assert [m["event_id"] for m in messages] == [
        r.event_id for r in env.store.query_entity("user_1", "2025-12-28", "2025-12-29", limit=100).items
    ]
    assert env.ports.audit.get(result.replay_id) == result
    assert result.actor == "bob" and result.finished_at is not None


def test_refused_entries_are_retried_and_faulty_ones_counted(env: Env) -> None:
    env.add(20)
    # Call 1: entries 2 and 5 refused (retryable); call 2 (their retry): all taken.
    # Call 3: entry 0 refused for good (sender fault), entry 1 refused three times then taken.
    spy = SpyQueue(
        env.ports.queue, [[(2, False), (5, False)], None, [(0, True), (1, False)], [(0, False)], None]
    )
    result = env.service(spy).execute(entity_request(), actor="a")
    assert (result.sent, result.failed) == (19, 1)
    assert result.sent + result.failed == result.would_send
    assert result.outcome is ReplayOutcome.PARTIAL and "Injected" in (result.error or "")
    assert len(env.drain()) == 19


def test_a_queue_that_is_down_fails_the_replay_without_hammering_it(env: Env) -> None:
    env.add(100)
    spy = SpyQueue(env.ports.queue, ["down"] * 1000)
    result = env.service(spy, retries=2).execute(entity_request(), actor="a")
    assert (result.sent, result.failed, result.outcome) == (0, 100, ReplayOutcome.FAILED)
    assert len(spy.calls) == 3 * 3  # three batches, three attempts each, then it stops trying
    assert "3 batches in a row" in (result.error or "")


def test_a_transient_outage_is_retried(env: Env) -> None:
    env.add(10)
    spy = SpyQueue(env.ports.queue, ["down", "down", None])
    result = env.service(spy).execute(entity_request(), actor="a")
    assert (result.sent, result.failed, result.outcome) == (10, 0, ReplayOutcome.SENT)


def test_the_size_guard(env: Env) -> None:
    env.add(6)
    service = env.service(confirm_above=5)
    plan = service.plan(entity_request(), actor="a")
    assert plan.needs_force and any("size guard" in w for w in plan.why)
    with pytest.raises(ReplayRefused) as refused:
        service.execute(entity_request(), actor="a")
    assert env.ports.queue.depth().visible == 0
    assert refused.value.audit is not None and refused.value.audit.outcome is ReplayOutcome.REFUSED
    stored = env.ports.audit.get(refused.value.plan.replay_id)
    assert (
        stored is not None
        and stored.outcome is ReplayOutcome.REFUSED
        and "size guard" in (stored.error or "")
    )
    forced = service.execute(entity_request(), actor="a", force=True)
    assert forced.sent == 6 and forced.forced


def test_a_plan_that_changed_since_its_preview_is_refused(env: Env) -> None:
    env.add(3)
    service = env.service()
    preview = service.plan(entity_request(), actor="a")
    env.add(1, day=DAY + timedelta(hours=5))
    with pytest.raises(ReplayRefused, match="changed since its preview"):
        service.execute(entity_request(), actor="a", expected_fingerprint=preview.fingerprint)
    with pytest.raises(InvalidRequest):
        service.execute(entity_request(), actor="a", expected_fingerprint="abc")
    assert env.ports.queue.depth().visible == 0


def test_read_only_plans_without_auditing_and_refuses_execution(env: Env) -> None:
    env.add(3)
    service = env.service(read_only=True)
    plan = service.plan(entity_request(), actor="a")
    assert plan.would_send == 3 and env.ports.audit.get(plan.replay_id) is None
    with pytest.raises(ReadOnlyError):
        service.execute(entity_request(), actor="a")


def test_an_interrupted_replay_is_audited_with_how_far_it_got(env: Env) -> None:
    env.add(30)

    def stop(sent: int, failed: int, total: int) -> None:
        if sent >= 20:
            raise KeyboardInterrupt

    service = env.service()
    with pytest.raises(KeyboardInterrupt):
        service.execute(entity_request(), actor="a", on_progress=stop)
    [record] = env.ports.audit.query().items
    assert record.outcome is ReplayOutcome.INTERRUPTED and (record.sent, record.would_send) == (20, 30)
    assert len(env.drain()) == 20


def test_the_api_reply(env: Env) -> None:
    env.add(3)
    service = env.service(confirm_above=2)
    body = {"entity_id": "user_1", "start_time": "2025-12-28T00:00:00Z", "end_time": "2025-12-29T00:00:00Z"}
    status, reply = api_reply(service, json.dumps(body), actor="api", dry_run=True)
    assert status == 200 and (reply["entity_id"], reply["scanned"], reply["sent"]) == ("user_1", 3, 0)
    assert reply["dry_run"] and reply["would_send"] == 3
    status, reply = api_reply(service, body, actor="api")
    assert status == 409 and "size guard" in reply["error"] and reply["sent"] == 0
    status, reply = api_reply(service, {**body, "force": True}, actor="api")
    assert status == 200 and reply["sent"] == 3 and reply["outcome"] == "SENT"
    assert api_reply(service, {**body, "entity": "x"}, actor="api")[0] == 400
    assert api_reply(service, b"{nope", actor="api")[0] == 400
    assert api_reply(service, [1], actor="api")[0] == 400
    assert api_reply(service, {"entity_id": "e"}, actor="api")[0] == 400
    assert api_reply(env.service(read_only=True), {**body, "force": True}, actor="api")[0] == 403


@pytest.mark.parametrize(
    "flags",
    [{"dry_run": "true"}, {"dry_run": 1}, {"force": "yes"}, {"force": 1}, {"expected_fingerprint": 7}],
)
def test_the_api_refuses_flags_that_are_not_booleans_and_sends_nothing(
    env: Env, flags: dict[str, Any]
) -> None:
    # "dry_run": "true" must not be read as false (and send), nor "force": "yes" as a force.
    env.add(3)
    body = {"entity_id": "user_1", "start_time": "2025-12-28T00:00:00Z", "end_time": "2025-12-29T00:00:00Z"}
    status, reply = api_reply(env.service(), {**body, **flags}, actor="api")
    assert status == 400 and next(iter(flags)) in reply["error"]
    assert env.drain() == [] and env.ports.audit.query().items == []


# -- local details ----------------------------------------------------------------------------------------


def test_the_local_catalog_answers_the_same_without_json_each(env: Env) -> None:
    env.add(3)
    keys = [r.s3_key for r in env.store.query_entity("user_1", "2025-12-28", "2025-12-29").items]
    asked = [*keys, "raw/none", keys[0], 'it\'s "quoted"']
    fast = env.ports.catalog.missing(asked)
    env.ports.catalog._json_each = False  # as on an SQLite built without JSON functions
    assert env.ports.catalog.missing(asked) == fast == {"raw/none", 'it\'s "quoted"'}


def test_a_received_message_comes_back_after_its_visibility_timeout(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ws")
    clock = FixedClock(DAY)
    queue = LocalQueue(store, max_receives=2, clock=clock)
    try:
        queue.send_batch(["m"])
        [first] = queue.receive(10, 30)
        clock.advance(timedelta(seconds=29))
        assert queue.receive(10, 30) == []
        clock.advance(timedelta(seconds=1))
        [second] = queue.receive(10, 30)
        assert second.receive_count == 2
        queue.delete([first.receipt_handle])  # a stale handle deletes nothing
        clock.advance(timedelta(seconds=30))
        assert queue.receive(10, 30) == []  # received twice: dead now
        [dead] = queue.dead_letters().items
        assert dead.dead_at == fmt(clock.now()) and dead.sent_at == fmt(DAY)
    finally:
        store.close()


# -- CLI --------------------------------------------------------------------------------------------------


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ws(env: Env) -> str:
    env.add(12)
    duplicate = make_event(entity_id="user_1", event_time="2025-12-28T00:00:00Z", payload={"i": 0})
    env.ingest.ingest_batch([Received(duplicate)])
    env.add(1, entity="[bold red]boom[/bold red]")
    return env.store.location


def test_pik_replay_is_a_dry_run_by_default(ws: str, env: Env) -> None:
    code, out, err = call("replay", "--entity", "user_1", "--day", "2025-12-28", "--workspace", ws)
    assert code == 0, err
    assert out.startswith("DRY RUN rp-") and "nothing was sent" in out
    assert re.search(r"would send +12\n", out) and re.search(r"skipped: duplicate +1\n", out)
    assert "--execute --expect" in out
    assert env.ports.queue.depth().visible == 0
    code, out, _ = call("replay", "--entity", "user_1", "--day", "2025-12-28", "--json", "--workspace", ws)
    data = json.loads(out)
    assert (
        code == 0 and data["dry_run"] and (data["scanned"], data["sent"], data["would_send"]) == (13, 0, 12)
    )


def test_pik_replay_execute_and_the_audit_trail(ws: str, env: Env) -> None:
    code, out, _ = call("replay", "--entity", "user_1", "--day", "2025-12-28", "--json", "--workspace", ws)
    fingerprint = json.loads(out)["fingerprint"]
    code, out, err = call(
        "replay", "--entity", "user_1", "--start", "2025-12-28", "--end", "2025-12-29T00:00:00Z", "--execute",
        "--expect", fingerprint[:16], "--workspace", ws,
    )  # fmt: skip
    assert code == 0, err
    assert "SENT: sent 12 of 12 messages, 0 failed" in out and "pik process" in out
    assert env.ports.queue.depth().visible == 12
    code, out, _ = call("replays", "--workspace", ws)
    assert code == 0 and out.count("rp-") == 2 and "SENT" in out and "DRY_RUN" in out
    code, out, _ = call("replays", "--json", "--limit", "1", "--workspace", ws)
    data = json.loads(out)
    assert data["items"][0]["outcome"] == "SENT" and data["next_cursor"]
    replay_id = data["items"][0]["replay_id"]
    code, out, _ = call("replays", replay_id, "--workspace", ws)
    assert code == 0 and f"Replay {replay_id}: SENT" in out and "sent 12" in out
    code, _, err = call("replays", "rp-nope", "--workspace", ws)
    assert code == 1 and "no replay" in err


def test_pik_replay_guard_and_changed_plans(ws: str, env: Env) -> None:
    Path(ws, "settings.toml").write_text("[replay]\nconfirm_above = 5\n")
    code, out, err = call(
        "replay", "--entity", "user_1", "--day", "2025-12-28", "--execute", "--workspace", ws
    )
    assert code == 1 and "size guard of 5" in err and out.startswith("NOT SENT")
    assert env.ports.queue.depth().visible == 0
    code, out, err = call(
        "replay", "--entity", "user_1", "--day", "2025-12-28", "--execute", "--force", "--expect", "0" * 16,
        "--workspace", ws,
    )  # fmt: skip
    assert code == 1 and "changed since its preview" in err
    code, out, err = call(
        "replay", "--entity", "user_1", "--day", "2025-12-28", "--execute", "--force", "--workspace", ws
    )
    assert code == 0 and "sent 12 of 12" in out
    Path(ws, "settings.toml").write_text("[replay]\nconfirm_abov = 5\n")
    code, _, err = call("replay", "--entity", "user_1", "--day", "2025-12-28", "--workspace", ws)
    assert code == 1 and "settings.toml" in err and "confirm_abov" in err


def test_pik_replay_source_type_scope_shows_hostile_text_literally(ws: str) -> None:
    code, out, err = call(
        "replay", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-28", "--workspace", ws
    )
    assert code == 0, err
    assert re.search(r"would send +13\n", out) and "2 entities" in out
    code, out, err = call(
        "replay", "--entity", "[bold red]boom[/bold red]", "--day", "2025-12-28", "--workspace", ws
    )
    assert code == 0, err
    assert "entity '[bold red]boom[/bold red]'" in out and "  [bold red]boom[/bold red]  " in out


@pytest.mark.parametrize(
    "argv",
    [
        ["replay"],
        ["replay", "--entity", "e"],
        ["replay", "--entity", "e", "--day", "2025-12-28", "--start", "2025-12-28"],
        ["replay", "--entity", "e", "--start", "2025-12-29", "--end", "2025-12-28"],
        ["replay", "--source", "s", "--type", "t"],
        ["replay", "--source", "s", "--type", "t", "--day", "2025-13-01"],
        ["replay", "--entity", "e", "--day", "2025-12-28", "--force"],
        ["replay", "--entity", "e", "--day", "2025-12-28", "--limit", "0"],
        ["replay", "--entity", "e", "--day", "2025-12-28", "--execute", "--expect", "ab"],
        ["replays", "--after", "garbage"],
    ],
)
def test_pik_replay_usage_errors(ws: str, argv: list[str]) -> None:
    code, _, err = call(*argv, "--workspace", ws)
    assert code == 2, err


def test_pik_as_a_separate_process_reports_replay_errors_without_a_traceback(ws: str) -> None:
    """`python -m pik_console.cli` runs the importable module's main, so commands registered from other
    modules exit 1 and 2 with one line on stderr (not a traceback)."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pik_console.cli", *argv, "--workspace", ws],
            capture_output=True, text=True, cwd=root, env=dict(os.environ), timeout=120, check=False,
        )  # fmt: skip

    usage = run("replay", "--entity", "user_1")
    assert usage.returncode == 2 and "Traceback" not in usage.stderr and "pik replay: error:" in usage.stderr
    Path(ws, "settings.toml").write_text("[replay]\nconfirm_above = 1\n")
    refused = run("replay", "--entity", "user_1", "--day", "2025-12-28", "--execute")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr and "size guard" in refused.stderr
    dry = run("replay", "--entity", "user_1", "--day", "2025-12-28", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["would_send"] == 12
