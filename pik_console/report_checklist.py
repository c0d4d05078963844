"""The seed's "before closing an incident" checklist, checked against the facts of a report: what the tool
can check is ticked or not with the reason, the rest is left to the person closing the incident.

Shared by the Markdown (``report.py``) and HTML (``report_html.py``) renderers, so both tick the same boxes
for the same reasons. A reason is a tuple of pieces: plain text the kit wrote, and :class:`Ident` pieces
that are identifiers from the data (a renderer shows them as code, escaped as its format needs).
"""

from __future__ import annotations

from dataclasses import dataclass

from backend.model import ReplayOutcome
from backend.services.report import IncidentReport


class Ident(str):
    """An identifier from the data (a replay id) inside a reason: shown as code."""

    __slots__ = ()


@dataclass(frozen=True)
class Check:
    """One line of the checklist: ticked or not, and why (pieces, see the module)."""

    ok: bool
    label: str
    why: tuple[str, ...]


def _joined(ids: list[str]) -> list[str]:
    pieces: list[str] = []
    for i, value in enumerate(ids):
        if i:
            pieces.append(", ")
        pieces.append(Ident(value))
    return pieces


def checklist(f: IncidentReport) -> list[Check]:
    """The five lines of the checklist, in the seed's order; the last (the root cause) is never ticked."""
    checks = []
    receipts = f.events + f.duplicates
    raw_ok = bool(receipts) and not f.raw_missing
    if raw_ok:
        why = f"all {receipts:,} receipts of the window have their raw bytes"
    else:
        why = (
            f"{f.raw_missing:,} receipts have no raw bytes" if f.raw_missing else "no receipts in the window"
        )
    checks.append(Check(raw_ok, "Raw events verified", (why,)))
    sent = [a for a in f.replays if a.outcome is ReplayOutcome.SENT]
    pieces: list[str] = (
        [
            f"{len(sent)} replay(s) covering the window were sent in full: ",
            *_joined([a.replay_id for a in sent]),
        ]
        if sent
        else ["no replay covering the window was sent"]
    )
    checks.append(Check(bool(sent), "Replay scoped correctly", tuple(pieces)))
    caused = {r for v in f.versions for r in v.replay_ids}
    observed = [a.replay_id for a in sent if a.replay_id in caused]
    pieces = (
        ["versions were computed from replay ", *_joined(observed)]
        if observed
        else ["no version was computed from a replay of this window"]
    )
    pieces.append(
        f"; {f.dead_letters:,} messages in the dead-letter queue" if f.dead_letters else "; no dead letters"
    )
    checks.append(Check(bool(observed) and f.dead_letters == 0, "Processor behavior observed", tuple(pieces)))
    valid = bool(f.versions) and not f.drift
    if valid:
        why = "the latest version of every metric has exactly the inputs the index holds now"
    elif f.drift:
        why = f"{', '.join(f.drift)}: the index now holds other inputs than the latest version"
    else:
        why = "no versions"
    checks.append(Check(valid, "Aggregate version validated", (why + " (a person confirms the numbers)",)))
    checks.append(
        Check(False, "Root cause documented", ("yours to write: what broke, why, and what was done",))
    )
    return checks
