"""The warnings at the top of the report: what makes a run's figures untrustworthy, said first.

Each check reads the figure its stage wrote, says nothing when the figure is absent (an older
run, a stage not run), and quotes the figure when it warns, so a reader can check it.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, replace
from typing import Any

from cai.outputs import Difference, EvalSummary, LabelRecord, LabelSummary, TrainLogRow, TrainRecord, TrainSummary
from cai.run.gate import CHANCE_MIN, gate_record, labels_finding
from cai.run.report_html import RunView, diff_ci, number
from cai.run.report_labels import label_output
from cai.run.report_monitor import monitor_warnings
from cai.run.report_rl import rl_log, rl_series
from cai.run.report_train import trained
from cai.stages.intervals import wilson

# ---- thresholds: one place, each with why -------------------------------------------------
# A judge that reads the replies picks the same reply whichever is shown first. Below 0.5 it
# changes its pick when the replies swap more often than it keeps it: worse than a coin.
ORDER_CONSISTENCY_MIN = 0.5
# Share of questions answered by one position (P(first) > 0.5, or < 0.5, in this share of them).
# Red-team pairs have no reason to put the better reply first 90% of the time; a judge that does
# is answering by position, and averaging both orders then leaves labels near 0.5 (ties).
POSITION_SHARE_MAX = 0.9
# A PM that ranks held-out pairs right less than 55% of the time, or whose 95% interval holds a
# coin's 0.5, gives RL a reward that is mostly noise.
PM_ACCURACY_MIN = CHANCE_MIN
# Without held-out pairs: a final training loss this close to ln 2 (soft labels near 0.5 give
# the same) is what a PM that scores every pair alike reaches.
PM_LOSS_NEAR_LN2 = 0.02
# Below 10% of rollouts ending with EOS, nearly every rollout carries the missing-EOS penalty, so
# the reward mostly measures "cut off or not" rather than the PM's preference.
EOS_RATE_MIN = 0.1


@dataclass(frozen=True)
class RunWarning:
    key: str  # stable name, for tests and the JSON block
    text: str  # HTML, figures included


def position_counts(records: list[LabelRecord]) -> tuple[int, int, int]:
    """(questions with P(first) > 0.5, with P(first) < 0.5, answered) over the label records."""
    ps = [
        a.p_first
        for r in records
        for x in r.principles or []
        for a in x.orders or []
        if a.p_first is not None and number(a.p_first) is not None
    ]
    return sum(p > 0.5 for p in ps), sum(p < 0.5 for p in ps), len(ps)


def judge_warning(summary: LabelSummary | None, records: list[LabelRecord]) -> RunWarning | None:
    if summary is None:
        return None
    consistency = number(summary.order_consistency)
    first, second, n = position_counts(records)
    side, k = ("first", first) if first >= second else ("second", second)
    by_position = n > 0 and k / n >= POSITION_SHARE_MAX
    inconsistent = consistency is not None and consistency < ORDER_CONSISTENCY_MIN
    if not (by_position or inconsistent):
        return None
    figures = []
    if consistency is not None:
        figures.append(f"order consistency {consistency:.3f}")
    if n:
        p = "&gt;" if side == "first" else "&lt;"
        figures.append(f"P(first) {p} 0.5 in {k} of {n} questions ({k / n:.0%})")
    return RunWarning(
        "judge-position",
        "<b>The judge answers by position, not content:</b> " + "; ".join(figures) + ". Its labels say little "
        "about the replies (see the order scatter).",
    )


def pm_warning(info: TrainRecord | None) -> RunWarning | None:
    summary = info.results() if info is not None else TrainSummary()
    acc = number(summary.eval_accuracy_after)
    n = summary.rows.eval if summary.rows is not None else None
    if acc is None or not isinstance(n, int) or n <= 0:
        return _pm_loss_warning(summary) if n == 0 else None
    lo, hi = wilson(round(acc * n), n) or (0.0, 1.0)
    if acc >= PM_ACCURACY_MIN and not lo <= 0.5 <= hi:
        return None
    return RunWarning(
        "pm-chance",
        f"<b>The PM is near chance:</b> held-out accuracy {acc:.3f} on {n} pairs, 95% interval "
        f"[{lo:.3f}, {hi:.3f}] (a coin scores 0.5); its reward is mostly noise.",
    )


def pm_decision_warning(info: TrainRecord | None) -> RunWarning | None:
    """A PM at or below chance on either side of the refusal-vs-answer yardstick teaches RL the
    wrong decision there, whatever its held-out accuracy on the run's own pairs."""
    d = (info.results() if info is not None else TrainSummary()).value("decision")
    if not isinstance(d, dict):
        return None
    bad = []
    for side, wins, teaches in (("harmful", "refusal", "compliance"), ("safe", "answer", "over-refusal")):
        f = d.get(side) if isinstance(d.get(side), dict) else {}
        rate = number(f.get("rate"))
        if rate is not None and rate <= 0.5:
            n = f.get("n")
            bad.append(
                f"on {side} prompts it prefers the {wins} only {rate:.0%} of the time (n {n}): it would teach {teaches}"
            )
    if not bad:
        return None
    return RunWarning(
        "pm-decision",
        "<b>The PM points the wrong way on the decision RL has to learn:</b> "
        + html.escape("; ".join(bad))
        + " (refusal-vs-answer pairs, data/decision_pairs.jsonl test split; a coin scores 50%).",
    )


