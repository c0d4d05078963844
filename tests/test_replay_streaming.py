"""Replays that stream (issues 14 and 16): a dry run reports its progress and can be stopped; an execution
sends the checked plan while reading it again a stretch at a time, and stops before a stretch that is not
the one checked (the index changed in between), with what was sent counted and audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.errors import Cancelled
from backend.model import ReplayOutcome, ReplayRequest
from backend.ports import Receipt
from backend.replay_fingerprint import CHECKPOINT_EVERY
from backend.services.ingest import Received
from backend.times import fmt
from tests.conftest import make_event
from tests.test_replay import DAY, Env, entity_request


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "ws")
    yield e
    e.store.close()


def test_a_dry_run_reports_its_progress_and_the_total(env: Env) -> None:
    env.add(30)
    seen: list[tuple[int, int | None]] = []
    plan = env.service().plan(
        entity_request(), actor="a", on_progress=lambda n, total: seen.append((n, total))
    )
    assert plan.would_send == 30
    assert seen and seen[-1] == (30, 30)
    assert [n for n, _ in seen] == sorted(n for n, _ in seen)


def test_a_stopped_dry_run_raises_cancelled_and_audits_nothing(env: Env) -> None:
    env.add(30)
    with pytest.raises(Cancelled):
        env.service().plan(entity_request(), actor="a", should_stop=lambda: True)
    assert env.ports.audit.query().items == []


class _Changing:
    """The local investigation, with events ingested into the window after the plan is checked: before
    the execution reads it again (``at`` 0), or while it reads receipt ``at`` (the local read fetches a
    page of 4,096 rows at a time, so a change lands in the pages after the one in hand)."""

    def __init__(self, env: Env, at: int, bodies: list[bytes]) -> None:
        self._inner = env.ports.investigate
        self._env = env
        self._at = at
        self._bodies = bodies

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def replay_receipts(self, request: ReplayRequest, **kw: Any) -> Iterator[Receipt]:
        if self._at == 0:
            self._land()
        for n, r in enumerate(self._inner.replay_receipts(request, **kw)):
            if n == self._at:
                self._land()
            yield r

    def _land(self) -> None:
        if self._bodies:
            self._env.ingest.ingest_batch([Received(b) for b in self._bodies])
            self._bodies = []


def _late(n: int) -> list[bytes]:
    return [
        make_event(
            entity_id="user_1", event_time=fmt(DAY + timedelta(seconds=1, minutes=i)), payload={"late": i}
        )
        for i in range(n)
    ]


def test_an_index_that_changed_before_the_send_sends_nothing(env: Env) -> None:
    env.add(25)
    service = env.service()
    preview = service.plan(entity_request(), actor="a")
    service.scans = _Changing(env, 0, _late(1))  # type: ignore[assignment]
    result = service.execute(entity_request(), actor="a", expected_fingerprint=preview.fingerprint)
    assert (result.outcome, result.sent, result.failed) == (ReplayOutcome.FAILED, 0, 25)
    assert result.error is not None and "the index changed while the replay was sent" in result.error
    assert env.drain() == []
    assert env.ports.audit.get(result.replay_id) == result


def test_a_change_in_a_later_stretch_stops_the_send_before_it(env: Env) -> None:
    """Stretches of 4,096 receipts are checked one by one: the first is sent, the changed one is not."""
    env.add(CHECKPOINT_EVERY + 50)
    service = env.service(confirm_above=10_000)
    request = entity_request(end_time="2026-01-02", limit=10_000)  # 4,146 minutes: three days
    # A late event lands in the second stretch's time range while the first is being read.
    late = [
        make_event(
            entity_id="user_1", event_time=fmt(DAY + timedelta(minutes=CHECKPOINT_EVERY + 10, seconds=1))
        )
    ]
    service.scans = _Changing(env, 10, late)  # type: ignore[assignment]
    result = service.execute(request, actor="a")
    assert result.outcome is ReplayOutcome.PARTIAL
    assert (result.sent, result.failed) == (CHECKPOINT_EVERY, 50)
    assert result.error is not None and f"receipts {CHECKPOINT_EVERY + 1:,} to" in result.error
    sent = env.drain()
    assert len(sent) == CHECKPOINT_EVERY and len({m["event_id"] for m in sent}) == CHECKPOINT_EVERY
    assert all(json.loads(json.dumps(m))["replay_id"] == result.replay_id for m in sent)
