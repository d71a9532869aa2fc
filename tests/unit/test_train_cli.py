"""`cai train sft` from the outside: user errors are one line and exit 2; help stays light."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import cai_env, run_cai


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize(("setup", "needle"), [
    ("missing", "--data: no such file or folder"),
    ("no_messages", ":1: messages: missing (keys: prompt)"),
    ("bad_json", ":2: not valid JSON"),
    ("empty", "--data: no usable rows"),
    ("not_assistant", ":1: messages: the last message must be the assistant's answer"),
])
def test_bad_data_exits_2_with_one_line(tmp_path: Path, setup: str, needle: str) -> None:
    data = tmp_path / "data.jsonl"
    good = json.dumps({"messages": [{"role": "user", "content": "q"},
                                    {"role": "assistant", "content": "a"}]})
    content = {
        "missing": None,
        "no_messages": '{"prompt": "q"}\n',
        "bad_json": good + "\n{oops\n",
        "empty": "",
        "not_assistant": json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n",
    }[setup]
    if content is not None:
        data.write_text(content)
    proc = run_cai("train", "sft", "--data", str(data), "--out", str(tmp_path / "out"),
                   "--model", "embedded", "--quiet", timeout=120)
    lines = _error_lines(proc)
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert needle in lines[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()  # nothing written for a rejected run


def test_bad_out_and_model_exit_2(tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "q"},
                                             {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    proc = run_cai("train", "sft", "--data", str(data), "--out", str(tmp_path / "busy"),
                   timeout=120)
    assert proc.returncode == 2 and len(_error_lines(proc)) == 1
    assert "folder is not empty" in proc.stderr
    proc = run_cai("train", "sft", "--data", str(data), "--out", str(tmp_path / "o"),
                   "--model", "openai:gpt-4o", timeout=120)
    assert proc.returncode == 2 and len(_error_lines(proc)) == 1
    assert "an API model cannot be trained" in proc.stderr


def test_train_help_lists_sft_without_importing_torch() -> None:
    code = ("import sys\nfrom cai.cli.app import build_app\nbuild_app()\n"
            "assert 'torch' not in sys.modules, 'torch imported at registration'\n"
            "assert 'trl' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=cai_env(), timeout=60)
    proc = run_cai("train", "--help", timeout=60)
    assert proc.returncode == 0 and "sft" in proc.stdout
    proc = run_cai("train", "sft", "--help", timeout=60)
    assert proc.returncode == 0
    for flag in ("--data", "--model", "--out", "--helpful", "--helpful-ratio", "--epochs", "--lr",
                 "--batch-size", "--grad-accum", "--max-length", "--max-steps", "--seed",
                 "--quiet"):
        assert flag in proc.stdout
