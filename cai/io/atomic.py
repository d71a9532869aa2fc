"""Write exports atomically: a killed export never leaves a half-written file or folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any


def write_jsonl_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True))
    os.replace(tmp, path)


def save_dataset_atomic(path: Path, rows: list[dict[str, Any]]) -> None:
    """`datasets.save_to_disk` into a temp folder, then swap it in."""
    from datasets import Dataset
    from datasets.utils import logging as ds_logging

    tmp = path.with_name(f".{path.name}.tmp")
    old = path.with_name(f".{path.name}.old")
    for p in (tmp, old):
        if p.exists():
            shutil.rmtree(p)
    # The export is a small, quick step; its own progress bar is noise among the stage's.
    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        Dataset.from_list(rows).save_to_disk(str(tmp))
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    if old.exists():
        shutil.rmtree(old)
