"""``pik report --entity E --day D``: a Markdown incident report of one (entity, day) - the scope, what
arrived late or twice, the day's lag and the entity's gaps, the replays that covered it, the aggregate
versions with the explanation of every change, and the seed's "before closing an incident" checklist
with what the tool can check ticked (and why), the rest left to the person closing it.

Data goes into the Markdown as text, never as structure: control characters are escaped (no newline can
start a block), identifiers are code spans fenced longer than any backtick run they hold, and other text has
every character Markdown could read as a link, an image, an HTML tag, emphasis, a table cell or a heading
backslash-escaped. The text reads the same once rendered (a renderer with GitHub's bare-URL autolinking
still turns a URL in the data into a link to that same URL).
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.model import ReplayAudit, ReplayOutcome
from backend.ports import ManifestEntry, Receipt
from backend.services.processor import inputs_hash
from backend.services.scope import describe_scope
from backend.services.versions import value_text
from backend.times import TimeFormatError, human_ms, parse_day
from pik_console.console.context import add_days, day_start, next_day
from pik_console.console.services import ConsoleServices, build_services
from pik_console.text import safe

LATE_MS = 3_600_000
SCAN_PAGE = 5000


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


def report_path(entity: str, day: str, folder: Path | None = None) -> Path:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", entity).strip("_")[:60] or "entity"
    return (folder or Path.cwd()) / f"pik-report-{slug}-{day}.md"


def _window(services: ConsoleServices, entity: str, day: str) -> list[Receipt]:
    out: list[Receipt] = []
    after: str | None = None
    while True:
        page = services.investigate.scan_entity(
            entity, day_start(day), day_start(next_day(day)), limit=SCAN_PAGE, after=after
        )
        out.extend(page.items)
        if page.next_cursor is None:
            return out
        after = page.next_cursor


def _covers(a: ReplayAudit, entity: str, day: str, partitions: set[tuple[str, str]]) -> bool:
    r = a.request
    if r.entity_id is not None:
        return (
            r.entity_id == entity
            and (r.start_time or "") < day_start(next_day(day))
            and (r.end_time or "") > day_start(day)
        )
    if (r.source, r.event_type) not in partitions:
        return False
    return (r.start_day or "") <= day < (r.end_day or "")


def _replays(
    services: ConsoleServices, entity: str, day: str, partitions: set[tuple[str, str]]
) -> list[ReplayAudit]:
    if services.audit is None:
        return []
    found: list[ReplayAudit] = []
    after: str | None = None
    for _ in range(100):  # the newest 10,000 records at most
        page = services.audit.query(limit=100, after=after)
        found += [a for a in page.items if _covers(a, entity, day, partitions)]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    return sorted(found, key=lambda a: (a.started_at, a.replay_id))


def build_report(services: ConsoleServices, entity: str, day: str, *, now: datetime | None = None) -> str:
    """The Markdown report of ``entity`` on ``day``. Reads only; InvalidRequest for a bad day."""
    try:
        parse_day(day)
    except TimeFormatError as exc:
        raise InvalidRequest(str(exc)) from None
    if services.investigate is None:
        raise InvalidRequest(
            f"reports need the investigation queries, not available on the {services.kind} backend"
        )
    now = now or datetime.now(UTC)
    lines: list[str] = []
    add = lines.append
    receipts = _window(services, entity, day)
    accepted = [r for r in receipts if r.accepted]
    dups = [r for r in receipts if not r.accepted]
    partitions = {(r.source, r.event_type) for r in receipts}

    add(f"# Incident report: {code(entity)} on {day}")
    add("")
    add(
        f"Written {now:%Y-%m-%d %H:%M} UTC by `pik report` from {md(services.kind)} backend "
        f"{code(services.location)}."
    )
    add("")
    add("## Scope")
    add("")
    add(f"- Entity: {code(entity)}")
    add(f"- Day: {day} (UTC), the window [{day_start(day)}, {day_start(next_day(day))})")
    add(f"- In the index: {len(accepted):,} events, {len(dups):,} duplicate receipts")
    add("")

    add("## Events of the window")
    add("")
    if not receipts:
        add("Nothing is indexed for this entity on this day: check the entity id and the day (UTC).")
    else:
        add("| source/type | events | duplicate receipts | late (lag ≥ 1h) | clock skew | max lag |")
        add("|---|---:|---:|---:|---:|---:|")
        for source, event_type in sorted(partitions):
            mine = [r for r in accepted if (r.source, r.event_type) == (source, event_type)]
            mine_dups = sum(1 for r in dups if (r.source, r.event_type) == (source, event_type))
            late = sum(1 for r in mine if r.ingest_lag_ms >= LATE_MS)
            skew = sum(1 for r in mine if r.clock_skew)
            top = max((r.ingest_lag_ms for r in mine), default=0)
            add(
                row(
                    f"{md(source)}/{md(event_type)}",
                    f"{len(mine):,}",
                    f"{mine_dups:,}",
                    f"{late:,}",
                    f"{skew:,}",
                    human_ms(top),
                )
            )
        late_events = sorted(
            (r for r in accepted if r.ingest_lag_ms >= LATE_MS), key=lambda r: -r.ingest_lag_ms
        )
        if late_events:
            add("")
            add(f"Late arrivals ({len(late_events):,}), largest lag first:")
            add("")
            for r in late_events[:10]:
                add(
                    f"- {code(r.event_id[:16])} {md(r.source)}/{md(r.event_type)} at {r.event_time}, "
                    f"ingested {r.ingest_time} ({human_ms(r.ingest_lag_ms)} late)"
                )
        if dups:
            counts = Counter(r.event_id for r in dups)
            add("")
            add(
                f"Duplicate receipts: {len(dups):,} for {len(counts):,} events (each event counts once; the "
                f"most repeated one {max(counts.values()) + 1} times)."
            )
    add("")

    add("## Lag of the day's partitions")
    add("")
    if partitions:
        add("All entities, the accepted events of each partition the entity has events in:")
        add("")
        add("| source/type | events | p50 | p90 | p99 | max | late (≥ 1h) |")
        add("|---|---:|---:|---:|---:|---:|---:|")
        for source, event_type in sorted(partitions):
            lag = services.lag_service().lag(source, event_type, day, late_ms=LATE_MS, top=0)
            share = f"{lag.late:,} ({100 * lag.late / lag.count:.0f}%)" if lag.count else "0"

            def ms(v: int | None) -> str:
                return "-" if v is None else human_ms(v)

            add(f"| {md(source)}/{md(event_type)} | {lag.count:,} | {ms(lag.p50_ms)} | {ms(lag.p90_ms)} | "
                f"{ms(lag.p99_ms)} | {ms(lag.max_ms)} | {share} |")  # fmt: skip
    else:
        add("No partition to report on.")
    add("")

    add("## Gaps around the day")
    add("")
    gap_service = services.gap_service()
    gaps = gap_service.gaps(add_days(day, -7), add_days(day, 8), entity_id=entity, grace_ms=LATE_MS)
    last = max((g.day for g in gaps.days if g.events), default=day)
    if last < gaps.days[-1].day:
        # Days after the last one with events hold nothing yet: not gaps, and not part of the median.
        gaps = gap_service.gaps(
            add_days(day, -7), next_day(max(last, day)), entity_id=entity, grace_ms=LATE_MS
        )
    add(
        f"Events per day of {code(entity)}, expected ~{gaps.expected:,.0f}/day (median); "
        "late = after the day + 1h."
    )
    add("")
    add("| day | events | on time | late | duplicates | status |")
    add("|---|---:|---:|---:|---:|---|")
    for g in gaps.days:
        mark = "**" if g.day == day else ""
        add(
            row(
                f"{mark}{g.day}{mark}",
                f"{g.events:,}",
                f"{g.on_time:,}",
                f"{g.late:,}",
                f"{g.duplicates:,}",
                g.status.value,
            )
        )
    if gaps.never_arrived or gaps.arrived_late:
        add("")
        if gaps.never_arrived:
            add(f"- Never arrived: {', '.join(gaps.never_arrived)}")
        if gaps.arrived_late:
            add(f"- Arrived late: {', '.join(gaps.arrived_late)}")
    add("")

    replays = _replays(services, entity, day, partitions)
    add("## Replays that covered the window")
    add("")
    if not replays:
        add("None in the audit trail.")
    else:
        add("| started | replay | outcome | by | sent / planned | scope |")
        add("|---|---|---|---|---:|---|")
        for a in replays:
            add(f"| {a.started_at} | {code(a.replay_id, cell=True)} | {a.outcome.value} | {md(a.actor)} | "
                f"{a.sent:,} / {a.would_send:,} | {md(describe_scope(a.request))} |")  # fmt: skip
    add("")

    add("## Aggregate versions")
    add("")
    versions = []
    explained: list[tuple[str, list[str]]] = []
    inspector = None
    if services.aggregates is not None:
        inspector = services.version_service()
        versions = inspector.versions(entity, day)
    if not versions:
        add("No aggregate versions for this window.")
    else:
        add("| metric | version | value | inputs | computed | caused by |")
        add("|---|---:|---:|---:|---|---|")
        for v in versions:
            cause = (
                ", ".join(code(r, cell=True) for r in v.replay_ids) if v.replay_ids else "direct recompute"
            )
            add(
                row(
                    md(v.metric),
                    str(v.version),
                    value_text(v.value),
                    f"{v.input_count:,}",
                    v.computed_at,
                    cause,
                )
            )
        assert inspector is not None
        for metric in sorted({v.metric for v in versions}):
            numbers = [v.version for v in versions if v.metric == metric]
            for newer in numbers[1:]:
                diff = inspector.diff(entity, day, metric, newer - 1, newer)
                explained.append((f"{metric}: version {newer - 1} → {newer}", diff.explanation))
        for heading, explanation in explained:
            add("")
            add(f"### {md(heading)}")
            add("")
            for line in explanation:
                add("- " + md(line[2:]) if line.startswith("- ") else md(line))
    add("")

    add("## Before closing the incident")
    add("")
    add("The seed's checklist; the tool ticks what it can check and says why, the rest is yours.")
    add("")
    missing = (
        services.catalog.missing([r.s3_key for r in receipts]) if services.catalog and receipts else set()
    )
    raw_ok = bool(receipts) and not missing
    if raw_ok:
        why = f"all {len(receipts):,} receipts of the window have their raw bytes"
    else:
        why = f"{len(missing):,} receipts have no raw bytes" if missing else "no receipts in the window"
    add(_check(raw_ok, "Raw events verified", why))
    sent = [a for a in replays if a.outcome is ReplayOutcome.SENT]
    why = (
        f"{len(sent)} replay(s) covering the window were sent in full: "
        + ", ".join(code(a.replay_id) for a in sent)
        if sent
        else "no replay covering the window was sent"
    )
    add(_check(bool(sent), "Replay scoped correctly", why))
    caused = {r for v in versions for r in v.replay_ids}
    observed = [a.replay_id for a in sent if a.replay_id in caused]
    dead = services.queue.depth().dead if services.queue is not None else 0
    why = (
        f"versions were computed from replay {', '.join(code(r) for r in observed)}"
        if observed
        else "no version was computed from a replay of this window"
    )
    why += f"; {dead:,} messages in the dead-letter queue" if dead else "; no dead letters"
    add(_check(bool(observed) and dead == 0, "Processor behavior observed", why))
    drift = _drift(versions, accepted)
    valid = bool(versions) and not drift
    if valid:
        why = "the latest version of every metric has exactly the inputs the index holds now"
    elif drift:
        why = f"{', '.join(drift)}: the index now holds other inputs than the latest version"
    else:
        why = "no versions"
    add(_check(valid, "Aggregate version validated", why + " (a person confirms the numbers)"))
    add("- [ ] Root cause documented — yours to write: what broke, why, and what was done.")
    add("")
    return "\n".join(lines)


def _drift(versions: list[Any], accepted: list[Receipt]) -> list[str]:
    """The metrics whose latest version's inputs are not the window's accepted events now (by hash)."""
    latest: dict[str, Any] = {}
    for v in versions:
        latest[v.metric] = v
    out = []
    for metric, v in sorted(latest.items()):
        spec = v.definition
        chosen = sorted(
            (
                r
                for r in accepted
                if (spec.event_type in (None, r.event_type)) and (spec.source in (None, r.source))
            ),
            key=lambda r: r.event_id,
        )
        manifest = [ManifestEntry(r.event_id, r.payload_sha, r.ingest_time, r.ingest_lag_ms) for r in chosen]
        if inputs_hash(manifest) != v.inputs_hash:
            out.append(metric)
    return out


def _check(ok: bool, label: str, why: str) -> str:
    return f"- [{'x' if ok else ' '}] {label} — {why}."


# -- pik report ------------------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from pik_console import cli

    try:
        day = parse_day(args.day, what="--day")
    except TimeFormatError as exc:
        raise cli._usage(str(exc)) from None
    backend = cli.open_backend(args, create=False)
    try:
        text = build_report(build_services(backend), args.entity, day)
    except InvalidRequest as exc:
        raise cli._usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        cli._print_json({"entity": args.entity, "day": day, "markdown": text}, out)
    elif args.out:
        path = Path(args.out)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise cli.Failure(f"cannot write {args.out}: {exc.strerror or exc}") from None
        out.write(f"Report written to {safe(str(path))}\n")
    else:
        out.write(text)
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="a Markdown incident report of an entity and a day",
        description="Scope, late and duplicate events, lag, gaps, replays, aggregate versions with their "
        "explanations, and the seed's checklist before closing an incident, ticked where the tool can.",
    )
    p.add_argument("--entity", metavar="E", required=True)
    p.add_argument("--day", metavar="YYYY-MM-DD", required=True, help="the day (UTC)")
    p.add_argument("--out", metavar="FILE", help="write the report to FILE (default: print it)")
    p.add_argument("--json", action="store_true", help="print {entity, day, markdown} as JSON")
    p.set_defaults(func=cmd_report)
