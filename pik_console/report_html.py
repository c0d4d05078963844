"""``pik report --format html``: the incident report of one (entity, day) as one self-contained HTML page a
person reads, prints or attaches to a ticket.

The facts are the Markdown report's (:class:`backend.services.report.ReportService`); this module renders
them (:func:`render_html`, a function per section) with charts drawn by :mod:`pik_console.svg`: the lag
histogram, events per day split on time / late / duplicate, and each metric's values by version.

One file, nothing fetched: the stylesheet is inline, the charts are inline SVG, there is no script, and a
Content-Security-Policy meta tag forbids the page to load anything (``default-src 'none'``) should data
ever smuggle a reference in. Light and dark follow the reader's setting (``prefers-color-scheme``), and
the page prints on white.

Untrusted text stays text: every value from the data goes through :func:`~pik_console.svg.esc` (control
characters and bidi marks made visible as :func:`~pik_console.text.safe` does, then ``& < > " '``
escaped), in element content and in attributes alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from backend.services.report import LATE_MS, IncidentReport
from backend.services.scope import describe_scope
from backend.services.versions import value_text
from backend.times import human_ms
from pik_console.report_checklist import Ident, checklist
from pik_console.svg import Bar, Point, Stack, bar_chart, esc, stacked_bars, timeline

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
# The severities a finding may have get their own colour; any other is shown plainly.
SEVERITIES = ("critical", "high", "medium", "low", "info")

STYLE = """
:root { color-scheme: light dark; --fg: #1d2430; --muted: #5b6575; --bg: #ffffff; --panel: #f4f6f9;
  --rule: #d5dae2; --accent: #2f6fdb; --ontime: #3b82c4; --late: #e0892b; --dup: #9b59b6;
  --ok: #1e8a4c; --bad: #c0392b; --hl: rgba(224, 137, 43, 0.14); }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e3e7ee; --muted: #9aa4b4; --bg: #14181f; --panel: #1d232d; --rule: #333c4a;
    --accent: #6ea2ff; --ontime: #5fa8e8; --late: #f0a350; --dup: #c08ad8; --ok: #4cc27f; --bad: #ef6b5b;
    --hl: rgba(240, 163, 80, 0.16); } }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
  background: var(--bg); margin: 0 auto; max-width: 1100px; padding: 24px 32px 48px; }
h1 { font-size: 1.6em; margin: 0 0 4px; } h2 { font-size: 1.25em; margin: 32px 0 8px;
  border-bottom: 1px solid var(--rule); padding-bottom: 4px; } h3 { font-size: 1.05em; margin: 20px 0 6px; }
