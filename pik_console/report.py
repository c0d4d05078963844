"""``pik report --entity E --day D``: a Markdown incident report of one (entity, day) - the scope, what
arrived late or twice, the day's lag and the entity's gaps, the replays that covered it, the aggregate
versions with the explanation of every change, and the seed's "before closing an incident" checklist
with what the tool can check ticked (and why), the rest left to the person closing it.

The facts are gathered by :class:`backend.services.report.ReportService`; this module renders them
(:func:`render_report`, a function per section), and :func:`build_report` does both.

Data goes into the Markdown as text, never as structure: control characters are escaped (no newline can
start a block), identifiers are code spans fenced longer than any backtick run they hold, and other text has
every character Markdown could read as a link, an image, an HTML tag, emphasis, a table cell or a heading
backslash-escaped. The text reads the same once rendered (a renderer with GitHub's bare-URL autolinking
still turns a URL in the data into a link to that same URL).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backend.kit import Kit
from backend.services.report import IncidentReport
from backend.services.scope import describe_scope
from backend.services.versions import value_text
from backend.times import human_ms
from pik_console.report_checklist import Ident, checklist
from pik_console.report_html import render_html
from pik_console.text import safe

# The report's formats and their file suffixes; Markdown is the default.
FORMATS = {"markdown": "md", "html": "html"}

# What Markdown (CommonMark and GitHub's tables and strikethrough) may read as structure anywhere in a line.
_MD_SPECIAL = frozenset("\\`*[]<>!|~&#")
# What starts a block when it starts a line: a list item, a heading underline, an ordered list item.
_MD_LINE_START = re.compile(r"([-+=])|(\d{1,9})([.)])")


def md(value: Any) -> str:
    """Data as Markdown text: control characters escaped, and every character Markdown could read as
    structure backslash-escaped (``_`` only where it could start or end emphasis, so ``user_001`` stays as
    it is), whitespace at the ends as character references. Renders as exactly the text of
    :func:`~pik_console.text.safe`, wherever it stands in a line or a table cell."""
    text = safe(str(value))
    out = []
    for i, ch in enumerate(text):
        if ch in _MD_SPECIAL:
            out.append("\\" + ch)
        elif ch == "_" and not (0 < i < len(text) - 1 and text[i - 1].isalnum() and text[i + 1].isalnum()):
            out.append("\\_")
        else:
            out.append(ch)
    escaped = "".join(out)
    start = _MD_LINE_START.match(escaped)
    if start is not None and start.group(1):
        escaped = "\\" + escaped
    elif start is not None:
        escaped = f"{start.group(2)}\\{start.group(3)}{escaped[start.end() :]}"
    # Whitespace at either end would be stripped (or indent a code block): keep it as character references.
    body = escaped.strip()
    if body == escaped:
        return escaped
    head = escaped[: len(escaped) - len(escaped.lstrip())] if body else escaped
    tail = escaped[len(escaped.rstrip()) :] if body else ""
    return "".join(f"&#{ord(c)};" for c in head) + body + "".join(f"&#{ord(c)};" for c in tail)


def code(value: Any, *, cell: bool = False) -> str:
    """Data as a code span, shown exactly (control characters escaped): fenced with one backtick more than
    the longest run inside it. In a table ``cell``, pipes are escaped, as GitHub's tables need even there."""
    text = safe(str(value)) or " "
    fence = "`" * (max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    # One space each side is stripped from a span that has both; pad to keep the text's own.
    pad = text[0] == "`" or text[-1] == "`" or (text[0] == " " and text[-1] == " " and text.strip(" ") != "")
    if cell:
        text = text.replace("|", "\\|")
    return f"{fence} {text} {fence}" if pad else f"{fence}{text}{fence}"


def row(*cells: str) -> str:
    return "| " + " | ".join(cells) + " |"


def report_path(entity: str, day: str, folder: Path | None = None, *, fmt: str = "markdown") -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", entity).strip("_")[:60] or "entity"
    return (folder or Path.cwd()) / f"pik-report-{slug}-{day}.{FORMATS[fmt]}"


def report_findings(
    kit: Kit, entity: str, day: str, context: Sequence[str] = ()
) -> list[dict[str, Any]] | None:
    """The overview's findings about ``entity``'s ``day``: those of that day that concern the entity or a
    whole source/type (over the two weeks up to the day, so the baselines are the usual ones). None when
    the backend has no overview (the report then leaves the section out)."""
    from datetime import date, timedelta

    from backend.errors import NotConfigured

    try:
        service = kit.overview()
    except NotConfigured:
        return None
    since = (date.fromisoformat(day) - timedelta(days=13)).isoformat()
    found = service.overview(since, day, context=context).findings
    return [f.model_dump(mode="json") for f in found if f.day == day and f.entity_id in (None, entity)]


def build_report(
    kit: Kit,
    entity: str,
    day: str,
    *,
    fmt: str = "markdown",
    findings: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> str:
    """The report of ``entity`` on ``day`` in ``fmt`` (``markdown`` or ``html``, see FORMATS):
    :meth:`ReportService.gather <backend.services.report.ReportService.gather>` then :func:`render_report`
    or :func:`~pik_console.report_html.render_html`. Reads only; InvalidRequest for a bad entity or day.

    ``findings`` is the hook for the overview's findings of this window (``[{kind, severity, source,
    event_type, entity_id, day, summary, evidence, next}]``, most severe first): given, the report has a
    Findings section (an empty list says there is none); None (the default) leaves the section out."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    facts = kit.report().gather(entity, day)
    if fmt == "html":
        return render_html(facts, findings=findings, now=now)
    return render_report(facts, findings=findings, now=now)


def render_report(
    facts: IncidentReport,
    *,
    findings: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> str:
    """The facts as Markdown: a section each, data escaped as the module says; ``now`` (default: the
    clock) is when it says it was written; ``findings`` as :func:`build_report` says."""
    lines = _head(facts, now or datetime.now(UTC))
    lines += _findings(findings)
    for section in (_events, _lag, _gaps, _replays, _versions, _checklist):
        lines += section(facts)
    return "\n".join(lines)


def _head(f: IncidentReport, now: datetime) -> list[str]:
    return [
        f"# Incident report: {code(f.entity_id)} on {f.day}",
        "",
        f"Written {now:%Y-%m-%d %H:%M} UTC by `pik report` from {md(f.backend)} backend {code(f.location)}.",
        "",
        "## Scope",
        "",
        f"- Entity: {code(f.entity_id)}",
        f"- Day: {f.day} (UTC), the window [{f.window_start}, {f.window_end})",
        f"- In the index: {f.events:,} events, {f.duplicates:,} duplicate receipts",
        "",
    ]


def _events(f: IncidentReport) -> list[str]:
    lines = ["## Events of the window", ""]
    add = lines.append
    if not f.events + f.duplicates:
        add("Nothing is indexed for this entity on this day: check the entity id and the day (UTC).")
        add("")
        return lines
    add("| source/type | events | duplicate receipts | late (lag ≥ 1h) | clock skew | max lag |")
    add("|---|---:|---:|---:|---:|---:|")
    for p in f.partitions:
        add(row(f"{md(p.source)}/{md(p.event_type)}", f"{p.events:,}", f"{p.duplicates:,}", f"{p.late:,}",
                f"{p.clock_skew:,}", human_ms(p.max_lag_ms)))  # fmt: skip
    if f.late_arrivals:
        add("")
        add(f"Late arrivals ({f.late_arrivals:,}), largest lag first:")
        add("")
        for r in f.largest_late:
            add(
                f"- {code(r.event_id[:16])} {md(r.source)}/{md(r.event_type)} at {r.event_time}, "
                f"ingested {r.ingest_time} ({human_ms(r.ingest_lag_ms)} late)"
            )
    if f.duplicates:
        add("")
        add(
            f"Duplicate receipts: {f.duplicates:,} for {f.duplicated_events:,} events (each event counts "
            f"once; the most repeated one {f.most_receipts} times)."
        )
    add("")
    return lines


def _ms(value: int | None) -> str:
    return "-" if value is None else human_ms(value)


def _lag(f: IncidentReport) -> list[str]:
    lines = ["## Lag of the day's partitions", ""]
    if not f.lag:
        return [*lines, "No partition to report on.", ""]
    lines += [
        "All entities, the accepted events of each partition the entity has events in:",
        "",
        "| source/type | events | p50 | p90 | p99 | max | late (≥ 1h) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lag in f.lag:
        share = f"{lag.late:,} ({100 * lag.late / lag.count:.0f}%)" if lag.count else "0"
        lines.append(
            f"| {md(lag.source)}/{md(lag.event_type)} | {lag.count:,} | {_ms(lag.p50_ms)} | "
            f"{_ms(lag.p90_ms)} | {_ms(lag.p99_ms)} | {_ms(lag.max_ms)} | {share} |"
        )
    return [*lines, ""]


def _gaps(f: IncidentReport) -> list[str]:
    gaps = f.gaps
    lines = [
        "## Gaps around the day",
        "",
        f"Events per day of {code(f.entity_id)}, expected ~{gaps.expected:,.0f}/day (median); "
        "late = after the day + 1h.",
        "",
        "| day | events | on time | late | duplicates | status |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for g in gaps.days:
        mark = "**" if g.day == f.day else ""
        lines.append(row(f"{mark}{g.day}{mark}", f"{g.events:,}", f"{g.on_time:,}", f"{g.late:,}",
                         f"{g.duplicates:,}", g.status.value))  # fmt: skip
    if gaps.never_arrived or gaps.arrived_late:
        lines.append("")
        if gaps.never_arrived:
            lines.append(f"- Never arrived: {', '.join(gaps.never_arrived)}")
        if gaps.arrived_late:
            lines.append(f"- Arrived late: {', '.join(gaps.arrived_late)}")
    return [*lines, ""]


def _replays(f: IncidentReport) -> list[str]:
    lines = ["## Replays that covered the window", ""]
    if not f.replays:
        return [*lines, "None in the audit trail.", ""]
    lines += ["| started | replay | outcome | by | sent / planned | scope |", "|---|---|---|---|---:|---|"]
    for a in f.replays:
        lines.append(
            f"| {a.started_at} | {code(a.replay_id, cell=True)} | {a.outcome.value} | {md(a.actor)} | "
            f"{a.sent:,} / {a.would_send:,} | {md(describe_scope(a.request))} |"
        )
    return [*lines, ""]


def _versions(f: IncidentReport) -> list[str]:
    lines = ["## Aggregate versions", ""]
    if not f.versions:
        return [*lines, "No aggregate versions for this window.", ""]
    lines += ["| metric | version | value | inputs | computed | caused by |", "|---|---:|---:|---:|---|---|"]
    for v in f.versions:
        cause = ", ".join(code(r, cell=True) for r in v.replay_ids) if v.replay_ids else "direct recompute"
        lines.append(row(md(v.metric), str(v.version), value_text(v.value), f"{v.input_count:,}",
                         v.computed_at, cause))  # fmt: skip
    for change in f.changes:
        heading = f"{change.metric}: version {change.newer - 1} → {change.newer}"
        lines += ["", f"### {md(heading)}", ""]
        for line in change.explanation:
            lines.append("- " + md(line[2:]) if line.startswith("- ") else md(line))
    return [*lines, ""]


def _checklist(f: IncidentReport) -> list[str]:
    lines = [
        "## Before closing the incident",
        "",
        "The seed's checklist; the tool ticks what it can check and says why, the rest is yours.",
        "",
    ]
    for check in checklist(f):
        why = "".join(code(p) if isinstance(p, Ident) else p for p in check.why)
        lines.append(f"- [{'x' if check.ok else ' '}] {check.label} — {why}.")
    return [*lines, ""]


def _findings(findings: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """The overview's findings of the window, most severe first as given; nothing without a list."""
    if findings is None:
        return []
    lines = ["## Findings", ""]
    if not findings:
        return [*lines, "No finding for this window.", ""]
    for item in findings:
        where = "/".join(md(item[k]) for k in ("source", "event_type") if item.get(k))
        lines.append(
            f"- **{md(item.get('severity', ''))}** {md(item.get('kind', ''))}"
            + (f" ({where})" if where else "")
            + f": {md(item.get('summary', ''))}"
        )
        if item.get("next"):
            lines.append(f"  next: {code(item['next'])}")
    return [*lines, ""]


# -- pik report ------------------------------------------------------------------------------------------
