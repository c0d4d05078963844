"""The services the console uses, built once from an opened backend (the composition root's work).

The console talks to these and to the backend's ports only, never to SQLite or boto3. A port the backend
does not offer (the AWS side before it has one) is None, and the pane that needs it says so.
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from typing import Any

from backend.errors import InvalidRequest, ReadOnlyError
from backend.model import MetricSpec
from backend.ports import EventIndex, RawStore
from backend.services.gaps import GapService
from backend.services.lag import LagService
from backend.services.processor import ProcessorService, metrics_with_default
from backend.services.replay import DEFAULT_CONFIRM_ABOVE, ReplayService
from backend.services.versions import VersionService

PORTS = ("investigate", "catalog", "queue", "audit", "aggregates")


def actor() -> str:
    """Who runs a replay from the console, for the audit trail: the OS user."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class ConsoleServices:
    """Everything the panes call. ``replay`` executes (refused when read-only); ``preview`` plans without
    writing a DRY_RUN audit record, so the live preview of the replay form does not flood the trail."""

    backend: Any  # backend.runtime.Backend
    index: EventIndex
    raw: RawStore
    investigate: Any | None
    catalog: Any | None
    queue: Any | None
    audit: Any | None
    aggregates: Any | None
    metrics: list[MetricSpec]
    confirm_above: int
    visibility_timeout_s: int

    @property
    def location(self) -> str:
        return str(self.backend.location)

    @property
    def read_only(self) -> bool:
        return bool(self.backend.read_only)

    @property
    def kind(self) -> str:
        return str(self.backend.name)

    def lag_service(self) -> LagService:
        if self.investigate is None:
            raise InvalidRequest(f"lag and gaps are not available on the {self.kind} backend yet")
        return LagService(self.index, self.investigate)

    def gap_service(self) -> GapService:
        if self.investigate is None:
            raise InvalidRequest(f"lag and gaps are not available on the {self.kind} backend yet")
        return GapService(self.index, self.investigate)

    def version_service(self) -> VersionService:
        if self.aggregates is None or self.investigate is None:
            raise InvalidRequest(f"aggregate versions are not available on the {self.kind} backend yet")
        return VersionService(self.aggregates, self.investigate, self.audit)

    def _replay(self, *, read_only: bool) -> ReplayService:
        if self.investigate is None or self.catalog is None or self.audit is None:
            raise InvalidRequest(f"replay is not available on the {self.kind} backend yet")
        return ReplayService(
            self.investigate,
            self.catalog,
            self.audit,
            queue=self.queue,
            aggregates=self.aggregates,
            bucket=self.raw.location,
            confirm_above=self.confirm_above,
            read_only=read_only,
        )

    def preview(self) -> ReplayService:
        return self._replay(read_only=True)

    def replay(self) -> ReplayService:
        return self._replay(read_only=self.read_only)

    def processor(self) -> ProcessorService:
        """The processor over this backend's queue; refused in read-only mode (it writes versions)."""
        if self.read_only:
            raise ReadOnlyError("the processor writes aggregate versions: not in read-only mode")
        if self.investigate is None or self.catalog is None or self.aggregates is None:
            raise InvalidRequest(f"the processor is not available on the {self.kind} backend")
        return ProcessorService(
            self.investigate, self.catalog, self.aggregates, self.metrics[1:], read_only=self.read_only
        )


def build_services(backend: Any) -> ConsoleServices:
    """The console's services over an opened :class:`backend.runtime.Backend`."""
    ports: dict[str, Any] = {name: getattr(backend, name, None) for name in PORTS}
    settings: Any = None
    if backend.name == "local":
        from backend.adapters.local.workspace import local_ports
        from backend.settings import load_settings

        settings = load_settings(backend.location)
        local = local_ports(backend.index, max_receives=settings.queue.max_receives)
        ports = {name: ports[name] or getattr(local, name) for name in PORTS}
    metrics = metrics_with_default(settings.metrics if settings is not None else [])
    return ConsoleServices(
        backend=backend,
        index=backend.index,
        raw=backend.raw,
        metrics=metrics,
        confirm_above=settings.replay.confirm_above if settings is not None else DEFAULT_CONFIRM_ABOVE,
        visibility_timeout_s=settings.queue.visibility_timeout_s if settings is not None else 30,
        **ports,
    )
