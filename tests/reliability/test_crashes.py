"""`pik ingest` killed with SIGKILL at random points, many times, then run again on the same file.

What must hold: after every kill the SQLite workspace passes ``PRAGMA integrity_check``; the run that
finishes reports the lines it found already stored; and the final workspace equals the one an uninterrupted
run leaves (every receipt, rejection and raw object, byte for byte, apart from the ingest times, which
differ between any two runs). Kills land anywhere: while Python starts, while the workspace is created,
between and inside batch commits.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import DB_NAME, LocalStore
from tests.raw_rows import raw_objects
from tests.reliability.conftest import soak

ROOT = Path(__file__).resolve().parents[2]
BATCH = "60"

pytestmark = pytest.mark.slow


def _dataset(path: Path, rng: random.Random, events: int = 5000) -> int:
    """A file like a real export: distinct events over a few entities and days, resends of the same bytes,
    idempotency keys reused with other payloads, invalid lines and one line over the 1 MiB limit."""
    lines: list[str] = []
    for i in range(events):
        event = {
            "source": "orders",
            "event_type": rng.choice(["created", "paid"]),
            "entity_id": f"customer_{rng.randrange(40)}",
            "event_time": f"2025-12-{rng.randrange(26, 29)}T{rng.randrange(24):02d}:{rng.randrange(60):02d}Z",
            "payload": {"n": i, "amount": rng.randrange(10_000) / 100},
        }
        if i % 50 == 0:
            event["idempotency_key"] = f"key-{i % 7}"
        lines.append(json.dumps(event))
        if rng.random() < 0.08:
            lines.append(rng.choice(lines))  # a resend of earlier bytes
        if rng.random() < 0.02:
            lines.append(rng.choice(['{"source": "orders"', "not json", '{"source": 1}', "[]"]))
    lines.insert(len(lines) // 2, '{"payload": "' + "x" * (1024 * 1024 + 10) + '"}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def _pik(*argv: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pik_console.cli", *argv],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ingest(src: Path, ws: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pik_console.cli",
            "ingest",
            str(src),
            "--workspace",
            str(ws),
            "--json",
            "--batch-size",
            BATCH,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _connect(ws: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{ws / DB_NAME}?mode=ro", uri=True)


def _integrity(ws: Path) -> str:
    if not (ws / DB_NAME).exists():
        return "ok"  # killed before the workspace was created
    with _connect(ws) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def _stored(ws: Path) -> int:
    if not (ws / DB_NAME).exists():
        return 0
    conn = _connect(ws)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
        if "rejections" not in tables:
            return 0
        return int(
            conn.execute(
                "SELECT (SELECT count(*) FROM events) + (SELECT count(*) FROM rejections)"
            ).fetchone()[0]
        )
    finally:
        conn.close()


def _contents(ws: Path) -> dict[str, Any]:
    """Everything an ingest leaves, less ingest times and the lags computed from them."""
    store = LocalStore(ws, create=False)
    try:
        raw = raw_objects(store)  # the bytes as received, whatever the table keeps
    finally:
        store.close()
    conn = _connect(ws)
    try:
        return {
            "events": conn.execute(
                "SELECT hex(e.event_id), e.receipt, coalesce(e.s3_key, ''), hex(e.raw_sha), e.raw_size, "
                "o.origin, e.line, e.event_ms, hex(e.payload_sha), e.idempotency_key, n.entity_id "
                "FROM events e JOIN entities n ON n.id = e.entity LEFT JOIN origins o ON o.id = e.origin_id "
                "ORDER BY e.event_id, e.receipt"
            ).fetchall(),
            "rejections": conn.execute(
                "SELECT reason, origin, line, size, sha256, data, truncated FROM rejections ORDER BY line"
            ).fetchall(),
            "raw": [(key, hashlib.sha256(data).hexdigest(), len(data)) for key, data in raw],
        }
    finally:
        conn.close()


def test_sigkilled_ingest_rerun_equals_an_uninterrupted_run(tmp_path: Path, figures: Any) -> None:
    rng = random.Random(int(os.environ.get("PIK_CRASH_SEED", "6")))
    src = tmp_path / "events.jsonl"
    total = _dataset(src, rng)

    reference = tmp_path / "reference"
    started = time.monotonic()
    done = _ingest(src, reference)
    while _stored(reference) == 0 and done.poll() is None:
        time.sleep(0.005)
    # Only to spread the kills over a run's life; never asserted.
    first_commit = time.monotonic() - started
    out, err = done.communicate(timeout=300)
    whole = time.monotonic() - started
    assert done.returncode == 0, err
    expected = json.loads(out)
    assert expected["lines"] == total and expected["already_ingested"] == 0

    want = _contents(reference)
    rounds, kills_per_round = soak(1, 8), 8
    landed: list[int] = []
    resumed: list[int] = []
    for round_ in range(rounds):
        ws = tmp_path / f"crashed-{round_}"
        for n in range(kills_per_round):
            proc = _ingest(src, ws)
            stored = _stored(ws)
            if n % 4 == 0 or stored >= total - 1:
                # While Python starts, or the workspace is being created or opened (or, once everything is
                # stored, during the final skip).
                time.sleep(rng.uniform(0.0, first_commit * 1.2))
            else:
                # Further into the file, by up to half of what is left: wait until the run has stored past
                # a random line, then a little longer, so that the kill lands between or inside commits.
                target = rng.randrange(stored + 1, stored + max(2, (total - stored) // 2))
                deadline = time.monotonic() + whole * 3 + 10
                while _stored(ws) < target and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.002)
                time.sleep(rng.uniform(0.0, 0.02))
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=60)
            assert _integrity(ws) == "ok"
            landed.append(_stored(ws))

        final = _ingest(src, ws)
        out, err = final.communicate(timeout=300)
        assert final.returncode == 0, err
        summary = json.loads(out)
        resumed.append(summary["already_ingested"])
        assert summary["lines"] == total
        assert summary["accepted"] + summary["duplicate"] + summary["rejected"] + resumed[-1] == total
        assert _integrity(ws) == "ok"
        got = _contents(ws)
        assert got["raw"] == want["raw"]
        assert got["rejections"] == want["rejections"]
        assert got["events"] == want["events"]

    mid_run = sum(1 for n in landed if 0 < n < total)
    figures(
        "sigkill_then_rerun",
        lines=total,
        rounds=rounds,
        kills=rounds * kills_per_round,
        kills_mid_ingest=mid_run,
        kills_before_first_commit=sum(1 for n in landed if n == 0),
        lines_stored_at_kills=sorted(set(landed)),
        lines_resumed_by_final_runs=resumed,
        integrity_checks_passed=rounds * (kills_per_round + 1),
        receipts_compared=len(want["events"]),
        rejections_compared=len(want["rejections"]),
        raw_objects_compared=len(want["raw"]),
        differences=0,
    )


def _versions(ws: Path) -> list[tuple[Any, ...]]:
    """Every aggregate version, less when it was computed and which replay's messages happened to share
    its batch."""
    conn = _connect(ws)
    try:
        rows = conn.execute("SELECT record FROM aggregate_versions ORDER BY entity_id, day, metric, version")
        out = []
        for (text,) in rows:
            v = json.loads(text)
            out.append(
                (
                    v["entity_id"],
                    v["day"],
                    v["metric"],
                    v["version"],
                    v["value"],
                    v["inputs_hash"],
                    v["input_count"],
                )
            )
        return out
    finally:
        conn.close()


def _queue(ws: Path) -> tuple[int, int]:
    conn = _connect(ws)
    try:
        waiting = int(conn.execute("SELECT count(*) FROM queue_messages").fetchone()[0])
        return waiting, int(conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0])
    finally:
        conn.close()


def test_sigkilled_processor_rerun_equals_an_uninterrupted_run(tmp_path: Path, figures: Any) -> None:
    """`pik process` killed while it drains replay messages: the messages it held come back after their
    visibility timeout, and the re-run ends with exactly the versions of an uninterrupted drain."""
    rng = random.Random(int(os.environ.get("PIK_CRASH_SEED", "6")) + 1)
    src = tmp_path / "events.jsonl"
    _dataset(src, rng, events=800)
    base = tmp_path / "base"
    base.mkdir()
    # Received messages hide for 1 s; kills must not dead-letter anything.
    (base / "settings.toml").write_text("[queue]\nvisibility_timeout_s = 1\nmax_receives = 1000\n")
    for argv in (
        ("ingest", str(src), "--workspace", str(base)),
        *(
            (
                *(
                    "replay",
                    "--source",
                    "orders",
                    "--type",
                    kind,
                    "--start",
                    "2025-12-26",
                    "--end",
                    "2025-12-29",
                ),
                *("--limit", "100000", "--execute", "--force", "--workspace", str(base)),
            )
            for kind in ("created", "paid")
        ),
    ):
        proc = _pik(*argv)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    sent, _ = _queue(base)
    assert sent >= 800

    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    shutil.copytree(base, reference)
    shutil.copytree(base, crashed)
    proc = _pik("process", "--workspace", str(reference), "--json")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    want = _versions(reference)
    assert want and _queue(reference) == (0, 0)

    kills = soak(4, 24)
    remaining: list[int] = []
    for _ in range(kills):
        left, _ = _queue(crashed)  # visible and held messages
        if left < 20:
            break
        proc = _pik("process", "--workspace", str(crashed), "--json")
        target = rng.randrange(left // 2, left)  # about a quarter of what is left, at random
        deadline = time.monotonic() + 60
        while _queue(crashed)[0] > target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.03))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert _integrity(crashed) == "ok"
        remaining.append(_queue(crashed)[0])
    time.sleep(1.1)  # what the killed runs held becomes visible again

    proc = _pik("process", "--workspace", str(crashed), "--json")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert _queue(crashed) == (0, 0)  # every message processed, none dead-lettered, none lost
    got = _versions(crashed)
    assert got == want
    figures(
        "sigkill_processor_then_rerun",
        messages=sent,
        kills=len(remaining),
        messages_left_at_kills=remaining,
        versions_compared=len(want),
        differences=0,
        lost=0,
        dead_lettered=0,
    )
