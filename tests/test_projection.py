"""The what-if of a dry run: it writes nothing (every store compared before and after, on both adapters),
it is bounded (the first N windows exactly, the rest counted and said), each projected metric says why it
moves, and the CLI (text and ``--json``) and the API answer it."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from backend.handlers.replay import api_reply
from backend.kit import Kit, open_local
from backend.model import ProjectedVersion, ReplayOutcome, ReplayRequest
from backend.ports import DayCount
from backend.services.ingest import Received
from backend.services.projection import Projector
from backend.times import Clock
from pik_console.cli import main
from tests.conftest import make_event
from tests.test_projection_properties import METRICS_TOML, _ingest, _replay_and_process, open_test_kit

DAY = "2025-12-28"
REQUIRED = {
    "entity_id",
    "day",
    "metric",
    "current_version",
    "current_value",
    "projected_value",
    "delta",
    "reason",
}


def heartbeat(entity: str, minute: int, steps: int, **kw: Any) -> bytes:
    return make_event(
        entity_id=entity, event_time=f"{DAY}T10:{minute:02d}:00Z", payload={"steps": steps}, **kw
    )


def window(entity: str) -> ReplayRequest:
    return ReplayRequest(entity_id=entity, start_time=f"{DAY}T00:00:00Z", end_time="2025-12-29T00:00:00Z")


def incident(kit: Kit) -> None:
    """``u1`` processed (2 events), then one late arrival and a duplicate receipt; ``u2`` never processed."""
    _ingest(kit, [heartbeat("u1", 1, 10), heartbeat("u1", 2, 20)])
    _replay_and_process(kit, window("u1"))
    _ingest(kit, [heartbeat("u1", 3, 5), heartbeat("u1", 1, 10), heartbeat("u2", 1, 4)])


# -- the dry run writes nothing ------------------------------------------------------------------------------


def _local_state(kit: Kit) -> dict[str, str]:
    db = sqlite3.connect(f"file:{Path(kit.location) / 'pik.sqlite3'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {}
        for t in tables:
            rows = sorted(repr(r) for r in db.execute(f'SELECT * FROM "{t}"'))
            out[t] = f"{len(rows)} rows, " + hashlib.sha256("\n".join(rows).encode()).hexdigest()
        return out
    finally:
        db.close()


def _aws_state(kit: Kit) -> dict[str, str]:
    from tests.aws_env import session

    aws = kit.settings.aws
    sess = session()
    ddb, s3, sqs = sess.client("dynamodb"), sess.client("s3"), sess.client("sqs")
    out = {}
    for table in (aws.events_table, aws.dedupe_table, aws.agg_table, aws.audit_table):
        items: list[str] = []
        for page in ddb.get_paginator("scan").paginate(TableName=table):
            items += [json.dumps(i, sort_keys=True) for i in page["Items"]]
        items.sort()
        out[str(table)] = f"{len(items)} items, " + hashlib.sha256("\n".join(items).encode()).hexdigest()
    keys = [o["Key"] for p in s3.get_paginator("list_objects_v2").paginate(Bucket=aws.raw_bucket)
            for o in p.get("Contents", [])]  # fmt: skip
    out["s3"] = f"{len(keys)} objects, " + hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    for url in (aws.replay_queue_url, aws.replay_dlq_url):
        attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        out[str(url)] = (
            f"{attrs['ApproximateNumberOfMessages']} + {attrs['ApproximateNumberOfMessagesNotVisible']}"
        )
    return out


@pytest.fixture(params=["local", "aws"])
def kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Kit]:
    with open_test_kit(request.param, tmp_path) as opened:
        yield opened


def test_a_dry_run_projects_without_writing_anything_but_its_audit_record(kit: Kit) -> None:
    incident(kit)
    state = _local_state if kit.name == "local" else _aws_state
    audit_table = "replay_audit" if kit.name == "local" else str(kit.settings.aws.audit_table)
    before = state(kit)
    assert audit_table in before, sorted(before)

    preview = kit.replay(preview=True).plan(window("u1"), actor="test")
    assert state(kit) == before  # a preview writes nothing at all
    plan = kit.replay().plan(window("u1"), actor="test")
    after = state(kit)
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {audit_table}  # only the DRY_RUN audit record
    assert kit.audit is not None
    assert kit.audit.get(plan.replay_id) is not None
    assert kit.audit.get(plan.replay_id).outcome is ReplayOutcome.DRY_RUN  # type: ignore[union-attr]

    for p in (preview, plan):
        count = next(x for x in p.projected if x.metric == "daily_event_count")
        assert (count.current_version, count.current_value) == (1, 2)
        assert (count.projected_version, count.projected_value, count.delta) == (2, 3, 1)
        steps = next(x for x in p.projected if x.metric == "steps_total")
        assert (steps.current_value, steps.projected_value, steps.delta) == (30, 35, 5)
    # Nothing was processed: the window still has its one version.
    assert kit.aggregates is not None
    assert kit.aggregates.latest("u1", DAY, "daily_event_count").version == 1  # type: ignore[union-attr]


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Kit]:
    with open_test_kit("local", tmp_path) as opened:
        yield opened


def test_each_projected_metric_says_why_it_moves_or_not(local: Kit) -> None:
    incident(local)
    _replay_and_process(local, window("u2"))
    _ingest(local, [heartbeat("u2", 1, 4)])  # u2: a duplicate receipt only, nothing new
    u1 = {p.metric: p for p in local.replay().plan(window("u1"), actor="t").projected}
    assert re.fullmatch(
        r"1 event added late \(ingested after version 1 was computed, lag up to \d+d \d\dh\); "
        r"1 duplicate receipt excluded \(each event counts once\)\.",
        u1["daily_event_count"].reason,
    ), u1["daily_event_count"].reason
    # A new version whose value stays: its inputs changed (the late event), its max did not.
    assert u1["steps_max"].new_version and u1["steps_max"].delta == 0
    assert u1["steps_max"].reason.startswith("1 event added late")
    u2 = {p.metric: p for p in local.replay().plan(window("u2"), actor="t").projected}
    assert all(not p.new_version for p in u2.values())
    assert u2["daily_event_count"].reason == (
        "unchanged: no event arrived in the window since version 1 was computed; 1 duplicate receipt "
        "excluded (each event counts once)."
    )
    assert u2["daily_event_count"].delta == 0
    _ingest(local, [heartbeat("u3", 1, 4)])
    (first,) = [
        p for p in local.replay().plan(window("u3"), actor="t").projected if p.metric == "steps_total"
    ]
    assert first.current_version is None and first.current_value is None and first.delta is None
    assert (first.projected_version, first.projected_value) == (1, 4)
    assert first.reason == "the window has no version yet: version 1 would be computed from 1 event."


def test_an_input_ingested_in_the_millisecond_of_the_versions_stamp_is_late(
    local: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Times are stored to the millisecond and a version reads its window before it is stamped: an event
    it lacks, ingested in the same millisecond, arrived after the read (the test once failed when the late
    ingest and the stamp fell in one millisecond)."""
    now = datetime(2026, 1, 5, 9, 30, 0, 123456, tzinfo=UTC)
    monkeypatch.setattr(Clock, "now", lambda self: now)
    incident(local)
    u1 = {p.metric: p for p in local.replay().plan(window("u1"), actor="t").projected}
    assert u1["steps_max"].reason.startswith("1 event added late (ingested after version 1 was computed"), u1[
        "steps_max"
    ].reason


