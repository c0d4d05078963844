"""The fingerprint of a replay's message list: sha256 over its receipts in order (event id and receipt),
so that equal lists have equal fingerprints and an execution can refuse a plan that is not the preview.

One line per receipt, ``"{event_id}:{receipt or ''}\\n"`` (UTF-8). The form is stored in audit records
and typed back by users (``--expect``): it must never change.

A :class:`Fingerprint` is built as the list is read (never holding it) and keeps a checkpoint, the digest
so far, after every :data:`CHECKPOINT_EVERY` receipts: an execution that reads the list again checks each
stretch against its checkpoint before sending it, so a list that changed in between is caught there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from backend.ports import Receipt

CHECKPOINT_EVERY = 4096


def line(r: Receipt) -> str:
    """The fingerprint's line of one receipt."""
    return f"{r.event_id}:{r.receipt or ''}\n"


class Fingerprint:
    """The fingerprint of a list given a stretch at a time (:meth:`add_lines`), with its checkpoints."""

    def __init__(self) -> None:
        self._digest = hashlib.sha256()
        self.count = 0
        self.checkpoints: list[str] = []

    def add_lines(self, lines: Sequence[str]) -> None:
        """Add the lines of the next receipts (:func:`line`'s form), in order."""
        start = 0
        while start < len(lines):
            room = CHECKPOINT_EVERY - self.count % CHECKPOINT_EVERY
            part = lines[start : start + room]
            self._digest.update("".join(part).encode())
            self.count += len(part)
            start += len(part)
            if self.count % CHECKPOINT_EVERY == 0:
                self.checkpoints.append(self._digest.hexdigest())

    def add(self, items: Iterable[Receipt]) -> None:
        self.add_lines([line(r) for r in items])

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


def fingerprint(items: Sequence[Receipt]) -> str:
    """sha256 over the receipts in order (event id and receipt): equal lists, equal fingerprints."""
    f = Fingerprint()
    f.add(items)
    return f.hexdigest()
