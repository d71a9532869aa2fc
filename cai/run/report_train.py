"""The supervised training sections: SFT (the SL-CAI model), the preference model, DPO."""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from cai.outputs import TrainLogRow, TrainRecord, TrainSummary
from cai.run.report_html import RunView, number, table
from cai.run.report_plot import BLUE, RED, figure, integer_x, plot_html, series
from cai.stages.intervals import wilson


def train_rows(view: RunView, stage: str) -> list[TrainLogRow]:
    """The Trainer's per-step log events (its end-of-training summary event left out)."""
    rows = view.records(f"{stage}/model/metrics.jsonl", TrainLogRow)
    return [m for m in rows if m.has("loss") and not m.has("train_loss")]


def trained(view: RunView, stage: str) -> TrainRecord | None:
    """A finished training stage's `cai_train.json`, or None before it has one."""
    return view.output(f"{stage}/model/cai_train.json", TrainRecord)


def figures(summary: TrainSummary, keep: Callable[[str, Any], bool]) -> list[tuple[str, Any]]:
    """The results whose name `keep` accepts, by name (the order `cai_train.json` holds them in)."""
    return [(k, v) for k, v in sorted(summary.figures().items()) if keep(k, v)]


def _curves(
    name: str, rows: list[TrainLogRow], left: tuple[str, str], right: tuple[str, str] | None, title: str
) -> str:
    """Loss-like `left` (key, axis label) against step, with an optional `right` quantity beside it."""
    steps = series([m.step for m in rows])
    fig, ax = figure()
    ax.plot(steps, series([m.value(left[0]) for m in rows]), marker="o", markersize=3, color=RED)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(left[1], color=RED)
    integer_x(ax, steps)
    if right and any(number(m.value(right[0])) is not None for m in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, series([m.value(right[0]) for m in rows]), marker="o", markersize=3, color=BLUE)
        ax2.set_ylabel(right[1], color=BLUE)
    ax.set_title(title)
    return plot_html(fig, name, f"{title} curves")


def sft_section(view: RunView) -> str:
    data = view.data
    info = trained(view, "sft")
    rows = train_rows(view, "sft")
    if info is None and not rows:
        return ""
    summary = info.results() if info is not None else TrainSummary()
    shown = figures(summary, lambda k, v: "loss" in k and number(v) is not None)
    data["sft"] = {"loss": [m.loss for m in rows], "step": [m.step for m in rows]}
    plot = _curves("sft", rows, ("loss", "training loss (cross-entropy)"), None, "SFT: loss") if rows else ""
    return "<h2>SL-CAI fine-tuning (SFT)</h2>" + plot + table(["metric", "value"], [list(kv) for kv in shown])


def _held_out(summary: TrainSummary) -> list[list[Any]]:
    n = summary.rows.eval if summary.rows else None
    rows = []
    for when in ("before", "after"):
        acc = number(summary.value(f"eval_accuracy_{when}"))
        ci = "—"
        if acc is not None and isinstance(n, int) and n > 0:
            lo, hi = wilson(round(acc * n), n)
            ci = f"[{lo:.3f}, {hi:.3f}]"
        rows.append([f"held-out accuracy {when} training", acc, n, ci, summary.value(f"eval_gap_{when}")])
    return rows


def pm_section(view: RunView) -> str:
    data = view.data
    info = trained(view, "pm")
    if info is None:
        return ""
    summary = info.results()
    shown = figures(summary, lambda k, v: ("accuracy" in k or "loss" in k) and not isinstance(v, list))
    data["pm"] = dict(shown)
    rows = train_rows(view, "pm")
    plot = (
        _curves("pm", rows, ("loss", "training loss"), ("accuracy", "batch accuracy"), "PM: training loss")
        if rows
        else ""
    )
    return (
        "<h2>Preference model</h2>"
        + table(["held-out pairs", "accuracy", "n", "95% interval (Wilson)", "mean reward gap"], _held_out(summary))
        + _decision(summary)
        + _gap_histogram(summary)
        + plot
        + table(["metric", "value"], [list(kv) for kv in shown])
    )


def _decision(summary: TrainSummary) -> str:
    """The PM on the decision RL will read off it: the refusal of a harmful request over the
    answer, the answer to a safe request over the refusal (`cai.stages.decision`)."""
    d = summary.value("decision")
    if not isinstance(d, dict):
        return ""
    rows = []
    for side, wins in (("harmful", "refusal"), ("safe", "answer")):
        f = d.get(side) if isinstance(d.get(side), dict) else {}
        rate, lo, hi = number(f.get("rate")), number(f.get("lo")), number(f.get("hi"))
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "—"
        rows.append([f"{side} prompts: the {wins} preferred", rate, f.get("n"), ci])
    where = html.escape(f"{d.get('pairs')}, {d.get('split')} split")
    return table([f"decision pairs ({where})", "agreement", "n", "95% interval (Wilson)"], rows)


def _gap_histogram(summary: TrainSummary) -> str:
    """Held-out reward gap r(chosen) − r(rejected) per pair, before and after training: a PM that
    learned something moves the mass right of 0; one that did not leaves it centred there."""
    gaps = {
        w: [float(g) for g in summary.value(f"eval_gaps_{w}") or [] if number(g) is not None]
        for w in ("before", "after")
    }
    if not gaps["after"]:
        if summary.rows is not None and summary.rows.eval == 0:
            return "<p>No held-out pairs (the pm stage's <code>eval</code>), so no held-out reward-gap histogram.</p>"
        return "<p>This PM folder records no per-pair held-out gaps (written before they were), so no histogram.</p>"
    fig, ax = figure(7, 2.8)
    both = gaps["before"] + gaps["after"]
    lo, hi = min([*both, 0.0]), max([*both, 0.0])
    bins = [lo + (hi - lo) * i / 16 for i in range(17)] if hi > lo else 16
    for when, color in (("before", RED), ("after", BLUE)):
        if gaps[when]:
            ax.hist(gaps[when], bins=bins, alpha=0.55, color=color, label=f"{when} training (n {len(gaps[when])})")
    ax.axvline(0, color="#333333", linewidth=0.8)
    ax.set_xlabel("held-out reward gap: PM score of chosen − of rejected (PM's raw scale)")
    ax.set_ylabel("pairs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8)
    right = sum(g > 0 for g in gaps["after"])
    return plot_html(
        fig,
        "pm-gap",
        "Histogram of held-out PM reward gaps before and after training",
        f"Right of the line the PM prefers the chosen reply: {right} of {len(gaps['after'])} held-out pairs "
        "after training.",
    )


def dpo_section(view: RunView) -> str:
    """DPO (in place of PM + RL): its loss and implicit-reward margin per step, and the summary."""
    data = view.data
    info = trained(view, "dpo")
    if info is None:
        return ""
    shown = figures(info.results(), lambda k, v: any(w in k for w in ("loss", "accuracy", "margin")))
    rows = train_rows(view, "dpo")
    loss_name = (info.settings.loss if info.settings else None) or ""
    data["dpo"] = {
        **dict(shown),
        "loss": [m.loss for m in rows],
        "reward_margin": [m.value("rewards/margins") for m in rows],
    }
    out = f"<h2>DPO</h2><p>Loss: {html.escape(str(loss_name))}.</p>"
    if rows:
        out += _curves(
            "dpo", rows, ("loss", "DPO loss"), ("rewards/margins", "implicit reward margin β·h"), "DPO loss and margin"
        )
    return out + table(["metric", "value"], [list(kv) for kv in shown])