.meta, .note { color: var(--muted); font-size: 0.92em; }
code { font: 0.92em ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; background: var(--panel);
  padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
table { border-collapse: collapse; min-width: 60%; margin: 8px 0 12px; font-size: 0.93em; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--rule); vertical-align: top; }
th { color: var(--muted); font-weight: 600; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; } td.t { white-space: nowrap; }
tr.day-of td { background: var(--hl); font-weight: 600; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: var(--panel); border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.card b { display: block; font-size: 1.5em; } .card span { color: var(--muted); font-size: 0.88em; }
figure { margin: 8px 0 16px; } figcaption { color: var(--muted); font-size: 0.9em; }
svg.chart { width: 100%; height: auto; max-width: 760px; display: block; }
svg .grid { stroke: var(--rule); stroke-width: 1; } svg .axis { stroke: var(--muted); stroke-width: 1.2; }
svg .label { fill: var(--muted); } svg .label.value, svg .label.strong { fill: var(--fg); }
svg .label.strong { font-weight: 600; } svg .highlight { fill: var(--hl); }
svg .series-main, svg .series-on_time { fill: var(--ontime); } svg .series-late { fill: var(--late); }
svg .series-duplicates { fill: var(--dup); }
svg .line { fill: none; stroke: var(--accent); stroke-width: 2; }
svg .point { fill: var(--accent); stroke: var(--bg); stroke-width: 2; }
svg .point.hollow { fill: var(--bg); stroke: var(--accent); }
ul.checks { list-style: none; padding-left: 0; } ul.checks li { margin: 4px 0; }
.tick { display: inline-block; width: 1.4em; font-weight: 700; }
.tick.ok { color: var(--ok); } .tick.no { color: var(--muted); }
.sev { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 0.85em; font-weight: 600;
  background: var(--panel); } .sev-critical, .sev-high { color: #fff; background: var(--bad); }
.sev-medium { color: #000; background: var(--late); }
dl.evidence { display: grid; grid-template-columns: max-content 1fr; gap: 0 12px; margin: 4px 0;
  font-size: 0.9em; }
dl.evidence dt { color: var(--muted); } dl.evidence dd { margin: 0; }
@media print {
  :root { --fg: #000; --muted: #444; --bg: #fff; --panel: #f0f0f0; --rule: #bbb; }
  body { max-width: none; padding: 0; font-size: 11pt; }
  section, figure, tr { break-inside: avoid; } h2 { break-after: avoid; }
}
"""


def render_html(
    facts: IncidentReport,
    *,
    findings: Sequence[Mapping[str, Any]] | None = None,
    now: datetime | None = None,
) -> str:
    """The facts as one HTML page, data escaped as the module says. ``findings`` (the overview's, shape
    ``{kind, severity, source, event_type, entity_id, day, summary, evidence, next}``): given, a Findings
    section lists them in the order given (an empty list says there is none); None leaves it out.
    ``now`` (default: the clock) is when the page says it was written."""
    parts = _head(facts, now or datetime.now(UTC))
    parts += _findings(findings)
    for section in (_events, _lag, _days, _replays, _versions, _checklist):
        parts += section(facts)
    parts.append("</main>\n</body>\n</html>\n")
    return "\n".join(parts)


def _code(value: object) -> str:
    return f"<code>{esc(value)}</code>"


def _thead(*headers: str) -> str:
    """A table's opening and header row; a header written ``#name`` heads a column of numbers."""
    cells = "".join(
        f'<th class="n">{esc(h[1:])}</th>' if h[0] == "#" else f"<th>{esc(h)}</th>" for h in headers
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>"


def _num(value: int) -> str:
    return f'<td class="n">{value:,}</td>'


def _ms(value: int | None) -> str:
    return "-" if value is None else human_ms(value)


def _head(f: IncidentReport, now: datetime) -> list[str]:
    title = f"Incident report: {f.entity_id} on {f.day}"
    return [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="color-scheme" content="light dark">',
        f"<title>{esc(title)}</title>",
        f"<style>{STYLE}</style>",
        "</head>",
        "<body>",
        "<main>",
        f"<h1>Incident report: {_code(f.entity_id)} on {esc(f.day)}</h1>",
        f'<p class="meta">Written {now:%Y-%m-%d %H:%M} UTC by <code>pik report</code> from {esc(f.backend)} '
        f"backend {_code(f.location)}. The window is [{esc(f.window_start)}, {esc(f.window_end)}), UTC.</p>",
        '<div class="cards">',
        _card(f.events, "events"),
        _card(f.duplicates, "duplicate receipts"),
        _card(f.late_arrivals, "late (lag ≥ 1h)"),
        _card(len(f.replays), "replays"),
        _card(len(f.versions), "aggregate versions"),
        "</div>",
    ]


def _card(value: int, label: str) -> str:
    return f'<div class="card"><b>{value:,}</b><span>{esc(label)}</span></div>'


def _findings(findings: Sequence[Mapping[str, Any]] | None) -> list[str]:
    if findings is None:
        return []
    out = ['<section id="findings">', "<h2>Findings</h2>"]
    if not findings:
        return [*out, "<p>No finding for this window.</p>", "</section>"]
    out.append(_thead("severity", "kind", "where", "what"))
    for item in findings:
        severity = str(item.get("severity") or "")
        cls = f"sev sev-{severity}" if severity in SEVERITIES else "sev"
        where = [
            esc(f"{item.get('source') or '*'}/{item.get('event_type') or '*'}")
            if item.get("source") or item.get("event_type")
            else "",
            _code(item["entity_id"]) if item.get("entity_id") else "",
            esc(item["day"]) if item.get("day") else "",
        ]
        what = [f"<p>{esc(item.get('summary') or '')}</p>"]
        evidence = item.get("evidence")
        if isinstance(evidence, Mapping) and evidence:
            what.append('<dl class="evidence">')
            for key, value in evidence.items():
                shown = (
                    value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
                )
                what.append(f"<dt>{esc(key)}</dt><dd>{esc(shown)}</dd>")
            what.append("</dl>")
        if item.get("next"):
            what.append(f'<p class="note">next: {_code(item["next"])}</p>')
        out.append(
            f'<tr><td><span class="{cls}">{esc(severity)}</span></td><td>{esc(item.get("kind") or "")}</td>'
            f"<td>{'<br>'.join(w for w in where if w)}</td><td>{''.join(what)}</td></tr>"
        )
    return [*out, "</tbody></table>", "</section>"]


def _events(f: IncidentReport) -> list[str]:
    out = ['<section id="events">', "<h2>Events of the window</h2>"]
    if not f.events + f.duplicates:
        out.append(
            "<p>Nothing is indexed for this entity on this day: check the entity id and the day (UTC).</p>"
        )
        return [*out, "</section>"]
    out.append(
        _thead("source/type", "#events", "#duplicate receipts", "#late (lag ≥ 1h)", "#clock skew", "#max lag")
    )
    for p in f.partitions:
        out.append(
            f"<tr><td>{esc(p.source)}/{esc(p.event_type)}</td>{_num(p.events)}{_num(p.duplicates)}"
            f'{_num(p.late)}{_num(p.clock_skew)}<td class="n">{esc(human_ms(p.max_lag_ms))}</td></tr>'
        )
    out.append("</tbody></table>")
    if f.late_arrivals:
        out.append(f"<h3>Late arrivals ({f.late_arrivals:,}), largest lag first</h3>")
        out.append(_thead("event", "source/type", "event time", "ingested", "#late by"))
        for r in f.largest_late:
            out.append(
                f"<tr><td>{_code(r.event_id[:16])}</td><td>{esc(r.source)}/{esc(r.event_type)}</td>"
                f"<td>{esc(r.event_time)}</td><td>{esc(r.ingest_time)}</td>"
                f'<td class="n">{esc(human_ms(r.ingest_lag_ms))}</td></tr>'
            )
        out.append("</tbody></table>")
    if f.duplicates:
        out.append(
            f"<p>Duplicate receipts: {f.duplicates:,} for {f.duplicated_events:,} events (each event counts "
            f"once; the most repeated one {f.most_receipts} times).</p>"
        )
    return [*out, "</section>"]


def _lag(f: IncidentReport) -> list[str]:
    out = ['<section id="lag">', "<h2>Lag</h2>"]
    total = sum(b.events for b in f.lag_histogram)
    if total:
        bars = [
            Bar(
                b.label,
                b.events,
                "late" if b.low_ms >= LATE_MS else "main",
                f"{b.events:,} events with a lag of {b.label}",
            )
            for b in f.lag_histogram
        ]
        out += [
            "<figure>",
            bar_chart(bars, title=f"Lag of the {total:,} accepted events of {f.entity_id} on {f.day}"),
            f"<figcaption>Ingest lag of the entity's {total:,} accepted events of the day; late "
            "(lag ≥ 1h) in orange.</figcaption>",
            "</figure>",
        ]
    if not f.lag:
        return [*out, "<p>No partition to report on.</p>", "</section>"]
    out.append(
        "<h3>The day's partitions, all entities</h3>"
        + _thead("source/type", "#events", "#p50", "#p90", "#p99", "#max", "#late (≥ 1h)")
    )
    for lag in f.lag:
        share = f"{lag.late:,} ({100 * lag.late / lag.count:.0f}%)" if lag.count else "0"
        cells = "".join(
            f'<td class="n">{esc(_ms(v))}</td>' for v in (lag.p50_ms, lag.p90_ms, lag.p99_ms, lag.max_ms)
        )
        out.append(
            f"<tr><td>{esc(lag.source)}/{esc(lag.event_type)}</td>{_num(lag.count)}{cells}"
            f'<td class="n">{esc(share)}</td></tr>'
        )
    return [*out, "</tbody></table>", "</section>"]


def _days(f: IncidentReport) -> list[str]:
    gaps = f.gaps
    out = [
        '<section id="days">',
        "<h2>Events per day</h2>",
        f"<p>Events per day of {_code(f.entity_id)}, expected ~{gaps.expected:,.0f}/day (median); late = "
        "after the day + 1h. Duplicate receipts are counted apart: each event counts once.</p>",
    ]
    if gaps.days:
        columns = [
            Stack(
                g.day[5:],  # MM-DD: the year is in the table
                [("on_time", g.on_time), ("late", g.late), ("duplicates", g.duplicates)],
                highlight=g.day == f.day,
            )
            for g in gaps.days
        ]
        legend = [("on_time", "on time"), ("late", "late"), ("duplicates", "duplicate receipts")]
        out += [
            "<figure>",
            stacked_bars(columns, title=f"Events per day of {f.entity_id}", legend=legend),
            f"<figcaption>{esc(f.day)} is highlighted.</figcaption>",
            "</figure>",
        ]
    out.append(_thead("day", "#events", "#on time", "#late", "#duplicates", "status"))
    for g in gaps.days:
        cls = ' class="day-of"' if g.day == f.day else ""
        out.append(
            f"<tr{cls}><td>{esc(g.day)}</td>{_num(g.events)}{_num(g.on_time)}{_num(g.late)}"
            f"{_num(g.duplicates)}<td>{esc(g.status.value)}</td></tr>"
        )
    out.append("</tbody></table>")
    if gaps.never_arrived:
        out.append(f"<p>Never arrived: {esc(', '.join(gaps.never_arrived))}</p>")
    if gaps.arrived_late:
        out.append(f"<p>Arrived late: {esc(', '.join(gaps.arrived_late))}</p>")
    return [*out, "</section>"]


def _replays(f: IncidentReport) -> list[str]:
    out = ['<section id="replays">', "<h2>Replays that covered the window</h2>"]
    if not f.replays:
        return [*out, "<p>None in the audit trail.</p>", "</section>"]
    out.append(_thead("started", "replay", "outcome", "by", "#sent / planned", "scope"))
    for a in f.replays:
        why = f'<br><span class="note">{esc(a.error)}</span>' if a.error else ""
        out.append(
            f'<tr><td class="t">{esc(a.started_at)}</td><td>{_code(a.replay_id)}</td>'
            f"<td>{esc(a.outcome.value)}{why}</td>"
            f'<td>{esc(a.actor)}</td><td class="n">{a.sent:,} / {a.would_send:,}</td>'
            f"<td>{esc(describe_scope(a.request))}</td></tr>"
        )
    return [*out, "</tbody></table>", "</section>"]


def _versions(f: IncidentReport) -> list[str]:
    out = ['<section id="versions">', "<h2>Aggregate versions</h2>"]
    if not f.versions:
        return [*out, "<p>No aggregate versions for this window.</p>", "</section>"]
    for metric in sorted({v.metric for v in f.versions}):
        mine = [v for v in f.versions if v.metric == metric]
        points = [
            Point(
                f"v{v.version}",
                v.value,
                note=v.computed_at[:16].replace("T", " "),
                tip=f"version {v.version}: {value_text(v.value)} from {v.input_count:,} inputs, "
                f"computed {v.computed_at}",
            )
            for v in mine
        ]
        out += [
            f"<h3>{esc(metric)}</h3>",
            "<figure>",
            timeline(points, title=f"{metric} of {f.entity_id} on {f.day}, by version", height=180),
            "</figure>",
            _thead("#version", "#value", "#inputs", "computed", "caused by"),
        ]
        for v in mine:
            cause = ", ".join(_code(r) for r in v.replay_ids) if v.replay_ids else "direct recompute"
            out.append(
                f'<tr><td class="n">{v.version}</td><td class="n">{esc(value_text(v.value))}</td>'
                f"{_num(v.input_count)}<td>{esc(v.computed_at)}</td><td>{cause}</td></tr>"
            )
        out.append("</tbody></table>")
        for change in (c for c in f.changes if c.metric == metric):
            out.append(f"<h4>Version {change.newer - 1} → {change.newer}</h4>")
            bullets = [line[2:] for line in change.explanation if line.startswith("- ")]
            out += [f"<p>{esc(line)}</p>" for line in change.explanation if not line.startswith("- ")]
            if bullets:
                out.append("<ul>" + "".join(f"<li>{esc(b)}</li>" for b in bullets) + "</ul>")
    return [*out, "</section>"]


def _checklist(f: IncidentReport) -> list[str]:
    out = [
        '<section id="checklist">',
        "<h2>Before closing the incident</h2>",
        "<p>The seed's checklist; the tool ticks what it can check and says why, the rest is yours.</p>",
        '<ul class="checks">',
    ]
    for check in checklist(f):
        mark = '<span class="tick ok">☑</span>' if check.ok else '<span class="tick no">☐</span>'
        why = "".join(_code(p) if isinstance(p, Ident) else esc(p) for p in check.why)
        out.append(f"<li>{mark}<b>{esc(check.label)}</b> — {why}.</li>")
    return [*out, "</ul>", "</section>"]
