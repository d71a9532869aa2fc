"""Stage outputs read back from a run folder as their types (`cai.outputs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.io.atomic import write_json_atomic
from cai.io.readers import iter_jsonl, read_json_file
from cai.outputs import OutT, parse_output


def read_output(kind: type[OutT], path: str | Path) -> OutT:
    """A whole-file output (``summary.json``, ``cai_train.json``) as `kind`."""
    return parse_output(kind, read_json_file(path, kind="stage output"), str(path))


def read_output_lines(kind: type[OutT], path: str | Path) -> list[OutT]:
    """A records file's complete lines as `kind`, [] before the first (a torn last line is the
    stage's to redo, as `cai.io.store.read_jsonl` leaves it)."""
    if not Path(path).exists():
        return []
    return [parse_output(kind, row, str(path), line) for line, row in iter_jsonl(path, committed_only=True)]


def write_output(kind: type[OutT], path: str | Path, figures: dict[str, Any]) -> OutT:
    """Write a stage's `figures` to `path` as they are, once they read back as `kind`: a figure of
    the wrong type is the stage's bug, caught before a reader trips over it. Returns the typed
    figures, for the cards written beside them."""
    typed = kind.model_validate(figures)
    write_json_atomic(Path(path), figures)
    return typed
