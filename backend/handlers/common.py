"""What the Lambda handlers (and ``pik serve``, which calls the same handlers) share.

* The backend, opened once per process on first use from the environment (``PIK_BACKEND``, the seed's
  resource names) and reused by every invocation; :func:`configure` injects one (tests, ``pik serve``).
* API Gateway proxy events, REST (v1) and HTTP API (v2), read into an :class:`ApiRequest` with the exact
  body bytes (``isBase64Encoded`` decoded).
* JSON responses in the proxy integration's shape.
* The investigation, replay and aggregate ports of the backend (:func:`backend_ports`): the backend's own,
  or on a local workspace the ones in its database, opened here so that no handler imports the console.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent, APIGatewayProxyEventV2

from backend.config import RuntimeSettings
from backend.errors import NotConfigured
from backend.runtime import Backend, open_from_runtime
from backend.settings import WorkspaceSettings, load_settings

NAMESPACE = "PipelineInvestigationKit"
"""CloudWatch namespace of every metric the kit emits (the original kit's)."""
SERVICE = "pipeline-investigation-kit"
"""Powertools' service name when ``POWERTOOLS_SERVICE_NAME`` is not set (the template sets it)."""

_lock = threading.Lock()
_backend: Backend | None = None
_settings: RuntimeSettings | None = None


def configure(backend: Backend | None, settings: RuntimeSettings | None = None) -> None:
    """Use ``backend`` (and ``settings``, else the environment's) for every later invocation.

    ``configure(None)`` forgets both, so the next invocation opens the backend the environment names. The
    caller keeps ownership of the backend it passes (it closes it); nothing here closes a backend.
    """
    global _backend, _settings
    with _lock:
        _backend = backend
        _settings = settings


def runtime_settings() -> RuntimeSettings:
    """The process's settings: those given to :func:`configure`, else read once from the environment."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = RuntimeSettings()
        return _settings


def get_backend() -> Backend:
    """The process's backend, opened on first use and reused (a Lambda environment serves many calls).

    Raises :class:`~backend.errors.StoreError` if it cannot be opened; the next call tries again.
    """
    global _backend
    settings = runtime_settings()
    with _lock:
        if _backend is None:
            _backend = open_from_runtime(settings)
        return _backend


def log_level(name: str | None) -> str:
    """``LOG_LEVEL`` as a level name Python knows; INFO for anything else."""
    level = (name or "INFO").upper()
    return level if isinstance(logging.getLevelName(level), int) else "INFO"


# -- the ports beyond the raw store and the index ------------------------------------------------------------

PORT_NAMES = ("investigate", "catalog", "queue", "audit", "aggregates")


@dataclass(frozen=True, slots=True)
class Ports:
    """The investigation, replay and aggregate stores of one backend; None where it has none."""

    backend: str
    investigate: Any = None
    catalog: Any = None
    queue: Any = None
    audit: Any = None
    aggregates: Any = None

    def need(self, *names: str) -> None:
        """Raise :class:`StoreError` naming the first of ``names`` the backend has no store for."""
        for name in names:
            if getattr(self, name) is None:
                raise NotConfigured(
                    f"the {self.backend} backend has no {name} store configured "
                    "(see the environment names in docs/aws.md)"
                )


def workspace_settings(backend: Backend) -> WorkspaceSettings:
    """A local workspace's ``settings.toml`` (the defaults elsewhere: a stack has no such file).

    Raises :class:`~backend.errors.WorkspaceError` (a StoreError) naming what is wrong with the file.
    """
    if backend.name == "local":
        return load_settings(backend.location)
    return WorkspaceSettings()


def backend_ports(backend: Backend, settings: WorkspaceSettings | None = None) -> Ports:
    """The backend's ports. A local workspace's missing ones are opened on its database
    (:func:`backend.adapters.local.workspace.local_ports`; the queue dead-letters after
    ``settings.queue.max_receives`` receives); they are cheap to open, so nothing is cached."""
    own = {name: getattr(backend, name, None) for name in PORT_NAMES}
    if backend.name == "local" and None in own.values():
        from backend.adapters.local.store import LocalStore
        from backend.adapters.local.workspace import local_ports

        if isinstance(backend.index, LocalStore):
            queue = (settings or WorkspaceSettings()).queue
            local = local_ports(backend.index, max_receives=queue.max_receives)
            own = {name: port if port is not None else getattr(local, name) for name, port in own.items()}
    return Ports(backend.name, **own)


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
