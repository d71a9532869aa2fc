"""Recipes: one YAML file that drives every stage of a run.

Defaults (the field defaults below) < the recipe file < ``--set key=value`` on the command line.
Unknown keys are errors, at any depth, with the file and line. A stage section is the stage's
settings model (`cai.stages.settings`, `cai.train.settings`), so its keys, defaults and ranges are
the stage command's options (with ``_`` for ``-``).

The schema's `stages` sections are the stage registry's (`cai.run.registry`): one optional
section per registered stage, in run order. Which stages may go together (`check_stages`, run on
every load), from each stage's descriptor:
* each stage needs the one it reads (`needs`): sft ← critique, pm ← label, ppo ← pm, dpo ← label;
* a stage that *replaces* others (dpo replaces pm + ppo: it trains the policy on the labels
  directly) is refused beside them rather than one being silently skipped;
* a LoRA stage that saves only its adapter (``lora_merge: false``) cannot feed a later stage that
  loads its model (`reads_models`), which needs a full model folder;
* a stage's own `rule` (label: revision pairs need a critique stage in revise mode).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import Field, ValidationError, create_model, field_validator

from cai.constitution.schema import Strict, problems_from_validation
from cai.errors import CaiError, Problem, did_you_mean, fail, option_error
from cai.io.yamlio import YamlDoc, load_yaml
from cai.paths import DEFAULT_CONSTITUTION, plain_name
from cai.run.registry import BUILTIN, PromptSet, StageRegistry, current_stages
from cai.run.sections import Models
from cai.stages.settings import Seed


class RecipeBase(Seed):
    kind: Literal["recipe"]
    name: str = Field(min_length=1)
    description: str = ""
    constitution: str = Field(DEFAULT_CONSTITUTION, description="Constitution name or path (relative to the recipe).")
    models: Models = Field(default_factory=Models)
    gate: Literal["warn", "stop", "off"] = Field(
        "warn",
        description="Before a stage trains on the labels (pm, dpo) or against the PM (ppo): when the label "
        "method's measured agreement with people or the PM's held-out accuracy is near chance, warn (and go on), "
        "stop the run there (exit 2), or off: do not look (`cai.run.gate`).",
    )
    registry: ClassVar[StageRegistry]
    stages: Any

    @field_validator("gate", mode="before")
    @classmethod
    def _off_is_off(cls, v: Any) -> Any:
        """YAML reads a bare ``off`` as false: that is the word the user wrote."""
        return "off" if v is False else v

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        """The name is the folder under ``runs/`` a run writes to without ``--out``: it must not
        climb out of it (``../x``) or replace it (an absolute path)."""
        return plain_name(v)

    def enabled(self) -> list[str]:
        return [s.name for s in self.registry if getattr(self.stages, s.name) is not None]

    def sections(self) -> dict[str, Any]:
        """Each registered stage's section, None where the recipe leaves the stage out."""
        return {s.name: getattr(self.stages, s.name) for s in self.registry}


@functools.cache
def recipe_model(registry: StageRegistry) -> type[RecipeBase]:
    """The recipe schema of a stage registry: one optional `stages` section per stage."""
    fields: dict[str, Any] = {s.name: (s.section | None, None) for s in registry}
    stages = create_model("Stages", __base__=Strict, **fields)
    model = create_model("Recipe", __base__=RecipeBase, stages=(stages, ...))
    model.registry = registry
    return model


# The schema of the built-in stages; `recipe_model(current_stages())` is the one in force.
Recipe = recipe_model(BUILTIN)
Stages = Recipe.model_fields["stages"].annotation


def _coerce(value: str, key: str) -> Any:
    """`--set` values are YAML scalars/flow collections: 3, 0.5, true, [0.4, 0.6], text. What a
    YAML file may not hold (control characters, numbers too long to read) is refused here too."""
    from cai.io.yamlio import non_printable

    odd = non_printable(value)
    if odd is not None:
        raise option_error("--set", f"control character {odd[2]} in the value", value=key)
    try:
        return yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError:
        return value
    except ValueError:  # an integer of thousands of digits
        raise option_error("--set", "a number too long to read (more than 4300 digits)", value=key) from None


