"""The range a value can take: a closed (or half-open) interval of real numbers, possibly integral.

Interval analysis (``kdsl.analysis.intervals``) gives every numeric node of a program one; each
operation's rule for it is in its ``kdsl.operators`` entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

INF = math.inf


@dataclass(frozen=True)
class Interval:
    lo: float
    hi: float
    integral: bool = False
    lo_open: bool = False  # the value never equals lo (only declared ranges and sums say so)
    hi_open: bool = False

    def __contains__(self, value: float) -> bool:
        if (self.lo_open and value == self.lo) or (self.hi_open and value == self.hi):
            return False
        return self.lo <= value <= self.hi

    @property
    def empty(self) -> bool:
        return self.lo > self.hi


EVERYTHING = Interval(-INF, INF)
UNIT = Interval(0.0, 1.0)
COUNT = Interval(0.0, INF, True)
NONNEGATIVE = Interval(0.0, INF)


def fmt(value: float) -> str:
    if value in (INF, -INF):
        return "infinity" if value > 0 else "-infinity"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}"


def hull(a: Interval, b: Interval) -> Interval:
    return Interval(min(a.lo, b.lo), max(a.hi, b.hi), a.integral and b.integral)


def products(a: Interval, b: Interval) -> Interval:
    values = []
    for x in (a.lo, a.hi):
        for y in (b.lo, b.hi):
            values.append(0.0 if (x == 0 or y == 0) else x * y)
    return Interval(min(values), max(values), a.integral and b.integral)


def safe(f, x: float, fallback: float) -> float:
    try:
        return f(x)
    except OverflowError:
        return fallback
