"""Where `pik ingest` spends its time: the same ingest, on one thread, phase by phase (`run.py --profile`).

    python bench/profile_ingest.py FILE WORKSPACE RESULT.json [--cprofile OUT.prof] [--batch-size N]

`pik ingest` runs the same two halves of the service one after the other, batch by batch; here they are
timed apart, with the command's own line reader: ``prepare_batch`` (parse,
validate, identify: CPU only) and ``store`` (quarantine, raw bytes, index; the batch told by counts, as
`pik ingest` takes it: no object per line). The phase times go
to RESULT.json; with ``--cprofile`` the run is also profiled (slower, but every function is seen).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import json
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from backend.adapters.local.store import LocalStore
from backend.services.ingest import IngestService, Received
from pik_console.cli.ingest import read_lines


def batched(items: Iterable[Received], size: int) -> Iterator[list[Received]]:
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("file", type=Path)
    parser.add_argument("workspace", type=Path)
    parser.add_argument("result", type=Path)
    parser.add_argument("--cprofile", type=Path)
    parser.add_argument("--batch-size", type=int, default=10_000)
    args = parser.parse_args()

    profiler = cProfile.Profile() if args.cprofile else None
    phases = {"open_s": 0.0, "read_s": 0.0, "prepare_batch_s": 0.0, "commit_s": 0.0, "close_s": 0.0}
    if profiler:
        profiler.enable()
    started = time.perf_counter()
    store = LocalStore(args.workspace)
    service = IngestService(store, store)
    phases["open_s"] = time.perf_counter() - started
    lines = 0
    with args.file.open("rb") as stream:
        batches = batched(read_lines(stream, f"file:{args.file.name}"), args.batch_size)
        while True:
            t0 = time.perf_counter()
            chunk = next(batches, None)
            t1 = time.perf_counter()
            phases["read_s"] += t1 - t0
            if chunk is None:
                break
            prepared = service.prepare_batch(chunk)
            t2 = time.perf_counter()
            committed = service.store(prepared)
            lines += committed.accepted + committed.duplicate + committed.rejected
            t3 = time.perf_counter()
            phases["prepare_batch_s"] += t2 - t1
            phases["commit_s"] += t3 - t2
    t4 = time.perf_counter()
    store.close()
    phases["close_s"] = time.perf_counter() - t4
    phases["total_s"] = time.perf_counter() - started
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(args.cprofile))
    args.result.write_text(json.dumps({"lines": lines, "profiled": profiler is not None, **phases}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
