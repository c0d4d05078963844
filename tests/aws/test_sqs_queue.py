"""The SQS replay queue beyond the contract (tests/contract/test_replay_ports.py): what each method costs in
calls, the redrive policy as the source of max_receives and of the dead-letter queue, batches over SQS's
size limit, stale handles, and listing the dead letters without consuming them."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from backend.adapters.aws.queue import MAX_BATCH_BYTES, SqsReplayQueue
from backend.adapters.aws.store import AwsStore
from backend.errors import StoreError
from backend.settings import AwsSettings
from tests.aws_env import moto_backend


class Env:
    def __init__(self, store: AwsStore, settings: AwsSettings) -> None:
        self.store = store
        self.settings = settings
        self.ops: Counter[str] = Counter()
        store.clients.sqs.meta.events.register("before-call.*.*", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        self.ops[event_name.split(".", 2)[2]] += 1

    def take(self) -> Counter[str]:
        ops, self.ops = self.ops, Counter()
        return ops

    def queue(self, **kw: Any) -> SqsReplayQueue:
        assert self.settings.replay_queue_url
        kw.setdefault("dlq_url", self.settings.replay_dlq_url)
        kw.setdefault("wait_time_s", 0)  # moto waits out a long poll of an empty queue
        return SqsReplayQueue(self.store.clients, self.settings.replay_queue_url, **kw)

    def poison(self, queue: SqsReplayQueue, bodies: list[str]) -> None:
        """Send ``bodies`` and fail them until the queue dead-letters them."""
        for start in range(0, len(bodies), 10):
            queue.send_batch(bodies[start : start + 10])
        for _ in range(queue.max_receives):
            held: list[str] = []
            while got := queue.receive(10, 60):
                held += [m.receipt_handle for m in got]
            queue.release(held)
        assert queue.receive(10, 60) == []  # this receive moves them


@pytest.fixture
def env() -> Iterator[Env]:
    store, settings, close = moto_backend()
    try:
        yield Env(store, settings)
    finally:
        close()


def test_each_method_costs_one_call_per_ten(env: Env) -> None:
    queue = env.queue(max_receives=5)
    assert queue.send_batch([f"m{i}" for i in range(10)]) == []
    assert env.take() == {"SendMessageBatch": 1}
    got = queue.receive(10, 60)
    assert env.take() == {"ReceiveMessage": 1}
    queue.release([m.receipt_handle for m in got])
    assert env.take() == {"ChangeMessageVisibilityBatch": 1}
    handles = [m.receipt_handle for m in queue.receive(10, 60)]
    env.take()
    queue.delete(handles + handles[:5])  # 15 handles: two calls
    assert env.take() == {"DeleteMessageBatch": 2}
    assert queue.send_batch([]) == [] and env.take() == {}
    queue.depth()
    assert env.take() == {"GetQueueAttributes": 2}


def test_max_receives_and_the_dead_letter_queue_come_from_the_redrive_policy(env: Env) -> None:
    queue = env.queue(dlq_url=None)
    assert env.take() == {}, "nothing is read until needed: a sender never needs GetQueueAttributes"
    queue.send_batch(["m"])
    assert env.take() == {"SendMessageBatch": 1}
    assert queue.max_receives == 5
    assert queue.dlq_url == env.settings.replay_dlq_url
    assert env.take() == {"GetQueueAttributes": 2, "GetQueueUrl": 1}
    assert queue.max_receives == 5 and env.take() == {}, "read once"


def test_a_queue_without_a_redrive_policy_is_an_error_when_it_matters(env: Env) -> None:
    sqs = env.store.clients.sqs
    url = sqs.create_queue(QueueName="no-policy")["QueueUrl"]
    queue = SqsReplayQueue(env.store.clients, url)
    assert queue.send_batch(["m"]) == []
    with pytest.raises(StoreError, match="no redrive policy"):
        _ = queue.max_receives


def test_entries_past_the_batch_size_limit_are_sent_again_not_lost(env: Env) -> None:
    queue = env.queue(max_receives=5)
    big = "x" * (MAX_BATCH_BYTES // 3 + 1)
    failures = queue.send_batch([big, big, big, "small", "", big])
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [
        (2, "BatchRequestTooLong", False), (4, "EmptyValue", True), (5, "BatchRequestTooLong", False),
    ]  # fmt: skip
    assert env.take() == {"SendMessageBatch": 1}
    assert queue.send_batch([big, big]) == []
    assert queue.depth().visible == 5


def test_characters_sqs_refuses_are_the_senders_fault(env: Env) -> None:
    queue = env.queue(max_receives=5)
    failures = queue.send_batch(["ok", "bell \x07", "lone \ud800 surrogate", "tab\tand\nnewline é 😀"])
    assert [(f.index, f.code, f.sender_fault) for f in failures] == [
        (1, "InvalidMessageContents", True), (2, "InvalidMessageContents", True),
    ]  # fmt: skip
    assert sorted(m.body for m in queue.receive(10, 60)) == ["ok", "tab\tand\nnewline é 😀"]


def test_a_stale_handle_is_ignored(env: Env) -> None:
    queue = env.queue(max_receives=5)
    queue.send_batch(["m"])
    [first] = queue.receive(10, 60)
    queue.delete([first.receipt_handle])
    queue.delete([first.receipt_handle, "not-a-handle"])  # gone already: nothing to do, no error
    queue.release([first.receipt_handle])
    depth = queue.depth()
    assert (depth.visible, depth.in_flight, depth.dead) == (0, 0, 0)


def test_received_messages_say_when_they_were_sent_and_how_often_received(env: Env) -> None:
    queue = env.queue(max_receives=5)
    queue.send_batch([json.dumps({"n": 1})])
    [m] = queue.receive(1, 0)  # visibility 0: visible again at once
    [again] = queue.receive(1, 60)
    assert (m.receive_count, again.receive_count) == (1, 2)
    assert again.message_id == m.message_id and again.sent_at == m.sent_at
    assert len(m.sent_at) == 24 and m.sent_at.endswith("Z")


def test_listing_the_dead_letters_leaves_them_where_they_were(env: Env) -> None:
    queue = env.queue()
    env.poison(queue, [f"d{i:02}" for i in range(23)])
    assert queue.depth().dead == 23
    env.take()
    first = queue.dead_letters(limit=100)
    ops = env.take()
    # One count, ten per receive, and every one made visible again (ten per call).
    assert ops["GetQueueAttributes"] == 1 and ops["ReceiveMessage"] == 3
    assert ops["ChangeMessageVisibilityBatch"] == 3
    assert sorted(d.body for d in first.items) == [f"d{i:02}" for i in range(23)]
    assert all(d.receive_count == 5 and d.dead_at is None for d in first.items)
    assert [(d.sent_at, d.message_id) for d in first.items] == sorted(
        (d.sent_at, d.message_id) for d in first.items
    )
    depth = queue.depth()
    assert (depth.dead, depth.visible, depth.in_flight) == (23, 0, 0)
    # Visible again: the next listing (or a redrive) sees all of them.
    assert queue.dead_letters(limit=100).items == first.items
    pages = [queue.dead_letters(limit=10)]
    while pages[-1].next_cursor:
        pages.append(queue.dead_letters(limit=10, after=pages[-1].next_cursor))
    assert [len(p.items) for p in pages] == [10, 10, 3]
    assert [d for p in pages for d in p.items] == first.items


def test_a_listing_is_capped(env: Env) -> None:
    queue = env.queue(peek_max=10)
    env.poison(queue, [f"d{i:02}" for i in range(15)])
    assert len(queue.dead_letters(limit=100).items) == 10
    assert queue.depth().dead == 15


def test_receives_are_long_polls_by_default(env: Env) -> None:
    # A short poll answers from a sample of SQS's servers: its empty answer would end a drain too early.
    waits: list[int] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        waits.append(params.get("WaitTimeSeconds", 0))

    env.store.clients.sqs.meta.events.register("before-parameter-build.sqs.ReceiveMessage", record)
    assert env.settings.replay_queue_url
    queue = SqsReplayQueue(env.store.clients, env.settings.replay_queue_url, max_receives=5)
    queue.send_batch(["m"])
    assert len(queue.receive(10, 60)) == 1
    assert waits == [1]
