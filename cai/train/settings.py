"""Settings of the training stages: the one place each default, range and help text lives.

`cai train sft|pm|dpo|ppo` build their options from these models, a recipe's `sft`, `pm`, `dpo`
and `ppo` sections are these models (`cai.run.sections`), and `train_sft`, `train_pm`, `train_dpo`,
`train_rl` take them; `cai.train.configs` turns them into TRL configs and `cai.train.lora` the
``lora_*`` fields into a peft config. Nothing here imports torch, TRL or peft.

Batch sizes follow TRL's meaning: per device, per optimiser step (times `grad_accum`); the
global batch multiplies by the number of processes under `accelerate launch`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from cai.settings import StageSettings
from cai.train.monitor_settings import MonitorSettings
from cai.train.reward_settings import RewardSettings
from cai.train.trl_support import has_ppo, ppo_missing_message

REPORT_TO = Field(
    "none", description="Also log to: none, tensorboard, trackio, wandb (metrics.jsonl is always written)."
)
LR_HELP = "Peak learning rate (linear decay)."
# The attention and MLP projections of Llama-style decoders (SmolLM2, Llama, Mistral, Qwen…).
LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class Lora(StageSettings):
    """LoRA adapters (peft) instead of full fine-tuning; every trainer takes these the same way."""

    lora_r: int | None = Field(
        None, ge=0, description="LoRA rank: train low-rank adapters instead of every weight (none or 0: off)."
    )
    lora_alpha: float | None = Field(None, gt=0, description="LoRA scaling alpha (default: 2 x --lora-r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA adapters' inputs.")
    lora_target_modules: list[str] = Field(
        LLAMA_LINEAR,
        description="Modules that get adapters (repeat the flag; 'all-linear' for every linear layer). "
        "Default: the attention and MLP projections of Llama-style models.",
    )
    lora_merge: bool = Field(
        True,
        description="With LoRA: merge the adapters into the base and save a full model (usable as --model "
        "anywhere); --no-lora-merge saves only the adapter (load it with peft).",
    )

    @field_validator("lora_target_modules")
    @classmethod
    def _some_modules(cls, v: list[str]) -> list[str]:
        if not v or any(not m.strip() for m in v):
            raise ValueError("give at least one module name (e.g. q_proj) or all-linear")
        return v

    @property
    def lora(self) -> bool:
        return bool(self.lora_r)


class Optimised(Lora):
    """What every supervised trainer here shares."""

    epochs: float = Field(1.0, gt=0, description="Passes over the data (ignored with --max-steps).")
    lr: float = Field(1e-5, gt=0, description=LR_HELP)
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_steps: int = Field(-1, ge=-1, description="Stop after N optimiser steps (-1: use --epochs).")
    report_to: str = REPORT_TO

    @field_validator("max_steps")
    @classmethod
    def _some_steps(cls, v: int) -> int:
        if v == 0:
            raise ValueError("nothing to train (use -1 for --epochs)")
        return v


class SftSettings(Optimised):
    helpful: list[str] = Field(
        [], description="Helpfulness data (`messages` rows) mixed in so the model stays helpful."
    )
    helpful_ratio: float = Field(0.0, ge=0, lt=1, description="Share of the training rows drawn from --helpful.")
    batch_size: int = Field(4, ge=1, description="Rows per device per optimiser step.")
    max_length: int = Field(512, ge=16, description="Tokens per row; longer rows are cut at the end.")
    eval_fraction: float = Field(
        0.0, ge=0, lt=1, description="Share of the data held out to report eval loss before/after."
    )


class PmSettings(Optimised):
    labels: Literal["soft", "hard"] = Field(
        "soft", description="soft: cross-entropy on p_chosen; hard: TRL's -logsigmoid(r_c - r_r)."
    )
    human: list[str] = Field([], description="Human preference pairs (TRL or HH-RLHF), mixed in as hard labels.")
    eval: list[str] = Field([], description="Held-out pairs (human files accepted): accuracy before/after.")
    batch_size: int = Field(4, ge=1, description="Pairs per device per optimiser step.")
    max_length: int = Field(512, ge=16, description="Tokens per side; longer pairs are dropped (and counted).")
    decision_pairs: int | None = Field(
        None,
        ge=0,
        description="After training, score the refusal-vs-answer pairs of data/decision_pairs.jsonl's test "
        "split, at most N per side (unset: all 38 + 39; 0: skip), and record agreement per side.",
    )


class DpoSettings(Optimised):
    """DPO on the label run's pairs (`cai.train.dpo` documents the soft-label loss)."""

    labels: Literal["soft", "hard"] = Field(
        "soft",
        description="soft: -(p*logsigmoid(beta*h) + (1-p)*logsigmoid(-beta*h)), p = p_chosen; "
        "hard: TRL's -logsigmoid(beta*h).",
    )
    beta: float = Field(0.1, gt=0, description="DPO beta: strength of the pull back to the reference model.")
    human: list[str] = Field([], description="Human preference pairs (TRL or HH-RLHF), mixed in as hard labels.")
    eval: list[str] = Field(
        [],
        description="Held-out pairs (human files accepted): implicit-reward accuracy and loss after training "
        "(before it the policy is its reference: loss ln 2, no pair ranked).",
    )
    batch_size: int = Field(4, ge=1, description="Pairs per device per optimiser step.")
    max_length: int = Field(
        512, ge=16, description="Tokens of prompt + answer; longer answers are cut at the end (and counted)."
    )
    lr: float = Field(5e-6, gt=0, description=LR_HELP)


