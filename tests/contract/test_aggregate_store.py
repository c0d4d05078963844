"""Contract of :class:`backend.ports.AggregateStore`: versions 1, 2, 3... appended with a conditional
write (a taken number is refused, a gap is refused), read back exactly, paged, with their manifests."""

from __future__ import annotations

from typing import Any

import pytest

from backend.errors import InvalidRequest
from backend.model import AggregateVersion, MetricKind, MetricSpec
from backend.ports import ManifestEntry
from tests.conftest import Adapter
from tests.contract.test_event_index import collect, sha


@pytest.fixture
def agg(adapter: Adapter) -> Any:
    if adapter.aggregates is None:
        pytest.skip(f"the {adapter.name} adapter has no AggregateStore yet")
    return adapter.aggregates


def manifest(*names: str) -> list[ManifestEntry]:
    return sorted(
        (ManifestEntry(sha(n), sha("payload " + n), "2025-12-28T10:00:00.000Z", 1500) for n in names),
        key=lambda e: e.event_id,
    )


def version(
    n: int, inputs: list[ManifestEntry], *, metric: str = "daily_event_count", **kw: Any
) -> AggregateVersion:
    fields: dict[str, Any] = {
        "entity_id": "user_1",
        "day": "2025-12-28",
        "metric": metric,
        "version": n,
        "value": len(inputs),
        "input_count": len(inputs),
        "values_used": len(inputs),
        "inputs_hash": sha("|".join(e.event_id for e in inputs)),
        "definition": MetricSpec(name=metric, kind=MetricKind.COUNT),
        "definition_hash": sha(metric),
        "computed_at": f"2025-12-29T0{n}:00:00.000Z",
        "window_start": "2025-12-28T00:00:00.000Z",
        "window_end": "2025-12-29T00:00:00.000Z",
        "replay_ids": [f"rp-{n}"],
        "previous_version": n - 1 or None,
        "sample_event_ids": [e.event_id for e in inputs[:5]],
    }
    fields.update(kw)
    return AggregateVersion(**fields)


def test_versions_are_appended_in_order_and_read_back_exactly(agg: Any) -> None:
    m1, m2 = manifest("a", "b"), manifest("a", "b", "c")
    assert agg.latest("user_1", "2025-12-28", "daily_event_count") is None
    v1, v2 = version(1, m1), version(2, m2, previous_value=2)
    assert agg.append(v1, m1) is True
    assert agg.append(v2, m2) is True
    assert agg.latest("user_1", "2025-12-28", "daily_event_count") == v2
    assert agg.get("user_1", "2025-12-28", "daily_event_count", 1) == v1
    assert agg.get("user_1", "2025-12-28", "daily_event_count", 3) is None
    assert agg.manifest(v1.inputs_hash) == m1
    assert agg.manifest(v2.inputs_hash) == m2
    assert agg.manifest("0" * 64) is None


def test_a_taken_version_number_is_refused_without_overwriting(agg: Any) -> None:
    m = manifest("a")
    first = version(1, m)
    assert agg.append(first, m)
    rival = version(1, manifest("a", "b"), value=99)
    assert agg.append(rival, manifest("a", "b")) is False
    assert agg.latest("user_1", "2025-12-28", "daily_event_count") == first


def test_a_gap_is_refused(agg: Any) -> None:
    with pytest.raises(InvalidRequest):
        agg.append(version(2, manifest("a")), manifest("a"))
    assert agg.append(version(1, manifest("a")), manifest("a"))
    with pytest.raises(InvalidRequest):
        agg.append(version(3, manifest("a")), manifest("a"))
    assert agg.latest("user_1", "2025-12-28", "daily_event_count").version == 1


def test_values_of_every_kind_round_trip(agg: Any) -> None:
    m = manifest("a")
    for i, value in enumerate([None, 0, 3, 2.5, -1e-9, 12345678901234567]):
        v = version(
            1, m, metric=f"m{i}", value=value, definition=MetricSpec(name=f"m{i}", kind=MetricKind.COUNT)
        )
        assert agg.append(v, m)
        got = agg.get("user_1", "2025-12-28", f"m{i}", 1)
        assert got == v and type(got.value) is type(value)


def test_versions_are_listed_by_metric_then_version_and_paged(agg: Any) -> None:
    for metric in ("b_metric", "a_metric"):
        for n in (1, 2, 3):
            m = manifest(*[str(i) for i in range(n)])
            assert agg.append(version(n, m, metric=metric), m)
    agg.append(version(1, manifest("x"), entity_id="other"), manifest("x"))
    listed = collect(agg.versions, 2, entity_id="user_1", day="2025-12-28")
    assert [(v.metric, v.version) for v in listed] == [
        ("a_metric", 1), ("a_metric", 2), ("a_metric", 3), ("b_metric", 1), ("b_metric", 2), ("b_metric", 3),
    ]  # fmt: skip
    one = collect(agg.versions, 10, entity_id="user_1", day="2025-12-28", metric="b_metric")
    assert [v.version for v in one] == [1, 2, 3]
    assert agg.versions("user_1", "2025-12-27").items == []


def test_one_manifest_serves_every_version_with_the_same_inputs(agg: Any) -> None:
    m = manifest("a", "b")
    assert agg.append(version(1, m, metric="x"), m)
    assert agg.append(version(1, m, metric="y"), m)
    assert agg.manifest(version(1, m).inputs_hash) == m


def test_which_windows_have_versions(agg: Any) -> None:
    m = manifest("a")
    agg.append(version(1, m), m)
    agg.append(version(1, m, day="2025-12-27"), m)
    agg.append(version(1, m, entity_id="user#2/x"), m)
    windows = [
        ("user_1", "2025-12-28"),
        ("user_1", "2025-12-26"),
        ("user#2/x", "2025-12-28"),
        ("none", "2025-12-28"),
    ]
    windows += [(f"bulk{i}", "2025-12-28") for i in range(450)]
    assert agg.windows_with_versions(windows) == {("user_1", "2025-12-28"), ("user#2/x", "2025-12-28")}
    assert agg.windows_with_versions([]) == set()
