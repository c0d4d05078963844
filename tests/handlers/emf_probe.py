"""The EMF the three handlers print in the environment the template gives them.

Powertools reads its environment (``POWERTOOLS_SERVICE_NAME``, ``POWERTOOLS_METRICS_NAMESPACE``) when a
handler module makes its Metrics object, at import; so the handlers run here in a child process started
with the template's variables, on a local workspace, and the parent reads the EMF documents they print.
The variables are read from backend/template.yaml, never written down here: a variable added to the
template is in the probe's environment too.

``python -m tests.handlers.emf_probe`` is the child; :func:`run_handlers` starts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "backend" / "template.yaml"
DONE = "emf-probe-done"


def template_environment() -> dict[str, str]:
    """Every function's environment as the template sets it with its parameters' defaults: plain values as
    written, a ``Ref`` to a parameter as that parameter's default. References to the stack's resources
    (bucket, tables, queues) are left out: the probe runs on a local workspace."""
    from cfnlint.decode.decode import decode_str

    decoded, errors = decode_str(TEMPLATE.read_text(encoding="utf-8"))
    assert not errors, errors
    template: dict[str, Any] = json.loads(json.dumps(decoded))
    parameters = template.get("Parameters", {})
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    env: dict[str, str] = {}
    for name, value in variables.items():
        if isinstance(value, str):
            env[name] = value
        elif isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in parameters:
            env[name] = str(parameters[value["Ref"]]["Default"])
    assert "POWERTOOLS_SERVICE_NAME" in env, "expected the template to name the Powertools service"
    return env


def json_lines(stdout: str) -> list[dict[str, Any]]:
    """The JSON objects among the lines of ``stdout`` (log lines and EMF documents)."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def dimension_sets(doc: dict[str, Any]) -> list[list[str]]:
    """The dimension sets of every metric directive of one EMF document."""
    return [list(s) for d in doc["_aws"]["CloudWatchMetrics"] for s in d["Dimensions"]]


def run_handlers(workdir: Path) -> list[dict[str, Any]]:
    """Every JSON line (log lines and EMF documents) the handlers print with the template's environment,
    in the order of the child's calls (see :func:`main`)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "PIK_", "POWERTOOLS_")) and k not in ("DRY_RUN", "LOG_LEVEL")
    }
    env.update(template_environment())
    env.update(PIK_BACKEND="local", PIK_WORKSPACE=str(workdir / "ws"), PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "tests.handlers.emf_probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and DONE in done.stdout, done.stderr[-3000:]
    return json_lines(done.stdout)


def emf_by_function(lines: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """The EMF documents among ``lines``, by their ``Function`` dimension (ingest, replay, processor)."""
    by_function: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for doc in lines:
        if "_aws" in doc:
            by_function[doc["Function"]].append(doc)
    return dict(by_function)


def main() -> None:
    """Ingest (accepted, duplicate, rejected), replay (sent, dry run, bad request) and process (a good
    message and a malformed one), each a Lambda invocation that prints its EMF document."""
    from backend.handlers import ingest, processor, replay
    from tests.handlers.support import message, replay_v1, sqs_event, sqs_record
    from tests.handlers.test_ingest_handler import SEED_BODY, FakeLambdaContext, rest_v1_event

    context = FakeLambdaContext()
    for body in (SEED_BODY, SEED_BODY, "nope"):
        ingest.handler(rest_v1_event(body), context)
    window = {
        "entity_id": "user_123",
        "start_time": "2025-12-28T00:00:00Z",
        "end_time": "2025-12-29T00:00:00Z",
    }
    for body in (json.dumps(window), json.dumps({**window, "dry_run": True}), "{nope"):
        replay.handler(replay_v1(body), context)
    records = [sqs_record(message("user_123", "2025-12-28T23:59:59.000Z")), sqs_record("not json")]
    processor.handler(sqs_event(records), context)
    print(DONE, flush=True)


if __name__ == "__main__":
    main()
