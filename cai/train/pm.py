"""Preference model (PM): TRL's `RewardTrainer` on soft AI labels, optionally plus human pairs.

* Loss: the soft-label cross-entropy of `cai.train.pm_loss` (``labels="soft"``, default), or
  TRL's own ``-log σ(r_c - r_r)`` (``labels="hard"``). Human pairs always count as p = 1.
* Scoring position: the last token of prompt + answer + EOS, exactly where TRL's PPO reads the
  reward (see `cai.train.rl_common`); rows are therefore tokenised here, not by TRL.
* The PM starts from the *policy* (usually the SL-CAI model) so it shares its tokenizer, which
  TRL's PPO requires; `check_same_tokenizer` enforces that before any RL run.
* Accuracy (chosen scored above rejected) on held-out pairs before and after training, and after
  training the decision yardstick (`cai.stages.decision`): on the test pairs of
  data/decision_pairs.jsonl, how often the PM prefers refusing a harmful request and answering a
  safe one.

TRL is imported inside functions so that reading and validating data stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from cai.errors import fail, file_error, option_error
from cai.io.pairs import parse_pair_row
from cai.train import lora
from cai.train.common import (
    JsonlMetricsCallback,
    changed_params,
    keep_metrics_off_terminal,
    load_chat_tokenizer,
    loss_history,
    param_checksums,
)
from cai.train.configs import reward_config
from cai.train.core import Trained, TrainJob, train_model
from cai.train.pm_loss import soft_preference_loss
from cai.train.publish import TrainOutput
from cai.train.rl_common import PMScorer, encode_answer, encode_prompt, use_distinct_pad
from cai.train.settings import PmSettings
from cai.train.tables import TableSource, load_table, rows_sha256

PREF_JSONL = ("preferences.jsonl",)
SOFT_LOSS = "soft: -(p*logsigmoid(r_c - r_r) + (1 - p)*logsigmoid(r_r - r_c)), p = p_chosen"
HARD_LOSS = "hard: -logsigmoid(r_c - r_r) (TRL RewardTrainer)"


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class PrefRow:
    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    p_chosen: float  # 1.0 for human pairs and rows without a soft label

    def key(self) -> str:
        return json.dumps([self.prompt, self.chosen, self.rejected], sort_keys=True)

    def as_record(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "chosen": self.chosen,
            "rejected": self.rejected,
            "p_chosen": self.p_chosen,
        }


@dataclass
class PrefTable:
    rows: list[PrefRow] = field(default_factory=list)
    sources: list[TableSource] = field(default_factory=list)
    fingerprints: set[str] = field(default_factory=set)
    soft_rows: int = 0  # rows that carried a p_chosen


def _p_of(row: dict[str, Any], where: tuple[str, int | None], name: str) -> float | None:
    p = row.get("p_chosen")
    if p is None:
        return None
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
        raise fail(where[0], where[1], name, f"must be a probability in [0, 1] (got {p!r})")
    return float(p)


def preference_inputs(
    data: Sequence[str], human: Sequence[str], held_out: Sequence[str]
) -> tuple[PrefTable, PrefTable, PrefTable]:
    """The three preference inputs of `train pm` and `train dpo`: AI labels (`--data`, at least
    one), human pairs (`--human`, hard labels) and held-out pairs (`--eval`)."""
    if not data:
        raise option_error("--data", "give at least one label run folder or preference file")
    ai = load_preferences(data, "--data", human=False)
    hum = load_preferences(human, "--human", human=True) if human else PrefTable()
    held = load_preferences(held_out, "--eval", human=True) if held_out else PrefTable()
    return ai, hum, held


def load_preferences(paths: Sequence[str], option: str, *, human: bool) -> PrefTable:
    """Pairs from label runs (DIR/dataset, DIR/preferences.jsonl), saved datasets or JSONL files.

    Rows may be TRL conversational preferences (explicit or implicit prompt) or raw HH-RLHF
    transcripts; `cai.io.pairs` parses all of them. ``human`` sources are hard labels.
    """
    table = PrefTable()
    for path in paths:
        raw, locs, source, kind = load_table(
            path,
            ["chosen", "rejected"],
            jsonl_names=PREF_JSONL,
            option=option,
            stage="label",
            optional=["prompt", "p_chosen", "id", "aspect", "fingerprint"],
        )
        used: list[PrefRow] = []
        for row, loc in zip(raw, locs, strict=True):
            where = loc.where()
            pair = parse_pair_row(row, where)
            p = None if human else _p_of(row, where, "p_chosen")
            table.soft_rows += p is not None
            used.append(PrefRow(pair.prompt, pair.a, pair.b, 1.0 if p is None else p))
            if isinstance(row.get("fingerprint"), str):
                table.fingerprints.add(row["fingerprint"])
        if not used:
            raise file_error(source, option, "no preference pairs in it")
        table.rows.extend(used)
        table.sources.append(TableSource(str(source), kind, len(used), rows_sha256([r.as_record() for r in used])))
    return table


def encode_rows(
    tokenizer: Any, rows: Sequence[PrefRow], max_length: int, *, soft: bool
) -> tuple[list[dict[str, Any]], int]:
    """Tokenised examples for RewardTrainer (``chosen_ids``/``rejected_ids``), and how many rows
    were dropped because a side exceeds ``max_length`` (as TRL would; truncating would score a
    different reply than the one that was labelled)."""
    out, dropped = [], 0
    for r in rows:
        prompt = encode_prompt(tokenizer, r.prompt)
        chosen = prompt + encode_answer(tokenizer, r.chosen)
        rejected = prompt + encode_answer(tokenizer, r.rejected)
        if max(len(chosen), len(rejected)) > max_length:
            dropped += 1
            continue
        ex: dict[str, Any] = {"chosen_ids": chosen, "rejected_ids": rejected}
        if soft:
            ex["p_chosen"] = r.p_chosen
        out.append(ex)
    return out, dropped


def pair_accuracy(scorer: PMScorer, rows: Sequence[PrefRow]) -> dict[str, Any]:
    """Share of pairs whose chosen reply the PM scores strictly higher (ties count as wrong)."""
    if not rows:
        return {"n": 0, "accuracy": None, "mean_gap": None, "gaps": []}
    model = scorer.model
    was_training = model.training
    model.eval()
    try:
        chosen = scorer.score([r.prompt for r in rows], [r.chosen for r in rows])
        rejected = scorer.score([r.prompt for r in rows], [r.rejected for r in rows])
    finally:
        model.train(was_training)
    gaps = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "n": len(rows),
        "accuracy": round(sum(g > 0 for g in gaps) / len(gaps), 4),
        "mean_gap": round(sum(gaps) / len(gaps), 4),
        "gaps": [round(g, 4) for g in gaps],  # per held-out pair, in row order: the report's histogram
    }


# --------------------------------------------------------------------------- TRL glue


def _trainer_classes() -> tuple[type, type]:
    """RewardTrainer + collator that carry ``p_chosen`` and apply the soft loss.

    Built on demand so importing this module does not import TRL.
    """
    from trl import RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    class SoftPreferenceCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            if "p_chosen" in examples[0]:
                batch["p_chosen"] = torch.tensor([float(e["p_chosen"]) for e in examples])
            return batch

    class SoftRewardTrainer(RewardTrainer):
        def _set_signature_columns_if_needed(self) -> None:
            # Without this the Trainer drops the column before it reaches the collator.
            if self._signature_columns is None:
                self._signature_columns = ["chosen_ids", "rejected_ids", "p_chosen"]

        def compute_loss(
            self,
            model: Any,
            inputs: dict[str, Any],
            return_outputs: bool = False,
            num_items_in_batch: Any = None,
        ) -> Any:
            p = inputs.pop("p_chosen", None)
            # TRL's loss first: it also records accuracy/margin/reward metrics for the logs.
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
            if p is not None:
                r_c, r_r = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
                loss = soft_preference_loss(r_c, r_r, p.to(r_c.device))
                coef = self.args.center_rewards_coefficient
                if coef is not None:
                    loss = loss + coef * torch.mean((r_c + r_r) ** 2)
            return (loss, outputs) if return_outputs else loss

    return SoftRewardTrainer, SoftPreferenceCollator


# --------------------------------------------------------------------------- entry point


def train_pm(
    data: list[str],
    model: str,
    out: str,
    settings: PmSettings | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
    overwrite: bool = False,
    decision: Callable[..., dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Train a PM on AI-labelled (and optional human) pairs; save it at `out`.

    `decision` scores the trained PM on the refusal-vs-answer yardstick
    (`cai.stages.decision.pm_check`, handed in by the caller: judging data lives above training).
    Returns the summary that also goes, with provenance, into `out/cai_train.json`.
    Safe under `accelerate launch` (only the main process writes).
    """
    s = settings or PmSettings()
    ai, hum, held = preference_inputs(data, s.human, s.eval)
    soft = s.labels == "soft"

    def step(job: TrainJob) -> Trained:
        tokenizer = load_chat_tokenizer(
            job.path, model, "the PM scores chat replies, so start it from the (instruct) policy model"
        )
        use_distinct_pad(tokenizer)
        examples, dropped = encode_rows(tokenizer, ai.rows + hum.rows, s.max_length, soft=soft)
        if not examples:
            raise file_error(
                data[0], "--max-length", f"every pair is longer than {s.max_length} tokens; raise --max-length"
            )
        config = job.start(reward_config(job.output, s, seed, quiet))  # first: it sets up the process group
        trainer = _build(job.path, tokenizer, examples, job.output, config, quiet, lora.lora_config(s, "SEQ_CLS"))
        summary = _train_and_summarize(trainer, tokenizer, held.rows, s.decision_pairs, decision)
        summary["rows"] = _row_counts(ai, hum, held, len(examples), dropped)
        meta = {
            "data": [src.as_record() for src in ai.sources],
            "human": [src.as_record() for src in hum.sources],
            "eval": [src.as_record() for src in held.sources],
            "constitution_fingerprints": sorted(ai.fingerprints),
            "pad_token": tokenizer.pad_token,
            "scoring": "score head at the last token of chat_template(prompt, "
            "add_generation_prompt=True) + answer + EOS",
        }
        return Trained(trainer, tokenizer, summary, meta)

    loss = SOFT_LOSS if soft else HARD_LOSS
    return train_model("pm", model, out, s, step, seed=seed, quiet=quiet, overwrite=overwrite, loss=loss)


