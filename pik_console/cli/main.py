"""The ``pik`` command line: every command, listed in one place. Exit codes: 0 ok, 1 failure, 2 usage error.

Every command works on a local workspace folder (``--workspace DIR``, ``PIK_WORKSPACE``, default ``./.pik``)
or on an AWS stack (``--backend aws``). Every read command takes ``--json``. Errors are one line on stderr
naming what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import IO

from backend.errors import KitError
from backend.settings import SettingsError
from pik_console.cli import (
    aggregates,
    aws,
    console,
    demo,
    events,
    ingest,
    investigate,
    overview,
    process,
    replay,
    report,
    serve,
)
from pik_console.cli.common import Failure, Parser, UsageError, common_options

# In the order `pik --help` lists them: data in, looking, replaying, recomputing, the surfaces.
COMMANDS = (
    ingest,
    overview,
    events,
    investigate,
    replay,
    process,
    aggregates,
    report,
    console,
    demo,
    serve,
    aws,
)
"""Each module adds its command(s) with ``register(sub, common)``."""


def kit_version() -> str:
    try:
        return version("pipeline-investigation-kit")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pik",
        description="Pipeline Investigation Kit: investigate data-pipeline incidents without losing data.",
    )
    parser.add_argument("--version", action="version", version=f"pik {kit_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    common = common_options()
    for module in COMMANDS:
        module.register(sub, common)
    return parser


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None, err: IO[str] | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "limit", 1) < 1 or getattr(args, "limit", 1) > 10_000:
        parser.error("--limit must be between 1 and 10000")
    if getattr(args, "batch_size", 1) < 1:
        parser.error("--batch-size must be at least 1")
    try:
        return int(args.func(args, out, err))
    except (UsageError, SettingsError) as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return 2
    except (Failure, KitError) as exc:
        err.write(f"pik {args.command}: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        err.write(f"pik {args.command}: interrupted\n")
        return 130
    except BrokenPipeError:
        # `pik events | head`: the reader went away; not an error worth a traceback.
        sys.stderr.close()
        return 0
