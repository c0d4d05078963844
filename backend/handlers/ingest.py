"""The ingest Lambda: ``POST /ingest`` behind API Gateway (REST v1 or HTTP API v2), and behind ``pik serve``.

Thin on purpose: read the event, hand the exact body bytes to :class:`IngestService`, shape the answer.

* 200 ``ACCEPTED`` / ``DUPLICATE``; 400 ``REJECTED`` with the reason (the request is quarantined, not
  dropped); 413 ``REJECTED`` for a body over ``MAX_BODY_BYTES`` (its first bytes, size and sha256 are
  quarantined). The body keeps the original kit's fields ``event_id``, ``status``, ``ingest_lag_ms``,
  ``s3_key`` and adds ``event_time``, ``ingest_time``, ``clock_skew``, ``reason``, ``rejection_id``,
  ``dry_run``.
* 503 when a store failed: nothing was acknowledged and a retry of the same request is safe (it ends
  ACCEPTED exactly once). 403 in read-only mode. Errors are ``{"error", "status", "request_id"}``.
* ``DRY_RUN=true``: validate and answer what would happen, write nothing.

Logs are JSON lines (Powertools Logger) naming the event id, status and lag, never the payload, and for a
rejection its reason without the values it quotes (those only at ``LOG_LEVEL=DEBUG``). Metrics are
EMF in namespace ``PipelineInvestigationKit`` with the original kit's names and dimensions: ``IngestCount``,
``DuplicateCount``, ``IngestLagMs`` by ``Function``/``Source``/``Type``, ``InvalidCount`` for rejections;
added: ``DryRunCount`` and ``IngestErrorCount`` (by ``Error``).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from backend.errors import ReadOnlyError, StoreError
from backend.handlers.common import (
    BadEvent,
    StreamedBody,
    api_request,
    error_response,
    get_kit,
    json_response,
    make_logger,
    make_metrics,
    runtime_settings,
)
from backend.identity import sha256_hex
from backend.kit import Kit
from backend.model import MAX_BODY_BYTES, EventRecord, IngestResult, IngestStatus
from backend.services.ingest import QUARANTINE_MAX_BYTES, PreparedBatch, Received
from backend.settings import SettingsError

ORIGIN = "api"
FUNCTION = "ingest"


# The log lines' service name is Powertools' own setting (the template sets it); each line also names the
# function. The metrics carry no service dimension (common.make_metrics).
logger = make_logger()
metrics = make_metrics()


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an API Gateway proxy event in, a proxy response out. Never raises."""
    try:
        request = api_request(event)
    except BadEvent as exc:
        logger.warning("not an API Gateway proxy event", extra={"error": str(exc)})
        _count_error("bad_event")
        return error_response(400, str(exc))
    return _ingest(received_from_body(request.body), request.request_id)


@logger.inject_lambda_context(log_event=False)
@metrics.log_metrics
def handle_streamed(body: StreamedBody, context: LambdaContext) -> dict[str, Any]:
    """For ``pik serve``: a body over ``MAX_BODY_BYTES`` that it streamed rather than held. Answers as
    :func:`handler` does for such a body (413, the first bytes quarantined with the size and sha256)."""
    logger.set_correlation_id(context.aws_request_id)
    received = Received(body.prefix[:QUARANTINE_MAX_BYTES], ORIGIN, size=body.size, sha256=body.sha256)
    return _ingest(received, context.aws_request_id)


def received_from_body(body: bytes) -> Received:
    """The request for ``body``; beyond ``MAX_BODY_BYTES`` only the quarantine prefix is passed on."""
    if len(body) > MAX_BODY_BYTES:
        return Received(body[:QUARANTINE_MAX_BYTES], ORIGIN, size=len(body), sha256=sha256_hex(body))
    return Received(body, ORIGIN)


