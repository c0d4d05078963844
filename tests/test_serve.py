"""`pik serve`: the Lambda handlers behind a local HTTP server. Most tests run a server in a thread (fast);
one runs `pik serve` as a user does and stops it with Ctrl-C."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backend.handlers import common
from backend.kit import Kit, open_local
from backend.model import MAX_BODY_BYTES
from backend.services.ingest import QUARANTINE_MAX_BYTES
from pik_console.http_api import MAX_STREAMED_BYTES, ApiServer, Route, default_routes
from tests.conftest import make_event

ROOT = Path(__file__).resolve().parents[1]

# The body of the seed's curl example for POST /ingest, byte for byte.
SEED_BODY = b"""{
    "source":"demo",
    "event_type":"heartbeat",
    "entity_id":"user_123",
    "event_time":"2025-12-28T23:59:59Z",
    "payload":{"steps":10}
  }"""
SEED_EVENT_ID = "bd10f9014e165b6d52271772b19788bb4a54b0f28cac6990d0d91bf2c9d643c0"


class Running:
    """A server on a free port, serving from a thread."""

    def __init__(self, routes: list[Route]) -> None:
        self.server = ApiServer(("127.0.0.1", 0), routes)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.start()
        self.url = self.server.url
        self.port = self.server.server_port

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def running(backend: Kit) -> Iterator[Running]:
    server = Running(default_routes())
    try:
        yield server
    finally:
        server.stop()


def post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def raw_exchange(port: int, data: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    """Send raw bytes on a new connection; read one response (status, headers, JSON body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while b"\r\n\r\n" not in received:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before a response: {received!r}"
            received += chunk
        head, _, rest = received.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk
            rest += chunk
        return status, headers, json.loads(rest[:length])


# -- the seed's example ----------------------------------------------------------------------------------


def test_the_seed_curl_example_is_accepted_then_a_duplicate(running: Running, backend: Kit) -> None:
    status, headers, body = post(running.url + "/ingest", SEED_BODY)
    assert (status, body["status"], body["event_id"]) == (200, "ACCEPTED", SEED_EVENT_ID)
    assert {"event_id", "status", "ingest_lag_ms", "s3_key"} <= body.keys()
    assert headers["Content-Type"] == "application/json" and headers["x-amzn-RequestId"]
    assert backend.raw.get(body["s3_key"]) == SEED_BODY

    status, _, body = post(running.url + "/ingest", SEED_BODY)
    assert (status, body["status"]) == (200, "DUPLICATE")
    assert backend.index.stats().accepted == 1 and backend.index.stats().duplicate == 1


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_seed_curl_command_itself(running: Running, backend: Kit) -> None:
    done = subprocess.run(
        ["curl", "-sS", "-X", "POST", running.url + "/ingest", "-H", "Content-Type: application/json", "-d",
         SEED_BODY.decode(), "-w", "\n%{http_code}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    text, _, code = done.stdout.rpartition("\n")
    assert code == "200"
    assert json.loads(text)["status"] == "ACCEPTED"
    # curl -d sends the text as given (newlines and all): the stored bytes are the example's.
    assert backend.raw.get(json.loads(text)["s3_key"]) == SEED_BODY


def test_invalid_input_is_400_rejected_and_quarantined(running: Running, backend: Kit) -> None:
    status, _, body = post(running.url + "/ingest", b'{"source": "demo"')
    assert (status, body["status"]) == (400, "REJECTED")
    assert body["reason"].startswith("invalid JSON")
    assert backend.index.get_rejection(body["rejection_id"]) is not None


def test_non_utf8_bytes_reach_the_handler_exactly(running: Running, backend: Kit) -> None:
    raw = b'{"source":"\xff\xfe"}'
    status, _, body = post(running.url + "/ingest", raw)
    assert (status, body["status"]) == (400, "REJECTED") and "not UTF-8" in body["reason"]
    rejection = backend.index.get_rejection(body["rejection_id"])
    assert rejection is not None and rejection.data == raw


def test_keep_alive_connections_carry_several_requests(running: Running, backend: Kit) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    try:
        for i in range(3):
            conn.request("POST", "/ingest", body=make_event(entity_id=f"user_{i}"))
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read())["status"] == "ACCEPTED"
    finally:
        conn.close()
    assert backend.index.stats().accepted == 3


# -- what the server answers itself -----------------------------------------------------------------------


def test_unknown_path_is_a_json_404(running: Running) -> None:
    status, headers, body = post(running.url + "/nowhere", b"{}")
    assert status == 404 and body["status"] == 404 and "/nowhere" in body["error"]
    assert headers["Content-Type"] == "application/json"


def test_wrong_method_is_a_json_405_with_allow(running: Running) -> None:
    for method in ("GET", "DELETE", "BREW"):
        conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
        conn.request(method, "/ingest")
        response = conn.getresponse()
        body = json.loads(response.read())
        conn.close()
        assert response.status == 405 and response.getheader("Allow") == "POST"
        assert body["status"] == 405 and method in body["error"]


def test_a_post_without_content_length_is_411(running: Running) -> None:
    status, _, body = raw_exchange(running.port, b"POST /ingest HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and body["status"] == 411


def test_a_chunked_post_is_411(running: Running, backend: Kit) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", running.port, timeout=10)
    conn.request("POST", "/ingest", body=iter([SEED_BODY]), encode_chunked=True)
    response = conn.getresponse()
    body = json.loads(response.read())
    conn.close()
    assert response.status == 411 and "Content-Length" in body["error"]
    assert backend.index.stats().accepted == 0


def test_a_body_over_the_limit_is_413_rejected_and_quarantined_bounded(
    running: Running, backend: Kit
) -> None:
    big = make_event(payload={"blob": "y" * (MAX_BODY_BYTES + 10)})
    status, _, body = post(running.url + "/ingest", big)
    assert (status, body["status"]) == (413, "REJECTED")
    assert "limit" in body["reason"]
    rejection = backend.index.get_rejection(body["rejection_id"])
    assert rejection is not None
    assert (rejection.size, rejection.truncated, rejection.data) == (
        len(big),
        True,
        big[:QUARANTINE_MAX_BYTES],
    )
    assert rejection.sha256 == hashlib.sha256(big).hexdigest()


def test_a_body_over_api_gateways_limit_is_refused_unread(running: Running, backend: Kit) -> None:
    # Only the headers are sent: the answer comes without waiting for (or reading) the declared body.
    declared = MAX_STREAMED_BYTES + 1
    status, headers, body = raw_exchange(
        running.port, f"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: {declared}\r\n\r\n".encode()
    )
    assert status == 413 and body["status"] == 413 and headers["connection"] == "close"
    assert backend.index.stats().rejected == 0


def test_malformed_requests_get_json_errors_and_the_server_keeps_serving(
    running: Running, backend: Kit
) -> None:
    for garbage in (
        b"GARBAGE\r\n\r\n",
        b"POST /ingest HTTP/9.9\r\n\r\n",
        b"\x00\x01 /ingest HTTP/1.1\r\n\r\n",
        b"POST /ingest HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /ingest HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    ):
        status, headers, body = raw_exchange(running.port, garbage)
        assert 400 <= status < 600 and body["status"] == status and body["error"], garbage
        assert headers["content-type"] == "application/json"
    # A client that hangs up mid-body costs nothing either.
    with socket.create_connection(("127.0.0.1", running.port), timeout=5) as sock:
        sock.sendall(b'POST /ingest HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{"half')
    status, _, body = post(running.url + "/ingest", SEED_BODY)
    assert (status, body["status"]) == (200, "ACCEPTED")
    assert backend.index.stats().rejected == 0


@pytest.mark.parametrize(
    ("length", "status"),
    [
        ("\u00b2", 400),  # str.isdigit() says yes, int() says no: this was a 500
        ("1_000", 400),
        ("0x10", 400),
        ("9" * 5000, 413),  # more digits than int() reads: this was a 500
    ],
    ids=["superscript-two", "underscore", "hex", "5000-digits"],
)
@pytest.mark.parametrize("expect_continue", [False, True], ids=["plain", "expect-100"])
def test_content_lengths_python_cannot_read_are_answered_not_a_500(
    length: str, status: int, expect_continue: bool, running: Running, backend: Kit
) -> None:
    expect = b"Expect: 100-continue\r\n" if expect_continue else b""
    head = b"POST /ingest HTTP/1.1\r\nHost: x\r\n" + expect + b"Content-Length: " + length.encode("latin-1")
    got, headers, body = raw_exchange(running.port, head + b"\r\n\r\nhello")
    assert (got, body["status"]) == (status, status) and headers["content-type"] == "application/json"
    assert backend.index.stats().rejected == 0


def test_a_content_length_with_leading_zeros_is_read(running: Running, backend: Kit) -> None:
    head = b"POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"0" * 5000 + b"5\r\n\r\n"
    status, _, body = raw_exchange(running.port, head + b"hello")
    assert (status, body["status"]) == (400, "REJECTED") and body["reason"].startswith("invalid JSON")


def test_an_exception_in_a_handler_is_a_json_500_and_the_server_keeps_serving(
    backend: Kit, capsys: pytest.CaptureFixture[str]
) -> None:
    def explode(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("handler internals")

    routes = [*default_routes(), Route("POST", "/explode", explode, "explode")]
    server = Running(routes)
    try:
        status, _, body = post(server.url + "/explode", b"{}")
        assert status == 500 and body["status"] == 500 and "handler internals" not in json.dumps(body)
        status, _, body = post(server.url + "/ingest", SEED_BODY)
        assert (status, body["status"]) == (200, "ACCEPTED")
    finally:
        server.stop()
    assert "handler internals" in capsys.readouterr().err  # on the server's console, not in the answer


def test_the_handler_sees_an_api_gateway_rest_event(backend: Kit) -> None:
    seen: list[tuple[dict[str, Any], Any]] = []

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append((event, context))
        return {"statusCode": 201, "headers": {"X-Test": "yes"}, "body": "{}"}

    server = Running([Route("POST", "/echo", record, "echo")])
    try:
        status, headers, _ = post(server.url + "/echo?a=1&a=2", b"\xff\x00", {"X-Trace": "t1"})
    finally:
        server.stop()
    assert status == 201 and headers["X-Test"] == "yes"
    (event, context), = seen  # fmt: skip
    request = common.api_request(event)
    assert (request.method, request.path, request.body) == ("POST", "/echo", b"\xff\x00")
    assert event["isBase64Encoded"] is True and event["headers"]["X-Trace"] == "t1"
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"]}
    assert request.source_ip == "127.0.0.1" and request.request_id == context.aws_request_id
    assert context.function_name == "pik-serve-echo" and context.get_remaining_time_in_millis() > 0


# -- pik serve as a process ----------------------------------------------------------------------------


def _pik() -> list[str]:
    script = Path(sys.executable).parent / "pik"
    return [str(script)] if script.exists() else [sys.executable, "-m", "pik_console.cli"]


def test_pik_serve_runs_until_ctrl_c(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DRY_RUN", "PIK_BACKEND", "PIK_READ_ONLY")}
    proc = subprocess.Popen(
        [*_pik(), "serve", "--port", "0", "--workspace", str(tmp_path / "ws")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
    )
    try:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            assert sel.select(timeout=30), "pik serve printed nothing"
        first = proc.stdout.readline()
        match = re.search(r"http://127\.0\.0\.1:\d+", first)
        assert match, first + (proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
        status, _, body = post(match.group(0) + "/ingest", SEED_BODY)
        assert (status, body["status"], body["event_id"]) == (200, "ACCEPTED", SEED_EVENT_ID)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert err.strip().splitlines()[-1] == "pik serve: stopped"
    assert "Traceback" not in err
    logs = [json.loads(line) for line in rest.splitlines() if line.startswith('{"level"')]
    assert [(log["status"], log["event_id"]) for log in logs] == [("ACCEPTED", SEED_EVENT_ID)]
    store = open_local(tmp_path / "ws", create=False)
    try:
        assert store.index.stats().accepted == 1
    finally:
        store.close()
