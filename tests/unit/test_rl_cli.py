"""The PM / RL / eval commands from the outside: wiring, light imports, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cai_env, run_cai


def test_importing_the_commands_loads_no_torch() -> None:
    code = (
        "import sys, cai.cli.app; cai.cli.app.build_app(); "
        "print(any(m in sys.modules for m in ('torch', 'trl', 'transformers')))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=cai_env(), timeout=60
    )
    assert proc.stdout.strip() == "False", proc.stderr


def test_cai_exposes_train_pm_train_ppo_and_eval_policy() -> None:
    for args, needle in (
        (("train", "pm", "--help"), "--labels"),
        (("train", "ppo", "--help"), "--kl-coef"),
        (("eval", "policy", "--help"), "--baseline"),
    ):
        proc = run_cai(*args, timeout=60)
        assert proc.returncode == 0 and needle in proc.stdout, (args, proc.stderr[-500:])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["train", "pm", "--data", "{tmp}/none", "--out", "{tmp}/o"], "--data: no such file"),
        (
            ["train", "pm", "--data", "{tmp}/none", "--out", "{tmp}/o", "--labels", "fuzzy"],
            "--labels: Input should be 'soft' or 'hard'",
        ),
        (
            [
                "train",
                "ppo",
                "--policy",
                "embedded",
                "--pm",
                "{tmp}",
                "--prompts",
                "red-team",
                "--out",
                "{tmp}/o",
            ],
            "--pm: not a model folder (no config.json)",
        ),
        (
            [
                "train",
                "ppo",
                "--policy",
                "embedded",
                "--pm",
                "{tmp}",
                "--prompts",
                "red-team",
                "--out",
                "{tmp}/o",
                "--algorithm",
                "grpo",
                "--batch-size",
                "3",
            ],
            "--batch-size: must be a multiple of num_generations 4",
        ),
    ],
)
def test_user_errors_exit_2_with_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_cai(*[a.format(tmp=tmp_path) for a in args], timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and needle in lines[0]


def test_ppo_refuses_a_pm_with_another_tokenizer(tmp_path: Path, embedded_model_dir: Path) -> None:
    """Checked before any model loads: TRL's PPO would feed the PM ids it cannot read."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pm = tmp_path / "pm"
    other = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "</s>": 2}, unk_token="<unk>"))
    other.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(
        tokenizer_object=other, unk_token="<unk>", eos_token="</s>"
    ).save_pretrained(pm)
    (pm / "config.json").write_text(
        json.dumps(
            {"architectures": ["LlamaForSequenceClassification"], "id2label": {"0": "LABEL_0"}}
        )
    )
    proc = run_cai(
        "train",
        "ppo",
        "--policy",
        "embedded",
        "--pm",
        str(pm),
        "--prompts",
        "red-team",
        "--out",
        str(tmp_path / "out"),
        timeout=120,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert (
        len(lines) == 1
        and "tokenizer: the PM's vocabulary differs from the policy's" in lines[0]
        and "cai train pm --model POLICY" in lines[0]
    )
    assert not (tmp_path / "out").exists()
