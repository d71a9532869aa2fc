"""`cai run`: execute a recipe's stages in order, in one run folder, skipping finished work.

Each stage lives in ``RUN/<stage>/`` with a ``stage.json`` holding its *key*: a hash of its own
settings, the run's models, seed and constitution fingerprint, and the keys of every stage before
it. A rerun skips a stage whose key matches and whose status is ``done``; it resumes one that was
interrupted (data stages pick up at the record level, training stages start that stage again);
and it moves a stage whose inputs changed aside to ``RUN/<stage>.old-<key>`` before redoing it.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.constitution import Constitution, load_constitution
from cai.export import write_json_atomic
from cai.recipe import Recipe
from cai.records import content_hash


class RunLog:
    """Timestamped lines in ``RUN/log.txt`` (and on stderr unless quiet)."""

    def __init__(self, path: Path, quiet: bool):
        self.path = path
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
        if not self.quiet:
            import sys

            print(line, file=sys.stderr, flush=True)


@dataclass
class RunContext:
    recipe: Recipe
    base: Path
    out: Path
    constitution: Constitution
    quiet: bool
    log: RunLog
    dirs: dict[str, Path] = field(default_factory=dict)

    def prompts(self, cfg: Any) -> list[Any]:
        from cai.sources import load_prompts

        items = load_prompts(self.local(cfg.prompts))
        end = None if cfg.limit is None else cfg.skip + cfg.limit
        return items[cfg.skip : end]

    def local(self, ref: str) -> str:
        """A data path named in the recipe, relative to the recipe's folder when it exists there."""
        return str(self.base / ref) if (self.base / ref).exists() else ref

    def backend(self, spec: str):
        from cai.cli_common import open_backend

        m = self.recipe.models
        return open_backend(spec, m.base_url, m.api_key_env, m.dtype, "auto", m.concurrency, quiet=self.quiet)

    def model_dir(self, stage: str) -> Path:
        return self.dirs[stage] / "model"

    def policy_spec(self) -> str:
        """The SL-CAI model when this run trained one, else the recipe's policy."""
        return str(self.model_dir("sft")) if "sft" in self.dirs else self.recipe.models.policy

    def final_policy_spec(self) -> str:
        return str(self.model_dir("ppo")) if "ppo" in self.dirs else self.policy_spec()


def _critique(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.models.base import GenerationParams
    from cai.stages.critique import CritiqueSettings, run_critique

    settings = CritiqueSettings(
        rounds=cfg.rounds,
        seed=ctx.recipe.seed,
        batch_size=cfg.batch_size,
        params=GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p),
    )
    backend = ctx.backend(cfg.model or ctx.recipe.models.policy)
    try:
        return run_critique(ctx.constitution, ctx.prompts(cfg), backend, out, settings, quiet=ctx.quiet)
    finally:
        backend.close()


