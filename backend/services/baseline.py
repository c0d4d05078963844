"""Robust baselines for ``pik overview``: the median of a series and its spread as the MAD, day-of-week aware.

A day is judged against the *other* days of its series (so an incident does not lift its own baseline);
once the series covers three weeks or more, only the same weekday counts (Mondays against Mondays), when
there are at least three of them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date

# The MAD of a normal distribution times this is its standard deviation.
MAD_SCALE = 1.4826
WEEKLY_FROM_DAYS = 21
MIN_SAME_WEEKDAY = 3


@dataclass(frozen=True, slots=True)
class Baseline:
    """What a value is compared with: the median of its peers and their spread (scaled MAD)."""

    median: float
    spread: float
    peers: int
    weekday: bool  # the peers are the same weekday only

    def above(self, value: float, k: float) -> bool:
        """Whether ``value`` is more than ``k`` spreads above the median (any amount when the spread is 0)."""
        return value > self.median + k * self.spread

    def below(self, value: float, k: float) -> bool:
        return value < self.median - k * self.spread


def robust(values: Sequence[float], *, weekday: bool = False) -> Baseline:
    """The median and scaled MAD of ``values`` (0, 0 when empty)."""
    if not values:
        return Baseline(0.0, 0.0, 0, weekday)
    median = float(statistics.median(values))
    mad = float(statistics.median([abs(v - median) for v in values]))
    return Baseline(median, MAD_SCALE * mad, len(values), weekday)


def with_count_noise(base: Baseline) -> Baseline:
    """``base`` with a spread of at least the square root of its median: counts of independent arrivals
    vary that much (Poisson) however steady a few peer days happened to be."""
    return replace(base, spread=max(base.spread, math.sqrt(max(base.median, 0.0))))


def day_baseline(series: Mapping[str, float], day: str) -> Baseline:
    """The baseline of ``day`` in a daily series (every day of the series present, zeros included): the
    other days, or the other same weekdays when the series spans three weeks and has three of them."""
    others = {d: v for d, v in series.items() if d != day}
    if len(series) >= WEEKLY_FROM_DAYS:
        weekday = date.fromisoformat(day).weekday()
        same = [v for d, v in others.items() if date.fromisoformat(d).weekday() == weekday]
        if len(same) >= MIN_SAME_WEEKDAY:
            return robust(same, weekday=True)
    return robust(list(others.values()))
