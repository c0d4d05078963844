"""Benchmark harness: `pik ingest` against a bare SQLite insert of the same rows (`make bench`).

What it does, in order (docs/benchmarks.md has the why):

1. prints the machine: CPU, cores, memory, Python, SQLite, OS, filesystem, load average, git commit;
2. generates (or reuses) deterministic JSON Lines datasets in bench/out/ (datagen.py);
3. precomputes, outside any timing, the exact rows pik stores for the main dataset: an untimed reference
   run of `pik ingest` is read back table by table, and ``backend.services.ingest.prepare`` over every
   line says which rows each batch of input adds (and how long validation and identity take alone);
4. alternates A B A B ...: A = `pik ingest FILE --workspace DIR --json` as a child process into a fresh
   workspace (wall time, CPU time and peak RSS of that child alone: measure.py forks it from a tiny
   process and reads ``os.wait4``); B = plain ``executemany`` inserts of the precomputed rows into a fresh
   database with the same schema, indexes, PRAGMAs and transactions per batch;
5. one `pik ingest` of the big dataset for peak RSS against file size;
6. prints the figures against their targets and writes them to bench/out/latest.json.

Timing never fails the run: the exit status is 1 only if a run crashed or reported wrong counts.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import pstats
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import datagen

from backend.adapters.local import store as local_store
from backend.adapters.local.schema import migrate
from backend.services.ingest import Invalid, prepare

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"
STANDIN = BENCH / "standin_pik.py"
MEASURE = BENCH / "measure.py"
PHASES = BENCH / "profile_ingest.py"
# Lines per committed batch: the default of `pik ingest --batch-size` (and of IngestService.ingest_stream).
# The baseline commits in batches of the same size.
BATCH = 10_000

TARGET_EVENTS_PER_S = 20_000
TARGET_RATIO = 1.5  # issue 17: at most 1.5x the bare insert of the same rows
TARGET_RSS_RATIO = 1.25


class BenchError(Exception):
    """A run crashed or reported wrong counts: the harness exits 1."""


def log(text: str = "") -> None:
    print(text, flush=True)


# -- the machine -------------------------------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _filesystem(path: Path) -> str:
    best = ("", "?", "?")
    for line in _read("/proc/mounts").splitlines():
        parts = line.split()
        if len(parts) >= 3 and str(path).startswith(parts[1]) and len(parts[1]) >= len(best[0]):
            best = (parts[1], parts[2], parts[0])
    return f"{best[1]} ({best[2]} on {best[0]})" if best[0] else "unknown"


def machine() -> dict[str, Any]:
    cpuinfo = _read("/proc/cpuinfo")
    model = re.search(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = dict(re.findall(r"^(\w+):\s+(\d+) kB", _read("/proc/meminfo"), re.M))
    changed = [line[3:] for line in _git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {
        "cpu": model.group(1).strip() if model else (platform.processor() or "unknown"),
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_mib": int(meminfo.get("MemTotal", 0)) // 1024,
        "mem_available_mib": int(meminfo.get("MemAvailable", 0)) // 1024,
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "sqlite": sqlite3.sqlite_version,
        "os": platform.platform(),
        "filesystem": _filesystem(OUT),
        "loadavg_start": list(os.getloadavg()),
        "git_commit": _git("rev-parse", "HEAD").strip(),
        "git_changed_files": changed,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_machine(m: dict[str, Any]) -> None:
    log("== Machine")
    log(f"  CPU        {m['cpu']}")
    log(f"  cores      {m['cores']} (usable by this process: {m['cores_usable']})")
    log(f"  memory     {m['mem_total_mib']:,} MiB total, {m['mem_available_mib']:,} MiB available")
    log(f"  Python     {m['python']} ({m['python_impl']})")
    log(f"  SQLite     {m['sqlite']}")
    log(f"  OS         {m['os']}")
    log(f"  disk       {m['filesystem']}")
    log(f"  load avg   {' '.join(f'{x:.2f}' for x in m['loadavg_start'])} (1, 5, 15 min) at start")
    dirty = f" + uncommitted changes in {len(m['git_changed_files'])} files" if m["git_changed_files"] else ""
    log(f"  git        {m['git_commit'][:12] or 'unknown'}{dirty}")
    log(f"  started    {m['started_at']}")


# -- child processes ---------------------------------------------------------------------------------------


@dataclass
class ChildRun:
    wall_s: float
    user_s: float
    sys_s: float
    max_rss_mib: float  # the largest single process
    tree_pss_mib: float  # sampled peak of the summed PSS of the command's processes
    tree_processes: int  # the most processes seen at once
    returncode: int
    stdout: str
    stderr: str


def run_child(cmd: Sequence[str], log_dir: Path, name: str) -> ChildRun:
    """Run ``cmd`` under bench/measure.py, which forks it from a tiny process and reads ``os.wait4``: the
    resource usage (peak RSS included) is that child's alone, not inflated by this big harness process."""
    log_dir.mkdir(parents=True, exist_ok=True)
    out_path, err_path = log_dir / f"{name}.stdout", log_dir / f"{name}.stderr"
    usage_path = log_dir / f"{name}.usage.json"
    usage_path.unlink(missing_ok=True)
    with out_path.open("wb") as out, err_path.open("wb") as err:
        helper = subprocess.run(
            [sys.executable, "-S", str(MEASURE), str(usage_path), *cmd],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=ROOT,
            check=False,
        )
    stderr = err_path.read_text(errors="replace")
    if not usage_path.exists():
        raise BenchError(
            f"{name}: the measuring helper failed ({helper.returncode}): {stderr.strip()[-500:]}"
        )
    usage = json.loads(usage_path.read_text())
    return ChildRun(
        wall_s=usage["wall_s"],
        user_s=usage["user_s"],
        sys_s=usage["sys_s"],
        max_rss_mib=usage["max_rss_kib"] / 1024,
        tree_pss_mib=usage["tree_peak_pss_kib"] / 1024,
        tree_processes=usage["tree_max_processes"],
        returncode=usage["returncode"],
        stdout=out_path.read_text(errors="replace"),
        stderr=stderr,
    )


