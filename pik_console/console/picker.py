"""Pick, don't type: a list to choose an entity, a source/type or a day from, filtered as you type (k9s's
``/``). The choices are read in a worker when the list opens; enter picks, escape leaves.

The lists come from the rollups where the store keeps them (the local workspace's rollup tables; on AWS
the rollups' directory of the days, ``pik aws rollup-backfill``): the source/types with their totals and a
day's entities cost O(partitions x days) items, not a read of every receipt. Where there are none, a list
says how it was read instead (the source/types by a full read of the events table), under its title."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option

from backend.kit import Kit
from pik_console.console.context import Context, next_day
from pik_console.console.widgets import TypeAhead
from pik_console.text import safe

# At most this many choices are listed (the filter narrows the rest); at most this many receipts of a
# partition-day are read to list its entities.
SHOWN = 300
ENTITY_SCAN = 50_000


@dataclass(frozen=True)
class Choice:
    value: str
    label: str  # what is shown beside the value (counts)


@dataclass(frozen=True)
class Listing:
    """The choices of a list and, when they were not read the usual way, a note that says how."""

    choices: list[Choice]
    note: str = ""


class PickScreen(TypeAhead, ModalScreen[str | None]):
    """A filtered list of choices from ``load()`` (run in a thread); dismisses with the chosen value."""

    AUTO_FOCUS = "#pick-filter"
    TYPE_INTO = "#pick-filter"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="pick.cancel", tooltip="Choose nothing"),
        Binding("down", "to_list", "List", show=False, id="pick.list", tooltip="From the filter to the list"),
    ]

    class Loaded(Message):
        def __init__(self, listing: Listing | None, error: str | None) -> None:
            super().__init__()
            self.listing = listing
            self.error = error

    def __init__(self, title: str, load: Callable[[], Listing]) -> None:
        super().__init__()
        self.title_text = title
        self.load = load
        self.choices: list[Choice] = []
        self.note = ""
        self.loaded = False
        self.submit_when_loaded = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="modal-box", id="pick-box"):
            yield Static(Text(self.title_text, style="bold"), markup=False)
            note = Static("", id="pick-note", markup=False)
            note.display = False  # shown only for a list read another way than usual
            yield note
            yield Input(placeholder="type to filter", id="pick-filter", compact=True)
            yield OptionList(id="pick-list")
            yield Static(Text("reading…", style="italic dim"), id="pick-status", markup=False)

    def on_mount(self) -> None:
        self._read()

    @work(thread=True, exclusive=True, group="pick", exit_on_error=False)
    def _read(self) -> None:
        try:
            self.post_message(self.Loaded(self.load(), None))
        except Exception as exc:
            self.post_message(self.Loaded(None, str(exc)))

    @on(Loaded)
    def _loaded(self, message: Loaded) -> None:
        if message.listing is None:
            self.query_one("#pick-status", Static).update(
                Text(f"Reading failed: {message.error}", style="red")
            )
            return
        self.choices = message.listing.choices
        self.note = message.listing.note
        note = self.query_one("#pick-note", Static)
        note.update(Text(message.listing.note, style="yellow"))
        note.display = bool(message.listing.note)
        self.loaded = True
        self._show(self.query_one("#pick-filter", Input).value)
        if self.submit_when_loaded:
            self._submitted()

    @on(Input.Changed, "#pick-filter")
    def _filter(self, event: Input.Changed) -> None:
        self._show(event.value)

    def matching(self, text: str) -> list[Choice]:
        needle = text.strip().lower()
        return [c for c in self.choices if needle in c.value.lower()] if needle else list(self.choices)

    def _show(self, text: str) -> None:
        found = self.matching(text)
        options = self.query_one("#pick-list", OptionList)
        options.clear_options()
        width = max((len(safe(c.value, 60)) for c in found[:SHOWN]), default=0)
        for c in found[:SHOWN]:
            line = Text(safe(c.value, 60).ljust(width + 2))
            line.append(c.label, style="dim")
            options.add_option(Option(line, id=c.value))
        if found:
            options.highlighted = 0
        more = f" (the first {SHOWN:,} shown: type to narrow)" if len(found) > SHOWN else ""
        status = f"{len(found):,} of {len(self.choices):,}{more} · enter picks · escape leaves"
        self.query_one("#pick-status", Static).update(Text(status, style="dim"))

    @on(Input.Submitted, "#pick-filter")
    def _submitted(self) -> None:
        if not self.loaded:
            self.submit_when_loaded = True  # enter typed before the choices were read: pick once they are
            self.hold_keys()
            return
        options = self.query_one("#pick-list", OptionList)
        if options.highlighted is None or not options.option_count:
            self.notify("Nothing matches: change the filter", severity="warning")
            self.release_held()
            return
        self.dismiss(options.get_option_at_index(options.highlighted).id)

    @on(OptionList.OptionSelected, "#pick-list")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(event.option.id)

    def action_to_list(self) -> None:
        self.query_one("#pick-list", OptionList).focus()

    def action_cancel(self) -> None:
        self.dismiss(None)


# -- what there is to pick from ---------------------------------------------------------------------------


NO_ROLLUPS = "This store keeps no rollup directory (on AWS: pik aws rollup-backfill)"


def partition_choices(kit: Kit) -> Listing:
    """Every source/type, the busiest first: from the rollups (O(partitions x days)), else from the index
    totals (a read of every receipt), with a note saying so."""
    totals = kit.overview_index.partition_totals() if kit.overview_index is not None else None
    note = ""
    if totals is None:
        totals = kit.index.stats().partitions
        note = f"{NO_ROLLUPS}: counted by reading every receipt."
    parts = sorted(totals, key=lambda p: (-(p.accepted + p.duplicate), p.source, p.event_type))
    return Listing(
        [
            Choice(f"{p.source}/{p.event_type}", f"{p.accepted:,} events · {p.duplicate:,} duplicates")
            for p in parts
        ],
        note,
    )


def entity_choices(kit: Kit, ctx: Context) -> Listing:
    """The entities of the source/type and day in focus, the busiest first (one scan of that partition-day,
    bounded by ENTITY_SCAN receipts); with a day but no source/type, the day's entities of every
    source/type, from the rollups."""
    if ctx.day and not (ctx.source and ctx.event_type):
        rows = kit.overview_index.day_entities(ctx.day) if kit.overview_index is not None else None
        if rows is None:
            raise LookupError(f"{NO_ROLLUPS}: choose a source/type (s) to list the entities of its day")
        return Listing(
            [
                Choice(r.entity_id, f"{r.accepted:,} events on {ctx.day} · {r.late:,} late")
                for r in sorted(rows, key=lambda r: (-r.accepted, r.entity_id))
            ]
        )
    if not (ctx.source and ctx.event_type and ctx.day):
        raise LookupError("choose a source/type (s) and a day (d) first: their entities are listed")
    counts: Counter[str] = Counter()
    after: str | None = None
    read = 0
    while read < ENTITY_SCAN:
        page = kit.investigate.scan_partition(ctx.source, ctx.event_type, ctx.day, limit=5000, after=after)
        counts.update(r.entity_id for r in page.items)
        read += len(page.items)
        after = page.next_cursor
        if after is None:
            break
    cut = " (first 50,000 receipts)" if after is not None else ""
    return Listing(
        [
            Choice(entity, f"{n:,} receipts on {ctx.day}{cut}")
            for entity, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]
    )


def day_choices(kit: Kit, ctx: Context, first_day: str, end_day: str) -> Listing:
    """The days with events of the entity (or else the source/type) in focus, newest first, with counts."""
    investigate: Any = kit.investigate
    if ctx.entity:
        counts = investigate.day_counts_entity(ctx.entity, first_day, end_day, grace_ms=3_600_000)
        whose = ctx.entity
    elif ctx.source and ctx.event_type:
        counts = investigate.day_counts_partition(
            ctx.source, ctx.event_type, first_day, end_day, grace_ms=3_600_000
        )
        whose = f"{ctx.source}/{ctx.event_type}"
    else:
        raise LookupError("choose an entity (e) or a source/type (s) first: their days are listed")
    return Listing(
        [
            Choice(c.day, f"{c.accepted:,} events of {whose} · {c.late:,} late · {c.duplicate:,} duplicates")
            for c in sorted(counts, key=lambda c: c.day, reverse=True)
        ]
    )


def day_range(ctx: Context, span_days: int = 62) -> tuple[str, str]:
    """The days to list: the workspace's first to last day when known, else two months up to the day."""
    from pik_console.console.context import add_days

    last = ctx.last_day or ctx.day
    if last is None:
        raise LookupError("no day is known yet: pick a source/type (s) first")
    first = ctx.first_day or add_days(last, -span_days)
    return first, next_day(last)


