"""``pik overview``: what is wrong here, ranked: the findings of a range of days, most severe first, each
with its evidence and the next command to run."""

from __future__ import annotations

import argparse
from datetime import date, timedelta
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.services.overview import Overview
from pik_console.cli.common import backend_context, open_backend, print_json, table, usage
from pik_console.overview_view import COLUMNS, finding_rows


def cmd_overview(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    backend = open_backend(args, create=False)
    try:
        try:
            report = backend.overview().overview(args.since, args.until, context=backend_context(args))
        except InvalidRequest as exc:
            raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json(report.model_dump(mode="json"), out)
        return 0
    _print(report, out)
    return 0


def _print(r: Overview, out: IO[str]) -> None:
    last = r.end_day if r.first_day == r.end_day else _before(r.end_day)
    if not r.findings:
        out.write(f"Nothing unusual from {r.first_day} to {last} (baselines from {r.history_from}).\n")
        return
    n = len(r.findings)
    out.write(
        f"{n} finding{'s' if n != 1 else ''} from {r.first_day} to {last}, most severe first "
        f"(baselines from {r.history_from}):\n\n"
    )
    rows = finding_rows(r.findings)
    table([row[:4] for row in rows], COLUMNS[:4], out, right=("severity",))
    out.write("\n")
    for i, (f, row) in enumerate(zip(r.findings, rows, strict=True), start=1):
        out.write(f"{i}. {row[4]}\n   next: {f.next}\n")
    if r.omitted:
        out.write(f"\n{r.omitted} more not shown (overview.max_findings in settings.toml).\n")


def _before(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "overview",
        parents=[common],
        help="what is wrong here, ranked: missing and late days, lag spikes, duplicates, rejections, ...",
        description="Finds and ranks the incidents of a range of event days (default: the last 14 event days "
        "in the workspace or stack): missing_day, late_day, lag_spike, duplicate_storm, rejection_spike, "
        "clock_skew, aggregate_churn, each with its evidence and the next command to run. Each day is "
        "compared with the median and MAD of its series (the same weekday once there are 3 weeks); the "
        "thresholds are the [overview] section of settings.toml.",
    )
    p.add_argument("--since", metavar="YYYY-MM-DD", help="first event day (inclusive)")
    p.add_argument("--until", metavar="YYYY-MM-DD", help="last event day (inclusive)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_overview)
