"""Properties of ingest over any sequence of requests: repeats, idempotency-key variants, bytes that
differ for the same event, and store failures at random points followed (or not) by retries.

Whatever happens, each event id has exactly one ACCEPTED receipt, every committed receipt is kept, and
every receipt's key holds exactly the bytes it was received with."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.errors import StoreError
from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received, prepare
from backend.times import FixedClock
from tests.conftest import ADAPTERS, Flaky, event_dict, make_event, open_adapter

ACCEPTED, DUPLICATE, REJECTED = IngestStatus.ACCEPTED, IngestStatus.DUPLICATE, IngestStatus.REJECTED

POOL: list[bytes] = [
    make_event(entity_id="a", payload={"n": 1}),
    make_event(entity_id="a", payload={"n": 1}, trace="retry-2"),  # same event, other bytes
    json.dumps(
        dict(reversed(event_dict(entity_id="a", payload={"n": 1}).items()))
    ).encode(),  # same, reordered
    make_event(entity_id="a", payload={"n": 2}),
    make_event(entity_id="b", event_time="2025-12-28T10:00:00Z"),
    make_event(entity_id="b", event_time="2025-12-28T12:00:00+02:00"),  # the same instant: same event
    make_event(entity_id="c", idempotency_key="k", payload={"v": 1}),
    make_event(entity_id="c", idempotency_key="k", payload={"v": 2}),  # key reused with another payload
    make_event(entity_id="c", idempotency_key="k2", payload={"v": 1}),
    make_event(entity_id="a#b", payload={"n": 1}),
    b"{not json",
    make_event(event_time="2025-02-30T00:00:00Z"),
]
BY_SHA = {hashlib.sha256(b).hexdigest(): b for b in POOL}
EVENT_ID: dict[bytes, str | None] = {}
for _body in POOL:
    try:
        EVENT_ID[_body] = prepare(_body).event_id
    except ValueError:
        EVENT_ID[_body] = None

FAULTS = st.one_of(
    st.none(),
    st.tuples(
        st.sampled_from(["put_new", "record", "quarantine"]),
        st.sampled_from(["before", "after"]),
        st.integers(min_value=0, max_value=1),  # which call of the method in this batch fails
    ),
)
STEPS = st.lists(
    st.tuples(
        st.lists(st.integers(min_value=0, max_value=len(POOL) - 1), min_size=1, max_size=4),
        FAULTS,
        st.booleans(),  # retry after a failure (or give up)
    ),
    min_size=1,
    max_size=12,
)


@pytest.mark.parametrize("adapter_name", ADAPTERS)
def test_any_ingest_history_accepts_each_event_once_and_keeps_every_byte(adapter_name: str) -> None:
    # moto costs ~40x SQLite per example: fewer examples there (the contract suite covers the rest).
    examples = 60 if adapter_name == "local" else 25
    settings(max_examples=examples, deadline=None)(given(steps=STEPS)(_ingest_history))(adapter_name)


def _ingest_history(
    adapter_name: str, steps: list[tuple[list[int], tuple[str, str, int] | None, bool]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp, open_adapter(adapter_name, Path(tmp)) as adapter:
        committed = Counter[str]()  # receipts that reached the index, per event id
        lost_ack = set[str]()  # ids whose index write happened but was answered with an error
        accepted_answers = Counter[str]()
        maybe = Counter[str]()  # receipts of failed attempts that a non-atomic batch may have written
        rejections = 0
        answered: list[tuple[bytes, str]] = []  # (request bytes, s3_key it was answered with)

        for indices, fault, retry in steps:
            bodies = [POOL[i] for i in indices]
            ids = [EVENT_ID[b] for b in bodies]
            n_bad = sum(i is None for i in ids)
            attempts = [fault, None] if (fault and retry) else [fault]
            for attempt in attempts:
                raw, index = Flaky(adapter.raw), Flaky(adapter.index)
                if attempt is not None:
                    method, when, position = attempt
                    (raw if method == "put_new" else index).fail(method, *([None] * position), when)
                service = IngestService(raw, index, FixedClock(prepare(POOL[0]).event_dt))
                try:
                    results = service.ingest_batch([Received(b) for b in bodies])
                except StoreError:
                    assert attempt is not None, "a store error nobody injected"
                    method, when, _ = attempt
                    # The quarantine is written first: a later failure leaves the rejections stored,
                    # and so does a quarantine whose answer was lost.
                    if method != "quarantine" or when == "after":
                        rejections += n_bad
                    if not adapter.atomic_batches:
                        # Each event is atomic, a batch is not (DynamoDB): any of its receipts may be in.
                        for eid in filter(None, ids):
                            maybe[eid] += 1
                            lost_ack.add(eid)
                    elif method == "record" and when == "after":  # the receipts were written, answer lost
                        for eid in filter(None, ids):
                            committed[eid] += 1
                            lost_ack.add(eid)
                    continue
                # Success: every request has its answer, in order.
                assert len(results) == len(bodies)
                rejections += n_bad
                for body, eid, result in zip(bodies, ids, results, strict=True):
                    if eid is None:
                        assert result.status is REJECTED
                        continue
                    assert result.event_id == eid
                    committed[eid] += 1
                    if result.status is ACCEPTED:
                        accepted_answers[eid] += 1
                    assert result.s3_key is not None
                    answered.append((body, result.s3_key))
                break

        stats = adapter.index.stats()
        found = {eid: len(adapter.index.receipts(eid)) for eid in committed | maybe}
        for eid in committed | maybe:
            assert committed[eid] <= found[eid] <= committed[eid] + maybe[eid]
        seen = {eid: n for eid, n in found.items() if n}
        assert stats.accepted == len(seen)
        assert stats.duplicate == sum(seen.values()) - len(seen)
        assert stats.rejected == rejections
        for eid, n in seen.items():
            receipts = adapter.index.receipts(eid)
            assert [r.status for r in receipts] == [ACCEPTED] + [DUPLICATE] * (n - 1)
            assert accepted_answers[eid] <= 1
            if eid not in lost_ack:
                assert accepted_answers[eid] == 1
            for r in receipts:
                stored = adapter.raw.get(r.s3_key)
                assert stored is not None
                assert hashlib.sha256(stored).hexdigest() == r.raw_sha and len(stored) == r.raw_size
                assert stored == BY_SHA[r.raw_sha]
                assert prepare(stored).event_id == eid
        for body, key in answered:
            assert adapter.raw.get(key) == body
