"""Small screens: help, jump to a time, and the typed confirmation of a replay."""

from __future__ import annotations

from typing import Any, ClassVar

from rich.table import Table
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Static

from backend.model import ReplayPlan
from backend.services.projection import delta_text, version_text
from backend.times import TimeFormatError, fmt, parse_bound
from pik_console.console.render import fields, t
from pik_console.console.widgets import TypeAhead

HELP_INTRO = (
    "pik console: find the entity and the day, see what arrived late or twice, preview a replay of "
    "exactly that window, run it, and step through the aggregate versions until you can say why the "
    "number changed. Keys by pane:"
)


class HelpScreen(ModalScreen[None]):
    """``?``: every key of every pane, and what it does."""

    AUTO_FOCUS = "*"  # the app's is its event list
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close", tooltip="Close the help")
    ]

    def __init__(self, sections: list[tuple[str, list[tuple[str, str]]]], read_only: bool) -> None:
        super().__init__()
        self.sections = sections
        self.read_only = read_only

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for name, keys in self.sections:
            table.add_row(Text(""), Text(""))
            table.add_row(Text(name, style="bold underline"), Text(""))
            for key, what in keys:
                table.add_row(Text(key), Text(what))
        note = (
            Text("READ-ONLY: replay execution and the processor are disabled.", style="bold yellow")
            if self.read_only
            else Text("")
        )
        with VerticalScroll(id="help-box", classes="modal-box"):
            yield Static(Text(HELP_INTRO), markup=False)
            yield Static(note, markup=False)
            yield Static(table, markup=False)
            yield Static(Text("escape closes this help", style="dim"), markup=False)


class JumpScreen(TypeAhead, ModalScreen[str | None]):
    """``:``: a time to jump to in the listed window (a date or an ISO time, UTC)."""

    TYPE_INTO = "#jump-input"

    AUTO_FOCUS = "*"  # the app's is its event list
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="jump.cancel", tooltip="Stay where you are")
    ]

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="jump-box"):
            yield Static(Text("Jump to a time (date or ISO time, UTC):"), markup=False)
            yield Input(placeholder="2025-12-24T09:00", id="jump-input")
            yield Static("", id="jump-error", markup=False)

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        try:
            when = fmt(parse_bound(event.value, what="time"))
        except TimeFormatError as exc:
            self.query_one("#jump-error", Static).update(t(str(exc), "red"))
            self.release_held()
            return
        self.dismiss(when)

    def action_cancel(self) -> None:
        self.dismiss(None)


def scope_phrase(plan: ReplayPlan) -> str:
    """What the user types to confirm a large replay: the entity id, or ``source/type``."""
    r = plan.request
    return r.entity_id if r.entity_id is not None else f"{r.source}/{r.event_type}"


PROJECTED_ROWS = 8


def projection_view(plan: ReplayPlan) -> Table:
    """The what-if beside the blast radius: the new versions a processor run would write (the first few),
    and how many windows were projected."""
    changing = [p for p in plan.projected if p.new_version]
    table = Table(box=None, padding=(0, 1), header_style="bold", show_edge=False)
    rest = f", {plan.windows_not_projected:,} more not projected" if plan.windows_not_projected else ""
    table.title = Text(
        f"Once processed: {len(changing):,} new versions "
        f"({plan.windows_projected or 0:,} of {plan.windows:,} windows projected{rest})",
        style="bold cyan",
    )
    table.title_justify = "left"
    for column in ("ENTITY", "DAY", "METRIC", "NOW", "PROJECTED", "DELTA"):
        table.add_column(column, justify="right" if column == "DELTA" else "left")
    for p in changing[:PROJECTED_ROWS]:
        table.add_row(
            t(p.entity_id, limit=24),
            t(p.day),
            t(p.metric, limit=24),
            t(version_text(p.current_version, p.current_value)),
            t(version_text(p.projected_version, p.projected_value)),
            t(delta_text(p)),
        )
    if not changing:
        table.add_row(Text("no new version: the current versions stay", style="dim"), *[""] * 5)
    if len(changing) > PROJECTED_ROWS:
        table.add_row(Text(f"… {len(changing) - PROJECTED_ROWS:,} more", style="dim"), *[""] * 5)
    return table


