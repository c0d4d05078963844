"""Issue 15: retries on AWS add no receipts, a failed `pik ingest` says exactly what is stored, a re-run adds
no duplicates, and duplicate receipts read as #1, #2.

Faults are injected as ``tests/reliability/test_faults.py`` does it (botocore hooks; ``after`` = the call
took effect and its answer was lost: an ambiguous failure). "Deliveries read" are the lines of the input:
after failures, kit retries and re-runs, each line is exactly one receipt (or one quarantined rejection).
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.errors import StoreError
from backend.kit import Kit
from backend.model import IngestStatus
from backend.services.ingest import Invalid, Received, prepare
from backend.services.receipts import receipt_ordinals
from pik_console.cli.main import main
from tests.aws_env import create_resources, fake_credentials, moto_backend, moto_kit
from tests.conftest import make_event
from tests.reliability.faults import AFTER, BEFORE, AwsFaults, Faults, Scripted


def workload(seed: int, size: int) -> list[bytes]:
    """Lines of one input: distinct events, resends of earlier lines (duplicates), a few invalid lines."""
    rng = random.Random(seed)
    out: list[bytes] = []
    for n in range(size):
        roll = rng.random()
        if roll < 0.3 and any(b.startswith(b"{") for b in out):
            out.append(rng.choice([b for b in out if b.startswith(b"{")]))
        elif roll < 0.35:
            out.append(b"not json %d" % n)
        else:
            at = f"2025-12-28T{n % 24:02d}:{n % 60:02d}:00Z"
            out.append(make_event(entity_id=f"user_{n % 5}", event_time=at, payload={"n": n}))
    return out


def expected(lines: list[bytes]) -> tuple[int, int, int]:
    """(accepted, duplicate, rejected) when each line is delivered exactly once."""
    ids: list[str] = []
    rejected = 0
    for body in lines:
        try:
            ids.append(prepare(body).event_id)
        except Invalid:
            rejected += 1
    return len(set(ids)), len(ids) - len(set(ids)), rejected


def stored(kit: Kit) -> tuple[int, int, int]:
    s = kit.index.stats()
    return s.accepted, s.duplicate, s.rejected


@pytest.fixture
def aws() -> Iterator[tuple[Kit, Any]]:
    store, settings, close = moto_backend()
    store.retry_sleep = lambda s: None
    kit = moto_kit(store, settings, close)
    try:
        yield kit, store
    finally:
        kit.close()


def items(lines: list[bytes], origin: str = "file:in.jsonl") -> list[Received]:
    return [Received(body, origin, n) for n, body in enumerate(lines, start=1)]


def test_a_retried_acceptance_finds_its_own_and_adds_no_duplicate(aws: tuple[Kit, Any]) -> None:
    """The acceptance's transaction took effect, its answer was lost; the kit tries again: ACCEPTED, and
    no DUPLICATE receipt of itself. The same for a duplicate's receipt and for the PutItem of a receipt."""
    kit, store = aws
    faults = Scripted(TransactWriteItems=[AFTER, None, AFTER, None], PutObject=[AFTER])
    AwsFaults([store.s3, store.ddb], faults)
    results = kit.ingest().ingest_batch([Received(make_event()), Received(make_event())])
    assert [r.status for r in results] == [IngestStatus.ACCEPTED, IngestStatus.DUPLICATE]
    assert faults.total(AFTER) == 3
    faults.enabled = False
    assert stored(kit) == (1, 1, 0)
    (event_id,) = {r.event_id for r in results}
    assert len(kit.index.receipts(event_id)) == 2


def test_an_idempotency_duplicate_retried_after_a_lost_answer_is_one_receipt(aws: tuple[Kit, Any]) -> None:
    kit, store = aws
    kit.ingest().ingest(make_event(idempotency_key="k"))
    faults = Scripted(PutItem=[AFTER, AFTER])
    AwsFaults([store.ddb], faults)
    later = make_event(idempotency_key="k", event_time="2025-12-30T08:00:00Z")
    assert kit.ingest().ingest(later).status is IngestStatus.DUPLICATE
    assert faults.total(AFTER) == 2
    assert stored(kit) == (1, 1, 0)


@pytest.mark.parametrize("seed", [3, 4])
def test_under_ambiguous_faults_and_reruns_each_line_is_one_receipt(aws: tuple[Kit, Any], seed: int) -> None:
    """A quarter of the S3 and DynamoDB calls fail (writes half before, half after taking effect); the kit
    retries each itself, and when a batch still fails the run is started again (a new run, resuming from
    the ledger). In the end every line of the input is exactly one receipt or rejection."""
    kit, store = aws
    lines = workload(seed, 60)
    faults = Faults(seed, rate=0.25)
    AwsFaults([store.s3, store.ddb], faults)
    runs = 0
    while True:
        runs += 1
        assert runs < 30
        try:
            for _ in kit.ingest().resume_stream(items(lines), kit.ledger, batch_size=16):  # type: ignore[arg-type]
                pass
            break
        except StoreError:
            continue
    faults.enabled = False
    assert faults.total(AFTER) > 5 and faults.total(BEFORE) > 5
    assert stored(kit) == expected(lines)
    # A third run finds everything stored and writes nothing.
    assert all(
        b.skipped == len(b.results) + b.skipped for b in kit.ingest().resume_stream(items(lines), kit.ledger)
    )  # type: ignore[arg-type]
    assert stored(kit) == expected(lines)


