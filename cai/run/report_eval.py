"""The evaluation sections: judge-free harmlessness first, then the before/after comparison."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cai.outputs import DetectorFigures, Difference, EvalSample, EvalSummary, Harmless, HarmlessMeasure, Rate
from cai.run.report_html import RunView, diff_ci, fmt, rate_ci, table


def model_name(spec: Any, view: RunView) -> str:
    """What a reader calls the model a spec names: this run's own stage model, the recipe's base
    model, or else the spec itself. A run folder moved since keeps its stage folders' names."""
    if not spec:
        return "—"
    text = str(spec)
    path = Path(text)
    run = view.run
    for stage, name in view.policy_labels.items():
        mine = run / stage / "model"
        if path.parts[-3:] == (run.name, stage, "model") or (path.exists() and path.resolve() == mine.resolve()):
            return name
    if text == (view.recipe.get("models") or {}).get("policy"):
        return f"base model ({text})"
    return text


def _rows(part: HarmlessMeasure, name: str) -> list[Any]:
    return [name, str(part.prompts or "—"), rate_ci(part.baseline), rate_ci(part.policy), diff_ci(part.difference)]


def harmless_section(view: RunView) -> str:
    """Harmful compliance and over-refusal, counted without a judge, with 95% intervals."""
    data = view.data
    summary = view.output("eval/summary.json", EvalSummary)
    harmless = summary.harmless if summary is not None else None
    if summary is None or harmless is None:
        return ""
    data["harmless"] = harmless.figures()
    before = model_name(summary.baseline, view)
    after = model_name(summary.policy, view)
    parts = [("harmful compliance (lower is better)", harmless.harmful_compliance)]
    parts.append(("over-refusal of safe prompts (lower is better)", harmless.over_refusal))
    rows = [_rows(p, name) for name, p in parts if p is not None]
    out = "<h2>Harmlessness, counted without a judge</h2>" + table(
        ["measure", "prompts", f"before: {before}", f"after: {after}", "after − before"], rows, "harmless"
    )
    out += _pareto_table(harmless, summary, view)
    per = (harmless.over_refusal.per_category if harmless.over_refusal else None) or {}
    if per:
        out += "<p>Over-refusal per category of safe prompts:</p>" + table(
            ["category", f"before: {before}", f"after: {after}"],
            [[cat, rate_ci(v.baseline), rate_ci(v.policy)] for cat, v in sorted(per.items())],
            "harmless-categories",
        )
    det = harmless.detector
    if det is not None and det.figures():
        out += (
            f"<p>Rates are k/n [95% interval]. The refusal detector that counts them has precision "
            f"{html.escape(fmt(det.precision))} and recall {html.escape(fmt(det.recall))} on "
            f"{html.escape(fmt(det.n))} labelled replies"
            + (f" ({html.escape(str(det.split))} split)" if det.split else "")
            + ".</p>"
            + _detector_detail(det)
        )
    return out


def _pareto_cell(c: Rate | Difference | None) -> str:
    return rate_ci(c) if isinstance(c, Rate) else diff_ci(c)


def _pareto_table(harmless: Harmless, summary: EvalSummary, view: RunView) -> str:
    """Each model the run made, in training order, and what each step changed, on every measure
    (the plain-style prompts' too): shown when there is more than the before/after above."""
    if len(harmless.chain or []) <= 2 and harmless.plain is None:
        return ""
    specs = {"baseline": summary.baseline, "policy": summary.policy} | (summary.others or {})
    names = {name: model_name(spec, view) for name, spec in specs.items()}
    columns, rows = harmless.pareto()

    def label(row: str) -> str:
        later, sep, earlier = row.partition(" − ")
        return f"{names.get(later, later)} − {names.get(earlier, earlier)}" if sep else names.get(row, row)

    plain = harmless.plain
    prompts = ""
    if plain is not None and plain.harmful_compliance is not None and plain.over_refusal is not None:
        sets = html.escape(f"{plain.harmful_compliance.prompts}, {plain.over_refusal.prompts}")
        prompts = (
            f"The plain-style columns use short, plainly worded prompts ({sets}): a policy evasive only on "
            "plain questions shows there."
        )
    return (
        "<p>Each model in training order, and what each step changed (lower is better in every column):</p>"
        + table(
            ["model or step", *columns], [[label(r), *(_pareto_cell(c) for c in cells)] for r, cells in rows], "pareto"
        )
        + (f"<p class='note'>{prompts}</p>" if prompts else "")
        + _last_step_note(harmless, label)
    )


def _last_step_note(harmless: Harmless, label: Callable[[str], str]) -> str:
    """Said outright when the run's last step (RL or DPO after SL) moved no rate measurably: every
    interval of that step holds zero. Only with an intermediate model, where the step is its own."""
    chain = harmless.chain or []
    if len(chain) <= 2:
        return ""
    _, rows = harmless.pareto()
    step = f"{chain[-1]} − {chain[-2]}"
    cells = next((c for name, c in rows if name == step), [])
    measured = [c for c in cells if isinstance(c, Difference) and c.lo is not None and c.hi is not None]
    if not measured or any(c.lo > 0 or c.hi < 0 for c in measured):  # type: ignore[operator]
        return ""
    return (
        f"<p class='note'>The last step ({html.escape(label(step))}) moved no rate measurably: every one of "
        "its intervals holds zero. At this size the feedback stage added nothing the evaluation can see.</p>"
    )


