"""The processor at volume (issue 17, item 3): N replay messages of one (entity, day) window drained by
``DrainService.run`` (what ``pik process`` runs), beside the ingest of the same N events.

    .venv/bin/python bench/process_bench.py build N        # once: ingest N events, fill the queue
    .venv/bin/python bench/process_bench.py drain N        # copy that workspace, drain it, print JSON
    PIK_BENCH_TREE=/path/to/other/checkout .venv/bin/python bench/process_bench.py drain N

``build`` ingests N events of one entity on one day through ``IngestService.ingest_stream`` (the path of
``pik ingest``, in-process, batches of 10,000) and times it: that is the ingest rate the processor is
compared with. It then puts one replay message per event in the local queue (the body
``replay_messages.message_body`` makes, with one replay id), straight into the table with one insert, as
``LocalQueue.send_batch`` would in N/10 calls (the send is not what is measured here).

``drain`` copies the built workspace (so every run starts from the same full queue), drains it in a
fresh process with the code of ``PIK_BENCH_TREE`` (default: this checkout) and prints messages/s and the
ratio to the ingest rate. Run a baseline checkout and this one alternately and take medians: the machine
is shared and noisy.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
TREE = Path(os.environ.get("PIK_BENCH_TREE", str(ROOT))).resolve()
sys.path.insert(0, str(TREE))

ENTITY = "device-00042"
DAY = datetime(2025, 12, 1, tzinfo=UTC)


def _workspace(n: int) -> Path:
    return OUT / f"ws-process-{n}"


def build(n: int) -> None:
    from backend.adapters.local.store import LocalStore
    from backend.adapters.local.workspace import local_ports
    from backend.services.ingest import IngestService, Received
    from backend.services.replay_messages import message_body
    from backend.times import FixedClock, fmt

    ws = _workspace(n)
    shutil.rmtree(ws, ignore_errors=True)
    store = LocalStore(ws)
    clock = FixedClock(DAY)
    service = IngestService(store, store, clock)
    step = timedelta(days=1) / n

    def feed():  # type: ignore[no-untyped-def]
        for i in range(n):
            when = DAY + i * step
            event = {
                "source": "iot.gateway",
                "event_type": "sensor.reading",
                "entity_id": ENTITY,
                "event_time": fmt(when),
                "payload": {"temp_c": round(15 + (i % 200) / 10, 1), "steps": i % 97},
            }
            clock.set(when + timedelta(seconds=2))
            yield Received(json.dumps(event, separators=(",", ":")).encode(), "bench")

    try:
        started = time.perf_counter()
        for _ in service.ingest_stream(feed(), batch_size=10_000):
            pass
        ingest_s = time.perf_counter() - started
        ports = local_ports(store)
        replay_id = "bench-replay-0001"
        rows = []
        after = None
        end = (DAY + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        while True:
            page = ports.investigate.scan_entity(
                ENTITY, fmt(DAY), end, accepted_only=True, limit=5000, after=after
            )
            rows += [
                (f"bench-{len(rows) + k:08d}", message_body(r, replay_id, store.location), 0, 0)
                for k, r in enumerate(page.items)
            ]
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert len(rows) == n, (len(rows), n)
        with store.db.write("bench: fill the replay queue") as conn:
            conn.executemany(
                "INSERT INTO queue_messages (id, message_id, sent_ms, visible_ms) VALUES (?,?,?,?)",
                [(i, m, sent, visible) for i, (m, _, sent, visible) in enumerate(rows, 1)],
            )
            conn.executemany(
                "INSERT INTO queue_bodies (id, body) VALUES (?,?)",
                [(i, body) for i, (_, body, _, _) in enumerate(rows, 1)],
            )
    finally:
        store.close()
    (ws / "bench-process.json").write_text(json.dumps({"events": n, "ingest_s": ingest_s}))
    print(json.dumps({"events": n, "ingest_s": round(ingest_s, 3), "ingest_per_s": round(n / ingest_s)}))


def drain(n: int) -> None:
    from backend.adapters.local.store import LocalStore
    from backend.adapters.local.workspace import local_ports
    from backend.services.drain import DrainService
    from backend.services.processor import ProcessorService

    source = _workspace(n)
    built = json.loads((source / "bench-process.json").read_text())
    ws = OUT / f"ws-process-{n}-run-{os.getpid()}"
    shutil.rmtree(ws, ignore_errors=True)
    shutil.copytree(source, ws)
    store = LocalStore(ws)
    try:
        ports = local_ports(store)
        processor = ProcessorService(ports.investigate, ports.catalog, ports.aggregates)
        started = time.perf_counter()
        result = DrainService(ports.queue, processor, visibility_timeout_s=30).run()
        seconds = time.perf_counter() - started
        depth = ports.queue.depth()
        versions = ports.aggregates.latest(ENTITY, DAY.date().isoformat(), "daily_event_count")
    finally:
        store.close()
        shutil.rmtree(ws, ignore_errors=True)
    assert result.processed == n and depth.visible == depth.in_flight == depth.dead == 0, (result, depth)
    assert versions is not None and versions.version == 1 and versions.value == n, versions
    ingest_rate = n / built["ingest_s"]
    print(
        json.dumps(
            {
                "tree": str(TREE),
                "messages": n,
                "drain_s": round(seconds, 3),
                "messages_per_s": round(n / seconds),
                "recomputes": result.recomputes,
                "ingest_per_s": round(ingest_rate),
                "ratio_to_ingest_rate": round(n / seconds / ingest_rate, 3),
            }
        )
    )


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "drain"):
        raise SystemExit(__doc__)
    (build if sys.argv[1] == "build" else drain)(int(sys.argv[2]))
