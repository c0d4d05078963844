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
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.css.query import NoMatches
from textual.message import Message
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Footer, Static, TabbedContent, TabPane

from backend.kit import Kit
from backend.ports import IndexStats
from pik_console.console.context import Context, day_start, next_day
from pik_console.console.event_list import EventList
from pik_console.console.keys import COMMAND_KEYS, KEY_NAMES, PANE_KEYS, help_sections, palette_entries
from pik_console.console.widgets import TypeAhead
from pik_console.text import safe

PANES = ("overview", "events", "lag", "gaps", "replay", "aggregates")


class ConsoleHeader(Horizontal):
    """The backend (workspace path, or region and stack), the context, and the READ-ONLY badge."""

    def compose(self) -> ComposeResult:
        yield Static("", id="header-title", markup=False)
        yield Static("", id="header-context", markup=False)
        yield Static(Text(" READ-ONLY ", style="bold"), id="header-badge", markup=False)

    def show(self, kit: Kit, context: Context, width: int = 160) -> None:
        narrow = width < NARROW
        described = safe(context.describe(short=narrow), 120)
        title = Text("" if narrow else " pik console ", style="bold")
        title.append(f" {kit.name} · ", style="dim")
        # The location keeps its end (the folder's name, the stack) when the line is short.
        room = width - (len(described) + 2) - len(title) - (11 if kit.read_only else 0) - 1
        location = safe(kit.location, 200)
        if len(location) > room:
            location = "…" + location[-(room - 1) :] if room >= 8 else ""
        title.append(location)
        self.query_one("#header-title", Static).update(title)
        self.query_one("#header-context", Static).update(Text(described))
        self.query_one("#header-badge", Static).display = kit.read_only


# Below this many columns the console is laid out for a small terminal (80x24): stacked panes, compact
# forms, the event detail on enter instead of beside the list.
NARROW = 110

# How many times (0.05 s apart) q waits for a pane being mounted before quitting anyway.
QUIT_WAITS = 40

# Refreshes to wait for a pane to mount before giving up on focusing it (it mounts after one or two).
PANE_MOUNT_TRIES = 50


