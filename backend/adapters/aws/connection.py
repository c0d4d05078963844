"""What the S3 raw store and the DynamoDB event index share: one stack's clients and names, and a pool.

:class:`backend.adapters.aws.store.AwsStore` is both stores on one :class:`AwsConnection`, so they share
the clients (and whatever hooks a caller registers on them) and one pool of worker threads. Batches go
through :meth:`AwsConnection.map_concurrently`: boto3's clients are thread-safe, and a batch of events is
mostly waiting for AWS to answer.

The pool backs off when the endpoint does: every throttling answer, 5xx, timeout or dropped connection that
botocore sees (each attempt, its own retries included) halves how many writes may be in flight, and each run
of successes lets one more in again (additive increase, multiplicative decrease). So 16 writer threads do
not overrun a moto server or a table at its limit; they slow down to what it answers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from backend.adapters.aws.clients import AwsClients
from backend.adapters.aws.errors import error_code
from backend.adapters.aws.lag_shards import ENTITY, LAG, REJECTION, ShardKind, record_shards, recorded_all

T = TypeVar("T")

# Answers after which a write may or may not have happened, or that say the endpoint is overloaded: the
# kit tries the call again itself (the writes are idempotent, see index_writes) and backs off.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "RequestThrottledException",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "SlowDown",
        "LimitExceededException",
    }
)
# The names of the pool's threads start with this.
POOL_PREFIX = "pik-aws"
# How often the kit tries a write again after an error that outlived botocore's own retries.
KIT_ATTEMPTS = 4


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` (after botocore's retries) is worth trying again: a 5xx, throttling, a timeout or a
    dropped connection. The write it interrupted may have happened (an ambiguous failure)."""
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return int(status) >= 500 or error_code(exc) in THROTTLING_CODES
    return isinstance(exc, BotoCoreError)


class Backoff:
    """How many calls may be in flight (AIMD): halved on pressure (at most once per ``cool_s``), raised by
    one after ``limit`` successes, between 1 and ``ceiling``."""

    def __init__(self, ceiling: int, cool_s: float = 0.5) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.cool_s = cool_s
        self.pressure = 0  # times the limit was lowered (for tests and figures)
        self._in_flight = 0
        self._last_cut = 0.0
        self._cond = threading.Condition()

    def acquire(self) -> None:
        with self._cond:
            while self._in_flight >= int(self.limit):
                self._cond.wait(0.5)
            self._in_flight += 1

    def release(self) -> None:
        with self._cond:
            self._in_flight -= 1
            self.limit = min(float(self.ceiling), self.limit + 1.0 / max(self.limit, 1.0))
            self._cond.notify_all()

    def cut(self) -> None:
        with self._cond:
            now = time.monotonic()
            if now - self._last_cut < self.cool_s:
                return
            self._last_cut = now
            self.limit = max(1.0, self.limit / 2)
            self.pressure += 1

    def __enter__(self) -> Backoff:
        self.acquire()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


@dataclass
class Tables:
    """The names of the stack's resources that the stores use."""

    bucket: str
    events: str
    dedupe: str


