"""``pik report`` and the console's report action; ``pik console`` outside a terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from backend.adapters.local.store import LocalStore
from backend.kit import open_local
from backend.services.ingest import IngestService, Received
from pik_console.cli import main
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from tests.console.conftest import settle


def _report(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["report", *args], out, err)
    return code, out.getvalue(), err.getvalue()


def test_the_report_tells_the_story_of_the_outage_day(demo_ws: Path) -> None:
    code, text, err = _report("--workspace", str(demo_ws), "--entity", "user_001", "--day", "2025-12-22")
    assert code == 0, err
    assert text.startswith("# Incident report: `user_001` on 2025-12-22")
    sections = [
        "## Scope",
        "## Events of the window",
        "## Lag of the day's partitions",
        "## Gaps around",
        "## Replays that covered the window",
        "## Aggregate versions",
        "## Before closing the incident",
    ]
    for section in sections:
        assert section in text
    # What the overview finds wrong that day, for the entity or its whole source/type, each with its command.
    findings = text.split("## Findings", 1)[1].split("\n## ", 1)[0]
    assert "late_day (mobile/heartbeat)" in findings and "aggregate_churn" in findings
    assert f"--workspace {demo_ws}" in findings
    assert "user_002" not in findings  # another entity's finding is not this report's
    assert "| mobile/heartbeat | 3 | 0 | 3 | 0 | 2d 03h |" in text  # three heartbeats, all late
    assert "Late arrivals (4)" in text
    assert "| SENT | oncall@demo | 194 / 194 |" in text
    assert "### steps_total: version 1 → 2" in text and "late arrivals" in text
    assert "- [x] Raw events verified" in text
    assert "- [x] Replay scoped correctly" in text
    assert "- [x] Processor behavior observed" in text
    assert "- [x] Aggregate version validated" in text
    assert "- [ ] Root cause documented" in text
    assert "never arrived" not in text  # days after the data are not gaps


def test_untrusted_entity_ids_cannot_break_the_report(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    entity = "x|y`z\u202e"
    store = LocalStore(ws)
    body = {"source": "web", "event_type": "click", "entity_id": entity, "event_time": "2025-12-01T10:00:00Z",
            "payload": {"note": "| not | a | table |"}}  # fmt: skip
    list(IngestService(store, store).ingest_stream([Received(json.dumps(body).encode(), "t", 1)]))
    store.close()
    code, text, err = _report("--workspace", str(ws), "--entity", entity, "--day", "2025-12-01", "--json")
    assert code == 0, err
    markdown = json.loads(text)["markdown"]
    # The id as a code span fenced past its own backtick, read exactly as it is (bidi override escaped).
    assert "# Incident report: ``x|y`z\\u202e`` on 2025-12-01" in markdown
    assert "\u202e" not in markdown
    assert "- [ ] Replay scoped correctly — no replay covering the window was sent." in markdown


def test_a_bad_day_is_a_usage_error(demo_ws: Path) -> None:
    code, _, err = _report("--workspace", str(demo_ws), "--entity", "user_001", "--day", "22/12/2025")
    assert code == 2 and "--day" in err


@pytest.mark.asyncio
async def test_the_console_writes_the_report_of_its_context(
    demo_ws: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = PikConsole(
        open_local(demo_ws, create=False, read_only=True),
        context=Context(entity="user_001", day="2025-12-22"),
    )
    async with app.run_test(size=(120, 32)) as pilot:
        await settle(pilot)
        await pilot.press("w")
        await settle(pilot)
        assert app.reports == [str(tmp_path / "pik-report-user_001-2025-12-22.md")]
    assert "## Aggregate versions" in (tmp_path / "pik-report-user_001-2025-12-22.md").read_text()


def test_pik_console_needs_a_terminal(demo_ws: Path) -> None:
    err = io.StringIO()
    assert main(["console", "--workspace", str(demo_ws), "--read-only"], io.StringIO(), err) == 1
    assert "needs a terminal" in err.getvalue()


def test_pik_demo_without_a_terminal_prints_the_summary_and_opens_nothing(demo_ws: Path) -> None:
    out = io.StringIO()
    assert main(["demo", "--workspace", str(demo_ws)], out, io.StringIO()) == 0
    assert "Reusing the demo workspace" in out.getvalue() and "pik diff --entity user_001" in out.getvalue()
