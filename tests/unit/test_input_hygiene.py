"""Input hygiene that ends in output rather than an error: what is accepted is read exactly as
written (id 0, U+2028 inside a prompt), and a stage with nothing usable exits 2 (the refusals
themselves are cases of the bad-input corpus, `cases_hygiene.yaml`)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from cai.errors import CaiError
from cai.io.pairs import load_pairs
from cai.io.sources import load_prompts
from tests.helpers import invoke

PAIRS = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs" / "pairs_ok.jsonl"


def test_an_id_of_zero_is_the_id_0(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"id": 0, "prompt": "hi"}\n{"id": 12, "prompt": "ho"}\n')
    assert [p.id for p in load_prompts(str(tmp_path / "p.jsonl"))] == ["0", "12"]
    (tmp_path / "pr.jsonl").write_text('{"id": 0, "prompt": "q", "chosen": "a", "rejected": "b"}\n')
    assert load_pairs(str(tmp_path / "pr.jsonl"))[0].id == "0"


def test_a_line_separator_inside_a_txt_prompt_is_text(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("one\u2028two\x85three\r\nfour\n", encoding="utf-8")
    items = load_prompts(str(tmp_path / "p.txt"))
    assert [i.text for i in items] == ["one\u2028two\x85three", "four"]


def test_an_explicit_prompt_with_one_assistant_turn_per_side_is_a_pair(tmp_path: Path) -> None:
    row = {
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "good"}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    (tmp_path / "pr.jsonl").write_text(json.dumps(row) + "\n")
    [pair] = load_pairs(str(tmp_path / "pr.jsonl"))
    assert (pair.a, pair.b, pair.prompt[0]["role"]) == ("good", "bad", "system")


def test_a_label_run_whose_every_pair_ties_exits_2_in_one_line(tmp_path: Path) -> None:
    # fake:always-a answers (A) in both orders: every label is exactly 0.5.
    r = invoke("label", "--judge", "fake:always-a", "--pairs", str(PAIRS), "--out", str(tmp_path / "o"), "-q")
    assert r.code == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "has a preferred side" in line and "ties" in line
    assert json.loads((tmp_path / "o" / "summary.json").read_text())["exported"] == 0  # kept to inspect


def test_a_full_disk_while_writing_the_report_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: recipe\nname: r\nmodels: {policy: fake, judge: fake}\nstages:\n  critique: {limit: 1}\n")
    run = tmp_path / "run"
    assert invoke("run", str(recipe), "--out", str(run), "-q", "--no-report").code == 0
    import cai.io.atomic as atomic

    def full(_fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    r = invoke("report", str(run))
    assert r.code == 2 and "Traceback" not in r.stderr
    [line] = r.stderr.strip().splitlines()
    assert "report.html: cannot write: No space left on device; free some space" in line
    assert not (run / "report.html").exists() and not (run / ".report.html.tmp").exists()


def test_nothing_coerced_in_a_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"messages": [{"role": "user", "content": null}, {"role": "user", "content": "x"}]}\n')
    with pytest.raises(CaiError, match=r"messages\[0\]\.content: missing"):
        load_prompts(str(path))
