"""`cai train dpo`: the loss is the documented soft DPO loss of the model's own log-probs, it takes
a `cai label` export as written, and it learns.

The loss wiring and the CLI use a tiny random model with the embedded tokenizer (same code paths,
seconds instead of minutes); learning is checked on the embedded model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import invoke
from tests.rl_helpers import QUESTIONS, easy_pairs, tiny_policy, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.trl]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", embedded_model_dir)


def answer_logps(model: Any, tokenizer: Any, prompt: list[dict[str, str]], answers: list[str]) -> list[float]:
    """log p(answer turn | prompt) by the model's own forward: the tokens the chat template adds
    after the generation prompt (answer + end of turn), summed."""
    import torch

    head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=True)
    out = []
    for a in answers:
        full = tokenizer.apply_chat_template(
            [*prompt, {"role": "assistant", "content": a}], tokenize=True, return_dict=True
        )["input_ids"]
        start = len(head["input_ids"])
        assert full[:start] == head["input_ids"]
        ids = torch.tensor([full])
        with torch.no_grad():
            logp = model(input_ids=ids).logits[0, :-1].double().log_softmax(-1)
        out.append(float(sum(logp[i - 1, full[i]] for i in range(start, len(full)))))
    return out


def test_the_trainer_minimises_the_documented_soft_dpo_loss(tmp_path: Path, tiny: Path) -> None:
    """On a fixed batch, after the policy has moved away from its reference, the trainer's loss is
    -(p·logσ(β·h) + (1-p)·logσ(-β·h)) of h computed by hand from the policy's and the reference's
    own log-probs; with p = 1 it is TRL's own sigmoid loss."""
    import torch
    from transformers import AutoModelForCausalLM

    from cai.train.common import load_tokenizer
    from cai.train.configs import dpo_config
    from cai.train.dpo import _build, to_dpo_rows
    from cai.train.pm import PrefRow
    from cai.train.publish import TrainOutput
    from cai.train.settings import DpoSettings

    tok = load_tokenizer(str(tiny))
    prompt = [{"role": "user", "content": "q"}]
    rows = [
        PrefRow(prompt, "yes", "no", 0.9),
        PrefRow(prompt, "a longer reply", "b", 0.6),
        PrefRow(prompt, "ok", "nope, never", 1.0),
    ]
    settings = DpoSettings(max_steps=1, batch_size=3, max_length=128, beta=0.5)
    output = TrainOutput(tmp_path / "o", "dpo")
    trainer = _build(
        str(tiny), tok, to_dpo_rows(rows, soft=True), [], output, dpo_config(output, settings, 0, True), settings
    )
    batch = next(iter(trainer.get_train_dataloader()))  # what training really sees
    assert batch["p_chosen"].shape == (3,) and batch["input_ids"].shape[0] == 6
    torch.manual_seed(1)
    with torch.no_grad():  # move the policy away from the reference, so h != 0
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    trainer.model.eval()
    soft = float(trainer.compute_loss(trainer.model, dict(batch)).detach())
    stock = float(trainer.compute_loss(trainer.model, {k: v for k, v in batch.items() if k != "p_chosen"}).detach())
    ones = {**batch, "p_chosen": torch.ones(3)}
    hard = float(trainer.compute_loss(trainer.model, ones).detach())

    ref = AutoModelForCausalLM.from_pretrained(str(tiny), dtype=torch.float32).eval()
    hs = []
    for r in rows:
        pc, pr = answer_logps(trainer.model, tok, r.prompt, [r.chosen, r.rejected])
        rc, rr = answer_logps(ref, tok, r.prompt, [r.chosen, r.rejected])
        hs.append((pc - rc) - (pr - rr))
    assert all(abs(h) > 1e-3 for h in hs)

    def log_sig(x: float) -> float:
        return -math.log1p(math.exp(-x))

    b = settings.beta
    by_hand = sum(
        -(r.p_chosen * log_sig(b * h) + (1 - r.p_chosen) * log_sig(-b * h)) for r, h in zip(rows, hs, strict=True)
    )
    assert soft == pytest.approx(by_hand / 3, rel=1e-4, abs=1e-5)
    sigmoid = sum(-log_sig(b * h) for h in hs) / 3
    assert hard == pytest.approx(sigmoid, rel=1e-4, abs=1e-5)
    assert stock == pytest.approx(hard, rel=1e-5, abs=1e-6)  # our h is TRL's h


