"""The RL section: what `cai.train.rl_metrics` logged per update, drawn against episode.

The RL stage's folder is ``ppo`` whichever algorithm (ppo, rloo, grpo) trained the policy.
"""

from __future__ import annotations

import html
from typing import Any

from cai.outputs import EvalSummary, PmReward, TrainLogRow, TrainRecord, TrainSettings
from cai.run.report_html import RunView, fmt, number, table
from cai.run.report_monitor import monitor_section
from cai.run.report_plot import BLUE, GREEN, GREY, ORANGE, RED, figure, integer_x, plot_html, series


def rl_log(view: RunView) -> tuple[list[TrainLogRow], TrainRecord]:
    """The logged updates (the final summary event left out) and the stage's `cai_train.json`."""
    rows = [m for m in view.records("ppo/model/metrics.jsonl", TrainLogRow) if m.has("reward") or m.has("kl")]
    return rows, view.output("ppo/model/cai_train.json", TrainRecord) or TrainRecord()


def eos_rate(row: TrainLogRow, batch: int | None) -> float | None:
    """Share of this update's rollouts that ended with EOS (the rest got the missing-EOS penalty).

    RLOO/GRPO log ``completions/clipped_ratio`` (the share cut off at the length limit). TRL's PPO
    logs ``val/num_eos_tokens``, a count over the process's batch of ``batch_size`` rollouts
    (cai pads with a token other than EOS, so one EOS is one finished rollout); no count means
    none finished, whatever the batch.
    """
    trl = row.trl
    clipped = number(trl.value("completions/clipped_ratio")) if trl else None
    if clipped is not None:
        return 1.0 - clipped
    count = number(trl.value("val/num_eos_tokens")) if trl else None
    if count is None:
        return None
    if count == 0:
        return 0.0
    return min(1.0, count / batch) if batch else None


def rl_settings(info: TrainRecord) -> TrainSettings:
    return info.settings or TrainSettings()


def _episode(row: TrainLogRow) -> Any:
    """PPO's x: the rollouts so far (TRL's ``episode``); RLOO/GRPO log only the update (step)."""
    return row.trl.value("episode") if row.trl is not None and row.trl.has("episode") else row.step


def rl_series(rows: list[TrainLogRow], info: TrainRecord) -> dict[str, list[Any]]:
    """One list per quantity, one entry per logged update; None where it was not logged."""
    batch = rl_settings(info).batch_size
    return {
        "x": [_episode(m) for m in rows],
        "reward": [m.reward for m in rows],
        "objective": [m.objective for m in rows],
        "kl": [m.kl for m in rows],
        "entropy": [m.entropy for m in rows],
        "eos_rate": [eos_rate(m, batch) for m in rows],
        "completion_length": [m.completion_length for m in rows],
        "sample_words": [_sample_words(m) for m in rows],
    }


def _sample_words(row: TrainLogRow) -> float | None:
    words = [len(str(s.value("completion") or "").split()) for s in row.samples or []]
    return sum(words) / len(words) if words else None


def _x_name(rows: list[TrainLogRow]) -> str:
    """PPO logs the episode (rollouts so far); RLOO/GRPO only the update number."""
    return "episode (rollouts so far)" if rows and rows[0].trl is not None and rows[0].trl.has("episode") else "update"