class PikConsole(App[None]):
    """The investigation console over an opened backend."""

    CSS_PATH = Path(__file__).with_name("console.tcss")
    TITLE = "pik console"
    ENABLE_COMMAND_PALETTE = True
    # The first focus is the event list, never a form field or the tab bar: keys typed in a burst as the
    # console starts go to the list and the app's keys, not into a field or nowhere.
    AUTO_FOCUS = "#event-list"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("question_mark", "help", "Help", tooltip="Every key, pane by pane", id="app.help"),
        Binding("slash", "filter", "Filter", tooltip="Edit the filter or form of this pane", id="app.filter"),
        # The tabs show the pane keys ("1 Events" …): the footer keeps its room for the pane's own keys.
        Binding(
            "0",
            "pane('overview')",
            "Overview",
            show=False,
            tooltip="What is wrong here, ranked",
            id="app.pane.overview",
        ),
        Binding(
            "1", "pane('events')", "Events", show=False, tooltip="Browse events by page", id="app.pane.events"
        ),
        Binding("2", "pane('lag')", "Lag", show=False, tooltip="Lag of a source/type/day", id="app.pane.lag"),
        Binding(
            "3",
            "pane('gaps')",
            "Gaps",
            show=False,
            tooltip="Events per day; missing days",
            id="app.pane.gaps",
        ),
        Binding(
            "4",
            "pane('replay')",
            "Replay",
            show=False,
            tooltip="Preview and run a replay",
            id="app.pane.replay",
        ),
        Binding(
            "5",
            "pane('aggregates')",
            "Aggregates",
            show=False,
            tooltip="Aggregate versions and diffs",
            id="app.pane.aggregates",
        ),
        Binding(
            "e",
            "pick('entity')",
            "Entity",
            tooltip="Pick an entity of the source/type and day",
            id="app.pick.entity",
        ),
        Binding("s", "pick('partition')", "Source", tooltip="Pick a source/type", id="app.pick.partition"),
        Binding(
            "d", "pick('day')", "Day", tooltip="Pick a day of the entity or source/type", id="app.pick.day"
        ),
        Binding("r", "refresh", "Refresh", show=False, tooltip="Read this pane again", id="app.refresh"),
        Binding(
            "w",
            "report",
            "Report",
            tooltip="Write a Markdown incident report of the entity and day",
            id="app.report",
        ),
        Binding("q", "quit", "Quit", tooltip="Leave the console (stops running work first)", id="app.quit"),
        Binding(
            "escape",
            "back",
            "Back",
            show=False,
            tooltip="Leave the field: back to the pane's list",
            id="app.back",
        ),
        # A pane's command key pressed where it means nothing (another pane, read-only, nothing to act on)
        # reaches these last: they say why instead of doing nothing.
        *(
            Binding(
                key,
                f"refused('{key}')",
                show=False,
                tooltip=f"{what}: says why it cannot be done here",
                id=f"app.refused.{key}",
            )
            for key, (_, what) in COMMAND_KEYS.items()
        ),
    ]

    context: reactive[Context] = reactive(Context, init=False)

    class StatsRead(Message):
        def __init__(self, stats: IndexStats | None, error: str | None) -> None:
            super().__init__()
            self.stats = stats
            self.error = error

    def __init__(
        self,
        kit: Kit,
        *,
        context: Context | None = None,
    ) -> None:
        super().__init__()
        self.kit = kit
        self._initial = context or Context()
        self.stats: IndexStats | None = None
        self.reports: list[str] = []
        self._quitting = False
        self._quit_waits = 0
        self._mounting: set[str] = {"events"}
        self._wanted_pane = ""  # the pane the last pane key asked for (action_pane)

    # -- layout --------------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        from pik_console.console.events_pane import EventsPane

        yield ConsoleHeader(id="header")
        # Only Events is composed for the first frame; each other pane is imported and mounted the first time
        # it is shown (``mount_pane``), so the first screen costs one pane, not six. With nothing chosen
        # the console opens on the Overview (what is wrong here, ranked); with an entity or a partition on
        # Events.
        with TabbedContent(initial=self._first_pane(), id="panes"):
            yield TabPane(f"{PANE_KEYS['overview']} Overview", id="overview")
            with TabPane("1 Events", id="events"):
                yield EventsPane(id="events-pane")
            for name in PANES[2:]:
                yield TabPane(f"{PANE_KEYS[name]} {name.title()}", id=name)
        yield Footer()

    def on_mount(self) -> None:
        self.set_reactive(PikConsole.context, self._initial)
        self._fit()
        self.pane("events").apply_context(self.context)
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

    def share(self, **changes: Any) -> Context:
        """A pane sets part of the context (what its form or cursor now shows): the header follows at once,
        and every other pane the next time it is shown. Returns the context, for the pane to mark applied."""
        ctx = replace(self.context, **changes)
        if ctx != self.context:
            self.context = ctx
        return ctx

    def _show_header(self) -> None:
        self.query_one(ConsoleHeader).show(self.kit, self.context, self.size.width)

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
            self.pane("events").apply_context(ctx)
        else:
            self.context = ctx

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        name = event.pane.id or ""
        if name in PANES:
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
        if name in self._mounting:
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
        Without ``mount``, a pane never shown is left alone (it reads everything fresh when first shown)."""
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
        """Escape: out of any field, back to the pane's list (k9s, lazygit)."""
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
            self.pane("events").refresh_listing()
        else:
            self.when_mounted(self.active_pane, lambda pane: pane.reload(), mount=True)

    def action_help(self) -> None:
        from pik_console.console.modals import HelpScreen

        self.push_screen(HelpScreen(help_sections(), self.kit.read_only))

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
        pane = self.pane("events")
        pane.set_filter(
            EventFilter(entity=entity, start=start, end=end), anchor=event_time, select_event=event_id
        )
        self.call_after_refresh(self.query_one("#event-list").focus)

    def open_day(
        self, *, day: str, entity: str | None = None, source: str | None = None, event_type: str | None = None
    ) -> None:
        from pik_console.console.listings import EventFilter

        if entity is not None:
            f = EventFilter(entity=entity, start=day_start(day), end=day_start(next_day(day)))
        else:
            f = EventFilter(source=source, event_type=event_type, day=day)
        self.query_one(TabbedContent).active = "events"
        self.pane("events").set_filter(f)
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
        self.pane("events").action_jump()

    def action_events_first(self) -> None:
        self.query_one("#event-list", EventList).action_first()

    def action_events_last(self) -> None:
        self.query_one("#event-list", EventList).action_last()

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
        if action in ("replay_execute", "replay_process") and self.kit.read_only:
            return None
        return True

    # -- the command palette ---------------------------------------------------------------------------

    async def run_actions(self, actions: str) -> None:
        """Run ``a;b;c`` in order (a palette entry may switch pane first)."""
        for action in actions.split(";"):
            await self.run_action(action)

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        for title, help_text, action in palette_entries(self.kit.read_only):
            yield SystemCommand(title, help_text, lambda a=action: self.call_later(self.run_actions, a))
