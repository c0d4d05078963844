"""What every ``pik`` command shares: the options that choose a backend, opening it through the composition
root, the two errors a command raises, and plain-text and JSON output.

A command module imports these public names; nothing here imports a command.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from backend.kit import Kit
    from backend.settings import AwsSettings, Settings

# The backend (its models, pydantic-settings, boto3) is imported by the functions that open it, not here: a
# command starts, and the console paints its first frame, without it.

DEFAULT_WORKSPACE = ".pik"
"""backend.settings.DEFAULT_WORKSPACE, for the help text (a test holds the two equal)."""
READ_ONLY_HELP = "refuse to write anything (also PIK_READ_ONLY=1): the command fails with exit 1"
DEFAULT_ENDPOINT_REGION = "us-east-1"
"""The region an AWS-compatible endpoint (moto, LocalStack) is signed for when none is configured."""


class Failure(Exception):
    """A failure to report on stderr with exit code 1."""


class UsageError(Exception):
    """A usage error to report on stderr with exit code 2."""


def usage(message: str) -> UsageError:
    """A usage error to raise: ``raise usage("--day needs --entity")``."""
    return UsageError(message)


class Parser(argparse.ArgumentParser):
    """argparse with the kit's exit code for usage errors and one line on stderr."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"pik: error: {message}\n")


def count(text: str) -> int:
    """A whole number as an option value (``10,000`` and ``10_000`` too)."""
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None


def common_options() -> argparse.ArgumentParser:
    """The parent parser of every command: where the data lives."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--workspace",
        metavar="DIR",
        help=f"local workspace folder (default: $PIK_WORKSPACE or ./{DEFAULT_WORKSPACE})",
    )
    aws = common.add_argument_group("AWS backend")
    aws.add_argument(
        "--backend",
        choices=["local", "aws"],
        help="where the data lives (default: $PIK_BACKEND or local)",
    )
    aws.add_argument("--stack", metavar="NAME", help="CloudFormation stack whose outputs name the resources")
    aws.add_argument(
        "--endpoint-url", metavar="URL", help="AWS-compatible endpoint (moto server, LocalStack)"
    )
    aws.add_argument("--region", metavar="REGION")
    aws.add_argument("--profile", metavar="NAME", help="AWS credentials profile")
    return common


# -- settings and the backend --------------------------------------------------------------------------------


def settings_from(args: argparse.Namespace, *, workspace: Path | None = None) -> Settings:
    """The settings tree with the command line on top (environment, then settings.toml, below it).

    Raises :class:`backend.settings.SettingsError` (exit 2) for an invalid value anywhere."""
    from backend.settings import load_settings

    return load_settings(
        {
            "backend": getattr(args, "backend", None),
            "workspace": workspace or getattr(args, "workspace", None),
            "read_only": True if getattr(args, "read_only", False) else None,
        }
    )


def aws_settings(args: argparse.Namespace, base: AwsSettings | None = None) -> AwsSettings:
    """AWS settings from the options, then the stack's outputs (``--stack``), then the environment."""
    from backend.kit import stack_settings
    from backend.settings import AwsSettings

    given = {
        k: v
        for k, v in {
            "region": getattr(args, "region", None),
            "profile": getattr(args, "profile", None),
            "endpoint_url": getattr(args, "endpoint_url", None),
        }.items()
        if v
    }
    settings = (base or AwsSettings()).model_copy(update=given)
    if settings.endpoint_url and not settings.region:
        # An AWS-compatible endpoint still needs a region to sign with: the profile's, else a default.
        import boto3

        try:
            region = boto3.session.Session(profile_name=settings.profile).region_name
        except Exception:  # an unknown profile is reported when the backend opens
            region = None
        settings = settings.model_copy(update={"region": region or DEFAULT_ENDPOINT_REGION})
    if getattr(args, "stack", None):
        settings = stack_settings(settings, args.stack)
    return settings


def open_backend(
    args: argparse.Namespace,
    *,
    create: bool,
    workspace: Path | None = None,
    notice: Callable[[str], None] | None = None,
) -> Kit:
    """The backend the options name, opened through the composition root: a local workspace (default) or
    an AWS stack (``--backend aws``), read-only with ``--read-only`` or ``PIK_READ_ONLY`` (the services then
    refuse every write). The caller closes it. An older workspace is upgraded as it opens, which can take a
    while: ``notice`` is told first (by default the command's ``args.notice``, a line on its stderr)."""
    from backend.kit import open_kit

    settings = settings_from(args, workspace=workspace)
    if settings.backend == "aws":
        if getattr(args, "workspace", None):
            raise usage("--workspace is for the local backend; with --backend aws name a --stack")
        aws = aws_settings(args, settings.aws)
        missing = aws.missing("raw_bucket", "events_table", "dedupe_table")
        if missing:
            raise usage("--backend aws needs --stack NAME or the environment variables " + ", ".join(missing))
        return open_kit(settings.model_copy(update={"aws": aws}))
    for option in ("stack", "endpoint_url", "region", "profile"):
        if getattr(args, option, None):
            raise usage(f"--{option.replace('_', '-')} is for the AWS backend; add --backend aws")
    say = notice or getattr(args, "notice", None) or _say_on_stderr

    def upgrading(version: int, latest: int) -> None:
        say(
            f"upgrading the workspace {settings.workspace} from schema version {version} to {latest} "
            "(once; every stored byte is kept)"
        )

    return open_kit(settings, create=create, on_upgrade=upgrading)


def _say_on_stderr(text: str) -> None:
    print(f"pik: {text}…", file=sys.stderr, flush=True)


# -- output ----------------------------------------------------------------------------------------------


def actor() -> str:
    """Who runs a replay, for the audit trail: the OS user."""
    from backend.kit import current_user

    return current_user()


def print_json(data: Any, out: IO[str]) -> None:
    """One line of JSON (UTF-8 as is, no ASCII escapes)."""
    json.dump(data, out, ensure_ascii=False, indent=None, separators=(",", ":"))
    out.write("\n")


def table(
    rows: Sequence[Sequence[str]], headers: Sequence[str], out: IO[str], right: Sequence[str] = ()
) -> None:
    """A plain-text table; the columns named in ``right`` (numbers) are right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if h in right else c.ljust(w) for c, w, h in zip(cells, widths, headers, strict=True)
        ).rstrip()

    out.write(line(headers) + "\n")
    for row in rows:
        out.write(line(row) + "\n")


def plural(count: int, singular: str, many: str | None = None) -> str:
    """``1 entity``, ``2 entities``, with thousands separators."""
    return f"{count:,} {singular if count == 1 else many or singular + 's'}"


def program_name() -> str:
    """How the user can call pik from here: plain ``pik`` when it is on PATH, else the venv's copy."""
    if shutil.which("pik"):
        return "pik"
    local = Path(".venv") / "bin" / "pik"
    return str(local) if local.exists() else "pik"


def backend_context(args: argparse.Namespace) -> list[str]:
    """The options of this command line that choose the backend, for the ``next`` commands to repeat."""
    out: list[str] = []
    if getattr(args, "workspace", None):
        out += ["--workspace", str(args.workspace)]
    if getattr(args, "backend", None):
        out += ["--backend", str(args.backend)]
    for option in ("stack", "endpoint_url", "region", "profile"):
        value = getattr(args, option, None)
        if value:
            out += [f"--{option.replace('_', '-')}", str(value)]
    return out