def ingest_script(kind: str) -> Path:
    return Path(sys.executable).parent / "pik" if kind == "pik" else STANDIN


def ingest_command(kind: str, path: Path, workspace: Path, extra: Sequence[str] = ()) -> list[str]:
    """``pik ingest FILE --workspace DIR --json`` (or the stand-in, run with this interpreter)."""
    args = ["ingest", str(path), "--workspace", str(workspace), "--json", *extra]
    return [str(ingest_script(kind)), *args] if kind == "pik" else [sys.executable, str(STANDIN), *args]


def parse_summary(stdout: str) -> dict[str, Any]:
    text = stdout.strip()
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
        for line in reversed(text.splitlines()):
            try:
                value = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    if not isinstance(value, dict):
        raise BenchError(f"no JSON summary on stdout: {text[-300:]!r}")
    return value


def fresh(path: Path) -> Path:
    if path.is_dir():
        shutil.rmtree(path)
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tables(conn: sqlite3.Connection) -> list[str]:
    """The database's own tables, in the order the schema creates them."""
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite%' ORDER BY rowid"
        )
    ]


def table_counts(db: Path) -> dict[str, int]:
    """Rows in each table, read with a fresh connection (also checks that the database is readable)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: conn.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in _tables(conn)}
    finally:
        conn.close()


def db_size_mib(db: Path) -> float:
    return sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists()) / 2**20


def run_pik(
    kind: str,
    path: Path,
    expected: datagen.Expected,
    name: str,
    *,
    keep: bool = False,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """One ingest into a fresh workspace; checks the summary's counts. ``keep`` leaves the workspace;
    ``extra``: more options for the command."""
    workspace = fresh(OUT / "ws" / name)
    child = run_child(ingest_command(kind, path, workspace, extra), OUT / "logs", name)
    if child.returncode != 0:
        raise BenchError(f"{name}: exit status {child.returncode}; stderr: {child.stderr.strip()[-500:]}")
    summary = parse_summary(child.stdout)
    got = {k: summary.get(k) for k in ("accepted", "duplicate", "rejected")}
    want = {"accepted": expected.accepted, "duplicate": expected.duplicate, "rejected": expected.rejected}
    if got != want:
        raise BenchError(f"{name}: summary counts {got} differ from the generator's {want}")
    db = workspace / local_store.DB_NAME
    result = {
        "name": name,
        "lines": expected.lines,
        "wall_s": child.wall_s,
        "cpu_s": child.user_s + child.sys_s,
        "user_s": child.user_s,
        "sys_s": child.sys_s,
        "max_rss_mib": child.max_rss_mib,
        "tree_pss_mib": child.tree_pss_mib,
        "tree_processes": child.tree_processes,
        "events_per_s": expected.lines / child.wall_s,
        "reported_seconds": summary.get("seconds"),
        "counts": got,
        "tables": table_counts(db),
        "db_mib": db_size_mib(db),
        "workspace_bytes": sum(f.stat().st_size for f in workspace.rglob("*") if f.is_file()),
        "db": str(db),
    }
    if not keep:
        shutil.rmtree(workspace)
    return result


# -- the bare SQLite baseline ------------------------------------------------------------------------------
#
# The rows are the exact rows pik stores: they are read back from an untimed reference run of `pik ingest`
# on the same file, so the baseline follows the adapter's row layout whatever it becomes. The input is
# also run through ``prepare()`` line by line (untimed for the baseline) to know which rows each batch of
# input adds to the three per-batch tables, and how long validation and identity take on their own.

# The adapter commits each batch as two transactions, in this order: the quarantine, then raw bytes and
# index rows together (LocalStore.store_receipts).
BATCH_TABLES = ("rejections", "raw", "events")
BATCH_TRANSACTIONS = (("rejections",), ("raw", "events"))


# Per-connection settings that change write speed; page_size first (it must precede the first write).
PRAGMA_NAMES = (
    "page_size", "journal_mode", "synchronous", "cache_size", "wal_autocheckpoint", "busy_timeout",
    "recursive_triggers", "foreign_keys", "temp_store", "mmap_size", "locking_mode", "cache_spill",
)  # fmt: skip


def adapter_pragmas() -> list[str]:
    """The PRAGMAs in effect on the LocalStore connection that ingests (read from a live one in a scratch
    workspace, after an empty bulk write: that is when it takes the writer's page cache; so the baseline
    follows the adapter), as statements to apply to the baseline."""
    workspace = fresh(OUT / "ws" / "pragmas")
    store = local_store.LocalStore(workspace)
    try:
        with store.db.write("read the ingest connection's pragmas", bulk=True):
            pass
        conn = store.db.connection()
        values = {name: conn.execute(f"PRAGMA {name}").fetchone()[0] for name in PRAGMA_NAMES}
    finally:
        store.close()
        shutil.rmtree(workspace, ignore_errors=True)
    if str(values["journal_mode"]).lower() != "wal":
        raise BenchError(f"the adapter's connection is not in WAL mode: {values}")
    return [f"PRAGMA {name} = {value}" for name, value in values.items()]


@dataclass
class InputShape:
    """What each batch of the input adds to the per-batch tables, from ``prepare()`` alone."""

    per_batch: list[dict[str, int]]
    prepare_s: float  # CPU time of prepare() over every line: validation, parsing, identity
    accepted: int
    duplicate: int
    rejected: int


def input_shape(path: Path, batch_size: int = BATCH) -> InputShape:
    seen: set[tuple[str, str]] = set()  # (event id, raw sha256): each stores its bytes once
    accepted: set[str] = set()
    per_batch: list[dict[str, int]] = []
    prepare_s = 0.0
    valid = rejected = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if (number - 1) % batch_size == 0:
                per_batch.append(dict.fromkeys(BATCH_TABLES, 0))
            counts = per_batch[-1]
            body = line.removesuffix(b"\n").removesuffix(b"\r")
            started = time.process_time()
            try:
                p = prepare(body)
            except Invalid:
                prepare_s += time.process_time() - started
                counts["rejections"] += 1
                rejected += 1
                continue
            prepare_s += time.process_time() - started
            valid += 1
            counts["events"] += 1  # every receipt is a row, the acceptance and each duplicate
            accepted.add(p.event_id)
            if (p.event_id, p.raw_sha) not in seen:  # new bytes: a raw row (identity or receipt key)
                seen.add((p.event_id, p.raw_sha))
                counts["raw"] += 1
    return InputShape(per_batch, prepare_s, len(accepted), valid - len(accepted), rejected)


@dataclass
class Transaction:
    steps: list[tuple[str, list[tuple[Any, ...]]]]  # (INSERT statement, rows) in order


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    cols = ", ".join(f'"{c}"' for c in columns)
    return f'INSERT INTO "{table}" ({cols}) VALUES ({", ".join("?" * len(columns))})'


def baseline_transactions(reference_db: Path, shape: InputShape, pragmas: Sequence[str]) -> list[Transaction]:
    """The reference run's rows as the adapter commits them: per input batch, one transaction for each
    group of BATCH_TRANSACTIONS. Rows of any other table (entity and partition numbers, ...) go into the
    first index transaction, ahead of the events that refer to them. Rows the schema migration itself
    writes are left out: the fresh baseline database has them already."""
    fresh_db = fresh(OUT / "bare" / "migrated.sqlite3")
    conn = sqlite3.connect(fresh_db, isolation_level=None)
    for pragma in pragmas:
        conn.execute(pragma)
    migrate(conn)
    preexisting = {t: set(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in _tables(conn)}
    conn.close()
    ref = sqlite3.connect(f"file:{reference_db}?mode=ro", uri=True)
    rows: dict[str, list[tuple[Any, ...]]] = {}
    sql: dict[str, str] = {}
    for table in _tables(ref):
        without_rowid = (
            "WITHOUT ROWID"
            in str(
                ref.execute("SELECT sql FROM sqlite_schema WHERE name = ?", (table,)).fetchone()[0]
            ).upper()
        )
        cur = ref.execute(f'SELECT * FROM "{table}"' + ("" if without_rowid else " ORDER BY rowid"))
        sql[table] = _insert_sql(table, [d[0] for d in cur.description])
        rows[table] = [r for r in cur.fetchall() if r not in preexisting.get(table, ())]
    ref.close()
    for table in BATCH_TABLES:
        want = sum(b[table] for b in shape.per_batch)
        if table not in rows or len(rows[table]) != want:
            got = len(rows.get(table, []))
            raise BenchError(f"the reference run stored {got} rows in {table!r}; the input makes {want}")
    others = [(sql[t], r) for t, r in rows.items() if t not in BATCH_TABLES and r]
    txns: list[Transaction] = []
    offsets = dict.fromkeys(BATCH_TABLES, 0)
    for i, counts in enumerate(shape.per_batch):
        for group in BATCH_TRANSACTIONS:
            steps: list[tuple[str, list[tuple[Any, ...]]]] = []
            for table in group:
                start, n = offsets[table], counts[table]
                offsets[table] += n
                if table == "events" and i == 0:
                    steps += others
                if n:
                    steps.append((sql[table], rows[table][start : start + n]))
            if steps:
                txns.append(Transaction(steps))
    return txns


def bare_insert(db: Path, txns: Sequence[Transaction], pragmas: Sequence[str], lines: int) -> dict[str, Any]:
    """Plain executemany of the precomputed rows; times only the transactions and the final close."""
    fresh(db)
    conn = sqlite3.connect(db, isolation_level=None)
    for pragma in pragmas:
        conn.execute(pragma)
    migrate(conn)
    gc.collect()
    started = time.perf_counter()
    for txn in txns:
        conn.execute("BEGIN IMMEDIATE")
        for statement, part in txn.steps:
            conn.executemany(statement, part)
        conn.execute("COMMIT")
    inserted = time.perf_counter()
    conn.close()  # the last connection's close checkpoints the WAL, as pik's does
    ended = time.perf_counter()
    return {
        "wall_s": ended - started,
        "insert_s": inserted - started,
        "close_s": ended - inserted,
        "transactions": len(txns),
        "events_per_s": lines / (ended - started),
        "tables": table_counts(db),
        "db_mib": db_size_mib(db),
    }


def cache_cap_mib(pragmas: Sequence[str]) -> float | None:
    """The page cache bound set by ``PRAGMA cache_size`` (negative: KiB; positive: pages of 4 KiB)."""
    cap = None
    for pragma in pragmas:
        found = re.fullmatch(r"PRAGMA cache_size\s*=\s*(-?\d+)", pragma.strip())
        if found:
            n = int(found.group(1))
            cap = -n / 1024 if n < 0 else n * 4096 / 2**20
    return cap


def phase_split(path: Path, prof: Path | None = None) -> dict[str, Any] | None:
    """The same ingest on one thread with read / prepare_batch / commit timed apart (profile_ingest.py);
    with ``prof``, under cProfile as well. Diagnostic only: a failure is reported, not fatal."""
    name = "phases-cprofile" if prof else "phases"
    workspace = fresh(OUT / "ws" / name)
    result = OUT / "logs" / f"{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, str(PHASES), str(path), str(workspace), str(result)]
    child = run_child([*cmd, "--cprofile", str(prof)] if prof else cmd, OUT / "logs", name)
    shutil.rmtree(workspace, ignore_errors=True)
    if child.returncode != 0 or not result.exists():
        log(f"  (skipped: {PHASES.name} failed: {child.stderr.strip()[-300:]})")
        return None
    phases: dict[str, Any] = json.loads(result.read_text())
    return phases


def profile_once(path: Path, top: int = 12) -> dict[str, Any] | None:
    """One single-threaded run under cProfile: where the time goes, function by function."""
    prof = OUT / "pik.prof"
    log(f"\n== Profile: {path.name} on one thread under cProfile ({prof.relative_to(ROOT)})")
    if phase_split(path, prof) is None:
        return None
    stats = pstats.Stats(str(prof))
    total = stats.total_tt
    rows = []
    for (filename, line, func), (_, calls, tottime, cumtime, _) in stats.stats.items():
        ours = any(f"/{pkg}/" in filename for pkg in ("backend", "pik_console"))
        name = func if filename == "~" else f"{Path(filename).name}:{line}({func})"
        rows.append(
            {"function": name, "ours": ours, "calls": calls, "tottime_s": tottime, "cumtime_s": cumtime}
        )
    log(f"  total {total:.2f} s (cProfile slows Python code down: read the shares, not the seconds)")
    by_own = sorted(rows, key=lambda r: r["tottime_s"], reverse=True)[:top]
    by_cum = sorted((r for r in rows if r["ours"]), key=lambda r: r["cumtime_s"], reverse=True)[:top]
    for title, listing, key in (
        ("own time", by_own, "tottime_s"),
        ("cumulative time, kit code", by_cum, "cumtime_s"),
    ):
        log(f"  top {top} by {title}:")
        for r in listing:
            share = 100 * r[key] / total if total else 0
            log(f"  {r[key]:7.2f} s {share:5.1f}%  {r['calls']:>9,} calls  {r['function']}")
    return {"total_s": total, "by_own_time": by_own, "by_cumulative_time": by_cum}


# -- figures -----------------------------------------------------------------------------------------------


def spread(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def fmt_spread(s: dict[str, float], unit: str = "", digits: int = 0) -> str:
    def f(x: float) -> str:
        return f"{x:,.{digits}f}{unit}"

    return f"{f(s['median'])}  (min {f(s['min'])}, max {f(s['max'])})"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k and 100k lines instead of 200k and 1M")
    parser.add_argument("--repeats", type=int, default=3, help="A B pairs to run (default 3)")
    parser.add_argument(
        "--command",
        choices=("auto", "pik", "standin"),
        default="auto",
        help="what to time: the real `pik ingest` (auto: when pik_console/cli exists) or the stand-in",
    )
    parser.add_argument(
        "--profile", action="store_true", help="also profile one single-threaded ingest with cProfile"
    )
    parser.add_argument(
        "--ingest-only",
        action="store_true",
        help="figure 1 and where the time goes only (no RSS at 1M lines, replay, volume or overview figures)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    main_lines, big_lines = (20_000, 100_000) if args.quick else (200_000, 1_000_000)
    kind = args.command
    if kind == "auto":
        have_pik = (ROOT / "pik_console" / "cli" / "__init__.py").exists() and (
            Path(sys.executable).parent / "pik"
        ).exists()
        kind = "pik" if have_pik else "standin"
    label = "pik ingest" if kind == "pik" else "STAND-IN (bench/standin_pik.py, not pik)"

    m = machine()
    print_machine(m)
    results: dict[str, Any] = {
        "machine": m,
        "config": {
            "quick": args.quick,
            "repeats": args.repeats,
            "command": kind,
            "command_label": label,
            "batch_size": BATCH,
        },
        "problems": [],
    }
    problems: list[str] = results["problems"]
    try:
        run(args, kind, label, main_lines, big_lines, results)
    except BenchError as exc:
        problems.append(str(exc))
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    log(f"\n  load avg at end: {' '.join(f'{x:.2f}' for x in results['machine']['loadavg_end'])}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    log(f"  results written to {(OUT / 'latest.json').relative_to(ROOT)}")
    if problems:
        log("\nFAILED (a run crashed or reported wrong counts):")
        for p in problems:
            log(f"  - {p}")
        return 1
    return 0


def run(
    args: argparse.Namespace, kind: str, label: str, main_lines: int, big_lines: int, results: dict[str, Any]
) -> None:
    log("\n== Datasets (bench/out/)")
    datasets: dict[str, tuple[Path, datagen.Expected]] = {}
    sizes = [("main", main_lines)] + ([] if args.ingest_only else [("big", big_lines)])
    for name, n in sizes:
        started = time.perf_counter()
        path, expected, made = datagen.ensure(OUT, n)
        how = f"generated in {time.perf_counter() - started:.1f} s" if made else "reused"
        log(
            f"  {path.name}: {n:,} lines, {path.stat().st_size / 2**20:,.1f} MiB ({how}); expect accepted "
            f"{expected.accepted:,}, duplicate {expected.duplicate:,}, rejected {expected.rejected:,}"
        )
        datasets[name] = (path, expected)
    results["datasets"] = {
        name: {"file": str(p.relative_to(ROOT)), "bytes": p.stat().st_size, "expected": asdict(e)}
        for name, (p, e) in datasets.items()
    }
    main_path, main_expected = datasets["main"]

    log(f"\n== Precomputing the rows pik stores for {main_path.name} (not timed)")
    shape = input_shape(main_path)
    pre = {"accepted": shape.accepted, "duplicate": shape.duplicate, "rejected": shape.rejected}
    want = {"accepted": main_expected.accepted, "duplicate": main_expected.duplicate}
    want["rejected"] = main_expected.rejected
    if pre != want:
        raise BenchError(f"the kit's own prepare() counts {pre} differ from the generator's {want}")
    log(f"  prepare() over {main_lines:,} lines: {shape.prepare_s:.2f} s CPU (validation, parsing, identity)")
    reference = run_pik(kind, main_path, main_expected, "reference", keep=True)
    pragmas = adapter_pragmas()
    txns = baseline_transactions(Path(reference["db"]), shape, pragmas)
    shutil.rmtree(Path(reference["db"]).parent)
    log(
        f"  reference run of {label} (untimed, warm-up): {reference['wall_s']:.2f} s; rows stored: "
        + ", ".join(f"{t} {n:,}" for t, n in reference["tables"].items())
    )
    log(f"  baseline: those rows in {len(txns)} transactions (batches of {BATCH:,} lines)")
    log(f"  PRAGMAs (as on a LocalStore connection): {'; '.join(pragmas)}")
    results["prepare_cpu_s"] = shape.prepare_s
    results["pragmas"] = pragmas
    results["reference_run"] = reference
    gc.collect()
    gc.freeze()  # the precomputed rows stay put; keep the collector from rescanning them

    log("\n== Startup: the command on an empty file (interpreter, imports, new workspace)")
    empty = OUT / "empty.jsonl"
    empty.write_bytes(b"")
    startup = [run_pik(kind, empty, datagen.Expected(0, 0, 0, 0, 0, 0), f"startup-{i}") for i in range(3)]
    results["startup_s"] = spread([r["wall_s"] for r in startup])
    results["startup_rss_mib"] = statistics.median(r["max_rss_mib"] for r in startup)
    log(f"  {fmt_spread(results['startup_s'], ' s', 2)}; peak RSS {results['startup_rss_mib']:.1f} MiB")

    log(f"\n== Figure 1: {label} of {main_lines:,} lines vs bare SQLite inserts (A B x {args.repeats})")
    pik_runs: list[dict[str, Any]] = []
    single_runs: list[dict[str, Any]] = []  # the same command in one process (--workers 0)
    bare_runs: list[dict[str, Any]] = []
    for i in range(1, args.repeats + 1):
        a = run_pik(kind, main_path, main_expected, f"pik-{main_lines}-{i}")
        pik_runs.append(a)
        log(
            f"  A{i} {label.split(' (')[0]}: {a['wall_s']:6.2f} s  {a['events_per_s']:8,.0f} events/s  "
            f"CPU {a['cpu_s']:5.2f} s  peak RSS {a['max_rss_mib']:6.1f} MiB"
            + (f"  (own timer {a['reported_seconds']:.2f} s)" if a["reported_seconds"] is not None else "")
            + (
                f"  [{a['tree_processes']} processes: peak PSS {a['tree_pss_mib']:.1f} MiB together]"
                if a["tree_processes"] > 1
                else ""
            )
        )
        if kind == "pik":
            one = run_pik(kind, main_path, main_expected, f"pik1-{main_lines}-{i}", extra=["--workers", "0"])
            single_runs.append(one)
            log(
                f"  A{i}' the same, --workers 0: {one['wall_s']:6.2f} s  "
                f"{one['events_per_s']:8,.0f} events/s  CPU {one['cpu_s']:5.2f} s"
            )
        b = bare_insert(OUT / "bare" / "bare.sqlite3", txns, pragmas, main_lines)
        bare_runs.append(b)
        log(
            f"  B{i} bare insert: {b['wall_s']:6.2f} s  {b['events_per_s']:8,.0f} events/s  "
            f"(inserts {b['insert_s']:.2f} s, close/checkpoint {b['close_s']:.2f} s)"
        )
        if a["tables"] != b["tables"]:
            raise BenchError(f"pik stored {a['tables']} but the baseline's rows are {b['tables']}")
    ratios = [a["wall_s"] / b["wall_s"] for a, b in zip(pik_runs, bare_runs, strict=True)]
    fig1 = {
        "pik_wall_s": spread([r["wall_s"] for r in pik_runs]),
        "pik_events_per_s": spread([r["events_per_s"] for r in pik_runs]),
        "pik_cpu_s": spread([r["cpu_s"] for r in pik_runs]),
        "bare_wall_s": spread([r["wall_s"] for r in bare_runs]),
        "bare_events_per_s": spread([r["events_per_s"] for r in bare_runs]),
        "ratio_pik_over_bare": spread(ratios),
        "single_process_events_per_s": (
            spread([r["events_per_s"] for r in single_runs]) if single_runs else None
        ),
        "ratio_single_over_bare": (
            spread([a["wall_s"] / b["wall_s"] for a, b in zip(single_runs, bare_runs, strict=True)])
            if single_runs
            else None
        ),
        "tables": pik_runs[0]["tables"],
        "pik_db_mib": pik_runs[0]["db_mib"],
        "bare_db_mib": bare_runs[0]["db_mib"],
    }
    results["figure1"] = fig1
    results["runs"] = {"pik": pik_runs, "bare": bare_runs}
    shutil.rmtree(OUT / "bare", ignore_errors=True)
    log("  rows stored (both): " + ", ".join(f"{t} {n:,}" for t, n in fig1["tables"].items()))
    log(f"  {label}: {fmt_spread(fig1['pik_events_per_s'], ' events/s')}")
    log(f"  bare insert: {fmt_spread(fig1['bare_events_per_s'], ' events/s')}")
    log(f"  ratio pik / bare (per pair): {fmt_spread(fig1['ratio_pik_over_bare'], 'x', 2)}")
    if single_runs:
        single = fmt_spread(fig1["single_process_events_per_s"], " events/s")
        ratio = fmt_spread(fig1["ratio_single_over_bare"], "x", 2)
        log(f"  in one process (--workers 0): {single}, ratio {ratio}")
    pik_med, bare_med = fig1["pik_wall_s"]["median"], fig1["bare_wall_s"]["median"]
    log(f"\n== Where the time goes: the same ingest on one thread, phase by phase ({PHASES.name})")
    phases = phase_split(main_path)
    if phases is not None:
        storage = phases["commit_s"] - bare_med
        log(f"  read lines     {phases['read_s']:6.2f} s")
        log(f"  prepare_batch  {phases['prepare_batch_s']:6.2f} s   parse, validate, identify (CPU only)")
        log(f"  commit         {phases['commit_s']:6.2f} s   quarantine, raw, index (IngestService.store)")
        log(f"  close          {phases['close_s']:6.2f} s")
        log(f"  total          {phases['total_s']:6.2f} s   ({main_lines / phases['total_s']:,.0f} events/s)")
        own = [r["reported_seconds"] for r in pik_runs if isinstance(r["reported_seconds"], int | float)]
        own_text = f", {statistics.median(own):.2f} s by its own timer (no startup)" if own else ""
        log(f"  compare `{label}`: median {pik_med:.2f} s wall{own_text}")
        log(
            f"  the bare insert of the same rows takes {bare_med:.2f} s (median): commit spends "
            f"{storage:.2f} s beyond plain inserts (Python around the SQL, and the SQL of its own stream)"
        )
        results["phases"] = {**phases, "pik_median_s": pik_med, "bare_median_s": bare_med}
    del txns
    gc.unfreeze()
    gc.collect()

    targets = [
        {
            "figure": f"{label} events/s, {main_lines:,} lines (median)",
            "measured": f"{fig1['pik_events_per_s']['median']:,.0f}",
            "target": f">= {TARGET_EVENTS_PER_S:,}",
            "floor": f"bare insert {fig1['bare_events_per_s']['median']:,.0f}/s",
            "pass": fig1["pik_events_per_s"]["median"] >= TARGET_EVENTS_PER_S,
        },
        {
            "figure": "time vs bare SQLite insert (median ratio)",
            "measured": f"{fig1['ratio_pik_over_bare']['median']:.2f}x",
            "target": f"<= {TARGET_RATIO:g}x",
            "floor": f"bare insert {fig1['bare_wall_s']['median']:.2f} s",
            "pass": fig1["ratio_pik_over_bare"]["median"] <= TARGET_RATIO,
        },
    ]
    if not args.ingest_only:
        _after_figure1(
            args, kind, label, main_lines, big_lines, results, datasets, pik_runs, pragmas, targets
        )
    results["targets"] = targets
    log("\n== Targets (timing never fails the run; floor: the same work at its cheapest, this run)")
    width = max(len(t["figure"]) for t in targets)
    twidth = max(len(t["target"]) for t in targets)
    log(f"  {'figure':<{width}}  {'measured':>10}  {'target':<{twidth}}  result  floor")
    for t in targets:
        result = "PASS" if t["pass"] else "MISS"
        floor = t.get("floor", "")
        log(f"  {t['figure']:<{width}}  {t['measured']:>10}  {t['target']:<{twidth}}  {result:<6}  {floor}")
    if kind != "pik":
        log("  NOTE: these are the STAND-IN's figures (bench/standin_pik.py), not those of `pik ingest`.")


def _after_figure1(
    args: argparse.Namespace,
    kind: str,
    label: str,
    main_lines: int,
    big_lines: int,
    results: dict[str, Any],
    datasets: dict[str, tuple[Path, datagen.Expected]],
    pik_runs: list[dict[str, Any]],
    pragmas: Sequence[str],
    targets: list[dict[str, Any]],
) -> None:
    """Figure 2 (RSS at the big file), the profile, then the replay, volume and overview figures."""
    main_path, _ = datasets["main"]
    big_path, big_expected = datasets["big"]
    log(f"\n== Figure 2: peak RSS of {label} at {main_lines:,} and {big_lines:,} lines")
    big = run_pik(kind, big_path, big_expected, f"pik-{big_lines}")
    rss_main = statistics.median(r["max_rss_mib"] for r in pik_runs)
    fig2 = {
        "rss_main_mib": rss_main,
        "rss_big_mib": big["max_rss_mib"],
        "ratio_big_over_main": big["max_rss_mib"] / rss_main,
        "big_events_per_s": big["events_per_s"],
        "big_wall_s": big["wall_s"],
        "big_db_mib": big["db_mib"],
    }
    results["figure2"] = fig2
    results["runs"]["pik_big"] = big
    log(f"  {main_lines:>9,} lines: {rss_main:7.1f} MiB (median of the figure 1 runs)")
    log(
        f"  {big_lines:>9,} lines: {big['max_rss_mib']:7.1f} MiB  (that run: {big['wall_s']:.1f} s, "
        f"{big['events_per_s']:,.0f} events/s)"
    )
    log(f"  ratio: {fig2['ratio_big_over_main']:.2f}x")
    tree_main = statistics.median(r["tree_pss_mib"] for r in pik_runs)
    processes = max([big["tree_processes"], *(r["tree_processes"] for r in pik_runs)])
    fig2.update(
        tree_pss_main_mib=tree_main,
        tree_pss_big_mib=big["tree_pss_mib"],
        tree_ratio_big_over_main=big["tree_pss_mib"] / tree_main if tree_main else None,
        max_processes=processes,
    )
    if processes > 1:
        log(
            f"  the command ran up to {processes} processes; peak RSS above is the largest one's. All of "
            f"them together (summed PSS, sampled): {tree_main:.1f} MiB and {big['tree_pss_mib']:.1f} MiB, "
            f"{fig2['tree_ratio_big_over_main']:.2f}x"
        )
    cache = cache_cap_mib(pragmas)
    if cache is not None:
        fig2["sqlite_cache_cap_mib"] = cache
        log(
            f"  note: RSS includes SQLite's page cache, which grows with the database up to the adapter's "
            f"cache_size cap ({cache:,.0f} MiB), then stays flat; startup alone is "
            f"{results['startup_rss_mib']:.0f} MiB"
        )
    if args.profile:
        results["profile"] = profile_once(main_path)

    targets.append(
        {
            "figure": f"peak RSS {big_lines:,} / {main_lines:,} lines",
            "measured": f"{fig2['ratio_big_over_main']:.2f}x",
            "target": f"<= {TARGET_RSS_RATIO:g}x (flat)",
            "pass": fig2["ratio_big_over_main"] <= TARGET_RSS_RATIO,
        }
    )
    # Replay and processor figures (issue 4): bench/investigate_bench.py.
    import investigate_bench

    results["replay"] = investigate_bench.run_figures(log)
    targets += results["replay"]["targets"]
    # Issue 17's figures: dry runs at 100k/1M, the processor against the ingest rate, workspace size.
    import volume_bench

    main_run = pik_runs[0]
    size = volume_bench.workspace_figures(main_run["workspace_bytes"], main_path.stat().st_size, main_lines)
    results["volume"] = volume_bench.run_figures(args.quick, log, size)
    targets += results["volume"]["targets"]
    # Issue 18's figure: pik overview on the 2M-event workspace (200k with --quick).
    import overview_bench

    results["overview"] = overview_bench.run_figures(args.quick, log)
    targets += results["overview"]["targets"]


if __name__ == "__main__":
    sys.exit(main())
