"""Security: logs without credentials or payloads.

* Logs: the three handlers and the ``pik`` commands run in a child process with secrets in the payloads,
  the request headers and the AWS credentials; at ``LOG_LEVEL=INFO`` none of them is written anywhere.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

from backend.handlers import ingest as ingest_handler
from tests.handlers.test_ingest_handler import FakeLambdaContext, rest_v1_event
from tests.reliability.security_support import ROOT


def _probe(
    tmp_path: Path, level: str, extra_env: dict[str, str]
) -> tuple[subprocess.Popen[str], dict[str, str], Path]:
    canaries = {
        "payload": f"pik-canary-payload-{secrets.token_hex(8)}",
        "header": f"pik-canary-header-{secrets.token_hex(8)}",
        "secret_key": f"pik-canary-secret-{secrets.token_hex(8)}",
        "session_token": f"pik-canary-token-{secrets.token_hex(8)}",
    }
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PIK_", "POWERTOOLS_", "DRY_RUN"))
    }
    cli_out = tmp_path / f"cli-{level}.txt"
    env.update(
        LOG_LEVEL=level,
        PYTHONPATH=str(ROOT),
        AWS_ACCESS_KEY_ID="AKIAPROBE",
        AWS_SECRET_ACCESS_KEY=canaries["secret_key"],
        AWS_SESSION_TOKEN=canaries["session_token"],
        PROBE_AWS_SECRET_ACCESS_KEY=canaries["secret_key"],
        PROBE_AWS_SESSION_TOKEN=canaries["session_token"],
        PROBE_PAYLOAD_SECRET=canaries["payload"],
        PROBE_HEADER_SECRET=canaries["header"],
        PROBE_CLI_OUT=str(cli_out),
        **extra_env,
    )
    work = tmp_path / level
    work.mkdir()
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.log_probe", str(work)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return child, canaries, cli_out


def test_logs_hold_no_credentials_and_no_payload(tmp_path: Path, figures: Any) -> None:
    runs = {
        "INFO": _probe(tmp_path, "INFO", {}),
        # Debug logging asked for, twice over: the kit's level, and Powertools' own event logging switch.
        "DEBUG": _probe(tmp_path, "DEBUG", {"POWERTOOLS_LOGGER_LOG_EVENT": "true"}),
    }
    results = {}
    for level, (child, canaries, cli_out) in runs.items():
        stdout, stderr = child.communicate(timeout=120)
        assert child.returncode == 0, stderr[-3000:]
        steps = json.loads(stdout.strip().splitlines()[-1])["probe_steps"]
        assert len(steps) >= 30, steps
        results[level] = (stdout, stderr, canaries, cli_out.read_text(encoding="utf-8"), steps)

    stdout, stderr, canaries, cli_stdout, steps = results["INFO"]
    logs = stdout + stderr
    assert logs.count('"service":"pipeline-investigation-kit"') >= 20  # the handlers did log
    for name, canary in canaries.items():
        assert canary not in logs, f"the {name} secret is in the logs at INFO"
    # The commands' own output (what the user asked for) holds no secret either, but for the one place it
    # quotes the user's own input back: a field sent with the wrong type, in the rejection's reason.
    for line in cli_stdout.splitlines():
        for name, canary in canaries.items():
            if canary in line:
                assert name == "payload" and "entity_id: must be a string, got dict" in line, line
    lines = logs.splitlines()
    figures(
        "logs at INFO: handlers and pik commands",
        steps=len(steps),
        log_lines=len(lines),
        secrets_planted=len(canaries),
        secrets_in_logs=0,
    )

    # At DEBUG: the kit's own lines add the rejection reasons as answered (which may quote a value sent in
    # the wrong field); Powertools' event logging stays off (the handlers pass log_event=False); libraries
    # log at DEBUG only when the root logger is set so (here it is): botocore then logs request bodies (the
    # raw event bytes) and headers, the session token among them. The secret access key never appears.
    stdout, stderr, canaries, _, _ = results["DEBUG"]
    kit_lines = [line for line in stdout.splitlines() if '"service":"pipeline-investigation-kit"' in line]
    kit = "\n".join(kit_lines)
    assert canaries["secret_key"] not in stdout + stderr
    assert canaries["session_token"] not in kit and canaries["header"] not in kit
    with_payload = [line for line in kit_lines if canaries["payload"] in line]
    assert with_payload and all('"rejection reason as answered"' in line for line in with_payload)
    figures(
        "logs at DEBUG: what appears",
        kit_lines=len(kit_lines),
        kit_lines_with_payload_values=len(with_payload),
        kit_lines_with_credentials=0,
        library_lines_with_session_token=sum(
            canaries["session_token"] in line for line in stderr.splitlines()
        ),
        library_lines_with_payload=sum(canaries["payload"] in line for line in stderr.splitlines()),
        secret_key_anywhere=0,
    )


def test_a_rejection_is_logged_without_the_values_it_quotes(tmp_path: Path, backend: Any) -> None:
    """Regression: the ingest handler logged a rejection's reason at INFO, and a reason quotes the value of
    a field with the wrong type (up to 63 characters): a secret sent in the wrong field went to the logs."""
    from tests.handlers.support import captured_logs

    secret = f"pik-canary-{secrets.token_hex(8)}"
    body = json.dumps({"source": "web", "event_type": "click", "entity_id": {"password": secret},
                       "event_time": "2025-12-01T10:00:00Z", "payload": {}})  # fmt: skip
    with captured_logs(ingest_handler.logger) as logs:
        response = ingest_handler.handler(rest_v1_event(body), FakeLambdaContext())
    answered = json.loads(response["body"])
    assert response["statusCode"] == 400 and secret in answered["reason"]  # the sender is told what is wrong
    logged = [json.loads(line) for line in logs.getvalue().splitlines()]
    (line,) = [entry for entry in logged if entry["message"] == "ingest"]
    assert line["reason"] == "entity_id: must be a string, got dict"
    assert secret not in logs.getvalue()
