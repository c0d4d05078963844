"""The Events pane: a filter bar, the event list (read by page as you move) and the detail of the event
under the cursor: its fields, every receipt of a duplicated event, and the raw JSON; for a rejection, the
reason and the quarantined bytes."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rich.table import Table
from rich.text import Text
from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.timer import Timer
from textual.widgets import Input, Select, Static

from backend.model import EventRecord, IngestStatus, Rejection
from backend.services.receipts import ordinal_of, ordinals_among
from backend.times import TimeFormatError, fmt, human_ms, parse_bound, parse_day
from pik_console.console.context import Context, day_start, next_day
from pik_console.console.event_list import EventList, column_header
from pik_console.console.listings import ANCHOR_START, EventFilter, Listing
from pik_console.console.render import fields, group, hexdump, json_text, t, title
from pik_console.console.widgets import FormSelect, focus_now
from pik_console.text import preview

if TYPE_CHECKING:
    from pik_console.console.app import PikConsole

STATUS_CHOICES = [
    ("any status", ""),
    ("ACCEPTED", IngestStatus.ACCEPTED.value),
    ("DUPLICATE", IngestStatus.DUPLICATE.value),
    ("REJECTED", IngestStatus.REJECTED.value),
]


class FilterError(ValueError):
    pass


def _bound(text: str, what: str) -> str | None:
    text = text.strip()
    if not text:
        return None
    try:
        return fmt(parse_bound(text, what=what))
    except TimeFormatError as exc:
        raise FilterError(str(exc)) from None


class EventsPane(Vertical):
    """Browse events: ``/`` filters, ``:`` jumps to a time, Home/End go to the first or last event."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(":", "jump", "Jump", tooltip="Jump to a time in the window (k9s-style)", id="events.jump"),
        Binding("y", "copy", "Copy", tooltip="Copy the event id (y) or its JSON (Y)", id="events.copy"),
        Binding(
            "Y",
            "copy_json",
            "Copy JSON",
            show=False,
            tooltip="Copy the event's raw JSON",
            id="events.copy_json",
        ),
    ]

    class DetailReady(Message):
        def __init__(self, key: str, body: Any) -> None:
            super().__init__()
            self.key = key
            self.body = body

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._detail_timer: Timer | None = None
        self._detail_key: str | None = None
        self.current: EventFilter | None = None

    @property
    def console_app(self) -> PikConsole:
        return cast("PikConsole", self.app)

    def compose(self) -> ComposeResult:
        with Horizontal(id="events-filter", classes="filter-bar"):
            yield Input(placeholder="entity", id="f-entity", tooltip="An entity id: lists its window")
            yield Input(placeholder="from", id="f-start", tooltip="Window start (date or ISO time, UTC)")
            yield Input(placeholder="to", id="f-end", tooltip="Window end, exclusive")
            yield Input(placeholder="source", id="f-source")
            yield Input(placeholder="type", id="f-type", tooltip="Event type")
            yield Input(
                placeholder="day", id="f-day", tooltip="Without an entity: the day of a source/type partition"
            )
            yield FormSelect(STATUS_CHOICES, id="f-status", allow_blank=False, value="")
        yield Static(column_header(False), id="events-columns", markup=False)
        with Horizontal(id="events-body"):
            with Vertical(id="events-left"):
                yield EventList(id="event-list")
                yield Static("", id="events-status", markup=False)
            with VerticalScroll(id="events-detail-scroll"):
                yield Static("", id="event-detail", markup=False)

    def on_mount(self) -> None:
        self.query_one(EventList).index = self.console_app.kit.index

    # -- the filter ------------------------------------------------------------------------------------

    def set_filter(self, f: EventFilter, anchor: str = ANCHOR_START, select_event: str | None = None) -> None:
        """Fill the filter bar with ``f`` and list it."""
        values = {
            "f-entity": f.entity,
            "f-start": f.start,
            "f-end": f.end,
            "f-source": f.source,
            "f-type": f.event_type,
            "f-day": f.day,
        }
        for widget_id, value in values.items():
            self.query_one(f"#{widget_id}", Input).value = value or ""
        with self.prevent(Select.Changed):
            self.query_one("#f-status", Select).value = f.status.value if f.status else ""
        self._list(f, anchor, select_event)

    def read_filter(self) -> EventFilter:
        def value(widget_id: str) -> str | None:
            return self.query_one(f"#{widget_id}", Input).value.strip() or None

        status_value = self.query_one("#f-status", Select).value
        status = IngestStatus(status_value) if isinstance(status_value, str) and status_value else None
        day = value("f-day")
        if day is not None:
            try:
                parse_day(day)
            except TimeFormatError as exc:
                raise FilterError(str(exc)) from None
        entity = value("f-entity")
        start = _bound(value("f-start") or "", "from")
        end = _bound(value("f-end") or "", "to")
        if entity is not None and day is not None and not (start or end):
            start, end = day_start(day), day_start(next_day(day))
        if start and end and start >= end:
            raise FilterError("the window is empty: 'from' must be before 'to' (the end is exclusive)")
        return EventFilter(
            entity=entity,
            start=start,
            end=end,
            source=value("f-source"),
            event_type=value("f-type"),
            day=day if entity is None else None,
            status=status,
        )

    @on(Input.Submitted, ".filter-bar Input")
    def _submitted(self) -> None:
        self.apply_filter()
        self.call_after_refresh(self.query_one(EventList).focus)

    @on(Select.Changed, "#f-status")
    def _status_changed(self) -> None:
        self.apply_filter()

    def apply_filter(self) -> None:
        try:
            f = self.read_filter()
        except FilterError as exc:
            self.notify(str(exc), title="Filter", severity="warning", markup=False)
            return
        self._list(f)

    def _list(self, f: EventFilter, anchor: str = ANCHOR_START, select_event: str | None = None) -> None:
        problem = f.problem()
        self.current = f
        self.query_one("#events-columns", Static).update(column_header(f.rejections))
        event_list = self.query_one(EventList)
        if problem is not None:
            event_list.show(None)
            self._status(Text(problem, style="yellow"))
            return
        event_list.show(Listing(f, anchor, select_event))

    def refresh_listing(self) -> None:
        event_list = self.query_one(EventList)
        if event_list.listing is not None:
            event_list.show(event_list.listing)

    def jump_to(self, when: str) -> None:
        event_list = self.query_one(EventList)
        if event_list.listing is None or event_list.listing.filter.entity is None:
            self.notify("A jump to a time needs an entity window", severity="warning")
            return
        event_list.show(event_list.listing.at(when))
        self.call_after_refresh(event_list.focus)

    def action_jump(self) -> None:
        from pik_console.console.modals import JumpScreen

        def done(when: str | None) -> None:
            if when:
                self.jump_to(when)

        self.app.push_screen(JumpScreen(), done)

    # -- copy (OSC 52: the terminal's clipboard, over ssh too) ----------------------------------------

    def action_copy(self) -> None:
        item = self.query_one(EventList).item
        if item is None:
            self.notify("Nothing to copy: no event is selected", severity="warning")
            return
        if isinstance(item, Rejection):
            self.app.copy_to_clipboard(item.sha256)
            self.notify(
                f"Copied the rejected input's sha256 {item.sha256[:16]}…", title="Copied", markup=False
            )
            return
        self.app.copy_to_clipboard(item.event_id)
        self.notify(f"Copied the event id {item.event_id}", title="Copied", markup=False)

    def action_copy_json(self) -> None:
        item = self.query_one(EventList).item
        if item is None:
            self.notify("Nothing to copy: no event is selected", severity="warning")
            return
        if isinstance(item, Rejection):
            self._copied(item.data.decode("utf-8", "replace"), "the rejected bytes", None)
            return
        self._copy_raw(item)

    @work(thread=True, exclusive=True, group="event-copy", exit_on_error=False)
    def _copy_raw(self, item: EventRecord) -> None:
        try:
            raw = self.console_app.kit.raw.get(item.s3_key)
            if raw is None:
                raise LookupError(f"no raw bytes are stored under {item.s3_key}")
            self.app.call_from_thread(self._copied, raw.decode("utf-8", "replace"), "the event's JSON", None)
        except Exception as exc:
            self.app.call_from_thread(self._copied, None, "the event's JSON", str(exc))

    def _copied(self, text: str | None, what: str, error: str | None) -> None:
        if text is None:
            self.notify(f"Copying {what} failed: {error}", severity="error", markup=False)
            return
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied {what} ({len(text):,} characters)", title="Copied", markup=False)

    def refusal(self, key: str) -> str | None:
        if key == "colon":
            return "Jump to a time needs an entity's window: pick an event or filter by entity (/)"
        return None

    def focus_main(self) -> None:
        focus_now(self.query_one(EventList))

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        # On a small terminal the detail takes the list's place while it has the focus (enter; escape).
        self.set_class(event.widget.id == "events-detail-scroll", "-detail-open")

    def focus_filter(self) -> None:
        self.query_one("#f-entity", Input).focus()

    # -- list feedback -------------------------------------------------------------------------------

    def _status(self, text: Text) -> None:
        self.query_one("#events-status", Static).update(text)

    @on(EventList.Progress)
    def _progress(self, message: EventList.Progress) -> None:
        lst = message.event_list
        rows = lst.rows
        if lst.listing is None:
            return
        text = Text(end="")
        text.append(t(lst.listing.filter.describe(), "bold"))
        known = f"{rows.total:,}" if rows.complete else f"{rows.total:,}+"
        text.append(f"  ·  {known} rows read")
        if rows.total:
            text.append(f"  ·  {position_text(lst.cursor, rows.total, rows.at_start, rows.at_end)}")
        if not rows.complete:
            text.append("  ·  more as you scroll (End: the last rows)", style="dim")
        if rows.pages_read:
            text.append(f"  ·  {rows.pages_read} pages read", style="dim")
        if lst.reading:
            text.append("  ·  reading…", style="italic")
        if lst.last_error:
            text.append("  ·  ")
            text.append(t(lst.last_error, "red", 120))
        self._status(text)

    @on(EventList.Highlighted)
    def _highlighted(self, message: EventList.Highlighted) -> None:
        item = message.item
        self._progress(EventList.Progress(self.query_one(EventList)))
        if isinstance(item, EventRecord) and self.console_app.active_pane == "events":
            # In an entity's window the context follows the cursor; in a partition (many entities) it
            # keeps the partition, until an event is picked with enter. (Not while another pane is shown:
            # a listing finishing behind it must not undo what was picked there.)
            in_partition = self.current is not None and self.current.partition
            self._pick(item, with_entity=not in_partition)
        if self._detail_timer is not None:
            self._detail_timer.stop()
        # Short pause: holding a key down must not read the raw bytes of every row it passes.
        self._detail_timer = self.set_timer(0.08, lambda: self._load_detail(item))

    def _load_detail(self, item: EventRecord | Rejection) -> None:
        self._detail_key = _key(item)
        if isinstance(item, Rejection):
            self.query_one("#event-detail", Static).update(rejection_detail(item))
            return
        self.query_one("#event-detail", Static).update(event_detail(item, None, None, loading=True))
        self._read_detail(item)

    @work(thread=True, exclusive=True, group="event-detail", exit_on_error=False)
    def _read_detail(self, item: EventRecord) -> None:
        kit = self.console_app.kit
        try:
            raw = kit.raw.get(item.s3_key)
            receipts = kit.index.receipts(item.event_id)
            body: Any = event_detail(item, raw, receipts)
        except Exception as exc:
            body = group(event_detail(item, None, None), Text(f"\nReading the detail failed: {exc}", "red"))
        self.post_message(self.DetailReady(_key(item), body))

    @on(DetailReady)
    def _detail_ready(self, message: DetailReady) -> None:
        if message.key == self._detail_key:
            self.query_one("#event-detail", Static).update(message.body)

    def _pick(self, item: EventRecord, *, with_entity: bool) -> None:
        ctx = self.console_app.context
        entity = item.entity_id if with_entity else None
        if (ctx.entity, ctx.day, ctx.source, ctx.event_type) != (
            entity,
            item.day,
            item.source,
            item.event_type,
        ):
            picked = ctx.with_event(item.entity_id, item.day, item.source, item.event_type)
            self.console_app.context = picked if with_entity else replace(picked, entity=None)

    @on(EventList.Selected)
    def _selected(self, message: EventList.Selected) -> None:
        if isinstance(message.item, EventRecord):
            self._pick(message.item, with_entity=True)
        self.query_one("#events-detail-scroll").focus()

    def apply_context(self, ctx: Context) -> None:
        """Show the context's entity and day (or partition), unless it is what is listed already."""
        if ctx.entity and ctx.window:
            start, end = ctx.window
            f = EventFilter(entity=ctx.entity, start=start, end=end)
        elif ctx.source and ctx.event_type and ctx.day:
            f = EventFilter(source=ctx.source, event_type=ctx.event_type, day=ctx.day)
        else:
            if self.current is None:
                self._status(
                    Text(
                        "Nothing chosen yet: s picks a source/type, d a day, e an entity "
                        "(or / to type a filter)",
                        style="bold yellow",
                    )
                )
            return
        if self.current is None or (self.current.entity, self.current.start, self.current.day) != (
            f.entity,
            f.start,
            f.day,
        ):
            self.set_filter(f)


