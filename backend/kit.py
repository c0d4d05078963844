"""The composition root: from settings it opens a backend (a local workspace or an AWS stack) and hands out
its typed ports and the services built on them.

This is the one module above the services that knows which adapter is behind. The CLI, the console,
``pik serve`` and the Lambda handlers get everything from a :class:`Kit` and import no adapter (the
import-linter contracts in ``pyproject.toml`` hold this).

```python
with open_kit(load_settings({"workspace": ".pik-demo"})) as kit:
    plan = kit.replay().plan(request, actor="me")
```
"""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast

from backend.errors import NotConfigured, ReadOnlyError, StoreError
from backend.model import MetricSpec
from backend.ports import (
    AggregateStore,
    AuditLog,
    EventIndex,
    IngestLedger,
    InvestigationIndex,
    OverviewIndex,
    RawCatalog,
    RawStore,
    ReplayQueue,
    RollupMaintainer,
    WindowHeadsMaintainer,
)
from backend.services.drain import DrainService
from backend.services.gaps import GapService
from backend.services.ingest import IngestService
from backend.services.lag import LagService
from backend.services.overview import OverviewService
from backend.services.processor import ProcessorService, metrics_with_default
from backend.services.projection import Projector
from backend.services.replay import ReplayService
from backend.services.report import ReportService
from backend.services.versions import VersionService
from backend.settings import AwsSettings, Settings, WorkspaceSettings, load_settings

if TYPE_CHECKING:
    from backend.adapters.aws.store import AwsStore

BackendName = Literal["local", "aws"]

# The environment name that configures each optional AWS port, for the message when one is missing.
_AWS_SETTING = {"queue": "REPLAY_QUEUE_URL", "audit": "AUDIT_TABLE", "aggregates": "AGG_TABLE"}
# How to add what a stack lacks (the original kit's stacks have no audit table; docs/aws.md).
_HOW_TO_ADD = {
    "audit": (
        ": add one with `aws dynamodb create-table --table-name NAME --billing-mode PAY_PER_REQUEST "
        "--attribute-definitions AttributeName=PK,AttributeType=S AttributeName=SK,AttributeType=S "
        "--key-schema AttributeName=PK,KeyType=HASH AttributeName=SK,KeyType=RANGE` and set AUDIT_TABLE=NAME "
        "(docs/aws.md, 'Adding an audit table')"
    ),
}


