"""Concurrency through the command line: several ``pik`` processes on one workspace at once, as users run
them from several terminals, cron jobs and scripts.

- ``pik ingest`` processes on overlapping JSON Lines files (shared events, resends of the same bytes, the same
  event id in other bytes, invalid lines) with small batches, many transactions each, racing for the lock:
  one ACCEPTED receipt per event id, one receipt per delivered line holding exactly the bytes of that line,
  one quarantined rejection per invalid line, and the processes' summaries add up to the store.
- ``pik process`` processes on the same (entity, day) windows, alone and while late events arrive: versions
  1..n with no gap and no overwrite, every version's manifest and value match what it says, the latest equals
  a fresh recompute of the whole window, and every message is processed or dead-lettered, none lost.
- Writers and read-only readers (``pik events``, ``pik lag``, ``pik aggregates``) at once: readers never
  fail (no "database is locked", no traceback) and only ever see committed, growing states; beside a write
  transaction that holds the lock, every read command still answers.

Concurrent processes are started behind the database's write lock, held by the test until each of them has
the database open, so that they race for it from their first transaction instead of running one after
another as they start up. (SQLite's busy handler lets the writer that has the lock take it again while the
others back off, so writers still take turns in runs of batches: ``sender_switches`` in the figures counts
how often consecutive receipts in the index came from different processes.) Steps that run alone (setup,
the final pass) call the same entry point in this process, to spend the time on the concurrent ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import DB_NAME, LocalStore
from backend.adapters.local.workspace import local_ports
from backend.model import IngestStatus
from backend.services.ingest import QUARANTINE_MAX_BYTES, Invalid, prepare
from backend.services.processor import inputs_hash
from pik_console.cli import main
from tests.reliability.conftest import soak

ROOT = Path(__file__).resolve().parents[2]
PIK = (sys.executable, "-m", "pik_console.cli")
# Environment that would change what a command does (another workspace, backend or a dry run) is not passed.
_ENV = {k: v for k, v in os.environ.items() if k not in ("PIK_WORKSPACE", "PIK_BACKEND", "DRY_RUN")}

PROCESSES = soak(3, 6)  # ingest processes at once
PROCESSORS = soak(3, 6)  # pik process processes at once
SOURCE, TYPE = "demo", "heartbeat"
ENTITIES = ("u0", "u1", "u2", "u3")
DAYS = ("2025-12-27", "2025-12-28", "2025-12-29")
WINDOWS = [(e, d) for e in ENTITIES for d in DAYS]
METRICS = ("daily_event_count", "steps_total")
SETTINGS = '[[metrics]]\nname = "steps_total"\nkind = "sum"\nfield = "steps"\n'
MAX_RECEIVES = 5  # the workspace default: receives before a replay message is dead-lettered
TRIGGERS = {
    "raw_no_overwrite", "raw_no_update", "raw_no_delete",
    "events_no_overwrite", "events_no_update", "events_no_delete",
    "rejections_no_overwrite", "rejections_no_update", "rejections_no_delete",
    "aggregate_versions_no_overwrite", "aggregate_versions_no_gap",
    "aggregate_versions_no_update", "aggregate_versions_no_delete",
    "aggregate_manifests_no_overwrite", "aggregate_manifests_no_update", "aggregate_manifests_no_delete",
}  # fmt: skip


# -- running pik -------------------------------------------------------------------------------------------

_names = itertools.count()


@dataclass
class Ran:
    argv: Sequence[str]
    code: int
    out: str
    err: str

    def json(self) -> Any:
        try:
            return json.loads(self.out)
        except ValueError:
            raise AssertionError(
                f"pik {' '.join(self.argv)} printed no JSON:\n{self.out}\n{self.err}"
            ) from None

    def healthy(self, *codes: int) -> Ran:
        """The run ended as a user expects: an allowed exit code, and no traceback or lock error."""
        what = f"pik {' '.join(self.argv)} (exit {self.code}):\n{self.err}"
        assert "Traceback" not in self.err and "locked" not in self.err.lower(), what
        assert self.code in (codes or (0,)), what
        return self


class Pik:
    """One ``pik`` OS process; its output goes to files (no pipe fills up while others are read)."""

    def __init__(self, tmp: Path, *argv: str) -> None:
        self.argv = argv
        n = next(_names)
        self._out, self._err = tmp / f"pik-{n}.out", tmp / f"pik-{n}.err"
        with self._out.open("wb") as out, self._err.open("wb") as err:
            self.proc = subprocess.Popen([*PIK, *argv], stdout=out, stderr=err, cwd=ROOT, env=_ENV)

    def wait(self) -> Ran:
        try:
            code = self.proc.wait(timeout=180)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"pik {' '.join(self.argv)} did not finish") from None
        return Ran(self.argv, code, self._out.read_text("utf-8"), self._err.read_text("utf-8"))


def pik(tmp: Path, *argv: str) -> Ran:
    """``pik`` as a separate OS process, run to its end."""
    return Pik(tmp, *argv).wait()


def cli(*argv: str) -> Ran:
    """``pik`` in this process (the same entry point, without paying for a process start): for the steps
    that run alone, before and after the concurrent ones."""
    out, err = io.StringIO(), io.StringIO()
    return Ran(argv, main(list(argv), out, err), out.getvalue(), err.getvalue())


@contextlib.contextmanager
def write_lock_held(ws: Path) -> Iterator[None]:
    """Another connection holds the workspace's write lock, as a long write transaction does."""
    conn = sqlite3.connect(ws / DB_NAME, isolation_level=None, timeout=60)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _has_open(pid: int, target: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
    return False


def start_together(tmp: Path, ws: Path, commands: Sequence[Sequence[str]]) -> list[Pik]:
    """Start every command, holding the workspace's write lock until each process has the database open
    (and so waits for the lock): released, they race for it from the first transaction on. Where processes'
    open files cannot be seen (no /proc), they are simply started one after another."""
    with write_lock_held(ws):
        procs = [Pik(tmp, *argv) for argv in commands]
        if Path("/proc/self/fd").is_dir():
            target = os.path.realpath(ws / DB_NAME)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                p.proc.poll() is not None or _has_open(p.proc.pid, target) for p in procs
            ):
                time.sleep(0.02)
    return procs


