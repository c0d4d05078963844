"""Shared fixtures: the adapters every contract test runs against, and event builders.

To run the whole suite against another adapter (the AWS one on moto), append its name to ``ADAPTERS`` and
give it a factory in ``_FACTORIES``: every test that takes the ``adapter`` fixture then runs on it too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from backend.adapters.local.store import LocalStore
from backend.errors import StoreError
from backend.ports import EventIndex, RawStore
from tests import moto_transactions

# moto copies a table once per item of a transaction: once per transaction is the same state, faster.
moto_transactions.install()

ADAPTERS: list[str] = ["local", "aws"]


# The optional ports of an Adapter, by attribute name.
PORT_NAMES = ("investigate", "catalog", "queue", "audit", "aggregates", "overview")


@dataclass
class Adapter:
    """One adapter under test: its raw store, its event index, and how to release them."""

    name: str
    raw: RawStore
    index: EventIndex
    close: Callable[[], None]
    # Whether a failed batch writes nothing (one SQLite transaction) or only each event is atomic (DynamoDB).
    atomic_batches: bool = True
    # The investigation, replay and aggregate ports: None on an adapter that does not implement them yet
    # (their contract tests then skip there).
    investigate: Any = None
    catalog: Any = None
    queue: Any = None
    audit: Any = None
    aggregates: Any = None
    overview: Any = None


def _open_local(root: Path) -> Adapter:
    from backend.adapters.local.workspace import local_ports

    store = LocalStore(root / "ws")
    ports = local_ports(store)
    return Adapter(
        "local",
        store,
        store,
        store.close,
        **{name: getattr(ports, name, None) for name in PORT_NAMES},
    )


def _open_aws(root: Path) -> Adapter:
    """The AWS adapter on moto, in-process: a fresh bucket, tables and queue pair for each test."""
    from backend.adapters.aws.ports import aws_ports
    from tests.aws_env import moto_backend

    store, settings, stop = moto_backend()
    ports = aws_ports(store, settings)
    return Adapter(
        "aws",
        store,
        store,
        stop,
        atomic_batches=False,
        **{name: getattr(ports, name, None) for name in PORT_NAMES},
    )


_FACTORIES: dict[str, Callable[[Path], Adapter]] = {"local": _open_local, "aws": _open_aws}


@contextlib.contextmanager
def open_adapter(name: str, root: Path) -> Iterator[Adapter]:
    """A fresh, empty adapter whose state lives under ``root``; closed on exit."""
    adapter = _FACTORIES[name](root)
    try:
        yield adapter
    finally:
        adapter.close()


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    with open_adapter(request.param, tmp_path) as opened:
        yield opened


# -- the Lambda handlers' backend -----------------------------------------------------------------------


@contextlib.contextmanager
def handlers_on_workspace(path: Path) -> Iterator[Any]:
    """Open a local workspace at ``path`` and make it the Lambda handlers' backend until the block ends."""
    from backend.handlers import common
    from backend.kit import open_local
    from backend.settings import Settings

    opened = open_local(path)
    common.configure(opened, Settings(backend="local"))
    try:
        yield opened
    finally:
        common.configure(None)
        opened.close()


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[Any]:
    """A local workspace that the Lambda handlers (and ``pik serve``) use, as they would their stack."""
    with handlers_on_workspace(tmp_path / "ws") as opened:
        yield opened


# -- events -----------------------------------------------------------------------------------------------

DROP: Any = object()  # make_event(field=DROP) leaves the field out

BASE_EVENT: dict[str, Any] = {
    "source": "demo",
    "event_type": "heartbeat",
    "entity_id": "user_123",
    "event_time": "2025-12-28T23:59:59Z",
    "payload": {"steps": 10},
}


def event_dict(**overrides: Any) -> dict[str, Any]:
    body = {**BASE_EVENT, **overrides}
    return {k: v for k, v in body.items() if v is not DROP}


def make_event(**overrides: Any) -> bytes:
    """The seed's example event as JSON bytes, with fields replaced (or left out with ``DROP``)."""
    return json.dumps(event_dict(**overrides), ensure_ascii=False).encode("utf-8")


# -- failure injection ------------------------------------------------------------------------------------


class Flaky:
    """Wraps a store and makes chosen calls fail with StoreError, as a lost connection or throttling would.

    ``fail(method, *plan)`` queues what the next calls of ``method`` do: ``None`` succeeds, ``"before"``
    raises without touching the store (the write did not happen), ``"after"`` raises once the store has
    done the call (the write happened but its answer was lost). ``calls`` counts every call by method.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._plans: dict[str, list[str | None]] = {}
        self.calls: dict[str, int] = {}

    def fail(self, method: str, *plan: str | None) -> None:
        self._plans.setdefault(method, []).extend(plan or ("before",))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            plan = self._plans.get(name)
            when = plan.pop(0) if plan else None
            if when is None:
                return attr(*args, **kwargs)
            if when == "after":
                attr(*args, **kwargs)
            raise StoreError(f"injected failure of {name} ({when} the write)")

        return call


class Blind:
    """A raw store that, like S3, does not say what a taken key holds (``stored_sha256`` None)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def put_new(self, objects: Any) -> Any:
        from backend.ports import RawPut, RawPutStatus

        return [
            p if p.status is RawPutStatus.CREATED else RawPut(p.key, p.status, None)
            for p in self._inner.put_new(objects)
        ]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
