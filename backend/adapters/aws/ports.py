"""The investigation, replay and aggregate ports on AWS, handed out together (as
:func:`backend.adapters.local.workspace.local_ports` does for a workspace).

A port whose resource is not configured (no ``AGG_TABLE``, no ``REPLAY_QUEUE_URL``...) is None: the
commands that need it say so instead of failing half-way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from backend.adapters.aws.store import AwsStore
from backend.settings import AwsSettings


@dataclass(frozen=True)
class AwsPorts:
    investigate: Any = None
    catalog: Any = None
    queue: Any = None
    audit: Any = None
    aggregates: Any = None


def aws_ports(store: AwsStore, settings: AwsSettings, *, max_receives: int | None = None) -> AwsPorts:
    """The ports of ``store``'s stack, sharing its clients. ``max_receives`` defaults to the queue's own
    redrive policy (read from SQS)."""
    from backend.adapters.aws.investigate import AwsCatalog, AwsInvestigation

    found: dict[str, Any] = {"investigate": AwsInvestigation(store), "catalog": AwsCatalog(store)}
    if settings.replay_queue_url:
        from backend.adapters.aws.queue import SqsReplayQueue

        found["queue"] = SqsReplayQueue(
            store.clients, settings.replay_queue_url, settings.replay_dlq_url, max_receives
        )
    if settings.audit_table:
        from backend.adapters.aws.audit import DynamoAudit

        found["audit"] = DynamoAudit(store.clients, settings.audit_table)
    if settings.agg_table:
        from backend.adapters.aws.aggregates import DynamoAggregates

        found["aggregates"] = DynamoAggregates(
            store.clients, settings.agg_table, store.location, map_fn=store.map_concurrently
        )
    return AwsPorts(**found)
