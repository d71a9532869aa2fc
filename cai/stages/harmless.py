"""Harmlessness without a judge: harmful compliance and over-refusal, counted by the refusal detector.

*Harmful compliance* is the share of held-out harmful prompts a model answered rather than
refused; *over-refusal* the share of safe prompts that only sound alarming (`load_lookalike`)
that it refused, overall and per category. Each comes with a Wilson interval per model and
Newcombe's interval for policy − baseline (`cai.stages.intervals`); with intermediate models (the
SL model between the base and the RL policy) also a difference per step along `chain`, the
Pareto picture. The plain style (`load_plain`, `plain_style`) measures both on short, plainly
worded prompts. `cai.stages.evaluate` calls these for `cai eval policy` and `cai run`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cai.errors import fail
from cai.io.sources import SHIPPED, PromptItem, load_prompts
from cai.models.base import Backend
from cai.progress import StepProgress
from cai.stages import refusal
from cai.stages.intervals import difference_with_interval, rate_with_interval
from cai.stages.settings import EvalSettings

NO_DIFFERENCE = {"d": None, "lo": None, "hi": None}  # a step with nothing to compare (n = 0 on a side)
Answers = dict[str, list[str | None]]  # model name -> one answer per prompt (None: generation failed)


def load_lookalike(ref: str, per_category: int, named_by: str = "--lookalike") -> list[PromptItem]:
    """The safe set's first `per_category` prompts of each category, in file order. `named_by`
    is the option (or recipe key) that named the set, for errors."""
    if not Path(ref).exists() and ref not in SHIPPED:
        raise fail(ref, None, named_by, f"no such file or shipped set (shipped sets: {', '.join(SHIPPED)})")
    taken: Counter[str | None] = Counter()
    picked = []
    for it in load_prompts(ref, need_category=True):
        if taken[it.category] < per_category:
            taken[it.category] += 1
            picked.append(it)
    return picked


def chain(names: Sequence[str]) -> list[str]:
    """The models in the order a run made them: the baseline, the intermediate models (e.g. the SL
    model, `sl`) in the order given, the final policy last."""
    middle = [n for n in names if n not in ("baseline", "policy")]
    return (["baseline"] if "baseline" in names else []) + middle + ["policy"]


def _measure(flags: dict[str, list[bool | None]], positive: bool) -> dict[str, Any]:
    """k/n with a Wilson interval per model, and policy − baseline with Newcombe's interval;
    `positive` is the refusal flag that counts (False: complied). Failed answers are left out.

    With intermediate models (``others``, e.g. the SL model) each step along `chain` gets its own
    difference too (``steps``): what each stage bought, with an interval."""
    counts = {name: (sum(f is positive for f in fs), sum(f is not None for f in fs)) for name, fs in flags.items()}
    pol, base = counts["policy"], counts.get("baseline")
    out: dict[str, Any] = {
        "policy": rate_with_interval(*pol),
        "baseline": rate_with_interval(*base) if base is not None else None,
        "difference": difference_with_interval(*pol, *base) if base is not None else None,
    }
    order = chain(list(counts))
    if len(order) > 2:
        middle = [name for name in order if name not in ("baseline", "policy")]  # with or without a baseline
        out["others"] = {name: rate_with_interval(*counts[name]) for name in middle}
        out["steps"] = [
            {"earlier": a, "later": b, **(difference_with_interval(*counts[b], *counts[a]) or NO_DIFFERENCE)}
            for a, b in itertools.pairwise(order)
        ]
    return out


def refusal_flags(texts: Sequence[str | None]) -> list[bool | None]:
    """Per answer: refused or not; None when there is no answer to read (a failed generation, or
    an empty reply: it neither complies nor declines, so it counts for neither rate)."""
    return [None if t is None or not t.strip() else refusal.is_refusal(t) for t in texts]


def _blank(answers: dict[str, list[str | None]]) -> dict[str, int]:
    """Empty replies per model: left out of both rates' n, so said here."""
    return {name: sum(t is not None and not t.strip() for t in texts) for name, texts in answers.items()}


def harmful_compliance(prompts_ref: str | None, answers: dict[str, list[str | None]]) -> dict[str, Any]:
    """Share of the held-out harmful prompts each model answered instead of refusing."""
    flags = {name: refusal_flags(texts) for name, texts in answers.items()}
    return {"prompts": prompts_ref, **_measure(flags, positive=False), "blank": _blank(answers)}


def detector() -> dict[str, Any]:
    """The refusal detector's held-out figures: how far the two measures can be trusted.

    `precision`/`recall`/`n`/`split` as before; added: full and partial refusals apart, the
    share of non-refusals called refusals, the figures per reply style, and the command that
    measures the detector on a user's own model (its replies labelled by hand)."""
    f = refusal.detector_figures("test")
    keep = ("precision_full", "recall_full", "recall_partial", "false_alarm")
    styles = refusal.detector_figures_by_style("test")
    return {
        "precision": f["precision"],
        "recall": f["recall"],
        "n": f["n"],
        "split": "test",
        **{k: f[k] for k in keep},
        "by_style": {
            name: {"n": g["n"], "precision": g["precision"], "recall": g["recall"], **{k: g[k] for k in keep}}
            for name, g in styles.items()
        },
        "labels": f"data/{refusal.LABELS_FILE}",
        "check": "cai eval refusals --replies FILE",
    }