# -- what is sent ------------------------------------------------------------------------------------------


def line(
    entity: str, day: str, minute: int, steps: int, *, key: str | None = None, spelling: int = 0
) -> bytes:
    """One event as a JSON line. ``spelling`` > 0 writes the same event in other bytes (spacing): the same
    event id, another raw body."""
    body: dict[str, Any] = {
        "source": SOURCE,
        "event_type": TYPE,
        "entity_id": entity,
        "event_time": f"{day}T{minute // 60 % 24:02d}:{minute % 60:02d}:00Z",
        "payload": {"steps": steps},
    }
    if key is not None:
        body["idempotency_key"] = key
    if not spelling:
        return json.dumps(body, separators=(",", ":")).encode()
    return (json.dumps(body, separators=(", ", ": ")) + " " * (spelling - 1)).encode()


def shared_event(i: int, spelling: int = 0) -> bytes:
    return line(ENTITIES[i % len(ENTITIES)], DAYS[i % len(DAYS)], i, i, spelling=spelling)


def invalid_lines(tag: str) -> list[bytes]:
    """Lines every ingest must reject (and quarantine), different for each sender."""
    good = json.loads(shared_event(0))
    return [
        b"",
        b'{"source": "demo", "event_type": "heartbeat", "entity_id": "' + tag.encode(),
        json.dumps({**good, "source": f"bad source {tag}"}).encode(),
        json.dumps({k: v for k, v in good.items() if k != "event_time"} | {"entity_id": tag}).encode(),
        f"not json {tag}".encode(),
        b"\xff\xfe" + tag.encode(),
    ]


@dataclass
class Sent:
    """A JSON Lines file given to one ``pik ingest``, and what each of its lines must become."""

    path: Path
    lines: list[bytes]
    valid: dict[int, str] = field(default_factory=dict)  # line number -> event id
    invalid: set[int] = field(default_factory=set)

    @property
    def origin(self) -> str:
        return f"file:{self.path.name}"

    @staticmethod
    def write(path: Path, lines: list[bytes]) -> Sent:
        path.write_bytes(b"".join(body + b"\n" for body in lines))
        sent = Sent(path, lines)
        for number, body in enumerate(lines, 1):
            try:
                sent.valid[number] = prepare(body).event_id
            except Invalid:
                sent.invalid.add(number)
        return sent


