"""The AWS side as a new user meets it, every step a real `pik` process: a moto server on 127.0.0.1,
`pik aws init` against it, `pik ingest` a file, read it back with `pik events`, and the original kit's
curl example against `pik serve --backend aws`."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

PIK = str(Path(sys.executable).with_name("pik"))
SEED_EVENT = (
    '{"source":"demo","event_type":"heartbeat","entity_id":"user_123",'
    '"event_time":"2025-12-28T23:59:59Z","payload":{"steps":10}}'
)


def clean_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIK_"))}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PIK, *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_init_ingest_and_read_back_with_separate_pik_processes(moto_url: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    init = run(env, "aws", "init", "--endpoint-url", moto_url)
    assert init.returncode == 0, init.stderr
    for line in init.stdout.splitlines():  # what `eval "$(pik aws init ...)"` does
        if line.startswith("export "):
            name, _, value = line[len("export ") :].partition("=")
            env[name] = shlex.split(value)[0]
    events = tmp_path / "events.jsonl"
    events.write_text(SEED_EVENT + "\n" + SEED_EVENT + "\n{broken\n")
    aws = ["--backend", "aws", "--endpoint-url", moto_url]
    ingest = run(env, "ingest", str(events), "--json", *aws)
    assert ingest.returncode == 0, ingest.stderr
    summary = json.loads(ingest.stdout)
    assert (summary["accepted"], summary["duplicate"], summary["rejected"]) == (1, 1, 1)
    read = run(env, "events", "--entity", "user_123", "--start", "2025-12-28", "--end", "2025-12-29", *aws)
    assert read.returncode == 0, read.stderr
    assert "ACCEPTED" in read.stdout and "DUPLICATE" in read.stdout
    rejected = run(env, "events", "--status", "REJECTED", "--json", *aws)
    assert json.loads(rejected.stdout)["items"][0]["line"] == 3


def test_the_seed_curl_example_against_pik_serve_on_aws(moto_url: str, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    assert run(env, "aws", "init", "--endpoint-url", moto_url, "--prefix", "srv").returncode == 0
    env.update(
        RAW_BUCKET="srv-raw", EVENTS_TABLE="srv-events", DEDUPE_TABLE="srv-dedupe", AWS_REGION="us-east-1"
    )
    server = subprocess.Popen(
        [PIK, "serve", "--port", "0", "--backend", "aws", "--endpoint-url", moto_url],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        url = next(w for w in line.split() if w.startswith("http://127.0.0.1:")).rstrip(".,")
        if shutil.which("curl"):
            answers = []
            for _ in range(2):
                curl = subprocess.run(
                    ["curl", "-s", "-X", "POST", f"{url}/ingest", "-H", "Content-Type: application/json",
                     "-d", SEED_EVENT],
                    capture_output=True, text=True, timeout=60, check=True,
                )  # fmt: skip
                answers.append(json.loads(curl.stdout))
        else:  # the same request without curl
            answers = []
            for _ in range(2):
                request = urllib.request.Request(
                    f"{url}/ingest", SEED_EVENT.encode(), {"Content-Type": "application/json"}, method="POST"
                )
                with urllib.request.urlopen(request, timeout=60) as reply:
                    answers.append(json.loads(reply.read()))
        assert [a["status"] for a in answers] == ["ACCEPTED", "DUPLICATE"]
        assert answers[0]["event_id"] == "bd10f9014e165b6d52271772b19788bb4a54b0f28cac6990d0d91bf2c9d643c0"
        assert answers[0]["s3_key"].startswith("raw/source=demo/event_type=heartbeat/event_date=2025-12-28/")
        assert {"event_id", "status", "ingest_lag_ms", "s3_key"} <= set(answers[0])
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    assert server.returncode == 0
