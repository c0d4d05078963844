"""Paint first, open after (issue 14, first frame): ``pik console`` draws its chrome before it imports the
backend, opens the backend in a thread, and keeps the keys typed meanwhile; an error opening it is shown on
screen and reported by the command line with today's line and exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import Static

from backend.kit import open_local
from backend.settings import DEFAULT_WORKSPACE
from pik_console.cli import common
from pik_console.cli import console as console_cli
from pik_console.cli.main import main
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.opening import Opener
from tests.console.conftest import plain, settle

SIZE = (120, 32)
OUTAGE = Context(entity="user_001", day="2025-12-22", source="mobile", event_type="heartbeat")
ROOT = Path(__file__).resolve().parents[2]
HEAVY = (
    "pydantic",
    "pydantic_settings",
    "boto3",
    "botocore",
    "backend.model",
    "backend.settings",
    "backend.kit",
)

# Runs in a fresh interpreter: what `pik console` imports up to the app's construction, and up to the moment
# the backend starts opening (after the first frame was drawn).
PROBE = """
import asyncio, json, sys
HEAVY = {heavy!r}
from pik_console.cli.main import build_parser
from pik_console.cli.console import build_console
argv = ["console", "--workspace", {ws!r}, "--read-only"]
app = build_console(build_parser(argv).parse_args(argv))
seen = {{"constructed": [m for m in HEAVY if m in sys.modules]}}
opening = app._open_backend
def probe():
    seen["painted"] = [m for m in HEAVY if m in sys.modules]
    seen["chrome"] = [str(t.label) for t in app.query("Tab")]
    opening()
app._open_backend = probe
async def run():
    async with app.run_test(size=(120, 32)) as pilot:
        for _ in range(400):
            if app.ready and app.query("#event-list"):
                break
            await pilot.pause(0.05)
        seen["ready"] = app.ready
        seen["after"] = [m for m in HEAVY if m in sys.modules]
