"""``pik process`` (drain the replay queue through the processor), ``pik aggregates`` (the versions of a
window) and ``pik diff`` (two versions side by side, and why they differ)."""

from __future__ import annotations

import argparse
import os
from typing import IO, Any

from backend.errors import InvalidRequest
from backend.model import AggregateVersion
from backend.services.drain import DrainService
from backend.services.processor import ProcessorService, metrics_with_default
from backend.services.versions import VersionDiff, VersionService, value_text
from backend.times import TimeFormatError, human_ms, parse_day
from pik_console import cli
from pik_console.investigate_cmd import backend_port, workspace_settings
from pik_console.text import safe


def _dry_run_env() -> bool:
    return os.environ.get("DRY_RUN", "").strip().lower() in ("1", "true", "yes", "on")


# -- pik process ---------------------------------------------------------------------------------------------


def cmd_process(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.backend == "aws" or os.environ.get("PIK_BACKEND") == "aws":
        raise cli._usage("pik process drains the local replay queue; on AWS the processor Lambda consumes it")
    dry_run = args.dry_run or _dry_run_env()
    backend = cli.open_backend(args, create=False)
    try:
        settings = workspace_settings(backend)
        try:
            metrics = metrics_with_default(settings.metrics)
        except InvalidRequest as exc:
            raise cli.Failure(f"settings.toml: {exc}") from None
        queue = backend_port(backend, "queue", "process")
        service = ProcessorService(
            backend_port(backend, "investigate", "process"),
            backend_port(backend, "catalog", "process"),
            backend_port(backend, "aggregates", "process"),
            metrics[1:],
            dry_run=dry_run,
            read_only=backend.read_only,
        )
        report = drain(queue, service, settings.queue.visibility_timeout_s, args.max_messages, err, args.json)
        depth = queue.depth()
    finally:
        backend.close()
    report["queue"] = {"visible": depth.visible, "in_flight": depth.in_flight, "dead": depth.dead}
    report["metrics"] = [m.name for m in metrics]
    if args.json:
        cli._print_json(report, out)
    else:
        _print_process(report, out)
    return 1 if report["failed_messages"] else 0


def drain(
    queue: Any,
    service: ProcessorService,
    visibility_s: int,
    max_messages: int | None,
    err: IO[str],
    quiet: bool,
) -> dict[str, Any]:
    """``pik process``'s drain: :meth:`DrainService.run <backend.services.drain.DrainService.run>` with its
    progress on ``err`` when that is a terminal and not ``quiet``; the result as ``pik process --json``
    prints it (before the queue depth and the metric names are added).

    Refused (ReadOnlyError, nothing received) with a read-only ``service``, even for a dry run."""
    drainer = DrainService(queue, service, visibility_timeout_s=visibility_s)
    if not (err.isatty() and not quiet):
        return drainer.run(max_messages=max_messages).model_dump()

    def progress(received: int, written: int) -> None:
        err.write(f"\r  {received:,} messages received, {written:,} versions written…")
        err.flush()

    try:
        result = drainer.run(max_messages=max_messages, on_progress=progress)
    finally:
        err.write("\r\x1b[K")
    return result.model_dump()


def _print_process(r: dict[str, Any], out: IO[str]) -> None:
    if not r["received"]:
        q = r["queue"]
        out.write(
            f"The replay queue has no visible messages ({q['in_flight']:,} in flight, {q['dead']:,} dead "
            "letters). Send some with `pik replay ... --execute`.\n"
        )
        return
    mode = "DRY RUN (nothing written): " if r["dry_run"] else ""
    verb = "would be written" if r["dry_run"] else "written"
    out.write(
        f"{mode}{r['received']:,} messages received in {r['seconds']:.1f} s: {r['processed']:,} processed, "
        f"{r['failed_attempts']:,} failed attempts, {r['dead_lettered']:,} dead-lettered\n"
    )
    windows = f"{r['windows']:,} aggregate window{'' if r['windows'] == 1 else 's'}"
    out.write(
        f"  {windows} ({', '.join(r['metrics'])}), {r['recomputes']:,} recomputes: "
        f"{r['versions_written']:,} new versions {verb}, {r['unchanged']:,} unchanged (same inputs)\n"
    )
    if r["failures"]:
        out.write("Messages that still fail:\n")
        for f in r["failures"]:
            out.write(f"  {f['message_id']}: {safe(f['reason'], 300)}\n")
    q = r["queue"]
    out.write(
        f"Queue now: {q['visible']:,} visible, {q['in_flight']:,} in flight, {q['dead']:,} dead letters\n"
    )


# -- pik aggregates ------------------------------------------------------------------------------------------


def _version_service(backend: Any, command: str) -> VersionService:
    return VersionService(
        backend_port(backend, "aggregates", command),
        backend_port(backend, "investigate", command),
        backend_port(backend, "audit", command),
    )


def _version_json(v: AggregateVersion) -> dict[str, Any]:
    return v.model_dump(mode="json")


def cmd_aggregates(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    day = _day(args.day)
    backend = cli.open_backend(args, create=False)
    try:
        versions = _version_service(backend, "aggregates").versions(args.entity, day, args.metric)
    except InvalidRequest as exc:
        raise cli._usage(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        cli._print_json({"items": [_version_json(v) for v in versions]}, out)
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
    cli._table(
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
        raise cli._usage(str(exc)) from None


# -- pik diff ------------------------------------------------------------------------------------------------


def cmd_diff(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    day = _day(args.day)
    if (args.from_version is not None or args.to_version is not None) and not args.metric:
        raise cli._usage("--from/--to need --metric (version numbers belong to one metric)")
    backend = cli.open_backend(args, create=False)
    diffs: list[VersionDiff] = []
    skipped: list[str] = []
    try:
        service = _version_service(backend, "diff")
        if args.metric:
            diffs.append(service.diff(args.entity, day, args.metric, args.from_version, args.to_version))
        else:
            names = sorted({v.metric for v in service.versions(args.entity, day)})
            if not names:
                raise cli.Failure(f"no aggregate versions for {safe(args.entity)} on {day}")
            for name in names:
                try:
                    diffs.append(service.diff(args.entity, day, name))
                except InvalidRequest as exc:
                    skipped.append(str(exc))
    except InvalidRequest as exc:
        raise cli.Failure(str(exc)) from None
    finally:
        backend.close()
    if args.json:
        cli._print_json({"diffs": [d.model_dump(mode="json") for d in diffs], "skipped": skipped}, out)
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
    cli._table(
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
        cli._table(
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
        cli._table(
            [[c.event_id[:16], c.ingest_time, human_ms(c.ingest_lag_ms)] for c in d.removed_sample],
            ["EVENT ID", "INGESTED", "LAG"],
            out,
            right=["LAG"],
        )


# -- registration ------------------------------------------------------------------------------------------


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "process",
        parents=[common],
        help="drain the local replay queue through the processor (versioned aggregates)",
        description="Receive replay messages, recompute every (entity, day) they touch from the whole window "
        "in the index, and append a new aggregate version for each metric whose inputs changed. Failed "
        "messages are retried until the queue dead-letters them (settings.toml [queue] max_receives). "
        "--dry-run (or DRY_RUN=true) computes and reports without writing or consuming messages.",
    )
    p.add_argument("--dry-run", action="store_true", help="compute and report; write nothing")
    p.add_argument("--max-messages", type=cli._int, metavar="N", help="stop after receiving N messages")
    p.add_argument("--read-only", action="store_true", help=cli.READ_ONLY_HELP)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_process)

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
    p.add_argument("--from", dest="from_version", type=cli._int, metavar="N")
    p.add_argument("--to", dest="to_version", type=cli._int, metavar="M")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_diff)