def apply_sets(data: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """Apply dotted `key=value` overrides (e.g. ``stages.critique.limit=8``)."""
    out = _deep_copy(data)
    for item in sets:
        if "=" not in item:
            raise option_error("--set", "expected key=value (e.g. stages.critique.limit=8)", value=item)
        key, value = item.split("=", 1)
        parts = key.strip().split(".")
        node = out
        for p in parts[:-1]:
            if node.get(p) is None:
                node[p] = {}
            if not isinstance(node[p], dict):
                raise option_error("--set", f"{p!r} is not a mapping", value=key)
            node = node[p]
        node[parts[-1]] = _coerce(value, key.strip())
    return out


def _deep_copy(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _deep_copy(v) for k, v in d.items()}
    if isinstance(d, list):
        return [_deep_copy(v) for v in d]
    return d


def load_recipe(path: str | Path, sets: list[str] | None = None) -> tuple[RecipeBase, Path]:
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


def _load(path: str | Path, sets: list[str] | None = None) -> tuple[RecipeBase, Path, YamlDoc]:
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
    model = recipe_model(current_stages())
    try:
        recipe = model.model_validate(data)
    except ValidationError as err:
        problems = problems_from_validation(YamlDoc(str(p), data, doc.lines), err, model)
        for prob in problems:
            if sets and _from_set(prob.field, sets):
                prob.path, prob.line = "--set", None
        raise CaiError(problems) from None
    if not recipe.enabled():
        names = ", ".join(model.registry.names())
        raise fail(str(p), doc.line(("stages",)), "stages", f"no stage enabled (any of {names})")
    try:
        check_stages(recipe, str(p), doc)
    except CaiError as err:
        for prob in err.problems:
            if sets and _from_set(prob.field, sets):
                prob.path, prob.line = "--set", None
        raise
    return recipe, p.resolve().parent, YamlDoc(str(p), data, doc.lines)


def check_stages(recipe: RecipeBase, path: str, doc: YamlDoc) -> None:
    """The rules of the module docstring; the first broken one is a one-line error."""
    on = set(recipe.enabled())
    sections = recipe.sections()

    def refuse(stage: str, key: str, message: str) -> None:
        loc = ("stages", stage, key) if key else ("stages", stage)
        raise fail(path, doc.line(loc) or doc.line(("stages", stage)), ".".join(loc), message)

    for s in recipe.registry:
        if s.name in on and s.needs is not None and s.needs not in on:
            refuse(s.name, "", f"needs the {s.needs} stage in the same recipe")
    for s in recipe.registry:
        clash = sorted(on & set(s.replaces))
        if s.name in on and clash:
            refuse(
                s.name,
                "",
                f"replaces {' and '.join(s.replaces)}; remove stages.{' and stages.'.join(clash)} "
                f"(or --set {' --set '.join(f'stages.{c}=null' for c in clash)})",
            )
    for s in recipe.registry:
        cfg = sections[s.name]
        later = [r.name for r in recipe.registry if r.name in on and s.name in r.reads_models]
        if cfg is not None and getattr(cfg, "lora", False) and not cfg.lora_merge and later:
            refuse(s.name, "lora_merge", f"false saves only an adapter, which {later[0]} cannot load; set it true")
    for s in recipe.registry:
        broken = s.rule(sections) if s.rule is not None and s.name in on else None
        if broken is not None:
            refuse(s.name, *broken)


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
    for stage in current_stages():
        cfg = stages.get(stage.name)
        if isinstance(cfg, dict):
            for prompt_set in stage.prompt_sets:
                problems += _check_prompt_set(cfg, stage.name, prompt_set, base, doc)
    return problems


def _check_prompt_set(cfg: dict[str, Any], stage: str, ps: PromptSet, base: Path, doc: YamlDoc) -> list[Problem]:
    """One stage's prompt set exists, loads, and (when windowed) leaves rows after `skip`."""
    from cai.io.sources import SHIPPED, load_prompts
    from cai.stages.settings import is_off

    key, default, need_category, windowed = ps.key, ps.default, ps.need_category, ps.windowed
    prompts = cfg.get(key, default)
    if ps.used_when and not cfg.get(ps.used_when):
        return []  # read only when its switch is on (e.g. the plain-style prompts with `plain: N`)
    if not isinstance(prompts, str) or not prompts.strip() or (not windowed and is_off(prompts)):
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


def load_checked_recipe(path: str | Path, sets: list[str] | None = None) -> tuple[RecipeBase, Path]:
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
