"""The replay Lambda: ``POST /replay`` behind API Gateway (REST v1 or HTTP API v2), and behind ``pik serve``.

Thin on purpose: read the event, answer the body with :func:`api_reply` (the replay service's outcomes as HTTP
statuses), shape the answer.

* The request is the seed's (``entity_id``, ``start_time``, ``end_time``, ``limit``, ``include_duplicates``)
  or a source/type scope (see :class:`backend.model.ReplayRequest`), plus optional ``dry_run`` (preview
  only), ``force`` (over the size guard) and ``expected_fingerprint`` (send only the previewed plan).
* As in the seed, the request sends unless ``DRY_RUN=true`` or the request says ``"dry_run": true``; then
  it answers the plan and sends nothing. Above the size guard (1000 messages) nothing is sent without
  ``"force": true`` (409 with the plan).
* 200 with the seed's ``entity_id``, ``scanned``, ``sent`` plus the plan (dry run) or the audit record
  (sent); 400 with the reason for a bad request; 409 refused (nothing sent); 403 read-only (a dry run is
  still answered); 503 when a store failed. Errors are ``{"error", "status", "request_id", ...}``.
* Every replay, dry or sent, is audited with the caller: the IAM identity API Gateway saw (user or role ARN
  of a SigV4-signed request), else ``api``.

Logs are JSON lines with the replay id, counts and outcome, never a payload. Metrics are EMF in namespace
``PipelineInvestigationKit`` by ``Function``: ``ReplayRequestedCount`` (every request) and
``ReplayMessageCount`` (messages sent), the original kit's; added: ``ReplayFailedMessageCount``,
``DryRunCount``, ``ReplayRefusedCount`` and ``ReplayErrorCount`` (4xx and 5xx but 409).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from backend.errors import InvalidRequest, NotConfigured, ReadOnlyError, StoreError
from backend.handlers.common import (
    BadEvent,
    api_request,
    error_response,
    get_kit,
    json_response,
    make_logger,
    make_metrics,
    runtime_settings,
)
from backend.kit import Kit
from backend.model import ReplayRequest
from backend.services.replay import AuditNotFinished, ReplayRefused, ReplayService
from backend.services.replay_json import plan_response, result_response
from backend.settings import SettingsError
from backend.strictjson import DuplicateKey, unique_keys

FUNCTION = "replay"
ANONYMOUS = "api"
"""The actor of a request that carries no caller identity (``pik serve``, an API without IAM auth)."""
MAX_ACTOR = 256

logger = make_logger()
metrics = make_metrics()


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
@metrics.log_metrics
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an API Gateway proxy event in, a proxy response out. Never raises."""
    metrics.add_dimension(name="Function", value=FUNCTION)
    metrics.add_metric(name="ReplayRequestedCount", unit=MetricUnit.Count, value=1)
    try:
        request = api_request(event)
    except BadEvent as exc:
        logger.warning("not an API Gateway proxy event", extra={"error": str(exc)})
        _count("ReplayErrorCount")
        return error_response(400, str(exc))
    actor = caller_identity(event)
    dry_run = False
    try:
        settings = runtime_settings()
        dry_run = settings.dry_run
        service = replay_service(get_kit())
        status, body = api_reply(service, request.body, actor=actor, dry_run=dry_run)
    except SettingsError as exc:  # the operator's to fix; the log names the variable
        logger.error("the function's settings are invalid; nothing sent", extra={"error": str(exc)})
        _count("ReplayErrorCount")
        return error_response(
            500,
            "the function is misconfigured (its log says which setting); nothing was sent",
            request_id=request.request_id,
        )
    except StoreError as exc:  # the backend or a port could not be opened
        status, body = 503, {"error": str(exc)}
    except Exception:
        logger.exception("replay failed unexpectedly", extra={"actor": actor})
        _count("ReplayErrorCount")
        return error_response(500, "internal error; nothing more was sent", request_id=request.request_id)
    _observe(status, body, actor=actor, dry_run=dry_run)
    if status != 200:
        body = {**body, "status": status, "request_id": request.request_id}
    return json_response(status, body)


def replay_service(kit: Kit) -> ReplayService:
    """The replay service over ``kit``'s ports; NotConfigured (a StoreError) if it lacks one a replay needs
    (the queue only to send: the service says so then)."""
    return kit.replay()


def _shown(value: Any) -> str:
    """A short description of a JSON value for an error message (a nested one is not printed: it can be
    deep enough that printing it fails)."""
    if isinstance(value, dict | list):
        return "an object" if isinstance(value, dict) else "an array"
    return f"{value!r:.40}"


