"""Security: read-only enforced by the services.

* Read-only: every public entry point of every service (found by introspection, so a new one cannot be
  forgotten) is called in read-only mode on both adapters and writes nothing; the ``pik`` commands and the
  three handlers refuse with a clear message.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import io
import json
import sys
import typing
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import backend.ports as ports_module
import backend.services.drain as drain_module
import backend.services.gaps as gaps_module
import backend.services.ingest as ingest_module
import backend.services.ingest_validation as ingest_validation_module
import backend.services.lag as lag_module
import backend.services.processor as processor_module
import backend.services.replay as replay_module
import backend.services.report as report_module
import backend.services.scope as scope_module
import backend.services.versions as versions_module
from backend.adapters.local.store import LocalStore
from backend.adapters.local.workspace import local_ports
from backend.errors import ReadOnlyError
from backend.handlers import common
from backend.handlers import ingest as ingest_handler
from backend.handlers import processor as processor_handler
from backend.handlers import replay as replay_handler
from backend.handlers.replay import api_reply
from backend.model import ReplayRequest
from backend.services.drain import DrainService
from backend.services.gaps import GapService
from backend.services.ingest import IngestService, NumberedLines, Received, prepare
from backend.services.lag import LagService
from backend.services.processor import ProcessorService, window_counts
from backend.services.replay import ReplayService
from backend.services.report import ReportService
from backend.services.versions import VersionService
from backend.times import FixedClock
from pik_console.cli.process import drain
from tests.conftest import Adapter, open_adapter
from tests.handlers.support import replay_v1, sqs_event, sqs_record
from tests.handlers.test_ingest_handler import FakeLambdaContext, rest_v1_event
from tests.reliability.security_support import DAY, T0, WINDOW, cli, event


@dataclasses.dataclass
class Stores:
    """The ports a service is built on; on the recording side, each wrapped in a :class:`Recorder`."""

    raw: Any
    index: Any
    investigate: Any
    catalog: Any
    queue: Any
    audit: Any
    aggregates: Any


# Port methods that change a store: receiving a message counts toward its dead-letter limit, so it writes.
WRITE_METHODS = {"put_new", "record", "quarantine", "send_batch", "receive", "receive_many", "delete",
                 "release", "begin", "finish", "append", "apply_stream", "backfill",
                 "store_columns"}  # fmt: skip


def _protocol_methods() -> set[str]:
    names: set[str] = set()
    for _, cls in inspect.getmembers(ports_module, inspect.isclass):
        if getattr(cls, "_is_protocol", False) and cls.__module__ == ports_module.__name__:
            names |= {n for n, v in vars(cls).items() if callable(v) and not n.startswith("_")}
    return names


def test_every_port_method_is_known_to_read_or_write() -> None:
    """The recorder below tells writes by name; a new port method must be classified here first."""
    reads = {"get", "sha256", "get_accepted", "receipts", "query_entity", "query_partition",
             "query_rejections", "get_rejection", "stats", "scan_entity", "scan_partition",
             "day_counts_entity", "day_counts_partition", "select_replay", "replay_receipts", "missing",
             "get_many", "depth", "latest_many", "window_inputs",
             "dead_letters", "query", "latest", "versions", "manifest", "windows_with_versions",
             "delivered", "event_day_span", "hour_rollups", "entity_day_counts", "rejection_counts",
             "churned_windows", "lag_rollup", "partition_totals", "day_entities",
             "raw_packer", "pack_many"}  # fmt: skip
    assert _protocol_methods() == reads | WRITE_METHODS
    assert not reads & WRITE_METHODS


class Recorder:
    """A port whose write calls are recorded (and still made)."""

    def __init__(self, port: Any, name: str, log: list[str]) -> None:
        self._port, self._name, self._log = port, name, log

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._port, attr)
        if attr in WRITE_METHODS and callable(value):

            def recorded(*args: Any, **kwargs: Any) -> Any:
                self._log.append(f"{self._name}.{attr}")
                return value(*args, **kwargs)

            return recorded
        return value


def _seed(stores: Stores, clock: FixedClock) -> None:
    """Three events of u1 on DAY and two aggregate versions of the window (a late fourth event between
    them), then a replay of the four (four messages left on the queue, one audit record)."""
    IngestService(stores.raw, stores.index, clock).ingest_batch([Received(event("u1", m)) for m in range(3)])
    processor = ProcessorService(stores.investigate, stores.catalog, stores.aggregates, clock=clock)
    processor.recompute("u1", DAY)
    clock.advance(timedelta(hours=30))
    IngestService(stores.raw, stores.index, clock).ingest_batch([Received(event("u1", 40))])
    processor.recompute("u1", DAY)
    _replay(stores, clock).execute(
        ReplayRequest(entity_id="u1", start_time=WINDOW[0], end_time=WINDOW[1]), actor="seed", force=True
    )


def _replay(stores: Stores, clock: FixedClock, *, read_only: bool = False) -> ReplayService:
    return ReplayService(
        stores.investigate,
        stores.catalog,
        stores.audit,
        stores.queue,
        stores.aggregates,
        clock=clock,
        confirm_above=2,
        read_only=read_only,
    )


def _processor(
    stores: Stores, clock: FixedClock, *, read_only: bool, dry_run: bool = False
) -> ProcessorService:
    return ProcessorService(
        stores.investigate,
        stores.catalog,
        stores.aggregates,
        clock=clock,
        read_only=read_only,
        dry_run=dry_run,
    )


NEW = [event("u2", m) for m in range(2)] + [b"not json"]
U1_REQUEST = ReplayRequest(entity_id="u1", start_time=WINDOW[0], end_time=WINDOW[1])
MESSAGE = json.dumps(
    {"event_id": "e", "entity_id": "u3", "event_time": f"{DAY}T10:00:00Z", "replay_id": "rp-x"}
)

# How to call every public entry point of the services: (stores, clock, read_only) -> what it returns.
# A method of a service without a read_only switch must not write at all.
Recipe = Callable[[Stores, FixedClock, bool], Any]


def _ingest(ro: bool, stores: Stores, clock: FixedClock) -> IngestService:
    return IngestService(stores.raw, stores.index, clock, read_only=ro)


def _new() -> list[Received]:
    return [Received(b) for b in NEW]


class _NothingDelivered:
    """A ledger that has seen nothing (the AWS index has none), so resume_stream reaches its writes."""

    def delivered(self, origin: str, first_line: int, last_line: int) -> dict[int, set[str]]:
        return {}


RECIPES: dict[str, Recipe] = {
    "IngestService.ingest": lambda s, c, ro: _ingest(ro, s, c).ingest(NEW[0]),
    "IngestService.ingest_batch": lambda s, c, ro: _ingest(ro, s, c).ingest_batch(_new()),
    "IngestService.ingest_stream": lambda s, c, ro: list(_ingest(ro, s, c).ingest_stream(iter(_new()))),
    "IngestService.resume_stream": lambda s, c, ro: list(
        _ingest(ro, s, c).resume_stream(
            iter([Received(b, "file:x", n) for n, b in enumerate(NEW, 1)]), _NothingDelivered()
        )
    ),
    "IngestService.resume_batches": lambda s, c, ro: list(
        _ingest(ro, s, c).resume_batches([NumberedLines("file:x", 1, list(NEW))], _NothingDelivered())
    ),
    "IngestService.prepare_batch": lambda s, c, ro: _ingest(ro, s, c).prepare_batch(_new()),
    "IngestService.store": lambda s, c, ro: (
        _ingest(ro, s, c).store(_ingest(False, s, c).prepare_batch(_new()))
    ),
    "IngestService.commit": lambda s, c, ro: (
        _ingest(ro, s, c).commit(_ingest(False, s, c).prepare_batch(_new()))
    ),
    "ReplayService.plan": lambda s, c, ro: _replay(s, c, read_only=ro).plan(U1_REQUEST, actor="t"),
    "ReplayService.execute": lambda s, c, ro: (
        _replay(s, c, read_only=ro).execute(U1_REQUEST, actor="t", force=True)
    ),
    "replay.api_reply": lambda s, c, ro: api_reply(
        _replay(s, c, read_only=ro), {**U1_REQUEST.model_dump(exclude_none=True), "force": True}, actor="t"
    ),
    "ProcessorService.process": lambda s, c, ro: _processor(s, c, read_only=ro).process([MESSAGE]),
    "ProcessorService.recompute": lambda s, c, ro: _processor(s, c, read_only=ro).recompute("u4", DAY),
    "ProcessorService.recompute_windows": lambda s, c, ro: (
        _processor(s, c, read_only=ro).recompute_windows({("u4", DAY): []})
    ),
    "ProcessorService.prefetch": lambda s, c, ro: _processor(s, c, read_only=ro).prefetch([("u4", DAY)]),
    "processor.window_counts": lambda s, c, ro: window_counts(s.investigate, [("u4", DAY)]),
    "DrainService.run": lambda s, c, ro: DrainService(s.queue, _processor(s, c, read_only=ro)).run(),
    "LagService.lag": lambda s, c, ro: LagService(s.index, s.investigate).lag("web", "click", DAY),
    "GapService.gaps": lambda s, c, ro: (
        GapService(s.index, s.investigate).gaps("2025-11-28", "2025-12-03", entity_id="u1")
    ),
    "VersionService.versions": lambda s, c, ro: (
        VersionService(s.aggregates, s.investigate, s.audit).versions("u1", DAY)
    ),
    "VersionService.diff": lambda s, c, ro: (
        VersionService(s.aggregates, s.investigate, s.audit).diff("u1", DAY, "daily_event_count")
    ),
    "ReportService.gather": lambda s, c, ro: (
        ReportService(s.index, s.investigate, s.audit, s.aggregates, catalog=s.catalog, queue=s.queue)
        .gather("u1", DAY)
    ),
}  # fmt: skip
# Writes in normal mode, writes nothing (and is allowed) in read-only mode: a dry run.
ALLOWED_IN_READ_ONLY = {"ReplayService.plan"}
# Entry points that answer a refusal rather than raise it: how the answer says so.
REFUSAL_ANSWERS: dict[str, Callable[[Any], bool]] = {"replay.api_reply": lambda answer: answer[0] == 403}


def _refused(name: str, recipe: Recipe, stores: Stores, clock: FixedClock) -> bool:
    """Call ``recipe`` in read-only mode: whether it was refused."""
    try:
        answer = recipe(stores, clock, True)
    except ReadOnlyError:
        return True
    return name in REFUSAL_ANSWERS and REFUSAL_ANSWERS[name](answer)


SERVICE_MODULES = (
    ingest_module,
    ingest_validation_module,
    lag_module,
    gaps_module,
    versions_module,
    processor_module,
    scope_module,
    replay_module,
    drain_module,
    report_module,
    replay_handler,  # api_reply, which answers a replay request with the service's outcome as an HTTP status
)


def _is_service(cls: type) -> bool:
    """A class that holds stores and acts on them: not a model, record, error, enum, protocol or
    sequence of values."""
    return not (
        issubclass(cls, BaseModel | Exception | enum.Enum | collections.abc.Sequence)
        or dataclasses.is_dataclass(cls)
        or getattr(cls, "_is_protocol", False)
        or issubclass(cls, tuple)
    )


def _entry_points() -> set[str]:
    """Every public method of every service class, and every public function that takes a service or a
    store, in backend/services (and the replay handler, whose api_reply takes the replay service)."""
    classes = {
        cls
        for module in SERVICE_MODULES
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if cls.__module__ == module.__name__ and _is_service(cls)
    }
    found = {
        f"{cls.__name__}.{name}"
        for cls in classes
        for name, value in vars(cls).items()
        if not name.startswith("_") and callable(value)
    }
    stores = {
        cls
        for _, cls in inspect.getmembers(ports_module, inspect.isclass)
        if getattr(cls, "_is_protocol", False)
    }
    for module in SERVICE_MODULES:
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if fn.__module__ != module.__name__ or name.startswith("_"):
                continue
            hints = typing.get_type_hints(fn)
            hints.pop("return", None)  # takes: a factory that returns a service is not an entry point
            if any(isinstance(h, type) and (h in classes or h in stores) for h in hints.values()):
                found.add(f"{module.__name__.rsplit('.', 1)[-1]}.{name}")
    return found


def _recorded(root: Path) -> tuple[Stores, FixedClock, list[str], Callable[[], None]]:
    clock = FixedClock(T0)
    store = LocalStore(root, clock=clock)
    local = local_ports(store, clock=clock)
    plain = Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates)
    _seed(plain, clock)
    log: list[str] = []
    recorded = Stores(
        **{f.name: Recorder(getattr(plain, f.name), f.name, log) for f in dataclasses.fields(Stores)}
    )
    return recorded, clock, log, store.close


def test_every_service_entry_point_writes_nothing_in_read_only_mode(tmp_path: Path, figures: Any) -> None:
    """The guard: a new public method of a service (or a function taking one) fails here until it has a
    recipe; with one, it must write nothing in read-only mode, and if it writes in normal mode it must refuse
    (ReadOnlyError) unless it is a dry run that writes nothing."""
    found = _entry_points()
    assert found == set(RECIPES), (
        f"entry points without a recipe: {sorted(found - set(RECIPES))}; "
        f"recipes of entry points that are gone: {sorted(set(RECIPES) - found)}"
    )
    mutating = set()
    for i, (name, recipe) in enumerate(sorted(RECIPES.items())):
        stores, clock, log, close = _recorded(tmp_path / f"w{i}")
        try:
            refused = _refused(name, recipe, stores, clock)
            assert log == [], f"{name} wrote in read-only mode: {log}"
            recipe(stores, clock, False)
            if log:
                mutating.add(name)
                assert refused or name in ALLOWED_IN_READ_ONLY, f"{name} writes, yet was not refused"
        finally:
            close()
    # The recipes do reach the writes (else the check above would prove nothing).
    assert mutating == {
        "IngestService.ingest",
        "IngestService.ingest_batch",
        "IngestService.ingest_stream",
        "IngestService.resume_stream",
        "IngestService.resume_batches",
        "IngestService.commit",
        "IngestService.store",
        "ReplayService.plan",
        "ReplayService.execute",
        "replay.api_reply",
        "ProcessorService.process",
        "ProcessorService.recompute",
        "ProcessorService.recompute_windows",
        "DrainService.run",
    }
    figures(
        "read-only: service entry points (introspected)",
        entry_points=len(found),
        mutating=len(mutating),
        written_in_read_only=0,
    )


def _contents(a: Adapter | Stores) -> dict[str, Any]:
    """Everything a read-only call could have changed, read through the ports."""
    receipts = []
    for entity in ("u1", "u2", "u3", "u4"):
        receipts += a.index.query_entity(
            entity, "2025-01-01T00:00:00Z", "2027-01-01T00:00:00Z", limit=1000
        ).items
    return {
        "stats": a.index.stats(),
        "receipts": receipts,
        "rejections": a.index.query_rejections(limit=1000).items,
        "audit": a.audit.query(limit=1000).items,
        "queue": a.queue.depth(),
        "dead": a.queue.dead_letters(limit=1000).items,
        "versions": [a.aggregates.versions(e, DAY, limit=1000).items for e in ("u1", "u3", "u4")],
        "raw_missing": a.catalog.missing([prepare(b).raw_key for b in NEW[:2]]),
    }


@pytest.mark.parametrize("name", ["local", "aws"])
def test_read_only_services_write_nothing_on_either_adapter(name: str, tmp_path: Path, figures: Any) -> None:
    with open_adapter(name, tmp_path) as a:
        clock = FixedClock(T0)
        stores = Stores(a.raw, a.index, a.investigate, a.catalog, a.queue, a.audit, a.aggregates)
        _seed(stores, clock)
        before = _contents(a)
        assert before["queue"].visible == 4 and len(before["audit"]) == 1
        refused = sum(_refused(recipe_name, recipe, stores, clock) for recipe_name, recipe in RECIPES.items())
        # All but the dry run (plan) and the seven reads of LagService, GapService, VersionService,
        # ReportService and the processor's prefetch (ProcessorService.prefetch, window_counts).
        assert refused == len(RECIPES) - len(ALLOWED_IN_READ_ONLY) - 7
        # pik process: even a dry run would receive (and count receives toward the dead-letter queue).
        with pytest.raises(ReadOnlyError, match="read-only"):
            drain(
                a.queue,
                _processor(stores, clock, read_only=True, dry_run=True),
                30,
                None,
                io.StringIO(),
                True,
            )
        refused += 1
        assert _contents(a) == before
    figures(
        f"read-only: every service entry point on {name}", calls=len(RECIPES) + 1, refused=refused, changed=0
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    clock = FixedClock(T0)
    store = LocalStore(ws, clock=clock)
    local = local_ports(store, clock=clock)
    _seed(
        Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates),
        clock,
    )
    store.close()
    return ws


def _workspace_contents(ws: Path) -> dict[str, Any]:
    store = LocalStore(ws, create=False)
    try:
        local = local_ports(store)
        return _contents(
            Stores(store, store, local.investigate, local.catalog, local.queue, local.audit, local.aggregates)
        )
    finally:
        store.close()


def test_pik_commands_refuse_to_write_in_read_only_mode(
    workspace: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    lines = tmp_path / "new.jsonl"
    lines.write_bytes(b"\n".join(NEW) + b"\n")
    ws = ["--workspace", str(workspace)]
    scope = ["--entity", "u1", "--day", DAY]
    cases = [
        ["ingest", str(lines)],
        ["ingest", "-"],
        ["replay", *scope, "--execute", "--force"],
        ["process"],
        ["process", "--dry-run"],
    ]
    before = _workspace_contents(workspace)
    tried = 0
    for how in ("--read-only", "PIK_READ_ONLY"):
        for value in ("1", "true", "yes", "on") if how == "PIK_READ_ONLY" else ("",):
            for argv in cases:
                monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\n".join(NEW))))
                if how == "PIK_READ_ONLY":
                    monkeypatch.setenv("PIK_READ_ONLY", value)
                    code, out, err = cli(*argv, *ws)
                else:
                    monkeypatch.delenv("PIK_READ_ONLY", raising=False)
                    code, out, err = cli(*argv, *ws, "--read-only")
                tried += 1
                assert code == 1, (how, argv, err)
                assert err.startswith(f"pik {argv[0]}: error: ") and "read-only" in err, err
                assert err.count("\n") == 1 and "Traceback" not in err
                assert "running the same command again" not in err  # nothing was stored: no such advice
    # A dry run of a replay is still allowed, and audits nothing.
    code, out, err = cli("replay", *scope, *ws, "--read-only")
    assert code == 0 and "DRY RUN" in out, err
    monkeypatch.setenv("PIK_READ_ONLY", "maybe")
    code, _, err = cli("ingest", str(lines), *ws)
    assert code == 2 and "PIK_READ_ONLY must be true or false" in err
    monkeypatch.setenv("PIK_READ_ONLY", "1")
    code, _, err = cli("demo", "--workspace", str(tmp_path / "no-demo"), "--no-console")
    assert code == 1 and "read-only" in err and not (tmp_path / "no-demo").exists()
    code, _, err = cli("aws", "init", "--endpoint-url", "http://127.0.0.1:1")
    assert code == 1 and "read-only" in err
    assert _workspace_contents(workspace) == before
    figures(
        "read-only: pik commands",
        commands_tried=tried + 4,
        refused_exit_1=tried + 2,  # and pik demo, pik aws init
        dry_run_allowed=1,
        bad_setting_exit_2=1,
        changed=0,
    )


def _handlers_read_only(context: FakeLambdaContext) -> tuple[int, int, int]:
    response = ingest_handler.handler(rest_v1_event(NEW[0].decode()), context)
    body = json.dumps({**U1_REQUEST.model_dump(exclude_none=True), "force": True})
    replayed = replay_handler.handler(replay_v1(body), context)
    assert "read-only" in json.loads(replayed["body"])["error"]
    answer = processor_handler.handler(sqs_event([sqs_record(MESSAGE), sqs_record(MESSAGE)]), context)
    return response["statusCode"], replayed["statusCode"], len(answer["batchItemFailures"])


def test_the_handlers_refuse_with_pik_read_only_in_their_environment(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, figures: Any
) -> None:
    monkeypatch.setenv("PIK_READ_ONLY", "true")
    monkeypatch.setenv("PIK_BACKEND", "local")
    monkeypatch.setenv("PIK_WORKSPACE", str(workspace))
    before = _workspace_contents(workspace)
    common.configure(None)  # the settings and the backend from the environment, as in Lambda
    try:
        assert _handlers_read_only(FakeLambdaContext()) == (403, 403, 2)
    finally:
        backend = common.get_kit()
        common.configure(None)
        backend.close()
    assert _workspace_contents(workspace) == before
    figures("read-only: handlers with PIK_READ_ONLY (local)", handlers=3, refused=3, changed=0)


def test_the_handlers_refuse_with_pik_read_only_on_aws(monkeypatch: pytest.MonkeyPatch, figures: Any) -> None:
    from backend.adapters.aws.ports import aws_ports
    from tests.aws_env import moto_backend
    from tests.handlers.support import lambda_environment

    store, settings, close = moto_backend()
    try:
        ports = aws_ports(store, settings)
        stores = Stores(
            store, store, ports.investigate, ports.catalog, ports.queue, ports.audit, ports.aggregates
        )
        _seed(stores, FixedClock(T0))
        before = _contents(stores)
        lambda_environment(monkeypatch, settings)  # the stack from the environment, as in Lambda
        monkeypatch.setenv("PIK_READ_ONLY", "1")
        try:
            assert _handlers_read_only(FakeLambdaContext()) == (403, 403, 2)
        finally:
            common.configure(None)
        assert _contents(stores) == before
    finally:
        close()
    figures("read-only: handlers with PIK_READ_ONLY (aws)", handlers=3, refused=3, changed=0)
