"""SFT data: where rows come from, what is rejected (one-line `CaiError`s), splitting and mixing."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

from cai.errors import CaiError
from cai.train.sft import (
    helpful_count,
    load_messages,
    mix_helpful,
    prepare_sft_data,
    split_eval,
    to_example,
)
from cai.train.tables import Loc

LOC = Loc("f.jsonl", 3, 2)
ANSWER = {"role": "assistant", "content": "a"}


def conv(q: str, a: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": q}, {"role": "assistant", "content": a}]


def stage_row(i: int, answer: str | None = None) -> dict[str, Any]:
    """A row shaped like the SL-CAI export: `messages` plus columns SFT must ignore."""
    q = f"question {i}"
    return {
        "id": f"r{i}",
        "prompt": q,
        "init_response": "bad",
        "fingerprint": "fp1",
        "messages": conv(q, answer if answer is not None else f"revised answer {i}"),
        "chosen": conv(q, "x"),
        "rejected": conv(q, "y"),
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def save_dataset(path: Path, rows: list[dict[str, Any]]) -> Path:
    from datasets import Dataset

    Dataset.from_list(rows).save_to_disk(str(path))
    return path


def one_line(err: CaiError) -> str:
    text = str(err)
    assert "\n" not in text
    return text


# --------------------------------------------------------------------------- rows


def test_to_example_splits_prompt_and_final_answer() -> None:
    msgs = [
        {"role": "system", "content": "be kind"},
        *conv("q", "a"),
        {"role": "user", "content": "more"},
        {"role": "assistant", "content": "final"},
    ]
    ex = to_example(msgs, LOC)
    assert ex == {"prompt": msgs[:-1], "completion": msgs[-1:]}


def test_to_example_drops_extra_message_keys() -> None:
    msgs = [{"role": "user", "content": "q", "name": None}, {"role": "assistant", "content": "a", "tool_calls": None}]
    assert to_example(msgs, LOC) == {
        "prompt": [{"role": "user", "content": "q"}],
        "completion": [{"role": "assistant", "content": "a"}],
    }


def test_to_example_empty_answer_is_skipped_not_trained() -> None:
    assert to_example(conv("q", "   "), LOC) is None


@pytest.mark.parametrize(
    ("messages", "needle"),
    [
        ([], "non-empty list"),
        ("hello", "non-empty list"),
        ([{"role": "user", "content": "q"}], "last message must be the assistant"),
        ([{"role": "assistant", "content": "a"}], "needs a user turn"),
        ([{"role": "system", "content": "s"}, ANSWER], "needs a user turn"),
        ([{"role": "human", "content": "q"}, ANSWER], "'human' is not one of"),
        ([{"role": "user", "content": 3}, ANSWER], "must be a string"),
        (["q", ANSWER], "must be an object"),
    ],
)
def test_to_example_rejects_malformed_messages(messages: Any, needle: str) -> None:
    with pytest.raises(CaiError) as e:
        to_example(messages, LOC)
    text = one_line(e.value)
    assert text.startswith("f.jsonl:3: messages")
    assert needle in text


def test_dataset_rows_are_named_by_index() -> None:
    with pytest.raises(CaiError, match=r"^d: row 7: messages\[0\].role"):
        to_example([{"role": "bot", "content": "q"}], Loc("d", None, 7))


# --------------------------------------------------------------------------- sources


def test_jsonl_in_stage_folder(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "run" / "sft.jsonl", [stage_row(i) for i in range(3)])
    table = load_messages([str(tmp_path / "run")], "--data")
    assert [ex["completion"][0]["content"] for ex in table.examples] == [
        "revised answer 0",
        "revised answer 1",
        "revised answer 2",
    ]
    assert set(table.examples[0]) == {"prompt", "completion"}  # `prompt` string column dropped
    assert table.sources[0].kind == "jsonl" and table.sources[0].rows == 3
    assert table.fingerprints == {"fp1"}


def test_dataset_folder_is_preferred_over_jsonl(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_jsonl(run / "sft.jsonl", [stage_row(i, "from jsonl") for i in range(2)])
    save_dataset(run / "dataset", [stage_row(i, "from dataset") for i in range(2)])
    table = load_messages([str(run)], "--data")
    assert {ex["completion"][0]["content"] for ex in table.examples} == {"from dataset"}
    assert table.sources[0].kind == "dataset"
    assert table.sources[0].path == str(run / "dataset")


def test_saved_dataset_and_plain_jsonl_paths(tmp_path: Path) -> None:
    ds = save_dataset(tmp_path / "ds", [stage_row(i) for i in range(2)])
    js = write_jsonl(tmp_path / "rows.jsonl", [{"messages": conv("q", "a")}])
    table = load_messages([str(ds), str(js)], "--data")
    assert len(table.examples) == 3
    assert [s.kind for s in table.sources] == ["dataset", "jsonl"]


def test_same_rows_give_same_fingerprint_whatever_the_container(tmp_path: Path) -> None:
    rows = [stage_row(i) for i in range(4)]
    a = load_messages([str(write_jsonl(tmp_path / "a.jsonl", rows))], "--data")
    b = load_messages([str(save_dataset(tmp_path / "b", rows))], "--data")
    assert a.sources[0].sha256 == b.sources[0].sha256


def test_empty_answers_counted(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [stage_row(0), stage_row(1, "")])
    table = load_messages([str(path)], "--data")
    assert len(table.examples) == 1 and table.skipped_empty == 1


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ('{"messages": [}\n', ":1: not valid JSON"),
        (json.dumps({"messages": conv("q", "a")}) + "\n[1, 2]\n", ":2: each line must be a JSON"),
        ('\n{"text": "hi"}\n', ":2: messages: missing (keys: text)"),
    ],
)
def test_bad_jsonl_names_the_line(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(CaiError) as e:
        load_messages([str(path)], "--data")
    assert needle in one_line(e.value)


def test_dataset_without_messages_column(tmp_path: Path) -> None:
    ds = save_dataset(tmp_path / "ds", [{"prompt": "p", "chosen": "c"}])
    with pytest.raises(CaiError) as e:
        load_messages([str(ds)], "--data")
    assert "messages: no such column (columns: prompt, chosen)" in one_line(e.value)


def test_dataset_dict_needs_train_split(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    DatasetDict({"test": Dataset.from_list([stage_row(0)])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(CaiError, match="no 'train' split"):
        load_messages([str(tmp_path / "dd")], "--data")


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "records.jsonl").write_text("")
    with pytest.raises(CaiError, match=r"no dataset/ folder or sft\.jsonl"):
        load_messages([str(tmp_path / "run")], "--data")


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CaiError, match="--data: no such file or folder"):
        load_messages([str(tmp_path / "nope")], "--data")


def test_no_usable_rows_is_an_error(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [stage_row(0, ""), stage_row(1, " ")])
    with pytest.raises(CaiError, match=r"no usable rows \(2 with an empty final answer\)"):
        prepare_sft_data([str(path)])
    empty = tmp_path / "e.jsonl"
    empty.write_text("")
    with pytest.raises(CaiError, match="no usable rows"):
        prepare_sft_data([str(empty)])


# --------------------------------------------------------------------------- split and mix


def examples(n: int, tag: str) -> list[dict[str, Any]]:
    return [to_example(conv(f"{tag} q{i}", f"{tag} a{i}"), LOC) for i in range(n)]


@pytest.mark.parametrize(
    ("n_cai", "ratio", "expected"), [(12, 0.25, 4), (10, 0.5, 10), (3, 0.0, 0), (100, 0.1, 11), (1, 0.9, 9)]
)
def test_helpful_count(n_cai: int, ratio: float, expected: int) -> None:
    assert helpful_count(n_cai, ratio) == expected


def test_mix_reaches_ratio_and_is_seeded() -> None:
    cai, helpful = examples(30, "cai"), examples(50, "help")
    mixed, used = mix_helpful(cai, helpful, 0.25, random.Random(1))
    assert used == 10 and len(mixed) == 40
    assert sum(ex["prompt"][0]["content"].startswith("help") for ex in mixed) / len(mixed) == 0.25
    assert all(ex in mixed for ex in cai)
    again, _ = mix_helpful(cai, helpful, 0.25, random.Random(1))
    assert again == mixed
    other, _ = mix_helpful(cai, helpful, 0.25, random.Random(2))
    assert other != mixed


def test_mix_never_repeats_when_helpful_is_short() -> None:
    mixed, used = mix_helpful(examples(10, "cai"), examples(3, "help"), 0.5, random.Random(0))
    assert used == 3 and len(mixed) == 13
    assert len({json.dumps(ex) for ex in mixed}) == 13


def test_split_eval_is_disjoint_and_seeded() -> None:
    rows = examples(20, "cai")
    train, held = split_eval(rows, 0.25, random.Random(0), "d")
    assert len(held) == 5 and len(train) == 15
    assert not {json.dumps(x) for x in train} & {json.dumps(x) for x in held}
    assert split_eval(rows, 0.25, random.Random(0), "d") == (train, held)
    assert split_eval(rows, 0.0, random.Random(0), "d") == (rows, [])


def test_split_eval_keeps_training_rows() -> None:
    with pytest.raises(CaiError, match="leaves no training rows"):
        split_eval(examples(1, "cai"), 0.5, random.Random(0), "d")
    with pytest.raises(CaiError, match="must be below 1"):
        split_eval(examples(4, "cai"), 1.0, random.Random(0), "d")


def test_prepare_holds_out_cai_rows_before_mixing(tmp_path: Path) -> None:
    cai = write_jsonl(tmp_path / "cai.jsonl", [{"messages": conv(f"cai q{i}", "a")} for i in range(20)])
    helpful = write_jsonl(tmp_path / "h.jsonl", [{"messages": conv(f"help q{i}", "b")} for i in range(40)])
    data = prepare_sft_data([str(cai)], helpful=[str(helpful)], helpful_ratio=0.5, eval_fraction=0.2, seed=3)
    assert len(data.eval) == 4
    assert all(ex["prompt"][0]["content"].startswith("cai") for ex in data.eval)
    counts = data.counts()
    assert counts == {
        "train": 32,
        "eval": 4,
        "helpful": 16,
        "cai": 16,
        "skipped_empty_answer": 0,
        "helpful_ratio_actual": 0.5,
    }


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"helpful_ratio": 0.3}, "--helpful: --helpful-ratio > 0 needs --helpful data"),
        ({"helpful": ["h.jsonl"]}, "--helpful given but the ratio is 0"),
        ({"helpful": ["h.jsonl"], "helpful_ratio": 1.0}, "1.0 is not in [0, 1)"),
        ({"helpful_ratio": -0.1}, "is not in [0, 1)"),
    ],
)
def test_prepare_rejects_inconsistent_mixing(tmp_path: Path, kwargs: dict[str, Any], needle: str) -> None:
    cai = write_jsonl(tmp_path / "cai.jsonl", [{"messages": conv("q", "a")}])
    with pytest.raises(CaiError) as e:
        prepare_sft_data([str(cai)], **kwargs)
    assert needle in one_line(e.value)


def test_prepare_needs_data() -> None:
    with pytest.raises(CaiError, match="at least one data folder"):
        prepare_sft_data([])