def open_picker(app: Any, what: str) -> None:
    """The list for ``e`` (entity), ``s`` (source/type) or ``d`` (day) over ``app``'s context; the choice
    goes to ``app.apply_pick``."""
    ctx = app.context
    try:
        if what == "entity":
            if not ctx.day:
                raise LookupError("Choose a source/type (s) and a day (d) first: their entities are listed")
            title = (
                f"Entities of {ctx.source}/{ctx.event_type} on {ctx.day}"
                if ctx.source and ctx.event_type
                else f"Entities on {ctx.day}, every source/type"
            )
            load = partial(entity_choices, app.kit, ctx)
        elif what == "partition":
            title, load = "Sources/types, the busiest first", partial(partition_choices, app.kit)
        else:
            first, end = day_range(ctx)
            whose = ctx.entity or (f"{ctx.source}/{ctx.event_type}" if ctx.source else None)
            if whose is None:
                raise LookupError("Choose an entity (e) or a source/type (s) first: their days are listed")
            title = f"Days of {whose}, the newest first"
            load = partial(day_choices, app.kit, ctx, first, end)
    except LookupError as exc:
        app.notify(str(exc).capitalize(), severity="warning", markup=False)
        return

    def picked(value: str | None) -> None:
        if value is not None:
            app.apply_pick(what, value)

    app.push_screen(PickScreen(safe(title, 70), load), picked)
