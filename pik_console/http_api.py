"""The HTTP server behind ``pik serve``: routes requests to the Lambda handlers themselves.

Each request becomes an API Gateway REST (v1) proxy event and goes to the same function that Lambda calls
(``backend.handlers.ingest.handler`` for ``POST /ingest``, ``backend.handlers.replay.handler`` for
``POST /replay``), on a local workspace or an AWS stack. What the handler answers is what the client gets,
so a producer tested against ``pik serve`` meets no surprise in AWS.

The server itself answers what API Gateway would answer before a function runs, as JSON
``{"error": ..., "status": ...}``: 401 (with ``WWW-Authenticate: Bearer``) when a token is required and the
request lacks it, 404 for an unknown path, 405 (with ``Allow``) for a wrong method, 411 for a body without
``Content-Length`` (chunked transfer encoding included), 413 for a body over API Gateway's own 10 MiB limit
(unread). A body between ``MAX_BODY_BYTES`` and that limit is streamed (never held whole) to the route's
streamed-body handler, which quarantines its first bytes, as the Lambda function does.

With a token, every request must carry ``Authorization: Bearer <token>``; the header is checked
(``hmac.compare_digest``) before the body is read or any handler runs, so a refused request stores nothing,
and it is not passed on to the handlers. Where the token comes from, and when one is required, is the
command's business (``pik_console.cli.serve``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import ipaddress
import json
import re
import socket
import socketserver
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from backend.model import MAX_BODY_BYTES
from pik_console.text import safe

MAX_STREAMED_BYTES = 10 * 1024 * 1024
"""API Gateway's payload limit: a larger body is refused unread, before any function runs."""
READ_CHUNK = 64 * 1024
QUARANTINE_PREFIX_BYTES = 64 * 1024  # what a streamed body keeps; the ingest service keeps at most this
LINGER_SECONDS = 1.0
LINGER_MAX_BYTES = 16 * 1024 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")  # an HTTP method is a token (RFC 9110)
_DIGITS = re.compile(r"[0-9]+")  # str.isdigit() also takes "²", which int() refuses
_REALM = 'Bearer realm="pik serve"'

LambdaHandler = Callable[[dict[str, Any], Any], dict[str, Any]]
StreamedHandler = Callable[[Any, Any], dict[str, Any]]


@dataclass(frozen=True)
class Route:
    """One endpoint: the Lambda handler that answers it, and what to call with a body too large to hold."""

    method: str
    path: str
    handler: LambdaHandler
    function_name: str
    streamed: StreamedHandler | None = None
    """Called with a :class:`backend.handlers.common.StreamedBody` for a body over ``MAX_BODY_BYTES`` (up to
    ``MAX_STREAMED_BYTES``); without it such a body gets a plain 413."""


def default_routes() -> list[Route]:
    """The kit's API, as the SAM template routes it to the Lambda functions."""
    from backend.handlers import ingest, overview, replay

    return [
        Route("POST", "/ingest", ingest.handler, "ingest", streamed=ingest.handle_streamed),
        Route("POST", "/replay", replay.handler, "replay"),
        Route("GET", "/overview", overview.handler, "overview"),
    ]


@dataclass
class LocalContext:
    """The parts of a Lambda context object that the handlers (and Powertools) read."""

    function_name: str
    aws_request_id: str
    memory_limit_in_mb: int = 128
    invoked_function_arn: str = ""
    function_version: str = "$LATEST"
    log_group_name: str = "pik-serve"
    log_stream_name: str = "local"
    _deadline: float = field(default_factory=lambda: time.monotonic() + 30.0)

    def __post_init__(self) -> None:
        if not self.invoked_function_arn:
            self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return max(int((self._deadline - time.monotonic()) * 1000), 0)