def test_a_changed_metric_definition_is_the_reason(local: Kit) -> None:
    incident(local)
    toml = Path(local.location) / "settings.toml"
    toml.write_text(METRICS_TOML.replace('kind = "max"', 'kind = "min"'), encoding="utf-8")
    (p,) = [p for p in local.replay().plan(window("u1"), actor="t").projected if p.metric == "steps_max"]
    assert p.new_version and (p.current_value, p.projected_value) == (20, 5)
    assert "the metric's definition changed" in p.reason


def test_the_first_n_windows_are_projected_exactly_and_the_rest_counted(local: Kit) -> None:
    _ingest(local, [heartbeat(f"u{i}", 1, i) for i in range(5)])
    toml = Path(local.location) / "settings.toml"
    toml.write_text(METRICS_TOML + "\n[replay]\nproject_windows = 2\n", encoding="utf-8")
    request = ReplayRequest(source="demo", event_type="heartbeat", start_day=DAY, end_day="2025-12-29")
    plan = local.replay().plan(request, actor="t")
    assert plan.windows == 5
    assert (plan.windows_projected, plan.windows_not_projected) == (2, 3)
    assert [(p.entity_id, p.metric) for p in plan.projected] == [
        (e, m) for e in ("u0", "u1") for m in ("daily_event_count", "steps_total", "steps_max")
    ]
    assert (
        "3 more windows not projected (the bound is 2 windows: settings.toml [replay] project_windows)"
        in (plan.why)
    )
    assert not any("may add new versions" in line for line in plan.why)

    toml.write_text(METRICS_TOML + "\n[replay]\nproject_windows = 0\n", encoding="utf-8")
    off = local.replay().plan(request, actor="t")
    assert off.projected == [] and off.windows_projected is None


