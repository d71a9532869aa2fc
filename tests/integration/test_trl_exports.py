"""TRL's own trainers take cai's exports exactly as written: no column renamed, dropped or added.

The exports come from real `cai critique` / `cai label` runs (fake backends: the text does not
matter, the layout does); each trainer is TRL's class itself, built on the files as loaded by
`datasets`, takes one optimiser step on the embedded SmolLM2-135M, and must move its weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import invoke

pytestmark = [pytest.mark.slow, pytest.mark.trl]

TINY = {
    "max_steps": 1,
    "per_device_train_batch_size": 2,
    "learning_rate": 1e-3,
    "use_cpu": True,
    "report_to": "none",
    "save_strategy": "no",
    "logging_strategy": "no",
    "bf16": False,
    "seed": 0,
}


@pytest.fixture(autouse=True)
def one_torch_thread() -> Any:
    """One intra-op thread: on a shared 2-core machine it is faster and steadier than two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exports")
    critique, label = root / "critique", root / "label"
    r = invoke(
        "critique", "--prompts", "red-team", "--limit", "2", "--model", "fake", "--quiet", "--out", str(critique)
    )
    assert r.code == 0, r.stderr
    r = invoke("label", "--pairs", "judge-dev", "--limit", "4", "--judge", "fake", "--quiet", "--out", str(label))
    assert r.code == 0, r.stderr
    return {"critique": critique, "label": label}


@pytest.fixture(scope="module")
def base_path() -> str:
    from cai.models.spec import resolve_model_path

    return resolve_model_path("embedded", quiet=True)


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _step_moves_weights(trainer: Any) -> None:
    from cai.train.common import changed_params, param_checksums

    before = param_checksums(trainer.model)
    trainer.train()
    assert trainer.state.global_step == 1
    assert changed_params(before, param_checksums(trainer.model))


def _sft(base_path: str, dataset: Any, out: Path) -> Any:
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = SFTConfig(output_dir=str(out), max_length=256, **TINY)
    return SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=_tokenizer(base_path))


def test_sft_trainer_on_the_messages_export(exports: dict[str, Path], base_path: str, tmp_path: Path) -> None:
    from datasets import load_from_disk

    ds = load_from_disk(str(exports["critique"] / "dataset"))
    assert ds.column_names == ["messages"]
    assert ds[0]["messages"][0]["role"] == "system"  # the constitution's system prompt
    trainer = _sft(base_path, ds, tmp_path)
    assert trainer.completion_only_loss is False  # language modelling, as the format says
    _step_moves_weights(trainer)


def test_sft_trainer_on_the_prompt_completion_export(exports: dict[str, Path], base_path: str, tmp_path: Path) -> None:
    from datasets import load_dataset

    ds = load_dataset("json", data_files=str(exports["critique"] / "sft_prompt_completion.jsonl"), split="train")
    assert sorted(ds.column_names) == ["completion", "prompt"]
    trainer = _sft(base_path, ds, tmp_path)
    assert trainer.completion_only_loss is True  # TRL recognised prompt-completion: answer-only loss
    row = trainer.train_dataset[0]
    trained = [t for t in row["labels"] if t != -100]  # TRL 1.12 masks the prompt in `labels`
    assert 0 < len(trained) < len(row["input_ids"])
    _step_moves_weights(trainer)


def test_reward_trainer_on_the_label_export(exports: dict[str, Path], base_path: str, tmp_path: Path) -> None:
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    ds = load_from_disk(str(exports["label"] / "dataset"))
    assert ds.column_names == ["prompt", "chosen", "rejected", "p_chosen", "p_chosen_logit"]
    tokenizer = _tokenizer(base_path)
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id
    config = RewardConfig(output_dir=str(tmp_path), max_length=512, **TINY)
    trainer = RewardTrainer(model=model, args=config, train_dataset=ds, processing_class=tokenizer)
    batch = next(iter(trainer.get_train_dataloader()))
    assert "margin" not in batch  # TRL's plain -logsigmoid(r_c - r_r): no margin read by accident
    _step_moves_weights(trainer)


def test_dpo_trainer_on_the_label_export(exports: dict[str, Path], base_path: str, tmp_path: Path) -> None:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    ds = load_dataset("json", data_files=str(exports["label"] / "preferences.jsonl"), split="train")
    model = AutoModelForCausalLM.from_pretrained(base_path)
    config = DPOConfig(output_dir=str(tmp_path), max_length=512, precompute_ref_log_probs=True, **TINY)
    trainer = DPOTrainer(model=model, args=config, train_dataset=ds, processing_class=_tokenizer(base_path))
    _step_moves_weights(trainer)
