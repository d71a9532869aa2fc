"""LoRA (peft) for every trainer: settings → a `LoraConfig`, and what a LoRA run saves.

Why a module of its own: each TRL trainer takes a ``peft_config`` and wraps the model itself
(so DeepSpeed/ZeRO and the reference model work the way TRL tested them: DPO and PPO use the
base with the adapter switched off as their reference, so no second model is loaded). What
TRL leaves to us is the output: `TrainOutput.finalize` saves ``trainer.model``, so

* ``lora_merge`` (default) merges the adapters into the base weights first: the folder is a
  plain transformers model that every ``--model`` / ``--policy`` / ``--pm`` accepts;
* otherwise the folder holds only the adapter (``adapter_config.json`` +
  ``adapter_model.safetensors``, pointing at its base), which peft loads
  (``AutoPeftModelForCausalLM.from_pretrained``) but cai's model specs do not.

Where TRL applies peft partially it is said here and in the settings: PPO's value model (a copy
of the PM) is always trained in full; the PM's score head is trained in full next to its
adapters (it is new, there is nothing to adapt).
"""

from __future__ import annotations

from typing import Any, Literal

from cai.errors import file_error, option_error
from cai.train.settings import Lora

Task = Literal["CAUSAL_LM", "SEQ_CLS"]
INSTALL_HINT = "LoRA needs peft: pip install 'peft>=0.13'"


def lora_config(s: Lora, task: Task = "CAUSAL_LM") -> Any:
    """The peft config for these settings, or None when LoRA is off."""
    if not s.lora:
        return None
    try:
        from peft import LoraConfig, TaskType
    except ImportError:
        raise option_error("--lora-r", INSTALL_HINT) from None
    r = int(s.lora_r or 0)
    targets: list[str] | str = s.lora_target_modules
    if targets == ["all-linear"]:
        targets = "all-linear"  # peft's own spelling for every linear layer but the output head
    return LoraConfig(
        r=r,
        lora_alpha=s.lora_alpha if s.lora_alpha is not None else 2 * r,
        lora_dropout=s.lora_dropout,
        target_modules=targets,
        task_type=TaskType[task],
        # The PM's value head is new: train it in full (TRL recommends it for reward models).
        modules_to_save=["score"] if task == "SEQ_CLS" else None,
        bias="none",
    )


def is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def module_names(path: str) -> set[str]:
    """Leaf module names of the architecture at `path`, without loading its weights."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    return {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n}


def check_target_names(path: str, s: Lora, model_spec: str) -> None:
    """Fail before training when a ``--lora-target-modules`` name is not in the model at `path`
    (named `model_spec` in the error, as the user gave it)."""
    if not s.lora or s.lora_target_modules == ["all-linear"]:
        return
    try:
        names = module_names(path)
    except (OSError, ValueError):
        return  # not loadable here: the tokenizer/model load that follows says so in one line
    missing = [m for m in s.lora_target_modules if m not in names]
    if missing:
        shown = ", ".join(sorted(n for n in names if n.endswith("proj"))[:8] or sorted(names)[:8])
        raise file_error(
            model_spec,
            "--lora-target-modules",
            f"no module named {', '.join(missing)} in this model (it has e.g. {shown})",
        )


def prepare_to_save(trainer: Any, s: Lora) -> None:
    """Before `TrainOutput.finalize`: merge the adapters into the base when asked to.

    The merged model replaces ``trainer.model`` so that `save_model` writes a full model; under
    DDP the trainer's model is already the unwrapped module. DeepSpeed ZeRO-3 keeps no full
    weights on a process to merge, so merging is refused there (save the adapter instead).
    """
    if not s.lora or not s.lora_merge:
        return
    # TRL's PPO saves `trainer.model.policy` (its model wraps policy and value model).
    holder = trainer.model if hasattr(trainer.model, "policy") else trainer
    attr = "policy" if holder is trainer.model else "model"
    if not is_peft(getattr(holder, attr)):
        return
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = trainer.accelerator.state.deepspeed_plugin
        if plugin is not None and plugin.zero_stage == 3:
            raise option_error("--lora-merge", "cannot merge under DeepSpeed ZeRO-3; use --no-lora-merge")
    setattr(holder, attr, getattr(holder, attr).merge_and_unload())


def record(s: Lora) -> dict[str, Any] | None:
    """What a run's cai_train.json says about LoRA (None: full fine-tuning)."""
    if not s.lora:
        return None
    return {
        "r": s.lora_r,
        "alpha": s.lora_alpha if s.lora_alpha is not None else 2 * int(s.lora_r or 0),
        "dropout": s.lora_dropout,
        "target_modules": s.lora_target_modules,
        "saved": "merged full model" if s.lora_merge else "adapter only (load with peft)",
    }
