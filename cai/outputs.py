"""What stages write and later readers (the report, the cards, ``cai models``) read, as types.

A stage writes its summary through `cai.io.outputs.write_output`, which refuses figures that would
not read back as the stage's type; a reader gets them back typed through `cai.io.outputs` (the
report through its `RunView`), so no reader re-parses an untyped dictionary with ``.get`` chains
and legacy fallbacks.

Each model declares the fields some reader uses and keeps everything else the stage recorded
(``extra="allow"``): a summary round-trips byte for byte, and a figure added to a stage needs no
change here until something reads it. Every declared field is optional, because run folders
written by older versions lack newer figures and readers say "—" for them. Numbers are
``int | float`` so a count stays an int and a rate a float when written back.
"""

from __future__ import annotations

import itertools
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from cai.errors import file_error

Num = int | float


class Output(BaseModel):
    """The base of every stage output: declared fields typed, the rest kept as written."""

    model_config = ConfigDict(extra="allow", frozen=True)

    def figures(self) -> dict[str, Any]:
        """What the stage recorded, as JSON values by name (sorted, as in the file): exactly the
        keys it set, none a default filled in."""
        return _sorted(self.model_dump(mode="json", exclude_unset=True))

    def has(self, key: str) -> bool:
        """Whether the writer recorded `key` at all (declared or not), even as null."""
        return key in self.model_fields_set or key in (self.model_extra or {})

    def value(self, key: str) -> Any:
        """A recorded figure by its written name, for the names Python cannot spell
        (``rewards/margins``) and the open-ended ones; None when not recorded."""
        if key in type(self).model_fields:
            return getattr(self, key)
        return (self.model_extra or {}).get(key)


OutT = TypeVar("OutT", bound=Output)


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def parse_output(kind: type[OutT], data: Any, path: str, line: int | None = None) -> OutT:
    """`data` read from `path` as `kind`; a field of the wrong type is one line naming the file,
    its line (records) and the field."""
    try:
        return kind.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"]]
        message = err["msg"]
        if loc and loc[-1] in ("int", "float"):  # a branch of `int | float`: say what both take
            loc, message = loc[:-1], "should be a number"
        message = message[:1].lower() + message[1:]
        raise file_error(path, ".".join(loc) or kind.__name__, message, line=line) from None


# --------------------------------------------------------------------------- shared pieces


class Rate(Output):
    """k of n, with its 95% interval."""

    k: int | None = None
    n: int | None = None
    rate: Num | None = None
    lo: Num | None = None
    hi: Num | None = None


class Difference(Output):
    """A difference of two rates (after − before) with its 95% interval."""

    d: Num | None = None
    lo: Num | None = None
    hi: Num | None = None


class Provenance(Output):
    """What every record says about where it came from (its ``provenance``)."""

    constitution: str | None = None
    fingerprint: str | None = None
    cai_version: str | None = None
    judge: Any = None
    judge_settings: JudgeSettings | None = None


class JudgeSettings(Output):
    method: str | None = None
    orders: str | None = None
    contrast_norm: str | None = None
    principles: str | None = None
    k: int | None = None


class Throughput(Output):
    prompts_s: Num | None = None
    tok_s: Num | None = None


# --------------------------------------------------------------------------- critique


class CritiqueSummary(Output):
    """``critique/summary.json``: what the SL-CAI export kept and left out."""

    stage: str | None = None
    mode: str | None = None
    records: int | None = None
    exported: int | None = None
    errors: int | None = None
    excluded_flagged: int | None = None
    excluded_copies: int | None = None
    exemplar_copy: int | None = None
    critique_copy: int | None = None
    boilerplate: int | None = None
    excluded_boilerplate: int | None = None
    demonstrations: int | None = None
    demonstrations_by_kind: dict[str, int] | None = None
    flags: dict[str, int] | None = None
    per_principle: dict[str, int] | None = None
    throughput: Throughput | None = None


class CritiqueRound(Output):
    principle: str | None = None
    flags: list[str] = []


class CritiqueRecord(Output):
    """One line of ``critique/records.jsonl``."""

    id: str | None = None
    rounds: list[CritiqueRound] | None = None
    flags: list[str] | None = None
    provenance: Provenance | None = None


# --------------------------------------------------------------------------- label


class LabelCounts(Output):
    n: int | None = None


class PrincipleFigures(Output):
    """How one comparison principle behaved over the labelled pairs."""

    n: int | None = None
    agrees_with_label: Num | None = None
    flip_rate: Num | None = None
    p_first_mean: Num | None = None
    option_mass: Num | None = None


