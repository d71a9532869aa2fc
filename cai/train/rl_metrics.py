"""What an RL run writes while it trains: one `metrics.jsonl` row per TRL log event.

TRL's PPO and its RLOO/GRPO trainers log the same quantities under different keys; the rows
name them one way (`METRIC_SOURCES`) and keep TRL's own keys beside them, with a few sampled
completions and their PM scores so that a run's behaviour can be read next to its numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cai.train.rl_common import Conversation, PMScorer, encode_prompt

# The documented metric names of `metrics.jsonl`, each taken from the first TRL key present.
# PPO (trl.experimental.ppo) | RLOO / GRPO (trl):
#   reward      the reward before any KL term: PM score minus the missing-EOS penalty (PPO:
#               objective/scores), or for RLOO/GRPO TRL's own `reward`, the weighted sum of the
#               rewards the `reward` setting names plus the EOS penalty (`total_reward` from the
#               per-function means when TRL did not log it)
#   reward_parts  RLOO/GRPO: each reward's batch mean by name (pm, direct, direct/<principle>,
#               demo-pm, missing_eos), unweighted
#   objective   what the algorithm maximises: reward − λ·KL (objective/rlhf_reward; PPO only: TRL's
#               RLOO and GRPO log no such figure)
#   kl          KL(policy ‖ reference) estimate; PPO: summed over a reply's tokens, RLOO/GRPO:
#               mean per token (kl_unit in the summary says which)
#   entropy     mean per-token entropy of the policy (policy/entropy_avg | entropy)
#   value_loss  critic loss (loss/value_avg; PPO only: RLOO/GRPO have no critic)
#   policy_loss surrogate loss (loss/policy_avg | loss)
#   clipfrac    share of clipped policy ratios (policy/clipfrac_avg | clip_ratio/region_mean)
#   completion_length  mean reply length in tokens (RLOO/GRPO: completions/mean_length)
# Every row also keeps TRL's own keys under "trl", and `samples` when completions were sampled.
METRIC_SOURCES: dict[str, tuple[str, ...]] = {
    "reward": ("objective/scores", "rewards/pm/mean"),
    "objective": ("objective/rlhf_reward",),
    "kl": ("objective/kl", "kl"),
    "entropy": ("policy/entropy_avg", "entropy"),
    "value_loss": ("loss/value_avg",),
    "policy_loss": ("loss/policy_avg", "loss"),
    "clipfrac": ("policy/clipfrac_avg", "clip_ratio/region_mean", "clip_ratio"),
    "completion_length": ("completions/mean_length",),
}
KL_UNIT = {"ppo": "per sequence (sum over tokens)", "rloo": "per token", "grpo": "per token"}


def normalize_metrics(logs: dict[str, Any], algorithm: str, weights: dict[str, float] | None = None) -> dict[str, Any]:
    from cai.train.rewards import reward_parts, total_reward

    out: dict[str, Any] = {}
    for name, keys in METRIC_SOURCES.items():
        for k in keys:
            if k in logs:
                out[name] = logs[k]
                break
    if algorithm != "ppo":
        # TRL's own "reward" is what it optimised before the KL term: Σ w·r per reply with an
        # unscored reward counted as 0 (nansum), then averaged. Σ w·mean(r) from the per-function
        # means is only a fallback: it leaves unscored replies out, so it differs when some are.
        total = logs.get("reward")
        if not isinstance(total, int | float):
            total = total_reward(logs, weights or {"pm": 1.0})
        if total is not None:
            out["reward"] = total
        parts = reward_parts(logs)
        if parts:
            out["reward_parts"] = parts
    # No "objective" for RLOO/GRPO: TRL logs its reward before subtracting β·KL (RLOO) or puts the
    # KL into the loss (GRPO), so neither logs reward − β·KL itself.
    return out


def _make_callback_class() -> type:
    from transformers import TrainerCallback

    from cai.train.common import jsonable

    class RLMetricsCallback(TrainerCallback):
        """One JSONL row per TRL log event: normalised metrics, TRL's raw keys, and samples.

        ``sampler(model)`` returns a few greedy completions of fixed prompts with their PM score,
        so a run's behaviour can be read next to its numbers. Main process only; skipped under
        ZeRO-3, where one process alone cannot run the sharded policy.
        """

        def __init__(
            self, path: str | Path, algorithm: str, sampler: Any = None, weights: dict[str, float] | None = None
        ):
            self.path = Path(path)
            self.algorithm = algorithm
            self.sampler = sampler
            self.weights = weights
            self.rows: list[dict[str, Any]] = []

        def on_log(
            self,
            args: Any,
            state: Any,
            control: Any,
            logs: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if not state.is_world_process_zero or not logs:
                return
            raw = {k: jsonable(v) for k, v in logs.items()}
            row: dict[str, Any] = {
                "step": state.global_step,
                "algorithm": self.algorithm,
                **normalize_metrics(raw, self.algorithm, self.weights),
                "trl": raw,
            }
            if self.sampler is not None and "train_runtime" not in raw and not _zero3():
                row["samples"] = self.sampler(kwargs.get("model"))
            self.rows.append(row)
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return RLMetricsCallback


def metrics_callback(
    path: str | Path, algorithm: str, sampler: Any = None, weights: dict[str, float] | None = None
) -> Any:
    return _make_callback_class()(path, algorithm, sampler, weights)


def _zero3() -> bool:
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def make_sampler(tokenizer: Any, prompts: Sequence[Conversation], scorer: PMScorer | None, max_new_tokens: int) -> Any:
    """Greedy completions of `prompts` from the current policy, with their PM scores (when the
    reward has a PM)."""
    encoded = [encode_prompt(tokenizer, p) for p in prompts]
    eos = tokenizer.eos_token_id

    @torch.no_grad()
    def sample(model: Any) -> list[dict[str, Any]]:
        if model is None:
            return []
        policy = getattr(model, "policy", model)  # PPO trains a policy+value wrapper
        policy = getattr(policy, "module", policy)
        device = next(policy.parameters()).device
        was_training = policy.training
        policy.eval()
        out = []
        try:
            for msgs, ids in zip(prompts, encoded, strict=True):
                x = torch.tensor([ids], device=device)
                gen = policy.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    eos_token_id=eos,
                    pad_token_id=tokenizer.pad_token_id,
                )
                reply = gen[0, len(ids) :].tolist()
                if eos in reply:
                    reply = reply[: reply.index(eos) + 1]
                row = {
                    "prompt": msgs[-1]["content"],
                    "completion": tokenizer.decode(reply, skip_special_tokens=True),
                    "finished": bool(reply) and reply[-1] == eos,
                }
                if scorer is not None:
                    row["pm_score"] = scorer.score_ids([ids + reply])[0]
                out.append(row)
        finally:
            policy.train(was_training)
        return out

    return sample
