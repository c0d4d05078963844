"""``pik console``: open the console on a workspace or a stack (``--read-only`` disables every mutating
action in the UI, and the services refuse them too)."""

from __future__ import annotations

import argparse
import sys
from typing import IO, Any

from backend.times import TimeFormatError, parse_day
from pik_console.cli.common import Failure, open_backend, usage


def run_console(backend: Any, context: Any = None) -> None:
    """Run the console on an opened backend until the user quits. The caller closes the backend."""
    from pik_console.console.app import PikConsole

    PikConsole(backend, context=context).run()


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
    context = _context(args)
    if not is_terminal(out):
        raise Failure("the console needs a terminal (stdin and stdout); for scripts use the other commands")
    backend = open_backend(args, create=False)
    try:
        run_console(backend, context)
    finally:
        backend.close()
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
