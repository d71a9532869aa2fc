"""The few summary figures every stage reports, computed and printed one way.

Summaries are JSON that people diff across runs, so every mean and share is rounded to four
places here rather than wherever it is computed.
"""

from __future__ import annotations

from collections.abc import Iterable

DIGITS = 4


def mean(xs: Iterable[float | None]) -> float | None:
    """The mean of the values that exist; None when there are none.

    A None in `xs` is a value that could not be had (a failed answer, an unparsed label); it is
    left out rather than counted as 0, and how many there were is reported next to the mean.
    """
    vals = [x for x in xs if x is not None]
    return round(sum(vals) / len(vals), DIGITS) if vals else None


def share(num: int, den: int) -> float | None:
    """num / den as a rounded fraction; None when there is nothing to divide by."""
    return round(num / den, DIGITS) if den else None


def pct(x: float | None) -> str:
    """A fraction as a percentage for the terminal, "-" when missing."""
    return "-" if x is None else f"{100 * x:.1f}%"
