"""What the S3 raw store and the DynamoDB event index share: one stack's clients and names, and a pool.

:class:`backend.adapters.aws.store.AwsStore` is both stores on one :class:`AwsConnection`, so they share
the clients (and whatever hooks a caller registers on them) and one pool of worker threads. Batches go
through :meth:`AwsConnection.map_concurrently`: boto3's clients are thread-safe, and a batch of events is
mostly waiting for AWS to answer.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from backend.adapters.aws.clients import AwsClients

T = TypeVar("T")


@dataclass
class Tables:
    """The names of the stack's resources that the stores use."""

    bucket: str
    events: str
    dedupe: str


class AwsConnection:
    """The clients of one stack, its bucket and table names, and a worker pool started on first use."""

    def __init__(
        self, clients: AwsClients, bucket: str, events_table: str, dedupe_table: str, *, workers: int = 16
    ) -> None:
        self.clients = clients
        self.s3 = clients.s3
        self.ddb = clients.dynamodb
        self.t = Tables(bucket, events_table, dedupe_table)
        self.location = bucket
        self.region = clients.s3.meta.region_name
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._workers = workers

    def close(self) -> None:
        """Stops the worker pool once its calls are done; a later batch starts a new one."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def map_concurrently(self, fn: Callable[[Any], T], groups: Sequence[Any]) -> list[T]:
        """``fn`` over ``groups``, concurrently when there are several (boto3 clients are thread-safe)."""
        if len(groups) <= 1 or self._workers <= 1:
            return [fn(g) for g in groups]
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="pik-aws")
            pool = self._pool
        return list(pool.map(fn, groups))