def overlapping_file(tmp: Path, round_: int, p: int, processes: int) -> Sent:
    """What process ``p`` sends: the events every process sends, a slice shared with its neighbour, its own
    events, the same events in other bytes (some spelled alike by every process, some its own way),
    idempotency keys reused with other payloads and other days, resends of its own lines, invalid lines."""
    rng = random.Random(f"{round_}-{p}")
    shared, slice_ = 90, 30
    lines = [shared_event(i) for i in range(shared)]
    lines += [shared_event(i) for i in range(shared + p * slice_, shared + (p + 2) * slice_)]
    lines += [line(f"only-{round_}-{p}", DAYS[i % len(DAYS)], i, i) for i in range(20)]
    lines += [shared_event(i, spelling=1) for i in range(4)]  # every process: the same other bytes
    lines += [shared_event(i, spelling=2 + p) for i in range(4, 8)]  # bytes only this process sends
    lines += [
        line(ENTITIES[j % len(ENTITIES)], DAYS[(j + p) % len(DAYS)], 600 + j, 1000 * p + j, key=f"k{j}")
        for j in range(8)
    ]
    lines += [line(ENTITIES[0], DAYS[0], 700, 5000 + p, key="k0")]  # the same key again, other bytes
    lines += rng.sample(lines, 30)
    lines += invalid_lines(f"{round_}-{p}")
    rng.shuffle(lines)
    return Sent.write(tmp / f"round{round_}-sender{p}.jsonl", lines)


