"""The stage registry: a stage is one `Stage` entry, and `cai run`, the recipe schema, `cai validate`
and `cai report` all follow it. The toy stage here lives only in this test module and reaches
the CLI through `use_stages`, without any other module knowing it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from cai.run.context import RunContext
from cai.run.registry import BUILTIN, Stage, StageRegistry, current_stages, use_stages
from cai.run.report_html import RunView
from cai.stages.settings import StageSettings
from tests.helpers import invoke


class ToySettings(StageSettings):
    greeting: str = Field("hello", description="What the toy stage writes.")
    times: int = Field(2, ge=1, description="How often it writes it.")


def run_toy(ctx: RunContext, cfg: Any, out: Path) -> dict[str, Any]:
    text = " ".join([cfg.greeting] * cfg.times)
    (out / "toy.txt").write_text(text, encoding="utf-8")
    return {"chars": len(text), "seed": ctx.seed}


def toy_report(view: RunView) -> str:
    path = view.run / "toy" / "toy.txt"
    if not path.is_file():
        return ""
    view.data["toy"] = {"text": path.read_text(encoding="utf-8")}
    return f"<h2>Toy stage</h2><p>{view.data['toy']['text']}</p>"


TOY = Stage("toy", ToySettings, ToySettings, run_toy, "toy.txt", report=toy_report)
WITH_TOY = BUILTIN.with_stage(TOY, after="critique")


def _recipe(tmp_path: Path, stages: str) -> Path:
    path = tmp_path / "toy.yaml"
    path.write_text(f"kind: recipe\nname: toy\nseed: 7\nmodels: {{policy: fake, judge: fake}}\nstages:\n{stages}")
    return path


def test_a_registered_stage_runs_through_cai_run_and_cai_report(tmp_path: Path) -> None:
    recipe, out = _recipe(tmp_path, "  toy: {greeting: hi, times: 3}\n"), tmp_path / "run"
    with use_stages(WITH_TOY):
        first = invoke("run", str(recipe), "--out", str(out), "--quiet")
        assert first.code == 0, first.stderr
        assert (out / "toy" / "toy.txt").read_text() == "hi hi hi"
        state = json.loads((out / "toy" / "stage.json").read_text())
        assert state["status"] == "done" and state["summary"] == {"chars": 8, "seed": 7}
        again = invoke("run", str(recipe), "--out", str(out), "--quiet")
        assert again.code == 0 and "toy: done already" in (out / "log.txt").read_text()
        # A changed setting changes the stage key: the old output is moved aside, the stage redone.
        changed = invoke("run", str(recipe), "--out", str(out), "--quiet", "--set", "stages.toy.times=1")
        assert changed.code == 0 and (out / "toy" / "toy.txt").read_text() == "hi"
        assert any(p.name.startswith("toy.old-") for p in out.iterdir())
        report = invoke("report", str(out))
        assert report.code == 0, report.stderr
    page = (out / "report.html").read_text()
    assert "<h2>Toy stage</h2><p>hi</p>" in page
    # Outside the block the built-in registry is back, and it knows no toy stage.
    assert current_stages() is BUILTIN
    refused = invoke("run", str(recipe), "--out", str(tmp_path / "other"), "--quiet")
    assert refused.code == 2 and "stages.toy" in refused.stderr and "Traceback" not in refused.stderr


def test_a_registered_stage_gets_the_recipe_checks(tmp_path: Path) -> None:
    needy = Stage("toy", ToySettings, ToySettings, run_toy, "toy.txt", needs="critique")
    with use_stages(BUILTIN.with_stage(needy)):
        typo = invoke("validate", str(_recipe(tmp_path, "  toy: {greting: hi}\n")))
        assert typo.code == 2 and "stages.toy.greting" in typo.stderr and "did you mean 'greeting'" in typo.stderr
        alone = invoke("validate", str(_recipe(tmp_path, "  toy: {}\n")))
        assert alone.code == 2 and "stages.toy: needs the critique stage in the same recipe" in alone.stderr
        low = invoke("validate", str(_recipe(tmp_path, "  toy: {times: 0}\n")))
        assert low.code == 2 and "stages.toy.times" in low.stderr


def test_the_builtin_order_and_rules_come_from_the_registry() -> None:
    assert BUILTIN.names() == ("critique", "sft", "label", "pm", "demo_pm", "dpo", "ppo", "eval")
    assert WITH_TOY.names()[:3] == ("critique", "toy", "sft")
    readers_of_sft = [s.name for s in BUILTIN if "sft" in s.reads_models]
    assert readers_of_sft == ["label", "pm", "demo_pm", "dpo", "ppo", "eval"]
    assert [s.name for s in BUILTIN if s.policy_label] == ["sft", "dpo", "ppo"]


@pytest.mark.parametrize(
    "stages, message",
    [
        ((TOY, TOY), "stage names repeat"),
        ((Stage("toy", ToySettings, ToySettings, run_toy, "toy.txt", needs="nowhere"),), "unknown stage nowhere"),
    ],
)
def test_a_broken_registry_is_refused(stages: tuple[Stage, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StageRegistry(stages)


def test_the_policy_a_stage_starts_from_and_the_one_a_run_ends_with(tmp_path: Path) -> None:
    """SL-CAI's model when the run trained one, else the recipe's; the run ends with its last policy."""
    from cai.constitution.load import load_constitution
    from cai.run.context import RunLog
    from cai.run.recipe import load_recipe

    recipe, base = load_recipe(_recipe(tmp_path, "  label: {method: rlcd}\n  dpo: {}\n  eval: {}\n"))
    ctx = RunContext(recipe, base, tmp_path, load_constitution("harmless"), True, RunLog(tmp_path / "l", True), BUILTIN)
    assert ctx.policy_spec() == ctx.final_policy_spec() == "fake"
    ctx.dirs.update(label=tmp_path / "label", dpo=tmp_path / "dpo")
    assert ctx.policy_spec() == "fake" and ctx.final_policy_spec() == str(tmp_path / "dpo" / "model")
    ctx.dirs["sft"] = tmp_path / "sft"
    assert ctx.policy_spec() == str(tmp_path / "sft" / "model")
    assert ctx.final_policy_spec() == str(tmp_path / "dpo" / "model")
