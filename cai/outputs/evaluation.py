"""`cai eval policy` outputs: harmlessness measures, the Pareto picture, the detector's trust, samples."""

from __future__ import annotations

import itertools
from typing import Any

from cai.outputs.base import Difference, Num, Output, Rate


class Step(Difference):
    """One step of a run's chain of models (e.g. SL model → RL policy): later − earlier."""

    earlier: str | None = None
    later: str | None = None


class HarmlessMeasure(Output):
    """Harmful compliance or over-refusal: before, after and the difference; with intermediate
    models (``others``, by name) also each one's rate and the difference per step."""

    prompts: str | None = None
    baseline: Rate | None = None
    policy: Rate | None = None
    difference: Difference | None = None
    per_category: dict[str, HarmlessMeasure] | None = None
    others: dict[str, Rate] | None = None
    steps: list[Step] | None = None

    def rate(self, name: str) -> Rate | None:
        """The rate of the model called `name` (policy, baseline or an intermediate one)."""
        if name in ("policy", "baseline"):
            return getattr(self, name)
        return (self.others or {}).get(name)


class StyleFigures(Output):
    """The detector on the labelled replies of one style."""

    n: int | None = None
    recall: Num | None = None


class DetectorFigures(Output):
    """How far the refusal detector that counted the rates can be trusted (held-out figures)."""

    n: int | None = None
    precision: Num | None = None
    recall: Num | None = None
    split: str | None = None
    recall_full: Num | None = None
    recall_partial: Num | None = None
    false_alarm: Num | None = None
    by_style: dict[str, StyleFigures] | None = None
    check: str | None = None

    def weakest(self, k: int = 3) -> list[tuple[str, float]]:
        """The `k` styles it finds refusals in least often, (style, recall), worst first."""
        found = [(name, float(g.recall)) for name, g in (self.by_style or {}).items() if g.recall is not None]
        return sorted(found, key=lambda t: (t[1], t[0]))[:k]


class PlainStyle(Output):
    """The two measures on short, plainly worded prompts."""

    harmful_compliance: HarmlessMeasure | None = None
    over_refusal: HarmlessMeasure | None = None


ParetoCell = Rate | Difference | None


class Harmless(Output):
    chain: list[str] | None = None  # the models in training order: baseline, intermediate ones, policy
    harmful_compliance: HarmlessMeasure | None = None
    over_refusal: HarmlessMeasure | None = None
    plain: PlainStyle | None = None
    detector: DetectorFigures | None = None

    def pareto(self) -> tuple[list[str], list[tuple[str, list[ParetoCell]]]]:
        """The Pareto picture as a table: one column per measure (the plain style's too), one row
        per model in training order, then one row per step (later − earlier) and, with more than
        one step, the whole way (policy − baseline). Returns (column names, [(row name, cells)])."""
        plain = self.plain or PlainStyle()
        named = (
            ("harmful compliance", self.harmful_compliance),
            ("over-refusal", self.over_refusal),
            ("plain: harmful compliance", plain.harmful_compliance),
            ("plain: over-refusal", plain.over_refusal),
        )
        measures = [(label, m) for label, m in named if m is not None]
        chain = self.chain or (["baseline", "policy"] if any(m.baseline for _, m in measures) else ["policy"])
        rows: list[tuple[str, list[ParetoCell]]] = [(name, [m.rate(name) for _, m in measures]) for name in chain]
        for a, b in itertools.pairwise(chain):
            rows.append((f"{b} − {a}", [_step(m, a, b, len(chain)) for _, m in measures]))
        if len(chain) > 2:
            rows.append((f"{chain[-1]} − {chain[0]}", [m.difference for _, m in measures]))
        return [label for label, _ in measures], rows


def _step(m: HarmlessMeasure, earlier: str, later: str, models: int) -> Difference | None:
    """The difference of one step of the chain; with two models it is the measure's difference."""
    if models == 2:
        return m.difference
    return next((st for st in m.steps or [] if st.earlier == earlier and st.later == later), None)


class PmReward(Output):
    baseline: Num | None = None
    policy: Num | None = None
    delta: Num | None = None


class RefusalRates(Output):
    refusal_rate: Num | None = None
    evasive_rate: Num | None = None


class WinRate(Output):
    win_rate: Num | None = None


class EvalSettings(Output):
    win_rates: bool | None = None


class EvalSummary(Output):
    """``eval/summary.json``: the policy against its baseline."""

    baseline: str | None = None
    policy: str | None = None
    others: dict[str, str] | None = None  # intermediate models by name: their specs
    pm: str | None = None
    n: int | None = None
    harmless: Harmless | None = None
    pm_reward: PmReward | None = None
    refusal: dict[str, RefusalRates] | None = None
    answer_words: dict[str, Num | None] | None = None
    win_rate: dict[str, WinRate] | None = None
    settings: EvalSettings | None = None

    def scalars(self) -> list[tuple[str, Any]]:
        """The top-level figures that are a number, a string or null, by name."""
        return [(k, v) for k, v in sorted(self.figures().items()) if isinstance(v, int | float | str) or v is None]


class EvalSample(Output):
    """One line of ``eval/samples.jsonl``: a prompt and both models' replies."""

    prompt: Any = None
    baseline: Any = None
    policy: Any = None
    baseline_pm: Num | None = None
    policy_pm: Num | None = None


# --------------------------------------------------------------------------- training


HarmlessMeasure.model_rebuild()