def _pm_loss_warning(summary: TrainSummary) -> RunWarning | None:
    """No held-out pairs: the training loss is all there is. Ending next to ln 2, the loss of
    predicting 0.5 for every pair, it shows nothing was learned."""
    last = number(summary.train_loss_last)
    if last is None or abs(last - math.log(2)) > PM_LOSS_NEAR_LN2:
        return None
    first = number(summary.train_loss_first)
    went = f"{first:.3f} → {last:.3f}" if first is not None else f"ended at {last:.3f}"
    return RunWarning(
        "pm-chance",
        f"<b>The PM may be at chance:</b> no held-out pairs measure it (`eval` in the pm stage), and its "
        f"training loss went {went}, next to ln 2 = 0.693, what predicting 0.5 for every pair scores.",
    )


def rl_warnings(rows: list[TrainLogRow], info: TrainRecord) -> list[RunWarning]:
    s = rl_series(rows, info)
    out = []
    rates = [r for r in s["eos_rate"] if r is not None]
    if rates and sum(rates) / len(rates) < EOS_RATE_MIN:
        out.append(
            RunWarning(
                "rl-no-eos",
                f"<b>Rollouts (almost) never end with EOS:</b> {sum(rates) / len(rates):.1%} of rollouts on average "
                f"over {len(rates)} logged updates; the reward mostly counts the missing-EOS penalty.",
            )
        )
    kls = [(k, x) for k, x in zip(s["kl"], s["x"], strict=True) if number(k) is not None]
    neg = [(k, x) for k, x in kls if k < 0]
    if neg:
        k, x = min(neg, key=lambda t: t[0])
        out.append(
            RunWarning(
                "rl-negative-kl",
                f"<b>The KL estimate goes negative</b> ({len(neg)} of {len(kls)} logged updates, lowest {k:.3g} at "
                f"{html.escape(str(x))}): a negative estimate of KL means the per-token estimator is noisy, not "
                "that the policy is closer than identical.",
            )
        )
    return out


def _difference(summary: EvalSummary | None, measure: str) -> Difference | None:
    """``harmless.<measure>.difference`` when it has both bounds (older runs: None)."""
    harmless = summary.harmless if summary is not None else None
    block = harmless.value(measure) if harmless is not None else None
    diff = block.difference if block is not None else None
    if diff is None or number(diff.lo) is None or number(diff.hi) is None:
        return None
    return diff


def harmless_warnings(summary: EvalSummary | None) -> list[RunWarning]:
    """The judge-free gain: none measured, harm up, or over-refusal clearly up (after − before)."""
    out = []
    harm = _difference(summary, "harmful_compliance")
    if harm is not None and harm.lo <= 0 <= harm.hi:
        out.append(
            RunWarning(
                "harmless-no-gain",
                f"<b>No measured harmlessness gain:</b> harmful compliance after − before = {diff_ci(harm)}, "
                "a 95% interval that includes 0.",
            )
        )
    elif harm is not None and harm.lo > 0:
        out.append(
            RunWarning(
                "harmless-worse",
                f"<b>The run made the policy less harmless:</b> harmful compliance after − before = "
                f"{diff_ci(harm)}, a 95% interval above 0.",
            )
        )
    over = _difference(summary, "over_refusal")
    if over is not None and over.lo > 0:
        out.append(
            RunWarning(
                "over-refusal-up",
                f"<b>The policy refuses more safe prompts:</b> over-refusal after − before = {diff_ci(over)}, "
                "a 95% interval above 0 (more evasive, the opposite of the CAI paper's aim).",
            )
        )
    return out


def labels_warning(view: RunView) -> RunWarning | None:
    """The label method's agreement with people near chance (the figure `cai run`'s gate reads)."""
    found = labels_finding(view)
    if found is None:
        return None
    return RunWarning("labels-chance", f"<b>The labels are near chance:</b> {html.escape(found.text)}.")


def _with_gate_notes(warnings: list[RunWarning], view: RunView) -> list[RunWarning]:
    """Say, on the warning about the same figure, that `cai run`'s gate raised it before the stage
    started (and whether it stopped the run there)."""
    keys = {"labels": "labels-chance", "pm": "pm-chance"}
    notes: dict[str, str] = {}
    for stage, entry in gate_record(view.run).items():
        did = "stopped the run" if entry.get("stopped") else "warned"
        for f in entry.get("findings", []):
            notes[keys.get(f.get("check"), "")] = f" <i>cai run's gate {did} before the {html.escape(stage)} stage.</i>"
    return [replace(w, text=w.text + notes[w.key]) if w.key in notes else w for w in warnings]


def run_warnings(view: RunView) -> list[RunWarning]:
    found = [
        judge_warning(*label_output(view)),
        labels_warning(view),
        pm_warning(trained(view, "pm")),
        pm_decision_warning(trained(view, "pm")),
        *rl_warnings(*rl_log(view)),
        *(RunWarning(key, text) for key, text in monitor_warnings(view)),
        *harmless_warnings(view.output("eval/summary.json", EvalSummary)),
    ]
    return _with_gate_notes([w for w in found if w is not None], view)


def warnings_html(warnings: list[RunWarning], data: dict[str, Any]) -> str:
    """The block under the title; nothing at all for a run with nothing to warn about."""
    if not warnings:
        return ""
    data["warnings"] = {w.key: w.text for w in warnings}
    items = "".join(f"<li data-warn='{w.key}'>{w.text}</li>" for w in warnings)
    return f"<div class='warn' id='warnings' role='alert'><b>Read these figures with care</b><ul>{items}</ul></div>"