def api_reply(
    service: ReplayService, body: Any, *, actor: str, dry_run: bool = False
) -> tuple[int, dict[str, Any]]:
    """Answer a replay API request (a JSON object): ``(HTTP status, body)``.

    The request is the seed's, plus optional ``force`` (over the size guard) and ``expected_fingerprint``; a
    body that names a key twice is refused (which of the two counts is a guess).
    A dry run when ``dry_run`` (the DRY_RUN setting) or the request's own ``dry_run`` is true. 200 with the
    plan or the result; 400 for an invalid request; 409 when refused (nothing sent); 403 read-only;
    503 when a store failed.
    """
    if isinstance(body, bytes | str):
        try:
            body = json.loads(body or "{}", object_pairs_hook=unique_keys)
        except DuplicateKey as exc:
            # Parsers disagree on which of two values counts: "force": false, "force": true must not send.
            return 400, {"error": f"the request body has the key {exc.key!r:.60} more than once"}
        except ValueError as exc:
            return 400, {"error": f"the request body is not JSON: {exc}"}
        except RecursionError:  # arrays in arrays, thousands deep: no replay request looks like that
            return 400, {"error": "the request body is not a replay request: it is nested too deeply"}
    if not isinstance(body, dict):
        return 400, {"error": "the request body must be a JSON object"}
    fields = dict(body)
    for flag in ("force", "dry_run"):
        # A flag that is not a JSON boolean ("true", 1) is refused: guessing could send a replay that was
        # meant as a preview, or force one past the size guard.
        if flag in fields and not isinstance(fields[flag], bool):
            return 400, {
                "error": f"{flag}: must be true or false (a JSON boolean), got {_shown(fields[flag])}"
            }
    force = fields.pop("force", False)
    expected = fields.pop("expected_fingerprint", None)
    if expected is not None and not isinstance(expected, str):
        return 400, {"error": "expected_fingerprint: must be a string (the fingerprint of a preview)"}
    wants_dry_run = fields.pop("dry_run", False)
    try:
        request = ReplayRequest.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'request'}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        return 400, {"error": problems}
    try:
        if dry_run or wants_dry_run:
            return 200, plan_response(service.plan(request, actor=actor))
        return 200, result_response(
            service.execute(
                request,
                actor=actor,
                force=force,
                expected_fingerprint=expected,
            )
        )
    except AuditNotFinished as exc:
        # Sent: the caller must not be told otherwise (a retry would send it all again).
        return 200, {**result_response(exc.audit), "warning": str(exc)}
    except ReplayRefused as exc:
        return 409, {"error": str(exc), **plan_response(exc.plan), "dry_run": False}
    except InvalidRequest as exc:
        return 400, {"error": str(exc)}
    except ReadOnlyError as exc:
        return 403, {"error": str(exc)}
    except NotConfigured as exc:  # names the missing setting, for whoever deployed it
        return 503, {"error": str(exc)}
    except StoreError:
        # The store's own message names tables and buckets: it goes to the log (the caller logs it), not
        # to the API caller.
        return 503, {"error": "a store is unavailable; nothing more was sent (see the audit trail)"}


def caller_identity(event: Any) -> str:
    """Who made the request, for the audit trail: the caller API Gateway authenticated, else ``api``.

    REST APIs (v1) with IAM auth give ``identity.userArn`` (and ``caller``, ``user``); HTTP APIs (v2) give
    ``authorizer.iam.userArn`` (and ``callerId``, ``userId``); a JWT authorizer the token's ``username`` or
    ``sub``; a Lambda authorizer of a REST API its ``principalId``. The first printable one is taken.
    """
    context = event.get("requestContext") if isinstance(event, Mapping) else None
    if not isinstance(context, Mapping):
        return ANONYMOUS
    candidates: list[Any] = []
    identity = context.get("identity")
    if isinstance(identity, Mapping):
        candidates += [identity.get("userArn"), identity.get("caller"), identity.get("user")]
    authorizer = context.get("authorizer")
    if isinstance(authorizer, Mapping):
        iam = authorizer.get("iam")
        if isinstance(iam, Mapping):
            candidates += [iam.get("userArn"), iam.get("callerId"), iam.get("userId")]
        jwt = authorizer.get("jwt")
        claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
        if isinstance(claims, Mapping):
            candidates += [claims.get("username"), claims.get("sub")]
        candidates.append(authorizer.get("principalId"))
    for value in candidates:
        if isinstance(value, str) and (text := value.strip()) and text.isprintable():
            return text[:MAX_ACTOR]
    return ANONYMOUS


def _observe(status: int, body: Mapping[str, Any], *, actor: str, dry_run: bool) -> None:
    """One log line and the metrics of one answered request (ids, counts and the outcome only)."""
    sent = body.get("sent") if status == 200 else 0
    fields: dict[str, Any] = {
        "http_status": status,
        "actor": actor,
        "replay_id": body.get("replay_id"),
        "dry_run": bool(body.get("dry_run", dry_run)),
        "outcome": body.get("outcome"),
        "entity_id": body.get("entity_id"),
        "scanned": body.get("scanned"),
        "would_send": body.get("would_send"),
        "sent": sent,
        "failed": body.get("failed"),
    }
    if status != 200:
        fields["error"] = body.get("error")
    if status >= 500:
        logger.error("replay", extra=fields)
    elif status >= 400:
        logger.warning("replay", extra=fields)
    else:
        logger.info("replay", extra=fields)
    metrics.add_metric(name="ReplayMessageCount", unit=MetricUnit.Count, value=sent or 0)
    if status == 200 and fields["dry_run"]:
        _count("DryRunCount")
    if status == 200 and body.get("failed"):
        metrics.add_metric(name="ReplayFailedMessageCount", unit=MetricUnit.Count, value=body["failed"])
    if status == 409:
        _count("ReplayRefusedCount")
    elif status != 200:
        _count("ReplayErrorCount")


def _count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)
