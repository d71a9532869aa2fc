"""The PM / RL / eval commands from the outside (in-process): wiring and one-line errors.

That importing them loads no torch is checked in a fresh interpreter, in
tests/integration/test_light_imports.py; the PM-tokenizer check needs the embedded tokenizer and
lives in tests/integration/test_rl_tokenizer.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import invoke


def test_cai_exposes_train_pm_train_ppo_and_eval_policy() -> None:
    for args, needle in (
        (("train", "pm", "--help"), "--labels"),
        (("train", "ppo", "--help"), "--kl-coef"),
        (("eval", "policy", "--help"), "--baseline"),
    ):
        proc = invoke(*args)
        assert proc.code == 0 and needle in proc.stdout, (args, proc.stderr[-500:])


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
                "{tmp}/policy",
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
                "{tmp}/policy",
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
    # A policy folder that resolves without loading anything (`embedded` would convert the model).
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy" / "config.json").write_text("{}")
    proc = invoke(*[a.format(tmp=tmp_path) for a in args])
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.code == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and needle in lines[0]
