"""The overview Lambda: ``GET /overview?since=YYYY-MM-DD&until=YYYY-MM-DD`` behind API Gateway (REST v1 or
HTTP API v2), and behind ``pik serve``.

Thin on purpose: read the two optional query parameters, ask the overview service, answer its JSON
(``{"first_day", "end_day", "history_from", "findings": [...], "omitted"}``, findings most severe first).
400 names a bad parameter; 503 when a store failed. Reads only, so it answers on a read-only kit too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from backend.errors import InvalidRequest, StoreError
from backend.handlers.common import BadEvent, api_request, error_response, get_kit, json_response, make_logger
from backend.settings import SettingsError

PARAMETERS = ("since", "until")

logger = make_logger()


def _query(event: Mapping[str, Any]) -> dict[str, str]:
    raw = event.get("queryStringParameters") or {}
    if not isinstance(raw, Mapping):
        raise BadEvent("the API Gateway event's query parameters are not an object")
    unknown = sorted(set(raw) - set(PARAMETERS))
    if unknown:
        raise InvalidRequest(f"unknown query parameter {unknown[0]!r}: this endpoint takes since and until")
    return {k: str(v) for k, v in raw.items() if v not in (None, "")}


@logger.inject_lambda_context(log_event=False, correlation_id_path=correlation_paths.API_GATEWAY_REST)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """The Lambda entry point: an API Gateway proxy event in, a proxy response out. Never raises."""
    try:
        request = api_request(event)
        query = _query(event)
    except BadEvent as exc:
        return error_response(400, str(exc))
    except InvalidRequest as exc:
        return error_response(400, str(exc))
    if request.method != "GET":
        return error_response(405, f"{request.method} is not allowed here: use GET")
    try:
        report = get_kit().overview().overview(query.get("since"), query.get("until"))
    except InvalidRequest as exc:
        return error_response(400, str(exc), request_id=request.request_id)
    except SettingsError as exc:
        logger.error("the function's settings are invalid", extra={"error": str(exc)})
        return error_response(500, "the function is misconfigured (its log says which setting)")
    except StoreError as exc:
        return error_response(503, str(exc), request_id=request.request_id)
    except Exception:
        logger.exception("overview failed unexpectedly")
        return error_response(500, "internal error", request_id=request.request_id)
    logger.info("overview", extra={"findings": len(report.findings), "first_day": report.first_day})
    return json_response(200, report.model_dump(mode="json"))
