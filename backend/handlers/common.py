"""What the Lambda handlers (and ``pik serve``, which calls the same handlers) share.

* The kit (backend.kit), opened once per process on first use from the settings (``PIK_BACKEND``, the
  seed's resource names) and reused by every invocation; :func:`configure` injects one (tests, ``pik serve``).
* API Gateway proxy events, REST (v1) and HTTP API (v2), read into an :class:`ApiRequest` with the exact
  body bytes (``isBase64Encoded`` decoded).
* JSON responses in the proxy integration's shape.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, APIGatewayProxyEventV2

from backend.kit import Kit, open_kit
from backend.settings import Settings, load_settings

NAMESPACE = "PipelineInvestigationKit"
"""CloudWatch namespace of every metric the kit emits (the original kit's)."""
SERVICE = "pipeline-investigation-kit"
"""The Logger's service name when ``POWERTOOLS_SERVICE_NAME`` is not set (the template sets it). Log lines
only: metrics carry no service dimension (see :func:`make_metrics`)."""

_lock = threading.Lock()
_kit: Kit | None = None
_settings: Settings | None = None


def configure(kit: Kit | None, settings: Settings | None = None) -> None:
    """Use ``kit`` (and ``settings``, else the environment's) for every later invocation.

    ``configure(None)`` forgets both, so the next invocation opens the backend the environment names. The
    caller keeps ownership of the kit it passes (it closes it); nothing here closes one.
    """
    global _kit, _settings
    with _lock:
        _kit = kit
        _settings = settings


def runtime_settings() -> Settings:
    """The process's settings: those given to :func:`configure`, else read once from the environment (the
    backend is ``aws`` unless ``PIK_BACKEND`` says otherwise). Raises SettingsError for an invalid value."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = load_settings(default_backend="aws")
        return _settings


def get_kit() -> Kit:
    """The process's backend, opened on first use and reused (a Lambda environment serves many calls);
    read-only when either it was opened so or the settings say so.

    Raises :class:`~backend.errors.StoreError` if it cannot be opened; the next call tries again.
    """
    global _kit
    settings = runtime_settings()
    with _lock:
        if _kit is None:
            _kit = open_kit(settings, create=True)
        if settings.read_only and not _kit.read_only:
            _kit = dataclasses.replace(_kit, read_only=True)
        return _kit


def log_level(name: str | None) -> str:
    """``LOG_LEVEL`` as a level name Python knows; INFO for anything else."""
    level = (name or "INFO").upper()
    return level if isinstance(logging.getLevelName(level), int) else "INFO"


def make_logger() -> Logger:
    """The handlers' Powertools Logger (JSON lines): the service name from ``POWERTOOLS_SERVICE_NAME``
    (the template sets it), else the kit's; the level from ``LOG_LEVEL``. A logger is made when its module
    is imported, before any invocation can answer, so an unknown level logs at INFO here (the settings tree
    reports it as invalid at the first invocation) rather than failing the function's start."""
    return Logger(
        service=os.environ.get("POWERTOOLS_SERVICE_NAME") or SERVICE,
        level=log_level(os.environ.get("LOG_LEVEL")),
    )


def make_metrics() -> Metrics:
    """The handlers' Powertools Metrics: EMF in :data:`NAMESPACE`, dimensioned only by what a handler adds
    (``Function``; ``Source`` and ``Type`` on ingest's counts), whatever the environment says.

    Powertools adds a ``service`` dimension to every metric when it knows a service name, and it reads one
    from ``POWERTOOLS_SERVICE_NAME``, which the template sets for the Logger. CloudWatch keys a metric by its
    whole dimension set, so alarms and dashboards on the original kit's ``[Function, Source, Type]`` and
    ``[Function]`` (the template's own alarm on ``ProcessorErrorCount`` among them) would match nothing. An
    explicit empty service wins over the environment and turns that dimension off. The namespace is explicit
    for the same reason: ``POWERTOOLS_METRICS_NAMESPACE`` cannot move the metrics elsewhere."""
    return Metrics(namespace=NAMESPACE, service="")


# -- requests ---------------------------------------------------------------------------------------------


class BadEvent(ValueError):
    """The Lambda event is not an API Gateway proxy event this kit can read."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """One HTTP request as API Gateway delivered it."""

    method: str
    path: str
    body: bytes
    request_id: str | None = None
    source_ip: str | None = None


@dataclass(frozen=True, slots=True)
class StreamedBody:
    """A request body too large to hold, as a server that streamed it saw it (``pik serve``): its first
    bytes, and the whole body's size and sha256."""

    prefix: bytes
    size: int
    sha256: str


def api_request(event: Any) -> ApiRequest:
    """Read a REST API (v1) or HTTP API (v2) proxy event. Raises :class:`BadEvent`."""
    if not isinstance(event, Mapping) or not isinstance(event.get("requestContext"), Mapping):
        raise BadEvent("expected an API Gateway proxy event (REST v1 or HTTP API v2)")
    data = dict(event)
    try:
        if data.get("version") == "2.0" or "http" in data["requestContext"]:
            v2 = APIGatewayProxyEventV2(data)
            method, path = v2.http_method, v2.path
            source_ip = v2.request_context.http.source_ip
            request_id = v2.request_context.request_id
            proxy: APIGatewayProxyEvent | APIGatewayProxyEventV2 = v2
        else:
            v1 = APIGatewayProxyEvent(data)
            method, path = v1.http_method, v1.path
            source_ip = v1.request_context.identity.source_ip
            request_id = v1.request_context.request_id
            proxy = v1
    except (KeyError, TypeError, AttributeError):
        raise BadEvent("the API Gateway event lacks its method, path or request context") from None
    return ApiRequest(
        method=str(method).upper(),
        path=str(path),
        body=_body_bytes(proxy.body, bool(proxy.is_base64_encoded)),
        request_id=request_id if isinstance(request_id, str) else None,
        source_ip=source_ip if isinstance(source_ip, str) else None,
    )


def _body_bytes(body: Any, is_base64: bool) -> bytes:
    # Not the data class's ``decoded_body``: that decodes to text and fails on bytes that are not UTF-8,
    # which ingest must receive exactly as sent (to quarantine them with the reason).
    if body is None:
        return b""
    if not isinstance(body, str):
        raise BadEvent("the API Gateway event's body is not a string")
    if is_base64:
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise BadEvent(
                "the API Gateway event's body is marked isBase64Encoded but is not base64"
            ) from None
    # A JSON event can carry lone surrogates (\ud800); keep them as the bytes they stand for, so the
    # request is rejected as not UTF-8 rather than failing here.
    return body.encode("utf-8", "surrogatepass")


# -- responses --------------------------------------------------------------------------------------------


def json_response(
    status_code: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """A proxy integration response with a JSON body (ASCII-escaped: valid whatever the data held)."""
    return {
        "statusCode": status_code,
        "headers": {"Content-Type": "application/json", **(headers or {})},
        "body": json.dumps(body, ensure_ascii=True, separators=(",", ":")),
        "isBase64Encoded": False,
    }


def error_response(status_code: int, message: str, **extra: Any) -> dict[str, Any]:
    """``{"error": message, "status": status_code, ...}``: what every kit endpoint answers on an error."""
    return json_response(status_code, {"error": message, "status": status_code, **extra})
