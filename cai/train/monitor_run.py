"""The collapse monitor inside a TRL run: which prompts it asks, how it generates, and the
callback that checks at fixed updates, logs warnings and can stop training.

The figures and warnings themselves are `cai.train.monitor`'s; the settings
`cai.train.monitor_settings`'. Rows go into the run's ``metrics.jsonl`` with a ``monitor`` key
(no ``reward``/``kl`` at the top, so readers of the update curves pass them by).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cai.io.sources import PromptItem, load_prompts
from cai.train.monitor import Detector, Reply, Watch, measure, summary_of
from cai.train.monitor_settings import MonitorSettings
from cai.train.rl_common import encode_prompt
from cai.train.rl_metrics import normalize_metrics

Log = Callable[[str], None]


def from_the_end(items: Sequence[PromptItem], k: int) -> list[PromptItem]:
    """`k` prompts spread over the categories, each category's last first: the eval stage takes
    the *first* N of each category, so these stay clear of it while N leaves room."""
    by: dict[str | None, list[PromptItem]] = {}
    for it in items:
        by.setdefault(it.category, []).append(it)
    queues = [list(reversed(v)) for v in by.values()]
    picked: list[PromptItem] = []
    while len(picked) < k and any(queues):
        for q in queues:
            if q and len(picked) < k:
                picked.append(q.pop(0))
    return picked


def monitor_prompts(s: MonitorSettings, red: Sequence[PromptItem]) -> list[tuple[str, PromptItem]]:
    """(set, prompt) for every prompt a check asks: safe ones from each `monitor_safe` set, then
    the first `monitor_red` RL prompts. Loading here, before any model, makes a bad name an
    early one-line error."""
    safe = [("safe", it) for ref in s.monitor_safe for it in from_the_end(load_prompts(ref), s.monitor_safe_per_set)]
    return safe + [("red", it) for it in list(red)[: s.monitor_red]]


def make_generator(tokenizer: Any, prompts: Sequence[tuple[str, PromptItem]], max_new_tokens: int) -> Any:
    """Greedy replies of the current policy to `prompts`, in one left-padded batch."""
    encoded = [encode_prompt(tokenizer, it.messages) for _, it in prompts]
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id

    @torch.no_grad()
    def generate(model: Any) -> list[Reply]:
        policy = getattr(model, "module", model)  # DDP
        policy = getattr(policy, "policy", policy)  # PPO trains a policy+value wrapper
        policy = getattr(policy, "module", policy)
        device = next(policy.parameters()).device
        width = max(len(ids) for ids in encoded)
        x = torch.full((len(encoded), width), pad, dtype=torch.long)
        mask = torch.zeros_like(x)
        for i, ids in enumerate(encoded):
            x[i, width - len(ids) :] = torch.as_tensor(ids)
            mask[i, width - len(ids) :] = 1
        was_training = policy.training
        policy.eval()
        try:
            out = policy.generate(
                input_ids=x.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=eos,
                pad_token_id=pad,
            )
        finally:
            policy.train(was_training)
        replies = []
        for (which, it), row in zip(prompts, out[:, width:].tolist(), strict=True):
            row = row[: row.index(eos) + 1] if eos in row else [t for t in row if t != pad]
            text = tokenizer.decode(row, skip_special_tokens=True)
            replies.append(Reply(which, it.text, text.strip(), len(row)))
        return replies

    return generate


def describe(row: dict[str, Any]) -> str:
    """One check in one line, for the run's log."""
    safe, red = row["safe"], row["red"]
    parts = [f"safe refused {safe['refused']}/{safe['n']}"] if safe["share"] is not None else []
    parts += [f"red-team refused {red['refused']}/{red['n']}"] if red["share"] is not None else []
    parts.append(f"{row['words_mean']:.0f} words" if row["words_mean"] is not None else "no replies")
    if row["distinct2"] is not None:
        parts.append(f"distinct-2 {row['distinct2']:.2f}")
    parts.append(f"top sentence in {row['top_sentence_share']:.0%}")
    if row["kl"] is not None:
        parts.append(f"KL {row['kl']:.3g}")
    return ", ".join(parts)