def test_cli_trains_on_a_label_export_as_written(tmp_path: Path, tiny: Path) -> None:
    """`cai label` (fake judge) → `cai train dpo` on its folder: one line per fact, a model folder
    with its record, and the settings and soft loss in cai_train.json."""
    pairs = write_jsonl(
        tmp_path / "pairs.jsonl",
        [
            {"id": f"q{i}", "prompt": q, "chosen": "No, sorry.", "rejected": "Sure, here."}
            for i, q in enumerate(QUESTIONS[:4])
        ],
    )
    label = tmp_path / "label"
    res = invoke("label", "--judge", "fake", "--pairs", str(pairs), "--out", str(label), "--quiet")
    assert res.code == 0, res.stderr
    assert (label / "dataset").is_dir() and (label / "preferences.jsonl").is_file()
    out = tmp_path / "dpo"
    args = ["train", "dpo", "--model", str(tiny), "--data", str(label), "--out", str(out), "--quiet"]
    args += ["--max-steps", "2", "--batch-size", "2", "--max-length", "128", "--lr", "1e-3", "--report-to", "none"]
    res = invoke(*args)
    assert res.code == 0, res.stderr
    assert "trained 2 steps on" in res.stdout and "soft labels, beta 0.1" in res.stdout, res.stdout
    info = json.loads((out / "cai_train.json").read_text())
    assert info["kind"] == "dpo" and info["settings"]["loss"].startswith("soft (conservative DPO)")
    assert info["summary"]["params_changed"] is True and info["lora"] is None
    assert info["summary"]["rows"]["soft"] == info["summary"]["rows"]["ai"] > 0
    assert (out / "config.json").is_file() and (out / "metrics.jsonl").read_text().count('"loss"') >= 2


def test_dpo_learns_the_preferred_answer_on_the_embedded_model(tmp_path: Path) -> None:
    """A few steps on pairs whose chosen reply is always the refusal: the held-out implicit reward
    ranks it first, the training loss falls below log 2, and the folder loads as a causal LM."""
    from transformers import AutoModelForCausalLM

    from cai.train.dpo import train_dpo
    from cai.train.settings import DpoSettings

    labels = write_jsonl(tmp_path / "labels" / "preferences.jsonl", easy_pairs(QUESTIONS[:4])).parent
    held = write_jsonl(tmp_path / "held.jsonl", easy_pairs(QUESTIONS[8:10]))
    s = DpoSettings(max_steps=2, lr=2e-5, batch_size=2, max_length=64, beta=0.1, eval=[str(held)])
    summary = train_dpo([str(labels)], "embedded", str(tmp_path / "dpo"), s, quiet=True)
    assert summary["steps"] == 2 and summary["params_changed"] is True
    assert summary["train_loss_first"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert summary["train_loss_last"] < summary["train_loss_first"]
    assert summary["eval_accuracy"] == 1.0 and summary["eval_reward_margin"] > 0
    assert summary["eval_loss"] < math.log(2)
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "dpo"))


@pytest.mark.parametrize("lora_r", [None, 4], ids=["full", "lora"])
def test_the_soft_loss_trains_the_policy_towards_the_label(tmp_path: Path, tiny: Path, lora_r: int | None) -> None:
    """The same pairs labelled p = 0.9 and p = 0.1: both runs change parameters, and the held-out
    implicit reward ends on the side each label asks for. TRL's own loss ignores p, so only a
    gradient of the soft loss itself can pull the two runs apart (a loss value that is right
    while no gradient flows, as on TRL 1.15 before, fails here)."""
    from cai.train.dpo import train_dpo
    from cai.train.settings import DpoSettings

    margins = {}
    for p in (0.9, 0.1):
        pairs = easy_pairs(QUESTIONS[:4], p=p)
        labels = write_jsonl(tmp_path / f"p{p}" / "labels" / "preferences.jsonl", pairs).parent
        held = write_jsonl(tmp_path / f"p{p}" / "held.jsonl", pairs)
        s = DpoSettings(max_steps=3, lr=1e-3, batch_size=2, max_length=128, beta=0.5, eval=[str(held)], lora_r=lora_r)
        summary = train_dpo([str(labels)], str(tiny), str(tmp_path / f"p{p}" / "dpo"), s, quiet=True)
        assert summary["steps"] == 3 and summary["params_changed"] is True
        margins[p] = summary["eval_reward_margin"]
    assert margins[0.9] > 0 > margins[0.1], margins
