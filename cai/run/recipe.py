"""Recipes: one YAML file that drives every stage of a run.

Defaults (the field defaults below) < the recipe file < ``--set key=value`` on the command line.
Unknown keys are errors, at any depth, with the file and line. A stage section is the stage's
settings model (`cai.stages.settings`, `cai.train.settings`), so its keys, defaults and ranges are
the stage command's options (with ``_`` for ``-``).

Which stages may go together (`check_stages`, run on every load):
* each stage needs the one it reads: sft ← critique, pm ← label, ppo ← pm, dpo ← label;
* ``dpo`` *replaces* ``pm`` + ``ppo`` (it trains the policy on the labels directly): a recipe
  with ``stages.dpo`` and either of them is refused rather than one being silently skipped;
* a LoRA stage that saves only its adapter (``lora_merge: false``) cannot feed a later stage,
  which loads a full model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator

from cai.constitution.schema import Strict, problems_from_validation
from cai.constitution.yamlio import YamlDoc, load_yaml
from cai.errors import CaiError, Problem, did_you_mean, fail
from cai.models.settings import DEFAULT_MODEL, BackendSettings
from cai.paths import DEFAULT_CONSTITUTION
from cai.stages.settings import CritiqueSettings, EvalSettings, LabelSettings, Seed, Window
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings

STAGE_ORDER = ("critique", "sft", "label", "pm", "dpo", "ppo", "eval")
NEEDS = {"sft": "critique", "pm": "label", "ppo": "pm", "dpo": "label"}
# The stages that load the model a training stage saves (sft's is the policy of every later one).
MODEL_READERS = {
    "sft": ("label", "pm", "dpo", "ppo", "eval"),
    "pm": ("ppo", "eval"),
    "dpo": ("eval",),
    "ppo": ("eval",),
}


def _parseable_spec(v: str | None) -> str | None:
    """A model spec must parse (``fake:nonsense`` is refused here, not when a stage opens it);
    nothing is loaded."""
    if v is not None:
        from cai.models.base import ModelSpecError
        from cai.models.spec import parse_spec

        try:
            parse_spec(v)
        except ModelSpecError as e:
            raise ValueError(str(e)) from None
    return v


class Models(BackendSettings):
    policy: str = Field(DEFAULT_MODEL, description="The helpful model that SL-CAI starts from (model spec).")
    judge: str = Field(DEFAULT_MODEL, description="The feedback model for labels and evaluation (model spec).")

    _specs = field_validator("policy", "judge")(_parseable_spec)


class PromptSlice(Window):
    prompts: str = Field("red-team", description="Prompt file, datasets folder or shipped set.")


# Each stage section is the stage's own settings model (the CLI's options are built from the same
# model), plus where its prompts come from.


class CritiqueStage(CritiqueSettings, PromptSlice):
    model: str | None = Field(
        None,
        description="Model that writes answers, critiques and revisions "
        "(default: models.policy, which is also the SFT base).",
    )

    _spec = field_validator("model")(_parseable_spec)


class SftStage(SftSettings):
    pass


class LabelStage(LabelSettings, PromptSlice):
    pass


class PmStage(PmSettings):
    pass


class DpoStage(DpoSettings):
    pass


class PpoStage(RlSettings, PromptSlice):
    pass


class EvalStage(EvalSettings, PromptSlice):
    pass


class Stages(Strict):
    critique: CritiqueStage | None = None
    sft: SftStage | None = None
    label: LabelStage | None = None
    pm: PmStage | None = None
    dpo: DpoStage | None = None
    ppo: PpoStage | None = None
    eval: EvalStage | None = None


class Recipe(Seed):
    kind: Literal["recipe"]
    name: str = Field(min_length=1)
    description: str = ""
    constitution: str = Field(DEFAULT_CONSTITUTION, description="Constitution name or path (relative to the recipe).")
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
    recipe, base, _ = _load(path, sets)
    return recipe, base


def _from_set(field: str, sets: list[str]) -> bool:
    """Did a ``--set key=value`` give (or add the key above) this field?"""
    for s in sets:
        key = s.split("=", 1)[0].strip()
        if key == field or key.startswith(field + ".") or field.startswith(key + "."):
            return True
    return False


def _load(path: str | Path, sets: list[str] | None = None) -> tuple[Recipe, Path, YamlDoc]:
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
            if sets and _from_set(prob.field, sets):
                prob.path, prob.line = "--set", None
        raise CaiError(problems) from None
    if not recipe.enabled():
        raise fail(str(p), doc.line(("stages",)), "stages", f"no stage enabled (any of {', '.join(STAGE_ORDER)})")
    try:
        check_stages(recipe, str(p), doc)
    except CaiError as err:
        for prob in err.problems:
            if sets and _from_set(prob.field, sets):
                prob.path, prob.line = "--set", None
        raise
    return recipe, p.resolve().parent, YamlDoc(str(p), data, doc.lines)


def check_stages(recipe: Recipe, path: str, doc: YamlDoc) -> None:
    """The rules of the module docstring; the first broken one is a one-line error."""
    on = set(recipe.enabled())

    def refuse(stage: str, key: str, message: str) -> None:
        loc = ("stages", stage, key) if key else ("stages", stage)
        raise fail(path, doc.line(loc) or doc.line(("stages", stage)), ".".join(loc), message)

    for stage, before in NEEDS.items():
        if stage in on and before not in on:
            refuse(stage, "", f"needs the {before} stage in the same recipe")
    clash = sorted(on & {"pm", "ppo"})
    if "dpo" in on and clash:
        refuse(
            "dpo",
            "",
            f"replaces pm and ppo; remove stages.{' and stages.'.join(clash)} "
            f"(or --set {' --set '.join(f'stages.{c}=null' for c in clash)})",
        )
    for stage, readers in MODEL_READERS.items():
        cfg = getattr(recipe.stages, stage)
        later = [r for r in readers if r in on]
        if cfg is not None and cfg.lora and not cfg.lora_merge and later:
            refuse(stage, "lora_merge", f"false saves only an adapter, which {later[0]} cannot load; set it true")
    crit, label = recipe.stages.critique, recipe.stages.label
    if crit is not None and label is not None and crit.mode == "distill" and label.method == "revision":
        refuse(
            "label",
            "method",
            "revision reads the critique stage's (first answer, revision) pairs; a distill critique "
            "stage has one answer per prompt (use rlcd or contrast, or critique mode revise)",
        )


PROMPT_STAGES = ("critique", "label", "ppo", "eval")
# Prompt sets a stage reads besides its `prompts`: (stage, key, default, rows need a category).
EXTRA_PROMPT_SETS = (("eval", "lookalike", "safe-lookalike", True),)


def check_inputs(data: dict[str, Any], base: Path, doc: YamlDoc) -> list[Problem]:
    """What a run would find wrong only once it got there, checked before any stage starts: the
    constitution loads and each stage's prompts are readable and leave something after `skip`.
    `data` is the recipe as a mapping (valid or not: every problem is reported at once)."""
    from cai.constitution.load import load_constitution

    problems: list[Problem] = []
    ref = data.get("constitution", DEFAULT_CONSTITUTION)
    if isinstance(ref, str):
        local = base / ref
        try:
            load_constitution(str(local) if local.is_file() else ref)
        except CaiError as e:
            p = e.problems[0]
            hint = p.hint or did_you_mean(ref, [])
            problems.append(Problem(doc.path, doc.line(("constitution",)), "constitution", p.message, hint))
    stages = data.get("stages") if isinstance(data.get("stages"), dict) else {}
    for stage in PROMPT_STAGES:
        cfg = stages.get(stage)
        if isinstance(cfg, dict):
            problems += _check_prompt_set(cfg, stage, "prompts", "red-team", False, base, doc)
    for stage, key, default, need_category in EXTRA_PROMPT_SETS:
        cfg = stages.get(stage)
        if isinstance(cfg, dict):
            problems += _check_prompt_set(cfg, stage, key, default, need_category, base, doc)
    return problems


def _check_prompt_set(
    cfg: dict[str, Any], stage: str, key: str, default: str, need_category: bool, base: Path, doc: YamlDoc
) -> list[Problem]:
    """One stage's prompt set `key` exists, loads, and (for `prompts`) leaves rows after `skip`."""
    from cai.io.sources import SHIPPED, load_prompts
    from cai.stages.settings import is_off

    prompts = cfg.get(key, default)
    if not isinstance(prompts, str) or not prompts.strip() or (key != "prompts" and is_off(prompts)):
        return []  # the schema checks the type and empty names; "none" turns an optional set off
    loc = ("stages", stage, key)
    path = base / prompts
    if not path.exists() and prompts not in SHIPPED:
        return [
            Problem(
                doc.path,
                doc.line(loc),
                ".".join(loc),
                f"no such file or folder: {prompts} (relative to the recipe; shipped sets: {', '.join(SHIPPED)})",
            )
        ]
    windowed = key == "prompts"
    skip, limit = (cfg.get("skip", 0), cfg.get("limit")) if windowed else (0, None)
    window = skip + limit if isinstance(skip, int) and isinstance(limit, int) and limit > 0 else None
    try:
        items = load_prompts(str(path) if path.exists() else prompts, limit=window, need_category=need_category)
    except CaiError as e:
        return e.problems
    if isinstance(skip, int) and skip >= len(items) > 0:
        loc = ("stages", stage, "skip")
        return [Problem(doc.path, doc.line(loc), ".".join(loc), f"{skip} leaves none of the {len(items)} prompts")]
    return []


def load_checked_recipe(path: str | Path, sets: list[str] | None = None) -> tuple[Recipe, Path]:
    """`load_recipe` plus everything `check_inputs` checks: what `cai run` does before any stage."""
    recipe, base, doc = _load(path, sets)
    problems = check_inputs(recipe.model_dump(mode="json"), base, doc)
    if problems:
        raise CaiError(problems)
    return recipe, base


def validate_recipe_file(path: Path) -> list[Problem]:
    """`cai validate` hook: schema, stage dependencies, model specs, dtype, clamp, and what a run
    reads first (the constitution, each stage's prompts); every problem in the file, not the first."""
    try:
        doc = load_yaml(path)
    except CaiError as e:
        return e.problems
    problems: list[Problem] = []
    try:
        load_recipe(path)
    except CaiError as e:
        problems += e.problems
    if isinstance(doc.data, dict):
        problems += check_inputs(doc.data, Path(path).resolve().parent, YamlDoc(str(path), doc.data, doc.lines))
    return problems
