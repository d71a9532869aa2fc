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
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from cai import __version__
from cai.constitution import Constitution, Versioned
from cai.conversation import (
    comparison_fewshot,
    comparison_messages,
    cot_answer_messages,
    prompt_messages,
)
from cai.errors import fail
from cai.models.base import Backend, Conversation, GenerationParams, OptionScores
from cai.progress import StepProgress
from cai.records import Store, content_hash, derive_seed
from cai.sources import PromptItem
from cai.stages.chunks import chunks_for_shard, shard_size
from cai.stages.pairs import (
    Pair,
    given_units,
    pairs_from_responses,
    sampled_units,
    unit_ids,
)

OPTIONS = ("A", "B")
PRINCIPLE_MODES = ("one", "k", "all")
ORDER_MODES = ("both", "one")
PoolFn = Callable[[Pair], Sequence[Versioned]]


@dataclass(frozen=True)
class JudgeSettings:
    principles: str = "one"  # one | k | all
    k: int = 4
    orders: str = "both"  # both | one
    cot: bool = False
    clamp: tuple[float, float] | None = None  # applied to every question's P(first)
    fewshot: bool = True
    cot_params: GenerationParams = field(
        default_factory=lambda: GenerationParams(max_new_tokens=128, temperature=0.0, top_p=1.0)
    )

    def as_record(self) -> dict[str, Any]:
        """JSON-shaped (lists, not tuples): manifests are compared after a JSON round trip."""
        d = asdict(self)
        d["clamp"] = list(self.clamp) if self.clamp else None
        d["cot_params"] = self.cot_params.as_record() if self.cot else None
        return d


def check_judge_settings(s: JudgeSettings) -> None:
    """Reject impossible settings with the flag that set them (CLI exit 2)."""
    if s.principles not in PRINCIPLE_MODES:
        raise fail("--principles", None, "principles", f"expected one of {PRINCIPLE_MODES}")
    if s.orders not in ORDER_MODES:
        raise fail("--orders", None, "orders", f"expected one of {ORDER_MODES}")
    if s.k < 1:
        raise fail("--k", None, "k", "must be >= 1")
    if s.clamp is not None and not 0.0 <= s.clamp[0] <= 0.5 <= s.clamp[1] <= 1.0:
        raise fail("--clamp", None, "clamp", "need 0 <= lo <= 0.5 <= hi <= 1")


def draw_principles(
    pool: Sequence[Versioned], s: JudgeSettings, rng: random.Random
) -> list[Versioned]:
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


