"""One home per setting: CLI options and recipe sections come from the stages' settings models,
and a recipe gives the same settings, stage key and outputs as the equivalent stage command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from cai.cli.app import build_app
from cai.cli.options import _help, build_settings, flag
from cai.errors import CaiError
from cai.run.pipeline import settings_key, settings_of, stage_key
from cai.run.recipe import Recipe, Stages, load_recipe
from cai.run.registry import BUILTIN
from cai.stages.settings import JudgeSettings, LabelSettings, Seed, StageSettings
from cai.train.settings import RlSettings

# Every stage command and the settings models it takes (checked against the commands below).
COMMANDS = {
    ("critique",): {"CritiqueSettings", "Window", "Seed", "BackendSettings"},
    ("try",): {"CritiqueSettings", "Seed", "BackendSettings"},
    ("label",): {"LabelSettings", "Window", "Seed", "BackendSettings"},
    ("judge-eval",): {"JudgeEvalSettings", "Window", "Seed", "BackendSettings"},
    ("train", "sft"): {"SftSettings", "Seed"},
    ("train", "pm"): {"PmSettings", "Seed"},
    ("train", "dpo"): {"DpoSettings", "Seed"},
    ("train", "ppo"): {"RlSettings", "Window", "Seed", "BackendSettings"},
    ("demo-pairs",): {"DemoPairsSettings", "Seed", "BackendSettings"},
    ("eval", "policy"): {"EvalSettings", "Window", "Seed", "BackendSettings"},
    ("eval", "decision"): {"DecisionSettings", "Seed", "BackendSettings"},
}


def _command(path: tuple[str, ...]) -> click.Command:
    cmd: Any = typer.main.get_command(build_app())
    for name in path:
        cmd = cmd.commands[name]
    return cmd


def _settings_models(cmd: click.Command) -> dict[str, type[BaseModel]]:
    return cmd.callback.settings_models  # type: ignore[union-attr]


def _all_settings_fields() -> set[str]:
    fields: set[str] = set()
    for path in COMMANDS:
        for model in _settings_models(_command(path)).values():
            fields |= set(model.model_fields)
    return fields


@pytest.mark.parametrize("path", list(COMMANDS), ids=" ".join)
def test_every_option_default_and_help_comes_from_its_settings_model(path: tuple[str, ...]) -> None:
    cmd = _command(path)
    models = _settings_models(cmd)
    assert {m.__name__ for m in models.values()} == COMMANDS[path]
    params = {p.name: p for p in cmd.params}
    excluded = cmd.callback.settings_excluded  # type: ignore[union-attr]
    for model in models.values():
        for name, field in model.model_fields.items():
            if name in excluded:
                assert name not in params
                continue
            p = params[name]
            assert flag(name) in p.opts, (name, p.opts)
            expected = None if isinstance(field.default, list | dict) else field.default
            assert p.default == expected, (path, name)
            assert p.help == _help(field) and field.description, (path, name)


def test_no_command_declares_a_settings_field_of_its_own() -> None:
    """A field of any settings model appears on a command only through that command's models:
    otherwise it would carry a second default."""
    every = _all_settings_fields()
    for path in COMMANDS:
        cmd = _command(path)
        mine = {n for m in _settings_models(cmd).values() for n in m.model_fields}
        own = {p.name for p in cmd.params} - mine
        assert not own & every, (path, own & every)


def test_recipe_sections_are_the_stage_settings_with_the_same_defaults() -> None:
    for spec in BUILTIN:
        stage, model = spec.name, spec.settings
        section = Stages.model_fields[stage].annotation.__args__[0]  # type: ignore[union-attr]
        assert section is spec.section and issubclass(section, model)
        for name, field in model.model_fields.items():
            assert section.model_fields[name].default == field.default, (stage, name)
    assert Recipe.model_fields["seed"].default == Seed.model_fields["seed"].default


def test_a_list_option_not_given_keeps_the_fields_own_default() -> None:
    from pydantic import Field

    class Files(StageSettings):
        files: list[str] = Field(["shipped.jsonl"], description="Files.")

    assert build_settings(Files, {"files": None}).files == ["shipped.jsonl"]
    assert build_settings(Files, {"files": ["mine.jsonl"]}).files == ["mine.jsonl"]


def test_cot_clamp_means_the_same_from_the_cli_and_from_a_recipe() -> None:
    """`--cot` alone clamps to 0.4–0.6 in both places (the CLI used to, recipes did not)."""
    assert build_settings(LabelSettings, {"cot": True}).bounds == (0.4, 0.6)
    assert LabelSettings(cot=True).bounds == (0.4, 0.6)
    assert build_settings(LabelSettings, {"cot": True, "clamp": "none"}).bounds is None
    assert build_settings(LabelSettings, {"clamp": "0.3,0.7"}).bounds == (0.3, 0.7)
    assert LabelSettings.model_validate({"clamp": [0.3, 0.7]}).bounds == (0.3, 0.7)
    assert JudgeSettings().bounds is None


@pytest.mark.parametrize(
    ("model", "values", "needle"),
    [
        (LabelSettings, {"clamp": "0.6,0.9"}, "--clamp: need 0 <= lo <= 0.5 <= hi <= 1"),
        (LabelSettings, {"clamp": "half"}, "--clamp: expected lo,hi"),
        (LabelSettings, {"beta": "fited"}, "--beta: expected a number > 0 or 'fitted', got 'fited'"),
        (LabelSettings, {"beta": "0"}, "--beta: expected a number > 0 or 'fitted', got '0'"),
        (LabelSettings, {"clamp": "0.9"}, "--clamp: expected lo,hi such as 0.4,0.6 or none, got '0.9'"),
        (
            LabelSettings,
            {"responses_per_prompt": 1},
            "--responses-per-prompt: Input should be greater than or equal to 2",
        ),
        (RlSettings, {"algorithm": "ppo", "batch_size": 6, "mini_batch": 4}, "--mini-batch: must divide batch_size 6"),
    ],
)
@pytest.mark.usefixtures("pretend_ppo")
def test_bad_values_name_their_flag(model: type[StageSettings], values: dict[str, Any], needle: str) -> None:
    with pytest.raises(CaiError) as e:
        build_settings(model, values)
    assert [str(p) for p in e.value.problems] == [needle] or needle in str(e.value)


# ---------------------------------------------------------------- a recipe vs the stage command

CRITIQUE = {"prompts": "red-team", "skip": 2, "limit": 5, "rounds": 2, "batch_size": 3, "max_new_tokens": 40}
LABEL = {"prompts": "red-team", "skip": 7, "limit": 4, "principles": "k", "k": 2, "batch_size": 2, "cot": True}


def _recipe(tmp_path: Path) -> Path:
    doc = {
        "kind": "recipe",
        "name": "equiv",
        "seed": 3,
        "models": {"policy": "fake", "judge": "fake"},
        "stages": {"critique": CRITIQUE, "label": LABEL},
    }
    path = tmp_path / "equiv.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _same_outputs(a: Path, b: Path, names: tuple[str, ...]) -> None:
    """Byte-equal files, and records equal but for how long each chunk took."""
    for name in names:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name

    def records(d: Path) -> list[dict[str, Any]]:
        rows = [json.loads(line) for line in (d / "records.jsonl").read_text().splitlines()]
        for r in rows:
            r["provenance"].pop("timing")
        return rows

    assert records(a) == records(b) and records(a)


def _flags(section: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in section.items():
        out += [flag(k)] if v is True else [flag(k), str(v)]
    return out


def _capture(monkeypatch: pytest.MonkeyPatch, module: str, name: str) -> dict[str, Any]:
    """Replace a stage function by one that records the settings it was given."""
    import importlib

    got: dict[str, Any] = {}
    mod = importlib.import_module(module)
    real = getattr(mod, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        got["settings"] = next(a for a in args if isinstance(a, StageSettings))
        got["seed"] = kwargs["seed"]
        return real(*args, **kwargs)

    monkeypatch.setattr(mod, name, spy)
    return got


def test_recipe_and_stage_commands_give_the_same_settings_keys_and_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe, _ = load_recipe(_recipe(tmp_path))
    run = CliRunner().invoke(
        build_app(), ["run", str(tmp_path / "equiv.yaml"), "--out", str(tmp_path / "run"), "-q", "--no-report"]
    )
    assert run.exit_code == 0, run.output

    crit = _capture(monkeypatch, "cai.stages.critique", "run_critique")
    out = tmp_path / "cmd-critique"
    args = ["critique", "--model", "fake", "--seed", "3", "--out", str(out), "-q", *_flags(CRITIQUE)]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    section = recipe.stages.critique
    assert crit["settings"] == settings_of(section, BUILTIN["critique"].settings) and crit["seed"] == recipe.seed
    assert settings_key("critique", crit["settings"]) == settings_key(
        "critique", settings_of(section, BUILTIN["critique"].settings)
    )
    _same_outputs(out, tmp_path / "run" / "critique", ("run.json", "sft.jsonl"))

    lab = _capture(monkeypatch, "cai.stages.label", "label_prompts")
    out = tmp_path / "cmd-label"
    args = ["label", "--policy", "fake", "--judge", "fake", "--seed", "3", "--out", str(out), "-q", *_flags(LABEL)]
    res = CliRunner().invoke(build_app(), args)
    assert res.exit_code == 0, res.output
    expected = settings_of(recipe.stages.label, LabelSettings)
    assert lab["settings"] == expected and lab["settings"].bounds == (0.4, 0.6)
    assert settings_key("label", lab["settings"]) == settings_key("label", expected)
    _same_outputs(out, tmp_path / "run" / "label", ("run.json", "preferences.jsonl"))


def test_a_bad_recipe_value_given_with_set_is_blamed_on_set(tmp_path: Path) -> None:
    with pytest.raises(CaiError) as e:
        load_recipe(_recipe(tmp_path), ["stages.label.clamp=[0.4]"])
    assert [str(p) for p in e.value.problems] == [
        "--set: stages.label.clamp: expected lo,hi such as 0.4,0.6 or none, got [0.4]"
    ]


def test_stage_key_changes_with_a_setting_and_not_with_how_it_was_written(tmp_path: Path) -> None:
    recipe, _ = load_recipe(_recipe(tmp_path))
    key = stage_key(recipe, "fp", "label", [])
    same, _ = load_recipe(_recipe(tmp_path), ["stages.label.k=2"])  # the value it already had
    other, _ = load_recipe(_recipe(tmp_path), ["stages.label.k=3"])
    assert stage_key(same, "fp", "label", []) == key
    assert stage_key(other, "fp", "label", []) != key
    state = json.dumps(recipe.stages.label.record())
    assert "cot_max_new_tokens" in state  # every setting of the stage is in what its key hashes
