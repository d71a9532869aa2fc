"""Confidence intervals for the rates `cai eval policy` reports, and for their differences.

Why Wilson rather than the textbook Wald interval ``p ± z·sqrt(p(1-p)/n)``: an eval here has
16–100 prompts per measure and the rates that matter sit near 0 or 1 (a policy that refuses
every harmful prompt, or none of the safe ones). There the Wald interval's coverage falls far
below 95%, and at k = 0 or k = n it collapses to zero width, claiming certainty from sixteen
answers. The Wilson score interval (Wilson 1927; Newcombe 1998, "Two-sided confidence intervals
for the single proportion", method 3) keeps close to nominal coverage at these sizes and never
leaves [0, 1].

For the difference of two rates (policy − baseline) `newcombe_diff` is Newcombe's hybrid score
interval (Newcombe 1998, "Interval estimation for the difference between independent
proportions", method 10), built from the two Wilson intervals. It assumes independent samples;
our two models answer the *same* prompts, and answers to one prompt are positively correlated,
so the interval is conservative (wider than a paired interval would be): a difference it calls
clear is clear, one it does not may still be real.
"""

from __future__ import annotations

import math
from typing import Any

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: two-sided 95%
DIGITS = 4


def _check(k: int, n: int) -> None:
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval for k successes in n trials; None when n = 0 (no rate)."""
    _check(k, n)
    if n == 0:
        return None
    p = k / n
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # At k = 0 (or n) the bound is exactly 0 (or 1); say so rather than leave rounding dust.
    lo = 0.0 if k == 0 else max(0.0, centre - half)
    hi = 1.0 if k == n else min(1.0, centre + half)
    return lo, hi


def newcombe_diff(k1: int, n1: int, k2: int, n2: int, z: float = Z95) -> tuple[float, float, float] | None:
    """(d, lo, hi) for d = k1/n1 − k2/n2 by Newcombe's hybrid score method; None if either n = 0."""
    w1, w2 = wilson(k1, n1, z), wilson(k2, n2, z)
    if w1 is None or w2 is None:
        return None
    (l1, u1), (l2, u2) = w1, w2
    p1, p2 = k1 / n1, k2 / n2
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return d, lo, hi


def rate_with_interval(k: int, n: int) -> dict[str, Any]:
    """``{"k", "n", "rate", "lo", "hi"}`` as summaries carry it (rate and bounds None when n = 0)."""
    w = wilson(k, n)
    if w is None:
        return {"k": k, "n": n, "rate": None, "lo": None, "hi": None}
    return {"k": k, "n": n, "rate": round(k / n, DIGITS), "lo": round(w[0], DIGITS), "hi": round(w[1], DIGITS)}


def difference_with_interval(k1: int, n1: int, k2: int, n2: int) -> dict[str, float] | None:
    """``{"d", "lo", "hi"}`` for rate 1 − rate 2 (`newcombe_diff`), rounded; None if either n = 0."""
    r = newcombe_diff(k1, n1, k2, n2)
    return None if r is None else {"d": round(r[0], DIGITS), "lo": round(r[1], DIGITS), "hi": round(r[2], DIGITS)}
