"""Errors by role: an option given a value it cannot take, and a file or folder an option named,
each read the same way wherever they are raised; the CLI shows them as one line with exit 2."""

from __future__ import annotations

import ast
from pathlib import Path

from cai.errors import fail, file_error, option_error
from tests.helpers import invoke

CAI = Path(__file__).resolve().parents[2] / "cai"


def test_option_and_file_errors_read_by_role() -> None:
    assert str(option_error("--shard", "expected i/N, got 'x'")) == "--shard: expected i/N, got 'x'"
    assert str(option_error("--model", "cannot be trained", value="openai:m")) == "--model: openai:m: cannot be trained"
    folder = file_error(Path("/r/out"), "--out", "exists and is not a folder")
    assert str(folder) == "/r/out: --out: exists and is not a folder"
    assert str(fail("/r/c.yaml", 4, "name", "missing")) == "/r/c.yaml:4: name: missing"


def test_no_call_puts_an_option_where_a_file_goes() -> None:
    """`fail(PATH, LINE, FIELD, …)` with an option (``--x``, ``stages.…``, ``models.…``) as PATH is
    the swapped call `option_error` replaced; a literal option as FIELD with no line is `file_error`'s."""
    swapped = []
    for path in CAI.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "fail" and len(node.args) >= 3:
                first, line, field = node.args[:3]
                literal = isinstance(first, ast.Constant) and isinstance(first.value, str)
                if literal and first.value.startswith(("--", "stages.", "models.")):
                    swapped.append(f"{path.name}:{node.lineno}")
                named = isinstance(field, ast.Constant) and str(field.value).startswith("--")
                if named and isinstance(line, ast.Constant) and line.value is None:
                    swapped.append(f"{path.name}:{node.lineno}")
    assert swapped == [], swapped


def test_a_swapped_call_fixed_reads_once(tmp_path: Path) -> None:
    """Before: `--shard: shard: expected i/N …`, the option named twice."""
    r = invoke("critique", "--prompts", "red-team", "--model", "fake", "--shard", "x", "--out", str(tmp_path / "o"))
    assert r.code == 2 and r.stderr.strip() == "--shard: expected i/N, got 'x'", r.stderr
