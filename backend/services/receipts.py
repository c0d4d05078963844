"""Receipt numbers as people read them: ``#1``, ``#2``... for the duplicate receipts of one event, in
arrival order (the accepted receipt is ``#0``), whichever store is behind.

The local workspace numbers its receipts so already. On AWS a receipt id is a 24-character arrival-order
key (``1`` + epoch nanoseconds + 4 hex digits), unique in the table but unreadable: its ordinal is its
position among its event's receipts, read with :meth:`EventIndex.receipts` (one query of the receipts index
per distinct event shown; the stored items are not changed, so a stack is only read).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from backend.model import EventRecord, IngestStatus
from backend.ports import EventIndex

# Receipt ids this short and numeric are ordinals already (the local workspace's 0, 1, 2...).
_ORDINAL_DIGITS = 9


def ordinal_of(receipt: str | None) -> int | None:
    """``receipt`` as an ordinal if it is one already (local receipts), else None."""
    if receipt is not None and receipt.isdigit() and len(receipt) <= _ORDINAL_DIGITS:
        return int(receipt)
    return None


def ordinals_among(receipts: Sequence[EventRecord]) -> dict[str, int]:
    """The ordinal of each of ``receipts`` (one event's, accepted first, then in arrival order)."""
    out: dict[str, int] = {}
    duplicates = 0
    for r in receipts:
        if r.receipt is None:
            continue
        own = ordinal_of(r.receipt)
        if r.status is IngestStatus.ACCEPTED:
            out[r.receipt] = 0 if own is None else own
            continue
        duplicates += 1
        out[r.receipt] = duplicates if own is None else own
    return out


def receipt_ordinals(index: EventIndex, records: Iterable[EventRecord]) -> dict[tuple[str, str], int]:
    """For each receipt among ``records``, ``(event_id, receipt) -> ordinal``. Costs nothing where receipts
    are ordinals already; otherwise one :meth:`EventIndex.receipts` read per distinct event id with a
    duplicate receipt among ``records``."""
    out: dict[tuple[str, str], int] = {}
    unknown: dict[str, list[str]] = {}
    for r in records:
        if r.receipt is None:
            continue
        own = ordinal_of(r.receipt)
        if own is not None:
            out[(r.event_id, r.receipt)] = own
        elif r.status is IngestStatus.ACCEPTED:
            out[(r.event_id, r.receipt)] = 0
        else:
            unknown.setdefault(r.event_id, []).append(r.receipt)
    for event_id, wanted in unknown.items():
        listed = index.receipts(event_id)
        known = ordinals_among(listed)
        for receipt in wanted:
            if receipt in known:
                out[(event_id, receipt)] = known[receipt]
            else:  # not listed yet (the receipts index is eventually consistent): by its place in time
                earlier = sum(
                    1
                    for x in listed
                    if x.status is IngestStatus.DUPLICATE and x.receipt is not None and x.receipt < receipt
                )
                out[(event_id, receipt)] = earlier + 1
    return out


def receipt_label(r: EventRecord, ordinals: dict[tuple[str, str], int]) -> str:
    """``#<ordinal>`` of ``r`` (its stored id when no ordinal is known)."""
    if r.receipt is None:
        return "#0"
    n = ordinals.get((r.event_id, r.receipt), ordinal_of(r.receipt))
    return f"#{n}" if n is not None else f"#{r.receipt}"
