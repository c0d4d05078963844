"""The processor Lambda: replay messages from SQS in, versioned aggregates out (invariants 5 and 6).

Thin on purpose. :meth:`ProcessorService.process` takes the whole batch first, so each (entity, day) window
is recomputed once per batch however many of its messages the batch holds, from the whole window in the
index. Powertools' ``BatchProcessor`` then walks the records, and the record handler fails exactly the
messages the service reported (malformed ones included): the answer is the SQS partial batch response
``{"batchItemFailures": [{"itemIdentifier": <messageId>}, ...]}``, so only those are retried, and after the
queue's maximum receives they move to its dead-letter queue. A bad message is a failed record, never a
failed invocation, even when every record of the batch fails.

* ``DRY_RUN=true``: every window is computed and reported, no version is written (the messages are
  still consumed: the event source mapping deletes what the answer does not list).
* Read-only (``PIK_READ_ONLY``): nothing is computed and every message is returned to the queue.
* A backend or store that cannot be opened fails every record of the batch (they are retried).

Logs are JSON lines with counts, message ids, windows (entity, day) and reasons, never a payload. Metrics
are EMF in namespace ``PipelineInvestigationKit`` by ``Function``: ``ProcessorMessageCount`` (messages
received) and ``ProcessorErrorCount`` (failed), the original kit's; added: ``AggregateVersionCount``
(versions written, or that would be in a dry run), ``AggregateUnchangedCount``, ``DryRunCount``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext

from backend.errors import InvalidRequest, KitError, StoreError
from backend.handlers.common import (
    get_kit,
    make_logger,
    make_metrics,
    runtime_settings,
)
from backend.kit import Kit
from backend.services.processor import BatchResult, ProcessorService
from backend.settings import Settings, SettingsError

FUNCTION = "processor"
MAX_LOGGED_FAILURES = 20

logger = make_logger()
metrics = make_metrics()
# Not raising when the whole batch fails: a batch of one malformed message is still answered with its id.
batch = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)


class RecordFailed(Exception):
    """A record the processor could not process; its message goes back to the queue."""


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an SQS event in, the partial batch response out."""
    metrics.add_dimension(name="Function", value=FUNCTION)
    records = event.get("Records") if isinstance(event, Mapping) else None
    if not isinstance(records, list) or not all(isinstance(r, Mapping) for r in records):
        logger.error("not an SQS event: no Records list; nothing to process")
        metrics.add_metric(name="ProcessorMessageCount", unit=MetricUnit.Count, value=0)
        metrics.add_metric(name="ProcessorErrorCount", unit=MetricUnit.Count, value=1)
        return {"batchItemFailures": []}
    if not records:  # SQS never delivers an empty batch; Powertools refuses one
        metrics.add_metric(name="ProcessorMessageCount", unit=MetricUnit.Count, value=0)
        return {"batchItemFailures": []}
    bodies = [r.get("body") if isinstance(r.get("body"), str) else "" for r in records]
    failures, result = _process(bodies)
    failed_ids = {str(records[i].get("messageId")): reason for i, reason in failures.items()}

    def record_handler(record: SQSRecord) -> None:
        reason = failed_ids.get(record.message_id)
        if reason is not None:
            raise RecordFailed(reason)

    response = process_partial_response(event=event, record_handler=record_handler, processor=batch)
    _observe(records, failures, result)
    return dict(response)


def processor_service(kit: Kit, settings: Settings) -> ProcessorService:
    """The processor over ``kit``'s ports with the metrics in force (the workspace's on a local backend).

    Raises StoreError when a port is missing or the settings cannot be read, InvalidRequest for metrics
    that are defined wrong."""
    return kit.processor(dry_run=settings.dry_run)


def _process(bodies: Sequence[str]) -> tuple[dict[int, str], BatchResult | None]:
    """The failed records by position, with why, and what was recomputed (None if nothing could be)."""
    try:
        settings = runtime_settings()
        kit = get_kit()
        if kit.read_only:
            reason = "the kit is in read-only mode: no aggregate is written; the message is returned"
            return dict.fromkeys(range(len(bodies)), reason), None
        service = processor_service(kit, settings)
    except (StoreError, InvalidRequest, SettingsError) as exc:
        logger.error(
            "cannot open the processor's stores; every message is returned", extra={"error": str(exc)}
        )
        return dict.fromkeys(range(len(bodies)), f"{type(exc).__name__}: {exc}"), None
    except Exception as exc:
        logger.exception("the processor could not start; every message is returned")
        return dict.fromkeys(range(len(bodies)), f"internal error: {type(exc).__name__}"), None
    try:
        result = service.process(bodies)
    except KitError as exc:  # process() fails messages, not the batch; this is a safety net
        logger.error("the batch could not be processed", extra={"error": str(exc)})
        return dict.fromkeys(range(len(bodies)), str(exc)), None
    return dict(result.failed), result


def _observe(
    records: Sequence[Mapping[str, Any]], failures: Mapping[int, str], result: BatchResult | None
) -> None:
    """The batch's log lines and metrics: counts, windows, failed message ids and reasons; no payload."""
    dry_run = bool(result and result.dry_run)
    failed = [
        {
            "message_id": records[i].get("messageId"),
            "receive_count": _receive_count(records[i]),
            "reason": reason,
        }
        for i, reason in sorted(failures.items())
    ]
    for item in failed[:MAX_LOGGED_FAILURES]:
        logger.warning("message failed; it returns to the queue", extra=item)
    logger.info(
        "processed",
        extra={
            "received": len(records),
            "failed": len(failed),
            "dry_run": dry_run,
            "windows": [f"{w.entity_id}/{w.day}" for w in result.windows] if result else [],
            "versions_written": result.written if result else 0,
            "unchanged": result.unchanged if result else 0,
        },
    )
    metrics.add_metric(name="ProcessorMessageCount", unit=MetricUnit.Count, value=len(records))
    metrics.add_metric(name="ProcessorErrorCount", unit=MetricUnit.Count, value=len(failed))
    if result is not None:
        metrics.add_metric(name="AggregateVersionCount", unit=MetricUnit.Count, value=result.written)
        metrics.add_metric(name="AggregateUnchangedCount", unit=MetricUnit.Count, value=result.unchanged)
    if dry_run:
        metrics.add_metric(name="DryRunCount", unit=MetricUnit.Count, value=1)


def _receive_count(record: Mapping[str, Any]) -> int | None:
    attributes = record.get("attributes")
    value = attributes.get("ApproximateReceiveCount") if isinstance(attributes, Mapping) else None
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
