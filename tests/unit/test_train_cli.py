"""`cai train sft` from the outside (in-process): user errors are one line and exit 2; the help.

That the help imports no torch is checked in a fresh interpreter, in
tests/integration/test_light_imports.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import Result, invoke


def _error_lines(proc: Result) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        ("missing", "--data: no such file or folder"),
        ("no_messages", ":1: messages: missing (keys: prompt)"),
        ("bad_json", ":2: not valid JSON"),
        ("empty", "--data: no usable rows"),
        ("not_assistant", ":1: messages: the last message must be the assistant's answer"),
    ],
)
def test_bad_data_exits_2_with_one_line(tmp_path: Path, setup: str, needle: str) -> None:
    data = tmp_path / "data.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    content = {
        "missing": None,
        "no_messages": '{"prompt": "q"}\n',
        "bad_json": good + "\n{oops\n",
        "empty": "",
        "not_assistant": json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n",
    }[setup]
    if content is not None:
        data.write_text(content)
    # The data is read before the model is resolved: `embedded` is never converted or loaded here.
    proc = invoke("train", "sft", "--data", str(data), "--out", str(tmp_path / "out"), "--model", "embedded", "--quiet")
    lines = _error_lines(proc)
    assert proc.code == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a rejected run


def test_bad_out_and_model_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}) + "\n"
    )
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    proc = invoke("train", "sft", "--data", str(data), "--out", str(tmp_path / "busy"))
    assert proc.code == 2 and len(_error_lines(proc)) == 1
    assert "folder is not empty" in proc.stderr
    proc = invoke("train", "sft", "--data", str(data), "--out", str(tmp_path / "o"), "--model", "openai:gpt-4o")
    assert proc.code == 2 and len(_error_lines(proc)) == 1
    assert "an API model cannot be trained" in proc.stderr


def test_train_help_lists_sft_and_its_flags() -> None:
    proc = invoke("train", "--help")
    assert proc.code == 0 and "sft" in proc.stdout
    proc = invoke("train", "sft", "--help")
    assert proc.code == 0
    for flag in (
        "--data",
        "--model",
        "--out",
        "--helpful",
        "--helpful-ratio",
        "--epochs",
        "--lr",
        "--batch-size",
        "--grad-accum",
        "--max-length",
        "--max-steps",
        "--seed",
        "--quiet",
    ):
        assert flag in proc.stdout
