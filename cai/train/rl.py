"""RL against the preference model: TRL's RLOO (default) or GRPO, or PPO where TRL has it.

Which trainer exists depends on the installed TRL (`cai.train.trl_support`): RLOO and GRPO are
TRL's maintained online trainers, in every TRL >= 1.0; PPO only in TRL 1.0–1.12 (the `cai[ppo]`
extra). Asking for PPO elsewhere is refused when the settings are validated, before any model
loads. The metrics `cai`'s report reads (reward, KL, EOS rate, reply length) come out under the
same names whichever trainer ran (`cai.train.rl_metrics`).

* **PPO** (`trl.experimental.ppo`, removed from TRL after 1.12): policy = the SL-CAI model,
  reference = a frozen copy of it, value model initialised from the PM (backbone and head),
  reward = PM score − missing-EOS penalty, and TRL adds the per-token −λ·KL(policy ‖ reference)
  (k1 estimator) so the return is ``r_PM − λ·KL``. Prompts are left-padded for generation.
* **RLOO / GRPO** (TRL's maintained trainers): the reward is what the ``reward`` setting names
  (`cai.train.rewards`): the PM through `PMReward` (the same position PPO reads), the judge's
  likelihood contrast per principle (``direct``), a PM trained on demonstration pairs
  (``demo-pm``), or a weighted sum; the missing-EOS penalty is paid once. λ is their ``beta``:
  RLOO subtracts β·KL from the reward like PPO, GRPO puts a β-weighted KL term into the loss.
  No value model. With ``helpful_ratio`` > 0, helpful prompts join the RL prompts
  (`cai.train.helpful_mix`).

Sizes: ``batch_size`` is rollouts per update per device. PPO splits it into minibatches of
``mini_batch`` rows, one optimiser step each, for ``ppo_epochs`` passes. RLOO/GRPO take
``num_generations`` completions per prompt, so ``batch_size`` must be a multiple of it.
``total_episodes`` counts completions over the run (all devices).

LoRA (``lora_r``): the policy gets adapters and its reference is the base with the adapter off
(no second copy loaded); PPO's value model is trained in full (TRL applies peft to the policy
only), RLOO/GRPO have no value model.

Everything TRL-specific stays in `cai.train`; the saved policy is a plain causal-LM folder with
the base model's tokenizer and chat template, usable as a model spec anywhere.
"""

from __future__ import annotations

import contextlib
import io
import sys
from collections.abc import Callable, Sequence
from typing import Any

from cai.errors import file_error
from cai.io.sources import PromptItem, load_prompts
from cai.train import lora
from cai.train.common import (
    changed_params,
    keep_metrics_off_terminal,
    load_causal_lm,
    load_tokenizer,
    param_checksums,
    training_dtype,
)
from cai.train.configs import group_config, import_ppo, ppo_config
from cai.train.core import Trained, TrainJob, train_model
from cai.train.helpful_mix import mix_helpful
from cai.train.monitor_run import collapse_monitor, monitor_prompts
from cai.train.rewards import RewardInputs, reward_functions
from cai.train.rl_common import (
    PMScorer,
    check_pm_folder,
    check_same_tokenizer,
    encode_prompt,
    use_distinct_pad,
)
from cai.train.rl_metrics import KL_UNIT, make_sampler, metrics_callback
from cai.train.settings import RlSettings


