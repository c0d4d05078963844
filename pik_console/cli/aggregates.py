"""``pik aggregates`` (the versions of a window) and ``pik diff`` (two versions side by side, and why they
differ)."""

from __future__ import annotations

import argparse
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.model import AggregateVersion
from backend.services.versions import VersionDiff, value_text
from backend.times import TimeFormatError, human_ms, parse_day
from pik_console.cli.common import Failure, count, open_backend, print_json, table, usage
from pik_console.text import safe

# -- pik aggregates ------------------------------------------------------------------------------------------


def _version_json(v: AggregateVersion) -> dict[str, Any]:
    return v.model_dump(mode="json")


def cmd_aggregates(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    day = _day(args.day)
    backend = open_backend(args, create=False)
    try:
        versions = backend.versions().versions(args.entity, day, args.metric)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json({"items": [_version_json(v) for v in versions]}, out)
        return 0
    if not versions:
        what = f"{args.metric} " if args.metric else ""
        out.write(
            f"No {what}aggregate versions for {safe(args.entity)} on {day}. Preview a replay of the day "
            f"(`pik replay --entity ... --day {day}`), send it with --execute, then run `pik process`.\n"
        )
        return 0
    rows = []
    for v in versions:
        replay = safe(", ".join(v.replay_ids), 80) if v.replay_ids else "-"
        rows.append(
            [
                v.metric,
                str(v.version),
                value_text(v.value),
                f"{v.input_count:,}",
                v.computed_at,
                replay,
                v.inputs_hash[:12],
            ]
        )
    out.write(f"Aggregate versions of {safe(args.entity)} on {day}:\n")
    table(
        rows,
        ["METRIC", "VERSION", "VALUE", "INPUTS", "COMPUTED", "REPLAY", "INPUTS HASH"],
        out,
        right=["VERSION", "VALUE", "INPUTS"],
    )
    if any(v.version > 1 for v in versions):
        out.write("See why a value changed: pik diff --entity ... --day ... --metric M\n")
    return 0


def _day(text: str) -> str:
    try:
        return parse_day(text, what="--day")
    except TimeFormatError as exc:
        raise usage(str(exc)) from None


# -- pik diff ------------------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    day = _day(args.day)
    if (args.from_version is not None or args.to_version is not None) and not args.metric:
        raise usage("--from/--to need --metric (version numbers belong to one metric)")
    backend = open_backend(args, create=False)
    diffs: list[VersionDiff] = []
    skipped: list[str] = []
    try:
        inspector = backend.versions()
        if args.metric:
            diffs.append(inspector.diff(args.entity, day, args.metric, args.from_version, args.to_version))
        else:
            names = sorted({v.metric for v in inspector.versions(args.entity, day)})
            if not names:
                raise Failure(f"no aggregate versions for {safe(args.entity)} on {day}")
            for name in names:
                try:
                    diffs.append(inspector.diff(args.entity, day, name))
                except InvalidRequest as exc:
                    skipped.append(str(exc))
    except InvalidRequest as exc:
        raise Failure(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        print_json({"diffs": [d.model_dump(mode="json") for d in diffs], "skipped": skipped}, out)
        return 0
    for i, d in enumerate(diffs):
        if i:
            out.write("\n")
        _print_diff(d, out)
    for note in skipped:
        out.write(f"\n({safe(note)})\n")
    return 0


def _print_diff(d: VersionDiff, out: IO[str]) -> None:
    o, n = d.older, d.newer
    table(
        [
            ["value", value_text(o.value), value_text(n.value)],
            ["inputs", f"{o.input_count:,}", f"{n.input_count:,}"],
            ["computed", o.computed_at, n.computed_at],
            ["replay", safe(", ".join(o.replay_ids), 80) or "-", safe(", ".join(n.replay_ids), 80) or "-"],
            ["inputs hash", o.inputs_hash[:16], n.inputs_hash[:16]],
        ],
        ["", f"VERSION {o.version}", f"VERSION {n.version}"],
        out,
    )
    out.write("\n")
    for line in d.explanation:
        out.write(safe(line, 1000) + "\n")
    if d.added_sample:
        out.write(f"\nAdded (first {len(d.added_sample)} of {d.added:,}, by ingest time):\n")
        table(
            [
                [c.event_id[:16], c.ingest_time, human_ms(c.ingest_lag_ms), "late" if c.after_older else ""]
                for c in d.added_sample
            ],
            ["EVENT ID", "INGESTED", "LAG", ""],
            out,
            right=["LAG"],
        )
    if d.removed_sample:
        out.write(f"\nRemoved (first {len(d.removed_sample)} of {d.removed:,}):\n")
        table(
            [[c.event_id[:16], c.ingest_time, human_ms(c.ingest_lag_ms)] for c in d.removed_sample],
            ["EVENT ID", "INGESTED", "LAG"],
            out,
            right=["LAG"],
        )


# -- registration ------------------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("aggregates", parents=[common], help="the aggregate versions of an (entity, day)")
    p.add_argument("--entity", metavar="E", required=True)
    p.add_argument("--day", metavar="YYYY-MM-DD", required=True)
    p.add_argument("--metric", metavar="M")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_aggregates)

    p = sub.add_parser(
        "diff",
        parents=[common],
        help="two aggregate versions side by side, and an explanation of the change",
        description="Value change, events added and removed between the input manifests, and an explanation "
        "(late arrivals and their lag, the replay that produced the newer version, duplicates excluded) to "
        "paste into an incident channel. Default: the last two versions of every metric of the window.",
    )
    p.add_argument("--entity", metavar="E", required=True)
    p.add_argument("--day", metavar="YYYY-MM-DD", required=True)
    p.add_argument("--metric", metavar="M")
    p.add_argument("--from", dest="from_version", type=count, metavar="N")
    p.add_argument("--to", dest="to_version", type=count, metavar="M")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)
