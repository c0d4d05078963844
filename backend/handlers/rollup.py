"""The rollup Lambda: the events table's stream in, the rollup items out (``docs/aws.md``, "Rollups").

Thin on purpose: the kit's :class:`backend.ports.RollupMaintainer` sums the batch in memory and writes one
update per rollup item it touches, gated so that a batch delivered again counts once. Ingest is not
involved: it stays at its two calls per accepted event, and a rollup that falls behind delays answers,
never an ingest.

A failure raises, so that Lambda retries the batch (the template's event source mapping bisects a failing
batch and, after its retries, sends the batch's shard and sequence range to the rollup dead-letter queue);
a retried batch is counted once whatever part of it was written before. Logs are JSON lines with the
counts; metrics (EMF, namespace ``PipelineInvestigationKit``, by ``Function``): ``RollupRecordCount``
(records received), ``RollupCountedCount``, ``RollupReplayedCount`` (already counted: a retry),
``RollupTransactionCount``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from backend.errors import NotConfigured
from backend.handlers.common import get_kit, make_logger, make_metrics

FUNCTION = "rollup"

logger = make_logger()
metrics = make_metrics()


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    metrics.add_dimension(name="Function", value=FUNCTION)
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        # Not a stream batch (a test invocation?): nothing to count, nothing to retry.
        logger.error("not a DynamoDB stream event: no Records list; nothing counted")
        return {"counted": 0}
    metrics.add_metric(name="RollupRecordCount", unit=MetricUnit.Count, value=len(records))
    if not records:
        return {"counted": 0}
    kit = get_kit()
    if kit.rollups is None:
        raise NotConfigured(f"the {kit.name} backend keeps no rollups")
    if kit.read_only:  # raising leaves the batch in the stream, counted once the kit may write again
        raise NotConfigured("the kit is in read-only mode: no rollup is written; the batch is retried")
    result = kit.rollups.apply_stream(records)
    metrics.add_metric(name="RollupCountedCount", unit=MetricUnit.Count, value=result.counted)
    metrics.add_metric(name="RollupReplayedCount", unit=MetricUnit.Count, value=result.replayed)
    metrics.add_metric(name="RollupTransactionCount", unit=MetricUnit.Count, value=result.transactions)
    logger.info(
        "rollups updated",
        extra={
            "records": len(records),
            "counted": result.counted,
            "replayed": result.replayed,
            "ignored": result.ignored,
            "transactions": result.transactions,
        },
    )
    return {
        "counted": result.counted,
        "replayed": result.replayed,
        "ignored": result.ignored,
        "transactions": result.transactions,
    }
