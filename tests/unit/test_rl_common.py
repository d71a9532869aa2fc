"""RL plumbing without training: PM folder checks, PM reward, metric names, settings.

The pad choice and tokenizer checks need the embedded tokenizer: tests/integration/test_rl_tokenizer.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cai.cli.options import build_settings
from cai.errors import CaiError
from cai.train.rl_common import (
    PMReward,
    check_pm_folder,
)
from cai.train.rl_metrics import normalize_metrics
from cai.train.settings import RlSettings


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        (None, "not a model folder (no config.json)"),
        (
            {"architectures": ["LlamaForCausalLM"]},
            "not a preference model (architectures: LlamaForCausalLM)",
        ),
        (
            {"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "a", "1": "b"}},
            "a PM has one output, this model has 2",
        ),
    ],
)
def test_pm_folder_is_checked(tmp_path: Path, config: dict[str, Any] | None, needle: str) -> None:
    folder = tmp_path / "pm"
    folder.mkdir()
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CaiError, match=needle.replace("(", "\\(").replace(")", "\\)")):
        check_pm_folder(str(folder))


class _Tok:
    eos_token_id = 2

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> dict[str, Any]:
        return {"input_ids": [1, len(messages[-1]["content"])]}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [7] * len(text)}


class _Scorer:
    """Scores a sequence by its length, and remembers what it was asked."""

    def __init__(self) -> None:
        self.tokenizer = _Tok()
        self.seen: list[list[int]] = []

    def score_ids(self, seqs: list[list[int]]) -> list[float]:
        self.seen.extend(list(s) for s in seqs)
        return [float(len(s)) for s in seqs]


def test_pm_reward_scores_the_policy_ids_and_penalises_missing_eos() -> None:
    scorer = _Scorer()
    reward = PMReward(scorer, missing_eos_penalty=1.5)  # type: ignore[arg-type]
    assert reward.__name__ == "pm"  # TRL names the metric rewards/pm/mean after it
    prompts = [[{"role": "user", "content": "abc"}]] * 2
    completions = [[{"role": "assistant", "content": "x"}]] * 2
    got = reward(prompts, completions, completion_ids=[[5, 6, 2], [5, 6, 6]], trainer_state=None)
    assert scorer.seen == [[1, 3, 5, 6, 2], [1, 3, 5, 6, 6]]  # prompt ids + the policy's ids
    assert got == [5.0, 5.0 - 1.5]  # the reply cut off before EOS pays the penalty
    # Without ids (text only) the replies are re-tokenised and end with EOS.
    assert PMReward(_Scorer(), None)(["abc"], ["xy"]) == [5.0]  # type: ignore[arg-type]


def test_trl_metric_names_map_to_one_documented_set() -> None:
    ppo = {
        "objective/scores": 0.5,
        "objective/rlhf_reward": 0.4,
        "objective/kl": 2.0,
        "policy/entropy_avg": 1.1,
        "objective/entropy": 9.0,
        "loss/value_avg": 0.3,
        "loss/policy_avg": 0.01,
        "policy/clipfrac_avg": 0.1,
    }
    assert normalize_metrics(ppo, "ppo") == {
        "reward": 0.5,
        "objective": 0.4,
        "kl": 2.0,
        "entropy": 1.1,
        "value_loss": 0.3,
        "policy_loss": 0.01,
        "clipfrac": 0.1,
    }
    grpo = {
        "rewards/pm/mean": 0.7,
        "reward": 0.7,
        "kl": 0.02,
        "entropy": 1.3,
        "loss": 0.0,
        "clip_ratio/region_mean": 0.05,
        "completions/mean_length": 12.0,
    }
    norm = normalize_metrics(grpo, "grpo")
    assert norm == {
        "reward": 0.7,
        "kl": 0.02,
        "entropy": 1.3,
        "policy_loss": 0.0,
        "clipfrac": 0.05,
        "completion_length": 12.0,
        "reward_parts": {"pm": 0.7},
    }
    # TRL's own `reward` (Σ w·r per reply, an unscored reward counted 0, before β·KL) wins over the
    # sum of per-function means, which leaves unscored replies out; neither trainer logs an objective.
    rloo = normalize_metrics({**grpo, "reward": 0.6}, "rloo")
    assert rloo["reward"] == 0.6 and "objective" not in rloo


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"algorithm": "dpo"}, "--algorithm: Input should be 'ppo', 'rloo' or 'grpo'"),
        ({"algorithm": "ppo", "batch_size": 6, "mini_batch": 4}, "--mini-batch: must divide batch_size 6"),
        (
            {"algorithm": "grpo", "batch_size": 6, "num_generations": 4},
            "--batch-size: must be a multiple of num_generations 4",
        ),
        ({"algorithm": "rloo", "num_generations": 1}, "--num-generations: Input should be greater than or equal to 2"),
        ({"kl_coef": -0.1}, "--kl-coef: Input should be greater than or equal to 0"),
        ({"total_episodes": 0}, "--total-episodes: Input should be greater than or equal to 1"),
    ],
)
@pytest.mark.usefixtures("pretend_ppo")
def test_impossible_rl_settings_name_their_flag(kwargs: dict[str, Any], needle: str) -> None:
    with pytest.raises(CaiError) as err:
        build_settings(RlSettings, kwargs)
    assert needle in str(err.value)
