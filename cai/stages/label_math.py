"""The arithmetic of a judge's answers: which side a probability picks, and one pair's result.

Kept apart from `cai.stages.label` (which runs the judge) so that the exports and reports that
read labels (`label_export`, `evaluate`, `judge_eval`, benchmarks) need not import the runner.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

TIE_EPS = 1e-9  # averaging mirrored orders (0.9 and 1 - 0.9) must give a tie, not 0.5 - 1 ulp
# A *label* this close to 0.5 is a tie: no side is preferred, so it is not exported and the
# summary counts it. 1e-4 is far above float32 scoring noise (~1e-7) and far below any
# preference worth training on (a logit gap of 4e-4).
LABEL_TIE_TOL = 1e-4


def decision(p: float | None) -> str | None:
    """Which response a probability picks: "a", "b", or None for a tie or no answer."""
    if p is None or abs(p - 0.5) <= TIE_EPS:
        return None
    return "a" if p > 0.5 else "b"


def is_tie(p: float | None) -> bool:
    """A pair's label with no preferred side: |p - 0.5| < `LABEL_TIE_TOL` (None: no label)."""
    return p is not None and abs(p - 0.5) < LABEL_TIE_TOL


def label_decision(p: float | None) -> str | None:
    """The chosen side of a pair's label: like `decision`, with near-ties (`is_tie`) as None."""
    return None if is_tie(p) else decision(p)


def aggregate(refs: Sequence[str], answers: list[dict[str, Any]]) -> dict[str, Any]:
    """One pair's result from its answers: per-principle order means, then the principle mean.

    `refs` are the drawn principles ("id@version"), in the order the record lists them.
    """
    per: list[dict[str, Any]] = []
    for ref in refs:
        mine = [a for a in answers if a["principle"] == ref]
        ok = all(a["p_a"] is not None for a in mine)
        p_a = sum(a["p_a"] for a in mine) / len(mine) if ok else None
        consistent = None
        if ok and len(mine) == 2:
            d = [decision(a["p_a"]) for a in mine]
            consistent = d[0] is not None and d[0] == d[1]
        errors = [a["error"] for a in mine if a["error"]]
        per.append(
            {
                "principle": ref,
                "p_a": p_a,
                "consistent": consistent,
                "error": errors[0] if errors and not ok else None,
                "orders": mine,
            }
        )
    good = [x["p_a"] for x in per if x["p_a"] is not None]
    p_a = sum(good) / len(good) if good else None
    failed = [x for x in per if x["p_a"] is None]
    return {
        "principles": per,
        "p_a": p_a,
        "parse_error": failed[0]["error"] if p_a is None and failed else None,
    }


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def reply_score(pos: float, neg: float, n_tokens: int, norm: str) -> float:
    """s(x) from a reply's log-probabilities under a principle's two framings (`cai.stages.contrast`):
    their difference, per token with ``mean``."""
    if norm == "mean":
        return (pos - neg) / max(n_tokens, 1)
    return pos - neg
