"""`cai run`: execute a recipe's stages in order, in one run folder, skipping finished work.

Each stage lives in ``RUN/<stage>/`` with a ``stage.json`` holding its *key*: a hash of its own
settings, the run's models, seed and constitution fingerprint, and the keys of every stage before
it. A rerun skips a stage whose key matches and whose status is ``done``; it resumes one that was
interrupted (data stages pick up at the record level, training stages start that stage again);
and it moves a stage whose inputs changed aside to ``RUN/<stage>.old-<key>`` before redoing it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.errors import fail
from cai.io.atomic import write_json_atomic
from cai.io.readers import read_json_file
from cai.io.store import content_hash
from cai.models.settings import Backends, BackendSettings
from cai.redact import redact, redact_text
from cai.run.recipe import PromptSlice, Recipe
from cai.stages.settings import CritiqueSettings, EvalSettings, LabelSettings, StageSettings, Window
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings


class RunLog:
    """Timestamped lines in ``RUN/log.txt`` (and on stderr unless quiet)."""

    def __init__(self, path: Path, quiet: bool):
        self.path = path
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {redact_text(message)}"
        from cai.io.store import append_bytes

        append_bytes(self.path, (line + "\n").encode())  # a full disk: one line naming log.txt
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

    @property
    def seed(self) -> int:
        return self.recipe.seed

    def prompts(self, cfg: PromptSlice) -> list[Any]:
        from cai.io.sources import load_prompts

        return cfg.apply(load_prompts(self.local(cfg.prompts)))

    def local(self, ref: str) -> str:
        """A data path named in the recipe, relative to the recipe's folder when it exists there."""
        return str(self.base / ref) if (self.base / ref).exists() else ref

    def backends(self) -> Backends:
        return Backends(
            BackendSettings(**self.recipe.models.model_dump(include=set(BackendSettings.model_fields))),
            quiet=self.quiet,
        )

    def model_dir(self, stage: str) -> Path:
        return self.dirs[stage] / "model"

    def policy_spec(self) -> str:
        """The SL-CAI model when this run trained one, else the recipe's policy."""
        return str(self.model_dir("sft")) if "sft" in self.dirs else self.recipe.models.policy

    def final_policy_spec(self) -> str:
        """The policy the run ends with: PPO's or DPO's (a recipe has at most one), else SL-CAI's."""
        for stage in ("ppo", "dpo"):
            if stage in self.dirs:
                return str(self.model_dir(stage))
        return self.policy_spec()


S = TypeVar("S", bound=BaseModel)


def settings_of(section: BaseModel, model: type[S]) -> S:
    """The stage's own settings model out of its recipe section (which adds prompts and models)."""
    return model.model_validate(section.model_dump(include=set(model.model_fields)))


