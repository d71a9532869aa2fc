"""The one reader's edge cases, options checked in their settings models, and `cai validate`
checking a recipe the way a run would, reporting every problem at once (issue 15, items 5-6)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from cai.cli.options import check_out
from cai.errors import CaiError
from cai.io.readers import iter_jsonl, read_json_file
from cai.io.sources import load_prompts
from cai.models.settings import BackendSettings
from cai.run.recipe import Recipe
from tests.helpers import invoke

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "bad_inputs"


def one_line(e: CaiError) -> str:
    text = str(e)
    assert "\n" not in text
    return text


def test_json_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "stage.json"
    p.write_text('{\n  "stage": "critique",\n  "key": \n}\n')
    with pytest.raises(CaiError) as e:
        read_json_file(p)
    assert one_line(e.value).startswith(f"{p}:4: not valid JSON (")
    p.write_text("[1, 2]")
    with pytest.raises(CaiError) as e:
        read_json_file(p, kind="stage state")
    assert one_line(e.value) == f"{p}: must be a JSON object (a stage state)"
    p.write_bytes(b'{"x": "caf\xe9"}')
    with pytest.raises(CaiError) as e:
        read_json_file(p)
    assert one_line(e.value).startswith(f"{p}:1: not UTF-8 text")
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CaiError) as e:
        read_json_file(p)
    assert one_line(e.value) == f"{p}:1: nested too deep to read"
    with pytest.raises(CaiError) as e:
        read_json_file(tmp_path / "nothere.json")
    assert one_line(e.value).endswith("nothere.json: no such file")
    with pytest.raises(CaiError) as e:
        read_json_file(tmp_path)
    assert "is a folder" in one_line(e.value)
    p.write_text(json.dumps({"stage": "critique"}))
    assert read_json_file(p) == {"stage": "critique"}


def test_jsonl_depth_bom_and_required_keys(tmp_path: Path) -> None:
    p = tmp_path / "rows.jsonl"
    p.write_text('{"id": "a"}\n' + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(CaiError) as e:
        list(iter_jsonl(p))
    assert one_line(e.value) == f"{p}:2: nested too deep to read"
    # A byte-order mark (Windows editors write one) is not a broken first line.
    p.write_bytes(b'\xef\xbb\xbf{"prompt": "hi"}\n')
    assert [item.text for item in load_prompts(str(p))] == ["hi"]
    p.write_text('{"id": "a"}\n{"x": 1}\n')
    with pytest.raises(CaiError) as e:
        list(iter_jsonl(p, require=("id",)))
    assert one_line(e.value) == f"{p}:2: id: missing"


@pytest.mark.parametrize(
    "row, field",
    [
        ({"messages": [{"role": "user"}]}, "messages[0].content: missing"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages[0].content: empty"),
        ({"messages": [{"role": "user", "content": ["x"]}]}, "messages[0].content: not text"),
        ({"prompt": [{"role": "system", "content": " "}, {"role": "user", "content": "x"}]}, "prompt[0].content"),
    ],
)
def test_a_turn_without_text_is_not_an_empty_prompt(tmp_path: Path, row: dict, field: str) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text(json.dumps(row) + "\n")
    with pytest.raises(CaiError) as e:
        load_prompts(str(p))
    assert one_line(e.value).startswith(f"{p}:1: {field}")


def test_backend_dtype_and_device_are_checked_where_defined() -> None:
    assert BackendSettings(dtype="bfloat16", device="cuda:1").dtype == "bfloat16"
    assert BackendSettings(dtype="FP16", device="MPS").device == "MPS"
    with pytest.raises(ValidationError, match="unknown dtype 'fp99'"):
        BackendSettings(dtype="fp99")
    with pytest.raises(ValidationError, match="unknown device 'tpu'"):
        BackendSettings(device="tpu")


def test_recipe_model_specs_parse_at_validation_time() -> None:
    base = {"kind": "recipe", "name": "x", "stages": {"critique": {}}}
    Recipe.model_validate({**base, "models": {"policy": "fake:always-a", "judge": "openai:gpt-4o-mini"}})
    with pytest.raises(ValidationError, match="unknown fake mode 'nonsense'"):
        Recipe.model_validate({**base, "models": {"judge": "fake:nonsense"}})
    with pytest.raises(ValidationError, match="needs a model name"):
        Recipe.model_validate({**base, "stages": {"critique": {"model": "openai:"}}})


def test_validate_reports_every_problem_of_a_recipe() -> None:
    r = invoke("validate", str(FIXTURES / "r_multi.yaml"))
    assert r.code == 2
    lines = r.stderr.strip().splitlines()
    assert lines[-1] == "5 problem(s) in 1 file(s)"
    path = str(FIXTURES / "r_multi.yaml")
    for needle in (
        f"{path}:4: models.policy: unknown fake mode",
        f"{path}:6: models.dtype: unknown dtype 'fp99'",
        f"{path}:9: stages.critique.prompts: no such file or folder: nothere.jsonl",
        f"{path}:11: stages.critique.rounds: ",
        f"{path}:15: stages.label.clamp: ",
    ):
        assert sum(line.startswith(needle) for line in lines) == 1, (needle, lines)
    assert "Traceback" not in r.stderr


def test_validate_passes_a_recipe_a_run_accepts() -> None:
    r = invoke("validate", str(FIXTURES / "recipe_ok.yaml"))
    assert (r.code, r.stderr) == (0, "")


def test_a_run_stops_before_any_stage_on_what_validate_finds(tmp_path: Path) -> None:
    """`cai run` checks the prompts before it writes a thing: no recipe.json, no log."""
    r = invoke("run", str(FIXTURES / "r_utf8_prompts.yaml"), "--out", str(tmp_path / "run"))
    assert r.code == 2
    assert r.stderr.strip().endswith("p_bad_utf8.jsonl:2: not UTF-8 text (byte 16 of the line)")
    assert not (tmp_path / "run").exists()


def test_out_checks(tmp_path: Path) -> None:
    check_out(tmp_path / "new" / "deeper")  # not there yet: fine
    check_out(tmp_path)  # an existing folder: fine
    (tmp_path / "f").write_text("x")
    with pytest.raises(CaiError, match="exists and is not a folder"):
        check_out(tmp_path / "f")
    with pytest.raises(CaiError, match="is a file, not a folder"):
        check_out(tmp_path / "f" / "out")
