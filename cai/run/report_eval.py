"""The evaluation sections: judge-free harmlessness first, then the before/after comparison."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

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


def _rows(part: dict[str, Any], name: str) -> list[Any]:
    return [
        name,
        str(part.get("prompts") or "—"),
        rate_ci(part.get("baseline")),
        rate_ci(part.get("policy")),
        diff_ci(part.get("difference")),
    ]


def harmless_section(view: RunView) -> str:
    """Harmful compliance and over-refusal, counted without a judge, with 95% intervals."""
    data = view.data
    summary = view.json("eval/summary.json") or {}
    harmless = summary.get("harmless")
    if not isinstance(harmless, dict):
        return ""
    data["harmless"] = harmless
    before = model_name(summary.get("baseline"), view)
    after = model_name(summary.get("policy"), view)
    parts = [("harmful compliance (lower is better)", harmless.get("harmful_compliance"))]
    parts.append(("over-refusal of safe prompts (lower is better)", harmless.get("over_refusal")))
    rows = [_rows(p, name) for name, p in parts if isinstance(p, dict)]
    out = "<h2>Harmlessness, counted without a judge</h2>" + table(
        ["measure", "prompts", f"before: {before}", f"after: {after}", "after − before"], rows, "harmless"
    )
    per = (harmless.get("over_refusal") or {}).get("per_category") or {}
    if per:
        out += "<p>Over-refusal per category of safe prompts:</p>" + table(
            ["category", f"before: {before}", f"after: {after}"],
            [[cat, rate_ci(v.get("baseline")), rate_ci(v.get("policy"))] for cat, v in sorted(per.items())],
            "harmless-categories",
        )
    det = harmless.get("detector") or {}
    if det:
        out += (
            f"<p>Rates are k/n [95% interval]. The refusal detector that counts them has precision "
            f"{html.escape(fmt(det.get('precision')))} and recall {html.escape(fmt(det.get('recall')))} on "
            f"{html.escape(fmt(det.get('n')))} labelled replies"
            + (f" ({html.escape(str(det['split']))} split)" if det.get("split") else "")
            + ".</p>"
        )
    return out


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


def eval_headline(summary: dict[str, Any]) -> list[list[Any]]:
    """metric, before (the baseline), after (the final policy) — the figures a reader wants first."""
    pm = summary.get("pm_reward") or {}
    refusal = summary.get("refusal") or {}
    words = summary.get("answer_words") or {}
    wins = summary.get("win_rate") or {}
    rows: list[list[Any]] = []
    if pm:
        rows.append(["mean PM reward", pm.get("baseline"), pm.get("policy")])
    for key, name in (("refusal_rate", "refusal rate"), ("evasive_rate", "evasive rate")):
        if refusal:
            rows.append([name, refusal.get("baseline", {}).get(key), refusal.get("policy", {}).get(key)])
    if words:
        rows.append(["answer length (words)", words.get("baseline"), words.get("policy")])
    for aspect in ("harmless", "helpful"):
        if aspect in wins:
            rows.append([f"judge prefers after over before ({aspect})", None, wins[aspect].get("win_rate")])
    return rows


PM_SCALE_NOTE = (
    "<p class='note'><i>Mean PM reward</i> is the PM's raw score of each model's replies to the eval prompts: "
    "no missing-EOS penalty and no KL term, unlike the RL curves' reward, so the two are on different scales.</p>"
)


def _samples_table(samples: list[dict[str, Any]], before: str, after: str) -> str:
    rows = [
        "<tr><td>{}</td><td>{}</td><td>{}</td></tr>".format(
            html.escape(_prompt_text(s.get("prompt", ""))),
            _answer_cell(s.get("baseline"), s.get("baseline_pm")),
            _answer_cell(s.get("policy"), s.get("policy_pm")),
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
    summary = view.json("eval/summary.json")
    samples = view.jsonl("eval/samples.jsonl")
    if summary is None:
        return ""
    flat = {k: v for k, v in summary.items() if isinstance(v, int | float | str) or v is None}
    headline = eval_headline(summary)
    win_rates = (summary.get("settings") or {}).get("win_rates", True)  # absent: written before the setting
    data["eval"] = flat | {"win_rates": win_rates}
    data["eval_headline"] = {row[0]: row[1:] for row in headline}
    before = model_name(summary.get("baseline"), view)
    after = model_name(summary.get("policy"), view)
    out = (
        "<h2>Before and after</h2>"
        + table(["metric", f"before: {before}", f"after: {after}"], headline)
        + (PM_SCALE_NOTE if summary.get("pm_reward") else "")
        + (WIN_RATES_OFF_NOTE if win_rates is False else "")
        + table(["setting", "value"], [[k, v] for k, v in flat.items()])
    )
    return out + (_samples_table(samples, before, after) if samples else "")
