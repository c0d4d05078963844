"""The one settings tree (backend/settings.py) and the composition root (backend/kit.py), as the commands,
``pik serve`` and the handlers see them: the order of the layers, one clear line for an invalid value (exit
2, the same in every command), and a kit whose services refuse what its backend lacks or forbids."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from backend.errors import NotConfigured, ReadOnlyError
from backend.kit import open_local
from backend.model import ReplayRequest
from backend.settings import SettingsError, load_settings
from pik_console.cli import main
from tests.test_cli import ROOT, event

WINDOW = {"entity_id": "user_1", "start_time": "2025-12-28", "end_time": "2025-12-29"}


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(event(t=f"2025-12-28T1{i}:00:00Z") for i in range(3)) + "\n")
    assert call("ingest", str(src), "--workspace", str(path))[0] == 0
    return path


# -- the layers ----------------------------------------------------------------------------------------------


def test_the_command_line_beats_the_environment_which_beats_the_file(
    ws: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ws / "settings.toml").write_text("[replay]\nconfirm_above = 5\n[queue]\nmax_receives = 7\n")
    monkeypatch.delenv("PIK_BACKEND", raising=False)
    monkeypatch.delenv("PIK_READ_ONLY", raising=False)
    monkeypatch.delenv("PIK_REPLAY__CONFIRM_ABOVE", raising=False)
    base = load_settings({"workspace": ws})
    assert (base.backend, base.replay.confirm_above, base.queue.max_receives) == ("local", 5, 7)
    monkeypatch.setenv("PIK_REPLAY__CONFIRM_ABOVE", "2")
    monkeypatch.setenv("PIK_READ_ONLY", "yes")
    env = load_settings({"workspace": ws})
    assert (env.replay.confirm_above, env.queue.max_receives, env.read_only) == (2, 7, True)
    monkeypatch.setenv("PIK_BACKEND", "aws")
    assert load_settings({"workspace": ws, "backend": "local"}).backend == "local"
    # On AWS there is no settings.toml: the defaults (and the environment) hold.
    assert load_settings({"workspace": ws}).queue.max_receives == 5


def test_a_settings_file_is_read_again_by_a_long_lived_kit(ws: Path) -> None:
    with open_local(ws) as kit:
        assert kit.workspace_settings().replay.confirm_above == 1000
        (ws / "settings.toml").write_text("[replay]\nconfirm_above = 1\n")
        assert kit.workspace_settings().replay.confirm_above == 1
        plan = kit.replay().plan(ReplayRequest(**WINDOW), actor="test")
        assert plan.would_send == 3 and plan.needs_force


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("PIK_BACKEND", "bogus", "PIK_BACKEND must be local or aws, got 'bogus'"),
        ("DRY_RUN", "maybe", "DRY_RUN must be true or false (1/0, yes/no, on/off), got 'maybe'"),
        ("PIK_READ_ONLY", "sometimes", "PIK_READ_ONLY must be true or false"),
        ("LOG_LEVEL", "loud", "LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ("PIK_REPLAY__CONFIRM_ABOVE", "-1", "PIK_REPLAY__CONFIRM_ABOVE: input should be greater than"),
    ],
)
@pytest.mark.parametrize("command", [["replays"], ["serve", "--port", "0"], ["events", "--entity", "u"]])
def test_an_invalid_setting_is_one_line_and_exit_2_in_every_command(
    ws: Path, monkeypatch: pytest.MonkeyPatch, name: str, value: str, said: str, command: list[str]
) -> None:
    monkeypatch.setenv(name, value)
    code, out, err = call(*command, "--workspace", str(ws))
    assert code == 2, err
    assert err == f"pik {command[0]}: error: {err.split(': error: ', 1)[1]}" and said in err
    assert err.count("\n") == 1 and "Traceback" not in err and "pydantic" not in err and out == ""
    with pytest.raises(SettingsError, match=name):
        load_settings()


def test_pik_serve_with_a_bogus_backend_says_so_as_a_real_process_does() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pik_console.cli", "serve", "--port", "0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "PIK_BACKEND": "bogus"},
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr == "pik serve: error: PIK_BACKEND must be local or aws, got 'bogus'\n"


# -- small things of the command line ------------------------------------------------------------------------


def test_version_and_a_count_that_is_not_a_number(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("pik 0.")
    with pytest.raises(SystemExit) as done:
        main(["events", "--entity", "u", "--limit", "abc"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert "argument --limit: must be a whole number, got 'abc'" in err and "_int" not in err


def test_events_of_an_entity_take_a_day_as_the_other_commands_do(ws: Path) -> None:
    by_day = call("events", "--entity", "user_1", "--day", "2025-12-28", "--workspace", str(ws), "--json")
    by_window = call(
        "events", "--entity", "user_1", "--start", "2025-12-28", "--end", "2025-12-29",
        "--workspace", str(ws), "--json",
    )  # fmt: skip
    assert by_day == by_window and by_day[1].count('"event_id"') == 3
    empty = call("events", "--entity", "user_1", "--day", "2025-12-29", "--workspace", str(ws))[1]
    assert empty.endswith("(no matching records)\n")
    code, _, err = call(
        "events", "--entity", "user_1", "--day", "2025-12-28", "--start", "2025-12-28", "--workspace", str(ws)
    )
    assert code == 2 and "--day cannot be combined with --start/--end" in err


# -- the kit -------------------------------------------------------------------------------------------------


def test_a_local_kit_has_every_port_and_a_read_only_one_refuses_every_write(ws: Path) -> None:
    with open_local(ws, create=False) as kit:
        assert all(
            getattr(kit, port) is not None
            for port in ("raw", "index", "investigate", "catalog", "queue", "audit", "aggregates", "ledger")
        )
    with open_local(ws, create=False, read_only=True) as kit:
        assert kit.replay(preview=True).plan(ReplayRequest(**WINDOW), actor="t").would_send == 3
        with pytest.raises(ReadOnlyError):
            kit.replay().execute(ReplayRequest(**WINDOW), actor="t")
        with pytest.raises(ReadOnlyError):
            kit.processor()
        with pytest.raises(ReadOnlyError):
            kit.ingest().ingest_batch([])


def test_a_stack_without_an_audit_table_names_the_setting_it_lacks(ws: Path) -> None:
    with open_local(ws, create=False) as local:
        stack = dataclasses.replace(local, name="aws", audit=None, queue=None, aggregates=None)
        for build, setting in (
            (stack.replay, "AUDIT_TABLE"),
            (stack.versions, "AGG_TABLE"),
            (stack.processor, "AGG_TABLE"),
            (stack.audit_log, "AUDIT_TABLE"),
        ):
            with pytest.raises(NotConfigured, match=f"no .* store \\({setting} is not set\\)"):
                build()
        # What needs none of them still works.
        assert stack.lag().lag("demo", "heartbeat", "2025-12-28").count == 3


def test_a_function_with_an_invalid_setting_answers_500_and_logs_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from backend.handlers import common
    from backend.handlers import ingest as ingest_handler
    from backend.handlers import replay as replay_handler
    from tests.handlers.support import SEED_REPLAY_BODY, captured_logs, replay_v1
    from tests.handlers.test_ingest_handler import SEED_BODY, FakeLambdaContext, rest_v1_event

    monkeypatch.setenv("PIK_BACKEND", "bogus")
    common.configure(None)  # the settings from the environment, as in Lambda
    try:
        for module, event in (
            (ingest_handler, rest_v1_event(SEED_BODY)),
            (replay_handler, replay_v1(SEED_REPLAY_BODY)),
        ):
            with captured_logs(module.logger) as logged:
                response = module.handler(event, FakeLambdaContext())
            body = json.loads(response["body"])
            assert response["statusCode"] == 500 and "misconfigured" in body["error"]
            assert "bogus" not in body["error"] and "Traceback" not in response["body"]
            assert "PIK_BACKEND must be local or aws, got 'bogus'" in logged.getvalue()
    finally:
        common.configure(None)
