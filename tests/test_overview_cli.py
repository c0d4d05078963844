"""``pik overview`` end to end: the command line (text and --json, a bad --since in one line, exit 2),
every ``next`` command it prints runs as printed, and ``GET /overview`` of ``pik serve``."""

from __future__ import annotations

import io
import json
import shlex
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.kit import open_local
from pik_console.cli import main
from tests import overview_data
from tests.conftest import handlers_on_workspace
from tests.test_serve import Running


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("overview-cli") / "ws"
    with open_local(path) as kit:
        overview_data.build(kit.index, kit.aggregates, incidents=True)
    return path


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


def test_json_lists_the_findings_most_severe_first_with_the_documented_fields(workspace: Path) -> None:
    code, out, err = run("overview", "--workspace", str(workspace), "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    findings = data["findings"]
    assert {
        (f["kind"], f["entity_id"] or f"{f['source']}/{f['event_type']}", f["day"]) for f in findings
    } == (overview_data.PLANTED)
    for f in findings:
        assert {
            "kind",
            "severity",
            "source",
            "event_type",
            "entity_id",
            "day",
            "summary",
            "evidence",
            "next",
        } <= set(f)
        assert f["next"].startswith("pik ") and f["summary"].endswith(".")
    assert [f["severity"] for f in findings] == sorted((f["severity"] for f in findings), reverse=True)


def test_every_next_command_runs_as_printed_on_the_same_workspace(workspace: Path) -> None:
    _, out, _ = run("overview", "--workspace", str(workspace), "--json")
    for finding in json.loads(out)["findings"]:
        argv = shlex.split(finding["next"])
        assert argv[0] == "pik" and argv[-2:] == ["--workspace", str(workspace)]
        code, shown, err = run(*argv[1:])
        assert code == 0, (finding["next"], err)
        assert finding["day"] in shown or finding["entity_id"] in shown, finding["next"]


def test_text_output_is_a_ranked_table_then_one_sentence_and_command_per_finding(workspace: Path) -> None:
    code, out, _ = run(
        "overview", "--workspace", str(workspace), "--since", "2025-12-03", "--until", "2025-12-05"
    )
    assert code == 0
    assert out.startswith("2 findings from 2025-12-03 to 2025-12-05")
    assert "missing_day" in out and "late_day" in out and "lag_spike" not in out
    assert "next: pik gaps --source web --type click --start 2025-11-27 --end 2025-12-04 --grace 1h" in out


def test_a_quiet_range_says_so(workspace: Path) -> None:
    code, out, _ = run(
        "overview", "--workspace", str(workspace), "--since", "2025-11-20", "--until", "2025-11-25"
    )
    assert code == 0 and out.startswith("Nothing unusual from 2025-11-20 to 2025-11-25")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "2025-13-01"], "pik overview: error: --since '2025-13-01' is not a day"),
        (["--since", "12/01/2025"], "pik overview: error: --since '12/01/2025' is not a day"),
        (
            ["--since", "2025-12-10", "--until", "2025-12-01"],
            "pik overview: error: --until 2025-12-01 is before",
        ),
    ],
)
def test_a_bad_range_is_one_line_and_exit_2(workspace: Path, argv: list[str], message: str) -> None:
    code, out, err = run("overview", "--workspace", str(workspace), *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_workspace_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    code, _, err = run("overview", "--workspace", str(tmp_path / "nowhere"))
    assert code == 1 and err.startswith("pik overview: error:") and err.count("\n") == 1


# -- GET /overview ------------------------------------------------------------------------------


@pytest.fixture
def served(workspace: Path) -> Iterator[Running]:
    from pik_console.http_api import default_routes

    with handlers_on_workspace(workspace):
        server = Running(default_routes())
        try:
            yield server
        finally:
            server.stop()


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_get_overview_answers_the_same_findings_as_the_command_line(served: Running, workspace: Path) -> None:
    status, body = get(served.url + "/overview?since=2025-12-08&until=2025-12-09")
    assert status == 200
    assert [(f["kind"], f["day"]) for f in body["findings"]] == [
        ("lag_spike", "2025-12-08"),
        ("duplicate_storm", "2025-12-09"),
    ]
    _, out, _ = run(
        "overview", "--workspace", str(workspace), "--since", "2025-12-08", "--until", "2025-12-09", "--json"
    )
    assert [f["summary"] for f in body["findings"]] == [f["summary"] for f in json.loads(out)["findings"]]


@pytest.mark.parametrize(
    ("query", "message"),
    [("since=tomorrow", "--since 'tomorrow' is not a day"), ("days=3", "unknown query parameter 'days'")],
)
def test_get_overview_with_a_bad_parameter_is_a_400_naming_it(
    served: Running, query: str, message: str
) -> None:
    status, body = get(served.url + "/overview?" + query)
    assert status == 400 and message in body["error"]
