"""The one JSONL / saved-dataset reader: the same one-line errors whichever command reads a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.pairs import load_pairs
from cai.io.readers import iter_jsonl, load_saved_dataset
from cai.io.sources import load_prompts
from cai.io.store import read_jsonl
from cai.stats import mean, pct, share
from cai.train.tables import load_table


def one_line(err: CaiError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


def test_rows_keep_their_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}\n\n  \n{"a": 2}')  # blank lines skipped; no final newline is fine
    assert list(iter_jsonl(path)) == [(1, {"a": 1}), (4, {"a": 2})]


def test_committed_only_drops_a_torn_tail_but_not_a_broken_middle(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "text": "caf\xc3')  # cut inside a character
    assert [r["id"] for _, r in iter_jsonl(path, committed_only=True)] == ["a", "b"]
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b"]
    # A complete last line without its newline was not committed either: the writer adds both at once.
    path.write_text('{"id": "a"}\n{"id": "b"}')
    assert [r["id"] for r in read_jsonl(path)] == ["a"]
    assert read_jsonl(tmp_path / "none.jsonl") == []


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"a": 1}\n{oops\n', "bad.jsonl:2: not valid JSON (Expecting property name"),
        (b'{"a": 1}\n[1, 2]\n', "bad.jsonl:2: each line must be a JSON object"),
        (b'"just a string"\n', "bad.jsonl:1: each line must be a JSON object"),
        (b'{"a": "\xff"}\n', "bad.jsonl:1: not UTF-8 text"),
    ],
)
def test_every_reader_words_a_broken_line_the_same(tmp_path: Path, content: bytes, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    readers = [
        lambda: list(iter_jsonl(path)),
        lambda: load_pairs(str(path)),
        lambda: load_table(path, ["a"], jsonl_names=(), option="--data"),
    ]
    if not content.startswith(b'"'):  # a bare string is a prompt, see below
        readers.append(lambda: load_prompts(str(path)))
    for read in readers:
        with pytest.raises(CaiError) as e:
            read()
        assert needle in one_line(e.value)
    if b"oops" in content:  # a corrupt line in the middle of a store is the same error
        with pytest.raises(CaiError) as e:
            read_jsonl(path)
        assert needle in one_line(e.value)


def test_prompt_files_may_list_bare_strings(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps("how do I pick a lock?") + "\n" + json.dumps({"prompt": "hi"}) + "\n")
    assert [p.text for p in load_prompts(str(path))] == ["how do I pick a lock?", "hi"]


def test_a_dataset_dict_is_read_by_its_train_split_only(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict(
        {"test": Dataset.from_list([{"prompt": "held out"}]), "train": Dataset.from_list([{"prompt": "train"}])}
    ).save_to_disk(str(tmp_path / "both"))
    assert [p.text for p in load_prompts(str(tmp_path / "both"))] == ["train"]
    assert load_saved_dataset(tmp_path / "both")["prompt"] == ["train"]
    DatasetDict({"test": Dataset.from_list([{"prompt": "held out"}])}).save_to_disk(str(tmp_path / "test"))
    for read in (lambda: load_prompts(str(tmp_path / "test")), lambda: load_pairs(str(tmp_path / "test"))):
        with pytest.raises(CaiError) as e:
            read()
        assert "test: split: no 'train' split (splits: test)" in one_line(e.value)


def test_a_dataset_row_is_named_by_its_index(tmp_path: Path) -> None:
    from datasets import Dataset

    rows = [{"prompt": "p", "chosen": "c", "rejected": "r"}, {"prompt": "p", "chosen": "c", "rejected": None}]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(CaiError) as e:
        load_pairs(str(tmp_path / "ds"))
    assert f"{tmp_path / 'ds'}: row 1: chosen: " in one_line(e.value)


def test_a_folder_that_is_not_a_dataset(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CaiError) as e:
        load_prompts(str(tmp_path / "empty"))
    assert f"{tmp_path / 'empty'}: prompts: an empty folder" in one_line(e.value)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(CaiError) as e:
        load_prompts(str(tmp_path / "empty"))
    assert "prompts: not a saved datasets folder" in one_line(e.value)


def test_summary_figures() -> None:
    assert mean([1.0, None, 2.0]) == 1.5 and mean([]) is None and mean([None]) is None
    assert mean([1 / 3]) == 0.3333
    assert share(1, 3) == 0.3333 and share(1, 0) is None
    assert pct(0.5) == "50.0%" and pct(None) == "-"
