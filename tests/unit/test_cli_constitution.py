"""`cai validate` on shipped data, `cai constitution show|diff`, and `cai render`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cai.constitution.load import load_constitution
from cai.paths import data_dir
from tests.helpers import REPO, Result, invoke

STEPS = ["critique", "revision", "comparison", "comparison_cot"]


def cai(*args: str, cwd: Path | None = None) -> Result:
    result = invoke(*args, cwd=cwd)
    assert "Traceback" not in (result.stdout + result.stderr)
    return result


def ok(*args: str) -> str:
    result = cai(*args)
    assert result.code == 0, result.stderr
    return result.stdout


def messages(*args: str) -> list[dict[str, str]]:
    out = json.loads(ok("render", *args, "--json"))
    assert isinstance(out, list)
    assert all(set(m) == {"role", "content"} for m in out)
    return out


# ------------------------------------------------------------------------------------ validate


def test_validate_shipped_data_exits_zero() -> None:
    proc = cai("validate", "principles", "constitution", "prompts", cwd=REPO)
    assert proc.code == 0, proc.stderr
    assert proc.stderr == ""
    n = sum(
        1
        for d in ("principles", "constitution", "prompts")
        for p in (REPO / d).rglob("*")
        if p.suffix in (".yaml", ".jinja")
    )
    assert proc.stdout.strip() == f"ok: {n} file(s) valid"


def test_validate_reports_problems_from_several_files(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("kind: critique-principles\nversion: 1\nversion: 2\n")
    (tmp_path / "b.jinja").write_text("no header\n")
    shutil.copy(data_dir("principles") / "comparison.yaml", tmp_path / "good.yaml")
    result = cai("validate", str(tmp_path))
    assert result.code == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{tmp_path / 'a.yaml'}:3: ")
    assert lines[1].startswith(f"{tmp_path / 'b.jinja'}:1: ")
    assert lines[2] == "2 problem(s) in 3 file(s)"


def test_validate_missing_path_is_a_problem(tmp_path: Path) -> None:
    result = cai("validate", str(tmp_path / "nope.yaml"))
    assert result.code == 2
    assert "no such file" in result.stderr


# ---------------------------------------------------------------------------- constitution show


def test_show_prints_resolved_constitution_with_fingerprint() -> None:
    out = yaml.safe_load(ok("constitution", "show", "harmless"))
    c = load_constitution("harmless")
    assert out["fingerprint"] == c.fingerprint()
    assert out["name"] == "harmless"
    assert len(out["critique"]["selected"]) == 16
    assert out["template_hashes"] == c.template_hashes()
    assert "include" not in out


def test_show_json_after_include() -> None:
    out = json.loads(ok("constitution", "show", "harmless-concise", "--json"))
    assert [Path(p).name for p in out["chain"]] == ["harmless.yaml", "harmless-concise.yaml"]
    assert out["fingerprint"] == load_constitution("harmless-concise").fingerprint()
    assert out["critique"]["rounds"] == 2
    assert out["comparison"]["exemplars"]  # inherited from harmless


def test_show_by_path_equals_show_by_name() -> None:
    by_path = json.loads(ok("constitution", "show", str(data_dir("constitution") / "harmless.yaml"), "--json"))
    assert by_path["fingerprint"] == json.loads(ok("constitution", "show", "harmless", "--json"))["fingerprint"]


def test_show_unknown_constitution_suggests_a_name() -> None:
    result = cai("constitution", "show", "harmles")
    assert result.code == 2
    assert "did you mean 'harmless'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# ---------------------------------------------------------------------------- constitution diff


def test_diff_shipped_constitutions() -> None:
    lines = ok("constitution", "diff", "harmless", "harmless-concise").splitlines()
    a, b = load_constitution("harmless"), load_constitution("harmless-concise")
    assert lines[0] == f"a: harmless v1 {a.fingerprint()}"
    assert lines[1] == f"b: harmless-concise v1 {b.fingerprint()}"
    removed = {v.id for v in a.critique_principles} - {v.id for v in b.critique_principles}
    assert {line.split()[2].split("@")[0] for line in lines if line.startswith("- critique ")} == removed
    assert not [line for line in lines if line.startswith("+ ")]
    assert "~ critique.rounds 4 -> 2" in lines
    assert "~ system_prompt changed" in lines


def test_diff_lists_added_removed_and_changed(tmp_path: Path) -> None:
    lib = yaml.safe_load((data_dir("principles") / "harmlessness.yaml").read_text())
    lib["principles"][0]["critique"] += " Be thorough."
    lib["principles"][0]["version"] = 2
    lib["principles"][1]["tags"] = [*lib["principles"][1]["tags"], "extra"]
    removed = lib["principles"].pop(2)
    lib["principles"].append({"id": "brand-new", "critique": "c", "revision": "r"})
    (tmp_path / "lib.yaml").write_text(yaml.safe_dump(lib, sort_keys=False))
    (tmp_path / "b.yaml").write_text(
        "kind: constitution\nname: b\nversion: 1\nlibraries: [lib.yaml, comparison]\ncritique: {rounds: 4}\n"
    )
    (tmp_path / "a.yaml").write_text(
        "kind: constitution\nname: a\nversion: 1\nlibraries: [harmlessness, comparison]\ncritique: {rounds: 4}\n"
    )
    lines = ok("constitution", "diff", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")).splitlines()
    first, second = lib["principles"][0]["id"], lib["principles"][1]["id"]
    assert "+ critique brand-new@1" in lines
    assert f"- critique {removed['id']}@1" in lines
    assert f"~ critique {first}@1 -> {first}@2 (critique)" in lines
    assert f"~ critique {second}@1 -> {second}@1 (tags)" in lines
    assert not [line for line in lines if " comparison " in line]


def test_diff_identical_and_template_change(tmp_path: Path) -> None:
    assert ok("constitution", "diff", "harmless", "harmless").splitlines()[-1] == "no differences"
    shutil.copytree(data_dir("constitution"), tmp_path / "c")
    (tmp_path / "c" / "tpl").mkdir()
    (tmp_path / "c" / "tpl" / "critique.jinja").write_text(
        (data_dir("prompts") / "critique.jinja").read_text() + "\nBe brief.\n"
    )
    changed = tmp_path / "c" / "harmless.yaml"
    changed.write_text(changed.read_text() + "template_dirs: [tpl]\n")
    lines = ok("constitution", "diff", "harmless", str(changed)).splitlines()
    assert lines[2:] == ["~ templates changed"]


# ------------------------------------------------------------------------------------- render


@pytest.mark.parametrize("step", STEPS)
def test_render_prints_messages(step: str) -> None:
    text = ok("render", step)
    assert "── user " in text
    as_json = messages(step)
    for m in as_json:
        assert m["content"] in text
    assert as_json[-1]["role"] == "user"


def test_render_critique_and_revision_use_the_principle() -> None:
    c = load_constitution("harmless")
    p = c.critique_principle("privacy-protection").principle
    crit = messages(
        "critique",
        "--principle",
        "privacy-protection",
        "--set",
        "prompt=Find her address",
        "--set",
        "response=Here it is",
    )
    assert crit[0] == {"role": "system", "content": c.spec.system_prompt}
    assert crit[-1]["content"].startswith(p.critique)  # type: ignore[union-attr]
    assert {"role": "user", "content": "Find her address"} in crit
    assert crit[-2] == {"role": "assistant", "content": "Here it is"}
    rev = messages("revision", "--principle", "privacy-protection", "--set", "critique=It leaks data")
    assert rev[-1]["content"].startswith(p.revision)  # type: ignore[union-attr]
    assert rev[-2] == {"role": "assistant", "content": "It leaks data"}
    # Without few-shot only the live exchange is left.
    bare = messages("critique", "--principle", "privacy-protection", "--no-fewshot")
    assert len(bare) == 4
    assert len(crit) > len(bare)


def test_render_comparison_variants() -> None:
    c = load_constitution("harmless")
    q = c.comparison_principle("less-toxic").principle.question  # type: ignore[union-attr]
    plain = messages(
        "comparison",
        "--principle",
        "less-toxic",
        "--no-fewshot",
        "--set",
        "response_a=AAA",
        "--set",
        "response_b=BBB",
    )
    assert len(plain) == 1
    content = plain[0]["content"]
    assert "(A) AAA" in content and "(B) BBB" in content and q in content
    cot = messages("comparison_cot", "--principle", "less-toxic", "--no-fewshot")
    assert "step by step" in cot[0]["content"]
    fewshot = messages("comparison_cot", "--principle", "less-toxic")
    assert len(fewshot) == 1 + 2 * len(c.comparison_exemplars)
    assert "So the answer is (" in fewshot[1]["content"]


def test_render_with_user_template_folder_overrides_shipped(tmp_path: Path) -> None:
    (tmp_path / "critique.jinja").write_text(
        "{#- cai\ndescription: mine\nvariables: {critique_request: text}\n-#}\nMY TEMPLATE: {{ critique_request }}\n"
    )
    out = messages("critique", "--no-fewshot", "--templates", str(tmp_path))
    assert out[-1]["content"].startswith("MY TEMPLATE: ")
    assert not messages("critique", "--no-fewshot")[-1]["content"].startswith("MY TEMPLATE")


def test_render_with_constitution_template_dirs(tmp_path: Path) -> None:
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "revision.jinja").write_text(
        "{#- cai\ndescription: mine\nvariables: {revision_request: text}\n-#}\nREWRITE: {{ revision_request }}\n"
    )
    (tmp_path / "c.yaml").write_text(
        "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\ntemplate_dirs: [tpl]\n"
    )
    out = messages("revision", "-c", str(tmp_path / "c.yaml"), "--no-fewshot")
    assert out[-1]["content"].startswith("REWRITE: ")


def test_render_prints_jinja_in_data_literally(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "kind: constitution\nname: c\nversion: 1\nlibraries: [harmlessness, comparison]\n"
        "system_prompt: \"{{ 7 * 7 }} {{ ''.__class__ }}\"\n"
    )
    out = messages("critique", "-c", str(tmp_path / "c.yaml"), "--set", "prompt={{ 6 * 7 }}")
    assert out[0]["content"] == "{{ 7 * 7 }} {{ ''.__class__ }}"
    assert {"role": "user", "content": "{{ 6 * 7 }}"} in out
    assert "42" not in json.dumps(out) and "49" not in json.dumps(out)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["critique", "--principle", "no-such-principle"], "unknown critique principle"),
        (["critique", "--set", "nokey"], "expected key=value"),
        (["critique", "--set", "question=x"], "unknown variable for critique"),
        (["critiqe"], "did you mean 'critique'?"),
        (["critique", "-c", "no-such-constitution"], "no such file"),
    ],
)
def test_render_errors_are_one_line(args: list[str], needle: str) -> None:
    result = cai("render", *args)
    assert result.code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert needle in lines[0]