@dataclass
class Kit:
    """An opened backend: its ports, and the services over them. Close it when done (or use ``with``).

    ``queue``, ``audit`` and ``aggregates`` are None on a stack that lacks those resources (the original
    kit's stacks have no audit table); a service that needs one raises NotConfigured naming the setting.
    """

    name: BackendName
    location: str
    """What the console header shows: the workspace folder, or region · stack · endpoint."""
    raw: RawStore
    index: EventIndex
    investigate: InvestigationIndex
    catalog: RawCatalog
    queue: ReplayQueue | None
    audit: AuditLog | None
    aggregates: AggregateStore | None
    ledger: IngestLedger | None
    """Where an interrupted bulk ingest resumes from: the index itself (on AWS, its line items)."""
    settings: Settings
    read_only: bool = False
    rollups: RollupMaintainer | None = None
    """Keeps the stack's rollups from its events stream (AWS only: ``handlers/rollup.py``)."""
    window_heads: WindowHeadsMaintainer | None = None
    """Backfills the aggregates table's window heads (AWS with an aggregates table only)."""
    _close: Callable[[], None] = field(default=lambda: None, repr=False)
    overview_index: OverviewIndex | None = None
    """The overview's rollups (per hour, entity-day, rejection reason, versioned window)."""

    # -- lifetime -------------------------------------------------------------------------------------------

    def close(self) -> None:
        self._close()

    def __enter__(self) -> Kit:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- settings -------------------------------------------------------------------------------------------

    def workspace_settings(self) -> WorkspaceSettings:
        """The replay, queue and metric settings in force now. A local workspace's ``settings.toml`` is read
        again on each call, so that an edit applies to the next command of a long-lived process (the
        console, ``pik serve``) without reopening. Raises WorkspaceError naming what is wrong with it."""
        if self.name != "local":
            return self.settings.workspace_sections
        return load_settings({"backend": "local", "workspace": self.location}).workspace_sections

    def metrics(self) -> list[MetricSpec]:
        """Every metric the processor computes, ``daily_event_count`` first (InvalidRequest if one of the
        configured metrics is not valid)."""
        return metrics_with_default(self.workspace_settings().metrics)

    def need(self, *ports: str) -> None:
        """Raise NotConfigured naming the setting of the first of ``ports`` this backend lacks."""
        for port in ports:
            if getattr(self, port) is None:
                where = f" ({_AWS_SETTING[port]} is not set)" if self.name == "aws" else ""
                how = _HOW_TO_ADD.get(port, "") if self.name == "aws" else ""
                raise NotConfigured(f"the {self.name} backend has no {port} store{where}{how}")

    # -- services -------------------------------------------------------------------------------------------

    def ingest(self) -> IngestService:
        return IngestService(self.raw, self.index, read_only=self.read_only)

    def replay(self, *, preview: bool = False) -> ReplayService:
        """Plans and executes replays. ``preview``: a read-only service (plans without an audit record of
        a dry run, for a live preview); executing is then refused."""
        # A preview writes no audit record, so a stack without an audit table can still preview.
        audit = self.audit if preview and self.audit is not None else None
        sections = self.workspace_settings()
        projector = None
        if self.aggregates is not None and sections.replay.project_windows:
            projector = Projector(
                self.investigate,
                self.catalog,
                self.aggregates,
                metrics_with_default(sections.metrics)[1:],
                limit=sections.replay.project_windows,
                max_events=sections.replay.project_events,
            )
        return ReplayService(
            self.investigate,
            self.catalog,
            audit or (cast("AuditLog", _NoAudit(self)) if preview else self.audit_log()),
            queue=self.queue,
            aggregates=self.aggregates,
            projector=projector,
            bucket=self.raw.location,
            confirm_above=sections.replay.confirm_above,
            read_only=self.read_only or preview,
        )

    def processor(self, *, dry_run: bool = False) -> ProcessorService:
        """Recomputes aggregate versions from whole windows. ReadOnlyError in read-only mode (even for a
        dry run: receiving a message counts toward its dead-letter limit); InvalidRequest for a configured
        metric that is not valid; NotConfigured without an aggregate store."""
        if self.read_only:
            raise ReadOnlyError(
                "the processor receives replay messages and writes aggregate versions: "
                "refused in read-only mode"
            )
        self.need("aggregates")
        assert self.aggregates is not None
        return ProcessorService(
            self.investigate,
            self.catalog,
            self.aggregates,
            self.metrics()[1:],
            dry_run=dry_run,
            read_only=self.read_only,
        )

    def drain(self, *, dry_run: bool = False) -> DrainService:
        """Drains the replay queue through the processor (``pik process``, the console's ``p``);
        ReadOnlyError in read-only mode, NotConfigured without a queue or an aggregate store."""
        processor = self.processor(dry_run=dry_run)
        self.need("queue")
        assert self.queue is not None
        visibility = self.workspace_settings().queue.visibility_timeout_s
        return DrainService(self.queue, processor, visibility_timeout_s=visibility)

    def lag(self) -> LagService:
        return LagService(self.index, self.investigate)

    def gaps(self) -> GapService:
        return GapService(self.index, self.investigate)

    def overview(self) -> OverviewService:
        """What is wrong in a range of days, ranked (``pik overview``); reads only."""
        if self.overview_index is None:
            raise NotConfigured(f"the {self.name} backend has no overview rollups")
        return OverviewService(self.overview_index, self.workspace_settings().overview)

    def versions(self) -> VersionService:
        self.need("aggregates")
        assert self.aggregates is not None
        return VersionService(self.aggregates, self.investigate, self.audit)

    def report(self) -> ReportService:
        """Gathers the facts of an incident report of one (entity, day); reads only."""
        return ReportService(
            self.index,
            self.investigate,
            self.audit,
            self.aggregates,
            catalog=self.catalog,
            queue=self.queue,
            backend=self.name,
            location=self.location,
        )

    def audit_log(self) -> AuditLog:
        """The audit trail of replays; NotConfigured on a stack without one (the original kit had none)."""
        self.need("audit")
        assert self.audit is not None
        return self.audit


class _NoAudit:
    """The audit port of a stack without an audit table, for a replay preview (which writes none): every
    call raises NotConfigured naming the setting."""

    def __init__(self, kit: Kit) -> None:
        self._kit = kit

    def __getattr__(self, name: str) -> Any:
        self._kit.need("audit")
        raise AttributeError(name)


def current_user() -> str:
    """Who runs a replay from this process, for the audit trail: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no user name in a container without an /etc/passwd entry
        return "unknown"


# -- opening ------------------------------------------------------------------------------------------------


def open_kit(
    settings: Settings, *, create: bool = False, on_upgrade: Callable[[int, int], None] | None = None
) -> Kit:
    """The backend ``settings.backend`` names, opened. ``create``: make a local workspace that does not
    exist yet (refused read-only). ``on_upgrade(version, latest)``: told before an older local workspace's
    schema is upgraded (which can take a while). Raises StoreError (WorkspaceError, NotConfigured) naming
    the problem."""
    if settings.backend == "aws":
        missing = settings.aws.missing("raw_bucket", "events_table", "dedupe_table")
        if missing:
            raise NotConfigured(
                "the aws backend needs a --stack NAME or the environment names " + ", ".join(missing)
            )
        return open_aws(settings.aws, settings=settings)
    return open_local(settings.workspace, create=create, settings=settings, on_upgrade=on_upgrade)


def open_local(
    path: str | Path,
    *,
    create: bool = True,
    read_only: bool = False,
    settings: Settings | None = None,
    on_upgrade: Callable[[int, int], None] | None = None,
) -> Kit:
    """A local workspace folder. Read-only (``read_only`` or ``settings.read_only``) writes nothing, not
    even the upgrade of an older workspace's schema (it is refused, with how to upgrade it); otherwise
    ``on_upgrade(version, latest)`` is told before one is upgraded."""
    from backend.adapters.local.store import LocalStore
    from backend.adapters.local.workspace import local_ports

    settings = settings or load_settings({"backend": "local", "workspace": Path(path)})
    read_only = read_only or settings.read_only
    store = LocalStore(
        Path(path), create=create and not read_only, upgrade=not read_only, on_upgrade=on_upgrade
    )
    try:
        sections = load_settings({"backend": "local", "workspace": Path(path)}).workspace_sections
        ports = local_ports(store, max_receives=sections.queue.max_receives)
    except BaseException:
        store.close()
        raise
    return _kit("local", str(path), store, ports, store, settings, read_only, store.close)


def workspace_exists(path: str | Path) -> bool:
    """Whether ``path`` holds a workspace's database (without opening it)."""
    from backend.adapters.local.store import DB_NAME

    return (Path(path) / DB_NAME).exists()


