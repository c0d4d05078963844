"""JSON read strictly: an object that names a key twice is an error, not a guess.

Parsers disagree on which of two values counts (Python keeps the last, others the first), so a request
such as ``{"force": false, "force": true}`` could mean one thing to a proxy and another to the kit.
"""

from __future__ import annotations

from typing import Any


class DuplicateKey(ValueError):
    """An object named ``key`` more than once."""

    def __init__(self, key: str) -> None:
        super().__init__(f"duplicate key {key[:64]!r} in an object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An ``object_pairs_hook`` for :mod:`json`: the object, or :class:`DuplicateKey`."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))  # type: ignore[func-returns-value]
    return obj