def _answer(
    q: _Question,
    score: OptionScores | None,
    reasoning: str | None,
    error: str | None,
    s: JudgeSettings,
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
        out.update(
            probs=score.probs, mass=score.mass, path=score.path, raw=score.raw, error=score.error
        )
        pa, pb = score.probs.get("A"), score.probs.get("B")
        if score.error is None and pa is not None and pb is not None and pa + pb > 0 and pa == pa:
            p_first = pa / (pa + pb)
            if s.clamp is not None:
                p_first = min(max(p_first, s.clamp[0]), s.clamp[1])
            out["p_first"] = p_first
            out["p_a"] = 1.0 - p_first if q.swapped else p_first
        elif out["error"] is None:
            out["error"] = "no option probabilities"
    return out


TIE_EPS = 1e-9  # averaging mirrored orders (0.9 and 1 - 0.9) must give a tie, not 0.5 - 1 ulp


def decision(p: float | None) -> str | None:
    """Which response a probability picks: "a", "b", or None for a tie or no answer."""
    if p is None or abs(p - 0.5) <= TIE_EPS:
        return None
    return "a" if p > 0.5 else "b"


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


def judge_pairs(
    c: Constitution,
    backend: Backend,
    pairs: Sequence[Pair],
    s: JudgeSettings,
    seed: int,
    pool_for: PoolFn | None = None,
) -> list[dict[str, Any]]:
    """Ask the judge about every pair; one result per pair (see module docstring for fields).

    Principle draws and display orders depend only on (seed, pair id), so a pair gets the same
    questions whichever batch it lands in.
    """
    pool_for = pool_for or (lambda _p: c.comparison_principles)
    drawn, questions = _plan(c, pairs, s, seed, pool_for)
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
    answers = [_answer(q, scores[i], reasonings[i], errors[i], s) for i, q in enumerate(questions)]
    return [
        aggregate(
            [v.ref for v in drawn[i]],
            [a for q, a in zip(questions, answers, strict=True) if q.pair == i],
        )
        for i in range(len(pairs))
    ]


# ------------------------------------------------------------------------------- the label stage


@dataclass(frozen=True)
class LabelSettings:
    judge: JudgeSettings = field(default_factory=JudgeSettings)
    responses_per_prompt: int = 2
    pairing: str = "all"  # all | consecutive (see pairs.pairs_from_responses)
    seed: int = 0
    batch_size: int = 8  # prompts (or given pairs) per work unit
    shard: tuple[int, int] = (0, 1)
    max_failures: float = 0.2  # share of judge questions without probabilities that fails the run
    params: GenerationParams = field(
        default_factory=lambda: GenerationParams(max_new_tokens=160, temperature=0.8, top_p=0.95)
    )


def _fixed(
    c: Constitution, judge: Backend, policy: Backend | None, s: LabelSettings
) -> dict[str, Any]:
    """What determines a record's content, hashed into its id and checked by the manifest."""
    return {
        "constitution": c.name,
        "fingerprint": c.fingerprint(),
        "judge": judge.spec,
        "policy": policy.spec if policy else None,
        "judge_settings": s.judge.as_record(),
        "params": s.params.as_record() if policy else None,
        "seed": s.seed,
        "responses_per_prompt": s.responses_per_prompt if policy else None,
        "pairing": s.pairing if policy else None,
    }


def manifest(
    c: Constitution,
    judge: Backend,
    policy: Backend | None,
    inputs: Sequence[PromptItem | Pair],
    s: LabelSettings,
) -> dict[str, Any]:
    keys = [
        [x.id, x.messages] if isinstance(x, PromptItem) else [x.id, x.prompt, x.a, x.b]
        for x in inputs
    ]
    return {
        "stage": "label",
        **_fixed(c, judge, policy, s),
        "batch_size": s.batch_size,
        "inputs": content_hash(keys),
        "n_inputs": len(inputs),
        "shard": f"{s.shard[0]}/{s.shard[1]}",
    }


def run_label(
    c: Constitution,
    judge: Backend,
    out: str | Path,
    settings: LabelSettings,
    *,
    prompts: Sequence[PromptItem] | None = None,
    policy: Backend | None = None,
    pairs: Sequence[Pair] | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run (or resume) the label stage into `out`; returns the summary (also in summary.json).

    Raises `CaiError` after writing everything when more than `max_failures` of the judge's
    questions gave no probabilities: the records stay for inspection and a rerun resumes.
    """
    from cai.stages.label_export import export_labels, label_record

    check_judge_settings(settings.judge)
    inputs: Sequence[PromptItem | Pair] = list(pairs) if pairs is not None else list(prompts or [])
    if (pairs is None) == (policy is None):
        raise ValueError("label from prompts needs a policy; label given pairs without one")
    store = Store(out, manifest(c, judge, policy, inputs, settings))
    fixed = _fixed(c, judge, policy, settings)
    provenance = {
        **fixed,
        "templates": c.template_hashes(),
        "judge_info": judge.describe(),
        "policy_info": policy.describe() if policy else None,
        "fewshot_turns": len(comparison_fewshot(c, settings.judge.cot))
        if settings.judge.fewshot
        else 0,
        "cai_version": __version__,
    }
    total = shard_size(len(inputs), settings.batch_size, settings.shard)
    per_prompt = pairs_from_responses(settings.responses_per_prompt, settings.pairing)
    new = judged = questions = 0
    gen_s = judge_s = 0.0
    with StepProgress("label", total, quiet) as prog:
        for ci, offset, chunk in chunks_for_shard(inputs, settings.batch_size, settings.shard):
            if all(i in store for i in unit_ids(chunk, fixed, per_prompt)):
                prog.advance(items=len(chunk))
                continue
            t0 = time.perf_counter()
            if policy is None:
                units = given_units(chunk, offset, fixed)
            else:
                params = replace(
                    settings.params,
                    n=settings.responses_per_prompt,
                    seed=derive_seed(settings.seed, "chunk", ci),
                )
                msgs = [
                    prompt_messages(c, it.messages) for it in chunk if isinstance(it, PromptItem)
                ]
                units = sampled_units(
                    chunk, offset, fixed, per_prompt, policy.generate(msgs, params)
                )
            t1 = time.perf_counter()
            todo = [u for u in units if u.error is None and u.pair.a != u.pair.b]
            results = judge_pairs(
                c,
                judge,
                [u.pair for u in todo],
                settings.judge,
                derive_seed(settings.seed, "judge"),
            )
            t2 = time.perf_counter()
            by_id = {u.id: r for u, r in zip(todo, results, strict=True)}
            timing = {
                "chunk": ci,
                "generate_seconds": round(t1 - t0, 3),
                "judge_seconds": round(t2 - t1, 3),
                "chunk_pairs": len(units),
            }
            store.append(
                [
                    label_record(
                        u,
                        by_id.get(u.id),
                        [] if u.error or u.id in by_id else ["identical"],
                        {**provenance, "timing": timing},
                    )
                    for u in units
                ]
            )
            new += len(units)
            judged += len(todo)
            questions += sum(len(x["orders"]) for r in results for x in r["principles"])
            gen_s += t1 - t0
            judge_s += t2 - t1
            prog.advance(items=len(chunk))
    throughput = {
        "new_pairs": new,
        "judged_pairs": judged,
        "questions": questions,
        "generate_seconds": round(gen_s, 2),
        "judge_seconds": round(judge_s, 2),
        "seconds": round(prog.elapsed, 2),
        "labels_s": round(judged / judge_s, 3) if judge_s else None,
        "questions_s": round(questions / judge_s, 2) if judge_s else None,
        "pairs_s": round(new / prog.elapsed, 3) if prog.elapsed and new else None,
    }
    summary = export_labels(store, out, throughput=throughput)
    fails = summary["failures"]
    if fails["question_rate"] > settings.max_failures:
        raise fail(
            str(Path(out) / "records.jsonl"),
            None,
            "parse_error",
            f"{fails['failed_questions']} of {fails['questions']} judge questions "
            f"({fails['question_rate']:.0%}) gave no option probabilities, more than "
            f"--max-failures {settings.max_failures:.0%}; raw outputs are in the records",
        )
    return summary