def train_rl(
    policy: str,
    pm: str | None,
    prompts: str | Sequence[PromptItem],
    out: str,
    settings: RlSettings | None = None,
    *,
    seed: int = 0,
    source: str | None = None,
    sample_prompts: int = 2,
    quiet: bool = False,
    overwrite: bool = False,
    demo_pm: str | None = None,
    direct: Any = None,
    log: Callable[[str], None] | None = None,
    refusal: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """Optimise `policy` against the reward `settings.reward` names on `prompts`; save it at `out`.
    `pm` / `demo_pm`: PM folders; `direct`: the direct reward (`cai.stages.direct_reward`, built by
    the caller); `prompts`: a prompt source or loaded items (`source` names them); `log` takes the
    collapse monitor's lines (default stderr unless quiet), `refusal` is its detector (none: no
    refusals counted). Returns the summary that also goes, with provenance, into `cai_train.json`."""
    s = settings or RlSettings()
    rewards = RewardInputs(pm=pm, demo_pm=demo_pm, direct=direct)
    rewards.check(s)
    # The monitor's safe prompts stay out of the helpful mix: a prompt trained on would hide collapse.
    kept_out = [it.text for _, it in monitor_prompts(s, [])] if s.monitor_every else []
    items, source, mix = _load(prompts, source, s, seed, kept_out)
    watched = monitor_prompts(s, items) if s.monitor_every else []  # a bad set name fails before any model loads
    say = log or (lambda line: None if quiet else print(line, file=sys.stderr, flush=True))

    def check(policy_path: str) -> None:
        for folder in rewards.pm_folders(s):
            check_same_tokenizer(policy_path, check_pm_folder(folder))

    def step(job: TrainJob) -> Trained:
        tokenizer = load_tokenizer(job.path, padding_side="left")
        use_distinct_pad(tokenizer)
        kept = _short_enough(tokenizer, items, s.max_prompt_length, source)
        is_ppo = s.algorithm == "ppo"
        # The config comes first: it sets up the process group.
        config = job.start((ppo_config if is_ppo else group_config)(job.output, s, seed, quiet))
        if is_ppo:
            assert pm is not None  # `RewardSettings`: PPO takes the PM alone
            trainer, model, scorer = _build_ppo(job.path, check_pm_folder(pm), tokenizer, kept, config, s)
        else:
            trainer, model, scorer = _build_group(job.path, rewards, tokenizer, kept, config, s)
        samples = [it.messages for it, _ in kept[:sample_prompts]]
        sampler = make_sampler(tokenizer, samples, scorer, s.response_length) if samples else None
        callback = metrics_callback(job.output.metrics, s.algorithm, sampler, None if is_ppo else dict(s.reward))
        monitor = collapse_monitor(s, tokenizer, watched, job.output.metrics, s.algorithm, say, refusal)
        summary = _train(trainer, model, [callback, *([monitor.callback()] if monitor else [])], s, job.path, quiet)
        if monitor is not None:
            summary["monitor"] = monitor.summary()
        summary["prompts"] = _prompt_counts(len(items), len(kept), mix)
        # The base tokenizer as it was (its own pad, right padding): a normal model folder.
        return Trained(trainer, load_tokenizer(job.path), summary, _meta(rewards, source, s, mix))

    return train_model(s.algorithm, policy, out, s, step, seed=seed, quiet=quiet, overwrite=overwrite, check=check)


def _load(
    prompts: str | Sequence[PromptItem], source: str | None, s: RlSettings, seed: int, kept_out: Sequence[str]
) -> tuple[list[PromptItem], str, dict[str, Any] | None]:
    """The RL prompts with the helpful mix (when asked), where they came from, and the mix's record."""
    items = load_prompts(prompts) if isinstance(prompts, str) else list(prompts)
    source = prompts if isinstance(prompts, str) else source or f"{len(items)} prompts (given)"
    if s.helpful_ratio <= 0:
        return items, source, None
    helpful = load_prompts(s.helpful_prompts)
    mixed, mix = mix_helpful(items, helpful, s.helpful_ratio, seed, s.helpful_prompts, kept_out)
    return mixed, source, mix


def _prompt_counts(loaded: int, used: int, mix: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"loaded": loaded, "used": used, "dropped_too_long": loaded - used}
    if mix is not None:
        out |= {"helpful": mix["used"], "helpful_share": mix["share"]}
    return out


def _meta(rewards: RewardInputs, source: str, s: RlSettings, mix: dict[str, Any] | None) -> dict[str, Any]:
    """What `cai_train.json` records of an RL run besides what every training run records."""
    kl = "- kl_coef * KL per token (TRL PPO, k1)" if s.algorithm == "ppo" else "KL via beta = kl_coef"
    return {
        "pm": check_pm_folder(rewards.pm) if rewards.pm and "pm" in s.reward else None,
        "prompts": source,
        "helpful_mix": mix,
        "reward": " + ".join(f"{w:g} * {name}" for name, w in s.reward.items())
        + " - missing_eos_penalty if no EOS; "
        + kl,
        "rewards": rewards.record(s),
    }


def _short_enough(
    tokenizer: Any, items: list[PromptItem], limit: int, source: str
) -> list[tuple[PromptItem, list[int]]]:
    kept = [(it, encode_prompt(tokenizer, it.messages)) for it in items]
    kept = [(it, ids) for it, ids in kept if len(ids) <= limit]
    if not kept:
        raise file_error(source, "--max-prompt-length", f"every prompt is longer than {limit} tokens")
    return kept


def _train(
    trainer: Any, model: Any, callbacks: list[Any], s: RlSettings, policy_path: str, quiet: bool
) -> dict[str, Any]:
    """Train, put the policy's pad id back, and say what happened (including whether anything
    changed). The first callback is the metrics one."""
    for callback in callbacks:
        trainer.add_callback(callback)
    keep_metrics_off_terminal(trainer, quiet)
    before = param_checksums(model)
    # PPO prints a banner with accelerator.print; quiet means quiet.
    with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
        trainer.train()
    if s.algorithm == "ppo":
        _unwrap_ppo(trainer)
    _restore_pad_ids(model, policy_path)
    changed = changed_params(before, param_checksums(model))
    return _summary(callbacks[0].rows, trainer, s, changed, bool(before))


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
    rows: list[dict[str, Any]], trainer: Any, s: RlSettings, changed: list[str], comparable: bool
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


def _build_ppo(
    policy_path: str,
    pm_path: str,
    tokenizer: Any,
    kept: list[tuple[Any, list[int]]],
    config: Any,
    s: RlSettings,
) -> tuple[Any, Any, PMScorer]:
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    _, PPOTrainer = import_ppo()

    def pm_model() -> Any:
        return AutoModelForSequenceClassification.from_pretrained(pm_path, num_labels=1, dtype=training_dtype())

    peft_config = lora.lora_config(s)
    policy = load_causal_lm(policy_path)
    ref = None  # with LoRA, TRL's reference is the policy with its adapter off
    if peft_config is None:
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
        peft_config=peft_config,  # the policy only: the value model is trained in full
    )
    return trainer, trainer.policy_model, PMScorer(trainer.reward_model, tokenizer)


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


def _build_group(
    policy_path: str,
    rewards: RewardInputs,
    tokenizer: Any,
    kept: list[tuple[Any, list[int]]],
    config: Any,
    s: RlSettings,
) -> tuple[Any, Any, PMScorer | None]:
    from accelerate import PartialState
    from datasets import Dataset

    if s.algorithm == "rloo":
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOTrainer as Trainer
    funcs, weights, scorer = reward_functions(s, rewards, tokenizer.eos_token_id, device=PartialState().device)
    config.reward_weights = weights  # TRL sums the functions' rewards with these
    rows = [{"prompt": it.messages} for it, _ in kept]
    trainer = Trainer(
        model=policy_path,
        reward_funcs=funcs,
        peft_config=lora.lora_config(s),
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )
    return trainer, trainer.model, scorer
