"""RLAIF labels: a judge's multiple-choice answers become soft, position-debiased preferences.

For each pair and each comparison principle drawn, the judge sees the conversation, the two
replies as (A) and (B), and the principle's question; its normalised P(A), P(B) come from the
backend's option probabilities. Definitions used throughout (and by `judge-eval`):

* ``p_a``: P(the pair's response ``a`` is better). One order: P_AB(A), or P_BA(B) when the
  seeded coin showed ``b`` first. Both orders: ``0.5 * (P_AB(A) + P_BA(B))``, which cancels a
  constant position preference exactly.
* principles ``one`` (one sampled per pair, as in the CAI paper), ``k`` (mean of p_a over k
  sampled) or ``all`` (mean over all). A principle counts only when every requested order gave
  probabilities, so a label is never silently one-sided.
* CoT: the judge writes its reasoning (the comparison_cot template), then P(A) is read after
  "So the answer is (" and clamped to ``clamp`` (the CAI paper uses 40–60%): CoT answers are
  near-certain and would otherwise dominate the soft labels.
* order consistency: the argmax picks the same *response* in both orders.

All questions of a batch go to the backend in one `option_probs` call, ordered pair → order →
principle, so questions that share a prefix (few-shot turns, conversation, then both options)
are adjacent and the local backend prefills that prefix once.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cai.constitution.model import Constitution, Versioned
from cai.errors import fail
from cai.io.pairs import (
    Pair,
)
from cai.io.store import derive_seed
from cai.models.base import Backend, Conversation, OptionScores
from cai.stages.label_math import aggregate
from cai.stages.messages import (
    comparison_fewshot,
    comparison_messages,
    cot_answer_messages,
)
from cai.stages.settings import JudgeSettings

OPTIONS = ("A", "B")
PoolFn = Callable[[Pair], Sequence[Versioned]]


def draw_principles(pool: Sequence[Versioned], s: JudgeSettings, rng: random.Random) -> list[Versioned]:
    if s.principles == "all":
        return list(pool)
    n = 1 if s.principles == "one" else min(s.k, len(pool))
    return rng.sample(list(pool), n)


def draw_for(p: Pair, pool: Sequence[Versioned], s: JudgeSettings, seed: int) -> list[Versioned]:
    """A pair's principles: a function of (seed, pair id) only, never of the batch."""
    return draw_principles(pool, s, random.Random(derive_seed(seed, "principles", p.id)))


def order_coin(seed: int, pair_id: str, principle_ref: str) -> bool:
    """With one order: True when response b is shown first for this pair and principle."""
    return random.Random(derive_seed(seed, "order", pair_id, principle_ref)).random() < 0.5


@dataclass(frozen=True)
class _Question:
    pair: int
    principle: Versioned
    swapped: bool  # True: response b is shown as (A)
    messages: Conversation


def _plan(
    c: Constitution, pairs: Sequence[Pair], s: JudgeSettings, seed: int, pool_for: PoolFn
) -> tuple[list[list[Versioned]], list[_Question]]:
    drawn: list[list[Versioned]] = []
    questions: list[_Question] = []
    # The few-shot turns are the same for every question: render them once per batch, not per
    # question (head + live is exactly what comparison_messages(fewshot=True) returns).
    head = comparison_fewshot(c, s.cot) if s.fewshot else []
    for i, p in enumerate(pairs):
        principles = draw_for(p, pool_for(p), s, seed)
        drawn.append(principles)
        if s.orders == "both":
            plan = [(v, False) for v in principles] + [(v, True) for v in principles]
        else:  # a seeded coin per question: a file's order (chosen first) never leaks into labels
            coins = [order_coin(seed, p.id, v.ref) for v in principles]
            plan = sorted(zip(principles, coins, strict=True), key=lambda x: x[1])
        for v, swapped in plan:  # grouped by order: questions sharing both options are adjacent
            first, second = (p.b, p.a) if swapped else (p.a, p.b)
            live = comparison_messages(c, p.prompt, first, second, v, cot=s.cot, fewshot=False)
            questions.append(_Question(i, v, swapped, head + live))
    return drawn, questions


CONTENT_FREE = "N/A"  # contextual calibration's content-free input (arXiv 2102.09690)


