"""`pik` end to end: real processes for exit codes and streams, in-process calls for the many small cases."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pik_console.cli import main
from pik_console.cli.ingest import read_lines

ROOT = Path(__file__).resolve().parents[1]


def event(entity: str = "user_1", t: str = "2025-12-28T10:00:00Z", **extra: Any) -> str:
    body = {
        "source": "demo",
        "event_type": "heartbeat",
        "entity_id": entity,
        "event_time": t,
        "payload": {"n": 1},
    }
    body.update(extra)
    return json.dumps(body)


def run(
    *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`pik` as a user runs it: a separate process."""
    return subprocess.run(
        [sys.executable, "-m", "pik_console.cli", *argv],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def ws(tmp_path: Path) -> str:
    return str(tmp_path / "ws")


def test_ingest_summary_counts_every_line_and_exit_is_zero(tmp_path: Path, ws: str) -> None:
    lines = [
        event("a"),
        event("b"),
        event("a"),  # duplicate of line 1
        "",  # blank
        '{"source": "demo",',  # invalid JSON
        event("c", t="yesterday"),  # invalid event
        event("d", idempotency_key="k1"),
        event("d", idempotency_key="k1", t="2025-12-28T11:00:00Z"),  # same key: duplicate
    ]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(lines) + "\n")
    done = run("ingest", str(src), "--workspace", ws, "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["duplicate"], summary["rejected"]) == (3, 2, 3)
    assert [r["line"] for r in summary["rejections"]] == [4, 5, 6]
    reasons = {r["line"]: r["reason"] for r in summary["rejections"]}
    assert "blank" in reasons[4]
    assert "invalid JSON" in reasons[5]
    assert "event_time 'yesterday'" in reasons[6]
    assert summary["lines"] == 8


def test_text_summary_names_the_counts_and_the_rejected_lines(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(event() + "\nnot json\n")
    code, out, err = call("ingest", str(src), "--workspace", ws)
    assert code == 0, err
    assert "accepted" in out and "rejected" in out
    assert "line 2: invalid JSON" in out


def test_ingest_reads_stdin(ws: str) -> None:
    done = run(
        "ingest", "-", "--workspace", ws, "--json", stdin=(event("x") + "\n" + event("x") + "\n").encode()
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["duplicate"], summary["rejected"]) == (1, 1, 0)


def test_a_file_ingested_again_is_resumed_unless_again_is_asked_for(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(event("a") + "\n" + event("b") + "\nnot json\n" + event("a") + "\n")

    def ingest(*extra: str) -> dict[str, Any]:
        code, out, err = call("ingest", str(src), "--workspace", ws, "--json", *extra)
        assert code == 0, err
        return {
            k: v
            for k, v in json.loads(out).items()
            if k in ("accepted", "duplicate", "rejected", "already_ingested")
        }

    assert ingest() == {"accepted": 2, "duplicate": 1, "rejected": 1, "already_ingested": 0}
    assert ingest() == {"accepted": 0, "duplicate": 0, "rejected": 0, "already_ingested": 4}
    code, out, _ = call("ingest", str(src), "--workspace", ws)
    assert code == 0 and "already ingested      4" in out and "--again" in out
    assert ingest("--again") == {"accepted": 0, "duplicate": 3, "rejected": 1, "already_ingested": 0}
    # stdin is never resumed: a second pipe is another input.
    piped = run("ingest", "-", "--workspace", ws, "--json", stdin=src.read_bytes())
    assert json.loads(piped.stdout)["duplicate"] == 3


def test_crlf_lines_and_a_last_line_without_newline(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes((event("a") + "\r\n" + event("b")).encode())
    code, out, _ = call("ingest", str(src), "--workspace", ws, "--json")
    assert code == 0
    assert json.loads(out)["accepted"] == 2


def test_a_line_over_one_mib_is_rejected_and_reading_goes_on(tmp_path: Path, ws: str) -> None:
    huge = event("big", blob="x" * (1024 * 1024 + 10))
    src = tmp_path / "in.jsonl"
    src.write_text(event("a") + "\n" + huge + "\n" + event("b") + "\n")
    code, out, _ = call("ingest", str(src), "--workspace", ws, "--json")
    summary = json.loads(out)
    assert code == 0
    assert (summary["accepted"], summary["rejected"]) == (2, 1)
    assert summary["rejections"][0]["line"] == 2
    assert "limit is 1,048,576 bytes" in summary["rejections"][0]["reason"]
    code, out, _ = call("events", "--status", "REJECTED", "--workspace", ws, "--json")
    [item] = json.loads(out)["items"]
    assert item["size"] == len(huge.encode())  # the true size, though only a prefix is kept
    assert item["truncated"] is True


def test_read_lines_is_a_stream() -> None:
    """Memory does not grow with the file: lines are produced one at a time from an endless source."""

    class Endless(io.RawIOBase):
        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            chunk = (event() + "\n").encode()
            n = min(len(buffer), len(chunk))
            buffer[:n] = chunk[:n]
            return n

    stream = io.BufferedReader(Endless())
    lines = read_lines(stream, "endless")
    first = [next(lines) for _ in range(1000)]
    assert first[-1].line == 1000


def test_exit_code_zero_even_when_every_line_is_rejected(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text("nope\n[]\n{}\n")
    code, out, _ = call("ingest", str(src), "--workspace", ws, "--json")
    assert code == 0
    assert json.loads(out)["rejected"] == 3


def test_unreadable_input_is_a_clear_error(tmp_path: Path, ws: str) -> None:
    done = run("ingest", str(tmp_path / "missing.jsonl"), "--workspace", ws)
    assert done.returncode == 1
    assert "cannot read" in done.stderr and "missing.jsonl" in done.stderr
    assert "Traceback" not in done.stderr
    code, _, err = call("ingest", str(tmp_path), "--workspace", ws)
    assert code == 1 and "folder" in err


def test_unusable_workspaces_are_clear_errors(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(event() + "\n")
    a_file = tmp_path / "file"
    a_file.write_text("x")
    code, _, err = call("ingest", str(src), "--workspace", str(a_file))
    assert code == 1 and "not a folder" in err

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "pik.sqlite3").write_bytes(b"this is not sqlite" * 100)
    done = run("ingest", str(src), "--workspace", str(garbage))
    assert done.returncode == 1
    assert "not a Pipeline Investigation Kit workspace" in done.stderr
    assert "Traceback" not in done.stderr
    assert (garbage / "pik.sqlite3").read_bytes() == b"this is not sqlite" * 100  # left untouched

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    with sqlite3.connect(foreign / "pik.sqlite3") as conn:
        conn.execute("CREATE TABLE customers (id INTEGER)")
    code, _, err = call("events", "--entity", "x", "--workspace", str(foreign))
    assert code == 1 and "not a Pipeline Investigation Kit workspace" in err


def test_reading_a_missing_workspace_does_not_create_it(tmp_path: Path) -> None:
    missing = tmp_path / "nothing-here"
    code, _, err = call("events", "--entity", "x", "--workspace", str(missing))
    assert code == 1
    assert "no workspace at" in err
    assert not missing.exists()


def test_workspace_from_environment(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(event("env-user") + "\n")
    ws = tmp_path / "from-env"
    assert run("ingest", str(src), env={"PIK_WORKSPACE": str(ws)}).returncode == 0
    done = run("events", "--entity", "env-user", "--json", env={"PIK_WORKSPACE": str(ws)})
    assert done.returncode == 0
    assert len(json.loads(done.stdout)["items"]) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["events"], "choose a scope"),
        (["events", "--entity", "a", "--source", "s"], "cannot be combined"),
        (["events", "--source", "s", "--type", "t"], "choose a scope"),
        (["events", "--entity", "a", "--start", "yesterday"], "--start 'yesterday'"),
        (["events", "--entity", "a", "--start", "2025-12-29", "--end", "2025-12-28"], "is not before"),
        (["events", "--source", "s", "--type", "t", "--day", "2025-13-01"], "--day '2025-13-01'"),
        (["events", "--entity", "a", "--after", "garbage!!"], "cursor"),
    ],
)
def test_usage_errors_exit_2_with_a_reason(tmp_path: Path, argv: list[str], message: str) -> None:
    ws = tmp_path / "ws"
    src = tmp_path / "in.jsonl"
    src.write_text(event("a") + "\n")
    assert call("ingest", str(src), "--workspace", str(ws))[0] == 0
    code, _, err = call(*argv, "--workspace", str(ws))
    assert code == 2, err
    assert message in err


def test_argparse_usage_errors_exit_2() -> None:
    done = run("events", "--status", "LOST")
    assert done.returncode == 2
    assert "invalid choice" in done.stderr
    assert run("frobnicate").returncode == 2
    assert run("events", "--limit", "0", "--entity", "x").returncode == 2


def test_events_pages_by_cursor_through_every_record_once(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "in.jsonl"
    times = [f"2025-12-28T{h:02d}:{m:02d}:00Z" for h in range(10) for m in (0, 30)]
    src.write_text("".join(event("pager", t=t) + "\n" for t in times) + event("pager", t=times[3]) + "\n")
    assert call("ingest", str(src), "--workspace", ws)[0] == 0
    seen: list[tuple[str, str]] = []
    after: list[str] = []
    for _ in range(50):
        code, out, err = call(
            "events", "--entity", "pager", "--start", "2025-12-28", "--end", "2025-12-29",
            "--limit", "3", "--workspace", ws, "--json", *after,
        )  # fmt: skip
        assert code == 0, err
        page = json.loads(out)
        seen += [(r["event_time"], r["status"]) for r in page["items"]]
        if not page["next_cursor"]:
            break
        after = ["--after", page["next_cursor"]]
    assert len(seen) == 21  # 20 accepted + 1 duplicate receipt, each once
    assert [t for t, _ in seen] == sorted(t for t, _ in seen)
    assert seen.count(("2025-12-28T01:30:00.000Z", "DUPLICATE")) == 1


def test_events_partition_is_in_numeric_lag_order_and_text_shows_a_next_cursor(
    tmp_path: Path, ws: str
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(event(f"u{i}", t=f"2025-12-28T{i:02d}:00:00Z") + "\n" for i in range(5)))
    assert call("ingest", str(src), "--workspace", ws)[0] == 0
    code, out, _ = call("events", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-28",
                        "--workspace", ws, "--desc", "--json")  # fmt: skip
    lags = [r["ingest_lag_ms"] for r in json.loads(out)["items"]]
    assert lags == sorted(lags, reverse=True) and len(lags) == 5
    code, out, _ = call("events", "--source", "demo", "--type", "heartbeat", "--day", "2025-12-28",
                        "--workspace", ws, "--limit", "2")  # fmt: skip
    assert code == 0
    assert "more: add --after " in out


def test_rejections_are_listed_and_untrusted_bytes_are_shown_literally(tmp_path: Path, ws: str) -> None:
    src = tmp_path / "in.jsonl"
    # A raw ESC inside a JSON string is invalid JSON; the quarantine must still not emit it to a terminal.
    src.write_bytes(
        b'{"source":"demo","entity_id":"\x1b[2J\x1b[31mred"}\n' + event("\u202eevil").encode() + b"\n"
    )
    code, out, err = call("ingest", str(src), "--workspace", ws)
    assert code == 0, err
    code, out, _ = call("events", "--status", "REJECTED", "--workspace", ws)
    assert code == 0
    assert "\x1b" not in out
    code, out, _ = call("events", "--status", "REJECTED", "--workspace", ws, "--json")
    items = json.loads(out)["items"]
    assert len(items) == 1
    assert "\x1b" not in items[0]["preview"] and "\\x1b" in items[0]["preview"]
    # A bidi override is legal in an entity id, but text output escapes it.
    code, out, _ = call("events", "--entity", "\u202eevil", "--workspace", ws)
    assert code == 0
    assert "\u202e" not in out and "\\u202e" in out


def test_help_lists_the_commands() -> None:
    done = run("--help")
    assert done.returncode == 0
    for command in ("ingest", "events", "demo"):
        assert command in done.stdout


def test_ctrl_c_during_ingest_says_what_is_stored_and_exits_130(tmp_path: Path, ws: str) -> None:
    import signal
    import time

    src = tmp_path / "big.jsonl"
    src.write_text("".join(event(f"u{i}", t=f"2025-12-28T10:{i % 60:02d}:00Z") + "\n" for i in range(60_000)))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pik_console.cli",
            "ingest",
            str(src),
            "--workspace",
            ws,
            "--batch-size",
            "1000",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the ingest finished before the interrupt arrived")
    assert proc.returncode == 130, err
    assert "interrupted; " in err and "lines read are stored" in err and "Traceback" not in err
    assert "resumes: it skips every stored line and adds no duplicate receipts" in err
    stored = int(err.split("interrupted; ")[1].split(" of the")[0].replace(",", ""))
    code, out, _ = call("events", "--entity", "u0", "--workspace", ws, "--json")
    assert code == 0 and json.loads(out)["items"]  # the workspace is intact and readable
    done = run("ingest", str(src), "--workspace", ws, "--json")  # running it again resumes
    summary = json.loads(done.stdout)
    assert summary["already_ingested"] >= stored and summary["duplicate"] == 0
    assert summary["accepted"] + summary["already_ingested"] == 60_000 == summary["lines"]


def test_rejections_of_one_day_are_those_received_that_day(tmp_path: Path, ws: str) -> None:
    from backend.adapters.local.store import LocalStore
    from backend.services.ingest import IngestService
    from backend.times import FixedClock

    store = LocalStore(ws)
    clock = FixedClock(datetime(2025, 12, 27, 23, 0, tzinfo=UTC))
    service = IngestService(store, store, clock)
    for day in (27, 28, 29):
        clock.set(datetime(2025, 12, day, 12, 0, tzinfo=UTC))
        service.ingest(f"bad on the {day}th".encode())
    store.close()
    code, out, err = call(
        "events", "--status", "REJECTED", "--day", "2025-12-28", "--workspace", ws, "--json"
    )
    assert code == 0, err
    assert [r["received_at"] for r in json.loads(out)["items"]] == ["2025-12-28T12:00:00.000Z"]


def test_each_receipt_says_which_input_line_delivered_it(tmp_path: Path, ws: str) -> None:
    first, second = tmp_path / "monday.jsonl", tmp_path / "retry.jsonl"
    first.write_text(event("storm") + "\n" + event("other") + "\n")
    second.write_text(event("calm") + "\n" + event("storm") + "\n")
    for src in (first, second):
        assert call("ingest", str(src), "--workspace", ws)[0] == 0
    code, out, _ = call("events", "--entity", "storm", "--workspace", ws, "--json")
    assert code == 0
    items = json.loads(out)["items"]
    assert [(r["status"], r["origin"], r["line"]) for r in items] == [
        ("ACCEPTED", "file:monday.jsonl", 1),
        ("DUPLICATE", "file:retry.jsonl", 2),
    ]
