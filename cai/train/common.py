"""Pieces every trainer adapter shares: processes, loading, library output, metrics and parameters.

Everything here must behave under `accelerate launch` (several processes running the same code):
only the main process touches files, and every step that reads what the main process wrote waits
for it first.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PrinterCallback, ProgressCallback, TrainerCallback

from cai.errors import file_error
from cai.io.atomic import PUBLISHED_MARKER

TRAIN_META = PUBLISHED_MARKER
METRICS_FILE = "metrics.jsonl"
# Files the Trainer writes next to a model that a model folder does not need (a pickled
# TrainingArguments is not loadable without our exact library versions anyway).
NOT_MODEL_FILES = {"training_args.bin"}

# --------------------------------------------------------------------------- processes


def _state() -> Any:
    """The process group, created exactly as transformers' TrainingArguments would create it.

    `PartialState` is a process-wide singleton: whoever builds it first decides the backend. On
    CPU it must be built with ``cpu=True`` or two `accelerate launch --cpu` processes would each
    think they are alone (and both write the output folder).
    """
    from accelerate import PartialState

    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    return PartialState(cpu=use_cpu)


def is_main_process() -> bool:
    return bool(_state().is_main_process)


def wait_for_everyone() -> None:
    _state().wait_for_everyone()


# --------------------------------------------------------------------------- loading


def use_bf16() -> bool:
    """bf16 on a CUDA device that supports it; fp32 elsewhere (CPU bf16 is slow and lossy)."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def training_dtype() -> torch.dtype:
    return torch.bfloat16 if use_bf16() else torch.float32


def ensure_pad_token(tokenizer: Any) -> None:
    """Batches need a pad token; models without one pad with EOS (labels mask it out anyway)."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token


def load_tokenizer(path: str, *, padding_side: str = "right") -> Any:
    """Right padding for training losses; generation callers ask for left."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    ensure_pad_token(tokenizer)
    tokenizer.padding_side = padding_side
    return tokenizer


def load_chat_tokenizer(path: str, model: str, why: str) -> Any:
    """The tokenizer of a model trained on chat data: one that cannot load, or has no chat
    template, is a one-line `--model` error saying `why` a template is needed."""
    try:
        tokenizer = load_tokenizer(path)
    except OSError as e:  # not a folder here and not reachable as a hub id
        raise file_error(model, "--model", f"cannot load a tokenizer: {e}") from None
    if not tokenizer.chat_template:
        raise file_error(model, "--model", f"the tokenizer has no chat template; {why}")
    return tokenizer


def load_causal_lm(path: str, dtype: torch.dtype | None = None) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype or training_dtype())


def checkpointing_kwargs(config_cls: type, enabled: bool) -> dict[str, bool]:
    """Activation checkpointing trades ~20% speed for memory: worth it on GPUs, not on CPU.

    transformers 5 renamed `gradient_checkpointing` to `activation_checkpointing` (the old name
    warns); older versions only know the old one.
    """
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)}
    key = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return {key: enabled}


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


@contextlib.contextmanager
def quiet_libraries(quiet: bool, *, verbose: bool | None = None) -> Iterator[None]:
    """Library output for the duration of a run, restored afterwards: the verbosity switch.

    ``quiet``: no library progress bars ("Loading weights", "Tokenizing train dataset") and no
    chatter. ``verbose=False``: no chatter (log lines, deprecation and Python warnings, raw metric
    dicts, datasets' per-map bars) but the model loading bars stay; ``verbose=True``: everything
    the libraries print. ``verbose=None`` (the default) leaves chatter as the caller set it: the
    CLI mutes it unless ``--verbose`` (`cai.verbosity.LibraryOutput`), and a library caller keeps
    its own logging setup.
    """
    from cai.verbosity import LibraryOutput, libraries_muted

    mute = verbose is False or (quiet and not verbose)
    # datasets' bars ("Tokenizing train dataset", "Truncating …") are internals, not progress;
    # `libraries_muted()` is read once the muting (if any) is on.
    with LibraryOutput(verbose=not mute), _library_bars(models=not quiet, datasets=not (quiet or libraries_muted())):
        yield


@contextlib.contextmanager
def _library_bars(*, models: bool, datasets: bool) -> Iterator[None]:
    if models and datasets:
        yield
        return
    import datasets as ds
    import transformers

    tf_log = transformers.utils.logging
    tf_bars, ds_bars = tf_log.is_progress_bar_enabled(), ds.is_progress_bar_enabled()
    if not models:
        tf_log.disable_progress_bar()  # "Loading weights", "Writing model shards"
    if not datasets:
        ds.disable_progress_bars()
    try:
        yield
    finally:
        if tf_bars:
            tf_log.enable_progress_bar()
        if ds_bars:
            ds.enable_progress_bars()


class _BarWithoutMetrics(ProgressCallback):
    """The Trainer's progress bar without the raw log dict it writes under it at every step."""

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        return None


def keep_metrics_off_terminal(trainer: Any, quiet: bool) -> None:
    """Stop a Trainer printing every log dict (``{'loss': …, 'grad_norm': …}``) to the terminal.

    Its default callbacks do (PrinterCallback, or ProgressCallback under its bar); `metrics.jsonl`
    keeps every one, so the terminal gets them only while library output is on (``--verbose``).
    Under ``quiet`` there is no bar either (the config disabled tqdm).
    """
    from cai.verbosity import libraries_muted

    if not quiet and not libraries_muted():
        return
    trainer.remove_callback(PrinterCallback)
    if any(type(cb) is ProgressCallback for cb in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_BarWithoutMetrics())


# --------------------------------------------------------------------------- metrics


class JsonlMetricsCallback(TrainerCallback):
    """Append every Trainer log dict to a JSONL file (main process only).

    One line per log event, with `step` and `epoch` added, so a run can be plotted or compared
    without tensorboard; the file is opened per write so a killed run keeps every line so far.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3)}
        row.update({k: jsonable(v) for k, v in logs.items()})
        from cai.io.store import append_bytes

        append_bytes(self.path, (json.dumps(row, ensure_ascii=False) + "\n").encode())  # full disk: one line


def jsonable(v: Any) -> Any:
    """A Trainer log value as JSON can hold it (every metrics log, SFT/PM and RL, uses this)."""
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN/inf; keep the fact visible
    return v


# --------------------------------------------------------------------------- parameters


def param_checksums(model: Any) -> dict[str, tuple[float, float]]:
    """A cheap per-tensor (sum, norm) signature: two floats per tensor instead of a full copy.

    Under ZeRO-3 each process sees only its shard; a change in any element still changes it.
    """
    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and p.numel():
                q = p.detach().double()
                out[name] = (float(q.sum()), float(q.norm()))
    return out


def changed_params(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Names whose values differ between two `snapshot_params` or `param_checksums` results."""
    changed = []
    for name, old in before.items():
        new = after.get(name)
        if new is None:
            continue
        if isinstance(old, torch.Tensor):
            if not torch.equal(old, new):
                changed.append(name)
        elif old != new:
            changed.append(name)
    return changed


def library_versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", "transformers", "trl", "datasets", "accelerate")}


def loss_history(log_history: Sequence[Mapping[str, Any]]) -> list[float]:
    """The training losses the Trainer logged, in order (eval and summary entries left out)."""
    return [float(e["loss"]) for e in log_history if "loss" in e and "train_loss" not in e]
