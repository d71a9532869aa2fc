"""RL against the preference model: TRL's PPO (default), RLOO or GRPO, one interface.

* **PPO** (`trl.experimental.ppo`, removed from TRL after 1.12): policy = the SL-CAI model,
  reference = a frozen copy of it, value model initialised from the PM (backbone and head),
  reward = PM score − missing-EOS penalty, and TRL adds the per-token −λ·KL(policy ‖ reference)
  (k1 estimator) so the return is ``r_PM − λ·KL``. Prompts are left-padded for generation.
* **RLOO / GRPO** (TRL's maintained trainers): the PM scores completions through `PMReward`
  (the same position PPO reads); λ is their ``beta``: RLOO subtracts β·KL from the reward like
  PPO, GRPO puts a β-weighted KL term into the loss. No value model.

Sizes: ``batch_size`` is rollouts per update per device. PPO splits it into minibatches of
``mini_batch`` rows, one optimiser step each, for ``ppo_epochs`` passes. RLOO/GRPO take
``num_generations`` completions per prompt, so ``batch_size`` must be a multiple of it.
``total_episodes`` counts completions over the run (all devices).

Everything TRL-specific stays in `cai.train`; the saved policy is a plain causal-LM folder with
the base model's tokenizer and chat template, usable as a model spec anywhere.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from cai.errors import fail
from cai.sources import PromptItem, load_prompts
from cai.train.common import (
    TrainOutput,
    changed_params,
    checkpointing_kwargs,
    load_causal_lm,
    load_tokenizer,
    param_checksums,
    quiet_libraries,
    resolve_model_path,
    seed_everything,
    training_dtype,
    use_bf16,
)
from cai.train.rl_common import (
    KL_UNIT,
    PMReward,
    PMScorer,
    check_pm_folder,
    check_same_tokenizer,
    encode_prompt,
    make_sampler,
    metrics_callback,
    use_distinct_pad,
)

ALGORITHMS = ("ppo", "rloo", "grpo")


@dataclass(frozen=True)
class RLSettings:
    algorithm: str = "ppo"
    kl_coef: float = 0.05
    total_episodes: int = 64
    batch_size: int = 8
    mini_batch: int = 4
    response_length: int = 64
    lr: float = 3e-6
    seed: int = 0
    missing_eos_penalty: float | None = 1.0
    ppo_epochs: int = 4
    num_generations: int = 4
    temperature: float = 0.7
    max_prompt_length: int = 256
    report_to: str = "none"  # also log to tensorboard / trackio / wandb (TRL's report_to)

    def check(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise fail(
                "--algorithm", None, "", f"{self.algorithm!r} is not one of {', '.join(ALGORITHMS)}"
            )
        for name, v in (
            ("--total-episodes", self.total_episodes),
            ("--batch-size", self.batch_size),
            ("--mini-batch", self.mini_batch),
            ("--response-length", self.response_length),
            ("--ppo-epochs", self.ppo_epochs),
            ("--max-prompt-length", self.max_prompt_length),
        ):
            if v < 1:
                raise fail(name, None, "", f"must be at least 1 (got {v})")
        if self.kl_coef < 0:
            raise fail("--kl-coef", None, "", "must be >= 0")
        if self.temperature <= 0:
            raise fail("--temperature", None, "", "must be > 0 (RL samples its rollouts)")
        if self.algorithm == "ppo" and self.batch_size % self.mini_batch:
            raise fail("--mini-batch", None, "", f"must divide --batch-size {self.batch_size}")
        if self.algorithm != "ppo":
            if self.num_generations < 2:
                raise fail(
                    "--num-generations",
                    None,
                    "",
                    "RLOO/GRPO compare at least 2 completions per prompt",
                )
            if self.batch_size % self.num_generations:
                raise fail(
                    "--batch-size",
                    None,
                    "",
                    f"must be a multiple of --num-generations "
                    f"{self.num_generations} (whole groups per batch)",
                )


def train_rl(
    policy: str,
    pm: str,
    prompts: str | Sequence[PromptItem],
    out: str,
    *,
    algorithm: str = "ppo",
    kl_coef: float = 0.05,
    total_episodes: int = 64,
    batch_size: int = 8,
    mini_batch: int = 4,
    response_length: int = 64,
    lr: float = 3e-6,
    seed: int = 0,
    missing_eos_penalty: float | None = 1.0,
    ppo_epochs: int = 4,
    num_generations: int = 4,
    temperature: float = 0.7,
    max_prompt_length: int = 256,
    limit: int | None = None,
    sample_prompts: int = 2,
    quiet: bool = False,
    overwrite: bool = False,
    report_to: str = "none",
) -> dict[str, Any]:
    """Optimise `policy` against the PM in `pm` on `prompts`; save the policy at `out`.

    `prompts` is a prompt source (file, datasets folder, shipped set name) or loaded items.
    Returns the summary that also goes, with provenance, into `out/cai_train.json`.
    """
    s = RLSettings(
        algorithm,
        kl_coef,
        total_episodes,
        batch_size,
        mini_batch,
        response_length,
        lr,
        seed,
        missing_eos_penalty,
        ppo_epochs,
        num_generations,
        temperature,
        max_prompt_length,
        report_to,
    )
    s.check()
    items = load_prompts(prompts, limit) if isinstance(prompts, str) else list(prompts)[:limit]
    source = prompts if isinstance(prompts, str) else f"{len(items)} prompts (given)"
    output = TrainOutput(out, algorithm, overwrite=overwrite)
    output.check()
    policy_path = resolve_model_path(policy, quiet=quiet)
    pm_path = check_pm_folder(pm)
    check_same_tokenizer(policy_path, pm_path)
    with quiet_libraries(quiet):
        tokenizer = load_tokenizer(policy_path, padding_side="left")
        use_distinct_pad(tokenizer)
        kept = [(it, encode_prompt(tokenizer, it.messages)) for it in items]
        kept = [(it, ids) for it, ids in kept if len(ids) <= max_prompt_length]
        if not kept:
            raise fail(
                source,
                None,
                "--max-prompt-length",
                f"every prompt is longer than {max_prompt_length} tokens",
            )
        config = (
            _ppo_config(output, s, quiet) if algorithm == "ppo" else _group_config(output, s, quiet)
        )  # first: it sets up the process group
        seed_everything(seed)
        output.prepare()
        build = _build_ppo if algorithm == "ppo" else _build_group
        trainer, model, scorer = build(policy_path, pm_path, tokenizer, kept, config, s)
        samples = [it.messages for it, _ in kept[:sample_prompts]]
        callback = metrics_callback(
            output.metrics,
            algorithm,
            make_sampler(tokenizer, samples, scorer, response_length) if samples else None,
        )
        trainer.add_callback(callback)
        if quiet:
            from transformers import PrinterCallback

            trainer.remove_callback(PrinterCallback)
        before = param_checksums(model)
        # PPO prints a banner with accelerator.print; quiet means quiet.
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            trainer.train()
        if algorithm == "ppo":
            _unwrap_ppo(trainer)
        _restore_pad_ids(model, policy_path)
        changed = changed_params(before, param_checksums(model))
        summary = _summary(callback.rows, trainer, s, changed, bool(before))
        summary["prompts"] = {
            "loaded": len(items),
            "used": len(kept),
            "dropped_too_long": len(items) - len(kept),
        }
        summary["out"] = str(Path(out).resolve())
        meta = {
            "base_model": policy,
            "base_model_path": policy_path,
            "pm": pm_path,
            "prompts": source,
            "settings": {**asdict(s), "bf16": use_bf16()},
            "reward": "PM score at the reply's EOS - missing_eos_penalty; "
            + (
                "- kl_coef * KL per token (TRL PPO, k1)"
                if algorithm == "ppo"
                else "KL via beta = kl_coef"
            ),
            "summary": summary,
        }
        # The base tokenizer as it was (its own pad, right padding): a normal model folder.
        output.finalize(trainer, load_tokenizer(policy_path), meta)
    return summary


def _restore_pad_ids(model: Any, policy_path: str) -> None:
    """Give the saved policy its base config's pad id back.

    Trainers align the model's config with the tokenizer they were handed, whose pad is the
    RL-only one from `use_distinct_pad`; the folder is saved with the base tokenizer, so its
    config should say what that tokenizer says.
    """
    from transformers import AutoConfig

    pad = AutoConfig.from_pretrained(policy_path).pad_token_id
    model = getattr(model, "module", model)
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is not None:
            cfg.pad_token_id = pad


def _first_last(rows: list[dict[str, Any]], key: str) -> tuple[Any, Any]:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return (vals[0], vals[-1]) if vals else (None, None)


def _summary(
    rows: list[dict[str, Any]], trainer: Any, s: RLSettings, changed: list[str], comparable: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "algorithm": s.algorithm,
        "updates": trainer.state.global_step,
        "kl_unit": KL_UNIT[s.algorithm],
    }
    for key in ("reward", "kl", "objective", "entropy", "value_loss", "clipfrac"):
        first, last = _first_last(rows, key)
        out[f"{key}_first"], out[f"{key}_last"] = first, last
    out["params_changed"] = bool(changed) if comparable else None
    out["params_changed_tensors"] = len(changed)
    last_samples = [r["samples"] for r in rows if r.get("samples")]
    out["samples_last"] = last_samples[-1] if last_samples else []
    return out


# --------------------------------------------------------------------------- PPO


def _import_ppo() -> tuple[type, type]:
    """TRL warns on every import from `trl.experimental`; using it is a deliberate choice here
    (PPO has no other home in TRL 1.x), so the warning is silenced for this import only."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*trl.experimental.*")
        from trl.experimental.ppo import PPOConfig, PPOTrainer
    return PPOConfig, PPOTrainer