asyncio.run(run())
app.close_backend()
print(json.dumps(seen))
"""


def test_nothing_of_the_backend_is_imported_before_the_first_frame(demo_ws: Path) -> None:
    script = PROBE.format(heavy=HEAVY, ws=str(demo_ws))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["constructed"] == []
    assert seen["painted"] == []
    assert len(seen["chrome"]) == 6  # the tab bar was there
    # Then it opened: the backend's modules came in, after the frame.
    assert seen["ready"] is True
    assert "backend.kit" in seen["after"] and "backend.model" in seen["after"]


def test_the_help_text_default_is_the_settings_default() -> None:
    assert common.DEFAULT_WORKSPACE == DEFAULT_WORKSPACE


class Gate:
    """An opener held open until the test lets it finish (the slow opening of a big stack)."""

    def __init__(self, ws: Path, error: Exception | None = None) -> None:
        self.release = threading.Event()
        self.ws = ws
        self.error = error
        self.kits: list[Any] = []
        self.closed = 0

    def __call__(self) -> Any:
        assert self.release.wait(30)
        if self.error is not None:
            raise self.error
        kit = open_local(self.ws, create=False)
        self.kits.append(kit)
        close = kit.close

        def closing() -> None:
            self.closed += 1
            close()

        kit.close = closing  # type: ignore[method-assign]
        return kit


def _said(app: PikConsole) -> list[str]:
    return [n.message for n in app._notifications]


def _placeholders(app: PikConsole) -> list[str]:
    """What the panes say while the backend opens (or why it did not), as plain text on one line each."""
    return [" ".join(plain(s.render(), 1000).split()) for s in app.query(".opening").results(Static)]


@pytest.mark.asyncio
async def test_keys_typed_while_the_backend_opens_wait_for_it_in_order(demo_ws: Path) -> None:
    gate = Gate(demo_ws)
    app = PikConsole(context=OUTAGE, opener=Opener(gate), opening="Opening the workspace demo")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        assert not app.ready
        assert "Opening the workspace demo" in "".join(_placeholders(app))
        await pilot.press("2", "5", "4")  # pane keys while it opens: nothing mounts yet, nothing crashes
        await pilot.pause(0.1)
        assert app.is_running and not app.ready
        assert not app.query("#replay-pane")
        gate.release.set()
        await settle(pilot)
        assert app.ready and not app.query(".opening")
        assert app.active_pane == "replay"  # the last key typed decides, as if typed after the opening
        assert app.pane("replay").is_mounted
        assert app.pane("events").is_mounted
    app.close_backend()
    assert gate.closed == 1


@pytest.mark.asyncio
async def test_a_slow_opening_still_reads_the_overview_it_opens_on(demo_ws: Path) -> None:
    # Seen in tmux: a workspace upgraded on opening (5 s) left the Overview at "reading the findings…" for
    # good; the tab's activation had come and gone while the backend opened, and nothing read the pane after.
    gate = Gate(demo_ws)
    app = PikConsole(opener=Opener(gate))  # no context: it opens on the Overview
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)  # the first frames, the tab activated, all before the backend is open
        assert not app.ready and app.active_pane == "overview"
        gate.release.set()
        await settle(pilot)
        for _ in range(100):
            if app.pane("overview").overview is not None:
                break
            await pilot.pause(0.05)
        pane = app.pane("overview")
        assert pane.overview is not None, "the Overview was never read"
        head = " ".join(plain(app.query_one("#overview-head", Static).render(), 1000).split())
        assert head.startswith("What is wrong in"), head
        assert app.focused is app.query_one("#overview-findings")
    app.close_backend()


async def _palette(pilot: Any, app: PikConsole, title: str) -> None:
    """Choose ``title`` in the command palette, as typed (ctrl+p, the title, enter)."""
    from textual.command import CommandList, CommandPalette

    await pilot.press("ctrl+p")
    await pilot.pause(0.2)
    assert isinstance(app.screen, CommandPalette)
    await pilot.press(*title)
    for _ in range(40):  # the palette searches as it is typed
        await pilot.pause(0.05)
        if app.screen.query_one(CommandList).option_count:
            break
    await pilot.press("enter")
    await pilot.pause(0.2)


@pytest.mark.asyncio
async def test_a_palette_action_chosen_while_it_opens_waits_for_it_and_says_so(demo_ws: Path) -> None:
    gate = Gate(demo_ws)
    app = PikConsole(context=OUTAGE, opener=Opener(gate), opening="Opening the workspace demo")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.1)
        await _palette(pilot, app, "Gaps: show pane")
        assert not app.ready and app.is_running
        assert any("Gaps: show pane: runs as soon as it is open" in m for m in _said(app)), _said(app)
        gate.release.set()
        await settle(pilot)
        assert app.ready and app.active_pane == "gaps"
        assert app.pane("gaps").is_mounted
    app.close_backend()


@pytest.mark.asyncio
async def test_a_palette_action_after_the_opening_failed_says_why(tmp_path: Path) -> None:
    from backend.errors import WorkspaceError

    gate = Gate(tmp_path, WorkspaceError("no workspace at /nowhere"))
    gate.release.set()
    app = PikConsole(context=OUTAGE, opener=Opener(gate))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert app.open_error is not None
        before = app.active_pane
        await _palette(pilot, app, "Gaps: show pane")
        said = [m for m in _said(app) if m.startswith("Gaps: show pane")]
        assert said and "could not be opened (no workspace at /nowhere)" in said[0], _said(app)
        assert app.active_pane == before != "gaps" and not app.query("#gaps-pane")


@pytest.mark.asyncio
async def test_what_a_long_opening_is_doing_is_shown_while_it_does_it(demo_ws: Path) -> None:
    gate = Gate(demo_ws)

    def upgrading() -> Any:
        opener.notice(
            "upgrading the workspace demo from schema version 5 to 6 (once; every stored byte is kept)"
        )
        return gate()

    opener = Opener(upgrading)
    app = PikConsole(context=OUTAGE, opener=opener, opening="Opening the workspace demo")
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(40):
            await pilot.pause(0.05)
            if "Upgrading" in "".join(_placeholders(app)):
                break
        shown = "".join(_placeholders(app))
        assert (
            "Upgrading the workspace demo from schema version 5 to 6 (once; every stored byte is kept)…"
            in shown
        )
        assert app.opening_note.startswith("Upgrading the workspace demo")
        gate.release.set()
        await settle(pilot)
        assert app.ready and not app.query(".opening")
    app.close_backend()


@pytest.mark.asyncio
async def test_a_filter_typed_while_the_backend_opens_lands_in_the_field(demo_ws: Path) -> None:
    gate = Gate(demo_ws)
    app = PikConsole(context=OUTAGE, opener=Opener(gate))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"user_002")
        gate.release.set()
        await settle(pilot)
        field = app.query_one("#f-entity")
        assert field.value == "user_002"  # type: ignore[attr-defined]
        assert app.focused is field
    app.close_backend()


@pytest.mark.asyncio
async def test_q_while_the_backend_opens_leaves_and_the_late_backend_is_closed(demo_ws: Path) -> None:
    gate = Gate(demo_ws)
    opener = Opener(gate)
    app = PikConsole(context=OUTAGE, opener=opener)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running
    app.close_backend()
    gate.release.set()  # the opening ends after the console closed
    assert app._opener_thread is not None
    app._opener_thread.join(30)
    assert len(gate.kits) == 1 and opener.kit is None
    assert gate.closed == 1


@pytest.mark.asyncio
async def test_an_error_opening_it_is_shown_and_keys_say_so(tmp_path: Path) -> None:
    from backend.errors import WorkspaceError

    gate = Gate(tmp_path, WorkspaceError(f"no workspace at {tmp_path / 'nope'}"))
    gate.release.set()
    app = PikConsole(context=OUTAGE, opener=Opener(gate))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert isinstance(app.open_error, WorkspaceError)
        shown = "".join(_placeholders(app))
        assert "Could not open it: no workspace at" in shown and "Press q to leave" in shown
        await pilot.press("2")
        assert any("could not be opened" in m for m in _said(app))
        assert app.is_running
        await pilot.press("q")
        await pilot.pause(0.1)
        assert not app.is_running


def _headless_run(answer: list[Any]) -> Any:
    """PikConsole.run for a test: headless; leaves with q once the backend is open or has failed."""

    def run(self: PikConsole) -> None:
        import asyncio

        async def drive() -> None:
            async with self.run_test(size=SIZE) as pilot:
                for _ in range(400):
                    if self.ready or self.open_error is not None:
                        break
                    await pilot.pause(0.05)
                await settle(pilot)
                answer.append(_placeholders(self))
                await pilot.press("q")

        asyncio.run(drive())

    return run


@pytest.mark.parametrize(
    ("argv", "code", "line"),
    [
        (["--workspace", "{tmp}/nope"], 1, "pik console: error: "),
        (["--workspace", "{tmp}", "--stack", "s"], 2, "pik console: error: --stack is for the AWS backend"),
    ],
)
def test_pik_console_reports_an_error_opening_it_as_every_command_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int, line: str
) -> None:
    import io

    shown: list[Any] = []
    monkeypatch.setattr(console_cli, "is_terminal", lambda stream: True)
    monkeypatch.setattr(PikConsole, "run", _headless_run(shown))
    out, err = io.StringIO(), io.StringIO()
    rc = main(["console", *(a.format(tmp=tmp_path) for a in argv)], out=out, err=err)
    assert rc == code
    assert err.getvalue().startswith(line) and err.getvalue().count("\n") == 1
    message = err.getvalue().removeprefix("pik console: error: ").strip()
    assert " ".join(message.split()) in shown[0][0]  # the same words were on screen


def test_pik_console_opens_a_workspace_and_closes_it(
    demo_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    shown: list[Any] = []
    built: list[PikConsole] = []
    real_build = console_cli.build_console

    def build(args: Any) -> PikConsole:
        built.append(real_build(args))
        return built[-1]

    monkeypatch.setattr(console_cli, "is_terminal", lambda stream: True)
    monkeypatch.setattr(console_cli, "build_console", build)
    monkeypatch.setattr(PikConsole, "run", _headless_run(shown))
    rc = main(["console", "--workspace", str(demo_copy)], out=io.StringIO(), err=io.StringIO())
    assert rc == 0
    assert shown == [[]]  # opened: no placeholder left
    assert built[0].open_error is None and built[0].opener is not None and built[0].opener.kit is None


# -- what the first frame looks like ------------------------------------------------------------------


@pytest.fixture
def opening_app(demo_ws: Path) -> Any:
    """A console whose backend is still opening while the snapshot is taken (let go afterwards)."""
    gate = Gate(demo_ws)
    app = PikConsole(context=OUTAGE, opener=Opener(gate), opening="Opening the workspace .pik-demo")
    yield app
    app.close_backend()
    gate.release.set()


@pytest.fixture
def failed_app(tmp_path: Path) -> PikConsole:
    from backend.errors import WorkspaceError

    gate = Gate(
        tmp_path, WorkspaceError("no workspace at ./nope (create one with `pik ingest` or `pik demo`)")
    )
    gate.release.set()
    return PikConsole(context=OUTAGE, opener=Opener(gate), opening="Opening the workspace ./nope")


def test_the_first_frame_while_the_workspace_opens(opening_app: PikConsole, snap_compare: Any) -> None:
    """The chrome (header, tabs, footer) and what is being opened, at 80x24."""

    async def run_before(pilot: Any) -> None:
        await pilot.pause(0.1)
        assert not opening_app.ready

    assert snap_compare(opening_app, terminal_size=(80, 24), run_before=run_before)


def test_the_frame_when_the_workspace_cannot_be_opened(failed_app: PikConsole, snap_compare: Any) -> None:
    async def run_before(pilot: Any) -> None:
        await settle(pilot)
        assert failed_app.open_error is not None
        failed_app.clear_notifications()  # the same words as the pane's; the toast times out

    assert snap_compare(failed_app, terminal_size=(80, 24), run_before=run_before)


QUIT_WHILE_OPENING = """
import threading, time
from pik_console.console.app import PikConsole
from pik_console.console.context import Context
from pik_console.console.opening import Opener

never = threading.Event()

def opener():
    never.wait()  # a stack that never answers

async def press_q(pilot):
    await pilot.pause(0.3)
    assert not pilot.app.ready
    await pilot.press("q")

app = PikConsole(context=Context(), opener=Opener(opener))
app.run(headless=True, size=(80, 24), auto_pilot=press_q)
print("left")
"""


def test_q_while_a_stack_never_answers_leaves_the_process() -> None:
    """The opening runs in a daemon thread: the process ends on q, it does not wait for the opening (it did
    with a Textual thread worker, whose executor the event loop joins on the way out)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", QUIT_WHILE_OPENING],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("left")
