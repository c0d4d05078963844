"""``pik serve``: the kit's HTTP API on this machine (pik_console/http_api.py), each request answered by the
same handler that runs in Lambda. Loopback only unless a bearer token is required (or refused on purpose)."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from pik_console.cli.common import Failure, open_backend, settings_from, usage
from pik_console.http_api import ApiServer, default_routes, is_loopback

TOKEN_ENV = "PIK_SERVE_TOKEN"
MIN_TOKEN_CHARS = 16
BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")  # RFC 6750 b64token


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add ``pik serve`` to the ``pik`` parser's subcommands."""
    p = sub.add_parser(
        "serve",
        parents=[common],
        help="a local HTTP API (POST /ingest, POST /replay) running the Lambda handlers",
        description="Serve the kit's HTTP API on this machine: each request is turned into an API Gateway "
        "proxy event and answered by the same handler that runs in Lambda, on a local workspace (default) "
        "or an AWS stack (--backend aws --stack NAME). DRY_RUN=true (or --dry-run) validates and answers "
        "without writing; a replay is then a preview that sends nothing. By default it listens on "
        "127.0.0.1 only; with --token-file (or PIK_SERVE_TOKEN) every request needs 'Authorization: Bearer "
        "<token>'. Make a token with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; anything else is reachable from other machines, "
        "and needs a token or --insecure-no-token)",
    )
    p.add_argument(
        "--token-file",
        metavar="PATH",
        help="require 'Authorization: Bearer <token>' on every request, the token being this file's one "
        f"line (at least {MIN_TOKEN_CHARS} characters); without it, ${TOKEN_ENV} if set. Requests "
        "without it get 401 and are not read",
    )
    p.add_argument(
        "--insecure-no-token",
        action="store_true",
        help="serve a non-loopback --host without a token: anyone who can connect can write",
    )
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free port)")
    p.add_argument("--dry-run", action="store_true", help="validate and answer without writing anything")
    p.add_argument("--read-only", action="store_true", help="refuse every write (403)")
    p.set_defaults(func=cmd_serve)


def read_token(args: argparse.Namespace, environ: Mapping[str, str], err: IO[str]) -> str | None:
    """The bearer token from ``--token-file`` (first) or ``PIK_SERVE_TOKEN``; None when neither is set.

    Raises a usage error naming what is wrong with it; no message ever quotes the token.
    """
    if args.token_file is not None:
        where = f"--token-file {args.token_file}"
        path = Path(args.token_file)
        try:
            text = path.read_text(encoding="utf-8")
            mode = path.stat().st_mode
        except UnicodeDecodeError:
            raise usage(f"{where}: the file is not UTF-8 text") from None
        except OSError as exc:
            raise usage(f"cannot read {where}: {exc.strerror or exc}") from None
        if os.name == "posix" and mode & 0o077:
            err.write(
                f"pik serve: warning: {where} can be read by other users (chmod 600 {args.token_file})\n"
            )
    elif TOKEN_ENV in environ:
        where, text = TOKEN_ENV, environ[TOKEN_ENV]
    else:
        return None
    token = text.strip()
    hint = "make one with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
    if not token:
        raise usage(f"{where} holds no token; {hint}")
    if not BEARER_TOKEN.fullmatch(token):
        raise usage(
            f"{where} must hold one token of letters, digits and - . _ ~ + / (then = padding) "
            f"on one line; {hint}"
        )
    if len(token) < MIN_TOKEN_CHARS:
        raise usage(
            f"{where} holds a token of {len(token)} characters; use at least {MIN_TOKEN_CHARS}; {hint}"
        )
    return token


def cmd_serve(args: argparse.Namespace, out: IO[str], err: IO[str]) -> int:
    from backend.handlers.common import configure

    if not 0 <= args.port <= 65535:
        raise usage(f"--port {args.port} is not a port number (0-65535; 0 picks a free one)")
    token = read_token(args, os.environ, err)
    loopback = is_loopback(args.host)
    if token is not None and args.insecure_no_token:
        raise usage(f"--insecure-no-token contradicts the token given (--token-file or {TOKEN_ENV})")
    if token is None and not loopback and not args.insecure_no_token:
        raise usage(
            f"--host {args.host} can be reached from other machines, and every request could then write "
            f"to the workspace or launch a replay: require a token (--token-file PATH or {TOKEN_ENV}), or "
            "pass --insecure-no-token to serve without one"
        )
    backend = open_backend(args, create=True)
    try:
        settings = settings_from(args)
        if args.dry_run:
            settings = settings.model_copy(update={"dry_run": True})
        try:
            server = ApiServer((args.host, args.port), default_routes(), token=token)
        except OSError as exc:
            raise Failure(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
        configure(backend, settings)
        try:
            if not loopback and token is None:
                err.write(
                    f"pik serve: warning: listening on {args.host}: anyone who can reach this machine can "
                    f"write to {backend.location}, without authentication\n"
                )
            elif not loopback:
                err.write(
                    f"pik serve: warning: listening on {args.host} over plain HTTP: the token and the "
                    "events cross the network unencrypted (put a TLS proxy or an SSH tunnel in front)\n"
                )
            endpoints = ", ".join(f"{r} {p}" for p, methods in server.routes.items() for r in methods)
            modes = "".join(
                [
                    " (dry run: nothing is written)" if settings.dry_run else "",
                    " (read-only)" if backend.read_only else "",
                    " (bearer token required)" if token is not None else "",
                ]
            )
            out.write(
                f"pik serve: listening on {server.url} ({endpoints}) on {backend.name} {backend.location}"
                f"{modes}; Ctrl-C stops\n"
            )
            out.flush()
            with _stop_signals():
                server.serve_forever()
        except KeyboardInterrupt:
            err.write("\npik serve: stopped\n")  # on its own line, after the terminal's ^C
        finally:
            server.server_close()
            configure(None)
    finally:
        backend.close()
    return 0


@contextlib.contextmanager
def _stop_signals() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM (a service manager, ``kill``) stop the server cleanly.

    SIGINT is set explicitly: a process started in the background by a shell inherits it ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
