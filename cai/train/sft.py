"""SL-CAI supervised fine-tuning: TRL's `SFTTrainer` on the final revisions.

Loss only on the answer. TRL's `assistant_only_loss` needs `{% generation %}` markers in the
chat template, and SmolLM2's (ChatML) has none, nor is it among the templates TRL knows how to
patch. So every `messages` row becomes TRL's *conversational prompt-completion* form
(`prompt` = all turns but the last, `completion` = the last, assistant, turn); TRL then masks
the prompt (`completion_only_loss`), which works with any chat template. The trained tokens are
the answer plus its end-of-turn token, so the model also learns to stop. In multi-turn rows
only the last assistant turn is trained — for SL-CAI that is the final revision, which is the
point.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.errors import fail, file_error, option_error
from cai.train import lora
from cai.train.common import (
    JsonlMetricsCallback,
    changed_params,
    keep_metrics_off_terminal,
    load_chat_tokenizer,
    loss_history,
    param_checksums,
)
from cai.train.configs import sft_config
from cai.train.core import Trained, TrainJob, train_model
from cai.train.publish import TrainOutput
from cai.train.settings import SftSettings
from cai.train.tables import Loc, TableSource, load_table, rows_sha256

SFT_JSONL = ("sft.jsonl",)
ROLES = ("system", "user", "assistant")
Example = dict[str, list[dict[str, str]]]  # {"prompt": [...], "completion": [...]}


# --------------------------------------------------------------------------- data


def to_example(messages: Any, loc: Loc) -> Example | None:
    """A `messages` row → prompt/completion; None when the final answer is empty (skipped)."""
    where = (loc.path, loc.line)
    if not isinstance(messages, list) or not messages:
        raise fail(*where, loc.field("messages"), "must be a non-empty list of {role, content}")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise fail(*where, loc.field(f"messages[{i}]"), "must be an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise fail(*where, loc.field(f"messages[{i}].role"), f"{role!r} is not one of {', '.join(ROLES)}")
        if not isinstance(content, str):
            raise fail(*where, loc.field(f"messages[{i}].content"), "must be a string")
        clean.append({"role": role, "content": content})  # drops keys Arrow filled with None
    if clean[-1]["role"] != "assistant":
        raise fail(*where, loc.field("messages"), "the last message must be the assistant's answer")
    if len(clean) < 2 or all(m["role"] == "system" for m in clean[:-1]):
        raise fail(*where, loc.field("messages"), "needs a user turn before the answer")
    if not clean[-1]["content"].strip():
        return None
    return {"prompt": clean[:-1], "completion": clean[-1:]}


@dataclass
class MessageTable:
    """The usable examples of some `messages` sources, with what was left out and why."""

    examples: list[Example] = field(default_factory=list)
    sources: list[TableSource] = field(default_factory=list)
    skipped_empty: int = 0
    fingerprints: set[str] = field(default_factory=set)


def load_messages(paths: Sequence[str], option: str) -> MessageTable:
    """Read `messages` rows from SL-CAI output folders, saved datasets or JSONL files."""
    table = MessageTable()
    for path in paths:
        rows, locs, source, kind = load_table(
            path, ["messages"], jsonl_names=SFT_JSONL, option=option, optional=["fingerprint"], stage="critique"
        )
        used = []
        for row, loc in zip(rows, locs, strict=True):
            ex = to_example(row["messages"], loc)
            if ex is None:
                table.skipped_empty += 1
                continue
            used.append(ex)
            if isinstance(row.get("fingerprint"), str):
                table.fingerprints.add(row["fingerprint"])
        table.examples.extend(used)
        table.sources.append(TableSource(str(source), kind, len(used), rows_sha256(used)))
    return table


def helpful_count(n_cai: int, ratio: float) -> int:
    """Helpful rows to add so they make up `ratio` of the mixed training set."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError("ratio must be in [0, 1)")
    return round(ratio * n_cai / (1.0 - ratio))


def mix_helpful(
    cai_rows: list[Example], helpful_rows: list[Example], ratio: float, rng: random.Random
) -> tuple[list[Example], int]:
    """CAI rows plus a seeded sample of helpful rows, shuffled; returns (rows, helpful used).

    When there are fewer helpful rows than the ratio asks for, all are used (never repeated, so
    no example is over-weighted) and the caller reports the ratio actually reached.
    """
    want = helpful_count(len(cai_rows), ratio)
    picked = rng.sample(helpful_rows, min(want, len(helpful_rows)))
    mixed = cai_rows + picked
    rng.shuffle(mixed)
    return mixed, len(picked)


def split_eval(
    rows: list[Example], fraction: float, rng: random.Random, where: str
) -> tuple[list[Example], list[Example]]:
    """Hold out `fraction` of the revision data (before mixing, so eval is pure CAI data)."""
    if fraction <= 0:
        return rows, []
    if fraction >= 1:
        raise file_error(where, "--eval-fraction", "must be below 1")
    n_eval = max(1, round(fraction * len(rows)))
    if n_eval >= len(rows):
        raise file_error(where, "--eval-fraction", f"leaves no training rows out of {len(rows)}")
    order = list(range(len(rows)))
    rng.shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [rows[i] for i in sorted(held)]


@dataclass
class SFTData:
    train: list[Example]
    eval: list[Example]
    cai: MessageTable
    helpful: MessageTable | None
    helpful_used: int

    def counts(self) -> dict[str, Any]:
        n = len(self.train)
        return {
            "train": n,
            "eval": len(self.eval),
            "helpful": self.helpful_used,
            "cai": n - self.helpful_used,
            "skipped_empty_answer": self.cai.skipped_empty + (self.helpful.skipped_empty if self.helpful else 0),
            "helpful_ratio_actual": round(self.helpful_used / n, 4) if n else 0.0,
        }


