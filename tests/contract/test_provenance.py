"""Every receipt keeps where it came from (origin and line), on every adapter."""

from __future__ import annotations

from backend.model import IngestStatus
from backend.services.ingest import IngestService, Received
from tests.conftest import Adapter, make_event


def test_receipts_keep_their_origin_and_line(adapter: Adapter) -> None:
    service = IngestService(adapter.raw, adapter.index)
    body = make_event()
    [first] = service.ingest_batch([Received(body, "file:a.jsonl", 7)])
    [again] = service.ingest_batch([Received(body, "api", None)])
    assert (first.status, again.status) == (IngestStatus.ACCEPTED, IngestStatus.DUPLICATE)
    receipts = adapter.index.receipts(first.event_id or "")
    assert [(r.origin, r.line) for r in receipts] == [("file:a.jsonl", 7), ("api", None)]
    accepted = adapter.index.get_accepted(first.event_id or "")
    assert accepted is not None and (accepted.origin, accepted.line) == ("file:a.jsonl", 7)
