"""Workspaces for the console tests: the demo (built once, with deterministic replay ids so snapshots are
stable) and a one-entity workspace bigger than a page."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from rich.console import Console, RenderableType
from textual.app import App
from textual.pilot import Pilot
from textual.worker import WorkerCancelled

import backend.services.replay_messages as replay_module
from backend.adapters.local.store import LocalStore
from backend.demo import build_demo
from backend.services.ingest import IngestService, Received
from backend.times import FixedClock, fmt

BIG_ENTITY = "dev-1"
BIG_DAY = "2025-12-01"
BIG_EVENTS = 1000


@pytest.fixture(scope="session")
def demo_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo workspace (read it, or copy it with ``demo_copy`` to change it)."""
    ws = tmp_path_factory.mktemp("console-demo") / ".pik-demo"
    counter = itertools.count(1)
    # Replay ids end in random hex; fixed here so that the snapshots of the demo do not change. Only the
    # replay's draws are counted (not the queue's tokens and message ids, which no snapshot shows).
    fixed = SimpleNamespace(token_hex=lambda n: f"{next(counter):0{2 * n}x}")
    with mock.patch.object(replay_module, "secrets", fixed):
        store = LocalStore(ws)
        try:
            build_demo(store)
        finally:
            store.close()
    return ws


@pytest.fixture
def demo_copy(demo_ws: Path, tmp_path: Path) -> Path:
    """A private copy of the demo workspace, for tests that replay or process."""
    target = tmp_path / ".pik-demo"
    shutil.copytree(demo_ws, target)
    return target


@pytest.fixture(scope="session")
def big_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One entity with 1,000 events a minute apart on one day (five pages), through the real ingest."""
    ws = tmp_path_factory.mktemp("console-big") / "ws"
    store = LocalStore(ws)
    start = datetime(2025, 12, 1, tzinfo=UTC)
    clock = FixedClock(start)
    service = IngestService(store, store, clock)

    def feed() -> Iterator[Received]:
        for i in range(BIG_EVENTS):
            when = start + timedelta(minutes=i)
            clock.set(when + timedelta(seconds=2))
            body = {
                "source": "iot",
                "event_type": "reading",
                "entity_id": BIG_ENTITY,
                "event_time": fmt(when),
                "payload": {"n": i},
            }
            yield Received(json.dumps(body).encode(), "test", i + 1)

    try:
        for _ in service.ingest_stream(feed(), batch_size=500):
            pass
    finally:
        store.close()
    return ws


async def settle(pilot: Pilot[None], rounds: int = 6) -> None:
    """Wait until no worker runs and the messages they posted are handled."""
    app: App[None] = pilot.app
    # The backend being opened (in a thread of its own, not a worker), then a pane mounted the first time
    # it is shown: wait for them too (PikConsole).
    for _ in range(1500):
        if not getattr(app, "opening_now", False):
            break
        await pilot.pause(0.02)
    for _ in range(500):
        # The keys typed while it opened, replayed one by one once the first pane is up.
        if not getattr(app, "_replaying", False):
            break
        await pilot.pause(0.02)
    for _ in range(100):
        pending = getattr(app, "_mounting", set()) - getattr(app, "_panes_ready", set)()
        if not pending:
            break
        await pilot.pause(0.02)
    for _ in range(rounds):
        # A worker that a newer run of the same work cancelled (exclusive groups) is done too.
        with contextlib.suppress(WorkerCancelled):
            await app.workers.wait_for_complete()
        await pilot.pause(0.05)
        if not any(w.is_running for w in app.workers):
            await pilot.pause(0.05)
            if not any(w.is_running for w in app.workers):
                break
    # What the workers' answers changed, drawn (a table sizes its columns when idle, then redraws).
    with contextlib.suppress(Exception):  # no screen while the app closes
        await app.screen.wait_for_refresh()
    await asyncio.sleep(0)


def plain(renderable: RenderableType, width: int = 160) -> str:
    """What a renderable shows, as plain text."""
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()
