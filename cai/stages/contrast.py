"""Likelihood-contrast labels (DLMA, arXiv 2402.11907): no question asked, so no position to prefer.

For each comparison principle drawn for a pair, every reply ``x`` gets the score

    s(x) = log p(x | conversation, positive guidance) − log p(x | conversation, negative guidance)

where the guidance is the principle's ``positive`` / ``negative`` text rendered by the
constitution's ``contrast`` template as a system turn after the conversation. With
``contrast_norm: mean`` both log-probabilities are divided by the reply's token count first
(a long reply otherwise accumulates a large |s| from length alone). The label is

    p_a = σ(β · (s(a) − s(b)))

(β: ``beta``, a number, or ``fitted`` for the value fitted on judge-dev's dev split,
`cai.stages.contrast_fit`) and principles are combined as in multiple choice (mean of p_a over
those drawn). The four scores per (pair, principle) go to the backend in one `sequence_logprobs` call per batch, ordered
pair → principle → side, so the conversation prefix is computed once per pair and each side's
guidance once per reply.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cai.constitution.model import Constitution, Versioned
from cai.errors import fail
from cai.io.pairs import Pair
from cai.models.base import Backend, Conversation
from cai.stages.label_math import aggregate, reply_score, sigmoid
from cai.stages.messages import contrast_messages
from cai.stages.settings import JudgeSettings

SIDES = ("positive", "negative")


def check_contrast_principles(c: Constitution, pool: Sequence[Versioned]) -> None:
    """Every principle a contrast run may draw needs both guidance texts: stop before any work."""
    for v in pool:
        p = v.principle
        for side in SIDES:
            if not getattr(p, side, None):
                raise fail(
                    v.source,
                    None,
                    f"{p.id}.{side}",
                    f"--method contrast needs a {side!r} guidance text on every comparison principle it uses",
                )


def preflight(c: Constitution, backend: Backend, pool: Sequence[Versioned], s: JudgeSettings | None = None) -> None:
    """Stop before any work when contrast cannot run: a principle lacks guidance, ``beta:
    fitted`` has no fit for this judge (with `s`), or the backend cannot score given replies (an
    empty request is the probe: it does no work, or raises)."""
    check_contrast_principles(c, pool)
    if s is not None:
        beta_for(s, backend.spec)
    backend.sequence_logprobs([])


def beta_for(s: JudgeSettings, judge: str | None) -> float:
    """The number behind ``beta``: itself, or for ``fitted`` the shipped fit for this judge and norm
    (`cai.stages.contrast_fit`; a one-line error when there is none)."""
    if s.beta != "fitted":
        return float(s.beta)
    from cai.stages.contrast_fit import fitted_beta

    return fitted_beta(judge or "", s.contrast_norm)


def contrast_answer(
    ref: str, scores: dict[str, dict[str, Any]], s: JudgeSettings, error: str | None, beta: float | None = None
) -> dict[str, Any]:
    """One principle's answer, in the record shape multiple choice uses (no position fields).
    `beta` is the number in force (`beta_for`); None reads a numeric ``s.beta``."""
    out: dict[str, Any] = {
        "principle": ref,
        "order": "contrast",
        "prompt": None,
        "reasoning": None,
        "error": error,
        "probs": None,
        "mass": None,
        "path": "contrast",
        "raw": None,
        "p_first": None,  # no display order: position statistics leave contrast answers out
        "p_a": None,
        "scores": scores,
    }
    if error is None:
        sa = reply_score(scores["a"]["positive"], scores["a"]["negative"], scores["a"]["n_tokens"], s.contrast_norm)
        sb = reply_score(scores["b"]["positive"], scores["b"]["negative"], scores["b"]["n_tokens"], s.contrast_norm)
        b = beta_for(s, None) if beta is None else beta
        out["p_a"] = sigmoid(b * (sa - sb))
        out["s_a"], out["s_b"], out["beta"] = sa, sb, b
    return out


def contrast_pairs(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    drawn: Sequence[Sequence[Versioned]],
    s: JudgeSettings,
) -> list[dict[str, Any]]:
    """Contrast labels for `pairs`, with `drawn[i]` the principles drawn for pair i."""
    check_contrast_principles(c, list({v.ref: v for d in drawn for v in d}.values()))
    beta = beta_for(s, backend.spec)
    requests: list[tuple[Conversation, str]] = []
    keys: list[tuple[int, int, str, str]] = []  # (pair, principle index, reply, side)
    for i, (p, principles) in enumerate(zip(pairs, drawn, strict=True)):
        for k, v in enumerate(principles):
            for side in SIDES:
                conv = contrast_messages(c, p.prompt, v, side)
                for reply, text in (("a", p.a), ("b", p.b)):
                    requests.append((conv, text))
                    keys.append((i, k, reply, side))
    scored = backend.sequence_logprobs(requests) if requests else []
    table: dict[tuple[int, int], dict[str, dict[str, Any]]] = {}
    errors: dict[tuple[int, int], str] = {}
    for (i, k, reply, side), sc in zip(keys, scored, strict=True):
        entry = table.setdefault((i, k), {}).setdefault(reply, {})
        entry[side] = sc.logprob
        entry["n_tokens"] = sc.n_tokens
        if sc.error is not None or sc.logprob is None:
            errors.setdefault((i, k), sc.error or "no log-probability returned")
    results = []
    for i, principles in enumerate(drawn):
        answers = [
            contrast_answer(v.ref, table.get((i, k), {}), s, errors.get((i, k)), beta) for k, v in enumerate(principles)
        ]
        results.append(aggregate([v.ref for v in principles], answers))
    return results


def rederive(items: Sequence[dict[str, Any]], s: JudgeSettings, judge: str | None = None) -> list[dict[str, Any]]:
    """Contrast results recomputed from their recorded log-probabilities under other settings
    (``contrast_norm``, ``beta``; `judge` names the fit ``beta: fitted`` reads): no model call, so
    judge-eval compares the two norms on exactly the same scores."""
    beta = beta_for(s, judge)
    out = []
    for it in items:
        refs = [x["principle"] for x in it["principles"]]
        answers = [
            contrast_answer(a["principle"], a["scores"], s, a["error"], beta)
            for x in it["principles"]
            for a in x["orders"]
        ]
        out.append({**it, **aggregate(refs, answers)})
    return out