class ConfirmReplay(TypeAhead, ModalScreen[bool]):
    """The impact of a replay, and a confirmation. Above the size guard the user must type the entity
    (or ``source/type``) before Execute is enabled: the typed confirmation k9s users asked for."""

    AUTO_FOCUS = "*"  # the app's is its event list
    TYPE_INTO = "#confirm-input"  # above the size guard: the scope typed (none below it)
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="confirm.cancel", tooltip="Send nothing")
    ]

    def __init__(self, plan: ReplayPlan, *, typed: bool) -> None:
        super().__init__()
        self.plan = plan
        self.typed = typed
        self.phrase = scope_phrase(plan)
        self.TYPE_INTO = "#confirm-input" if typed else ""

    def compose(self) -> ComposeResult:
        p = self.plan
        impact: list[tuple[str, Any]] = [
            ("messages to send", Text(f"{p.would_send:,}", style="bold")),
            ("entities", f"{p.entities:,}"),
            ("aggregate windows", f"{p.windows:,}"),
            (
                "windows with versions",
                "unknown" if p.windows_with_versions is None else f"{p.windows_with_versions:,}",
            ),
            ("event days", ", ".join(p.by_day) if len(p.by_day) <= 6 else f"{len(p.by_day)} days"),
            ("first .. last", f"{p.first_event_time or '-'} .. {p.last_event_time or '-'}"),
            ("skipped", f"{p.skipped.duplicate:,} duplicates, {p.skipped.missing_raw:,} without raw bytes, "
             f"{p.skipped.over_limit:,} over the limit"),
            ("plan fingerprint", p.fingerprint[:16]),
        ]  # fmt: skip
        with Vertical(classes="modal-box", id="confirm-box"):
            yield Static(Text("Execute this replay?", style="bold"), markup=False)
            yield Static(fields(impact), markup=False)
            if p.windows_projected is not None:
                yield Static(projection_view(p), markup=False, id="confirm-projection")
            yield Static(
                Text(
                    "Replay sends messages to the replay queue; the processor then recomputes the windows "
                    "above and may append aggregate versions. Events and raw bytes are never changed.",
                    style="dim",
                ),
                markup=False,
            )
            if self.typed:
                message = Text(f"{p.would_send:,} messages is above the size guard. Type ")
                message.append(self.phrase, style="bold")
                message.append(" to confirm:")
                yield Static(message, markup=False, id="confirm-prompt")
                yield Input(placeholder=self.phrase, id="confirm-input")
            with Horizontal(id="confirm-buttons"):
                yield Button("Execute", variant="error", id="confirm-execute", disabled=self.typed)
                yield Button("Cancel", variant="default", id="confirm-cancel")

    def on_mount(self) -> None:
        if self.typed:
            self.query_one("#confirm-input", Input).focus()
        else:
            self.query_one("#confirm-cancel", Button).focus()

    @on(Input.Changed, "#confirm-input")
    def _typed(self, event: Input.Changed) -> None:
        self.query_one("#confirm-execute", Button).disabled = event.value.strip() != self.phrase

    @on(Input.Submitted, "#confirm-input")
    def _submitted(self, event: Input.Submitted) -> None:
        if event.value.strip() == self.phrase:
            self.dismiss(True)
            return
        typed = event.value.strip()
        self.notify(
            f"Type {self.phrase} exactly to send this replay"
            + (f" (you typed {typed})" if typed else "")
            + "; escape sends nothing",
            severity="warning",
            markup=False,
        )
        self.release_held()

    @on(Button.Pressed, "#confirm-execute")
    def _execute(self) -> None:
        if not self.typed or self.query_one("#confirm-input", Input).value.strip() == self.phrase:
            self.dismiss(True)

    @on(Button.Pressed, "#confirm-cancel")
    def _cancel(self) -> None:
        self.dismiss(False)

    def action_cancel(self) -> None:
        self.dismiss(False)