def _sft(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.sft import train_sft

    return train_sft(
        [str(ctx.dirs["critique"])],
        ctx.recipe.models.policy,
        str(out / "model"),
        helpful=[ctx.local(h) for h in cfg.helpful] or None,
        helpful_ratio=cfg.helpful_ratio,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        grad_accum=cfg.grad_accum,
        max_length=cfg.max_length,
        max_steps=cfg.max_steps,
        seed=ctx.recipe.seed,
        quiet=ctx.quiet,
        overwrite=True,
    )


def _label(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.models.base import GenerationParams
    from cai.stages.label import JudgeSettings, LabelSettings, run_label

    judge_settings = JudgeSettings(
        principles=cfg.principles,
        k=cfg.k,
        orders=cfg.orders,
        cot=cfg.cot,
        clamp=tuple(cfg.clamp) if cfg.clamp else None,
        fewshot=cfg.fewshot,
    )
    settings = LabelSettings(
        judge=judge_settings,
        responses_per_prompt=cfg.responses_per_prompt,
        seed=ctx.recipe.seed,
        batch_size=cfg.batch_size,
        max_failures=cfg.max_failures,
        params=GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=0.95),
    )
    judge = ctx.backend(ctx.recipe.models.judge)
    policy = ctx.backend(ctx.policy_spec())
    try:
        return run_label(
            ctx.constitution, judge, out, settings, prompts=ctx.prompts(cfg), policy=policy, quiet=ctx.quiet
        )
    finally:
        policy.close()
        judge.close()


def _pm(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.common import resolve_model_path
    from cai.train.pm import train_pm

    # The PM starts from the policy so that it shares the policy's tokenizer (TRL's PPO feeds
    # the policy's token ids to the reward and value models).
    base = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    return train_pm(
        [str(ctx.dirs["label"])],
        base,
        str(out / "model"),
        human=[ctx.local(h) for h in cfg.human] or None,
        eval_files=[ctx.local(e) for e in cfg.eval] or None,
        labels=cfg.labels,
        epochs=cfg.epochs,
        lr=cfg.lr,
        batch_size=cfg.batch_size,
        max_length=cfg.max_length,
        max_steps=cfg.max_steps,
        seed=ctx.recipe.seed,
        quiet=ctx.quiet,
        overwrite=True,
    )


def _ppo(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.common import resolve_model_path
    from cai.train.rl import train_rl

    policy = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    return train_rl(
        policy,
        str(ctx.model_dir("pm")),
        ctx.prompts(cfg),
        str(out / "model"),
        algorithm=cfg.algorithm,
        kl_coef=cfg.kl_coef,
        total_episodes=cfg.total_episodes,
        batch_size=cfg.batch_size,
        mini_batch=cfg.mini_batch,
        ppo_epochs=cfg.ppo_epochs,
        num_generations=cfg.num_generations,
        response_length=cfg.response_length,
        temperature=cfg.temperature,
        lr=cfg.lr,
        seed=ctx.recipe.seed,
        quiet=ctx.quiet,
        overwrite=True,
    )


def _eval(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """The final policy against the model it started from, on prompts no stage trained on."""
    from cai.models.base import GenerationParams
    from cai.stages.evaluate import EvalSettings, evaluate_policy, write_policy_eval

    scorer = None
    if "pm" in ctx.dirs:
        from cai.train.rl_common import PMScorer

        scorer = PMScorer.load(str(ctx.model_dir("pm")))
    settings = EvalSettings(
        params=GenerationParams(max_new_tokens=cfg.max_new_tokens, temperature=0.7, top_p=1.0), seed=ctx.recipe.seed
    )
    policy = ctx.backend(ctx.final_policy_spec())
    baseline = ctx.backend(ctx.recipe.models.policy)
    judge = ctx.backend(ctx.recipe.models.judge)
    try:
        summary, samples = evaluate_policy(
            policy,
            ctx.prompts(cfg),
            ctx.constitution,
            baseline=baseline,
            judge=judge,
            scorer=scorer,
            settings=settings,
            quiet=ctx.quiet,
        )
    finally:
        for b in (policy, baseline, judge):
            b.close()
    write_policy_eval(out, summary, samples)
    return summary


STAGES: dict[str, Callable[[RunContext, Any, Path], dict[str, Any]]] = {
    "critique": _critique,
    "sft": _sft,
    "label": _label,
    "pm": _pm,
    "ppo": _ppo,
    "eval": _eval,
}


def stage_key(recipe: Recipe, fingerprint: str, stage: str, upstream: list[str]) -> str:
    cfg = getattr(recipe.stages, stage).model_dump()
    return content_hash(stage, cfg, recipe.models.model_dump(), recipe.seed, fingerprint, upstream)


def run_recipe(
    recipe: Recipe, base: Path, out: Path, quiet: bool = False, only: list[str] | None = None
) -> dict[str, Any]:
    """Run every enabled stage; returns {stage: summary}."""
    out.mkdir(parents=True, exist_ok=True)
    const_ref = str(base / recipe.constitution) if (base / recipe.constitution).is_file() else recipe.constitution
    c = load_constitution(const_ref)
    log = RunLog(out / "log.txt", quiet)
    ctx = RunContext(recipe, base, out, c, quiet, log)
    write_json_atomic(out / "recipe.json", recipe.model_dump())
    summaries: dict[str, Any] = {}
    upstream: list[str] = []
    for stage in recipe.enabled():
        if stage not in STAGES:
            raise NotImplementedError(f"stage {stage!r} is not available in this version of cai")
        key = stage_key(recipe, c.fingerprint(), stage, upstream)
        upstream.append(key)
        d = out / stage
        ctx.dirs[stage] = d
        state_path = d / "stage.json"
        state = json.loads(state_path.read_text()) if state_path.exists() else None
        if state and state.get("key") != key:
            aside = out / f"{stage}.old-{state.get('key', 'unknown')[:8]}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(d, aside)
            log(f"{stage}: inputs changed; previous output moved to {aside.name}")
            state = None
        if state and state.get("status") == "done":
            log(f"{stage}: done already (key {key[:8]}), skipped")
            summaries[stage] = state.get("summary", {})
            continue
        if only and stage not in only:
            raise RuntimeError(f"stage {stage} is not finished; run it first")
        d.mkdir(parents=True, exist_ok=True)
        log(f"{stage}: {'resuming' if state else 'starting'} (key {key[:8]})")
        write_json_atomic(state_path, {"stage": stage, "key": key, "status": "running"})
        t0 = time.perf_counter()
        summary = STAGES[stage](ctx, getattr(recipe.stages, stage), d)
        seconds = round(time.perf_counter() - t0, 1)
        write_json_atomic(
            state_path, {"stage": stage, "key": key, "status": "done", "seconds": seconds, "summary": summary}
        )
        log(f"{stage}: done in {seconds}s")
        summaries[stage] = summary
    write_json_atomic(out / "run_summary.json", summaries)
    return summaries
