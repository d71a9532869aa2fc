"""RLOO / GRPO with the rewards other than the PM alone, on the tiny model: direct RLAIF (a
scripted judge scores every reply under every principle), a weighted sum with the PM, and the
helpful mix. About the machinery (the policy moves, each principle's reward is logged, the
record says what rewarded it), not about what the policy learns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rl_helpers import QUESTIONS, SYSTEM, tiny_policy, untrained_pm, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.trl]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    policy = tiny_policy(root / "policy", embedded_model_dir)
    rows = [{"id": f"q{i}", "prompt": [SYSTEM, {"role": "user", "content": q}]} for i, q in enumerate(QUESTIONS[:4])]
    return policy, untrained_pm(policy, root / "pm"), write_jsonl(root / "prompts.jsonl", rows)


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize(
    ("algorithm", "reward", "helpful_ratio"),
    [("rloo", "direct", 0.0), ("grpo", "pm=1,direct=0.5", 0.5)],
    ids=["rloo-direct", "grpo-pm+direct-helpful"],
)
def test_direct_rlaif_trains_and_logs_each_principle(
    tmp_path: Path, tiny: tuple[Path, Path, Path], algorithm: str, reward: str, helpful_ratio: float
) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from cai.constitution.load import load_constitution
    from cai.models.fake import FakeBackend
    from cai.stages.direct_reward import DirectReward
    from cai.train.common import changed_params
    from cai.train.rl import train_rl
    from cai.train.settings import RlSettings
    from tests.train_helpers import snapshot_params

    policy, pm, prompts = tiny
    c = load_constitution("harmless-concise")
    judge = FakeBackend()  # hash-derived log-probabilities: different for every reply and guidance
    s = RlSettings(
        algorithm=algorithm,
        reward=reward,
        direct_beta=3.0,
        helpful_ratio=helpful_ratio,
        total_episodes=4,
        batch_size=2,
        num_generations=2,
        response_length=8,
        lr=1e-3,
    )
    out = tmp_path / "out"
    direct = DirectReward.build(c, judge, s) if "direct" in s.reward else None
    pm_folder = str(pm) if "pm" in s.reward else None  # a PM the reward does not use is refused
    summary = train_rl(str(policy), pm_folder, str(prompts), str(out), s, seed=0, quiet=True, direct=direct)
    assert summary["updates"] == 2 and summary["params_changed"] is True
    before = snapshot_params(AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32))
    after = snapshot_params(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32))
    assert changed_params(before, after)
    assert judge.calls > 0

    rows = [r for r in _metrics(out) if "reward_parts" in r]
    assert len(rows) == 2
    refs = [v.ref for v in c.comparison_principles]
    for r in rows:
        parts = r["reward_parts"]
        assert all(isinstance(parts[f"direct/{ref}"], float) for ref in refs)  # each principle, every step
        # direct = the mean over principles of beta * s (one batch, so the means commute)
        assert parts["direct"] == pytest.approx(sum(parts[f"direct/{ref}"] for ref in refs) / len(refs), rel=1e-4)
        weights = s.reward
        hand = sum(w * parts[name] for name, w in weights.items()) + parts.get("missing_eos", 0.0)
        # TRL's own weighted sum (its reward_weights applied) equals the hand sum of the parts: the
        # weights reached the trainer; every reply was scored, so nansum and the means agree.
        assert r["reward"] == r["trl"]["reward"] == pytest.approx(hand, rel=1e-5, abs=1e-6)
        assert all(isinstance(r[k], float) for k in ("kl", "completion_length"))  # what the report reads

    record = json.loads((out / "cai_train.json").read_text())
    rewards = record["rewards"]
    assert rewards["weights"] == s.reward and rewards["direct"]["principles"] == refs
    assert rewards["direct"]["beta"] == 3.0 and rewards["direct"]["judge"]["spec"] == "fake"
    if helpful_ratio:
        mix = record["helpful_mix"]
        assert mix["used"] == 4 and mix["share"] == 0.5 and summary["prompts"]["loaded"] == 8
        assert all(i.startswith("hp-") for i in mix["ids"])
    else:
        assert record["helpful_mix"] is None and record["pm"] is None
