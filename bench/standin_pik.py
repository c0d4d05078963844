"""STAND-IN for ``pik ingest FILE --workspace DIR --json``, used only while the real command does not exist.

It streams the file through the same service and store the real command uses
(``IngestService.ingest_stream`` over ``LocalStore``) and prints one JSON summary. Figures measured with
it are labelled as the stand-in's by ``bench/run.py``; they are not figures of ``pik``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from backend.adapters.local.store import LocalStore
from backend.services.ingest import IngestService, Received


def _lines(path: Path, origin: str) -> Iterator[Received]:
    with path.open("rb") as f:
        for n, line in enumerate(f, start=1):
            body = line.rstrip(b"\r\n")
            if body.strip():
                yield Received(body, origin, n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="standin_pik")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest = sub.add_parser("ingest")
    ingest.add_argument("file", type=Path)
    ingest.add_argument("--workspace", required=True)
    ingest.add_argument("--json", action="store_true")
    ingest.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args(argv)

    store = LocalStore(args.workspace)
    service = IngestService(store, store)
    counts = {"ACCEPTED": 0, "DUPLICATE": 0, "REJECTED": 0}
    rejections: list[dict[str, object]] = []
    try:
        for results in service.ingest_stream(_lines(args.file, f"file:{args.file.name}"), args.batch_size):
            for r in results:
                counts[r.status] += 1
                if r.reason is not None:
                    rejections.append({"line": r.line, "reason": r.reason, "rejection_id": r.rejection_id})
    finally:
        store.close()
    summary = {
        "accepted": counts["ACCEPTED"],
        "duplicate": counts["DUPLICATE"],
        "rejected": counts["REJECTED"],
        "rejections": rejections,
        "standin": True,
    }
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