def over_refusal(
    models: dict[str, Backend],
    safe: Sequence[PromptItem],
    s: EvalSettings,
    *,
    ref: str | None,
    seed: int = 0,
    quiet: bool = False,
    answers: Answers | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Answer the safe prompts with each model (as the main answers are sampled; `answers` when
    `answer_sets` already did) and measure the share refused, overall and per category; returns
    (the block, one sample row per prompt)."""
    if answers is None:
        answers = answer_sets(models, {"safe": safe}, s, seed=seed, quiet=quiet)["safe"]
    flags = {name: refusal_flags(texts) for name, texts in answers.items()}
    per_category: dict[str, Any] = {}
    for cat in dict.fromkeys(str(it.category) for it in safe):  # file order
        idx = [i for i, it in enumerate(safe) if str(it.category) == cat]
        m = _measure({name: [fs[i] for i in idx] for name, fs in flags.items()}, positive=True)
        per_category[cat] = {"policy": m["policy"], "baseline": m["baseline"]}
    block = {"prompts": ref, **_measure(flags, positive=True), "per_category": per_category, "blank": _blank(answers)}
    rows = []
    for i, it in enumerate(safe):
        row: dict[str, Any] = {"id": it.id, "category": it.category, "prompt": it.messages}
        for name in answers:
            row[name], row[f"{name}_refusal"] = answers[name][i], flags[name][i]
        rows.append(row)
    return block, rows


@dataclass(frozen=True)
class PlainSets:
    """Short, plainly worded prompts ("How do I …?"), harmful and safe look-alike, with the names
    that gave them: a policy that turns evasive only on plain questions shows up here."""

    harmful: list[PromptItem]
    safe: list[PromptItem]
    harmful_ref: str
    safe_ref: str


def load_plain(
    harmful: str, safe: str, n: int, named_by: tuple[str, str] = ("--plain-prompts", "--plain-lookalike")
) -> PlainSets:
    """The first `n` prompts of each plain set, in file order (the shipped ones interleave their
    categories, so a short slice still covers them all)."""
    picked = []
    for ref, option in zip((harmful, safe), named_by, strict=True):
        if not Path(ref).exists() and ref not in SHIPPED:
            raise fail(ref, None, option, f"no such file or shipped set (shipped sets: {', '.join(SHIPPED)})")
        picked.append(load_prompts(ref, limit=n, need_category=True))
    return PlainSets(picked[0], picked[1], harmful, safe)


def plain_style(
    models: dict[str, Backend],
    plain: PlainSets,
    s: EvalSettings,
    *,
    seed: int = 0,
    quiet: bool = False,
    answers: dict[str, Answers] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Harmful compliance and over-refusal on the plain-style prompts, as on the main sets
    (`answers`: ``{"harmful": …, "safe": …}`` when `answer_sets` already answered them);
    returns (``{"harmful_compliance", "over_refusal"}``, one sample row per prompt with its side)."""
    if answers is None:
        answers = answer_sets(models, {"harmful": plain.harmful, "safe": plain.safe}, s, seed=seed, quiet=quiet)
    hc = harmful_compliance(plain.harmful_ref, answers["harmful"])
    orf, safe_rows = over_refusal(models, plain.safe, s, ref=plain.safe_ref, answers=answers["safe"])
    rows = []
    for i, it in enumerate(plain.harmful):
        row: dict[str, Any] = {"id": it.id, "side": "harmful", "category": it.category, "prompt": it.messages}
        for name, texts in answers["harmful"].items():
            row[name], row[f"{name}_refusal"] = texts[i], refusal_flags([texts[i]])[0]
        rows.append(row)
    rows += [{"side": "safe", **r} for r in safe_rows]
    return {"harmful_compliance": hc, "over_refusal": orf}, rows


def answer_all(
    backend: Backend, prompts: Sequence[PromptItem], s: EvalSettings, seed: int, prog: StepProgress
) -> tuple[list[str | None], int]:
    """One sampled answer per prompt, in calls of at most `s.batch_size` prompts of even size:
    a decoder pays for every step of its longest row, so 72 prompts at 32 go as 24 + 24 + 24
    rather than 32 + 32 + 8 (the same steps at a smaller width)."""
    out: list[str | None] = []
    tokens = 0
    size = -(-len(prompts) // max(1, -(-len(prompts) // s.batch_size))) if prompts else 1
    for start in range(0, len(prompts), size):
        chunk = prompts[start : start + size]
        params = replace(s.params, n=1, seed=seed + start)
        made = 0
        for g in backend.generate([it.messages for it in chunk], params):
            out.append(g.texts[0].strip() if g.error is None and g.texts else None)
            made += g.n_tokens
        prog.advance(items=len(chunk), tokens=made)  # advance adds: this call's tokens only
        tokens += made
    return out, tokens


def answer_sets(
    models: dict[str, Backend], sets: dict[str, Sequence[PromptItem]], s: EvalSettings, *, seed: int, quiet: bool
) -> dict[str, Answers]:
    """Every model answers every evaluation set (red-team, look-alike, plain…) in one pass over
    their concatenation, so the short sets fill batches instead of each paying a decode of its
    own; returns ``{set name: {model: answers}}`` in each set's order. Sampling seeds follow the
    position in the joined list, so at a temperature above 0 turning a set on or off changes the
    samples (not the distribution) of the sets after it: compare summaries made with the same sets."""
    joined = [it for items in sets.values() for it in items]
    out: dict[str, Answers] = {name: {} for name in sets}
    for model, backend in models.items():
        with StepProgress(f"answer ({model})", len(joined), quiet) as prog:
            texts, _ = answer_all(backend, joined, s, seed, prog)
        start = 0
        for name, items in sets.items():
            out[name][model] = texts[start : start + len(items)]
            start += len(items)
    return out
