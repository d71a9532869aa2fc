"""RL against a PM: PPO on the embedded model, RLOO and GRPO on a tiny one; GPU variants.

The PM here is untrained (a fresh head on the policy): these tests are about the machinery —
updates happen, the policy moves, the objective is r_PM − λ·KL, outputs are model folders —
not about what the policy learns (benchmarks/ppo_reward.py measures that).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.rl_helpers import (
    QUESTIONS,
    SYSTEM,
    tiny_policy,
    untrained_pm,
    write_jsonl,
)

pytestmark = [pytest.mark.slow, pytest.mark.trl]

NORMALISED = ("reward", "kl", "entropy", "clipfrac", "policy_loss")


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"id": f"q{i}", "prompt": [SYSTEM, {"role": "user", "content": q}]} for i, q in enumerate(QUESTIONS[:4])]
    return write_jsonl(tmp_path_factory.mktemp("prompts") / "prompts.jsonl", rows)


@pytest.fixture(scope="module")
def embedded_pm(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    return untrained_pm(embedded_model_dir, tmp_path_factory.mktemp("pm") / "pm")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    policy = tiny_policy(root / "policy", embedded_model_dir)
    return policy, untrained_pm(policy, root / "pm")


def _metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.ppo
def test_ppo_two_updates_change_the_embedded_policy(
    tmp_path: Path, prompts: Path, embedded_pm: Path, embedded_model_dir: Path
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cai.models.base import GenerationParams
    from cai.models.settings import open_backend
    from cai.train.common import changed_params
    from cai.train.rl import train_rl
    from cai.train.settings import RlSettings
    from tests.train_helpers import snapshot_params

    out = tmp_path / "ppo"
    s = train_rl(
        "embedded",
        str(embedded_pm),
        str(prompts),
        str(out),
        RlSettings(
            algorithm="ppo",
            total_episodes=4,
            batch_size=2,
            mini_batch=2,
            ppo_epochs=1,
            response_length=8,
            lr=1e-5,
            kl_coef=0.05,
        ),
        seed=0,
        quiet=True,
    )
    print(f"\nPPO reward {s['reward_first']} -> {s['reward_last']}, KL {s['kl_last']}")
    assert s["updates"] == 2 and s["params_changed"] is True

    rows = [r for r in _metrics(out) if "monitor" not in r]  # the collapse monitor's checks are rows of their own
    assert len(rows) == 2
    for row in rows:
        assert all(isinstance(row[k], float) for k in (*NORMALISED, "value_loss", "objective"))
        assert "objective/scores" in row["trl"]  # TRL's own names are kept
        # The PPO objective is the PM reward minus λ·KL (TRL sums the KL over the reply).
        assert row["objective"] == pytest.approx(row["reward"] - 0.05 * row["kl"], abs=1e-4)
        assert len(row["samples"]) == 2 and {"prompt", "completion", "pm_score", "finished"} <= set(row["samples"][0])

    base = AutoModelForCausalLM.from_pretrained(embedded_model_dir, dtype=torch.float32)
    trained = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert len(changed_params(snapshot_params(base), snapshot_params(trained))) > 100
    tok, base_tok = (
        AutoTokenizer.from_pretrained(out),
        AutoTokenizer.from_pretrained(embedded_model_dir),
    )
    assert tok.chat_template == base_tok.chat_template and tok.pad_token == base_tok.pad_token
    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["kind"] == "ppo" and meta["pm"] == str(embedded_pm.resolve())
    assert meta["settings"]["kl_coef"] == 0.05 and meta["summary"]["updates"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]

    # The trained folder is a model spec like any other.
    backend = open_backend(str(out))
    try:
        gen = backend.generate(
            [[{"role": "user", "content": "Hi"}]],
            GenerationParams(max_new_tokens=4, temperature=0.0),
        )
    finally:
        backend.close()
    assert gen[0].error is None and len(gen[0].texts) == 1


@pytest.mark.parametrize("lora_r", [None, 4], ids=["full", "lora"])
@pytest.mark.parametrize("algorithm", ["rloo", "grpo"])
def test_rloo_and_grpo_run_and_change_parameters(
    tmp_path: Path, prompts: Path, tiny: tuple[Path, Path], algorithm: str, lora_r: int | None
) -> None:
    """The maintained trainers, on every TRL: the PM scores the rollouts, KL to the reference is
    TRL's beta, reward and KL land in metrics.jsonl, and the saved policy differs from the start
    (with LoRA: the adapter merged into a plain model folder)."""
    import torch
    from transformers import AutoModelForCausalLM

    from cai.train.common import changed_params
    from cai.train.rl import train_rl
    from cai.train.settings import RlSettings
    from tests.train_helpers import snapshot_params

    policy, pm = tiny
    out = tmp_path / algorithm
    s = train_rl(
        str(policy),
        str(pm),
        str(prompts),
        str(out),
        RlSettings(
            algorithm=algorithm,
            total_episodes=4,
            batch_size=2,
            num_generations=2,
            response_length=8,
            lr=1e-3,
            kl_coef=0.05,
            lora_r=lora_r,
        ),
        seed=0,
        quiet=True,
    )
    assert s["updates"] == 2 and s["params_changed"] is True
    assert s["kl_unit"] == "per token" and s["value_loss_last"] is None  # no critic
    rows = [r for r in _metrics(out) if "reward" in r]
    assert len(rows) == 2 and all(isinstance(r[k], float) for r in rows for k in NORMALISED)
    assert all("rewards/pm/mean" in r["trl"] for r in rows)
    # What the report's RL section reads besides reward and KL: reply length and the EOS source.
    assert all(isinstance(r["completion_length"], float) and "completions/clipped_ratio" in r["trl"] for r in rows)
    before = snapshot_params(AutoModelForCausalLM.from_pretrained(policy, dtype=torch.float32))
    after = snapshot_params(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32))
    assert changed_params(before, after)
    assert json.loads((out / "cai_train.json").read_text())["kind"] == algorithm


@pytest.mark.parametrize("algorithm", [pytest.param("ppo", marks=pytest.mark.ppo), "rloo"])
def test_rl_under_accelerate_two_cpu_processes(
    tmp_path: Path, prompts: Path, tiny: tuple[Path, Path], algorithm: str
) -> None:
    """Two gloo processes, 2 rollouts each per update: the saved folder is the policy alone
    (for PPO not TRL's policy+value wrapper, which is what DDP would otherwise hand to save_model)."""
    import subprocess
    import sys

    from tests.helpers import REPO, cai_env

    policy, pm = tiny
    out = tmp_path / algorithm
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate" / "cpu_2proc.yaml"),
        "-m",
        "cai.cli",
        "train",
        "ppo",
        "--policy",
        str(policy),
        "--pm",
        str(pm),
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--total-episodes",
        "8",
        "--batch-size",
        "2",
        "--algorithm",
        algorithm,
        *(["--mini-batch", "1", "--ppo-epochs", "1"] if algorithm == "ppo" else ["--num-generations", "2"]),
        "--response-length",
        "8",
        "--lr",
        "1e-3",
        "--quiet",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=cai_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"updates"') == 1  # printed by rank 0 only
    s = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert s["updates"] == 2 and s["params_changed"] is True  # 8 episodes / (2 x 2) per update
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert len([r for r in _metrics(out) if "reward" in r and "kl" in r]) == 2  # one per update


@pytest.mark.gpu
@pytest.mark.ppo
def test_pm_training_and_a_ppo_step_on_cuda(tmp_path: Path, prompts: Path) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (PM and PPO in bf16 on the GPU)")
    from cai.train.pm import train_pm
    from cai.train.rl import train_rl
    from cai.train.settings import PmSettings, RlSettings
    from tests.rl_helpers import easy_pairs

    labels = write_jsonl(tmp_path / "labels" / "preferences.jsonl", easy_pairs(QUESTIONS[:8]))
    s = train_pm(
        [str(labels.parent)],
        "embedded",
        str(tmp_path / "pm"),
        PmSettings(lr=1e-4, batch_size=4, max_steps=4, max_length=64),
        quiet=True,
    )
    assert s["params_changed"] is True
    assert json.loads((tmp_path / "pm" / "cai_train.json").read_text())["settings"]["bf16"]
    r = train_rl(
        "embedded",
        str(tmp_path / "pm"),
        str(prompts),
        str(tmp_path / "ppo"),
        RlSettings(
            algorithm="ppo", total_episodes=8, batch_size=4, mini_batch=2, ppo_epochs=1, response_length=16, lr=1e-5
        ),
        quiet=True,
    )
    assert r["updates"] == 2 and r["params_changed"] is True