def test_the_ledger_on_aws_is_written_with_the_receipts(aws: tuple[Kit, Any]) -> None:
    kit, _ = aws
    lines = [make_event(), b"broken", make_event()]
    list(kit.ingest().resume_stream(items(lines, "file:a"), kit.ledger))  # type: ignore[arg-type]
    assert kit.ledger is not None
    known = kit.ledger.delivered("file:a", 1, 5)
    assert sorted(known) == [1, 2, 3]
    assert kit.ledger.delivered("file:b", 1, 5) == {}


def test_duplicates_read_as_small_ordinals(aws: tuple[Kit, Any]) -> None:
    kit, _ = aws
    kit.ingest().ingest_batch([Received(make_event()) for _ in range(4)])
    page = kit.index.query_entity("user_123", "2025-01-01T00:00:00.000Z", "2026-01-01T00:00:00.000Z")
    assert len(page.items) == 4
    assert all(len(r.receipt or "") > 9 for r in page.items if r.status is IngestStatus.DUPLICATE)
    ordinals = receipt_ordinals(kit.index, page.items)
    assert sorted(ordinals.values()) == [0, 1, 2, 3]


# -- through a moto server, as `pik` runs ------------------------------------------------------------------


def call(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


class Outage(Faults):
    """``after`` faults on a fraction of the writes; from the ``down_after``-th TransactWriteItems on, every
    write fails before reaching the server (the endpoint is down) until ``enabled`` is False."""

    def __init__(self, seed: int, rate: float, down_after: int) -> None:
        super().__init__(seed, rate)
        self.down_after = down_after
        self.transactions = 0

    def decide(self, target: str, *, write: bool) -> str | None:
        if not self.enabled or not write:
            return None
        if target == "TransactWriteItems":
            self.transactions += 1
        if self.transactions >= self.down_after:
            self.injected[f"{target} {BEFORE}"] += 1
            return BEFORE
        kind = super().decide(target, write=write)
        return AFTER if kind else None


def test_pik_ingest_on_a_moto_server_reports_what_is_stored_and_reruns_add_no_duplicates(
    moto_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    restore = fake_credentials()
    try:
        settings = create_resources(moto_url, f"pik-{os.urandom(3).hex()}")
        names = {
            "RAW_BUCKET": settings.raw_bucket,
            "EVENTS_TABLE": settings.events_table,
            "DEDUPE_TABLE": settings.dedupe_table,
            "AWS_REGION": settings.region,
        }
        for name, value in names.items():
            monkeypatch.setenv(name, value or "")
        lines = workload(7, 150)
        src = tmp_path / "events.jsonl"
        src.write_bytes(b"\n".join(lines) + b"\n")
        faults = Outage(7, rate=0.15, down_after=60)
        from backend.adapters.aws import connection, store

        made = store.make_clients

        def faulty_clients(*args: Any, **kwargs: Any) -> Any:
            clients = made(*args, **kwargs)
            AwsFaults([clients.s3, clients.dynamodb], faults)
            return clients

        monkeypatch.setattr(store, "make_clients", faulty_clients)
        monkeypatch.setattr(connection.time, "sleep", lambda s: None)
        aws = ["--backend", "aws", "--endpoint-url", moto_url]
        code, _, err = call("ingest", str(src), *aws, "--batch-size", "40")
        assert code == 1, err
        assert faults.total(AFTER) > 0
        said = int(err.split(" — ")[1].split(" of the ")[0].replace(",", ""))
        faults.enabled = False
        from backend.kit import open_aws

        with open_aws(settings) as kit:
            accepted, duplicate, rejected = stored(kit)
        assert said == accepted + duplicate + rejected > 0
        assert "running the same command again resumes" in err
        # The re-run (no faults): it skips what is stored and adds no duplicates.
        code, out, err = call("ingest", str(src), *aws, "--json")
        assert code == 0, err
        summary = json.loads(out)
        assert summary["already_ingested"] == said
        with open_aws(settings) as kit:
            assert stored(kit) == expected(lines)
        # pik events shows the duplicates as #1, #2...
        code, out, err = call("events", *aws, "--entity", "user_1", "--status", "DUPLICATE", "--limit", "500")
        assert code == 0, err
        assert "DUPLICATE #1" in out and "DUPLICATE #1179" not in out
    finally:
        restore()
