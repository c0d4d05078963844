"""Where a workspace's bytes go, and what compressing the raw bytes would save (issue 17, item 4).

Both halves read an existing workspace (made by ``pik ingest``) and change nothing; the byte figures are
exact and do not depend on the machine's load, the speed figures (process CPU time, medians) do.

* **breakdown**: the bytes of each table and index (SQLite's ``dbstat``), per accepted event, beside the
  bytes of JSON per line, so the target (workspace <= 2.5x the JSON) can be split into what each part costs;
* **raw compression**: the raw bytes of a sample of events compressed one row at a time, as a schema
  that compresses per row would store them: zlib at levels 1, 6 and 9, zlib with a preset dictionary made of
  the first rows, and zstd (the ``zstandard`` package, if installed) plain and with a dictionary trained on
  the first rows; bytes per event and CPU microseconds per row to compress and to decompress.

    .venv/bin/python bench/storage_bench.py WORKSPACE [--json-bytes-per-line B] [--sample N]
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backend.adapters.local import raw_codec

DB_NAME = "pik.sqlite3"  # the workspace's file (backend.adapters.local.database.DB_NAME)
DICT_ROWS = 2000  # rows a dictionary is made from; the figures are measured on the rows after them
DICT_BYTES = 16 * 1024


def _connect(workspace: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{workspace / DB_NAME}?mode=ro", uri=True)


def breakdown(workspace: Path) -> dict[str, Any]:
    """Bytes of each table and index (pages, so free space inside them counts), and per accepted event."""
    conn = _connect(workspace)
    try:
        events = conn.execute("SELECT count(*) FROM events WHERE receipt = 0").fetchone()[0]
        raw_rows, compressed = conn.execute(
            "SELECT count(*), count(*) FILTER (WHERE codec > 0) FROM raw"
        ).fetchone()
        receipts = conn.execute("SELECT count(*) FROM events").fetchone()[0]
        rejections = conn.execute("SELECT count(*) FROM rejections").fetchone()[0]
        parts = conn.execute(
            "SELECT name, sum(pgsize), sum(payload), sum(ncell) FROM dbstat GROUP BY name ORDER BY 2 DESC"
        ).fetchall()
        page_size, pages = (conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_size", "page_count"))
    finally:
        conn.close()
    file_bytes = page_size * pages
    return {
        "accepted_events": events,
        "raw_rows": raw_rows,
        "raw_rows_compressed": compressed,
        "receipts": receipts,
        "lines": receipts + rejections,
        "file_bytes": file_bytes,
        # Per line read (receipts and rejections), as the workspace-size target counts it.
        "file_bytes_per_line": file_bytes / max(receipts + rejections, 1),
        "file_bytes_per_event": file_bytes / max(events, 1),
        "parts": [
            {
                "name": name,
                "bytes": size,
                "payload_bytes": payload,
                "bytes_per_event": size / max(events, 1),
                "share": size / max(file_bytes, 1),
            }
            for name, size, payload, _ in parts
        ],
    }


def _cpu_us_per_row(fn: Callable[[], object], rows: int, repeats: int = 3) -> float:
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        fn()
        runs.append(time.process_time() - started)
    return statistics.median(runs) / max(rows, 1) * 1e6


def _codecs(train: list[bytes]) -> dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]]:
    """Per-row compress and decompress functions by name; zstd ones only if ``zstandard`` is installed."""
    zdict = b"".join(train)[-32 * 1024 :]  # zlib reads at most the last 32 KiB of a preset dictionary

    def zlib_dict_c(data: bytes) -> bytes:
        c = zlib.compressobj(6, zdict=zdict)
        return c.compress(data) + c.flush()

    def zlib_dict_d(data: bytes) -> bytes:
        d = zlib.decompressobj(zdict=zdict)
        return d.decompress(data) + d.flush()

    codecs: dict[str, tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]] = {
        f"zlib-{level}": (lambda data, level=level: zlib.compress(data, level), zlib.decompress)
        for level in (1, 6, 9)
    }
    codecs["zlib-6+dict"] = (zlib_dict_c, zlib_dict_d)
    try:
        import zstandard
    except ImportError:
        return codecs
    plain_c, plain_d = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    codecs["zstd-3"] = (plain_c.compress, plain_d.decompress)
    trained = zstandard.train_dictionary(DICT_BYTES, train)
    dict_c = zstandard.ZstdCompressor(level=3, dict_data=trained)
    dict_d = zstandard.ZstdDecompressor(dict_data=trained)
    codecs["zstd-3+dict"] = (dict_c.compress, dict_d.decompress)
    return codecs


def raw_compression(workspace: Path, sample: int = 50_000, dict_rows: int = DICT_ROWS) -> dict[str, Any]:
    """The raw bytes of up to ``dict_rows + sample`` events (in the order stored), compressed per row; the
    first ``dict_rows`` make the dictionaries and are not measured."""
    conn = _connect(workspace)
    try:
        # The bytes as received: a workspace of schema 6 or later keeps most of them compressed already.
        dictionaries = {n: bytes(d) for n, d in conn.execute("SELECT id, data FROM raw_dictionaries")}
        rows = [
            raw_codec.unpack(codec, d, dictionaries)
            for codec, d in conn.execute(
                "SELECT codec, data FROM raw ORDER BY id LIMIT ?", (dict_rows + sample,)
            )
        ]
    finally:
        conn.close()
    if len(rows) <= dict_rows:
        raise RuntimeError(f"the workspace holds {len(rows)} raw rows; at least {dict_rows + 1} are needed")
    train, test = rows[:dict_rows], rows[dict_rows:]
    raw_bytes = sum(map(len, test))
    figures: dict[str, Any] = {"rows": len(test), "raw_bytes_per_event": raw_bytes / len(test), "codecs": {}}
    for name, (compress, decompress) in _codecs(train).items():
        packed = [compress(r) for r in test]
        if [decompress(p) for p in packed[:1000]] != test[:1000]:
            raise RuntimeError(f"{name} does not give the raw bytes back")
        size = sum(map(len, packed))
        figures["codecs"][name] = {
            "bytes_per_event": size / len(test),
            "ratio": size / raw_bytes,
            "compress_us_per_row": _cpu_us_per_row(lambda c=compress: [c(r) for r in test], len(test)),
            "decompress_us_per_row": _cpu_us_per_row(
                lambda d=decompress, packed=packed: [d(p) for p in packed], len(test)
            ),
        }
    return figures


def report(workspace: Path, json_bytes_per_line: float | None, sample: int) -> dict[str, Any]:
    parts = breakdown(workspace)
    comp = raw_compression(workspace, sample)
    json_note = f"; JSON {json_bytes_per_line:,.0f} B per line" if json_bytes_per_line else ""
    print(
        f"workspace {workspace}: {parts['file_bytes'] / 2**20:,.1f} MiB, {parts['accepted_events']:,} "
        f"accepted events, {parts['file_bytes_per_event']:,.0f} B per accepted event, "
        f"{parts['file_bytes_per_line']:,.0f} B per line{json_note}"
    )
    print(f"  raw rows: {parts['raw_rows']:,}, of which compressed: {parts['raw_rows_compressed']:,}")
    for p in parts["parts"]:
        if p["share"] >= 0.005:
            print(f"  {p['name']:<28} {p['bytes_per_event']:>7,.0f} B/event  {p['share']:>6.1%}")
    print(
        f"raw bytes of {comp['rows']:,} events compressed one row at a time "
        f"(as stored: {comp['raw_bytes_per_event']:,.0f} B/event); CPU per row, median of 3:"
    )
    for name, c in comp["codecs"].items():
        print(
            f"  {name:<12} {c['bytes_per_event']:>6,.0f} B/event ({c['ratio']:.2f}x)  compress "
            f"{c['compress_us_per_row']:5.1f} us  decompress {c['decompress_us_per_row']:5.1f} us"
        )
    return {"breakdown": parts, "raw_compression": comp, "json_bytes_per_line": json_bytes_per_line}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspace", type=Path)
    parser.add_argument("--json-bytes-per-line", type=float, help="shown beside the workspace's figure")
    parser.add_argument(
        "--sample", type=int, default=50_000, help="raw rows measured (after the dictionary's)"
    )
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()
    result = report(args.workspace, args.json_bytes_per_line, args.sample)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
