"""Model and dataset cards parse with huggingface_hub and carry the metadata the Hub reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cai.cards import model_card, size_category, write_card
from cai.outputs import TrainRecord
from tests.helpers import invoke

SECRET = "sk-cardsecret0123456789"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    crit, lab = root / "critique", root / "label"
    assert (
        invoke("critique", "--prompts", "red-team", "--limit", "3", "--model", "fake", "--quiet", "-o", str(crit)).code
        == 0
    )
    assert (
        invoke("label", "--pairs", "judge-dev", "--limit", "4", "--judge", "fake", "--quiet", "-o", str(lab)).code == 0
    )
    return {"critique": crit, "label": lab}


def _meta(runs: dict[str, Path], kind: str, **changes: Any) -> TrainRecord:
    return TrainRecord.model_validate(
        {
            "cai_version": "0.1.0",
            "kind": kind,
            "base_model": "embedded",
            "data": [{"path": str(runs["critique"] / "dataset"), "kind": "dataset", "rows": 3, "sha256": "ab" * 32}],
            "constitution_fingerprints": ["fp-extra"],
            "settings": {"lr": 2e-5, "report_to": f"http://user:{SECRET}@tracker.example/v1"},
            "summary": {"train_loss_last": 1.25, "rows": {"train": 3}},
            "libraries": {"trl": "1.12.0"},
        }
        | changes
    )


def test_model_card_parses_and_carries_the_metadata(runs: dict[str, Path], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    write_card(tmp_path, model_card(_meta(runs, "sft")))
    card = ModelCard.load(tmp_path / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["tags"] == ["cai", "constitutional-ai", "trl", "sft"]
    assert data["datasets"] == ["critique"]  # the run folder, not an absolute path
    fp = json.loads((runs["critique"] / "run.json").read_text())["fingerprint"]
    assert data["cai"]["fingerprints"] == sorted([fp, "fp-extra"])
    assert f"| harmless | {fp} |" in card.text and "train_loss_last | 1.25" in card.text
    text = (tmp_path / "README.md").read_text()
    assert SECRET not in text and str(tmp_path.parent) not in text


@pytest.mark.parametrize(
    ("kind", "tag", "pipeline"), [("pm", "reward-model", "text-classification"), ("dpo", "dpo", "text-generation")]
)
def test_every_kind_gets_its_tag(runs: dict[str, Path], tmp_path: Path, kind: str, tag: str, pipeline: str) -> None:
    from huggingface_hub import ModelCard

    write_card(tmp_path, model_card(_meta(runs, kind)))
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.tags[-1] == tag and data.pipeline_tag == pipeline


def test_a_cai_model_trained_on_a_cai_model_names_the_hub_root(runs: dict[str, Path], tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    sft = tmp_path / "sft"
    sft.mkdir()
    write_card(sft, model_card(_meta(runs, "sft")))
    write_card(tmp_path, model_card(_meta(runs, "pm", base_model=str(sft))))
    data = ModelCard.load(tmp_path / "README.md").data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and data.license == "apache-2.0"


def test_published_model_folders_get_the_card(tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    from tests.train_helpers import publish_fake_pm

    out = tmp_path / "pm"
    publish_fake_pm(out)
    card = ModelCard.load(out / "README.md")
    assert "reward-model" in card.data.tags and card.data.library_name == "transformers"
    assert (out / "cai_train.json").is_file()


def test_critique_dataset_card(runs: dict[str, Path]) -> None:
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    out = runs["critique"]
    card = DatasetCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["tags"] == ["cai", "constitutional-ai", "trl", "sft"]
    assert data["task_categories"] == ["text-generation"] and data["size_categories"] == ["n<1K"]
    files = {c["config_name"]: c["data_files"][0]["path"] for c in data["configs"]}
    assert files == {"default": "sft.jsonl", "prompt_completion": "sft_prompt_completion.jsonl", "cai": "cai.jsonl"}
    assert all((out / f).is_file() for f in files.values())
    fp = json.loads((out / "run.json").read_text())["fingerprint"]
    assert "| constitution | harmless |" in card.text and f"| fingerprint | {fp} |" in card.text
    assert "| exported | 3 |" in card.text
    # `datasets` reads the configs of the card: each one is the TRL format it says.
    pc = load_dataset(str(out), "prompt_completion", split="train")
    assert sorted(pc.column_names) == ["completion", "prompt"] and len(pc) == 3
    assert load_dataset(str(out), split="train").column_names == ["messages"]


def test_label_dataset_card(runs: dict[str, Path]) -> None:
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(runs["label"] / "README.md")
    data = card.data.to_dict()
    assert {"cai", "trl", "dpo", "reward-model"} <= set(data["tags"])
    assert data["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "preferences.jsonl"}], "default": True}
    ]
    assert "p_chosen_logit" in card.text and "-logsigmoid(r_c - r_r - margin)" in card.text
    assert "labels.tie_tolerance | 0.0001" in card.text


def test_size_categories() -> None:
    assert [size_category(n) for n in (0, 999, 1000, 50_000, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]


def test_critique_exports_hold_trl_columns_only(runs: dict[str, Path]) -> None:
    from cai.constitution.load import load_constitution

    out = runs["critique"]

    def rows(name: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (out / name).read_text().splitlines()]

    records = rows("records.jsonl")
    system = load_constitution("harmless").spec.system_prompt
    assert system
    sft, pc, cai_rows, prov = (
        rows("sft.jsonl"),
        rows("sft_prompt_completion.jsonl"),
        rows("cai.jsonl"),
        rows("provenance.jsonl"),
    )
    # The revisions' rows, then the constitution's demonstrations (no cai.jsonl row: no first answer).
    n_demos = len(load_constitution("harmless").demonstrations)
    assert len(sft) == len(pc) == len(prov) == len(records) + n_demos and len(cai_rows) == len(records) == 3
    for s, p, v in zip(sft[3:], pc[3:], prov[3:], strict=True):
        assert set(s) == {"messages"} and set(p) == {"prompt", "completion"} and v["source"] == "demonstration"
        assert s["messages"][0] == {"role": "system", "content": system}
        assert s["messages"] == p["prompt"] + p["completion"]
    for r, s, p, c, v in zip(records, sft[:3], pc[:3], cai_rows, prov[:3], strict=True):
        assert set(s) == {"messages"} and set(p) == {"prompt", "completion"}
        assert s["messages"] == [{"role": "system", "content": system}, *r["prompt"], *p["completion"]]
        assert p["prompt"] == s["messages"][:-1] and p["completion"] == [
            {"role": "assistant", "content": r["final_revision"]}
        ]
        assert v == {
            "id": r["id"],
            "prompt_id": r["prompt_id"],
            "principles": c["principles"],
            "fingerprint": c["fingerprint"],
            "source": "revision",
        }
        assert c["init_prompt"] == c["prompt"] == r["prompt"][-1]["content"] and c["messages"] == s["messages"]
        assert c["rejected"][-1] == {"role": "assistant", "content": r["initial_response"]}