class RlSettings(RewardSettings, Lora, MonitorSettings):
    """RL against the PM or another reward (see `cai.train.rl` for how each algorithm reads these,
    `cai.train.reward_settings` for the reward and helpful-mix fields, `cai.train.monitor_settings`
    for the collapse monitor's).

    With ``lora_r`` only the policy gets adapters; PPO's value model (initialised from the PM)
    is always trained in full, since TRL's PPO applies peft to the policy alone. The ``monitor_*``
    fields are the collapse monitor's (`cai.train.monitor_settings`)."""

    algorithm: Literal["ppo", "rloo", "grpo"] = Field(
        "rloo",
        description="rloo or grpo (TRL's maintained trainers, every TRL >= 1.0), or ppo "
        "(TRL 1.0-1.12 only: pip install 'cai[ppo]').",
    )
    kl_coef: float = Field(0.05, ge=0, description="λ in r = r_PM − λ·KL(policy ‖ reference) (beta for RLOO/GRPO).")
    total_episodes: int = Field(64, ge=1, description="Completions sampled over the whole run (all devices).")
    batch_size: int = Field(8, ge=1, description="Rollouts per update per device.")
    mini_batch: int = Field(4, ge=1, description="PPO: rows per optimiser step (divides --batch-size).")
    ppo_epochs: int = Field(4, ge=1, description="PPO: passes over each batch of rollouts.")
    num_generations: int = Field(4, ge=2, description="RLOO/GRPO: completions per prompt (group size).")
    response_length: int = Field(64, ge=1, description="Max new tokens per rollout.")
    temperature: float = Field(0.7, gt=0, description="Rollout sampling temperature (> 0: RL samples).")
    missing_eos_penalty: float = Field(
        1.0, ge=0, description="Subtracted from the reward of replies cut off before EOS (0: none)."
    )
    max_prompt_length: int = Field(256, ge=1, description="Prompts longer than this (tokens) are skipped.")
    lr: float = Field(3e-6, gt=0, description=LR_HELP)
    report_to: str = REPORT_TO

    @field_validator("algorithm")
    @classmethod
    def _trl_has_it(cls, v: str) -> str:
        # Asked here so that the CLI and a recipe refuse PPO before anything loads.
        if v == "ppo" and not has_ppo():
            raise ValueError(ppo_missing_message())
        return v

    @field_validator("mini_batch")
    @classmethod
    def _divides(cls, v: int, info: ValidationInfo) -> int:
        batch, algorithm = info.data.get("batch_size"), info.data.get("algorithm")
        if algorithm == "ppo" and batch is not None and batch % v:
            raise ValueError(f"must divide batch_size {batch}")
        return v

    @model_validator(mode="after")
    def _whole_groups(self) -> RlSettings:
        if self.algorithm != "ppo" and self.batch_size % self.num_generations:
            # Reported on batch_size: that is the number a user changes.
            raise ValueError(
                f"batch_size: must be a multiple of num_generations {self.num_generations} (whole groups per batch)"
            )
        return self

    @property
    def eos_penalty(self) -> float | None:
        """TRL's `missing_eos_penalty` (None switches it off)."""
        return self.missing_eos_penalty or None
