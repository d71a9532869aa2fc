"""The gate before training on labels: `cai run` says, before a PM or a policy is trained on
them, when the signal it would learn from is near chance, and stops when the recipe asks it to.

Two figures are read, each where it first exists:

* before a stage that trains on the label stage's pairs (pm, dpo: ``needs == "label"``): how far
  people agree with the method and judge that made the labels, as measured on judge-dev's test
  split (`cai.run.report_labels.label_agreement`; pairs by construction and judges nobody
  measured have no figure, and the gate says nothing about them);
* before a stage that optimises against the PM (ppo: it reads the pm stage's model): the PM's
  accuracy on its held-out pairs (a PM trained without `eval` pairs has no figure).

A figure is *near chance* when it is below `CHANCE_MIN` or its 95% Wilson interval holds a coin's
0.5. The recipe's top-level ``gate`` says what happens then: ``warn`` (the default) logs it and
goes on, ``stop`` also ends the run before the stage starts (one line, exit 2; finished stages
stay as they are, the stage's folder is not made), ``off`` looks at nothing. Whatever it found
goes into ``RUN/gate.json`` (written whole), which the report shows.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cai.errors import fail
from cai.io.atomic import write_json_atomic
from cai.io.readers import read_json_file
from cai.run.report_html import RunView
from cai.run.report_labels import label_agreement, label_output
from cai.run.report_train import trained
from cai.stages.intervals import wilson

if TYPE_CHECKING:
    from cai.run.context import RunContext
    from cai.run.registry import Stage

GateMode = Literal["warn", "stop", "off"]
GATE_FILE = "gate.json"
# Below 55% right, or with a 95% interval that holds 0.5, a label method or a PM is mostly noise:
# training on it teaches the policy whatever the noise happens to favour.
CHANCE_MIN = 0.55


@dataclass(frozen=True)
class Finding:
    check: str  # "labels" or "pm"
    text: str  # plain text, figures included
    rate: float
    n: int
    lo: float
    hi: float


def near_chance(rate: float, n: int) -> tuple[float, float] | None:
    """The 95% interval of `rate` over `n` when the rate is near chance (see the module), else None."""
    lo, hi = wilson(round(rate * n), n) or (0.0, 1.0)
    return (lo, hi) if rate < CHANCE_MIN or lo <= 0.5 <= hi else None


def labels_finding(view: RunView) -> Finding | None:
    summary, records = label_output(view)
    measured = label_agreement(summary, records) if summary is not None else None
    if not measured or not isinstance(measured.get("n"), int) or measured["n"] <= 0:
        return None
    rate, n = float(measured["agreement"]), measured["n"]
    chance = near_chance(rate, n)
    if chance is None:
        return None
    lo, hi = chance
    return Finding(
        "labels",
        f"the labels' method ({measured['method']}, {measured['per_pair']}) agrees with people on {rate:.1%} of "
        f"judge-dev's {measured['split']} split (n={n}, 95% interval [{lo:.1%}, {hi:.1%}]): near chance, "
        "so what is trained on these labels learns mostly noise",
        rate,
        n,
        lo,
        hi,
    )


def pm_finding(view: RunView, stage: str = "pm") -> Finding | None:
    """The PM trained by `stage` (pm, or demo_pm for the demonstration PM) near chance on its held-out pairs."""
    info = trained(view, stage)
    summary = info.results() if info is not None else None
    acc = summary.eval_accuracy_after if summary is not None else None
    n = summary.rows.eval if summary is not None and summary.rows is not None else None
    if acc is None or not isinstance(n, int) or n <= 0:
        return None
    chance = near_chance(float(acc), n)
    if chance is None:
        return None
    lo, hi = chance
    return Finding(
        "pm",
        f"the PM ranks {acc:.1%} of its {n} held-out pairs right (95% interval [{lo:.1%}, {hi:.1%}]): near "
        "chance, so RL against it optimises mostly noise",
        float(acc),
        n,
        lo,
        hi,
    )


# The reward names whose preference model a stage's section can name, and the stage that trains it.
PM_STAGES = {"pm": "pm", "demo-pm": "demo_pm"}


def findings_before(run: Path, stage: Stage, section: Any = None) -> list[Finding]:
    """What the gate finds before `stage` starts, from the run's finished stages: before a stage
    that trains on the labels, the label method's agreement with people; before RL, each PM its
    reward optimises against (not a PM it does not read, and not before evaluation)."""
    view = RunView(run, {}, {})
    found = []
    if stage.needs == "label":
        found.append(labels_finding(view))
    reward = getattr(section, "reward", None)
    if isinstance(reward, dict):
        found += [pm_finding(view, PM_STAGES[name]) for name in reward if name in PM_STAGES]
    return [f for f in found if f is not None]


def gate_before(ctx: RunContext, stage: Stage, mode: GateMode) -> None:
    """Log and record what the gate finds before `stage`; with ``stop``, end the run (CaiError)."""
    section = getattr(ctx.recipe.stages, stage.name, None)
    found = findings_before(ctx.out, stage, section) if mode != "off" else []
    _record(ctx.out, stage.name, mode, found)  # a rerun that finds nothing clears what an earlier one found
    for f in found:
        ctx.log(f"warning: gate before {stage.name}: {f.text}")
    if mode == "stop" and found:
        raise fail(
            str(ctx.out),
            None,
            "gate",
            "; ".join(f.text for f in found) + f". Stopped before the {stage.name} stage (recipe gate: stop; "
            "gate: warn goes on anyway)",
        )


def _record(run: Path, stage: str, mode: GateMode, found: list[Finding]) -> None:
    entries = gate_record(run)
    if found:
        entries[stage] = {"mode": mode, "stopped": mode == "stop", "findings": [asdict(f) for f in found]}
    elif stage in entries:
        del entries[stage]
    else:
        return
    write_json_atomic(run / GATE_FILE, entries)


def gate_record(run: Path) -> dict[str, Any]:
    """``RUN/gate.json`` ({stage: {mode, stopped, findings}}), {} when the gate found nothing."""
    path = run / GATE_FILE
    data = read_json_file(path, kind="gate record") if path.is_file() else {}
    return data if isinstance(data, dict) else {}
