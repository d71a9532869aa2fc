"""Training outputs: `cai_train.json`, `metrics.jsonl` rows, the collapse monitor's checks."""

from __future__ import annotations

from pydantic import Field

from cai.outputs.base import Num, Output


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
    warnings: list[MonitorWarning] = Field(default_factory=list)
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
    data: list[DataSource] = Field(default_factory=list)
    human: list[DataSource] = Field(default_factory=list)
    helpful: list[DataSource] = Field(default_factory=list)
    constitution_fingerprints: list[str] = Field(default_factory=list)
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