def _ppo_config(output: TrainOutput, s: RLSettings, quiet: bool) -> Any:
    PPOConfig, _ = _import_ppo()

    return PPOConfig(
        output_dir=str(output.work),
        learning_rate=s.lr,
        seed=s.seed,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        num_mini_batches=s.batch_size // s.mini_batch,
        num_ppo_epochs=s.ppo_epochs,
        local_rollout_forward_batch_size=s.batch_size,
        total_episodes=s.total_episodes,
        response_length=s.response_length,
        stop_token="eos",
        temperature=s.temperature,
        missing_eos_penalty=s.missing_eos_penalty,
        kl_coef=s.kl_coef,
        num_sample_generations=0,  # our callback samples; TRL's prints rich tables
        **checkpointing_kwargs(config_cls=PPOConfig, enabled=torch.cuda.is_available()),
        bf16=use_bf16(),
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to=s.report_to,
        disable_tqdm=quiet,
    )


def _build_ppo(
    policy_path: str,
    pm_path: str,
    tokenizer: Any,
    kept: list[tuple[Any, list[int]]],
    config: Any,
    s: RLSettings,
) -> tuple[Any, Any, PMScorer]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    _, PPOTrainer = _import_ppo()

    def pm_model() -> Any:
        return AutoModelForSequenceClassification.from_pretrained(
            pm_path, num_labels=1, dtype=training_dtype()
        )

    policy = load_causal_lm(policy_path)
    ref = load_causal_lm(policy_path)
    ref.requires_grad_(False)
    ref.eval()
    reward = pm_model()
    reward.requires_grad_(False)
    reward.eval()
    value = pm_model()
    rows = [{"input_ids": ids} for _, ids in kept]
    trainer = PPOTrainer(
        args=config,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref,
        reward_model=reward,
        value_model=value,
        train_dataset=Dataset.from_list(rows),
        # TRL builds an eval loader unconditionally; a few prompts keep it cheap.
        eval_dataset=Dataset.from_list(rows[: max(1, config.per_device_eval_batch_size)]),
    )
    return trainer, policy, PMScorer(trainer.reward_model, tokenizer)


