"""DPO on AI preference labels: TRL's `DPOTrainer`, with cai's soft labels in the loss.

DPO skips the PM and RL: it trains the policy directly on the label run's pairs, with
``h = (log π(c) − log π_ref(c)) − (log π(r) − log π_ref(r))`` (sums over the answer tokens) and

* ``labels="soft"`` (default): ``−(p·log σ(β·h) + (1 − p)·log σ(−β·h))`` per pair, with
  p = ``p_chosen``, the judge's soft label. This is the *conservative* DPO loss (cDPO, Mitchell
  2023): the cross-entropy between the label and the implicit Bradley–Terry preference
  σ(β·h), so a 0.55 label asks for a small gap and a 0.95 label for a large one, instead of
  treating both as certain. TRL's global ``label_smoothing`` ε was this loss with one p = 1 − ε
  for every pair (TRL 1.x keeps ε only for its ``robust`` loss, rDPO, which is a different,
  de-biased form: ``(−(1−ε)·log σ(β·h) + ε·log σ(−β·h)) / (1 − 2ε)``). Here p varies per pair.
* ``labels="hard"``: TRL's own ``−log σ(β·h)`` (p = 1 for every pair).

How: a small `DPOTrainer` subclass carries ``p_chosen`` through the collator and replaces the
loss after TRL's own computation (which still logs its metrics: rewards, margins, accuracies).
h comes from the same forward pass TRL ran, read from the model's output as it returned it
(per-token log-probs from TRL >= 1.15's fused LM head, logits before), so the gradient flows
through it and there is no extra forward. The reference is the
``--model`` as loaded: its log-probs are computed once before training (``precompute``), so no
second copy of the model is held while training; with LoRA it is the base with the adapter off.

Data: the label run's export (``DIR/dataset`` or ``DIR/preferences.jsonl``), read by the PM's
reader (`cai.train.pm.load_preferences`), given to TRL in its conversational preference form
(``prompt`` messages, ``chosen``/``rejected`` one assistant message each). Only ``p_chosen`` is
read as a label; the logit column of the export is not used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from cai.errors import file_error
from cai.train import lora
from cai.train.common import (
    JsonlMetricsCallback,
    changed_params,
    keep_metrics_off_terminal,
    load_chat_tokenizer,
    loss_history,
    param_checksums,
)
from cai.train.configs import dpo_config
from cai.train.core import Trained, TrainJob, train_model
from cai.train.pm import PrefRow, PrefTable, preference_inputs
from cai.train.publish import TrainOutput
from cai.train.rl_common import encode_prompt
from cai.train.settings import DpoSettings

SOFT_LOSS = (
    "soft (conservative DPO): -(p*logsigmoid(beta*h) + (1 - p)*logsigmoid(-beta*h)), p = p_chosen, "
    "h = (logp(c) - logp_ref(c)) - (logp(r) - logp_ref(r))"
)
HARD_LOSS = "hard: -logsigmoid(beta*h) (TRL DPOTrainer, sigmoid)"
REFERENCE = "the --model as loaded (log-probs precomputed before training; with LoRA: adapter off)"


# --------------------------------------------------------------------------- loss


def soft_dpo_loss(h: torch.Tensor, p: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-pair soft DPO loss; p = 1 gives TRL's sigmoid loss, p = 1 − ε its old label smoothing."""
    return -(p * F.logsigmoid(beta * h) + (1.0 - p) * F.logsigmoid(-beta * h))


def answer_logps(output: Any, inputs: dict[str, Any]) -> torch.Tensor:
    """Summed log-probs of each row's answer tokens from the policy's own forward output.

    TRL >= 1.15 calls the model with its fused LM head, whose output carries per-token
    ``log_probs`` (no logits); older TRL gets plain ``logits``. Either way the tensor is the one
    the training forward built, so the soft loss's gradient flows through it.
    """
    from trl.trainer.utils import selective_log_softmax

    mask = inputs["completion_mask"][:, 1:].bool()
    per_token = getattr(output, "log_probs", None)
    if per_token is not None:
        per_token = per_token[:, -mask.size(1) :]
    else:
        per_token = selective_log_softmax(output.logits[:, :-1, :], inputs["input_ids"][:, 1:])
    return torch.where(mask, per_token, torch.zeros_like(per_token)).sum(dim=1)


