"""SL-CAI stage: a run killed with SIGKILL anywhere resumes to exactly the uninterrupted output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import count_lines, kill_when, records_without_timing, run_cai

ARGS = [
    "critique",
    "--prompts",
    "red-team",
    "--limit",
    "12",
    "--rounds",
    "2",
    "--batch-size",
    "2",
    "--constitution",
    "harmless",
    "--seed",
    "7",
    "--quiet",
]


def _critique(out: Path, model: str = "fake:slow", *extra: str) -> None:
    run_cai(*ARGS, "--model", model, "--out", str(out), *extra, check=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("baseline")
    _critique(out)
    return out


def _kill_when(out: Path, lines: int | None, after_s: float | None) -> None:
    def ready() -> bool:
        # lines == 0: as soon as the run folder exists, before any record is written.
        return (out / "run.json").exists() if lines == 0 else count_lines(out / "records.jsonl") >= (lines or 0)

    kill_when([*ARGS, "--model", "fake:slow", "--out", str(out)], ready if lines is not None else None, after_s)


@pytest.mark.parametrize(
    ("lines", "after_s"),
    [(None, 0.3), (0, None), (2, None), (5, None), (8, None), (10, None)],
    ids=["during-startup", "before-first-write", "after-2", "after-5", "after-8", "after-10"],
)
def test_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, baseline: Path, lines: int | None, after_s: float | None
) -> None:
    out = tmp_path / "run"
    _kill_when(out, lines, after_s)
    killed_at = count_lines(out / "records.jsonl")
    assert killed_at < 12, "the run finished before it could be killed; the test did not test resume"
    _critique(out)
    got = records_without_timing(out / "records.jsonl")
    want = records_without_timing(baseline / "records.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want], "lost or duplicated records"
    assert got == want
    assert (out / "sft.jsonl").read_text() == (baseline / "sft.jsonl").read_text()


def test_torn_last_line_is_redone(tmp_path: Path, baseline: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text((baseline / "run.json").read_text())
    full = (baseline / "records.jsonl").read_text().splitlines(keepends=True)
    # Three complete records, then half of the fourth, as a kill mid-write would leave.
    (out / "records.jsonl").write_text("".join(full[:3]) + full[3][: len(full[3]) // 2])
    _critique(out)
    assert records_without_timing(out / "records.jsonl") == records_without_timing(baseline / "records.jsonl")


def test_shards_merged_equal_unsharded(tmp_path: Path, baseline: Path) -> None:
    for i in range(2):
        _critique(tmp_path / f"s{i}", "fake:slow", "--shard", f"{i}/2")
    n0 = count_lines(tmp_path / "s0" / "records.jsonl")
    assert 0 < n0 < 12
    run_cai("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "merged"), check=True)
    assert records_without_timing(tmp_path / "merged" / "records.jsonl") == records_without_timing(
        baseline / "records.jsonl"
    )
    assert (tmp_path / "merged" / "sft.jsonl").read_text() == (baseline / "sft.jsonl").read_text()


def test_changed_settings_in_same_folder_is_an_error(tmp_path: Path, baseline: Path) -> None:
    out = tmp_path / "run"
    _critique(out)
    proc = run_cai(*ARGS, "--model", "fake:slow", "--out", str(out), "--max-new-tokens", "33")
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "run.json" in proc.stderr and "params" in proc.stderr


def test_records_carry_provenance_and_exports(baseline: Path) -> None:
    recs = [json.loads(x) for x in (baseline / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 12
    for r in recs:
        prov = r["provenance"]
        assert len(prov["fingerprint"]) == 16
        assert set(prov["templates"]) == {"critique", "revision", "comparison", "comparison_cot", "contrast"}
        assert prov["model"] == "fake:slow" and prov["seed"] == 7 and prov["rounds"] == 2
        assert len(r["rounds"]) == 2
        for rd in r["rounds"]:
            assert "@" in rd["principle"]
            assert rd["critique_prompt"][-1]["role"] == "user"
            assert rd["revision_prompt"][-2] == {"role": "assistant", "content": rd["critique"]}
    # Round 2 critiques the revision of round 1, not the initial answer.
    r = recs[0]
    if "unchanged" not in r["rounds"][0]["flags"]:
        assert r["rounds"][1]["critique_prompt"][-2]["content"] == r["rounds"][0]["revision"]
    from datasets import load_from_disk

    ds = load_from_disk(str(baseline / "dataset"))
    assert ds.column_names == ["messages"]  # TRL-facing: SFTTrainer's columns only
    assert load_from_disk(str(baseline / "dataset_prompt_completion")).column_names == ["prompt", "completion"]
    public = load_from_disk(str(baseline / "dataset_cai"))
    summary = json.loads((baseline / "summary.json").read_text())
    # The SFT set is the revisions, then the constitution's demonstrations (no cai.jsonl row).
    assert len(public) + summary["demonstrations"] == len(ds) and summary["demonstrations"] > 0
    for col in (
        "init_prompt",
        "init_response",
        "critic_prompt",
        "critic_response",
        "revision_prompt",
        "revision_response",
        "prompt",
        "messages",
        "chosen",
        "rejected",
    ):
        assert col in public.column_names
    assert summary["records"] == 12 and summary["exported"] == len(public)
    assert sum(summary["per_principle"].values()) == 24


def test_quiet_silences_model_loading_on_the_embedded_model(tmp_path: Path) -> None:
    small = ["critique", "--prompts", "red-team", "--limit", "1", "--rounds", "1", "--max-new-tokens", "4"]
    loud = run_cai(*small, "--model", "embedded", "--out", str(tmp_path / "loud"), check=True)
    quiet = run_cai(*small, "--model", "embedded", "--out", str(tmp_path / "quiet"), "--quiet", check=True)
    assert "Loading weights" in loud.stderr  # what --quiet has to silence (transformers' bar)
    assert "Loading weights" not in quiet.stderr
    assert "%|" not in quiet.stderr  # no progress bar of ours or a library's
    assert count_lines(tmp_path / "quiet" / "records.jsonl") == 1