def position_text(cursor: int, total: int, at_start: bool, at_end: bool) -> str:
    """Where the cursor is, counted from the end the rows were read from: after End on a window of 300,000
    events only the last rows are read, so "row 200" would be wrong; it is "the last row" there."""
    if at_start or not at_end:
        return f"row {cursor + 1:,}"
    from_end = total - cursor - 1
    return "the last row" if from_end == 0 else f"{from_end:,} rows before the last"


def _key(item: EventRecord | Rejection) -> str:
    if isinstance(item, Rejection):
        return f"r:{item.rejection_id}"
    return f"e:{item.event_id}:{item.receipt}"


def event_detail(
    r: EventRecord, raw: bytes | None, receipts: list[EventRecord] | None, *, loading: bool = False
) -> Any:
    status = Text(r.status.value, style="green" if r.status is IngestStatus.ACCEPTED else "yellow")
    ordinals = ordinals_among(receipts or [])
    if r.status is IngestStatus.DUPLICATE:
        n = ordinals.get(r.receipt or "", ordinal_of(r.receipt))
        status.append(f" (receipt #{n if n is not None else r.receipt}; the event counts once)")
    lag = Text(f"{human_ms(r.ingest_lag_ms)} ({r.ingest_lag_ms:,} ms)")
    if r.clock_skew:
        lag.append("  clock skew: the event claims a time after its arrival", style="magenta")
    rows: list[tuple[str, Any]] = [
        ("event id", r.event_id),
        ("status", status),
        ("entity", r.entity_id),
        ("source/type", f"{r.source}/{r.event_type}"),
        ("event time", r.event_time),
        ("ingested", r.ingest_time),
        ("lag", lag),
        ("raw key", r.s3_key),
        ("raw sha256", r.raw_sha or "-"),
        ("raw bytes", f"{r.raw_size:,}" if r.raw_size is not None else "-"),
    ]
    if r.idempotency_key:
        rows.append(("idempotency key", r.idempotency_key))
    if r.origin:
        rows.append(("origin", f"{r.origin}:{r.line}" if r.line is not None else r.origin))
    parts: list[Any] = [title("Event"), fields(rows)]
    if receipts is not None and len(receipts) > 1:
        table = Table(box=None, padding=(0, 1), show_edge=False, header_style="bold")
        for column in ("#", "STATUS", "INGESTED", "LAG", "BYTES", "ORIGIN"):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        accepted_sha = receipts[0].raw_sha
        for rc in receipts:
            same = rc.raw_sha == accepted_sha
            origin = f"{rc.origin}:{rc.line}" if rc.origin and rc.line is not None else (rc.origin or "")
            accepted = rc.status is IngestStatus.ACCEPTED
            ingested = (
                rc.ingest_time[11:23] if rc.ingest_time[:10] == r.ingest_time[:10] else rc.ingest_time[:16]
            )
            table.add_row(
                t(str(ordinals.get(rc.receipt or "", rc.receipt))),
                Text("accepted" if accepted else "duplicate", "green" if accepted else "yellow"),
                t(ingested),
                t(human_ms(rc.ingest_lag_ms)),
                Text("same" if same else "other", "dim" if same else "bold yellow"),
                t(origin, limit=24),
            )
        parts += [Text(""), title(f"Receipts ({len(receipts)})"), table]
    parts += [Text(""), title("Raw JSON")]
    if loading:
        parts.append(Text("reading…", style="italic dim"))
    elif raw is None:
        parts.append(Text("no bytes stored under this key", style="red"))
    else:
        parts.append(json_text(raw))
    return group(*parts)


def rejection_detail(r: Rejection) -> Any:
    rows: list[tuple[str, Any]] = [
        ("rejection", r.rejection_id),
        ("received", r.received_at),
        ("reason", Text(preview(r.reason.encode(), 2000), style="red")),
        ("origin", f"{r.origin}:{r.line}" if r.line is not None else r.origin),
        ("bytes", f"{r.size:,}" + (" (quarantined prefix)" if r.truncated else "")),
        ("sha256", r.sha256),
    ]
    for key, value in (("entity", r.entity_id), ("source", r.source), ("event type", r.event_type)):
        if value:
            rows.append((key, value))
    return group(
        title("Rejected request"),
        fields(rows),
        Text(""),
        title("Bytes as text"),
        t(preview(r.data, 4000) or "(empty)"),
        Text(""),
        title("Bytes"),
        hexdump(r.data),
    )
