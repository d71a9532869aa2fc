"""PM data: label-run exports, human files in TRL or HH-RLHF form, and what is rejected."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cai.errors import CaiError
from cai.train.pm import PrefRow, encode_rows, load_preferences

REPO = Path(__file__).resolve().parents[2]


def trl_row(i: int, p: float | None = 0.8, **extra: Any) -> dict[str, Any]:
    row = {
        "id": f"x{i}",
        "prompt": [{"role": "user", "content": f"question {i}"}],
        "chosen": [{"role": "assistant", "content": f"good {i}"}],
        "rejected": [{"role": "assistant", "content": f"bad {i}"}],
        **extra,
    }
    if p is not None:
        row["p_chosen"] = p
        row["margin"] = 1.386
    return row


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def label_run(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A folder shaped like `cai label --out`: dataset/ (read first) and preferences.jsonl."""
    from datasets import Dataset

    run = root / "labels"
    write_jsonl(run / "preferences.jsonl", rows)
    Dataset.from_list(rows).save_to_disk(str(run / "dataset"))
    return run


def test_label_run_keeps_soft_labels_and_provenance(tmp_path: Path) -> None:
    rows = [trl_row(i, p=0.5 + i / 10, fingerprint="fp1", principles=["p@1"]) for i in range(4)]
    table = load_preferences([str(label_run(tmp_path, rows))], "--data", human=False)
    assert [r.p_chosen for r in table.rows] == pytest.approx([0.5, 0.6, 0.7, 0.8])
    assert table.rows[0] == PrefRow(
        [{"role": "user", "content": "question 0"}], "good 0", "bad 0", 0.5
    )
    assert table.soft_rows == 4 and table.fingerprints == {"fp1"}
    assert table.sources[0].kind == "dataset" and table.sources[0].rows == 4


def test_human_files_are_hard_labels_in_any_supported_form(tmp_path: Path) -> None:
    hh = write_jsonl(
        tmp_path / "hh.jsonl",
        [
            {
                "chosen": "\n\nHuman: hi there\n\nAssistant: hello, how can I help?",
                "rejected": "\n\nHuman: hi there\n\nAssistant: go away",
            }
        ],
    )
    trl = write_jsonl(tmp_path / "trl.jsonl", [trl_row(0, p=0.7)])
    table = load_preferences([str(hh), str(trl)], "--human", human=True)
    assert [r.p_chosen for r in table.rows] == [1.0, 1.0]  # a human file's p is ignored
    assert table.rows[0].prompt == [{"role": "user", "content": "hi there"}]
    assert table.rows[0].chosen == "hello, how can I help?"
    assert table.soft_rows == 0
    # The shipped development set (with its extra `aspect` field) loads too.
    dev = load_preferences([str(REPO / "data" / "judge_dev.jsonl")], "--eval", human=True)
    assert len(dev.rows) > 50 and all(r.p_chosen == 1.0 for r in dev.rows)


def test_rows_without_p_chosen_count_as_hard(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "mixed.jsonl", [trl_row(0, p=0.9), trl_row(1, p=None)])
    table = load_preferences([str(path)], "--data", human=False)
    assert [r.p_chosen for r in table.rows] == [0.9, 1.0] and table.soft_rows == 1


@pytest.mark.parametrize(
    ("rows", "needle"),
    [
        ([trl_row(0, p=1.5)], ":1: p_chosen: must be a probability in [0, 1]"),
        ([trl_row(0), {"prompt": "q", "chosen": "a"}], ":2: rejected: missing"),
        (
            [
                {
                    "prompt": [{"role": "user", "content": "q"}],
                    "response_a": "a",
                    "response_b": "b",
                    "chosen": "",
                    "rejected": "",
                }
            ],
            ":1: chosen: empty chosen or rejected reply",
        ),
    ],
)
def test_bad_rows_fail_with_one_line_naming_the_line(
    tmp_path: Path, rows: list[Any], needle: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(CaiError) as err:
        load_preferences([str(path)], "--data", human=False)
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_missing_source_names_the_option(tmp_path: Path) -> None:
    with pytest.raises(CaiError, match="--human: no such file or folder"):
        load_preferences([str(tmp_path / "nope.jsonl")], "--human", human=True)


class _Tok:
    """Just enough tokenizer: one id per character, a 3-token chat header."""

    eos_token_id = 2

    def apply_chat_template(self, messages: list[dict[str, str]], **_: Any) -> dict[str, Any]:
        return {"input_ids": [1] + [ord(c) for m in messages for c in m["content"]] + [1, 1]}

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, Any]:
        return {"input_ids": [ord(c) for c in text]}


def test_encode_rows_scores_the_reply_plus_eos_and_drops_what_is_too_long() -> None:
    rows = [
        PrefRow([{"role": "user", "content": "ab"}], "yes", "no", 0.75),
        PrefRow([{"role": "user", "content": "x" * 30}], "yes", "no", 1.0),
    ]
    examples, dropped = encode_rows(_Tok(), rows, max_length=20, soft=True)
    assert dropped == 1 and len(examples) == 1
    prompt = [1, ord("a"), ord("b"), 1, 1]
    assert examples[0] == {
        "chosen_ids": [*prompt, ord("y"), ord("e"), ord("s"), 2],
        "rejected_ids": [*prompt, ord("n"), ord("o"), 2],
        "p_chosen": 0.75,
    }
    hard, _ = encode_rows(_Tok(), rows[:1], max_length=20, soft=False)
    assert "p_chosen" not in hard[0]  # hard labels: TRL's own loss, no soft column