class CollapseMonitor:
    """The state of one run's monitor; `callback()` wraps it for a TRL trainer."""

    def __init__(
        self,
        settings: MonitorSettings,
        generate: Any,
        path: str | Path,
        algorithm: str,
        log: Log,
        detector: Detector | None,
    ) -> None:
        self.s = settings
        self.detector = detector
        self.generate = generate
        self.path = Path(path)
        self.algorithm = algorithm
        self.log = log
        self.watch = Watch(settings)
        self.rows: list[dict[str, Any]] = []
        self.kl: float | None = None
        self.stopped_at: int | None = None

    def check(self, step: int, model: Any) -> bool:
        """Measure, record, log; True when training should stop here."""
        row = measure(step, self.generate(model), self.kl, self.detector)
        warnings = self.watch.check(row)
        row["warnings"] = warnings
        self.rows.append(row)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, "algorithm": self.algorithm, "monitor": row}, ensure_ascii=False) + "\n")
        self.log(f"monitor at update {step}: {describe(row)}")
        for w in warnings:
            self.log(f"warning: monitor at update {step}: {w['text']}")
        # The first check shows the policy RL started from: what it already warned about is not
        # RL's doing, so only a warning the first check did not raise stops training.
        first = {w["key"] for w in self.rows[0]["warnings"]}
        stop = self.s.monitor_stop and len(self.rows) > 1 and any(w["key"] not in first for w in warnings)
        if stop:
            self.stopped_at = step
            self.log(f"monitor: stopping training at update {step} (monitor_stop)")
        return stop

    def summary(self) -> dict[str, Any]:
        return summary_of(self.watch, self.rows, self.stopped_at)

    def callback(self) -> Any:
        return _callback_class()(self)


def _shared(flag: bool) -> bool:
    """The main process's decision, on every process (under DDP only the main process checks,
    and a stop that only it took would leave the others waiting at the next collective)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        box = [flag]
        torch.distributed.broadcast_object_list(box, src=0)
        return bool(box[0])
    return flag


def _callback_class() -> type:
    from transformers import TrainerCallback

    from cai.train.rl_metrics import _zero3

    class CollapseMonitorCallback(TrainerCallback):
        """Checks before the first update, every `monitor_every` updates (at the log event, so
        the KL is that update's) and at the end; main process only, not under ZeRO-3."""

        def __init__(self, monitor: CollapseMonitor):
            self.m = monitor
            self.done: set[int] = set()

        def _at(self, state: Any, control: Any, model: Any) -> None:
            step = state.global_step
            if step in self.done:
                return
            self.done.add(step)
            stop = False
            if state.is_world_process_zero and model is not None and not _zero3():
                stop = self.m.check(step, model)
            if self.m.s.monitor_stop and _shared(stop):
                control.should_training_stop = True

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._at(state, control, kwargs.get("model"))

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not logs or "train_runtime" in logs:
                return
            kl = normalize_metrics(logs, self.m.algorithm).get("kl")
            if kl is not None:
                self.m.kl = float(kl)
            if state.global_step % self.m.s.monitor_every == 0:
                self._at(state, control, kw.get("model"))

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self._at(state, control, kwargs.get("model"))

    return CollapseMonitorCallback


def collapse_monitor(
    settings: MonitorSettings,
    tokenizer: Any,
    prompts: Sequence[tuple[str, PromptItem]],
    path: str | Path,
    algorithm: str,
    log: Log,
    detector: Detector | None,
) -> CollapseMonitor | None:
    """The run's monitor, or None when it is off (or has no prompt to ask)."""
    if not settings.monitor_every or not prompts:
        return None
    generate = make_generator(tokenizer, prompts, settings.monitor_max_new_tokens)
    return CollapseMonitor(settings, generate, path, algorithm, log, detector)
