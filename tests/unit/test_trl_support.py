"""Which trainers the installed TRL offers, and what cai says when one is missing.

These run on both CI stacks (newest TRL, and TRL 1.12 for PPO): a TRL that cai claims to support
but that lacks a trainer a code path needs fails here, not minutes into a user's run.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.version import Version

from cai.train.trl_support import has_ppo, trl_version
from tests.helpers import REPO, invoke

pytestmark = pytest.mark.trl


def test_ppo_is_offered_exactly_where_trl_still_has_it() -> None:
    installed = trl_version()
    assert installed is not None and Version(installed) >= Version("1.0")  # pyproject: trl>=1.0
    assert has_ppo() == (Version(installed) < Version("1.13")), installed


def test_every_supported_trl_has_the_trainers_and_fields_cai_builds() -> None:
    """RLOO/GRPO (the RL stage everywhere), DPO, reward and SFT trainers, with the config fields
    `cai.train.configs` sets on them."""
    import dataclasses

    import trl

    for name in ("SFTTrainer", "RewardTrainer", "DPOTrainer", "RLOOTrainer", "GRPOTrainer"):
        assert hasattr(trl, name), name
    for config, fields in (
        (trl.RLOOConfig, {"beta", "num_generations", "max_completion_length", "temperature", "model_init_kwargs"}),
        (trl.GRPOConfig, {"beta", "num_generations", "max_completion_length", "temperature", "model_init_kwargs"}),
        (trl.DPOConfig, {"beta", "loss_type", "precompute_ref_log_probs", "max_length"}),
    ):
        assert fields <= {f.name for f in dataclasses.fields(config)}, config.__name__


@pytest.mark.ppo
def test_ppo_stack_imports_ppo_and_accepts_it_in_settings() -> None:
    from cai.train.configs import import_ppo
    from cai.train.settings import RlSettings

    config_cls, trainer_cls = import_ppo()
    assert config_cls.__name__ == "PPOConfig" and trainer_cls.__name__ == "PPOTrainer"
    assert RlSettings(algorithm="ppo", batch_size=4, mini_batch=2).algorithm == "ppo"


@pytest.mark.usefixtures("pretend_no_ppo")
def test_train_ppo_without_ppo_is_one_line_naming_the_extra_and_the_alternatives(tmp_path: Path) -> None:
    # A --pm that does not exist: were the algorithm checked after it, that error would show.
    out = tmp_path / "o"
    res = invoke(
        "train", "ppo", "--policy", "embedded", "--pm", str(tmp_path / "no-pm"), "--prompts", "red-team",
        "--out", str(out), "--algorithm", "ppo",
    )  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.code == 2 and len(lines) == 1, res.stderr
    assert lines[0].startswith("--algorithm: TRL ") and "has no PPOTrainer" in lines[0]
    assert "pip install 'cai[ppo]'" in lines[0] and "rloo or grpo" in lines[0]
    assert not out.exists()


@pytest.mark.usefixtures("pretend_no_ppo")
def test_a_recipe_asking_for_ppo_is_refused_at_validation(tmp_path: Path) -> None:
    text = (REPO / "recipes" / "quickstart.yaml").read_text()
    assert text.count("\n    algorithm: rloo\n") == 1
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text.replace("\n    algorithm: rloo\n", "\n    algorithm: ppo\n"))
    line = recipe.read_text().splitlines().index("    algorithm: ppo") + 1
    for args in (("validate", str(recipe)), ("run", str(recipe), "--out", str(tmp_path / "run"))):
        res = invoke(*args)
        assert res.code == 2, res.stderr
        assert f"{recipe}:{line}: stages.ppo.algorithm: TRL " in res.stderr and "cai[ppo]" in res.stderr
    assert not (tmp_path / "run").exists()


def test_the_shipped_recipes_and_defaults_need_no_ppo() -> None:
    """The README's first command installs the newest TRL: nothing shipped may ask for PPO."""
    from cai.train.settings import RlSettings

    assert RlSettings().algorithm in ("rloo", "grpo")
    import yaml

    for recipe in sorted((REPO / "recipes").glob("*.yaml")):
        rl = (yaml.safe_load(recipe.read_text())["stages"].get("ppo")) or {}
        assert rl.get("algorithm", "rloo") in ("rloo", "grpo"), recipe.name
