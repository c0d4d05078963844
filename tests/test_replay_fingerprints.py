"""Fingerprints of replay plans are for ever (issue 17): users type them back (``--expect``) and audit
records keep them. The values below were computed by the planner and the execution as they were before
plans were made from SQL aggregates and executions streamed (the receipt-by-receipt planner), on a fixed
workspace large enough to cross every page and chunk boundary (more than one SQL fetch of 4,096 rows, more
than one scan page of 5,000 receipts, limits that cut a page in the middle), with duplicates, missing raw
bytes and receipts stored under the original kit's raw keys. Any planner or execution must answer them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import LocalPorts, local_ports
from backend.model import EventRecord, ReplayRequest
from backend.ports import RawObject
from backend.replay_fingerprint import CHECKPOINT_EVERY, fingerprint
from backend.replay_selection import select_by_scans
from backend.services.replay import ReplayService
from backend.services.scope import normalize
from tests.contract.test_event_index import rec, sha

DAYS = ("2025-12-27", "2025-12-28", "2025-12-29")
PER_DAY = 3000


def _records() -> list[EventRecord]:
    """9,000 events of two entities over three days (two event types), every seventh received twice;
    every fiftieth of user_1 on the last day stored under an original-kit raw key."""
    out: list[EventRecord] = []
    for day in DAYS:
        for i in range(PER_DAY):
            seconds = i * 86_400 // PER_DAY
            t = f"{day}T{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}.{i % 1000:03d}Z"
            entity = "user_1" if i % 5 else "user_2"
            kind = "click" if i % 3 == 0 else "heartbeat"
            legacy = None
            if entity == "user_1" and day == DAYS[2] and i % 50 == 1:
                eid = sha(f"demo|{kind}|{entity}|{t}")
                legacy = (
                    f"raw/source=demo/event_type={kind}/event_date={day}/ingest_date={day}/hour=00/"
                    f"event_id={eid}.json"
                )
            out.append(rec(entity=entity, event_time=t, event_type=kind, lag=(i * 37) % 5000, tag=f"{t}a",
                           s3_key=legacy))  # fmt: skip
            if i % 7 == 0:
                out.append(rec(entity=entity, event_time=t, event_type=kind, lag=60_000 + i, tag=f"{t}d",
                               s3_key=legacy))  # fmt: skip
    return out


def _fill(ports: LocalPorts, store: LocalStore) -> None:
    records = _records()
    for start in range(0, len(records), 2000):
        store.record(records[start : start + 2000])
    # Raw bytes for every key but a few: every thirteenth on the middle day, every third legacy key.
    objects, seen = [], set()
    for n, r in enumerate(records):
        if r.s3_key in seen:
            continue
        seen.add(r.s3_key)
        if r.day == DAYS[1] and n % 13 == 4:
            continue
        if "ingest_date=" in r.s3_key and n % 3 == 0:
            continue
        objects.append(RawObject(r.s3_key, r.raw_sha.encode(), sha(r.raw_sha)))
    store.put_new(objects)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalStore, LocalPorts]]:
    store = LocalStore(tmp_path_factory.mktemp("fingerprints") / "ws")
    ports = local_ports(store)
    _fill(ports, store)
    yield store, ports
    store.close()


ENTITY: dict[str, Any] = {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30"}
PARTITION: dict[str, Any] = {"source": "demo", "event_type": "heartbeat", "start_day": "2025-12-27",
                             "end_day": "2025-12-30"}  # fmt: skip
# scope -> (would_send, fingerprint), as answered before issue 17's planner.
PINNED: list[tuple[dict[str, Any], int, str]] = [
    (
        {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30"},
        500,
        "20cbc6bffc7a445592bc52318156325daf5b94fcab82765b3f44d77cd53bcf71",
    ),
    (
        {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30", "limit": 1000},
        1000,
        "bb50c45b870d8af0c6050e9eba4cdc1d77287ad49185a5b576a3859a06e3b461",
    ),
    (
        {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30", "limit": 4096},
        4096,
        "b01dc5540b92550546f7f41d3ba0870da20e79d15daf2e44013b0be80837fe09",
    ),
    (
        {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30", "limit": 5001},
        5001,
        "a0ad1d6eac69436842537acd52941622415eef25bedef837f68bebc153f35afa",
    ),
    (
        {"entity_id": "user_1", "start_time": "2025-12-27", "end_time": "2025-12-30", "limit": 100000},
        6994,
        "e4e953b4e91841e1ea1ea8b6eb420760c3c5a7056a7068ed72e0844130fd396a",
    ),
    (
        {
            "entity_id": "user_1",
            "start_time": "2025-12-27",
            "end_time": "2025-12-30",
            "include_duplicates": True,
            "limit": 100000,
        },
        7994,
        "476fe26ad477def00cddea19b2d503d4a2a5b87e2bffcc1dd94ed973669fb323",
    ),
    (
        {
            "entity_id": "user_1",
            "start_time": "2025-12-27",
            "end_time": "2025-12-30",
            "include_duplicates": True,
            "limit": 4500,
        },
        4500,
        "79f8cbc748b234a9def63a99931ee0e7058734576b1c2a36fb4fcb3c5ace529e",
    ),
    (
        {
            "entity_id": "user_1",
            "start_time": "2025-12-27",
            "end_time": "2025-12-30",
            "event_type": "click",
            "limit": 100000,
        },
        2329,
        "fd1521281aa2395c7bcaa43b946c618d7d1f4219ef2d2882b1d43510007f91f7",
    ),
    (
        {
            "entity_id": "user_1",
            "start_time": "2025-12-27",
            "end_time": "2025-12-30",
            "status": "DUPLICATE",
            "include_duplicates": True,
            "limit": 100000,
        },
        1000,
        "83312847ccf002c5d970041adec5aa990f2d03a5826410397609115cd6e930d4",
    ),
    (
        {
            "entity_id": "user_1",
            "start_time": "2025-12-28T05:07:00Z",
            "end_time": "2025-12-29T09:03:00.000Z",
            "limit": 100000,
        },
        2640,
        "d5da1dbfd9b50aec546d29d49a56ddc39f6891e72ccea29d61b4a3c61c617588",
    ),
    (
        {
            "entity_id": "user_2",
            "start_time": "2025-12-27",
            "end_time": "2025-12-30",
            "include_duplicates": True,
            "limit": 100000,
        },
        2005,
        "641c55282a816da5f2a584c832ed62cda727f7c9d14711a3e7b0318c742f130e",
    ),
    (
        {"source": "demo", "event_type": "heartbeat", "start_day": "2025-12-27", "end_day": "2025-12-30"},
        500,
        "48a04fd8b4508f93c7cecdd5d34a2072e8f85159d116499d75274fcae832e8c7",
    ),
    (
        {
            "source": "demo",
            "event_type": "heartbeat",
            "start_day": "2025-12-27",
            "end_day": "2025-12-30",
            "limit": 100000,
        },
        5834,
        "1565c7351b61a55c5ab72b4636d917f8383484d5285deda3c147ad9e1bafb4ab",
    ),
    (
        {
            "source": "demo",
            "event_type": "heartbeat",
            "start_day": "2025-12-27",
            "end_day": "2025-12-30",
            "limit": 4097,
        },
        4097,
        "832ee60af71e25d563d2b37f2aeacaa5b37b9a2fea83307c785e4ec8c0b89bdf",
    ),
    (
        {
            "source": "demo",
            "event_type": "heartbeat",
            "start_day": "2025-12-27",
            "end_day": "2025-12-30",
            "include_duplicates": True,
            "limit": 100000,
        },
        6670,
        "6748850cfd6c8a7e8a6ca63ad8ea4bc9cff8e7cf9bcf085931281cfcacc825f4",
    ),
    (
        {
            "source": "demo",
            "event_type": "click",
            "start_day": "2025-12-27",
            "end_day": "2025-12-30",
            "status": "DUPLICATE",
            "include_duplicates": True,
            "limit": 100000,
        },
        415,
        "4b46e7c5ca0edbc8eee98659e6a405a94886c41f3dc4f04f5f6b7615744a6bbc",
    ),
]


def _plan(ports: LocalPorts, scope: dict[str, Any]) -> Any:
    service = ReplayService(ports.investigate, ports.catalog, ports.audit, read_only=True)
    return service.plan(ReplayRequest(**scope), actor="t")


@pytest.mark.parametrize("n", range(len(PINNED)))
def test_a_plans_fingerprint_is_the_one_pinned(workspace: tuple[LocalStore, LocalPorts], n: int) -> None:
    scope, would_send, fingerprint = PINNED[n]
    plan = _plan(workspace[1], scope)
    assert (plan.would_send, plan.fingerprint) == (would_send, fingerprint)


def _sent_fingerprint(messages: list[dict[str, Any]]) -> str:
    digest = hashlib.sha256()
    for m in messages:
        digest.update(f"{m['event_id']}:{m.get('receipt', '0')}\n".encode())
    return digest.hexdigest()


# ``execute`` of the entity's receipts, duplicates included, limit 6,000: the audit's fingerprint and the
# fingerprint of the messages sent, in the order the queue received them.
EXECUTED = "2b4db8c85058b74e9ec38fac4c22d99bdc92755808d2ece45a1055bdd69b0886"


def test_an_execution_sends_the_pinned_list(workspace: tuple[LocalStore, LocalPorts]) -> None:
    ports = workspace[1]
    service = ReplayService(ports.investigate, ports.catalog, ports.audit, queue=ports.queue)
    request = ReplayRequest(**{**ENTITY, "include_duplicates": True, "limit": 6000})
    audit = service.execute(request, actor="t", force=True, expected_fingerprint=EXECUTED[:12])
    messages: list[dict[str, Any]] = []
    while batch := ports.queue.receive(10, 60):
        messages += [json.loads(m.body) for m in batch]
        ports.queue.delete([m.receipt_handle for m in batch])
    assert (audit.sent, audit.fingerprint) == (6000, EXECUTED)
    assert len(messages) == 6000 and _sent_fingerprint(messages) == EXECUTED


def test_checkpoints_are_the_fingerprint_every_4096_receipts(
    workspace: tuple[LocalStore, LocalPorts],
) -> None:
    """The selection's checkpoints are the digests of the planned list's first 4,096, 8,192... receipts,
    the same from SQL as from the receipts an execution reads."""
    ports = workspace[1]
    request = normalize(ReplayRequest(**{**ENTITY, "include_duplicates": True, "limit": 100_000}))
    selection = ports.investigate.select_replay(request, sample=10)
    listed = list(ports.investigate.replay_receipts(request))
    want = [fingerprint(listed[:n]) for n in range(CHECKPOINT_EVERY, len(listed) + 1, CHECKPOINT_EVERY)]
    assert len(listed) == 7994 and list(selection.checkpoints) == want and len(want) == 1
    generic = select_by_scans(ports.investigate, ports.catalog, request, sample=10)
    assert dataclasses.replace(generic, missing_keys=None) == selection
    assert generic.missing_keys is not None and 0 < len(generic.missing_keys) <= generic.missing_raw


def test_the_pinned_scopes_check_raw_keys_both_ways(workspace: tuple[LocalStore, LocalPorts]) -> None:
    """Locally a partition small beside the plan has its raw keys read as one range, a big one row by row:
    the pinned scopes above go both ways (so both give today's fingerprints)."""
    from backend.adapters.local import replay_plan

    store = workspace[0]
    conn = store.db.connection()
    ways = set()
    for scope, _, _ in PINNED:
        request = normalize(ReplayRequest(**scope))
        s = replay_plan._scope(conn, request)
        scanned, filtered, duplicate = replay_plan._counts(conn, s)
        need = min(scanned - filtered - duplicate, request.limit)
        ranged = replay_plan._ranged_keys(conn, request, s, need)
        ways.add("range" if ranged else "row by row")
        # A ranged partition's keys are exactly its identity keys present in the raw table.
        for part, ids in ranged.items():
            (n,) = conn.execute(
                "SELECT count(*) FROM raw WHERE part = ? AND event_id = ? AND key IS NULL",
                (part, next(iter(ids))),
            ).fetchone()
            assert n == 1
            (total,) = conn.execute("SELECT count(*) FROM raw WHERE part = ?", (part,)).fetchone()
            assert total == len(ids)
    assert ways == {"range", "row by row"}


def test_a_selection_keeps_its_receipts_only_when_asked_and_few(
    workspace: tuple[LocalStore, LocalPorts],
) -> None:
    """The receipt-by-receipt selection (AWS's) keeps the planned receipts for the execution when there are
    at most ``keep`` of them: exactly the list fingerprinted; more than that, none."""
    ports = workspace[1]
    request = normalize(ReplayRequest(**{**ENTITY, "limit": 4096}))
    kept = select_by_scans(ports.investigate, ports.catalog, request, sample=10, keep=4096)
    assert kept.receipts is not None and len(kept.receipts) == 4096
    assert fingerprint(kept.receipts) == kept.fingerprint == PINNED[2][2]
    assert kept.sample == kept.receipts[:10]
    bigger = normalize(ReplayRequest(**{**ENTITY, "limit": 5001}))
    assert select_by_scans(ports.investigate, ports.catalog, bigger, sample=10, keep=4096).receipts is None
    assert select_by_scans(ports.investigate, ports.catalog, request, sample=10).receipts is None
