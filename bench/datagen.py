"""Deterministic JSON Lines datasets for the benchmark.

A dataset of ``n`` lines has exactly ``n // 10`` exact duplicates of earlier valid lines (a producer's
retries, mostly of recent lines), ``n // 100`` invalid lines (half not JSON at all, half JSON that is not a
valid event) and the rest distinct valid events: several sources and event types, thousands of entities
(skewed: a fifth of them send most events), two weeks of event times arriving roughly in order with a few
late ones, small payloads, a quarter with an ``idempotency_key``.

The same parameters always give the same bytes. A ``.meta.json`` file next to the data records the
parameters and the counts the kit must report; a file is regenerated only when those differ.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Bump when the generator's output changes, so files made by an older generator are not reused.
GENERATOR_VERSION = 1

START = datetime(2025, 12, 1, tzinfo=UTC)
SPAN = timedelta(days=14)
ENTITIES = 5_000

SOURCES: dict[str, list[str]] = {
    "web": ["page_view", "click", "signup"],
    "ios": ["app_open", "heartbeat", "purchase"],
    "android": ["app_open", "heartbeat", "purchase"],
    "billing": ["invoice.created", "payment.succeeded", "payment.failed"],
    "iot.gateway": ["sensor.reading", "device.status"],
}
_PAIRS = [(s, t) for s, types in SOURCES.items() for t in types]
# Heavier traffic for the chatty pairs (heartbeats, sensor readings, page views).
_PAIR_WEIGHTS = [8 if t in ("page_view", "heartbeat", "sensor.reading") else 2 for _, t in _PAIRS]
_PAGES = ["/", "/pricing", "/docs", "/blog", "/account", "/cart", "/checkout"]


@dataclass(frozen=True)
class Expected:
    """What ``pik ingest`` of the file must report."""

    lines: int
    accepted: int
    duplicate: int
    rejected: int
    invalid_json: int
    invalid_event: int


def _entity(rng: random.Random) -> str:
    # 80 % of events come from 20 % of the entities.
    hot = ENTITIES // 5
    n = rng.randrange(hot) if rng.random() < 0.8 else hot + rng.randrange(ENTITIES - hot)
    return f"user_{n:05d}" if n % 3 else f"device-{n:05d}"


def _payload(rng: random.Random, event_type: str) -> dict[str, Any]:
    if event_type in ("page_view", "click"):
        return {
            "page": rng.choice(_PAGES),
            "ms": rng.randrange(5, 3_000),
            "ref": rng.choice(["", "ad", "mail"]),
        }
    if event_type == "heartbeat":
        return {"steps": rng.randrange(0, 500), "battery": rng.randrange(1, 101)}
    if event_type == "sensor.reading":
        return {"temp_c": round(rng.uniform(-10, 40), 2), "humidity": rng.randrange(10, 100)}
    if event_type in ("purchase", "invoice.created", "payment.succeeded", "payment.failed"):
        return {
            "amount_cents": rng.randrange(99, 50_000),
            "currency": rng.choice(["EUR", "USD", "GBP"]),
            "items": rng.randrange(1, 6),
        }
    if event_type == "device.status":
        return {"online": rng.random() < 0.9, "fw": f"1.{rng.randrange(10)}.{rng.randrange(20)}"}
    return {"plan": rng.choice(["free", "team", "pro"]), "trial": rng.random() < 0.5}


def _time_text(rng: random.Random, when: datetime) -> tuple[str, datetime]:
    """The event time as a producer writes it, and the instant that text means."""
    r = rng.random()
    ms = f"{when.microsecond // 1000:03d}"
    if r < 0.85:
        return when.strftime("%Y-%m-%dT%H:%M:%S.") + ms + "Z", when
    if r < 0.95:
        return when.strftime("%Y-%m-%dT%H:%M:%SZ"), when.replace(microsecond=0)
    # An offset that the kit converts to UTC.
    return (when + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.") + ms + "+01:00", when


_INVALID_JSON = [
    lambda line: line[: len(line) // 2],  # cut off mid-line
    lambda line: line[:-1] + ",}",  # trailing comma
    lambda line: line.replace('"', "'"),  # single quotes
    lambda line: line[:-1] + ',"x":NaN}',  # NaN is not JSON
]
_INVALID_EVENT = [
    lambda ev: {k: v for k, v in ev.items() if k != "entity_id"},  # missing field
    lambda ev: {**ev, "source": "bad source!"},  # pattern
    lambda ev: {**ev, "event_time": "yesterday"},  # not a time
    lambda ev: {**ev, "event_time": "1900-01-01T00:00:00Z"},  # out of range
    lambda ev: {**ev, "payload": "steps=10"},  # payload not an object
    lambda ev: {**ev, "entity_id": 12345},  # wrong type
]


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def generate(path: Path, n: int, seed: int = 42) -> Expected:
    """Write ``n`` lines to ``path`` (atomically) and return the counts the kit must report."""
    rng = random.Random(seed)
    n_dup, n_invalid = n // 10, n // 100
    kinds = ["d"] * n_dup + ["i"] * n_invalid + ["v"] * (n - n_dup - n_invalid - 1)
    rng.shuffle(kinds)
    kinds.insert(0, "v")  # a duplicate needs an earlier valid line
    step = SPAN / n
    seen: set[bytes] = set()  # identities of the valid events so far (8-byte digests)
    recent: list[str] = []  # valid lines a retry may repeat
    idem = invalid_json = 0
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as out:
        for i, kind in enumerate(kinds):
            if kind == "d":
                # Retries are mostly of recent lines, sometimes of much older ones.
                window = 2_000 if rng.random() < 0.9 else len(recent)
                out.write(recent[-1 - rng.randrange(min(window, len(recent)))] + "\n")
                continue
            while True:
                source, event_type = rng.choices(_PAIRS, _PAIR_WEIGHTS)[0]
                when = START + step * i + timedelta(milliseconds=rng.randrange(-60_000, 60_000))
                if rng.random() < 0.02:  # late arrivals: up to two days behind
                    when -= timedelta(milliseconds=rng.randrange(172_800_000))
                when = min(max(when, START), START + SPAN - timedelta(milliseconds=1))
                when = when.replace(microsecond=when.microsecond // 1000 * 1000)
                time_text, when = _time_text(rng, when)
                event: dict[str, Any] = {
                    "source": source,
                    "event_type": event_type,
                    "entity_id": _entity(rng),
                    "event_time": time_text,
                    "payload": _payload(rng, event_type),
                }
                if rng.random() < 0.25:
                    idem += 1
                    event["idempotency_key"] = f"{source}-{idem:08x}"
                    identity = ("K", source, event_type, event["entity_id"], event["idempotency_key"])
                else:
                    identity = (
                        "H", source, event_type, event["entity_id"], when.isoformat(),
                        json.dumps(event["payload"], sort_keys=True),
                    )  # fmt: skip
                digest = hashlib.blake2b(repr(identity).encode(), digest_size=8).digest()
                if digest not in seen:  # a valid event must be a new event
                    seen.add(digest)
                    break
            line = _dumps(event)
            if kind == "v":
                recent.append(line)
                if len(recent) > 50_000:
                    del recent[:10_000]
            elif i % 2:
                invalid_json += 1
                line = rng.choice(_INVALID_JSON)(line)
            else:
                line = _dumps(rng.choice(_INVALID_EVENT)(event))
            out.write(line + "\n")
    os.replace(tmp, path)
    return Expected(
        lines=n,
        accepted=n - n_dup - n_invalid,
        duplicate=n_dup,
        rejected=n_invalid,
        invalid_json=invalid_json,
        invalid_event=n_invalid - invalid_json,
    )


def ensure(out_dir: Path, n: int, seed: int = 42) -> tuple[Path, Expected, bool]:
    """The dataset of ``n`` lines in ``out_dir``; reused if made with the same parameters.

    Returns the path, the expected counts, and whether the file was (re)generated.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"events-{n}-s{seed}.jsonl"
    meta_path = path.with_suffix(".meta.json")
    params = {"generator_version": GENERATOR_VERSION, "lines": n, "seed": seed}
    if path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("params") == params and meta.get("bytes") == path.stat().st_size:
            return path, Expected(**meta["expected"]), False
    expected = generate(path, n, seed)
    meta = {"params": params, "bytes": path.stat().st_size, "expected": asdict(expected)}
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return path, expected, True
