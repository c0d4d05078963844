"""`pik serve` answers POST /replay with the replay Lambda handler: the seed's replay curl example, dry
runs, errors, and the whole seed workflow (ingest, replay, `pik process`) against a `pik serve` process."""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.handlers import common
from backend.kit import Kit
from backend.settings import Settings
from pik_console.http_api import default_routes
from tests.handlers.support import SEED_REPLAY_BODY
from tests.test_serve import ROOT, SEED_BODY, SEED_EVENT_ID, Running, _pik, post


@pytest.fixture
def running(backend: Kit) -> Iterator[Running]:
    server = Running(default_routes())
    try:
        yield server
    finally:
        server.stop()


def queued(backend: Kit) -> list[dict[str, object]]:
    assert isinstance(backend.index, LocalStore)
    queue = local_ports(backend.index).queue
    out = []
    while batch := queue.receive(10, 60):
        out += [json.loads(m.body) for m in batch]
        queue.delete([m.receipt_handle for m in batch])
    return out


def test_the_seed_replay_example_answers_as_the_seed_shows(running: Running, backend: Kit) -> None:
    assert post(running.url + "/ingest", SEED_BODY)[2]["status"] == "ACCEPTED"
    status, headers, body = post(running.url + "/replay", SEED_REPLAY_BODY.encode())
    assert status == 200 and headers["Content-Type"] == "application/json" and headers["x-amzn-RequestId"]
    # The seed's "Replay Output", field for field, and the rest of the answer beside it.
    assert {k: body[k] for k in ("entity_id", "scanned", "sent")} == {
        "entity_id": "user_123",
        "scanned": 1,
        "sent": 1,
    }
    assert body["outcome"] == "SENT" and body["actor"] == "api" and body["replay_id"].startswith("rp-")
    [sent] = queued(backend)
    assert (sent["event_id"], sent["replay_id"]) == (SEED_EVENT_ID, body["replay_id"])


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_seed_replay_curl_command_itself(running: Running, backend: Kit) -> None:
    post(running.url + "/ingest", SEED_BODY)
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", running.url + "/replay", "-H", "Content-Type: application/json", "-d",
         SEED_REPLAY_BODY, "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    text, _, code = done.stdout.rpartition("\n")
    reply = json.loads(text)
    assert code == "200" and (reply["entity_id"], reply["scanned"], reply["sent"]) == ("user_123", 1, 1)


def test_a_dry_run_server_previews_and_sends_nothing(running: Running, backend: Kit) -> None:
    post(running.url + "/ingest", SEED_BODY)
    common.configure(backend, Settings(backend="local", dry_run=True))  # pik serve --dry-run
    status, _, body = post(running.url + "/replay", SEED_REPLAY_BODY.encode())
    assert (status, body["dry_run"], body["would_send"], body["sent"]) == (200, True, 1, 0)
    assert queued(backend) == []


def test_replay_errors_come_back_as_json(running: Running, backend: Kit) -> None:
    status, _, body = post(running.url + "/replay", b'{"entity_id": "user_123"}')
    assert status == 400 and body["status"] == 400 and "start_time and end_time" in body["error"]
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        conn.request("GET", "/replay")
        response = conn.getresponse()
        assert response.status == 405 and response.getheader("Allow") == "POST"
        response.read()
    finally:
        conn.close()
    status, _, body = post(running.url + "/nowhere", b"{}")
    assert status == 404 and "/ingest, /overview, /replay" in body["error"]


def test_the_seed_workflow_against_a_pik_serve_process(tmp_path: Path) -> None:
    """Ingest and replay through `pik serve`, then `pik process` and `pik aggregates`, each a real process."""
    env = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "PIK_BACKEND", "PIK_READ_ONLY")}
    ws = str(tmp_path / "ws")
    proc = subprocess.Popen(
        [*_pik(), "serve", "--port", "0", "--workspace", ws],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), "pik serve printed nothing"
        first = proc.stdout.readline()
        assert "POST /replay" in first, first
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first
        assert post(match.group(0) + "/ingest", SEED_BODY)[2]["status"] == "ACCEPTED"
        status, _, reply = post(match.group(0) + "/replay", SEED_REPLAY_BODY.encode())
        assert (status, reply["scanned"], reply["sent"]) == (200, 1, 1)
        # The queue is the workspace's: `pik process` drains it while the server still runs.
        done = subprocess.run(
            [*_pik(), "process", "--workspace", ws, "--json"],
            capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["received"], report["processed"], report["versions_written"]) == (1, 1, 1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "Traceback" not in err, err
    done = subprocess.run(
        [*_pik(), "aggregates", "--workspace", ws, "--entity", "user_123", "--day", "2025-12-28", "--json"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    [version] = json.loads(done.stdout)["items"]
    assert (version["metric"], version["version"], version["value"]) == ("daily_event_count", 1, 1)
    assert version["replay_ids"] == [reply["replay_id"]]
