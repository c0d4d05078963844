"""The fingerprint of a replay's message list: sha256 over its receipts in order (event id and receipt),
so that equal lists have equal fingerprints and an execution can refuse a plan that is not the preview.

One line per receipt, ``"{event_id}:{receipt or ''}\\n"`` (UTF-8). The form is stored in audit records
and typed back by users (``--expect``): it must never change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from backend.ports import Receipt


def fingerprint(items: Sequence[Receipt]) -> str:
    """sha256 over the receipts in order (event id and receipt): equal lists, equal fingerprints."""
    digest = hashlib.sha256()
    for r in items:
        digest.update(f"{r.event_id}:{r.receipt or ''}\n".encode())
    return digest.hexdigest()