def _ingest(received: Received, request_id: str | None) -> dict[str, Any]:
    oversized = max(received.size or 0, len(received.body)) > MAX_BODY_BYTES
    try:
        settings = runtime_settings()
        kit = get_kit()
        if kit.read_only:
            raise ReadOnlyError("ingest refused: the kit is in read-only mode")
        service = kit.ingest()
        prepared = service.prepare_batch([received])
        record = prepared.valid[0][2].record() if prepared.valid else None
        summary = prepared.summaries.get(0)
        # A dry run stops after validation and one read; a real one stores (quarantine, raw, index).
        result = _dry_run_result(kit, prepared) if settings.dry_run else service.commit(prepared)[0]
    except ReadOnlyError as exc:
        logger.warning("ingest refused: read-only")
        _count_error("read_only")
        return error_response(403, str(exc), request_id=request_id)
    except SettingsError as exc:
        # The operator's to fix (the log names the variable); nothing was read or written.
        logger.error("the function's settings are invalid; nothing acknowledged", extra={"error": str(exc)})
        _count_error("settings")
        return error_response(
            500,
            "the function is misconfigured (its log says which setting); nothing was acknowledged",
            request_id=request_id,
        )
    except StoreError as exc:
        # The message names the store and what failed (no payload); the caller learns only what to do.
        logger.error("store failed; nothing acknowledged", extra={"error": str(exc)})
        _count_error("store")
        return error_response(
            503,
            "a store is unavailable; nothing was acknowledged and retrying the same request is safe",
            request_id=request_id,
        )
    except Exception:
        logger.exception("ingest failed unexpectedly")
        _count_error("internal")
        return error_response(500, "internal error; retrying the same request is safe", request_id=request_id)
    _observe(result, record, summary, dry_run=settings.dry_run)
    body = result.model_dump(mode="json", exclude={"line"})
    body["dry_run"] = settings.dry_run
    if result.status is IngestStatus.REJECTED:
        return json_response(413 if oversized else 400, body)
    return json_response(200, body)


def _dry_run_result(kit: Kit, prepared: PreparedBatch) -> IngestResult:
    """What ingest would answer, from validation and one read of the index; nothing is written."""
    if not prepared.valid:
        rejection = prepared.rejected[0][1]
        return IngestResult(
            status=IngestStatus.REJECTED, reason=rejection.reason, ingest_time=rejection.received_at
        )
    record = prepared.valid[0][2].record()
    seen = kit.index.get_accepted(record.event_id) is not None
    return IngestResult(
        status=IngestStatus.DUPLICATE if seen else IngestStatus.ACCEPTED,
        event_id=record.event_id,
        ingest_lag_ms=record.ingest_lag_ms,
        s3_key=record.s3_key,
        event_time=record.event_time,
        ingest_time=record.ingest_time,
        clock_skew=record.clock_skew,
    )


def _observe(result: IngestResult, record: EventRecord | None, summary: str | None, *, dry_run: bool) -> None:
    """One log line and the metrics of one answered request (identifiers and numbers only).

    A rejection is logged with its reason less the values it quotes (``summary``): a value sent in the wrong
    field may be a secret. The reason as answered, values and all, is logged at DEBUG only; it is also kept
    with the quarantined bytes (``rejection_id``)."""
    fields = {
        "status": result.status.value,
        "event_id": result.event_id,
        "ingest_lag_ms": result.ingest_lag_ms,
        "clock_skew": result.clock_skew,
        "dry_run": dry_run,
    }
    if result.status is IngestStatus.REJECTED:
        fields.update(rejection_id=result.rejection_id, reason=summary or result.reason)
        if summary is not None and summary != result.reason:
            logger.debug(
                "rejection reason as answered",
                extra={"rejection_id": result.rejection_id, "reason": result.reason},
            )
    logger.info("ingest", extra=fields)
    metrics.add_dimension(name="Function", value=FUNCTION)
    if dry_run:
        metrics.add_metric(name="DryRunCount", unit=MetricUnit.Count, value=1)
        return
    if result.status is IngestStatus.REJECTED or record is None:
        metrics.add_metric(name="InvalidCount", unit=MetricUnit.Count, value=1)
        return
    metrics.add_dimension(name="Source", value=record.source)
    metrics.add_dimension(name="Type", value=record.event_type)
    metrics.add_metric(name="IngestCount", unit=MetricUnit.Count, value=1)
    duplicate = result.status is IngestStatus.DUPLICATE
    metrics.add_metric(name="DuplicateCount", unit=MetricUnit.Count, value=1 if duplicate else 0)
    metrics.add_metric(name="IngestLagMs", unit=MetricUnit.Milliseconds, value=result.ingest_lag_ms or 0)


def _count_error(kind: str) -> None:
    metrics.add_dimension(name="Function", value=FUNCTION)
    metrics.add_dimension(name="Error", value=kind)
    metrics.add_metric(name="IngestErrorCount", unit=MetricUnit.Count, value=1)
