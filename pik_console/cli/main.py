"""The ``pik`` command line: every command, listed in one place. Exit codes: 0 ok, 1 failure, 2 usage error.

Every command works on a local workspace folder (``--workspace DIR``, ``PIK_WORKSPACE``, default ``./.pik``)
or on an AWS stack (``--backend aws``). Every read command takes ``--json``. Errors are one line on stderr
naming what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import IO, Any, NoReturn

from backend.errors import KitError
from pik_console.cli.common import Failure, Parser, UsageError, common_options

# In the order `pik --help` lists them: data in, looking, replaying, recomputing, the surfaces. Each module
# of pik_console.cli adds its command(s) with ``register(sub, common)``; the names are the commands it adds.
COMMANDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ingest", ("ingest",)),
    ("overview", ("overview",)),
    ("events", ("events",)),
    ("investigate", ("lag", "gaps")),
    ("replay", ("replay", "replays")),
    ("process", ("process",)),
    ("aggregates", ("aggregates", "diff")),
    ("report", ("report",)),
    ("console", ("console",)),
    ("demo", ("demo",)),
    ("serve", ("serve",)),
    ("aws", ("aws",)),
)
"""Every command, listed in one place. A command line that names one imports only that command's module
(``pik console`` paints before the backend's models are imported); help and errors import them all."""


def kit_version() -> str:
    # importlib.metadata costs a command's start more than argparse does: read only for --version.
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pipeline-investigation-kit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


class VersionAction(argparse.Action):
    """``--version``: the installed kit's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kw: Any) -> NoReturn:
        sys.stdout.write(f"pik {kit_version()}\n")
        parser.exit()


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or, when ``argv`` names a command, of that command alone (the others'
    modules, and the backend they import, are not loaded: a command starts without them)."""
    parser = Parser(
        prog="pik",
        description="Pipeline Investigation Kit: investigate data-pipeline incidents without losing data.",
    )
    parser.add_argument("--version", action=VersionAction, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    common = common_options()
    named = _named_module(argv)
    for module, _ in COMMANDS:
        if named is None or module == named:
            importlib.import_module(f"pik_console.cli.{module}").register(sub, common)
    return parser


def _named_module(argv: Sequence[str] | None) -> str | None:
    """The module of the command that ``argv`` starts with, if it starts with one."""
    if not argv or argv[0].startswith("-"):
        return None
    return next((module for module, names in COMMANDS if argv[0] in names), None)


def exit_code(exc: BaseException) -> int | None:
    """2 for a usage error (a bad option or setting), 1 for a failure, None for anything else."""
    if isinstance(exc, UsageError):
        return 2
    # Read only when set: importing the settings (pydantic-settings) would cost every command's start, and a
    # SettingsError cannot have been raised unless they were imported.
    settings = sys.modules.get("backend.settings")
    if settings is not None and isinstance(exc, settings.SettingsError):
        return 2
    if isinstance(exc, Failure | KitError):
        return 1
    return None


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if getattr(args, "limit", 1) < 1 or getattr(args, "limit", 1) > 10_000:
        parser.error("--limit must be between 1 and 10000")
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    # What opening the backend does that takes a while (an upgrade) is said on this command's stderr.
    args.notice = lambda text: (err.write(f"pik {args.command}: {text}…\n"), err.flush())
    try:
        return int(args.func(args, out, err))
    except (UsageError, Failure, KitError) as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return exit_code(exc) or 1
    except KeyboardInterrupt:
        err.write(f"pik {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        # `pik events | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return 0
