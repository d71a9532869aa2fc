"""`cai run`: execute a recipe's stages in order, in one run folder, skipping finished work.

Each stage lives in ``RUN/<stage>/`` with a ``stage.json`` holding its *key* (the stage's
descriptor computes it, `Stage.key_parts`): a hash of its own settings, the run's models, seed and
constitution fingerprint, the keys of every stage before it, and a digest of the content of every
data file its section names (`cai.run.inputs`). A rerun skips a stage whose key matches and whose
status is ``done``; it resumes one that was interrupted (data stages pick up at the record level,
training stages start that stage again); and it moves a stage whose inputs changed aside to
``RUN/<stage>.old-<key>`` before redoing it, logging which part of the key moved (an edited file
by name). ``stage.json`` keeps each input's reference and digest, and a hash per key part.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.atomic import write_json_atomic
from cai.io.readers import read_json_file
from cai.io.store import content_hash
from cai.redact import redact
from cai.run.context import RunContext, RunLog, settings_of
from cai.run.gate import gate_before
from cai.run.inputs import InputDigests
from cai.run.recipe import RecipeBase
from cai.run.registry import settings_key

__all__ = ["RunContext", "RunLog", "run_recipe", "settings_key", "settings_of", "stage_key"]


def stage_key(
    recipe: RecipeBase,
    fingerprint: str,
    stage: str,
    upstream: list[str],
    extra: str | None = None,
    digests: dict[str, str] | None = None,
) -> str:
    """The stage's key (its descriptor computes it, `Stage.key_parts`)."""
    spec = recipe.registry[stage]
    return spec.key(spec.key_parts(recipe, fingerprint, upstream, digests, extra))


def run_recipe(recipe: RecipeBase, base: Path, out: Path, quiet: bool = False) -> dict[str, Any]:
    """Run every enabled stage; returns {stage: summary}.

    One `cai run` per run folder: the folder's lock is held for the whole run. What can fail
    without running a stage (each stage's `check`) is checked before the folder is made."""
    from cai.io.lock import FolderLock

    const_ref = str(base / recipe.constitution) if (base / recipe.constitution).is_file() else recipe.constitution
    c = load_constitution(const_ref)
    for stage in recipe.enabled():
        check = recipe.registry[stage].check
        if check is not None:
            check(getattr(recipe.stages, stage), c)
    with FolderLock(out):
        return _run_stages(recipe, base, out, c, quiet)


def _run_stages(recipe: RecipeBase, base: Path, out: Path, c: Constitution, quiet: bool) -> dict[str, Any]:
    log = RunLog(out / "log.txt", quiet)
    ctx = RunContext(recipe, base, out, c, quiet, log, recipe.registry)
    digests = InputDigests(ctx.local)  # each input file read once for the whole run
    write_json_atomic(out / "recipe.json", redact(recipe.model_dump()))
    summaries: dict[str, Any] = {}
    upstream: list[str] = []
    for stage in recipe.enabled():
        spec = recipe.registry[stage]
        section = getattr(recipe.stages, stage)
        extra = spec.key_extra(section, c) if spec.key_extra is not None else None
        refs = spec.inputs(section)
        parts = spec.key_parts(recipe, c.fingerprint(), list(upstream), digests.of(refs), extra)
        key = spec.key(parts)
        upstream.append(key)
        d = out / stage
        state = _current_state(ctx, stage, key, parts, refs)
        if state and state.get("status") == "done":
            log(f"{stage}: done already (key {key[:8]}), skipped")
            summaries[stage] = state.get("summary", {})
            ctx.dirs[stage] = d
            continue
        gate_before(ctx, spec, recipe.gate)  # may end the run here, before the stage's folder is made
        d.mkdir(parents=True, exist_ok=True)
        log(f"{stage}: {'resuming' if state else 'starting'} (key {key[:8]})")
        provenance = {"key": key, "inputs": _provenance(parts, refs), "parts": _part_hashes(parts)}
        write_json_atomic(d / "stage.json", {"stage": stage, **provenance, "status": "running"})
        t0 = time.perf_counter()
        summary = spec.run(ctx, section, d)
        spec.summary.model_validate(summary)  # what later readers will expect of it, checked now
        ctx.dirs[stage] = d  # later stages read this one's output from here
        seconds = round(time.perf_counter() - t0, 1)
        done = {"stage": stage, **provenance, "status": "done", "seconds": seconds, "summary": redact(summary)}
        write_json_atomic(d / "stage.json", done)
        log(f"{stage}: done in {seconds}s")
        summaries[stage] = summary
    write_json_atomic(out / "run_summary.json", redact(summaries))
    return summaries


def _provenance(parts: dict[str, Any], refs: dict[str, str]) -> dict[str, dict[str, str]]:
    """Each input the stage read: what the recipe called it and the digest of its content."""
    digests = parts.get("inputs", {})
    return {name: {"ref": refs[name], "sha256": digests[name]} for name in refs}


def _part_hashes(parts: dict[str, Any]) -> dict[str, str]:
    """One hash per key part, kept in `stage.json` so that a rerun can say which part moved."""
    out = {name: content_hash(value) for name, value in parts.items() if name != "inputs"}
    out.update({f"input {name}": digest for name, digest in parts.get("inputs", {}).items()})
    return out


def _what_changed(old: dict[str, Any], parts: dict[str, Any], refs: dict[str, str]) -> str:
    """In words, which parts of the key differ from the finished run's (older folders lack the
    per-part record: then only "the key")."""
    before = old.get("parts")
    if not isinstance(before, dict):
        return "the key"
    now = _part_hashes(parts)
    changed = [name for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
    words = []
    for name in changed:
        if name.startswith("input "):
            label = name[len("input ") :]
            words.append(f"{label} ({refs[label]}) edited" if label in refs else f"{label} no longer read")
        elif name == "upstream":
            words.append("an earlier stage was redone")
        else:
            words.append(name)
    return ", ".join(words) or "the key"


def _current_state(ctx: RunContext, stage: str, key: str, parts: dict[str, Any], refs: dict[str, str]) -> Any:
    """The stage's state if it belongs to this key (else its folder is moved aside: None), and
    None too for a stage marked done whose output is gone."""
    d = ctx.out / stage
    state_path = d / "stage.json"
    state = read_json_file(state_path, kind="stage state") if state_path.exists() else None
    old_key = state.get("key") if state else None
    if state and old_key != key:
        aside = ctx.out / f"{stage}.old-{old_key[:8] if isinstance(old_key, str) and old_key else 'unknown'}"
        if aside.exists():
            shutil.rmtree(aside)
        os.replace(d, aside)
        ctx.log(f"{stage}: inputs changed ({_what_changed(state, parts, refs)}); previous output moved to {aside.name}")
        return None
    output = ctx.stages[stage].output
    if state and state.get("status") == "done" and not (d / output).exists():
        ctx.log(f"{stage}: marked done but {output} is missing; redoing it")
        return None
    return state
