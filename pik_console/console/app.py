"""``pik console``: the Textual app. One screen, five panes (Events, Lag, Gaps, Replay, Aggregates), one
investigation context shared by all of them, the backend and a READ-ONLY badge in the header.

Every backend call runs in a thread worker and comes back as a message; a failure becomes a
notification. Keys are in the footer (each binding has an id and a tooltip), in the command palette
(ctrl+p) and in the help (``?``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import events, on, work
from textual.actions import SkipAction
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import BindingType
from textual.css.query import NoMatches
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane
from textual.widgets._select import SelectOverlay

from pik_console.console.context import Context, day_start, next_day
from pik_console.console.header import NARROW, ConsoleHeader
from pik_console.console.keys import (
    APP_BINDINGS,
    COMMAND_KEYS,
    KEY_NAMES,
    PANE_KEYS,
    help_sections,
    palette_entries,
)
from pik_console.console.opening import Opener, Opening, PaintFirst
from pik_console.console.widgets import TypeAhead

if TYPE_CHECKING:
    # Imported when the backend opens, after the first frame (pik_console.console.opening).
    from backend.kit import Kit
    from backend.ports import IndexStats

PANES = ("overview", "events", "lag", "gaps", "replay", "aggregates")


# How many times (0.05 s apart) q waits for a pane being mounted before quitting anyway.
QUIT_WAITS = 40

# Refreshes to wait for a pane to mount before giving up on focusing it (it mounts after one or two).
PANE_MOUNT_TRIES = 50


class PikConsole(PaintFirst, App[None]):
    """The investigation console over a backend: given open, or opened after the first frame (``opener``)."""

    CSS_PATH = Path(__file__).with_name("console.tcss")
    TITLE = "pik console"
    ENABLE_COMMAND_PALETTE = True
    # The first focus is the event list, never a form field or the tab bar: keys typed in a burst as the
    # console starts go to the list and the app's keys, not into a field or nowhere.
    AUTO_FOCUS = "#event-list"

    BINDINGS: ClassVar[list[BindingType]] = APP_BINDINGS

    context: reactive[Context] = reactive(Context, init=False)

    class StatsRead(Message):
        def __init__(self, stats: IndexStats | None, error: str | None) -> None:
            super().__init__()
            self.stats = stats
            self.error = error

    def __init__(
        self,
        kit: Kit | None = None,
        *,
        context: Context | None = None,
        opener: Opener | None = None,
        opening: str = "Opening the workspace",
    ) -> None:
        """On an opened backend (``kit``), or on one that ``opener`` opens after the first frame is drawn
        (``opening`` says what, on screen, meanwhile): the console then imports no backend module before it
        paints, and keys typed meanwhile wait for it."""
        super().__init__()
        self.init_opening(kit, opener, opening)
        self._initial = context or Context()
        self.stats: IndexStats | None = None
        self.reports: list[str] = []
        self._quitting = False
        self._quit_waits = 0
        self._mounting: set[str] = {"events"} if kit is not None else set()
        self._wanted_pane = ""  # the pane the last pane key asked for (action_pane)

    # -- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield ConsoleHeader(id="header")
        # The first frame is the chrome and one pane at most: with an opened backend, Events; while it
        # opens, a line saying so in each tab (no backend module imported yet). Each other pane is imported
        # and mounted the first time it is shown (``mount_pane``), so the first screen costs one pane, not
        # six. With nothing chosen the console opens on the Overview (what is wrong here, ranked); with an
        # entity or a partition on Events.
        with TabbedContent(initial=self._first_pane(), id="panes"):
            for name in PANES:
                key = PANE_KEYS[name]
                with TabPane(f"{key} {name.title()}", id=name):
                    if not self.ready:
                        yield Opening(self._opening, id=f"{name}-opening")
                    elif name == "events":
                        from pik_console.console.events_pane import EventsPane

                        yield EventsPane(id="events-pane")
        yield Footer()

    def on_mount(self) -> None:
        self.set_reactive(PikConsole.context, self._initial)
        self._fit()
        if self.ready:
            self._start()
        else:
            # After the first frame is drawn: the backend's imports and opening must not delay it.
            self.call_after_refresh(self._open_backend)

    def _start(self) -> None:
        """The backend is open: fill the panes."""
        self.when_mounted("events", lambda pane: pane.apply_context(self.context), mount=True)
        ctx = self.context
        if self.kit.name == "local" and not (ctx.entity or (ctx.source and ctx.event_type and ctx.day)):
            # Nothing to open on: the workspace's totals choose (a whole-index scan, so only then).
            self._read_stats()
        if self._first_pane() == "overview":
            self.action_pane("overview")

    def _first_pane(self) -> str:
        ctx = self._initial
        return "events" if ctx.entity or (ctx.source and ctx.event_type and ctx.day) else "overview"

    def pane(self, name: str) -> Any:
        return self.query_one(f"#{name}-pane")

    @property
    def read_only(self) -> bool:
        """Mutating actions are refused (False until the backend is open: they wait for it anyway)."""
        return self.ready and self.kit.read_only

    @property
    def active_pane(self) -> str:
        return str(self.query_one(TabbedContent).active or "events")

    # -- the context ------------------------------------------------------------------------------------

    def watch_context(self, context: Context) -> None:
        self._show_header()

    def on_key(self, event: events.Key) -> None:
        # Runs before the app's key bindings. A key typed right after the one that opened a list or a
        # confirmation was sent to the screen below (the list was not open yet) and comes back here: it goes
        # into the new screen's field, not to the console's keys (w wrote a report, e opened a second list).
        screen = self.screen
        if isinstance(screen, TypeAhead) and screen.take_key(event):
            event.prevent_default()
            event.stop()
        elif self.holds_key(event):
            self._hold_key(event)

    def share(self, **changes: Any) -> Context:
        """A pane sets part of the context (what its form or cursor now shows): the header follows at once,
        and every other pane the next time it is shown. Returns the context, for the pane to mark applied."""
        ctx = replace(self.context, **changes)
        if ctx != self.context:
            self.context = ctx
        return ctx

    def _show_header(self) -> None:
        # No header while the app closes (a worker's answer can arrive after q took the screen down).
        for header in self.query(ConsoleHeader):
            header.show(self.kit, self.context, self.size.width, self.opening_note)

    def on_resize(self) -> None:
        self._fit()

    def _fit(self) -> None:
        """The layout for the terminal's size: ``-narrow`` below NARROW columns (CSS stacks the panes), and
        the forms' fields compact (one line, no border) so that each shows what is typed in it."""
        narrow = self.size.width < NARROW
        self.set_class(narrow, "-narrow")
        for widget in self.query(".filter-bar > *"):
            if hasattr(widget, "compact"):
                widget.compact = narrow
        self._show_header()

    @work(thread=True, exclusive=True, group="stats", exit_on_error=False)
    def _read_stats(self) -> None:
        try:
            self.post_message(self.StatsRead(self.kit.index.stats(), None))
        except Exception as exc:
            self.post_message(self.StatsRead(None, str(exc)))

    @on(StatsRead)
    def _stats_read(self, message: StatsRead) -> None:
        if not self.is_running:  # read before q, answered after: nothing to show it on
            return
        if message.stats is None:
            self.notify(
                f"Reading the workspace totals failed: {message.error}", severity="error", markup=False
            )
            return
        stats = self.stats = message.stats
        first = stats.first_event_time[:10] if stats.first_event_time else None
        last = stats.last_event_time[:10] if stats.last_event_time else None
        ctx = replace(self.context, first_day=first, last_day=last)
        if not (ctx.entity or ctx.source) and stats.partitions and last:
            # Nothing chosen: open the biggest partition on the last day, so the screen is never empty.
            biggest = max(stats.partitions, key=lambda p: p.accepted + p.duplicate)
            ctx = replace(ctx, source=biggest.source, event_type=biggest.event_type, day=last)
            self.context = ctx
            self.when_mounted("events", lambda pane: pane.apply_context(ctx), mount=True)
        else:
            self.context = ctx

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        name = event.pane.id or ""
        if name in PANES and self.ready:  # before, the pane shown when it opens is filled then
            self.when_mounted(name, lambda pane: pane.apply_context(self.context), mount=True)

    # -- actions -----------------------------------------------------------------------------------------

    def action_pane(self, name: str) -> None:
        self._wanted_pane = name
        self.query_one(TabbedContent).active = name
        self.call_after_refresh(
            self.when_mounted, name, lambda pane: self._show_if_wanted(name, pane), mount=True
        )

    def _show_if_wanted(self, name: str, pane: Any) -> None:
        """Once pane ``name`` is mounted, show it and focus its list, unless a later pane key asked for
        another pane meanwhile: a pane that mounted slowly must not take the screen back from it (2 5 4 typed
        as the console started could end on 5)."""
        if self._wanted_pane == name:
            self.query_one(TabbedContent).active = name
            pane.focus_main()

    def pane_mounted(self) -> None:
        """A pane mounted (the first time it was shown): its fields take the size's layout."""
        self._fit()

    def mount_pane(self, name: str) -> None:
        """Import and mount pane ``name`` into its tab, once."""
        if name in self._mounting or not self.ready:
            return
        try:
            tab = self.query_one(f"TabPane#{name}", TabPane)
        except NoMatches:
            return
        if not (tab.is_mounted and tab.is_attached):
            return  # a key pressed as the console starts: its tab is not mounted yet; the caller retries
        self._mounting.add(name)
        module = importlib.import_module(f"pik_console.console.{name}_pane")
        tab.mount(getattr(module, f"{name.title()}Pane")(id=f"{name}-pane"))

    def when_mounted(
        self, name: str, then: Callable[[Any], None], tries: int = PANE_MOUNT_TRIES, *, mount: bool = False
    ) -> None:
        """``then(pane)`` as soon as pane ``name`` is mounted. A pane is mounted the first time it is shown
        (``mount=True`` mounts it); a key pressed before that must wait for its pane, not crash the console.
        Without ``mount``, a pane never shown is left alone (it reads everything fresh when first shown).
        Before the backend is open, ``then`` waits for it."""
        if not self.ready:
            if self.open_error is None:
                self._waiting.append((name, then, mount))
            return
        try:
            pane = self.pane(name)
            if not pane.is_mounted:  # in the DOM, its children not composed yet
                raise NoMatches(name)
        except NoMatches:
            if name not in self._mounting and not mount:
                return
            self.mount_pane(name)
            if tries > 0:
                self.call_after_refresh(self.when_mounted, name, then, tries - 1, mount=mount)
            return
        then(pane)

    def action_back(self) -> None:
        """Escape: out of any field, back to the pane's list (k9s, lazygit). A screen over the console's (a
        list to pick from, a confirmation, the palette) and an open Select close themselves on Escape."""
        if len(self.screen_stack) > 1 or isinstance(self.focused, SelectOverlay):
            raise SkipAction()
        self.when_mounted(self.active_pane, lambda pane: pane.focus_main())

    def action_refused(self, key: str) -> None:
        name = KEY_NAMES.get(key, key)
        owner, what = COMMAND_KEYS[key]
        reason: str | None = None
        if self.active_pane == owner and owner not in self._panes_ready():
            # Pressed before its pane was ready (mounting on first show): the key waits for the pane.
            self.when_mounted(owner, lambda pane: self.call_after_refresh(self.simulate_key, key), mount=True)
            return
        if self.active_pane == owner:
            try:
                reason = self.pane(owner).refusal(key)
            except (NoMatches, AttributeError):
                reason = None
            reason = reason or f"{name} ({what}) has nothing to act on here"
        else:
            reason = f"{name} ({what}) works in the {owner.title()} pane: press {PANE_KEYS[owner]} first"
        self.notify(reason, severity="warning", markup=False)

    def action_screenshot(self, filename: str | None = None, path: str | None = None) -> None:
        """The palette's Screenshot: an SVG in the current directory, and where it went (or why not)."""
        try:
            saved = self.save_screenshot(filename, path or str(Path.cwd()))
        except OSError as exc:
            self.notify(f"The screenshot was not saved: {exc}", severity="error", markup=False)
            return
        self.notify(f"Screenshot saved to {saved}", title="Screenshot", markup=False)

    async def action_quit(self) -> None:
        """Quit; running work (a send, the processor) is asked to stop first and the console closes when
        it has stopped, so the queue and the audit trail are left consistent. A pane still being mounted
        (q pressed right after its key) is let finish first: tearing it down half-composed would fail."""
        if self._mounting - self._panes_ready() and self._quit_waits < QUIT_WAITS:
            self._quit_waits += 1
            self.set_timer(0.05, self.action_quit)
            return
        running = self._running_work()
        if not running:
            self.exit()
            return
        if self._quitting:
            self.notify(f"Still stopping {running}…", markup=False)
            return
        self._quitting = True
        self.notify(f"Stopping {running} cleanly, then quitting…", title="Quit", markup=False)
        self.when_mounted("replay", lambda pane: pane.cancel_work())
        self.set_interval(0.1, self._quit_when_idle)

    def _panes_ready(self) -> set[str]:
        """The panes mounted and composed."""
        ready = set()
        for name in self._mounting:
            try:
                if self.pane(name).is_mounted:
                    ready.add(name)
            except NoMatches:
                pass
        return ready

    def _running_work(self) -> str | None:
        try:
            return self.pane("replay").running_work()
        except NoMatches:
            return None

    def _quit_when_idle(self) -> None:
        if not any(
            w.is_running and w.group in ("replay-execute", "replay-process", "replay-plan")
            for w in self.workers
        ):
            self.exit()

    def action_pick(self, what: str) -> None:
        """e / s / d: choose the entity, the source/type or the day from a list (type to filter)."""
        from pik_console.console.picker import open_picker

        open_picker(self, what)

    def apply_pick(self, what: str, value: str) -> None:
        if what == "entity":
            self.share(entity=value, start=None, end=None, compare=None)
        elif what == "partition":
            source, _, event_type = value.partition("/")
            # A source/type is a partition to list: the entity is picked in it next (e).
            self.share(source=source, event_type=event_type, entity=None, start=None, end=None)
        else:
            self.share(day=value, start=None, end=None, compare=None)
        self.notify(f"Context: {self.context.describe()}", title="Picked", markup=False)
        # The pane in view follows now; the others when they are shown.
        self.when_mounted(self.active_pane, lambda pane: pane.apply_context(self.context), mount=True)

    def action_filter(self) -> None:
        self.when_mounted(self.active_pane, lambda pane: pane.focus_filter(), mount=True)

    def action_refresh(self) -> None:
        if self.active_pane == "events":
            self.when_mounted("events", lambda pane: pane.refresh_listing())
        else:
            self.when_mounted(self.active_pane, lambda pane: pane.reload(), mount=True)

    def action_help(self) -> None:
        from pik_console.console.modals import HelpScreen

        self.push_screen(HelpScreen(help_sections(), self.read_only))

    def action_report(self) -> None:
        ctx = self.context
        if not (ctx.entity and ctx.day):
            self.notify("Pick an event first: the report is about one entity and day", severity="warning")
            return
        self._write_report(ctx.entity, ctx.day)

    @work(thread=True, exclusive=True, group="report", exit_on_error=False)
    def _write_report(self, entity: str, day: str) -> None:
        from pik_console.console.overview_pane import backend_options
        from pik_console.report import build_report, report_findings, report_path

        try:
            findings = report_findings(self.kit, entity, day, context=backend_options(self.kit))
            text = build_report(self.kit, entity, day, findings=findings)
            path = report_path(entity, day)
            path.write_text(text, encoding="utf-8")
        except Exception as exc:
            self.notify(f"Writing the report failed: {exc}", severity="error", markup=False)
            return
        self.reports.append(str(path))
        self.notify(f"Report written to {path}", title="Report", markup=False)

    # -- moving between panes -------------------------------------------------------------------------

    def open_event(self, entity: str, event_time: str, event_id: str | None = None) -> None:
        """Show ``entity``'s day of ``event_time`` in Events, at that time, the cursor on ``event_id``."""
        from pik_console.console.listings import EventFilter

        day = event_time[:10]
        self.context = self.context.with_event(entity, day, self.context.source or "", "")
        start, end = day_start(day), day_start(next_day(day))
        self.query_one(TabbedContent).active = "events"
        f = EventFilter(entity=entity, start=start, end=end)
        self.when_mounted(
            "events", lambda pane: self._list(pane, f, anchor=event_time, select_event=event_id)
        )

    def open_day(
        self, *, day: str, entity: str | None = None, source: str | None = None, event_type: str | None = None
    ) -> None:
        from pik_console.console.listings import EventFilter

        if entity is not None:
            f = EventFilter(entity=entity, start=day_start(day), end=day_start(next_day(day)))
        else:
            f = EventFilter(source=source, event_type=event_type, day=day)
        self.query_one(TabbedContent).active = "events"
        self.when_mounted("events", lambda pane: self._list(pane, f))

    def _list(self, pane: Any, f: Any, **where: Any) -> None:
        """Events lists ``f`` (``where``: anchor, select_event) and its list takes the keys."""
        pane.set_filter(f, **where)
        self.call_after_refresh(self.query_one("#event-list").focus)

    class EventFound(Message):
        def __init__(self, event_id: str, record: Any, error: str | None) -> None:
            super().__init__()
            self.event_id = event_id
            self.record = record
            self.error = error

    def open_event_id(self, event_id: str) -> None:
        """Find an event by id (in a worker) and show it in Events."""
        self._find_event(event_id)

    @work(thread=True, exclusive=True, group="find-event", exit_on_error=False)
    def _find_event(self, event_id: str) -> None:
        try:
            self.post_message(self.EventFound(event_id, self.kit.index.get_accepted(event_id), None))
        except Exception as exc:
            self.post_message(self.EventFound(event_id, None, str(exc)))

    @on(EventFound)
    def _event_found(self, message: EventFound) -> None:
        r = message.record
        if r is None:
            self.notify(
                f"Event {message.event_id[:16]} not found: {message.error or 'not in the index'}",
                severity="error",
                markup=False,
            )
            return
        self.open_event(r.entity_id, r.event_time, r.event_id)

    def versions_changed(self) -> None:
        """New aggregate versions were written: the Aggregates pane shows the newest pair when next shown
        (at once if it is)."""

        def follow(pane: Any) -> None:
            pane.invalidate()
            if self.active_pane == "aggregates":
                pane.apply_context(self.context)

        self.when_mounted("aggregates", follow)

    # -- pane actions by name (footer of the pane, palette, tests) ------------------------------------

    def action_events_jump(self) -> None:
        self.when_mounted("events", lambda pane: pane.action_jump())

    def action_events_first(self) -> None:
        self.when_mounted("events", lambda pane: pane.query_one("#event-list").action_first())

    def action_events_last(self) -> None:
        self.when_mounted("events", lambda pane: pane.query_one("#event-list").action_last())

    def action_lag_threshold(self, factor: float) -> None:
        self.when_mounted("lag", lambda pane: pane.action_threshold(factor), mount=True)

    def action_versions_step(self, step: int) -> None:
        self.when_mounted("aggregates", lambda pane: pane.action_step(step), mount=True)

    def action_versions_open_event(self) -> None:
        self.when_mounted("aggregates", lambda pane: pane.action_open_event(), mount=True)

    def action_replay_execute(self) -> None:
        self.when_mounted("replay", lambda pane: pane.action_execute(), mount=True)

    def action_replay_process(self) -> None:
        self.when_mounted("replay", lambda pane: pane.action_process(), mount=True)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if not self.ready and action not in ("quit", "pane", "back", "command_palette"):
            return None  # shown disabled until the backend is open (a key typed meanwhile waits for it)
        if action in ("replay_execute", "replay_process") and self.read_only:
            return None
        return True

    # -- the command palette ---------------------------------------------------------------------------

    async def run_actions(self, actions: str) -> None:
        """Run ``a;b;c`` in order (a palette entry may switch pane first)."""
        for action in actions.split(";"):
            await self.run_action(action)

    def _chosen(self, actions: str, title: str) -> None:
        """A palette entry chosen: run now, or wait for the backend as a key typed meanwhile does."""
        if not self.hold_actions(actions, title):
            self.call_later(self.run_actions, actions)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        for command in super().get_system_commands(screen):
            if command.title == "Screenshot":
                # Textual's saves to a downloads folder (and fails, "Failed to save screenshot", where there
                # is none): the console's saves in the current directory and says where, or why not.
                yield SystemCommand(
                    "Screenshot",
                    "Save an SVG of the screen in the current directory",
                    lambda: self.set_timer(0.1, self.action_screenshot),
                )
            else:
                yield command
        for title, help_text, action in palette_entries(self.read_only):
            yield SystemCommand(title, help_text, lambda a=action, t=title: self._chosen(a, t))
