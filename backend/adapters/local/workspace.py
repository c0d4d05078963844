"""The local implementations of the investigation, replay and aggregate ports, over one workspace.

:class:`backend.adapters.local.store.LocalStore` is the raw store and the event index; the other ports
live in the same SQLite file and share its connections and write lock. ``local_ports`` hands them out
together, so a composition root needs one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.adapters.local.aggregates import LocalAggregates
from backend.adapters.local.audit import LocalAudit
from backend.adapters.local.catalog import LocalCatalog
from backend.adapters.local.investigate import LocalInvestigation
from backend.adapters.local.overview import LocalOverview
from backend.adapters.local.queue import LocalQueue
from backend.adapters.local.store import LocalStore
from backend.times import Clock


@dataclass(frozen=True)
class LocalPorts:
    investigate: LocalInvestigation
    catalog: LocalCatalog
    queue: LocalQueue
    audit: LocalAudit
    aggregates: LocalAggregates
    overview: LocalOverview


def local_ports(store: LocalStore, *, max_receives: int = 5, clock: Clock | None = None) -> LocalPorts:
    """The investigation, replay and aggregate stores of ``store``'s workspace. ``max_receives``: receives
    before a replay message is dead-lettered; ``clock``: the queue's clock (visibility timeouts)."""
    return LocalPorts(
        investigate=LocalInvestigation(store),
        catalog=LocalCatalog(store),
        queue=LocalQueue(store, max_receives=max_receives, clock=clock),
        audit=LocalAudit(store),
        aggregates=LocalAggregates(store),
        overview=LocalOverview(store),
    )