def open_aws(aws: AwsSettings, *, read_only: bool = False, settings: Settings | None = None) -> Kit:
    """An AWS stack by its resource names. The queue's dead-letter limit is read from its redrive policy."""
    from backend.adapters.aws.store import AwsStore

    store = AwsStore.from_settings(aws)
    return aws_kit(store, aws, read_only=read_only, settings=settings, close=store.close)


def aws_kit(
    store: AwsStore,
    aws: AwsSettings,
    *,
    read_only: bool = False,
    settings: Settings | None = None,
    close: Callable[[], None] | None = None,
) -> Kit:
    """The kit over an opened AWS store (its other ports share the store's clients); closing the kit calls
    ``close`` (default: nothing, the caller keeps the store)."""
    from backend.adapters.aws.ports import aws_ports

    settings = settings or load_settings({"backend": "aws"}, default_backend="aws")
    where = aws.region or store.region
    location = f"{where} · stack {aws.stack}" if aws.stack else f"{where} · {aws.events_table}"
    if aws.endpoint_url:
        location += f" · {aws.endpoint_url}"
    ports = aws_ports(store, aws)
    kit = _kit("aws", location, store, ports, store, settings, read_only, close or (lambda: None))
    kit.rollups = ports.rollups
    kit.window_heads = ports.window_heads
    return kit


class _RawAndIndex(RawStore, EventIndex, Protocol):
    """A store that is both the raw store and the event index (each adapter's main store is)."""


class _PortSet(Protocol):
    """The other ports of one backend, as each adapter hands them out together."""

    @property
    def investigate(self) -> InvestigationIndex: ...
    @property
    def catalog(self) -> RawCatalog: ...
    @property
    def queue(self) -> ReplayQueue | None: ...
    @property
    def audit(self) -> AuditLog | None: ...
    @property
    def aggregates(self) -> AggregateStore | None: ...
    @property
    def overview(self) -> OverviewIndex | None: ...


def _kit(
    name: BackendName,
    location: str,
    store: _RawAndIndex,
    ports: _PortSet,
    ledger: IngestLedger | None,
    settings: Settings,
    read_only: bool,
    close: Callable[[], None],
) -> Kit:
    """A kit whose raw store and index are ``store`` and whose other ports are ``ports``'s."""
    return Kit(
        name=name,
        location=location,
        raw=store,
        index=store,
        investigate=ports.investigate,
        catalog=ports.catalog,
        queue=ports.queue,
        audit=ports.audit,
        aggregates=ports.aggregates,
        ledger=ledger,
        settings=settings,
        read_only=read_only or settings.read_only,
        _close=close,
        overview_index=ports.overview,
    )


def validate_aws_prefix(prefix: str) -> str:
    """``prefix`` if resource names can start with it (``pik aws init --prefix``); InvalidRequest if not."""
    from backend.adapters.aws.provision import validate_prefix

    return validate_prefix(prefix)


def provision_aws(
    aws: AwsSettings, prefix: str, *, session: Any, on_step: Callable[[Any], None]
) -> dict[str, str]:
    """Create (or reuse) the template's resources on ``aws.endpoint_url`` (a moto server, LocalStack);
    ``on_step`` hears each resource as it is done. Returns the environment names and their values."""
    from backend.adapters.aws.provision import provision

    return provision(aws, prefix, session=session, on_step=on_step)


def stack_settings(base: AwsSettings, stack: str) -> AwsSettings:
    """``base`` with the resource names read from the outputs of CloudFormation stack ``stack``."""
    from backend.adapters.aws.clients import make_clients
    from backend.adapters.aws.resources import OUTPUT_TO_SETTING

    cfn = make_clients(base).cloudformation()
    try:
        described = cfn.describe_stacks(StackName=stack)["Stacks"]
    except Exception as exc:  # botocore errors carry the reason in their text
        raise StoreError(f"cannot read stack {stack!r}: {exc}") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in described[0].get("Outputs", [])}
    values = {OUTPUT_TO_SETTING[k].lower(): v for k, v in outputs.items() if k in OUTPUT_TO_SETTING}
    return base.model_copy(update={**values, "stack": stack})
