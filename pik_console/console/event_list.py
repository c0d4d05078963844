"""The event list: a virtual view over any number of events, read a page at a time as the user moves.

Like Toolong's log view it renders only the lines on screen (``render_line``); unlike a log file, an
index has no line numbers, so rows are reached by keyset cursor from an anchor (see ``paging.py``).
Home and End re-anchor at the start and at the end of the listing (one query each); ``:`` anchors at a
time. Pages are read in a worker, one at a time; an answer for an older listing is dropped.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from backend.model import EventRecord, IngestStatus, Page, Rejection
from backend.ports import EventIndex
from backend.services.receipts import receipt_label, receipt_ordinals
from backend.times import human_ms
from pik_console.console.listings import ANCHOR_END, ANCHOR_START, Listing
from pik_console.console.paging import Chain, PagedRows, PageRequest
from pik_console.text import safe

LATE_MS = 3_600_000
MARGIN_ROWS = 60

EVENT_COLUMNS = (
    ("EVENT TIME", 25),
    ("STATUS", 10),
    ("SOURCE/TYPE", 22),
    ("LAG", 9),
    ("ENTITY", 17),
    ("EVENT ID", 12),
)
REJECTION_COLUMNS = (("RECEIVED", 25), ("ID", 6), ("ORIGIN", 22), ("BYTES", 8), ("REASON", 60))


def column_header(rejections: bool) -> Text:
    columns = REJECTION_COLUMNS if rejections else EVENT_COLUMNS
    text = Text(" ", style="bold")
    for name, width in columns:
        cell = name.rjust(width - 1) + " " if name in ("LAG", "BYTES") else name.ljust(width)
        text.append(cell)
    return text


def _cell(value: str, width: int, *, right: bool = False) -> str:
    value = value if len(value) < width else value[: max(width - 2, 0)] + "…"
    return (value.rjust(width - 1) + " ") if right else value.ljust(width)


def event_row(r: EventRecord, ordinals: dict[tuple[str, str], int] | None = None) -> Text:
    """One event as a line of text. Every field is data: appended as plain text, control characters
    escaped, never parsed as markup (invariant 10). A duplicate shows its ordinal (``DUP #2``)."""
    text = Text(" ")
    text.append(_cell(r.event_time, 25))
    if r.status is IngestStatus.DUPLICATE:
        text.append(_cell(f"DUP {receipt_label(r, ordinals or {})}", 10), style="yellow")
    else:
        text.append(_cell("ACCEPTED", 10), style="green")
    text.append(_cell(safe(f"{r.source}/{r.event_type}"), 22))
    lag = "skew" if r.clock_skew else human_ms(r.ingest_lag_ms)
    late = r.ingest_lag_ms >= LATE_MS
    text.append(_cell(lag, 9, right=True), style="bold red" if late else ("magenta" if r.clock_skew else ""))
    text.append(_cell(safe(r.entity_id), 17))
    text.append(r.event_id[:12], style="dim")
    return text


def rejection_row(r: Rejection) -> Text:
    text = Text(" ")
    text.append(_cell(r.received_at, 25))
    text.append(_cell(r.rejection_id or "", 6), style="red")
    origin = f"{r.origin}:{r.line}" if r.line is not None else r.origin
    text.append(_cell(safe(origin), 22))
    text.append(_cell(f"{r.size:,}", 8, right=True))
    text.append(safe(r.reason, 200))
    return text


class EventList(ScrollView, can_focus=True):
    """Rows of one :class:`Listing`, read on demand. Set :attr:`index` before :meth:`show`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up,k", "cursor(-1)", "Up", show=False, id="events.up", tooltip="Previous event"),
        Binding("down,j", "cursor(1)", "Down", show=False, id="events.down", tooltip="Next event"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="events.page_up", tooltip="A screen up"),
        Binding(
            "pagedown,space",
            "page(1)",
            "Page down",
            show=False,
            id="events.page_down",
            tooltip="A screen down",
        ),
        Binding(
            "home,g", "first", "First", show=False, id="events.first", tooltip="The first event (one query)"
        ),
        Binding(
            "end,G",
            "last",
            "Last",
            show=False,
            id="events.last",
            tooltip="The last event (one descending query)",
        ),
        Binding("enter", "select", "Open", show=False, id="events.open", tooltip="Focus the event's detail"),
    ]

    DEFAULT_CSS = """
    EventList {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: scroll;
        scrollbar-gutter: stable;
    }
    """

    cursor: reactive[int] = reactive(0, repaint=False, always_update=True)

    class Highlighted(Message):
        """The cursor is on ``item`` (an EventRecord or a Rejection)."""

        def __init__(self, item: EventRecord | Rejection) -> None:
            super().__init__()
            self.item = item

    class Selected(Message):
        def __init__(self, item: EventRecord | Rejection) -> None:
            super().__init__()
            self.item = item

    class Progress(Message):
        """Something about the listing changed: rows known, pages read, the last read's time or error."""

        def __init__(self, event_list: EventList) -> None:
            super().__init__()
            self.event_list = event_list

    class _PageRead(Message):
        def __init__(
            self,
            request: PageRequest,
            page: Page[Any] | None,
            error: str | None,
            ms: float,
            ordinals: dict[tuple[str, str], int] | None = None,
        ):
            super().__init__()
            self.request = request
            self.page = page
            self.error = error
            self.ms = ms
            self.ordinals = ordinals or {}

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index: EventIndex | None = None
        self.listing: Listing | None = None
        self._ordinals: dict[tuple[str, str], int] = {}
        self.rows = PagedRows(generation=0, forward=False)
        self._generation = 0
        self._inflight: PageRequest | None = None
        self._failed: PageRequest | None = None
        self._to_end = False
        self._pending = 0
        self._highlighted: str | None = None
        self.last_read_ms: float | None = None
        self.last_error: str | None = None
        self.first_page_ms: float | None = None
        self._opened_at = 0.0
        self._base_style: Style | None = None

    # -- what is shown ------------------------------------------------------------------------------

    def show(self, listing: Listing | None) -> None:
        """List ``listing`` (None: nothing), from its anchor. Rows of the previous listing are dropped."""
        self._generation += 1
        self.listing = listing
        self.rows = PagedRows(
            generation=self._generation,
            forward=listing is not None and listing.forward,
            backward=listing is not None and listing.backward,
        )
        self._inflight = None
        self._failed = None
        self.last_error = None
        self.first_page_ms = None
        self._to_end = listing is not None and listing.anchor == ANCHOR_END
        self._pending = 0
        self._highlighted = None
        self._opened_at = time.perf_counter()
        self.set_reactive(EventList.cursor, 0)
        self.virtual_size = Size(self.size.width, 0)
        self.scroll_to(y=0, animate=False, immediate=True)
        self.refresh()
        self._want()
        self.post_message(self.Progress(self))

    @property
    def item(self) -> EventRecord | Rejection | None:
        found = self.rows.row(self.cursor)
        return found if isinstance(found, EventRecord | Rejection) else None

    @property
    def reading(self) -> bool:
        """A page is being read (not Textual's `loading`, which would make the focused list ignore keys)."""
        return self._inflight is not None

    # -- reading pages ----------------------------------------------------------------------------------

    def _want(self) -> None:
        """Start reading the next page the screen needs, if none is being read."""
        if self._inflight is not None or self.listing is None or self.index is None:
            return
        height = max(self.size.height, 1)
        top = int(self.scroll_y)
        first = min(top, self.cursor)
        last = max(top + height - 1, self.cursor)
        wanted = self.rows.wanted(first, last, MARGIN_ROWS)
        if self.rows.total == 0:
            # Both chains are empty: read forward first, it holds the anchor's own rows.
            wanted.sort(key=lambda r: r.chain is not Chain.FORWARD)
        wanted = [r for r in wanted if r != self._failed]
        if not wanted:
            return
        self._inflight = wanted[0]
        self._read(self.listing, self.index, wanted[0])

    @work(thread=True, exclusive=True, group="event-pages", exit_on_error=False)
    def _read(self, listing: Listing, index: EventIndex, request: PageRequest) -> None:
        started = time.perf_counter()
        ordinals: dict[tuple[str, str], int] = {}
        try:
            page: Page[Any] | None = listing.read(index, request.chain, request.cursor)
            error = None
            if page is not None:
                # Duplicates show as #1, #2 on every store (AWS receipt ids are long arrival-order keys).
                records = [r for r in page.items if isinstance(r, EventRecord)]
                ordinals = receipt_ordinals(index, records)
        except Exception as exc:  # shown to the user; the console carries on
            page, error = None, str(exc) or type(exc).__name__
        ms = (time.perf_counter() - started) * 1000
        self.post_message(self._PageRead(request, page, error, ms, ordinals))

    def on_event_list__page_read(self, message: EventList._PageRead) -> None:
        message.stop()
        request = message.request
        if request.generation != self._generation:
            return
        self._inflight = None
        self.last_read_ms = message.ms
        if message.page is None:
            self._failed = request
            self.last_error = message.error
            self.notify(f"Reading events failed: {message.error}", severity="error", markup=False)
            self.post_message(self.Progress(self))
            return
        before = self.rows.total
        self._ordinals.update(message.ordinals)
        shift = self.rows.add(request, message.page.items, message.page.next_cursor)
        if self.first_page_ms is None:
            self.first_page_ms = (time.perf_counter() - self._opened_at) * 1000
        self.virtual_size = Size(self.size.width, self.rows.total)
        if shift:
            # Rows appeared above: keep the same rows on screen and the cursor on the same item.
            self.set_reactive(EventList.cursor, self.cursor + shift if before else self.cursor)
            if before:
                self.scroll_to(y=self.scroll_y + shift, animate=False, immediate=True)
        if self._to_end and self.rows.total:
            self._to_end = False
            self.cursor = self.rows.total - 1
        elif self.listing is not None and self.listing.select_event and self._highlighted is None:
            wanted_id = self.listing.select_event
            found = self.rows.find(lambda r: isinstance(r, EventRecord) and r.event_id == wanted_id)
            if found is not None:
                self.cursor = found
        elif self._pending:
            # Finish a move that ran past the rows read so far (shift already counted rows above).
            pending, self._pending = self._pending, 0
            if pending > 0 or shift:
                self._move(pending)
            else:
                self._pending = pending
        elif before == 0 and self.rows.total:
            self.cursor = self.cursor  # announce the first row
        self.refresh()
        self.post_message(self.Progress(self))
        self._want()

    # -- moving -------------------------------------------------------------------------------------------

    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, self.rows.total - 1)) if self.rows.total else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self.refresh()
        height = max(self.size.height, 1)
        if new < self.scroll_y:
            self.scroll_to(y=new, animate=False, immediate=True)
        elif new >= self.scroll_y + height:
            self.scroll_to(y=new - height + 1, animate=False, immediate=True)
        item = self.item
        if item is not None:
            key = _key(item)
            if key != self._highlighted:
                self._highlighted = key
                self.post_message(self.Highlighted(item))
        self._want()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._want()

    def action_cursor(self, step: int) -> None:
        self._move(step)

    def action_page(self, step: int) -> None:
        height = max(self.size.height - 1, 1)
        self._move(step * height)

    def _move(self, step: int) -> None:
        """Move the cursor; a move past the rows read so far is kept and finished when they arrive, so
        holding PageDown never stalls at the edge of what has been read."""
        target = self.cursor + step
        self._pending = 0
        if target >= self.rows.total and not self.rows.at_end:
            self._pending = target - max(self.rows.total - 1, 0)
        elif target < 0 and not self.rows.at_start:
            self._pending = target
        self.cursor = target

    def action_first(self) -> None:
        if self.listing is None:
            return
        if self.rows.at_start:
            self.cursor = 0
        else:
            self.show(self.listing.at(ANCHOR_START))

    def action_last(self) -> None:
        if self.listing is None:
            return
        if self.rows.at_end:
            self.cursor = max(self.rows.total - 1, 0)
        else:
            self.show(self.listing.at(ANCHOR_END))

    def action_select(self) -> None:
        item = self.item
        if item is not None:
            self.post_message(self.Selected(item))

    def on_click(self, event: Any) -> None:
        row = int(self.scroll_y) + event.y
        if 0 <= row < self.rows.total:
            self.cursor = row

    def on_resize(self) -> None:
        self.virtual_size = Size(self.size.width, self.rows.total)
        self._want()

    # -- drawing --------------------------------------------------------------------------------------

    def notify_style_update(self) -> None:
        self._base_style = None
        super().notify_style_update()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        row = int(self.scroll_y) + y
        base = self._base_style
        if base is None:
            # Computing the widget's style walks the DOM: once per style change, not once per line.
            base = self._base_style = self.rich_style
        if row >= self.rows.total:
            if row == self.rows.total and self.listing is not None:
                note = self._tail_note()
                if note:
                    return Strip([Segment(note, base + Style(dim=True, italic=True))]).adjust_cell_length(
                        width, base
                    )
            return Strip.blank(width, base)
        item = self.rows.row(row)
        if item is None:
            text = Text(" …", style="dim")
        elif isinstance(item, Rejection):
            text = rejection_row(item)
        else:
            text = event_row(item, self._ordinals)
        text.truncate(width, overflow="ellipsis")
        style = base
        if row == self.cursor:
            style = (
                base + Style(reverse=True) if not self.has_focus else base + Style(bgcolor="blue", bold=True)
            )
        segments = [
            Segment(s.text, style + s.style if s.style else style) for s in text.render(self.app.console)
        ]
        return Strip(segments).adjust_cell_length(width, style)

    def _tail_note(self) -> str:
        if self.last_error and self._failed is not None:
            return " (reading failed — press r to retry)"
        if self._inflight is not None:
            return " reading…"
        if self.rows.total == 0 and self.rows.complete:
            return " (no events in this listing)"
        return ""


def _key(item: EventRecord | Rejection) -> str:
    if isinstance(item, Rejection):
        return f"r:{item.rejection_id}"
    return f"e:{item.event_id}:{item.receipt}"


__all__ = ["ANCHOR_END", "ANCHOR_START", "EventList", "column_header"]