def option_priors(
    c: Constitution, backend: Backend, principles: Sequence[Versioned], s: JudgeSettings
) -> dict[str, dict[str, float]]:
    """P(A), P(B) per principle on a content-free question (conversation and both replies "N/A"),
    asked exactly like a live one (same template and few-shot turns): the judge's option prior."""
    unique = list({v.ref: v for v in principles}.values())
    if not unique:
        return {}
    head = comparison_fewshot(c, False) if s.fewshot else []
    blank = [{"role": "user", "content": CONTENT_FREE}]
    convs = [head + comparison_messages(c, blank, CONTENT_FREE, CONTENT_FREE, v, fewshot=False) for v in unique]
    priors: dict[str, dict[str, float]] = {}
    for v, sc in zip(unique, backend.option_probs(convs, OPTIONS), strict=True):
        pa, pb = sc.probs.get("A"), sc.probs.get("B")
        if sc.error is not None or not pa or not pb:
            raise fail(
                v.source,
                None,
                v.ref,
                f"--method mc-calibrated: the judge gave no usable option prior ({sc.error or 'zero probability'})",
            )
        priors[v.ref] = {"A": pa, "B": pb}
    return priors


def calibrated(pa: float, pb: float, prior: dict[str, float]) -> tuple[float, float]:
    """Divide out the option prior, renormalise: P'(X) ∝ P(X) / prior(X)."""
    a, b = pa / prior["A"], pb / prior["B"]
    return a / (a + b), b / (a + b)


def _answer(
    q: _Question,
    score: OptionScores | None,
    reasoning: str | None,
    error: str | None,
    s: JudgeSettings,
    prior: dict[str, float] | None = None,
) -> dict[str, Any]:
    """One question's record; `p_a` is already mapped back to the pair's response a."""
    out: dict[str, Any] = {
        "principle": q.principle.ref,
        "order": "ba" if q.swapped else "ab",
        "prompt": q.messages[-1]["content"],  # the live part; the fingerprint fixes the few-shot
        "reasoning": reasoning,
        "error": error,
        **dict.fromkeys(("probs", "mass", "path", "raw", "p_first", "p_a")),
    }
    if score is not None:
        out.update(probs=score.probs, mass=score.mass, path=score.path, raw=score.raw, error=score.error)
        pa, pb = score.probs.get("A"), score.probs.get("B")
        if score.error is None and pa is not None and pb is not None and pa + pb > 0 and pa == pa:
            if prior is not None:
                out["prior"] = prior
                pa, pb = calibrated(pa, pb, prior)
            p_first = pa / (pa + pb)
            if s.bounds is not None:
                p_first = min(max(p_first, s.bounds[0]), s.bounds[1])
            out["p_first"] = p_first
            out["p_a"] = 1.0 - p_first if q.swapped else p_first
        elif out["error"] is None:
            out["error"] = "no option probabilities"
    return out


def judge_pairs(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    s: JudgeSettings,
    seed: int,
    pool_for: PoolFn | None = None,
    priors: dict[str, dict[str, float]] | None = None,
) -> list[dict[str, Any]]:
    """Label every pair with `s.method` (mc, mc-calibrated or contrast); one result per pair
    (see module docstring for fields). ``priors`` (from `option_priors`) are needed for
    mc-calibrated; computed here when not given.

    Principle draws and display orders depend only on (seed, pair id), so a pair gets the same
    questions whichever batch it lands in.
    """
    pool_for = pool_for or (lambda _p: c.comparison_principles)
    if s.method == "contrast":
        from cai.stages.contrast import contrast_pairs

        return contrast_pairs(c, backend, pairs, [draw_for(p, pool_for(p), s, seed) for p in pairs], s)
    drawn, questions = _plan(c, pairs, s, seed, pool_for)
    if s.method == "mc-calibrated" and priors is None:
        priors = option_priors(c, backend, [v for d in drawn for v in d], s)
    convs = [q.messages for q in questions]
    reasonings: list[str | None] = [None] * len(questions)
    errors: list[str | None] = [None] * len(questions)
    if s.cot and questions:
        cot_seed = derive_seed(seed, "cot", [p.id for p in pairs])
        gens = backend.generate(convs, replace(s.cot_params, n=1, seed=cot_seed))
        for i, g in enumerate(gens):
            if g.error is not None or not g.texts:
                errors[i] = f"cot: {g.error or 'no text returned'}"
            else:
                reasonings[i] = g.texts[0]
                convs[i] = cot_answer_messages(convs[i], g.texts[0])
    idx = [i for i, e in enumerate(errors) if e is None]
    scores: list[OptionScores | None] = [None] * len(questions)
    if idx:
        for i, sc in zip(idx, backend.option_probs([convs[i] for i in idx], OPTIONS), strict=True):
            scores[i] = sc
    answers = [
        _answer(q, scores[i], reasonings[i], errors[i], s, priors[q.principle.ref] if priors else None)
        for i, q in enumerate(questions)
    ]
    return [
        aggregate(
            [v.ref for v in drawn[i]],
            [a for q, a in zip(questions, answers, strict=True) if q.pair == i],
        )
        for i in range(len(pairs))
    ]
