"""The key-heat simulation's arithmetic (bench/key_heat.py): the diurnal curve, the workload's shares,
item sizes, and hottest keys whose rates can be worked out by hand."""

from __future__ import annotations

import math

import pytest

from backend.adapters.aws.event_items import REJECTED_PK, entity_pk, lag_pk, rejection_pk
from bench.key_heat import Workload, diurnal, item_size, simulate, write_units


@pytest.mark.parametrize("peak", [1.0, 2.0, 3.0, 5.0])
def test_the_day_has_mean_one_and_the_asked_peak(peak: float) -> None:
    curve = diurnal(peak)
    assert len(curve) == 24
    assert math.isclose(sum(curve) / 24, 1.0, rel_tol=1e-9)
    assert math.isclose(max(curve), peak, rel_tol=1e-6)
    assert min(curve) > 0


def test_the_workload_shares_add_up() -> None:
    types = Workload().types()
    assert types[0] == ("hot:type", 0.40)
    assert len(types) == 7 and math.isclose(sum(s for _, s in types), 1.0)
    assert all(math.isclose(s * 100_000, 10_000) for _, s in types[1:])


def test_item_size_counts_names_and_values() -> None:
    item = {"PK": {"S": "ENTITY#é"}, "n": {"N": "12345"}, "b": {"BOOL": True}, "d": {"B": b"xyz"}}
    assert item_size(item) == (2 + 9) + (1 + 4) + (1 + 1) + (1 + 3)
    assert write_units({"k": {"S": "x" * 1023}}) == 1 and write_units({"k": {"S": "x" * 1024}}) == 2


def test_hottest_keys_match_the_hand_arithmetic() -> None:
    # One source/type, a hot entity of 10%, no duplicates or rejections: at the peak (2x of 1,000/s)
    # the hot entity's key takes 10% of 2,000 writes/s; the unsharded lag key all 2,000; with 4 shards
    # each shard 500.
    work = Workload(stack_rate=1000, type_rate=1000, hot_type_share=1.0, hot_entity_share=0.10,
                    peak_factor=2.0, duplicate_share=0.0, rejected_share=0.0, entities=1000)  # fmt: skip
    flat = {(h.table, h.key): h for h in simulate(work, 1, sample=20_000)["hottest"]}
    hot = flat["events", entity_pk("hot-entity")]
    assert math.isclose(hot.writes_per_s, 200.0, rel_tol=1e-9) and hot.ok
    lag = flat["GSI1", lag_pk("hot", "type", "2025-12-28")]
    assert math.isclose(lag.writes_per_s, 2000.0, rel_tol=1e-9) and not lag.ok
    sharded = simulate(work, 4, sample=20_000)
    shards = [h for h in sharded["hottest"] if h.table == "GSI1"]
    assert {h.key for h in shards} <= {lag_pk("hot", "type", "2025-12-28", n) for n in range(4)}
    assert all(math.isclose(h.writes_per_s, 500.0, rel_tol=1e-9) for h in shards)
    assert all(abs(h.sampled_per_s - 500.0) < 50 for h in shards)  # the real hash spreads evenly
    assert sharded["peak_events_per_s"] == pytest.approx(2000.0)


def test_rejections_all_land_on_one_key() -> None:
    work = Workload(stack_rate=1000, type_rate=1000, hot_type_share=1.0, hot_entity_share=0.0,
                    peak_factor=1.0, duplicate_share=0.0, rejected_share=0.2, entities=10**6)  # fmt: skip
    run = simulate(work, 1, sample=5_000, top=1)
    [events] = [h for h in run["hottest"] if h.table == "events"]
    assert events.key == REJECTED_PK and math.isclose(events.writes_per_s, 200.0)


def test_entity_shards_split_the_hot_entity_and_rejection_shards_the_quarantine() -> None:
    # The hot entity (10% of a 2,000/s peak = 200 writes/s) over 4 entity shards: 50 each; 20% rejected
    # (400/s at the peak) over 5 rejection shards: 80 each, and the budget holds up to 5 x 500 / 2,000.
    work = Workload(stack_rate=1000, type_rate=1000, hot_type_share=1.0, hot_entity_share=0.10,
                    peak_factor=2.0, duplicate_share=0.0, rejected_share=0.2, entities=10**6)  # fmt: skip
    run = simulate(work, 1, sample=20_000, top=9, entity_shards=4, rejection_shards=5)
    hot = {h.key: h for h in run["hottest"] if h.table == "events" and "hot-entity" in h.key}
    assert set(hot) == {entity_pk("hot-entity", m) for m in range(4)}
    assert all(math.isclose(h.writes_per_s, 200.0 * 0.8 / 4, rel_tol=1e-9) for h in hot.values())
    quarantine = run["hottest_rejection_key"]
    assert quarantine.key in {rejection_pk(r) for r in range(5)}
    assert math.isclose(quarantine.writes_per_s, 400.0 / 5, rel_tol=1e-9) and quarantine.ok
    assert math.isclose(run["rejection_share_at_budget"], 5 * 500 / 2000)
    flat = simulate(work, 1, sample=20_000, top=4)
    assert flat["hottest_rejection_key"].key == REJECTED_PK
    assert math.isclose(flat["rejection_share_at_budget"], 500 / 2000)
