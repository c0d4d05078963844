"""The JSON shape of a replay plan and of a replay result, as the CLI's ``--json`` and the API answer them:
the seed's ``entity_id``, ``scanned`` and ``sent``, then the plan or the audit record."""

from __future__ import annotations

from typing import Any

from backend.model import ReplayAudit, ReplayPlan


def plan_response(plan: ReplayPlan) -> dict[str, Any]:
    """A dry run's answer in the seed's terms (``entity_id``, ``scanned``, ``sent``) plus the plan."""
    return {
        "entity_id": plan.request.entity_id,
        "scanned": plan.scanned,
        "sent": 0,
        "dry_run": True,
        **plan.model_dump(mode="json"),
    }


def result_response(audit: ReplayAudit) -> dict[str, Any]:
    """An execution's answer in the seed's terms plus its audit record."""
    return {
        "entity_id": audit.request.entity_id,
        "scanned": audit.scanned,
        "sent": audit.sent,
        **audit.model_dump(mode="json"),
    }