def _critique(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.stages.critique import run_critique

    with ctx.backends() as backends:
        backend = backends(
            cfg.model or ctx.recipe.models.policy, "models.policy" if cfg.model is None else "stages.critique.model"
        )
        settings = settings_of(cfg, CritiqueSettings)
        return run_critique(ctx.constitution, ctx.prompts(cfg), backend, out, settings, seed=ctx.seed, quiet=ctx.quiet)


def _sft(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.sft import train_sft

    settings = settings_of(cfg, SftSettings).model_copy(update={"helpful": [ctx.local(h) for h in cfg.helpful]})
    return train_sft(
        [str(ctx.dirs["critique"])],
        ctx.recipe.models.policy,
        str(out / "model"),
        settings,
        seed=ctx.seed,
        quiet=ctx.quiet,
        overwrite=True,
    )


def _label(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.stages.label import label_pairs, label_prompts, revision_pairs
    from cai.stages.settings import SCORERS

    settings = settings_of(cfg, LabelSettings)
    with ctx.backends() as backends:
        needs_judge = settings.method in SCORERS or settings.rescore is not None
        judge = backends(ctx.recipe.models.judge, "models.judge") if needs_judge else None
        if settings.method == "revision":  # the SL-CAI stage's own pairs: revision over first answer
            if "critique" not in ctx.dirs:
                raise fail("stages.label.method", None, "method", "revision needs the recipe's critique stage")
            pairs = settings_of(cfg, Window).apply(revision_pairs(ctx.dirs["critique"]))
            return label_pairs(ctx.constitution, judge, pairs, out, settings, seed=ctx.seed, quiet=ctx.quiet)
        policy = backends(ctx.policy_spec(), "models.policy")
        return label_prompts(
            ctx.constitution, judge, policy, ctx.prompts(cfg), out, settings, seed=ctx.seed, quiet=ctx.quiet
        )


def _pm(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    from cai.train.common import resolve_model_path
    from cai.train.pm import train_pm

    # The PM starts from the policy so that it shares the policy's tokenizer (TRL's PPO feeds
    # the policy's token ids to the reward and value models).
    base = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    local = {"human": [ctx.local(h) for h in cfg.human], "eval": [ctx.local(e) for e in cfg.eval]}
    settings = settings_of(cfg, PmSettings).model_copy(update=local)
    return train_pm(
        [str(ctx.dirs["label"])], base, str(out / "model"), settings, seed=ctx.seed, quiet=ctx.quiet, overwrite=True
    )


def _dpo(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """DPO in place of pm + ppo: the SL-CAI policy (also the reference) on the label run's pairs."""
    from cai.train.common import resolve_model_path
    from cai.train.dpo import train_dpo

    base = resolve_model_path(ctx.policy_spec(), quiet=ctx.quiet)
    local = {"human": [ctx.local(h) for h in cfg.human], "eval": [ctx.local(e) for e in cfg.eval]}
    settings = settings_of(cfg, DpoSettings).model_copy(update=local)
    return train_dpo(
        [str(ctx.dirs["label"])], base, str(out / "model"), settings, seed=ctx.seed, quiet=ctx.quiet, overwrite=True
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
        settings_of(cfg, RlSettings),
        seed=ctx.seed,
        source=cfg.prompts,
        quiet=ctx.quiet,
        overwrite=True,
    )


def _eval(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    """The final policy against the model it started from, on prompts no stage trained on."""
    from cai.stages.evaluate import evaluate_specs, load_lookalike, write_policy_eval

    m = ctx.recipe.models
    s = settings_of(cfg, EvalSettings)
    prompts = ctx.prompts(cfg)
    safe = (
        load_lookalike(ctx.local(s.lookalike), s.lookalike_per_category, "stages.eval.lookalike")
        if s.lookalike is not None
        else None
    )
    with ctx.backends() as backends:
        summary, samples, safe_samples = evaluate_specs(
            backends,
            ctx.final_policy_spec(),
            prompts,
            ctx.constitution,
            s,
            baseline=m.policy,
            judge=m.judge,
            pm=str(ctx.model_dir("pm")) if "pm" in ctx.dirs else None,
            safe=safe,
            prompts_ref=cfg.prompts,
            seed=ctx.seed,
            quiet=ctx.quiet,
            named_by=("models.policy", "models.policy", "models.judge"),
        )
    write_policy_eval(out, summary, samples, safe_samples)
    return summary


# The settings model of each stage: the part of its recipe section that the stage command takes
# as options (the rest says where its prompts come from).
STAGE_SETTINGS: dict[str, type[StageSettings]] = {
    "critique": CritiqueSettings,
    "sft": SftSettings,
    "label": LabelSettings,
    "pm": PmSettings,
    "dpo": DpoSettings,
    "ppo": RlSettings,
    "eval": EvalSettings,
}

# What a finished stage leaves behind: a stage marked done without it is done again.
STAGE_OUTPUT = {
    "critique": "records.jsonl",
    "sft": "model/cai_train.json",
    "label": "records.jsonl",
    "pm": "model/cai_train.json",
    "dpo": "model/cai_train.json",
    "ppo": "model/cai_train.json",
    "eval": "summary.json",
}

STAGES: dict[str, Callable[[RunContext, Any, Path], dict[str, Any]]] = {
    "critique": _critique,
    "sft": _sft,
    "label": _label,
    "pm": _pm,
    "dpo": _dpo,
    "ppo": _ppo,
    "eval": _eval,
}


def settings_key(stage: str, settings: StageSettings) -> str:
    """What a stage's settings contribute to its key; equal for equal settings however they were
    given (recipe section or command-line options)."""
    return content_hash(stage, settings.record())


def stage_key(
    recipe: Recipe, fingerprint: str, stage: str, upstream: list[str], extra: str | None = None
) -> str:
    section = getattr(recipe.stages, stage)
    model = STAGE_SETTINGS[stage]
    inputs = section.model_dump(mode="json", exclude=set(model.model_fields))
    own = settings_key(stage, settings_of(section, model))
    parts = [stage, own, inputs, recipe.models.model_dump(mode="json"), recipe.seed, fingerprint, upstream]
    return content_hash(*parts, *([extra] if extra is not None else []))


def _key_extra(recipe: Recipe, c: Constitution, stage: str) -> str | None:
    """Inputs of a stage that the constitution's fingerprint leaves out: distill mode's guidance
    template is found by name, not through the constitution's `templates:`, so editing it must
    still rerun the stage."""
    section = getattr(recipe.stages, stage)
    if stage == "critique" and getattr(section, "mode", None) == "distill":
        from cai.stages.critique import distill_guidance

        return content_hash(distill_guidance(c))
    return None


def run_recipe(recipe: Recipe, base: Path, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run every enabled stage; returns {stage: summary}.

    One `cai run` per run folder: the folder's lock is held for the whole run."""
    from cai.io.lock import FolderLock

    with FolderLock(out):
        return _run_stages(recipe, base, out, quiet)


def _run_stages(recipe: Recipe, base: Path, out: Path, quiet: bool) -> dict[str, Any]:
    const_ref = str(base / recipe.constitution) if (base / recipe.constitution).is_file() else recipe.constitution
    c = load_constitution(const_ref)
    log = RunLog(out / "log.txt", quiet)
    ctx = RunContext(recipe, base, out, c, quiet, log)
    write_json_atomic(out / "recipe.json", redact(recipe.model_dump()))
    summaries: dict[str, Any] = {}
    upstream: list[str] = []
    for stage in recipe.enabled():
        key = stage_key(recipe, c.fingerprint(), stage, upstream, extra=_key_extra(recipe, c, stage))
        upstream.append(key)
        d = out / stage
        ctx.dirs[stage] = d
        state_path = d / "stage.json"
        state = read_json_file(state_path, kind="stage state") if state_path.exists() else None
        if state and state.get("key") != key:
            aside = out / f"{stage}.old-{state.get('key', 'unknown')[:8]}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(d, aside)
            log(f"{stage}: inputs changed; previous output moved to {aside.name}")
            state = None
        if state and state.get("status") == "done" and not (d / STAGE_OUTPUT[stage]).exists():
            log(f"{stage}: marked done but {STAGE_OUTPUT[stage]} is missing; redoing it")
            state = None
        if state and state.get("status") == "done":
            log(f"{stage}: done already (key {key[:8]}), skipped")
            summaries[stage] = state.get("summary", {})
            continue
        d.mkdir(parents=True, exist_ok=True)
        log(f"{stage}: {'resuming' if state else 'starting'} (key {key[:8]})")
        write_json_atomic(state_path, {"stage": stage, "key": key, "status": "running"})
        t0 = time.perf_counter()
        summary = STAGES[stage](ctx, getattr(recipe.stages, stage), d)
        seconds = round(time.perf_counter() - t0, 1)
        write_json_atomic(
            state_path, {"stage": stage, "key": key, "status": "done", "seconds": seconds, "summary": redact(summary)}
        )
        log(f"{stage}: done in {seconds}s")
        summaries[stage] = summary
    write_json_atomic(out / "run_summary.json", redact(summaries))
    return summaries
