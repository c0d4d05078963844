"""The composition root: opens a backend (local workspace or AWS stack) and hands its stores to services.

Services see only the ports; this is the one module above them that knows which adapter is behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backend.config import AwsSettings, RuntimeSettings
from backend.errors import StoreError
from backend.ports import EventIndex, RawStore


@dataclass
class Backend:
    """An opened backend. ``name`` is ``local`` or ``aws``; ``location`` is what the header shows."""

    name: str
    raw: RawStore
    index: EventIndex
    location: str
    close: Callable[[], None]
    read_only: bool = False
    # The investigation, replay and aggregate ports (backend.ports): None where the backend has none (the
    # local ones are opened on demand from the workspace, see pik_console/investigate_cmd.backend_port).
    investigate: Any = None
    catalog: Any = None
    queue: Any = None
    audit: Any = None
    aggregates: Any = None
    # Where an interrupted bulk ingest resumes from (backend.ports.IngestLedger): the local index; None on
    # AWS, whose index has no lookup by origin and line.
    ledger: Any = None


def open_local(path: str | Path, *, create: bool = True, read_only: bool = False) -> Backend:
    from backend.adapters.local.store import LocalStore

    # Read-only opens nothing for writing: not even the upgrade of an older workspace's schema.
    store = LocalStore(Path(path), create=create and not read_only, upgrade=not read_only)
    return Backend("local", store, store, str(path), store.close, read_only, ledger=store)


def open_aws(settings: AwsSettings, *, read_only: bool = False) -> Backend:
    from backend.adapters.aws.ports import aws_ports
    from backend.adapters.aws.store import AwsStore

    store = AwsStore.from_settings(settings)
    where = settings.region or store.region
    location = f"{where} · stack {settings.stack}" if settings.stack else f"{where} · {settings.events_table}"
    if settings.endpoint_url:
        location += f" · {settings.endpoint_url}"
    ports = aws_ports(store, settings)
    return Backend(
        "aws",
        store,
        store,
        location,
        store.close,
        read_only,
        investigate=ports.investigate,
        catalog=ports.catalog,
        queue=ports.queue,
        audit=ports.audit,
        aggregates=ports.aggregates,
    )


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


def open_from_runtime(runtime: RuntimeSettings) -> Backend:
    """The backend a Lambda function (or ``pik serve``) runs on, from its environment."""
    if runtime.backend == "local":
        return open_local(runtime.workspace, read_only=runtime.read_only)
    return open_aws(AwsSettings(), read_only=runtime.read_only)