def prepare_sft_data(
    data_dirs: Sequence[str],
    *,
    helpful: Sequence[str] | None = None,
    helpful_ratio: float = 0.0,
    eval_fraction: float = 0.0,
    seed: int = 0,
) -> SFTData:
    """Load, validate, split and mix; every user mistake is a `CaiError` naming file and row."""
    if not data_dirs:
        raise option_error("--data", "give at least one data folder")
    if not 0.0 <= helpful_ratio < 1.0:
        raise option_error("--helpful-ratio", f"{helpful_ratio} is not in [0, 1)")
    if helpful and helpful_ratio == 0.0:
        raise option_error("--helpful-ratio", "--helpful given but the ratio is 0; set e.g. 0.3")
    if helpful_ratio > 0.0 and not helpful:
        raise option_error("--helpful", "--helpful-ratio > 0 needs --helpful data")
    cai_table = load_messages(data_dirs, "--data")
    if not cai_table.examples:
        raise file_error(
            data_dirs[0], "--data", f"no usable rows ({cai_table.skipped_empty} with an empty final answer)"
        )
    rng = random.Random(seed)
    train, held = split_eval(cai_table.examples, eval_fraction, rng, data_dirs[0])
    help_table, used = None, 0
    if helpful:
        help_table = load_messages(helpful, "--helpful")
        if not help_table.examples:
            raise file_error(helpful[0], "--helpful", "no usable rows")
        train, used = mix_helpful(train, help_table.examples, helpful_ratio, rng)
    return SFTData(train, held, cai_table, help_table, used)


# --------------------------------------------------------------------------- training


def train_sft(
    data_dirs: list[str],
    model: str,
    out: str,
    settings: SftSettings | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
    overwrite: bool = False,
    logging_steps: int = 1,
) -> dict[str, Any]:
    """Fine-tune `model` on the final revisions in `data_dirs`; save a model folder at `out`.

    Returns a summary (losses, steps, throughput, whether parameters changed) that is also
    written, with provenance, to `out/cai_train.json`. Safe under `accelerate launch`.
    """
    s = settings or SftSettings()
    data = prepare_sft_data(
        data_dirs, helpful=s.helpful or None, helpful_ratio=s.helpful_ratio, eval_fraction=s.eval_fraction, seed=seed
    )

    def step(job: TrainJob) -> Trained:
        tokenizer = load_chat_tokenizer(job.path, model, "SFT on `messages` needs an instruct/chat model")
        # The config comes first: building it sets up the process group (DDP, DeepSpeed) the
        # way transformers expects, before anything else asks which process this is.
        config = job.start(sft_config(job.output, s, seed, quiet, logging_steps))
        trainer = _build_trainer(job.path, tokenizer, data, job.output, config, quiet, lora.lora_config(s))
        summary = _train_and_summarize(trainer, data, out)
        meta = {
            "data": [src.as_record() for src in data.cai.sources],
            "helpful": [src.as_record() for src in data.helpful.sources] if data.helpful else [],
            "constitution_fingerprints": sorted(data.cai.fingerprints),
            "final_loss": summary["train_loss_last"],
        }
        return Trained(trainer, tokenizer, summary, meta)

    loss = "completion_only (prompt/completion form)"
    return train_model("sft", model, out, s, step, seed=seed, quiet=quiet, overwrite=overwrite, loss=loss)


def _train_and_summarize(trainer: Any, data: SFTData, out: str) -> dict[str, Any]:
    """Train, with eval loss before/after when rows were held out, and say what happened."""
    before = param_checksums(trainer.model)
    eval_before = trainer.evaluate()["eval_loss"] if data.eval else None
    result = trainer.train()
    eval_after = trainer.evaluate()["eval_loss"] if data.eval else None
    changed = changed_params(before, param_checksums(trainer.model))
    losses = loss_history(trainer.state.log_history)
    rows = data.counts()
    # TRL drops rows whose prompt alone fills max_length (nothing left to learn from).
    rows["dropped_too_long"] = len(data.train) - len(trainer.train_dataset)
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "eval_loss_before": eval_before,
        "eval_loss_after": eval_after,
        "steps": trainer.state.global_step,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        # None when nothing was comparable (ZeRO-3 keeps no full parameters on a process).
        "params_changed": bool(changed) if before else None,
        "params_changed_tensors": len(changed),
        "rows": rows,
        "out": str(Path(out).resolve()),
    }


def _build_trainer(
    path: str, tokenizer: Any, data: SFTData, output: TrainOutput, config: Any, quiet: bool, peft_config: Any = None
) -> Any:
    from datasets import Dataset
    from trl import SFTTrainer

    # TRL loads the model from the path itself so DeepSpeed ZeRO-3 can partition it at load time.
    trainer = SFTTrainer(
        model=path,
        args=config,
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.eval) if data.eval else None,
        processing_class=tokenizer,
        callbacks=[JsonlMetricsCallback(output.metrics)],
        peft_config=peft_config,  # None: full fine-tuning; else TRL wraps the model in LoRA adapters
    )
    keep_metrics_off_terminal(trainer, quiet)
    if len(trainer.train_dataset) == 0:
        raise file_error(
            data.cai.sources[0].path,
            "--max-length",
            f"every prompt is longer than {config.max_length} tokens; raise --max-length",
        )
    return trainer
