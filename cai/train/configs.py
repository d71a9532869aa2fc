"""Settings → TRL configs: the one builder for what every trainer here sets the same way.

Each trainer adds only what is its own (SFT's completion-only loss, DPO's beta, PPO's minibatches,
RLOO/GRPO's groups). Shared choices, and why:
* ``bf16`` only on GPUs that support it; CPU trains in fp32 (bf16 there is emulated or lossy).
* ``use_cpu`` said explicitly without a GPU: transformers builds a multi-process (gloo) group
  only when told it is on CPU, else each `accelerate launch` process would train alone.
* activation checkpointing on GPUs only (it costs ~20% speed and saves memory a CPU run has).
* no checkpoints (`TrainOutput.finalize` saves the final model) and logging every step (the
  metrics callback writes metrics.jsonl).
"""

from __future__ import annotations

import math
from typing import Any

from cai.train.common import checkpointing_kwargs, training_dtype, use_bf16
from cai.train.publish import TrainOutput
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings


def trl_config(
    config_cls: type, output: TrainOutput, *, lr: float, seed: int, report_to: str, quiet: bool, **own: Any
) -> Any:
    import torch

    cuda = torch.cuda.is_available()
    shared: dict[str, Any] = {
        "output_dir": str(output.work),
        "learning_rate": lr,
        "seed": seed,
        "bf16": use_bf16(),
        "use_cpu": not cuda,
        **checkpointing_kwargs(config_cls=config_cls, enabled=cuda),
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": report_to,
        "disable_tqdm": quiet,
    }
    return config_cls(**{**shared, **own})


def _model_init() -> dict[str, Any]:
    """Trainers that load the model from a path (so ZeRO-3 can partition it at load) get the dtype."""
    return {"model_init_kwargs": {"dtype": str(training_dtype()).removeprefix("torch.")}}


def _supervised(s: SftSettings | PmSettings | DpoSettings, seed: int) -> dict[str, Any]:
    return {
        "num_train_epochs": s.epochs,
        "max_steps": s.max_steps,
        "per_device_train_batch_size": s.batch_size,
        "per_device_eval_batch_size": s.batch_size,
        "gradient_accumulation_steps": s.grad_accum,
        "max_length": s.max_length,
        "data_seed": seed,
        "logging_first_step": True,
        "eval_strategy": "no",  # evaluated explicitly before and after training
        **_model_init(),
    }


def sft_config(output: TrainOutput, s: SftSettings, seed: int, quiet: bool, logging_steps: int = 1) -> Any:
    from trl import SFTConfig

    return trl_config(
        SFTConfig,
        output,
        lr=s.lr,
        seed=seed,
        report_to=s.report_to,
        quiet=quiet,
        **_supervised(s, seed),
        completion_only_loss=True,
        assistant_only_loss=False,
        logging_steps=logging_steps,
    )


def reward_config(output: TrainOutput, s: PmSettings, seed: int, quiet: bool) -> Any:
    from trl import RewardConfig

    return trl_config(
        RewardConfig, output, lr=s.lr, seed=seed, report_to=s.report_to, quiet=quiet, **_supervised(s, seed)
    )


def dpo_config(output: TrainOutput, s: DpoSettings, seed: int, quiet: bool) -> Any:
    """TRL's sigmoid DPO loss (cai's soft labels replace it in `cai.train.dpo`). The reference
    log-probs are computed once before training, from the model as loaded (or, with LoRA, with
    the adapter off), so no second model stays in memory while training."""
    from trl import DPOConfig

    return trl_config(
        DPOConfig,
        output,
        lr=s.lr,
        seed=seed,
        report_to=s.report_to,
        quiet=quiet,
        **_supervised(s, seed),
        beta=s.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=True,
    )


def import_ppo() -> tuple[type, type]:
    """TRL warns on every import from `trl.experimental`; using it is a deliberate choice here
    (PPO has no other home in TRL 1.x), so the warning is silenced for this import only."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    return PPOConfig, PPOTrainer


def ppo_config(output: TrainOutput, s: RlSettings, seed: int, quiet: bool) -> Any:
    ppo_config_cls, _ = import_ppo()
    return trl_config(
        ppo_config_cls,
        output,
        lr=s.lr,
        seed=seed,
        report_to=s.report_to,
        quiet=quiet,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=s.batch_size // s.mini_batch,
        num_ppo_epochs=s.ppo_epochs,
        local_rollout_forward_batch_size=s.batch_size,
        total_episodes=s.total_episodes,
        response_length=s.response_length,
        stop_token="eos",
        temperature=s.temperature,
        missing_eos_penalty=s.eos_penalty,
        kl_coef=s.kl_coef,
        num_sample_generations=0,  # our callback samples; TRL's prints rich tables
    )


def group_config(output: TrainOutput, s: RlSettings, seed: int, quiet: bool) -> Any:
    """RLOO / GRPO: `kl_coef` is their beta; the step count follows from the episodes."""
    if s.algorithm == "rloo":
        from trl import RLOOConfig as Config
    else:
        from trl import GRPOConfig as Config
    config = trl_config(
        Config,
        output,
        lr=s.lr,
        seed=seed,
        report_to=s.report_to,
        quiet=quiet,
        data_seed=seed,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        num_generations=s.num_generations,
        max_completion_length=s.response_length,
        temperature=s.temperature,
        beta=s.kl_coef,
        max_steps=1,
        **_model_init(),
    )
    # Episodes are completions over all devices; the world size is known once the config is.
    config.max_steps = max(1, math.ceil(s.total_episodes / (s.batch_size * config.world_size)))
    return config