# -- what the workspace must hold ---------------------------------------------------------------------------


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sql(ws: Path, query: str) -> list[Any]:
    """Rows straight from the workspace database, as any SQLite client reads them."""
    conn = sqlite3.connect(ws / DB_NAME)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def check_database(ws: Path) -> None:
    """SQLite finds the file sound, and the triggers that refuse an overwrite, update or delete exist."""
    conn = sqlite3.connect(ws / DB_NAME)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        triggers = {n for (n,) in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'")}
        assert triggers >= TRIGGERS, TRIGGERS - triggers
    finally:
        conn.close()


def check_ingested(ws: Path, files: Sequence[Sent], runs: Sequence[Ran | None]) -> dict[str, int]:
    """Every valid line is exactly one receipt holding its bytes, one per event id is ACCEPTED, every invalid
    line is one quarantined rejection, and each summary (``runs[i]`` for ``files[i]``) matches the store."""
    deliveries = {(f.origin, n): (f.lines[n - 1], eid) for f in files for n, eid in f.valid.items()}
    ids = {eid for f in files for eid in f.valid.values()}
    accepted: Counter[str] = Counter()
    duplicate: Counter[str] = Counter()
    store = LocalStore(ws, create=False)
    try:
        for eid in ids:
            receipts = store.receipts(eid)
            assert [r.receipt for r in receipts] == [str(i) for i in range(len(receipts))], eid
            assert [r.status for r in receipts] == [IngestStatus.ACCEPTED] + [IngestStatus.DUPLICATE] * (
                len(receipts) - 1
            )
            for r in receipts:
                where = (r.origin or "", r.line or 0)
                assert where in deliveries, f"receipt {r.receipt} of {eid} is no delivery, or a second one"
                body, sent_id = deliveries.pop(where)
                assert r.event_id == sent_id
                assert r.raw_sha == _sha(body) and r.raw_size == len(body)
                assert store.get(r.s3_key) == body, f"the bytes of {where} changed or are missing"
                (accepted if r.status is IngestStatus.ACCEPTED else duplicate)[where[0]] += 1
        assert not deliveries, f"{len(deliveries)} valid lines have no receipt, e.g. {next(iter(deliveries))}"
        stats = store.stats()
        valid = sum(len(f.valid) for f in files)
        assert (stats.accepted, stats.duplicate) == (len(ids), valid - len(ids))

        rejected = {(f.origin, n): f.lines[n - 1] for f in files for n in f.invalid}
        quarantined: Counter[str] = Counter()
        after = None
        while True:
            page = store.query_rejections(limit=1000, after=after)
            for rej in page.items:
                where = (rej.origin, rej.line or 0)
                assert where in rejected, f"rejection {rej.rejection_id} is no invalid line, or a second one"
                body = rejected.pop(where)
                assert rej.sha256 == _sha(body) and rej.data == body[:QUARANTINE_MAX_BYTES]
                quarantined[where[0]] += 1
            if page.next_cursor is None:
                break
            after = page.next_cursor
        assert not rejected, f"{len(rejected)} invalid lines are not quarantined"
        assert stats.rejected == sum(len(f.invalid) for f in files)

        for f, run in zip(files, runs, strict=True):
            if run is None:
                continue
            summary = run.json()
            assert summary["lines"] == len(f.lines)
            assert (summary["accepted"], summary["duplicate"], summary["rejected"]) == (
                accepted[f.origin],
                duplicate[f.origin],
                quarantined[f.origin],
            ), f.origin
    finally:
        store.close()
    check_database(ws)
    # How often consecutive receipts in the index came from different processes.
    origins = [
        o
        for (o,) in sql(
            ws, "SELECT o.origin FROM events e LEFT JOIN origins o ON o.id = e.origin_id ORDER BY e.seq"
        )
    ]
    switches = sum(a != b for a, b in itertools.pairwise(origins))
    return {
        "lines": sum(len(f.lines) for f in files),
        "events": len(ids),
        "receipts": valid,
        "rejections": sum(len(f.invalid) for f in files),
        "sender_switches": switches,
    }


# -- 1. ingest processes on overlapping files --------------------------------------------------------------


@pytest.mark.slow
def test_ingest_processes_on_overlapping_files_keep_every_receipt(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    rounds = soak(2, 12)
    totals: Counter[str] = Counter()
    for round_ in range(rounds):
        ws = tmp_path / f"ws{round_}"
        files = [overlapping_file(tmp_path, round_, p, PROCESSES) for p in range(PROCESSES)]
        rng = random.Random(round_)
        commands = [
            ["ingest", str(f.path), "--workspace", str(ws), "--json", "--batch-size", str(rng.randint(1, 7))]
            for f in files
        ]
        if round_ % 2:
            # Odd rounds: nothing exists yet, and every process creates the workspace at once.
            procs = [Pik(tmp_path, *argv) for argv in commands]
        else:
            empty = tmp_path / f"empty{round_}.jsonl"
            empty.write_bytes(b"")
            cli("ingest", str(empty), "--workspace", str(ws), "--json").healthy()
            procs = start_together(tmp_path, ws, commands)
        runs = [p.wait().healthy() for p in procs]
        totals.update(check_ingested(ws, files, runs))
        totals["processes"] += len(procs)
    figures(
        "ingest processes on overlapping files",
        rounds=rounds,
        processes=totals["processes"],
        lines=totals["lines"],
        events=totals["events"],
        receipts_checked=totals["receipts"],
        rejections_checked=totals["rejections"],
        sender_switches=totals["sender_switches"],
        accepted_twice=0,
        lost=0,
        overwritten=0,
    )


# -- 2. processors on the same windows ---------------------------------------------------------------------


def _day_after(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def base_file(tmp: Path) -> Sent:
    """Eight events per window, the window's first and last millisecond-exact edges, and resends."""
    lines = []
    for e, entity in enumerate(ENTITIES):
        for d, day in enumerate(DAYS):
            lines += [line(entity, day, 60 * h + e + d, 10 * e + h) for h in range(0, 24, 3)]
    lines += [line("u0", DAYS[2], 0, 7), line("u1", DAYS[1], 24 * 60 - 1, 11)]  # 00:00 and 23:59
    lines += random.Random(0).sample(lines, 10)
    return Sent.write(tmp / "base.jsonl", lines)


def late_file(tmp: Path, stage: int, q: int, per_window: int = 1) -> Sent:
    """Late events for every window (some in every late file, ``per_window`` new ones only in this file of
    this stage), resends of base events and of its own lines, one idempotency key reused with another
    payload, invalid lines."""
    rng = random.Random(f"{stage}-{q}")
    lines = [line(e, d, 30 + i, 100 + i) for i, (e, d) in enumerate(WINDOWS)]  # every late file
    lines += [
        line(e, d, 31 + 60 * q + i, 10_000 * stage + 1000 * q + 100 * k + i)
        for k in range(per_window)
        for i, (e, d) in enumerate(WINDOWS)
    ]
    lines += [line(ENTITIES[q % 4], DAYS[q % 3], 45, 300 + q, key=f"late-{stage}")]
    lines += [line("u0", DAYS[0], 180, 3), line("u1", DAYS[1], 182, 13)]  # base events, sent again
    lines += rng.sample(lines, 4) + invalid_lines(f"{stage}-{q}")[1:3]
    rng.shuffle(lines)
    return Sent.write(tmp / f"late-{stage}-{q}.jsonl", lines)


@dataclass
class VersionFigures:
    windows: int = 0
    versions: int = 0
    max_version: int = 0


def check_versions(ws: Path, *, final: bool) -> VersionFigures:
    """Per (entity, day, metric): versions 1..n, each one's manifest, hash, count and value as it says, the
    inputs only growing; with ``final``, the latest is a fresh recompute of the whole window."""
    out = VersionFigures()
    store = LocalStore(ws, create=False)
    try:
        aggregates = local_ports(store).aggregates
        rows = sql(ws, "SELECT entity_id, day, metric, version, inputs_hash, record FROM aggregate_versions")
        for entity, day, metric, version, digest, record in rows:
            stored = json.loads(record)  # the row's columns and its record agree: nothing was rewritten
            assert (stored["entity_id"], stored["day"], stored["metric"]) == (entity, day, metric)
            assert (stored["version"], stored["inputs_hash"]) == (version, digest)
        assert {(e, d) for e, d, *_ in rows} <= set(WINDOWS)
        for entity, day in WINDOWS:
            end = _day_after(day)
            page = store.query_entity(entity, day, end, status=IngestStatus.ACCEPTED, limit=10_000)
            assert page.next_cursor is None
            window = {r.event_id: r for r in page.items}
            steps = {
                r.event_id: json.loads(store.get(r.s3_key) or b"{}")["payload"]["steps"] for r in page.items
            }
            out.windows += 1
            for metric in METRICS:
                versions = aggregates.versions(entity, day, metric=metric, limit=1000).items
                assert [v.version for v in versions] == list(range(1, len(versions) + 1)), (entity, day)
                previous = None
                inputs: set[str] = set()
                for v in versions:
                    manifest = aggregates.manifest(v.inputs_hash)
                    assert manifest is not None, f"version {v.version} of {metric} has no manifest"
                    ids = [m.event_id for m in manifest]
                    assert ids == sorted(ids) and inputs_hash(manifest) == v.inputs_hash
                    assert v.input_count == len(ids) and v.sample_event_ids == ids[: len(v.sample_event_ids)]
                    for m in manifest:
                        assert m.event_id in window, f"{metric} v{v.version} counts a non-accepted event"
                        assert m.payload_sha == window[m.event_id].payload_sha
                    value = len(ids) if metric == "daily_event_count" else sum(steps[i] for i in ids)
                    assert v.value == value, (entity, day, metric, v.version)
                    assert (v.window_start, v.window_end) == (f"{day}T00:00:00.000Z", f"{end}T00:00:00.000Z")
                    assert v.previous_version == (previous.version if previous else None)
                    assert v.previous_value == (previous.value if previous else None)
                    assert inputs < set(ids), f"{metric} v{v.version} of {entity} {day} adds no input"
                    previous, inputs = v, set(ids)
                    out.versions += 1
                    out.max_version = max(out.max_version, v.version)
                if final:
                    assert versions, (entity, day, metric)
                    assert inputs == set(window), f"the latest {metric} of {entity} {day} is not the window"
        assert out.versions == len(rows)
    finally:
        store.close()
    return out


def queue_state(ws: Path) -> tuple[int, int, int, list[str]]:
    """Visible, in-flight and dead messages of the replay queue, and the dead letters' bodies."""
    store = LocalStore(ws, create=False)
    try:
        queue = local_ports(store).queue
        depth = queue.depth()
        dead = queue.dead_letters(limit=1000).items
        assert all(d.receive_count == MAX_RECEIVES for d in dead)
        return depth.visible, depth.in_flight, depth.dead, [d.body for d in dead]
    finally:
        store.close()


def version_count(ws: Path) -> int:
    return int(sql(ws, "SELECT count(*) FROM aggregate_versions")[0][0])


def send_poison(ws: Path, bodies: list[str]) -> None:
    """Messages the processor cannot read, as any producer with access to a queue can send."""
    store = LocalStore(ws, create=False)
    try:
        assert local_ports(store).queue.send_batch(bodies) == []
    finally:
        store.close()


def replay_commands(ws: Path, scopes: Sequence[Sequence[str]]) -> list[list[str]]:
    return [["replay", *scope, "--execute", "--json", "--workspace", str(ws)] for scope in scopes]


def check_replays(runs: Sequence[Ran]) -> int:
    """Each replay sent exactly what it planned; returns the messages sent."""
    sent = 0
    for run in runs:
        r = run.healthy().json()
        assert r["outcome"] == "SENT" and r["sent"] == r["would_send"] and r["failed"] == 0, r
        sent += r["sent"]
    return sent


def check_processors(runs: Sequence[Ran]) -> dict[str, int]:
    """Each processor exited as its summary says (1 only with failing messages); the summaries summed."""
    total: Counter[str] = Counter()
    for run in runs:
        report = run.healthy(0, 1).json()
        assert run.code == (1 if report["failed_messages"] else 0), report
        assert report["received"] == report["processed"] + report["failed_attempts"], report
        for key in ("received", "processed", "failed_attempts", "dead_lettered", "versions_written"):
            total[key] += report[key]
    return total


# Each overlaps the others; every prefix of three or more touches every window.
OVERLAPPING_REPLAYS = [
    ["--source", SOURCE, "--type", TYPE, "--day", DAYS[1]],
    ["--source", SOURCE, "--type", TYPE, "--start", DAYS[0], "--end", _day_after(DAYS[2])],
    ["--entity", "u1", "--day", DAYS[1], "--include-duplicates"],
    ["--entity", "u0", "--start", DAYS[0], "--end", _day_after(DAYS[2])],
    ["--entity", "u2", "--start", f"{DAYS[0]}T12:00:00Z", "--end", f"{DAYS[2]}T12:00:00Z"],
    ["--source", SOURCE, "--type", TYPE, "--day", DAYS[2], "--include-duplicates"],
]
ALL_DAYS = ["--source", SOURCE, "--type", TYPE, "--start", DAYS[0], "--end", _day_after(DAYS[2])]


@pytest.mark.slow
def test_processors_on_the_same_windows_keep_versions_contiguous(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    ws = tmp_path / "ws"
    rounds = soak(1, 5)
    base = base_file(tmp_path)
    files, runs = [base], [cli("ingest", str(base.path), "--workspace", str(ws), "--json").healthy()]
    (ws / "settings.toml").write_text(SETTINGS)
    poison = [
        "not json at all",
        '{"entity_id": "u0"}',
        json.dumps({"entity_id": "u1", "event_time": "never"}),
    ]
    send_poison(ws, poison)

    # Stage 1: overlapping replays sent at once, then processors at once on the windows they touch.
    replays = start_together(tmp_path, ws, replay_commands(ws, OVERLAPPING_REPLAYS[:PROCESSORS]))
    messages = check_replays([p.wait() for p in replays])
    procs = start_together(tmp_path, ws, [["process", "--json", "--workspace", str(ws)]] * PROCESSORS)
    done = check_processors([p.wait() for p in procs])
    assert done["processed"] == messages, "every replay message processed once"
    assert done["failed_attempts"] == len(poison) * MAX_RECEIVES
    visible, in_flight, dead, bodies = queue_state(ws)
    assert (visible, in_flight, dead) == (0, 0, len(poison)) and sorted(bodies) == sorted(poison)
    assert done["dead_lettered"] == len(poison), "the processors' dead-letter counts add up"
    assert done["versions_written"] == version_count(ws) == len(WINDOWS) * len(METRICS)
    first = check_versions(ws, final=True)
    assert first.max_version == 1, "a window whose inputs did not change got a second version"
    processors, replayed, late_processes, retried = PROCESSORS, messages, 0, 0

    # Stage 2: processors again on every window while late events for those windows are ingested.
    for round_ in range(rounds):
        before = version_count(ws)
        messages = check_replays([cli(*replay_commands(ws, [[*ALL_DAYS, "--include-duplicates"]])[0])])
        late = [late_file(tmp_path, round_, q) for q in range(max(PROCESSORS // 2, 2))]
        commands = [["process", "--json", "--workspace", str(ws)]] * PROCESSORS
        commands += [
            ["ingest", str(f.path), "--workspace", str(ws), "--json", "--batch-size", "2"] for f in late
        ]
        procs = start_together(tmp_path, ws, commands)
        ran = [p.wait() for p in procs]
        done = check_processors(ran[:PROCESSORS])
        # A recompute that loses the race for the next version too often (late events keep arriving) fails
        # its message, which is then retried: every message is still processed, and none is dead-lettered.
        assert done["processed"] == messages
        retried += done["failed_attempts"]
        assert queue_state(ws)[:3] == (0, 0, len(poison))
        assert done["versions_written"] == version_count(ws) - before
        files += late
        runs += [r.healthy() for r in ran[PROCESSORS:]]
        check_versions(ws, final=False)
        processors += PROCESSORS
        late_processes += len(late)
        replayed += messages

    # Stage 3: one more replay of everything; the latest versions are the whole windows.
    messages = check_replays([cli(*replay_commands(ws, [ALL_DAYS])[0])])
    done = check_processors([cli("process", "--json", "--workspace", str(ws))])
    assert done["processed"] == messages
    last = check_versions(ws, final=True)
    assert last.max_version >= 2, "the late events made new versions"
    ingested = check_ingested(ws, files, runs)
    figures(
        "processors on the same windows, alone and racing late ingest",
        rounds=rounds,
        processor_processes=processors,
        late_ingest_processes=late_processes,
        replay_messages=replayed + messages,
        poison_messages=len(poison),
        dead_lettered=len(poison),
        retried_after_lost_races=retried,
        windows=last.windows,
        versions_checked=last.versions,
        max_version=last.max_version,
        events=ingested["events"],
        lost=0,
        overwritten=0,
        gaps=0,
    )


# -- 3. writers and readers at once ------------------------------------------------------------------------


def _reader_checks(argv: Sequence[str], data: Any) -> int:
    """A consistency check of one reader's output; returns the size it saw (which must never shrink)."""
    command = argv[0]
    if command == "lag":
        assert data["count"] == sum(h["count"] for h in data["hours"])
        return int(data["count"])
    if command == "aggregates":
        by_metric: dict[str, list[int]] = {}
        for v in data["items"]:
            by_metric.setdefault(v["metric"], []).append(v["version"])
        for versions in by_metric.values():
            assert versions == list(range(1, len(versions) + 1))
        return len(data["items"])
    items = data["items"]
    if "--status" not in argv:  # receipts of each event: 0, 1, 2... with receipt 0 the one ACCEPTED
        receipts: dict[str, list[int]] = {}
        for item in items:
            receipts.setdefault(item["event_id"], []).append(int(item["receipt"]))
            assert (item["status"] == "ACCEPTED") == (item["receipt"] == "0")
        for numbers in receipts.values():
            assert sorted(numbers) == list(range(len(numbers)))
    return len(items)


@pytest.mark.slow
def test_readers_never_fail_while_ingest_and_processors_write(
    tmp_path: Path, figures: Callable[..., None]
) -> None:
    ws = tmp_path / "ws"
    base = base_file(tmp_path)
    cli("ingest", str(base.path), "--workspace", str(ws), "--json").healthy()
    (ws / "settings.toml").write_text(SETTINGS)
    check_replays([cli(*replay_commands(ws, [[*ALL_DAYS, "--include-duplicates"]])[0])])
    late = [late_file(tmp_path, 0, q, per_window=8) for q in range(soak(2, 4))]
    writers = [["ingest", str(f.path), "--workspace", str(ws), "--json", "--batch-size", "1"] for f in late]
    writers += [["process", "--json", "--workspace", str(ws)]] * soak(2, 4)
    where = ["--workspace", str(ws), "--json"]
    readers = [
        ["events", "--entity", "u0", "--start", DAYS[0], "--end", _day_after(DAYS[2]), "--limit", "10000"],
        ["lag", "--source", SOURCE, "--type", TYPE, "--day", DAYS[0]],
        ["aggregates", "--entity", "u1", "--day", DAYS[1]],
    ]
    reads = soak(2, 10)
    initial = [_reader_checks(r, cli(*r, *where).healthy().json()) for r in readers]
    seen: dict[int, list[int]] = {i: [] for i in range(len(readers))}
    errors: list[BaseException] = []
    written = threading.Event()

    def keep_reading(i: int) -> None:
        # One reader after another (up to ``reads`` of them) while the writers start and run.
        try:
            while not written.is_set() and len(seen[i]) < reads:
                seen[i].append(
                    _reader_checks(readers[i], pik(tmp_path, *readers[i], *where).healthy().json())
                )
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=keep_reading, args=(i,)) for i in range(len(readers))]
    for t in threads:
        t.start()
    try:
        wrote = [p.wait() for p in start_together(tmp_path, ws, writers)]
    finally:
        written.set()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    for r in wrote[: len(late)]:
        r.healthy()
    check_processors(wrote[len(late) :])

    # Last, beside a long write transaction (a big ingest batch, another tool) that holds the write lock:
    # in WAL mode every read command answers at once, instead of waiting for the lock and failing with
    # "database is locked" after the busy timeout. These reads are the final state.
    also = [
        ["gaps", "--source", SOURCE, "--type", TYPE, "--start", DAYS[0], "--end", _day_after(DAYS[2])],
        ["events", "--status", "REJECTED", "--limit", "10000"],
        ["replays"],
    ]
    with write_lock_held(ws):
        last = [cli(*r, *where).healthy() for r in [*readers, *also]]
    mid_write = 0
    for i, sizes in seen.items():
        assert sizes == sorted(sizes), "a reader saw the workspace shrink"
        final = _reader_checks(readers[i], last[i].json())
        assert all(initial[i] <= size <= final for size in sizes)
        mid_write += sum(initial[i] < size < final for size in sizes)
    assert all(run.json() for run in last[len(readers) :])
    check_ingested(ws, [base, *late], [None, *wrote[: len(late)]])
    check_versions(ws, final=False)
    figures(
        "readers during ingest and processing, and beside a held write lock",
        writer_processes=len(writers),
        reader_processes=sum(len(sizes) for sizes in seen.values()),
        reads_seeing_writes_half_done=mid_write,
        reads_beside_held_lock=len(last),
        reads_failed=0,
        locked_errors=0,
        tracebacks=0,
    )


def test_a_processor_counts_only_the_dead_letters_it_caused(tmp_path: Path) -> None:
    """Two processors drain one queue: each reports the poison messages whose last receive it failed, not
    every dead letter that appeared while it ran, so that their summaries add up to the dead-letter queue."""
    from backend.services.processor import ProcessorService
    from pik_console.cli.process import drain

    store = LocalStore(tmp_path / "ws")
    try:
        ports = local_ports(store, max_receives=1)
        service = ProcessorService(ports.investigate, ports.catalog, ports.aggregates)
        assert ports.queue.send_batch(["poison one", "poison two"]) == []
        reports: list[dict[str, Any]] = []

        class Beside:
            """The queue as the first processor sees it: the second one runs between its first two calls."""

            def __init__(self) -> None:
                self.max_receives = ports.queue.max_receives
                self.first = True

            def __getattr__(self, name: str) -> Any:
                if self.first and name in ("receive", "receive_many"):
                    self.first = False
                    reports.append(drain(ports.queue, service, 30, None, io.StringIO(), True))
                return getattr(ports.queue, name)

        mine = drain(Beside(), service, 30, None, io.StringIO(), True)
        [beside] = reports
        assert (beside["failed_attempts"], beside["dead_lettered"]) == (2, 2)
        assert (mine["received"], mine["dead_lettered"]) == (0, 0)
        assert ports.queue.depth().dead == 2
    finally:
        store.close()
