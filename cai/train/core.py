"""The skeleton every training command shares: check the output folder and the base model before
anything loads, train with library output under control, then publish the model with what it
was trained from (`cai_train.json`) and return the summary.

A trainer adapter (sft, pm, dpo, rl) supplies only its own part, `TrainStep`: tokenizer, data,
TRL config and trainer, and the summary and provenance only it knows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.models.spec import resolve_model_path
from cai.train import lora
from cai.train.common import quiet_libraries, seed_everything, use_bf16
from cai.train.publish import TrainOutput


@dataclass
class Trained:
    """What an adapter hands back: the trainer (its model is saved), the tokenizer to save beside
    it, the run's summary and the provenance only this kind of training has."""

    trainer: Any
    tokenizer: Any
    summary: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainJob:
    """One training run as the adapter sees it: where the base model is and where output goes."""

    model: str  # the spec as given
    path: str  # what `from_pretrained` loads
    output: TrainOutput
    seed: int
    quiet: bool

    def start(self, config: Any) -> Any:
        """After the TRL config is built (it sets up the process group): seed, clear the work
        folder, and go on with that config."""
        seed_everything(self.seed)
        self.output.prepare()
        return config


TrainStep = Callable[[TrainJob], Trained]


def train_model(
    kind: str,
    model: str,
    out: str,
    s: Any,
    step: TrainStep,
    *,
    seed: int,
    quiet: bool,
    overwrite: bool,
    loss: str | None = None,
    check: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run `step` for a model of `kind` at `out` and publish it; returns the summary.

    `s` is the kind's settings (with the LoRA fields); `loss` names the loss in the record;
    `check` sees the resolved base model before anything loads (e.g. that a PM shares its
    tokenizer).
    """
    output = TrainOutput(out, kind, overwrite=overwrite)
    output.check()  # fail before loading a model when the folder is unusable
    path = resolve_model_path(model, quiet=quiet)
    if check is not None:
        check(path)
    lora.check_target_names(path, s, model)
    recorded = {**s.record(), "seed": seed, **({"loss": loss} if loss else {}), "bf16": use_bf16()}
    with quiet_libraries(quiet):
        done = step(TrainJob(model, path, output, seed, quiet))
        done.summary["out"] = str(Path(out).resolve())
        meta = {
            "base_model": model,
            "base_model_path": path,
            **done.meta,
            "settings": recorded,
            "lora": lora.record(s),
            "summary": done.summary,
        }
        lora.prepare_to_save(done.trainer, s)
        output.finalize(done.trainer, done.tokenizer, meta)
    return done.summary