def _row_counts(ai: PrefTable, hum: PrefTable, held: PrefTable, train: int, dropped: int) -> dict[str, int]:
    seen = {r.key() for r in ai.rows + hum.rows}
    return {
        "ai": len(ai.rows),
        "human": len(hum.rows),
        "soft": ai.soft_rows,
        "train": train,
        "dropped_too_long": dropped,
        "eval": len(held.rows),
        "eval_overlap_with_train": sum(r.key() in seen for r in held.rows),
    }


def _build(
    path: str,
    tokenizer: Any,
    examples: list[dict[str, Any]],
    output: TrainOutput,
    config: Any,
    quiet: bool,
    peft_config: Any = None,
) -> Any:
    from datasets import Dataset

    trainer_cls, collator_cls = _trainer_classes()
    # The PM is loaded by TRL from the path (num_labels=1) so ZeRO-3 can partition it at load.
    trainer = trainer_cls(
        model=path,
        args=config,
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
        callbacks=[JsonlMetricsCallback(output.metrics)],
        data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id),
        peft_config=peft_config,  # LoRA on the backbone; the new score head is trained in full
    )
    keep_metrics_off_terminal(trainer, quiet)
    return trainer


def _train_and_summarize(
    trainer: Any,
    tokenizer: Any,
    held: list[PrefRow],
    decision_pairs: int | None = None,
    check: Callable[..., dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    scorer = PMScorer(trainer.model, tokenizer, batch_size=trainer.args.per_device_eval_batch_size)
    before_params = param_checksums(trainer.model)
    acc_before = pair_accuracy(scorer, held)
    result = trainer.train()
    acc_after = pair_accuracy(scorer, held)
    # The refusal-vs-answer yardstick's test pairs (154 replies when all: about a minute on 2 cores).
    decision = None if decision_pairs == 0 or check is None else check(scorer, per_side=decision_pairs)
    changed = changed_params(before_params, param_checksums(trainer.model))
    losses = loss_history(trainer.state.log_history)
    train_acc = [float(e["accuracy"]) for e in trainer.state.log_history if "accuracy" in e]
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "train_batch_accuracy_last": train_acc[-1] if train_acc else None,
        "eval_accuracy_before": acc_before["accuracy"],
        "eval_accuracy_after": acc_after["accuracy"],
        "eval_gap_before": acc_before["mean_gap"],
        "eval_gap_after": acc_after["mean_gap"],
        "eval_gaps_before": acc_before["gaps"],
        "eval_gaps_after": acc_after["gaps"],
        "steps": trainer.state.global_step,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "params_changed": bool(changed) if before_params else None,
        "params_changed_tensors": len(changed),
        "decision": decision,
    }
