"""One backup copy of a table per DynamoDB transaction on moto, where moto 5.2.5 makes one per item.

moto's ``transact_write_items`` backs up, before it applies anything, each table an item of the transaction
names: ``copy.deepcopy(self.tables[name])``, once per *item*. A transaction of 100 items on one table copies
the whole table 100 times, and every copy is the same state (all are taken before the first item is
applied); they serve only a rollback, which puts one of them back. With a few thousand items in a table,
the rollup tests spent most of their minutes in those copies.

:func:`install` makes the copies of a :class:`Table` taken during one ``transact_write_items`` call come from
one deep copy per table: the same state, the same rollback, copied once. Nothing else moto copies is
touched (an item's copy inside an update is made as before), and moto's answers are unchanged. It only
speeds moto up: the tests' emulated DynamoDB behaves as it did.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

from moto.dynamodb import models

_state = threading.local()
_deepcopy = copy.deepcopy


class _CopyOncePerTransaction:
    """Stands in for the ``copy`` module inside ``moto.dynamodb.models``."""

    def deepcopy(self, obj: Any, memo: Any = None) -> Any:
        taken: dict[int, tuple[Any, Any]] | None = getattr(_state, "taken", None)
        if taken is None or memo is not None or not isinstance(obj, models.Table):
            return _deepcopy(obj, memo)
        if id(obj) not in taken:
            taken[id(obj)] = (obj, _deepcopy(obj))  # the table is kept alive: its id stays its own
        return taken[id(obj)][1]

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def install() -> None:
    """Idempotent; affects this process's moto (in-process mocks and threaded moto servers)."""
    backend = models.DynamoDBBackend
    if getattr(backend.transact_write_items, "_copies_once", False):
        return
    original = backend.transact_write_items

    @functools.wraps(original)
    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        _state.taken = {}
        try:
            return original(self, transact_items)
        finally:
            _state.taken = None

    transact_write_items._copies_once = True  # type: ignore[attr-defined]
    backend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    models.copy = _CopyOncePerTransaction()  # type: ignore[assignment]
