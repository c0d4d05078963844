"""``pik demo``: build (or reuse) the demo workspace through the real ingest, replay and processor paths,
say what it holds, and open the console on it at a terminal."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import IO, Any

from backend.kit import open_local, workspace_exists
from backend.ports import IndexStats
from pik_console.cli.common import Failure, print_json, program_name, settings_from, table

DEFAULT_DEMO_WORKSPACE = ".pik-demo"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="build (or reuse) the demo workspace through the real ingest path and show what it holds",
    )
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--no-console",
        action="store_true",
        help="print the summary only (default on a terminal: open the console)",
    )
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from backend.demo import DEMO_VERSION, build_demo, demo_state

    path = Path(args.workspace or DEFAULT_DEMO_WORKSPACE)
    read_only = settings_from(args, workspace=path).read_only
    if read_only and not workspace_exists(path):
        raise Failure(
            f"the demo workspace {path} is not built yet, and building it writes: "
            "refused in read-only mode (PIK_READ_ONLY)"
        )
    kit = open_local(path, create=not read_only)
    store: Any = kit.index  # the demo builder writes the workspace's own tables
    try:
        state = demo_state(store)
        if state == "foreign":
            raise Failure(
                f"{store.path} holds a workspace that is not the demo; choose another folder with --workspace"
            )
        if state == "incomplete":
            raise Failure(
                f"the demo workspace {store.path} is incomplete (an interrupted build?) or from another "
                f"demo version; remove that folder and run `pik demo` again"
            )
        if state == "missing":
            if read_only:
                raise Failure(
                    f"the demo workspace {store.path} is not built yet, and building it writes: "
                    "refused in read-only mode (PIK_READ_ONLY)"
                )
            if not args.json:
                out.write(f"Building the demo workspace in {store.path} (demo v{DEMO_VERSION})…\n")
                out.flush()
            started = time.perf_counter()
            build_demo(store)
            built = time.perf_counter() - started
        else:
            built = None
        stats = store.stats()
    finally:
        kit.close()
    if args.json:
        print_json(_stats_json(store.path, built, stats), out)
        return 0
    _print_stats(store.path, built, stats, out)
    from backend.demo import STORY

    ws = f" --workspace {store.path}"
    story = STORY.format(ws=ws)
    prog = program_name()
    if prog != "pik":
        story = story.replace("pik ", f"{prog} ")
    out.write("\n" + story + "\n")
    if not args.no_console:
        from pik_console.cli.console import open_demo_console

        open_demo_console(store.path, out, read_only=read_only)
    return 0


def _stats_json(path: Path, built: float | None, stats: IndexStats) -> dict[str, Any]:
    return {
        "workspace": str(path),
        "built_seconds": None if built is None else round(built, 2),
        "accepted": stats.accepted,
        "duplicate": stats.duplicate,
        "rejected": stats.rejected,
        "entities": stats.entities,
        "first_event_time": stats.first_event_time,
        "last_event_time": stats.last_event_time,
        "partitions": [
            {"source": p.source, "event_type": p.event_type, "accepted": p.accepted, "duplicate": p.duplicate}
            for p in stats.partitions
        ],
    }


def _print_stats(path: Path, built: float | None, stats: IndexStats, out: IO[str]) -> None:
    if built is not None:
        out.write(f"Built in {built:.1f} s through the real ingest path.\n")
    else:
        out.write(f"Reusing the demo workspace in {path}.\n")
    out.write(
        f"\nThe workspace holds {stats.accepted:,} accepted events, "
        f"{stats.duplicate:,} duplicate receipts and "
        f"{stats.rejected:,} quarantined rejections\nfor {stats.entities:,} entities, event times "
        f"{stats.first_event_time} .. {stats.last_event_time}.\n\n"
    )
    table(
        [[p.source, p.event_type, f"{p.accepted:,}", f"{p.duplicate:,}"] for p in stats.partitions],
        ["SOURCE", "EVENT TYPE", "ACCEPTED", "DUPLICATE"],
        out,
        right=["ACCEPTED", "DUPLICATE"],
    )
