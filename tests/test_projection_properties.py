"""The what-if of a dry run as a property, on both adapters: whatever the index held, whatever was processed
before, whatever arrived late and whatever the scope, after the replay is executed and the queue drained the
latest version of every projected (entity, day, metric) is exactly the projected one (number, value, input
count), a new version appeared exactly where one was projected, and the current version it names is the
one that was latest at the dry run."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from backend.kit import Kit, aws_kit, open_local
from backend.model import IngestStatus, MetricKind, MetricSpec, ReplayRequest
from backend.services.ingest import Received
from backend.settings import Settings
from tests.conftest import make_event

METRICS = [
    MetricSpec(name="steps_total", kind=MetricKind.SUM, field="steps", event_type="heartbeat"),
    MetricSpec(name="steps_max", kind=MetricKind.MAX, field="steps"),
]
METRICS_TOML = """
[[metrics]]
name = "steps_total"
kind = "sum"
field = "steps"
event_type = "heartbeat"

[[metrics]]
name = "steps_max"
kind = "max"
field = "steps"
"""
DAYS = ["2025-12-27", "2025-12-28", "2025-12-29"]


@contextlib.contextmanager
def open_test_kit(name: str, root: Path, toml: str = METRICS_TOML) -> Iterator[Kit]:
    """A fresh kit with the metrics above: a local workspace, or the AWS adapter on moto."""
    if name == "local":
        (root / "ws").mkdir(parents=True)
        (root / "ws" / "settings.toml").write_text(toml, encoding="utf-8")
        kit = open_local(root / "ws")
    else:
        from backend.settings import parse_settings
        from tests.aws_env import moto_backend

        store, aws, close = moto_backend()
        sections = parse_settings(toml)
        kit = aws_kit(
            store,
            aws,
            settings=Settings(backend="aws", aws=aws, metrics=sections.metrics, replay=sections.replay),
            close=close,
        )
    try:
        yield kit
    finally:
        kit.close()


event = st.tuples(
    st.integers(0, 1),  # entity
    st.integers(0, 1),  # day
    st.integers(0, 1439),  # minute of the day
    st.one_of(st.none(), st.integers(0, 50)),  # steps (None: not in the payload)
    st.sampled_from(["heartbeat", "click"]),
    st.integers(0, 1),  # extra identical receipts (duplicates)
)
scopes = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.just("entity"),
            "entity": st.integers(0, 1),
            "first": st.integers(0, 1),
            "span": st.integers(1, 2),
            "event_type": st.sampled_from([None, "heartbeat"]),
        }
    ),
    st.fixed_dictionaries(
        {"kind": st.just("partition"), "first": st.integers(0, 1), "span": st.integers(1, 2)}
    ),
)
cases = st.fixed_dictionaries(
    {
        "first": st.lists(event, min_size=1, max_size=8),
        "processed": st.sampled_from(["none", "all", "all", "entity 0"]),
        "late": st.lists(event, max_size=5),
        "resent": st.lists(st.integers(0, 7), max_size=3),  # earlier events sent again (duplicates)
        "scope": scopes,
        "limit": st.integers(1, 30),
        "include_duplicates": st.booleans(),
        "status": st.sampled_from([None, None, IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]),
    }
)


def _body(run: str, e: tuple[Any, ...]) -> bytes:
    entity, day, minute, steps, event_type, _ = e
    payload: dict[str, Any] = {"n": minute} if steps is None else {"steps": steps, "n": minute}
    return make_event(
        source=f"src{run}",
        event_type=event_type,
        entity_id=f"{run}-e{entity}",
        event_time=f"{DAYS[day]}T{minute // 60:02d}:{minute % 60:02d}:00Z",
        payload=payload,
    )


def _ingest(kit: Kit, bodies: list[bytes]) -> None:
    for result in kit.ingest().ingest_batch([_received(b) for b in bodies]):
        assert result.status is not IngestStatus.REJECTED, result.reason


def _received(body: bytes) -> Received:
    return Received(body, "api")


def _replay_and_process(kit: Kit, request: ReplayRequest) -> None:
    service = kit.replay()
    plan = service.plan(request, actor="test")
    if plan.would_send:
        audit = service.execute(request, actor="test", force=True, expected_fingerprint=plan.fingerprint)
        assert audit.sent == plan.would_send
        kit.drain().run()


def _entity_request(run: str, entity: int, first: int = 0, span: int = 3, **kw: Any) -> ReplayRequest:
    end = DAYS[first + span] if first + span < len(DAYS) else "2025-12-30"
    return ReplayRequest(
        entity_id=f"{run}-e{entity}",
        start_time=f"{DAYS[first]}T00:00:00Z",
        end_time=f"{end}T00:00:00Z",
        **kw,
    )


def check_projection(kit: Kit, run: str, case: dict[str, Any]) -> None:
    first = [_body(run, e) for e in case["first"] for _ in range(1 + e[5])]
    _ingest(kit, first)
    if case["processed"] == "all":
        for entity in (0, 1):
            _replay_and_process(kit, _entity_request(run, entity, limit=1000))
    elif case["processed"] == "entity 0":
        _replay_and_process(kit, _entity_request(run, 0, limit=1000))
    late = [_body(run, e) for e in case["late"] for _ in range(1 + e[5])]
    late += [_body(run, case["first"][i]) for i in case["resent"] if i < len(case["first"])]
    _ingest(kit, late)

    scope = case["scope"]
    common = {
        "limit": case["limit"],
        "include_duplicates": case["include_duplicates"],
        "status": case["status"],
    }
    if scope["kind"] == "entity":
        request = _entity_request(
            run, scope["entity"], scope["first"], scope["span"], event_type=scope["event_type"], **common
        )
    else:
        request = ReplayRequest(
            source=f"src{run}",
            event_type="heartbeat",
            start_day=DAYS[scope["first"]],
            end_day=DAYS[scope["first"] + scope["span"]]
            if scope["first"] + scope["span"] < len(DAYS)
            else "2025-12-30",
            **common,
        )
    service = kit.replay()
    plan = service.plan(request, actor="test")
    if plan.would_send == 0:
        assert plan.projected == [] and plan.windows_projected is None
        return
    assert plan.windows_projected == plan.windows and plan.windows_not_projected == 0
    metrics = [m.name for m in kit.metrics()]
    assert len(plan.projected) == plan.windows * len(metrics)
    assert kit.aggregates is not None
    before = {
        (p.entity_id, p.day, p.metric): kit.aggregates.latest(p.entity_id, p.day, p.metric)
        for p in plan.projected
    }
    audit = service.execute(request, actor="test", force=True, expected_fingerprint=plan.fingerprint)
    assert audit.sent == plan.would_send
    kit.drain().run()
    for p in plan.projected:
        was = before[(p.entity_id, p.day, p.metric)]
        now = kit.aggregates.latest(p.entity_id, p.day, p.metric)
        assert now is not None
        assert p.current_version == (was.version if was else None)
        assert p.current_value == (was.value if was else None)
        assert (now.version, now.value, now.input_count) == (
            p.projected_version,
            p.projected_value,
            p.projected_inputs,
        ), p
        assert p.new_version == (was is None or now.version > was.version), p
        if p.new_version:
            assert now.version == (was.version + 1 if was else 1)
        if isinstance(p.current_value, int) and isinstance(p.projected_value, int):
            assert p.delta == p.projected_value - p.current_value
        assert p.reason.endswith(".") and "\n" not in p.reason


# Two cases every run checks: a late arrival into a processed window (a new version with a new value), and
# a replay of duplicate receipts only (the windows are recomputed; the duplicates do not count).
LATE_AFTER_PROCESSING = {
    "first": [(0, 0, 600, 5, "heartbeat", 0), (0, 1, 60, 3, "click", 1)],
    "processed": "all",
    "late": [(0, 0, 700, 7, "heartbeat", 0)],
    "resent": [0],
    "scope": {"kind": "entity", "entity": 0, "first": 0, "span": 2, "event_type": None},
    "limit": 30,
    "include_duplicates": False,
    "status": None,
}
DUPLICATES_REPLAYED = {
    **LATE_AFTER_PROCESSING,
    "processed": "entity 0",
    "scope": {"kind": "partition", "first": 0, "span": 2},
    "include_duplicates": True,
    "status": IngestStatus.DUPLICATE,
}


@pytest.mark.parametrize(("name", "examples"), [("local", 40), ("aws", 8)])
def test_after_execute_and_process_the_new_versions_equal_the_projection(
    name: str, examples: int, tmp_path: Path
) -> None:
    runs = itertools.count()
    with open_test_kit(name, tmp_path) as kit:

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        )
        @given(case=cases)
        @example(case=LATE_AFTER_PROCESSING)
        @example(case=DUPLICATES_REPLAYED)
        def prop(case: dict[str, Any]) -> None:
            # Each example has its own entities and source: the examples share one backend.
            check_projection(kit, f"r{next(runs)}", case)

        prop()
