"""Preference methods beyond multiple choice: each label equals a direct computation from what the
backend returned (contrast from sequence log-probabilities, mc-calibrated from the recorded
prior), pairs by construction prefer the positive answer / the revision, and --compare lists
every method."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import load_pairs
from cai.models.base import GenerationParams
from cai.models.fake import FakeBackend
from cai.stages.contrast import rederive
from cai.stages.judging import CONTENT_FREE, draw_for, judge_pairs
from cai.stages.messages import comparison_messages, contrast_messages, rlcd_messages
from cai.stages.settings import JudgeSettings, LabelSettings
from tests.helpers import invoke


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]


def test_every_shipped_comparison_principle_has_contrast_guidance(c: Constitution) -> None:
    assert all(v.principle.positive and v.principle.negative for v in c._all_comparison.values())
    assert c.spec.rlcd is not None and c.spec.rlcd.positive != c.spec.rlcd.negative


@pytest.mark.parametrize(("norm", "beta"), [("sum", 1.0), ("mean", 3.0)])
def test_contrast_label_is_sigmoid_of_the_log_probability_contrast(c: Constitution, norm: str, beta: float) -> None:
    pairs = load_pairs("judge-dev", limit=6)
    s = JudgeSettings(method="contrast", contrast_norm=norm, beta=beta, principles="k", k=2)
    results = judge_pairs(c, FakeBackend(), pairs, s, seed=3)
    direct = FakeBackend()
    for p, r in zip(pairs, results, strict=True):
        drawn = draw_for(p, c.comparison_principles, s, 3)
        assert [x["principle"] for x in r["principles"]] == [v.ref for v in drawn]
        p_as = []
        for v in drawn:
            s_of = {}
            for name, text in (("a", p.a), ("b", p.b)):
                pos, neg = direct.sequence_logprobs(
                    [(contrast_messages(c, p.prompt, v, side), text) for side in ("positive", "negative")]
                )
                n = pos.n_tokens if norm == "mean" else 1
                s_of[name] = (pos.logprob - neg.logprob) / n
            p_as.append(1 / (1 + math.exp(-beta * (s_of["a"] - s_of["b"]))))
        assert [x["p_a"] for x in r["principles"]] == pytest.approx(p_as, abs=1e-12)
        assert r["p_a"] == pytest.approx(sum(p_as) / len(p_as), abs=1e-12)
        # no display order: position statistics must leave contrast answers out
        assert all(a["p_first"] is None and a["order"] == "contrast" for x in r["principles"] for a in x["orders"])


def test_contrast_guidance_follows_the_conversation(c: Constitution) -> None:
    v = c.comparison_principles[0]
    conv = [{"role": "user", "content": "hi"}]
    pos, neg = (contrast_messages(c, conv, v, side) for side in ("positive", "negative"))
    assert pos[:-1] == neg[:-1] == conv  # the shared prefix every principle and side reuses
    assert pos[-1]["role"] == "system" and v.principle.positive in pos[-1]["content"]
    assert v.principle.negative in neg[-1]["content"]


def test_rederived_norm_equals_a_fresh_contrast_run(c: Constitution) -> None:
    pairs = load_pairs("judge-dev", limit=5)
    summed = judge_pairs(c, FakeBackend(), pairs, JudgeSettings(method="contrast"), seed=1)
    mean_s = JudgeSettings(method="contrast", contrast_norm="mean", beta=2.0)
    fresh = judge_pairs(c, FakeBackend(), pairs, mean_s, seed=1)
    assert [r["p_a"] for r in rederive(summed, mean_s)] == pytest.approx([r["p_a"] for r in fresh], abs=1e-12)


def test_calibrated_mc_divides_out_the_content_free_prior(c: Constitution) -> None:
    pairs = load_pairs("judge-dev", limit=6)
    s = JudgeSettings(method="mc-calibrated", principles="k", k=2)
    results = judge_pairs(c, FakeBackend(), pairs, s, seed=5)
    fake = FakeBackend()
    head_free = [{"role": "user", "content": CONTENT_FREE}]
    for r in results:
        for x in r["principles"]:
            v = c.comparison_principle(x["principle"].split("@")[0])
            [prior] = fake.option_probs(
                [comparison_messages(c, head_free, CONTENT_FREE, CONTENT_FREE, v, fewshot=True)], ("A", "B")
            )
            for a in x["orders"]:
                assert a["prior"] == pytest.approx(prior.probs)
                qa, qb = a["probs"]["A"] / prior.probs["A"], a["probs"]["B"] / prior.probs["B"]
                assert a["p_first"] == pytest.approx(qa / (qa + qb), abs=1e-12)
                assert a["p_a"] == pytest.approx(1 - a["p_first"] if a["order"] == "ba" else a["p_first"])
            assert x["p_a"] == pytest.approx(sum(a["p_a"] for a in x["orders"]) / 2)


def test_mc_and_calibrated_differ_only_by_the_prior(c: Constitution) -> None:
    pairs = load_pairs("judge-dev", limit=4)
    plain = judge_pairs(c, FakeBackend(), pairs, JudgeSettings(), seed=2)
    cal = judge_pairs(c, FakeBackend(), pairs, JudgeSettings(method="mc-calibrated"), seed=2)
    for p, q in zip(plain, cal, strict=True):
        for x, y in zip(p["principles"], q["principles"], strict=True):
            assert [a["probs"] for a in x["orders"]] == [a["probs"] for a in y["orders"]]
            assert "prior" not in x["orders"][0] and "prior" in y["orders"][0]


def test_rlcd_pairs_prefer_the_answer_under_the_positive_prompt(tmp_path: Path, c: Constitution) -> None:
    out = tmp_path / "rlcd"
    r = invoke(
        "label",
        "--method",
        "rlcd",
        "--prompts",
        "red-team",
        "--limit",
        "3",
        "--policy",
        "fake",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.code == 0, r.stderr
    assert "by rlcd" in r.stdout
    recs = _records(out)
    assert len(recs) == 3 and all(x["p_a"] == 1.0 and x["chosen"] == "a" for x in recs)
    assert all(x["response_a"] != x["response_b"] and not x["principles"] for x in recs)
    assert all(x["provenance"]["judge"] is None for x in recs)  # nobody rescored: no judge loaded
    prefs = [json.loads(x) for x in (out / "preferences.jsonl").read_text().splitlines()]
    assert [p["chosen"][0]["content"] for p in prefs] == [x["response_a"] for x in recs]
    assert all(p["p_chosen"] == 1.0 for p in prefs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["method"] == "rlcd" and summary["rescore"] is None


def test_rlcd_answers_are_the_policy_under_each_prompt(tmp_path: Path, c: Constitution) -> None:
    """Response a is exactly the policy's answer to the positive prompt (b: the negative one)."""
    out = tmp_path / "rlcd"
    assert (
        invoke(
            "label",
            "--method",
            "rlcd",
            "--prompts",
            "red-team",
            "--limit",
            "2",
            "--batch-size",
            "2",
            "--policy",
            "fake",
            "--out",
            str(out),
            "--quiet",
        ).code
        == 0
    )
    from cai.io.sources import load_prompts
    from cai.io.store import derive_seed

    items = load_prompts("red-team")[:2]
    params = GenerationParams(max_new_tokens=160, temperature=0.8, top_p=0.95, n=1, seed=derive_seed(0, "chunk", 0))
    gens = FakeBackend().generate(
        [rlcd_messages(c, it.messages, s) for it in items for s in ("positive", "negative")], params
    )
    recs = _records(out)
    assert [(r["response_a"], r["response_b"]) for r in recs] == [
        (gens[2 * i].texts[0].strip(), gens[2 * i + 1].texts[0].strip()) for i in range(2)
    ]


