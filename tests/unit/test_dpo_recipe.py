"""DPO in recipes and reports, LoRA settings, and the soft DPO loss as a formula (no model).

The recipe rule: ``stages.dpo`` needs ``stages.label`` and replaces ``pm`` + ``ppo`` (both
together are refused, naming the fix); an adapter-only LoRA stage cannot feed a later stage.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from cai.errors import CaiError
from cai.run.pipeline import stage_key
from cai.run.recipe import load_recipe
from cai.run.registry import BUILTIN
from cai.train.settings import DpoSettings, PmSettings, RlSettings, SftSettings

BASE: dict[str, Any] = {
    "kind": "recipe",
    "name": "dpo-test",
    "models": {"policy": "fake", "judge": "fake"},
}


def _write(tmp_path: Path, stages: dict[str, Any]) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump({**BASE, "stages": stages}, sort_keys=False))
    return path


def _error(path: Path, sets: list[str] | None = None) -> str:
    with pytest.raises(CaiError) as e:
        load_recipe(path, sets)
    assert len(e.value.problems) == 1
    return str(e.value)


def test_a_dpo_recipe_loads_and_runs_dpo_after_label(tmp_path: Path) -> None:
    recipe, _ = load_recipe(_write(tmp_path, {"label": {"limit": 2}, "dpo": {"beta": 0.2, "lora_r": 4}}))
    assert recipe.enabled() == ["label", "dpo"]
    assert recipe.stages.dpo is not None and recipe.stages.dpo.beta == 0.2 and recipe.stages.dpo.lora
    assert BUILTIN["dpo"].settings is DpoSettings and BUILTIN["dpo"].replaces == ("pm", "ppo")
    key = stage_key(recipe, "fp", "dpo", ["k"])
    other, _ = load_recipe(tmp_path / "r.yaml", ["stages.dpo.beta=0.3"])
    assert stage_key(other, "fp", "dpo", ["k"]) != key


def test_the_shipped_dpo_recipe_is_valid() -> None:
    recipe, _ = load_recipe("quickstart-dpo")
    assert recipe.enabled() == ["critique", "sft", "label", "dpo", "eval"]


@pytest.mark.parametrize("other", ["pm", "ppo"])
def test_dpo_with_pm_or_ppo_is_refused_with_the_fix(tmp_path: Path, other: str) -> None:
    stages: dict[str, Any] = {"label": {"limit": 2}, "pm": {}, "dpo": {}}
    if other == "ppo":
        stages["ppo"] = {}
    msg = _error(_write(tmp_path, stages))
    assert "stages.dpo: replaces pm and ppo; remove stages.pm" in msg
    assert "--set stages.pm=null" in msg


def test_dpo_added_by_set_is_blamed_on_set_and_the_fix_works(tmp_path: Path) -> None:
    path = _write(tmp_path, {"label": {"limit": 2}, "pm": {}})
    assert _error(path, ["stages.dpo.beta=0.2"]).startswith("--set: stages.dpo: replaces pm and ppo")
    recipe, _ = load_recipe(path, ["stages.dpo.beta=0.2", "stages.pm=null"])
    assert recipe.enabled() == ["label", "dpo"]


def test_dpo_needs_label(tmp_path: Path) -> None:
    assert "stages.dpo: needs the label stage" in _error(_write(tmp_path, {"critique": {"limit": 2}, "dpo": {}}))


def test_an_adapter_only_stage_cannot_feed_a_later_stage(tmp_path: Path) -> None:
    stages = {"critique": {"limit": 2}, "sft": {"lora_r": 8, "lora_merge": False}, "label": {"limit": 2}}
    msg = _error(_write(tmp_path, stages))
    assert "stages.sft.lora_merge: false saves only an adapter, which label cannot load" in msg
    # The last training stage of a run may keep just its adapter.
    recipe, _ = load_recipe(_write(tmp_path, {"label": {"limit": 2}, "dpo": {"lora_r": 8, "lora_merge": False}}))
    assert recipe.stages.dpo is not None and not recipe.stages.dpo.lora_merge


@pytest.mark.parametrize("model", [SftSettings, PmSettings, DpoSettings, RlSettings])
def test_every_trainer_takes_the_same_lora_settings(model: type) -> None:
    s = model()
    assert not s.lora and s.lora_merge and "q_proj" in s.lora_target_modules and "report_to" in model.model_fields
    assert model(lora_r=0).lora is False and model(lora_r=8).lora is True
    with pytest.raises(ValueError, match="lora_r"):
        model(lora_r=-1)


def test_lora_config_follows_the_settings() -> None:
    pytest.importorskip("peft")
    from cai.train.lora import lora_config

    assert lora_config(SftSettings()) is None
    cfg = lora_config(DpoSettings(lora_r=4, lora_dropout=0.1, lora_target_modules=["q_proj", "v_proj"]))
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout, set(cfg.target_modules)) == (4, 8, 0.1, {"q_proj", "v_proj"})
    pm = lora_config(PmSettings(lora_r=2, lora_alpha=3.0), "SEQ_CLS")
    assert pm.lora_alpha == 3.0 and pm.modules_to_save is not None and "score" in pm.modules_to_save
    assert lora_config(SftSettings(lora_r=2, lora_target_modules=["all-linear"])).target_modules == "all-linear"


def test_soft_dpo_loss_is_the_cross_entropy_and_generalises_label_smoothing() -> None:
    import torch

    from cai.train.dpo import soft_dpo_loss

    h = torch.tensor([0.5, -2.0, 3.0])
    p = torch.tensor([0.9, 0.6, 1.0])
    beta = 0.3

    def log_sig(x: float) -> float:
        return -math.log1p(math.exp(-x))

    by_hand = [
        -(pi * log_sig(beta * hi) + (1 - pi) * log_sig(-beta * hi))
        for pi, hi in zip(p.tolist(), h.tolist(), strict=True)
    ]
    assert soft_dpo_loss(h, p, beta).tolist() == pytest.approx(by_hand, rel=1e-6)
    # p = 1: TRL's sigmoid loss; one p = 1 - eps for all: the conservative (label-smoothed) DPO.
    assert soft_dpo_loss(h, torch.ones(3), beta).tolist() == pytest.approx(
        (-torch.nn.functional.logsigmoid(beta * h)).tolist()
    )
    eps = 0.1
    smoothed = -(1 - eps) * torch.nn.functional.logsigmoid(beta * h) - eps * torch.nn.functional.logsigmoid(-beta * h)
    assert soft_dpo_loss(h, torch.full((3,), 1 - eps), beta).tolist() == pytest.approx(smoothed.tolist())


def test_the_report_shows_a_dpo_section(tmp_path: Path) -> None:
    from cai.run.report import build_report

    model = tmp_path / "dpo" / "model"
    model.mkdir(parents=True)
    summary = {"train_loss_first": 0.693, "train_loss_last": 0.4, "eval_accuracy": 0.75, "steps": 2}
    info = {"settings": {"loss": "soft (conservative DPO): …"}, "summary": summary}
    (model / "cai_train.json").write_text(json.dumps(info))
    rows = [{"step": 1, "loss": 0.693, "rewards/margins": 0.0}, {"step": 2, "loss": 0.4, "rewards/margins": 0.3}]
    (model / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report(tmp_path)
    assert "<h2>DPO</h2>" in page and "conservative DPO" in page and "DPO loss and margin curves" in page
    blob = json.loads(page.split("id='cai-data'>")[1].split("</script>")[0])
    assert blob["dpo"]["loss"] == [0.693, 0.4] and blob["dpo"]["eval_accuracy"] == 0.75
    assert blob["dpo"]["reward_margin"] == [0.0, 0.3]
