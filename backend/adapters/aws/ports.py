"""The investigation, replay and aggregate ports on AWS, handed out together (as
:func:`backend.adapters.local.workspace.local_ports` does for a workspace).

A port whose resource is not configured (no ``AGG_TABLE``, no ``REPLAY_QUEUE_URL``...) is None: the
commands that need it say so instead of failing half-way.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.adapters.aws.aggregates import DynamoAggregates
from backend.adapters.aws.audit import DynamoAudit
from backend.adapters.aws.investigate import AwsCatalog, AwsInvestigation
from backend.adapters.aws.overview import AwsOverview
from backend.adapters.aws.queue import SqsReplayQueue
from backend.adapters.aws.rollup_backfill import AwsRollups
from backend.adapters.aws.store import AwsStore
from backend.adapters.aws.window_heads import HeadsMaintainer
from backend.settings import AwsSettings


@dataclass(frozen=True)
class AwsPorts:
    investigate: AwsInvestigation
    catalog: AwsCatalog
    queue: SqsReplayQueue | None = None
    audit: DynamoAudit | None = None
    aggregates: DynamoAggregates | None = None
    overview: AwsOverview | None = None
    rollups: AwsRollups | None = None
    window_heads: HeadsMaintainer | None = None


def aws_ports(store: AwsStore, settings: AwsSettings, *, max_receives: int | None = None) -> AwsPorts:
    """The ports of ``store``'s stack, sharing its clients. ``max_receives`` defaults to the queue's own
    redrive policy (read from SQS)."""
    queue: SqsReplayQueue | None = None
    audit: DynamoAudit | None = None
    aggregates: DynamoAggregates | None = None
    if settings.replay_queue_url:
        dlq = settings.replay_dlq_url
        queue = SqsReplayQueue(store.clients, settings.replay_queue_url, dlq, max_receives)
    if settings.audit_table:
        audit = DynamoAudit(store.clients, settings.audit_table)
    if settings.agg_table:
        aggregates = DynamoAggregates(
            store.clients, settings.agg_table, store.location, map_fn=store.map_concurrently
        )
    rollups = AwsRollups(store.ddb, store.t.events)
    heads = HeadsMaintainer(store.ddb, settings.agg_table) if settings.agg_table else None
    return AwsPorts(
        AwsInvestigation(store),
        AwsCatalog(store),
        queue,
        audit,
        aggregates,
        overview=AwsOverview(store, aggregates),
        rollups=rollups,
        window_heads=heads,
    )