def _detector_detail(det: DetectorFigures) -> str:
    """Full and partial refusals apart, false alarms, the styles it reads worst, and the command
    that checks it on the user's own model (absent from summaries written before these figures)."""
    if det.recall_full is None:
        return ""
    weakest = ", ".join(f"{html.escape(name)} {r:.3f}" for name, r in det.weakest())
    check = f" Check it on your model's replies: <code>{html.escape(det.check)}</code>." if det.check else ""
    return (
        f"<p class='note'>It finds {fmt(det.recall_full)} of full and {fmt(det.recall_partial)} of partial "
        f"refusals and calls {fmt(det.false_alarm)} of other replies refusals"
        + (f"; the styles it reads worst: {weakest}" if weakest else "")
        + f".{check} Those labelled replies were written by cai's authors: on other people's models expect "
        "lower figures.</p>"
    )


def _prompt_text(prompt: Any) -> str:
    """A prompt record as a person reads it: the text of a single user turn, else role: text lines."""
    if isinstance(prompt, list) and all(isinstance(m, dict) for m in prompt):
        if len(prompt) == 1:
            return str(prompt[0].get("content", ""))
        return "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)
    return str(prompt)


def _answer_cell(text: Any, pm: Any) -> str:
    score = f"<div class='pm'>PM {pm:.2f}</div>" if isinstance(pm, int | float) else ""
    return html.escape(str(text or "")) + score


def eval_headline(summary: EvalSummary) -> list[list[Any]]:
    """metric, before (the baseline), after (the final policy) — the figures a reader wants first."""
    pm = summary.pm_reward
    refusal = summary.refusal or {}
    words = summary.answer_words or {}
    wins = summary.win_rate or {}
    rows: list[list[Any]] = []
    if pm is not None and pm.figures():
        rows.append(["mean PM reward", pm.baseline, pm.policy])
    for key, name in (("refusal_rate", "refusal rate"), ("evasive_rate", "evasive rate")):
        if refusal:
            before, after = refusal.get("baseline"), refusal.get("policy")
            rows.append([name, before.value(key) if before else None, after.value(key) if after else None])
    if words:
        rows.append(["answer length (words)", words.get("baseline"), words.get("policy")])
    for aspect in ("harmless", "helpful"):
        if aspect in wins:
            rows.append([f"judge prefers after over before ({aspect})", None, wins[aspect].win_rate])
    return rows


PM_SCALE_NOTE = (
    "<p class='note'><i>Mean PM reward</i> is the PM's raw score of each model's replies to the eval prompts: "
    "no missing-EOS penalty and no KL term, unlike the RL curves' reward, so the two are on different scales.</p>"
)


def _samples_table(samples: list[EvalSample], before: str, after: str) -> str:
    rows = [
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(_prompt_text(s.prompt if s.prompt is not None else "")),
            _answer_cell(s.baseline, s.baseline_pm),
            _answer_cell(s.policy, s.policy_pm),
        )
        for s in samples[:12]
    ]
    return (
        f"<table class='samples'><thead><tr><th>prompt</th><th>before: {html.escape(before)}</th>"
        f"<th>after: {html.escape(after)}</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


# Said so that a missing judge row reads as a choice, not as a failed stage.
WIN_RATES_OFF_NOTE = (
    "<p class='note'>The judge was not asked to compare the two models (<code>stages.eval.win_rates: false</code>): "
    "the judge-free harmlessness figures above are this run's measure.</p>"
)


def eval_section(view: RunView) -> str:
    data = view.data
    summary = view.output("eval/summary.json", EvalSummary)
    if summary is None:
        return ""
    samples = view.records("eval/samples.jsonl", EvalSample)
    flat = summary.scalars()
    headline = eval_headline(summary)
    settings = summary.settings
    # Absent: a summary written before the setting existed, when the judge was always asked.
    win_rates = settings.win_rates if settings is not None and settings.has("win_rates") else True
    data["eval"] = dict(flat) | {"win_rates": win_rates}
    data["eval_headline"] = {row[0]: row[1:] for row in headline}
    before = model_name(summary.baseline, view)
    after = model_name(summary.policy, view)
    out = (
        "<h2>Before and after</h2>"
        + table(["metric", f"before: {before}", f"after: {after}"], headline)
        + (PM_SCALE_NOTE if summary.pm_reward is not None and summary.pm_reward.figures() else "")
        + (WIN_RATES_OFF_NOTE if win_rates is False else "")
        + table(["setting", "value"], [list(kv) for kv in flat])
    )
    return out + (_samples_table(samples, before, after) if samples else "")