def test_rlcd_rescored_records_agreement(tmp_path: Path) -> None:
    out = tmp_path / "rlcd"
    r = invoke(
        "label",
        "--method",
        "rlcd",
        "--rescore",
        "contrast",
        "--prompts",
        "red-team",
        "--limit",
        "4",
        "--policy",
        "fake",
        "--judge",
        "fake",
        "--out",
        str(out),
        "--quiet",
    )
    assert r.code == 0, r.stderr
    recs = _records(out)
    agree = [x["construction_agrees"] for x in recs]
    assert all(isinstance(a, bool) for a in agree)
    assert all(x["principles"] and x["principles"][0]["orders"][0]["order"] == "contrast" for x in recs)
    assert all((x["p_a"] > 0.5) == a for x, a in zip(recs, agree, strict=True))  # relabelled by contrast
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rescore"] == "contrast" and summary["rescore_agreement"] == pytest.approx(sum(agree) / 4)


def test_revision_pairs_prefer_the_final_revision(tmp_path: Path) -> None:
    crit = tmp_path / "crit"
    assert (
        invoke(
            "critique", "--prompts", "red-team", "--limit", "4", "--model", "fake", "--out", str(crit), "--quiet"
        ).code
        == 0
    )
    out = tmp_path / "rev"
    r = invoke("label", "--method", "revision", "--critique", str(crit), "--out", str(out), "--quiet")
    assert r.code == 0, r.stderr
    crit_recs = {x["id"]: x for x in _records(crit)}
    recs = _records(out)
    assert recs and all(x["chosen"] == "a" and x["p_chosen"] == 1.0 for x in recs)
    for x in recs:
        src = crit_recs[x["pair_id"]]
        assert x["response_a"] == src["final_revision"].strip() and x["response_b"] == src["initial_response"].strip()
    assert json.loads((out / "summary.json").read_text())["method"] == "revision"
    assert json.loads((out / "summary.json").read_text())["records"] == len(recs)


