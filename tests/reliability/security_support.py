"""What the security suites (``test_security_*.py``) share: the day and window they work on, a fixed
clock's start, an event of that day, and ``pik`` run in-process."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pik_console.cli import main

ROOT = Path(__file__).resolve().parents[2]
DAY = "2025-12-01"
T0 = datetime(2025, 12, 1, 12, tzinfo=UTC)
WINDOW = ("2025-12-01T00:00:00Z", "2025-12-02T00:00:00Z")


def event(entity: str, minute: int, day: str = DAY, **payload: Any) -> bytes:
    """The bytes of a valid web/click event of ``entity`` at 10:``minute`` on ``day``; ``payload`` adds
    fields to its payload (whose ``n`` is ``minute``)."""
    return json.dumps(
        {
            "source": "web",
            "event_type": "click",
            "entity_id": entity,
            "event_time": f"{day}T10:{minute:02d}:00Z",
            "payload": {"n": minute, **payload},
        },
        ensure_ascii=False,
    ).encode()


def cli(*argv: str) -> tuple[int, str, str]:
    """Run ``pik argv`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()
