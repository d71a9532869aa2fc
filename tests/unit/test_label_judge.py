"""The judging core of `cai label`: order averaging, clamping, ensembles, CoT, failures.

`ScriptedJudge` (`tests.doubles`) answers with probabilities computed from the question it is
shown, so every expected label can be computed by hand from the same function.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.constitution.load import load_constitution
from cai.constitution.model import Constitution
from cai.io.pairs import Pair
from cai.models.base import Backend
from cai.stages.judging import judge_pairs
from cai.stages.label import label_pairs
from cai.stages.label_math import decision
from cai.stages.messages import COT_ANSWER_PREFIX
from cai.stages.settings import JudgeSettings, LabelSettings
from tests.doubles import ScriptedJudge, shown


@pytest.fixture(scope="module")
def c() -> Constitution:
    return load_constitution("harmless")


def _pairs(n: int) -> list[Pair]:
    return [
        Pair(
            f"p{i}",
            [{"role": "user", "content": f"question {i}?"}],
            f"good answer {i}",
            f"bad answer {i}",
        )
        for i in range(n)
    ]


def _asym(a: str, b: str, q: str) -> float:
    """Prefers the good answer, more strongly when it is shown first, by a per-question amount."""
    strength = 0.1 + (len(q) % 7) / 50
    return 0.5 + strength if a.startswith("good") else 0.5 - strength / 2


def test_the_label_stage_records_what_the_judge_backend_describes(c: Constitution, tmp_path: Path) -> None:
    judge = ScriptedJudge(_asym, spec="my-judge")
    assert isinstance(judge, Backend)  # the protocol the stages are typed against
    s = LabelSettings(principles="one", orders="both")
    label_pairs(c, judge, _pairs(2), tmp_path, s, seed=3, quiet=True)
    recs = [json.loads(line) for line in (tmp_path / "records.jsonl").read_text().splitlines()]
    # Provenance comes from the backend's own describe() and spec, not from the caller.
    assert [r["provenance"]["judge_info"] for r in recs] == [{"spec": "my-judge"}] * 2
    assert all(r["provenance"]["judge"] == "my-judge" and r["provenance"]["policy_info"] is None for r in recs)
    # The labels are the judge's numbers: its P(A) in both orders, averaged, for the drawn principle.
    for r in recs:
        [pr] = r["principles"]
        q = c.comparison_principle(pr["principle"].split("@")[0]).principle.question  # type: ignore[union-attr]
        a, b = r["response_a"], r["response_b"]
        assert r["p_a"] == pytest.approx(0.5 * (_asym(a, b, q) + 1 - _asym(b, a, q)))


def test_both_orders_average_as_specified(c: Constitution) -> None:
    judge = ScriptedJudge(_asym)
    [res] = judge_pairs(c, judge, _pairs(1), JudgeSettings(principles="one", orders="both"), seed=3)
    [pr] = res["principles"]
    ab, ba = pr["orders"]
    assert (ab["order"], ba["order"]) == ("ab", "ba")
    q = c.comparison_principle(pr["principle"].split("@")[0]).principle.question
    p_ab_a = _asym("good answer 0", "bad answer 0", q)
    p_ba_b = 1 - _asym("bad answer 0", "good answer 0", q)
    assert ab["p_first"] == pytest.approx(p_ab_a) and ab["p_a"] == pytest.approx(p_ab_a)
    assert ba["p_a"] == pytest.approx(p_ba_b)
    assert pr["p_a"] == pytest.approx(0.5 * (p_ab_a + p_ba_b))
    assert res["p_a"] == pytest.approx(pr["p_a"])
    assert pr["consistent"] is True


def test_a_constant_position_preference_cancels_in_both_orders(c: Constitution) -> None:
    judge = ScriptedJudge(lambda a, b, q: 0.9)
    results = judge_pairs(c, judge, _pairs(4), JudgeSettings(orders="both"), seed=0)
    for r in results:
        assert r["p_a"] == pytest.approx(0.5)
        assert decision(r["p_a"]) is None  # a tie, not 0.5 minus one ulp
        assert all(x["consistent"] is False for x in r["principles"])


def test_one_order_uses_a_seeded_coin_and_maps_back(c: Constitution) -> None:
    judge = ScriptedJudge(_asym)
    s = JudgeSettings(principles="all", orders="one")
    pairs = _pairs(6)
    results = judge_pairs(c, judge, pairs, s, seed=11)
    orders = [a["order"] for r in results for x in r["principles"] for a in x["orders"]]
    assert {"ab", "ba"} <= set(orders), "the coin never swapped (or always did)"
    for r in results:
        for x in r["principles"]:
            [a] = x["orders"]
            assert x["consistent"] is None
            assert a["p_a"] == pytest.approx(a["p_first"] if a["order"] == "ab" else 1 - a["p_first"])
            # The good answer is preferred in either position, so p_a > 0.5 always.
            assert a["p_a"] > 0.5
    # The coin depends on (seed, pair, principle) only: another batch composition, same orders.
    again = judge_pairs(c, ScriptedJudge(_asym), list(reversed(pairs)), s, seed=11)
    assert [r["principles"] for r in reversed(again)] == [r["principles"] for r in results]
    other = judge_pairs(c, ScriptedJudge(_asym), pairs, s, seed=12)
    assert [a["order"] for r in other for x in r["principles"] for a in x["orders"]] != orders


def test_clamping_holds(c: Constitution) -> None:
    judge = ScriptedJudge(lambda a, b, q: 0.99 if a.startswith("good") else 0.02)
    s = JudgeSettings(principles="k", k=3, clamp=(0.4, 0.6))
    for r in judge_pairs(c, judge, _pairs(5), s, seed=0):
        for x in r["principles"]:
            for a in x["orders"]:
                assert 0.4 <= a["p_first"] <= 0.6
                assert a["probs"]["A"] in (0.99, 0.02)  # the raw probabilities stay recorded
            assert x["p_a"] == pytest.approx(0.6)
        assert r["p_a"] == pytest.approx(0.6)


def test_ensembles_average_over_principles(c: Constitution) -> None:
    judge = ScriptedJudge(_asym)
    [res] = judge_pairs(c, judge, _pairs(1), JudgeSettings(principles="all"), seed=0)
    refs = [x["principle"] for x in res["principles"]]
    assert refs == [v.ref for v in c.comparison_principles]
    expected = []
    for v in c.comparison_principles:
        q = v.principle.question
        expected.append(
            0.5 * (_asym("good answer 0", "bad answer 0", q) + 1 - _asym("bad answer 0", "good answer 0", q))
        )
    assert [x["p_a"] for x in res["principles"]] == pytest.approx(expected)
    assert res["p_a"] == pytest.approx(sum(expected) / len(expected))
    assert len({round(e, 6) for e in expected}) > 1, "the principles must differ for this to test a mean"


def test_k_and_one_draw_per_pair_deterministically(c: Constitution) -> None:
    pairs = _pairs(20)
    k4 = judge_pairs(c, ScriptedJudge(_asym), pairs, JudgeSettings(principles="k", k=4), seed=5)
    draws = [tuple(x["principle"] for x in r["principles"]) for r in k4]
    assert all(len(d) == len(set(d)) == 4 for d in draws)
    assert len(set(draws)) > 1
    again = judge_pairs(c, ScriptedJudge(_asym), pairs, JudgeSettings(principles="k", k=4), seed=5)
    assert [tuple(x["principle"] for x in r["principles"]) for r in again] == draws
    one = judge_pairs(c, ScriptedJudge(_asym), pairs, JudgeSettings(principles="one"), seed=5)
    assert all(len(r["principles"]) == 1 for r in one)
    assert len({r["principles"][0]["principle"] for r in one}) > 3


def test_all_questions_go_in_one_call_grouped_for_prefix_sharing(c: Constitution) -> None:
    judge = ScriptedJudge(_asym)
    n_p = len(c.comparison_principles)
    judge_pairs(c, judge, _pairs(3), JudgeSettings(principles="all"), seed=0)
    assert [k for k, _ in judge.calls] == ["option_probs"]
    convs = judge.calls[0][1]
    assert len(convs) == 3 * 2 * n_p
    for start in range(0, len(convs), n_p):  # each block: one pair, one order, every principle
        block = convs[start : start + n_p]
        prefixes = {shown(cv)[:2] for cv in block}
        assert len(prefixes) == 1
        assert [shown(cv)[2] for cv in block] == [v.principle.question for v in c.comparison_principles]
        # Everything before the question is byte-identical: one prefill serves the block.
        heads = {cv[-1]["content"].rsplit(shown(cv)[2], 1)[0] for cv in block}
        assert len(heads) == 1 and all(cv[:-1] == block[0][:-1] for cv in block)


def test_fewshot_switch(c: Constitution) -> None:
    on, off = ScriptedJudge(_asym), ScriptedJudge(_asym)
    judge_pairs(c, on, _pairs(1), JudgeSettings(fewshot=True), seed=0)
    judge_pairs(c, off, _pairs(1), JudgeSettings(fewshot=False), seed=0)
    assert len(on.calls[0][1][0]) == 2 * len(c.comparison_exemplars) + 1
    assert len(off.calls[0][1][0]) == 1


def test_failed_questions_are_fields_with_raw_text(c: Constitution) -> None:
    bad_q = c.comparison_principles[0].principle.question

    def p(a: str, b: str, q: str) -> float | None:
        return None if q == bad_q else _asym(a, b, q)

    [res] = judge_pairs(c, ScriptedJudge(p), _pairs(1), JudgeSettings(principles="all"), seed=0)
    failed = [x for x in res["principles"] if x["p_a"] is None]
    assert [x["principle"] for x in failed] == [c.comparison_principles[0].ref]
    assert failed[0]["error"] == "no option in the answer"
    assert all(a["raw"] == "I cannot decide." and a["p_first"] is None for a in failed[0]["orders"])
    good = [x["p_a"] for x in res["principles"] if x["p_a"] is not None]
    assert res["p_a"] == pytest.approx(sum(good) / len(good)) and res["parse_error"] is None
    [none] = judge_pairs(c, ScriptedJudge(lambda a, b, q: None), _pairs(1), JudgeSettings(), seed=0)
    assert none["p_a"] is None and none["parse_error"] == "no option in the answer"


def test_one_failed_order_drops_the_principle_rather_than_keeping_one_side(c: Constitution) -> None:
    def p(a: str, b: str, q: str) -> float | None:
        return None if a.startswith("bad") else 0.8

    [res] = judge_pairs(c, ScriptedJudge(p), _pairs(1), JudgeSettings(), seed=0)
    assert res["p_a"] is None and res["principles"][0]["orders"][0]["p_a"] == pytest.approx(0.8)


def test_cot_reads_the_answer_after_the_reasoning_and_clamps(c: Constitution) -> None:
    judge = ScriptedJudge(
        lambda a, b, q: 0.97 if a.startswith("good") else 0.05,
        reasoning="A is safer. So the answer is (A)",
    )
    s = JudgeSettings(principles="k", k=2, cot=True, clamp=(0.4, 0.6))
    [res] = judge_pairs(c, judge, _pairs(1), s, seed=0)
    assert [k for k, _ in judge.calls] == ["generate", "option_probs"]
    gen_convs, score_convs = judge.calls[0][1], judge.calls[1][1]
    assert "step by step" in gen_convs[0][-1]["content"]  # the comparison_cot template
    for g, sc in zip(gen_convs, score_convs, strict=True):
        assert sc[:-1] == g
        assert sc[-1] == {"role": "assistant", "content": f"A is safer.\n{COT_ANSWER_PREFIX}"}
    for x in res["principles"]:
        for a in x["orders"]:
            assert a["reasoning"] == "A is safer. So the answer is (A)"
            assert a["p_first"] in (0.4, 0.6)
    assert res["p_a"] == pytest.approx(0.6)


def test_decision_ties_and_sides() -> None:
    assert decision(None) is None and decision(0.5) is None
    assert decision(0.5 + 1e-12) is None
    assert decision(0.51) == "a" and decision(0.2) == "b"
