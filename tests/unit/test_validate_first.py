"""Validate before writing: what can fail without a model call fails before the output folder
exists, and a folder that holds no records never blocks the corrected command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.io.store import Store
from tests.helpers import invoke

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """A constitution whose critique template declares a variable no stage supplies."""
    source = (ROOT / "prompts" / "critique.jinja").read_text()
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "critique.jinja").write_text(
        source.replace("{critique_request: text}", "{critique_request: text, mood: text}")
    )
    (tmp_path / "c.yaml").write_text(
        "kind: constitution\nname: t\nversion: 1\ninclude: harmless\ntemplate_dirs: [tpl]\n"
    )
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    return tmp_path


def _fix(tmp: Path) -> None:
    (tmp / "tpl" / "critique.jinja").unlink()


def test_critique_with_a_broken_template_writes_nothing_and_the_fix_runs(broken: Path) -> None:
    argv = ("critique", "--model", "fake", "-c", "c.yaml", "--prompts", "p.jsonl", "--out", "o", "--rounds", "1")
    r = invoke(*argv, cwd=broken)
    assert r.code == 2 and "no value given for mood" in r.stderr and "Traceback" not in r.stderr
    assert not (broken / "o").exists()
    _fix(broken)
    again = invoke(*argv, cwd=broken)
    assert again.code == 0, again.stderr


def test_run_with_a_broken_template_makes_no_run_folder(broken: Path) -> None:
    (broken / "r.yaml").write_text(
        "kind: recipe\nname: t\nconstitution: c.yaml\nmodels: {policy: fake, judge: fake}\n"
        "stages:\n  critique: {prompts: p.jsonl, rounds: 1}\n"
    )
    r = invoke("run", "r.yaml", "--out", "run", "-q", "--no-report", cwd=broken)
    assert r.code == 2 and "no value given for mood" in r.stderr
    assert not (broken / "run").exists()
    _fix(broken)
    assert invoke("run", "r.yaml", "--out", "run", "-q", "--no-report", cwd=broken).code == 0


def test_a_comparison_template_the_judge_cannot_fill_stops_label_before_its_folder(tmp_path: Path) -> None:
    source = (ROOT / "prompts" / "comparison.jinja").read_text()
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "comparison.jinja").write_text(source.replace("question: text", "question: text, tone: text"))
    (tmp_path / "c.yaml").write_text(
        "kind: constitution\nname: t\nversion: 1\ninclude: harmless\ntemplate_dirs: [tpl]\n"
    )
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    r = invoke(
        "label",
        "--judge",
        "fake",
        "--policy",
        "fake",
        "-c",
        "c.yaml",
        "--prompts",
        "p.jsonl",
        "--out",
        "o",
        cwd=tmp_path,
    )
    assert r.code == 2 and "tone" in r.stderr and not (tmp_path / "o").exists()


def test_a_folder_without_records_takes_the_new_settings(tmp_path: Path) -> None:
    with Store(tmp_path, {"settings": 1}):
        pass
    with Store(tmp_path, {"settings": 2}) as store:  # nothing recorded under the old settings
        assert store.records == []
    assert json.loads((tmp_path / "run.json").read_text())["settings"] == 2
    (tmp_path / "records.jsonl").write_text('{"id": "a"}\n')
    with pytest.raises(Exception, match="different settings"):
        Store(tmp_path, {"settings": 3})


@pytest.mark.parametrize("spec", ["openai:gp\x01t", "fake\x1b[2J", "openai:a\u2028b"])
def test_a_model_spec_with_a_control_character_is_refused_before_any_folder(tmp_path: Path, spec: str) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    r = invoke("critique", "--model", spec, "--prompts", "p.jsonl", "--out", "o", cwd=tmp_path)
    assert r.code == 2 and "one line of printable text" in r.stderr and not (tmp_path / "o").exists()


def test_a_principle_over_the_render_budget_stops_critique_before_its_folder(tmp_path: Path) -> None:
    long = "x " * 600_000  # 1.2 M characters: over the renderer's 1 M budget
    (tmp_path / "lib.yaml").write_text(
        "kind: critique-principles\nversion: 1\ndescription: d\nprinciples:\n"
        f'  - id: long-one\n    critique: "{long}"\n    revision: Rewrite it.\n'
    )
    (tmp_path / "c.yaml").write_text(
        "kind: constitution\nname: cl\nversion: 1\nlibraries: [lib.yaml, comparison]\ncritique:\n  rounds: 1\n"
    )
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    r = invoke("critique", "--model", "fake", "-c", "c.yaml", "--prompts", "p.jsonl", "--out", "o", cwd=tmp_path)
    assert r.code == 2 and "rendered text too large" in r.stderr and not (tmp_path / "o").exists()
