"""Invariant 5 as a property: whatever the interleaving of ingests, recomputes and processors racing for the
same version number, the versions of each (entity, day, metric) are 1, 2, 3... with no gap and no
overwrite, each differs from the one before in its inputs, inputs only grow (the index is append-only),
each value is the metric over its manifest, and a final recompute sees every accepted event."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.model import MetricKind, MetricSpec
from backend.services.ingest import IngestService, Received
from backend.services.processor import ProcessorService
from tests.conftest import make_event

STEPS = MetricSpec(name="steps", kind=MetricKind.SUM, field="steps")
ENTITIES = ["a", "b"]

ingest = st.tuples(st.just("ingest"), st.sampled_from(ENTITIES), st.integers(0, 30), st.integers(0, 3))
process = st.tuples(st.just("process"), st.sampled_from(ENTITIES), st.just(0), st.just(0))
# Another processor runs (after a new event arrived) right before our append, or right after our read of
# the window: the two moments a race can fall between.
race = st.tuples(
    st.sampled_from(["race", "race_scan"]), st.sampled_from(ENTITIES), st.integers(0, 30), st.integers(0, 3)
)
operations = st.lists(st.one_of(ingest, process, race), max_size=25)


def _message(entity: str) -> str:
    return json.dumps({"entity_id": entity, "event_time": "2025-12-28T12:00:00Z", "replay_id": "rp"})


class RaceBeforeAppend:
    """An AggregateStore whose first append is preceded by ``hook`` (another processor's whole run)."""

    def __init__(self, inner: Any, hook: Any) -> None:
        self.inner = inner
        self.hook = hook

    def append(self, version: Any, manifest: Any) -> bool:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return bool(self.inner.append(version, manifest))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RaceAfterScan:
    """An InvestigationIndex that runs ``hook`` once, right after its first scan of a window."""

    def __init__(self, inner: Any, hook: Any) -> None:
        self.inner = inner
        self.hook = hook

    def scan_entity(self, *args: Any, **kw: Any) -> Any:
        page = self.inner.scan_entity(*args, **kw)
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return page

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(operations)
def test_versions_stay_contiguous_and_faithful(ops: list[tuple[str, str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = LocalStore(Path(tmp) / "ws")
        try:
            ports = local_ports(store)
            ingest_service = IngestService(store, store)

            def add(entity: str, minute: int, variant: int) -> None:
                body = make_event(
                    entity_id=entity, event_time=f"2025-12-28T10:{minute:02d}:00Z", payload={"steps": variant}
                )
                ingest_service.ingest_batch([Received(body)])

            def processor(aggregates: Any = None, scans: Any = None) -> ProcessorService:
                return ProcessorService(
                    scans or ports.investigate, ports.catalog, aggregates or ports.aggregates, [STEPS]
                )

            for op, entity, minute, variant in ops:
                if op == "ingest":
                    add(entity, minute, variant)
                elif op == "process":
                    assert processor().process([_message(entity)]).failed == {}
                else:

                    def rival(entity: str = entity, minute: int = minute, variant: int = variant) -> None:
                        add(entity, minute, variant)
                        assert processor().process([_message(entity)]).failed == {}

                    if op == "race":
                        racing = processor(aggregates=RaceBeforeAppend(ports.aggregates, rival))
                    else:
                        racing = processor(scans=RaceAfterScan(ports.investigate, rival))
                    assert racing.process([_message(entity)]).failed == {}
            for entity in ENTITIES:
                assert processor().process([_message(entity)]).failed == {}

            for entity in ENTITIES:
                accepted = {
                    r.event_id: r
                    for r in store.query_entity(entity, "2025-12-28", "2025-12-29", limit=1000).items
                    if r.status.value == "ACCEPTED"
                }
                for metric in ("daily_event_count", "steps"):
                    versions = ports.aggregates.versions(
                        entity, "2025-12-28", metric=metric, limit=1000
                    ).items
                    if not accepted:
                        assert [v.value for v in versions] in ([], [0])
                    assert [v.version for v in versions] == list(range(1, len(versions) + 1))
                    previous: set[str] = set()
                    for i, v in enumerate(versions):
                        manifest = ports.aggregates.manifest(v.inputs_hash)
                        assert manifest is not None and len(manifest) == v.input_count
                        ids = {e.event_id for e in manifest}
                        assert previous <= ids, "a newer version never has fewer inputs"
                        if i:
                            assert ids != previous, "a new version only when the inputs changed"
                            assert v.previous_version == i and v.previous_value == versions[i - 1].value
                        assert ids <= set(accepted)
                        if metric == "daily_event_count":
                            assert v.value == len(ids)
                        else:
                            steps = [
                                json.loads(store.get(accepted[e].s3_key) or b"")["payload"]["steps"]
                                for e in ids
                            ]
                            assert v.value == sum(steps)
                        previous = ids
                    if accepted:
                        assert previous == set(accepted), "the final recompute sees every accepted event"
        finally:
            store.close()
