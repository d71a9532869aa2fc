"""What training tests read back: the metrics a run logged and exact copies of parameters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cai.io.readers import iter_jsonl
from cai.train.common import METRICS_FILE


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    """The rows a training run logged to OUT/metrics.jsonl (a torn last line left out)."""
    path = Path(out) / METRICS_FILE
    if not path.is_file():
        return []
    return [row for _, row in iter_jsonl(path, committed_only=True)]


def snapshot_params(model: Any) -> dict[str, torch.Tensor]:
    """An exact CPU copy of the trainable parameters, for `changed_params`."""
    return {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters() if p.requires_grad}
