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
from pathlib import Path
from typing import Any

from cai.constitution.load import load_constitution
from cai.io.atomic import write_json_atomic
from cai.io.readers import read_json_file
from cai.io.store import content_hash
from cai.redact import redact
from cai.run.context import RunContext, RunLog, settings_of
from cai.run.recipe import RecipeBase
from cai.stages.settings import StageSettings

__all__ = ["RunContext", "RunLog", "run_recipe", "settings_key", "settings_of", "stage_key"]


def settings_key(stage: str, settings: StageSettings) -> str:
    """What a stage's settings contribute to its key; equal for equal settings however they were
    given (recipe section or command-line options)."""
    return content_hash(stage, settings.record())


def stage_key(recipe: RecipeBase, fingerprint: str, stage: str, upstream: list[str], extra: str | None = None) -> str:
    section = getattr(recipe.stages, stage)
    model = recipe.registry[stage].settings
    inputs = section.model_dump(mode="json", exclude=set(model.model_fields))
    own = settings_key(stage, settings_of(section, model))
    parts = [stage, own, inputs, recipe.models.model_dump(mode="json"), recipe.seed, fingerprint, upstream]
    return content_hash(*parts, *([extra] if extra is not None else []))


def run_recipe(recipe: RecipeBase, base: Path, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run every enabled stage; returns {stage: summary}.

    One `cai run` per run folder: the folder's lock is held for the whole run."""
    from cai.io.lock import FolderLock

    with FolderLock(out):
        return _run_stages(recipe, base, out, quiet)


def _run_stages(recipe: RecipeBase, base: Path, out: Path, quiet: bool) -> dict[str, Any]:
    const_ref = str(base / recipe.constitution) if (base / recipe.constitution).is_file() else recipe.constitution
    c = load_constitution(const_ref)
    log = RunLog(out / "log.txt", quiet)
    ctx = RunContext(recipe, base, out, c, quiet, log, recipe.registry)
    write_json_atomic(out / "recipe.json", redact(recipe.model_dump()))
    summaries: dict[str, Any] = {}
    upstream: list[str] = []
    for stage in recipe.enabled():
        spec = recipe.registry[stage]
        section = getattr(recipe.stages, stage)
        extra = spec.key_extra(section, c) if spec.key_extra is not None else None
        key = stage_key(recipe, c.fingerprint(), stage, upstream, extra=extra)
        upstream.append(key)
        d = out / stage
        state_path = d / "stage.json"
        state = read_json_file(state_path, kind="stage state") if state_path.exists() else None
        if state and state.get("key") != key:
            aside = out / f"{stage}.old-{state.get('key', 'unknown')[:8]}"
            if aside.exists():
                shutil.rmtree(aside)
            os.replace(d, aside)
            log(f"{stage}: inputs changed; previous output moved to {aside.name}")
            state = None
        if state and state.get("status") == "done" and not (d / spec.output).exists():
            log(f"{stage}: marked done but {spec.output} is missing; redoing it")
            state = None
        if state and state.get("status") == "done":
            log(f"{stage}: done already (key {key[:8]}), skipped")
            summaries[stage] = state.get("summary", {})
            ctx.dirs[stage] = d
            continue
        d.mkdir(parents=True, exist_ok=True)
        log(f"{stage}: {'resuming' if state else 'starting'} (key {key[:8]})")
        write_json_atomic(state_path, {"stage": stage, "key": key, "status": "running"})
        t0 = time.perf_counter()
        summary = spec.run(ctx, section, d)
        spec.summary.model_validate(summary)  # what later readers will expect of it, checked now
        ctx.dirs[stage] = d  # later stages read this one's output from here
        seconds = round(time.perf_counter() - t0, 1)
        write_json_atomic(
            state_path, {"stage": stage, "key": key, "status": "done", "seconds": seconds, "summary": redact(summary)}
        )
        log(f"{stage}: done in {seconds}s")
        summaries[stage] = summary
    write_json_atomic(out / "run_summary.json", redact(summaries))
    return summaries
