"""One reader for every JSONL file and every saved `datasets` folder cai takes as input.

Prompt files, pair files, training tables, stage records and metrics logs all go through here,
so a broken file reads the same whichever command opened it: one line
``path:line: field: what is wrong`` (a `CaiError`, exit code 2 at the CLI), never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from cai.errors import fail

# Files read whole into memory: a run's JSON state files, and CSV/TXT prompt lists.
MAX_JSON_FILE_BYTES = 64 * 2**20
MAX_TEXT_FILE_BYTES = 256 * 2**20

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
    check_regular_file(path)
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
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        obj = json.loads(text)
    except UnicodeDecodeError as e:
        raise fail(name, lineno, "", f"not UTF-8 text (byte {e.start + 1} of the line)") from None
    except json.JSONDecodeError as e:
        where = e.lineno if whole_file else lineno  # a multi-line document names its own line
        raise fail(name, where, "", f"not valid JSON ({e.msg})") from None
    except ValueError:  # an integer of thousands of digits: Python refuses to convert it
        raise fail(name, lineno, "", "a number too long to read (more than 4300 digits)") from None
    except RecursionError:
        raise fail(name, lineno, "", "nested too deep to read") from None
    if _SURROGATE_ESCAPE.search(text):
        field = _lone_surrogate(obj, "")
        if field is not None:
            raise fail(name, lineno, field, "a lone surrogate escape (such as \\ud800) is not a character")
    return obj


# A JSON escape of a UTF-16 surrogate half; a valid pair decodes to one character, a lone half to
# a string that cannot be written back as UTF-8.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(value: Any, at: str) -> str | None:
    """Where in a parsed JSON value a string holds a lone surrogate ("" for the top), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return at or "value"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            found = _lone_surrogate(k, at) or _lone_surrogate(v, f"{at}.{k}" if at else str(k))
            if found is not None:
                return found
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _lone_surrogate(v, f"{at}[{i}]")
            if found is not None:
                return found
    return None


def check_regular_file(path: str | Path, *, max_bytes: int | None = None) -> int:
    """Before any byte is read: the path is a regular file (a FIFO would block, /dev/zero never
    end) and, with `max_bytes`, no larger than that. Returns its size."""
    name = str(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise fail(name, None, "", "no such file") from None
    except OSError as e:
        raise fail(name, None, "", f"cannot read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise fail(name, None, "", "is a folder, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise fail(name, None, "", "not a regular file (a FIFO, device or socket); give a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise fail(name, None, "", f"file is larger than {max_bytes} bytes")
    return st.st_size


def read_json_file(path: str | Path, *, kind: str = "JSON file") -> dict[str, Any]:
    """A whole-file JSON object: a run's `run.json`, a stage's `stage.json`, `recipe.json` and
    the like. Missing, unreadable, broken or not an object: one line naming the file."""
    name = str(path)
    if Path(path).is_dir():
        raise fail(name, None, "", f"is a folder, not a {kind}")
    check_regular_file(path, max_bytes=MAX_JSON_FILE_BYTES)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise fail(name, None, "", "no such file") from None
    except OSError as e:
        raise fail(name, None, "", f"cannot read: {e.strerror or e}") from None
    obj = _parse_json(raw, name, 1, whole_file=True)
    if not isinstance(obj, dict):
        raise fail(name, None, "", f"must be a JSON object (a {kind})")
    return obj


def read_text_lines(path: str | Path) -> list[str]:
    """A text file's lines (CSV, TXT), read whole: a regular file below `MAX_TEXT_FILE_BYTES`,
    UTF-8 without NUL bytes (a UTF-16 file is mostly NULs), else a one-line error naming the line."""
    name = str(path)
    check_regular_file(path, max_bytes=MAX_TEXT_FILE_BYTES)
    lines = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if b"\x00" in raw or (lineno == 1 and raw[:2] in (b"\xff\xfe", b"\xfe\xff")):
                raise fail(name, lineno, "", "NUL bytes or a UTF-16 mark: not UTF-8 text (save the file as UTF-8)")
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