def _unwrap_ppo(trainer: Any) -> None:
    """Make TRL's PPO `save_model` work on every process after training.

    It saves ``self.model.policy``, but under DDP ``self.model`` is the DDP wrapper, which has
    no ``policy``: the whole policy+value wrapper would be saved. Training is over, so hand it
    the unwrapped module (DeepSpeed keeps its own path). And PPOTrainer skips
    `Trainer.__init__`, so attributes newer transformers read in `_save` may be missing
    (`is_distributed_loading_by_transformers`, 5.x): default them as `Trainer.__init__` would.
    """
    if not getattr(trainer, "is_deepspeed_enabled", False):
        trainer.model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(trainer, "is_distributed_loading_by_transformers"):
        trainer.is_distributed_loading_by_transformers = False


# --------------------------------------------------------------------------- RLOO / GRPO


def _group_config(output: TrainOutput, s: RLSettings, quiet: bool) -> Any:
    if s.algorithm == "rloo":
        from trl import RLOOConfig as Config
    else:
        from trl import GRPOConfig as Config
    config = Config(
        output_dir=str(output.work),
        learning_rate=s.lr,
        seed=s.seed,
        data_seed=s.seed,
        per_device_train_batch_size=s.batch_size,
        gradient_accumulation_steps=1,
        num_generations=s.num_generations,
        max_completion_length=s.response_length,
        temperature=s.temperature,
        beta=s.kl_coef,
        max_steps=1,
        model_init_kwargs={"dtype": str(training_dtype()).removeprefix("torch.")},
        # Activation checkpointing (TRL's default here) pays off on GPUs, only costs on CPU.
        **checkpointing_kwargs(config_cls=Config, enabled=torch.cuda.is_available()),
        bf16=use_bf16(),
        use_cpu=not torch.cuda.is_available(),
        logging_steps=1,
        save_strategy="no",
        report_to=s.report_to,
        disable_tqdm=quiet,
    )
    # Episodes are completions over all devices; the world size is known once the config is.
    config.max_steps = max(1, math.ceil(s.total_episodes / (s.batch_size * config.world_size)))
    return config


def _build_group(
    policy_path: str,
    pm_path: str,
    tokenizer: Any,
    kept: list[tuple[Any, list[int]]],
    config: Any,
    s: RLSettings,
) -> tuple[Any, Any, PMScorer]:
    from accelerate import PartialState
    from datasets import Dataset

    if s.algorithm == "rloo":
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOTrainer as Trainer
    scorer = PMScorer.load(pm_path, device=PartialState().device)
    reward = PMReward(scorer, s.missing_eos_penalty)
    rows = [{"prompt": it.messages} for it, _ in kept]
    trainer = Trainer(
        model=policy_path,
        reward_funcs=[reward],
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer, trainer.model, scorer
