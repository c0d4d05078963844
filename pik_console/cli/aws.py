"""``pik aws``: the AWS side. ``pik aws init`` creates the template's resources on an AWS-compatible endpoint
(a moto server, LocalStack) and prints the settings that point the kit at them; ``pik aws rollup-backfill``
and ``pik aws heads-backfill`` bring a deployed stack's rollups and window heads up to what it holds.

On AWS itself, deploy ``backend/template.yaml`` with ``sam deploy`` and use ``--stack NAME`` instead.
"""

from __future__ import annotations

import argparse
import shlex
from typing import IO, Any
from urllib.parse import urlsplit

from pik_console.cli.common import (
    DEFAULT_ENDPOINT_REGION,
    READ_ONLY_HELP,
    Failure,
    aws_settings,
    open_backend,
    print_json,
    program_name,
    settings_from,
    usage,
)

# What an endpoint like moto accepts as credentials when none are configured.
FAKE_KEY = "testing"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``pik aws`` and its sub-commands to the ``pik`` parser."""
    aws = sub.add_parser(
        "aws",
        help="the AWS side: create the resources on an endpoint (moto server, LocalStack)",
        description="The AWS side of the kit. To deploy to AWS itself use SAM (docs/aws.md).",
    )
    commands = aws.add_subparsers(dest="aws_command", metavar="COMMAND")
    commands.required = True
    p = commands.add_parser(
        "init",
        parents=[common],
        help="create the bucket, tables and queues on --endpoint-url and print their settings",
        description="Create the kit's bucket, tables, replay queue and dead-letter queue on an "
        "AWS-compatible endpoint (a moto server, LocalStack), or reuse those that exist, and print the "
        "settings as export lines. Run it again at any time: it creates only what is missing.",
    )
    p.add_argument(
        "--prefix",
        default="pik",
        metavar="P",
        help="resource names start with this (default: pik -> pik-raw, pik-events, ...)",
    )
    p.add_argument("--json", action="store_true", help="print the settings and what was done as JSON")
    p.set_defaults(func=cmd_init)
    p = commands.add_parser(
        "rollup-backfill",
        parents=[common],
        help="count what the events table holds into the rollups, then let gaps and lag read them",
        description="Count every receipt and rejection stored before now into the rollup items of a "
        "stack deployed with EnableRollups=true (the rollup function counts what arrives after), then mark "
        "the rollups ready: pik gaps and pik lag read them from then on. Resumes where an interrupted run "
        "stopped; does nothing once the rollups are ready (docs/aws.md, Rollups).",
    )
    p.add_argument(
        "--settle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wait this long after setting the cutoff, longer than an ingest takes (default 60)",
    )
    p.add_argument("--json", action="store_true", help="print what was counted as JSON")
    p.set_defaults(func=cmd_rollup_backfill)
    p = commands.add_parser(
        "heads-backfill",
        parents=[common],
        help="write the window heads of aggregate versions from before them, so dry runs read heads",
        description="Scan the aggregates table once, write the head item of every (entity, day) window "
        "whose versions have none (versions of an earlier release, or of the original kit), then record "
        "that every window has its head: a replay's dry run then reads the heads 100 windows per call "
        "instead of one query per window. Safe to run again; an interrupted run resumes where it stopped "
        "(docs/aws.md, Window heads).",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="count the windows that lack a head and write nothing (allowed in read-only mode)",
    )
    p.add_argument("--read-only", action="store_true", help=READ_ONLY_HELP + " (--dry-run is allowed)")
    p.add_argument("--json", action="store_true", help="print what was found and written as JSON")
    p.set_defaults(func=cmd_heads_backfill)


def cmd_rollup_backfill(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if args.settle < 0:
        raise usage("--settle must be 0 or more seconds")
    if settings_from(args).backend != "aws":
        raise usage("pik aws rollup-backfill works on an AWS stack: add --backend aws (and --stack NAME)")
    kit = open_backend(args, create=False)
    try:
        if kit.read_only:
            raise Failure("pik aws rollup-backfill writes rollup items: refused in read-only mode")
        if kit.rollups is None:
            raise Failure(f"the {kit.name} backend keeps no rollups")
        counted = kit.rollups.backfill(settle_s=args.settle)
    finally:
        kit.close()
    if args.json:
        print_json({"counted": counted, "ready": True}, out)
    else:
        out.write(
            f"Counted {counted:,} receipts and rejections into the rollups; gaps and lag read them now.\n"
        )
    return 0


def cmd_heads_backfill(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    if settings_from(args).backend != "aws":
        raise usage("pik aws heads-backfill works on an AWS stack: add --backend aws (and --stack NAME)")
    shown: list[bool] = []
    progress = _progress(err, shown) if not args.json and err.isatty() else None
    kit = open_backend(args, create=False)
    try:
        if kit.window_heads is None:
            raise Failure(
                f"the {kit.name} backend has no aggregates table (AGG_TABLE is not set): "
                "no window heads to write"
            )
        if kit.read_only and not args.dry_run:
            raise Failure(
                "pik aws heads-backfill writes window heads: refused in read-only mode (try --dry-run)"
            )
        done = kit.window_heads.backfill(dry_run=args.dry_run, on_progress=progress)
    finally:
        kit.close()
        if shown:  # end the progress line, before the answer or the error
            err.write("\n")
    if args.json:
        print_json(
            {
                "dry_run": args.dry_run,
                "windows": done.windows,
                "lacking": done.lacking,
                "written": done.written,
                "marked": done.marked,
                "was_marked": done.was_marked,
            },
            out,
        )
    elif done.lacking == 0 and done.marked and (args.dry_run or done.was_marked):
        out.write(
            f"All {done.windows:,} windows with versions have their heads and the table records it: "
            "nothing to write; a dry run reads the heads, 100 windows per call.\n"
        )
    elif args.dry_run:
        unmarked = "" if done.marked else "; the table is not marked yet: a dry run asks one query per window"
        out.write(
            f"{done.lacking:,} of {done.windows:,} windows with versions lack a head{unmarked}.\n"
            "Nothing was written (dry run); run it without --dry-run to write them.\n"
        )
    else:
        out.write(
            f"Wrote the heads of {done.written:,} windows ({done.windows - done.lacking:,} of the "
            f"{done.windows:,} windows with versions had theirs already); "
            + ("the table was marked already: " if done.was_marked else "the table is marked now: ")
            + "a dry run reads the heads, 100 windows per call.\n"
        )
    return 0


def _progress(err: IO[str], shown: list[bool]) -> Any:
    """What a terminal shows while the backfill runs: one line, rewritten (``shown`` once it is)."""

    def show(phase: str, count: int) -> None:
        shown[:] = [True]
        err.write(f"\r{phase} {count:,} {'items' if phase == 'scanned' else 'heads'}   ")
        err.flush()

    return show


def cmd_init(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from backend.errors import InvalidRequest
    from backend.kit import provision_aws, validate_aws_prefix

    if args.workspace:
        raise usage("--workspace is for the local backend; pik aws init creates AWS resources")
    if args.stack:
        raise usage("--stack reads a deployed stack; pik aws init creates resources on --endpoint-url")
    if args.backend == "local":
        raise usage("pik aws init works on the AWS backend; leave out --backend local")
    settings = aws_settings(args, settings_from(args).aws)
    url = settings.endpoint_url
    if not url:
        raise usage(
            "pik aws init needs --endpoint-url URL (a moto server or LocalStack); "
            "to deploy to AWS itself, use `sam build && sam deploy --guided` (docs/aws.md)"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise usage(f"--endpoint-url {url!r} is not an http:// or https:// URL")
    try:
        validate_aws_prefix(args.prefix)
    except InvalidRequest as exc:
        raise usage(str(exc)) from None
    if settings_from(args).read_only:
        raise Failure("pik aws init creates resources: refused in read-only mode (PIK_READ_ONLY)")

    session, region, fake_credentials = _session(settings.profile, settings.region)
    settings = settings.model_copy(update={"region": region})

    steps: list[Any] = []

    def show(step: Any) -> None:
        steps.append(step)
        if not args.json:
            state = "created" if step.created else "reused "
            notes = f"  ({'; '.join(step.notes)})" if step.notes else ""
            out.write(f"# {state}  {step.kind:<6}  {step.name}{notes}\n")
            out.flush()

    if not args.json:
        out.write(f"# pik aws init on {url} (region {region}, prefix {args.prefix})\n")
    values = provision_aws(settings, args.prefix, session=session, on_step=show)

    if args.json:
        print_json(
            {
                "endpoint_url": url,
                "region": region,
                "prefix": args.prefix,
                "settings": values,
                "resources": [
                    {
                        "kind": s.kind,
                        "name": s.name,
                        "setting": s.setting,
                        "created": s.created,
                        "notes": list(s.notes),
                    }
                    for s in steps
                ],
                "credentials": "placeholder" if fake_credentials else "configured",
            },
            out,
        )
        return 0

    _print_exports(args.prefix, url, region, steps, values, fake_credentials, out)
    return 0


def _session(profile: str | None, region: str | None) -> tuple[Any, str, bool]:
    """A boto3 session for the endpoint, its region, and whether placeholder credentials were given."""
    import boto3
    from botocore.exceptions import BotoCoreError

    try:
        session = boto3.session.Session(profile_name=profile, region_name=region)
        region = session.region_name or DEFAULT_ENDPOINT_REGION
        # An endpoint such as moto takes any credentials; give it some rather than fail when none are set
        # (never with a named profile: then the profile's own credentials are the ones meant).
        fake_credentials = not profile and session.get_credentials() is None
        if fake_credentials:
            session = boto3.session.Session(
                aws_access_key_id=FAKE_KEY, aws_secret_access_key=FAKE_KEY, region_name=region
            )
    except BotoCoreError as exc:  # an unknown profile, a broken config file
        raise Failure(" ".join(str(exc).split())) from None
    return session, region, fake_credentials


def _print_exports(
    prefix: str,
    url: str,
    region: str,
    steps: list[Any],
    values: dict[str, str],
    fake_credentials: bool,
    out: IO[str],
) -> None:
    """What was created, the export lines, and how to use them."""
    created = sum(s.created for s in steps)
    if created == 0:
        out.write("# Every resource existed already: reused them, created nothing.\n")
    elif created == len(steps):
        out.write(f"# Created all {created} resources.\n")
    else:
        out.write(f"# Created {created} of {len(steps)} resources; reused the others.\n")
    out.write("\n")
    for setting, value in values.items():
        out.write(f"export {setting}={shlex.quote(value)}\n")
    if fake_credentials:
        out.write(
            "# No AWS credentials were configured; the endpoint takes any, so these placeholders were used:\n"
        )
        out.write(f"export AWS_ACCESS_KEY_ID={FAKE_KEY}\nexport AWS_SECRET_ACCESS_KEY={FAKE_KEY}\n")
    prog = program_name()
    again = f"{prog} aws init --endpoint-url {shlex.quote(url)} --region {region}"
    if prefix != "pik":
        again += f" --prefix {prefix}"
    target = f"--backend aws --endpoint-url {shlex.quote(url)} --region {region}"
    out.write(
        "\n# To use them, run the export lines in your shell, or all of this output at once:\n"
        f'#   eval "$({again})"\n'
        "# then name the AWS backend and the endpoint on each command:\n"
        f"#   {prog} ingest events.jsonl {target}\n"
        f"#   {prog} events {target} --entity user_123 --start 2025-12-28 --end 2025-12-29\n"
    )