def _panels(s: dict[str, list[Any]], info: TrainRecord) -> list[tuple[str, list[tuple[str, str, list[Any]]]]]:
    """(y label, [(legend, colour, values)]) for each quantity that was logged at all."""
    st = rl_settings(info)
    unit = (info.summary.kl_unit if info.summary else None) or ""
    length = (
        ("reply length (tokens)", [("mean rollout length", GREEN, s["completion_length"])])
        if any(v is not None for v in s["completion_length"])
        else ("greedy sample length (words)", [("fixed sample prompts", GREEN, s["sample_words"])])
    )
    weights = st.reward or {"pm": 1.0}
    summed = "PM score" if weights == {"pm": 1.0} else " + ".join(f"{w:g}·{name}" for name, w in weights.items())
    panels = [
        (
            f"reward ({summed} − EOS penalty)",
            [
                (f"reward: {summed} − missing-EOS penalty", RED, s["reward"]),
                (f"objective: reward − λ·KL (λ={fmt(st.kl_coef)})", GREY, s["objective"]),
            ],
        ),
        (f"KL(policy ‖ ref) {unit}".strip(), [("KL estimate", BLUE, s["kl"])]),
        ("policy entropy (nats/token)", [("entropy", ORANGE, s["entropy"])]),
        ("share of rollouts ending with EOS", [("EOS rate", GREEN, s["eos_rate"])]),
        length,
    ]
    keep = []
    for ylabel, lines in panels:
        lines = [line for line in lines if any(v is not None for v in line[2])]
        if lines:
            keep.append((ylabel, lines))
    return keep


def _plot(rows: list[TrainLogRow], s: dict[str, list[Any]], info: TrainRecord, eval_pm: PmReward) -> str:
    panels = _panels(s, info)
    if not panels:
        return ""
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = figure(9 if cols == 2 else 7, 2.6 * nrows + 0.4, nrows, cols)
    flat = list(axes.flat) if cols * nrows > 1 else [axes]
    xs = series(s["x"])
    for ax, (ylabel, lines) in zip(flat, panels, strict=False):
        for legend, color, values in lines:
            ax.plot(xs, series(values), marker="o", markersize=3, color=color, label=legend)
        if ylabel.startswith("KL"):
            ax.axhline(0.0, color=GREY, linewidth=0.8, linestyle=":")  # below it: estimator noise
        if ylabel.startswith("share"):
            ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(_x_name(rows))
        ax.set_ylabel(ylabel, fontsize="small")
        integer_x(ax, xs)
        if len(lines) > 1:
            ax.legend(loc="best", frameon=False, fontsize="x-small")
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    fig.suptitle("RL: per logged update")
    return plot_html(fig, "rl", "RL reward, KL, entropy, EOS rate and reply length curves", _caption(info, eval_pm))


def _caption(info: TrainRecord, eval_pm: PmReward) -> str:
    st = rl_settings(info)
    figures = f" ({fmt(eval_pm.baseline)} before, {fmt(eval_pm.policy)} after)" if eval_pm.policy is not None else ""
    return (
        f"<b>reward</b> is the PM's score of a rollout minus the missing-EOS penalty "
        f"({html.escape(fmt(st.missing_eos_penalty))}) for rollouts cut off before EOS; "
        "<b>objective</b> subtracts λ·KL as well. The before/after table's <i>mean PM reward</i>"
        f"{html.escape(figures)} is the PM's raw score of each model's replies to the eval prompts, with "
        "neither term, so it is on another scale. "
        "A KL estimate below 0 (dotted line) is noise of the per-token estimator: the policy cannot be "
        "closer to the reference than identical."
    )


def rl_section(view: RunView) -> str:
    data = view.data
    rows, info = rl_log(view)
    if not rows:
        return ""
    s = rl_series(rows, info)
    data["ppo"] = {k: s[k] for k in ("x", "reward", "objective", "kl", "entropy", "eos_rate", "completion_length")}
    algorithm = rl_settings(info).algorithm or (info.summary.algorithm if info.summary else None) or "ppo"
    evaluated = view.output("eval/summary.json", EvalSummary)
    eval_pm = (evaluated.pm_reward if evaluated else None) or PmReward()
    cols = ["x", "reward", "objective", "kl", "entropy", "eos_rate"]
    return (
        f"<h2>Reinforcement learning ({html.escape(str(algorithm))})</h2>"
        + _plot(rows, s, info, eval_pm)
        + table(
            [_x_name(rows), "reward (PM − EOS penalty)", "objective", "KL", "entropy", "EOS rate"],
            [[s[c][i] for c in cols] for i in range(len(rows))],
        )
        + monitor_section(view)
    )
