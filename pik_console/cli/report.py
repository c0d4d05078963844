"""``pik report``: the incident report of an entity and a day, in Markdown (the default; the console's
Palette → Report writes the same file) or as one self-contained HTML page with charts (``--format html``)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.times import TimeFormatError, parse_day
from pik_console.cli.common import Failure, backend_context, open_backend, print_json, usage
from pik_console.report import FORMATS, build_report, report_findings
from pik_console.text import safe


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "report",
        parents=[common],
        help="an incident report of an entity and a day (Markdown, or HTML with charts)",
        description="Scope, late and duplicate events, lag, gaps, replays, aggregate versions with their "
        "explanations, and the seed's checklist before closing an incident, ticked where the tool can. "
        "--format html writes one self-contained page (inline SVG charts, no script, nothing fetched).",
    )
    p.add_argument("--entity", metavar="E", required=True)
    p.add_argument("--day", metavar="YYYY-MM-DD", required=True, help="the day (UTC)")
    p.add_argument(
        "--format",
        metavar="FORMAT",
        default="markdown",
        help=f"{' or '.join(FORMATS)} (default: markdown)",
    )
    p.add_argument("--out", metavar="FILE", help="write the report to FILE (default: print it)")
    p.add_argument("--json", action="store_true", help="print {entity, day, format, <format>} as JSON")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    fmt = args.format.lower()
    if fmt not in FORMATS:
        raise usage(f"--format must be {' or '.join(FORMATS)}, got {safe(repr(args.format))}")
    try:
        day = parse_day(args.day, what="--day")
    except TimeFormatError as exc:
        raise usage(str(exc)) from None
    backend = open_backend(args, create=False)
    try:
        # What the overview finds wrong on that day (for the entity, or its whole source/type).
        findings = report_findings(backend, args.entity, day, context=backend_context(args))
        text = build_report(backend, args.entity, day, fmt=fmt, findings=findings)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json({"entity": args.entity, "day": day, "format": fmt, fmt: text}, out)
    elif args.out:
        path = Path(args.out)
        try:
            path.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise Failure(f"cannot write {args.out}: {exc.strerror or exc}") from None
        out.write(f"Report written to {safe(str(path))}\n")
    else:
        out.write(text)
    return 0
