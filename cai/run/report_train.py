"""The supervised training sections: SFT (the SL-CAI model), the preference model, DPO."""

from __future__ import annotations

import html
from typing import Any

from cai.run.report_html import RunView, number, table
from cai.run.report_plot import BLUE, RED, figure, integer_x, plot_html, series
from cai.stages.intervals import wilson


def train_rows(view: RunView, stage: str) -> list[dict[str, Any]]:
    """The Trainer's per-step log events (its end-of-training summary event left out)."""
    return [m for m in view.jsonl(f"{stage}/model/metrics.jsonl") if "loss" in m and "train_loss" not in m]


def _curves(
    name: str, rows: list[dict[str, Any]], left: tuple[str, str], right: tuple[str, str] | None, title: str
) -> str:
    """Loss-like `left` (key, axis label) against step, with an optional `right` quantity beside it."""
    steps = series([m.get("step") for m in rows])
    fig, ax = figure()
    ax.plot(steps, series([m.get(left[0]) for m in rows]), marker="o", markersize=3, color=RED)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(left[1], color=RED)
    integer_x(ax, steps)
    if right and any(number(m.get(right[0])) is not None for m in rows):
        ax2 = ax.twinx()
        ax2.plot(steps, series([m.get(right[0]) for m in rows]), marker="o", markersize=3, color=BLUE)
        ax2.set_ylabel(right[1], color=BLUE)
    ax.set_title(title)
    return plot_html(fig, name, f"{title} curves")


def sft_section(view: RunView) -> str:
    data = view.data
    info = view.json("sft/model/cai_train.json")
    rows = train_rows(view, "sft")
    if info is None and not rows:
        return ""
    summary = (info or {}).get("summary", info or {})
    keys = [k for k in summary if "loss" in k and number(summary[k]) is not None]
    data["sft"] = {"loss": [m.get("loss") for m in rows], "step": [m.get("step") for m in rows]}
    plot = _curves("sft", rows, ("loss", "training loss (cross-entropy)"), None, "SFT: loss") if rows else ""
    return "<h2>SL-CAI fine-tuning (SFT)</h2>" + plot + table(["metric", "value"], [[k, summary[k]] for k in keys])


def _held_out(summary: dict[str, Any]) -> list[list[Any]]:
    n = (summary.get("rows") or {}).get("eval")
    rows = []
    for when in ("before", "after"):
        acc = number(summary.get(f"eval_accuracy_{when}"))
        ci = "—"
        if acc is not None and isinstance(n, int) and n > 0:
            lo, hi = wilson(round(acc * n), n)
            ci = f"[{lo:.3f}, {hi:.3f}]"
        rows.append([f"held-out accuracy {when} training", acc, n, ci, summary.get(f"eval_gap_{when}")])
    return rows


def _trained(view: RunView, stage: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(its cai_train.json, that file's summary) for a finished training stage."""
    info = view.json(f"{stage}/model/cai_train.json")
    if info is None:
        return None
    return info, info.get("summary", info)


def pm_section(view: RunView) -> str:
    data = view.data
    found = _trained(view, "pm")
    if found is None:
        return ""
    _, summary = found
    keys = [k for k in summary if ("accuracy" in k or "loss" in k) and not isinstance(summary[k], list)]
    data["pm"] = {k: summary[k] for k in keys}
    rows = train_rows(view, "pm")
    plot = (
        _curves("pm", rows, ("loss", "training loss"), ("accuracy", "batch accuracy"), "PM: training loss")
        if rows
        else ""
    )
    return (
        "<h2>Preference model</h2>"
        + table(["held-out pairs", "accuracy", "n", "95% interval (Wilson)", "mean reward gap"], _held_out(summary))
        + _gap_histogram(summary)
        + plot
        + table(["metric", "value"], [[k, summary[k]] for k in keys])
    )


def _gap_histogram(summary: dict[str, Any]) -> str:
    """Held-out reward gap r(chosen) − r(rejected) per pair, before and after training: a PM that
    learned something moves the mass right of 0; one that did not leaves it centred there."""
    gaps = {
        w: [float(g) for g in summary.get(f"eval_gaps_{w}") or [] if number(g) is not None] for w in ("before", "after")
    }
    if not gaps["after"]:
        if (summary.get("rows") or {}).get("eval") == 0:
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
    found = _trained(view, "dpo")
    if found is None:
        return ""
    info, summary = found
    keys = [k for k in summary if any(w in k for w in ("loss", "accuracy", "margin"))]
    rows = train_rows(view, "dpo")
    loss_name = (info.get("settings") or {}).get("loss", "")
    data["dpo"] = {
        **{k: summary[k] for k in keys},
        "loss": [m.get("loss") for m in rows],
        "reward_margin": [m.get("rewards/margins") for m in rows],
    }
    out = f"<h2>DPO</h2><p>Loss: {html.escape(str(loss_name))}.</p>"
    if rows:
        out += _curves(
            "dpo", rows, ("loss", "DPO loss"), ("rewards/margins", "implicit reward margin β·h"), "DPO loss and margin"
        )
    return out + table(["metric", "value"], [[k, summary[k]] for k in keys])
