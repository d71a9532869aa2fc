"""One reader for every JSONL file and every saved `datasets` folder cai takes as input.

Prompt files, pair files, training tables, stage records and metrics logs all go through here,
so a broken file reads the same whichever command opened it: one line
``path:line: field: what is wrong`` (a `CaiError`, exit code 2 at the CLI), never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cai.errors import fail

# Where a row came from, as `fail` takes it: (path, line) with line None when there is none.
Where = tuple[str, int | None]

DATASET_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")
# Next to a stage's TRL-facing export: line i is the provenance (id, prompt_id, principles,
# fingerprint) of export row i. TRL-facing files hold only TRL's columns, so it lives apart.
PROVENANCE_FILE = "provenance.jsonl"


def iter_jsonl(
    path: str | Path,
    *,
    committed_only: bool = False,
    strings_as: str | None = None,
    require: Sequence[str] = (),
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of a JSONL file, read as it streams.

    ``committed_only`` is for files cai appends to (records, metrics): a writer ends every row
    with the newline in the same `write`, so a last line without one is what a killed writer
    left half-written. It is dropped (the work it belonged to is redone on resume) where in a
    file a person wrote a missing final newline is normal and the line is read.
    ``strings_as`` accepts a bare JSON string per line as ``{strings_as: the string}`` (a plain
    list of prompts); otherwise every line must be a JSON object. ``require`` names keys every
    object must have (a record's ``id``).
    """
    name = str(path)
    if not Path(path).is_file():
        raise fail(name, None, "", "no such file")
    with open(path, "rb") as f:  # bytes: a tail torn inside a UTF-8 character is still seen whole
        for lineno, raw in enumerate(f, 1):
            if committed_only and not raw.endswith(b"\n"):
                break  # the last line, cut off mid-write
            if not raw.strip():
                continue
            obj = _parse_json(raw, name, lineno)
            if strings_as is not None and isinstance(obj, str):
                obj = {strings_as: obj}
            if not isinstance(obj, dict):
                raise fail(name, lineno, "", "each line must be a JSON object")
            for key in require:
                if key not in obj:
                    raise fail(name, lineno, key, "missing")
            yield lineno, obj


def _parse_json(raw: bytes, name: str, lineno: int, *, whole_file: bool = False) -> Any:
    """One JSON value from bytes (a JSONL line, or a whole file), every way it can be wrong as a
    one-line error."""
    try:
        return json.loads(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
    except UnicodeDecodeError as e:
        raise fail(name, lineno, "", f"not UTF-8 text (byte {e.start + 1} of the line)") from None
    except json.JSONDecodeError as e:
        where = e.lineno if whole_file else lineno  # a multi-line document names its own line
        raise fail(name, where, "", f"not valid JSON ({e.msg})") from None
    except RecursionError:
        raise fail(name, lineno, "", "nested too deep to read") from None


def read_json_file(path: str | Path, *, kind: str = "JSON file") -> dict[str, Any]:
    """A whole-file JSON object: a run's `run.json`, a stage's `stage.json`, `recipe.json` and
    the like. Missing, unreadable, broken or not an object: one line naming the file."""
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail(name, None, "", "no such file") from None
    except IsADirectoryError:
        raise fail(name, None, "", f"is a folder, not a {kind}") from None
    except OSError as e:
        raise fail(name, None, "", f"cannot read: {e.strerror or e}") from None
    obj = _parse_json(raw, name, 1, whole_file=True)
    if not isinstance(obj, dict):
        raise fail(name, None, "", f"must be a JSON object (a {kind})")
    return obj


def read_text_lines(path: str | Path) -> list[str]:
    """A text file's lines (CSV, TXT): non-UTF-8 bytes are a one-line error naming the line."""
    name = str(path)
    lines = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                lines.append(raw.decode("utf-8-sig" if lineno == 1 else "utf-8"))
            except UnicodeDecodeError as e:
                raise fail(name, lineno, "", f"not UTF-8 text (byte {e.start + 1} of the line)") from None
    return lines


def check_rows_folder(path: Path, field: str) -> None:
    """A folder given where rows are read must be a saved `datasets` folder: say so plainly for
    an empty folder or any other (rather than a library's message)."""
    if is_saved_dataset(path):
        return
    if not any(path.iterdir()):
        raise fail(str(path), None, field, "an empty folder (expected a file or a saved datasets folder)")
    raise fail(str(path), None, field, f"not a saved datasets folder (none of {', '.join(DATASET_MARKERS)} in it)")


def is_saved_dataset(path: Path) -> bool:
    """A folder `Dataset.save_to_disk` or `DatasetDict.save_to_disk` wrote."""
    return path.is_dir() and any((path / m).is_file() for m in DATASET_MARKERS)


def load_saved_dataset(path: str | Path) -> Any:
    """The rows of a saved `datasets` folder, as one `datasets.Dataset`.

    A `DatasetDict` must have a ``train`` split, and that is the one read: taking "the first
    split" instead would silently train on (or label) a ``test`` split.
    """
    from datasets import DatasetDict, load_from_disk

    name = str(path)
    try:
        ds = load_from_disk(name)
    except (FileNotFoundError, ValueError) as e:
        raise fail(name, None, "", f"cannot read the saved dataset: {e}") from None
    if isinstance(ds, DatasetDict):
        if "train" not in ds:
            raise fail(name, None, "split", f"no 'train' split (splits: {', '.join(ds)})")
        ds = ds["train"]
    return ds


def row_where(path: str | Path, index: int) -> Where:
    """Where row `index` of a saved dataset is, in the words `cai.train.common.Loc` uses.

    A dataset has no lines; naming the row in the path part gives ``DIR: row 3: field: …``.
    """
    return f"{path}: row {index}", None


def read_rows(path: Path, *, strings_as: str | None = None, field: str = "data") -> list[tuple[dict[str, Any], Where]]:
    """Rows of a saved dataset folder or a JSONL file, each with where it came from."""
    if path.is_dir():
        check_rows_folder(path, field)
        return [(dict(r), row_where(path, i)) for i, r in enumerate(load_saved_dataset(path))]
    return [(row, (str(path), n)) for n, row in iter_jsonl(path, strings_as=strings_as)]
