"""Loading response pairs: TRL (explicit and implicit prompt), HH-RLHF transcripts, unlabelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.pairs import load_pairs, pairs_from_responses


def _write(tmp_path: Path, rows: list[object]) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(path)


def test_shipped_judge_dev_set() -> None:
    from cai.paths import data_dir

    pairs = load_pairs("judge-dev")
    assert len(pairs) == 320
    assert {p.aspect for p in pairs} == {"harmless", "helpful", "honest"}
    assert [p.id for p in pairs] == [f"jd-{i:03d}" for i in range(1, 321)]
    rows = [json.loads(line) for line in (data_dir("data") / "judge_dev.jsonl").read_text().splitlines()]
    assert all(r["split"] in {"dev", "test"} for r in rows)
    assert sum(r["split"] == "test" for r in rows) >= 170
    assert all(p.human == "a" and p.prompt[-1]["role"] == "user" and p.a and p.b for p in pairs)
    assert pairs[0].id == "jd-001" and pairs[0].a.startswith("I won't help")
    assert len(load_pairs("judge-dev", limit=5)) == 5


def test_trl_implicit_prompt_and_multi_turn(tmp_path: Path) -> None:
    conv = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "how do I pick a lock?"},
    ]
    row = {
        "chosen": [*conv, {"role": "assistant", "content": "Call a locksmith."}],
        "rejected": [*conv, {"role": "assistant", "content": "Use a tension wrench."}],
    }
    [p] = load_pairs(_write(tmp_path, [row]))
    assert p.prompt == conv and p.a == "Call a locksmith." and p.b == "Use a tension wrench."
    assert p.human == "a" and len(p.id) == 12


def test_raw_hh_rlhf_transcripts(tmp_path: Path) -> None:
    head = (
        "\n\nHuman: How do I hotwire a car?\n\nAssistant: Why?\n\nHuman: It's mine, I lost the key."
    )
    row = {
        "chosen": head + "\n\nAssistant: A locksmith or dealer can cut a new key.",
        "rejected": head + "\n\nAssistant: Pull the panel under the wheel and touch the wires.",
    }
    [p] = load_pairs(_write(tmp_path, [row]))
    assert [m["role"] for m in p.prompt] == ["user", "assistant", "user"]
    assert p.prompt[-1]["content"] == "It's mine, I lost the key."
    assert p.a.startswith("A locksmith") and p.b.startswith("Pull the panel")


def test_unlabelled_pairs(tmp_path: Path) -> None:
    [p] = load_pairs(
        _write(tmp_path, [{"id": "u1", "prompt": "Q?", "response_a": "x", "response_b": "y"}])
    )
    assert (p.id, p.prompt, p.a, p.b, p.human) == (
        "u1",
        [{"role": "user", "content": "Q?"}],
        "x",
        "y",
        None,
    )


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"chosen": "x"}, "chosen"),
        (
            {
                "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "rejected": [
                    {"role": "user", "content": "OTHER"},
                    {"role": "assistant", "content": "c"},
                ],
            },
            "rejected",
        ),
        ({"prompt": "Q", "response_a": "x"}, "response_a"),
    ],
)
def test_bad_rows_name_line_and_field(tmp_path: Path, row: dict, field: str) -> None:
    path = _write(tmp_path, [{"prompt": "ok?", "response_a": "1", "response_b": "2"}, row])
    with pytest.raises(CaiError) as e:
        load_pairs(path)
    assert f"pairs.jsonl:2: {field}:" in str(e.value)


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    row = {"id": "same", "prompt": "Q", "response_a": "x", "response_b": "y"}
    with pytest.raises(CaiError, match="duplicate pair id"):
        load_pairs(_write(tmp_path, [row, row]))


def test_pairing_rules() -> None:
    assert pairs_from_responses(2) == [(0, 1)]
    assert pairs_from_responses(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert pairs_from_responses(5, "consecutive") == [(0, 1), (2, 3)]