def logratio_gap(logps: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
    """h per pair from a [chosen; rejected] batch's answer log-probs and its precomputed
    reference log-probs."""
    chosen, rejected = logps.chunk(2, dim=0)
    return (chosen - inputs["ref_chosen_logps"]) - (rejected - inputs["ref_rejected_logps"])


@contextlib.contextmanager
def _first_output(model: Any) -> Iterator[list[Any]]:
    """Keep the first output `model` returns while the block runs (a forward hook, removed after).

    TRL computes its loss from one forward of the policy and no longer hands that forward's
    output back with a graph (TRL 1.15+ recomputes it without one). The hook keeps the output as
    the forward returned it, so the soft loss reuses it: no second forward.
    """
    seen: list[Any] = []

    def keep(_module: Any, _args: Any, output: Any) -> None:
        if not seen:
            seen.append(output)

    handle = model.register_forward_hook(keep)
    try:
        yield seen
    finally:
        handle.remove()


def _trainer_classes() -> tuple[type, type]:
    """DPOTrainer + collator that carry ``p_chosen`` and apply the soft loss (built on demand so
    importing this module does not import TRL)."""
    from trl import DPOTrainer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    class SoftPreferenceCollator(DataCollatorForPreference):
        def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
            batch = super().torch_call(examples)
            if "p_chosen" in examples[0]:
                batch["p_chosen"] = torch.tensor([float(e["p_chosen"]) for e in examples])
            return batch

    class SoftDPOTrainer(DPOTrainer):
        def _set_signature_columns_if_needed(self) -> None:
            # Without this the Trainer drops the column before it reaches the collator.
            super()._set_signature_columns_if_needed()
            if "p_chosen" not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, "p_chosen"]

        def compute_ref_log_probs(self, model: Any, inputs: dict[str, Any]) -> Any:
            return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k != "p_chosen"})

        def compute_loss(
            self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
        ) -> Any:
            p = inputs.pop("p_chosen", None)
            if p is None:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # TRL's loss first: it also records rewards/margins/accuracies for the logs.
            with _first_output(model) as seen:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            h = logratio_gap(answer_logps(seen[0], inputs), inputs)
            loss = soft_dpo_loss(h, p.to(h), self.beta).mean()
            return (loss, result[1]) if return_outputs else loss

    return SoftDPOTrainer, SoftPreferenceCollator


# --------------------------------------------------------------------------- data


def to_dpo_rows(rows: list[PrefRow], *, soft: bool) -> list[dict[str, Any]]:
    """TRL's conversational preference rows (explicit prompt), plus ``p_chosen`` when soft."""
    out = []
    for r in rows:
        row: dict[str, Any] = {
            "prompt": r.prompt,
            "chosen": [{"role": "assistant", "content": r.chosen}],
            "rejected": [{"role": "assistant", "content": r.rejected}],
        }
        if soft:
            row["p_chosen"] = r.p_chosen
        out.append(row)
    return out


def _prompt_fits(tokenizer: Any, rows: list[PrefRow], max_length: int) -> list[PrefRow]:
    return [r for r in rows if len(encode_prompt(tokenizer, r.prompt)) < max_length]


def _truncated(dataset: Any, max_length: int) -> int:
    """Pairs whose longer side TRL cuts at max_length (prompt kept, answer end cut)."""
    return sum(
        len(p) + max(len(c), len(r)) > max_length
        for p, c, r in zip(dataset["prompt_ids"], dataset["chosen_ids"], dataset["rejected_ids"], strict=True)
    )


# --------------------------------------------------------------------------- entry point