class ApiServer(ThreadingHTTPServer):
    """Routes requests to Lambda handlers, one invocation at a time.

    Connections are read on their own threads, but the handlers run on a single worker thread, as in one
    Lambda execution environment: Powertools keeps its metrics buffer and log keys per process, and the
    local store keeps one database connection per thread that calls it.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], routes: list[Route], token: str | None = None) -> None:
        """``token``: when given, every request must carry ``Authorization: Bearer <token>``."""
        self._token = token.encode("ascii") if token is not None else None
        self.routes: dict[str, dict[str, Route]] = {}
        for route in routes:
            self.routes.setdefault(route.path, {})[route.method] = route
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pik-serve-invoke")
        super().__init__(address, _RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn), which can stall without DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def requires_token(self) -> bool:
        return self._token is not None

    def authorized(self, header: str) -> bool:
        """Whether an ``Authorization`` header value carries the token (constant-time comparison)."""
        if self._token is None:
            return True
        scheme, _, credentials = header.strip().partition(" ")
        presented = credentials.strip().encode("utf-8", "surrogatepass")
        # Compare even when the scheme is wrong, so that the answer takes as long either way.
        matches = hmac.compare_digest(presented, self._token)
        return matches and scheme.lower() == "bearer"

    @property
    def url(self) -> str:
        host = self.server_name
        return f"http://[{host}]:{self.server_port}" if ":" in host else f"http://{host}:{self.server_port}"

    def invoke(
        self, function: Callable[[Any, Any], dict[str, Any]], event: Any, context: Any
    ) -> dict[str, Any]:
        return self._worker.submit(function, event, context).result()

    def server_close(self) -> None:
        super().server_close()
        self._worker.shutdown(wait=True, cancel_futures=True)


@dataclass(frozen=True)
class _Refusal:
    status: int
    message: str
    headers: Mapping[str, str] = field(default_factory=dict)


class _RequestHandler(BaseHTTPRequestHandler):
    server: ApiServer
    protocol_version = "HTTP/1.1"
    server_version = "pik-serve"
    timeout = 60  # a client that stops sending mid-request does not hold its thread for ever

    _responded = False

    def version_string(self) -> str:
        return self.server_version

    # Every method goes through one dispatcher, so that a method no route has gets 405, not 501.
    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _dispatch(self) -> None:
        self._responded = False
        if not _TOKEN.fullmatch(self.command):
            self.send_error(400, "bad request method")
            return
        try:
            self._serve()
        except (ConnectionError, TimeoutError):
            self.close_connection = True  # the client went away; nobody is left to answer
        except Exception:
            self.close_connection = True
            # The traceback goes to the server's console only; its lines may quote request data.
            lines = [safe(line) for line in traceback.format_exc().splitlines()]
            self.log_error("%s", "request failed:\n" + "\n".join(lines))
            if not self._responded:
                with contextlib.suppress(OSError):
                    self._send_json(
                        500, {"error": "internal error in pik serve (see its console)", "status": 500}
                    )

    def _serve(self) -> None:
        checked = self._check()
        if isinstance(checked, _Refusal):
            self._refuse(checked)
            return
        route, length = checked
        request_id = str(uuid.uuid4())
        context = LocalContext(function_name=f"pik-serve-{route.function_name}", aws_request_id=request_id)
        if length > MAX_BODY_BYTES:
            assert route.streamed is not None  # _check refused the others
            streamed = self._stream_body(length)
            if streamed is None:
                return
            response = self.server.invoke(route.streamed, streamed, context)
        else:
            body = self.rfile.read(length) if length else b""
            if len(body) < length:  # the client hung up mid-body
                self.close_connection = True
                return
            response = self.server.invoke(route.handler, self._event(route, body, request_id), context)
        self._send_lambda_response(response, request_id)

    def _check(self) -> tuple[Route, int] | _Refusal:
        """The route and body length of this request, or why the server refuses it before any handler.

        Authorization comes first: a client without the token learns nothing of the routes, and its body
        is never read (nor, with ``Expect: 100-continue``, even sent)."""
        refusal = self._check_authorization()
        if refusal is not None:
            return refusal
        route = self._find_route()
        if isinstance(route, _Refusal):
            return route
        length = self._body_length(route)
        if isinstance(length, _Refusal):
            return length
        return route, length

    def _check_authorization(self) -> _Refusal | None:
        """401 when a token is required and the request does not carry it in one ``Authorization``."""
        if not self.server.requires_token:
            return None
        credentials = self.headers.get_all("Authorization") or []
        if not credentials:
            return _Refusal(
                401,
                "this server requires a bearer token: send the header Authorization: Bearer <token>",
                {"WWW-Authenticate": _REALM},
            )
        if len(credentials) != 1 or not self.server.authorized(credentials[0]):
            return _Refusal(
                401,
                "the bearer token is not valid",
                {"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
            )
        return None

    def _find_route(self) -> Route | _Refusal:
        """The route of this path and method: 404 for an unknown path, 405 for a method it does not take."""
        path = urlsplit(self.path).path
        methods = self.server.routes.get(path)
        if not methods:
            return _Refusal(
                404, f"no endpoint {path}; this server has {', '.join(sorted(self.server.routes))}"
            )
        route = methods.get(self.command)
        if route is None:
            allow = ", ".join(sorted(methods))
            return _Refusal(405, f"{self.command} is not allowed on {path}; use {allow}", {"Allow": allow})
        return route

    def _body_length(self, route: Route) -> int | _Refusal:
        """The body's length from ``Content-Length``: 411 without one (chunked included) where a body is
        expected, 400 when it is not one plain number, 413 over what ``route`` takes."""
        if self.headers.get("Transfer-Encoding"):
            return _Refusal(
                411, "send the body with a Content-Length (chunked transfer encoding is not supported)"
            )
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            if self.command in BODY_METHODS:
                return _Refusal(411, "Content-Length is required")
            return 0
        text = lengths[0].strip()
        if len(set(lengths)) != 1 or not _DIGITS.fullmatch(text):
            return _Refusal(400, "invalid Content-Length")
        digits = text.lstrip("0")
        # More digits than int() reads (4,300) is still just a number over the limit.
        length = int(digits or "0") if len(digits) <= 20 else sys.maxsize
        limit = MAX_STREAMED_BYTES if route.streamed is not None else MAX_BODY_BYTES
        if length > limit:
            return _Refusal(
                413, f"request body is {length:,} bytes; the limit is {MAX_BODY_BYTES:,} bytes (1 MiB)"
            )
        return length

    def handle_expect_100(self) -> bool:
        # Ask for the body only when it will be read; otherwise the refusal comes before the client sends it.
        if isinstance(self._check(), _Refusal):
            return True
        return super().handle_expect_100()

    def _stream_body(self, length: int) -> Any:
        """Read a body too large to hold: keep its first bytes, hash all of it. None if the client left."""
        from backend.handlers.common import StreamedBody

        digest = hashlib.sha256()
        prefix = bytearray()
        remaining = length
        while remaining:
            chunk = self.rfile.read(min(READ_CHUNK, remaining))
            if not chunk:
                self.close_connection = True
                return None
            digest.update(chunk)
            if len(prefix) < QUARANTINE_PREFIX_BYTES:
                prefix += chunk[: QUARANTINE_PREFIX_BYTES - len(prefix)]
            remaining -= len(chunk)
        return StreamedBody(bytes(prefix), length, digest.hexdigest())

    def _event(self, route: Route, body: bytes, request_id: str) -> dict[str, Any]:
        """The API Gateway REST (v1) proxy event for this request."""
        url = urlsplit(self.path)
        headers, multi_headers = self._forwarded_headers()
        query = parse_qs(url.query, keep_blank_values=True)
        text, encoded = _event_body(body)
        now = datetime.now(UTC)
        return {
            "resource": route.path,
            "path": url.path,
            "httpMethod": self.command,
            "headers": headers,
            "multiValueHeaders": multi_headers,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": None,
            "stageVariables": None,
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "pik-serve",
                "domainName": self.headers.get("Host", self.server.server_name),
                "httpMethod": self.command,
                "identity": {"sourceIp": self.client_address[0], "userAgent": self.headers.get("User-Agent")},
                "path": url.path,
                "protocol": self.request_version,
                "requestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "resourcePath": route.path,
                "stage": "local",
            },
            "body": text,
            "isBase64Encoded": encoded,
        }

    def _forwarded_headers(self) -> tuple[dict[str, str], dict[str, list[str]]]:
        """The request's headers as the event carries them (last value, and every value), without the
        ``Authorization`` header when it holds the server's token."""
        headers: dict[str, str] = {}
        multi_headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            if self.server.requires_token and name.lower() == "authorization":
                continue  # the server's credential, not the function's: kept out of what it may log
            headers[name] = value
            multi_headers.setdefault(name, []).append(value)
        return headers, multi_headers

    # -- answering ----------------------------------------------------------------------------------------

    def _send_lambda_response(self, response: Mapping[str, Any], request_id: str) -> None:
        body = response.get("body") or ""
        data = base64.b64decode(body) if response.get("isBase64Encoded") else str(body).encode("utf-8")
        headers = {str(k): str(v) for k, v in (response.get("headers") or {}).items()}
        headers.setdefault("x-amzn-RequestId", request_id)
        self._send(int(response.get("statusCode", 200)), headers, data)

    def _refuse(self, refusal: _Refusal) -> None:
        unread = (
            bool(self.headers.get("Transfer-Encoding"))
            or (self.headers.get("Content-Length") or "0").strip() != "0"
        )
        if unread:
            # The body stays unread, so this connection cannot carry another request.
            self.close_connection = True
        self._send_json(refusal.status, {"error": refusal.message, "status": refusal.status}, refusal.headers)
        if unread:
            self._linger()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # What http.server answers on its own (malformed request line, header too long...): JSON too.
        self.close_connection = True
        text = message or self.responses.get(code, ("error",))[0]
        self._send_json(code, {"error": text, "status": code})

    def _send_json(
        self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
    ) -> None:
        data = json.dumps(body, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        self._send(status, {"Content-Type": "application/json", **(headers or {})}, data)

    def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a status line and headers all the same
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in ("content-length", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self._responded = True

    def _linger(self) -> None:
        # Closing a socket that still holds unread request bytes resets the connection, and the client may
        # then lose the answer. Stop sending and swallow what it still sends, for a moment.
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(LINGER_SECONDS)
            deadline = time.monotonic() + LINGER_SECONDS
            swallowed = 0
            while time.monotonic() < deadline and swallowed < LINGER_MAX_BYTES:
                chunk = self.connection.recv(READ_CHUNK)
                if not chunk:
                    break
                swallowed += len(chunk)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Without the query string: no endpoint takes one, and a client that put a credential there
        # (?access_token=...) must not find it in the server's log.
        method, _, rest = self.requestline.partition(" ")
        target, sep, version = rest.partition(" ")
        if "?" in target:
            target = target.split("?", 1)[0] + "?…"
        line = f"{method} {target}{sep}{version}" if rest else method
        self.log_message('"%s" %s %s', line, getattr(code, "value", code), size)

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines are untrusted: escape control characters before they reach a terminal.
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = "\n".join(safe(line) for line in (format % args).split("\n"))
        sys.stderr.write(f"{stamp} {self.address_string()} {text}\n")


def _event_body(body: bytes) -> tuple[str | None, bool]:
    """The event's ``body`` and ``isBase64Encoded``: None for no body, UTF-8 as text, other bytes base64."""
    try:
        text: str | None = body.decode("utf-8") if body else None
        encoded = False
    except UnicodeDecodeError:
        text, encoded = base64.b64encode(body).decode("ascii"), True
    return text, encoded


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a loopback address: reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
