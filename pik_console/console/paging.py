"""Rows of a keyset-paged listing, around an anchor, a page at a time (the model behind the event list).

A listing is read in two chains from an anchor: *forward* (the rows after it, ascending) and *backward*
(the rows before it, read descending and shown reversed). Opening a window at its start anchors there
(no backward chain); "jump to the end" anchors at the end and reads one descending page, so the last
rows of a million-event window cost one query, never a walk through the window. A jump to a time anchors
at that time.

Only the pages' cursors and sizes are kept for every page read (a few dozen bytes a page); the rows
themselves live in a small LRU of pages. A page evicted and scrolled back to is read again with its own
cursor. Nothing here does I/O: the widget asks :meth:`PagedRows.wanted` which pages the visible rows
need, reads them in a worker, and hands them back with :meth:`PagedRows.add`.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Chain(StrEnum):
    FORWARD = "forward"
    BACKWARD = "backward"


@dataclass(frozen=True, slots=True)
class PageRequest:
    """One page to read: the ``index``-th page of ``chain``, read with ``cursor`` (None: the first)."""

    generation: int
    chain: Chain
    index: int
    cursor: str | None


@dataclass(slots=True)
class _Meta:
    cursor: str | None  # what the page was read with
    count: int
    next_cursor: str | None


@dataclass(slots=True)
class _ChainState:
    open: bool  # False: this side of the anchor holds nothing (e.g. no backward chain at the start)
    pages: list[_Meta] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)  # cumulative row counts of pages[0..i]

    @property
    def complete(self) -> bool:
        return not self.open or (bool(self.pages) and self.pages[-1].next_cursor is None)

    @property
    def rows(self) -> int:
        return self.ends[-1] if self.ends else 0

    def locate(self, position: int) -> tuple[int, int]:
        """(page index, index within the page) of the ``position``-th row from the anchor."""
        page = bisect.bisect_right(self.ends, position)
        start = self.ends[page - 1] if page else 0
        return page, position - start


class PagedRows:
    """The rows read so far around one anchor, in display order (oldest first).

    ``generation`` tells the results of this listing from those of a listing it replaced.
    """

    def __init__(
        self, *, generation: int, forward: bool = True, backward: bool = False, cache_pages: int = 16
    ) -> None:
        self.generation = generation
        self.chains = {Chain.FORWARD: _ChainState(forward), Chain.BACKWARD: _ChainState(backward)}
        self.cache_pages = max(cache_pages, 2)
        self._cache: OrderedDict[tuple[Chain, int], list[Any]] = OrderedDict()
        self.pages_read = 0

    # -- shape ------------------------------------------------------------------------------------------

    @property
    def total(self) -> int:
        """Rows known so far (both chains)."""
        return self.chains[Chain.BACKWARD].rows + self.chains[Chain.FORWARD].rows

    @property
    def complete(self) -> bool:
        """Both chains read to their ends: ``total`` is the whole listing."""
        return all(c.complete for c in self.chains.values())

    @property
    def at_start(self) -> bool:
        return self.chains[Chain.BACKWARD].complete

    @property
    def at_end(self) -> bool:
        return self.chains[Chain.FORWARD].complete

    def cached_pages(self) -> int:
        return len(self._cache)

    def _where(self, row: int) -> tuple[Chain, int, int] | None:
        back = self.chains[Chain.BACKWARD]
        if row < 0 or row >= self.total:
            return None
        if row < back.rows:
            page, offset = back.locate(back.rows - 1 - row)
            return Chain.BACKWARD, page, offset
        page, offset = self.chains[Chain.FORWARD].locate(row - back.rows)
        return Chain.FORWARD, page, offset

    def row(self, row: int) -> Any | None:
        """The item shown at ``row`` (0 = top), or None if its page is not in memory (ask :meth:`wanted`)."""
        where = self._where(row)
        if where is None:
            return None
        chain, page, offset = where
        items = self._cache.get((chain, page))
        if items is None:
            return None
        self._cache.move_to_end((chain, page))
        return items[offset]

    def find(self, predicate: Any) -> int | None:
        """The first row in memory whose item satisfies ``predicate``."""
        for row in range(self.total):
            where = self._where(row)
            assert where is not None
            items = self._cache.get(where[:2])
            if items is not None and predicate(items[where[2]]):
                return row
        return None

    # -- what to read --------------------------------------------------------------------------------------

    def wanted(self, first: int, last: int, margin: int = 0) -> list[PageRequest]:
        """The pages needed to show rows ``first..last`` (inclusive) with ``margin`` rows to spare: the
        evicted pages in that range, and the next page of a chain whose end is within reach."""
        out: list[PageRequest] = []
        seen: set[tuple[Chain, int]] = set()
        lo = max(first - margin, 0)
        hi = min(last + margin, self.total - 1)
        for row in range(lo, hi + 1):
            where = self._where(row)
            assert where is not None
            key = where[:2]
            if key in seen:
                continue
            seen.add(key)
            if key not in self._cache:
                chain, index = key
                meta = self.chains[chain].pages[index]
                out.append(PageRequest(self.generation, chain, index, meta.cursor))
        if first - margin < 0 or self.total == 0:
            request = self._next(Chain.BACKWARD)
            if request is not None:
                out.append(request)
        if last + margin >= self.total:
            request = self._next(Chain.FORWARD)
            if request is not None:
                out.append(request)
        return out

    def _next(self, chain: Chain) -> PageRequest | None:
        state = self.chains[chain]
        if state.complete:
            return None
        cursor = state.pages[-1].next_cursor if state.pages else None
        return PageRequest(self.generation, chain, len(state.pages), cursor)

    # -- results ----------------------------------------------------------------------------------------

    def add(self, request: PageRequest, items: Sequence[Any], next_cursor: str | None) -> int:
        """Take the answer to ``request``; returns how many rows appeared above the rows shown before (the
        caller moves its scroll position and cursor down by as much). Stale answers are ignored."""
        if request.generation != self.generation:
            return 0
        state = self.chains[request.chain]
        shift = 0
        if request.index == len(state.pages):
            state.pages.append(_Meta(request.cursor, len(items), next_cursor))
            state.ends.append(state.rows + len(items))
            if request.chain is Chain.BACKWARD:
                shift = len(items)
        elif request.index < len(state.pages):
            # A page read again after eviction: keep its place and size (rows that arrived since are seen
            # on the next refresh of the listing, not squeezed in here).
            count = state.pages[request.index].count
            items = list(items[:count]) + [None] * max(count - len(items), 0)
        else:
            return 0  # a page beyond the next one cannot be placed
        # Rows are kept in reading order (a backward page newest first): locate() counts from the anchor.
        rows = list(items)
        self._cache[(request.chain, request.index)] = rows
        self._cache.move_to_end((request.chain, request.index))
        while len(self._cache) > self.cache_pages:
            self._cache.popitem(last=False)
        self.pages_read += 1
        return shift
