"""`pik serve` security, end to end with real processes: it listens on 127.0.0.1 unless told otherwise,
refuses to listen elsewhere without a token (unless --insecure-no-token says so), and with a token
(--token-file PATH or PIK_SERVE_TOKEN) answers every request without it 401 before reading its body,
storing nothing. The token appears in no log, error or help text."""

from __future__ import annotations

import base64
import http.client
import io
import ipaddress
import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from backend.kit import Kit, open_local
from backend.model import MAX_BODY_BYTES
from pik_console.cli import main
from pik_console.http_api import ApiServer, Route, default_routes
from tests.conftest import make_event
from tests.reliability.served import ROOT, pik, serve_env, start_serve

TOKEN = "s3cr3t-" + "T0k3n_" * 5  # 37 characters
OTHER = "s3cr3t-" + "W0rng_" * 5  # the same length, another token


def request(
    port: int,
    method: str = "POST",
    path: str = "/ingest",
    body: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
) -> tuple[int, dict[str, str], dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest(method, path)
        for name, value in headers or []:
            conn.putheader(name, value)
        data = make_event() if body is None else body
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(response.read())
    finally:
        conn.close()


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


def outward_address() -> str | None:
    """This machine's address on its default route, if it has one (connecting a UDP socket sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback else address


def stored(workspace: Path) -> tuple[int, int, int]:
    store = open_local(workspace, create=False, read_only=True)
    try:
        stats = store.index.stats()
        return stats.accepted, stats.duplicate, stats.rejected
    finally:
        store.close()


# -- where it listens ---------------------------------------------------------------------------------------


def test_pik_serve_listens_on_loopback_only_by_default(tmp_path: Path) -> None:
    server = start_serve(tmp_path, "--port", "0", "--workspace", str(tmp_path / "ws"))
    try:
        assert server.url.startswith("http://127.0.0.1:")
        status, _, body = request(server.port)
        assert (status, body["status"]) == (200, "ACCEPTED")  # on loopback, no token is needed
        address = outward_address()
        if address is not None:  # the same port on the machine's network address: nobody listens there
            with pytest.raises(OSError), socket.create_connection((address, server.port), timeout=5):
                pass
    finally:
        assert server.stop() == 0
    assert "warning" not in server.output()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com"])
def test_a_non_loopback_host_without_a_token_is_refused(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIK_SERVE_TOKEN", raising=False)
    out, err = io.StringIO(), io.StringIO()
    workspace = tmp_path / "ws"
    code = main(["serve", "--host", host, "--port", "0", "--workspace", str(workspace)], out, err)
    assert code == 2
    message = err.getvalue()
    assert message.startswith(f"pik serve: error: --host {host} can be reached from other machines")
    assert "--token-file PATH or PIK_SERVE_TOKEN" in message and "--insecure-no-token" in message
    assert not workspace.exists()  # refused before anything was opened


def test_the_refusal_as_a_user_meets_it(tmp_path: Path) -> None:
    done = subprocess.run(
        [*pik(), "serve", "--host", "0.0.0.0", "--port", "0", "--workspace", str(tmp_path / "ws")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=serve_env(),
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "pik serve: error: --host 0.0.0.0 can be reached from other machines" in done.stderr
    assert not (tmp_path / "ws").exists()


def test_insecure_no_token_serves_everywhere_with_a_warning(tmp_path: Path) -> None:
    server = start_serve(
        tmp_path,
        "--host",
        "0.0.0.0",
        "--port",
        "0",
        "--insecure-no-token",
        "--workspace",
        str(tmp_path / "ws"),
    )
    try:
        status, _, body = request(server.port)
        assert (status, body["status"]) == (200, "ACCEPTED")
    finally:
        assert server.stop() == 0
    assert "warning: listening on 0.0.0.0: anyone who can reach this machine can write" in server.output()


# -- the bearer token ----------------------------------------------------------------------------------------


def refusals(port: int) -> list[tuple[str, int, dict[str, str], dict[str, Any]]]:
    """Every way of asking without the token: (what, status, headers, body)."""
    big = make_event(payload={"blob": "z" * (2 * MAX_BODY_BYTES)})  # would be streamed and quarantined
    basic = base64.b64encode(f"pik:{TOKEN}".encode()).decode()
    tries: list[tuple[str, dict[str, Any]]] = [
        ("no header", {}),
        ("another token", {"headers": bearer(OTHER)}),
        ("a prefix of the token", {"headers": bearer(TOKEN[:-1])}),
        ("the token and more", {"headers": bearer(TOKEN + "x")}),
        ("the token in other case", {"headers": bearer(TOKEN.upper())}),
        ("the scheme alone", {"headers": [("Authorization", "Bearer")]}),
        ("the token without a scheme", {"headers": [("Authorization", TOKEN)]}),
        ("basic authentication", {"headers": [("Authorization", f"Basic {basic}")]}),
        ("the token twice over", {"headers": bearer(TOKEN) + bearer(OTHER)}),
        ("the token in the query", {"path": f"/ingest?access_token={TOKEN}"}),
        ("the token in another header", {"headers": [("X-Api-Key", TOKEN)]}),
        ("a body over 1 MiB", {"body": big}),
        ("a replay", {"path": "/replay", "body": b'{"entity_id": "user_123"}'}),
        ("an unknown path", {"path": "/admin"}),
        ("another method", {"method": "DELETE", "body": b""}),
    ]
    out = []
    for what, kwargs in tries:
        status, headers, body = request(port, **kwargs)
        out.append((what, status, headers, body))
    return out


def unread_refusals(port: int) -> list[bytes]:
    """Requests whose body is never sent: the answer must come without it (the body is not read)."""
    firsts = []
    # Asking to continue: the 401 comes at once, with no 100 Continue (the client need not even send).
    # Without asking: the answer comes all the same, without waiting for the declared megabytes.
    for head in (
        f"POST /ingest HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: {5 * MAX_BODY_BYTES}",
        "POST /ingest HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000",
    ):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(head.encode() + b"\r\n\r\n{")
            firsts.append(sock.recv(65536))
    return firsts


@pytest.mark.parametrize("given", ["token-file", "environment"])
def test_every_request_without_the_token_is_refused_401_before_its_body_is_read_and_stores_nothing(
    given: str, tmp_path: Path, figures: Callable[..., None]
) -> None:
    workspace = tmp_path / "ws"
    args = ["--port", "0", "--workspace", str(workspace)]
    env = serve_env()
    if given == "token-file":
        token_file = tmp_path / "token"
        token_file.write_text(TOKEN + "\n")
        token_file.chmod(0o644)  # readable by others: served, with a warning
        args += ["--token-file", str(token_file)]
        env["PIK_SERVE_TOKEN"] = OTHER  # the file wins
        warning = f"warning: --token-file {token_file} can be read by other users (chmod 600 {token_file})"
    else:
        env["PIK_SERVE_TOKEN"] = TOKEN
        args += ["--host", "0.0.0.0"]  # with a token, a network address is allowed
        warning = "over plain HTTP: the token and the events cross the network unencrypted"
    server = start_serve(tmp_path, *args, env=env)
    try:
        assert "(bearer token required)" in server.out.read_text()
        refused = refusals(server.port)
        for what, status, headers, body in refused:
            assert status == 401 and body["status"] == 401 and body["error"], what
            assert headers["www-authenticate"].startswith('Bearer realm="pik serve"'), what
            assert headers["content-type"] == "application/json", what
            assert TOKEN not in json.dumps(body) and OTHER not in json.dumps(body), what
        unread = unread_refusals(server.port)
        for first in unread:
            assert first.startswith(b"HTTP/1.1 401 "), first[:100]
            assert b"100 Continue" not in first and b"WWW-Authenticate: Bearer" in first
        assert stored(workspace) == (0, 0, 0)  # nothing stored: not even a quarantined rejection

        # The right token: the scheme is case-insensitive (RFC 9110), the token is not.
        status, _, body = request(server.port, headers=bearer(TOKEN))
        assert (status, body["status"]) == (200, "ACCEPTED")
        other = make_event(entity_id="user_456")
        status, _, body = request(server.port, body=other, headers=[("Authorization", f"bearer {TOKEN}")])
        assert (status, body["status"]) == (200, "ACCEPTED")
        status, _, body = request(server.port, body=b"{oops", headers=bearer(TOKEN))
        assert (status, body["status"]) == (400, "REJECTED")
        assert stored(workspace) == (2, 0, 1)
    finally:
        assert server.stop() == 0
    output = server.output()
    assert TOKEN not in output and OTHER not in output
    assert warning in output and output.count("warning") == 1
    assert output.count('" 401 ') == len(refused) + len(unread)  # each refusal logged, by status only
    figures(
        f"token_{given.replace('-', '_')}",
        refused_requests=len(refused) + len(unread),
        answered_401=len(refused) + len(unread),
        stored_for_refused=0,
        token_in_output=0,
        accepted_with_token=2,
    )


def test_the_handlers_never_see_the_servers_token(backend: Kit) -> None:
    seen: list[dict[str, Any]] = []

    def record(event: dict[str, Any], context: Any) -> dict[str, Any]:
        seen.append(event)
        return {"statusCode": 200, "body": "{}"}

    server = ApiServer(("127.0.0.1", 0), [*default_routes(), Route("POST", "/echo", record, "echo")], TOKEN)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        status, _, _ = request(server.server_port, path="/echo", headers=[*bearer(TOKEN), ("X-Trace", "t1")])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert status == 200
    (event,) = seen
    assert event["headers"]["X-Trace"] == "t1"
    assert "authorization" not in {k.lower() for k in event["headers"]}
    assert "authorization" not in {k.lower() for k in event["multiValueHeaders"]}
    assert TOKEN not in json.dumps(event)


# -- the token's own errors -------------------------------------------------------------------------------


def write(path: Path, data: bytes, mode: int = 0o600) -> str:
    path.write_bytes(data)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda d: ["--token-file", str(d / "missing")], "cannot read --token-file"),
        (lambda d: ["--token-file", write(d / "t", b"")], "holds no token"),
        (lambda d: ["--token-file", write(d / "t", b" \n\t\n")], "holds no token"),
        (lambda d: ["--token-file", write(d / "t", b"short-secret\n")], "holds a token of 12 characters"),
        (lambda d: ["--token-file", write(d / "t", b"two words in it here\n")], "must hold one token"),
        (lambda d: ["--token-file", write(d / "t", TOKEN.encode() + b"\n" + TOKEN.encode())], "one line"),
        (lambda d: ["--token-file", write(d / "t", b"\xff" + TOKEN.encode())], "is not UTF-8 text"),
        (lambda d: ["--token-file", str(d)], "cannot read --token-file"),
        (lambda d: ["--token-file", write(d / "t", TOKEN.encode()), "--insecure-no-token"], "contradicts"),
    ],
    ids=[
        "missing",
        "empty",
        "blank",
        "too-short",
        "spaces",
        "two-lines",
        "not-utf8",
        "a-folder",
        "contradiction",
    ],
)
def test_token_file_problems_are_usage_errors_that_never_quote_it(
    setup: Callable[[Path], list[str]], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PIK_SERVE_TOKEN", raising=False)
    out, err = io.StringIO(), io.StringIO()
    workspace = tmp_path / "ws"
    code = main(["serve", "--port", "0", "--workspace", str(workspace), *setup(tmp_path)], out, err)
    message = err.getvalue()
    assert code == 2 and expected in message, message
    assert message.startswith("pik serve: error: ") and message.count("\n") == 1
    for secret in (TOKEN, "short-secret", "two words"):
        assert secret not in message
    assert not workspace.exists()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("", "PIK_SERVE_TOKEN holds no token"), ("tiny", "PIK_SERVE_TOKEN holds a token of 4 characters")],
)
def test_token_environment_problems_are_usage_errors(
    value: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIK_SERVE_TOKEN", value)
    err = io.StringIO()
    assert main(["serve", "--port", "0", "--workspace", str(tmp_path / "ws")], io.StringIO(), err) == 2
    assert expected in err.getvalue() and "'tiny'" not in err.getvalue()


def test_help_names_the_flags_and_never_the_token() -> None:
    done = subprocess.run(
        [*pik(), "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**serve_env(), "PIK_SERVE_TOKEN": TOKEN},
    )
    assert done.returncode == 0
    text = " ".join(done.stdout.split())  # argparse wraps lines
    assert "--token-file PATH" in text and "--insecure-no-token" in text and "$PIK_SERVE_TOKEN" in text
    assert "default 127.0.0.1" in text
    assert TOKEN not in done.stdout + done.stderr
    assert os.environ.get("PIK_SERVE_TOKEN") != TOKEN
