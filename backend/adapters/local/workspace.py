"""The local implementations of the investigation, replay and aggregate ports, over one workspace.

:class:`backend.adapters.local.store.LocalStore` is the raw store and the event index; the other ports
live in the same SQLite file and share its connections and write lock. ``local_ports`` hands them out
together, so a composition root needs one call.
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.adapters.local.investigate import LocalInvestigation
from backend.adapters.local.store import LocalStore


@dataclass(frozen=True)
class LocalPorts:
    investigate: LocalInvestigation


def local_ports(store: LocalStore) -> LocalPorts:
    """The investigation, replay and aggregate stores of ``store``'s workspace."""
    return LocalPorts(investigate=LocalInvestigation(store))