# -- the CLI and the API -------------------------------------------------------------------------------------


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_pik_replay_json_and_text_show_the_projection(local: Kit) -> None:
    incident(local)
    ws = local.location
    local.close()
    code, out, err = call("replay", "--workspace", ws, "--entity", "u1", "--day", DAY, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["dry_run"] is True and data["sent"] == 0
    assert (data["windows_projected"], data["windows_not_projected"]) == (1, 0)
    assert len(data["projected"]) == 3 and all(set(p) >= REQUIRED for p in data["projected"])
    count = next(p for p in data["projected"] if p["metric"] == "daily_event_count")
    assert {k: count[k] for k in REQUIRED - {"reason"}} == {
        "entity_id": "u1",
        "day": DAY,
        "metric": "daily_event_count",
        "current_version": 1,
        "current_value": 2,
        "projected_value": 3,
        "delta": 1,
    }
    assert "added late" in count["reason"]

    code, out, err = call("replay", "--workspace", ws, "--entity", "u1", "--day", DAY)
    assert code == 0, err
    assert "Once processed (projected for 1 window of 1; nothing was written):" in out
    assert "v1 = 2" in out and "v2 = 3" in out and "+1" in out
    assert "a processor run would add 3 new versions in 1 window of the 1 window projected" in out
    assert "may add new versions" not in out
    # Nothing was processed by the dry runs.
    code, out, _ = call("aggregates", "--workspace", ws, "--entity", "u1", "--day", DAY, "--json")
    assert code == 0 and '"version":2' not in out.replace(" ", "")


def test_the_api_preview_answers_the_projection(local: Kit) -> None:
    incident(local)
    status, body = api_reply(
        local.replay(), {**window("u1").model_dump(mode="json"), "dry_run": True}, actor="api"
    )
    assert status == 200 and body["sent"] == 0
    assert body["windows_projected"] == 1
    assert {p["metric"]: p["delta"] for p in body["projected"]} == {
        "daily_event_count": 1,
        "steps_total": 5,
        "steps_max": 0,
    }


def test_a_window_the_processor_cannot_recompute_is_said_not_projected(local: Kit) -> None:
    from tests.contract.test_event_index import rec

    _ingest(local, [heartbeat("u1", 1, 10)])
    # An index record whose raw bytes are missing: the replay skips it, the processor cannot read its
    # payload for the field metrics, so neither can the projection.
    local.index.record([rec("u1", f"{DAY}T11:00:00.000Z")])
    plan = local.replay().plan(window("u1"), actor="t")
    assert plan.would_send == 1 and plan.skipped.missing_raw == 1
    assert (plan.windows_projected, plan.windows_not_projected, plan.projected) == (0, 1, [])
    (line,) = [w for w in plan.why if "could not be projected" in w]
    assert line.startswith(f"window 'u1' {DAY} could not be projected (the processor may fail on it too): ")
    assert "raw bytes" in line and "missing" in line


def test_the_projection_stops_at_its_event_budget_and_says_why(tmp_path: Path) -> None:
    """A window is recomputed whole: above ``project_events`` the dry run counts it and says why instead.
    (A window whose first versions are counts of its events is projected from its counts, reading none.)"""
    kit = open_local(tmp_path / "ws", create=True)
    lines = [
        json.dumps(
            {
                "source": "iot",
                "event_type": "reading",
                "entity_id": entity,
                "event_time": f"2025-12-01T{i // 60:02d}:{i % 60:02d}:00.000Z",
                "payload": {"n": i},
            }
        ).encode()
        for entity, count in (("small", 5), ("big", 40))
        for i in range(count)
    ]
    list(kit.ingest().ingest_stream(iter(Received(b, "t", n + 1) for n, b in enumerate(lines))))
    # A metric of a payload field: its windows must be read (a count alone is projected from counts).
    (tmp_path / "ws" / "settings.toml").write_text(
        '[replay]\nproject_events = 20\n\n[[metrics]]\nname = "n_total"\nkind = "sum"\nfield = "n"\n'
    )
    request = ReplayRequest(source="iot", event_type="reading", start_day="2025-12-01", end_day="2025-12-02")
    plan = kit.replay(preview=True).plan(request, actor="test")
    projected = {p.entity_id for p in plan.projected}
    assert plan.windows == 2 and plan.windows_projected + plan.windows_not_projected == 2
    assert projected == {"small"} and plan.windows_not_projected == 1  # the smaller window still projected
    assert any("over the projection's budget of 20" in line and "40 events" in line for line in plan.why)


class _RecomputeAlways(Projector):
    """The projector with every window recomputed by the processor (no projection from counts)."""

    def _first_versions(
        self, window: tuple[str, str], count: DayCount | None, prefetched: object = None
    ) -> list[ProjectedVersion] | None:
        return None


def test_first_versions_projected_from_counts_are_what_the_processor_answers(local: Kit) -> None:
    """Windows without versions, counted only: the same projection, field for field, as the recompute."""
    _ingest(local, [heartbeat("u1", 1, 10), heartbeat("u1", 2, 20), heartbeat("u1", 1, 10)])
    _ingest(local, [heartbeat("u2", 5, 1), make_event(entity_id="u1", event_time="2025-12-29T01:00:00Z")])
    windows = [("u1", DAY), ("u2", DAY), ("u1", "2025-12-29")]
    ports = (local.investigate, local.catalog, local.aggregates)
    counted = Projector(*ports).project(windows)
    recomputed = _RecomputeAlways(*ports).project(windows)
    assert counted.projected == recomputed.projected and counted.windows_projected == 3
    assert [p.projected_value for p in counted.projected] == [2, 1, 1]
    assert "1 duplicate receipt excluded" in counted.projected[0].reason
    # Once a window has a version, it is the processor's to recompute (the reason needs its inputs).
    _replay_and_process(local, window("u1"))
    again = Projector(*ports).project(windows[:1])
    assert again.projected == _RecomputeAlways(*ports).project(windows[:1]).projected
    assert again.projected[0].new_version is False
