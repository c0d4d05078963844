"""`pik aws rollup-backfill` on a moto server: it counts what the stack holds, after which `pik gaps` and
`pik lag` answer from the rollups with the same counts they gave by scanning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.aws.test_aws_init import REGION, endpoint, exports, pik

__all__ = ["endpoint"]  # the fixture, shared with the init tests


def test_backfill_then_gaps_and_lag_read_the_rollups(
    endpoint: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    code, out, _ = pik("aws", "init", "--endpoint-url", endpoint, "--prefix", "rb")
    assert code == 0
    for name, value in exports(out).items():
        monkeypatch.setenv(name, value)
    lines = tmp_path / "events.jsonl"
    events = [
        {"source": "demo", "event_type": "heartbeat", "entity_id": f"user_{i % 3}",
         "event_time": f"2025-12-2{7 + i % 2}T1{i % 10}:00:00Z", "payload": {"i": i}}
        for i in range(12)
    ]  # fmt: skip
    lines.write_text("\n".join(json.dumps(e) for e in [*events, events[0]]) + "\n", encoding="utf-8")
    target = ["--backend", "aws", "--endpoint-url", endpoint, "--region", REGION]
    assert pik("ingest", str(lines), *target, "--json")[0] == 0
    scope = ["--start", "2025-12-26", "--end", "2025-12-30", "--json"]
    before_gaps = json.loads(pik("gaps", "--source", "demo", "--type", "heartbeat", *scope, *target)[1])
    before_entity = json.loads(pik("gaps", "--entity", "user_0", *scope, *target)[1])
    lag = ["lag", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-27", "--json", *target]
    before_lag = json.loads(pik(*lag)[1])
    assert before_lag["percentile_error"] == 0

    code, out, err = pik("aws", "rollup-backfill", *target, "--settle", "0", "--json")
    assert (code, err) == (0, ""), err
    assert json.loads(out) == {"counted": 13, "ready": True}

    after_gaps = json.loads(pik("gaps", "--source", "demo", "--type", "heartbeat", *scope, *target)[1])
    after_entity = json.loads(pik("gaps", "--entity", "user_0", *scope, *target)[1])
    for before, after in ((before_gaps, after_gaps), (before_entity, after_entity)):
        assert _counts(after) == _counts(before)
        for was, now in zip(before["days"], after["days"], strict=True):
            if was["first_late_ingest"]:  # to the arrival bucket's precision: bounds around the true times
                assert now["first_late_ingest"] <= was["first_late_ingest"]
                assert now["last_late_ingest"] >= was["last_late_ingest"]
    after_lag = json.loads(pik(*lag)[1])
    assert after_lag["percentile_error"] == 0.03125
    for key in ("count", "duplicates", "late", "max_ms", "largest"):
        assert after_lag[key] == before_lag[key], key
    # a second run finds the rollups ready and counts nothing
    assert json.loads(pik("aws", "rollup-backfill", *target, "--settle", "0", "--json")[1])["counted"] == 0


def _counts(report: dict) -> dict:  # type: ignore[type-arg]
    """A gaps report without the first and last late arrival of each day."""
    days = [{k: v for k, v in d.items() if not k.endswith("_late_ingest")} for d in report["days"]]
    return {**report, "days": days}


def test_rollup_backfill_is_for_an_aws_stack(endpoint: str, tmp_path: Path) -> None:
    code, _, err = pik("aws", "rollup-backfill", "--workspace", str(tmp_path))
    assert code == 2
    assert "AWS stack" in err and len(err.strip().splitlines()) == 1
    code, _, err = pik("aws", "rollup-backfill", "--backend", "aws", "--settle", "-1")
    assert code == 2 and "--settle" in err
