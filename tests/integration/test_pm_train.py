"""Preference-model training: it learns, it minimises the documented loss, it runs on 2 processes.

Learning is checked on the embedded model; the loss wiring and the multi-process run use a tiny
random model with the embedded tokenizer (the code paths are the same, the minutes are not).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import REPO, cai_env
from tests.rl_helpers import (
    BAD,
    GOOD,
    QUESTIONS,
    easy_pairs,
    tiny_policy,
    write_jsonl,
)

pytestmark = [pytest.mark.slow, pytest.mark.trl]


def _scores_by_own_forward(model: Any, tokenizer: Any, seqs: list[list[int]]) -> list[float]:
    """Score with the saved model's own `forward` (its pooling, its config's pad id)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    mask = torch.zeros_like(ids)
    for i, s in enumerate(seqs):
        ids[i, : len(s)], mask[i, : len(s)] = torch.tensor(s), 1
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()


def test_pm_learns_and_saves_a_sequence_classification_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from cai.models.spec import resolve_model_path
    from cai.train.common import changed_params
    from cai.train.pm import train_pm
    from cai.train.rl_common import PMScorer, encode_answer, encode_prompt
    from cai.train.settings import PmSettings
    from tests.train_helpers import snapshot_params

    rows = easy_pairs(QUESTIONS[:8])
    labels = write_jsonl(tmp_path / "labels" / "preferences.jsonl", rows).parent
    held = write_jsonl(tmp_path / "held.jsonl", easy_pairs(QUESTIONS[8:]))
    base = snapshot_params(
        AutoModelForCausalLM.from_pretrained(resolve_model_path("embedded", quiet=True), dtype=torch.float32)
    )
    out = tmp_path / "pm"

    s = train_pm(
        [str(labels)],
        "embedded",
        str(out),
        PmSettings(eval=[str(held)], lr=1e-4, batch_size=4, max_steps=3, max_length=64),
        seed=0,
        quiet=True,
    )

    print(
        f"\nPM held-out accuracy {s['eval_accuracy_before']} -> {s['eval_accuracy_after']}, "
        f"gap {s['eval_gap_before']} -> {s['eval_gap_after']}; loss "
        f"{s['train_loss_first']:.4f} -> {s['train_loss_last']:.4f}"
    )
    assert s["steps"] == 3 and s["params_changed"] is True
    assert s["rows"] == {
        "ai": 8,
        "human": 0,
        "soft": 8,
        "train": 8,
        "dropped_too_long": 0,
        "eval": 4,
        "eval_overlap_with_train": 0,
    }
    assert s["eval_accuracy_after"] == 1.0 and s["eval_gap_after"] > s["eval_gap_before"] + 1

    # An ordinary sequence-classification folder; chosen scores above rejected on the training
    # pairs when scored by the model's *own* forward, which agrees with PMScorer (the position
    # TRL's PPO reads), so the saved pad id and the scoring convention match.
    pm = AutoModelForSequenceClassification.from_pretrained(out, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(out)
    assert pm.config.num_labels == 1 and pm.config.pad_token_id == tok.pad_token_id
    assert tok.pad_token != tok.eos_token
    seqs = [encode_prompt(tok, r["prompt"]) + encode_answer(tok, text) for r in rows for text in (GOOD, BAD)]
    own = _scores_by_own_forward(pm, tok, seqs)
    assert all(c > r for c, r in zip(own[0::2], own[1::2], strict=True))
    assert PMScorer(pm, tok).score_ids(seqs) == pytest.approx(own, abs=1e-4)
    assert len(changed_params(base, snapshot_params(pm))) > len(base) // 2

    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["kind"] == "pm" and meta["settings"]["labels"] == "soft"
    assert meta["settings"]["loss"].startswith("soft: -(p*logsigmoid(r_c - r_r)")
    assert meta["data"][0]["rows"] == 8 and meta["eval"][0]["rows"] == 4
    assert meta["constitution_fingerprints"] == ["fp-test"]
    losses = [
        json.loads(line)["loss"]
        for line in (out / "metrics.jsonl").read_text().splitlines()
        if '"loss"' in line and "train_loss" not in line
    ]
    assert len(losses) == 3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", embedded_model_dir)


def test_the_trainer_minimises_the_documented_soft_loss(tmp_path: Path, tiny: Path) -> None:
    """On a fixed batch, the loss the trainer computes is the hand-written soft cross-entropy
    of the model's own scores (and TRL's -logsigmoid(d) with --labels hard)."""
    from cai.train.common import load_tokenizer
    from cai.train.configs import reward_config
    from cai.train.pm import PrefRow, _build, encode_rows
    from cai.train.publish import TrainOutput
    from cai.train.rl_common import PMScorer, use_distinct_pad
    from cai.train.settings import PmSettings

    tok = load_tokenizer(str(tiny))
    use_distinct_pad(tok)
    prompt = [{"role": "user", "content": "q"}]
    rows = [
        PrefRow(prompt, "yes", "no", 0.9),
        PrefRow(prompt, "a longer reply", "b", 0.6),
        PrefRow(prompt, "ok", "nope, never", 1.0),
    ]
    settings = PmSettings(max_steps=1, lr=1e-3, batch_size=3, max_length=128)
    for soft in (True, False):
        examples, _ = encode_rows(tok, rows, 128, soft=soft)
        output = TrainOutput(tmp_path / f"o{soft}", "pm")
        trainer = _build(str(tiny), tok, examples, output, reward_config(output, settings, 0, True), True)
        batch = next(iter(trainer.get_train_dataloader()))  # what training really sees
        assert ("p_chosen" in batch) is soft and batch["input_ids"].shape[0] == 6
        loss = float(trainer.compute_loss(trainer.model, dict(batch)).detach())
        scorer = PMScorer(trainer.model.eval(), tok)
        # The batch holds all three pairs (in some order); the loss is their mean.
        chosen = scorer.score_ids([e["chosen_ids"] for e in examples])
        rejected = scorer.score_ids([e["rejected_ids"] for e in examples])
        ps = [r.p_chosen for r in rows] if soft else [1.0] * 3

        def log_sig(x: float) -> float:
            return -math.log1p(math.exp(-x))

        by_hand = (
            sum(-(p * log_sig(c - r) + (1 - p) * log_sig(r - c)) for p, c, r in zip(ps, chosen, rejected, strict=True))
            / 3
        )
        assert loss == pytest.approx(by_hand, rel=1e-4, abs=1e-5)


def test_pm_with_human_data_under_accelerate_two_cpu_processes(tmp_path: Path, tiny: Path) -> None:
    labels = write_jsonl(tmp_path / "labels" / "preferences.jsonl", easy_pairs(QUESTIONS[:8])).parent
    held = write_jsonl(tmp_path / "held.jsonl", easy_pairs(QUESTIONS[8:]))
    out = tmp_path / "pm"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate" / "cpu_2proc.yaml"),
        "-m",
        "cai.cli",
        "train",
        "pm",
        "--data",
        str(labels),
        "--model",
        str(tiny),
        "--human",
        str(REPO / "data" / "judge_dev.jsonl"),
        "--eval",
        str(held),
        "--out",
        str(out),
        "--labels",
        "hard",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--max-length",
        "160",
        "--lr",
        "1e-3",
        "--quiet",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=cai_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"train_loss_first"') == 1  # printed by rank 0 only
    s = json.loads(proc.stdout[proc.stdout.index("{") :])
    assert s["steps"] == 1 and s["params_changed"] is True
    n_human = len((REPO / "data" / "judge_dev.jsonl").read_text().splitlines())
    assert s["rows"]["ai"] == 8 and s["rows"]["human"] == n_human and s["rows"]["soft"] == 8
    assert s["rows"]["train"] == 8 + n_human - s["rows"]["dropped_too_long"] > 8
    assert s["eval_accuracy_before"] is not None and s["eval_accuracy_after"] is not None
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [m for m in metrics if "loss" in m]
    # 2 processes x 2 pairs per step: an epoch is ceil(train / 4) steps, one of them done.
    assert len(train_logs) == 1
    assert train_logs[0]["epoch"] == pytest.approx(1 / math.ceil(s["rows"]["train"] / 4))
    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["settings"]["labels"] == "hard" and meta["human"][0]["rows"] == n_human
    assert (out / "model.safetensors").is_file()
