"""SFT on the embedded model (CPU): weights move, the revision loss falls, the output is a model.

The loss is measured independently of the trainer: a plain forward pass over the training rows
with the prompt masked, before (base model) and after (the saved folder, loaded fresh).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from cai.errors import CaiError
from tests.helpers import REPO, cai_env

pytestmark = [pytest.mark.slow, pytest.mark.trl]

# Short on purpose: every token costs time on a 2-core CPU. The short system turn replaces the
# ~20-token default one SmolLM2's template would add.
SYSTEM = {"role": "system", "content": "Be safe."}
PAIRS = [
    ("How do I pick my neighbour's lock?", "I can't help with that. A locksmith can help you."),
    ("Write an insult for my coworker.", "I'd rather not. Want tips on raising the issue kindly?"),
    ("How can I cheat on my exam?", "I won't help with cheating, but I can help you study."),
    ("Tell me how to hack a wifi network.", "I can't help with that; ask the owner for access."),
]
ROWS = [
    {
        "id": f"r{i}",
        "prompt": f"{q} ({i})",
        "fingerprint": "fp-test",
        "messages": [SYSTEM, {"role": "user", "content": f"{q} ({i})"}, {"role": "assistant", "content": a}],
    }
    for i, (q, a) in enumerate(PAIRS * 4)
]  # 16 rows


def _stage_folder(root: Path) -> Path:
    """A folder shaped like `cai critique` output: dataset/ (preferred) plus sft.jsonl, both
    `messages` only, and the rows' fingerprints in provenance.jsonl beside them."""
    from datasets import Dataset

    run = root / "critique-run"
    run.mkdir()
    trl_rows = [{"messages": r["messages"]} for r in ROWS]
    Dataset.from_list(trl_rows).save_to_disk(str(run / "dataset"))
    (run / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in trl_rows))
    prov = [{"id": r["id"], "fingerprint": r["fingerprint"]} for r in ROWS]
    (run / "provenance.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prov))
    return run


def completion_loss(model: Any, tokenizer: Any, rows: list[dict[str, Any]]) -> float:
    """Mean token NLL of the assistant answers (plus end-of-turn) given their prompts.

    One padded batch; prompt and padding positions are masked out of the loss.
    """
    import torch

    seqs, starts = [], []
    for row in rows:
        msgs = row["messages"]
        prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        full = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
        assert full[: len(prompt)] == prompt
        seqs.append(full)
        starts.append(len(prompt))
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), tokenizer.pad_token_id)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for i, (seq, start) in enumerate(zip(seqs, starts, strict=True)):
        ids[i, : len(seq)] = torch.tensor(seq)
        attention[i, : len(seq)] = 1
        labels[i, start : len(seq)] = ids[i, start : len(seq)]
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention).logits[:, :-1]
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return float(nll) / int((target != -100).sum())


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread: on a shared 2-core machine two threads were measured 2x (matmul)
    to 7x (a training step) slower than one, and far less predictable."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def base_path() -> str:
    from cai.models.spec import resolve_model_path

    return resolve_model_path("embedded", quiet=True)


def test_only_the_answer_and_its_end_of_turn_are_trained(tmp_path: Path, base_path: str) -> None:
    """SmolLM2's template has no {% generation %} markers, so we rely on prompt/completion
    masking: the labels must cover exactly the final answer plus `<|im_end|>`."""
    from cai.train.common import load_tokenizer
    from cai.train.configs import sft_config
    from cai.train.publish import TrainOutput
    from cai.train.settings import SftSettings
    from cai.train.sft import _build_trainer, prepare_sft_data

    data = prepare_sft_data([str(_stage_folder(tmp_path))])
    output = TrainOutput(tmp_path / "o", "sft")
    settings = SftSettings(max_steps=1, lr=1e-4, batch_size=2, max_length=64)
    tokenizer = load_tokenizer(base_path)
    trainer = _build_trainer(base_path, tokenizer, data, output, sft_config(output, settings, 0, True, 1), True)
    for i, row in enumerate(trainer.train_dataset):
        trained = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
        answer = data.train[i]["completion"][0]["content"]
        assert tokenizer.decode(trained) == answer + "<|im_end|>\n"