class LabelSummary(Output):
    """``label/summary.json``: the labels exported and how the judge behaved making them."""

    stage: str | None = None
    method: str | None = None
    rescore: str | None = None
    rescore_agreement: Num | None = None
    records: int | None = None
    exported: int | None = None
    errors: int | None = None
    identical: int | None = None
    unlabelled: int | None = None
    human_agreement: Num | None = None
    order_consistency: Num | None = None
    option_mass: Num | None = None
    labels: LabelCounts | None = None
    per_principle: dict[str, PrincipleFigures] = {}
    position_bias: Output | None = None


class OrderAnswer(Output):
    """The judge's answer to one question in one order of the replies."""

    order: str | None = None
    p_a: Num | None = None
    p_first: Num | None = None


class PrincipleAnswer(Output):
    principle: str | None = None
    orders: list[OrderAnswer] | None = None


class LabelRecord(Output):
    """One line of ``label/records.jsonl``."""

    id: str | None = None
    p_chosen: Num | None = None
    principles: list[PrincipleAnswer] | None = None
    provenance: Provenance | None = None


# --------------------------------------------------------------------------- eval


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


class MonitorRefusals(Output):
    """Refusals among one prompt set's greedy replies at a monitor check."""

    n: int | None = None
    refused: int | None = None
    share: Num | None = None


class MonitorWarning(Output):
    step: int | None = None  # set in the summary's list; a check's own warnings leave it out
    key: str | None = None
    text: str | None = None


class MonitorCheck(Output):
    """One collapse-monitor check during RL (`cai.train.monitor` says what each figure means)."""

    step: int | None = None
    safe: MonitorRefusals | None = None
    red: MonitorRefusals | None = None
    words_mean: Num | None = None
    tokens_mean: Num | None = None
    distinct2: Num | None = None
    top_sentence: str | None = None
    top_sentence_share: Num | None = None
    kl: Num | None = None
    replies: list[Output] | None = None
    warnings: list[MonitorWarning] | None = None


class MonitorSummary(Output):
    """The monitor in ``cai_train.json``: every warning, the first and last check, any stop."""

    checks: int | None = None
    warnings: list[MonitorWarning] = []
    stopped_at: int | None = None
    first: MonitorCheck | None = None
    last: MonitorCheck | None = None


class RowCounts(Output):
    eval: int | None = None


class TrainSummary(Output):
    """A training run's results (``cai_train.json``'s ``summary``); every kind has its own figures."""

    out: str | None = None
    algorithm: str | None = None
    kl_unit: str | None = None
    rows: RowCounts | None = None
    train_loss_first: Num | None = None
    train_loss_last: Num | None = None
    eval_accuracy_before: Num | None = None
    eval_accuracy_after: Num | None = None
    eval_gap_before: Num | None = None
    eval_gap_after: Num | None = None
    eval_gaps_before: list[Num | None] | None = None
    eval_gaps_after: list[Num | None] | None = None
    monitor: MonitorSummary | None = None


class TrainSettings(Output):
    """The settings a training run recorded; the fields named here are the ones readers use."""

    algorithm: str | None = None
    batch_size: int | None = None
    kl_coef: Num | None = None
    missing_eos_penalty: Num | None = None
    loss: str | None = None
    reward: dict[str, Num] | None = None  # RL: the rewards summed, with their weights


class DataSource(Output):
    """One data set a model was trained on, as recorded at training time."""

    path: str | None = None
    kind: str | None = None
    rows: int | None = None
    sha256: str | None = None


class TrainRecord(Output):
    """``cai_train.json``: a trained model folder's record of itself, written last."""

    kind: str | None = None
    cai_version: str | None = None
    created: str | None = None
    base_model: str | None = None
    settings: TrainSettings | None = None
    summary: TrainSummary | None = None
    data: list[DataSource] = []
    human: list[DataSource] = []
    helpful: list[DataSource] = []
    constitution_fingerprints: list[str] = []
    libraries: dict[str, str | None] | None = None

    def results(self) -> TrainSummary:
        """The results; a record written before they had their own key keeps them at the top."""
        if self.summary is not None:
            return self.summary
        return TrainSummary.model_validate(self.figures())


class TrainLogRow(Output):
    """One line of a training run's ``metrics.jsonl`` (a Trainer log event, or one RL update)."""

    step: Num | None = None
    loss: Num | None = None
    reward: Num | None = None
    objective: Num | None = None
    kl: Num | None = None
    entropy: Num | None = None
    completion_length: Num | None = None
    samples: list[Output] | None = None
    trl: Output | None = None  # TRL's own log event, under TRL's names
    monitor: MonitorCheck | None = None  # a collapse-monitor check (RL), on a row of its own


class RunManifest(Output):
    """A stage folder's ``run.json``: which stage wrote it, under which constitution."""

    stage: str | None = None
    constitution: str | None = None
    fingerprint: str | None = None


Provenance.model_rebuild()
HarmlessMeasure.model_rebuild()
