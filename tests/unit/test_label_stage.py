"""The label stage in-process: records, exports, resume, failure threshold (scripted models)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.errors import CaiError
from cai.io.pairs import load_pairs
from cai.io.sources import PromptItem, load_prompts
from cai.stages.label import label_pairs, label_prompts
from cai.stages.settings import LabelSettings
from tests.doubles import ScriptedJudge, ScriptedPolicy


def prefers_lower(a: str, b: str, q: str) -> float:
    """Prefers the reply whose text sorts first; a little position bias on top."""
    return 0.75 if a < b else 0.35


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


@pytest.fixture(scope="module")
def prompts() -> list[PromptItem]:
    return load_prompts("red-team", 6)


def _read(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines()]


def test_records_exports_and_summary(tmp_path: Path, c: Constitution, prompts: list[PromptItem]) -> None:
    s = LabelSettings(principles="k", k=2, responses_per_prompt=3, batch_size=4)
    summary = label_prompts(c, ScriptedJudge(prefers_lower), ScriptedPolicy(), prompts, tmp_path, s, seed=1, quiet=True)
    recs = _read(tmp_path)
    assert len(recs) == 6 * 3 and [r["order"] for r in recs] == list(range(18))
    for r in recs:
        assert r["responses"] in ([0, 1], [0, 2], [1, 2]) and len(r["principles"]) == 2
        assert all(len(x["orders"]) == 2 and x["orders"][0]["prompt"].endswith("A or B.") for x in r["principles"])
        assert r["chosen"] == ("a" if r["response_a"] < r["response_b"] else "b")
        assert r["p_chosen"] == pytest.approx(0.7) and r["p_a"] == pytest.approx(0.7 if r["chosen"] == "a" else 0.3)
        prov = r["provenance"]
        assert prov["judge"] == "scripted" and prov["policy"] == "scripted-policy" and prov["seed"] == 1
        assert len(prov["fingerprint"]) == 16 and set(prov["templates"]) >= {
            "comparison",
            "comparison_cot",
        }
        assert prov["judge_settings"]["principles"] == "k" and prov["params"]["n"] == 1
        assert {"judge_seconds", "generate_seconds"} <= set(prov["timing"])
    rows = [json.loads(x) for x in (tmp_path / "preferences.jsonl").read_text().splitlines()]
    assert len(rows) == 18
    for row, r in zip(rows, recs, strict=True):
        assert row["prompt"] == r["prompt"] and row["p_chosen"] >= 0.5
        assert row["chosen"][0]["content"] == min(r["response_a"], r["response_b"])
        assert set(row) == {"prompt", "chosen", "rejected", "p_chosen", "p_chosen_logit"}
        assert row["p_chosen_logit"] == pytest.approx(math.log(row["p_chosen"] / (1 - row["p_chosen"])))
    prov = [json.loads(x) for x in (tmp_path / "provenance.jsonl").read_text().splitlines()]
    assert [p["id"] for p in prov] == [r["id"] for r in recs]
    for p, r in zip(prov, recs, strict=True):
        assert p["fingerprint"] == r["provenance"]["fingerprint"] and len(p["principles"]) == 2
    from datasets import load_from_disk

    ds = load_from_disk(str(tmp_path / "dataset"))
    assert ds.column_names == ["prompt", "chosen", "rejected", "p_chosen", "p_chosen_logit"] and len(ds) == 18
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk == summary
    assert summary["order_consistency"] == 1.0 and summary["labels"]["n"] == 18
    assert summary["throughput"]["judged_pairs"] == 18 and summary["throughput"]["labels_s"] > 0
    assert summary["failures"]["question_rate"] == 0.0
    assert summary["per_principle"] and summary["principle_disagreement"]["pairs"]


def test_resume_skips_finished_chunks_and_matches(tmp_path: Path, c: Constitution, prompts: list[PromptItem]) -> None:
    s = LabelSettings(batch_size=2)
    full = tmp_path / "full"
    label_prompts(c, ScriptedJudge(prefers_lower), ScriptedPolicy(), prompts, full, s, quiet=True)
    part = tmp_path / "part"
    part.mkdir()
    (part / "run.json").write_text((full / "run.json").read_text())
    lines = (full / "records.jsonl").read_text().splitlines(keepends=True)
    (part / "records.jsonl").write_text("".join(lines[:3]) + lines[3][:40])  # 1.5 chunks, torn
    policy, judge = ScriptedPolicy(), ScriptedJudge(prefers_lower)
    label_prompts(c, judge, policy, prompts, part, s, quiet=True)
    assert len(policy.calls) == 2  # chunk 0 was complete; chunks 1 (torn) and 2 are redone

    def strip(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "provenance"} for r in recs]

    assert strip(_read(part)) == strip(_read(full))


def test_identical_replies_are_flagged_not_judged(tmp_path: Path, c: Constitution, prompts: list[PromptItem]) -> None:
    judge = ScriptedJudge(prefers_lower)
    with pytest.raises(CaiError, match="none of the 2 pairs has a preferred side"):  # nothing usable: exit 2
        label_prompts(c, judge, ScriptedPolicy(identical=True), prompts[:2], tmp_path, LabelSettings(), quiet=True)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["identical"] == 2 and summary["exported"] == 0
    assert all(r["flags"] == ["identical"] and r["p_a"] is None for r in _read(tmp_path))
    assert not (tmp_path / "dataset").exists()


def test_too_many_parse_failures_fail_the_run_after_writing(
    tmp_path: Path, c: Constitution, prompts: list[PromptItem]
) -> None:
    def flaky(a: str, b: str, q: str) -> float | None:
        return None if q.startswith("Which") else prefers_lower(a, b, q)  # all but one fail

    with pytest.raises(CaiError, match="gave no option probabilities") as e:
        label_prompts(
            c,
            ScriptedJudge(flaky),
            ScriptedPolicy(),
            prompts[:2],
            tmp_path,
            LabelSettings(principles="all"),
            quiet=True,
        )
    assert "records.jsonl" in str(e.value)
    assert len(_read(tmp_path)) == 2  # nothing is lost: the records stay for inspection
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failures"]["failed_questions"] > 0
    assert summary["failures"]["examples"][0]["raw"] == "I cannot decide."
    # A higher threshold accepts the same run.
    out2 = tmp_path / "lenient"
    ok = label_prompts(
        c,
        ScriptedJudge(flaky),
        ScriptedPolicy(),
        prompts[:2],
        out2,
        LabelSettings(principles="all", max_failures=0.95),
        quiet=True,
    )
    assert ok["exported"] == 2


def test_given_pairs_keep_the_human_label(tmp_path: Path, c: Constitution) -> None:
    pairs = load_pairs("judge-dev", limit=6)
    chosen = {p.a for p in pairs}
    judge = ScriptedJudge(lambda a, b, q: 0.8 if a in chosen else 0.3)
    summary = label_pairs(c, judge, pairs, tmp_path, LabelSettings(batch_size=4), quiet=True)
    recs = _read(tmp_path)
    assert [r["pair_id"] for r in recs] == [p.id for p in pairs]
    assert all(r["human"] == "a" and r["chosen"] == "a" and r["responses"] is None for r in recs)
    assert summary["human_agreement"] == 1.0
    assert recs[0]["provenance"]["policy"] is None


def test_other_settings_in_the_same_folder_are_refused(
    tmp_path: Path, c: Constitution, prompts: list[PromptItem]
) -> None:
    label_prompts(c, ScriptedJudge(prefers_lower), ScriptedPolicy(), prompts[:2], tmp_path, LabelSettings(), quiet=True)
    with pytest.raises(CaiError, match="judge_settings"):
        label_prompts(
            c,
            ScriptedJudge(prefers_lower),
            ScriptedPolicy(),
            prompts[:2],
            tmp_path,
            LabelSettings(orders="one"),
            quiet=True,
        )
