"""Label stage: SIGKILL anywhere resumes to the uninterrupted output; shards merge to one run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers import count_lines, kill_when, records_without_timing, run_cai

ARGS = [
    "label",
    "--prompts",
    "red-team",
    "--limit",
    "12",
    "--batch-size",
    "2",
    "--principles",
    "k",
    "--k",
    "2",
    "--constitution",
    "harmless",
    "--seed",
    "7",
    "--quiet",
]
MODELS = ["--policy", "fake:slow", "--judge", "fake:slow"]


def _label(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cai(*ARGS, *MODELS, "--out", str(out), *extra, check=True)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("label-baseline")
    _label(out)
    return out


def _kill_when(out: Path, lines: int | None, after_s: float | None) -> None:
    def ready() -> bool:
        return count_lines(out / "records.jsonl") >= (lines or 0)

    kill_when([*ARGS, *MODELS, "--out", str(out)], ready if lines is not None else None, after_s)


@pytest.mark.parametrize(
    ("lines", "after_s"),
    [(None, 0.3), (0, None), (2, None), (6, None), (10, None)],
    ids=["during-startup", "before-first-write", "after-2", "after-6", "after-10"],
)
def test_sigkill_then_resume_equals_uninterrupted(
    tmp_path: Path, baseline: Path, lines: int | None, after_s: float | None
) -> None:
    out = tmp_path / "run"
    _kill_when(out, lines, after_s)
    assert count_lines(out / "records.jsonl") < 12, "the run finished before it was killed"
    _label(out)
    got = records_without_timing(out / "records.jsonl")
    want = records_without_timing(baseline / "records.jsonl")
    assert [r["id"] for r in got] == [r["id"] for r in want], "lost or duplicated records"
    assert got == want
    assert (out / "preferences.jsonl").read_text() == (baseline / "preferences.jsonl").read_text()


def test_shards_merged_equal_unsharded(tmp_path: Path, baseline: Path) -> None:
    for i in range(2):
        _label(tmp_path / f"s{i}", "--shard", f"{i}/2")
    n0 = count_lines(tmp_path / "s0" / "records.jsonl")
    assert 0 < n0 < 12
    run_cai(
        "merge",
        str(tmp_path / "s0"),
        str(tmp_path / "s1"),
        "--out",
        str(tmp_path / "merged"),
        check=True,
    )
    merged = tmp_path / "merged"
    assert records_without_timing(merged / "records.jsonl") == records_without_timing(baseline / "records.jsonl")
    assert (merged / "preferences.jsonl").read_text() == (baseline / "preferences.jsonl").read_text()
    summary = json.loads((merged / "summary.json").read_text())
    want = json.loads((baseline / "summary.json").read_text())
    want.pop("throughput")
    assert summary == want


def test_baseline_records_and_exports(baseline: Path) -> None:
    recs = [json.loads(x) for x in (baseline / "records.jsonl").read_text().splitlines()]
    assert len(recs) == 12
    for r in recs:
        assert len(r["principles"]) == 2 and all(len(x["orders"]) == 2 for x in r["principles"])
        assert r["provenance"]["judge"] == "fake:slow" and r["provenance"]["policy"] == "fake:slow"
        assert r["response_a"].startswith("Response:") and r["response_a"] != r["response_b"]
    from datasets import load_from_disk

    ds = load_from_disk(str(baseline / "dataset"))
    summary = json.loads((baseline / "summary.json").read_text())
    assert len(ds) == summary["exported"] > 0
    assert all(p >= 0.5 for p in ds["p_chosen"])


def test_label_given_pairs_and_bad_usage(tmp_path: Path) -> None:
    proc = run_cai(
        "label",
        "--pairs",
        "judge-dev",
        "--limit",
        "4",
        "--judge",
        "fake",
        "--out",
        str(tmp_path / "p"),
        "--quiet",
        check=True,
    )
    assert "4 pairs" in proc.stdout
    recs = [json.loads(x) for x in (tmp_path / "p" / "records.jsonl").read_text().splitlines()]
    assert [r["pair_id"] for r in recs] == ["jd-001", "jd-002", "jd-003", "jd-004"]
    bad = run_cai("label", "--prompts", "red-team", "--judge", "fake", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "--policy" in bad.stderr and bad.stderr.count("\n") == 1
    both = run_cai(
        "label",
        "--pairs",
        "judge-dev",
        "--policy",
        "fake",
        "--judge",
        "fake",
        "--out",
        str(tmp_path / "y"),
    )
    assert both.returncode == 2 and "drop --policy" in both.stderr