def train_dpo(
    data: list[str],
    model: str,
    out: str,
    settings: DpoSettings | None = None,
    *,
    seed: int = 0,
    quiet: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """DPO-train `model` on AI-labelled (and optional human) pairs; save the policy at `out`.

    Returns the summary that also goes, with provenance, into `out/cai_train.json`.
    Safe under `accelerate launch` (only the main process writes).
    """
    s = settings or DpoSettings()
    ai, hum, held = preference_inputs(data, s.human, s.eval)
    soft = s.labels == "soft"

    def step(job: TrainJob) -> Trained:
        tokenizer = load_chat_tokenizer(job.path, model, "DPO on chat pairs needs an instruct/chat model")
        config = job.start(dpo_config(job.output, s, seed, quiet))  # first: it sets up the process group
        pairs = ai.rows + hum.rows
        # TRL drops pairs whose prompt alone fills max_length; dropped here first, so an empty
        # set is a one-line error rather than a failure inside TRL's reference pass.
        train_rows = to_dpo_rows(_prompt_fits(tokenizer, pairs, s.max_length), soft=soft)
        if not train_rows:
            raise file_error(data[0], "--max-length", f"every prompt is longer than {s.max_length} tokens")
        held_rows = to_dpo_rows(_prompt_fits(tokenizer, held.rows, s.max_length), soft=soft)
        with _reference_bar(enabled=not quiet):
            trainer = _build(job.path, tokenizer, train_rows, held_rows, job.output, config, s)
        summary = _train_and_summarize(trainer, bool(held_rows))
        summary["rows"] = _row_counts(ai, hum, held, trainer, len(pairs), s.max_length)
        meta = {
            "reference": REFERENCE,
            "data": [src.as_record() for src in ai.sources],
            "human": [src.as_record() for src in hum.sources],
            "eval": [src.as_record() for src in held.sources],
            "constitution_fingerprints": sorted(ai.fingerprints),
        }
        return Trained(trainer, tokenizer, summary, meta)

    loss = SOFT_LOSS if soft else HARD_LOSS
    return train_model("dpo", model, out, s, step, seed=seed, quiet=quiet, overwrite=overwrite, loss=loss)


def _build(
    path: str,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    held: list[dict[str, Any]],
    output: TrainOutput,
    config: Any,
    s: DpoSettings,
) -> Any:
    from datasets import Dataset

    trainer_cls, collator_cls = _trainer_classes()
    # TRL loads the model from the path itself so DeepSpeed ZeRO-3 can partition it at load time.
    trainer = trainer_cls(
        model=path,
        args=config,
        train_dataset=Dataset.from_list(rows),
        eval_dataset=Dataset.from_list(held) if held else None,
        processing_class=tokenizer,
        callbacks=[JsonlMetricsCallback(output.metrics)],
        data_collator=collator_cls(pad_token_id=tokenizer.pad_token_id, max_length=config.max_length),
        peft_config=lora.lora_config(s),
    )
    keep_metrics_off_terminal(trainer, config.disable_tqdm)
    return trainer


@contextlib.contextmanager
def _reference_bar(enabled: bool) -> Iterator[None]:
    """TRL's "Computing reference log probs" bar reads only ``TQDM_DISABLE``: set it while the
    trainer is built (that is when the pass runs) and put it back."""
    if enabled:
        yield
        return
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _last(log: list[dict[str, Any]], key: str) -> float | None:
    vals = [float(e[key]) for e in log if key in e]
    return vals[-1] if vals else None


def _train_and_summarize(trainer: Any, has_eval: bool) -> dict[str, Any]:
    before = param_checksums(trainer.model)
    result = trainer.train()
    ev = trainer.evaluate() if has_eval else {}
    changed = changed_params(before, param_checksums(trainer.model))
    log = trainer.state.log_history
    losses = loss_history(log)
    return {
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "train_loss_mean": result.training_loss,
        "train_reward_accuracy_last": _last(log, "rewards/accuracies"),
        "train_reward_margin_last": _last(log, "rewards/margins"),
        # Before training the policy is its reference: h = 0, loss log 2, no pair ranked.
        "eval_loss": ev.get("eval_loss"),
        "eval_accuracy": ev.get("eval_rewards/accuracies"),
        "eval_reward_margin": ev.get("eval_rewards/margins"),
        "steps": trainer.state.global_step,
        "samples_per_second": result.metrics.get("train_samples_per_second"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "params_changed": bool(changed) if before else None,
        "params_changed_tensors": len(changed),
    }


def _row_counts(
    ai: PrefTable, hum: PrefTable, held: PrefTable, trainer: Any, given: int, max_length: int
) -> dict[str, int]:
    seen = {r.key() for r in ai.rows + hum.rows}
    kept = trainer.train_dataset
    return {
        "ai": len(ai.rows),
        "human": len(hum.rows),
        "soft": ai.soft_rows,
        "train": len(kept),
        "dropped_prompt_too_long": given - len(kept),
        "truncated": _truncated(kept, max_length),
        "eval": len(held.rows),
        "eval_overlap_with_train": sum(r.key() in seen for r in held.rows),
    }
