"""The drain (issue 17): messages coalesced by window and each window recomputed once per flush, with every
invariant of the one-chunk-at-a-time drain it replaced: a message deleted only after its window is stored,
failed windows' messages released (and dead-lettered after their maximum receives), a dry run that writes
nothing and releases everything, and an interrupted drain (``should_stop``, KeyboardInterrupt, SIGINT of
`pik process`) that leaves no message hidden."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.ports import BULK_RECEIVE, QueueDepth
from backend.services import drain as drain_module
from backend.services.drain import DrainService
from backend.services.processor import ProcessorService, WindowResult
from tests.test_processor import STEPS, Env

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    e = Env(tmp_path / "ws")
    yield e
    e.store.close()


def _fill(env: Env, per_window: int, entities: Sequence[str] = ("user_1", "user_2")) -> list[str]:
    """Three events per entity, and ``per_window`` messages per window from two replays, interleaved."""
    for entity in entities:
        for minute in range(3):
            env.add(entity=entity, minute=minute)
    bodies = [
        env.message(entity, replay_id=f"rp-{i % 2}", minute=i % 3)
        for i in range(per_window)
        for entity in entities
    ]
    for i in range(0, len(bodies), 10):
        assert env.ports.queue.send_batch(bodies[i : i + 10]) == []
    return bodies


class Counting(ProcessorService):
    """A processor that counts its window recomputes, and fails (or interrupts) the ones it is told to."""

    def __init__(self, *args: Any, fail: str | None = None, interrupt: bool = False, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls: list[tuple[str, str]] = []
        self.fail = fail
        self.interrupt = interrupt

    def recompute(self, entity_id: str, day: str, replay_ids: Sequence[str] = ()) -> WindowResult:
        self.calls.append((entity_id, day))
        if self.interrupt:
            raise KeyboardInterrupt
        if entity_id == self.fail:
            raise RuntimeError("the index is on fire")
        return super().recompute(entity_id, day, replay_ids)


def _counting(env: Env, **kw: Any) -> Counting:
    p = env.ports
    return Counting(p.investigate, p.catalog, p.aggregates, [STEPS], clock=env.clock, **kw)


def _versions(env: Env, entities: Sequence[str] = ("user_1", "user_2")) -> list[dict[str, Any]]:
    out = []
    for entity in entities:
        for metric in ("daily_event_count", "steps"):
            page = env.ports.aggregates.versions(entity, "2025-12-28", metric=metric)
            out += [v.model_dump() for v in page.items]
    return out


def test_a_window_with_many_messages_is_recomputed_once_with_the_versions_of_chunked_processing(
    tmp_path: Path,
) -> None:
    coalesced, chunked = Env(tmp_path / "a"), Env(tmp_path / "b")
    try:
        bodies = _fill(coalesced, 300)
        assert _fill(chunked, 300) == bodies
        processor = _counting(coalesced)
        result = DrainService(coalesced.ports.queue, processor).run()
        assert sorted(processor.calls) == [("user_1", "2025-12-28"), ("user_2", "2025-12-28")]
        assert (result.received, result.processed, result.recomputes, result.windows) == (600, 600, 2, 2)
        assert (result.versions_written, result.unchanged, result.failed_messages) == (4, 0, 0)
        assert coalesced.ports.queue.depth() == QueueDepth(0, 0, 0)
        # The processing of before: every chunk of 50 messages recomputes its windows.
        before = chunked.processor(STEPS)
        for i in range(0, len(bodies), 50):
            assert not before.process(bodies[i : i + 50]).failed
        assert _versions(coalesced) == _versions(chunked) and len(_versions(coalesced)) == 4
        assert all(v["replay_ids"] == ["rp-0", "rp-1"] for v in _versions(coalesced))
    finally:
        coalesced.store.close()
        chunked.store.close()


def test_a_failing_window_releases_its_messages_until_they_are_dead_letters_and_the_others_are_done(
    tmp_path: Path,
) -> None:
    env = Env(tmp_path / "ws")
    try:
        env.ports = local_ports(env.store, max_receives=2)
        _fill(env, 20)
        env.ports.queue.send_batch(["not json"])
        processor = _counting(env, fail="user_2")
        result = DrainService(env.ports.queue, processor).run()
        # Received twice each (the failed flush released them, the same run received them again).
        assert processor.calls.count(("user_2", "2025-12-28")) == 2
        assert processor.calls.count(("user_1", "2025-12-28")) == 1
        assert (result.received, result.processed, result.failed_messages) == (20 + 2 * 21, 20, 21)
        assert (result.failed_attempts, result.dead_lettered) == (42, 21)
        assert "the index is on fire" in result.failures[0].reason or "malformed" in result.failures[0].reason
        # Dead-lettered by the run's last receive, which found nothing else visible.
        assert env.ports.queue.depth() == QueueDepth(0, 0, 21)
        assert [v["entity_id"] for v in _versions(env)] == ["user_1", "user_1"]
    finally:
        env.store.close()


def test_a_dry_run_writes_nothing_and_releases_every_message(env: Env) -> None:
    _fill(env, 30)
    processor = _counting(env, dry_run=True)
    result = DrainService(env.ports.queue, processor).run()
    assert (result.dry_run, result.received, result.recomputes, result.versions_written) == (True, 60, 2, 4)
    assert _versions(env) == []
    assert env.ports.queue.depth() == QueueDepth(60, 0, 0)


def test_held_messages_are_bounded_by_count(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain_module, "BULK_RECEIVE", 10)
    monkeypatch.setattr(drain_module, "MAX_HELD", 25)
    _fill(env, 60, entities=("user_1",))
    processor = _counting(env)
    result = DrainService(env.ports.queue, processor).run()
    # 60 messages, received 10 at a time, flushed as soon as 25 or more are held: after 30, 60.
    assert len(processor.calls) == 2 and (result.recomputes, result.versions_written) == (2, 2)
    assert env.ports.queue.depth() == QueueDepth(0, 0, 0)


def test_held_messages_are_bounded_by_the_visibility_timeout(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drain_module, "BULK_RECEIVE", 10)
    _fill(env, 30, entities=("user_1",))
    processor = _counting(env)
    # No time to hold anything: every receive is recomputed and deleted before the next one.
    result = DrainService(env.ports.queue, processor, visibility_timeout_s=0).run()
    assert (result.received, result.recomputes) == (30, 3)
    assert env.ports.queue.depth() == QueueDepth(0, 0, 0)


def test_an_interrupt_in_the_middle_of_a_recompute_releases_every_held_message(env: Env) -> None:
    _fill(env, 40)
    processor = _counting(env, interrupt=True)
    with pytest.raises(KeyboardInterrupt):
        DrainService(env.ports.queue, processor).run()
    assert env.ports.queue.depth() == QueueDepth(80, 0, 0) and _versions(env) == []


def test_an_interrupt_between_receives_releases_every_held_message(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(drain_module, "BULK_RECEIVE", 10)
    _fill(env, 40)

    def progress(at: drain_module.DrainProgress) -> None:
        if at.received == 30:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DrainService(env.ports.queue, _counting(env)).run(on_progress=progress)
    assert env.ports.queue.depth() == QueueDepth(80, 0, 0) and _versions(env) == []


# -- `pik process` and SIGINT ------------------------------------------------------------------------------

# Runs `pik process --json` with a queue that says when it has received, and a processor that says when it
# recomputes and then takes its time: the test knows when to send SIGINT.
_RUNNER = textwrap.dedent(
    """
    import sys, time
    import backend.adapters.local.queue as q
    import backend.services.drain as d
    import backend.services.processor as p
    from pik_console.cli.main import main

    d.BULK_RECEIVE = 10
    receive, recompute = q.LocalQueue.receive_many, p.ProcessorService.recompute

    def slow_receive(self, *a, **k):
        got = receive(self, *a, **k)
        print("received", flush=True, file=sys.stderr)
        time.sleep(0.3)
        return got

    def slow_recompute(self, *a, **k):
        print("recomputing", flush=True, file=sys.stderr)
        time.sleep(float(sys.argv[2]))
        return recompute(self, *a, **k)

    q.LocalQueue.receive_many, p.ProcessorService.recompute = slow_receive, slow_recompute
    sys.exit(main(["process", "--json", "--workspace", sys.argv[1]]))
    """
)


def _interrupted(ws: str, wait_for: str, signals: int, recompute_s: float) -> tuple[int, str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUNNER, ws, str(recompute_s)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.strip() == wait_for:
            break
    for _ in range(signals):
        proc.send_signal(signal.SIGINT)
        if signals > 1:
            time.sleep(0.3)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(seen) + err


def test_a_stop_during_a_long_flush_ends_it_within_one_chunk_of_windows(env: Env) -> None:
    entities = [f"user_{i}" for i in range(100)]
    _fill(env, 3, entities=entities)  # 300 messages of 100 windows, held together in one receive
    processor = _counting(env)
    asked = []

    def should_stop() -> bool:
        # Asked before the receive, then before each chunk: stop once 40 windows are recomputed.
        asked.append(len(processor.calls))
        return len(processor.calls) >= 40

    result = DrainService(env.ports.queue, processor).run(should_stop=should_stop)
    chunk = drain_module.FLUSH_WINDOWS
    done = -(-40 // chunk) * chunk  # whole chunks: the one in progress when asked is finished
    # Asked between chunks (and before each receive, with nothing recomputed yet).
    assert sorted(set(asked)) == [chunk * i for i in range(done // chunk + 1)]
    assert len(processor.calls) == done
    assert result.interrupted and (result.received, result.recomputes) == (300, done)
    assert (result.processed, result.versions_written) == (3 * done, 2 * done)
    # The windows recomputed are stored and their messages deleted; the others' are back in the queue.
    assert env.ports.queue.depth() == QueueDepth(300 - 3 * done, 0, 0)
    assert len(_versions(env, entities)) == 2 * done
    rest = DrainService(env.ports.queue, _counting(env)).run()
    assert (rest.received, rest.recomputes, rest.versions_written) == (
        300 - 3 * done,
        100 - done,
        2 * (100 - done),
    )
    assert env.ports.queue.depth() == QueueDepth(0, 0, 0) and len(_versions(env, entities)) == 200


def test_one_sigint_stops_the_drain_and_releases_what_was_not_recomputed(env: Env) -> None:
    _fill(env, 100, entities=("user_1",))
    code, out, err = _interrupted(env.store.location, "received", 1, 0.0)
    report = json.loads(out)
    assert code == 130 and report["interrupted"] and "stopping" in err
    assert 10 <= report["received"] < 100 and (report["processed"], report["recomputes"]) == (0, 0)
    assert env.ports.queue.depth() == QueueDepth(100, 0, 0) and _versions(env, ("user_1",)) == []


def test_two_sigints_during_a_recompute_release_everything(env: Env) -> None:
    _fill(env, 20, entities=("user_1",))
    code, out, err = _interrupted(env.store.location, "recomputing", 2, 30.0)
    assert code == 130 and out == "" and "pik process: interrupted" in err
    assert env.ports.queue.depth() == QueueDepth(20, 0, 0) and _versions(env, ("user_1",)) == []


# -- the local queue's bulk receive ------------------------------------------------------------------------


def test_the_local_bulk_receive_keeps_the_queue_semantics(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "ws")
    try:
        queue = local_ports(store, max_receives=2).queue
        for i in range(3):
            assert queue.send_batch([f"m{i}-{k}" for k in range(10)]) == []
        first = queue.receive_many(25, 60)
        assert [m.body for m in first] == [f"m{i}-{k}" for i in range(3) for k in range(10)][:25]
        assert all(m.receive_count == 1 for m in first)
        assert queue.depth() == QueueDepth(5, 25, 0)
        queue.release([m.receipt_handle for m in first[:2]])
        queue.delete([m.receipt_handle for m in first[2:]])
        # From where the last one stopped, then from the start: the 5 never received, then the 2 released.
        second = queue.receive_many(1000, 60)
        assert [m.body for m in second] == ["m2-5", "m2-6", "m2-7", "m2-8", "m2-9", "m0-0", "m0-1"]
        assert [m.receive_count for m in second[-2:]] == [2, 2]
        queue.release([m.receipt_handle for m in second])
        queue.delete([m.receipt_handle for m in first[:2]])  # an earlier receive's handle: ignored
        third = queue.receive_many(1000, 60)  # the two received twice are dead letters now
        assert [m.body for m in third] == ["m2-5", "m2-6", "m2-7", "m2-8", "m2-9"]
        assert queue.depth() == QueueDepth(0, 5, 2)
        with pytest.raises(Exception, match=f"1 to {BULK_RECEIVE}"):
            queue.receive_many(BULK_RECEIVE + 1, 60)
    finally:
        store.close()


def test_handles_from_before_the_row_id_was_in_them_still_delete_and_release(tmp_path: Path) -> None:
    """Rows received by earlier versions store their whole handle: a random text without a row id, then
    ``<row id>.<32 hex>``; rows received now store the receive's token. Each era's handle finds its row, and
    a token given alone (not a handle) finds none."""
    store = LocalStore(tmp_path / "ws")
    try:
        queue = local_ports(store).queue
        assert queue.send_batch(["a", "b", "c", "d", "e"]) == []
        got = queue.receive(10, 60)
        row_ids = [int(m.receipt_handle.partition(".")[0]) for m in got]
        old = [f"{i:032x}" for i in range(2)] + [f"{row_ids[i]}.{i:032x}" for i in (2, 3)]
        with store.db.write("test: old handles") as conn:
            for row_id, handle in zip(row_ids, old, strict=False):
                conn.execute("UPDATE queue_messages SET receipt_handle = ? WHERE id = ?", (handle, row_id))
        token = got[4].receipt_handle.partition(".")[2]
        queue.delete([token])  # a token alone: not a handle
        queue.release([token])
        assert queue.depth() == QueueDepth(0, 5, 0)
        queue.delete([old[0], old[2]])
        queue.release([old[1], old[3]])
        assert queue.depth() == QueueDepth(2, 1, 0)
        queue.delete([got[4].receipt_handle])
        assert sorted(m.body for m in queue.receive(10, 60)) == ["b", "d"]
        assert queue.depth() == QueueDepth(0, 2, 0)
    finally:
        store.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ops=st.lists(
        st.tuples(st.sampled_from(["receive", "delete", "release"]), st.integers(1, 40), st.randoms()),
        max_size=12,
    )
)
def test_ranged_deletes_and_releases_act_on_exactly_the_handles_given(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, Any]]
) -> None:
    """Delete and release find rows by runs of ids per receive: whatever mix of handles is given (several
    receives', stale ones, gaps, repeats), exactly the messages whose latest handle is among them change.
    (As on SQS, a released message's latest handle still deletes it until it is received again.)"""
    store = LocalStore(tmp_path_factory.mktemp("q") / "ws")
    try:
        queue = local_ports(store, max_receives=100).queue
        for i in range(0, 60, 10):
            assert queue.send_batch([f"m{k}" for k in range(i, i + 10)]) == []
        latest: dict[str, str] = {}  # body -> the handle of its latest receive
        in_flight: set[str] = set()
        gone: set[str] = set()
        seen: list[tuple[str, str]] = []  # every (handle, body) handed out, stale ones too
        for op, n, rnd in ops:
            if op == "receive":
                got = queue.receive_many(n, 3600)
                assert not {m.body for m in got} & (gone | in_flight)  # only visible ones
                for m in got:
                    latest[m.body] = m.receipt_handle
                    in_flight.add(m.body)
                    seen.append((m.receipt_handle, m.body))
                continue
            chosen = rnd.sample(seen, min(n, len(seen))) + rnd.sample(seen, min(2, len(seen)))
            (queue.delete if op == "delete" else queue.release)([h for h, _ in chosen])
            for handle, body in chosen:
                if body not in gone and latest.get(body) == handle:
                    in_flight.discard(body)
                    if op == "delete":
                        gone.add(body)
            assert queue.depth() == QueueDepth(60 - len(gone) - len(in_flight), len(in_flight), 0)
        rest = queue.receive_many(1000, 3600)
        assert sorted(m.body for m in rest) == sorted({f"m{k}" for k in range(60)} - gone - in_flight)
    finally:
        store.close()
