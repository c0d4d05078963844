"""What the Replay pane shows of a plan (the dry run's blast radius) and of a finished replay."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.message import Message
from textual.widgets import DataTable

from backend.model import ReplayAudit, ReplayOutcome, ReplayPlan
from backend.services.scope import describe_scope
from pik_console.console.render import bar, fields, num, t

OUTCOME_STYLE = {
    ReplayOutcome.SENT: "green",
    ReplayOutcome.DRY_RUN: "dim",
    ReplayOutcome.REFUSED: "yellow",
    ReplayOutcome.PARTIAL: "bold yellow",
    ReplayOutcome.FAILED: "bold red",
    ReplayOutcome.INTERRUPTED: "bold red",
    ReplayOutcome.RUNNING: "cyan",
}


def _n(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count:,} {singular if count == 1 else plural or singular + 's'}"


def plan_view(plan: ReplayPlan, confirm_above: int) -> Group:
    head = Text()
    head.append(f"{plan.would_send:,}", style="bold green" if plan.would_send else "bold yellow")
    head.append(" messages would be sent", style="bold")
    if plan.needs_force:
        head.append(f"  (above the size guard of {confirm_above:,}: typed confirmation)", style="bold yellow")
    s = plan.skipped
    known = plan.windows_with_versions
    with_versions = "" if known is None else f" ({known:,} with versions)"
    radius: list[tuple[str, Any]] = [
        ("scope", describe_scope(plan.request)),
        ("scanned / matched", f"{plan.scanned:,} / {plan.matched:,}"),
        ("skipped", f"{s.duplicate:,} duplicates · {s.missing_raw:,} without raw bytes · "
                    f"{s.over_limit:,} over the limit · {s.filtered:,} filtered out"),
        ("blast radius", f"{_n(plan.entities, 'entity', 'entities')} · {_n(plan.windows, 'aggregate window')}"
         + with_versions),
        ("first .. last", f"{plan.first_event_time or '-'} .. {plan.last_event_time or '-'}"),
    ]  # fmt: skip
    parts: list[Any] = [head, fields(radius)]
    if plan.by_day:
        top = max(plan.by_day.values())
        days = Table.grid(padding=(0, 1))
        days.add_column()
        days.add_column(justify="right")
        days.add_column()
        for day, count in list(plan.by_day.items())[:14]:
            days.add_row(t(day), num(count), bar(count, top, 24))
        if len(plan.by_day) > 14:
            days.add_row(Text(f"… {len(plan.by_day) - 14} more days", style="dim"), Text(""), Text(""))
        parts += [Text("by event day", style="bold cyan"), days]
    for line in plan.why:
        parts.append(Text("• ", style="yellow") + t(line))
    if plan.sample:
        sample = Table(box=None, padding=(0, 1), header_style="bold", show_edge=False)
        for column in ("EVENT TIME", "ENTITY", "EVENT ID"):
            sample.add_column(column, no_wrap=True)
        for m in plan.sample[:5]:
            sample.add_row(t(m.event_time), t(m.entity_id, limit=28), t(m.event_id[:16]))
        parts += [Text("first messages", style="bold cyan"), sample]
    return Group(*parts)


def result_view(a: ReplayAudit) -> Text:
    text = Text(end="")
    text.append(f"Replay {a.replay_id}: ", style="bold")
    text.append(a.outcome.value, style=OUTCOME_STYLE.get(a.outcome, ""))
    text.append(f" — {a.sent:,} sent, {a.failed:,} failed of {a.would_send:,} planned")
    if a.unconfirmed:
        text.append(f" ({a.unconfirmed:,} unconfirmed: up to that many sent twice)")
    if a.error:
        text.append("  ")
        text.append(t(a.error, "red", 200))
    if a.outcome is ReplayOutcome.SENT and a.sent:
        text.append("\nNext: run the processor (p) to recompute the windows, then compare versions (5).")
    return text


class ReplayHistory(DataTable[Any]):
    """The audit trail, newest first: every replay run or previewed, its replay id whole; enter on one
    posts :class:`Chosen` (the pane loads its scope)."""

    class HistoryRead(Message):
        def __init__(self, records: list[ReplayAudit] | None, error: str | None) -> None:
            super().__init__()
            self.records = records
            self.error = error

    class Chosen(Message):
        def __init__(self, record: ReplayAudit) -> None:
            super().__init__()
            self.record = record

    def on_mount(self) -> None:
        # The replay id whole (it is what `pik replays` and the audit are searched by), before who ran it.
        for label, width in (("STARTED", 16), ("OUTCOME", 11), ("SENT", 15), ("REPLAY", 27), ("BY", 14)):
            self.add_column(label, width=width)
        self.add_column("SCOPE")
        self.records: list[ReplayAudit] = []

    @work(thread=True, exclusive=True, group="replay-history", exit_on_error=False)
    def read(self) -> None:
        try:
            audit = self.app.kit.audit  # type: ignore[attr-defined]
            records = [] if audit is None else audit.query(limit=50).items
            self.post_message(self.HistoryRead(records, None))
        except Exception as exc:
            self.post_message(self.HistoryRead(None, str(exc)))

    @on(HistoryRead)
    def _show(self, message: HistoryRead) -> None:
        self.clear()
        if message.records is None:
            self.notify(f"Reading the audit trail failed: {message.error}", severity="error", markup=False)
            return
        self.records = message.records
        for a in message.records:
            self.add_row(
                t(a.started_at[:16]),
                Text(a.outcome.value, style=OUTCOME_STYLE.get(a.outcome, "")),
                Text(f"{a.sent:,}/{a.would_send:,}", justify="right"),
                t(a.replay_id),
                t(a.actor, limit=14),
                t(describe_scope(a.request), limit=60),
                key=a.replay_id,
            )

    @on(DataTable.RowSelected)
    def _chosen(self, event: DataTable.RowSelected) -> None:
        record = next((a for a in self.records if a.replay_id == event.row_key.value), None)
        if record is not None:
            event.stop()
            self.post_message(self.Chosen(record))
