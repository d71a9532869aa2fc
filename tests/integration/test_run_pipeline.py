"""`cai run`: a recipe killed during two different stages resumes to the uninterrupted outputs,
and `cai report` renders in Chromium with figures that match the run's records."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.browser import chromium, is_blank, screenshot
from tests.helpers import count_lines, kill_when, records_without_timing, run_cai

pytestmark = pytest.mark.slow

# Data stages use the scripted fake model (fast, and slow enough per call to be killed mid-stage);
# the training stages train the real embedded model, and labels are sampled from the SFT model.
RECIPE = """
kind: recipe
name: tiny
constitution: harmless-concise
seed: 3
models: {policy: embedded, judge: "fake:slow"}
stages:
  critique: {model: "fake:slow", prompts: red-team, limit: 8, rounds: 2, batch_size: 2, max_new_tokens: 24}
  sft: {max_steps: 2, batch_size: 2, max_length: 128, lr: 1.0e-4}
  label: {prompts: red-team, skip: 8, limit: 6, batch_size: 2, principles: k, k: 2, max_new_tokens: 12}
  pm: {max_steps: 2, batch_size: 2, max_length: 128, lr: 1.0e-4}
"""


def _recipe(tmp: Path) -> Path:
    p = tmp / "tiny.yaml"
    p.write_text(RECIPE)
    return p


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("run")
    # Run in `work`, then move it aside: the killed run reuses the same folder, so the paths that
    # records cite (the SFT model as label policy) are the same in both.
    run_cai("run", str(_recipe(tmp)), "--out", str(tmp / "work"), "--quiet", check=True, timeout=1200)
    (tmp / "work").rename(tmp / "base")
    return tmp / "base"


def _run_until(recipe: Path, out: Path, records: Path, lines: int) -> int:
    """Start `cai run`, SIGKILL it once `records` has `lines` lines; return the lines then."""
    kill_when(["run", str(recipe), "--out", str(out), "--quiet"], lambda: count_lines(records) >= lines, timeout=900)
    return count_lines(records)


def test_killed_in_two_stages_resumes_to_same_outputs(tmp_path: Path, baseline: Path) -> None:
    recipe, out = _recipe(tmp_path), baseline.parent / "work"
    at_critique = _run_until(recipe, out, out / "critique" / "records.jsonl", 2)
    assert 0 < at_critique < 8, "not killed during the critique stage"
    at_label = _run_until(recipe, out, out / "label" / "records.jsonl", 1)
    assert json.loads((out / "critique" / "stage.json").read_text())["status"] == "done"
    assert json.loads((out / "label" / "stage.json").read_text())["status"] == "running"
    assert at_label < count_lines(baseline / "label" / "records.jsonl"), "not killed during labelling"
    run_cai("run", str(recipe), "--out", str(out), "--quiet", check=True, timeout=1200)
    for stage in ("critique", "label"):
        assert records_without_timing(out / stage / "records.jsonl") == \
            records_without_timing(baseline / stage / "records.jsonl"), stage
    for f in ("critique/sft.jsonl", "label/preferences.jsonl"):
        assert (out / f).read_text() == (baseline / f).read_text(), f
    log = (out / "log.txt").read_text()
    assert "critique: done already" in log and "label: resuming" in log
    import shutil

    shutil.rmtree(out)


def test_rerun_skips_finished_stages_and_set_overrides(tmp_path: Path, baseline: Path) -> None:
    recipe = _recipe(tmp_path)
    out = tmp_path / "again"
    import shutil

    shutil.copytree(baseline, out)
    # Skipped, not redone: every record file and trained weight is left as it was, untouched.
    kept = [p for pattern in ("*/records.jsonl", "**/*.safetensors") for p in out.glob(pattern)]
    assert kept
    before = {p: p.stat().st_mtime_ns for p in kept}
    run_cai("run", str(recipe), "--out", str(out), "--quiet", "--no-report", check=True)
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert (out / "log.txt").read_text().count("done already") >= 4
    # Changing a stage's settings redoes that stage and everything after it, keeping the old one.
    run_cai("run", str(recipe), "--out", str(out), "--quiet", "--no-report", "--set", "stages.pm.max_steps=1",
            check=True, timeout=600)
    assert (out / "log.txt").read_text().count("pm: inputs changed") == 1
    assert any(p.name.startswith("pm.old-") for p in out.iterdir())
    bad = run_cai("run", str(recipe), "--out", str(out), "--set", "stages.pm.max_stepz=1")
    assert bad.returncode == 2 and "max_stepz" in bad.stderr and "did you mean 'max_steps'" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (the README's test command installs it)")
def test_report_renders_and_matches_records(tmp_path: Path, baseline: Path) -> None:
    report = baseline / "report.html"
    assert report.is_file()
    console = screenshot(report, tmp_path / "report.png")
    assert console == [], f"console messages: {console}"
    assert not is_blank(tmp_path / "report.png")
    html = report.read_text()
    data = json.loads(html.split("id='cai-data'>", 1)[1].split("</script>", 1)[0])
    crit = [json.loads(x) for x in (baseline / "critique" / "records.jsonl").read_text().splitlines()]
    assert data["critique"]["per_principle"] == dict(Counter(x["principle"] for r in crit for x in r["rounds"]))
    assert data["critique"]["records"] == len(crit)
    labels = [json.loads(x) for x in (baseline / "label" / "records.jsonl").read_text().splitlines()]
    assert sorted(data["label"]["p_chosen"]) == sorted(r["p_chosen"] for r in labels if r["p_chosen"] is not None)
    summary = json.loads((baseline / "label" / "summary.json").read_text())
    assert data["label"]["order_consistency"] == summary["order_consistency"]
    assert html.count("<figure class='plot'") >= 3 and html.count("<svg") >= 3  # plots are inline SVG


def test_console_check_catches_errors(tmp_path: Path) -> None:
    """The report check above can fail: a page with a script error is caught."""
    if chromium() is None:
        pytest.skip("needs Debian's chromium (the README's test command installs it)")
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>missingFunction()</script></body></html>")
    assert any("missingFunction" in m for m in screenshot(page, tmp_path / "bad.png"))


def test_shipped_api_judge_recipe_labels_through_llama_cpp(tmp_path: Path, llama_base_url: str) -> None:
    """recipes/api-judge.yaml as shipped, shrunk with --set and pointed at the test's llama.cpp
    server: labels come from the endpoint's log-probabilities and no key reaches the run folder."""
    key = "sk-test-secret-0123456789"
    sets = [
        f"models.base_url={llama_base_url}",
        "stages.critique.limit=2", "stages.critique.rounds=1", "stages.critique.max_new_tokens=16",
        "stages.sft.max_steps=1", "stages.sft.max_length=128",
        "stages.label.limit=2", "stages.label.k=2", "stages.label.max_new_tokens=16",
        "stages.pm=null", "stages.ppo=null", "stages.eval=null",
    ]
    args = ["run", "api-judge", "--out", str(tmp_path / "run"), "--quiet", "--no-report"]
    run_cai(*args, *[x for s in sets for x in ("--set", s)], check=True, timeout=900, env={"OPENAI_API_KEY": key})
    rows = [json.loads(line) for line in (tmp_path / "run" / "label" / "records.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    done = json.loads((tmp_path / "run" / "label" / "stage.json").read_text())
    assert done["status"] == "done"
    text = "".join(f.read_text(errors="replace") for f in (tmp_path / "run").rglob("*") if f.is_file()
                   and f.suffix in {".json", ".jsonl", ".txt"})
    assert key not in text
    assert all(r["provenance"]["judge"] == "openai:judge" for r in rows)
    answers = [o for r in rows for p in r["principles"] for o in p["orders"]]
    assert len(answers) == 2 * 2 * 2  # pairs × k principles × both orders
    assert all(o["path"] == "logprobs" and o["error"] is None and 0 < o["mass"] <= 1 for o in answers)
