"""LoRA (peft) for sft, pm and dpo on a tiny random model with the embedded tokenizer.

With LoRA on, training changes only adapter tensors (every base weight bit-identical); the merged
output is a plain transformers model equal to base + the adapter's delta; the adapter output
loads with peft; a target module the model lacks is a one-line error naming the flag.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cai.errors import CaiError
from tests.rl_helpers import QUESTIONS, SYSTEM, easy_pairs, tiny_policy, write_jsonl

pytestmark = [pytest.mark.slow, pytest.mark.trl]
pytest.importorskip("peft")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory, embedded_model_dir: Path) -> Path:
    return tiny_policy(tmp_path_factory.mktemp("tiny") / "policy", embedded_model_dir)


def _sft_data(root: Path) -> Path:
    rows = [
        {"messages": [SYSTEM, {"role": "user", "content": q}, {"role": "assistant", "content": "I can't help."}]}
        for q in QUESTIONS[:4]
    ]
    return write_jsonl(root / "sft.jsonl", rows)


def _capture_before_save(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Keep every parameter of the trained (still unmerged) model, as `prepare_to_save` sees it."""
    from cai.train import lora

    got: dict[str, Any] = {}
    real = lora.prepare_to_save

    def spy(trainer: Any, s: Any) -> None:
        got["params"] = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        real(trainer, s)

    monkeypatch.setattr(lora, "prepare_to_save", spy)
    return got


def _train(kind: str, tiny: Path, root: Path, out: Path, **lora: Any) -> dict[str, Any]:
    from cai.train.dpo import train_dpo
    from cai.train.pm import train_pm
    from cai.train.settings import DpoSettings, PmSettings, SftSettings
    from cai.train.sft import train_sft

    common = {"max_steps": 2, "lr": 1e-2, "batch_size": 2, "max_length": 128, "lora_r": 4, **lora}
    if kind == "sft":
        return train_sft([str(_sft_data(root))], str(tiny), str(out), SftSettings(**common), quiet=True)
    labels = write_jsonl(root / "labels" / "preferences.jsonl", easy_pairs(QUESTIONS[:4])).parent
    if kind == "pm":
        return train_pm([str(labels)], str(tiny), str(out), PmSettings(**common), quiet=True)
    return train_dpo([str(labels)], str(tiny), str(out), DpoSettings(**common), quiet=True)


@pytest.mark.parametrize("kind", ["sft", "dpo", "pm"])
def test_lora_changes_only_adapters_and_merges_into_a_plain_model(
    tmp_path: Path, tiny: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    got = _capture_before_save(monkeypatch)
    out = tmp_path / "merged"
    summary = _train(kind, tiny, tmp_path, out)
    assert summary["params_changed"] is True

    base_cls = AutoModelForSequenceClassification if kind == "pm" else AutoModelForCausalLM
    base = base_cls.from_pretrained(str(tiny), dtype=torch.float32, **({"num_labels": 1} if kind == "pm" else {}))
    base_params = dict(base.named_parameters())
    trained = got["params"]
    adapters = [n for n in trained if "lora_" in n]
    assert adapters
    for name, value in trained.items():
        if "lora_" in name or "modules_to_save" in name or "original_module" in name:
            continue  # the adapters, and the PM's (new, fully trained) score head
        plain = name.removeprefix("base_model.model.").replace(".base_layer", "")
        if kind == "pm" and plain.startswith("score"):
            continue
        assert torch.equal(value, base_params[plain].detach()), name  # bit-identical base weights
    assert any(not torch.equal(trained[n], torch.zeros_like(trained[n])) for n in adapters if "lora_B" in n)

    merged = base_cls.from_pretrained(str(out))  # a plain transformers folder, no peft needed
    assert not (out / "adapter_config.json").exists()
    info = json.loads((out / "cai_train.json").read_text())
    assert info["lora"]["r"] == 4 and info["lora"]["saved"] == "merged full model"
    moved = [n for n, p in merged.named_parameters() if not torch.equal(p, base_params[n])]
    assert any("q_proj" in n for n in moved)


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_adapter_output_loads_with_peft_and_equals_the_merged_model(tmp_path: Path, tiny: Path, kind: str) -> None:
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM

    _train(kind, tiny, tmp_path / "a", tmp_path / "adapter", lora_merge=False)
    _train(kind, tiny, tmp_path / "b", tmp_path / "merged")
    adapter = tmp_path / "adapter"
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "config.json").exists()
    assert json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tiny)
    loaded = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).merge_and_unload()
    merged = dict(AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).named_parameters())
    for name, p in loaded.named_parameters():
        torch.testing.assert_close(p, merged[name], rtol=1e-5, atol=1e-6)


def test_a_target_module_the_model_lacks_names_the_flag(tmp_path: Path, tiny: Path) -> None:
    with pytest.raises(CaiError) as e:
        _train("sft", tiny, tmp_path, tmp_path / "out", lora_target_modules=["c_attn"])
    assert "--lora-target-modules: no module named c_attn" in str(e.value)
    assert not (tmp_path / "out").exists()
