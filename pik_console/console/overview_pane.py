"""The Overview pane (key 0): what is wrong here, ranked - the findings of ``pik overview`` over the last
event days, most severe first, the evidence and the next command of the one under the cursor; enter opens
the finding's window in the pane that shows it, with the console's context set to it."""

from __future__ import annotations

import json
from typing import Any, ClassVar, cast

from rich.console import Group
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.containers import Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static

from backend.model import IngestStatus
from backend.services.findings import Finding
from backend.services.overview import Overview
from pik_console.console.context import Context, day_start, next_day
from pik_console.console.render import fields, t
from pik_console.console.widgets import focus_now
from pik_console.overview_view import finding_rows, finding_target

SEVERITY_STYLE = ((70, "bold red"), (40, "yellow"), (0, ""))


class OverviewPane(Vertical):
    BINDINGS: ClassVar[list[BindingType]] = []

    class Read(Message):
        def __init__(self, overview: Overview | None, error: str | None) -> None:
            super().__init__()
            self.overview = overview
            self.error = error

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.overview: Overview | None = None
        self._read_once = False

    def compose(self) -> ComposeResult:
        yield Static(Text("reading the findings…", style="italic dim"), id="overview-head", markup=False)
        yield DataTable(id="overview-findings", cursor_type="row", zebra_stripes=True)
        with VerticalScroll(id="overview-detail-scroll"):
            yield Static("", id="overview-detail", markup=False)

    def on_mount(self) -> None:
        if not self.app.is_running:  # mounted as the app closes (q right after start): nothing to set up
            return
        cast(Any, self.app).pane_mounted()  # mounted when first shown: take the size's layout
        table = self.query_one("#overview-findings", DataTable)
        for label, width in (("SEV", 4), ("KIND", 16), ("WHERE", 24), ("WHEN", 14)):
            table.add_column(label, width=width)
        table.add_column("SUMMARY")

    def focus_main(self) -> None:
        focus_now(self.query_one("#overview-findings", DataTable))

    def focus_filter(self) -> None:
        self.notify("The overview has no form: enter opens a finding; r reads it again", severity="warning")

    def apply_context(self, ctx: Context) -> None:
        if not self._read_once:
            self._read_once = True
            self.reload()

    def reload(self) -> None:
        self.query_one("#overview-head", Static).update(Text("reading the findings…", style="italic dim"))
        self._read()

    @work(thread=True, exclusive=True, group="overview", exit_on_error=False)
    def _read(self) -> None:
        try:
            kit = cast(Any, self.app).kit
            self.post_message(self.Read(kit.overview().overview(context=backend_options(kit)), None))
        except Exception as exc:
            self.post_message(self.Read(None, str(exc)))

    @on(Read)
    def _shown(self, message: Read) -> None:
        head = self.query_one("#overview-head", Static)
        table = self.query_one("#overview-findings", DataTable)
        table.clear()
        if message.overview is None:
            head.update(t(f"Reading the overview failed: {message.error}", "red"))
            return
        o = self.overview = message.overview
        text = Text(
            f"What is wrong in {o.first_day} .. {o.end_day} (exclusive), most severe first: ", style="bold"
        )
        text.append(f"{len(o.findings):,} findings" if o.findings else "nothing found", style="bold cyan")
        if o.omitted:
            text.append(f" ({o.omitted:,} more not listed)", style="dim")
        text.append("  ·  enter opens the window", style="dim")
        head.update(text)
        for n, row in enumerate(finding_rows(o.findings)):
            severity = o.findings[n].severity
            style = next(s for bound, s in SEVERITY_STYLE if severity >= bound)
            table.add_row(*(t(cell, style if i == 0 else "") for i, cell in enumerate(row)), key=str(n))
        if o.findings:
            self._detail(o.findings[0])
        else:
            self.query_one("#overview-detail", Static).update(
                Text("No finding in this range: every day looks like its usual self.", style="green")
            )

    def _finding(self, key: str | None) -> Finding | None:
        if self.overview is None or key is None:
            return None
        return self.overview.findings[int(key)]

    @on(DataTable.RowHighlighted, "#overview-findings")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        f = self._finding(event.row_key.value)
        if f is not None:
            self._detail(f)

    def _detail(self, f: Finding) -> None:
        evidence = json.dumps(f.evidence, indent=1, ensure_ascii=False, default=str)
        lines = Text("\n").join(t(line) for line in evidence.splitlines())
        self.query_one("#overview-detail", Static).update(
            Group(t(f.summary, "bold"), fields([("next", t(f.next, "cyan")), ("evidence", lines)]))
        )

    @on(DataTable.RowSelected, "#overview-findings")
    def _open(self, event: DataTable.RowSelected) -> None:
        f = self._finding(event.row_key.value)
        if f is not None:
            open_finding(cast(Any, self.app), f)


def backend_options(kit: Any) -> list[str]:
    """The command-line options that open the console's backend, for the findings' ``next`` commands."""
    if kit.name == "local":
        return ["--workspace", str(kit.location)]
    aws = kit.settings.aws
    out = ["--backend", "aws"]
    for option, value in (
        ("--stack", aws.stack),
        ("--endpoint-url", aws.endpoint_url),
        ("--region", aws.region),
    ):
        if value:
            out += [option, str(value)]
    return out


def open_finding(app: Any, f: Finding) -> None:
    """The finding's window in the pane that shows it, the console's context set to it."""
    from pik_console.console.listings import EventFilter

    target = finding_target(f)
    app.share(
        entity=target.entity_id,
        day=target.day,
        source=target.source or app.context.source,
        event_type=target.event_type or app.context.event_type,
        start=None,
        end=None,
        metric=target.metric,
        compare=None,
    )
    if target.pane == "events" and target.status is not None:
        status = IngestStatus(target.status)
        if target.entity_id is not None:
            f_ = EventFilter(entity=target.entity_id, start=day_start(target.day),
                             end=day_start(next_day(target.day)), status=status)  # fmt: skip
        elif status is IngestStatus.REJECTED:
            f_ = EventFilter(status=status)
        else:
            f_ = EventFilter(
                source=target.source, event_type=target.event_type, day=target.day, status=status
            )
        app.action_pane("events")
        app.pane("events").set_filter(f_)
        return
    app.action_pane(target.pane)
    app.when_mounted(target.pane, lambda pane: pane.apply_context(app.context), mount=True)