def test_compare_lists_every_method(tmp_path: Path) -> None:
    r = invoke(
        "judge-eval",
        "--judge",
        "fake",
        "--compare",
        "--split",
        "dev",
        "--limit",
        "8",
        "--out",
        str(tmp_path),
        "--quiet",
    )
    assert r.code == 0, r.stderr
    for m in ("mc", "mc-calibrated", "contrast (sum)", "contrast (mean)", "rlcd", "revision"):
        assert m in r.stdout
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [row["method"] for row in summary["ranking"]][-2:] == ["rlcd", "revision"]
    measured = [row for row in summary["ranking"] if row["agreement"] is not None]
    assert len(measured) == 4 and measured == sorted(measured, key=lambda row: -row["agreement"])
    assert summary["split"] == "dev" and all(row["n"] == 8 for row in measured)


def test_split_selects_the_pairs_of_one_split(tmp_path: Path) -> None:
    r = invoke("judge-eval", "--judge", "fake", "--split", "test", "--out", str(tmp_path), "--quiet")
    assert r.code == 0, r.stderr
    items = [json.loads(x) for x in (tmp_path / "judgements.jsonl").read_text().splitlines()]
    assert items and all(it["split"] == "test" for it in items)
    assert len(items) == sum(1 for p in load_pairs("judge-dev") if p.split == "test")


def test_render_shows_the_contrast_context_of_each_side() -> None:
    for side in ("positive", "negative"):
        r = invoke("render", "contrast", "--principle", "less-dangerous", "--set", f"side={side}", "--json")
        assert r.code == 0, r.stderr
        msgs = json.loads(r.stdout)
        want = getattr(load_constitution("harmless").comparison_principle("less-dangerous").principle, side)
        assert [m["role"] for m in msgs] == ["user", "system", "assistant"] and want in msgs[1]["content"]


def test_report_first_section_names_the_method_and_its_measured_agreement(tmp_path: Path) -> None:
    from cai.run.report import build_report
    from cai.stages.judge_eval import measured_agreement

    run = tmp_path / "run"
    r = invoke(
        "label",
        "--method",
        "contrast",
        "--pairs",
        "judge-dev",
        "--limit",
        "4",
        "--judge",
        "fake",
        "--out",
        str(run / "label"),
        "--quiet",
    )
    assert r.code == 0, r.stderr
    page = build_report(run)
    first = page.index("<h2>")
    assert page[first:].startswith("<h2>Where the labels come from</h2>")
    assert "method <b>contrast</b> with judge fake: not measured" in page  # no shipped figure for fake
    measured = measured_agreement("embedded", "contrast", "sum")
    if measured is not None:  # the shipped table names the embedded judge's figures
        assert 0 <= measured["agreement"] <= 1 and measured["split"] == "test"
    rl = tmp_path / "rlcd"
    assert (
        invoke(
            "label",
            "--method",
            "rlcd",
            "--prompts",
            "red-team",
            "--limit",
            "2",
            "--policy",
            "fake",
            "--out",
            str(rl / "label"),
            "--quiet",
        ).code
        == 0
    )
    assert "pairs by construction (rlcd)" in build_report(rl)


def test_compare_reports_a_method_the_judge_cannot_run(c: Constitution) -> None:
    from cai.errors import fail
    from cai.stages.judge_eval import compare_methods

    class NoScoring(FakeBackend):
        def sequence_logprobs(self, requests):  # type: ignore[no-untyped-def]
            raise fail("api", None, "--method", "cannot score given replies")

    result = compare_methods(c, NoScoring(), load_pairs("judge-dev", limit=4), JudgeSettings(), quiet=True)
    rows = {r["method"]: r for r in result["ranking"]}
    assert rows["mc"]["agreement"] is not None and rows["mc-calibrated"]["agreement"] is not None
    for name in ("contrast (sum)", "contrast (mean)"):
        assert rows[name]["agreement"] is None and "cannot score given replies" in rows[name]["note"]


def test_cot_with_a_contrast_rescore_is_a_settings_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="--cot"):
        LabelSettings(method="rlcd", rescore="contrast", cot=True)


def test_measured_agreement_quotes_the_table_measured_the_way_the_run_drew_principles() -> None:
    """A run with 4 principles per pair gets the 4-principle figures; one drawn another way gets
    the one-principle figures, named as such (never a figure measured some other way unnamed)."""
    from cai.stages.judge_eval import measured_agreement

    one = measured_agreement("embedded", "contrast", "mean")
    four = measured_agreement("embedded", "contrast", "mean", "k", 4)
    two = measured_agreement("embedded", "contrast", "mean", "k", 2)
    assert one is not None and four is not None and two is not None
    assert one["per_pair"] == "one principle per pair" and four["per_pair"] == "4 principles per pair"
    assert two == one  # not measured with 2: the one-principle figure, said to be that
    assert four["mc"] is not None and four["agreement"] != one["agreement"]
    assert measured_agreement("fake", "contrast", "mean", "k", 4) is None
