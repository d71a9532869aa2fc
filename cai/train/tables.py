"""Training data tables: where a stage's export or a user's file is, and its rows, checked.

SFT reads ``messages`` rows and the PM reads preference rows from the same kinds of place (a
stage's output folder, a saved `datasets` folder, a JSONL file); both go through `load_table`,
which reads through `cai.io.readers` so a broken file reads the same as anywhere else in cai.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cai.errors import fail, file_error
from cai.io.readers import (
    PROVENANCE_FILE,
    check_rows_folder,
    is_saved_dataset,
    iter_jsonl,
    load_saved_dataset,
    read_json_file,
    row_where,
)

# What each stage's output folder is for, to name the right command when a folder is given to
# the wrong one (its `run.json` says which stage wrote it).
STAGE_USE = {"critique": "cai train sft", "label": "cai train pm"}


@dataclass(frozen=True)
class Loc:
    """Where a row came from, for one-line error messages."""

    path: str
    line: int | None  # JSONL line number; None for a datasets folder
    index: int

    def field(self, name: str) -> str:
        return name if self.line is not None else f"row {self.index}: {name}"

    def where(self) -> tuple[str, int | None]:
        """(path, line) for errors: a JSONL line, or a dataset row named in the path part."""
        return (self.path, self.line) if self.line is not None else row_where(self.path, self.index)


@dataclass(frozen=True)
class TableSource:
    """Provenance of one data source as written to `cai_train.json`."""

    path: str
    kind: str  # "dataset" or "jsonl"
    rows: int
    sha256: str  # of the rows as used (canonical JSON), so the same data gives the same hash

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def check_stage_folder(p: Path, stage: str | None, option: str) -> None:
    """A stage's output folder given to the command that reads the other stage's output (a
    critique folder to `train pm`) is refused, naming what it is and where it belongs."""
    if stage is None or not (p / "run.json").is_file():
        return
    found = read_json_file(p / "run.json", kind="run manifest").get("stage")
    if isinstance(found, str) and found != stage and found in STAGE_USE:
        raise fail(
            str(p),
            None,
            option,
            f"a {found} run folder; this command reads a {stage} run folder ({found} output is for {STAGE_USE[found]})",
        )


def find_table(
    path: str | Path, jsonl_names: Sequence[str], option: str, *, stage: str | None = None
) -> tuple[Path, str]:
    """Locate the data in `path`: DIR/dataset, DIR/<jsonl>, a saved dataset, or a .jsonl file.

    The `datasets` folder wins over JSONL when both exist: it is what the stage wrote last, and
    reading it keeps Arrow types rather than re-parsing text. A folder another stage wrote
    (``stage``: the one expected) is an error.
    """
    p = Path(path)
    if p.is_dir():
        check_stage_folder(p, stage, option)
        if is_saved_dataset(p / "dataset"):
            return p / "dataset", "dataset"
        for name in jsonl_names:
            if (p / name).is_file():
                return p / name, "jsonl"
        if is_saved_dataset(p):
            return p, "dataset"
        if not any(p.iterdir()):
            check_rows_folder(p, option)
        raise file_error(p, option, f"no dataset/ folder or {' / '.join(jsonl_names)} in this folder")
    if p.is_file():
        if p.suffix in (".jsonl", ".json"):
            return p, "jsonl"
        raise file_error(p, option, "expected a folder, a saved dataset or a .jsonl file")
    raise file_error(p, option, "no such file or folder")


def load_table(
    path: str | Path,
    columns: Sequence[str],
    *,
    jsonl_names: Sequence[str],
    option: str,
    optional: Sequence[str] = (),
    stage: str | None = None,
) -> tuple[list[dict[str, Any]], list[Loc], Path, str]:
    """Rows of `path` restricted to `columns` (required) and `optional` ones (kept if present).

    Other columns are dropped here: the stage exports carry many (the public CAI dataset's),
    and some share names with TRL's formats (`prompt`, `chosen`) that would change its behaviour.
    """
    source, kind = find_table(path, jsonl_names, option, stage=stage)
    if kind == "jsonl":
        rows, locs = _read_jsonl(source, columns, optional)
    else:
        rows, locs = _read_dataset(source, columns, optional)
    return _with_provenance(rows, source, optional), locs, source, kind


def _with_provenance(rows: list[dict[str, Any]], source: Path, optional: Sequence[str]) -> list[dict[str, Any]]:
    """Optional columns a stage export keeps beside its rows (``provenance.jsonl``, line i for
    row i: its TRL-facing files hold TRL's columns only), added where a row lacks them."""
    side = source.parent / PROVENANCE_FILE
    wanted = [c for c in optional if any(c not in r for r in rows)]
    if not wanted or not side.is_file():
        return rows
    extra = [obj for _, obj in iter_jsonl(side)]
    if len(extra) != len(rows):
        return rows  # not this export's companion (edited or foreign): use nothing from it
    return [{**{c: e[c] for c in wanted if c in e}, **r} for r, e in zip(rows, extra, strict=True)]


def _read_jsonl(path: Path, columns: Sequence[str], optional: Sequence[str]) -> tuple[list[dict[str, Any]], list[Loc]]:
    rows, locs = [], []
    for lineno, obj in iter_jsonl(path):
        for c in columns:
            if c not in obj:
                keys = ", ".join(sorted(obj)) or "none"
                raise fail(str(path), lineno, c, f"missing (keys: {keys})")
        rows.append({c: obj[c] for c in (*columns, *optional) if c in obj})
        locs.append(Loc(str(path), lineno, len(locs)))
    return rows, locs


def _read_dataset(
    path: Path, columns: Sequence[str], optional: Sequence[str]
) -> tuple[list[dict[str, Any]], list[Loc]]:
    ds = load_saved_dataset(path)
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise fail(str(path), None, missing[0], f"no such column (columns: {', '.join(ds.column_names) or 'none'})")
    keep = [*columns, *(c for c in optional if c in ds.column_names)]
    rows = ds.select_columns(keep).to_list()
    return rows, [Loc(str(path), None, i) for i in range(len(rows))]


def rows_sha256(rows: Sequence[Mapping[str, Any]]) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()
