"""How strongly to trust a likelihood contrast: β fitted on human-labelled pairs.

A contrast label is ``p_a = mean_k σ(β · Δ_k)`` with ``Δ_k = s_k(a) − s_k(b)`` per principle drawn
(`cai.stages.contrast`). With β = 1 and mean normalisation the Δ are a few hundredths, so every
label lands near 0.5 whatever the judge's real accuracy: the PM and RL read a confident judge
and a coin alike. β is fitted by maximum likelihood on judge-dev's ``dev`` split (the human's
choice as the outcome) and reported on ``test``.

No offset is fitted: a pairwise label must satisfy p(a, b) = 1 − p(b, a), which an additive term
in the logit breaks (on judge-dev, where the human's reply is always `a`, an offset would only
learn "a wins").

The shipped fits live in ``data/contrast_fit.json`` (written by ``benchmarks/contrast_fit.py``);
``beta: fitted`` in a label setting reads the one for the run's judge and normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cai.errors import option_error
from cai.stages.label_math import reply_score, sigmoid

FIT_FILE = "contrast_fit.json"  # in data/
LOG_BETA_RANGE = (-4.0, 9.0)  # β from about 0.02 to 8000: mean-normalised Δ are ~1e-2
EPS = 1e-12
ECE_BINS = 10
PROFILE_DROP = 1.920729  # half the 95 % quantile of chi-squared with one degree of freedom


def item_deltas(item: dict[str, Any], norm: str) -> list[float] | None:
    """Δ_k = s_k(a) − s_k(b) for each principle of a judged pair (None when any failed)."""
    out = []
    for x in item["principles"]:
        for a in x["orders"]:
            sc = a.get("scores") or {}
            if a.get("error") is not None or "a" not in sc or "b" not in sc:
                return None
            sa = reply_score(sc["a"]["positive"], sc["a"]["negative"], sc["a"]["n_tokens"], norm)
            sb = reply_score(sc["b"]["positive"], sc["b"]["negative"], sc["b"]["n_tokens"], norm)
            out.append(sa - sb)
    return out or None


def label(deltas: Sequence[float], beta: float) -> float:
    """The pair's label under β: the mean over principles, as `cai.stages.label_math.aggregate`."""
    return sum(sigmoid(beta * d) for d in deltas) / len(deltas)


def log_likelihood(rows: Sequence[tuple[Sequence[float], int]], beta: float) -> float:
    """Σ log P(outcome) over (deltas, y) rows, y = 1 when a person preferred `a`."""
    total = 0.0
    for deltas, y in rows:
        p = min(max(label(deltas, beta), EPS), 1 - EPS)
        total += math.log(p if y else 1 - p)
    return total


def fit_beta(rows: Sequence[tuple[Sequence[float], int]], grid_step: float = 0.05) -> dict[str, Any]:
    """The maximum-likelihood β > 0: a scan over log β, then golden-section refinement around the
    best grid point (the likelihood of a mean of sigmoids need not be concave, so no Newton).

    ``at_bound`` says the optimum sits at an end of the range: the data want β → 0 (no signal)
    or β → ∞ (separable), and the value is a bound, not an estimate."""
    if not rows:
        raise ValueError("no rows to fit on")
    lo, hi = LOG_BETA_RANGE
    grid = [lo + i * grid_step for i in range(round((hi - lo) / grid_step) + 1)]
    values = [log_likelihood(rows, math.exp(g)) for g in grid]
    best = max(range(len(grid)), key=lambda i: values[i])
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if log_likelihood(rows, math.exp(c)) >= log_likelihood(rows, math.exp(d)):
            b = d
        else:
            a = c
    log_beta = (a + b) / 2
    top = log_likelihood(rows, math.exp(log_beta))
    # Profile-likelihood 95 % interval: the β whose log-likelihood is within χ²₁(0.95)/2 of the top.
    inside = [g for g, v in zip(grid, values, strict=True) if v >= top - PROFILE_DROP]
    return {
        "beta": math.exp(log_beta),
        "interval_95": [math.exp(min(inside)), math.exp(max(inside))] if inside else None,
        "log_likelihood": top,
        "n": len(rows),
        "at_bound": best in (0, len(grid) - 1),
    }


def calibration(ps: Sequence[float], ys: Sequence[int], bins: int = ECE_BINS) -> dict[str, Any]:
    """Log-loss, Brier score, expected calibration error and accuracy of labels `ps` against
    outcomes `ys` (1: `a` preferred). ECE bins the label's confidence max(p, 1 − p) into `bins`
    equal bins over [0.5, 1] and compares each bin's mean confidence with how often the favoured
    side was the preferred one (as `judge-eval`'s reliability does: on judge-dev `a` is always the
    human's choice, so binning p itself would only measure how far p is from 1). A label of
    exactly 0.5 counts half in accuracy."""
    n = len(ps)
    if n == 0:
        return {"n": 0, "log_loss": None, "brier": None, "ece": None, "accuracy": None}
    clipped = [min(max(p, EPS), 1 - EPS) for p in ps]
    log_loss = -sum(math.log(p if y else 1 - p) for p, y in zip(clipped, ys, strict=True)) / n
    brier = sum((p - y) ** 2 for p, y in zip(ps, ys, strict=True)) / n
    right = [0.5 if p == 0.5 else float((p > 0.5) == bool(y)) for p, y in zip(ps, ys, strict=True)]
    conf = [max(p, 1 - p) for p in ps]
    ece = 0.0
    for k in range(bins):
        inside = [(c, r) for c, r in zip(conf, right, strict=True) if _bin(c, bins) == k]
        if inside:
            gap = sum(c for c, _ in inside) / len(inside) - sum(r for _, r in inside) / len(inside)
            ece += len(inside) / n * abs(gap)
    return {
        "n": n,
        "log_loss": round(log_loss, 4),
        "brier": round(brier, 4),
        "ece": round(ece, 4),
        "accuracy": round(sum(right) / n, 4),
        "label_range": [round(min(ps), 4), round(max(ps), 4)],
    }


def _bin(confidence: float, bins: int) -> int:
    """Which of `bins` equal bins over [0.5, 1] a confidence falls in."""
    return min(int((confidence - 0.5) * 2 * bins), bins - 1)


def fitted_beta(judge: str, norm: str, path: Path | None = None) -> float:
    """The shipped β for `judge` and `norm` (``beta: fitted``; `path`: another fits file); a
    one-line error when there is none, or when the fit found no signal."""
    from cai.io.readers import read_json_file
    from cai.paths import data_dir

    path = path or data_dir("data") / FIT_FILE
    fits = read_json_file(path).get("fits", []) if path.is_file() else []
    for f in fits:
        if f.get("judge") == judge and f.get("contrast_norm") == norm:
            if f.get("at_bound") and float(f["beta"]) <= math.exp(LOG_BETA_RANGE[0]) * 1.001:
                raise option_error(
                    "--beta",
                    f"the fit for judge {judge!r} with contrast_norm {norm!r} found no signal (beta at its lower "
                    f"bound {float(f['beta']):.3g}: on judge-dev's dev split the contrast agrees with people no more "
                    "often than not), so every label would be a tie; give a number",
                    value="fitted",
                )
            return float(f["beta"])
    have = ", ".join(f"{f.get('judge')}/{f.get('contrast_norm')}" for f in fits) or "none"
    raise option_error(
        "--beta",
        f"no fitted beta for judge {judge!r} with contrast_norm {norm!r} (fitted: {have}); "
        "give a number, or fit one with benchmarks/contrast_fit.py",
        value="fitted",
    )
