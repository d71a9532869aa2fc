"""Recipes: one YAML file that drives every stage of a run.

Defaults (the field defaults below) < the recipe file < ``--set key=value`` on the command line.
Unknown keys are errors, at any depth, with the file and line. Stage settings use the same
names as the stage commands' options (with ``_`` for ``-``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError

from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.schema import Strict, problems_from_validation
from cai.yamlio import YamlDoc, load_yaml

STAGE_ORDER = ("critique", "sft", "label", "pm", "ppo", "eval")


class Models(Strict):
    policy: str = Field("embedded", description="The helpful model that SL-CAI starts from (model spec).")
    judge: str = Field("embedded", description="The feedback model for labels and evaluation (model spec).")
    base_url: str | None = Field(None, description="OpenAI-compatible endpoint for openai:<model> specs.")
    api_key_env: str | None = Field(None, description="Env var holding the API key.")
    dtype: str = Field("auto", description="auto, fp32, bf16 or fp16 for local models.")
    concurrency: int = Field(8, ge=1, description="Parallel requests to an API endpoint.")


class PromptSlice(Strict):
    prompts: str = Field("red-team", description="Prompt file, datasets folder or shipped set.")
    skip: int = Field(0, ge=0, description="Leave out the first N prompts (keeps stages' prompts disjoint).")
    limit: int | None = Field(None, ge=1, description="Use at most N prompts after skipping.")


class CritiqueStage(PromptSlice):
    model: str | None = Field(
        None,
        description="Model that writes answers, critiques and revisions "
        "(default: models.policy, which is also the SFT base).",
    )
    rounds: int | None = Field(None, ge=1, le=16, description="Rounds (default: the constitution's).")
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(160, ge=1)
    temperature: float = Field(0.7, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)


class SftStage(Strict):
    helpful: list[str] = Field([], description="Helpfulness `messages` data mixed in.")
    helpful_ratio: float = Field(0.0, ge=0, lt=1)
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    max_steps: int = Field(-1, description="-1: use epochs.")


class LabelStage(PromptSlice):
    responses_per_prompt: int = Field(2, ge=2)
    principles: Literal["one", "k", "all"] = "one"
    k: int = Field(4, ge=1)
    orders: Literal["both", "one"] = "both"
    cot: bool = False
    clamp: list[float] | None = Field(None, description="[lo, hi] for CoT probabilities, e.g. [0.4, 0.6].")
    fewshot: bool = True
    batch_size: int = Field(8, ge=1)
    max_new_tokens: int = Field(160, ge=1)
    temperature: float = Field(0.8, ge=0)
    max_failures: float = Field(0.2, ge=0, le=1)


class PmStage(Strict):
    labels: Literal["soft", "hard"] = "soft"
    human: list[str] = Field([], description="Human preference files mixed in (hard labels).")
    eval: list[str] = Field([], description="Held-out preference files for accuracy.")
    epochs: float = Field(1.0, gt=0)
    lr: float = Field(1e-5, gt=0)
    batch_size: int = Field(4, ge=1)
    max_length: int = Field(512, ge=16)
    max_steps: int = Field(-1)


class PpoStage(PromptSlice):
    algorithm: Literal["ppo", "rloo", "grpo"] = "ppo"
    kl_coef: float = Field(0.05, ge=0)
    total_episodes: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1, description="Rollouts per update.")
    mini_batch: int = Field(4, ge=1, description="PPO: rows per optimiser step (divides batch_size).")
    ppo_epochs: int = Field(4, ge=1, description="PPO: passes over each batch of rollouts.")
    num_generations: int = Field(4, ge=2, description="RLOO/GRPO: completions per prompt.")
    response_length: int = Field(48, ge=1)
    temperature: float = Field(0.7, gt=0, description="Rollout sampling temperature.")
    lr: float = Field(1e-6, gt=0)


class EvalStage(PromptSlice):
    max_new_tokens: int = Field(128, ge=1)


class Stages(Strict):
    critique: CritiqueStage | None = None
    sft: SftStage | None = None
    label: LabelStage | None = None
    pm: PmStage | None = None
    ppo: PpoStage | None = None
    eval: EvalStage | None = None


class Recipe(Strict):
    kind: Literal["recipe"]
    name: str = Field(min_length=1)
    description: str = ""
    constitution: str = Field("harmless", description="Constitution name or path (relative to the recipe).")
    seed: int = 0
    models: Models = Field(default_factory=Models)
    stages: Stages

    def enabled(self) -> list[str]:
        return [s for s in STAGE_ORDER if getattr(self.stages, s) is not None]


def _coerce(value: str) -> Any:
    """`--set` values are YAML scalars/flow collections: 3, 0.5, true, [0.4, 0.6], text."""
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply dotted `key=value` overrides (e.g. ``stages.critique.limit=8``)."""
    out = _deep_copy(data)
    for item in sets:
        if "=" not in item:
            raise fail("--set", None, item, "expected key=value (e.g. stages.critique.limit=8)")
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise fail("--set", None, key, f"{p!r} is not a mapping")
            node = node[p]
        node[parts[-1]] = _coerce(value)
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_recipe(path: str | Path, sets: list[str] | None = None) -> tuple[Recipe, Path]:
    """Parse and validate a recipe (with overrides); returns it and its folder."""
    p = Path(path)
    if not p.is_file():
        from cai.paths import data_dir

        shipped = data_dir("recipes") / f"{path}.yaml"
        if shipped.is_file():
            p = shipped
    doc = load_yaml(p)
    if not isinstance(doc.data, dict):
        raise fail(str(p), 1, "", "expected a mapping at the top of the file")
    data = apply_sets(doc.data, sets or [])
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        problems = problems_from_validation(YamlDoc(str(p), data, doc.lines), err, Recipe)
        for prob in problems:
            if sets and any(s.split("=", 1)[0].strip() == prob.field for s in sets):
                prob.path, prob.line = "--set", None
        raise CaiError(problems) from None
    if not recipe.enabled():
        raise fail(str(p), doc.line(("stages",)), "stages", f"no stage enabled (any of {', '.join(STAGE_ORDER)})")
    needs = {"sft": "critique", "pm": "label", "ppo": "pm"}
    for stage, before in needs.items():
        if getattr(recipe.stages, stage) is not None and getattr(recipe.stages, before) is None:
            raise fail(
                str(p), doc.line(("stages", stage)), f"stages.{stage}", f"needs the {before} stage in the same recipe"
            )
    return recipe, p.resolve().parent


def validate_recipe_file(path: Path) -> list[Problem]:
    """`cai validate` hook: schema, stage dependencies, and the constitution it names."""
    try:
        recipe, base = load_recipe(path)
        from cai.constitution import load_constitution

        ref = recipe.constitution
        local = base / ref
        try:
            load_constitution(str(local) if local.is_file() else ref)
        except CaiError as e:
            doc = load_yaml(path)
            p = e.problems[0]
            hint = p.hint or did_you_mean(ref, [])
            return [Problem(str(path), doc.line(("constitution",)), "constitution", p.message, hint)]
    except CaiError as e:
        return e.problems
    return []
