"""The reliability suites (issue 6): faults, crashes, concurrency, hostile input, security.

Each suite runs at two sizes. In CI it runs small enough that the whole directory stays well under two
minutes; ``make soak`` sets ``PIK_SOAK=1`` and every suite multiplies its rounds by :func:`soak`.

What a suite tried and what held goes to ``docs/reliability.md`` through :func:`figures`: each call appends
one JSON line to the file named by ``PIK_RELIABILITY_LOG`` (``scripts/reliability.py`` sets it and renders
the page). Without that variable the figures are dropped, so the tests run the same either way. Record what
a reader can check (cases tried, faults injected, events lost), never timings: tests do not depend on speed.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from typing import Any

import pytest

_LOCK = threading.Lock()


def soaking() -> bool:
    """True under ``make soak`` (``PIK_SOAK=1``)."""
    return os.environ.get("PIK_SOAK", "") not in ("", "0")


def soak(ci: int, long: int) -> int:
    """The number of rounds: ``ci`` in the normal suite, ``long`` under ``make soak``."""
    return long if soaking() else ci


def record(suite: str, check: str, **values: Any) -> None:
    """Append one figure for ``docs/reliability.md``: the suite, the check, and what was counted."""
    path = os.environ.get("PIK_RELIABILITY_LOG")
    if not path:
        return
    line = json.dumps(
        {"suite": suite, "check": check, "soak": soaking(), **values}, sort_keys=True, default=str
    )
    with _LOCK, open(path, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Callable[..., None]:
    """``figures(check, **values)`` records a figure under the test module's name (its suite)."""
    suite = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")

    def add(check: str, **values: Any) -> None:
        record(suite, check, test=request.node.nodeid, **values)

    return add