class AwsConnection:
    """The clients of one stack, its bucket and table names, and a worker pool started on first use."""

    def __init__(
        self,
        clients: AwsClients,
        bucket: str,
        events_table: str,
        dedupe_table: str,
        *,
        workers: int = 16,
        lag_shards: int | None = None,
        entity_shards: int | None = None,
        rejection_shards: int | None = None,
    ) -> None:
        self.clients = clients
        # The LAG_SHARDS, ENTITY_SHARDS and REJECTION_SHARDS settings (None: not set); what the stack
        # records is read when first needed.
        self.shard_settings: dict[str, int | None] = {
            LAG.setting: lag_shards,
            ENTITY.setting: entity_shards,
            REJECTION.setting: rejection_shards,
        }
        self._stack_shards: dict[str, int] = {}
        self._stack_read = False
        self._stack_read_at = 0.0
        self._shards_lock = threading.Lock()
        self.s3 = clients.s3
        self.ddb = clients.dynamodb
        self.t = Tables(bucket, events_table, dedupe_table)
        self.location = bucket
        self.region = clients.s3.meta.region_name
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._workers = workers
        self.backoff = Backoff(workers)
        self.retry_sleep: Callable[[float], None] = time.sleep
        for client in (self.s3, self.ddb):
            client.meta.events.register("needs-retry.*.*", self._on_attempt)

    def _on_attempt(self, response: Any = None, caught_exception: Any = None, **_: Any) -> None:
        """Every attempt botocore makes (before it decides on a retry): pressure lowers the concurrency."""
        if caught_exception is not None:
            self.backoff.cut()
            return
        if response is None:
            return
        http, parsed = response
        code = (parsed or {}).get("Error", {}).get("Code", "")
        if getattr(http, "status_code", 200) >= 500 or code in THROTTLING_CODES:
            self.backoff.cut()

    @property
    def lag_shards_setting(self) -> int | None:
        return self.shard_settings[LAG.setting]

    def read_shards(self, kind: ShardKind) -> int:
        """How many shards of ``kind`` to read (``backend.adapters.aws.lag_shards``): the stack's record,
        else the setting, else 1. The records of every kind are read together, once per store."""
        with self._shards_lock:
            # A record, once read, holds for the stack's life; a missing one is asked again after a while
            # (a long-lived console may have opened the stack before its first sharded write).
            complete = len(self._stack_shards) == len(self.shard_settings)
            stale = not complete and time.monotonic() - self._stack_read_at > 60.0
            if not self._stack_read or stale:
                self._stack_shards = {**recorded_all(self.ddb, self.t.events), **self._stack_shards}
                self._stack_read = True
                self._stack_read_at = time.monotonic()
            recorded = self._stack_shards.get(kind.setting)
        return recorded or self.shard_settings[kind.setting] or 1

    def write_shards(self, kind: ShardKind) -> int:
        """How many shards of ``kind`` to write: the setting (recorded in the stack the first time when > 1;
        a stack that records another N refuses it with StoreError), else 1. No call unless it is > 1."""
        shards = self.shard_settings[kind.setting] or 1
        if shards > 1:
            record_shards(self.ddb, self.t.events, shards, kind)
            with self._shards_lock:
                self._stack_shards[kind.setting] = shards
        return shards

    def read_lag_shards(self) -> int:
        """:meth:`read_shards` of the lag index."""
        return self.read_shards(LAG)

    def read_entity_shards(self) -> int:
        """:meth:`read_shards` of the entity keys."""
        return self.read_shards(ENTITY)

    def read_rejection_shards(self) -> int:
        """:meth:`read_shards` of the quarantine."""
        return self.read_shards(REJECTION)

    def close(self) -> None:
        """Stops the worker pool once its calls are done; a later batch starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def retrying(self, action: Callable[[], T]) -> T:
        """``action()``, tried again (with back-off) up to KIT_ATTEMPTS times while it fails transiently.

        Only for idempotent writes: a transient failure may come after the write took effect."""
        for attempt in range(KIT_ATTEMPTS):
            try:
                return action()
            except (ClientError, BotoCoreError) as exc:
                if attempt == KIT_ATTEMPTS - 1 or not transient(exc):
                    raise
                self.backoff.cut()
                self.retry_sleep(min(2.0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def map_concurrently(self, fn: Callable[[Any], T], groups: Sequence[Any]) -> list[T]:
        """``fn`` over ``groups``, concurrently when there are several (boto3 clients are thread-safe).

        Returns or raises only once no call of it is running: on the first failure (or an interrupt) the
        groups not started yet are cancelled and the running ones finish, so that whoever reports what is
        stored afterwards sees the final state."""
        if not groups:
            return []
        # Even one group runs on the pool: an interrupt (Ctrl-C) then lands here, between calls, and the
        # call in flight is waited for, instead of abandoning a request the server may still carry out.
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix=POOL_PREFIX)
            pool = self._pool

        def gated(group: Any) -> T:
            with self.backoff:
                return fn(group)

        futures: list[Future[T]] = [pool.submit(gated, g) for g in groups]
        try:
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        except BaseException:
            _settle(futures)
            raise
        failed = [f.exception() for f in done if not f.cancelled() and f.exception() is not None]
        if failed:
            _settle(futures)
            raise failed[0]  # type: ignore[misc]
        return [f.result() for f in futures]


def _settle(futures: Sequence[Future[Any]]) -> None:
    """Cancel the futures not started and wait for the running ones (interrupts during the wait too)."""
    for f in futures:
        f.cancel()
    while True:
        try:
            wait(futures)
            return
        except KeyboardInterrupt:
            continue