def test_sft_changes_weights_lowers_loss_and_saves_a_model(tmp_path: Path, base_path: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cai.train.common import changed_params
    from cai.train.settings import SftSettings
    from cai.train.sft import train_sft
    from tests.train_helpers import read_metrics, snapshot_params

    data = _stage_folder(tmp_path)
    out = tmp_path / "sl-cai"
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    loss_before = completion_loss(base, tokenizer, ROWS)
    base_params = snapshot_params(base)
    del base

    summary = train_sft(
        [str(data)],
        "embedded",
        str(out),
        SftSettings(lr=1e-4, batch_size=4, max_steps=3, max_length=64),
        seed=0,
        quiet=True,
    )

    # The folder is an ordinary model folder: it loads, generates and has its chat template.
    trained = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    trained_tok = AutoTokenizer.from_pretrained(str(out))
    assert trained_tok.chat_template == tokenizer.chat_template
    loss_after = completion_loss(trained, trained_tok, ROWS)
    print(
        f"\nrevision loss before {loss_before:.4f} after {loss_after:.4f}; "
        f"logged {summary['train_loss_first']:.4f} -> {summary['train_loss_last']:.4f}"
    )
    assert loss_after < 0.8 * loss_before

    assert summary["params_changed"] is True and summary["steps"] == 3
    changed = changed_params(base_params, snapshot_params(trained))
    assert len(changed) > len(base_params) // 2  # full fine-tune: nearly every tensor moves

    prompt = trained_tok.apply_chat_template(
        [{"role": "user", "content": "Say hello."}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    gen = trained.generate(**prompt, max_new_tokens=6, do_sample=False)
    assert gen.shape[1] > prompt["input_ids"].shape[1]
    assert isinstance(trained_tok.decode(gen[0, prompt["input_ids"].shape[1] :]), str)

    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["kind"] == "sft" and meta["base_model"] == "embedded"
    assert meta["data"][0]["kind"] == "dataset" and meta["data"][0]["rows"] == 16
    assert meta["constitution_fingerprints"] == ["fp-test"]  # from provenance.jsonl beside the data
    from huggingface_hub import ModelCard

    card = ModelCard.load(out / "README.md")  # the model card, as the Hub reads it
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.tags[-1] == "sft"
    assert card.data.datasets == ["critique-run"] and "fp-test" in card.text
    assert meta["settings"]["lr"] == 1e-4 and meta["final_loss"] == summary["train_loss_last"]
    assert not [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert not (out / "training_args.bin").exists()
    losses = [r["loss"] for r in read_metrics(out) if "loss" in r]
    assert len(losses) == 3

    # The trained folder is a model spec like any other: train on top of it.
    again = tmp_path / "again"
    shutil.copytree(out, again)
    with pytest.raises(CaiError, match="already holds a trained model"):
        train_sft([str(data)], str(again), str(again), SftSettings(max_steps=1), quiet=True)


def test_sft_under_accelerate_two_cpu_processes(tmp_path: Path, base_path: str) -> None:
    """Two gloo processes: both train (each sees half the batch), only rank 0 writes."""
    data = _stage_folder(tmp_path)
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "accelerate" / "cpu_2proc.yaml"),
        "-m",
        "cai.cli",
        "train",
        "sft",
        "--data",
        str(data),
        "--out",
        str(out),
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--max-length",
        "48",
        "--lr",
        "1e-4",
        "--eval-fraction",
        "0.25",
        "--quiet",
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=280, env=cai_env(), cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout[proc.stdout.index("{") :])  # printed once, by rank 0
    assert proc.stdout.count('"train_loss_first"') == 1
    assert summary["steps"] == 1 and summary["params_changed"] is True
    assert summary["rows"]["train"] == 12 and summary["rows"]["eval"] == 4
    # Held-out rows share their answers with training rows, so one step already helps them.
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_logs = [m for m in metrics if "loss" in m]
    # 2 processes x 2 rows = 4 of 12 training rows per step: a third of an epoch per step.
    assert len(train_logs) == 1 and train_logs[0]["epoch"] == pytest.approx(1 / 3)
    assert (out / "cai_train.json").is_file() and (out / "model.safetensors").is_file()


@pytest.mark.gpu
def test_sft_on_cuda_trains_in_bf16(tmp_path: Path, base_path: str) -> None:
    """On a GPU the adapter switches to bf16 weights and activation checkpointing."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from transformers import AutoModelForCausalLM

    from cai.train.settings import SftSettings
    from cai.train.sft import train_sft

    data = _stage_folder(tmp_path)
    out = tmp_path / "cuda"
    summary = train_sft(
        [str(data)],
        "embedded",
        str(out),
        SftSettings(lr=1e-4, batch_size=8, max_steps=4, max_length=64, eval_fraction=0.25),
        quiet=True,
    )
    assert summary["params_changed"] is True
    assert summary["eval_loss_after"] < summary["eval_loss_before"]
    meta = json.loads((out / "cai_train.json").read_text())
    assert meta["settings"]["bf16"] is (torch.cuda.is_bf16_supported())
    model = AutoModelForCausalLM.from_pretrained(str(out))
    assert model.dtype in (torch.bfloat16, torch.float32)
