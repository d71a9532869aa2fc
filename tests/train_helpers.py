"""What training tests need: the metrics a run logged, exact copies of parameters, and a
published model folder without training one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cai.io.readers import iter_jsonl
from cai.train.common import METRICS_FILE


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The rows a training run logged to OUT/metrics.jsonl (a torn last line left out)."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    return [row for _, row in iter_jsonl(path, committed_only=True)]


def snapshot_params(model: Any) -> dict[str, Any]:
    """An exact CPU copy of the trainable parameters, for `changed_params`."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}


class FakeTrainer:
    """What `TrainOutput.finalize` needs of a trainer: it saves these files as the model."""

    def __init__(self, files: dict[str, str]):
        self.files = files

    def save_model(self, path: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (Path(path) / name).write_text(text)


class FakeTokenizer:
    def save_pretrained(self, path: str) -> None:
        (Path(path) / "tokenizer.json").write_text("{}")


PM_FILES = {
    "config.json": json.dumps({"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}),
    "model.safetensors": "weights",
    "training_args.bin": "pickle",
}


def publish_fake_pm(out: Path, overwrite: bool = False) -> None:
    """A PM folder published the way `cai train pm` publishes one, without training."""
    from cai.train.publish import TrainOutput

    t = TrainOutput(out, "pm", overwrite=overwrite)
    t.prepare()
    t.metrics.write_text('{"loss": 1.0}\n')
    t.finalize(FakeTrainer(PM_FILES), FakeTokenizer(), {"summary": {}})
