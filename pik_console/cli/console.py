"""``pik console``: open the console on a workspace or a stack (``--read-only`` disables every mutating
action in the UI, and the services refuse them too)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO, Any

from backend.times import TimeFormatError, parse_day
from pik_console.cli.common import DEFAULT_WORKSPACE, Failure, open_backend, usage


def run_console(backend: Any, context: Any = None) -> None:
    """Run the console on an opened backend until the user quits. The caller closes the backend."""
    from pik_console.console.app import PikConsole

    PikConsole(backend, context=context).run()


def build_console(args: argparse.Namespace) -> Any:
    """The console of ``pik console ARGS``, not yet run: it paints first and opens the backend after, in a
    thread (``PikConsole.opener``). Raises a usage error for a bad --day before anything is drawn."""
    from pik_console.console.app import PikConsole

    return PikConsole(**console_options(args))


def console_options(args: argparse.Namespace) -> dict[str, Any]:
    """PikConsole's arguments for ``pik console ARGS`` (the console bench builds its console with them)."""
    from pik_console.console.opening import Opener

    def warm() -> None:
        # The first pane's imports, in the opener's thread rather than the UI's.
        import pik_console.console.events_pane
        import pik_console.console.overview_pane  # noqa: F401

    opener = Opener(lambda: open_backend(args, create=False, notice=opener.notice), warm=warm)
    return {"context": _context(args), "opener": opener, "opening": _opening(args)}


def _opening(args: argparse.Namespace) -> str:
    """What the console says it is opening, from the command line (the settings are read when it opens)."""
    if args.stack:
        return f"Opening the stack {args.stack}"
    if args.backend == "aws" or (not args.backend and os.environ.get("PIK_BACKEND") == "aws"):
        return "Opening the AWS backend"
    return f"Opening the workspace {args.workspace or os.environ.get('PIK_WORKSPACE') or DEFAULT_WORKSPACE}"


def _context(args: argparse.Namespace) -> Any:
    from pik_console.console.context import Context

    day = None
    if args.day:
        try:
            day = parse_day(args.day, what="--day")
        except TimeFormatError as exc:
            raise usage(str(exc)) from None
    return Context(entity=args.entity, day=day, source=args.source, event_type=args.type)


def is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty() and sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def cmd_console(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    _context(args)  # a bad --day is a usage error before the terminal is taken
    if not is_terminal(out):
        raise Failure("the console needs a terminal (stdin and stdout); for scripts use the other commands")
    app = build_console(args)
    from pik_console.console.terminal_keys import install

    install()  # Escape and the key after it, read in one go, stay two keys
    try:
        app.run()
    finally:
        app.close_backend()
    if app.open_error is not None:
        # Shown on screen already; the same line and exit code as any command that could not open it.
        raise app.open_error
    return 0


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "console",
        parents=[common],
        help="the investigation console (TUI): events, lag, gaps, replay, aggregate versions",
        description="Open the console. --entity/--day (or --source/--type/--day) choose what it opens on.",
    )
    p.add_argument(
        "--read-only", action="store_true", help="disable every mutating action (replay, processor)"
    )
    p.add_argument("--entity", metavar="E", help="open on this entity")
    p.add_argument("--day", metavar="YYYY-MM-DD", help="open on this day (UTC)")
    p.add_argument("--source", metavar="S")
    p.add_argument("--type", metavar="T", help="event type")
    p.set_defaults(func=cmd_console)


def open_demo_console(path: Any, out: IO[str], *, read_only: bool = False) -> None:
    """After ``pik demo`` printed its summary: open the console on the demo's Overview, what a newcomer
    should see first (the duplicate storm and the day whose mobile events arrived two days late lead the
    findings; enter opens each), when the user is at a terminal."""
    if not is_terminal(out):
        return
    from backend.kit import open_local
    from pik_console.console.context import Context

    backend = open_local(path, create=False, read_only=read_only)
    try:
        run_console(backend, Context())  # nothing chosen: the console opens on the Overview
    finally:
        backend.close()
